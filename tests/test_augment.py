"""Training-time augmentation: the warp itself, seeding and resuming through the sampler, and never in evaluation."""

from __future__ import annotations

import pytest
import torch

from fewshot import SyntheticDataset, TaskSampler, load_checkpoint
from fewshot.augment import AffineAugment
from fewshot.cli import main


@pytest.fixture
def dataset() -> SyntheticDataset:
    return SyntheticDataset(n_classes=8, n_per_class=10, image_size=28, seed=3)


def centroid(images: torch.Tensor) -> torch.Tensor:
    """Ink centroid ``(n, 2)`` as (row, column) in pixels."""
    grid = torch.arange(images.shape[-1], dtype=images.dtype)
    mass = images.sum(dim=(1, 2, 3))
    rows = (images.sum(dim=(1, 3)) * grid).sum(1) / mass
    cols = (images.sum(dim=(1, 2)) * grid).sum(1) / mass
    return torch.stack([rows, cols], 1)


def test_zero_draws_leave_images_unchanged(dataset):
    images = dataset.get_images(torch.arange(6))
    assert torch.allclose(AffineAugment().apply(images, torch.zeros(6, 5, dtype=torch.float64)), images, atol=1e-5)


def test_the_largest_shift_moves_the_ink_two_pixels_at_28_pixels():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10:18, 10:18] = 1.0  # a square well inside the frame
    draws = torch.tensor([[0.0, 0.0, 0.0, 1.0, -1.0]], dtype=torch.float64)  # shift x +max, y -max
    moved = centroid(AffineAugment().apply(image, draws)) - centroid(image)
    assert torch.allclose(moved, torch.tensor([[-2.0, 2.0]]), atol=0.05)


def test_the_largest_rotation_turns_the_ink_by_its_angle():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 13:15, 4:24] = 1.0  # a horizontal bar through the centre
    turned = AffineAugment(rotation=30.0).apply(image, torch.tensor([[1.0, 0, 0, 0, 0]], dtype=torch.float64))
    ys, xs = torch.nonzero(turned[0, 0] > 0.5, as_tuple=True)
    slope = torch.linalg.lstsq(torch.stack([xs.double(), torch.ones_like(xs.double())], 1), ys.double()[:, None])
    angle = torch.rad2deg(torch.atan(slope.solution[0, 0].abs()))
    assert abs(float(angle) - 30.0) < 3.0


@pytest.mark.parametrize("bad", [{"rotation": -1.0}, {"scale": 1.0}, {"shear": 2.0}, {"shift": float("nan")}])
def test_impossible_magnitudes_are_refused(bad):
    with pytest.raises(ValueError, match="augmentation"):
        AffineAugment(**bad)


def test_augmented_tasks_change_the_images_but_not_the_episode(dataset):
    plain = TaskSampler(dataset, 5, 2, 3, seed=7).sample_task()
    warped = TaskSampler(dataset, 5, 2, 3, seed=7, augment=AffineAugment()).sample_task()
    assert torch.equal(plain.class_ids, warped.class_ids)  # the same classes and images, drawn first
    assert torch.equal(plain.query_labels, warped.query_labels)
    differs = (plain.support_images - warped.support_images).abs().flatten(1).amax(1) > 0.1
    assert bool(differs.all()), "every image gets its own warp"
    ink_ratio = warped.query_images.sum() / plain.query_images.sum()
    assert 0.8 < float(ink_ratio) < 1.25  # a small warp, not a different picture


def test_augmentation_is_reproducible_from_the_seed_and_resumes_from_the_sampler_state(dataset):
    def stream(seed: int, n: int = 4) -> list[torch.Tensor]:
        sampler = TaskSampler(dataset, 4, 1, 2, seed=seed, augment=AffineAugment())
        return [sampler.sample_task().query_images for _ in range(n)]

    assert all(torch.equal(a, b) for a, b in zip(stream(1), stream(1)))
    assert not torch.equal(stream(1)[0], stream(2)[0])
    first = TaskSampler(dataset, 4, 1, 2, seed=1, augment=AffineAugment())
    first.sample_task(), first.sample_task()
    resumed = TaskSampler(dataset, 4, 1, 2, seed=99, augment=AffineAugment())
    resumed.load_state_dict(first.state_dict())
    expected = stream(1)
    assert torch.equal(resumed.sample_task().query_images, expected[2])
    assert torch.equal(resumed.sample_task().query_images, expected[3])


def test_sample_indices_consumes_the_augmentation_draws_too(dataset):
    """Processes sharing a task stream skip each other's tasks with sample_indices: the streams must stay aligned."""
    skipping = TaskSampler(dataset, 4, 1, 2, seed=5, augment=AffineAugment())
    loading = TaskSampler(dataset, 4, 1, 2, seed=5, augment=AffineAugment())
    skipping.sample_indices()
    loading.sample_task()
    assert torch.equal(skipping.sample_task().support_images, loading.sample_task().support_images)


def test_train_augments_training_tasks_only_never_validation_or_evaluation(omniglot_cache, omniglot_dir, tmp_path,
                                                                           monkeypatch, capsys):
    warped: list[int] = []
    original = AffineAugment.apply

    def counting(self, images, draws):
        warped.append(images.shape[0])
        return original(self, images, draws)

    monkeypatch.setattr(AffineAugment, "apply", counting)
    out = tmp_path / "p.safetensors"
    common = ["--protocol", "lake", "--data-dir", str(omniglot_dir), "--n-way", "5", "--n-shot", "1",
              "--n-query", "2", "--device", "cpu"]
    assert main(["train", "--method", "protonet", *common, "--hidden", "8", "--episodes", "3", "--val-every", "2",
                 "--val-episodes", "4", "--augment", "--quiet", "--out", str(out)]) == 0
    assert warped == [5 * 3] * 3, "one warp per training task (3 steps), none for the validation tasks"
    _, info = load_checkpoint(out)
    assert info["augment"] == AffineAugment().to_dict()
    assert main(["evaluate", "--checkpoint", str(out), *common, "--episodes", "5", "--json"]) == 0
    assert len(warped) == 3, "evaluation never augments"

    capsys.readouterr()
    assert main(["train", "--method", "protonet", *common, "--hidden", "8", "--episodes", "4", "--val-every", "0",
                 "--quiet", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume:") and "--augment" in err[0]
