"""Build a task: name N classes, draw or upload K examples of each, add queries, classify them."""

import fewshot
import streamlit as st

import photo_ui
import ui

ui.require_router()

st.title("Build a task")
store = ui.task_store()
photo = photo_ui.mode_switch() == "photo"
if photo:
    st.markdown("Name your classes, **upload 1–5 photos** of each (or take them with the camera), then add query "
                "photos and classify them. Photos go to a frozen ImageNet-pretrained EfficientNet-Lite0; each "
                "method classifies its 1280-d features (no training, nothing downloaded).")
else:
    st.markdown("Name your classes, **draw** (or upload) an example of each, then draw a **query** and classify it. "
                "Draw big, filling the box: every drawing is cropped to its ink, centred and shrunk to the model's "
                "28×28 input, the way Omniglot characters look (*what the model sees* is shown under each one).")

data_folder, _ = ui.omniglot_dir()

with st.container(horizontal=True):
    if photo:
        st.button("Load the example task (generated photos)", key="example_photos", on_click=photo_ui.load_example,
                  help="Five everyday objects drawn by the program (ball, mug, tree, banana, book) at random "
                       "places, sizes and colours, K photos each and a query of each.")
        st.button("Clear the photos", key="clear_photos", on_click=photo_ui.clear_photos)
    else:
        st.button("Load the example task (synthetic symbols)", key="example_synthetic",
                  on_click=ui.load_synthetic_example,
                  help="Five symbols drawn by the program (circle, cross, triangle, square, bar) and a query of each.")
    if data_folder is not None and not photo:
        st.button("Load an example task from Omniglot", key="example_omniglot", on_click=ui.load_omniglot_example,
                  help="N characters from the evaluation alphabets (never seen by the lake-protocol models), "
                       "K examples each and one query per class.")
    if not photo:
        st.button("Clear the task", key="clear_task", on_click=ui.clear_task)
if data_folder is None and not photo:
    st.caption("Set FEWSHOT_DATA_DIR to the Omniglot folder to get example tasks from Omniglot.")

# ---- task shape (widgets mirror the store, so the values survive page switches)
c1, c2, c3, c4 = st.columns(4)
store["n_way"] = c1.slider("Classes (N-way)", 2, ui.MAX_WAY, key="n_way",
                           **ui.bind("n_way", store["n_way"], lo=2, hi=ui.MAX_WAY))
if not photo:  # photo mode: as many photos per class and queries as are uploaded
    store["n_shot"] = c2.slider("Drawings per class (K-shot)", 1, ui.MAX_SHOT, key="n_shot",
                                **ui.bind("n_shot", store["n_shot"], lo=1, hi=ui.MAX_SHOT))
    store["n_queries"] = c3.slider("Query drawings", 1, ui.MAX_QUERY_CANVASES, key="n_queries",
                                   **ui.bind("n_queries", store["n_queries"], lo=1, hi=ui.MAX_QUERY_CANVASES))
    store["stroke"] = c4.slider("Pen width", 6, 14, key="stroke_width",
                                **ui.bind("stroke_width", store["stroke"], lo=6, hi=14),
                                help="About 10 on the 210-pixel canvas matches Omniglot's stroke width.")
n_way, n_shot = store["n_way"], store["n_shot"]
size = ui.CANVAS_SIZE

# ---- support set: a grid of class cards (three per row for one drawing each, fewer for more)
st.subheader("Support set")
if photo:
    photo_ui.camera(n_way, store["names"][:n_way])
per_row = 3 if n_shot == 1 or photo else 2 if n_shot == 2 else 1
for row_start in range(0, n_way, per_row):
    cards = st.columns(per_row)
    for i, card in zip(range(row_start, min(row_start + per_row, n_way)), cards):
        with card.container(border=True):
            store["names"][i] = st.text_input(f"Class {i + 1} name", key=f"class_name_{i}", max_chars=40,
                                              **ui.bind(f"class_name_{i}", store["names"][i]))
            if photo:
                photo_ui.class_photos(i)
                continue
            canvas_cols = st.columns(n_shot) if n_shot <= 2 else st.columns(min(n_shot, 3))
            for j in range(n_shot):
                with canvas_cols[j % len(canvas_cols)]:
                    ui.canvas_cell(ui.support_canvas_key(i, j), f"Class {i + 1}, example {j + 1}", size=size)
            ui.upload_cell(f"s{i}", f"Upload examples of class {i + 1}",
                           help="Any common image format: a photo or scan of a symbol, dark on light or light on dark.")
            uploaded = store["uploads"].get(f"s{i}", {})
            if uploaded:
                st.caption(f"{len(uploaded)} uploaded example(s) of class {i + 1}, as the model sees them:")
                examples = [ui.Example(uid, up["name"], up["png"], up["source"]) for uid, up in uploaded.items()]
                ui.image_strip(examples, per_row=4, captions=False)
                st.button("Remove these uploads", key=f"clear_up_s{i}", on_click=ui.remove_uploads, args=(f"s{i}",))

# ---- queries
st.subheader("Queries")
view = ui.collect_task(photos=True)
UNKNOWN = -1
truth_options = [UNKNOWN, *range(n_way)]


def truth_label(value):
    return "unknown" if value in (None, UNKNOWN) else (view.names[value] or f"Class {value + 1}")


