"""Proto-MAML (prototype-initialised head) and MAML++'s options: learned inner rates, multi-step loss.

float64 on a tiny Conv-4 (4 filters, 16x16 images), so gradient checks can be tight.
"""

from __future__ import annotations

import pytest
import torch

from fewshot import MAML, PrototypicalNetwork, Task
from fewshot.methods.maml import clip_inner_grads, msl_weights

DT = torch.float64


def tiny(**kwargs) -> MAML:
    kwargs = {"hidden": 4, "inner_lr": 0.1, "inner_steps": 1, **kwargs}
    torch.manual_seed(kwargs.pop("seed", 0))
    return MAML(kwargs.pop("n_way", 3), **kwargs).to(DT)


@pytest.fixture
def task(make_task) -> Task:
    return make_task(3, 2, 3, size=16, dtype=DT, noise=0.3)


@pytest.mark.parametrize("batch_norm", ["transductive", "running"])
def test_zero_steps_is_protonet_up_to_a_per_query_constant(task, batch_norm):
    model = tiny(proto_head=True, inner_steps=0, batch_norm=batch_norm).eval()
    proto = PrototypicalNetwork(hidden=4).to(DT).eval()
    proto.backbone.load_state_dict(model.backbone.state_dict(), strict=batch_norm == "running")
    if batch_norm == "running":  # the encoder's running statistics, not the defaults
        for block in list(model.backbone.blocks) + list(proto.backbone.blocks):
            torch.manual_seed(3)
            block.norm.running_mean.copy_(torch.randn(4, dtype=DT) * 0.1)
            block.norm.running_var.copy_(torch.rand(4, dtype=DT) + 0.5)
    with torch.no_grad():
        model.process_support_set(task.support_images, task.support_labels)
        ours = model(task.query_images)
        if batch_norm == "running":
            proto.process_support_set(task.support_images, task.support_labels)
            theirs = proto(task.query_images)
        else:  # each forward pass normalises with its own batch, as MAML's transductive mode does
            proto.train()
            proto.process_support_set(task.support_images, task.support_labels)
            theirs = proto(task.query_images)
    difference = ours - theirs  # a constant (the query's squared norm) along each row
    torch.testing.assert_close(difference, difference[:, :1].expand_as(difference), rtol=0, atol=1e-9)
    assert not torch.allclose(difference[:, 0], torch.zeros_like(difference[:, 0]))
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_answers_any_number_of_classes(make_task):
    model = tiny(proto_head=True, n_way=3).eval()
    assert model.fixed_way is None
    for way in (2, 5, 7):
        t = make_task(way, 1, 2, size=16, dtype=DT, seed=way)
        model.process_support_set(t.support_images, t.support_labels)
        assert model(t.query_images).shape == (2 * way, way)


def _meta_loss(model: MAML, task: Task) -> torch.Tensor:
    model.train()
    loss, _ = model.episode_loss(task)
    return loss


@pytest.mark.parametrize("steps,clip", [(1, 0.0), (2, 0.0), (2, 1e-2)])
def test_second_order_meta_gradient_through_the_prototype_head_matches_finite_differences(task, steps, clip):
    model = tiny(proto_head=True, inner_steps=steps, inner_lr=0.05, inner_grad_clip=clip)
    params = list(model.parameters())
    grads = torch.autograd.grad(_meta_loss(model, task), params)
    torch.manual_seed(5)
    direction = [torch.randn_like(p) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(eps * d)
    plus = _meta_loss(model, task).item()
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.sub_(2 * eps * d)
    minus = _meta_loss(model, task).item()
    numeric = (plus - minus) / (2 * eps)
    assert analytic.item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)

    first = tiny(proto_head=True, inner_steps=steps, inner_lr=0.05, first_order=True, inner_grad_clip=clip)
    first.load_state_dict(model.state_dict())
    with torch.no_grad():  # back to the same point
        for p, q in zip(first.parameters(), model.parameters()):
            p.copy_(q)
    fo_grads = torch.autograd.grad(_meta_loss(first, task), list(first.parameters()))
    fo = sum((g * d).sum() for g, d in zip(fo_grads, direction))
    assert abs(fo.item() - numeric) > 1e-6 * max(1.0, abs(numeric))


