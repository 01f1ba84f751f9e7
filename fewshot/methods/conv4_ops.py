"""MAML's Conv-4 (+ linear head) written as plain tensor operations, for speed on a CPU and for batched tasks.

:func:`_conv4_logits` computes what ``functional_call(net, weights, images)`` computes for MAML's own network, without
entering any module (thread-safe, no attribute swapping); :func:`_stacked_forward` runs ``T`` tasks at once as grouped
convolutions. :mod:`fewshot.methods.maml` uses them; tests check both against ``functional_call``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import Conv4, normalize_with

Weights = dict[str, Tensor]


class _Classifier(nn.Module):
    """Backbone + linear head; ``stats_from`` is passed to the BatchNorm layers.

    ``head=None`` (Proto-MAML): the head is built per task, and its ``(weight, bias)`` are passed to
    :meth:`forward` as ``task_head``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear | None):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor, stats_from: int | None = None, task_head: tuple[Tensor, Tensor] | None = None,
                features_only: bool = False) -> Tensor:
        features = self.backbone(x, stats_from) if stats_from is not None else self.backbone(x)
        if features_only:
            return features
        if task_head is not None:
            return F.linear(features, *task_head)
        assert self.head is not None, "a Proto-MAML network needs its task head"
        return self.head(features)


def _direct_conv4(net: nn.Module, weights: Weights) -> list[float] | None:
    """The BatchNorm eps of each block when :func:`_conv4_logits` can run ``net`` with ``weights``, else ``None``.

    That is MAML's own network: a :class:`_Classifier` of a plain :class:`Conv4` (no running statistics,
    hence no buffers) and a linear head, with ``weights`` naming every parameter. Anything else (photo
    mode's backbone, a subclass, partial weights) goes through :func:`functional_call`.
    """
    if type(net) is not _Classifier or type(net.backbone) is not Conv4 or type(net.head) not in (nn.Linear, type(None)):
        return None
    blocks = net.backbone.blocks
    if any(b.conv.padding != (1, 1) or b.conv.stride != (1, 1) for b in blocks):
        return None
    if len({b.norm.running_mean is None for b in blocks}) != 1:
        return None
    if len(weights) != 4 * len(blocks) + 2 or any(f"backbone.blocks.{i}.norm.bias" not in weights for i in range(len(blocks))):
        return None
    return [b.norm.eps for b in blocks]


def _frozen_stats(net: nn.Module) -> list[tuple[Tensor, Tensor]] | None:
    """Per block ``(running_mean, 1/sqrt(running_var + eps))`` of a Conv-4 that keeps running statistics
    (``batch_norm="running"``: BatchNorm is the fixed affine map of the encoder it was initialised from), else ``None``."""
    backbone = getattr(net, "backbone", None)
    if type(backbone) is not Conv4 or backbone.blocks[0].norm.running_mean is None:
        return None
    return [(b.norm.running_mean, torch.rsqrt(b.norm.running_var + b.norm.eps)) for b in backbone.blocks]


def _few_channel_conv(x: Tensor, kernel: Tensor, bias: Tensor) -> Tensor:
    """3x3 convolution (padding 1) of a 1-3 channel ``x`` as one matrix product, returned in ``channels_last``.

    oneDNN runs a convolution with so few input channels in NCHW and slowly (its weight gradient most
    of all), and the 64-channel output would then need converting; ``(B*H*W, 9*C) @ (9*C, out)`` lays
    the result out as NHWC directly, and its gradients (and their gradients) are matrix products too.
    """
    b, c, height, width = x.shape
    cols = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(b * height * width, 9 * c)  # (B*H*W, C*9)
    out = torch.addmm(bias, cols, kernel.reshape(kernel.shape[0], -1).t())  # (B*H*W, out)
    return out.view(b, height, width, -1).permute(0, 3, 1, 2)  # (B, out, H, W), channels_last strides


