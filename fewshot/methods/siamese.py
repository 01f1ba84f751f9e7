"""Siamese networks for one-shot recognition (Koch, Zemel & Salakhutdinov 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import conv4
from ..tasks import Task
from .base import FewShotClassifier

__all__ = ["SiameseNetwork"]


class SiameseNetwork(FewShotClassifier):
    """Siamese network (Koch et al. 2015, ICML deep learning workshop).

    Twin embeddings of two images are compared by a learned weighted L1 distance,
    ``logit = w . |f(x1) - f(x2)| + b``, trained with binary cross-entropy on same/different
    pairs. A query is classified by its most similar support example (``aggregate="max"``; the
    paper's nearest-neighbour rule) or by the mean similarity to each class's examples.
    The backbone here is the same Conv-4 as the other methods (Koch et al. used a larger CNN on 105x105).
    """

    def __init__(self, backbone: nn.Module | None = None, *, in_channels: int = 1, hidden: int = 64,
                 aggregate: str = "max", feature_dim: int | None = None):
        super().__init__()
        if aggregate not in ("max", "mean"):
            raise ValueError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        self.backbone = backbone if backbone is not None else conv4(in_channels, hidden)
        dim = feature_dim if feature_dim is not None else hidden
        self.compare = nn.Linear(dim, 1)
        # The head starts as a distance (every weight -1/D, bias 0: the more two embeddings differ, the less alike
        # they are), not at random: an encoder started from another model (train --init-backbone) is then an L1
        # nearest-neighbour classifier from the first step, and its first gradients pull same-class pairs together
        # instead of following a random head's arbitrary signs.
        nn.init.constant_(self.compare.weight, -1.0 / dim)
        nn.init.zeros_(self.compare.bias)
        self.aggregate = aggregate
        self.config = {"in_channels": in_channels, "hidden": hidden, "aggregate": aggregate, "feature_dim": dim}
        self.support_features: Tensor | None = None
        self.support_labels: Tensor | None = None

    def pair_logits(self, features_a: Tensor, features_b: Tensor) -> Tensor:
        """Same-class logits ``(A, B)`` for every pair of rows of ``features_a (A, D)`` and ``features_b (B, D)``."""
        distance = (features_a.unsqueeze(1) - features_b.unsqueeze(0)).abs()  # (A, B, D)
        return self.compare(distance).squeeze(-1)

    def similarity(self, images_a: Tensor, images_b: Tensor) -> Tensor:
        """Probability ``(A, B)`` that each pair shows the same class."""
        both = self.backbone(torch.cat([images_a, images_b])).flatten(1)
        return torch.sigmoid(self.pair_logits(both[: len(images_a)], both[len(images_a):]))

    def process_support_set(self, support_images: Tensor, support_labels: Tensor) -> None:
        self.check_labels(support_labels)
        self.support_features = self.backbone(support_images).flatten(1)
        self.support_labels = support_labels.long()
        self._support_ready = True

    def _class_logits(self, pair: Tensor, labels: Tensor) -> Tensor:
        n_way = int(labels.max()) + 1
        mask = F.one_hot(labels, n_way).T.bool()  # (n_way, S)
        if self.aggregate == "max":
            expanded = pair.unsqueeze(1).expand(-1, n_way, -1)  # (Q, n_way, S)
            return expanded.masked_fill(~mask.unsqueeze(0), float("-inf")).amax(dim=2)
        return (pair @ mask.T.to(pair.dtype)) / mask.sum(1).to(pair.dtype)

    def forward(self, query_images: Tensor) -> Tensor:
        self._require_support()
        assert self.support_features is not None and self.support_labels is not None
        pair = self.pair_logits(self.backbone(query_images).flatten(1), self.support_features)  # (Q, S)
        return self._class_logits(pair, self.support_labels)

    def episode_loss(self, task: Task) -> tuple[Tensor, Tensor]:
        """Balanced binary cross-entropy over every (query, support) pair of the task."""
        self.check_labels(task.support_labels)
        n_support = task.support_images.shape[0]
        features = self.backbone(torch.cat([task.support_images, task.query_images])).flatten(1)
        pair = self.pair_logits(features[n_support:], features[:n_support])  # (Q, S)
        same = (task.query_labels.unsqueeze(1) == task.support_labels.unsqueeze(0)).to(pair.dtype)
        n_pos = same.sum().clamp_min(1)
        pos_weight = (same.numel() - n_pos) / n_pos  # as many "same" as "different" in effect
        loss = F.binary_cross_entropy_with_logits(pair, same, pos_weight=pos_weight)
        self.support_features, self.support_labels = features[:n_support], task.support_labels.long()
        self._support_ready = True
        return loss, self._class_logits(pair, task.support_labels.long())

    def explain(self, query_images: Tensor) -> dict[str, Tensor]:
        self._require_support()
        assert self.support_features is not None
        pair = self.pair_logits(self.backbone(query_images).flatten(1), self.support_features)
        return {"similarity": torch.sigmoid(pair)}
