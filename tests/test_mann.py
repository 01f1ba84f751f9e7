"""MANN: sequence shapes, the N-way K-shot readout, the instance protocol, the label-width limit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewshot import MANN


def small_mann(n_way: int = 3) -> MANN:
    return MANN(n_way, hidden=8, controller_size=16, memory_slots=8, memory_width=4, read_heads=2)


def test_run_sequence_shapes_and_read_weights():
    model = small_mann()
    features, labels = torch.randn(7, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    logits, state, reads = model.run_sequence(features, labels)
    assert logits.shape == (7, 3) and torch.isfinite(logits).all()
    assert len(reads) == 7 and reads[0].shape == (2, 8)  # (read heads, memory slots)
    torch.testing.assert_close(reads[-1].sum(-1), torch.ones(2))  # each head's read weights are a distribution
    assert state.memory.shape == (1, 8, 4)
    torch.testing.assert_close(state.last_label, F.one_hot(labels[-1:], 3).float())  # shown at the next step


def test_prediction_at_a_step_does_not_see_that_steps_label():
    model = small_mann()
    features = torch.randn(5, 8)
    a = model.run_sequence(features, torch.tensor([0, 1, 2, 0, 1]))[0]
    b = model.run_sequence(features, torch.tensor([0, 1, 2, 0, 2]))[0]  # only the last label differs
    torch.testing.assert_close(a, b)
    c = model.run_sequence(features, torch.tensor([0, 1, 2, 1, 1]))[0]  # label of step 3 reaches step 4 only
    torch.testing.assert_close(a[:4], c[:4])
    assert not torch.allclose(a[4], c[4])


def test_forward_shape_and_queries_are_independent(make_task):
    model = small_mann().eval()
    task = make_task(3, 2, 4, size=16)
    model.process_support_set(task.support_images, task.support_labels)
    logits = model(task.query_images)
    assert logits.shape == (12, 3)
    torch.testing.assert_close(logits[:1], model(task.query_images[:1]))


def test_fewer_classes_than_the_label_width(make_task):
    model = small_mann(n_way=5).eval()
    task = make_task(3, 1, 2, size=16)
    model.process_support_set(task.support_images, task.support_labels)
    assert model(task.query_images).shape == (6, 3)


def test_episode_loss_scores_the_query_rows(make_task):
    model = small_mann()
    task = make_task(3, 2, 2, size=16)
    loss, logits = model.episode_loss(task)
    assert logits.shape == (6, 3) and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.backbone.blocks[0].conv.weight.grad.abs().sum() > 0  # trained end to end


def test_instance_accuracy_has_one_entry_per_instance(make_task):
    model = small_mann().eval()
    task = make_task(3, 2, 2, size=16)  # every class is shown 4 times
    accuracy = model.instance_accuracy(task)
    assert accuracy.shape == (10,)
    assert not torch.isnan(accuracy[:4]).any() and torch.isnan(accuracy[4:]).all()
    assert ((accuracy[:4] >= 0) & (accuracy[:4] <= 1)).all()


def test_refuses_more_classes_than_its_label_width(make_task):
    model = small_mann(n_way=3)
    task = make_task(4, 1, 1, size=16)
    with pytest.raises(ValueError, match="3-way"):
        model.process_support_set(task.support_images, task.support_labels)
    with pytest.raises(ValueError, match="3-way"):
        model.episode_loss(task)
