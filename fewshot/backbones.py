"""The Conv-4 backbone of Vinyals et al. 2016, Snell et al. 2017 and Finn et al. 2017."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["normalize_with", "EpisodeBatchNorm2d", "ConvBlock", "Conv4", "conv4", "feature_dim"]


def normalize_with(x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """BatchNorm of ``x (B, C, H, W)`` with given per-channel statistics, differentiable in all of them.

    (``F.batch_norm`` in eval mode refuses gradients through the statistics.)
    """
    scale = weight * torch.rsqrt(var + eps)  # (C,)
    return x * scale[:, None, None] + (bias - mean * scale)[:, None, None]


class EpisodeBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that can take its batch statistics from the first ``stats_from`` items only.

    ``stats_from=None`` is plain BatchNorm. With ``stats_from=n`` (train mode or no running stats),
    the mean and variance come from ``x[:n]`` and are applied to all of ``x``: this lets MAML
    normalise queries with the support set's statistics, so each query's answer does not depend on
    the other queries in the batch.
    """

    def forward(self, x: Tensor, stats_from: int | None = None) -> Tensor:  # type: ignore[override]
        uses_batch_stats = self.training or not self.track_running_stats
        if stats_from is None or not uses_batch_stats:
            return super().forward(x)
        ref = x[:stats_from]
        mean = ref.mean(dim=(0, 2, 3))
        var = ref.var(dim=(0, 2, 3), unbiased=False)
        return normalize_with(x, mean, var, self.weight, self.bias, self.eps)


class ConvBlock(nn.Module):
    """conv3x3 (padding 1) -> BatchNorm -> ReLU -> maxpool 2."""

    def __init__(self, in_channels: int, out_channels: int, *, track_running_stats: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = EpisodeBatchNorm2d(out_channels, track_running_stats=track_running_stats)

    def forward(self, x: Tensor, stats_from: int | None = None) -> Tensor:
        return F.max_pool2d(F.relu(self.norm(self.conv(x), stats_from)), 2)


class Conv4(nn.Module):
    """Four :class:`ConvBlock` then flatten: ``(B, C, H, W) -> (B, hidden * (H//16) * (W//16))``.

    64 features for 1x28x28 inputs, 1600 for 3x84x84. MAML uses ``track_running_stats=False``
    (transductive batch statistics, as in Finn et al.), so a train-mode call never changes state.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, *, track_running_stats: bool = True):
        super().__init__()
        self.in_channels, self.hidden = in_channels, hidden
        self.blocks = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else hidden, hidden, track_running_stats=track_running_stats)
            for i in range(4)
        )

    def forward(self, x: Tensor, stats_from: int | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, stats_from)
        return x.flatten(1)


def conv4(in_channels: int = 1, hidden: int = 64, *, track_running_stats: bool = True) -> Conv4:
    """Build the Conv-4 backbone (see :class:`Conv4`)."""
    return Conv4(in_channels, hidden, track_running_stats=track_running_stats)


def feature_dim(backbone: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Output width of ``backbone`` for one input of ``input_shape`` (C, H, W), found by a dry run."""
    param = next(backbone.parameters())
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out: Tensor = backbone(torch.zeros(2, *input_shape, dtype=param.dtype, device=param.device))
    backbone.train(was_training)
    return int(out.reshape(2, -1).shape[1])
