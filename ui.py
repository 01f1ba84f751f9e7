"""Shared helpers of the Streamlit lab: the sidebar, checkpoints and cached models, Omniglot access, the task
the user builds (kept in ``st.session_state`` so it survives page switches), drawing/upload input and small
renderers. Pages import this module and ``fewshot``; they hold no torch code of their own.

Models come from ``st.cache_resource`` and are shared by every session, so they are treated as read-only:
anything that stores per-task state (``process_support_set``) runs on a private copy, and MAML's inner loop
is the library's functional ``adapt_steps`` (it never touches the module's weights).
"""

from __future__ import annotations

import copy
import gc
import hashlib
import io
import math
import os
import re
import runpy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import streamlit as st
import torch
from PIL import Image, ImageDraw

import fewshot

REPO = Path(__file__).resolve().parent
MAX_WAY, MAX_SHOT, MAX_QUERY_CANVASES = 10, 5, 10
CANVAS_SIZE = 210
DEFAULT_STROKE = 10
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"]
HUMAN_ERROR_LAKE = 0.045  # Lake, Salakhutdinov & Tenenbaum 2015, Science: people on 20-way one-shot Omniglot

# Published Omniglot accuracies (%) for (n_way, n_shot), all on the Vinyals et al. 2016 split (with rotations).
PAPER_RESULTS: dict[str, dict[str, Any]] = {
    "protonet": {"source": "Snell et al. 2017, Table 1",
                 "acc": {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9}},
    "matching": {"source": "Vinyals et al. 2016, Table 1",
                 "acc": {(5, 1): 98.1, (5, 5): 98.9, (20, 1): 93.8, (20, 5): 98.5}},
    "siamese": {"source": "Koch et al. 2015, as re-run by Vinyals et al. 2016, Table 1 (with fine-tuning)",
                "acc": {(5, 1): 97.3, (5, 5): 98.4, (20, 1): 88.1, (20, 5): 97.0}},
    "maml": {"source": "Finn et al. 2017, Table 1",
             "acc": {(5, 1): 98.7, (5, 5): 99.9, (20, 1): 95.8, (20, 5): 98.9}},
    "fomaml": {"source": "Finn et al. 2017, Table 1 (first-order approximation)",
               "acc": {(5, 1): 98.3, (5, 5): 99.2, (20, 1): 89.4, (20, 5): 97.9}},
    "mann": {"source": "Santoro et al. 2016 (accuracy at the 2nd / 5th showing), as listed by Vinyals et al. 2016",
             "acc": {(5, 1): 82.8, (5, 5): 94.9}},
    "finetune": {"source": "Vinyals et al. 2016, Table 1 ('Baseline classifier', a related transfer baseline)",
                 "acc": {(5, 1): 80.0, (5, 5): 95.0, (20, 1): 69.5, (20, 5): 89.1}},
}

SYMBOLS = ("circle", "cross", "triangle", "square", "bar", "plus", "zigzag", "arrow", "star", "wave")


# ----------------------------------------------------------------------------------------------------------
# Process set-up

_TORCH_CONFIGURED = False


_router = threading.local()  # one script run = one thread: is app.py's router running this page?


def run_page(page: Any) -> None:
    """app.py: run the selected page, marked as routed (see :func:`require_router`).

    With ``FEWSHOT_TRACE_FILE`` set, every script run appends one JSON line there: session, page, start time,
    duration, how it ended (``done``, ``rerun`` = interrupted by a newer request, ``stop``, or an exception's
    name) and the marks the page left with :func:`trace` (what was clicked, what was computed). It is how the
    load test (``benchmarks/load_test.py``) tells a lost click from a slow one.
    """
    _router.active = True
    _router.marks = []
    started, outcome = time.time(), "done"
    try:
        page.run()
    except BaseException as exc:
        name = type(exc).__name__
        outcome = {"RerunException": "rerun", "StopException": "stop"}.get(name, name)
        raise
    finally:
        _router.active = False
        if TRACE_FILE:
            _write_trace(page, started, outcome)
        _router.marks = None  # a fragment's own rerun (no page run around it) is not traced


TRACE_FILE = os.environ.get("FEWSHOT_TRACE_FILE")
_trace_lock = threading.Lock()


def trace(mark: str) -> None:
    """Note what this script run did (a click seen, a result computed) in the run trace; free when tracing is off."""
    if TRACE_FILE:
        marks = getattr(_router, "marks", None)
        if marks is not None:
            marks.append(f"{mark}@{time.time():.3f}")


def _write_trace(page: Any, started: float, outcome: str) -> None:
    import json

    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        store = st.session_state.get(TASK_KEY) or {}
        names = [n for n in store.get("names", [])[:store.get("n_way", 0)] if not re.fullmatch(r"Class \d+", str(n))]
        line = {"t": round(started, 3), "dt": round(time.time() - started, 3), "outcome": outcome,
                "session": ctx.session_id if ctx else None, "page": getattr(page, "url_path", None) or "home",
                "names": names, "marks": getattr(_router, "marks", [])}
        with _trace_lock, open(TRACE_FILE, "a") as f:
            f.write(json.dumps(line) + "\n")
    except Exception:  # a trace must never break the page
        pass


def require_router() -> None:
    """Every page starts here. A page opened by its own link (``/build``) on a fresh connection is run by
    Streamlit's ``pages/`` folder convention without app.py: no sidebar, file names as the menu. Then
    app.py runs instead; its ``st.navigation`` picks the same page from the URL and runs it properly."""
    if not getattr(_router, "active", False):
        runpy.run_path(str(Path(__file__).resolve().parent / "app.py"), run_name="__main__")
        st.stop()


def configure_torch() -> None:
    """Once per process: torch's CPU thread count (``FEWSHOT_TORCH_THREADS``, default 1).

    The app's work is many tiny forward passes, often from several sessions at once; one intra-op thread per
    pass avoids oversubscription, which made a 5-way classification ~10x slower on a busy two-core machine.
    """
    global _TORCH_CONFIGURED
    if not _TORCH_CONFIGURED:
        torch.set_num_threads(max(1, int(os.environ.get("FEWSHOT_TORCH_THREADS", "1"))))
        # Streamlit runs a full gc.collect() after every script run; with torch, numpy and streamlit loaded that
        # walks ~240,000 objects (0.2 s on this CPU, holding the GIL) for nothing: they live as long as the
        # process. Freezing them once leaves those collections only the objects made since.
        gc.freeze()
        _TORCH_CONFIGURED = True


# ----------------------------------------------------------------------------------------------------------
# Checkpoints, device and cached models


def checkpoint_dir() -> Path:
    """``$FEWSHOT_CHECKPOINT_DIR`` or ``checkpoints/`` next to this file."""
    return Path(os.environ.get("FEWSHOT_CHECKPOINT_DIR") or REPO / "checkpoints").expanduser()


