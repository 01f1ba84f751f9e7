"""Embedding explorer: t-SNE / PCA maps of a backbone's embeddings, interactive."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import fewshot

from fewshot import inspection
from fewshot.embedding import nearest_neighbours
from pages.lab import data, examples, images, models, points as point_sets, render, task, widgets
from pages.lab.runtime import require_router

require_router()

st.title("Embedding explorer")
st.markdown("Each point is one image embedded by the chosen model's backbone, mapped to 2-D with t-SNE or PCA. "
            "Hover a point to see what it is; click it to see the image and its nearest neighbours in the model's "
            "own embedding space. Stars are class prototypes (the mean embedding of a class's support examples); "
            "a red cross marks a query the model gets wrong, with the class it was taken for.")

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
d1, d2 = st.columns([1, 1])
show_images = d1.toggle("Draw the images at their map positions", key="emb_images",
                        help="As embedding projectors do: every image drawn where its embedding lands.")
k_neighbours = d2.slider("Nearest neighbours of a clicked point (k)", 1, 10, key="emb_k",
                         **widgets.bind("emb_k", 5, lo=1, hi=10))
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
    if view is not own:  # shown in place of a task of the user's own
        render.example_box(f"{n_classes} characters from Omniglot's evaluation alphabets, 10 drawings of each (5 are "
                           "the support set)", own)
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
MAX_IMAGES = 600  # layout images per map; more make the browser slow

# ---- the queries the model gets wrong (the support points are its support set)
try:
    taken_for = inspection.query_predictions(loaded.model, points)
except ValueError as exc:
    taken_for = {}
    st.caption(f"Queries are not checked: {exc}")
support_classes = {r["class"] for r in points.rows if r["role"] == "support"}
wrong = [i for i, pred in taken_for.items() if points.rows[i]["class"] in support_classes
         and pred != points.rows[i]["class"]]
checked = sum(points.rows[i]["class"] in support_classes for i in taken_for)
if checked:
    st.caption(f"{models.method_label(method)} gets {checked - len(wrong)} of the {checked} queries with a known class "
               "right" + (f"; the {len(wrong)} wrong one(s) are crossed in red." if wrong else "."))


FIXED_COLOURS = {"Omniglot background": "#b0b0b0", "query (unknown class)": "#202020"}


def class_colours(classes: list[str]) -> dict[str, str]:
    """One colour per class, in order of appearance (the chart's and the drawn images' ink share them)."""
    palette = px.colors.qualitative.D3 if len(set(classes)) <= 10 else px.colors.qualitative.Alphabet
    free = [c for c in dict.fromkeys(classes) if c not in FIXED_COLOURS]
    return {**{c: palette[k % len(palette)] for k, c in enumerate(free)}, **FIXED_COLOURS}


def add_images(fig, xy: np.ndarray, colours: dict[str, str]) -> None:
    """Every point's image drawn at its map position, ink in its class's colour (the prototypes keep their stars)."""
    n = min(len(points), MAX_IMAGES)
    span = float(max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-6))
    side = span * (0.07 if n <= 60 else 0.045 if n <= 200 else 0.03)
    for i in range(n):
        uri = images.data_uri(picture(i, 1), ink_colour=colours.get(points.rows[i]["class"]))
        fig.add_layout_image(source=uri, x=float(xy[i, 0]), y=float(xy[i, 1]),
                             xref="x", yref="y", sizex=side, sizey=side, xanchor="center", yanchor="middle",
                             layer="above")
    fig.update_traces(marker=dict(opacity=0.35), selector=dict(type="scatter"))
    if len(points) > MAX_IMAGES:
        st.caption(f"The first {MAX_IMAGES} of {len(points)} images are drawn.")


def chart(step, key: str, title: str):
    feats, proto_rows = inspection.embed_points(loaded.model, points, maml_step=step, inner_lr=inner_lr)
    xy = point_sets.project_2d(feats, projection, float(perplexity))
    frame = pd.DataFrame(points.rows + proto_rows)
    frame["x"], frame["y"], frame["point"] = xy[:, 0], xy[:, 1], np.arange(len(frame))
    frame["size"] = np.where(frame["role"] == "prototype", 16, np.where(frame["role"] == "background", 5, 10))
    frame["taken for"] = [taken_for.get(i, "") for i in range(len(frame))]
    colours = class_colours(list(frame["class"]))
    fig = px.scatter(frame, x="x", y="y", color="class", symbol="role", size="size", size_max=16,
                     hover_name="label", hover_data={"role": True, "class": True, "x": False, "y": False,
                                                     "size": False, "point": False, "taken for": bool(taken_for)},
                     custom_data=["point"], title=title, symbol_map=SYMBOL_MAP, color_discrete_map=colours)
    if show_images:
        add_images(fig, xy, colours)
    if wrong:
        fig.add_scatter(x=xy[wrong, 0], y=xy[wrong, 1], mode="markers", name="wrong: taken for another class",
                        marker=dict(symbol="x-thin", size=20, line=dict(width=3, color="#d62728")),
                        hovertext=[f"{points.rows[i]['label']}: taken for {taken_for[i]}" for i in wrong],
                        hoverinfo="text", customdata=[[i] for i in wrong])
    fig.update_layout(height=620 if show_images else 520, legend_title_text="", margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points")
    return event, frame, feats, xy


def picture(i: int, scale: int):
    """Point ``i`` as the model sees it: the task's image (ink or photo) or, from Omniglot and folders, the ink."""
    if pngs is not None and i < len(pngs):
        return images.picture(pngs[i], mode.key, scale, size)[0]
    return images.display_ink(points.image(i), scale)


