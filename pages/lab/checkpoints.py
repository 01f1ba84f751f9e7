"""Checkpoints for the drawn-symbol models: the files on disk, their measured accuracies, the device, and the models
themselves, loaded once per process (``st.cache_resource``) and shared read-only by every session."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
import torch

import fewshot
from fewshot import inspection

from . import session_models

REPO = Path(__file__).resolve().parents[2]
ACCURACY_FILE = "accuracy.json"  # beside the checkpoints, written by benchmarks/accuracy.py


class ModelUnavailable(Exception):
    """No usable model for a method; the message says what to do."""


@dataclass
class Loaded:
    """A shared, read-only model with where it came from. Never train it or call ``process_support_set`` on it:
    ``fewshot.inspection`` works on private copies."""

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

    def check_way(self, n_way: int) -> str | None:
        """Why this model cannot answer an ``n_way``-way task, with its name in front, else ``None``."""
        message = inspection.check_way(self.model, n_way)
        return f"{self.title}: {message}" if message else None


def method_label(method: str) -> str:
    return fewshot.METHOD_TITLES.get(method, method)


def checkpoint_dir() -> Path:
    """``$FEWSHOT_CHECKPOINT_DIR`` or the repository's ``checkpoints/``."""
    return Path(os.environ.get("FEWSHOT_CHECKPOINT_DIR") or REPO / "checkpoints").expanduser()


@st.cache_data(show_spinner=False, max_entries=256)
def _checkpoint_record(path: str, mtime: float) -> dict[str, Any]:
    """Metadata of one checkpoint, or ``{"error": message}`` for a file that is not a fewshot checkpoint."""
    try:
        meta = fewshot.read_checkpoint_info(path)
    except fewshot.CheckpointError as exc:
        return {"error": str(exc)}
    return {k: v for k, v in meta.items() if k not in ("train_state", "history", "class_names")}


def _roots() -> list[Path]:
    roots = [checkpoint_dir()]
    extra = str(st.session_state.get("ckpt_extra_dir") or "").strip()
    if extra:
        roots.append(Path(extra).expanduser())
    return roots


def _path(checkpoint_id: str) -> Path:
    """Checkpoint ids are paths relative to ``checkpoint_dir()``, or absolute for the extra folder."""
    path = Path(checkpoint_id)
    return path if path.is_absolute() else checkpoint_dir() / path