@st.cache_data(show_spinner=False, max_entries=256)
def _checkpoint_record(path: str, mtime: float) -> dict[str, Any]:
    """Metadata of one checkpoint, or ``{"error": message}`` for a file that is not a fewshot checkpoint."""
    try:
        meta = fewshot.read_checkpoint_info(path)
    except fewshot.CheckpointError as exc:
        return {"error": str(exc)}
    return {k: v for k, v in meta.items() if k not in ("train_state", "history", "class_names")}


def _checkpoint_roots() -> list[Path]:
    roots = [checkpoint_dir()]
    extra = str(st.session_state.get("ckpt_extra_dir") or "").strip()
    if extra:
        roots.append(Path(extra).expanduser())
    return roots


def _checkpoint_path(checkpoint_id: str) -> Path:
    """Checkpoint ids are paths relative to ``checkpoint_dir()``, or absolute for the extra folder."""
    path = Path(checkpoint_id)
    return path if path.is_absolute() else checkpoint_dir() / path


def list_checkpoints() -> tuple[dict[str, list[str]], dict[str, dict], list[str]]:
    """``(method -> [checkpoint ids]), (id -> metadata), [problems]`` for every ``*.safetensors`` found.

    Ids are paths relative to ``checkpoint_dir()``; files from the sidebar's extra folder have absolute ids.
    """
    by_method: dict[str, list[str]] = {m: [] for m in fewshot.METHODS}
    metas: dict[str, dict] = {}
    problems: list[str] = []
    for n, root in enumerate(_checkpoint_roots()):
        if not root.is_dir():
            if n:
                problems.append(f"{root} is not a folder")
            continue
        for path in sorted(root.rglob("*.safetensors")):
            cid = path.relative_to(root).as_posix() if n == 0 else str(path.resolve())
            try:
                record = _checkpoint_record(str(path), path.stat().st_mtime)
            except OSError as exc:
                problems.append(f"{cid}: {exc}")
                continue
            if "error" in record:
                problems.append(record["error"])
                continue
            if record.get("method") in by_method and cid not in metas:
                by_method[record["method"]].append(cid)
                metas[cid] = record
    return by_method, metas, problems


@st.cache_data(show_spinner=False)
def measured_accuracies(mtime: float | None = None) -> dict[str, list[dict]]:
    """Test accuracies of the shipped checkpoints (``benchmarks/results/accuracy.json``) by checkpoint path."""
    path = REPO / "benchmarks" / "results" / "accuracy.json"
    out: dict[str, list[dict]] = {}
    try:
        import json

        for record in json.loads(path.read_text()):
            if "accuracy" in record and "checkpoint" in record:
                key = str(Path(record["checkpoint"])).split("checkpoints/")[-1]
                out.setdefault(key, []).append(record)
    except (OSError, ValueError):
        pass
    return out


def describe_checkpoint(meta: dict, checkpoint_id: str | None = None) -> str:
    """One line: protocol, task shape, measured test accuracy (or validation accuracy)."""
    kwargs = meta.get("method_kwargs", {})
    way = meta.get("n_way") or kwargs.get("n_way")
    parts = [f"protocol **{meta.get('protocol') or meta.get('dataset') or '?'}**"]
    if way:
        parts.append(f"trained {way}-way {meta.get('n_shot', '?')}-shot")
    results_file = REPO / "benchmarks" / "results" / "accuracy.json"
    measured = measured_accuracies(results_file.stat().st_mtime if results_file.exists() else None)
    records = measured.get(checkpoint_id or "", [])
    best = [r for r in records if (r["n_way"], r["n_shot"]) == (5, 1)] or records
    if best:
        r = best[0]
        parts.append(f"test {100 * r['accuracy']:.1f}% ± {100 * r['ci95']:.1f} ({r['n_way']}-way {r['n_shot']}-shot, "
                     f"{r['protocol']} test split)")
    elif meta.get("val_accuracy") is not None:
        parts.append(f"val {100 * meta['val_accuracy']:.1f}%")
    else:
        parts.append("no validation accuracy recorded")
    if meta.get("steps_done"):
        parts.append(f"{meta['steps_done']} steps")
    return " · ".join(parts)


def device_options() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def current_device() -> str:
    chosen = st.session_state.get("device")
    options = device_options()
    return chosen if chosen in options else options[-1]


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=24)
def _load_model(path: str, mtime: float, device: str):
    """One shared, read-only model per (file, version, device). Never call .train() or an optimiser on it."""
    model, info = fewshot.load_checkpoint(path, map_location=device)
    fewshot.use_fast_layout(model)  # on a CPU, channels_last: the layout train() and `fewshot evaluate` use
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dict(info.metadata)


@dataclass
class Loaded:
    method: str
    model: Any
    meta: dict
    path: str
    key: str  # identifies (file, mtime, device) for caches

    @property
    def image_size(self) -> int:
        return int(self.meta.get("image_size", 28))

    @property
    def title(self) -> str:
        return fewshot.METHOD_TITLES[self.method]

    @property
    def fixed_way(self) -> int | None:
        return getattr(self.model, "n_way", None)


class ModelUnavailable(Exception):
    """No usable checkpoint for a method; the message says what to do."""


def selected_checkpoint(method: str) -> str | None:
    by_method, _, _ = list_checkpoints()
    options = by_method[method]
    if not options:
        return None
    chosen = st.session_state.get(f"ckpt_{method}")
    return chosen if chosen in options else _default_checkpoint(method, options)


def _default_checkpoint(method: str, options: list[str]) -> str:
    preferred = f"lake/{method}.safetensors"
    return preferred if preferred in options else options[0]


def get_model(method: str) -> Loaded:
    """The sidebar's checkpoint for ``method``, loaded once per process.

    Raises:
        ModelUnavailable: no checkpoint, or a broken one.
    """
    rel = selected_checkpoint(method)
    if rel is None:
        raise ModelUnavailable(
            f"No checkpoint for {fewshot.METHOD_TITLES[method]} in {checkpoint_dir()}. Train one with "
            f"`python -m fewshot train --method {method} --protocol lake --out "
            f"checkpoints/lake/{method}.safetensors` or set FEWSHOT_CHECKPOINT_DIR."
        )
    path = _checkpoint_path(rel)
    device = current_device()
    try:
        mtime = path.stat().st_mtime
        model, meta = _load_model(str(path), mtime, device)
    except (OSError, fewshot.CheckpointError) as exc:
        raise ModelUnavailable(f"Cannot load {rel}: {exc}") from exc
    return Loaded(method, model, meta, str(path), f"{path}:{mtime}:{device}")


