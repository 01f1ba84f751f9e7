"""MANN: sequence shapes, the N-way K-shot readout, the instance protocol, the label-width limit."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fewshot import MANN, SyntheticDataset, TaskSampler, TrainConfig, evaluate, load_checkpoint, save_checkpoint, train

PUBLISHED = {"label_in_memory": False, "feature_norm": False, "strength_init": None, "label_vote": 0.0}


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


def test_label_shown_next_step_is_bound_where_the_previous_key_was_written():
    model = small_mann()
    f0, f1 = torch.randn(1, 8), torch.randn(1, 8)
    _, s1 = model.step(f0, model.initial_state(1, f0.device, f0.dtype))
    assert s1.labels.abs().sum() == 0  # no label shown yet
    s1.last_label = F.one_hot(torch.tensor([2]), 3).float()
    _, s2 = model.step(f1, s1)
    kept = 1 - F.one_hot(s1.usage.argmin(1), 8).float().unsqueeze(-1)  # the slot cleared for step 1's write
    torch.testing.assert_close(s2.labels, torch.einsum("brn,bl->bnl", s1.write_weights, s1.last_label) * kept)
    assert s2.labels[..., 2].sum() > 0.5 and s2.labels[..., :2].abs().sum() == 0
    # reads at step 1 saw the memory before step 1's write: they carry step 0's key and label 2
    assert s2.reads.shape == (1, 2, 4 + 3) and s2.reads[..., 4 + 2].sum() > 0


def test_published_architecture_reads_after_writing():
    model = MANN(3, hidden=8, controller_size=16, memory_slots=8, memory_width=4, read_heads=2, **PUBLISHED)
    features = torch.randn(1, 8)
    _, state = model.step(features, model.initial_state(1, features.device, features.dtype))
    torch.testing.assert_close(state.reads, state.read_weights @ state.memory)  # memory after the write
    assert state.labels.shape == (1, 8, 0) and state.reads.shape == (1, 2, 4)


def test_checkpoint_saved_before_the_new_options_loads_as_the_published_model(tmp_path, make_task):
    model = MANN(3, hidden=8, controller_size=16, memory_slots=8, memory_width=4, read_heads=2, **PUBLISHED).eval()
    path = save_checkpoint(tmp_path / "new.safetensors", model, method="mann")
    with safe_open(str(path), framework="pt") as handle:
        record = json.loads(handle.metadata()["fewshot"])
    for key in PUBLISHED:  # what a checkpoint written before these options existed looks like
        del record["method_kwargs"][key]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={"fewshot": json.dumps(record)})
    loaded, _ = load_checkpoint(old)
    assert {k: loaded.config[k] for k in PUBLISHED} == PUBLISHED
    task = make_task(3, 1, 2, size=16)
    for m in (model, loaded):
        m.process_support_set(task.support_images, task.support_labels)
    torch.testing.assert_close(loaded(task.query_images), model(task.query_images))


def test_refuses_a_key_strength_below_one():
    with pytest.raises(ValueError, match="strength_init"):
        MANN(3, strength_init=0.5)


def test_learns_synthetic_images_through_its_encoder():
    # The issue-2 check with real images through Conv-4 (benchmarks/mann_synthetic.py at a smaller size):
    # 5-way sequences of 25 images, 60 steps of meta-batch 2; ~12 s of CPU on one thread.
    data = SyntheticDataset(20, 20, 28)
    model = MANN(5, hidden=16, controller_size=32, memory_slots=16, memory_width=16, read_heads=1)
    one_shot = TaskSampler(data, 5, 1, 5, seed=1)
    one_shot_tasks = [one_shot.sample_task() for _ in range(40)]
    sequences = TaskSampler(data, 5, 1, 4, seed=2)
    sequence_tasks = [sequences.sample_task() for _ in range(40)]
    before = evaluate(model.eval(), one_shot_tasks).accuracy
    train(model, TaskSampler(data, 5, 1, 4, seed=0), TrainConfig(episodes=60, meta_batch_size=2, meta_lr=3e-3,
                                                                 eval_every=0), log_every=60)
    after = evaluate(model, one_shot_tasks).accuracy
    assert after >= 0.5 and after >= before + 0.25, f"5-way 1-shot {before:.3f} -> {after:.3f}"
    instance = torch.stack([model.instance_accuracy(t) for t in sequence_tasks]).nanmean(0)
    # Santoro et al.'s signature: a class's first showing is a guess, later showings are recalled
    assert instance[1:5].min() >= instance[0] + 0.3, f"instance accuracy {instance[:5].tolist()}"
