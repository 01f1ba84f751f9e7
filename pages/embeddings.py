"""Embedding explorer: t-SNE / PCA maps of a backbone's embeddings, interactive."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import fewshot

from fewshot import inspection
from pages.lab import data, examples, images, models, points as point_sets, render, task, widgets
from pages.lab.runtime import require_router

require_router()

st.title("Embedding explorer")
st.markdown("Each point is one image embedded by the chosen model's backbone, mapped to 2-D with t-SNE or PCA. "
            "Hover a point to see what it is; click it to see the image. Stars are class prototypes (the mean "
            "embedding of a class's support examples).")

view, own = examples.task_for_page(need_queries=False)
mode = task.MODES[view.mode]  # the task builder's switch (drawn symbols or photos)
source = models.source(mode.key)
methods = source.methods()
if not methods:
    st.warning(source.missing())
    st.stop()

SOURCES = {"task": "The current task (Build a task)", "omniglot": "Omniglot characters (evaluation alphabets)",
           "folder": "A folder of class subfolders (your own data)"}
# Where the map starts: the user's own task when it is complete, else Omniglot (a meaningful map of many classes)
# when the data is there, else the example task.
sources = list(SOURCES) if mode.ink else ["task"]
first = "omniglot" if view is not own and mode.ink and data.has_omniglot() else "task"
c1, c2, c3, c4 = st.columns([2, 1.3, 1, 1.3])
source_key = c1.radio("Points", sources, format_func=SOURCES.get, key="emb_source",
                      **widgets.bind_choice("emb_source", first, sources, sources[0]))
method = c2.selectbox("Model", methods, format_func=models.method_label, key="emb_method",
                      **widgets.bind_choice("emb_method", "protonet", methods, methods[0]))
projection = c3.radio("Map", ["t-SNE", "PCA"], key="emb_projection")
perplexity = c4.slider("t-SNE perplexity", 2, 50, key="emb_perplexity", disabled=projection != "t-SNE",
                       **widgets.bind("emb_perplexity", 10, lo=2, hi=50),
                       help="Roughly how many neighbours each point pays attention to; clamped below the number "
                            "of points.")
loaded = models.require(mode.key, method)
size = loaded.image_size
if mode.models_note:
    st.caption(mode.models_note)

# ---- the points
pngs = None  # the task's images, for showing a clicked point as its model sees it
if source_key == "task":
    render.example_banner(view, own)
    try:
        points = point_sets.from_view(view, size)
    except (models.ModelUnavailable, fewshot.ImageError) as exc:
        st.warning(str(exc))
        st.stop()
    pngs = view.pngs()
    if mode.ink and data.has_omniglot():
        b1, b2 = st.columns(2)
        background = b1.checkbox("Add Omniglot characters as background", key="emb_background")
        n_background = b2.slider("Background characters (5 drawings each)", 5, 100, key="emb_n_background",
                                 **widgets.bind("emb_n_background", 20, lo=5, hi=100),
                                 disabled=not background)
        if background:
            dataset = data.omniglot("lake", "test", size)
            if dataset is not None:
                episode = data.sample_episode(dataset, n_background, 5, 0, seed=3)
                points.add_task(episode, data.episode_names(dataset, episode), support_role="background",
                                cls="Omniglot background")
    elif mode.ink:
        st.caption("Set FEWSHOT_DATA_DIR to add Omniglot characters as background points.")
elif source_key == "omniglot":
    dataset = data.omniglot("lake", "test", size)
    if dataset is None:
        st.stop()
    n_classes = st.slider("Characters (10 drawings each; 5 are the support set)", 3, 40, key="emb_n_classes",
                          **widgets.bind("emb_n_classes", 10, lo=3, hi=40))
    episode = data.sample_episode(dataset, n_classes, 5, 5, seed=11)
    points = inspection.PointSet()
    points.add_task(episode, data.episode_names(dataset, episode))
    points = points.ordered()
else:
    folder = st.text_input("Folder (one subfolder per class, images inside)", key="emb_folder",
                           placeholder="/path/to/my_dataset")
    if not folder:
        st.info("Type the path of a folder on the machine running the app, e.g. `data/mine` holding `cat/1.png`, "
                "`dog/1.png`, … Every image goes through the same preprocessing as the drawings; half of each "
                "class's images (up to 12) are treated as its support set.")
        st.stop()
    try:
        points, skipped = point_sets.from_folder(folder, size)
    except ValueError as exc:
        st.error(f"Cannot use that folder: {exc}")
        st.stop()
    if skipped:
        st.warning(f"{len(skipped)} file(s) skipped: " + "; ".join(skipped[:3]))

if len(points) < 3:
    st.info("Add a few more images (at least three points are needed for a map).")
    st.stop()

# ---- MAML: embeddings before and after the inner loop
maml_step = None
inner_lr = float(getattr(loaded.model, "inner_lr_test", 0.4))
if method in ("maml", "fomaml") and points.n_support and mode.maml_note:
    st.caption(mode.maml_note + " Watch the head adapt on **Watch MAML adapt**.")
elif method in ("maml", "fomaml") and points.n_support:
    message = loaded.check_way(max(points.support_labels()) + 1)
    if message:
        st.info(message + " The map shows the meta-learned embedding only.")
    else:
        maml_step = st.slider(f"MAML inner steps on the support set (lr {inner_lr:g}); 0 = before adaptation",
                              0, 10, key="emb_maml_step", **widgets.bind("emb_maml_step", 0, lo=0, hi=10))

SYMBOL_MAP = {"support": "circle", "query": "diamond", "prototype": "star", "background": "circle-open"}


def chart(step, key: str, title: str):
    feats, proto_rows = inspection.embed_points(loaded.model, points, maml_step=step, inner_lr=inner_lr)
    xy = point_sets.project_2d(feats, projection, float(perplexity))
    frame = pd.DataFrame(points.rows + proto_rows)
    frame["x"], frame["y"], frame["point"] = xy[:, 0], xy[:, 1], np.arange(len(frame))
    frame["size"] = np.where(frame["role"] == "prototype", 16, np.where(frame["role"] == "background", 5, 10))
    fig = px.scatter(frame, x="x", y="y", color="class", symbol="role", size="size", size_max=16,
                     hover_name="label", hover_data={"role": True, "class": True, "x": False, "y": False,
                                                     "size": False, "point": False},
                     custom_data=["point"], title=title, symbol_map=SYMBOL_MAP,
                     color_discrete_sequence=px.colors.qualitative.D3 if frame["class"].nunique() <= 10
                     else px.colors.qualitative.Alphabet,
                     color_discrete_map={"Omniglot background": "#b0b0b0", "query (unknown class)": "#202020"})
    fig.update_layout(height=520, legend_title_text="", margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points")
    return event, frame


def picture(i: int, scale: int):
    """Point ``i`` as the model sees it: the task's image (ink or photo) or, from Omniglot and folders, the ink."""
    if pngs is not None and i < len(pngs):
        return images.picture(pngs[i], mode.key, scale, size)[0]
    return images.display_ink(points.image(i), scale)