def require_model(method: str) -> Loaded:
    """:func:`get_model`, or a warning in the page and ``st.stop()`` when the model is unavailable."""
    try:
        return get_model(method)
    except ModelUnavailable as exc:
        st.warning(str(exc))
        st.stop()


def available_methods() -> list[str]:
    by_method, _, _ = list_checkpoints()
    return [m for m in fewshot.METHODS if by_method[m]]


def method_label(method: str) -> str:
    return fewshot.METHOD_TITLES.get(method, method)


def sidebar() -> None:
    """The one shared sidebar: device and a checkpoint per method (keys ``device``, ``ckpt_<method>``)."""
    by_method, metas, problems = list_checkpoints()
    with st.sidebar:
        st.markdown("### Models")
        options = device_options()
        if st.session_state.get("device") not in options:
            st.session_state["device"] = options[-1]
        st.radio("Device", options, key="device", horizontal=True, index=options.index(st.session_state["device"]),
                 help="Where models run. 'cuda' appears when a GPU is available.")
        if not any(by_method.values()):
            st.warning(f"No checkpoints found in `{checkpoint_dir()}`. Train one with `python -m fewshot train "
                       "... --out checkpoints/lake/protonet.safetensors`, or set FEWSHOT_CHECKPOINT_DIR.")
        with st.expander("Checkpoints", expanded=False):
            st.caption(f"Every `*.safetensors` under `{checkpoint_dir()}`. Defaults: the *lake* protocol "
                       "(never saw the evaluation alphabets).")
            for method in fewshot.METHODS:
                paths = by_method[method]
                if not paths:
                    st.caption(f"**{method_label(method)}**: no checkpoint")
                    continue
                key = f"ckpt_{method}"
                if st.session_state.get(key) not in paths:
                    st.session_state[key] = _default_checkpoint(method, paths)
                chosen = st.selectbox(method_label(method), paths, key=key, index=paths.index(st.session_state[key]))
                st.caption(describe_checkpoint(metas[chosen], chosen))
            st.text_input("Also look in this folder", key="ckpt_extra_dir", placeholder="/path/to/my/checkpoints",
                          value=st.session_state.get("ckpt_extra_dir") or "",
                          help="Your own checkpoints (written by `python -m fewshot train`), on the machine "
                               "running the app.")
            for problem in problems:
                st.caption(f"Skipped: {problem}")


# ----------------------------------------------------------------------------------------------------------
# Omniglot


def omniglot_dir() -> tuple[str | None, str]:
    """``(folder, "")`` when Omniglot is found, else ``(None, the library's message)``."""
    try:
        return str(fewshot.resolve_data_dir()), ""
    except fewshot.DataNotFoundError as exc:
        return None, str(exc)


@st.cache_resource(show_spinner="Loading Omniglot (the first load decodes 32,460 images; later loads take a second)…",
                   max_entries=4)
def _omniglot(protocol: str, split: str, data_dir: str, image_size: int):
    return fewshot.load_omniglot(protocol, split, data_dir=data_dir, image_size=image_size)


def omniglot(protocol: str = "lake", split: str = "test", image_size: int = 28, *, explain: bool = True):
    """The dataset (shared, read-only), or ``None`` after telling the user how to point the app at the data."""
    folder, message = omniglot_dir()
    if folder is None:
        if explain:
            data_missing(message)
        return None
    try:
        return _omniglot(protocol, split, folder, image_size)
    except (fewshot.DataNotFoundError, ValueError, OSError) as exc:
        if explain:
            data_missing(str(exc))
        return None


def data_missing(message: str) -> None:
    st.warning(
        "This needs the Omniglot images, and they were not found. Put `images_background.zip` and "
        "`images_evaluation.zip` (from https://github.com/brendenlake/omniglot, `python/` folder, or "
        "`python -m fewshot download --data-dir DIR`) in a folder and start the app with "
        "**FEWSHOT_DATA_DIR** pointing at it, e.g. `FEWSHOT_DATA_DIR=/path/to/omniglot streamlit run app.py`. "
        "Drawing and uploading your own task works without it (page *Build a task*)."
    )
    with st.expander("Details"):
        st.code(message, language=None)


def omniglot_class_label(name: str) -> str:
    """``Alphabet/character07/rot000`` -> ``Alphabet 07`` (with the rotation when there is one)."""
    parts = name.split("/")
    if len(parts) < 2:
        return name
    label = f"{parts[0].replace('_', ' ')} {parts[1].replace('character', '')}"
    if len(parts) > 2 and parts[2] not in ("rot000", ""):
        label += f" ({parts[2][3:].lstrip('0') or '0'}°)"
    return label


def sample_episode(dataset, n_way: int, n_shot: int, n_query: int, seed: int, index: int = 0):
    """The ``index``-th task of a sampler seeded with ``seed`` (the same tasks every time)."""
    sampler = fewshot.TaskSampler(dataset, n_way, n_shot, n_query, seed=seed)
    for _ in range(index):
        sampler.sample_indices()
    return sampler.sample_task()


# ----------------------------------------------------------------------------------------------------------
# Images


