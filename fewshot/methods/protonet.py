"""Prototypical Networks (Snell, Swersky & Zemel 2017, arXiv:1703.05175)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import conv4
from .base import FewShotClassifier

__all__ = ["PrototypicalNetwork", "compute_prototypes"]


def compute_prototypes(features: Tensor, labels: Tensor, n_way: int | None = None) -> Tensor:
    """Class means ``(n_way, D)`` of ``features (N, D)`` grouped by ``labels (N,)``."""
    n_way = n_way or int(labels.max()) + 1
    one_hot = F.one_hot(labels.long(), n_way).to(features.dtype)  # (N, n_way)
    return (one_hot.T @ features) / one_hot.sum(0).unsqueeze(1)


class PrototypicalNetwork(FewShotClassifier):
    """Prototypical Networks (Snell et al. 2017, arXiv:1703.05175).

    Each class is represented by the mean embedding of its support examples (its prototype); a
    query's logits are its negative **squared** Euclidean distances to the prototypes, as in the
    paper (or scaled cosine similarities with ``distance="cosine"``).

    Args:
        backbone: embedding network; default Conv-4 with ``hidden`` filters.
        distance: ``"euclidean"`` (squared) or ``"cosine"``.
        cosine_scale: temperature multiplying cosine similarities (cosine only).
    """

    def __init__(self, backbone: nn.Module | None = None, *, in_channels: int = 1, hidden: int = 64,
                 distance: str = "euclidean", cosine_scale: float = 10.0):
        super().__init__()
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.backbone = backbone if backbone is not None else conv4(in_channels, hidden)
        self.distance, self.cosine_scale = distance, cosine_scale
        self.config = {"in_channels": in_channels, "hidden": hidden, "distance": distance, "cosine_scale": cosine_scale}
        self.prototypes: Tensor | None = None

    def process_support_set(self, support_images: Tensor, support_labels: Tensor) -> None:
        n_way = self.check_labels(support_labels)
        self.prototypes = compute_prototypes(self.backbone(support_images).flatten(1), support_labels, n_way)
        self._support_ready = True

    def logits_from_features(self, query_features: Tensor) -> Tensor:
        assert self.prototypes is not None
        if self.distance == "cosine":
            return self.cosine_scale * F.normalize(query_features, dim=1) @ F.normalize(self.prototypes, dim=1).T
        # ||q - p||^2 expanded; exact up to float rounding and much cheaper than cdist's backward.
        q2 = query_features.pow(2).sum(1, keepdim=True)  # (Q, 1)
        p2 = self.prototypes.pow(2).sum(1).unsqueeze(0)  # (1, n_way)
        return -(q2 - 2 * query_features @ self.prototypes.T + p2)

    def forward(self, query_images: Tensor) -> Tensor:
        self._require_support()
        return self.logits_from_features(self.backbone(query_images).flatten(1))

    def explain(self, query_images: Tensor) -> dict[str, Tensor]:
        """Distances of each query to each prototype, for the app's "inside the method" view."""
        logits = self(query_images)
        return {"distances": -logits if self.distance == "euclidean" else 1 - logits / self.cosine_scale,
                "prototypes": self.prototypes}

    def episode_loss(self, task) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """One backbone pass over support and query together (as in the paper's code), then query CE."""
        n_support = task.support_images.shape[0]
        n_way = self.check_labels(task.support_labels)
        features = self.backbone(torch.cat([task.support_images, task.query_images])).flatten(1)
        self.prototypes = compute_prototypes(features[:n_support], task.support_labels, n_way)
        self._support_ready = True
        logits = self.logits_from_features(features[n_support:])
        return F.cross_entropy(logits, task.query_labels), logits
