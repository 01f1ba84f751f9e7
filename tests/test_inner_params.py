"""MAML whose inner loop adapts only the linear head (``MAML(inner_params="head")``, ``train --inner-params head``:
ANIL, Raghu et al. 2020).

float64 on a tiny Conv-4 (4 filters, 16x16 images), so the by-hand comparisons can be tight.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import fewshot.methods.maml as maml_module
from fewshot import MAML, Task, TaskSampler, TrainConfig, load_checkpoint, train
from fewshot.cli import main
from fewshot.methods.maml import HEAD, adapt


@pytest.fixture
def task(float64_task: Task) -> Task:
    return float64_task


def _encoder_still(model: MAML, lr: float):
    """The inner learning rate of ``adapt`` that leaves every encoder weight where it is: what head-only means."""
    return lambda step, name: lr if name in HEAD else 0.0


def test_head_steps_equal_whole_network_steps_with_the_encoder_held_still(task, tiny):
    """Three steps on [support; 2 warped copies] at temperature 3: the head moves exactly as ``adapt`` moves it with
    every encoder rate at 0, and the encoder entries are the meta-learned weights themselves."""
    model = tiny(inner_params="head", inner_steps=3, inner_augment=2, inner_temperature=3.0).eval()
    model.process_support_set(task.support_images, task.support_labels)
    start = model.start_weights({k: v.detach().requires_grad_() for k, v in model.meta_weights().items()},
                                task.support_images, task.support_labels)
    images, labels = model.inner_support(task.support_images, task.support_labels)
    by_hand = adapt(model.net, start, model.buffers_copy(), images, labels, inner_lr=_encoder_still(model, 0.1),
                    inner_steps=3, create_graph=False, loss_fn=lambda z, y: F.cross_entropy(z / 3.0, y))
    for name, value in model.fast_weights.items():
        torch.testing.assert_close(value, by_hand[name].detach(), rtol=0, atol=1e-12)
    for name, value in model.meta_weights().items():
        assert torch.equal(model.fast_weights[name], value.detach()), name
    assert not torch.allclose(model.fast_weights["head.weight"], start["head.weight"])  # the head did move


def test_step_zero_is_protonet_and_the_observable_steps_equal_the_model(task, tiny):
    zero = tiny(inner_steps=0).eval()
    zero.process_support_set(task.support_images, task.support_labels)
    model = tiny(inner_params="head", inner_steps=4, inner_augment=2, inner_temperature=2.0).eval()
    model.process_support_set(task.support_images, task.support_labels)
    steps = list(model.adaptation(task.support_images, task.support_labels, task.query_images))
    assert [s.step for s in steps] == [0, 1, 2, 3, 4]
    torch.testing.assert_close(steps[0].query_logits, zero(task.query_images), rtol=0, atol=1e-12)
    torch.testing.assert_close(steps[-1].query_logits, model(task.query_images).detach(), rtol=0, atol=1e-12)
    for name, value in model.fast_weights.items():
        torch.testing.assert_close(steps[-1].weights[name], value, rtol=0, atol=1e-12)
    assert steps[-1].support_loss < steps[0].support_loss  # descends the (tempered) support loss it reports


def test_the_encoder_runs_once_per_support_set_whatever_the_number_of_steps(task, tiny, monkeypatch):
    calls = []
    real = maml_module._logits

    def counting(*args, **kwargs):
        calls.append(kwargs.get("features_only", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(maml_module, "_logits", counting)
    counts = {}
    for steps in (1, 6):
        calls.clear()
        tiny(inner_params="head", inner_steps=steps).eval().process_support_set(task.support_images,
                                                                                task.support_labels)
        counts[steps] = len(calls)
    assert counts[1] == counts[6] == 2  # the prototypes' features, then the inner support set's
    calls.clear()
    tiny(inner_steps=6).eval().process_support_set(task.support_images, task.support_labels)
    assert len(calls) > 6  # the whole network's loop runs the encoder at every step


def test_second_order_meta_gradient_equals_the_held_still_whole_network_one(task, tiny):
    """Training mode, second order, learned rates and temperature: the meta-gradient of the query loss, for every
    encoder weight (through the prototype head) and the head's learned rates, equals that of ``adapt`` holding the
    encoder still."""
    model = tiny(inner_params="head", inner_steps=2, learn_inner_lr=True, inner_temperature=2.0,
                 learn_inner_temperature=True).train()
    loss, _ = model.episode_loss(task)
    params = [*model.meta_weights().values(), model.log_inner_lr, model.log_inner_temperature]
    grads = torch.autograd.grad(loss, params)

    weights = model.meta_weights()
    start = model.start_weights(weights, task.support_images, task.support_labels)
    temperature = model.log_inner_temperature.exp()
    fast = adapt(model.net, start, model.buffers_copy(), task.support_images, task.support_labels,
                 inner_lr=lambda i, n: model.inner_lr_at(i, n) if n in HEAD else 0.0, inner_steps=2,
                 create_graph=True, loss_fn=lambda z, y: F.cross_entropy(z / temperature, y))
    by_hand = F.cross_entropy(maml_module._logits(model.net, fast, model.buffers_copy(), task.query_images),
                              task.query_labels)
    expected = torch.autograd.grad(by_hand, params, allow_unused=True)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, torch.zeros_like(got) if want is None else want, rtol=1e-9, atol=1e-12)
    head_rates = [model._lr_index[n] for n in HEAD]
    assert grads[-2][:, head_rates].abs().min() > 0 and grads[-1].abs() > 0


def test_frozen_encoder_training_learns_only_the_head_rates(gratings):
    torch.manual_seed(0)
    model = MAML(5, hidden=8, inner_lr=0.05, proto_head=True, learn_inner_lr=True, inner_temperature=5.0,
                 batch_norm="running", inner_augment=2, inner_params="head", inner_steps=3)
    sampler = TaskSampler(gratings, 5, 1, 3, seed=0)
    assert model.batched_episode_loss([sampler.sample_task()]) is None  # the per-task loop handles it
    rates = model.log_inner_lr.detach().clone()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train(model, sampler, TrainConfig(episodes=3, meta_lr=0.1, eval_every=0, freeze_backbone=True))
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[name]), name
    changed = (model.log_inner_lr.detach() != rates).any(0)
    assert [model._lr_names[i] for i in changed.nonzero().flatten().tolist()] == list(HEAD)
    learned = model.learned_inner_loop()["inner_lr"]
    assert len(learned) == 3 and all(sorted(step) == sorted(HEAD) for step in learned)


def test_inner_params_is_checked_and_recorded():
    for bad in ("encoder", "", None, 1):
        with pytest.raises(ValueError, match="inner_params"):
            MAML(3, inner_params=bad)
    assert "inner_params" not in MAML(3).config  # older checkpoints' configs stay as they were
    assert MAML(3, inner_params="head").config["inner_params"] == "head"


def test_cli_trains_evaluates_and_refuses(pattern_folder_4x4, tiny_train_args, tmp_path, capsys, refused):
    common = tiny_train_args
    out = tmp_path / "anil.safetensors"
    assert main(["train", *common, "--method", "maml", "--proto-head", "--inner-lr", "0.05", "--inner-steps", "3",
                 "--inner-params", "head", "--out", str(out)]) == 0
    model, info = load_checkpoint(out)
    assert info["method_kwargs"]["inner_params"] == "head" and model.inner_params == "head"
    evaluate = ["evaluate", "--checkpoint", str(out), "--dataset", "folder", "--data-dir", str(pattern_folder_4x4),
                "--device", "cpu", "--n-way", "3", "--n-shot", "1", "--n-query", "1", "--episodes", "3", "--json"]
    capsys.readouterr()
    assert main(evaluate) == 0
    assert json.loads(capsys.readouterr().out)["inner_params"] == "head"
    assert main([*evaluate, "--inner-params", "all"]) == 0
    assert "inner_params" not in json.loads(capsys.readouterr().out)
    protonet = tmp_path / "p.safetensors"
    for argv in (["train", *common, "--method", "protonet", "--inner-params", "head", "--out", str(protonet)],
                 ["train", *common, "--method", "maml", "--inner-params", "encoder", "--out", str(tmp_path / "e")]):
        refused(argv, "--inner-params")
    assert not protonet.exists()
    assert main(["train", *common, "--method", "protonet", "--out", str(protonet)]) == 0
    refused(["evaluate", "--checkpoint", str(protonet), *evaluate[3:], "--inner-params", "head"], "--inner-params")


def test_set_test_inner_loop_replaces_the_given_parts_and_refuses_bad_values_whole(tiny):
    model = tiny(learn_inner_lr=True, inner_temperature=2.0, learn_inner_temperature=True)
    model.set_test_inner_loop(steps=3, params="head")
    assert (model.inner_steps_test, model.inner_params) == (3, "head")
    assert model.log_inner_lr is not None and model.log_inner_temperature is not None  # untouched parts kept
    for bad in (dict(augment=99), dict(params="encoder"), dict(temperature=0.0), dict(grad_clip=-1.0),
                dict(lr=-0.1), dict(steps=-1)):
        with pytest.raises(ValueError):
            model.set_test_inner_loop(**{"steps": 7, **bad})
        assert model.inner_steps_test == 3  # nothing changed by a refused call
    model.set_test_inner_loop(lr=0.05, temperature=4.0, augment=2, grad_clip=1.0)
    assert model.log_inner_lr is None and model.inner_lr_test == 0.05  # one fixed rate in place of learned ones
    assert model.log_inner_temperature is None and model.inner_temperature_value() == 4.0
    assert (model.inner_augment, model.inner_grad_clip) == (2, 1.0)
