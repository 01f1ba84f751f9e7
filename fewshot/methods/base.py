"""The one interface every method implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tasks import Task

__all__ = ["FewShotClassifier"]


class FewShotClassifier(nn.Module, ABC):
    """Adapt to a labelled support set, then score query images.

    Every method returns logits of shape ``(n_query, n_way)`` that can go straight into
    ``F.cross_entropy``; labels are episode labels in ``[0, n_way)``. Callers apply softmax
    themselves. Method-specific training objectives live in ``episode_loss`` overrides; the training
    loop is the same for all.

    Subclasses set ``self.backbone`` (the embedding network, used by :func:`fewshot.embedding.extract_features`)
    and record their constructor arguments in ``self.config`` (a JSON-able dict) so checkpoints can
    rebuild them.
    """

    backbone: nn.Module
    config: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self._support_ready = False

    @abstractmethod
    def process_support_set(self, support_images: Tensor, support_labels: Tensor) -> None:
        """Store whatever the method needs from the support set ``(n_way*n_shot, C, H, W)``."""

    @abstractmethod
    def forward(self, query_images: Tensor) -> Tensor:
        """Logits ``(n_query, n_way)`` for ``query_images`` given the last processed support set."""

    def _require_support(self) -> None:
        if not self._support_ready:
            raise RuntimeError(
                f"{type(self).__name__}: call process_support_set(support_images, support_labels) before forward()"
            )

    def episode_loss(self, task: Task) -> tuple[Tensor, Tensor]:
        """Training objective of one task: ``(loss, query_logits)``. Default: query cross-entropy."""
        self.process_support_set(task.support_images, task.support_labels)
        logits = self(task.query_images)
        return F.cross_entropy(logits, task.query_labels), logits

    def explain(self, query_images: Tensor) -> dict[str, Tensor]:
        """What the method computed to answer ``query_images``, by name, after :meth:`process_support_set`.

        Each method adds its own quantities (distances to prototypes, attention over the support set, memory
        reads, ...); every entry has one row per query unless its docstring says otherwise. The default is the
        answer itself: ``{"probabilities": (n_query, n_way)}``.
        """
        return {"probabilities": torch.softmax(self(query_images).float(), dim=1)}

    @property
    def fixed_way(self) -> int | None:
        """The most classes a task may have for this model (a fixed output head), or ``None`` for any number."""
        return None

    def on_train_progress(self, progress: float) -> None:
        """Called by the training loop before each step with the fraction of the run done (0 to 1; a time budget
        counts). Default: nothing. MAML uses it to anneal MAML++'s multi-step loss."""

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Backbone features ``(B, D)`` of a batch (no adaptation)."""
        return self.backbone(images).flatten(1)

    @staticmethod
    def check_labels(support_labels: Tensor, n_way: int | None = None) -> int:
        """Validate episode labels and return ``n_way``.

        Raises:
            ValueError: labels are not ``0..n_way-1`` each present at least once, or exceed a fixed head.
        """
        if support_labels.numel() == 0:
            raise ValueError("the support set is empty; give at least one example per class")
        found = int(support_labels.max()) + 1
        present = torch.bincount(support_labels.long(), minlength=found)
        if int(support_labels.min()) < 0 or bool((present == 0).any()):
            raise ValueError("support labels must cover 0..n_way-1 with at least one example each")
        if n_way is not None and found > n_way:
            raise ValueError(
                f"this model has a fixed {n_way}-way output head and cannot classify {found} classes; "
                f"use at most {n_way} classes or a checkpoint trained for {found}-way tasks"
            )
        return found
