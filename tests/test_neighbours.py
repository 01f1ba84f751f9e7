"""``fewshot.embedding.nearest_neighbours``: neighbours in the feature space itself, by hand-built features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.embedding import nearest_neighbours


def test_euclidean_neighbours_nearest_first():
    features = np.array([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0]], dtype=np.float32)
    indices, distances = nearest_neighbours(features, 0, k=3)
    assert indices.tolist() == [2, 3, 1]
    np.testing.assert_allclose(distances, [1.0, 2.0, 3.0])


def test_the_point_itself_is_never_a_neighbour_and_k_is_clamped():
    features = torch.zeros(3, 4)  # identical points: every other point at distance 0
    indices, distances = nearest_neighbours(features, 1, k=10)
    assert indices.tolist() == [0, 2] and distances.tolist() == [0.0, 0.0]  # ties in index order


def test_cosine_ignores_length():
    features = np.array([[1.0, 0.0], [100.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    indices, distances = nearest_neighbours(features, 0, k=3, metric="cosine")
    assert indices.tolist() == [1, 2, 3]
    np.testing.assert_allclose(distances, [1 - 100 / np.hypot(100, 1), 1.0, 2.0])
    assert nearest_neighbours(features, 0, k=1)[0].tolist() == [2]  # euclidean: the long vector is far


def test_high_dimensional_features_match_a_brute_force():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 64)).astype(np.float32)
    indices, distances = nearest_neighbours(features, 7, k=5)
    brute = np.linalg.norm(features - features[7], axis=1)
    brute[7] = np.inf
    assert indices.tolist() == np.argsort(brute)[:5].tolist()
    np.testing.assert_allclose(distances, np.sort(brute)[:5], rtol=1e-5)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"index": 5}, "index must be a point from 0 to 2"),
    ({"index": -1}, "index must be"),
    ({"index": 0, "k": 0}, "k must be a positive whole number"),
    ({"index": 0, "metric": "manhattan"}, "metric must be"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        nearest_neighbours(np.zeros((3, 2)), **kwargs)


def test_non_finite_features_are_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        nearest_neighbours(np.array([[0.0, np.nan], [1.0, 1.0]]), 0)