def show_selection(event, frame) -> None:
    selected = (event or {}).get("selection", {}).get("points", []) if event else []
    if not selected:
        st.caption("Click a point to see its image.")
        return
    custom = selected[0].get("customdata") or [None]
    index = custom[0]
    if index is None or not 0 <= int(index) < len(frame):
        return
    row = frame.iloc[int(index)]
    if row["role"] == "prototype":
        members = [i for i, r in enumerate(points.rows) if r["class"] == row["class"] and r["role"] == "support"]
        st.markdown(f"**{row['label']}**: the mean of these support examples")
        cols = st.columns(min(max(len(members), 1), 8))
        for col, i in zip(cols, members):
            col.image(picture(i, 3))
    else:
        st.markdown(f"**{row['label']}** · {row['role']} · class {row['class']}")
        st.image(picture(int(index), 4), caption="what the model sees")


if maml_step:
    left, right = st.columns(2)
    with left:
        chart(0, "emb_chart_before", "Before adaptation (meta-learned weights)")
    with right:
        event, frame = chart(maml_step, "emb_chart", f"After {maml_step} inner step(s)")
else:
    event, frame = chart(maml_step, "emb_chart",
                         f"{projection} of {models.method_label(method)} embeddings ({len(points)} images)")
show_selection(event, frame)
st.caption(f"Map: {projection}" + (f", perplexity {perplexity} (clamped below the number of points), seed 0"
                                     if projection == "t-SNE" else "") + ". 2-D maps are cached.")
