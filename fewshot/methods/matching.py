"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, arXiv:1606.04080)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import conv4
from .base import FewShotClassifier

__all__ = ["MatchingNetwork"]


class MatchingNetwork(FewShotClassifier):
    """Matching Networks (Vinyals et al. 2016, arXiv:1606.04080).

    A query is labelled by attention over the support set: a softmax over cosine similarities
    between the query's embedding and each support embedding weights the support labels. With
    full-context embeddings (``fce=True``) the support embeddings are re-read by a bidirectional
    LSTM and each query embedding attends to the support set through an LSTM for
    ``fce_steps`` steps, as in the paper's appendix.

    ``forward`` returns log-probabilities, which are valid logits: cross-entropy on them is the
    paper's negative log-likelihood.

    ``scale_init``: the cosine similarities are multiplied by a learned scale that starts at this value
    before the softmax (``None``: the paper's plain softmax over cosines). Cosines lie in [-1, 1], so
    without a scale the attention can never be sharper than e² ≈ 7.4 : 1 between two support examples; the
    loss stays high and its gradient reshapes the embedding instead (the Lake-protocol model trained that way
    from a 96.0 % ProtoNet backbone ended at 81.8 % 5-way 1-shot). A learned scale (temperature) on cosine
    logits is the usual remedy (e.g. Oreshkin et al. 2018; Chen et al. 2019). Checkpoints saved before this
    option existed load with ``None`` (:attr:`checkpoint_defaults`).
    """

    # Constructor arguments added after the first checkpoints were saved, set as those checkpoints were built.
    checkpoint_defaults = {"scale_init": None}

    def __init__(self, backbone: nn.Module | None = None, *, in_channels: int = 1, hidden: int = 64,
                 fce: bool = False, fce_steps: int = 5, feature_dim: int | None = None,
                 scale_init: float | None = 10.0):
        super().__init__()
        self.backbone = backbone if backbone is not None else conv4(in_channels, hidden)
        dim = feature_dim if feature_dim is not None else hidden
        self.fce, self.fce_steps = fce, fce_steps
        self.config = {"in_channels": in_channels, "hidden": hidden, "fce": fce, "fce_steps": fce_steps,
                       "feature_dim": dim, "scale_init": scale_init}
        if scale_init is not None:
            if not scale_init > 0:
                raise ValueError(f"scale_init must be positive (or None for plain cosines), got {scale_init}")
            self.log_scale = nn.Parameter(torch.tensor(math.log(float(scale_init))))
        else:
            self.register_parameter("log_scale", None)
        if fce:
            self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
            self.query_cell = nn.LSTMCell(2 * dim, dim)
        self.support_features: Tensor | None = None
        self.support_one_hot: Tensor | None = None

    def _encode_support(self, features: Tensor) -> Tensor:
        if not self.fce:
            return features
        out, _ = self.support_lstm(features.unsqueeze(0))  # (1, S, 2D)
        d = features.shape[1]
        return features + out[0, :, :d] + out[0, :, d:]  # g(x_i) = h_fwd + h_bwd + g'(x_i)

    def _encode_query(self, features: Tensor) -> Tensor:
        if not self.fce:
            return features
        assert self.support_features is not None
        h = features
        c = torch.zeros_like(features)
        for _ in range(self.fce_steps):
            attention = torch.softmax(h @ self.support_features.T, dim=1)  # (Q, S)
            readout = attention @ self.support_features  # (Q, D)
            h_new, c = self.query_cell(torch.cat([features, readout], dim=1), (h, c))
            h = h_new + features
        return h

    def process_support_set(self, support_images: Tensor, support_labels: Tensor) -> None:
        n_way = self.check_labels(support_labels)
        self.support_features = self._encode_support(self.backbone(support_images).flatten(1))
        self.support_one_hot = F.one_hot(support_labels.long(), n_way).to(self.support_features.dtype)
        self._support_ready = True

    def attention(self, query_images: Tensor) -> Tensor:
        """Attention ``(Q, S)`` of each query over the support examples; rows sum to one."""
        self._require_support()
        assert self.support_features is not None
        queries = self._encode_query(self.backbone(query_images).flatten(1))
        similarities = F.normalize(queries, dim=1) @ F.normalize(self.support_features, dim=1).T  # cosine
        if self.log_scale is not None:
            similarities = similarities * self.log_scale.exp()
        return torch.softmax(similarities, dim=1)

    def forward(self, query_images: Tensor) -> Tensor:
        assert self.support_one_hot is not None or not self._support_ready
        probabilities = self.attention(query_images) @ self.support_one_hot  # (Q, n_way)
        return torch.log(probabilities.clamp_min(1e-8))

    def explain(self, query_images: Tensor) -> dict[str, Tensor]:
        return {"attention": self.attention(query_images)}
