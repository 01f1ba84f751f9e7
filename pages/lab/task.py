"""The task the user builds: one typed store in ``st.session_state`` (so it survives page switches) for both modes,
the modes themselves, and the one validator that turns the store into a :class:`TaskView` the models can answer.

The drawn task and the photo task share the class names and the task shape; each mode has its own upload slots
(drawn: ``s<i>`` per class and ``q`` for queries, plus the canvases; photo: ``p<i>`` and ``pq``), so switching
modes loses neither.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import streamlit as st
import torch

from . import images, models

MAX_WAY, MAX_SHOT, MAX_QUERY_CANVASES = 10, 5, 10
DEFAULT_STROKE = 10
STORE_KEY = "task"


@dataclass(frozen=True)
class Mode:
    """What kind of examples a task holds, and what that changes for the user."""

    key: str
    title: str
    slot_prefix: str  # support uploads of class i live in slot f"{slot_prefix}{i}"
    query_slot: str
    noun: str  # what one example is called
    how_to_add: str
    no_queries: str
    canvases: bool  # drawn on the page (drawn mode) besides uploads
    strict_shot: bool  # K-shot is a slider, and more examples than K get a warning
    ink: bool  # the examples are 28×28 ink like Omniglot's (Omniglot characters can stand beside them)
    intro: str  # what the Build page asks for
    clear_key: str  # the Build page's button that empties this mode's task
    clear_label: str
    models_note: str = ""  # what the pages say about this mode's models
    maml_note: str = ""  # what the MAML page says about MAML in this mode

    def support_slot(self, i: int) -> str:
        return f"{self.slot_prefix}{i}"

    def slots(self) -> list[str]:
        return [self.support_slot(i) for i in range(MAX_WAY)] + [self.query_slot]


MODES = {
    "drawn": Mode("drawn", "Drawn symbols", "s", "q", "examples", "draw one or upload an image",
                  "No queries yet: draw a query or upload one, then classify.", canvases=True, strict_shot=True,
                  ink=True,
                  intro="Name your classes, **draw** (or upload) an example of each, then draw a **query** and "
                        "classify it. Draw big, filling the box: every drawing is cropped to its ink, centred and "
                        "shrunk to the model's 28×28 input, the way Omniglot characters look (*what the model sees* is "
                        "shown under each one).",
                  clear_key="clear_task", clear_label="Clear the task"),
    "photo": Mode("photo", "Photos", "p", "pq", "photos", "upload one or take one with the camera",
                  "No query photos yet: upload one (or take one with the camera), then classify.",
                  canvases=False, strict_shot=False, ink=False,
                  intro="Name your classes, **upload 1–5 photos** of each (or take them with the camera), then add "
                        "query photos and classify them. Photos go to a frozen ImageNet-pretrained EfficientNet-Lite0; "
                        "each method classifies its 1280-d features (no training, nothing downloaded).",
                  clear_key="clear_photos", clear_label="Clear the photos",
                  models_note="Photo task (switch in **Build a task**): each image is one of your photos, embedded by "
                              "the frozen ImageNet-pretrained EfficientNet-Lite0 (1280-d features) that every "
                              "photo-mode method shares.",
                  maml_note="Photo task: MAML adapts a linear head on the frozen EfficientNet-Lite0 features "
                            "(ANIL-style), starting from a zero head (every class equally likely), so the head is the "
                            "only layer that moves and its chart shows the absolute change ‖w − w₀‖; the embedding "
                            "itself does not move with adaptation. Switch back to drawings in **Build a task**."),
}


@dataclass
class Upload:
    name: str
    png: bytes
    source: str  # "upload", "camera", "example", "omniglot"


def default_names() -> list[str]:
    return [f"Class {i + 1}" for i in range(MAX_WAY)]


@dataclass
class TaskStore:
    """Everything the user entered. ``names`` holds ``MAX_WAY`` names (the first ``n_way`` are used); ``drawn``:
    canvas key -> ``{"png", "json"}``; ``uploads``: slot -> item id -> :class:`Upload`; ``truth``: query id ->
    class index or ``None``. The rest is bookkeeping of the widgets that feed it."""

    mode: str = "drawn"
    n_way: int = 5
    n_shot: int = 1
    n_queries: int = 1
    stroke: int = DEFAULT_STROKE
    names: list[str] = field(default_factory=default_names)
    drawn: dict[str, dict] = field(default_factory=dict)
    uploads: dict[str, dict[str, Upload]] = field(default_factory=dict)
    truth: dict[str, int | None] = field(default_factory=dict)
    canvas_init: dict[str, dict] = field(default_factory=dict)
    resets: int = 0  # canvases emptied so far (a new initial drawing for a mounted canvas)
    upload_seen: dict[str, list[str]] = field(default_factory=dict)
    upload_errors: dict[str, dict[str, str]] = field(default_factory=dict)
    uploader_generation: int = 0  # bumped to give every uploader a new, empty widget
    camera_seen: list[str] = field(default_factory=list)
    omniglot_examples: int = 0

    def user_names(self) -> list[str]:
        """The class names the user typed (not the defaults)."""
        return [n for n in self.names[:self.n_way] if not re.fullmatch(r"Class \d+", str(n))]


def store() -> TaskStore:
    """This session's task store (created on first use)."""
    if STORE_KEY not in st.session_state:
        st.session_state[STORE_KEY] = TaskStore()
    return st.session_state[STORE_KEY]


