"""The training state of a resumable checkpoint, checked in full before ``--resume`` uses any of it.

Inference never reads this part of a file (see :attr:`fewshot.checkpoints.CheckpointInfo.train_state`).
What is checked, against the model just loaded: the step (within the run's own ``train_config.episodes``),
Adam's parameter groups against those of a fresh optimiser over the same parameters, each moment tensor
against its parameter (the state keys come from a real Adam step with the file's options, so another
PyTorch version's keys are covered), the two RNG states, and finally the very ``load_state_dict`` that
:func:`fewshot.training.train` will do, on a throwaway optimiser.
"""

from __future__ import annotations

from typing import Any

import torch

from .checkpoint_schema import (MAX_EPISODES, SchemaError, check_history, check_int, check_json, check_number,
                                check_object, describe, is_int)
from .training import TrainState

__all__ = ["check_train_state"]

_RNG_SHAPE = tuple(torch.Generator().get_state().shape)
_GROUP_REQUIRED = ("params", "lr", "betas", "eps", "weight_decay")


def _rng(tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    field = f"tensor {name}"
    if name not in tensors:
        raise SchemaError(field, "is missing; the training state cannot be resumed")
    state = tensors[name]
    if state.dtype != torch.uint8 or tuple(state.shape) != _RNG_SHAPE:
        raise SchemaError(field, f"must be a uint8 RNG state of shape {_RNG_SHAPE}, got {state.dtype} "
                                 f"{tuple(state.shape)}")
    try:
        torch.Generator().set_state(state)
    except RuntimeError as exc:
        raise SchemaError(field, f"is not a valid RNG state ({exc})") from exc
    return state


def _param_group(field: str, group: Any, template: dict[str, Any]) -> dict[str, Any]:
    check_object(field, group)
    for key in _GROUP_REQUIRED:
        if key not in group:
            raise SchemaError(f"{field}.{key}", "is missing")
    for key, value in group.items():
        where = f"{field}.{key}"
        if key not in template:
            raise SchemaError(where, "is not an option of the Adam optimiser fewshot trains with")
        like = template[key]
        if key == "params":
            if value != like:
                raise SchemaError(where, f"must list the model's {len(like)} parameters in order ({like[:3]}...), "
                                         f"got {describe(value)}")
        elif key == "betas":
            if not isinstance(value, list) or len(value) != 2:
                raise SchemaError(where, f"must be two numbers, got {describe(value)}")
            for i, beta in enumerate(value):
                check_number(f"{where}[{i}]", beta, 0, 1)
                if beta >= 1:
                    raise SchemaError(f"{where}[{i}]", f"must be below 1, got {beta}")
        elif type(like) is bool or like is None:
            if not (value is None or type(value) is bool):
                raise SchemaError(where, f"must be true, false or null, got {describe(value)}")
        else:
            check_number(where, value, 0, open_lo=key in ("lr", "eps"))
    return {k: (tuple(v) if k == "betas" else v) for k, v in group.items()}


def _moment_kinds(group: dict[str, Any]) -> dict[str, bool]:
    """Adam's per-parameter state keys for these options -> whether each has the parameter's shape (else a scalar)."""
    probe = torch.zeros(2, requires_grad=True)
    try:
        optimizer = torch.optim.Adam([probe], **{k: v for k, v in group.items() if k != "params"})
        probe.grad = torch.zeros(2)
        optimizer.step()
    except Exception as exc:  # the options themselves are untrusted: whatever Adam refuses is a schema error
        raise SchemaError("train_state.optimizer.param_groups", f"are not usable Adam options ({exc})") from exc
    return {k: v.dim() > 0 for k, v in optimizer.state[probe].items()}


def check_train_state(record: dict[str, Any], tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> TrainState:
    """The resumable state of a run, every part checked against ``model`` before anything uses it.

    Raises:
        SchemaError: a missing or malformed step, optimiser state or RNG state.
    """
    ts = record.get("train_state")
    check_object("train_state", ts)
    check_json(ts, "train_state")
    limit = MAX_EPISODES
    if isinstance(record.get("train_config"), dict) and is_int(record["train_config"].get("episodes")):
        limit = record["train_config"]["episodes"]
    step = check_int("train_state.step", ts.get("step"), 0, limit)
    optim = ts.get("optimizer")
    check_object("train_state.optimizer", optim)
    params = list(model.parameters())
    template = torch.optim.Adam(params, lr=1e-3).state_dict()["param_groups"]
    groups = optim.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(template):
        raise SchemaError("train_state.optimizer.param_groups", f"must be a list of {len(template)} group(s), "
                                                                 f"got {describe(groups)}")
    groups = [_param_group(f"train_state.optimizer.param_groups[{i}]", group, like)
              for i, (group, like) in enumerate(zip(groups, template))]
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("train/optim/"):
            index, _, key = name[len("train/optim/"):].partition("/")
            if not index.isdigit() or not key or int(index) >= len(params):
                raise SchemaError(f"tensor {name}", f"does not name one of the model's {len(params)} parameters")
            state.setdefault(int(index), {})[key] = value
    scalars = optim.get("scalars", {})
    check_object("train_state.optimizer.scalars", scalars)
    for name, value in scalars.items():
        index, _, key = name.partition("/")
        if not index.isdigit() or not key or int(index) >= len(params):
            raise SchemaError(f"train_state.optimizer.scalars.{name}", "does not name one of the model's parameters")
        state.setdefault(int(index), {})[key] = check_number(f"train_state.optimizer.scalars.{name}", value, 0)
    kinds_of = [_moment_kinds(group) for group in groups]
    owner = {i: n for n, group in enumerate(groups) for i in group["params"]}
    for index, entries in state.items():
        kinds = kinds_of[owner[index]]
        if set(entries) != set(kinds):
            raise SchemaError(f"train_state parameter {index}", f"has optimiser state {sorted(entries)}, Adam keeps "
                                                               f"{sorted(kinds)}")
        for key, value in entries.items():
            field = f"tensor train/optim/{index}/{key}"
            if isinstance(value, torch.Tensor):
                want = tuple(params[index].shape) if kinds[key] else ()
                if tuple(value.shape) != want and not (not kinds[key] and value.numel() == 1):
                    raise SchemaError(field, f"has shape {tuple(value.shape)}, the parameter needs {want}")
                if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                    raise SchemaError(field, "must hold finite floating-point values")
    optimizer_state = {"state": state, "param_groups": groups}
    try:  # the exact load train() will do, on a throwaway optimiser
        torch.optim.Adam(params, lr=1e-3).load_state_dict(optimizer_state)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise SchemaError("train_state.optimizer", f"does not fit the model ({exc})") from exc
    history = record.get("history", [])
    check_history("history", history)
    return TrainState(step, optimizer_state, _rng(tensors, "train/sampler_rng"), _rng(tensors, "train/torch_rng"),
                      history)
