"""Sine-wave regression tasks of Finn et al. 2017 (MAML, arXiv:1703.03400, section 5.1), and adapting to them.

A task is a sine ``y = A sin(x - phi)`` with amplitude ``A`` in [0.1, 5.0] and phase ``phi`` in [0, pi], seen
through K points ``x`` drawn uniformly from [-5, 5]. A regressor (:class:`fewshot.mlp.MLPRegressor`) adapts to a
task with plain SGD on the mean-squared error of those K points: :func:`fewshot.methods.maml.adapt`, the same
functional inner loop the image classifiers use, with ``loss_fn=per_task_mse``.

Many tasks are adapted at once by stacking the weights along a leading task axis (``(T, ...)``) and the points
as ``(T, K, 1)``: :func:`per_task_mse` sums the tasks' own mean-squared errors, so each task's slice of the
gradient is that task's own gradient and the result equals adapting the tasks one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .functional import functional_call  # thread-safe: the app's cached models are shared by sessions
from .methods.maml import Weights, adapt

__all__ = ["AMPLITUDE_RANGE", "PHASE_RANGE", "X_RANGE", "DIVERGED_MSE", "SineBatch", "SineTaskSampler", "per_task_mse",
           "stack_weights", "adaptation_curves", "evaluate_sine", "SineResult", "query_grid"]

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
# Above this mean-squared error SGD has diverged on a sine: predicting 0 everywhere costs at most A^2 / 2 = 12.5.
DIVERGED_MSE = 100.0


@dataclass(frozen=True)
class SineBatch:
    """``T`` sine tasks: ``amplitudes``/``phases`` ``(T,)``; support and query points ``(T, K, 1)``, ``(T, Q, 1)``."""

    amplitudes: Tensor
    phases: Tensor
    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def true_y(self, x: Tensor) -> Tensor:
        """The tasks' sines at ``x`` ``(T, N, 1)`` (or ``(N, 1)``, the same points for every task)."""
        return self.amplitudes[:, None, None] * torch.sin(x - self.phases[:, None, None])


class SineTaskSampler:
    """Draws sine tasks with an explicit ``torch.Generator``: the same seed gives the same tasks.

    Args:
        n_shot: K, the points a task is adapted on.
        n_query: points per task to score the adapted weights on (MAML's meta-objective; 0 for none).
        seed: seeds the sampler's own generator (global RNG state is never used or changed).
        x_range: where support points are drawn from; e.g. ``(-5, 0)`` for the paper's extrapolation figure.
            Query points always cover the whole [-5, 5].

    Raises:
        ValueError: ``n_shot < 1``, ``n_query < 0`` or an ``x_range`` that is empty or outside [-5, 5].
    """

    def __init__(self, n_shot: int, n_query: int = 0, *, seed: int = 0,
                 x_range: tuple[float, float] = X_RANGE) -> None:
        if n_shot < 1:
            raise ValueError(f"n_shot must be at least 1 (K points per sine), got {n_shot}")
        if n_query < 0:
            raise ValueError(f"n_query must be >= 0, got {n_query}")
        lo, hi = float(x_range[0]), float(x_range[1])
        if not (X_RANGE[0] <= lo < hi <= X_RANGE[1]):
            raise ValueError(f"x_range must satisfy {X_RANGE[0]} <= low < high <= {X_RANGE[1]}, got {x_range}")
        self.n_shot, self.n_query, self.x_range = n_shot, n_query, (lo, hi)
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=self.generator)

    def sample(self, n_tasks: int) -> SineBatch:
        """``n_tasks`` new sines with their support and query points (float32, CPU)."""
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be at least 1, got {n_tasks}")
        amplitudes = self._uniform((n_tasks,), *AMPLITUDE_RANGE)
        phases = self._uniform((n_tasks,), *PHASE_RANGE)
        support_x = self._uniform((n_tasks, self.n_shot, 1), *self.x_range)
        query_x = self._uniform((n_tasks, self.n_query, 1), *X_RANGE)
        batch = SineBatch(amplitudes, phases, support_x, torch.empty(0), query_x, torch.empty(0))
        return SineBatch(amplitudes, phases, support_x, batch.true_y(support_x), query_x, batch.true_y(query_x))


def query_grid(n_points: int = 100) -> Tensor:
    """``n_points`` evenly spaced x over [-5, 5], ``(n_points, 1)``: where adapted curves are drawn and scored."""
    return torch.linspace(X_RANGE[0], X_RANGE[1], n_points).unsqueeze(1)


def per_task_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """Sum over tasks of each task's mean-squared error: ``(T, N, 1)`` -> scalar; ``(N, 1)`` -> that task's MSE."""
    return ((outputs - targets) ** 2).mean(dim=(-2, -1)).sum()


def stack_weights(weights: Weights, n_tasks: int) -> Weights:
    """The same weights for ``n_tasks`` tasks, ``(n_tasks, ...)`` each (a view: gradients flow back to ``weights``)."""
    return {name: w.unsqueeze(0).expand(n_tasks, *w.shape) for name, w in weights.items()}


