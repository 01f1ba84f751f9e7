"""Run settings as frozen dataclasses: the CLI, the app and the tests build the same objects."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskConfig", "TrainConfig"]


@dataclass(frozen=True)
class TaskConfig:
    """Shape of one episode: ``n_way`` classes, ``n_shot`` support and ``n_query`` query images each."""

    n_way: int = 5
    n_shot: int = 1
    n_query: int = 15

    def __post_init__(self) -> None:
        for name in ("n_way", "n_shot"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.n_query, int) or self.n_query < 0:
            raise ValueError(f"n_query must be a non-negative integer, got {self.n_query!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`fewshot.training.train`.

    ``episodes`` counts optimiser steps; each step averages the loss of ``meta_batch_size`` tasks.
    """

    episodes: int = 1000
    meta_batch_size: int = 1
    meta_lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant" | "cosine" | "step" (halve every 1/4 of the run)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    eval_every: int = 500
    eval_tasks: int = 100
    checkpoint_every: int = 1000
    seed: int = 0
    # Run a meta-batch as one batched pass when the method supports it (MAML's grouped convolutions: 14x on
    # an H200). None: on a GPU only. On a CPU the per-task loop is as fast or faster and needs a third of the
    # memory (second order 1247 vs 1264 ms, first order 671 vs 839 ms, 173 vs 513 MiB: benchmarks/speed.py).
    batch_tasks: bool | None = None
    # Conv weights and activations in channels_last (NHWC) memory format: faster Conv-4 training on CPUs
    # (ProtoNet episode 136 vs 194 ms: benchmarks/speed.py with and without --nchw), same numbers up to
    # float rounding. None: on CPU, single process.
    channels_last: bool | None = None
    # Keep the encoder (``model.backbone``) as it is: no gradient reaches it and its BatchNorm layers stay in
    # evaluation mode (their running statistics fixed), so only the method's own head learns (a Siamese
    # network's comparison layer on an encoder started from another model, say).
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise ValueError(f"episodes must be >= 0, got {self.episodes}")
        if self.meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be >= 1, got {self.meta_batch_size}")
        if not 0 < self.meta_lr <= 1e30:  # Adam's step (lr / 0.1 at step 1) must fit in float32 (3.4e38)
            raise ValueError(f"meta_lr must be > 0 and at most 1e30, got {self.meta_lr} (usual values: 1e-4 to 1e-2)")
        if self.lr_schedule not in ("constant", "cosine", "step"):
            raise ValueError(f"lr_schedule must be 'constant', 'cosine' or 'step', got {self.lr_schedule!r}")
