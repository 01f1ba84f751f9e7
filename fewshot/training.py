"""One training loop and one evaluator for every method."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor

from .config import TrainConfig
from .distributed import World, all_reduce_step, broadcast_model, check_meta_batch, sample_meta_batch, seed_step
from .methods.base import FewShotClassifier
from .tasks import Task, TaskSampler

__all__ = ["StepLog", "EvalResult", "TrainState", "TrainResult", "train", "evaluate", "mean_ci95", "resolve_device",
           "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message gives the step."""


@dataclass
class StepLog:
    """What the loop reports after each optimiser step."""

    step: int  # 1-based number of optimiser steps done
    total_steps: int
    loss: float
    accuracy: float  # query accuracy of this step's tasks
    lr: float
    seconds: float  # wall time since the start of this call
    val_accuracy: float | None = None
    val_ci95: float | None = None


@dataclass
class EvalResult:
    """Mean accuracy over tasks with its 95% confidence half-width (1.96 * std / sqrt(n))."""

    accuracy: float
    ci95: float
    episodes: int
    accuracies: list[float] = field(repr=False, default_factory=list)


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    optimizer: dict
    sampler: Tensor
    rng: Tensor
    history: list[dict]


@dataclass
class TrainResult:
    history: list[dict]
    steps: int
    seconds: float
    stopped_early: bool


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``.

    Raises:
        ValueError: CUDA was asked for but is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    return resolved


def use_fast_layout(model: torch.nn.Module) -> torch.nn.Module:
    """On a CPU, put the model's 4-d weights in ``channels_last`` (NHWC); elsewhere leave it as it is.

    oneDNN's NHWC convolutions and max-pooling run a Conv-4 several times faster than the default
    layout on a CPU (``benchmarks/speed.py --nchw`` measures the difference). The numbers are the
    same up to float rounding (another summation order); checkpoints always store contiguous weights.
    ``train()`` does this itself; ``fewshot evaluate`` and the app call it on loaded models. Returns ``model``.
    """
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cpu":
        model.to(memory_format=torch.channels_last)  # 4-d tensors only
    return model


def mean_ci95(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std(unbiased=False)) if n > 1 else 0.0
    return float(t.mean()), 1.96 * std / math.sqrt(n)


def evaluate(model: FewShotClassifier, tasks: Iterable[Task]) -> EvalResult:
    """Mean query accuracy over ``tasks`` ± 95% CI, in eval mode and without gradients (restores the mode)."""
    was_training = model.training
    model.eval()
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    accuracies = []
    try:
        with torch.no_grad():
            for task in tasks:
                task = task.to(device)
                model.process_support_set(task.support_images, task.support_labels)
                predictions = model(task.query_images).argmax(1)
                accuracies.append(float((predictions == task.query_labels).float().mean()))
    finally:
        model.train(was_training)
    mean, ci = mean_ci95(accuracies)
    return EvalResult(mean, ci, len(accuracies), accuracies)


def _lr_factor(schedule: str, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of the run."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.5 ** min(int(4 * progress), 3)  # halve at 1/4, 1/2 and 3/4 of the run
    return 1.0


def _check_finite(loss: Tensor, step: int, config: TrainConfig) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"non-finite loss ({loss.item()}) at step {step}; lower --meta-lr (now {config.meta_lr}) "
            "or the inner learning rate, or set a gradient clip"
        )


def _train_mode(model: FewShotClassifier, config: TrainConfig) -> None:
    model.train()
    if config.freeze_backbone:
        model.backbone.eval()  # fixed BatchNorm statistics too


