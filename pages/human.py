"""You vs the model: the same one-shot Omniglot questions for a person and for the networks."""

import pandas as pd
import streamlit as st

import fewshot
from fewshot import inspection
from pages.lab import checkpoints, data, images, models, widgets
from pages.lab.papers import HUMAN_ERROR_LAKE
from pages.lab.runtime import require_router

require_router()

st.title("You vs the model")
st.markdown("Each question shows one drawing of each of N new characters and one more drawing: which character "
            "is it? The models answer the same questions. In Lake et al. (2015), people made **4.5%** errors on "
            "20-way one-shot Omniglot.")

dataset = data.omniglot("lake", "test")
if dataset is None:
    st.stop()
methods = checkpoints.available_methods()

QUESTION_TYPES = {5: "5-way one-shot", 20: "20-way one-shot",
                  "lake": "20-way one-shot, one alphabet, two drawers (Lake et al.'s task)"}
c1, c2, c3 = st.columns([1, 1, 2])
kind = c1.radio("Question type", list(QUESTION_TYPES), format_func=QUESTION_TYPES.get, key="human_way")
n_way, within = (20, True) if kind == "lake" else (kind, False)
n_questions = c2.number_input("Questions", 1, 50, key="human_questions", **widgets.bind("human_questions", 10, lo=1, hi=50))
c3.caption("Characters come from the 20 evaluation alphabets, which the lake-protocol models never saw. "
           "Lake et al.'s own task takes the 20 characters of a question from one alphabet, and the drawing to "
           "identify is by another person than the examples: look-alike characters, a new hand.")

game = st.session_state.get("human_game")
if st.button("Start a new round", key="human_start", type="primary") or game is None or game["n_way"] != n_way \
        or game["n_questions"] != n_questions or game.get("within", False) != within:
    rounds = st.session_state.get("human_rounds", 0) + 1
    st.session_state["human_rounds"] = rounds
    game = {"n_way": n_way, "n_questions": int(n_questions), "seed": 500 + rounds, "current": 0, "answers": [],
            "model_correct": {}, "round": rounds, "within": within}
    st.session_state["human_game"] = game


def question(k: int):
    """Question ``k``: a task with one support image per class and one query (class chosen by the seed)."""
    if game.get("within"):  # one alphabet; the query's drawer never drew the examples
        sampler = fewshot.AlphabetTaskSampler(dataset, n_way, 1, 1, seed=game["seed"])
        for _ in range(k):
            sampler.sample_indices()
        task = sampler.sample_task()
    else:
        task = data.sample_episode(dataset, n_way, 1, 1, seed=game["seed"], index=k)
    target = (game["seed"] * 31 + k * 7) % n_way
    return task, target


def model_answers(task, target: int) -> dict[str, bool]:
    out = {}
    for m in methods:
        try:
            loaded = checkpoints.get_model(m)
            probs = inspection.predict(loaded.model, task.support_images, task.support_labels,
                                       task.query_images[target:target + 1])
        except models.ModelUnavailable as exc:
            game.setdefault("sitting_out", {})[models.method_label(m)] = str(exc)
            continue
        except ValueError as exc:
            game.setdefault("sitting_out", {})[models.method_label(m)] = f"{models.method_label(m)}: {exc}"
            continue
        out[loaded.title] = int(probs[0].argmax()) == target
    return out


k = game["current"]
if k < game["n_questions"]:
    task, target = question(k)
    st.subheader(f"Question {k + 1} of {game['n_questions']}")
    q1, q2 = st.columns([1, 4])
    with q1:
        images.show_image(task.query_images[target], scale=4, caption="Which character is this?")
    with q2:
        per_row = 10
        for start in range(0, n_way, per_row):
            cols = st.columns(per_row)
            for col, c in zip(cols, range(start, min(start + per_row, n_way))):
                with col:
                    images.show_image(task.support_images[c], scale=3 if n_way <= 10 else 2, caption=str(c + 1))
    answered = len(game["answers"]) > k
    answer = st.radio("Your answer", list(range(1, n_way + 1)), horizontal=True, index=None,
                      key=f"human_answer_{game['round']}_{k}", disabled=answered)
    if not answered:
        if st.button("Submit answer", key="human_submit"):
            if answer is None:
                st.warning("Pick a number first.")
            else:
                game["answers"].append(answer - 1 == target)
                for title, right in model_answers(task, target).items():
                    game["model_correct"].setdefault(title, []).append(right)
                st.rerun()
    else:
        right = game["answers"][k]
        st.markdown(("✓ **Right!**" if right else f"✗ **Not quite**: it was character **{target + 1}**.") +
                    " The models: " + ", ".join(f"{t} {'✓' if v[k] else '✗'}" for t, v in game["model_correct"].items()
                                                if len(v) > k))
        if st.button("Next question", key="human_next", type="primary"):
            game["current"] += 1
            st.rerun()

answers = game["answers"]
if answers:
    st.subheader("Scores")
    rows = [{"who": "You", "correct": sum(answers), "questions": len(answers),
             "accuracy %": round(100 * sum(answers) / len(answers), 1)}]
    for title, results in game["model_correct"].items():
        rows.append({"who": title, "correct": sum(results), "questions": len(results),
                     "accuracy %": round(100 * sum(results) / len(results), 1)})
    rows.append({"who": "People in Lake et al. 2015 (20-way one-shot)", "correct": None, "questions": None,
                 "accuracy %": round(100 * (1 - HUMAN_ERROR_LAKE), 1)})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.markdown(f"Your score: {sum(answers)}/{len(answers)}")
    if game.get("sitting_out"):
        st.caption("Not playing this round: " + "; ".join(game["sitting_out"].values()))
    if game["current"] >= game["n_questions"]:
        st.success("Round finished. Press **Start a new round** to play again.")
