"""Build a task: name N classes, draw or upload K examples of each (or photos), add queries, classify them."""

import streamlit as st

import fewshot
from fewshot import inspection
from pages.lab import examples, images, models, render, share, task, widgets
from pages.lab.runtime import require_router, trace

require_router()

st.title("Build a task")
store = task.store()
mode = widgets.mode_switch()
st.markdown(mode.intro)

with st.container(horizontal=True):
    for loader in examples.loaders(mode.key):
        st.button(loader.label, key=loader.key, on_click=loader.callback, help=loader.help)
    st.button(mode.clear_label, key=mode.clear_key, on_click=task.clear, args=(mode.key,))
if len(examples.loaders(mode.key)) < len(examples.LOADERS[mode.key]):
    st.caption("Set FEWSHOT_DATA_DIR to the Omniglot folder to get example tasks from Omniglot.")

# ---- task shape (widgets mirror the store, so the values survive page switches)
c1, c2, c3, c4 = st.columns(4)
store.n_way = c1.slider("Classes (N-way)", 2, task.MAX_WAY, key="n_way",
                        **widgets.bind("n_way", store.n_way, lo=2, hi=task.MAX_WAY))
if mode.canvases:  # photo mode: as many photos per class and queries as are uploaded
    store.n_shot = c2.slider("Drawings per class (K-shot)", 1, task.MAX_SHOT, key="n_shot",
                             **widgets.bind("n_shot", store.n_shot, lo=1, hi=task.MAX_SHOT))
    store.n_queries = c3.slider("Query drawings", 1, task.MAX_QUERY_CANVASES, key="n_queries",
                                **widgets.bind("n_queries", store.n_queries, lo=1, hi=task.MAX_QUERY_CANVASES))
    store.stroke = c4.slider("Pen width", 6, 14, key="stroke_width",
                             **widgets.bind("stroke_width", store.stroke, lo=6, hi=14),
                             help="About 10 on the 210-pixel canvas matches Omniglot's stroke width.")
n_way, n_shot = store.n_way, store.n_shot

# ---- support set: a grid of class cards (three per row for one drawing each, fewer for more)
st.subheader("Support set")
if not mode.canvases:
    widgets.camera(mode, n_way, store.names[:n_way])
per_row = 3 if n_shot == 1 or not mode.canvases else 2 if n_shot == 2 else 1
for row_start in range(0, n_way, per_row):
    cards = st.columns(per_row)
    for i, card in zip(range(row_start, min(row_start + per_row, n_way)), cards):
        with card.container(border=True):
            store.names[i] = st.text_input(f"Class {i + 1} name", key=f"class_name_{i}", max_chars=40,
                                           **widgets.bind(f"class_name_{i}", store.names[i]))
            if mode.canvases:
                canvas_cols = st.columns(n_shot) if n_shot <= 2 else st.columns(min(n_shot, 3))
                for j in range(n_shot):
                    with canvas_cols[j % len(canvas_cols)]:
                        widgets.canvas_cell(task.support_canvas_key(i, j), f"Class {i + 1}, example {j + 1}")
            widgets.class_uploads(mode, i)

# ---- queries
st.subheader("Queries")
with st.container(border=True):
    names = [str(n).strip() for n in store.names[:n_way]]
    widgets.query_uploads(mode, names)
    if mode.canvases:
        q_cols = st.columns(min(max(store.n_queries, 3), 4))
        for j in range(store.n_queries):
            key = task.query_canvas_key(j)
            with q_cols[j % len(q_cols)]:
                widgets.canvas_cell(key, f"Query {j + 1}")
                widgets.truth_select(key, f"truth_{key}", names, "True class (optional)")

# ---- share: the task as one file, or a file as the task
view = task.collect()
share.panel(view, mode)

# ---- classify
st.subheader("Classify")
source = models.source(mode.key)
methods = source.methods()
if not methods:
    st.warning(source.missing())
    st.stop()
