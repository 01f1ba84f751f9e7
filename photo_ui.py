"""Photo mode in the Streamlit lab: the task builder's "Photos" switch, photo uploads and the camera, and the
photo-mode models (a frozen ImageNet EfficientNet-Lite0 + each method's head, see ``fewshot.photo``).

The photo task lives in the same task store as the drawn one (``ui.task_store()``), in its own upload slots
(``p<i>`` per class, ``pq`` for queries), so switching modes loses neither. ``ui.collect_task(photos=True)``
returns the photo task when the switch says "Photos"; pages that do not know photo mode keep getting the
drawn task. The extractor and the models are ``st.cache_resource`` objects shared by every session and never
changed (the extractor's feature cache is thread-safe).
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

import fewshot
import ui
from fewshot.photo import (PHOTO_IMAGE_SIZE, PHOTO_METHODS, SYNTHETIC_OBJECTS, PhotoBackendMissing,
                           PhotoFeatureExtractor, build_photo_model, photo_weights_path, synthetic_photo)

MODES = {"drawn": "Drawn symbols", "photo": "Photos"}
BACKBONE = "EfficientNet-Lite0 (ImageNet-pretrained, frozen)"


def support_slot(i: int) -> str:
    return f"p{i}"


QUERY_SLOT = "pq"


# ----------------------------------------------------------------------------------------------------------
# Mode


def is_photo() -> bool:
    return ui.task_store().get("mode") == "photo"


def _set_mode() -> None:
    ui.task_store()["mode"] = st.session_state["task_mode"]


def mode_switch() -> str:
    """The "Drawn symbols / Photos" switch of the task builder; returns the mode."""
    store = ui.task_store()
    st.session_state["task_mode"] = store.get("mode", "drawn")
    st.radio("What are your examples?", list(MODES), format_func=MODES.get, horizontal=True, key="task_mode",
             index=list(MODES).index(st.session_state["task_mode"]),
             on_change=_set_mode,
             help="Drawn symbols go to the Omniglot-trained Conv-4 models (28×28 ink). Photos of objects go to "
                  f"a {BACKBONE} whose 1280-d features each method classifies; it needs no training and "
                  "nothing is downloaded.")
    return store.get("mode", "drawn")


# ----------------------------------------------------------------------------------------------------------
# Models


def backend_problem() -> str | None:
    """Why photo mode cannot run here (the packages are missing), or ``None``."""
    try:
        photo_weights_path()
        import efficientnet_lite_pytorch  # noqa: F401
    except (PhotoBackendMissing, ImportError) as exc:
        return f"Photo mode is not available: {exc}"
    return None


@st.cache_resource(show_spinner="Loading EfficientNet-Lite0 (ImageNet weights from the installed package)…")
def extractor() -> PhotoFeatureExtractor:
    """The one shared feature extractor (features cached per photo content, LRU)."""
    return PhotoFeatureExtractor().load()


@st.cache_resource(show_spinner=False)
def _photo_model(method: str):
    model = build_photo_model(method)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def get_model(method: str) -> ui.Loaded:
    """The photo-mode model of ``method`` as a ``ui.Loaded`` (so ``ui.predict``/``ui.maml_steps`` work on it).

    Raises:
        ui.ModelUnavailable: the packages are missing, or the method has no photo mode.
    """
    problem = backend_problem()
    if problem:
        raise ui.ModelUnavailable(problem)
    if method not in PHOTO_METHODS:
        raise ui.ModelUnavailable(f"{ui.method_label(method)} has no photo mode (photo mode has "
                                  f"{', '.join(ui.method_label(m) for m in PHOTO_METHODS)}).")
    model = _photo_model(method)
    meta = {"image_size": PHOTO_IMAGE_SIZE, "photo": True, "backbone": BACKBONE}
    return ui.Loaded(method, model, meta, f"photo:{method}", f"photo:{method}:{PHOTO_IMAGE_SIZE}")


def methods() -> list[str]:
    return [] if backend_problem() else list(PHOTO_METHODS)


def methods_for(view: ui.TaskView) -> list[str]:
    """The methods that can classify this task: photo-mode models for photos, checkpoints for drawings."""
    return methods() if view.mode == "photo" else ui.available_methods()


def model_for(view: ui.TaskView, method: str) -> ui.Loaded:
    """``get_model`` for a photo task, else the sidebar's checkpoint (``ui.get_model``)."""
    return get_model(method) if view.mode == "photo" else ui.get_model(method)


