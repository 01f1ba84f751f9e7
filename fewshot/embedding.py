"""Embeddings of image batches and their 2-D maps (t-SNE, PCA), as numpy arrays; no plotting here."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["extract_features", "tsne_2d", "pca_2d", "nearest_neighbours"]


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


_EXACT_MAX_POINTS = 2500  # above this the O(N^2) gradient costs more than scikit-learn's Barnes-Hut
_EXAGGERATION = 12.0


def _schedule(n: int) -> tuple[int, int]:
    """(early-exaggeration iterations, iterations in all) for ``n`` points.

    Below 200 points, where an iteration costs well under a millisecond, scikit-learn's 250 + 750; from 200
    points on 125 + 375, which reaches a KL divergence as low as scikit-learn's 1000 iterations (measured by
    ``benchmarks/tsne_speed.py`` and at 200-2000 points; with 125 + 375 maps of 25-50 points came out worse).
    """
    return (250, 1000) if n < 200 else (125, 500)


def _as_points(features: np.ndarray | Tensor) -> Tensor:
    """``(N, D)`` float32 CPU tensor; bad input raises ``ValueError`` saying what is wrong."""
    x = features.detach().cpu() if isinstance(features, Tensor) else torch.as_tensor(np.asarray(features))
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (points, dimensions), got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise ValueError(f"features must be numbers, got {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values; a map needs finite numbers "
                         "(check the model's output)")
    return x if x.shape[1] else torch.zeros(x.shape[0], 1)


def _joint_probabilities(x: Tensor, perplexity: float) -> Tensor:
    """t-SNE's symmetric input affinities ``P (N, N)``, float32, summing to 1.

    As scikit-learn's Barnes-Hut path (and van der Maaten's): Gaussian conditional probabilities over each
    point's ``min(N - 1, 3 * perplexity + 1)`` nearest neighbours (squared Euclidean distances), each bandwidth
    bisected until the entropy is ``log(perplexity)``, then ``P = (P + P.T) / sum``.
    """
    n = x.shape[0]
    x = x.double()
    sq = (x * x).sum(1)
    d2 = torch.addmm(sq[:, None] + sq[None, :], x, x.T, alpha=-2.0).clamp_min_(0.0)
    d2.fill_diagonal_(float("inf"))
    k = min(n - 1, int(3.0 * perplexity + 1))
    dist, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
    dist = dist - dist[:, :1]  # shift by the nearest: same probabilities, no underflow for far-apart data
    target = math.log(perplexity)
    beta = torch.ones(n, dtype=torch.float64)
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), math.inf, dtype=torch.float64)
    for _ in range(100):  # scikit-learn's schedule: double/halve until bracketed, then bisect
        p = torch.exp(-dist * beta[:, None])
        total = p.sum(1)
        entropy = torch.log(total) + beta * (dist * p).sum(1) / total
        too_flat = entropy > target
        if (entropy - target).abs().max() <= 1e-5:
            break
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(too_flat, torch.where(torch.isinf(hi), beta * 2.0, (beta + hi) / 2.0), (beta + lo) / 2.0)
    p = torch.exp(-dist * beta[:, None])
    p /= p.sum(1, keepdim=True)
    P = torch.zeros(n, n, dtype=torch.float64).scatter_(1, idx, p)
    P += P.T.clone()
    return (P / P.sum()).float()


def _pca_init(x: Tensor, generator: torch.Generator) -> Tensor:
    """First two principal components scaled to a standard deviation of 1e-4 on the first (scikit-learn's
    ``init="pca"``), plus a seeded jitter of 1e-6 that parts duplicate points."""
    centred = x.double() - x.double().mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    vh = vh[:2]
    vh = vh * torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))  # sign fixed as scikit-learn's svd_flip
    y = torch.zeros(x.shape[0], 2, dtype=torch.float64)
    y[:, : vh.shape[0]] = centred @ vh.T
    spread = y[:, 0].std()
    if spread > 0:
        y *= 1e-4 / spread
    return (y + 1e-6 * torch.randn(y.shape, generator=generator, dtype=torch.float64)).float()


def _pairwise_num(y: Tensor, out: Tensor) -> Tensor:
    """Student-t kernel ``1 / (1 + |y_i - y_j|^2)`` with a zero diagonal, written into ``out (N, N)``."""
    ones = torch.ones(y.shape[0])
    sq = (y * y).sum(1)
    left = torch.stack([sq + 1.0, ones, -2.0 * y[:, 0], -2.0 * y[:, 1]], 1)
    right = torch.stack([ones, sq, y[:, 0], y[:, 1]], 0)
    # one small GEMM gives 1 + |y_i|^2 + |y_j|^2 - 2 y_i.y_j; the map is kept centred (its coordinates stay
    # in the tens), so float32 rounding is far below the 1 and no clamp is needed
    torch.mm(left, right, out=out).reciprocal_()
    return out.fill_diagonal_(0.0)


def _kl_divergence(P: Tensor, y: Tensor) -> float:
    """``KL(P || Q)`` of a map ``y (N, 2)`` with the exact Student-t ``Q``."""
    y = y.float()
    num = _pairwise_num(y - y.mean(0), torch.empty(P.shape))
    mask = P > 0
    q = num[mask] / num.sum()
    return float((P[mask] * torch.log(P[mask] / q.clamp_min(torch.finfo(torch.float32).tiny))).sum())


def _gradient(P: Tensor, y: Tensor, num: Tensor, work: Tensor) -> Tensor:
    """Exact ``dKL/dy = 4 sum_j (p_ij - q_ij) num_ij (y_i - y_j)`` in two ``(N, N)`` buffers, no Barnes-Hut."""
    _pairwise_num(y, num)
    z = float(num.sum())
    torch.add(P, num, alpha=-1.0 / z, out=work).mul_(num)  # (p_ij - q_ij) num_ij, symmetric
    # (3, N): y.T @ W and the row sums of W; a contiguous left operand (a transposed view made this product
    # ~100x slower with two threads on a busy machine)
    r = torch.stack([y[:, 0], y[:, 1], torch.ones(y.shape[0])]) @ work
    return 4.0 * (r[2, :, None] * y - r[:2].T)


def _tsne_exact(x: Tensor, perplexity: float, seed: int) -> tuple[Tensor, float]:
    """t-SNE with the exact gradient and scikit-learn's optimiser (momentum 0.5 then 0.8, per-coordinate gains,
    learning rate "auto", exaggeration 12), iterations as :func:`_schedule`. Returns the map and its KL divergence."""
    n = x.shape[0]
    exaggeration_iters, iters = _schedule(n)
    P = _joint_probabilities(x, perplexity)
    y = _pca_init(x, torch.Generator().manual_seed(seed))
    learning_rate = max(n / _EXAGGERATION / 4.0, 50.0)
    update, gains = torch.zeros_like(y), torch.ones_like(y)
    num, work = torch.empty(n, n), torch.empty(n, n)
    target = P * _EXAGGERATION
    for it in range(iters):
        if it == exaggeration_iters:  # second phase, as scikit-learn's: a fresh start of momentum and gains
            target = P
            update, gains = torch.zeros_like(y), torch.ones_like(y)
        momentum = 0.5 if it < exaggeration_iters else 0.8
        grad = _gradient(target, y, num, work)
        gains = torch.where(update * grad < 0, gains + 0.2, gains * 0.8).clamp_min_(0.01)
        update = momentum * update - learning_rate * gains * grad
        y = y + update
        y -= y.mean(0)  # the gradient is translation-invariant; centring keeps the GEMM above precise
    return y, _kl_divergence(P, y)


def tsne_2d(features: np.ndarray | Tensor, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """t-SNE map ``(N, 2)`` float32 of ``features (N, D)``; deterministic per seed (on one machine and thread count).

    Perplexity is clamped to ``max(1, (N - 1) / 3)`` so that small sets work (the app maps 10-50 points);
    fewer than two points map to zeros. Up to 2,500 points the gradient is exact (torch, three ``N x N``
    float32 matrices) with scikit-learn's affinities and optimiser, in 500 iterations from 200 points on
    (see :func:`_schedule`): at 1,000 points 2-3x less CPU than scikit-learn's Barnes-Hut t-SNE, at
    an equal KL divergence (``benchmarks/tsne_speed.py``). Above 2,500 points scikit-learn's Barnes-Hut
    t-SNE is used. ``seed`` draws a 1e-6 jitter added to the PCA initialisation (it parts duplicate points).

    Raises:
        ValueError: features that are not a finite 2-D array, or a perplexity that is not positive.
    """
    if not perplexity > 0:
        raise ValueError(f"perplexity must be positive, got {perplexity}")
    x = _as_points(features)
    n = x.shape[0]
    if n < 2:
        return np.zeros((n, 2), dtype=np.float32)
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    if n <= _EXACT_MAX_POINTS:
        with torch.no_grad():
            return _tsne_exact(x, perplexity, seed)[0].numpy()
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca", learning_rate="auto")
    return tsne.fit_transform(x.numpy()).astype(np.float32)


def nearest_neighbours(features: np.ndarray | Tensor, index: int, k: int = 5, *,
                       metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` points nearest to point ``index`` in the feature space itself (not in a 2-D map of it).

    A t-SNE or PCA map keeps some neighbourhoods and tears others; these are the model's own neighbours.

    Args:
        features: ``(N, D)`` embeddings.
        index: the point whose neighbours are wanted (it is never its own neighbour).
        k: how many; fewer when there are fewer other points.
        metric: ``"euclidean"`` or ``"cosine"`` (1 - cosine similarity).

    Returns:
        ``(indices (k,), distances (k,))``, nearest first; ties keep index order.

    Raises:
        ValueError: bad features, an index out of range, ``k < 1`` or an unknown metric.
    """
    x = _as_points(features).double()
    n = x.shape[0]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ValueError(f"index must be a point from 0 to {n - 1}, got {index!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive whole number, got {k!r}")
    if metric == "euclidean":
        distances = (x - x[index]).norm(dim=1)
    elif metric == "cosine":
        unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        distances = 1.0 - unit @ unit[index]
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    distances[index] = math.inf
    order = np.argsort(distances.numpy(), kind="stable")[: min(k, n - 1)]
    return order, distances.numpy()[order]


def pca_2d(features: np.ndarray | Tensor) -> np.ndarray:
    """First two principal components ``(N, 2)``."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2), dtype=np.float32)
    return PCA(n_components=min(2, x.shape[1], x.shape[0]), random_state=0).fit_transform(x).astype(np.float32)