def ink_to_png(ink: np.ndarray) -> bytes:
    """An ink map (1 = ink) as a black-on-white PNG."""
    arr = np.clip(255.0 * (1.0 - np.asarray(ink, dtype=np.float32)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return buf.getvalue()


def tensor_to_png(image: torch.Tensor) -> bytes:
    """A model input ``(1, H, W)`` (1 = ink) as a PNG."""
    return ink_to_png(image.detach().float().cpu().numpy()[0])


@st.cache_data(show_spinner=False, max_entries=4096)
def model_input(png: bytes, image_size: int) -> np.ndarray:
    """What the model sees: ``fewshot.preprocess_image(..., center=True)`` as an ``(H, W)`` array (1 = ink).

    Raises:
        fewshot.ImageError: not a usable image.
    """
    return fewshot.preprocess_image(png, image_size, center=True).numpy()[0]


def display_ink(ink: np.ndarray, scale: int = 3) -> np.ndarray:
    """Black ink on white, enlarged with nearest-neighbour so the pixels stay visible."""
    arr = np.clip(255.0 * (1.0 - np.asarray(ink, dtype=np.float32)), 0, 255).astype(np.uint8)
    return np.kron(arr, np.ones((scale, scale), dtype=np.uint8))


def show_model_input(png: bytes, image_size: int = 28, caption: str | None = "what the model sees",
                     scale: int = 3) -> None:
    try:
        st.image(display_ink(model_input(png, image_size), scale), caption=caption, width=image_size * scale)
    except fewshot.ImageError as exc:
        st.error(str(exc))


def show_image(image, *, scale: int = 3, caption: str | None = None) -> None:
    """Show one model input ``(1, H, W)`` (tensor or array, 1 = ink) as black on white, enlarged."""
    arr = np.asarray(image.detach().float().cpu() if isinstance(image, torch.Tensor) else image)[0]
    st.image(display_ink(arr, scale), caption=caption, width=arr.shape[1] * scale)


def labels_of(labels) -> list[int]:
    """Episode labels (a tensor) as a list of ints."""
    return [int(v) for v in labels]


def _stroke(draw: ImageDraw.ImageDraw, points, width: int) -> None:
    draw.line(points, fill=0, width=width, joint="curve")
    r = width / 2
    for x, y in (points[0], points[-1]):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)


def synthetic_symbol(kind: str, seed: int = 0, size: int = 210) -> bytes:
    """A hand-drawn-looking symbol (black on white PNG) with per-seed jitter in position, scale, angle, width."""
    rng = np.random.default_rng(seed)
    scale = size * rng.uniform(0.28, 0.36)
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.08, 0.08) * size
    angle = rng.uniform(-0.2, 0.2)
    width = int(round(size / 21 * rng.uniform(0.85, 1.15)))
    cos, sin = math.cos(angle), math.sin(angle)

    def pt(u: float, v: float) -> tuple[float, float]:
        u, v = u + rng.normal(0, 0.02), v + rng.normal(0, 0.02)
        return cx + scale * (u * cos - v * sin), cy + scale * (u * sin + v * cos)

    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        _stroke(draw, [pt(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40)], width)
    elif kind == "cross":
        _stroke(draw, [pt(-1, -1), pt(1, 1)], width)
        _stroke(draw, [pt(-1, 1), pt(1, -1)], width)
    elif kind == "triangle":
        _stroke(draw, [pt(0, -1), pt(1, 0.8), pt(-1, 0.8), pt(0, -1)], width)
    elif kind == "square":
        _stroke(draw, [pt(-0.9, -0.9), pt(0.9, -0.9), pt(0.9, 0.9), pt(-0.9, 0.9), pt(-0.9, -0.9)], width)
    elif kind == "bar":
        _stroke(draw, [pt(0, -1), pt(0, 1)], width)
    elif kind == "plus":
        _stroke(draw, [pt(0, -1), pt(0, 1)], width)
        _stroke(draw, [pt(-1, 0), pt(1, 0)], width)
    elif kind == "zigzag":
        _stroke(draw, [pt(-1, -0.8), pt(-0.3, 0.8), pt(0.3, -0.8), pt(1, 0.8)], width)
    elif kind == "arrow":
        _stroke(draw, [pt(-1, 0), pt(1, 0)], width)
        _stroke(draw, [pt(0.4, -0.6), pt(1, 0), pt(0.4, 0.6)], width)
    elif kind == "star":
        pts = [pt(math.cos(t), math.sin(t)) for t in -math.pi / 2 + np.arange(6) * 4 * math.pi / 5]
        _stroke(draw, pts, width)
    elif kind == "wave":
        _stroke(draw, [pt(u, 0.5 * math.sin(3 * u)) for u in np.linspace(-1, 1, 30)], width)
    else:
        raise ValueError(f"unknown symbol {kind!r}")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def synthetic_task(n_way: int = 5, n_shot: int = 1, n_query: int = 1, seed: int = 0) -> dict[str, Any]:
    """A small task needing no data: ``{"names", "support": [[png]], "queries": [(png, class)]}``."""
    names = list(SYMBOLS[:n_way])
    support = [[synthetic_symbol(k, seed=1000 * seed + 10 * c + s) for s in range(n_shot)]
               for c, k in enumerate(names)]
    queries = [(synthetic_symbol(k, seed=1000 * seed + 500 + 10 * c + q), c)
               for q in range(n_query) for c, k in enumerate(names)]
    return {"names": names, "support": support, "queries": queries}


# ----------------------------------------------------------------------------------------------------------
# The task the user builds (session state)

TASK_KEY = "task"


def task_store() -> dict[str, Any]:
    """The current task, kept outside widget state so it survives page switches.

    ``names``: class names (``MAX_WAY`` of them; the first ``n_way`` are used); ``drawn``: canvas key ->
    ``{"png", "json"}``; ``uploads``: slot (``s<i>`` or ``q``) -> ``{id: {"name", "png", "source"}}``;
    ``truth``: query item id -> class index or ``None``.
    """
    if TASK_KEY not in st.session_state:
        st.session_state[TASK_KEY] = {
            "n_way": 5, "n_shot": 1, "n_queries": 1, "stroke": DEFAULT_STROKE,
            "names": [f"Class {i + 1}" for i in range(MAX_WAY)],
            "drawn": {}, "uploads": {}, "truth": {}, "canvas_init": {}, "resets": 0, "upload_seen": {},
            "upload_errors": {}, "omniglot_examples": 0,
        }
    return st.session_state[TASK_KEY]


def support_canvas_key(i: int, j: int) -> str:
    return f"draw_s{i}_{j}"


def query_canvas_key(j: int) -> str:
    return f"draw_q{j}"


def _reset_canvases(store: dict) -> None:
    """Empty every canvas. Dropping a canvas's component state makes :func:`_canvas_fragment` pass a new empty
    ``initial_drawing``, which the mounted component loads (and reports back)."""
    store["resets"] += 1
    store["drawn"] = {}
    keys = [support_canvas_key(i, j) for i in range(MAX_WAY) for j in range(MAX_SHOT)]
    keys += [query_canvas_key(j) for j in range(MAX_QUERY_CANVASES)]
    for key in keys:
        st.session_state.pop(key, None)


def _set_widget_values(store: dict) -> None:
    """Push the store into the Build page's widgets (only from callbacks, before widgets are drawn)."""
    for name in ("n_way", "n_shot", "n_queries"):
        st.session_state[name] = store[name]
    for i, value in enumerate(store["names"]):
        st.session_state[f"class_name_{i}"] = value
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith("truth_")]:
        del st.session_state[key]


def _clear_drawn_inputs(store: dict) -> None:
    """Forget the drawn task's uploads, true classes and upload errors; photo mode's (slots ``p…``) stay."""
    photo_slots = {slot: items for slot, items in store["uploads"].items() if slot.startswith("p")}
    photo_ids = {f"up:{uid}" for items in photo_slots.values() for uid in items}
    store["uploads"] = photo_slots
    store["truth"] = {key: value for key, value in store["truth"].items() if key in photo_ids}
    store["upload_errors"] = {slot: e for slot, e in store["upload_errors"].items() if slot.startswith("p")}


def clear_task() -> None:
    """Callback of "Clear the task": empty canvases, uploads, names back to defaults."""
    store = task_store()
    _reset_canvases(store)
    _clear_drawn_inputs(store)
    store["names"] = [f"Class {i + 1}" for i in range(MAX_WAY)]
    _bump_uploaders(store)
    _set_widget_values(store)