def mode() -> Mode:
    return MODES[store().mode]


def support_canvas_key(i: int, j: int) -> str:
    return f"draw_s{i}_{j}"


def query_canvas_key(j: int) -> str:
    return f"draw_q{j}"


@dataclass
class Example:
    id: str
    label: str
    png: bytes
    source: str  # "drawn", "upload", "camera", "example", "omniglot"


@dataclass
class TaskView:
    """The task as the models will get it, plus what is wrong with it. ``example``: set (to a sentence saying what
    it is) when this is an example task shown in place of the user's own."""

    names: list[str]
    support: list[list[Example]]
    queries: list[Example]
    truth: list[int | None]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    name_errors: list[str] = field(default_factory=list)  # the subset of ``errors`` about class names
    mode: str = "drawn"
    example: str | None = None

    @property
    def n_way(self) -> int:
        return len(self.names)

    @property
    def can_classify(self) -> bool:
        return not self.errors and bool(self.queries)

    @property
    def is_empty(self) -> bool:
        """Nothing entered yet: no examples and no queries."""
        return not self.queries and not any(self.support)

    def support_examples(self) -> list[Example]:
        return [ex for examples in self.support for ex in examples]

    def support_classes(self) -> list[int]:
        return [c for c, examples in enumerate(self.support) for _ in examples]

    def pngs(self) -> list[bytes]:
        """Every image of the task: the support set class by class, then the queries."""
        return [ex.png for ex in self.support_examples()] + [q.png for q in self.queries]

    def tensors(self, image_size: int = 28) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``support (S, ...)``, ``support labels (S,)``, ``queries (Q, ...)`` as the mode's models take them: 28×28
        ink ``(N, 1, H, W)`` for drawings, EfficientNet-Lite0 features ``(N, 1280)`` for photos.

        Raises:
            fewshot.ImageError: an image cannot be decoded.
            ModelUnavailable: photo mode's packages are missing.
        """
        support = self.support_examples()
        both = support + list(self.queries)
        inputs = models.source(self.mode).inputs([ex.png for ex in both], [ex.label for ex in both], image_size)
        labels = torch.tensor(self.support_classes(), dtype=torch.long)
        return inputs[: len(support)], labels, inputs[len(support):]

    def fingerprint(self) -> str:
        h = hashlib.sha1(self.mode.encode())
        for c, examples in enumerate(self.support):
            for ex in examples:
                h.update(f"s{c}".encode())
                h.update(ex.png)
        for q in self.queries:
            h.update(b"q")
            h.update(q.png)
        return h.hexdigest()[:16]


def _uploads(s: TaskStore, slot: str) -> list[Example]:
    return [Example(f"up:{uid}", up.name, up.png, up.source) for uid, up in s.uploads.get(slot, {}).items()]


def _drawn(s: TaskStore, key: str, label: str) -> list[Example]:
    item = s.drawn.get(key)
    return [Example(key, label, item["png"], "drawn")] if item and images.has_ink(item["png"]) else []


def collect(mode_key: str | None = None) -> TaskView:
    """Read the store and check the task of ``mode_key`` (default: the Build page's mode): names, examples per
    class, queries. Never raises for bad user input; what is wrong is in ``errors`` and ``warnings``."""
    s = store()
    m = MODES[mode_key or s.mode]
    n_way, n_shot = s.n_way, s.n_shot
    names = [str(n).strip() for n in s.names[:n_way]]
    errors = [f"Class {i + 1} has no name: type one in its name box." for i, name in enumerate(names) if not name]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name and name.lower() in seen:
            errors.append(f"Classes {seen[name.lower()] + 1} and {i + 1} are both called '{name}': "
                          "give every class a different name.")
        seen.setdefault(name.lower(), i)
    name_errors = list(errors)
    warnings: list[str] = []
    support: list[list[Example]] = []
    for i in range(n_way):
        examples = [ex for j in range(n_shot) if m.canvases
                    for ex in _drawn(s, support_canvas_key(i, j), f"drawing {j + 1}")]
        examples += _uploads(s, m.support_slot(i))
        label = f"Class {i + 1} ('{names[i] or '?'}')"
        if not examples:
            errors.append(f"{label} has no {m.noun}: {m.how_to_add}.")
        elif m.strict_shot and len(examples) > n_shot:
            warnings.append(f"{label} has {len(examples)} examples but K-shot is {n_shot}: all {len(examples)} are "
                            "used. Raise 'Drawings per class (K-shot)' or remove some uploads for a strict K-shot task.")
        support.append(examples)
    counts = {len(e) for e in support if e}
    if len(counts) > 1:
        warnings.append(f"The classes have different numbers of {m.noun} ({min(counts)}–{max(counts)}); every "
                        "method copes, but it is no longer a strict K-shot task.")
    queries = [ex for j in range(s.n_queries) if m.canvases
               for ex in _drawn(s, query_canvas_key(j), f"drawn query {j + 1}")]
    queries += _uploads(s, m.query_slot)
    truth = [s.truth.get(q.id) for q in queries]
    truth = [t if t is not None and 0 <= t < n_way else None for t in truth]
    if not queries:
        warnings.append(m.no_queries)
    return TaskView(names, support, queries, truth, errors, warnings, name_errors, mode=m.key)


# ---------------------------------------------------------------------------------------------------- changing it


def set_widget_values(s: TaskStore) -> None:
    """Push the store into the Build page's widgets (only from callbacks, before widgets are drawn)."""
    for name in ("n_way", "n_shot", "n_queries"):
        st.session_state[name] = getattr(s, name)
    for i, value in enumerate(s.names):
        st.session_state[f"class_name_{i}"] = value
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith("truth_")]:
        del st.session_state[key]


