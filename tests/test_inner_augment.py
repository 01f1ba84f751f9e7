"""MAML's inner loop on warped copies of the support images (``MAML(inner_augment=K)``, ``train --inner-augment K``).

float64 on a tiny Conv-4 (4 filters, 16x16 images), so the by-hand comparisons can be tight.
"""

from __future__ import annotations

import json

import pytest
import torch

from fewshot import MAML, Task, TaskSampler, TrainConfig, load_checkpoint, train
from fewshot.augment import AffineAugment
from fewshot.cli import main
from fewshot.methods.maml import adapt

@pytest.fixture
def task(float64_task: Task) -> Task:
    return float64_task


def test_the_inner_step_descends_the_support_images_and_their_warped_copies(task, tiny):
    """One step of lr on the cross-entropy of [support; K warped copies], the warps those of a generator seeded 0;
    the head is still built from the support images alone."""
    model = tiny(inner_augment=3).eval()
    model.process_support_set(task.support_images, task.support_labels)
    start = model.start_weights({k: v.detach().requires_grad_() for k, v in model.meta_weights().items()},
                                task.support_images, task.support_labels)
    aug = AffineAugment()
    copies = task.support_images.repeat(3, 1, 1, 1)
    warped = aug.apply(copies, aug.draw(copies.shape[0], torch.Generator().manual_seed(0)))
    images, labels = torch.cat([task.support_images, warped]), task.support_labels.repeat(4)
    by_hand = adapt(model.net, start, model.buffers_copy(), images, labels, inner_lr=0.1, inner_steps=1,
                    create_graph=False)
    plain = adapt(model.net, start, model.buffers_copy(), task.support_images, task.support_labels, inner_lr=0.1,
                  inner_steps=1, create_graph=False)
    for name, value in model.fast_weights.items():
        torch.testing.assert_close(value, by_hand[name].detach(), rtol=0, atol=1e-12)
    assert any(not torch.allclose(by_hand[k], plain[k]) for k in plain)  # the copies changed the step
    assert not torch.allclose(warped, copies)  # and they are warped, not the images again


def test_step_zero_is_still_protonet_and_answers_do_not_depend_on_what_ran_before(task, tiny):
    plain, augmented = tiny(inner_steps=0).eval(), tiny(inner_steps=0, inner_augment=4).eval()
    for model in (plain, augmented):
        model.process_support_set(task.support_images, task.support_labels)
    torch.testing.assert_close(augmented(task.query_images), plain(task.query_images), rtol=0, atol=0)
    model = tiny(inner_augment=4).eval()
    answers = []
    for seed in (1, 2):  # the global generator's state must not matter in evaluation
        torch.manual_seed(seed)
        model.process_support_set(task.support_images, task.support_labels)
        answers.append(model(task.query_images))
    torch.testing.assert_close(answers[0], answers[1], rtol=0, atol=0)


def test_training_draws_the_warps_from_the_seeded_global_generator(task, tiny):
    model = tiny(inner_augment=2).train()
    draws = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        draws.append(model.inner_support(task.support_images, task.support_labels)[0])
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    assert not torch.equal(draws[0], draws[2])
    images, labels = draws[0], model.inner_support(task.support_images, task.support_labels)[1]
    assert images.shape[0] == 3 * task.support_images.shape[0] and torch.equal(images[:6], task.support_images)
    assert torch.equal(labels, task.support_labels.repeat(3))


def test_the_observable_steps_equal_the_model(task, tiny):
    model = tiny(inner_augment=3, inner_steps=2, inner_temperature=4.0).eval()
    model.process_support_set(task.support_images, task.support_labels)
    steps = list(model.adaptation(task.support_images, task.support_labels, task.query_images))
    torch.testing.assert_close(steps[-1].query_logits, model(task.query_images).detach(), rtol=0, atol=1e-9)


def test_the_meta_gradient_reaches_the_learned_rates_through_the_warped_copies(gratings):
    torch.manual_seed(0)
    model = MAML(5, hidden=8, inner_lr=0.05, proto_head=True, learn_inner_lr=True, inner_temperature=5.0,
                 batch_norm="running", inner_augment=2)
    sampler = TaskSampler(gratings, 5, 1, 3, seed=0)
    model.train()
    loss, _ = model.episode_loss(sampler.sample_task())
    loss.backward()
    assert model.log_inner_lr.grad is not None and model.log_inner_lr.grad.abs().sum() > 0
    assert model.batched_episode_loss([sampler.sample_task()]) is None  # the per-task loop handles it
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train(model, sampler, TrainConfig(episodes=3, meta_lr=0.1, eval_every=0, freeze_backbone=True))
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_inner_augment_is_checked_and_recorded():
    for bad in (-1, 65, 1.5, True, "3"):
        with pytest.raises(ValueError, match="inner_augment"):
            MAML(3, inner_augment=bad)
    with pytest.raises(ValueError, match="support"):
        MAML(3, inner_augment=2, batch_norm="support")
    assert "inner_augment" not in MAML(3).config  # older checkpoints' configs stay as they were
    assert MAML(3, inner_augment=7).config["inner_augment"] == 7


def test_cli_trains_evaluates_and_refuses(pattern_folder_4x4, tiny_train_args, tmp_path, capsys, refused):
    folder_data, common = pattern_folder_4x4, tiny_train_args
    out = tmp_path / "pm.safetensors"
    assert main(["train", *common, "--method", "fomaml", "--proto-head", "--inner-lr", "0.01", "--inner-augment", "3",
                 "--out", str(out)]) == 0
    model, info = load_checkpoint(out)
    assert info["method_kwargs"]["inner_augment"] == 3 and model.inner_augment == 3
    evaluate = ["evaluate", "--checkpoint", str(out), "--dataset", "folder", "--data-dir", str(folder_data),
                "--device", "cpu", "--n-way", "3", "--n-shot", "1", "--n-query", "1", "--episodes", "3", "--json"]
    capsys.readouterr()
    assert main(evaluate) == 0
    assert json.loads(capsys.readouterr().out)["inner_augment"] == 3
    assert main([*evaluate, "--inner-augment", "0", "--inner-temperature", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "inner_augment" not in report and report["inner_temperature"] == 4.0
    protonet = tmp_path / "p.safetensors"
    for argv in (["train", *common, "--method", "protonet", "--inner-augment", "2", "--out", str(protonet)],
                 ["train", *common, "--method", "maml", "--inner-augment", "2", "--batch-norm", "support", "--out",
                  str(tmp_path / "s.safetensors")],
                 ["train", *common, "--method", "maml", "--inner-augment", "-1", "--out", str(tmp_path / "n")]):
        refused(argv, "--inner-augment")
    assert not protonet.exists()
    assert main(["train", *common, "--method", "protonet", "--out", str(protonet)]) == 0
    refused(["evaluate", "--checkpoint", str(protonet), *evaluate[3:], "--inner-augment", "2"], "--inner-augment")
