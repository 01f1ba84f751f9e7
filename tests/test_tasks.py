"""TaskSampler: shapes, label counts, disjointness, seeding, validation, and the get_labels-only contract."""

from __future__ import annotations

import pytest
import torch

from fewshot import SyntheticDataset, Task, TaskSampler, TensorDataset, make_task


@pytest.fixture
def dataset() -> SyntheticDataset:
    return SyntheticDataset(n_classes=8, n_per_class=10, image_size=12, seed=3)


def test_task_shapes(dataset):
    task = TaskSampler(dataset, 5, 2, 3, seed=0).sample_task()
    assert isinstance(task, Task)
    assert task.support_images.shape == (5 * 2, 1, 12, 12)
    assert task.query_images.shape == (5 * 3, 1, 12, 12)
    assert task.support_labels.shape == (10,) and task.query_labels.shape == (15,)
    assert task.class_ids.shape == (5,) and task.n_way == 5
    assert task.support_images.dtype == torch.float32
    assert 0.0 <= float(task.support_images.min()) and float(task.support_images.max()) <= 1.0


def test_each_label_appears_n_shot_and_n_query_times(dataset):
    sampler = TaskSampler(dataset, 4, 3, 5, seed=1)
    for _ in range(10):
        task = sampler.sample_task()
        assert torch.bincount(task.support_labels, minlength=4).tolist() == [3] * 4
        assert torch.bincount(task.query_labels, minlength=4).tolist() == [5] * 4
        assert len(set(task.class_ids.tolist())) == 4  # distinct dataset classes


def test_labels_match_the_dataset_classes_behind_them(dataset):
    """Episode label k must hold images of dataset class class_ids[k]."""
    sampler = TaskSampler(dataset, 5, 2, 3, seed=4)
    labels = torch.tensor(dataset.get_labels())
    for _ in range(10):
        indices, class_ids = sampler.sample_indices()  # (n_way, n_shot + n_query), (n_way,)
        assert indices.shape == (5, 5)
        assert torch.equal(labels[indices], class_ids.unsqueeze(1).expand(5, 5))


def test_images_come_from_the_sampled_indices(dataset):
    sampler = TaskSampler(dataset, 3, 1, 2, seed=7)
    state = sampler.state_dict()
    indices, _ = sampler.sample_indices()
    sampler.load_state_dict(state)  # replay: the task is built from exactly these indices
    task = sampler.sample_task()
    expected = dataset.get_images(indices.reshape(-1)).reshape(3, 3, 1, 12, 12)
    torch.testing.assert_close(task.support_images, expected[:, :1].reshape(3, 1, 12, 12))
    torch.testing.assert_close(task.query_images, expected[:, 1:].reshape(6, 1, 12, 12))


def test_support_and_query_are_disjoint(dataset):
    sampler = TaskSampler(dataset, 5, 4, 6, seed=2)  # 10 of each class's 10 images: every one used
    for _ in range(20):
        indices, _ = sampler.sample_indices()
        support, query = indices[:, :4].reshape(-1).tolist(), indices[:, 4:].reshape(-1).tolist()
        assert len(set(support)) == len(support) and len(set(query)) == len(query)
        assert not set(support) & set(query)


def _draw(sampler: TaskSampler, n: int) -> list[torch.Tensor]:
    return [sampler.sample_indices()[0] for _ in range(n)]


def test_same_seed_same_tasks_different_seed_different_tasks(dataset):
    a, b, c = (TaskSampler(dataset, 5, 1, 2, seed=s) for s in (11, 11, 12))
    first, second, other = _draw(a, 5), _draw(b, 5), _draw(c, 5)
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))
    # consecutive tasks of one sampler differ too
    assert not torch.equal(first[0], first[1])
    # and the images of equal seeds are equal
    t1 = TaskSampler(dataset, 5, 1, 2, seed=11).sample_task()
    t2 = TaskSampler(dataset, 5, 1, 2, seed=11).sample_task()
    assert torch.equal(t1.support_images, t2.support_images) and torch.equal(t1.query_images, t2.query_images)


def test_explicit_generator_is_used(dataset):
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x = TaskSampler(dataset, 3, 1, 1, generator=g1).sample_indices()[0]
    y = TaskSampler(dataset, 3, 1, 1, generator=g2).sample_indices()[0]
    assert torch.equal(x, y)
    # the sampler advanced the generator it was given
    assert not torch.equal(g1.get_state(), torch.Generator().manual_seed(5).get_state())


def test_sampler_does_not_touch_global_rng(dataset):
    state = torch.get_rng_state()
    TaskSampler(dataset, 3, 1, 1, seed=0).sample_task()
    assert torch.equal(torch.get_rng_state(), state)


def test_too_few_images_names_the_class():
    images = torch.zeros(3 * 5 + 2, 1, 4, 4, dtype=torch.uint8)
    labels = [0] * 5 + [1] * 5 + [2] * 2 + [3] * 5
    data = TensorDataset(images, labels, ["alpha", "beta", "gamma", "delta"])
    with pytest.raises(ValueError, match=r"'gamma' has 2 images but n_shot \+ n_query = 4") as info:
        TaskSampler(data, 2, 1, 3)
    assert "lower n_query" in str(info.value)  # names the fix
    TaskSampler(data, 2, 1, 1)  # 2 images are enough for 1 + 1


