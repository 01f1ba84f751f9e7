"""Training the sine-wave regressor two ways (Finn et al. 2017, section 5.1): MAML, and the paper's baseline.

- ``maml``: each meta-iteration draws ``meta_batch_size`` sines with K support and K query points, adapts the
  meta-weights to every task with :func:`fewshot.methods.maml.adapt` (second order: ``create_graph=True``, the
  tasks stacked along a leading axis), and takes one Adam step on the query MSE of the adapted weights.
- ``pretrained``: the same network regresses the same points of random sines directly ("pretraining on all of
  the tasks"); at test time it is fine-tuned with the same inner SGD.

Both draw their tasks from :class:`fewshot.sine.SineTaskSampler` with the run's seed, so the two runs see the same
sines and points in the same order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .functional import functional_call
from .methods.maml import adapt
from .mlp import MLPRegressor
from .sine import SineTaskSampler, evaluate_sine, per_task_mse, stack_weights

__all__ = ["SINE_MODES", "SineTrainConfig", "SineTrainResult", "train_sine"]

SINE_MODES = ("maml", "pretrained")


@dataclass(frozen=True)
class SineTrainConfig:
    """One run's settings; the defaults are the paper's except ``iterations`` (70,000 there)."""

    mode: str = "maml"
    iterations: int = 10_000
    meta_batch_size: int = 25
    n_shot: int = 10
    inner_lr: float = 0.01
    inner_steps: int = 1
    meta_lr: float = 1e-3
    seed: int = 0
    log_every: int = 500
    val_tasks: int = 200

    def __post_init__(self) -> None:
        if self.mode not in SINE_MODES:
            raise ValueError(f"mode must be one of {', '.join(SINE_MODES)}, got {self.mode!r}")
        for name in ("iterations", "meta_batch_size", "n_shot", "log_every", "val_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if not (self.inner_lr > 0 and self.meta_lr > 0):
            raise ValueError(f"inner_lr and meta_lr must be positive, got {self.inner_lr} and {self.meta_lr}")


@dataclass
class SineTrainResult:
    steps: int
    seconds: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def _maml_loss(model: MLPRegressor, sampler: SineTaskSampler, config: SineTrainConfig) -> torch.Tensor:
    batch = sampler.sample(config.meta_batch_size)
    weights = stack_weights(dict(model.named_parameters()), config.meta_batch_size)
    fast = adapt(model, weights, {}, batch.support_x, batch.support_y, inner_lr=config.inner_lr,
                 inner_steps=config.inner_steps, create_graph=True, loss_fn=per_task_mse)
    return per_task_mse(functional_call(model, fast, (batch.query_x,)), batch.query_y) / config.meta_batch_size


def _pretrain_loss(model: MLPRegressor, sampler: SineTaskSampler, config: SineTrainConfig) -> torch.Tensor:
    batch = sampler.sample(config.meta_batch_size)
    x = torch.cat([batch.support_x, batch.query_x], dim=1)  # (T, 2K, 1): every point drawn, as MAML sees them
    y = torch.cat([batch.support_y, batch.query_y], dim=1)
    return per_task_mse(model(x), y) / config.meta_batch_size


def train_sine(model: MLPRegressor, config: SineTrainConfig, *, max_seconds: float | None = None,
               on_log: Callable[[dict[str, Any]], None] | None = None) -> SineTrainResult:
    """Train ``model`` in place; every ``log_every`` iterations log the mean training loss and the 1-step MSE.

    The validation figure is :func:`fewshot.sine.evaluate_sine` on ``val_tasks`` fixed sines (seed 12345, K =
    ``n_shot``) after ``inner_steps`` steps, so a MAML and a pre-trained run can be compared as they go.

    Raises:
        ValueError: ``max_seconds`` not positive.
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    torch.manual_seed(config.seed)  # the initial weights are part of the run
    for layer in model.layers:
        layer.reset_parameters()
    sampler = SineTaskSampler(config.n_shot, config.n_shot, seed=config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.meta_lr)
    step_loss = _maml_loss if config.mode == "maml" else _pretrain_loss
    result = SineTrainResult(0, 0.0, False)
    start, running = time.perf_counter(), 0.0
    model.train()
    for step in range(1, config.iterations + 1):
        loss = step_loss(model, sampler, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
        result.steps, result.seconds = step, time.perf_counter() - start
        out_of_time = max_seconds is not None and result.seconds >= max_seconds
        if step % config.log_every == 0 or step == config.iterations or out_of_time:
            n = step - (result.history[-1]["step"] if result.history else 0)
            val = evaluate_sine(model, n_tasks=config.val_tasks, n_shot=config.n_shot,
                                steps=(max(config.inner_steps, 1),), inner_lr=config.inner_lr, seed=12345)[0]
            record = {"step": step, "loss": running / n, "val_mse": val.mse, "val_steps": val.steps,
                      "seconds": round(result.seconds, 2)}
            result.history.append(record)
            running = 0.0
            if on_log is not None:
                on_log(record)
        if out_of_time:
            result.stopped_early = step < config.iterations
            break
    model.eval()
    return result