def require_model_for(view: ui.TaskView, method: str) -> ui.Loaded:
    try:
        return model_for(view, method)
    except ui.ModelUnavailable as exc:
        st.warning(str(exc))
        st.stop()


def no_methods_message(view: ui.TaskView) -> str:
    if view.mode == "photo":
        return backend_problem() or "No photo-mode method is available."
    return "No checkpoints found, so no model can classify yet; see the sidebar."


# ----------------------------------------------------------------------------------------------------------
# Features and pictures


def photo_tensors(view: ui.TaskView) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of the photo task: ``support (S, 1280)``, ``labels (S,)``, ``queries (Q, 1280)``.

    Raises:
        fewshot.ImageError: a photo cannot be decoded (uploads are checked on arrival, so this is rare).
        ui.ModelUnavailable: the packages are missing.
    """
    problem = backend_problem()
    if problem:
        raise ui.ModelUnavailable(problem)
    support = [ex for examples in view.support for ex in examples]
    labels = [c for c, examples in enumerate(view.support) for _ in examples]
    both = support + list(view.queries)
    features = extractor().features([ex.png for ex in both], names=[ex.label for ex in both])
    return features[: len(support)], torch.tensor(labels, dtype=torch.long), features[len(support):]


@st.cache_data(show_spinner=False, max_entries=4096)
def model_view(png: bytes, image_size: int = PHOTO_IMAGE_SIZE) -> np.ndarray:
    """What the photo backbone sees: the resized, centre-cropped RGB photo ``(S, S, 3)`` uint8.

    Raises:
        fewshot.ImageError: not a usable image.
    """
    rgb = fewshot.preprocess_photo(png, image_size).permute(1, 2, 0).numpy()
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def show_photo(png: bytes, *, caption: str | None = None, width: int = 120) -> None:
    try:
        st.image(model_view(png), caption=caption, width=width)
    except fewshot.ImageError as exc:
        st.error(str(exc))


def show_input(view: ui.TaskView, png: bytes, *, caption: str | None, scale: int = 3) -> None:
    """One task image as the model sees it: the photo for photo tasks, the 28×28 ink otherwise."""
    if view.mode == "photo":
        show_photo(png, caption=caption, width=40 * scale)
    else:
        ui.show_model_input(png, caption=caption, scale=scale)


# ----------------------------------------------------------------------------------------------------------
# The photo task


def collect_photo_task() -> ui.TaskView:
    """The photo task from the store, checked like the drawn one (names, a photo per class). Never raises."""
    store = ui.task_store()
    drawn = ui.collect_task()  # only for its checks of the class names, which both modes share
    names = drawn.names
    errors, warnings = list(drawn.name_errors), []
    support: list[list[ui.Example]] = []
    for i in range(len(names)):
        examples = [ui.Example(f"up:{uid}", up["name"], up["png"], up.get("source", "upload"))
                    for uid, up in store["uploads"].get(support_slot(i), {}).items()]
        if not examples:
            errors.append(f"Class {i + 1} ('{names[i] or '?'}') has no photos: upload one or take one with the camera.")
        support.append(examples)
    counts = {len(e) for e in support if e}
    if len(counts) > 1:
        warnings.append(f"The classes have different numbers of photos ({min(counts)}–{max(counts)}); every "
                        "method copes, but it is no longer a strict K-shot task.")
    queries, truth = [], []
    for uid, up in store["uploads"].get(QUERY_SLOT, {}).items():
        queries.append(ui.Example(f"up:{uid}", up["name"], up["png"], up.get("source", "upload")))
        t = store["truth"].get(f"up:{uid}")
        truth.append(t if t is not None and 0 <= t < len(names) else None)
    if not queries:
        warnings.append("No query photos yet: upload one (or take one with the camera), then classify.")
    return ui.TaskView(names, support, queries, truth, errors, warnings, list(drawn.name_errors), mode="photo")


def load_example() -> None:
    """Callback: a 5-way task of generated photos (ball, mug, tree, banana, book), K photos each, 1 query each."""
    store = ui.task_store()
    ui._bump_uploaders(store)
    n_shot = max(1, min(3, store["n_shot"]))
    names = [kind.capitalize() for kind in SYNTHETIC_OBJECTS]
    store["n_way"], store["n_shot"] = len(names), n_shot
    store["names"] = names + [f"Class {i + 1}" for i in range(len(names), ui.MAX_WAY)]
    for i in range(ui.MAX_WAY):
        for uid in store["uploads"].get(support_slot(i), {}):
            store["truth"].pop(f"up:{uid}", None)
        store["uploads"][support_slot(i)] = {}
    store["uploads"][QUERY_SLOT] = {}
    for i, kind in enumerate(SYNTHETIC_OBJECTS):
        store["uploads"][support_slot(i)] = {
            f"photo-example-s{i}-{k}": {"name": f"{names[i]} {k + 1}", "png": synthetic_photo(kind, 1000 + 10 * i + k),
                                        "source": "example"} for k in range(n_shot)}
        uid = f"photo-example-q{i}"
        store["uploads"][QUERY_SLOT][uid] = {"name": f"query {i + 1}", "png": synthetic_photo(kind, 5000 + i),
                                             "source": "example"}
        store["truth"][f"up:{uid}"] = i
    ui._set_widget_values(store)


def clear_photos() -> None:
    """Callback: forget every photo of the task (the drawn task is kept)."""
    for slot in [support_slot(i) for i in range(ui.MAX_WAY)] + [QUERY_SLOT]:
        ui.remove_uploads(slot)


def class_photos(i: int) -> None:
    """Inside a class card: the photo uploader and thumbnails of the class's photos."""
    store = ui.task_store()
    slot = support_slot(i)
    ui.upload_cell(slot, f"Photos of class {i + 1} (1–5)", photo=True,
                   help="JPEG, PNG, … (phone photos are fine: EXIF rotation is applied). Each photo is resized and "
                        "centre-cropped to a square.")
    photos = store["uploads"].get(slot, {})
    if photos:
        st.caption(f"{len(photos)} photo(s) of class {i + 1}, as the model sees them:")
        cols = st.columns(min(len(photos), 4))
        for k, up in enumerate(photos.values()):
            with cols[k % len(cols)]:
                show_photo(up["png"], width=80)
        st.button("Remove these photos", key=f"clear_up_{slot}", on_click=ui.remove_uploads, args=(slot,))


