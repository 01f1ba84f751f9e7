"""Self-describing checkpoints: the only module that knows the file format.

A checkpoint is one safetensors file. Its tensors are the model's ``state_dict`` (``model/...``) and,
for a resumable training run, the optimiser state and RNG states (``train/...``). Its header metadata
holds one JSON record (key ``fewshot``) with the method, constructor arguments, image settings,
protocol, training configuration, history, validation accuracy and the command that made it.
Loading parses JSON and raw tensors only: nothing from the file is ever executed (no pickle). Only a
regular file is opened (never a pipe or device), at most :data:`MAX_CHECKPOINT_BYTES` of it, and every
field of the record is checked by :mod:`fewshot.checkpoint_schema` before a model is built.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from .checkpoint_schema import (FORMAT, FORMAT_VERSION, SchemaError, WeightsMismatchError, build_checked_model,
                                check_record, model_kwargs)
from .files import FileTooLargeError, NotARegularFileError, read_regular_file
from .methods import MODELS, FewShotClassifier
from .train_state_schema import check_train_state
from .training import TrainState

__all__ = ["FORMAT_VERSION", "MAX_CHECKPOINT_BYTES", "CheckpointError", "CheckpointInfo", "save_checkpoint", "training_summary",
           "load_checkpoint", "read_checkpoint_info"]

# A Conv-4 checkpoint is 0.5-2 MB with its training state; this bound only keeps a wrong path from filling memory.
MAX_CHECKPOINT_BYTES = 1 << 30
_MAGIC_HINTS = {
    b"PK\x03\x04": "a zip/pickle file as written by torch.save",
    b"\x80": "a Python pickle",
}


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, from another program or version; the message says which."""


@dataclass
class CheckpointInfo:
    """The metadata record plus, for resumable files, the training state (checked and built on first use)."""

    path: str
    metadata: dict[str, Any]
    _train_tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _model: torch.nn.Module | None = field(default=None, repr=False)
    _train_state: TrainState | None = field(default=None, repr=False)

    @property
    def train_state(self) -> TrainState | None:
        """What ``--resume`` continues from; ``None`` for a final export (no training state in the file).

        Inference never reads it. The first access checks all of it (step, optimiser groups and moments
        against the model, RNG states) before anything uses it.

        Raises:
            CheckpointError: the file has a training state, but a part of it is missing or malformed.
        """
        if self._train_state is None and self._model is not None and (
                "train_state" in self.metadata or self._train_tensors):
            try:
                self._train_state = check_train_state(self.metadata, self._train_tensors, self._model)
            except SchemaError as exc:
                raise CheckpointError(f"{self.path}: the training state cannot be resumed: {exc}") from exc
        return self._train_state

    def __getitem__(self, key: str) -> Any:
        return self.metadata[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"train/optim/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(path: str | Path, model: FewShotClassifier, *, method: str, metadata: dict[str, Any] | None = None,
                    train_state: TrainState | None = None) -> Path:
    """Write ``model`` (and optionally a resumable training state) to ``path`` atomically.

    The file is written to a temporary name in the same folder and renamed over ``path``, so a
    crash at any moment leaves either the old file or the new one, never half a file.

    Args:
        method: registry key (``fewshot.methods.METHODS``, or ``REGRESSORS`` for the sine-wave regressor).
        metadata: JSON-able extras (protocol, image_size, train_config, history, command, ...).
        train_state: optimiser/sampler/RNG state for ``--resume``.
    """
    if method not in MODELS:
        raise ValueError(f"unknown method {method!r}")
    path = Path(path)
    # what describes this file wins over ``metadata``, which may be a resumed run's old record
    record: dict[str, Any] = {**(metadata or {}), "format": FORMAT, "format_version": FORMAT_VERSION, "method": method,
                              "method_kwargs": dict(model.config), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, tensor in tensors.items():  # a file load_checkpoint would refuse is never written
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: not written: {name} holds NaN or infinite values (the training diverged; "
                                  "lower --meta-lr or set --grad-clip)")
    if train_state is not None:
        optim_tensors, optim_meta = _flatten_optimizer(train_state.optimizer)
        tensors.update(optim_tensors)
        tensors["train/sampler_rng"] = train_state.sampler.cpu()
        tensors["train/torch_rng"] = train_state.rng.cpu()
        record["train_state"] = {"step": train_state.step, "optimizer": optim_meta}
        record["history"] = train_state.history
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"fewshot": json.dumps(record)})
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_orphaned_temp_files(path)
    return path


