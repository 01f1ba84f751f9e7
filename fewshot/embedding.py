"""Embeddings of image batches and their 2-D maps (t-SNE, PCA), as numpy arrays; no plotting here."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["extract_features", "tsne_2d", "pca_2d"]


def extract_features(backbone: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Features ``(N, D)`` of ``images (N, C, H, W)``, in eval mode and without gradients."""
    was_training = backbone.training
    backbone.eval()
    param = next(backbone.parameters(), None)  # a parameter-free backbone (nn.Flatten) runs where the images are
    device = param.device if param is not None else images.device
    out = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                out.append(backbone(images[start : start + batch_size].to(device)).flatten(1).cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def tsne_2d(features: np.ndarray | Tensor, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """t-SNE map ``(N, 2)``; perplexity is clamped below N (scikit-learn requires it); deterministic per seed."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    if n < 2:
        return np.zeros((n, 2), dtype=np.float32)
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca", learning_rate="auto")
    return tsne.fit_transform(x).astype(np.float32)


def pca_2d(features: np.ndarray | Tensor) -> np.ndarray:
    """First two principal components ``(N, 2)``."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2), dtype=np.float32)
    return PCA(n_components=min(2, x.shape[1], x.shape[0]), random_state=0).fit_transform(x).astype(np.float32)