def _bump_uploaders(store: dict) -> None:
    store["uploader_generation"] = store.get("uploader_generation", 0) + 1
    store["upload_seen"] = {}


def _install_example(names: list[str], support: list[list[bytes]], queries: list[tuple[bytes, int | None]],
                     source: str) -> None:
    store = task_store()
    _reset_canvases(store)
    _bump_uploaders(store)
    n_way = len(names)
    store["n_way"], store["n_shot"] = n_way, max(1, min(MAX_SHOT, max(len(s) for s in support)))
    store["names"] = list(names) + [f"Class {i + 1}" for i in range(n_way, MAX_WAY)]
    _clear_drawn_inputs(store)
    for i, pngs in enumerate(support):
        store["uploads"][f"s{i}"] = {f"{source}-s{i}-{j}": {"name": f"{names[i]} {j + 1}", "png": png, "source": source}
                                     for j, png in enumerate(pngs)}
    store["uploads"]["q"] = {}
    for q, (png, truth) in enumerate(queries):
        uid = f"{source}-q{q}"
        store["uploads"]["q"][uid] = {"name": f"query {q + 1}", "png": png, "source": source}
        store["truth"][f"up:{uid}"] = truth
    _set_widget_values(store)


def load_synthetic_example() -> None:
    """Callback: a 5-way 1-shot task of synthetic symbols (circle, cross, triangle, square, bar) + 5 queries."""
    example = synthetic_task(5, 1, 1, seed=0)
    _install_example(example["names"], example["support"], example["queries"], "example")


def load_omniglot_example() -> None:
    """Callback: an N-way K-shot task from Omniglot's evaluation alphabets (lake test split), one query per class."""
    store = task_store()
    dataset = omniglot("lake", "test", explain=False)
    if dataset is None:
        return
    store["omniglot_examples"] += 1
    n_way, n_shot = store["n_way"], store["n_shot"]
    task = sample_episode(dataset, n_way, n_shot, 1, seed=1000 + store["omniglot_examples"])
    names = [omniglot_class_label(dataset.class_names[int(c)]) for c in task.class_ids]
    names = _dedupe(names)
    support = [[tensor_to_png(task.support_images[k]) for k in range(len(task.support_labels))
                if int(task.support_labels[k]) == c] for c in range(n_way)]
    queries = [(tensor_to_png(task.query_images[k]), int(task.query_labels[k])) for k in range(len(task.query_labels))]
    _install_example(names, support, queries, "omniglot")


