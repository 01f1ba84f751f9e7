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