choices = ["all", *methods]
method = st.selectbox("Method", choices, key="build_method",
                      **widgets.bind_choice("build_method", "protonet", choices, methods[0]),
                      format_func=lambda m: "All methods side by side" if m == "all" else models.method_label(m))
clicked = st.button("Classify", key="classify", type="primary")
ready = sum(bool(class_examples) for class_examples in view.support)
st.caption(f"Task status: {ready}/{view.n_way} classes have examples · {len(view.queries)} queries")
if clicked:
    trace(f"classify_clicked:ready={ready}/{view.n_way}:queries={len(view.queries)}:can={view.can_classify}")
    render.show_problems(view)  # everything that stops classification, said once the user asks for it
elif view.name_errors:
    st.error("\n".join(f"- {m}" for m in view.name_errors) if len(view.name_errors) > 1 else view.name_errors[0])

if clicked and view.can_classify:
    results, problems = {}, []
    with st.spinner("Classifying…"):
        for m in methods if method == "all" else [method]:
            try:
                loaded = source.get(m)
                sx, sy, qx = view.tensors(loaded.image_size)
                results[m] = inspection.predict(loaded.model, sx, sy, qx)
            except ValueError as exc:
                problems.append(f"{models.method_label(m)}: {exc}")
            except (models.ModelUnavailable, fewshot.ImageError) as exc:
                problems.append(str(exc))
    st.session_state["build_results"] = {"fingerprint": view.fingerprint(), "n_way": view.n_way,
                                         "method": method, "results": results, "problems": problems}
    trace(f"classified:{','.join(results)}:problems={len(problems)}")


def truth_label(value):
    return "unknown" if value is None else (view.names[value] or f"Class {value + 1}")


saved = st.session_state.get("build_results")
if saved and saved["fingerprint"] == view.fingerprint() and saved["n_way"] == view.n_way and view.can_classify:
    for message in saved["problems"]:
        st.warning(message)
    results = saved["results"]
    if results:
        st.markdown("#### Predictions")
    if len(results) > 1:
        import pandas as pd

        rows = []
        for j, q in enumerate(view.queries):
            row = {"query": f"Query {j + 1}", "true class": truth_label(view.truth[j])}
            for m, probs in results.items():
                pred = int(probs[j].argmax())
                row[models.method_label(m)] = (f"{view.names[pred]} ({render.percent(probs[j, pred])}) "
                                               f"{render.verdict(pred, view.truth[j])}")
            rows.append(row)
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        labelled = [j for j, t in enumerate(view.truth) if t is not None]
        if labelled:
            st.caption("Accuracy on the queries with a true class: " + ", ".join(
                f"{models.method_label(m)} {sum(int(p[j].argmax()) == view.truth[j] for j in labelled)}/{len(labelled)}"
                for m, p in results.items()))
    for j, q in enumerate(view.queries):
        with st.container(border=True):
            left, right = st.columns([1, 4])
            with left:
                images.show_input(q.png, view.mode, caption=f"Query {j + 1} ({q.label})", scale=3)
            with right:
                for m, probs in results.items():
                    pred = int(probs[j].argmax())
                    st.markdown(f"Prediction for Query {j + 1} ({models.method_label(m)}): **{view.names[pred]}** "
                                f"— {render.percent(probs[j, pred])} {render.verdict(pred, view.truth[j])}")
                    if len(results) == 1:
                        st.dataframe(render.probability_frame(probs[j], view.names), hide_index=True,
                                     column_config=render.probability_columns(["probability"]))
                if len(results) > 1:
                    import pandas as pd

                    labels = [models.method_label(m) for m in results]
                    frame = pd.DataFrame({"class": view.names, **{models.method_label(m): p[j].astype(float)
                                                                  for m, p in results.items()}})
                    st.dataframe(frame, hide_index=True, column_config=render.probability_columns(labels))
elif saved and view.can_classify:
    st.info("The task changed since the last classification; press **Classify** to update the predictions.")