def test_the_meta_gradient_reaches_the_encoder_through_the_head_init(task):
    """With no inner step the loss depends on the encoder only through the prototypes and the queries."""
    model = tiny(proto_head=True, inner_steps=0)
    loss = _meta_loss(model, task)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_learned_inner_rates_get_gradients_and_stay_positive(task):
    model = tiny(learn_inner_lr=True, inner_steps=2, inner_lr=0.1)
    assert model.log_inner_lr is not None and model.log_inner_lr.shape == (2, 4 * 4 + 2)
    assert torch.allclose(model.inner_lr_at(0, "head.weight"), torch.tensor(0.1, dtype=DT))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)  # large steps: exp() keeps the rates positive anyway
    for _ in range(3):
        optimizer.zero_grad()
        _meta_loss(model, task).backward()
        assert model.log_inner_lr.grad is not None and model.log_inner_lr.grad.abs().sum() > 0
        optimizer.step()
    rates = torch.stack([model.inner_lr_at(s, n) for s in range(2) for n in model._lr_names])
    assert (rates > 0).all()
    assert not torch.allclose(rates, torch.full_like(rates, 0.1))
    # the rates are what the inner loop uses: a model with them gives other answers than one with the start rate
    model.eval()
    model.process_support_set(task.support_images, task.support_labels)
    learned = model(task.query_images)
    with torch.no_grad():
        model.log_inner_lr.fill_(torch.log(torch.tensor(0.1)))
    model.process_support_set(task.support_images, task.support_labels)
    assert not torch.allclose(learned, model(task.query_images))


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("progress", [0.0, 0.1, 0.29, 0.3, 0.9])
def test_multi_step_loss_weights_sum_to_one_and_anneal(steps, progress):
    w = msl_weights(steps, progress, 0.3)
    assert len(w) == steps and sum(w) == pytest.approx(1.0) and min(w) >= 0
    if progress >= 0.3:
        assert w == [0.0] * (steps - 1) + [1.0]
    if steps > 1 and progress < 0.3:
        assert w[0] >= 0.03 / steps and w[-1] >= w[0] - 1e-12
    assert msl_weights(steps, 0.0, 0.3) == pytest.approx([1 / steps] * steps)


def test_multi_step_loss_is_the_weighted_sum_of_per_step_query_losses(task):
    model = tiny(inner_steps=2, multi_step_loss=0.5)
    model.on_train_progress(0.0)
    mixed = _meta_loss(model, task)
    plain = tiny(inner_steps=2)
    plain.load_state_dict(model.state_dict())
    model_losses = []
    for steps in (1, 2):
        plain.inner_steps = steps
        model_losses.append(_meta_loss(plain, task))
    torch.testing.assert_close(mixed, 0.5 * model_losses[0] + 0.5 * model_losses[1])
    model.on_train_progress(0.6)  # past the annealing: the final step only
    torch.testing.assert_close(_meta_loss(model, task), model_losses[1])


def test_inner_gradient_clip_scales_long_gradients_down_to_the_limit_and_leaves_short_ones():
    grads = [torch.tensor([3.0, 0.0], dtype=DT), torch.tensor([[4.0]], dtype=DT)]  # norm 5
    clipped = clip_inner_grads(grads, 1.0)
    assert torch.sqrt(sum(g.pow(2).sum() for g in clipped)).item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(clipped[0], torch.tensor([0.6, 0.0], dtype=DT), rtol=1e-6, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(clip_inner_grads(grads, 10.0), grads))
    assert all(a is b for a, b in zip(clip_inner_grads(grads, 0.0), grads))  # 0: off
    # per task: each row (the stacked inner loop's task) is clipped on its own norm
    stacked = [torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=DT)]
    torch.testing.assert_close(clip_inner_grads(stacked, 1.0, per_task=True)[0],
                               torch.tensor([[0.6, 0.8], [0.3, 0.4]], dtype=DT), rtol=1e-6, atol=0)


