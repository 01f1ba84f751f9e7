"""Benchmark: accuracy ± 95% CI over many Omniglot test episodes, next to the papers' numbers."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import fewshot
from fewshot import inspection
from pages.lab import checkpoints, data, images, models, render, widgets
from pages.lab.papers import PAPER_RESULTS
from pages.lab.runtime import require_router

require_router()

st.title("Benchmark")
st.markdown("Samples episodes from Omniglot's **test split** and runs every selected method on the same episodes. "
            "Accuracy is the mean query accuracy over episodes, with a 95% confidence interval "
            "(1.96 · std / √episodes).")

PROTOCOLS = {"lake": "lake: test on the 20 evaluation alphabets (never seen in training)",
             "vinyals": "vinyals: the split of Vinyals et al. 2016 used by the papers' tables"}

curves = checkpoints.training_curves()
if curves:
    with st.expander("Time to accuracy: how the shipped models' training runs got there", expanded=False):
        figure = go.Figure()
        for label, curve in curves.items():
            points = curve["points"]
            figure.add_trace(go.Scatter(x=[p["cpu_seconds"] for p in points],
                                        y=[100 * p["accuracy"] for p in points], mode="lines+markers", name=label))
        figure.update_layout(xaxis_title="training CPU-seconds (a 2-core machine)",
                             yaxis_title="validation accuracy (%)", height=360, margin=dict(t=20, b=40))
        st.plotly_chart(figure, width="stretch", key="bench_curves")
        st.caption("Validation accuracy against the CPU time each run spent training, validation excluded: the "
                   "honest way to compare recipes on one machine. Validation: 3 background alphabets the run did not "
                   "train on (the encoders these runs started from had seen them), never the test alphabets; each "
                   "curve's own task shape (5- or 20-way). Made by benchmarks/time_to_accuracy.py from the "
                   "checkpoints' own training histories.")

folder, message = data.omniglot_dir()
if folder is None:
    data.data_missing(message)
    st.stop()
methods = checkpoints.available_methods()
if not methods:
    st.warning("No checkpoints found; see the sidebar.")
    st.stop()

with st.form("bench_form"):
    c1, c2, c3 = st.columns(3)
    protocol = c1.radio("Protocol", list(PROTOCOLS), format_func=PROTOCOLS.get, key="bench_protocol")
    within = c1.checkbox("One alphabet per episode, two drawers (Lake et al.'s task)", key="bench_within",
                         help="lake protocol: every episode's characters from one evaluation alphabet, the support "
                              "images by one drawer and the queries by others (people err 4.5% at 20-way 1-shot)")
    n_way = c2.radio("Way", [5, 20], key="bench_way", horizontal=True)
    n_shot = c2.radio("Shot", [1, 5], key="bench_shot", horizontal=True)
    episodes = c3.number_input("Episodes", 1, 5000, step=50, key="bench_episodes",
                               **widgets.bind("bench_episodes", 100, lo=1, hi=5000),
                               help="The papers use 1,000 or more; 100 gives a rough ±1–3% interval.")
    n_query = c3.number_input("Queries per class", 1, 15, key="bench_query", **widgets.bind("bench_query", 5, lo=1, hi=15))
    seed = c3.number_input("Seed", 0, 10**6, key="bench_seed", **widgets.bind("bench_seed", 0, lo=0, hi=10**6))
    widgets.bind("bench_methods", list(methods))
    st.session_state["bench_methods"] = [m for m in st.session_state["bench_methods"] if m in methods]
    chosen = st.multiselect("Methods", methods, format_func=models.method_label, key="bench_methods",
                            default=st.session_state["bench_methods"])
    run = st.form_submit_button("Run benchmark", type="primary", key="bench_run")


def episode_sampler(dataset, n_way: int, n_shot: int, n_query: int, seed: int, within: bool):
    if within:
        return fewshot.AlphabetTaskSampler(dataset, n_way, n_shot, n_query, seed=seed)
    return fewshot.TaskSampler(dataset, n_way, n_shot, n_query, seed=seed)


if run:
    if not chosen:
        st.warning("Choose at least one method.")
    elif within and protocol != "lake":
        st.warning("One alphabet per episode is Lake et al.'s task on the lake protocol's evaluation alphabets; "
                   "choose the lake protocol.")
    else:
        dataset = data.omniglot(protocol, "test")
        if dataset is not None:
            rows, problems, per_episode = [], [], {}
            bar = st.progress(0.0, text="starting")
            total = len(chosen) * int(episodes)
            done = [0]
            for m in chosen:
                try:
                    loaded = checkpoints.get_model(m)
                    problem = loaded.check_way(int(n_way))
                    if problem:
                        problems.append(problem)
                        continue
                    if loaded.meta.get("protocol") != protocol:
                        problems.append(f"{loaded.title}: the checkpoint was trained with the "
                                        f"{loaded.meta.get('protocol') or 'unknown'} protocol, whose training classes "
                                        f"overlap the {protocol} test split; its number is not a fair test.")
                    sampler = episode_sampler(dataset, int(n_way), int(n_shot), int(n_query), int(seed), within)

                    def tasks(sampler=sampler, title=loaded.title):
                        for k in range(int(episodes)):
                            yield sampler.sample_task()
                            done[0] += 1
                            if k % 5 == 4 or k == int(episodes) - 1:
                                bar.progress(done[0] / total, text=f"{title}: episode {k + 1}/{int(episodes)}")

                    result = inspection.benchmark(loaded.model, tasks())
                except models.ModelUnavailable as exc:
                    problems.append(str(exc))
                except ValueError as exc:
                    problems.append(f"{models.method_label(m)}: {exc}")
                    continue
                paper = PAPER_RESULTS.get(m, {})
                paper_acc = paper.get("acc", {}).get((int(n_way), int(n_shot)))
                rows.append({"method": loaded.title,
                             "checkpoint": f"{loaded.path.split('/')[-2]}/{loaded.path.split('/')[-1]}",
                             "trained on": loaded.meta.get("protocol") or "?",
                             "accuracy %": round(100 * result.accuracy, 2), "± 95% CI": round(100 * result.ci95, 2),
                             "episodes": result.episodes,
                             "paper %": paper_acc, "paper source": paper.get("source", "")})
                per_episode[m] = result.accuracies
            bar.progress(1.0, text="done")
            st.session_state["bench"] = {"rows": rows, "problems": problems, "per_episode": per_episode,
                                         "config": {"protocol": protocol, "n_way": int(n_way), "n_shot": int(n_shot),
                                                    "n_query": int(n_query), "episodes": int(episodes),
                                                    "seed": int(seed), "within": within}}

saved = st.session_state.get("bench")
if saved:
    cfg = saved["config"]
    st.subheader(f"Results: {cfg['n_way']}-way {cfg['n_shot']}-shot, {cfg['protocol']} protocol, test split"
                 + (", one alphabet per episode, two drawers" if cfg.get("within") else ""))
    for problem in saved["problems"]:
        st.warning(problem)
    if saved["rows"]:
        st.dataframe(pd.DataFrame(saved["rows"]), hide_index=True)
        st.caption(f"{cfg['episodes']} episodes, {cfg['n_query']} queries per class, seed {cfg['seed']}. The papers' "
                   "numbers are on the vinyals split (with rotations) and usually 1,000+ episodes; the lake protocol "
                   "(new alphabets) is harder. People make 4.5% errors on 20-way one-shot (Lake et al. 2015).")

        st.subheader("Inspect one episode")
        index = st.number_input("Episode", 1, cfg["episodes"], key="bench_episode",
                                **widgets.bind("bench_episode", 1, lo=1, hi=cfg["episodes"]))
        dataset = data.omniglot(cfg["protocol"], "test")
        if dataset is not None:
            if cfg.get("within"):
                sampler = episode_sampler(dataset, cfg["n_way"], cfg["n_shot"], cfg["n_query"], cfg["seed"], True)
                for _ in range(int(index) - 1):
                    sampler.sample_indices()
                task = sampler.sample_task()
            else:
                task = data.sample_episode(dataset, cfg["n_way"], cfg["n_shot"], cfg["n_query"], seed=cfg["seed"],
                                           index=int(index) - 1)
            names = data.episode_names(dataset, task)
            st.markdown("**Support set** (first example of each class)")
            support_labels, query_labels = task.support_labels.tolist(), task.query_labels.tolist()
            firsts = [support_labels.index(c) for c in range(cfg["n_way"])]
            for start in range(0, cfg["n_way"], 10):
                cols = st.columns(10)
                for col, k in zip(cols, firsts[start:start + 10]):
                    with col:
                        images.show_image(task.support_images[k], scale=2, caption=names[support_labels[k]])
            table = {"query": [], "true class": []}
            accs = {}
            for m in saved["per_episode"]:
                try:
                    loaded = checkpoints.get_model(m)
                    probs = inspection.predict(loaded.model, task.support_images, task.support_labels,
                                               task.query_images)
                except (models.ModelUnavailable, ValueError):
                    continue
                preds = [int(p) for p in probs.argmax(1)]
                table[loaded.title] = [names[p] + (" ✓" if p == y else " ✗") for p, y in zip(preds, query_labels)]
                accs[loaded.title] = sum(p == y for p, y in zip(preds, query_labels)) / len(query_labels)
            table["query"] = [f"Query {k + 1}" for k in range(len(query_labels))]
            table["true class"] = [names[y] for y in query_labels]
            st.markdown("**Episode accuracy**: " + ", ".join(f"{t} {render.percent(a)}" for t, a in accs.items()))
            st.dataframe(pd.DataFrame(table), hide_index=True)
            st.caption("Re-running a model on this episode gives the same answer as in the benchmark, except MAML "
                       "here, which normalises queries with the support set's statistics.")