def test_too_few_classes():
    data = TensorDataset(torch.zeros(6, 1, 4, 4, dtype=torch.uint8), [0, 0, 0, 1, 1, 1], ["a", "b"])
    with pytest.raises(ValueError, match=r"2 classes but n_way = 3") as info:
        TaskSampler(data, 3, 1, 1)
    assert "lower n_way" in str(info.value)


@pytest.mark.parametrize("kwargs", [dict(n_way=0, n_shot=1, n_query=1), dict(n_way=2, n_shot=0, n_query=1),
                                    dict(n_way=2, n_shot=1, n_query=-1)])
def test_invalid_task_shape(dataset, kwargs):
    with pytest.raises(ValueError, match="must be an integer"):
        TaskSampler(dataset, **kwargs)


class LabelsOnly:
    """A dataset whose images cannot be read: the sampler must still build and pick indices."""

    class_names = ["a", "b", "c", "d"]

    def __init__(self) -> None:
        self.label_calls = 0

    def get_labels(self) -> list[int]:
        self.label_calls += 1
        return [c for c in range(4) for _ in range(6)]

    def get_images(self, indices):
        raise RuntimeError("images must not be read while constructing the sampler")

    def __getitem__(self, index):
        raise RuntimeError("no item access either")


def test_sampler_only_needs_get_labels():
    data = LabelsOnly()
    sampler = TaskSampler(data, 3, 2, 2, seed=0)
    assert data.label_calls == 1
    indices, class_ids = sampler.sample_indices()
    assert indices.shape == (3, 4) and class_ids.shape == (3,)
    with pytest.raises(RuntimeError, match="must not be read"):
        sampler.sample_task()  # images are fetched per task, through get_images only


def test_classes_without_images_are_never_drawn():
    # label 1 has no items: class names cover it but the sampler must skip it
    data = TensorDataset(torch.zeros(9, 1, 4, 4, dtype=torch.uint8), [0, 0, 0, 2, 2, 2, 3, 3, 3], ["a", "b", "c", "d"])
    sampler = TaskSampler(data, 3, 1, 1, seed=0)
    for _ in range(10):
        assert 1 not in sampler.sample_indices()[1].tolist()


def test_task_to_device_and_make_task(tiny_task):
    moved = tiny_task.to("cpu")
    assert torch.equal(moved.support_images, tiny_task.support_images)
    built = make_task(tiny_task.support_images, tiny_task.support_labels)
    assert built.n_way == 3 and built.query_images.shape == (0, 1, 8, 8)


def test_mixed_shot_tasks_draw_each_k_from_one_seeded_stream(dataset):
    from fewshot import MixedShotSampler

    sampler = MixedShotSampler(dataset, 3, (1, 4), 2, seed=5)
    tasks = [sampler.sample_task() for _ in range(40)]
    shots = [t.support_images.shape[0] // 3 for t in tasks]
    assert set(shots) == {1, 4} and 10 < shots.count(1) < 30  # both, about equally often
    for task, k in zip(tasks, shots):
        assert torch.equal(task.support_labels, torch.arange(3).repeat_interleave(k))
        assert task.query_images.shape[0] == 6
    again = MixedShotSampler(dataset, 3, (1, 4), 2, seed=5)
    assert all(torch.equal(a.support_images, again.sample_task().support_images) for a in tasks)
    state = sampler.state_dict()  # resume: the stream goes on where it stopped
    ahead = [sampler.sample_task() for _ in range(3)]
    sampler.load_state_dict(state)
    assert all(torch.equal(a.query_images, sampler.sample_task().query_images) for a in ahead)
    sampler.load_state_dict(state)  # sample_indices consumes the generator exactly as sample_task does
    indices, _ = sampler.sample_indices()
    assert indices.shape[1] - 2 == ahead[0].support_images.shape[0] // 3
    assert torch.equal(sampler.sample_task().query_images, ahead[1].query_images)


@pytest.mark.parametrize("shots", [(), (0, 1), (1, 2.0), (True,)])
def test_mixed_shots_are_checked(dataset, shots):
    from fewshot import MixedShotSampler

    with pytest.raises(ValueError, match="shots"):
        MixedShotSampler(dataset, 3, shots, 2)


def test_the_largest_mixed_shot_must_fit_every_class(dataset):
    from fewshot import MixedShotSampler

    with pytest.raises(ValueError, match="n_shot \\+ n_query"):
        MixedShotSampler(dataset, 3, (1, 9), 2)


def test_train_mix_shots_records_them_and_resume_keeps_them(tiny_train_args, tmp_path, capsys):
    from fewshot import load_checkpoint
    from fewshot.cli import main

    out = tmp_path / "mix.safetensors"
    assert main(["train", *tiny_train_args, "--method", "protonet", "--mix-shots", "1", "2", "--checkpoint-every", "1",
                 "--out", str(out)]) == 0
    assert load_checkpoint(out)[1].metadata["mix_shots"] == [1, 2]
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(out)]) == 0
    assert "mix_shots: [1, 2]" in capsys.readouterr().out
    assert main(["train", *tiny_train_args, "--method", "protonet", "--episodes", "3", "--resume", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--mix-shots 1 2" in err and "Traceback" not in err
    assert main(["train", *tiny_train_args, "--method", "protonet", "--episodes", "3", "--mix-shots", "1", "2",
                 "--resume", "--out", str(out)]) == 0
    assert load_checkpoint(out)[1].metadata["steps_done"] == 3
    with pytest.raises(SystemExit):
        main(["train", *tiny_train_args, "--method", "protonet", "--mix-shots", "0", "--out", str(tmp_path / "z")])
