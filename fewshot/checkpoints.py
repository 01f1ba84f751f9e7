"""Self-describing checkpoints: the only module that knows the file format.

A checkpoint is one safetensors file. Its tensors are the model's ``state_dict`` (``model/...``) and,
for a resumable training run, the optimiser state and RNG states (``train/...``). Its header metadata
holds one JSON record (key ``fewshot``) with the method, constructor arguments, image settings,
protocol, training configuration, history, validation accuracy and the command that made it.
Loading parses JSON and raw tensors only: nothing from the file is ever executed (no pickle).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .methods import MODELS, FewShotClassifier, build_model
from .training import TrainState

__all__ = ["FORMAT_VERSION", "CheckpointError", "CheckpointInfo", "save_checkpoint", "load_checkpoint",
           "read_checkpoint_info"]

FORMAT = "fewshot-checkpoint"
FORMAT_VERSION = 1
_MAGIC_HINTS = {
    b"PK\x03\x04": "a zip/pickle file as written by torch.save",
    b"\x80": "a Python pickle",
}


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, from another program or version; the message says which."""


@dataclass
class CheckpointInfo:
    """The metadata record plus, for resumable files, the training state."""

    path: str
    metadata: dict[str, Any]
    train_state: TrainState | None

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


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("train/optim/"):
            index, key = name[len("train/optim/"):].split("/", 1)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


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
    record: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": method,
                              "method_kwargs": dict(model.config), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              **(metadata or {})}
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
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
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (shipped ones are in checkpoints/)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the path of a .safetensors checkpoint file")
    with open(path, "rb") as fh:
        head = fh.read(9)
    # A safetensors file starts with its header length (u64, little-endian) and then "{"; that length's low
    # byte can be 0x80, so only a file that is not laid out like safetensors is checked for pickle magic.
    header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    is_safetensors = head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8
    for magic, what in _MAGIC_HINTS.items():
        if not is_safetensors and head.startswith(magic):
            raise CheckpointError(
                f"{path} is {what}, not a fewshot checkpoint. fewshot never unpickles files, because unpickling "
                "can run arbitrary code; use a checkpoint written by `fewshot train` (safetensors)."
            )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable fewshot checkpoint (truncated or corrupt: {exc})") from exc
    if "fewshot" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a fewshot checkpoint (no 'fewshot' metadata)")
    try:
        record = json.loads(header["fewshot"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the checkpoint metadata is corrupt ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unrecognised checkpoint metadata")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, newer than this fewshot understands "
            f"({FORMAT_VERSION}); upgrade fewshot to load it"
        )
    return tensors, record


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The metadata record of a checkpoint, without building the model."""
    return _read(Path(path))[1]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    expect_method: str | None = None) -> tuple[FewShotClassifier, CheckpointInfo]:
    """Rebuild the model of any fewshot checkpoint, ready to use (in eval mode).

    Raises:
        CheckpointError: missing, not a fewshot checkpoint, pickle, truncated, future version, unknown
            method, weights that do not fit the described model, or not the ``expect_method``.
    """
    path = Path(path)
    tensors, record = _read(path)
    method = record.get("method")
    if method not in MODELS:
        raise CheckpointError(f"{path}: unknown method {method!r} (known: {', '.join(MODELS)})")
    if expect_method is not None and method != expect_method:
        raise CheckpointError(f"{path} is a {method!r} checkpoint, not {expect_method!r}")
    # Constructor arguments a method gained after a checkpoint was saved: the values that rebuild the old model.
    kwargs = {**getattr(MODELS[method][0], "checkpoint_defaults", {}), **record.get("method_kwargs", {})}
    try:
        model = build_model(method, **kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the {method} model from its arguments ({exc})") from exc
    state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not match the {method} model it describes ({exc})") from exc
    model.to(map_location).eval()
    train_state = None
    if "train_state" in record and "train/sampler_rng" in tensors:
        ts = record["train_state"]
        train_state = TrainState(int(ts["step"]), _unflatten_optimizer(tensors, ts["optimizer"]),
                                 tensors["train/sampler_rng"], tensors["train/torch_rng"], record.get("history", []))
    return model, CheckpointInfo(str(path), record, train_state)


def command_line() -> str:
    """The command that is running, for the ``command`` metadata field."""
    prog = Path(sys.argv[0]).name
    args = sys.argv[1:]
    head = "python -m fewshot" if prog in ("__main__.py", "-m") else ("fewshot" if prog == "fewshot" else prog)
    return " ".join([head, *(json.dumps(a) if (" " in a or not a) else a for a in args)])
