"""The sine-wave regression of Finn et al. 2017 (section 5.1): tasks, the MLP, MAML through ``adapt``, the CLI.

The shipped checkpoints' own check (MAML after one step beats the pre-trained network) is at the end.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, grad

from fewshot import METHODS, adapt, load_checkpoint, read_checkpoint_info
from fewshot.cli import main
from fewshot.mlp import MLPRegressor
from fewshot.sine import (SineTaskSampler, adaptation_curves, evaluate_sine, per_task_mse, query_grid,
                          stack_weights)
from fewshot.sine_training import SineTrainConfig, train_sine

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "sine"


# --------------------------------------------------------------------------- tasks
def test_sampler_draws_in_the_papers_ranges_and_the_points_lie_on_the_sines():
    batch = SineTaskSampler(10, 7, seed=3).sample(500)
    assert batch.support_x.shape == (500, 10, 1) and batch.query_x.shape == (500, 7, 1)
    assert 0.1 <= batch.amplitudes.min() and batch.amplitudes.max() <= 5.0
    assert 0.0 <= batch.phases.min() and batch.phases.max() <= math.pi
    assert batch.amplitudes.max() - batch.amplitudes.min() > 4.5  # spread over the range, not a constant
    for x in (batch.support_x, batch.query_x):
        assert -5.0 <= x.min() and x.max() <= 5.0
    t = 123
    expected = batch.amplitudes[t] * torch.sin(batch.support_x[t] - batch.phases[t])
    torch.testing.assert_close(batch.support_y[t], expected)


def test_sampler_is_seeded_by_its_own_generator():
    before = torch.get_rng_state()
    a, b = SineTaskSampler(5, 5, seed=1).sample(4), SineTaskSampler(5, 5, seed=1).sample(4)
    assert torch.equal(torch.get_rng_state(), before), "the global RNG must not be used"
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.amplitudes, b.amplitudes)
    c = SineTaskSampler(5, 5, seed=2).sample(4)
    assert not torch.equal(a.support_x, c.support_x)
    sampler = SineTaskSampler(5, 5, seed=1)
    first, second = sampler.sample(4), sampler.sample(4)
    assert not torch.equal(first.phases, second.phases)  # a sampler moves on


def test_half_range_support_points_and_bad_settings():
    batch = SineTaskSampler(10, 20, seed=0, x_range=(-5.0, 0.0)).sample(200)
    assert batch.support_x.max() <= 0.0
    assert batch.query_x.max() > 0.0  # queries still cover [-5, 5]
    for kwargs, match in [({"n_shot": 0}, "n_shot"), ({"n_shot": 5, "n_query": -1}, "n_query"),
                          ({"n_shot": 5, "x_range": (0.0, 0.0)}, "x_range"),
                          ({"n_shot": 5, "x_range": (-6.0, 0.0)}, "x_range")]:
        with pytest.raises(ValueError, match=match):
            SineTaskSampler(**kwargs)


# --------------------------------------------------------------------------- the network and MAML
def test_stacked_weights_give_each_task_its_own_forward_pass():
    net = MLPRegressor()
    weights = {k: v + 0.1 * torch.randn(3, *v.shape) for k, v in net.named_parameters()}
    x = torch.randn(3, 6, 1)
    together = functional_call(net, weights, (x,))
    for t in range(3):
        alone = functional_call(net, {k: v[t] for k, v in weights.items()}, (x[t],))
        torch.testing.assert_close(together[t], alone)


def test_maml_meta_gradient_flows_through_adapt_and_is_second_order():
    """The meta-gradient through ``adapt`` equals a torch.func reference and differs from the first-order one."""
    net = MLPRegressor().double()
    batch = SineTaskSampler(10, 10, seed=0).sample(3)
    sx, sy, qx, qy = (t.double() for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y))
    lr = 0.01

    def meta_gradient(create_graph: bool) -> dict[str, torch.Tensor]:
        params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
        fast = adapt(net, stack_weights(params, 3), {}, sx, sy, inner_lr=lr, inner_steps=1,
                     create_graph=create_graph, loss_fn=per_task_mse)
        loss = per_task_mse(functional_call(net, fast, (qx,)), qy)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    def reference_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for t in range(3):  # one task at a time, the inner step by torch.func.grad
            g = grad(lambda p: per_task_mse(functional_call(net, p, (sx[t],)), sy[t]))(params)
            fast = {k: params[k] - lr * g[k] for k in params}
            total = total + per_task_mse(functional_call(net, fast, (qx[t],)), qy[t])
        return total

    ours = meta_gradient(create_graph=True)
    reference = grad(reference_loss)({k: v.detach() for k, v in net.named_parameters()})
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name])
    first_order = meta_gradient(create_graph=False)
    assert all(v.abs().sum() > 0 for v in ours.values())
    assert max((ours[k] - first_order[k]).abs().max().item() for k in ours) > 1e-6


def test_adaptation_curves_match_adapt_with_that_many_steps():
    net = MLPRegressor()
    batch = SineTaskSampler(5, 0, seed=4).sample(1)
    sx, sy, grid = batch.support_x[0], batch.support_y[0], query_grid(50)
    predictions, losses = adaptation_curves(net, sx, sy, grid, inner_lr=0.01, inner_steps=4)
    assert predictions.shape == (5, 50) and losses.shape == (5,)
    params = {k: v.detach().requires_grad_() for k, v in net.named_parameters()}
    after4 = adapt(net, params, {}, sx, sy, inner_lr=0.01, inner_steps=4, create_graph=False, loss_fn=per_task_mse)
    torch.testing.assert_close(predictions[4], functional_call(net, after4, (grid,)).squeeze(-1).detach())
    assert losses[4] < losses[0]
    assert all(p.grad is None for p in net.parameters()), "the model itself is never modified"


def test_evaluate_sine_is_deterministic_and_batching_does_not_change_it():
    net = MLPRegressor()
    a = evaluate_sine(net, n_tasks=30, n_shot=5, steps=(0, 2), seed=9)
    b = evaluate_sine(net, n_tasks=30, n_shot=5, steps=(0, 2), seed=9, batch_size=7)
    assert [r.steps for r in a] == [0, 2] and a[0].n_tasks == 30
    for x, y in zip(a, b):
        assert x.mse == pytest.approx(y.mse, rel=1e-5) and x.ci95 == pytest.approx(y.ci95, rel=1e-4)
    with pytest.raises(ValueError, match="steps"):
        evaluate_sine(net, n_tasks=3, n_shot=5, steps=(-1,))


def test_sines_on_which_sgd_diverges_are_counted_not_averaged():
    net = MLPRegressor()
    calm, wild = evaluate_sine(net, n_tasks=40, n_shot=5, steps=(3,), inner_lr=0.01, seed=1)[0], \
        evaluate_sine(net, n_tasks=40, n_shot=5, steps=(3,), inner_lr=1e4, seed=1)[0]
    assert calm.diverged == 0 and math.isfinite(calm.mse) and calm.median <= 12.5 * 4
    assert wild.diverged == 40 and math.isnan(wild.mse) and wild.median == math.inf


def test_training_is_seeded_and_learns():
    config = SineTrainConfig(mode="maml", iterations=300, meta_batch_size=5, log_every=100, val_tasks=50)
    nets = [MLPRegressor(), MLPRegressor()]
    results = [train_sine(net, config) for net in nets]
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    history = results[0].history
    assert [h["step"] for h in history] == [100, 200, 300]
    assert history[-1]["val_mse"] < history[0]["val_mse"]
    with pytest.raises(ValueError, match="mode"):
        SineTrainConfig(mode="reptile")
    with pytest.raises(ValueError, match="meta_batch_size"):
        SineTrainConfig(meta_batch_size=0)


# --------------------------------------------------------------------------- CLI and checkpoints
def test_train_sine_writes_a_self_describing_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sine.safetensors"
    argv = ["train-sine", "--model", "pretrained", "--out", str(out), "--iterations", "20", "--log-every", "10",
            "--quiet"]
    monkeypatch.setattr(sys, "argv", ["fewshot", *argv])  # what the command records
    assert main(argv) == 0
    meta = read_checkpoint_info(out)
    assert meta["method"] == "sine_pretrained" and meta["steps_done"] == 20
    assert meta["command"] == "fewshot " + " ".join(argv)
    assert meta["train_config"]["mode"] == "pretrained" and len(meta["history"]) == 2
    model, info = load_checkpoint(out)
    assert isinstance(model, MLPRegressor) and not model.training
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "sine_pretrained"

    assert main(["evaluate", "--checkpoint", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "sine-wave regressor" in err[0]
    assert main(["train-sine", "--model", "maml", "--out", str(tmp_path), "--iterations", "1"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_sine_models_are_no_image_classifier_choice(capsys):
    assert "sine_maml" not in METHODS and "sine_pretrained" not in METHODS
    with pytest.raises(SystemExit) as exc:
        main(["train", "--method", "sine_maml", "--out", "x.safetensors"])
    assert exc.value.code == 2
    for bad in (["--iterations", "0"], ["--inner-lr", "-1"], ["--model", "reptile"]):
        with pytest.raises(SystemExit) as exc:
            main(["train-sine", "--model", "maml", "--out", "x.safetensors", *bad])
        assert exc.value.code == 2


@pytest.mark.skipif(not (SHIPPED / "maml.safetensors").exists(), reason="checkpoints/sine not made yet")
def test_shipped_sine_checkpoints_load_and_maml_adapts_better_in_one_step():
    models = {}
    for name in ("maml", "pretrained"):
        model, info = load_checkpoint(SHIPPED / f"{name}.safetensors", expect_method=f"sine_{name}")
        assert info["command"].startswith("python -m fewshot train-sine --model " + name)
        models[name] = model
    # 100 fixed sines (not the benchmark's 1000; the same for both models), K = 10, one step of SGD at 0.01.
    one_step = {name: evaluate_sine(m, n_tasks=100, n_shot=10, steps=(1,), seed=2024)[0] for name, m in models.items()}
    assert one_step["maml"].mse < one_step["pretrained"].mse, one_step
