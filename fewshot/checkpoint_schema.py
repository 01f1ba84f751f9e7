"""The checkpoint record's schema: every field checked, before any model is built, in one place.

A checkpoint's metadata is JSON someone else may have written or edited, so nothing in it is trusted:

* the record's fields (:func:`check_record`): types and ranges, no NaN or infinity anywhere;
* the model's constructor arguments (:func:`model_kwargs`): each one must be a parameter of the method's
  class, of the type its signature states (read with :func:`inspect.signature`, so arguments added to a
  method later are covered without touching this module) and in range;
* the weights (:func:`build_checked_model`): the names, shapes and dtypes of the described model (built
  under an allocation budget set by the file's own tensors, so a record describing a huge model fails at
  once), and finite values;
* the training state, only when a run is resumed: :mod:`fewshot.train_state_schema`.

Every problem raises :class:`SchemaError` naming the field; :mod:`fewshot.checkpoints` adds the file name.
Hand-written rather than a schema library (pydantic, jsonschema): the checks that matter here come from
code, not from a declaration (signatures, the built model, a template optimiser), and the few scalar
rules left are shorter written out than declared.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import fields
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .config import TaskConfig, TrainConfig
from .methods import METHODS, MODELS, build_model

__all__ = ["FORMAT", "FORMAT_VERSION", "MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE", "MAX_HIDDEN", "MAX_STEPS", "MAX_EPISODES",
           "SchemaError", "WeightsMismatchError", "check_record", "model_kwargs", "build_checked_model",
           "conv4_feature_dim", "describe", "is_int", "check_int", "check_number", "check_object", "check_json",
           "check_history"]

FORMAT = "fewshot-checkpoint"
FORMAT_VERSION = 1
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 512  # Conv-4 halves the side four times: 16 pixels leave one feature cell
MAX_HIDDEN = 4096  # layer widths
MAX_STEPS = 10_000  # adaptation steps per episode (inner loop, fine-tuning, FCE): more would hang an answer
MAX_EPISODES = 10**9  # optimiser steps of one run
_MAX_INT = 2**31 - 1
_MAX_COUNT = 1_000_000  # classes, images per class
_MAX_DEPTH = 32  # nesting of the JSON record (fewshot writes 4 levels)

# Ranges of constructor arguments by name, for whichever method has them (None: no bound on that side).
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "n_way": (2, 10_000), "hidden": (1, MAX_HIDDEN), "in_channels": (1, 4), "n_classes": (1, _MAX_COUNT),
    "feature_dim": (1, MAX_HIDDEN * (MAX_IMAGE_SIZE // 16) ** 2), "controller_size": (1, MAX_HIDDEN),
    "memory_slots": (1, MAX_HIDDEN), "memory_width": (1, MAX_HIDDEN), "read_heads": (1, 64),
    "inner_steps": (0, MAX_STEPS), "inner_steps_test": (0, MAX_STEPS), "finetune_steps": (0, MAX_STEPS),
    "fce_steps": (1, MAX_STEPS), "inner_lr": (0, None), "inner_lr_test": (0, None), "finetune_lr": (0, None),
    "cosine_scale": (0, None), "gamma": (0, 1), "label_vote": (0, None),
}
_SCALARS = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}


class SchemaError(ValueError):
    """One field of a checkpoint that is missing, of the wrong type or out of range."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field = field


class WeightsMismatchError(SchemaError):
    """A ``model/`` tensor that is missing, extra, or of another shape or dtype than the described model's."""


def describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def check_int(field: str, value: Any, lo: int, hi: int) -> int:
    if not is_int(value) or not lo <= value <= hi:
        raise SchemaError(field, f"must be a whole number from {lo} to {hi}, got {describe(value)}")
    return value


def check_number(field: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                 open_lo: bool = False) -> float:
    ok = _is_number(value) and (lo is None or (value > lo if open_lo else value >= lo)) and (hi is None or value <= hi)
    if not ok:
        bounds = " ".join(filter(None, [f"{'>' if open_lo else '>='} {lo}" if lo is not None else "",
                                        f"<= {hi}" if hi is not None else ""]))
        raise SchemaError(field, f"must be a finite number{' ' + bounds if bounds else ''}, got {describe(value)}")
    return float(value)


