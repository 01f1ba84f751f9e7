"""Example tasks: installed into the user's store by the Build page's buttons, or shown to a visitor who has no
complete task of their own yet (a first visit from a shared link shows something working at once).

The drawn example comes from Omniglot's evaluation alphabets when the data is there (the lake-protocol models
never saw them), else from the synthetic symbols of ``fewshot.symbols``; the photo example is generated objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import streamlit as st

from fewshot.photo import SYNTHETIC_OBJECTS, synthetic_photo
from fewshot.symbols import ExampleTask, synthetic_task

from . import data, images, task
from .task import Example, TaskView

FIRST_OMNIGLOT_SEED = 1001  # the first "Load an example task from Omniglot" gives the same task


@st.cache_data(show_spinner="Sampling an example task from Omniglot…", max_entries=64)
def omniglot_task(n_way: int, n_shot: int, seed: int, data_dir: str) -> ExampleTask | None:
    """An ``n_way``-way ``n_shot``-shot task from Omniglot's evaluation alphabets (lake test split), one query per
    class; ``None`` when the data cannot be read."""
    dataset = data.omniglot("lake", "test", explain=False)
    if dataset is None:
        return None
    sampled = data.sample_episode(dataset, n_way, n_shot, 1, seed=seed)
    support = [[images.tensor_to_png(sampled.support_images[k]) for k in range(len(sampled.support_labels))
                if int(sampled.support_labels[k]) == c] for c in range(n_way)]
    queries = [(images.tensor_to_png(sampled.query_images[k]), int(sampled.query_labels[k]))
               for k in range(len(sampled.query_labels))]
    return ExampleTask(data.episode_names(dataset, sampled), support, queries)


def photo_task(n_shot: int = 1) -> ExampleTask:
    """Five everyday objects drawn by the program (ball, mug, tree, banana, book), ``n_shot`` photos and a query each."""
    names = [kind.capitalize() for kind in SYNTHETIC_OBJECTS]
    support = [[synthetic_photo(kind, 1000 + 10 * i + k) for k in range(n_shot)] for i, kind in enumerate(SYNTHETIC_OBJECTS)]
    queries = [(synthetic_photo(kind, 5000 + i), i) for i, kind in enumerate(SYNTHETIC_OBJECTS)]
    return ExampleTask(names, support, queries)


# ---------------------------------------------------------------------------------------------------- into the store


def load_synthetic() -> None:
    """Callback: a 5-way 1-shot task of synthetic symbols (circle, cross, triangle, square, bar) + 5 queries."""
    example = synthetic_task(5, 1, 1, seed=0)
    task.replace("drawn", example.names, example.support, example.queries, "example")


def load_omniglot() -> None:
    """Callback: an N-way K-shot task from Omniglot's evaluation alphabets, one query per class (another each time)."""
    s = task.store()
    folder, _ = data.omniglot_dir()
    example = omniglot_task(s.n_way, s.n_shot, FIRST_OMNIGLOT_SEED + s.omniglot_examples, folder) if folder else None
    if example is None:
        return
    s.omniglot_examples += 1
    task.replace("drawn", example.names, example.support, example.queries, "omniglot")


def load_photos() -> None:
    """Callback: a 5-way task of generated photos, K (at most 3) photos of each object and a query of each."""
    n_shot = max(1, min(3, task.store().n_shot))
    example = photo_task(n_shot)
    task.replace("photo", example.names, example.support, example.queries, "example", n_shot=n_shot)


@dataclass(frozen=True)
class Loader:
    key: str
    label: str
    callback: Callable[[], None]
    help: str
    needs_omniglot: bool = False


LOADERS = {
    "drawn": [
        Loader("example_synthetic", "Load the example task (synthetic symbols)", load_synthetic,
               "Five symbols drawn by the program (circle, cross, triangle, square, bar) and a query of each."),
        Loader("example_omniglot", "Load an example task from Omniglot", load_omniglot,
               "N characters from the evaluation alphabets (never seen by the lake-protocol models), K examples each "
               "and one query per class.", needs_omniglot=True),
    ],
    "photo": [
        Loader("example_photos", "Load the example task (generated photos)", load_photos,
               "Five everyday objects drawn by the program (ball, mug, tree, banana, book) at random places, sizes "
               "and colours, K photos each and a query of each."),
    ],
}


def loaders(mode_key: str) -> list[Loader]:
    """The example buttons of a mode that can work here (Omniglot's only when the data is there)."""
    have_data = data.has_omniglot()
    return [loader for loader in LOADERS[mode_key] if have_data or not loader.needs_omniglot]


# ---------------------------------------------------------------------------------------------------- shown in place


def _view(example: ExampleTask, mode_key: str, source: str, description: str) -> TaskView:
    support = [[Example(f"{source}-s{c}-{k}", f"{name} {k + 1}", png, source) for k, png in enumerate(pngs)]
               for c, (name, pngs) in enumerate(zip(example.names, example.support))]
    queries = [Example(f"{source}-q{j}", f"query {j + 1}", png, source) for j, (png, _) in enumerate(example.queries)]
    return TaskView(list(example.names), support, queries, [c for _, c in example.queries], mode=mode_key,
                    example=description)


def _photo_visitor() -> TaskView:
    return _view(photo_task(1), "photo", "example", "five generated photos of everyday objects (ball, mug, tree, "
                 "banana, book), one per class, and a query photo of each")


def _drawn_visitor() -> TaskView:
    folder, _ = data.omniglot_dir()
    example = omniglot_task(5, 1, FIRST_OMNIGLOT_SEED, folder) if folder else None
    if example is not None:
        return _view(example, "drawn", "omniglot", "five characters from Omniglot's evaluation alphabets (which the "
                     "lake-protocol models never saw), one drawing of each, and a new drawing of each to classify")
    return _view(synthetic_task(5, 1, 1, seed=0), "drawn", "example", "five symbols drawn by the program (circle, "
                 "cross, triangle, square, bar), one of each, and a new one of each to classify")


VISITORS = {"drawn": _drawn_visitor, "photo": _photo_visitor}


def visitor_example(mode_key: str) -> TaskView:
    """The example a visitor sees before building a task of their own, labelled as such (``view.example``)."""
    return VISITORS[mode_key]()


def task_for_page(*, need_queries: bool = True) -> tuple[TaskView, TaskView]:
    """``(the task to show, the user's own task)``: the user's task when it is usable, else the mode's example."""
    own = task.collect()
    if not own.errors and (own.queries or not need_queries):
        return own, own
    return visitor_example(own.mode), own