def known(value):
    return None if value == UNKNOWN else value


with st.container(border=True):
    if photo:
        photo_ui.query_photos(truth_options, truth_label, known)
    else:
        ui.upload_cell("q", "Upload query images", help="Each uploaded image becomes one query.")
        q_cols = st.columns(min(max(store["n_queries"], 3), 4))
        for j in range(store["n_queries"]):
            key = ui.query_canvas_key(j)
            with q_cols[j % len(q_cols)]:
                ui.canvas_cell(key, f"Query {j + 1}", size=size)
                current = store["truth"].get(key)
                kept = ui.bind_choice(f"truth_{key}", current, truth_options, UNKNOWN)
                store["truth"][key] = known(st.selectbox("True class (optional)", truth_options,
                                                         format_func=truth_label, key=f"truth_{key}", **kept))
        uploaded_q = store["uploads"].get("q", {})
        if uploaded_q:
            st.caption("Uploaded queries, as the model sees them:")
            up_cols = st.columns(min(len(uploaded_q), 6))
            for k, (uid, up) in enumerate(uploaded_q.items()):
                with up_cols[k % len(up_cols)]:
                    ui.show_model_input(up["png"], caption=up["name"], scale=2)
                    current = store["truth"].get(f"up:{uid}")
                    kept = ui.bind_choice(f"truth_up_{uid}", current, truth_options, UNKNOWN)
                    store["truth"][f"up:{uid}"] = known(st.selectbox("True class", truth_options, **kept,
                                                                     format_func=truth_label, key=f"truth_up_{uid}"))
            st.button("Remove uploaded queries", key="clear_up_q", on_click=ui.remove_uploads, args=("q",))

# ---- classify
st.subheader("Classify")
view = ui.collect_task(photos=True)
methods = photo_ui.methods_for(view)
if not methods:
    st.warning(photo_ui.no_methods_message(view))
    st.stop()
choices = ["all", *methods]
method = st.selectbox("Method", choices, key="build_method",
                      **ui.bind_choice("build_method", "protonet", choices, methods[0]),
                      format_func=lambda m: "All methods side by side" if m == "all" else ui.method_label(m))
clicked = st.button("Classify", key="classify", type="primary")
ready = sum(bool(examples) for examples in view.support)
st.caption(f"Task status: {ready}/{view.n_way} classes have examples · {len(view.queries)} queries")
if clicked:
    ui.trace(f"classify_clicked:ready={ready}/{view.n_way}:queries={len(view.queries)}:can={view.can_classify}")
    ui.show_task_problems(view)  # everything that stops classification, said once the user asks for it
else:
    for message in view.name_errors:
        st.error(message)

if clicked and view.can_classify:
    results, problems = {}, []
    with st.spinner("Classifying…"):
        for m in methods if method == "all" else [method]:
            try:
                loaded = photo_ui.model_for(view, m)
                sx, sy, qx = view.tensors(loaded.image_size)
                results[m] = ui.predict(loaded, sx, sy, qx)
            except (ui.ModelUnavailable, ValueError, fewshot.ImageError) as exc:
                problems.append(str(exc))
    st.session_state["build_results"] = {"fingerprint": view.fingerprint(), "n_way": view.n_way,
                                         "method": method, "results": results, "problems": problems}
    ui.trace(f"classified:{','.join(results)}:problems={len(problems)}")

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
                row[ui.method_label(m)] = f"{view.names[pred]} ({ui.percent(probs[j, pred])}) {ui.verdict(pred, view.truth[j])}"
            rows.append(row)
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        labelled = [j for j, t in enumerate(view.truth) if t is not None]
        if labelled:
            st.caption("Accuracy on the queries with a true class: " + ", ".join(
                f"{ui.method_label(m)} {sum(int(p[j].argmax()) == view.truth[j] for j in labelled)}/{len(labelled)}"
                for m, p in results.items()))
    for j, q in enumerate(view.queries):
        with st.container(border=True):
            left, right = st.columns([1, 4])
            with left:
                photo_ui.show_input(view, q.png, caption=f"Query {j + 1} ({q.label})", scale=3)
            with right:
                for m, probs in results.items():
                    pred = int(probs[j].argmax())
                    st.markdown(f"Prediction for Query {j + 1} ({ui.method_label(m)}): **{view.names[pred]}** "
                                f"— {ui.percent(probs[j, pred])} {ui.verdict(pred, view.truth[j])}")
                    if len(results) == 1:
                        st.dataframe(ui.probability_frame(probs[j], view.names), hide_index=True,
                                     column_config={"probability": st.column_config.ProgressColumn(
                                         "probability", min_value=0.0, max_value=1.0, format="percent")})
                if len(results) > 1:
                    import pandas as pd

                    frame = pd.DataFrame({"class": view.names, **{ui.method_label(m): p[j].astype(float)
                                                                  for m, p in results.items()}})
                    st.dataframe(frame, hide_index=True, column_config={
                        ui.method_label(m): st.column_config.ProgressColumn(ui.method_label(m), min_value=0.0,
                                                                            max_value=1.0, format="percent")
                        for m in results})
elif saved and view.can_classify:
    st.info("The task changed since the last classification; press **Classify** to update the predictions.")
