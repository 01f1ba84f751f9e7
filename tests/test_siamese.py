"""Siamese network: symmetric pair scores, identical pairs score highest, per-class logits."""

from __future__ import annotations

import torch
from torch import nn

from fewshot import SiameseNetwork


def _model(dim: int = 64) -> SiameseNetwork:
    return SiameseNetwork(nn.Flatten(), feature_dim=dim)


def test_pair_similarity_is_symmetric():
    model = SiameseNetwork(hidden=8).eval()  # the real Conv-4 backbone
    a, b = torch.rand(3, 1, 16, 16), torch.rand(4, 1, 16, 16)
    torch.testing.assert_close(model.similarity(a, b), model.similarity(b, a).T)
    features = torch.randn(5, 6)
    on_features = SiameseNetwork(nn.Identity(), feature_dim=6).pair_logits(features, features)
    torch.testing.assert_close(on_features, on_features.T)


def test_identical_pair_scores_highest():
    # Koch et al.'s weighted L1: logit = w . |f(a) - f(b)| + b. Training drives w negative (distance
    # means "different"); with such weights an identical pair, at distance 0, must score highest.
    model = _model()
    with torch.no_grad():
        model.compare.weight.copy_(-torch.rand_like(model.compare.weight) - 0.1)
    images = torch.rand(6, 1, 8, 8)
    similarity = model.similarity(images, images)
    assert torch.equal(similarity.argmax(1), torch.arange(6))
    # distance 0 gives exactly the bias
    torch.testing.assert_close(similarity.diagonal(), torch.sigmoid(model.compare.bias).expand(6))


def test_class_logits_take_the_most_similar_support_example(tiny_task):
    model = _model()
    model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    logits = model(tiny_task.query_images)
    assert logits.shape == (6, 3)
    pair = model.pair_logits(tiny_task.query_images.flatten(1), tiny_task.support_images.flatten(1))  # (Q, S)
    expected = torch.stack([pair[:, tiny_task.support_labels == c].max(1).values for c in range(3)], dim=1)
    torch.testing.assert_close(logits, expected)
    mean_model = SiameseNetwork(nn.Flatten(), feature_dim=64, aggregate="mean")
    mean_model.load_state_dict(model.state_dict())
    mean_model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    expected_mean = torch.stack([pair[:, tiny_task.support_labels == c].mean(1) for c in range(3)], dim=1)
    torch.testing.assert_close(mean_model(tiny_task.query_images), expected_mean)


def test_pair_loss_is_balanced_binary_cross_entropy(tiny_task):
    model = _model()
    loss, logits = model.episode_loss(tiny_task)
    pair = model.pair_logits(tiny_task.query_images.flatten(1), tiny_task.support_images.flatten(1))
    same = (tiny_task.query_labels[:, None] == tiny_task.support_labels[None, :]).float()
    pos_weight = (same.numel() - same.sum()) / same.sum()  # 2 "different" per "same" in a 3-way task
    expected = nn.functional.binary_cross_entropy_with_logits(pair, same, pos_weight=pos_weight)
    torch.testing.assert_close(loss, expected)
    assert logits.shape == (6, 3)


def test_a_new_head_is_an_l1_distance_so_a_borrowed_encoder_classifies_by_nearest_neighbour():
    """Before training the head scores a pair by minus its mean L1 distance: an encoder copied from another model
    (``train --init-backbone``) starts as an L1 nearest-neighbour classifier, not behind a random head."""
    torch.manual_seed(0)
    model = _model(dim=12)
    support, query = torch.randn(4, 12), torch.randn(7, 12)
    torch.testing.assert_close(model.pair_logits(query, support),
                               -(query.unsqueeze(1) - support.unsqueeze(0)).abs().mean(-1))
    model.process_support_set(support.view(4, 1, 3, 4), torch.arange(4))
    nearest = torch.cdist(query, support, p=1).argmin(1)
    assert torch.equal(model(query.view(7, 1, 3, 4)).argmax(1), nearest)