def test_a_clipped_inner_step_moves_the_weights_by_at_most_lr_times_the_limit(task):
    """One Proto-MAML step with the clip: the whole weight change has norm lr x limit (the gradient is longer)."""
    plain = tiny(proto_head=True, inner_lr=0.05).eval()
    clipped = tiny(proto_head=True, inner_lr=0.05, inner_grad_clip=1e-3).eval()
    moves = []
    for model in (plain, clipped):
        steps = list(model.adaptation(task.support_images, task.support_labels))
        moves.append(torch.sqrt(sum((steps[1].weights[k] - steps[0].weights[k]).pow(2).sum() for k in steps[0].weights)))
    assert moves[0].item() > 0.05 * 1e-3 * 10  # unclipped, the step is far longer than the limit allows
    assert moves[1].item() == pytest.approx(0.05 * 1e-3, rel=1e-5)
    # the model's own inner loop takes the same clipped step as the observable one
    clipped.process_support_set(task.support_images, task.support_labels)
    for name, value in steps[1].weights.items():
        torch.testing.assert_close(clipped.fast_weights[name], value)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="inner_grad_clip"):
        MAML(3, inner_grad_clip=-1.0)
    with pytest.raises(ValueError, match="inner_grad_clip"):
        MAML(3, inner_grad_clip=float("nan"))
    with pytest.raises(ValueError, match="multi_step_loss"):
        MAML(3, multi_step_loss=1.5)
    with pytest.raises(ValueError, match="inner_steps"):
        MAML(3, inner_steps=0, learn_inner_lr=True)
    with pytest.raises(ValueError, match="inner_lr"):
        MAML(3, inner_lr=0.0, learn_inner_lr=True)


@pytest.fixture(scope="module")
def folder_data(pattern_folder):
    """5 classes x 5 noisy binary patterns (16x16 PNGs): a real folder dataset, no Omniglot needed."""
    return pattern_folder(5, 5, 16)


def test_cli_trains_and_evaluates_a_proto_maml_model(tmp_path, folder_data, capsys):
    """--proto-head/--learn-inner-lr/--multi-step-loss reach the model and its record; it answers another way."""
    import json

    from fewshot.cli import main

    out = tmp_path / "pm.safetensors"
    data = ["--dataset", "folder", "--data-dir", str(folder_data), "--device", "cpu"]
    assert main(["train", "--method", "maml", *data, "--n-way", "3", "--n-shot", "1", "--n-query", "2",
                 "--episodes", "3", "--image-size", "16", "--hidden", "8", "--proto-head", "--learn-inner-lr",
                 "--multi-step-loss", "0.5", "--inner-steps", "2", "--inner-lr", "0.01", "--val-every", "0",
                 "--inner-grad-clip", "2.5", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(out), "--json"]) == 0
    kwargs = json.loads(capsys.readouterr().out)["method_kwargs"]
    kwargs = kwargs if isinstance(kwargs, dict) else json.loads(kwargs)
    assert kwargs["proto_head"] is True and kwargs["learn_inner_lr"] is True and kwargs["multi_step_loss"] == 0.5
    assert kwargs["inner_grad_clip"] == 2.5
    assert main(["evaluate", "--checkpoint", str(out), *data, "--n-way", "4", "--n-shot", "1", "--n-query", "2",
                 "--episodes", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_way"] == 4 and report["inner_grad_clip"] == 2.5  # trained 3-way, answers 4-way: no fixed head
    assert main(["evaluate", "--checkpoint", str(out), *data, "--n-way", "3", "--n-query", "2", "--episodes", "2",
                 "--inner-grad-clip", "0", "--json"]) == 0
    assert "inner_grad_clip" not in json.loads(capsys.readouterr().out)  # turned off at test time
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--checkpoint", str(out), *data, "--n-way", "3", "--episodes", "2", "--inner-grad-clip", "-1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("error:") == 1 and "--inner-grad-clip" in err and "Traceback" not in err
    code = main(["evaluate", "--checkpoint", str(out), *data, "--n-way", "3", "--n-query", "2", "--episodes", "2",
                 "--batch-norm", "running"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "running statistics" in err and "Traceback" not in err