def camera(n_way: int, names: list[str]) -> None:
    """One camera input (where the browser offers one) whose pictures go to the chosen class or the queries."""
    store = ui.task_store()
    if not st.toggle("Use the camera", key="photo_camera",
                     help="Your browser asks for permission; pictures stay in this session only."):
        return
    targets = [*range(n_way), -1]
    target = st.selectbox("Add the next picture to", targets, key="photo_camera_target",
                          **ui.bind_choice("photo_camera_target", 0, targets, 0),
                          format_func=lambda t: "the queries" if t == -1 else f"class {t + 1} ({names[t] or '?'})")
    shot = st.camera_input("Take a picture", key=f"photo_camera_input_{store.get('uploader_generation', 0)}")
    if shot is None:
        return
    seen = store.setdefault("camera_seen", [])
    if shot.file_id in seen:
        return
    seen.append(shot.file_id)
    data = shot.getvalue()
    try:
        fewshot.preprocess_photo(data, 32, name="camera picture")
    except fewshot.ImageError as exc:
        st.error(f"Not used: {exc}")
        return
    slot = QUERY_SLOT if target == -1 else support_slot(target)
    bucket = store["uploads"].setdefault(slot, {})
    bucket[f"camera-{shot.file_id}"] = {"name": f"camera {len(seen)}", "png": data, "source": "camera"}
    st.success("Picture added to " + ("the queries." if target == -1 else f"class {target + 1}."))


def query_photos(truth_options: list, truth_label, known) -> None:
    """The query uploader and each query photo with its optional true class."""
    store = ui.task_store()
    ui.upload_cell(QUERY_SLOT, "Upload query photos", photo=True, help="Each photo becomes one query.")
    queries = store["uploads"].get(QUERY_SLOT, {})
    if queries:
        st.caption("Query photos, as the model sees them:")
        cols = st.columns(min(len(queries), 5))
        for k, (uid, up) in enumerate(queries.items()):
            with cols[k % len(cols)]:
                show_photo(up["png"], caption=up["name"], width=110)
                kept = ui.bind_choice(f"truth_up_{uid}", store["truth"].get(f"up:{uid}"), truth_options,
                                      truth_options[0])
                store["truth"][f"up:{uid}"] = known(st.selectbox("True class", truth_options, format_func=truth_label,
                                                                 key=f"truth_up_{uid}", **kept))
        st.button("Remove the query photos", key=f"clear_up_{QUERY_SLOT}", on_click=ui.remove_uploads,
                  args=(QUERY_SLOT,))


def task_pngs(view: ui.TaskView) -> list[bytes]:
    """The task's photos in ``ui.points_from_view`` order (support by class, then queries)."""
    return [ex.png for examples in view.support for ex in examples] + [q.png for q in view.queries]
