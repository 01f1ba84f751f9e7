"""Shared fixtures: tiny separable tasks, seeding, and the real Omniglot from ../shared.

Everything here runs on the CPU. Torch is limited to one thread: the tensors in these tests are
tiny, so thread synchronisation costs more than it saves, and on a busy two-core runner
oversubscribed threads make a tiny forward pass ~100x slower.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

import fewshot
from fewshot import Task, TensorDataset

DEFAULT_OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global RNG state (the library itself takes explicit seeds)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def separable_images(n_way: int, n_per_class: int, size: int, *, noise: float = 0.05, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n_way * n_per_class, 1, size, size)`` and labels; class ``c`` lights its own band of rows.

    Bands do not overlap, so classes are separable by construction (even in pixel space), and the
    small noise keeps every image distinct.
    """
    assert n_way <= size
    g = torch.Generator().manual_seed(seed)
    band = size // n_way
    images = torch.zeros(n_way, n_per_class, 1, size, size, dtype=torch.float64)
    for c in range(n_way):
        images[c, :, :, c * band:(c + 1) * band, :] = 1.0
    images += noise * torch.rand(images.shape, generator=g, dtype=torch.float64)
    labels = torch.arange(n_way).repeat_interleave(n_per_class)
    return images.reshape(-1, 1, size, size).to(dtype), labels


@pytest.fixture
def make_task() -> Callable[..., Task]:
    """Factory of separable tasks: ``make_task(n_way, n_shot, n_query, size=8, dtype=torch.float32, seed=0)``."""

    def build(n_way: int = 3, n_shot: int = 2, n_query: int = 2, *, size: int = 8,
              dtype: torch.dtype = torch.float32, seed: int = 0, noise: float = 0.05) -> Task:
        images, _ = separable_images(n_way, n_shot + n_query, size, noise=noise, seed=seed, dtype=dtype)
        images = images.reshape(n_way, n_shot + n_query, 1, size, size)
        labels = torch.arange(n_way).unsqueeze(1)
        return Task(
            support_images=images[:, :n_shot].reshape(-1, 1, size, size),
            support_labels=labels.expand(n_way, n_shot).reshape(-1),
            query_images=images[:, n_shot:].reshape(-1, 1, size, size),
            query_labels=labels.expand(n_way, n_query).reshape(-1),
            class_ids=torch.arange(n_way),
        )

    return build


@pytest.fixture
def tiny() -> Callable[..., "fewshot.MAML"]:
    """Factory of tiny float64 Proto-MAMLs (3-way head unused, 4 filters, inner lr 0.1, 1 step, seed 0):
    ``tiny(**MAML keyword arguments)``, for the inner-loop tests, where gradient checks must be tight."""

    def build(**kwargs) -> fewshot.MAML:
        kwargs = {"hidden": 4, "inner_lr": 0.1, "inner_steps": 1, "proto_head": True, **kwargs}
        torch.manual_seed(kwargs.pop("seed", 0))
        return fewshot.MAML(3, **kwargs).to(torch.float64)

    return build


@pytest.fixture
def float64_task(make_task: Callable[..., Task]) -> Task:
    """3-way 2-shot, 3 queries per class, 16x16 float64 images with noise 0.3 (not trivially separable)."""
    return make_task(3, 2, 3, size=16, dtype=torch.float64, noise=0.3)


@pytest.fixture(scope="module")
def pattern_folder_4x4(pattern_folder: Callable[[int, int, int], Path]) -> Path:
    """A folder dataset of 4 classes x 4 noisy 16x16 patterns."""
    return pattern_folder(4, 4, 16)


@pytest.fixture(scope="module")
def tiny_train_args(pattern_folder_4x4: Path) -> list[str]:
    """``fewshot train`` arguments for a 2-episode 3-way 1-shot run on :func:`pattern_folder_4x4` with 8 filters
    (add ``--method`` and ``--out``)."""
    return ["--dataset", "folder", "--data-dir", str(pattern_folder_4x4), "--device", "cpu", "--n-way", "3",
            "--n-shot", "1", "--n-query", "1", "--episodes", "2", "--image-size", "16", "--hidden", "8",
            "--val-every", "0", "--quiet"]