def neighbour_picture(i: int, frame) -> None:
    row = frame.iloc[i]
    if row["role"] == "prototype":
        st.markdown(f"★ **{row['class']}**")
        st.caption("prototype")
    else:
        st.image(picture(i, 2))


def show_neighbours(index: int, frame, feats: np.ndarray, xy: np.ndarray) -> None:
    """The clicked point's k nearest neighbours in the model's embedding space, and how many the map keeps."""
    metric = inspection.embedding_metric(loaded.model)
    found, distances = nearest_neighbours(feats, index, k_neighbours, metric=metric)
    on_map = set(nearest_neighbours(xy, index, k_neighbours)[0].tolist())
    st.markdown(f"**Its {len(found)} nearest neighbours in the model's {feats.shape[1]}-d embedding space** "
                f"({metric} distance; not the 2-D map's):")
    cols = st.columns(max(len(found), 1))
    for col, i, d in zip(cols, found.tolist(), distances.tolist()):
        with col:
            neighbour_picture(i, frame)
            label, cls = frame.iloc[i]["label"], frame.iloc[i]["class"]
            same = " · same class" if cls == frame.iloc[index]["class"] else "" if cls in label else f" · class {cls}"
            st.caption(f"{label}{same} · distance {d:.3g}")
    kept = len(on_map & set(found.tolist()))
    st.caption(f"On the 2-D map, {kept} of these {len(found)} are also among its {len(found)} nearest points: a map "
               "keeps some neighbourhoods and tears others apart.")


def show_selection(event, frame, feats: np.ndarray, xy: np.ndarray) -> None:
    selected = (event or {}).get("selection", {}).get("points", []) if event else []
    options = [None, *range(len(frame))]
    picked = st.selectbox("Or choose a point", options, key="emb_point",
                          format_func=lambda i: "—" if i is None
                          else f"{frame.iloc[i]['label']} ({frame.iloc[i]['role']})")
    custom = (selected[0].get("customdata") or [None]) if selected else [picked]
    index = custom[0]
    if index is None or not 0 <= int(index) < len(frame):
        st.caption("Click a point (or choose one) to see its image and its nearest neighbours.")
        return
    index = int(index)
    row = frame.iloc[index]
    if row["role"] == "prototype":
        members = [i for i, r in enumerate(points.rows) if r["class"] == row["class"] and r["role"] == "support"]
        st.markdown(f"**{row['label']}**: the mean of these support examples")
        cols = st.columns(min(max(len(members), 1), 8))
        for col, i in zip(cols, members):
            col.image(picture(i, 3))
    else:
        verdict = f" · **taken for {taken_for[index]}**" if index in wrong else ""
        st.markdown(f"**{row['label']}** · {row['role']} · class {row['class']}{verdict}")
        st.image(picture(index, 4), caption="what the model sees")
    show_neighbours(index, frame, feats, xy)


if maml_step:
    left, right = st.columns(2)
    with left:
        chart(0, "emb_chart_before", "Before adaptation (meta-learned weights)")
    with right:
        event, frame, feats, xy = chart(maml_step, "emb_chart", f"After {maml_step} inner step(s)")
else:
    event, frame, feats, xy = chart(maml_step, "emb_chart",
                                    f"{projection} of {models.method_label(method)} embeddings ({len(points)} images)")
show_selection(event, frame, feats, xy)
st.caption(f"Map: {projection}" + (f", perplexity {perplexity} (clamped below the number of points), seed 0"
                                     if projection == "t-SNE" else "") + ". 2-D maps are cached.")