def _dedupe(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, n = name, 2
        while candidate in out:
            candidate, n = f"{name} #{n}", n + 1
        out.append(candidate)
    return out


def bind(key: str, value: Any, *, lo: Any = None, hi: Any = None) -> dict[str, Any]:
    """Initialise a widget's state from the store the first time it is drawn on this visit; returns the widget's
    ``value=`` argument: pass it on (``st.slider(..., key=key, **ui.bind(key, v))``).

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


@dataclass
class Example:
    id: str
    label: str
    png: bytes
    source: str  # "drawn", "upload", "example", "omniglot"


@dataclass
class TaskView:
    """The task as the models will get it, plus what is wrong with it."""

    names: list[str]
    support: list[list[Example]]
    queries: list[Example]
    truth: list[int | None]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    name_errors: list[str] = field(default_factory=list)  # the subset of ``errors`` about class names
    mode: str = "drawn"  # "photo": a photo task (photo_ui.py); its tensors are EfficientNet features

    @property
    def n_way(self) -> int:
        return len(self.names)

    @property
    def can_classify(self) -> bool:
        return not self.errors and bool(self.queries)

    def tensors(self, image_size: int = 28) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``support_images (S,1,H,W)``, ``support_labels (S,)``, ``query_images (Q,1,H,W)``.

        A photo task gives features instead: ``(S, 1280)``, ``(S,)``, ``(Q, 1280)`` (``image_size`` unused).
        """
        if self.mode == "photo":
            import photo_ui

            return photo_ui.photo_tensors(self)
        images, labels = [], []
        for c, examples in enumerate(self.support):
            for ex in examples:
                images.append(torch.from_numpy(model_input(ex.png, image_size).copy()).unsqueeze(0))
                labels.append(c)
        queries = [torch.from_numpy(model_input(q.png, image_size).copy()).unsqueeze(0) for q in self.queries]
        empty = torch.zeros(0, 1, image_size, image_size)
        return (torch.stack(images) if images else empty, torch.tensor(labels, dtype=torch.long),
                torch.stack(queries) if queries else empty)

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for c, examples in enumerate(self.support):
            for ex in examples:
                h.update(f"s{c}".encode())
                h.update(ex.png)
        for q in self.queries:
            h.update(b"q")
            h.update(q.png)
        return h.hexdigest()[:16]


def _has_ink(png: bytes) -> bool:
    try:
        return float(model_input(png, 28).max()) > 0.05
    except fewshot.ImageError:
        return False


def collect_task(*, photos: bool = False) -> TaskView:
    """Read the store and check it: names, examples per class, queries. Never raises for bad user input.

    With ``photos=True`` (pages that handle photo mode) and the task builder's switch on "Photos", the photo
    task (``photo_ui.collect_photo_task``); otherwise the drawn task.
    """
    store = task_store()
    if photos and store.get("mode") == "photo":
        import photo_ui

        return photo_ui.collect_photo_task()
    n_way, n_shot = store["n_way"], store["n_shot"]
    names = [str(n).strip() for n in store["names"][:n_way]]
    errors: list[str] = []
    warnings: list[str] = []
    for i, name in enumerate(names):
        if not name:
            errors.append(f"Class {i + 1} has no name: type one in its name box.")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name and name.lower() in seen:
            errors.append(f"Classes {seen[name.lower()] + 1} and {i + 1} are both called '{name}': "
                          "give every class a different name.")
        seen.setdefault(name.lower(), i)
    name_errors = list(errors)
    support: list[list[Example]] = []
    for i in range(n_way):
        examples = []
        for j in range(n_shot):
            key = support_canvas_key(i, j)
            item = store["drawn"].get(key)
            if item and _has_ink(item["png"]):
                examples.append(Example(key, f"drawing {j + 1}", item["png"], "drawn"))
        for uid, up in store["uploads"].get(f"s{i}", {}).items():
            examples.append(Example(f"up:{uid}", up["name"], up["png"], up.get("source", "upload")))
        if not examples:
            errors.append(f"Class {i + 1} ('{names[i] or '?'}') has no examples: draw one or upload an image.")
        elif len(examples) > n_shot:
            warnings.append(f"Class {i + 1} ('{names[i] or '?'}') has {len(examples)} examples but K-shot is "
                            f"{n_shot}: all {len(examples)} are used. Raise 'Drawings per class (K-shot)' or remove "
                            "some uploads for a strict K-shot task.")
        support.append(examples)
    counts = {len(e) for e in support if e}
    if len(counts) > 1:
        warnings.append(f"The classes have different numbers of examples ({min(counts)}–{max(counts)}); every "
                        "method copes, but it is no longer a strict K-shot task.")
    queries: list[Example] = []
    truth: list[int | None] = []
    for j in range(store["n_queries"]):
        key = query_canvas_key(j)
        item = store["drawn"].get(key)
        if item and _has_ink(item["png"]):
            queries.append(Example(key, f"drawn query {j + 1}", item["png"], "drawn"))
            truth.append(store["truth"].get(key))
    for uid, up in store["uploads"].get("q", {}).items():
        queries.append(Example(f"up:{uid}", up["name"], up["png"], up.get("source", "upload")))
        truth.append(store["truth"].get(f"up:{uid}"))
    truth = [t if t is not None and 0 <= t < n_way else None for t in truth]
    if not queries:
        warnings.append("No queries yet: draw a query or upload one, then classify.")
    return TaskView(names, support, queries, truth, errors, warnings, name_errors)


def show_task_problems(view: TaskView) -> None:
    for message in view.errors:
        st.error(message)
    for message in view.warnings:
        st.warning(message)


def task_or_example_prompt(view: TaskView, *, need_queries: bool = True) -> bool:
    """On pages that use the current task: ``True`` when it is usable, else explain and offer the example."""
    if not view.errors and (view.queries or not need_queries):
        return True
    st.info("This page works on the task from **Build a task** (your drawings and uploads). "
            "It is not complete yet:")
    show_task_problems(view)
    if view.mode == "photo":
        import photo_ui

        st.button("Use the example task (generated photos)", key=f"example_here_{_page_tag()}",
                  on_click=photo_ui.load_example)
        return False
    st.button("Use the example task (synthetic symbols)", key=f"example_here_{_page_tag()}",
              on_click=load_synthetic_example)
    return False


def _page_tag() -> str:
    return re.sub(r"\W+", "_", str(st.session_state.get("_page", "page")))


# ----------------------------------------------------------------------------------------------------------
# Drawing and uploading


def canvas_cell(key: str, label: str, *, size: int = CANVAS_SIZE) -> None:
    """One drawing canvas in its own fragment; its PNG goes into the task store.

    The canvas component forgets its drawing when the page is left; coming back, the stored drawing is
    passed as ``initial_drawing`` so the user sees (and keeps) it.
    """
    _canvas_fragment(key, label, size)


@st.fragment
def _canvas_fragment(key: str, label: str, size: int) -> None:
    store = task_store()
    if key not in st.session_state:
        # A new canvas on the page (first visit, back from another page, or after a reset): start it from the
        # stored drawing, or empty. The reset counter makes the value differ from the last one, so a canvas
        # that is still mounted reloads too.
        saved = store["drawn"].get(key)
        store["canvas_init"][key] = saved["json"] if saved else {"objects": [], "fewshotReset": store["resets"]}
    from streamlit_drawable_canvas import st_canvas  # registers a component: only inside a running app

    st.caption(label)
    stroke = max(2, round(store.get("stroke", DEFAULT_STROKE) * size / CANVAS_SIZE))
    result = st_canvas(stroke_width=stroke, stroke_color="#000000", background_color="#FFFFFF", height=size,
                       width=size, drawing_mode="freedraw", initial_drawing=store["canvas_init"].get(key),
                       return_image_data=True, key=key)
    objects = (result.json_data or {}).get("objects") or []
    png = result.image_bytes
    if png is not None:
        if objects:
            store["drawn"][key] = {"png": png, "json": result.json_data}
        else:
            store["drawn"].pop(key, None)
    item = store["drawn"].get(key)
    if item and _has_ink(item["png"]):
        st.caption(f"{label}: drawn")
        show_model_input(item["png"], caption=None, scale=2)
    elif item:
        st.caption(f"{label}: empty (no ink)")
    else:
        st.caption(f"{label}: empty")
    if item:
        st.button("Clear", key=f"clear_{key}", on_click=clear_canvas, args=(key,),
                  help="Empty this canvas (the toolbar's bin only goes back to the drawing the canvas started with).")


def clear_canvas(key: str) -> None:
    """Callback: forget one drawing; the canvas remounts empty (a new ``initial_drawing``)."""
    store = task_store()
    store["drawn"].pop(key, None)
    store["resets"] += 1
    st.session_state.pop(key, None)


def upload_cell(slot: str, label: str, *, help: str | None = None, photo: bool = False) -> None:
    """A multi-file uploader whose files are copied into the task store (so they outlive the widget).

    A file that is not an image is reported in the page and not added. ``photo=True``: checked on the photo
    path (``fewshot.preprocess_photo``), where a plain picture is not "blank".
    """
    store = task_store()
    key = f"upload_{slot}"
    generation = store.get("uploader_generation", 0)
    widget_key = key if generation == 0 else f"{key}_g{generation}"
    fresh = widget_key not in st.session_state
    files = st.file_uploader(label, type=UPLOAD_TYPES, accept_multiple_files=True, key=widget_key, help=help) or []
    seen = set() if fresh else set(store["upload_seen"].get(slot, []))
    now = {f.file_id: f for f in files}
    bucket = store["uploads"].setdefault(slot, {})
    errors = store["upload_errors"].setdefault(slot, {})
    for file_id in set(now) - seen:
        f = now[file_id]
        data = f.getvalue()
        try:
            if photo:
                fewshot.preprocess_photo(data, 32, name=f.name)  # decodes it: the photo path's checks
            else:
                ink = fewshot.preprocess_image(data, 28, center=True, name=f.name)
        except fewshot.ImageError as exc:
            errors[file_id] = str(exc)
            continue
        if not photo and float(ink.max()) < 0.05:
            errors[file_id] = f"{f.name}: the image looks blank (no strokes found); upload a picture of a symbol"
            continue
        bucket[file_id] = {"name": f.name, "png": data, "source": "upload"}
        trace(f"upload:{slot}:{f.name}")
    for file_id in seen - set(now):
        bucket.pop(file_id, None)
        errors.pop(file_id, None)
        store["truth"].pop(f"up:{file_id}", None)
    store["upload_seen"][slot] = list(now)
    for file_id, message in list(errors.items()):
        if file_id in now:
            st.error(f"Not used: {message}")
        else:
            errors.pop(file_id, None)


def remove_uploads(slot: str) -> None:
    """Callback: forget the uploaded/example images of one slot."""
    store = task_store()
    for uid in store["uploads"].get(slot, {}):
        store["truth"].pop(f"up:{uid}", None)
    store["uploads"][slot] = {}
    store["upload_errors"][slot] = {}
    _bump_uploaders(store)


def image_strip(examples: list[Example], *, image_size: int = 28, per_row: int = 5, captions: bool = True) -> None:
    """Thumbnails of what the model sees, ``per_row`` per row."""
    for start in range(0, len(examples), per_row):
        cols = st.columns(per_row)
        for col, ex in zip(cols, examples[start : start + per_row]):
            with col:
                show_model_input(ex.png, image_size, caption=ex.label if captions else None, scale=2)


# ----------------------------------------------------------------------------------------------------------
# Running the methods (on private copies of the shared models)


def _private_copy(model):
    """A copy that may hold per-task state; the cached model itself is never changed."""
    work = copy.deepcopy(model)
    if hasattr(work, "batch_norm"):
        # MAML: normalise queries with the support set's statistics, so one drawn query is not normalised by
        # itself (and each answer does not depend on the other queries).
        work.batch_norm = "support"
    return work


def _device_of(model) -> torch.device:
    param = next(model.parameters(), None)  # photo mode's ProtoNet/Matching have no parameters: CPU
    return param.device if param is not None else torch.device("cpu")


def check_way(loaded: Loaded, n_way: int) -> str | None:
    """A message when the model cannot answer ``n_way``-way tasks (a fixed output head), else ``None``."""
    fixed = loaded.fixed_way
    if fixed is not None and n_way > fixed:
        return (f"{loaded.title}: this checkpoint has a {fixed}-way output head and cannot answer a {n_way}-way "
                f"task (use at most {fixed} classes, or train a {n_way}-way model).")
    return None


def predict(loaded: Loaded, support_images: torch.Tensor, support_labels: torch.Tensor,
            query_images: torch.Tensor) -> np.ndarray:
    """Class probabilities ``(Q, n_way)`` from any method.

    Raises:
        ValueError: the model cannot answer this task (message for the user).
    """
    message = check_way(loaded, int(support_labels.max()) + 1)
    if message:
        raise ValueError(message)
    work = _private_copy(loaded.model)
    device = _device_of(work)
    with torch.no_grad():
        work.process_support_set(support_images.to(device), support_labels.to(device))
        logits = work(query_images.to(device))
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


def explain(loaded: Loaded, support_images: torch.Tensor, support_labels: torch.Tensor,
            query_images: torch.Tensor) -> dict[str, np.ndarray]:
    """The method's own "why": distances, attention, similarities or memory reads, plus probabilities."""
    message = check_way(loaded, int(support_labels.max()) + 1)
    if message:
        raise ValueError(message)
    work = _private_copy(loaded.model)
    device = _device_of(work)
    sx, sy, qx = support_images.to(device), support_labels.to(device), query_images.to(device)
    out: dict[str, Any] = {}
    with torch.no_grad():
        work.process_support_set(sx, sy)
        out["probabilities"] = torch.softmax(work(qx).float(), dim=1).cpu().numpy()
        if hasattr(work, "explain"):
            out.update({k: v.float().cpu().numpy() for k, v in work.explain(qx).items() if v is not None})
        if hasattr(work, "last_read_weights") and work.last_read_weights:
            out["support_reads"] = torch.stack([w.float() for w in work.last_read_weights]).cpu().numpy()
            features = work.backbone(qx).flatten(1)
            _, state = work.step(features, work.state.expand(features.shape[0]))
            out["query_reads"] = state.read_weights.float().cpu().numpy()
    return out


def support_order_for_mann(n_support: int) -> list[int]:
    """The order in which MANN reads the support set (a fixed shuffle, see ``MANN.process_support_set``)."""
    return torch.randperm(n_support, generator=torch.Generator().manual_seed(0)).tolist()


def _layer_name(param: str) -> str:
    m = re.match(r"backbone\.blocks\.(\d+)\.(conv|norm)\.(weight|bias)", param)
    if m:
        return f"block {int(m.group(1)) + 1} {'conv' if m.group(2) == 'conv' else 'BN'}"
    if param.startswith("head."):
        return "head (linear)"
    return param


@dataclass
class MamlStep:
    step: int
    support_loss: float
    support_accuracy: float
    query_probabilities: np.ndarray  # (Q, n_way)
    layer_change: dict[str, float]  # layer -> ||w_k - w_0|| / ||w_0||


def maml_steps(loaded: Loaded, support_images: torch.Tensor, support_labels: torch.Tensor,
               query_images: torch.Tensor, *, inner_lr: float, inner_steps: int) -> Iterator[MamlStep]:
    """MAML's inner loop, one yield per step (0 = the meta-learned start), on the shared model's weights
    without changing them (``fewshot.adapt_steps`` is functional; BatchNorm uses the support statistics).

    Raises:
        ValueError: the task does not fit the model's head.
    """
    model = loaded.model
    n_way = int(support_labels.max()) + 1
    message = check_way(loaded, n_way)
    if message:
        raise ValueError(message)
    device = _device_of(model)
    start = {k: v.detach() for k, v in model.meta_weights().items()}
    norms: dict[str, float] = {}
    for name, w in start.items():
        norms[_layer_name(name)] = norms.get(_layer_name(name), 0.0) + float(w.float().pow(2).sum())
    steps = fewshot.adapt_steps(model.net, start, model.buffers_copy(), support_images.to(device),
                                support_labels.to(device), inner_lr=inner_lr, inner_steps=inner_steps,
                                query_images=query_images.to(device), stats_from_support=True)
    for s in steps:
        moved: dict[str, float] = {}
        for name, w in s.weights.items():
            layer = _layer_name(name)
            moved[layer] = moved.get(layer, 0.0) + float((w - start[name]).float().pow(2).sum())
        # Relative to the start; a layer that starts at zero (photo mode's head) reports its absolute change.
        change = {layer: math.sqrt(moved[layer]) / (math.sqrt(norms[layer]) if norms[layer] > 0 else 1.0)
                  for layer in moved}
        probs = torch.softmax(s.query_logits[:, :n_way].float(), dim=1).cpu().numpy() if s.query_logits is not None \
            else np.zeros((0, n_way), dtype=np.float32)
        yield MamlStep(s.step, s.support_loss, s.support_accuracy, probs, change)


def maml_weights_at(loaded: Loaded, support_images: torch.Tensor, support_labels: torch.Tensor, *,
                    inner_lr: float, step: int) -> dict[str, torch.Tensor]:
    """MAML's fast weights after ``step`` inner steps (functional; the model is unchanged)."""
    model = loaded.model
    device = _device_of(model)
    start = {k: v.detach() for k, v in model.meta_weights().items()}
    weights = start
    for s in fewshot.adapt_steps(model.net, start, model.buffers_copy(), support_images.to(device),
                                 support_labels.to(device), inner_lr=inner_lr, inner_steps=step,
                                 stats_from_support=True):
        weights = s.weights
    return weights


def features(loaded: Loaded, images: torch.Tensor, *, maml_weights: dict[str, torch.Tensor] | None = None,
             n_support: int | None = None) -> np.ndarray:
    """Backbone embeddings ``(N, D)``. With ``maml_weights``, MAML's backbone at those weights, normalised with
    the statistics of the first ``n_support`` images (the support set)."""
    model = loaded.model
    if maml_weights is None:
        return fewshot.extract_features(model.backbone, images).numpy()
    from fewshot.functional import functional_call  # thread-safe: the model is shared by sessions

    device = _device_of(model)
    backbone_weights = {k[len("backbone."):]: v for k, v in maml_weights.items() if k.startswith("backbone.")}
    buffers = {k[len("backbone."):]: v for k, v in model.buffers_copy().items() if k.startswith("backbone.")}
    with torch.no_grad():
        out = functional_call(model.backbone, (backbone_weights, buffers), (images.to(device),),
                              {"stats_from": n_support} if n_support else {})
    return out.flatten(1).float().cpu().numpy()


@st.cache_data(show_spinner="Computing the 2-D map…", max_entries=64)
def project_2d(points: np.ndarray, projection: str, perplexity: float, seed: int = 0) -> np.ndarray:
    """t-SNE or PCA map of ``points (N, D)``; cached on the array's contents."""
    if projection == "PCA":
        return fewshot.pca_2d(points)
    return fewshot.tsne_2d(points, perplexity=perplexity, seed=seed)


# ----------------------------------------------------------------------------------------------------------
# Rendering


def probability_frame(probabilities: np.ndarray, names: list[str]):
    import pandas as pd

    return pd.DataFrame({"class": names, "probability": probabilities.astype(float)})


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def verdict(pred: int, truth: int | None) -> str:
    if truth is None:
        return ""
    return "✓ right" if pred == truth else "✗ wrong"


# ----------------------------------------------------------------------------------------------------------
# Point sets for the embedding explorer


@dataclass
class PointSet:
    """Images to embed, support examples first, with a row (class, role, label) per image."""

    images: list = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def add(self, image, cls: str, role: str, label: str) -> None:
        self.images.append(torch.as_tensor(image).float())
        self.rows.append({"class": cls, "role": role, "label": label})

    def __len__(self) -> int:
        return len(self.images)

    def ordered(self) -> "PointSet":
        """Support points first (MAML adapts on them and takes BatchNorm statistics from them)."""
        order = sorted(range(len(self.rows)), key=lambda r: self.rows[r]["role"] != "support")
        return PointSet([self.images[r] for r in order], [self.rows[r] for r in order])

    @property
    def n_support(self) -> int:
        return sum(r["role"] == "support" for r in self.rows)

    def support_labels(self) -> list[int]:
        names = [r["class"] for r in self.rows if r["role"] == "support"]
        index = {name: c for c, name in enumerate(dict.fromkeys(names))}
        return [index[n] for n in names]

    def image(self, i: int) -> np.ndarray:
        return self.images[i][0].numpy()

    def add_task(self, task, names: list[str], *, support_role: str = "support", query_role: str = "query",
                 cls: str | None = None) -> None:
        """Add a sampled ``fewshot.Task``; ``names[c]`` names episode class ``c``."""
        for k in range(len(task.support_labels)):
            name = names[int(task.support_labels[k])]
            self.add(task.support_images[k], cls or name, support_role, name)
        for k in range(len(task.query_labels)):
            name = names[int(task.query_labels[k])]
            self.add(task.query_images[k], cls or name, query_role, name)


def points_from_view(view: TaskView, image_size: int) -> PointSet:
    points = PointSet()
    sx, sy, qx = view.tensors(image_size)
    for k in range(len(sy)):
        name = view.names[int(sy[k])]
        points.add(sx[k], name, "support", f"{name} (support)")
    for j in range(len(qx)):
        truth = view.truth[j]
        points.add(qx[j], view.names[truth] if truth is not None else "query (unknown class)", "query", f"Query {j + 1}")
    return points


@st.cache_resource(show_spinner="Reading the folder…", max_entries=4)
def _folder_dataset(path: str, mtime: float, image_size: int):
    return fewshot.FolderDataset(path, image_size, center=True)


def points_from_folder(path: str, image_size: int, *, max_classes: int = 40, per_class: int = 12):
    """``(PointSet, skipped files)`` from a folder of class subfolders; half of each class is the support set.

    Raises:
        ValueError: not a usable folder (the message says why).
    """
    folder = Path(path).expanduser()
    try:
        dataset = _folder_dataset(str(folder), folder.stat().st_mtime, image_size)
    except OSError as exc:
        raise ValueError(f"{folder}: {exc.strerror or exc}") from exc
    labels = np.asarray(dataset.get_labels())
    points = PointSet()
    for c, name in enumerate(dataset.class_names[:max_classes]):
        idx = np.flatnonzero(labels == c)[:per_class]
        batch = dataset.get_images(torch.as_tensor(idx))
        half = max(1, len(idx) // 2)
        for k in range(len(idx)):
            points.add(batch[k], name, "support" if k < half else "query", f"{name} #{k + 1}")
    return points.ordered(), list(dataset.skipped)


def embed_points(loaded: Loaded, points: PointSet, *, maml_step: int | None = None,
                 inner_lr: float = 0.4) -> tuple[np.ndarray, list[dict]]:
    """Embeddings of every point plus one prototype per support class: ``(features (N+C, D), prototype rows)``.

    With ``maml_step``, MAML's backbone after that many inner steps on the set's support points.
    """
    batch = torch.stack(points.images)
    n_support = points.n_support
    if maml_step is None or n_support == 0:
        feats = features(loaded, batch)
    else:
        labels = torch.tensor(points.support_labels(), dtype=torch.long)
        weights = maml_weights_at(loaded, batch[:n_support], labels, inner_lr=inner_lr, step=maml_step)
        feats = features(loaded, batch, maml_weights=weights, n_support=n_support)
    protos, proto_rows = [], []
    roles = np.asarray([r["role"] for r in points.rows])
    classes = np.asarray([r["class"] for r in points.rows])
    for name in dict.fromkeys(c for c, role in zip(classes, roles) if role == "support"):
        protos.append(feats[(classes == name) & (roles == "support")].mean(0))
        proto_rows.append({"class": name, "role": "prototype", "label": f"{name} (prototype)"})
    return (np.concatenate([feats, np.stack(protos)]) if protos else feats).astype(np.float32), proto_rows


def benchmark(loaded: Loaded, tasks) -> "fewshot.EvalResult":
    """``fewshot.evaluate`` on a private copy, with the checkpoint's own settings (MAML: its BatchNorm mode)."""
    return fewshot.evaluate(copy.deepcopy(loaded.model), tasks)
