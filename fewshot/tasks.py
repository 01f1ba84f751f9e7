"""Episodes: the :class:`Task` dataclass and the N-way K-shot :class:`TaskSampler`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from .datasets import FewShotDataset

__all__ = ["Task", "TaskSampler", "make_task"]


@dataclass(frozen=True)
class Task:
    """One episode. Labels are episode labels in ``[0, n_way)``; ``class_ids`` maps them to dataset classes.

    Shapes: ``support_images (n_way*n_shot, C, H, W)``, ``support_labels (n_way*n_shot,)``,
    ``query_images (n_way*n_query, C, H, W)``, ``query_labels (n_way*n_query,)``, ``class_ids (n_way,)``.
    """

    support_images: Tensor
    support_labels: Tensor
    query_images: Tensor
    query_labels: Tensor
    class_ids: Tensor

    @property
    def n_way(self) -> int:
        return int(self.class_ids.numel())

    def to(self, device: torch.device | str) -> "Task":
        return Task(*(t.to(device, non_blocking=True) for t in (
            self.support_images, self.support_labels, self.query_images, self.query_labels, self.class_ids)))


def make_task(support_images: Tensor, support_labels: Tensor, query_images: Tensor | None = None,
              query_labels: Tensor | None = None) -> Task:
    """Build a :class:`Task` from user-provided tensors (e.g. the app's drawings)."""
    n_way = int(support_labels.max()) + 1
    if query_images is None:
        query_images = support_images[:0]
    if query_labels is None:
        query_labels = torch.full((query_images.shape[0],), -1, dtype=torch.long)
    return Task(support_images, support_labels.long(), query_images, query_labels.long(), torch.arange(n_way))


class TaskSampler:
    """Samples N-way K-shot tasks with Q queries per class from any :class:`FewShotDataset`.

    Only ``dataset.get_labels()`` is read at construction; images are fetched per task with
    ``dataset.get_images``. All randomness comes from one ``torch.Generator`` seeded with ``seed``,
    so the same seed gives the same sequence of tasks.

    Args:
        dataset: where to draw classes and images from.
        n_way, n_shot, n_query: the task shape.
        seed: seed of the sampler's own generator.
        generator: use this generator instead of creating one from ``seed``.

    Raises:
        ValueError: fewer than ``n_way`` usable classes, or a class with too few images; the
            message names the class and the fix.
    """

    def __init__(self, dataset: FewShotDataset, n_way: int, n_shot: int, n_query: int, *,
                 seed: int = 0, generator: torch.Generator | None = None):
        for name, value, low in (("n_way", n_way, 1), ("n_shot", n_shot, 1), ("n_query", n_query, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        labels = torch.as_tensor(list(dataset.get_labels()), dtype=torch.long)
        n_classes = int(labels.max()) + 1 if labels.numel() else 0
        names = list(getattr(dataset, "class_names", [str(c) for c in range(n_classes)]))
        counts = torch.bincount(labels, minlength=n_classes)
        need = n_shot + n_query
        present = [c for c in range(n_classes) if counts[c] > 0]
        if len(present) < n_way:
            raise ValueError(
                f"the dataset has {len(present)} classes but n_way = {n_way}; lower n_way to at most "
                f"{len(present)} or add classes"
            )
        short = [c for c in present if counts[c] < need]
        if short:
            c = short[0]
            raise ValueError(
                f"class {names[c]!r} has {int(counts[c])} images but n_shot + n_query = {need}; lower n_query "
                f"(or n_shot) to fit, or add images to that class ({len(short)} class(es) too small)"
            )
        order = torch.argsort(labels, stable=True)
        self.class_items = [order[s:e] for s, e in zip(
            torch.cumsum(counts, 0) - counts, torch.cumsum(counts, 0))]  # item indices of each class
        self.classes = torch.tensor(present, dtype=torch.long)
        self.dataset, self.n_way, self.n_shot, self.n_query = dataset, n_way, n_shot, n_query
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def sample_indices(self) -> tuple[Tensor, Tensor]:
        """Dataset item indices ``(n_way, n_shot + n_query)`` and the chosen class ids ``(n_way,)``."""
        g = self.generator
        class_ids = self.classes[torch.randperm(len(self.classes), generator=g)[: self.n_way]]
        rows = []
        for c in class_ids.tolist():
            items = self.class_items[c]
            rows.append(items[torch.randperm(len(items), generator=g)[: self.n_shot + self.n_query]])
        return torch.stack(rows), class_ids

    def sample_task(self) -> Task:
        """Draw one task; support and query never share an image."""
        indices, class_ids = self.sample_indices()
        k, q, n = self.n_shot, self.n_query, self.n_way
        images = self.dataset.get_images(indices.reshape(-1))  # (n*(k+q), C, H, W)
        images = images.reshape(n, k + q, *images.shape[1:])
        labels = torch.arange(n, device=images.device).unsqueeze(1)  # (n, 1)
        return Task(
            support_images=images[:, :k].reshape(n * k, *images.shape[2:]),
            support_labels=labels.expand(n, k).reshape(-1),
            query_images=images[:, k:].reshape(n * q, *images.shape[2:]),
            query_labels=labels.expand(n, q).reshape(-1),
            class_ids=class_ids.to(images.device),
        )

    def __iter__(self) -> Iterator[Task]:
        while True:
            yield self.sample_task()

    def state_dict(self) -> Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: Tensor) -> None:
        self.generator.set_state(state)
