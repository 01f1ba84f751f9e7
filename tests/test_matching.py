"""Matching Networks: attention is a distribution, logits are log-probabilities, 1-shot identity case."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewshot import MatchingNetwork


@pytest.fixture(params=[False, True], ids=["plain", "fce"])
def model(request) -> MatchingNetwork:
    # identity backbone on 8x8 images: 64 features
    return MatchingNetwork(nn.Flatten(), fce=request.param, feature_dim=64)


def test_attention_rows_sum_to_one(model, tiny_task):
    model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    attention = model.attention(tiny_task.query_images)
    assert attention.shape == (6, 6)  # (queries, support examples)
    assert bool((attention >= 0).all())
    torch.testing.assert_close(attention.sum(1), torch.ones(6))


def test_exp_logits_sum_to_one_per_query(model, tiny_task):
    model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    logits = model(tiny_task.query_images)
    assert logits.shape == (6, 3)
    torch.testing.assert_close(logits.exp().sum(1), torch.ones(6))
    # the class probability is the attention mass on that class's support examples
    attention = model.attention(tiny_task.query_images)
    one_hot = nn.functional.one_hot(tiny_task.support_labels, 3).float()
    torch.testing.assert_close(logits.exp(), attention @ one_hot)


def test_plain_attention_is_softmax_of_cosine_similarity(tiny_task):
    model = MatchingNetwork(nn.Flatten(), feature_dim=64, scale_init=None)  # the paper's form
    model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    q = nn.functional.normalize(tiny_task.query_images.flatten(1), dim=1)
    s = nn.functional.normalize(tiny_task.support_images.flatten(1), dim=1)
    torch.testing.assert_close(model.attention(tiny_task.query_images), torch.softmax(q @ s.T, dim=1))


def test_cosines_are_scaled_by_a_learned_scale(tiny_task):
    model = MatchingNetwork(nn.Flatten(), feature_dim=64)  # default: scale starts at 10
    model.process_support_set(tiny_task.support_images, tiny_task.support_labels)
    q = nn.functional.normalize(tiny_task.query_images.flatten(1), dim=1)
    s = nn.functional.normalize(tiny_task.support_images.flatten(1), dim=1)
    torch.testing.assert_close(model.attention(tiny_task.query_images), torch.softmax(10.0 * (q @ s.T), dim=1))
    loss, _ = model.episode_loss(tiny_task)
    loss.backward()
    assert model.log_scale.grad is not None and model.log_scale.grad.abs() > 0  # the scale is learned
    with pytest.raises(ValueError, match="positive"):
        MatchingNetwork(nn.Flatten(), feature_dim=64, scale_init=0.0)


def test_one_shot_identity_case_argmax():
    # 4 classes, 1 shot: each class is one basis direction; queries are noisy copies of the supports
    support = torch.eye(4).reshape(4, 1, 2, 2)
    labels = torch.tensor([2, 0, 3, 1])
    queries = support + 0.05 * torch.rand(4, 1, 2, 2)
    model = MatchingNetwork(nn.Flatten(), feature_dim=4)
    model.process_support_set(support, labels)
    assert torch.equal(model(queries).argmax(1), labels)


def test_fce_has_its_own_parameters_and_accuracy_contract(make_task):
    plain, fce = MatchingNetwork(nn.Flatten(), feature_dim=64), MatchingNetwork(nn.Flatten(), fce=True, feature_dim=64)
    assert sum(p.numel() for p in plain.parameters()) == 1  # the cosine scale
    assert sum(p.numel() for p in MatchingNetwork(nn.Flatten(), feature_dim=64, scale_init=None).parameters()) == 0
    assert sum(p.numel() for p in fce.parameters()) > 0
    task = make_task(3, 2, 4, size=8)
    _, logits = fce.episode_loss(task)
    assert logits.shape == (12, 3) and torch.isfinite(logits).all()
    logits.sum().backward()  # gradients reach the FCE LSTMs
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in fce.parameters())
    for seed in range(3):
        task = make_task(3, 2, 4, size=8, seed=seed)
        plain.process_support_set(task.support_images, task.support_labels)
        assert torch.equal(plain(task.query_images).argmax(1), task.query_labels)


def test_checkpoint_saved_before_the_scale_existed_loads_unscaled(tmp_path, make_task):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from fewshot import load_checkpoint, save_checkpoint

    model = MatchingNetwork(hidden=8, feature_dim=8, scale_init=None).eval()
    path = save_checkpoint(tmp_path / "new.safetensors", model, method="matching")
    with safe_open(str(path), framework="pt") as handle:
        record = json.loads(handle.metadata()["fewshot"])
    del record["method_kwargs"]["scale_init"]  # what a checkpoint written before the option looks like
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={"fewshot": json.dumps(record)})
    loaded, _ = load_checkpoint(old)
    assert loaded.config["scale_init"] is None and loaded.log_scale is None
    task = make_task(3, 1, 2, size=16)
    for m in (model, loaded):
        m.process_support_set(task.support_images, task.support_labels)
    torch.testing.assert_close(loaded(task.query_images), model(task.query_images))
