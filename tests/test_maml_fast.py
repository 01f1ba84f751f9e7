"""MAML's direct Conv-4 path (``_conv4_logits``: channels_last, first convolution as a matrix product,
support statistics reused for the queries) against the straightforward one (``functional_call`` on the
module, NCHW): the same logits, inner-loop weights and second-order meta-gradients.

Everything is float64 on a tiny Conv-4, so agreement is to rounding; one float32 check at the real size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fewshot.methods.maml as maml_module
from fewshot import MAML, adapt, adapt_steps
from fewshot.functional import functional_call

DT = torch.float64


def tiny_maml(**kwargs) -> MAML:
    kwargs = {"hidden": 4, "inner_lr": 0.5, "inner_steps": 2, **kwargs}
    return MAML(kwargs.pop("n_way", 3), **kwargs).to(DT)


@pytest.fixture
def straightforward(monkeypatch):
    """Turn the direct path off: every forward goes through ``functional_call`` on the module."""
    def use() -> None:
        monkeypatch.setattr(maml_module, "_direct_conv4", lambda net, weights: None)
    return use


def randomise_norms(model: MAML) -> None:
    """BatchNorm starts at gamma=1, beta=0; give it values so the tests see their gradients matter."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for block in model.net.backbone.blocks:
            block.norm.weight.copy_(1 + 0.3 * torch.randn(block.norm.weight.shape, generator=g, dtype=DT))
            block.norm.bias.copy_(0.3 * torch.randn(block.norm.bias.shape, generator=g, dtype=DT))


@pytest.mark.parametrize("in_channels", [1, 3])
def test_direct_forward_equals_functional_call_in_every_batch_norm_mode(in_channels):
    torch.manual_seed(0)
    model = tiny_maml(in_channels=in_channels)
    randomise_norms(model)
    weights = model.meta_weights()
    eps = maml_module._direct_conv4(model.net, weights)
    assert eps == [1e-5] * 4
    x = torch.randn(7, in_channels, 16, 16, dtype=DT)
    close = {"rtol": 1e-11, "atol": 1e-12}
    torch.testing.assert_close(maml_module._conv4_logits(weights, x, eps), functional_call(model.net, weights, (x,)), **close)
    torch.testing.assert_close(maml_module._conv4_logits(weights, x, eps, stats_from=3),
                               functional_call(model.net, weights, (x,), {"stats_from": 3}), **close)
    # Statistics saved from a batch-statistics pass over the support set, then applied to the queries alone,
    # equal normalising support + queries with the support set's statistics.
    saved: list = []
    support_logits = maml_module._conv4_logits(weights, x[:3], eps, save_stats=saved)
    torch.testing.assert_close(support_logits, functional_call(model.net, weights, (x[:3],)), **close)
    torch.testing.assert_close(maml_module._conv4_logits(weights, x[3:], eps, stats=saved),
                               functional_call(model.net, weights, (x,), {"stats_from": 3})[3:], **close)


def test_first_convolution_as_matrix_product_equals_conv2d_and_is_channels_last():
    torch.manual_seed(0)
    for c in (1, 3):
        x, w, b = torch.randn(4, c, 11, 9), torch.randn(8, c, 3, 3), torch.randn(8)
        out = maml_module._few_channel_conv(x, w, b)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_norm", ["transductive", "support"])
