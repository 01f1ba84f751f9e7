"""MAML / first-order MAML: the inner loop, purity, and meta-gradients checked against finite differences.

Everything runs in float64 on a tiny Conv-4 (4 filters, 16x16 images), so gradient checks can be tight.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fewshot import MAML, Task, adapt, adapt_steps

DT = torch.float64


def tiny_maml(**kwargs) -> MAML:
    kwargs = {"hidden": 4, "inner_lr": 0.5, "inner_steps": 1, **kwargs}
    return MAML(kwargs.pop("n_way", 3), **kwargs).to(DT)


@pytest.fixture
def task(make_task) -> Task:
    return make_task(3, 2, 3, size=16, dtype=DT, noise=0.3)


def support_loss(model: MAML, weights: dict, task: Task) -> torch.Tensor:
    return F.cross_entropy(functional_call(model.net, weights, (task.support_images,)), task.support_labels)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy(model.state_dict())


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), f"{key} changed"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_zero_inner_steps_is_the_plain_forward(task, mode):
    model = getattr(tiny_maml(inner_steps=0, inner_steps_test=0), mode)()
    model.process_support_set(task.support_images, task.support_labels)
    # float64 rounding only: on a CPU the model runs its convolutions in channels_last (other summation order)
    torch.testing.assert_close(model(task.query_images), model.net(task.query_images), rtol=1e-12, atol=1e-13)


def test_adapt_one_step_equals_hand_computed_sgd_on_a_linear_layer():
    torch.manual_seed(1)
    net = nn.Linear(4, 3).to(DT)
    x, y = torch.randn(6, 4, dtype=DT), torch.tensor([0, 1, 2, 0, 1, 2])
    weights = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    new = adapt(net, weights, {}, x, y, inner_lr=0.3, inner_steps=1, create_graph=False)
    # d CE / d logits = (softmax - one_hot) / N; then the chain rule through x W^T + b
    w, b = net.weight.detach(), net.bias.detach()
    d_logits = (torch.softmax(x @ w.T + b, dim=1) - F.one_hot(y, 3).to(DT)) / 6
    torch.testing.assert_close(new["weight"], w - 0.3 * d_logits.T @ x)
    torch.testing.assert_close(new["bias"], b - 0.3 * d_logits.sum(0))
    # inputs are not modified
    assert torch.equal(weights["weight"], w) and torch.equal(weights["bias"], b)
    # zero steps returns the same weights
    assert adapt(net, weights, {}, x, y, inner_lr=0.3, inner_steps=0, create_graph=False) is weights


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_one_inner_step_of_the_model_is_one_sgd_step(task, mode):
    model = getattr(tiny_maml(inner_lr=0.3, inner_lr_test=0.2), mode)()
    lr = 0.3 if mode == "train" else 0.2
    params = dict(model.net.named_parameters())
    grads = torch.autograd.grad(support_loss(model, params, task), list(params.values()))
    model.process_support_set(task.support_images, task.support_labels)
    for (name, p), g in zip(params.items(), grads):
        torch.testing.assert_close(model.fast_weights[name], p - lr * g)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_state_dict_bit_identical_after_adaptation(task, mode):
    model = getattr(tiny_maml(inner_steps=3, inner_steps_test=3), mode)()
    before = snapshot(model)
    model.process_support_set(task.support_images, task.support_labels)
    model(task.query_images)
    assert_same_state(model, before)
    steps = list(model.adaptation(task.support_images, task.support_labels, task.query_images))
    assert len(steps) == 4
    assert_same_state(model, before)
    if mode == "eval":
        assert all(p.grad is None for p in model.parameters())
        assert not model(task.query_images).requires_grad  # eval logits are detached from the meta-parameters


def test_batch_norm_running_stats_are_not_tracked():
    model = tiny_maml()
    assert not any("running" in name for name, _ in model.named_buffers())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_works_under_no_grad(task, mode):
    model = getattr(tiny_maml(inner_steps=2, inner_steps_test=2), mode)()
    model.process_support_set(task.support_images, task.support_labels)
    expected = model(task.query_images).detach()
    with torch.no_grad():
        model.process_support_set(task.support_images, task.support_labels)
        logits = model(task.query_images)
    torch.testing.assert_close(logits, expected)
    # and adaptation really happened under no_grad
    assert not torch.allclose(logits, model.net(task.query_images).detach())


def test_adaptation_lowers_the_support_loss(task):
    model = tiny_maml().eval()
    steps = list(model.adaptation(task.support_images, task.support_labels, inner_steps=5, inner_lr=0.2))
    losses = [s.support_loss for s in steps]
    assert losses[-1] < losses[0] - 0.05
    assert all(b < a for a, b in zip(losses, losses[1:]))  # small lr on a smooth loss: monotone
    for s in (steps[0], steps[-1]):  # the reported loss is measured at the reported weights
        assert s.support_loss == pytest.approx(support_loss(model, s.weights, task).item(), rel=1e-10)
    assert steps[0].support_loss == pytest.approx(support_loss(model, dict(model.net.named_parameters()), task).item())


def test_adapt_steps_yields_inner_steps_plus_one_and_ends_at_adapt(task):
    model = tiny_maml().eval()
    steps = list(model.adaptation(task.support_images, task.support_labels, task.query_images,
                                  inner_steps=3, inner_lr=0.3))
    assert [s.step for s in steps] == [0, 1, 2, 3]
    start = {k: v.detach().requires_grad_() for k, v in model.net.named_parameters()}
    for s in steps:
        expected = adapt(model.net, start, {}, task.support_images, task.support_labels, inner_lr=0.3,
                         inner_steps=s.step, create_graph=False)
        for name in expected:
            torch.testing.assert_close(s.weights[name], expected[name].detach(), rtol=1e-12, atol=1e-12)
        assert s.query_logits.shape == (9, 3)
        assert 0.0 <= s.support_accuracy <= 1.0
    # the last step's query predictions are the model's own answer after process_support_set
    model.inner_steps_test, model.inner_lr_test = 3, 0.3
    model.process_support_set(task.support_images, task.support_labels)
    torch.testing.assert_close(steps[-1].query_logits, model(task.query_images))
    # the free function gives the same sequence
    free = list(adapt_steps(model.net, dict(model.net.named_parameters()), {}, task.support_images,
                            task.support_labels, inner_lr=0.3, inner_steps=3))
    torch.testing.assert_close(free[-1].weights, steps[-1].weights)


def _meta_gradient(model: MAML, task: Task) -> dict[str, torch.Tensor]:
    model.train().zero_grad()
    loss, _ = model.episode_loss(task)
    loss.backward()
    return {k: p.grad.detach().clone() for k, p in model.net.named_parameters()}


# a few coordinates of different kinds of meta-parameters: (parameter name, flat index). Not conv
# biases: BatchNorm subtracts them right away, so their gradient is exactly zero.
COORDINATES = [("backbone.blocks.0.conv.weight", 0), ("backbone.blocks.0.conv.weight", 17),
               ("backbone.blocks.1.conv.weight", 40), ("backbone.blocks.2.norm.weight", 1),
               ("backbone.blocks.3.norm.bias", 3), ("head.weight", 5), ("head.bias", 0)]


def _finite_difference(model: MAML, task: Task, name: str, index: int, h: float) -> float:
    param = dict(model.net.named_parameters())[name]
    flat = param.data.view(-1)
    original = flat[index].item()
    values = []
    for delta in (h, -h):
        flat[index] = original + delta
        with torch.no_grad():  # the query loss after adaptation; the inner loop enables grad itself
            values.append(model.episode_loss(task)[0].item())
    flat[index] = original
    return (values[0] - values[1]) / (2 * h)


def test_second_order_meta_gradient_equals_finite_differences(task):
    # Central differences in float64 with h = 1e-6: truncation error ~h^2, rounding ~1e-16/h, and a
    # step this small almost never crosses a ReLU or max-pool kink (measured: ~3e-9 relative error,
    # while h = 1e-4 is already off by 2% because of such kinks).
    model = tiny_maml(inner_steps=2, inner_lr=0.5).train()
    grads = _meta_gradient(model, task)
    before = snapshot(model)
    analytic = torch.tensor([grads[n].view(-1)[i].item() for n, i in COORDINATES], dtype=DT)
    numeric = torch.tensor([_finite_difference(model, task, n, i, 1e-6) for n, i in COORDINATES], dtype=DT)
    assert_same_state(model, before)
    assert analytic.abs().min() > 1e-6  # the coordinates carry signal
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_first_order_meta_gradient_differs_from_second_order(task):
    second = tiny_maml(inner_steps=2, inner_lr=0.5)
    first = tiny_maml(inner_steps=2, inner_lr=0.5, first_order=True)
    first.load_state_dict(second.state_dict())
    g2, g1 = _meta_gradient(second, task), _meta_gradient(first, task)
    v2, v1 = torch.cat([g.flatten() for g in g2.values()]), torch.cat([g.flatten() for g in g1.values()])
    assert (v2 - v1).norm() / v2.norm() > 0.1
    # and the first-order one is not what finite differences give
    name, index = COORDINATES[0]
    numeric = _finite_difference(second, task, name, index, 1e-6)
    assert g2[name].view(-1)[index].item() == pytest.approx(numeric, rel=1e-6)
    assert g1[name].view(-1)[index].item() != pytest.approx(numeric, rel=1e-2)


def test_first_order_meta_gradient_is_query_gradient_at_adapted_weights(task):
    model = tiny_maml(inner_steps=2, inner_lr=0.5, first_order=True)
    grads = _meta_gradient(model, task)
    start = {k: v.detach().requires_grad_() for k, v in model.net.named_parameters()}
    adapted = adapt(model.net, start, {}, task.support_images, task.support_labels, inner_lr=0.5, inner_steps=2,
                    create_graph=False)
    leaves = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    query_loss = F.cross_entropy(functional_call(model.net, leaves, (task.query_images,)), task.query_labels)
    expected = torch.autograd.grad(query_loss, list(leaves.values()))
    for name, g in zip(leaves, expected):
        torch.testing.assert_close(grads[name], g)


def test_meta_gradient_reaches_the_meta_parameters_only_in_training(task):
    model = tiny_maml().eval()
    model.process_support_set(task.support_images, task.support_labels)
    assert not any(w.requires_grad for w in model.fast_weights.values())
    model.train()
    model.process_support_set(task.support_images, task.support_labels)
    assert all(w.requires_grad for w in model.fast_weights.values())


def test_support_batch_norm_makes_each_query_independent(task):
    model = tiny_maml(batch_norm="support").eval()
    model.process_support_set(task.support_images, task.support_labels)
    together = model(task.query_images)
    alone = torch.cat([model(task.query_images[i:i + 1]) for i in range(9)])
    torch.testing.assert_close(together, alone)
    # the paper's transductive mode normalises the query batch by itself: answers depend on the batch
    transductive = tiny_maml(batch_norm="transductive").eval()
    transductive.load_state_dict(model.state_dict())
    transductive.process_support_set(task.support_images, task.support_labels)
    assert not torch.allclose(transductive(task.query_images), model(task.query_images))
    assert not torch.allclose(transductive(task.query_images[:3]), transductive(task.query_images)[:3])
    # the step-by-step view uses the same normalisation
    last = list(model.adaptation(task.support_images, task.support_labels, task.query_images))[-1]
    torch.testing.assert_close(last.query_logits, together)


def test_batch_norm_option_is_validated():
    with pytest.raises(ValueError, match="batch_norm"):
        MAML(5, batch_norm="frozen")


def test_a_5_way_head_refuses_a_6_way_support_set(make_task):
    model = tiny_maml(n_way=5)
    six = make_task(6, 1, 1, size=16, dtype=DT)
    with pytest.raises(ValueError, match="5-way"):
        model.process_support_set(six.support_images, six.support_labels)
    with pytest.raises(ValueError, match="5-way"):
        list(model.adaptation(six.support_images, six.support_labels))
    # fewer classes than the head is fine: logits are cut to the task's classes
    three = make_task(3, 1, 2, size=16, dtype=DT)
    model.process_support_set(three.support_images, three.support_labels)
    assert model(three.query_images).shape == (6, 3)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("batch_norm", ["transductive", "support"])
@pytest.mark.parametrize("clip", [0.0, 1e-3])  # 1e-3: below every task's inner gradient norm, so every step clips
def test_batched_meta_batch_equals_the_per_task_loop(make_task, first_order, batch_norm, clip):
    tasks = [make_task(3, 2, 3, size=16, dtype=DT, noise=0.3, seed=s) for s in range(3)]
    model = tiny_maml(inner_steps=2, first_order=first_order, batch_norm=batch_norm, inner_grad_clip=clip).train()
    model.zero_grad()
    loss, logits = model.batched_episode_loss(tasks)
    loss.backward()
    batched = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    looped_loss, looped_logits = 0.0, []
    for t in tasks:
        task_loss, task_logits = model.episode_loss(t)
        (task_loss / len(tasks)).backward()
        looped_loss += task_loss.item() / len(tasks)
        looped_logits.append(task_logits)
    assert loss.item() == pytest.approx(looped_loss, rel=1e-10)
    for a, b in zip(logits, looped_logits):
        torch.testing.assert_close(a, b)
    for name, p in model.named_parameters():
        torch.testing.assert_close(batched[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("batched", [False, True])
def test_checkpointed_inner_loop_gives_the_same_meta_gradient(make_task, batched):
    """checkpoint_inner trades memory for recomputation; the second-order meta-gradient must not change."""
    tasks = [make_task(3, 2, 3, size=16, dtype=DT, noise=0.3, seed=s) for s in range(2)]
    plain = tiny_maml(inner_steps=3).train()
    checkpointed = tiny_maml(inner_steps=3, checkpoint_inner=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        if batched:
            model.batched_episode_loss(tasks)[0].backward()
        else:
            for t in tasks:
                (model.episode_loss(t)[0] / len(tasks)).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert any(g.abs().max() > 0 for g in grads[0].values())
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-12, atol=1e-14, msg=name)
    assert checkpointed.config["checkpoint_inner"] is True and "checkpoint_inner" not in plain.config


def test_checkpointed_adapt_stores_far_fewer_activations(task):
    """Same adapted weights; the tensors autograd keeps for backward shrink to the step boundaries."""
    model = tiny_maml(inner_steps=4)
    weights = model.meta_weights()

    def run(checkpoint_steps: bool) -> tuple[dict, int]:
        saved = []

        def pack(t):
            saved.append(t.numel())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fast = adapt(model.net, weights, model.buffers_copy(), task.support_images, task.support_labels,
                         inner_lr=0.5, inner_steps=4, create_graph=True, checkpoint_steps=checkpoint_steps)
        return fast, sum(saved)

    reference, stored = run(False)
    fast, stored_checkpointed = run(True)
    for k in fast:
        torch.testing.assert_close(fast[k], reference[k])
        assert fast[k].requires_grad
    assert stored_checkpointed < stored / 4, (stored_checkpointed, stored)


def test_batched_path_steps_aside_for_another_backbone(make_task):
    """The grouped-convolution pass is written for Conv-4; any other backbone trains through the per-task loop."""
    class Flat(nn.Module):
        def forward(self, x, stats_from=None):
            return x.flatten(1)

    model = MAML(3, backbone=Flat(), feature_dim=16 * 16, inner_steps=1).to(DT)
    tasks = [make_task(3, 1, 2, size=16, dtype=DT, seed=s) for s in range(2)]
    assert model.batched_episode_loss(tasks) is None
    loss, logits = model.episode_loss(tasks[0])
    assert torch.isfinite(loss) and logits.shape == (6, 3)
