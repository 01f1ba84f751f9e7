"""Command-line values checked before any work starts: devices, sizes, numbers, output paths, JSON output.

The argparse ``type=`` functions (:func:`int_arg`, :func:`float_arg`) raise ``ArgumentTypeError``, so
argparse prints its usage and one ``error: argument --x: ...`` line and exits with status 2. The other
checks raise :class:`ArgumentError` (a ``ValueError``), which :func:`fewshot.cli.main` prints as one
``error:`` line: :func:`check_arguments` runs before every subcommand (so subcommands added later get
it too), :func:`check_out_path` before the first training step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint_schema import MAX_EPISODES, MAX_HIDDEN, MAX_IMAGE_SIZE, MAX_STEPS, MIN_IMAGE_SIZE
from .files import file_kind

__all__ = ["ArgumentError", "check_device", "check_image_size", "check_arguments", "int_arg", "float_arg",
           "check_out_path", "dumps_json", "one_line", "skipped_summary", "MAX_EPISODES", "MAX_HIDDEN", "MAX_STEPS"]


class ArgumentError(ValueError):
    """A command-line value that cannot work on this machine or with this model; the message says why."""


def check_device(value: str) -> None:
    """``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against what this machine has."""
    if value == "auto":
        return
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ArgumentError(f"--device {value!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(f"--device {value}: this machine has no CUDA GPU; use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ArgumentError(f"--device {value}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ArgumentError(f"--device {value}: the Apple-silicon GPU (mps) is not available on this machine; "
                                "use --device cpu or auto")
    elif device.type != "cpu":
        raise ArgumentError(f"--device {value}: fewshot runs on cpu, cuda or mps devices")


def check_image_size(value: int) -> None:
    """``--image-size``: a side the Conv-4 backbone can take (its four 2x2 poolings need at least 16 pixels)."""
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise ArgumentError(
            f"--image-size must be from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels, got {value} (the Conv-4 backbone "
            f"halves the image four times, so below {MIN_IMAGE_SIZE} nothing is left; 28 is the usual size)")


def check_arguments(args: argparse.Namespace) -> None:
    """The checks every subcommand shares, run before it does any work: the device and the image size."""
    if isinstance(getattr(args, "device", None), str):
        check_device(args.device)
    if isinstance(getattr(args, "image_size", None), int):
        check_image_size(args.image_size)


def int_arg(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``lo`` to ``hi``."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, got {value}")
        return n

    return parse


def float_arg(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number, at least ``lo`` (above it if ``above``) and at most ``hi``."""

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
        ok = math.isfinite(x) and (lo is None or (x > lo if above else x >= lo)) and (hi is None or x <= hi)
        if not ok:
            bounds = " and ".join(filter(None, [f"{'above' if above else 'at least'} {lo:g}" if lo is not None else "",
                                                f"at most {hi:g}" if hi is not None else ""]))
            raise argparse.ArgumentTypeError(f"must be a finite number{' ' + bounds if bounds else ''}, got {value}")
        return x

    return parse


def check_out_path(path: str | Path, *, resume: bool = False) -> Path:
    """Make sure a checkpoint can be written at ``path`` now, before any training step runs.

    The folder is created if needed and a temporary file is written in it and removed (what the real save
    does), so an unwritable place (``/proc``, a read-only disk, a path below a file) fails at once.

    Raises:
        ArgumentError: ``path`` is a folder or not a regular file, or its folder cannot be written.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:  # e.g. NotADirectoryError: a part of the path is a file
        raise ArgumentError(f"--out {path}: {exc.strerror or exc}; choose a path in a folder you can write") from exc
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ArgumentError(f"--out {path} is {file_kind(info.st_mode)}; give a file path such as "
                            f"{path / 'model.safetensors' if stat.S_ISDIR(info.st_mode) else 'model.safetensors'}")
    if resume and info is None:
        return path  # the caller reports the missing run
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ArgumentError(f"--out {path}: cannot write in {path.parent} ({exc.strerror or exc}); choose a path "
                            "in a folder you can write") from exc
    return path


def dumps_json(value: Any) -> str:
    """``json.dumps`` that refuses NaN and infinity (which would make the output invalid JSON) with a clear message."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise ArgumentError("the result holds a value that is not a finite number (NaN or infinity), which JSON "
                            "cannot represent; nothing was printed") from exc


def one_line(text: str) -> str:
    """``text`` with control characters (line breaks in a file name, say) escaped, so an error stays one line."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c).startswith("C") else c for c in text)


def skipped_summary(dataset: Any) -> str | None:
    """One line on the images a folder dataset skipped (how many, of how many, and why), or None."""
    skipped = list(getattr(dataset, "skipped", []))
    if not skipped:
        return None
    total = len(skipped) + len(dataset)
    shown = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    return f"skipped {len(skipped)} of {total} image files in {getattr(dataset, 'root', 'the folder')}: {shown}"
