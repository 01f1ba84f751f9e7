"""The small regression network of Finn et al.'s sine-wave experiment (arXiv:1703.03400, section 5.1).

A fully connected network ``1 -> 40 -> 40 -> 1`` with ReLU. Its forward pass also runs a whole meta-batch of
tasks at once when it is given weights with a leading task axis (``functional_call`` with stacked weights, as
MAML's inner loop does): every layer is ``h @ W^T + b`` with broadcasting, so task ``t``'s outputs depend on
task ``t``'s weights only and the gradient of a sum of per-task losses is each task's own gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MLPRegressor"]


class MLPRegressor(nn.Module):
    """Scalar-to-scalar MLP: ``hidden`` ReLU layers, linear output.

    Args:
        hidden: widths of the hidden layers; the paper uses ``(40, 40)``.

    Raises:
        ValueError: no hidden layer, or a width below 1.
    """

    def __init__(self, hidden: tuple[int, ...] | list[int] = (40, 40)) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must list one or more positive layer widths, got {hidden}")
        widths = (1, *hidden, 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.config: dict[str, Any] = {"hidden": list(hidden)}

    def forward(self, x: Tensor) -> Tensor:
        """``x (N, 1) -> (N, 1)``; with weights stacked per task (``functional_call``), ``(T, N, 1) -> (T, N, 1)``."""
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            # (..., N, in) @ (..., in, out) + (..., 1, out): plain F.linear for 2-D weights, one bmm per layer for 3-D.
            h = torch.matmul(h, layer.weight.transpose(-1, -2)) + layer.bias.unsqueeze(-2)
            if i < last:
                h = torch.relu(h)
        return h
