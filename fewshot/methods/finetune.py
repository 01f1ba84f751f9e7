"""Transfer-learning baseline: pre-train a classifier on all training classes, fine-tune on each support set.

This is the "Baseline" of Chen, Liu, Kira, Wang & Huang 2019 (arXiv:1904.04232), "A Closer Look at
Few-shot Classification", the non-meta-learning comparison point.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from ..functional import functional_call  # thread-safe: cached models are shared by sessions

from ..backbones import conv4
from ..tasks import Task
from .base import FewShotClassifier

__all__ = ["FineTuneBaseline"]


class FineTuneBaseline(FewShotClassifier):
    """Transfer-learning baseline (Chen et al. 2019, arXiv:1904.04232).

    Pre-training is ordinary supervised classification of every training class with a linear head
    (each training episode is just a batch of images with their dataset class ids). At test time
    the pre-training head is dropped and a new ``n_way`` linear head is fitted to the support set's
    features with ``finetune_steps`` steps of Adam; with ``finetune_backbone=True`` the backbone is
    fine-tuned too (on a copy of its weights: the model itself is never changed).

    Args:
        n_classes: number of pre-training classes (the training split's class count).
    """

    def __init__(self, n_classes: int = 964, *, in_channels: int = 1, hidden: int = 64, finetune_steps: int = 100,
                 finetune_lr: float = 0.01, finetune_backbone: bool = False, feature_dim: int | None = None,
                 backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else conv4(in_channels, hidden)
        dim = feature_dim if feature_dim is not None else hidden
        self.classifier = nn.Linear(dim, n_classes)
        self.finetune_steps, self.finetune_lr, self.finetune_backbone = finetune_steps, finetune_lr, finetune_backbone
        self.config = {"n_classes": n_classes, "in_channels": in_channels, "hidden": hidden,
                       "finetune_steps": finetune_steps, "finetune_lr": finetune_lr,
                       "finetune_backbone": finetune_backbone, "feature_dim": dim}
        self.head: tuple[Tensor, Tensor] | None = None
        self.backbone_weights: dict[str, Tensor] | None = None

    def episode_loss(self, task: Task) -> tuple[Tensor, Tensor]:
        """Pre-training: cross-entropy over all training classes, using the dataset class ids."""
        n_classes = self.classifier.out_features
        if int(task.class_ids.max()) >= n_classes:
            raise ValueError(f"class id {int(task.class_ids.max())} is outside the {n_classes}-class pre-training head; "
                             "build the model with n_classes = the training split's class count")
        images = torch.cat([task.support_images, task.query_images])
        targets = task.class_ids[torch.cat([task.support_labels, task.query_labels])]
        logits = self.classifier(self.backbone(images).flatten(1))
        loss = F.cross_entropy(logits, targets)
        # Report episode accuracy as the restriction of the global head to the task's classes.
        query_logits = logits[len(task.support_labels):][:, task.class_ids]
        return loss, query_logits

    def _features(self, images: Tensor, weights: dict[str, Tensor] | None) -> Tensor:
        if weights is None:
            return self.backbone(images).flatten(1)
        return functional_call(self.backbone, weights, (images,)).flatten(1)

    def process_support_set(self, support_images: Tensor, support_labels: Tensor) -> None:
        n_way = self.check_labels(support_labels)
        dim = self.classifier.in_features
        param = self.classifier.weight
        weight = torch.zeros(n_way, dim, device=param.device, dtype=param.dtype, requires_grad=True)
        bias = torch.zeros(n_way, device=param.device, dtype=param.dtype, requires_grad=True)
        trainable = [weight, bias]
        backbone_weights = None
        if self.finetune_backbone:
            backbone_weights = {k: v.detach().clone().requires_grad_() for k, v in self.backbone.named_parameters()}
            backbone_weights.update({k: v.clone() for k, v in self.backbone.named_buffers()})
            trainable += [v for v in backbone_weights.values() if v.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=self.finetune_lr)
        with torch.enable_grad():
            # Cloned buffers: a train-mode pass must not update the model's BatchNorm running statistics.
            buffers = {k: v.clone() for k, v in self.backbone.named_buffers()}
            fixed = None if self.finetune_backbone else self._features(support_images, buffers).detach()
            for _ in range(self.finetune_steps):
                features = fixed if fixed is not None else self._features(support_images, backbone_weights)
                loss = F.cross_entropy(F.linear(features, weight, bias), support_labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.head = (weight.detach(), bias.detach())
        self.backbone_weights = None if backbone_weights is None else {k: v.detach() for k, v in backbone_weights.items()}
        self._support_ready = True

    def forward(self, query_images: Tensor) -> Tensor:
        self._require_support()
        assert self.head is not None
        return F.linear(self._features(query_images, self.backbone_weights), *self.head)

    def explain(self, query_images: Tensor) -> dict[str, Tensor]:
        """The fitted head at work: ``scores (Q, n_way)``, its score of each class (the logits), and
        ``feature_norms (Q,)``, the length of each query's feature vector the head reads."""
        self._require_support()
        assert self.head is not None
        features = self._features(query_images, self.backbone_weights)
        scores = F.linear(features, *self.head)
        return {"probabilities": torch.softmax(scores.float(), dim=1), "scores": scores,
                "feature_norms": features.norm(dim=1)}
