"""Meta-training you can watch: a small run of :func:`fewshot.training.train` in a background thread.

The lab's "Watch meta-training" page starts a :class:`LiveRun` (ProtoNet, MAML or first-order MAML, from
scratch or from a shipped encoder's backbone, on Omniglot's background alphabets) and polls
:meth:`LiveRun.snapshot` for what to draw: the training loss of every episode, the accuracy on a fixed set of
tasks of never-seen evaluation characters every ``eval_every`` episodes (:func:`fewshot.training.evaluate`),
and a PCA (or t-SNE) map of a fixed set of evaluation characters' embeddings redrawn at the same moments.

Bounds, so that a run cannot take the app down with it: every setting has a range (:data:`LIMITS`), a run
stops at ``max_seconds``, torch runs it on at most ``threads`` threads, one owner (a browser session) has one
run at a time and at most :data:`MAX_RUNS` run at once in the process (:class:`RunLimitError` says so).
A run that is stopped or finishes leaves a complete model (:attr:`LiveRun.result`: the weights after the
last whole optimiser step, in memory only, never written over a shipped checkpoint); a run that fails
leaves none.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoints import load_checkpoint
from .config import TrainConfig
from .datasets import TensorDataset
from .embedding import extract_features, pca_2d, tsne_2d
from .methods import FewShotClassifier, build_model
from .omniglot import load_omniglot
from .tasks import Task, TaskSampler
from .training import EvalResult, StepLog, evaluate, train

__all__ = ["LIVE_METHODS", "MAP_PROJECTIONS", "LIMITS", "MAX_RUNS", "LiveConfig", "LiveSnapshot", "LiveResult",
           "LiveRun", "RunLimitError", "load_live_data", "build_live_model", "active_runs"]

LIVE_METHODS = ("protonet", "maml", "fomaml")
MAP_PROJECTIONS = ("pca", "tsne")
# name -> (lowest, highest): the page's widgets use the same ranges
LIMITS: dict[str, tuple[float, float]] = {
    "n_way": (2, 20), "n_shot": (1, 5), "n_query": (1, 10), "episodes": (1, 2000), "meta_lr": (1e-5, 1e-1),
    "eval_every": (5, 500), "eval_tasks": (1, 100), "map_classes": (2, 20), "map_per_class": (1, 20),
    "max_seconds": (1, 900), "threads": (1, 4),
}
_REAL_SETTINGS = ("meta_lr", "max_seconds")  # the others are whole numbers
# Runs at once in this process (each holds up to `threads` CPU threads); FEWSHOT_LIVE_MAX_RUNS overrides.
MAX_RUNS = max(1, int(os.environ.get("FEWSHOT_LIVE_MAX_RUNS", "2")))

_registry_lock = threading.Lock()
_active: dict[int, "LiveRun"] = {}


class RunLimitError(RuntimeError):
    """A run cannot start now: the process is full, or this owner has one going; the message says which."""


class _Stopped(Exception):
    """Raised from the step callback when a stop was asked; the model is then at a whole optimiser step."""


@dataclass(frozen=True)
class LiveConfig:
    """Settings of one live run; every number is checked against :data:`LIMITS`.

    ``init`` is ``None`` (random weights) or the path of a checkpoint whose Conv-4 backbone starts the run
    (as ``fewshot train --init-backbone``). ``proto_head`` (MAML and first-order MAML): Proto-MAML, each task's
    head built from its support prototypes (``MAML(proto_head=True)``). ``map_projection``: ``"pca"`` (cheap,
    its axes kept from flipping between redraws) or ``"tsne"`` (perplexity 10, seeded, from a PCA start).
    """

    method: str = "protonet"
    n_way: int = 5
    n_shot: int = 1
    n_query: int = 5
    episodes: int = 300
    meta_lr: float = 1e-3
    init: str | None = None
    eval_every: int = 25
    eval_tasks: int = 20
    map_classes: int = 10
    map_per_class: int = 6
    max_seconds: float = 300.0
    threads: int = 1
    seed: int = 0
    proto_head: bool = False
    map_projection: str = "pca"

    def __post_init__(self) -> None:
        if self.method not in LIVE_METHODS:
            raise ValueError(f"method must be one of {', '.join(LIVE_METHODS)}, got {self.method!r}")
        if self.map_projection not in MAP_PROJECTIONS:
            raise ValueError(f"map_projection must be one of {', '.join(MAP_PROJECTIONS)}, got {self.map_projection!r}")
        if self.proto_head and self.method not in ("maml", "fomaml"):
            raise ValueError(f"proto_head (Proto-MAML) applies to maml and fomaml, not {self.method}")
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            whole = name not in _REAL_SETTINGS
            kinds = (int,) if whole else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
                raise ValueError(f"{name} must be a {'whole ' if whole else ''}number from {low:g} to {high:g}, "
                                 f"got {value!r}")


@dataclass(frozen=True)
class LiveSnapshot:
    """What the run has to show, copied out under a lock (safe to read from any thread).

    ``state``: ``"starting"``, ``"running"``, ``"stopped"`` (asked to), ``"finished"`` or ``"failed"``
    (``message`` says why). ``losses`` and ``train_accuracies``: ``(step, value)`` per episode;
    ``eval_accuracies``: ``(step, accuracy, ci95)`` on the fixed evaluation tasks, step 0 being the start;
    ``map_xy (P, 2)``: the latest PCA map of the fixed evaluation characters (``map_labels (P,)`` indexes
    ``map_names``), drawn at ``map_step``.
    """

    state: str
    step: int
    total_steps: int
    seconds: float
    losses: tuple[tuple[int, float], ...] = ()
    train_accuracies: tuple[tuple[int, float], ...] = ()
    eval_accuracies: tuple[tuple[int, float, float], ...] = ()
    map_xy: np.ndarray | None = None
    map_labels: np.ndarray | None = None
    map_names: tuple[str, ...] = ()
    map_step: int | None = None
    message: str | None = None
    threads: int | None = None

    @property
    def done(self) -> bool:
        return self.state in ("stopped", "finished", "failed")


@dataclass(frozen=True)
class LiveResult:
    """The trained model of a run that stopped or finished: complete, in eval mode, in memory only.

    ``metadata`` has the keys a shipped checkpoint's metadata has that the lab reads (``method``,
    ``protocol``, ``image_size``, ``n_way``, ``n_shot``, ...), plus ``live_run``: the settings and the outcome.
    """

    model: FewShotClassifier
    method: str
    steps: int
    metadata: dict = field(default_factory=dict)


def load_live_data(data_dir: str | Path | None = None, image_size: int = 28) -> tuple[TensorDataset, TensorDataset]:
    """Omniglot for live runs, lake protocol: training on the background alphabets (the ``train`` split, no
    rotation classes), evaluation on the 20 evaluation alphabets (``test``: characters never seen in training)."""
    train_set = load_omniglot("lake", "train", data_dir=data_dir, image_size=image_size, rotations=False)
    return train_set, load_omniglot("lake", "test", data_dir=data_dir, image_size=image_size)


def build_live_model(config: LiveConfig) -> FewShotClassifier:
    """A fresh model for ``config`` (seeded), its backbone copied from ``config.init`` when given.

    Raises:
        ValueError: ``config.init`` cannot be read or its backbone is not a 64-filter Conv-4.
    """
    from .checkpoints import CheckpointError
    from .encoders import copy_backbone  # what train --init-backbone does

    torch.manual_seed(config.seed)
    kwargs: dict = {"hidden": 64}
    if config.method in ("maml", "fomaml"):
        kwargs.update(n_way=config.n_way, proto_head=config.proto_head)
    model = build_model(config.method, **kwargs)
    if config.init is not None:
        try:
            source, _ = load_checkpoint(config.init, "cpu")
            copy_backbone(source, model)
        except (CheckpointError, ValueError, OSError) as exc:
            raise ValueError(f"cannot start from {config.init}: {exc}") from exc
    return model


def _sign_aligned(xy: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """PCA axes have no sign: flip each to agree with the previous map, so redraws do not mirror at random."""
    if previous is None or previous.shape != xy.shape:
        return xy
    signs = np.where((xy * previous).sum(0) < 0, -1.0, 1.0).astype(xy.dtype)
    return xy * signs


def active_runs() -> int:
    """Runs going now in this process."""
    with _registry_lock:
        return len(_active)


class LiveRun:
    """One background meta-training run; see the module docstring.

    Args:
        config: the settings.
        train_set: where training tasks come from (read only; may be shared with other runs and sessions).
        eval_set: classes never seen in training: the evaluation tasks and the map's characters.
        owner: who started it (a session id): one run per owner at a time.

    Raises:
        ValueError: the datasets cannot give ``config``'s tasks (too few classes or images).
    """

    def __init__(self, config: LiveConfig, train_set: TensorDataset, eval_set: TensorDataset, *,
                 owner: str | None = None):
        self.config, self.owner = config, owner
        self._train_sampler = TaskSampler(train_set, config.n_way, config.n_shot, config.n_query, seed=config.seed)
        eval_sampler = TaskSampler(eval_set, config.n_way, config.n_shot, config.n_query, seed=config.seed + 1)
        self._eval_tasks: list[Task] = [eval_sampler.sample_task() for _ in range(config.eval_tasks)]
        self._map_images, self._map_labels, self._map_names = self._map_set(eval_set)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state, self._step, self._seconds, self._message, self._threads = "starting", 0, 0.0, None, None
        self._losses: list[tuple[int, float]] = []
        self._train_acc: list[tuple[int, float]] = []
        self._eval: list[tuple[int, float, float]] = []
        self._map_xy: np.ndarray | None = None
        self._map_step: int | None = None
        self._result: LiveResult | None = None

    def _map_set(self, eval_set: TensorDataset) -> tuple[torch.Tensor, np.ndarray, tuple[str, ...]]:
        """``map_classes`` evaluation characters x ``map_per_class`` drawings, drawn once with the seed."""
        c = self.config
        sampler = TaskSampler(eval_set, c.map_classes, c.map_per_class, 0, seed=c.seed + 2)
        indices, class_ids = sampler.sample_indices()  # (classes, per_class), (classes,)
        images = eval_set.get_images(indices.reshape(-1))  # (classes*per_class, C, H, W)
        labels = np.repeat(np.arange(c.map_classes), c.map_per_class)
        names = tuple(eval_set.class_names[int(i)] for i in class_ids)
        return images, labels, names

    # ---- control (any thread) ----------------------------------------------------------------------------

    def start(self) -> "LiveRun":
        """Register the run and start its thread.

        Raises:
            RunLimitError: :data:`MAX_RUNS` runs are going, or this owner has one going.
        """
        with _registry_lock:
            if self.owner is not None and any(run.owner == self.owner for run in _active.values()):
                raise RunLimitError("a meta-training run of yours is still going; stop it (or let it finish) "
                                    "before starting another")
            if len(_active) >= MAX_RUNS:
                raise RunLimitError(f"the lab is full: {len(_active)} meta-training runs are going (at most "
                                    f"{MAX_RUNS} at once, to keep the app quick for everyone); try again when "
                                    "one has finished")
            self._thread = threading.Thread(target=self._run, name=f"live-run-{self.config.method}", daemon=True)
            _active[id(self)] = self
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the run to stop after the current episode (returns at once; see :meth:`join`)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; ``True`` when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def snapshot(self) -> LiveSnapshot:
        with self._lock:
            return LiveSnapshot(
                self._state, self._step, self.config.episodes, self._seconds, tuple(self._losses),
                tuple(self._train_acc), tuple(self._eval),
                None if self._map_xy is None else self._map_xy.copy(), self._map_labels.copy(), self._map_names,
                self._map_step, self._message, self._threads)

    @property
    def result(self) -> LiveResult | None:
        """The trained model once the run has stopped or finished; ``None`` while it runs or after a failure."""
        with self._lock:
            return self._result

    # ---- the worker thread -------------------------------------------------------------------------------

    def _observe(self, model: FewShotClassifier, step: int) -> EvalResult:
        """Accuracy on the fixed evaluation tasks and the map, recorded at ``step``."""
        result = evaluate(model, self._eval_tasks)
        features = extract_features(model.backbone, self._map_images).numpy()
        if self.config.map_projection == "tsne":
            xy = tsne_2d(features, perplexity=10.0, seed=self.config.seed)
        else:
            xy = _sign_aligned(pca_2d(features), self._map_xy)
        with self._lock:
            self._eval.append((step, result.accuracy, result.ci95))
            self._map_xy, self._map_step = xy, step
        return result

    def _run(self) -> None:
        c = self.config
        t0 = time.perf_counter()
        model: FewShotClassifier | None = None
        steps = 0
        try:
            if torch.get_num_threads() > c.threads:
                torch.set_num_threads(c.threads)  # process-wide in torch; the lab itself runs on one thread
            with self._lock:
                self._threads = torch.get_num_threads()
            model = build_live_model(c)
            self._observe(model, 0)
            with self._lock:
                self._state = "running"

            def on_step(log: StepLog) -> None:
                nonlocal steps
                steps = log.step
                with self._lock:
                    self._step, self._seconds = log.step, time.perf_counter() - t0
                    self._losses.append((log.step, log.loss))
                    self._train_acc.append((log.step, log.accuracy))
                if self._stop.is_set():
                    raise _Stopped

            def validate(m: FewShotClassifier) -> EvalResult:
                return self._observe(m, steps + 1)  # called after step `steps + 1`'s optimiser step

            config = TrainConfig(episodes=c.episodes, meta_lr=c.meta_lr, eval_every=c.eval_every,
                                 eval_tasks=c.eval_tasks, checkpoint_every=max(c.episodes, 1), seed=c.seed)
            outcome = "finished"
            try:
                result = train(model, self._train_sampler, config, on_step=on_step, validate=validate,
                               max_seconds=c.max_seconds, log_every=max(c.episodes, 1))
                steps = result.steps
                if result.stopped_early:
                    outcome = "stopped"
            except _Stopped:
                outcome = "stopped"
            model.eval()
            if not self._eval or self._eval[-1][0] != steps:
                self._observe(model, steps)
            with self._lock:
                final = self._eval[-1]
                self._result = LiveResult(model, c.method, steps, self._metadata(steps, outcome, final))
                self._state, self._step, self._seconds = outcome, steps, time.perf_counter() - t0
                if outcome == "stopped" and steps < c.episodes and not self._stop.is_set():
                    self._message = f"stopped at the time limit ({c.max_seconds:g} s) after {steps} episodes"
        except Exception as exc:  # reported in the snapshot; the run leaves no model
            with self._lock:
                self._state, self._result = "failed", None
                self._message = f"{type(exc).__name__}: {exc}"
                self._seconds = time.perf_counter() - t0
        finally:
            with _registry_lock:
                _active.pop(id(self), None)

    def _metadata(self, steps: int, outcome: str, final: tuple[int, float, float]) -> dict:
        c = self.config
        return {"method": c.method, "protocol": "lake", "dataset": "omniglot", "image_size": 28, "in_channels": 1,
                "preprocess": {"center": False}, "n_way": c.n_way, "n_shot": c.n_shot, "n_query": c.n_query,
                "steps_done": steps,
                "live_run": {"config": asdict(c), "outcome": outcome, "eval_accuracy": final[1],
                             "eval_ci95": final[2], "eval_step": final[0]}}