def bump_uploaders(s: TaskStore) -> None:
    """Give every uploader a new, empty widget (its files are in the store, not in the widget)."""
    s.uploader_generation += 1
    s.upload_seen = {}


def _reset_canvases(s: TaskStore) -> None:
    """Empty every canvas: a dropped component state makes the canvas start from a new, empty initial drawing."""
    s.resets += 1
    s.drawn = {}
    keys = [support_canvas_key(i, j) for i in range(MAX_WAY) for j in range(MAX_SHOT)]
    keys += [query_canvas_key(j) for j in range(MAX_QUERY_CANVASES)]
    for key in keys:
        st.session_state.pop(key, None)


def _clear_inputs(s: TaskStore, m: Mode) -> None:
    """Forget the images, true classes and upload errors of mode ``m``; the other mode's stay."""
    if m.canvases:
        _reset_canvases(s)
    for slot in m.slots():
        for uid in s.uploads.get(slot, {}):
            s.truth.pop(f"up:{uid}", None)
        s.uploads[slot] = {}
        s.upload_errors[slot] = {}
    s.truth = {k: v for k, v in s.truth.items() if k.startswith("up:") or not m.canvases}
    bump_uploaders(s)


def clear(mode_key: str) -> None:
    """Callback of the Build page's clear button: the mode's images go; the drawn task's names go back to defaults."""
    s = store()
    m = MODES[mode_key]
    _clear_inputs(s, m)
    if m.canvases:
        s.names = default_names()
    set_widget_values(s)


def remove_uploads(slot: str) -> None:
    """Callback: forget the uploaded/example images of one slot."""
    s = store()
    for uid in s.uploads.get(slot, {}):
        s.truth.pop(f"up:{uid}", None)
    s.uploads[slot] = {}
    s.upload_errors[slot] = {}
    bump_uploaders(s)


def replace(mode_key: str, names: list[str], support: list[list[bytes]], queries: list[tuple[bytes, int | None]],
            source: str, *, n_shot: int | None = None) -> None:
    """Make the task of ``mode_key`` this one (an example): class names, support images per class, queries with
    their true classes. The other mode's images are kept."""
    s = store()
    m = MODES[mode_key]
    _clear_inputs(s, m)
    s.mode = m.key
    s.n_way = len(names)
    s.n_shot = n_shot or max(1, min(MAX_SHOT, max(len(p) for p in support)))
    s.names = list(names) + default_names()[len(names):]
    for i, pngs in enumerate(support):
        s.uploads[m.support_slot(i)] = {f"{source}-{m.key}-s{i}-{j}": Upload(f"{names[i]} {j + 1}", png, source)
                                        for j, png in enumerate(pngs)}
    s.uploads[m.query_slot] = {}
    for q, (png, truth) in enumerate(queries):
        uid = f"{source}-{m.key}-q{q}"
        s.uploads[m.query_slot][uid] = Upload(f"query {q + 1}", png, source)
        s.truth[f"up:{uid}"] = truth
    set_widget_values(s)