def list_checkpoints() -> tuple[dict[str, list[str]], dict[str, dict], list[str]]:
    """``(method -> [checkpoint ids]), (id -> metadata), [problems]`` for every ``*.safetensors`` found."""
    by_method: dict[str, list[str]] = {m: [] for m in fewshot.METHODS}
    metas: dict[str, dict] = {}
    problems: list[str] = []
    for n, root in enumerate(_roots()):
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
def _json_file(path: str, mtime: float) -> Any:
    """The parsed JSON at ``path``, read again only when its ``mtime`` changes; ``None`` when it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _json_beside_checkpoints(name: str) -> Any:
    """``name`` (a JSON file in the checkpoint folder) parsed, or ``None`` when it is missing or unreadable."""
    path = checkpoint_dir() / name
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return _json_file(str(path), mtime)


def measured_accuracies() -> dict[str, list[dict]]:
    """Test accuracies of the checkpoints (``accuracy.json`` beside them) by checkpoint id; empty when there is
    no such file or it cannot be read (the sidebar then shows validation accuracies)."""
    records = _json_beside_checkpoints(ACCURACY_FILE)
    out: dict[str, list[dict]] = {}
    for record in records if isinstance(records, list) else []:
        if isinstance(record, dict) and {"accuracy", "ci95", "n_way", "n_shot", "checkpoint"} <= set(record):
            key = str(Path(record["checkpoint"])).split("checkpoints/")[-1]
            out.setdefault(key, []).append(record)
    return out


CURVES_FILE = "training_curves.json"


def training_curves() -> dict[str, dict]:
    """Time-to-accuracy curves of the shipped models' training runs (``training_curves.json`` beside the checkpoints,
    written by ``benchmarks/time_to_accuracy.py``): label -> {"points": [{"cpu_seconds", "accuracy", "step"}], ...};
    empty when there is no such file or it cannot be read."""
    data = _json_beside_checkpoints(CURVES_FILE)
    if not isinstance(data, dict):
        return {}
    return {label: c for label, c in data.items() if isinstance(c, dict) and isinstance(c.get("points"), list)
            and c["points"]}


def describe_checkpoint(meta: dict, checkpoint_id: str | None = None) -> str:
    """One line: protocol, task shape, measured test accuracy (or validation accuracy)."""
    kwargs = meta.get("method_kwargs", {})
    way = meta.get("n_way") or kwargs.get("n_way")
    parts = [f"protocol **{meta.get('protocol') or meta.get('dataset') or '?'}**"]
    if way:
        parts.append(f"trained {way}-way {meta.get('n_shot', '?')}-shot")
    records = measured_accuracies().get(checkpoint_id or "", [])
    best = [r for r in records if (r["n_way"], r["n_shot"]) == (5, 1)] or records
    if best:
        r = best[0]
        parts.append(f"test {100 * r['accuracy']:.1f}% ± {100 * r['ci95']:.1f} ({r['n_way']}-way {r['n_shot']}-shot, "
                     f"{r.get('protocol', '?')} test split)")
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
def cached_model(path: str, mtime: float, device: str):
    """One shared, read-only model per (file, version, device): ``(model, metadata)``."""
    model, info = fewshot.load_checkpoint(path, map_location=device)
    fewshot.use_fast_layout(model)  # on a CPU, channels_last: the layout train() and `fewshot evaluate` use
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dict(info.metadata)


# MAML and first-order MAML default to their Proto-MAML checkpoints when shipped: they answer tasks of any number of
# classes (the app's 2-10-way tasks) and start from ProtoNet's answer; the paper-faithful ones stay in the sidebar.
PREFERRED = {"maml": ("lake/protomaml.safetensors", "lake/maml.safetensors"),
             "fomaml": ("lake/foprotomaml.safetensors", "lake/fomaml.safetensors")}


def default_checkpoint(method: str, options: list[str]) -> str:
    for preferred in PREFERRED.get(method, (f"lake/{method}.safetensors",)):
        if preferred in options:
            return preferred
    return options[0]


def selected_checkpoint(method: str) -> str | None:
    """The sidebar's choice for ``method`` (or its default), ``None`` when there is no checkpoint."""
    options = list_checkpoints()[0][method] + session_models.ids(method)
    if not options:
        return None
    chosen = st.session_state.get(f"ckpt_{method}")
    return chosen if chosen in options else default_checkpoint(method, options)


def available_methods() -> list[str]:
    by_method = list_checkpoints()[0]
    return [m for m in fewshot.METHODS if by_method[m] or session_models.ids(m)]


def get_model(method: str) -> Loaded:
    """The sidebar's checkpoint for ``method``, loaded once per process.

    Raises:
        ModelUnavailable: no checkpoint, or a broken one.
    """
    rel = selected_checkpoint(method)
    if rel is None:
        raise ModelUnavailable(
            f"No checkpoint for {method_label(method)} in {checkpoint_dir()}. Train one with "
            f"`python -m fewshot train --method {method} --protocol lake --out "
            f"checkpoints/lake/{method}.safetensors` or set FEWSHOT_CHECKPOINT_DIR."
        )
    if session_models.is_session_model(rel):  # trained on the Watch meta-training page, this session only
        kept = session_models.get(rel)
        return Loaded(method, kept.model, kept.meta, f"this session/{kept.title}", kept.key)
    path = _path(rel)
    device = current_device()
    try:
        mtime = path.stat().st_mtime
        model, meta = cached_model(str(path), mtime, device)
    except (OSError, fewshot.CheckpointError) as exc:
        raise ModelUnavailable(f"Cannot load {rel}: {exc}") from exc
    return Loaded(method, model, meta, str(path), f"{path}:{mtime}:{device}")