def test_second_order_meta_gradient_equals_the_straightforward_path(make_task, straightforward, batch_norm):
    tasks = [make_task(3, 2, 3, size=16, dtype=DT, noise=0.3, seed=s) for s in range(2)]
    model = tiny_maml(batch_norm=batch_norm).train()
    randomise_norms(model)

    def meta_gradient() -> dict[str, torch.Tensor]:
        model.zero_grad()
        for t in tasks:
            (model.episode_loss(t)[0] / len(tasks)).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    fast = meta_gradient()
    straightforward()
    reference = meta_gradient()
    assert all(g.abs().max() > 0 for g in reference.values())
    for name in reference:
        torch.testing.assert_close(fast[name], reference[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("stats_from_support", [False, True])
def test_adapt_steps_equals_the_straightforward_path(make_task, straightforward, stats_from_support):
    task = make_task(3, 2, 3, size=16, dtype=DT, noise=0.3)
    model = tiny_maml()
    randomise_norms(model)

    def run() -> list:
        return list(adapt_steps(model.net, model.meta_weights(), {}, task.support_images, task.support_labels,
                                inner_lr=0.5, inner_steps=3, query_images=task.query_images,
                                stats_from_support=stats_from_support))

    fast = run()
    final = adapt(model.net, {k: v.detach().requires_grad_() for k, v in model.meta_weights().items()}, {},
                  task.support_images, task.support_labels, inner_lr=0.5, inner_steps=3, create_graph=False)
    straightforward()
    reference = run()
    assert len(fast) == len(reference) == 4
    for a, b in zip(fast, reference):
        assert a.support_loss == pytest.approx(b.support_loss, rel=1e-10)
        assert a.support_accuracy == b.support_accuracy
        torch.testing.assert_close(a.query_logits, b.query_logits, rtol=1e-10, atol=1e-12)
        for name in b.weights:
            torch.testing.assert_close(a.weights[name], b.weights[name], rtol=1e-10, atol=1e-12)
    for name in final:  # and adapt() ends where adapt_steps does
        torch.testing.assert_close(final[name], fast[-1].weights[name], rtol=1e-10, atol=1e-12)


def test_float32_at_full_size_agrees_with_the_straightforward_path(make_task, straightforward):
    """Conv-4 with 64 filters on 28x28, float32: the summation order differs, the numbers agree to float32."""
    task = make_task(5, 1, 2, size=28, noise=0.3)
    torch.manual_seed(0)
    model = MAML(5, inner_steps=2, inner_lr=0.4, batch_norm="support").train()

    def meta_gradient() -> list[torch.Tensor]:
        model.zero_grad()
        model.episode_loss(task)[0].backward()
        return [p.grad.clone() for p in model.parameters()]

    fast = meta_gradient()
    straightforward()
    reference = meta_gradient()
    scale = max(float(g.abs().max()) for g in reference)
    assert max(float((a - b).abs().max()) for a, b in zip(fast, reference)) <= 1e-4 * scale


def test_other_networks_and_partial_weights_take_the_module_path():
    model = tiny_maml()
    assert maml_module._direct_conv4(model.net, model.meta_weights()) is not None
    partial = {k: v for k, v in model.meta_weights().items() if k != "head.bias"}
    assert maml_module._direct_conv4(model.net, partial) is None
    other = MAML(3, backbone=nn.Sequential(nn.Flatten(), nn.Linear(16, 8)), feature_dim=8)
    assert maml_module._direct_conv4(other.net, other.meta_weights()) is None
    tracked = tiny_maml()
    tracked.net.backbone.blocks[0].norm = nn.BatchNorm2d(4).to(DT)  # running statistics: not MAML's own network
    assert maml_module._direct_conv4(tracked.net, tracked.meta_weights()) is None


def test_winograd_probe_computes_the_same_convolution_and_gradients():
    """benchmarks/winograd_probe.py times a Winograd convolution against F.conv2d: it must compute the same thing
    (float64, so rounding cannot hide a wrong transform), including the second-order gradient MAML needs."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "winograd_probe.py"
    spec = importlib.util.spec_from_file_location("winograd_probe", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    for name in ("BB", "GG", "AA"):
        setattr(probe, name, getattr(probe, name).double())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 8, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()
    results = []
    for conv in (probe.direct_conv3x3, probe.winograd_conv3x3):
        y = conv(x, w, b)
        gx, gw = torch.autograd.grad((y * y.sin()).sum(), (x, w), create_graph=True)
        second = torch.autograd.grad((gx * gx).sum() + (gw ** 3).sum(), (x, w, b))
        results.append((y, gx, gw, *second))
    for a, c in zip(*results):
        torch.testing.assert_close(c, a, rtol=1e-9, atol=1e-9)
