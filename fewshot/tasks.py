"""Episodes: the :class:`Task` dataclass and the N-way K-shot :class:`TaskSampler`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from .augment import AffineAugment
from .datasets import FewShotDataset

__all__ = ["Task", "SeededSampler", "TaskSampler", "MixedShotSampler", "AlphabetTaskSampler", "alphabet_group",
           "make_task"]


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


def _task_from(images: Tensor, class_ids: Tensor, n_way: int, n_shot: int, n_query: int) -> Task:
    """Split ``images (n_way*(n_shot+n_query), C, H, W)``, class by class, into support and query."""
    k, q, n = n_shot, n_query, n_way
    images = images.reshape(n, k + q, *images.shape[1:])
    labels = torch.arange(n, device=images.device).unsqueeze(1)
    return Task(support_images=images[:, :k].reshape(n * k, *images.shape[2:]),
                support_labels=labels.expand(n, k).reshape(-1),
                query_images=images[:, k:].reshape(n * q, *images.shape[2:]),
                query_labels=labels.expand(n, q).reshape(-1), class_ids=class_ids.to(images.device))


def alphabet_group(class_name: str) -> str:
    """The group of an Omniglot class name ``Alphabet/character[/rotNNN]``: its alphabet at one rotation
    (characters of one alphabet, turned the same way, look alike)."""
    parts = class_name.split("/")
    return parts[0] if len(parts) < 3 or parts[2] in ("rot000", "") else f"{parts[0]} ({parts[2]})"


class SeededSampler:
    """What every sampler shares: one ``torch.Generator`` is its whole state (saved with a run and restored on
    ``--resume``), and iterating it yields :meth:`sample_task` for ever."""

    generator: torch.Generator

    def sample_task(self) -> Task:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Task]:
        while True:
            yield self.sample_task()

    def state_dict(self) -> Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: Tensor) -> None:
        self.generator.set_state(state)


class TaskSampler(SeededSampler):
    """Samples N-way K-shot tasks with Q queries per class from any :class:`FewShotDataset`.

    Only ``dataset.get_labels()`` is read at construction; images are fetched per task with
    ``dataset.get_images``. All randomness comes from one ``torch.Generator`` seeded with ``seed``,
    so the same seed gives the same sequence of tasks.

    Args:
        dataset: where to draw classes and images from.
        n_way, n_shot, n_query: the task shape.
        seed: seed of the sampler's own generator.
        generator: use this generator instead of creating one from ``seed``.
        augment: training only: warp every image of every task by its own random affine
            (:class:`fewshot.augment.AffineAugment`), drawn from the same generator, so augmented
            tasks are reproducible from ``seed`` and resume from :meth:`state_dict`. Evaluation
            samplers never pass it.
        alphabet_groups: training only: draw each task's ``n_way`` classes in blocks of up to this
            many characters of one alphabet (:func:`alphabet_group`; Omniglot class names), the
            alphabets in random order, so that every task holds look-alike characters to tell apart,
            as Lake et al.'s within-alphabet task does. ``None``: classes drawn uniformly.

    Raises:
        ValueError: fewer than ``n_way`` usable classes, or a class with too few images; the
            message names the class and the fix. ``alphabet_groups`` below 2, or class names
            without an alphabet part.
    """

    def __init__(self, dataset: FewShotDataset, n_way: int, n_shot: int, n_query: int, *,
                 seed: int = 0, generator: torch.Generator | None = None, augment: AffineAugment | None = None,
                 alphabet_groups: int | None = None):
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
        self.augment = augment
        self.alphabet_groups = alphabet_groups
        self.groups: list[Tensor] = []
        if alphabet_groups is not None:
            if not isinstance(alphabet_groups, int) or alphabet_groups < 2:
                raise ValueError(f"alphabet_groups must be an integer >= 2, got {alphabet_groups!r}")
            if not all("/" in names[c] for c in present):
                raise ValueError("alphabet-grouped tasks need Omniglot class names (Alphabet/character); this "
                                 "dataset's classes have no alphabet")
            by_group: dict[str, list[int]] = {}
            for c in present:
                by_group.setdefault(alphabet_group(names[c]), []).append(c)
            self.groups = [torch.tensor(cs, dtype=torch.long) for _, cs in sorted(by_group.items())]

    def _classes(self) -> Tensor:
        """The task's ``n_way`` class ids: uniformly drawn, or in alphabet blocks (``alphabet_groups``)."""
        g = self.generator
        if self.alphabet_groups is None:
            return self.classes[torch.randperm(len(self.classes), generator=g)[: self.n_way]]
        blocks, count = [], 0
        for i in torch.randperm(len(self.groups), generator=g).tolist():
            group = self.groups[i]
            take = min(self.alphabet_groups, self.n_way - count, len(group))
            blocks.append(group[torch.randperm(len(group), generator=g)[:take]])
            count += take
            if count == self.n_way:
                break
        class_ids = torch.cat(blocks)
        return class_ids[torch.randperm(len(class_ids), generator=g)]  # blocks mixed over the task's labels

    def _draw(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """Item indices ``(n_way, n_shot + n_query)``, class ids ``(n_way,)`` and augmentation draws (or None)."""
        g = self.generator
        class_ids = self._classes()
        rows = []
        for c in class_ids.tolist():
            items = self.class_items[c]
            rows.append(items[torch.randperm(len(items), generator=g)[: self.n_shot + self.n_query]])
        indices = torch.stack(rows)
        draws = self.augment.draw(indices.numel(), g) if self.augment is not None else None
        return indices, class_ids, draws

    def sample_indices(self) -> tuple[Tensor, Tensor]:
        """Dataset item indices ``(n_way, n_shot + n_query)`` and the chosen class ids ``(n_way,)``.

        Consumes the generator exactly as :meth:`sample_task` does (augmentation draws included), so
        processes that share a task stream can skip each other's tasks without loading their images.
        """
        indices, class_ids, _ = self._draw()
        return indices, class_ids

    def sample_task(self) -> Task:
        """Draw one task; support and query never share an image."""
        indices, class_ids, draws = self._draw()
        k, q, n = self.n_shot, self.n_query, self.n_way
        images = self.dataset.get_images(indices.reshape(-1))  # (n*(k+q), C, H, W)
        if draws is not None:
            images = self.augment.apply(images, draws)  # type: ignore[union-attr]
        return _task_from(images, class_ids, n, k, q)


class MixedShotSampler(SeededSampler):
    """N-way tasks whose number of support examples per class varies: each task's K drawn uniformly from ``shots``,
    then the task drawn as :class:`TaskSampler` draws a K-shot one (``train --mix-shots``).

    Training only: a method whose inner loop or metric must serve several shots (a MAML checkpoint answers 1-shot
    and 5-shot tasks with the same learned inner rates) then meets all of them while it learns. One generator, shared
    by the choice of K and by the task, is the whole state, as for every sampler.

    Args:
        dataset, n_way, n_query, seed: as :class:`TaskSampler`'s.
        shots: the Ks, each >= 1 (a K given twice is drawn twice as often).
        **kwargs: ``augment``, ``alphabet_groups``: as :class:`TaskSampler`'s.

    Raises:
        ValueError: no shots, a K below 1, or a class with too few images for the largest K (:class:`TaskSampler`'s
            message).
    """

    def __init__(self, dataset: FewShotDataset, n_way: int, shots: tuple[int, ...] | list[int], n_query: int, *,
                 seed: int = 0, **kwargs):
        if not shots or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in shots):
            raise ValueError(f"shots must be one or more integers >= 1, got {shots!r}")
        self.generator = torch.Generator().manual_seed(seed)
        self.shots = tuple(shots)
        self.samplers = {k: TaskSampler(dataset, n_way, k, n_query, generator=self.generator, **kwargs)
                         for k in dict.fromkeys(shots)}  # one per distinct K

    def _pick(self) -> TaskSampler:
        return self.samplers[self.shots[int(torch.randint(len(self.shots), (1,), generator=self.generator))]]

    def sample_indices(self) -> tuple[Tensor, Tensor]:
        """As :meth:`TaskSampler.sample_indices`: ``(n_way, K + n_query)`` for this task's K."""
        return self._pick().sample_indices()

    def sample_task(self) -> Task:
        return self._pick().sample_task()