def adaptation_curves(model: nn.Module, support_x: Tensor, support_y: Tensor, x: Tensor, *, inner_lr: float,
                      inner_steps: int) -> tuple[Tensor, Tensor]:
    """One task's predictions at ``x`` and support MSE after 0, 1, ..., ``inner_steps`` SGD steps.

    Each step is :func:`~fewshot.methods.maml.adapt` with one step from the previous weights, which is what
    ``adapt`` with ``n`` steps computes in one call. The model itself is never modified.

    Args:
        support_x, support_y: the K points, ``(K, 1)`` each.
        x: where to predict, ``(N, 1)``.

    Returns:
        ``(predictions (inner_steps + 1, N), support_mse (inner_steps + 1,))``.
    """
    weights = {k: v.detach() for k, v in model.named_parameters()}
    predictions, losses = [], []
    for step in range(inner_steps + 1):
        with torch.no_grad():
            predictions.append(functional_call(model, weights, (x,)).squeeze(-1))
            losses.append(per_task_mse(functional_call(model, weights, (support_x,)), support_y))
        if step < inner_steps:
            with torch.enable_grad():
                start = {k: v.clone().requires_grad_() for k, v in weights.items()}
                weights = adapt(model, start, {}, support_x, support_y, inner_lr=inner_lr, inner_steps=1,
                                create_graph=False, loss_fn=per_task_mse)
            weights = {k: v.detach() for k, v in weights.items()}
    return torch.stack(predictions), torch.stack(losses)


@dataclass(frozen=True)
class SineResult:
    """Mean-squared error over ``n_tasks`` sines after ``steps`` inner steps, with its 95% confidence interval.

    A sine on which SGD diverged (an error that is not finite or above :data:`DIVERGED_MSE`) would make the mean
    meaningless (infinite, or one sine outweighing a thousand): those are counted in ``diverged`` and ``mse`` /
    ``ci95`` are over the others; ``median`` is over all sines.
    """

    steps: int
    mse: float
    ci95: float
    n_tasks: int
    median: float
    diverged: int


def evaluate_sine(model: nn.Module, *, n_tasks: int, n_shot: int, steps: tuple[int, ...] = (0, 1, 10),
                  inner_lr: float = 0.01, seed: int = 0, x_range: tuple[float, float] = X_RANGE,
                  n_grid: int = 100, batch_size: int = 1000) -> list[SineResult]:
    """MSE on ``n_grid`` evenly spaced points over [-5, 5] after adapting on K points, mean ± 1.96 SE over tasks.

    All tasks are adapted together (stacked weights, :func:`per_task_mse`), through
    :func:`~fewshot.methods.maml.adapt`; the tasks depend only on ``seed``, ``n_tasks``, ``n_shot`` and
    ``x_range``, so two models are scored on the same sines and the same points.
    """
    if not steps or min(steps) < 0:
        raise ValueError(f"steps must be non-negative step counts, got {steps}")
    tasks = SineTaskSampler(n_shot, 0, seed=seed, x_range=x_range).sample(n_tasks)  # drawn at once: batch-free
    grid = query_grid(n_grid)
    per_step: dict[int, list[Tensor]] = {s: [] for s in steps}
    for first in range(0, n_tasks, batch_size):
        chunk = slice(first, min(first + batch_size, n_tasks))
        support_x, support_y = tasks.support_x[chunk], tasks.support_y[chunk]
        t = support_x.shape[0]
        truth = tasks.amplitudes[chunk, None, None] * torch.sin(grid - tasks.phases[chunk, None, None])  # (T, G, 1)
        weights = stack_weights({k: v.detach() for k, v in model.named_parameters()}, t)
        for step in range(max(steps) + 1):
            if step in per_step:
                with torch.no_grad():
                    pred = functional_call(model, weights, (grid.expand(t, *grid.shape),))
                    per_step[step].append(((pred - truth) ** 2).mean(dim=(1, 2)))
            if step < max(steps):
                with torch.enable_grad():
                    start = {k: v.clone().requires_grad_() for k, v in weights.items()}
                    weights = adapt(model, start, {}, support_x, support_y, inner_lr=inner_lr,
                                    inner_steps=1, create_graph=False, loss_fn=per_task_mse)
                weights = {k: v.detach() for k, v in weights.items()}
    results = []
    for step in steps:
        errors = torch.cat(per_step[step]).double()
        median = errors.nan_to_num(nan=math.inf, posinf=math.inf).median().item()
        fine = errors[torch.isfinite(errors) & (errors <= DIVERGED_MSE)]
        ci = 1.96 * fine.std().item() / math.sqrt(fine.numel()) if fine.numel() > 1 else float("nan")
        mean = fine.mean().item() if fine.numel() else float("nan")
        results.append(SineResult(step, mean, ci, errors.numel(), median, errors.numel() - fine.numel()))
    return results
