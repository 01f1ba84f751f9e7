"""Embeddings and their 2-D maps: shapes, eval mode without gradients, determinism, tiny N."""

from __future__ import annotations

import numpy as np
import torch

from fewshot import PrototypicalNetwork, conv4, extract_features, pca_2d, tsne_2d


def test_extract_features_shape_and_batching():
    backbone = conv4(1, 8).train()
    images = torch.rand(23, 1, 16, 16)
    features = extract_features(backbone, images, batch_size=5)
    assert features.shape == (23, 8) and not features.requires_grad
    assert backbone.training  # mode restored
    # eval mode (running statistics), so batching does not change the answer
    torch.testing.assert_close(features, extract_features(backbone, images, batch_size=64))
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(features, backbone(images))


def test_extract_features_does_not_touch_batchnorm_statistics():
    backbone = conv4(1, 8).train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    extract_features(backbone, torch.rand(10, 1, 16, 16))
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())


def test_model_embedding_is_the_backbone():
    model = PrototypicalNetwork(hidden=8).eval()
    images = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(extract_features(model.backbone, images), model.embed(images))


def test_tsne_shape_and_determinism():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (20, 16)), rng.normal(8, 1, (20, 16))]).astype(np.float32)
    a, b = tsne_2d(features, seed=3), tsne_2d(torch.from_numpy(features), seed=3)
    assert a.shape == (40, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # two well-separated clusters stay apart in the map
    centre_gap = np.linalg.norm(a[:20].mean(0) - a[20:].mean(0))
    assert centre_gap > 3 * max(a[:20].std(0).max(), a[20:].std(0).max())


def test_tsne_works_for_ten_points():
    # scikit-learn rejects perplexity >= n_samples; the default 30 must be clamped
    out = tsne_2d(np.random.default_rng(1).normal(size=(10, 5)).astype(np.float32))
    assert out.shape == (10, 2) and np.isfinite(out).all()
    assert tsne_2d(np.zeros((1, 5), np.float32)).shape == (1, 2)


def test_pca_2d():
    rng = np.random.default_rng(2)
    direction = np.array([3.0, 4.0, 0.0, 0.0]) / 5.0
    features = rng.normal(size=(30, 1)) * 10 * direction + rng.normal(scale=0.01, size=(30, 4))
    out = pca_2d(features)
    assert out.shape == (30, 2)
    # the first component carries the variance along `direction`
    assert np.abs(np.corrcoef(out[:, 0], features @ direction)[0, 1]) > 0.999
    assert pca_2d(features[:1]).shape == (1, 2)


def test_parameter_free_backbone():
    images = torch.rand(6, 1, 4, 4)
    torch.testing.assert_close(extract_features(torch.nn.Flatten(), images), images.flatten(1))


# ---- t-SNE with the exact gradient (torch): the same objective as scikit-learn's, and maps as good

def _clusters(n_clusters: int, per_cluster: int, dims: int = 32, gap: float = 6.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=gap / np.sqrt(2), size=(n_clusters, dims))
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    return (centres[labels] + rng.normal(size=(len(labels), dims))).astype(np.float32), labels


def _knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nearest = labels[np.argsort(d2, axis=1)[:, :k]]
    return float(np.mean([np.bincount(row).argmax() == label for row, label in zip(nearest, labels)]))


def test_tsne_objective_equals_scikit_learns():
    """Affinities, gradient and KL divergence equal scikit-learn's reference code on the same points."""
    from scipy.spatial.distance import squareform
    from sklearn.manifold._t_sne import _joint_probabilities_nn, _kl_divergence
    from sklearn.neighbors import NearestNeighbors

    from fewshot.embedding import _gradient, _joint_probabilities
    from fewshot.embedding import _kl_divergence as kl_divergence

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    perplexity = 10.0
    distances = NearestNeighbors(n_neighbors=31).fit(x).kneighbors_graph(mode="distance")
    distances.data **= 2
    expected_p = _joint_probabilities_nn(distances, perplexity, 0).toarray()
    p = _joint_probabilities(torch.from_numpy(x), perplexity)
    np.testing.assert_allclose(p.numpy(), expected_p, atol=1e-7, rtol=1e-4)
    y = (rng.normal(size=(60, 2)) * 3).astype(np.float32)
    condensed = squareform(expected_p, checks=False)
    expected_kl, expected_grad = _kl_divergence(y.ravel().astype(np.float64), condensed, 1, 60, 2)
    grad = _gradient(p, torch.from_numpy(y), torch.empty(60, 60), torch.empty(60, 60))
    np.testing.assert_allclose(grad.numpy().ravel(), expected_grad, atol=1e-5 * np.abs(expected_grad).max())
    assert abs(kl_divergence(p, torch.from_numpy(y)) - expected_kl) < 1e-5


def test_tsne_separates_clusters_as_well_as_scikit_learn():
    """200 points in 8 close clusters (the 500-iteration schedule): clusters stay apart, and the KL divergence is
    within 3% of scikit-learn's 1000 Barnes-Hut iterations (measured: 0.1174 vs 0.1182)."""
    from sklearn.manifold import TSNE

    from fewshot.embedding import _as_points, _joint_probabilities, _kl_divergence

    x, labels = _clusters(8, 25, gap=2.0)
    xy = tsne_2d(x)
    assert _knn_accuracy(xy, labels) >= 0.95
    reference = TSNE(perplexity=30, init="pca", learning_rate="auto", random_state=0).fit_transform(x)
    p = _joint_probabilities(_as_points(x), 30.0)
    assert _kl_divergence(p, torch.from_numpy(xy)) <= 1.03 * _kl_divergence(p, torch.from_numpy(reference))


def test_tsne_small_maps_keep_clusters():
    """The app's usual size: 40 points in 4 clusters (the 1000-iteration schedule, perplexity clamped to 13)."""
    x, labels = _clusters(4, 10, seed=1)
    xy = tsne_2d(x, perplexity=30.0)
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
    assert _knn_accuracy(xy, labels, k=3) >= 0.95


def test_tsne_seed_and_input_kinds():
    x, _ = _clusters(3, 10, dims=6, seed=2)
    a = tsne_2d(x, seed=0)
    assert not np.array_equal(a, tsne_2d(x, seed=1))  # the seed moves the init's jitter
    grad_input = torch.from_numpy(x.astype(np.float64)).requires_grad_()  # e.g. features straight from a model
    np.testing.assert_array_equal(a, tsne_2d(grad_input, seed=0))


def test_tsne_degenerate_inputs():
    assert tsne_2d(np.zeros((0, 4), np.float32)).shape == (0, 2)
    for n in (2, 3):
        out = tsne_2d(np.random.default_rng(n).normal(size=(n, 3)))
        assert out.shape == (n, 2) and np.isfinite(out).all()
    same = tsne_2d(np.ones((12, 5), np.float32))  # identical points: parted by the jitter, no NaN
    assert np.isfinite(same).all()
    assert np.isfinite(tsne_2d(np.zeros((6, 0), np.float32))).all()


def test_tsne_bad_input_says_what_is_wrong():
    import pytest

    bad = np.ones((10, 3), np.float32)
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tsne_2d(bad)
    with pytest.raises(ValueError, match="2-D"):
        tsne_2d(np.ones(10, np.float32))
    with pytest.raises(ValueError, match="perplexity"):
        tsne_2d(np.ones((10, 3), np.float32), perplexity=0)


def test_tsne_many_points_use_barnes_hut(monkeypatch):
    import fewshot.embedding as embedding

    monkeypatch.setattr(embedding, "_EXACT_MAX_POINTS", 30)
    called = []
    monkeypatch.setattr(embedding, "_tsne_exact", lambda *a: called.append(a))
    x, labels = _clusters(3, 15, dims=8, seed=3)
    xy = tsne_2d(x, seed=0)
    assert not called and xy.shape == (45, 2) and xy.dtype == np.float32
    np.testing.assert_array_equal(xy, tsne_2d(x, seed=0))
    assert _knn_accuracy(xy, labels) >= 0.95