class AlphabetTaskSampler(SeededSampler):
    """Lake et al.'s one-shot classification task: every episode's characters come from one alphabet,
    and its support and query images are drawn by different people.

    Lake, Salakhutdinov & Tenenbaum 2015 (Science): 20 characters of one alphabet, one image of each
    by one drawer as the support set, another drawer's images as queries; people err 4.5% of the time.
    Characters of one alphabet look alike, so this is harder than episodes mixing alphabets.

    Each episode picks an alphabet (uniformly among those with at least ``n_way`` characters), ``n_way``
    of its characters, and ``n_shot + n_query`` distinct drawers: the first ``n_shot`` drew the support
    images of every character, the other ``n_query`` the queries. Class names must read
    ``Alphabet/character/...`` (a rotation part, if any, is kept in the group: an alphabet at one
    rotation) and the dataset must carry ``drawers`` (one per image), as
    :func:`fewshot.omniglot.load_omniglot` gives.

    Args:
        alphabet: draw every episode from this alphabet only.

    Raises:
        ValueError: no drawer numbers, fewer drawers than ``n_shot + n_query``, an unknown alphabet,
            or no (or the chosen) alphabet with ``n_way`` characters; the message says what fits.
    """

    def __init__(self, dataset: FewShotDataset, n_way: int, n_shot: int = 1, n_query: int = 1, *, seed: int = 0,
                 alphabet: str | None = None):
        for name, value in (("n_way", n_way), ("n_shot", n_shot), ("n_query", n_query)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        drawers = getattr(dataset, "drawers", None)
        if drawers is None:
            raise ValueError("within-alphabet episodes need Omniglot (its file names give each image's drawer)")
        labels = list(dataset.get_labels())
        names = list(dataset.class_names)
        # (class, drawer) -> item; group -> classes, a group being an alphabet at one rotation
        self.items: dict[tuple[int, int], int] = {(c, int(d)): i for i, (c, d) in enumerate(zip(labels, drawers))}
        class_drawers: dict[int, set[int]] = {}
        for c, d in self.items:
            class_drawers.setdefault(c, set()).add(d)
        groups: dict[str, list[int]] = {}
        for c in sorted(class_drawers):
            groups.setdefault(alphabet_group(names[c]), []).append(c)
        if alphabet is not None:
            if alphabet not in groups:
                raise ValueError(f"no alphabet {alphabet!r} in this split; choose one of {', '.join(sorted(groups))}")
            if len(groups[alphabet]) < n_way:
                raise ValueError(f"alphabet {alphabet!r} has {len(groups[alphabet])} characters but n_way = {n_way}; "
                                 f"lower n_way to at most {len(groups[alphabet])} or choose a larger alphabet")
            groups = {alphabet: groups[alphabet]}
        need = n_shot + n_query
        # Drawers who drew every character of a group: the ones an episode can use for all its characters.
        common = {g: sorted(set.intersection(*(class_drawers[c] for c in cs))) for g, cs in groups.items()}
        most = max(len(d) for d in common.values())
        if need > most:
            raise ValueError(f"within-alphabet episodes need n_shot + n_query = {need} different drawers per character, "
                             f"but at most {most} drew every character of an alphabet; lower n_shot or n_query")
        eligible = sorted(g for g, cs in groups.items() if len(cs) >= n_way and len(common[g]) >= need)
        if not eligible:
            largest = max(groups, key=lambda g: len(groups[g]))
            raise ValueError(f"no alphabet in this split has {n_way} characters (the largest, {largest!r}, has "
                             f"{len(groups[largest])}); lower n_way to at most {len(groups[largest])}")
        self.alphabets = eligible
        self.alphabet_classes = {g: torch.tensor(groups[g]) for g in eligible}
        self.alphabet_drawers = {g: torch.tensor(common[g]) for g in eligible}
        self.dataset, self.n_way, self.n_shot, self.n_query = dataset, n_way, n_shot, n_query
        self.generator = torch.Generator().manual_seed(seed)

    def sample_episode(self) -> tuple[Tensor, Tensor, str, Tensor]:
        """Item indices ``(n_way, n_shot + n_query)``, class ids ``(n_way,)``, the alphabet and the drawers
        ``(n_shot + n_query,)`` (column ``j`` of the indices is drawer ``j``'s image of each character)."""
        g = self.generator
        alphabet = self.alphabets[int(torch.randint(len(self.alphabets), (1,), generator=g))]
        classes, drawers = self.alphabet_classes[alphabet], self.alphabet_drawers[alphabet]
        class_ids = classes[torch.randperm(len(classes), generator=g)[: self.n_way]]
        chosen = drawers[torch.randperm(len(drawers), generator=g)[: self.n_shot + self.n_query]]
        indices = torch.tensor([[self.items[(c, d)] for d in chosen.tolist()] for c in class_ids.tolist()])
        return indices, class_ids, alphabet, chosen

    def sample_indices(self) -> tuple[Tensor, Tensor]:
        indices, class_ids, _, _ = self.sample_episode()
        return indices, class_ids

    def sample_task(self) -> Task:
        indices, class_ids = self.sample_indices()
        images = self.dataset.get_images(indices.reshape(-1))
        return _task_from(images, class_ids, self.n_way, self.n_shot, self.n_query)