def check_json(value: Any, field: str) -> None:
    """No NaN or infinity at any depth (``json.loads`` accepts the tokens ``NaN``, ``1e999``), and at most
    ``_MAX_DEPTH`` levels of nesting (deeper, printing the record again could exceed Python's recursion limit)."""
    stack = [(field, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if type(item) is float and not math.isfinite(item):
            raise SchemaError(where, f"holds {item}; only finite numbers are allowed")
        if depth > _MAX_DEPTH:
            raise SchemaError(where, f"is nested more than {_MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            stack += [(f"{where}.{k}" if where else str(k), v, depth + 1) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(f"{where}[{i}]", v, depth + 1) for i, v in enumerate(item)]


# --------------------------------------------------------------------------------------------------- the record
def _optional(check):
    return lambda field, value: None if value is None else check(field, value)


def _str(field: str, value: Any) -> None:
    if not isinstance(value, str):
        raise SchemaError(field, f"must be a string, got {describe(value)}")


def _bool(field: str, value: Any) -> None:
    if type(value) is not bool:
        raise SchemaError(field, f"must be true or false, got {describe(value)}")


def check_object(field: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise SchemaError(field, f"must be an object ({{...}}), got {describe(value)}")


def _list_of_str(field: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaError(field, f"must be a list of strings, got {describe(value)}")


def check_history(field: str, value: Any) -> None:
    if not isinstance(value, list):
        raise SchemaError(field, f"must be a list of step records, got {describe(value)}")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise SchemaError(f"{field}[{i}]", f"must be an object, got {describe(entry)}")
        for key, item in entry.items():
            if item is not None and not _is_number(item) and not isinstance(item, (str, bool)):
                raise SchemaError(f"{field}[{i}].{key}", f"must be a number, got {describe(item)}")


def _preprocess(field: str, value: Any) -> None:
    check_object(field, value)
    if "center" in value:
        _bool(f"{field}.center", value["center"])


def _dataclass_fields(cls: type, field: str, value: Any) -> None:
    """A ``TaskConfig``/``TrainConfig`` as a dict: known keys typed by the dataclass, then its own checks run."""
    check_object(field, value)
    known = {f.name: f for f in fields(cls)}
    for key, item in value.items():
        if key in known:
            _check_annotated(f"{field}.{key}", item, known[key].type, None)
    try:
        cls(**{k: v for k, v in value.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise SchemaError(field, f"is not valid ({exc})") from exc


def _train_config(field: str, value: Any) -> None:
    if isinstance(value, dict) and "episodes" in value:
        check_int(f"{field}.episodes", value["episodes"], 0, MAX_EPISODES)
    _dataclass_fields(TrainConfig, field, value)


_FIELDS = {
    "saved_at": _str, "command": _str, "dataset": _optional(_str), "data_dir": _optional(_str),
    "protocol": _optional(_str), "train_split": _optional(_str), "rotations": _optional(_bool),
    "image_size": lambda f, v: check_int(f, v, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    "in_channels": lambda f, v: check_int(f, v, 1, 4), "preprocess": _preprocess,
    "n_way": _optional(lambda f, v: check_int(f, v, 2, 10_000)),
    "n_shot": _optional(lambda f, v: check_int(f, v, 1, _MAX_COUNT)),
    "n_query": _optional(lambda f, v: check_int(f, v, 0, _MAX_COUNT)),
    "task_config": lambda f, v: _dataclass_fields(TaskConfig, f, v), "train_config": _train_config,
    "class_names": _optional(_list_of_str), "steps_done": lambda f, v: check_int(f, v, 0, MAX_EPISODES),
    "val_accuracy": lambda f, v: check_number(f, v, 0, 1), "val_ci95": lambda f, v: check_number(f, v, 0),
    "history": check_history, "resumed_with": _list_of_str, "world_size": lambda f, v: check_int(f, v, 1, _MAX_INT),
    "backend": _str, "exported_from": check_object, "init_backbone": check_object,
}


def check_record(record: Any) -> dict[str, Any]:
    """Check the whole metadata record (not the training state's contents); returns it.

    Raises:
        SchemaError: the first field that is wrong.
    """
    if not isinstance(record, dict):
        raise SchemaError("the metadata record", f"must be a JSON object, got {describe(record)}")
    if record.get("format") != FORMAT:
        raise SchemaError("format", f"is {record.get('format')!r}, not {FORMAT!r}: not a fewshot checkpoint record")
    version = record.get("format_version")
    if not is_int(version):
        raise SchemaError("format_version", f"must be a whole number (this fewshot reads {FORMAT_VERSION}), got "
                                            f"{describe(version)}; the record was edited or written by another program")
    if version > FORMAT_VERSION:
        raise SchemaError("format_version", f"{version} is newer than this fewshot understands ({FORMAT_VERSION}); "
                                            "upgrade fewshot to load it")
    if version < 1:
        raise SchemaError("format_version", f"is {version}; fewshot format versions start at 1")
    method = record.get("method")
    if not isinstance(method, str) or method not in MODELS:
        what = repr(method) if isinstance(method, str) else describe(method)
        raise SchemaError("method", f"names an unknown method {what} (known: {', '.join(MODELS)})")
    # The training state is checked only when a run is resumed (check_train_state): inference never needs it.
    check_json({k: v for k, v in record.items() if k != "train_state"}, "")
    for name, check in _FIELDS.items():
        if name in record:
            check(name, record[name])
    model_kwargs(record)
    return record


# ------------------------------------------------------------------------------------------ constructor arguments
def _accepted(annotation: Any, default: Any) -> tuple[set[type], set[type]] | None:
    """(scalar types a value may have, types of a list's items) from a signature; None: not settable from JSON."""
    if annotation is inspect.Parameter.empty:
        if default is inspect.Parameter.empty or default is None:
            return set(_SCALARS.values()), set()
        return {type(default)}, set()
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    scalars: set[type] = set()
    items: set[type] = set()
    for part in (p.strip() for p in text.replace("typing.", "").split("|")):
        target = scalars
        for prefix in ("list[", "tuple[", "Sequence["):
            if part.startswith(prefix) and part.endswith("]"):
                part, target = part[len(prefix):-1].replace(", ...", "").strip(), items
        if part not in _SCALARS:
            return None
        target.add(_SCALARS[part])
    return scalars, items


def _scalar_ok(value: Any, types: set[type]) -> bool:
    if type(value) is bool:
        return bool in types
    if type(value) is int:
        return (int in types and abs(value) <= _MAX_INT) or (float in types and _is_number(value))
    if type(value) is float:
        return float in types and math.isfinite(value)
    return type(value) in types and type(value) is not float


def _check_annotated(field: str, value: Any, annotation: Any, default: Any) -> None:
    accepted = _accepted(annotation, default)
    if accepted is None:
        raise SchemaError(field, f"cannot be set from a checkpoint (its type is {annotation})")
    scalars, items = accepted
    if isinstance(value, list) and items and all(_scalar_ok(v, items) for v in value):
        values = value
    elif not isinstance(value, list) and _scalar_ok(value, scalars):
        values = [value]
    else:
        raise SchemaError(field, f"must be {annotation}, got {describe(value)}")
    name = field.rsplit(".", 1)[-1]
    if name in _RANGES:
        lo, hi = _RANGES[name]
        for item in values:
            if type(item) is int and float not in scalars | items:
                check_int(field, item, -_MAX_INT if lo is None else lo, _MAX_INT if hi is None else hi)
            elif type(item) in (int, float):
                check_number(field, item, lo, hi)


def model_kwargs(record: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments that rebuild the record's model, each checked against the class's signature.

    Arguments a method gained after a file was written take the class's ``checkpoint_defaults``.
    """
    method = record["method"]
    cls, fixed = MODELS[method]
    given = record.get("method_kwargs", {})
    if not isinstance(given, dict):
        raise SchemaError("method_kwargs", f"must be an object of constructor arguments, got {describe(given)}")
    parameters = inspect.signature(cls.__init__).parameters
    for name, value in given.items():
        field = f"method_kwargs.{name}"
        param = parameters.get(name)
        if param is None or name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SchemaError(field, f"is not an argument of {cls.__name__} (it takes: "
                                     f"{', '.join(p for p in parameters if p != 'self')})")
        if name not in fixed:  # fixed by the registry key (fomaml's first_order): the stored value is ignored
            _check_annotated(field, value, param.annotation, param.default)
    kwargs = {**getattr(cls, "checkpoint_defaults", {}), **given}
    if method in METHODS and "feature_dim" in kwargs and is_int(kwargs.get("hidden", 64)):
        image_size = record.get("image_size", 28)
        expected = conv4_feature_dim(kwargs.get("hidden", 64), image_size)
        if kwargs["feature_dim"] != expected:
            raise SchemaError("method_kwargs.feature_dim", f"is {kwargs['feature_dim']}, but a Conv-4 with hidden "
                              f"{kwargs.get('hidden', 64)} on {image_size}x{image_size} images gives {expected}")
    if method in METHODS and kwargs.get("in_channels", 1) != 1:
        raise SchemaError("method_kwargs.in_channels", f"is {kwargs['in_channels']}, but fewshot's images are greyscale "
                                                       "ink (1 channel): this model could not take them")
    if "in_channels" in record and "in_channels" in kwargs and record["in_channels"] != kwargs["in_channels"]:
        raise SchemaError("in_channels", f"is {record['in_channels']} but method_kwargs.in_channels is "
                                         f"{kwargs['in_channels']}")
    return kwargs


def conv4_feature_dim(hidden: int, image_size: int) -> int:
    """Output width of a Conv-4 (four 2x2 max-pools) with ``hidden`` filters on square ``image_size`` inputs."""
    return hidden * (image_size // 16) ** 2


# ---------------------------------------------------------------------------------------------------- weights
_LIKE = (torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like, torch.rand_like, torch.randn_like)
_FACTORIES = (torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint, torch.eye,
              torch.empty_strided, *_LIKE)


def _elements(func: Any, args: tuple, kwargs: dict) -> int:
    """How many elements a tensor factory call is about to allocate."""
    if func in _LIKE:
        return args[0].numel() if args and isinstance(args[0], torch.Tensor) else 0
    if func is torch.eye:
        rows = args[0]
        cols = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("m", rows)
        return int(rows) * int(cols)
    size = kwargs.get("size")
    if size is None:
        sequences = [a for a in args if isinstance(a, (tuple, list, torch.Size))]
        size = sequences[0] if sequences else [a for a in args if type(a) is int]
    return math.prod(int(n) for n in size)


class _AllocationBudget(TorchFunctionMode):
    """Refuse tensor allocations past ``limit`` elements, before they happen (a constructor given huge sizes)."""

    def __init__(self, limit: int):
        super().__init__()
        self.left = limit

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            self.left -= _elements(func, args, kwargs)
            if self.left < 0:
                raise MemoryError("the arguments describe a model far larger than the weights stored in the file")
        return func(*args, **kwargs)


def build_checked_model(method: str, kwargs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Build the described model (on the CPU) and check the file's ``model/`` tensors against it.

    The build may allocate at most about twice the elements the file stores (plus 4M), so arguments that
    describe a huge model fail at once instead of filling memory. The tensors must then be exactly the
    model's state: the same names, shapes and kinds of dtype, with finite values.

    Raises:
        SchemaError: ``method_kwargs`` that build nothing (field ``method_kwargs``), or a tensor that is
            missing, extra, of the wrong shape or dtype, or not finite (field ``tensor model/<name>``).
    """
    given = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        with _AllocationBudget(2 * sum(t.numel() for t in given.values()) + 4_000_000):
            model = build_model(method, **kwargs)
    except Exception as exc:  # a constructor fed untrusted values: any failure means "these arguments build nothing"
        raise SchemaError("method_kwargs", f"do not build a {method} model ({type(exc).__name__}: {exc})") from exc
    expected = model.state_dict()
    for name in sorted(set(given) - set(expected)):
        raise WeightsMismatchError(f"tensor model/{name}", f"is not part of the {method} model the record describes")
    for name, want in expected.items():  # in the model's order: the first layer that differs is reported
        field = f"tensor model/{name}"
        if name not in given:
            raise WeightsMismatchError(field, f"is missing (the {method} model needs it)")
        tensor = given[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise WeightsMismatchError(field, f"has shape {tuple(tensor.shape)}, but the {method} model described by "
                                     f"method_kwargs needs {tuple(want.shape)}")
        if tensor.is_floating_point() != want.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise WeightsMismatchError(field, f"has dtype {tensor.dtype}, the model needs {want.dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SchemaError(field, "holds NaN or infinite values: the weights are damaged (a diverged run?)")
    model.load_state_dict(given, strict=True)
    return model
