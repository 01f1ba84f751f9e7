"""Proto-MAML's inner-loss temperature (fixed or meta-learned) and Proto-MAML with a frozen initialisation
(``train --freeze-backbone``: only how to adapt is learned).

float64 on a tiny Conv-4 (4 filters, 16x16 images), so gradient checks can be tight.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fewshot import MAML, Task, TaskSampler, TrainConfig, load_checkpoint, train
from fewshot.cli import main
from fewshot.methods.maml import adapt

@pytest.fixture
def task(float64_task: Task) -> Task:
    return float64_task


def test_the_inner_step_descends_the_tempered_support_loss(task, tiny):
    """The adapted weights are exactly one step of lr on cross-entropy(logits / T)."""
    model = tiny(inner_temperature=7.0).eval()
    model.process_support_set(task.support_images, task.support_labels)
    start = model.start_weights({k: v.detach().requires_grad_() for k, v in model.meta_weights().items()},
                                task.support_images, task.support_labels)
    by_hand = adapt(model.net, start, model.buffers_copy(), task.support_images, task.support_labels, inner_lr=0.1,
                    inner_steps=1, create_graph=False, loss_fn=lambda z, y: F.cross_entropy(z / 7.0, y))
    plain = adapt(model.net, start, model.buffers_copy(), task.support_images, task.support_labels, inner_lr=0.1,
                  inner_steps=1, create_graph=False)
    for name, value in model.fast_weights.items():
        torch.testing.assert_close(value, by_hand[name].detach(), rtol=0, atol=1e-12)
    assert any(not torch.allclose(by_hand[k], plain[k]) for k in plain)  # the temperature changed the step


def test_the_observable_steps_equal_the_model_with_a_temperature(task, tiny):
    model = tiny(inner_temperature=5.0, inner_steps=2).eval()
    model.process_support_set(task.support_images, task.support_labels)
    steps = list(model.adaptation(task.support_images, task.support_labels, task.query_images))
    torch.testing.assert_close(steps[-1].query_logits, model(task.query_images).detach(), rtol=0, atol=1e-9)
    with torch.no_grad():
        logits = model.net(task.support_images, task_head=(steps[0].weights["head.weight"],
                                                           steps[0].weights["head.bias"]))
    assert steps[0].support_loss == pytest.approx(F.cross_entropy(logits / 5.0, task.support_labels).item())


def test_a_learned_temperature_gets_its_second_order_gradient_and_stays_positive(task, tiny):
    model = tiny(inner_temperature=3.0, learn_inner_temperature=True, inner_lr=0.05)
    assert model.inner_temperature_now().item() == pytest.approx(3.0)
    model.train()
    loss, _ = model.episode_loss(task)
    grad = torch.autograd.grad(loss, [model.log_inner_temperature])[0]
    eps = 1e-6  # the same derivative by central finite differences
    with torch.no_grad():
        model.log_inner_temperature.add_(eps)
    plus = model.episode_loss(task)[0].item()
    with torch.no_grad():
        model.log_inner_temperature.sub_(2 * eps)
    minus = model.episode_loss(task)[0].item()
    with torch.no_grad():
        model.log_inner_temperature.add_(eps)
    assert grad.item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-10)
    assert grad.item() != 0
    optimizer = torch.optim.Adam([model.log_inner_temperature], lr=2.0)  # large steps: exp() keeps it positive
    for _ in range(3):
        optimizer.zero_grad()
        model.episode_loss(task)[0].backward()
        optimizer.step()
    assert model.inner_temperature_now().item() > 0
    assert model.inner_temperature_now().item() != pytest.approx(3.0)
    # first order: the temperature is inside the inner gradient, which the meta-gradient treats as a constant
    first = tiny(inner_temperature=3.0, learn_inner_temperature=True, first_order=True).train()
    loss, _ = first.episode_loss(task)
    loss.backward()
    assert first.log_inner_temperature.grad is None or first.log_inner_temperature.grad.abs().item() == 0


def test_evaluation_keeps_the_temperature_out_of_the_graph(task, tiny):
    model = tiny(inner_temperature=3.0, learn_inner_temperature=True).eval()
    model.process_support_set(task.support_images, task.support_labels)
    assert all(not v.requires_grad for v in model.fast_weights.values())
    assert not model(task.query_images).requires_grad


def test_temperature_options_are_checked_and_recorded():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="inner_temperature"):
            MAML(3, inner_temperature=bad)
    assert "inner_temperature" not in MAML(3).config  # older checkpoints' configs stay as they were
    config = MAML(3, inner_temperature=4.0, learn_inner_temperature=True).config
    assert config["inner_temperature"] == 4.0 and config["learn_inner_temperature"] is True


def test_a_frozen_proto_maml_learns_only_how_to_adapt(gratings):
    """--freeze-backbone: the encoder (its initialisation and statistics) stays; the inner rates and temperature
    learn; the model still adapts the encoder in its inner loop."""
    torch.manual_seed(0)
    model = MAML(5, hidden=8, inner_lr=0.1, proto_head=True, inner_temperature=3.0, learn_inner_temperature=True,
                 learn_inner_lr=True, batch_norm="running")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    rates = model.log_inner_lr.detach().clone()
    sampler = TaskSampler(gratings, 5, 1, 3, seed=0)
    train(model, sampler, TrainConfig(episodes=4, meta_lr=0.1, eval_every=0, freeze_backbone=True))
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(model.log_inner_lr.detach(), rates)
    assert model.inner_temperature_now().item() != pytest.approx(3.0)
    model.eval()
    task = sampler.sample_task()
    steps = list(model.adaptation(task.support_images, task.support_labels, task.query_images))
    assert any(not torch.equal(steps[1].weights[k], steps[0].weights[k]) for k in steps[0].weights
               if k.startswith("backbone."))


def test_cli_records_the_temperature_and_trains_a_frozen_proto_maml(pattern_folder_4x4, tiny_train_args, tmp_path, capsys):
    folder_data, common = pattern_folder_4x4, tiny_train_args
    encoder = tmp_path / "encoder.safetensors"
    assert main(["train", *common, "--method", "protonet", "--out", str(encoder)]) == 0
    out = tmp_path / "pm.safetensors"
    assert main(["train", *common, "--method", "maml", "--proto-head", "--learn-inner-lr", "--inner-lr", "0.01",
                 "--batch-norm", "running", "--inner-temperature", "8", "--learn-inner-temperature",
                 "--init-backbone", str(encoder), "--freeze-backbone", "--out", str(out)]) == 0
    source, _ = load_checkpoint(encoder)
    model, info = load_checkpoint(out)
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, source.backbone.state_dict()[name]), name
    assert info["method_kwargs"]["inner_temperature"] == 8.0 and info["method_kwargs"]["learn_inner_temperature"]
    assert model.inner_temperature_now().item() != pytest.approx(8.0)  # learned, and saved with the model
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["train", *common, "--method", "maml", "--inner-temperature", "0", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("error:") == 1 and "--inner-temperature" in err
    assert "Traceback" not in err
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", "folder", "--data-dir", str(folder_data),
                 "--device", "cpu", "--n-way", "4", "--n-shot", "1", "--n-query", "1", "--episodes", "2",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_way"] == 4
    # `fewshot info` shows what was learned of the inner loop: the rates and the temperature, read from the weights
    assert main(["info", "--checkpoint", str(out), "--json"]) == 0
    learned = json.loads(capsys.readouterr().out)["learned_inner_loop"]
    assert learned["inner_temperature"] == pytest.approx(model.inner_temperature_now().item())
    assert len(learned["inner_lr"]) == 1 and set(learned["inner_lr"][0]) == set(model._lr_names)
    for name, rate in learned["inner_lr"][0].items():
        assert rate == pytest.approx(model.inner_lr_at(0, name).item())
    assert main(["info", "--checkpoint", str(out)]) == 0
    text = capsys.readouterr().out
    assert "learned inner lr, step 1:" in text and "learned inner temperature:" in text and "(start 8.0)" in text
    assert main(["info", "--checkpoint", str(encoder), "--json"]) == 0  # nothing of an inner loop to show
    assert "learned_inner_loop" not in json.loads(capsys.readouterr().out)
