"""Prototypical Networks: closed forms on hand-built features with an identity backbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewshot import PrototypicalNetwork, compute_prototypes, evaluate


@pytest.fixture
def identity_protonet() -> PrototypicalNetwork:
    return PrototypicalNetwork(nn.Flatten())


def test_compute_prototypes_are_class_means():
    features = torch.tensor([[0.0, 0.0], [2.0, 4.0], [10.0, 10.0], [1.0, -1.0], [3.0, 1.0], [12.0, 8.0]])
    labels = torch.tensor([0, 0, 2, 1, 1, 2])
    expected = torch.tensor([[1.0, 2.0], [2.0, 0.0], [11.0, 9.0]])
    torch.testing.assert_close(compute_prototypes(features, labels), expected)
    torch.testing.assert_close(compute_prototypes(features, labels, 3), expected)


def test_prototypes_after_process_support_set(identity_protonet, tiny_task):
    identity_protonet.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    flat = tiny_task.support_images.flatten(1)
    expected = torch.stack([flat[tiny_task.support_labels == c].mean(0) for c in range(3)])
    torch.testing.assert_close(identity_protonet.prototypes, expected)


def test_logits_are_negative_squared_euclidean_distances(identity_protonet, tiny_task):
    model = identity_protonet
    model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    logits = model(tiny_task.query_images)
    expected = -torch.cdist(tiny_task.query_images.flatten(1), model.prototypes) ** 2  # squared, as in Snell et al.
    assert logits.shape == (6, 3)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # not the plain (unsquared) distance
    assert not torch.allclose(logits, -torch.cdist(tiny_task.query_images.flatten(1), model.prototypes), atol=1e-3)


def test_episode_loss_matches_two_call_protocol(identity_protonet, tiny_task):
    loss, logits = identity_protonet.episode_loss(tiny_task)
    identity_protonet.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    torch.testing.assert_close(logits, identity_protonet(tiny_task.query_images))
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits, tiny_task.query_labels))


def test_support_order_does_not_change_logits(identity_protonet, tiny_task):
    model = identity_protonet
    model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    before = model(tiny_task.query_images)
    perm = torch.randperm(len(tiny_task.support_labels))
    assert not torch.equal(perm, torch.arange(len(perm)))
    model.process_support_set(tiny_task.support_images[perm], tiny_task.support_labels[perm])
    torch.testing.assert_close(model(tiny_task.query_images), before)


def test_perfect_accuracy_on_well_separated_clusters(identity_protonet, make_task):
    for seed in range(5):
        task = make_task(4, 3, 5, size=8, seed=seed)
        identity_protonet.process_support_set(task.support_images, task.support_labels)
        assert torch.equal(identity_protonet(task.query_images).argmax(1), task.query_labels)


def test_evaluate_reports_perfect_accuracy_with_a_trainable_backbone(make_task):
    # a linear backbone initialised to the identity keeps the clusters apart
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 64))
    with torch.no_grad():
        backbone[1].weight.copy_(torch.eye(64))
        backbone[1].bias.zero_()
    result = evaluate(PrototypicalNetwork(backbone), [make_task(4, 3, 5, size=8, seed=s) for s in range(5)])
    assert result.accuracy == 1.0 and result.episodes == 5 and result.ci95 == 0.0


def test_cosine_distance_option(tiny_task):
    model = PrototypicalNetwork(nn.Flatten(), distance="cosine", cosine_scale=5.0)
    model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    q = nn.functional.normalize(tiny_task.query_images.flatten(1), dim=1)
    p = nn.functional.normalize(model.prototypes, dim=1)
    torch.testing.assert_close(model(tiny_task.query_images), 5.0 * q @ p.T)
    with pytest.raises(ValueError, match="distance"):
        PrototypicalNetwork(nn.Flatten(), distance="manhattan")


def test_forward_before_support_set_is_a_clear_error(identity_protonet, tiny_task):
    with pytest.raises(RuntimeError, match="process_support_set"):
        identity_protonet(tiny_task.query_images)


def test_bad_support_labels_rejected(identity_protonet, tiny_task):
    with pytest.raises(ValueError, match="0..n_way-1"):
        identity_protonet.process_support_set(tiny_task.support_images, tiny_task.support_labels + 1)  # no class 0
