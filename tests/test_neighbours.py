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


# --- the lab's wrong queries and metric (fewshot.inspection) ----------------------------------------------


def _points(query_class: str, query_image: torch.Tensor):
    from fewshot.inspection import PointSet

    points = PointSet()
    for name, row in (("top", 0), ("bottom", 7)):
        for shift in (0, 1):
            image = torch.zeros(1, 8, 8)
            image[0, row, shift:shift + 4] = 1.0
            points.add(image, name, "support", f"{name} {shift}")
    points.add(query_image, query_class, "query", "the query")
    return points


def test_query_predictions_name_the_class_a_query_is_taken_for():
    from fewshot import PrototypicalNetwork
    from fewshot.inspection import query_predictions

    model = PrototypicalNetwork(torch.nn.Flatten()).eval()  # pixels as features: the nearest prototype wins
    bottom_stroke = torch.zeros(1, 8, 8)
    bottom_stroke[0, 7, 2:6] = 1.0
    points = _points("top", bottom_stroke)  # labelled "top", drawn like the bottom class
    assert query_predictions(model, points) == {4: "bottom"}
    assert query_predictions(model, _points("bottom", bottom_stroke)) == {4: "bottom"}


def test_query_predictions_need_two_classes_and_a_query():
    from fewshot import PrototypicalNetwork
    from fewshot.inspection import PointSet, query_predictions

    model = PrototypicalNetwork(torch.nn.Flatten()).eval()
    points = PointSet()
    points.add(torch.zeros(1, 8, 8), "only", "support", "a")
    points.add(torch.ones(1, 8, 8), "only", "query", "b")
    assert query_predictions(model, points) == {}


def test_query_predictions_report_a_head_too_narrow():
    from fewshot import MAML
    from fewshot.inspection import PointSet, query_predictions

    points = PointSet()
    for c in range(3):
        points.add(torch.rand(1, 28, 28), f"c{c}", "support", f"c{c}")
    points.add(torch.rand(1, 28, 28), "c0", "query", "q")
    with pytest.raises(ValueError, match="2-way output head"):
        query_predictions(MAML(n_way=2, hidden=8).eval(), points)


def test_embedding_metric_follows_the_method():
    from fewshot import MatchingNetwork, PrototypicalNetwork, SiameseNetwork
    from fewshot.inspection import embedding_metric

    assert embedding_metric(PrototypicalNetwork(hidden=8)) == "euclidean"
    assert embedding_metric(PrototypicalNetwork(hidden=8, distance="cosine")) == "cosine"
    assert embedding_metric(MatchingNetwork(hidden=8)) == "cosine"
    assert embedding_metric(SiameseNetwork(hidden=8)) == "euclidean"
