"""A shared pre-trained encoder: plain supervised classification over every training class.

Chen et al. 2019 ("A Closer Look at Few-shot Classification") and Chen et al. 2021 ("Meta-Baseline")
pre-train the backbone as an ordinary classifier over all training classes (on the Lake protocol:
964 background characters x 4 rotations = 3,856 classes) before any episodic training. A mini-batch
of images costs one forward pass per image, where an episode of the same size teaches only the
distinctions among its own few classes, so this is the cheapest way to a good Conv-4 on a CPU.

The encoder is a :class:`fewshot.methods.FineTuneBaseline` (Conv-4 + a linear head over all training
classes), trained by the same loop as every method (:func:`fewshot.training.train`: Adam, learning
rate schedule, ``--max-seconds`` budget, exact ``--resume``). Its checkpoint is an ordinary
``finetune`` checkpoint, so it is evaluated as the transfer baseline as it stands, and every method
starts from its Conv-4 with ``fewshot train --init-backbone``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .augment import AffineAugment
from .checkpoints import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .datasets import TensorDataset
from .methods import FineTuneBaseline, PrototypicalNetwork
from .tasks import SeededSampler, Task, TaskSampler
from .training import EvalResult, StepLog, TrainResult, TrainState, evaluate, train

__all__ = ["BatchSampler", "steps_for_epochs", "pretrain_encoder", "VAL_WAY", "VAL_QUERY"]

VAL_WAY, VAL_QUERY = 20, 5  # validation: ProtoNet on the encoder, 20-way 1-shot, 5 queries per class


class BatchSampler(SeededSampler):
    """Mini-batches of ``batch_size`` images drawn uniformly from all items of ``dataset``, as tasks.

    Drop-in for :class:`fewshot.tasks.TaskSampler` in :func:`fewshot.training.train`: each
    :meth:`sample_task` is one mini-batch, as a :class:`fewshot.tasks.Task` with an empty support set
    whose queries are the batch images, ``class_ids`` the distinct dataset classes in the batch and
    ``query_labels`` indices into them (what :meth:`FineTuneBaseline.episode_loss` reads: the loss
    is cross-entropy over all training classes). Items within a batch are distinct; batches are
    independent draws, so the sampler's whole state is one generator (saved with the run, as
    :class:`TaskSampler`'s is). ``augment`` warps every image with draws from that generator.

    Raises:
        ValueError: ``batch_size`` below 1 or above the number of images, or a dataset with fewer
            than 2 classes (nothing to classify).
    """

    def __init__(self, dataset: TensorDataset, batch_size: int, *, seed: int = 0,
                 augment: AffineAugment | None = None):
        labels = torch.as_tensor(list(dataset.get_labels()), dtype=torch.long)
        n_classes = int(labels.unique().numel()) if labels.numel() else 0
        if n_classes < 2:
            raise ValueError(f"pre-training needs at least 2 classes; the training split has {n_classes}")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= labels.numel():
            raise ValueError(f"batch size must be between 1 and the {labels.numel()} training images, got {batch_size}")
        self.dataset, self.labels, self.batch_size, self.augment = dataset, labels, batch_size, augment
        self.generator = torch.Generator().manual_seed(seed)

    def sample_task(self) -> Task:
        g = self.generator
        items = torch.randperm(self.labels.numel(), generator=g)[: self.batch_size]
        class_ids, labels = torch.unique(self.labels[items], return_inverse=True)
        images = self.dataset.get_images(items)
        if self.augment is not None:
            images = self.augment(images, g)
        device = images.device
        return Task(support_images=images[:0], support_labels=labels[:0].to(device), query_images=images,
                    query_labels=labels.to(device), class_ids=class_ids.to(device))



def steps_for_epochs(epochs: float, n_images: int, batch_size: int) -> int:
    """Optimiser steps that show ``epochs`` times as many images as the split holds (at least 1)."""
    if not math.isfinite(epochs) or epochs <= 0:
        raise ValueError(f"--epochs must be a positive number, got {epochs}")
    return max(1, math.ceil(epochs * n_images / batch_size))


def _prototype_validation(val_set: TensorDataset, episodes: int) -> Callable[[FineTuneBaseline], EvalResult]:
    """Accuracy of a ProtoNet that uses the encoder as it is, on the same validation episodes every time."""
    way = min(VAL_WAY, len(val_set.class_names))

    def validate(model: FineTuneBaseline) -> EvalResult:
        sampler = TaskSampler(val_set, way, 1, VAL_QUERY, seed=12345)
        return evaluate(PrototypicalNetwork(model.backbone), (sampler.sample_task() for _ in range(episodes)))

    return validate


def pretrain_encoder(train_set: TensorDataset, out: str | Path, *, batch_size: int = 128, epochs: float = 40.0,
                     lr: float = 1e-3, lr_schedule: str = "cosine", weight_decay: float = 0.0, hidden: int = 64,
                     augment: AffineAugment | None = None, seed: int = 0, val_set: TensorDataset | None = None,
                     val_every: int = 500, val_episodes: int = 200, checkpoint_every: int = 500,
                     max_seconds: float | None = None, resume: bool = False, device: torch.device | str = "cpu",
                     metadata: dict[str, Any] | None = None, on_step: Callable[[StepLog], None] | None = None,
                     ) -> tuple[TrainResult, dict[str, Any]]:
    """Pre-train a Conv-4 as a classifier over every class of ``train_set`` and save it to ``out``.

    The checkpoint (method ``finetune``) holds the Conv-4, the head over all training classes, the
    resumable state (``resume=True`` continues it exactly: same optimiser state, batch stream and
    augmentation draws) and ``metadata`` plus a ``pretrain`` record of the settings. The schedule
    runs over ``epochs`` passes' worth of images or ``max_seconds``, whichever ends first. With a
    ``val_set``, a ProtoNet on the current encoder is validated (20-way 1-shot) every ``val_every``
    steps. Returns the loop's result and the metadata written.

    Raises:
        ValueError: bad settings (see :class:`BatchSampler`, :func:`steps_for_epochs`), ``resume`` of a
            file that is missing, not a pre-training run or a final export (the message says which).
    """
    out = Path(out)
    steps = steps_for_epochs(epochs, len(train_set), batch_size)
    config = TrainConfig(episodes=steps, meta_lr=lr, lr_schedule=lr_schedule, weight_decay=weight_decay,
                         eval_every=val_every if val_set is not None else 0, eval_tasks=val_episodes,
                         checkpoint_every=checkpoint_every, seed=seed)
    record = {"batch_size": batch_size, "epochs": epochs, "lr": lr, "lr_schedule": lr_schedule,
              "weight_decay": weight_decay, "n_classes": len(train_set.class_names), "n_images": len(train_set),
              "augment": augment.to_dict() if augment is not None else None}
    state: TrainState | None = None
    if resume:
        if not out.exists():
            raise ValueError(f"--resume: {out} does not exist; run without --resume to start a new run")
        model, info = load_checkpoint(out, device, expect_method="finetune")
        if info.train_state is None:
            raise ValueError(f"--resume: {out} holds no training state (it is a final export); start a new run")
        saved = info.metadata.get("pretrain")
        if not isinstance(saved, dict):
            raise ValueError(f"--resume: {out} is a finetune run of `fewshot train`, not `fewshot pretrain`; "
                             "resume it with `fewshot train --method finetune --resume`")
        if saved.get("n_classes") != record["n_classes"] or bool(saved.get("augment")) != (augment is not None):
            raise ValueError(f"--resume: {out} was pre-trained on {saved.get('n_classes')} classes "
                             f"{'with' if saved.get('augment') else 'without'} --augment; resume it with the same "
                             "protocol, --train-split and --augment, or start a new run")
        state = info.train_state
        given = dict(metadata or {})
        meta = {**info.metadata, **given}
        meta["resumed"] = meta.get("resumed", 0) + 1
        if "command" in info.metadata and "command" in given:  # the run's first command stays; later ones are listed
            meta["command"] = info.metadata["command"]
            meta["resumed_with"] = [*info.metadata.get("resumed_with", []), given["command"]]
    else:
        torch.manual_seed(seed)
        shape = train_set.image_shape
        model = FineTuneBaseline(len(train_set.class_names), in_channels=shape[0], hidden=hidden,
                                 feature_dim=hidden * (shape[1] // 16) * (shape[2] // 16)).to(device)
        meta = dict(metadata or {})
    meta["pretrain"] = record
    meta["train_config"] = {k: getattr(config, k) for k in ("episodes", "meta_lr", "lr_schedule", "weight_decay",
                                                             "eval_every", "eval_tasks", "checkpoint_every", "seed")}
    sampler = BatchSampler(train_set.to(device), batch_size, seed=seed, augment=augment)
    validate = _prototype_validation(val_set.to(device), val_episodes) if val_set is not None else None

    seconds_before, seconds_now = float(meta.get("train_seconds", 0.0)), [0.0]
    cpu_before, cpu_start = float(meta.get("cpu_seconds", 0.0)), time.process_time()

    def step_done(log: StepLog) -> None:
        seconds_now[0] = log.seconds
        if on_step is not None:
            on_step(log)

    def on_checkpoint(ts: TrainState) -> None:
        vals = [h for h in ts.history if "val_accuracy" in h]
        if vals:
            meta["val_accuracy"], meta["val_ci95"] = vals[-1]["val_accuracy"], vals[-1]["val_ci95"]
        meta["steps_done"] = ts.step
        meta["epochs_done"] = round(ts.step * batch_size / len(train_set), 3)
        meta["train_seconds"] = round(seconds_before + seconds_now[0], 1)  # wall time, all calls together
        # CPU time of this process (all its threads), all calls together: on a shared machine the honest cost
        meta["cpu_seconds"] = round(cpu_before + time.process_time() - cpu_start, 1)
        save_checkpoint(out, model, method="finetune", metadata=meta, train_state=ts)

    result = train(model, sampler, config, on_step=step_done, validate=validate,  # type: ignore[arg-type]
                   on_checkpoint=on_checkpoint, state=state, max_seconds=max_seconds)
    return result, meta