def _remove_orphaned_temp_files(path: Path) -> None:
    """Delete the half-written temporary files a killed writer of ``path`` left behind (``.name.<pid>.*.tmp``).

    A temp file is an orphan when the process named in it is gone; one of a living process (another writer
    at this moment) is left alone. Files without a pid (older fewshot versions) go when a day old.
    """
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        pid_part = leftover.name[len(path.name) + 2:].split(".", 1)[0]
        try:
            if pid_part.isdigit():
                if _process_alive(int(pid_part)):
                    continue
            elif time.time() - leftover.stat().st_mtime < 86400:
                continue
            leftover.unlink()
        except OSError:  # gone already, or not ours to delete: never a reason to fail a save
            pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists (another user's process), or not a pid at all: leave the file
    return True


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the checked metadata record of the checkpoint file ``path``."""
    try:
        data = read_regular_file(path, MAX_CHECKPOINT_BYTES)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (shipped ones are in checkpoints/)") \
            from exc
    except NotARegularFileError as exc:
        raise CheckpointError(f"{path} is {exc.kind}; give the path of a .safetensors checkpoint file") from exc
    except (FileTooLargeError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    head = data[:9]
    # A safetensors file starts with its header length (u64, little-endian) and then "{"; that length's low
    # byte can be 0x80, so only a file that is not laid out like safetensors is checked for pickle magic.
    header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    is_safetensors = head[8:9] == b"{" and 0 < header_len <= len(data) - 8
    for magic, what in _MAGIC_HINTS.items():
        if not is_safetensors and head.startswith(magic):
            raise CheckpointError(
                f"{path} is {what}, not a fewshot checkpoint. fewshot never unpickles files, because unpickling "
                "can run arbitrary code; use a checkpoint written by `fewshot train` (safetensors)."
            )
    try:
        tensors = load_safetensors(data)
        # safetensors has parsed and checked this header; its "__metadata__" holds string values only.
        header = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, OSError, ValueError, RuntimeError, RecursionError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not a readable fewshot checkpoint (truncated or corrupt: {exc})") from exc
    if "fewshot" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a fewshot checkpoint (no 'fewshot' metadata)")
    try:
        record = json.loads(header["fewshot"])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: the checkpoint metadata is corrupt ({type(exc).__name__}: {exc})") from exc
    try:
        check_record(record)
    except SchemaError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return tensors, record


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The metadata record of a checkpoint, without building the model."""
    return _read(Path(path))[1]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    expect_method: str | None = None) -> tuple[FewShotClassifier, CheckpointInfo]:
    """Rebuild the model of any fewshot checkpoint, ready to use (in eval mode).

    Everything is checked before the model is built: the record's fields, the constructor arguments against
    the method's signature, the weights' names, shapes and values against the described model. The training
    state is not read here (``CheckpointInfo.train_state`` checks it when a run is resumed).

    Raises:
        CheckpointError: missing, not a regular file, not a fewshot checkpoint, pickle, truncated, future
            version, a field of the wrong type or out of range, unknown method, weights that do not fit the
            described model or are not finite, or not the ``expect_method``. The message names the field.
    """
    path = Path(path)
    tensors, record = _read(path)
    method = record["method"]
    if expect_method is not None and method != expect_method:
        raise CheckpointError(f"{path} is a {method!r} checkpoint, not {expect_method!r}")
    kwargs = model_kwargs(record)  # checked by _read already
    try:
        model = build_checked_model(method, kwargs, tensors)
    except SchemaError as exc:
        if isinstance(exc, WeightsMismatchError):
            raise CheckpointError(f"{path}: the weights do not match the {method} model it describes: {exc}") from exc
        raise CheckpointError(f"{path}: {exc}") from exc
    model.to(map_location).eval()
    train_tensors = {k: v for k, v in tensors.items() if k.startswith("train/")}
    return model, CheckpointInfo(str(path), record, train_tensors, model)


def training_summary(metadata: dict[str, Any]) -> dict[str, Any]:
    """What made a checkpoint, from its metadata: the full command (each ``--resume`` after `` ; then ``), the
    steps done (an export's from before it was exported), the seconds and CPU-seconds of the last history entry,
    and the ``--init-backbone`` checkpoint (or None)."""
    history = metadata.get("history") or [{}]
    return {"command": " ; then ".join([metadata.get("command", ""), *metadata.get("resumed_with", [])]),
            "steps_done": (metadata.get("exported_from") or {}).get("steps_done") or metadata.get("steps_done"),
            "seconds": history[-1].get("seconds"), "cpu_seconds": history[-1].get("cpu_seconds"),
            "init_backbone": (metadata.get("init_backbone") or {}).get("checkpoint")}


def command_line() -> str:
    """The command that is running, for the ``command`` metadata field."""
    prog = Path(sys.argv[0]).name
    args = sys.argv[1:]
    head = "python -m fewshot" if prog in ("__main__.py", "-m") else ("fewshot" if prog == "fewshot" else prog)
    return " ".join([head, *(json.dumps(a) if (" " in a or not a) else a for a in args)])
