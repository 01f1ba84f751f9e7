"""Starting one model from another's encoder: the weights of a trained Conv-4 copied into a new model."""

from __future__ import annotations

import torch

from .methods.base import FewShotClassifier

__all__ = ["copy_backbone"]


def copy_backbone(source: FewShotClassifier, target: FewShotClassifier) -> None:
    """Copy ``source``'s encoder weights into ``target``'s (``train --init-backbone``), and the BatchNorm running
    statistics where ``target`` keeps them too (a MAML with ``batch_norm="running"`` does).

    Raises:
        ValueError: the two encoders differ in shape (another width, another architecture); the message says how.
    """
    wanted = dict(target.backbone.named_parameters())
    given = dict(source.backbone.named_parameters())
    if set(wanted) != set(given) or any(wanted[k].shape != given[k].shape for k in wanted):
        def describe(params: dict[str, torch.Tensor]) -> str:
            first = next(iter(params.values()), None)  # Conv-4's first convolution: (filters, channels, 3, 3)
            if first is None or first.ndim != 4 or len(params) != len(wanted):
                return f"another architecture ({len(params)} parameter tensors)"
            return f"Conv-4, {first.shape[0]} filters, {first.shape[1]} input channel(s)"
        raise ValueError(f"that checkpoint's backbone ({describe(given)}) does not fit this model's "
                         f"({describe(wanted)}); use an encoder trained with the same --hidden and image channels")
    with torch.no_grad():
        for name, param in wanted.items():
            param.copy_(given[name])
        target_buffers = dict(target.backbone.named_buffers())
        for name, buf in source.backbone.named_buffers():
            if name in target_buffers and target_buffers[name].shape == buf.shape:
                target_buffers[name].copy_(buf)
