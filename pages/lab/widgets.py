"""Input widgets bound to the task store: the mode switch, drawing canvases, uploaders, the camera, the true-class
choice, and image strips. Whatever a widget receives is copied into the store, so it outlives the widget."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

import fewshot

from . import images, task
from .runtime import trace
from .task import MODES, Example, Mode, Upload

CANVAS_SIZE = 210
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"]
UNKNOWN = -1  # the true-class choice "unknown"

# What the uploaders of each mode say.
TEXTS = {
    "drawn": {"class": "Upload examples of class {n}",
              "class_help": "Any common image format: a photo or scan of a symbol, dark on light or light on dark.",
              "count": "{k} uploaded example(s) of class {n}, as the model sees them:", "remove": "Remove these uploads",
              "query": "Upload query images", "query_help": "Each uploaded image becomes one query.",
              "query_count": "Uploaded queries, as the model sees them:", "query_remove": "Remove uploaded queries"},
    "photo": {"class": "Photos of class {n} (1–5)",
              "class_help": "JPEG, PNG, … (phone photos are fine: EXIF rotation is applied). Each photo is resized "
                            "and centre-cropped to a square.",
              "count": "{k} photo(s) of class {n}, as the model sees them:", "remove": "Remove these photos",
              "query": "Upload query photos", "query_help": "Each photo becomes one query.",
              "query_count": "Query photos, as the model sees them:", "query_remove": "Remove the query photos"},
}


def bind(key: str, value: Any, *, lo: Any = None, hi: Any = None) -> dict[str, Any]:
    """Initialise a widget's state from the store the first time it is drawn on this visit; returns the widget's
    ``value=`` argument: pass it on (``st.slider(..., key=key, **bind(key, v))``).

    Why the value goes in twice: a widget that the browser mounts (or remounts) without knowing its state starts
    at its *default* and sends that back with the next interaction, which overwrote the user's task under load
    (20 sessions: class names became empty and N-way fell to the slider's minimum, ``benchmarks/load_test.py``).
    With the stored value as the default, such a widget starts where the user left it. ``lo``/``hi`` clamp a
    kept value into a range that has changed since (a widget refuses a default outside its range).
    """
    if key not in st.session_state:
        st.session_state[key] = value
    current = st.session_state[key]
    if lo is not None and current < lo:
        current = st.session_state[key] = lo
    if hi is not None and current > hi:
        current = st.session_state[key] = hi
    return {"value": current}


def bind_choice(key: str, value: Any, options: list, fallback: Any) -> dict[str, Any]:
    """Like :func:`bind` for a choice widget (returns its ``index=``), and repair a kept value that is no longer
    among ``options``."""
    if key not in st.session_state:
        st.session_state[key] = value if value in options else fallback
    elif st.session_state[key] not in options:
        st.session_state[key] = fallback
    return {"index": list(options).index(st.session_state[key])}


def _set_mode() -> None:
    task.store().mode = st.session_state["task_mode"]


def mode_switch() -> Mode:
    """The "Drawn symbols / Photos" switch of the task builder; returns the mode."""
    s = task.store()
    st.session_state["task_mode"] = s.mode
    st.radio("What are your examples?", list(MODES), format_func=lambda m: MODES[m].title, horizontal=True,
             key="task_mode", index=list(MODES).index(s.mode), on_change=_set_mode,
             help="Drawn symbols go to the Omniglot-trained Conv-4 models (28×28 ink). Photos of objects go to a "
                  "frozen ImageNet-pretrained EfficientNet-Lite0 whose 1280-d features each method classifies; it "
                  "needs no training and nothing is downloaded.")
    return MODES[s.mode]


# ---------------------------------------------------------------------------------------------------- drawing


def canvas_cell(key: str, label: str, *, size: int = CANVAS_SIZE) -> None:
    """One drawing canvas in its own fragment; its PNG goes into the task store.

    The canvas component forgets its drawing when the page is left; coming back, the stored drawing is
    passed as ``initial_drawing`` so the user sees (and keeps) it.
    """
    _canvas_fragment(key, label, size)


@st.fragment
def _canvas_fragment(key: str, label: str, size: int) -> None:
    s = task.store()
    if key not in st.session_state:
        # A new canvas on the page (first visit, back from another page, or after a reset): start it from the
        # stored drawing, or empty. The reset counter makes the value differ from the last one, so a canvas
        # that is still mounted reloads too.
        saved = s.drawn.get(key)
        s.canvas_init[key] = saved["json"] if saved else {"objects": [], "fewshotReset": s.resets}
    from streamlit_drawable_canvas import st_canvas  # registers a component: only inside a running app

    st.caption(label)
    stroke = max(2, round(s.stroke * size / CANVAS_SIZE))
    result = st_canvas(stroke_width=stroke, stroke_color="#000000", background_color="#FFFFFF", height=size,
                       width=size, drawing_mode="freedraw", initial_drawing=s.canvas_init.get(key),
                       return_image_data=True, key=key)
    objects = (result.json_data or {}).get("objects") or []
    png = result.image_bytes
    if png is not None:
        if objects:
            s.drawn[key] = {"png": png, "json": result.json_data}
        else:
            s.drawn.pop(key, None)
    item = s.drawn.get(key)
    if item and images.has_ink(item["png"]):
        st.caption(f"{label}: drawn")
        images.show_input(item["png"], caption=None, scale=2)
    elif item:
        st.caption(f"{label}: empty (no ink)")
    else:
        st.caption(f"{label}: empty")
    if item:
        st.button("Clear", key=f"clear_{key}", on_click=clear_canvas, args=(key,),
                  help="Empty this canvas (the toolbar's bin only goes back to the drawing the canvas started with).")


def clear_canvas(key: str) -> None:
    """Callback: forget one drawing; the canvas remounts empty (a new ``initial_drawing``)."""
    s = task.store()
    s.drawn.pop(key, None)
    s.resets += 1
    st.session_state.pop(key, None)


# ---------------------------------------------------------------------------------------------------- uploads


def _check_drawing(data: bytes, name: str) -> str | None:
    ink = fewshot.preprocess_image(data, 28, center=True, name=name)
    if float(ink.max()) < 0.05:
        return f"{name}: the image looks blank (no strokes found); upload a picture of a symbol"
    return None


def _check_photo(data: bytes, name: str) -> str | None:
    fewshot.preprocess_photo(data, 32, name=name)  # decodes it: the photo path's checks (a plain picture is fine)
    return None


CHECKS: dict[str, Callable[[bytes, str], str | None]] = {"drawn": _check_drawing, "photo": _check_photo}


def upload_cell(slot: str, label: str, mode: Mode, *, help: str | None = None) -> None:
    """A multi-file uploader whose files are copied into the task store, checked on ``mode``'s path; a file that
    cannot be used is reported in the page and not added."""
    s = task.store()
    key = f"upload_{slot}"
    widget_key = key if s.uploader_generation == 0 else f"{key}_g{s.uploader_generation}"
    fresh = widget_key not in st.session_state
    files = st.file_uploader(label, type=UPLOAD_TYPES, accept_multiple_files=True, key=widget_key, help=help) or []
    seen = set() if fresh else set(s.upload_seen.get(slot, []))
    now = {f.file_id: f for f in files}
    bucket = s.uploads.setdefault(slot, {})
    errors = s.upload_errors.setdefault(slot, {})
    for file_id in set(now) - seen:
        f = now[file_id]
        data = f.getvalue()
        try:
            problem = CHECKS[mode.key](data, f.name)
        except fewshot.ImageError as exc:
            problem = str(exc)
        if problem:
            errors[file_id] = problem
            continue
        bucket[file_id] = Upload(f.name, data, "upload")
        trace(f"upload:{slot}:{f.name}")
    for file_id in seen - set(now):
        bucket.pop(file_id, None)
        errors.pop(file_id, None)
        s.truth.pop(f"up:{file_id}", None)
    s.upload_seen[slot] = list(now)
    for file_id, message in list(errors.items()):
        if file_id in now:
            st.error(f"Not used: {message}")
        else:
            errors.pop(file_id, None)


def image_strip(examples: list[Example], mode: str = "drawn", *, image_size: int = 28, per_row: int = 5,
                captions: bool = True, scale: int = 2) -> None:
    """Thumbnails of what the model sees, ``per_row`` per row."""
    for start in range(0, len(examples), per_row):
        cols = st.columns(per_row)
        for col, ex in zip(cols, examples[start : start + per_row]):
            with col:
                images.show_input(ex.png, mode, caption=ex.label if captions else None, scale=scale,
                                  image_size=image_size)


def class_uploads(mode: Mode, i: int) -> None:
    """Inside a class card: the class's uploader and thumbnails of what it holds, with a button to remove them."""
    texts = TEXTS[mode.key]
    slot = mode.support_slot(i)
    upload_cell(slot, texts["class"].format(n=i + 1), mode, help=texts["class_help"])
    held = task.store().uploads.get(slot, {})
    if held:
        st.caption(texts["count"].format(k=len(held), n=i + 1))
        image_strip([Example(uid, up.name, up.png, up.source) for uid, up in held.items()], mode.key, per_row=4,
                    captions=False)
        st.button(texts["remove"], key=f"clear_up_{slot}", on_click=task.remove_uploads, args=(slot,))


def truth_select(query_id: str, widget_key: str, names: list[str], label: str = "True class") -> None:
    """The optional true class of one query (``query_id`` in the store's ``truth``)."""
    s = task.store()
    options = [UNKNOWN, *range(len(names))]

    def name(value: int) -> str:
        return "unknown" if value == UNKNOWN else (names[value] or f"Class {value + 1}")

    current = s.truth.get(query_id)
    kept = bind_choice(widget_key, UNKNOWN if current is None else current, options, UNKNOWN)
    chosen = st.selectbox(label, options, format_func=name, key=widget_key, **kept)
    s.truth[query_id] = None if chosen == UNKNOWN else chosen


def query_uploads(mode: Mode, names: list[str]) -> None:
    """The query uploader of ``mode`` and each uploaded query with its optional true class."""
    texts = TEXTS[mode.key]
    upload_cell(mode.query_slot, texts["query"], mode, help=texts["query_help"])
    held = task.store().uploads.get(mode.query_slot, {})
    if held:
        st.caption(texts["query_count"])
        cols = st.columns(min(len(held), 6 if mode.canvases else 5))
        for k, (uid, up) in enumerate(held.items()):
            with cols[k % len(cols)]:
                images.show_input(up.png, mode.key, caption=up.name, scale=2 if mode.canvases else 3)
                truth_select(f"up:{uid}", f"truth_up_{uid}", names)
        st.button(texts["query_remove"], key=f"clear_up_{mode.query_slot}", on_click=task.remove_uploads,
                  args=(mode.query_slot,))


def camera(mode: Mode, n_way: int, names: list[str]) -> None:
    """One camera input (where the browser offers one) whose pictures go to the chosen class or the queries."""
    s = task.store()
    if not st.toggle("Use the camera", key="photo_camera",
                     help="Your browser asks for permission; pictures stay in this session only."):
        return
    targets = [*range(n_way), -1]
    target = st.selectbox("Add the next picture to", targets, key="photo_camera_target",
                          **bind_choice("photo_camera_target", 0, targets, 0),
                          format_func=lambda t: "the queries" if t == -1 else f"class {t + 1} ({names[t] or '?'})")
    shot = st.camera_input("Take a picture", key=f"photo_camera_input_{s.uploader_generation}")
    if shot is None or shot.file_id in s.camera_seen:
        return
    s.camera_seen.append(shot.file_id)
    data = shot.getvalue()
    try:
        CHECKS[mode.key](data, "camera picture")
    except fewshot.ImageError as exc:
        st.error(f"Not used: {exc}")
        return
    slot = mode.query_slot if target == -1 else mode.support_slot(target)
    s.uploads.setdefault(slot, {})[f"camera-{shot.file_id}"] = Upload(f"camera {len(s.camera_seen)}", data, "camera")
    st.success("Picture added to " + ("the queries." if target == -1 else f"class {target + 1}."))