def train(
    model: FewShotClassifier,
    sampler: TaskSampler,
    config: TrainConfig,
    *,
    on_step: Callable[[StepLog], None] | None = None,
    validate: Callable[[FewShotClassifier], EvalResult] | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    state: TrainState | None = None,
    max_seconds: float | None = None,
    log_every: int = 50,
    world: World | None = None,
) -> TrainResult:
    """Meta-train ``model`` for ``config.episodes`` optimiser steps (Adam), each over ``meta_batch_size`` tasks.

    The loss of every task is ``model.episode_loss(task)``; gradients of the tasks in a step are
    accumulated one task at a time (so second-order MAML holds one task's graph at once), then
    averaged. Progress goes out through ``on_step`` once per step; ``validate`` runs every
    ``config.eval_every`` steps; ``on_checkpoint`` receives a :class:`TrainState` every
    ``config.checkpoint_every`` steps and at the end. Passing that state back as ``state`` resumes
    the run with the same optimiser state, episode stream and RNG, so the result matches an
    uninterrupted run.

    With a ``world`` (:func:`fewshot.distributed.init_from_env`, under torchrun) the meta-batch is
    split across the processes and the meta-gradients are summed (see :mod:`fewshot.distributed`);
    ``validate`` and ``on_checkpoint`` run on rank 0 only, ``on_step`` on every rank with the global
    loss and accuracy. Without one, nothing of that runs.

    Raises:
        NonFiniteLossError: a task's loss is NaN or infinite (the message gives the step).
    """
    device = next(model.parameters()).device  # a model with nothing to train cannot be trained
    if world is not None:
        check_meta_batch(config.meta_batch_size, world)
        broadcast_model(model, world)
        if not world.is_main:  # rank 0 alone validates and writes checkpoints; the others wait in the next step
            validate = on_checkpoint = None
    if config.channels_last is not None:
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
    elif world is None:
        use_fast_layout(model)
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)  # Adam skips parameters that get no gradient
    optimizer = torch.optim.Adam(model.parameters(), lr=config.meta_lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    start = 0
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        sampler.load_state_dict(state.sampler)
        torch.set_rng_state(state.rng)
        history, start = list(state.history), state.step
    else:
        torch.manual_seed(config.seed)

    def snapshot(step: int) -> TrainState:
        return TrainState(step, optimizer.state_dict(), sampler.state_dict(), torch.get_rng_state(), list(history))

    _train_mode(model, config)
    t0 = time.perf_counter()
    # CPU time of this process (all its threads) spent training (validation excluded), carried over a --resume:
    # what the time-to-accuracy curves plot.
    cpu0 = time.process_time() - float(history[-1].get("cpu_seconds", 0.0) if history else 0.0)
    window: list[tuple[float, float]] = []
    step = start
    stopped_early = False
    for step in range(start + 1, config.episodes + 1):
        progress = (step - 1) / max(config.episodes, 1)
        if max_seconds:  # a time budget: the schedule follows whichever runs out first
            elapsed = time.perf_counter() - t0 if world is None else world.seconds  # one clock for all ranks
            progress = max(progress, elapsed / max_seconds)
        model.on_train_progress(progress)
        lr = config.meta_lr * _lr_factor(config.lr_schedule, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        if world is None:
            tasks = [sampler.sample_task().to(device) for _ in range(config.meta_batch_size)]
        else:  # this rank's share of the step's tasks; the others' are drawn as indices only
            seed_step(world, config.seed, step)
            tasks = sample_meta_batch(sampler, config.meta_batch_size, device, world)
        batched = getattr(model, "batched_episode_loss", None)
        use_batched = config.batch_tasks if config.batch_tasks is not None else device.type == "cuda"
        result = batched(tasks) if batched is not None and use_batched and len(tasks) > 1 else None
        if result is not None:
            # One pass over the whole meta-batch (MAML's grouped-convolution path); same gradients.
            loss, all_logits = result
            if world is None:
                _check_finite(loss, step, config)
                loss.backward()
            else:  # this rank's mean, weighted by its share of the meta-batch: the sum over ranks is the mean
                (loss * (len(tasks) / config.meta_batch_size)).backward()
            total_loss = loss.item() * len(tasks)
        else:
            total_loss, all_logits = 0.0, []
            for task in tasks:
                loss, logits = model.episode_loss(task)
                if world is None:  # under torchrun every rank checks the summed loss below, so all stop together
                    _check_finite(loss, step, config)
                (loss / config.meta_batch_size).backward()  # one task's graph alive at a time
                total_loss += loss.item()
                all_logits.append(logits.detach())
        total_acc = sum((lg.argmax(1) == t.query_labels).float().mean().item() for lg, t in zip(all_logits, tasks))
        if world is not None:
            total_loss, total_acc = all_reduce_step(model, world, total_loss, total_acc, time.perf_counter() - t0)
            _check_finite(torch.tensor(total_loss / config.meta_batch_size), step, config)
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        log = StepLog(step, config.episodes, total_loss / config.meta_batch_size,
                      total_acc / config.meta_batch_size, lr,
                      time.perf_counter() - t0 if world is None else world.seconds)
        window.append((log.loss, log.accuracy))
        if validate is not None and config.eval_every and (step % config.eval_every == 0 or step == config.episodes):
            v0 = time.process_time()
            result = validate(model)
            cpu0 += time.process_time() - v0  # the curves count training CPU time, not validation's
            _train_mode(model, config)
            log.val_accuracy, log.val_ci95 = result.accuracy, result.ci95
        if step % log_every == 0 or log.val_accuracy is not None or step == config.episodes:
            history.append({"step": step, "loss": sum(w[0] for w in window) / len(window),
                            "accuracy": sum(w[1] for w in window) / len(window), "lr": lr,
                            "seconds": round(log.seconds, 3), "cpu_seconds": round(time.process_time() - cpu0, 3),
                            **({"val_accuracy": log.val_accuracy, "val_ci95": log.val_ci95}
                               if log.val_accuracy is not None else {})})
            window = []
        if on_step is not None:
            on_step(log)
        out_of_time = max_seconds is not None and log.seconds >= max_seconds
        if on_checkpoint is not None and (step % config.checkpoint_every == 0 or out_of_time):
            on_checkpoint(snapshot(step))
        if out_of_time:
            stopped_early = step < config.episodes
            break
    if on_checkpoint is not None and not stopped_early and (step == start or step % config.checkpoint_every):
        on_checkpoint(snapshot(step))
    model.eval()
    return TrainResult(history, step, time.perf_counter() - t0, stopped_early)