def _conv4_logits(weights: Weights, images: Tensor, eps: list[float], *, stats_from: int | None = None,
                  stats: list[tuple[Tensor, Tensor]] | None = None,
                  save_stats: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """:func:`_conv4_features` followed by the linear head ``weights["head.weight"], weights["head.bias"]``."""
    h = _conv4_features(weights, images, eps, stats_from=stats_from, stats=stats, save_stats=save_stats)
    return F.linear(h, weights["head.weight"], weights["head.bias"])


def _conv4_features(weights: Weights, images: Tensor, eps: list[float], *, stats_from: int | None = None,
                    stats: list[tuple[Tensor, Tensor]] | None = None,
                    save_stats: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """MAML's Conv-4 + head as plain tensor operations: what ``functional_call(net, weights, ...)`` computes.

    On a CPU everything runs in the ``channels_last`` memory format, where oneDNN's convolutions and
    max-pooling are faster than in NCHW (NCHW max-pooling: ~15x slower here); the first convolution of a
    1-3 channel image is a matrix product (:func:`_few_channel_conv`). No module is entered (no attribute
    swapping, no hooks), which also keeps it thread-safe.

    BatchNorm: batch statistics (``stats_from=None``), those of ``images[:stats_from]``, or given
    ``stats`` (per block ``(mean, invstd)``, e.g. the support set's from ``save_stats``, which collects
    them in batch-statistics mode; no gradient flows through saved statistics).
    """
    channels_last = images.device.type == "cpu"
    h = images
    for i, block_eps in enumerate(eps):
        p = f"backbone.blocks.{i}."
        kernel, bias = weights[p + "conv.weight"], weights[p + "conv.bias"]
        if channels_last and i == 0 and kernel.shape[1] <= 3:
            h = _few_channel_conv(h, kernel, bias)
        else:
            if channels_last:
                kernel = kernel.contiguous(memory_format=torch.channels_last)  # no-op once it is
            h = F.conv2d(h, kernel, bias, padding=1)
        gamma, beta = weights[p + "norm.weight"], weights[p + "norm.bias"]
        if stats is not None:
            mean, invstd = stats[i]
            scale = gamma * invstd
            h = h * scale[:, None, None] + (beta - mean * scale)[:, None, None]
        elif stats_from is not None:
            ref = h[:stats_from]
            h = normalize_with(h, ref.mean((0, 2, 3)), ref.var((0, 2, 3), unbiased=False), gamma, beta, block_eps)
        elif save_stats is not None:
            h, mean, invstd = torch.native_batch_norm(h, gamma, beta, None, None, True, 0.0, block_eps)
            save_stats.append((mean.detach(), invstd.detach()))
        else:
            h = F.batch_norm(h, None, None, gamma, beta, training=True, eps=block_eps)
        h = F.max_pool2d(F.relu(h), 2)
    return h.flatten(1)


def _stacked_forward(weights: Weights, images: Tensor, *, stats_from: int | None = None, n_blocks: int = 4,
                     eps: float = 1e-5) -> Tensor:
    """Conv-4 + head for ``T`` tasks at once: ``weights`` hold a leading task axis, ``images (T, B, C, H, W)``.

    The tasks are laid side by side along the channel axis and every convolution is a grouped
    convolution with ``groups=T``; BatchNorm over ``(B, H, W)`` of each channel then gives exactly
    each task's own batch statistics. No computation mixes two tasks, so gradients of the summed
    loss are the per-task gradients: the result equals a Python loop over tasks, with T times fewer
    kernel launches. Returns logits ``(T, B, n_way)``.
    """
    t, b = images.shape[:2]
    h = images.transpose(0, 1).reshape(b, t * images.shape[2], *images.shape[3:])  # (B, T*C, H, W)
    for i in range(n_blocks):
        w = weights[f"backbone.blocks.{i}.conv.weight"]  # (T, out, in, 3, 3)
        h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), weights[f"backbone.blocks.{i}.conv.bias"].reshape(-1),
                     padding=1, groups=t)
        gamma = weights[f"backbone.blocks.{i}.norm.weight"].reshape(-1)
        beta = weights[f"backbone.blocks.{i}.norm.bias"].reshape(-1)
        if stats_from is None:
            h = F.batch_norm(h, None, None, gamma, beta, training=True, eps=eps)
        else:  # statistics of the first `stats_from` images of each task (its support set)
            ref = h[:stats_from]
            h = normalize_with(h, ref.mean((0, 2, 3)), ref.var((0, 2, 3), unbiased=False), gamma, beta, eps)
        h = F.max_pool2d(F.relu(h), 2)
    hidden = h.shape[1] // t
    features = h.reshape(b, t, hidden, *h.shape[2:]).transpose(0, 1).reshape(t, b, -1)  # (T, B, D) as Conv4 flattens
    return torch.baddbmm(weights["head.bias"].unsqueeze(1), features, weights["head.weight"].transpose(1, 2))


def _stacked_loss(weights: Weights, images: Tensor, labels: Tensor, *,
                  support: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sum over tasks of each task's mean cross-entropy, and the logits ``(T, B, n_way)``.

    With ``support`` given, ``images`` are normalised with the support images' statistics.
    """
    if support is not None:
        n = support.shape[1]
        logits = _stacked_forward(weights, torch.cat([support, images], dim=1), stats_from=n)[:, n:]
    else:
        logits = _stacked_forward(weights, images)
    per_task = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape).mean(1)
    return per_task.sum(), logits