@pytest.fixture
def refused(capsys: pytest.CaptureFixture) -> Callable[[list[str], str], None]:
    """``refused(argv, flag)`` checks that ``fewshot ARGV`` ends with exit status 2 and one ``error:`` line that names
    ``flag``, and no traceback (argparse's refusals exit, the commands' own return 2)."""
    from fewshot.cli import main

    def check(argv: list[str], flag: str) -> None:
        capsys.readouterr()
        try:
            status = main(argv)
        except SystemExit as exc:
            status = int(exc.code)
        err = capsys.readouterr().err
        assert status == 2, (argv, err)
        assert err.count("error:") == 1 and flag in err, err
        assert "Traceback" not in err

    return check


@pytest.fixture
def tiny_task(make_task: Callable[..., Task]) -> Task:
    """3-way, 2-shot, 2 queries per class, 8x8 single-channel images, separable by construction."""
    return make_task(3, 2, 2, size=8)


@pytest.fixture(scope="session")
def pattern_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int, int], Path]:
    """Factory of real folder datasets, no Omniglot needed: ``pattern_folder(n_classes, per_class, size)`` writes
    ``n_classes`` folders of ``per_class`` noisy copies of a random binary pattern (``size`` x ``size`` PNGs, seed 0)
    and returns their root."""
    from PIL import Image

    def make(n_classes: int, per_class: int, size: int) -> Path:
        root = tmp_path_factory.mktemp("patterns")
        rng = np.random.default_rng(0)
        for c in range(n_classes):
            proto = rng.random((size, size)) < 0.3
            (root / f"c{c}").mkdir()
            for k in range(per_class):
                pixels = proto ^ (rng.random((size, size)) < 0.08)
                Image.fromarray(np.where(pixels, 0, 255).astype(np.uint8)).save(root / f"c{c}" / f"{k}.png")
        return root

    return make


def grating_dataset(n_classes: int = 10, n_per_class: int = 20, size: int = 16, *, seed: int = 0) -> TensorDataset:
    """Classes are oriented sine gratings (5 orientations x 2 frequencies) with a random phase and noise.

    A texture is what a small conv net picks up in a few dozen steps, so every method can show
    learning quickly; an untrained network is close to chance on it for most methods.
    """
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images, labels = [], []
    for c in range(n_classes):
        theta, freq = math.pi * (c % 5) / 5, (0.5, 1.2)[(c // 5) % 2]
        for _ in range(n_per_class):
            phase = float(torch.rand(1, generator=g)) * 2 * math.pi
            image = 0.5 + 0.5 * torch.sin(freq * (xs * math.cos(theta) + ys * math.sin(theta)) + phase)
            images.append((image + 0.2 * torch.randn(size, size, generator=g)).clamp(0, 1))
            labels.append(c)
    stacked = (torch.stack(images).unsqueeze(1) * 255).round().to(torch.uint8)  # (N, 1, S, S)
    return TensorDataset(stacked, labels, [f"grating{c}" for c in range(n_classes)])


@pytest.fixture(scope="session")
def gratings() -> TensorDataset:
    return grating_dataset()


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The real Omniglot zips: ``$FEWSHOT_DATA_DIR``, else ``../shared/data/omniglot`` beside the repo.

    CI has this data, so a missing folder is a failure, never a skip.
    """
    folder = Path(os.environ["FEWSHOT_DATA_DIR"]) if os.environ.get("FEWSHOT_DATA_DIR") else DEFAULT_OMNIGLOT
    missing = [name for name in ("images_background.zip", "images_evaluation.zip")
               if not (folder / name).is_file() and not (folder / name[:-4]).is_dir()]
    if missing:
        pytest.fail(f"Omniglot is missing from {folder} ({', '.join(missing)}). The tests need the shared data: "
                    "clone the repo next to ../shared (../shared/data/omniglot) or set FEWSHOT_DATA_DIR.",
                    pytrace=False)
    return folder.resolve()


@pytest.fixture(scope="session")
def omniglot_cache(omniglot_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the whole session, warmed once, so the ~25 s decode happens once.

    ``$FEWSHOT_CACHE_DIR`` is respected when set (reuse a warm cache); otherwise a session temp dir
    is used, so the decoding path itself is exercised on every run. The CLI subprocesses get the
    same folder through their environment.
    """
    folder = Path(os.environ["FEWSHOT_CACHE_DIR"]) if os.environ.get("FEWSHOT_CACHE_DIR") \
        else tmp_path_factory.mktemp("fewshot-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSHOT_CACHE_DIR", str(folder))
        fewshot.omniglot.load_omniglot_arrays(omniglot_dir)
        yield folder


@pytest.fixture(scope="session")
def omniglot_arrays(omniglot_cache: Path, omniglot_dir: Path) -> dict:
    return fewshot.omniglot.load_omniglot_arrays(omniglot_dir)
