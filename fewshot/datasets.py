"""Datasets the episode sampler can draw from.

A few-shot dataset needs two things: ``get_labels()`` (the class index of every item, which is all
the sampler looks at) and ``get_images(indices)`` (a float batch ``(B, 1, H, W)``, 1 = ink).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from .files import file_kind
from .transforms import IMAGE_EXTENSIONS, ImageError, preprocess_image

__all__ = ["FewShotDataset", "TensorDataset", "FolderDataset", "SyntheticDataset", "list_image_files"]


@runtime_checkable
class FewShotDataset(Protocol):
    """What :class:`fewshot.tasks.TaskSampler` needs from a dataset."""

    class_names: list[str]

    def get_labels(self) -> list[int]:
        """Class index (into ``class_names``) of every item, in item order."""
        ...

    def get_images(self, indices: Tensor) -> Tensor:
        """Float images ``(len(indices), C, H, W)`` in [0, 1] for the given item indices."""
        ...


class TensorDataset:
    """Images held in one uint8 tensor ``(N, C, H, W)`` (255 = ink) with a label per image.

    ``to(device)`` moves the images so that tasks are assembled on the GPU without a Python loader.
    """

    def __init__(self, images: Tensor, labels: Sequence[int], class_names: list[str]):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if len(labels) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(labels)} labels")
        self.images = images
        self._labels = [int(label) for label in labels]
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def get_labels(self) -> list[int]:
        return self._labels

    def get_images(self, indices: Tensor) -> Tensor:
        batch = self.images[indices.to(self.images.device)]
        return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()

    def to(self, device: torch.device | str) -> "TensorDataset":
        self.images = self.images.to(device)
        return self


def list_image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


class FolderDataset(TensorDataset):
    """Any folder of class subfolders (``root/<class>/<image>``): the user's own images.

    Every image goes through :func:`fewshot.transforms.preprocess_image`, the same transform the
    app and ``predict`` use. Unreadable files (and named pipes, devices or sockets with an image
    name, which are never opened) are skipped and listed in ``skipped`` with the reason. With
    ``check_ink``, so are images that show no symbol (blank, noise: ``predict``'s support set).

    Raises:
        ValueError: the folder is missing, has no class subfolders, or no readable images.
    """

    def __init__(self, root: str | Path, image_size: int = 28, *, center: bool = True,
                 check_ink: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"dataset folder {root} does not exist or is not a folder")
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise ValueError(
                f"{root} has no class subfolders; put each class's images in its own folder, "
                f"e.g. {root}/cat/1.png, {root}/dog/1.png"
            )
        images, labels, names = [], [], []
        self.skipped: list[str] = []
        for class_dir in class_dirs:
            files = list_image_files(class_dir)
            self.skipped += [f"{p}: is {file_kind(p.lstat().st_mode)}, not an image file"
                             for p in sorted(class_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS
                             and not p.name.startswith(".") and not p.is_file() and not p.is_dir()]
            loaded = []
            for path in files:
                try:
                    loaded.append(preprocess_image(path, image_size, center=center, check_ink=check_ink))
                except ImageError as exc:
                    self.skipped.append(str(exc))
            if not loaded:
                continue
            labels += [len(names)] * len(loaded)
            names.append(class_dir.name)
            images += loaded
        if not images:
            raise ValueError(f"no readable images in the class folders of {root} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
        stacked = (torch.stack(images) * 255.0).round().to(torch.uint8)
        super().__init__(stacked, labels, names)
        self.root = root


class SyntheticDataset(TensorDataset):
    """Separable-by-construction classes for tests and smoke runs.

    Each class is a fixed random binary pattern; every image is that pattern with pixel flips and a
    small shift, so a few episodes of training beat chance but the task is not trivial.
    """

    def __init__(self, n_classes: int = 20, n_per_class: int = 20, image_size: int = 28, *, noise: float = 0.1, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        prototypes = (torch.rand(n_classes, 1, image_size, image_size, generator=g) < 0.3).float()
        images = prototypes.repeat_interleave(n_per_class, dim=0)
        flips = (torch.rand(images.shape, generator=g) < noise).float()
        images = (images - flips).abs()
        shifts = torch.randint(-1, 2, (images.shape[0], 2), generator=g)
        images = torch.stack([torch.roll(im, (int(dy), int(dx)), dims=(1, 2)) for im, (dy, dx) in zip(images, shifts)])
        labels = [c for c in range(n_classes) for _ in range(n_per_class)]
        super().__init__((images * 255).to(torch.uint8), labels, [f"class{c:03d}" for c in range(n_classes)])
