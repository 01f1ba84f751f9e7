"""Transfer baseline: pre-training uses dataset class ids; fine-tuning never changes the model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fewshot import FineTuneBaseline, Task


def _with_class_ids(task: Task, class_ids: list[int]) -> Task:
    return Task(task.support_images, task.support_labels, task.query_images, task.query_labels,
                torch.tensor(class_ids))


def test_pretraining_loss_uses_dataset_class_ids(make_task):
    model = FineTuneBaseline(10, hidden=8, finetune_steps=5).eval()  # eval: no BatchNorm batch statistics
    task = _with_class_ids(make_task(3, 2, 2, size=16), [7, 2, 4])
    loss, query_logits = model.episode_loss(task)
    images = torch.cat([task.support_images, task.query_images])
    targets = torch.tensor([7, 7, 2, 2, 4, 4] + [7, 7, 2, 2, 4, 4])
    logits = model.classifier(model.backbone(images))
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets))
    # episode labels would give a different loss: the class ids really are used
    assert not torch.allclose(loss, F.cross_entropy(logits, torch.cat([task.support_labels, task.query_labels])))
    torch.testing.assert_close(query_logits, logits[6:][:, [7, 2, 4]])


def test_class_id_outside_the_head_is_refused(make_task):
    model = FineTuneBaseline(5, hidden=8)
    with pytest.raises(ValueError, match="class id 9"):
        model.episode_loss(_with_class_ids(make_task(3, 1, 1, size=16), [0, 9, 1]))


@pytest.mark.parametrize("finetune_backbone", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_process_support_set_leaves_the_model_unchanged(make_task, finetune_backbone, mode):
    model = getattr(FineTuneBaseline(6, hidden=8, finetune_steps=10, finetune_backbone=finetune_backbone), mode)()
    before = copy.deepcopy(model.state_dict())
    task = make_task(3, 2, 2, size=16)
    model.process_support_set(task.support_images, task.support_labels)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"
    assert all(p.grad is None for p in model.parameters())
    assert model.head[0].shape == (3, 8)  # a new 3-way head
    if finetune_backbone:  # the fine-tuned copy moved away from the model's own weights
        assert not torch.equal(model.backbone_weights["blocks.0.conv.weight"], model.backbone.blocks[0].conv.weight)


def test_fine_tuned_head_fits_the_support_set(make_task):
    model = FineTuneBaseline(6, hidden=8, finetune_steps=200, finetune_lr=0.5).eval()
    task = make_task(3, 2, 2, size=16)
    with torch.no_grad():  # evaluate() calls it under no_grad: fine-tuning must still happen
        model.process_support_set(task.support_images, task.support_labels)
        logits = model(task.support_images)
    assert torch.equal(logits.argmax(1), task.support_labels)
    assert model(task.query_images).shape == (6, 3)
