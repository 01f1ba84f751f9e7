"""Omniglot for the pages: where it is, the shared decoded splits, sampled episodes and readable class names."""

from __future__ import annotations

import streamlit as st

import fewshot


def omniglot_dir() -> tuple[str | None, str]:
    """``(folder, "")`` when Omniglot is found, else ``(None, the library's message)``."""
    try:
        return str(fewshot.resolve_data_dir()), ""
    except fewshot.DataNotFoundError as exc:
        return None, str(exc)


def has_omniglot() -> bool:
    return omniglot_dir()[0] is not None


@st.cache_resource(show_spinner="Loading Omniglot (the first load decodes 32,460 images; later loads take a second)…",
                   max_entries=4)
def _omniglot(protocol: str, split: str, data_dir: str, image_size: int):
    return fewshot.load_omniglot(protocol, split, data_dir=data_dir, image_size=image_size)


def omniglot(protocol: str = "lake", split: str = "test", image_size: int = 28, *, explain: bool = True):
    """The dataset (shared, read-only), or ``None`` after telling the user (``explain``) how to point the app at it."""
    folder, message = omniglot_dir()
    if folder is None:
        if explain:
            data_missing(message)
        return None
    try:
        return _omniglot(protocol, split, folder, image_size)
    except (fewshot.DataNotFoundError, ValueError, OSError) as exc:
        if explain:
            data_missing(str(exc))
        return None


def data_missing(message: str) -> None:
    """One box: the Omniglot images were not found, and how to give them to the app."""
    st.warning(
        "This needs the Omniglot images, and they were not found. Put `images_background.zip` and "
        "`images_evaluation.zip` (from https://github.com/brendenlake/omniglot, `python/` folder, or "
        "`python -m fewshot download --data-dir DIR`) in a folder and start the app with "
        "**FEWSHOT_DATA_DIR** pointing at it, e.g. `FEWSHOT_DATA_DIR=/path/to/omniglot streamlit run app.py`. "
        "Drawing and uploading your own task works without it (page *Build a task*)."
    )
    with st.expander("Details"):
        st.code(message, language=None)


def class_label(name: str) -> str:
    """``Alphabet/character07/rot000`` -> ``Alphabet 07`` (with the rotation when there is one)."""
    parts = name.split("/")
    if len(parts) < 2:
        return name
    label = f"{parts[0].replace('_', ' ')} {parts[1].replace('character', '')}"
    if len(parts) > 2 and parts[2] not in ("rot000", ""):
        label += f" ({parts[2][3:].lstrip('0') or '0'}°)"
    return label


def dedupe(names: list[str]) -> list[str]:
    """``names`` with repeats numbered (``A``, ``A #2``): class names must differ."""
    out: list[str] = []
    for name in names:
        candidate, n = name, 2
        while candidate in out:
            candidate, n = f"{name} #{n}", n + 1
        out.append(candidate)
    return out


def episode_names(dataset, task) -> list[str]:
    """Readable, distinct names of a sampled task's classes."""
    return dedupe([class_label(dataset.class_names[int(c)]) for c in task.class_ids])


def sample_episode(dataset, n_way: int, n_shot: int, n_query: int, seed: int, index: int = 0):
    """The ``index``-th task of a sampler seeded with ``seed`` (the same tasks every time)."""
    sampler = fewshot.TaskSampler(dataset, n_way, n_shot, n_query, seed=seed)
    for _ in range(index):
        sampler.sample_indices()
    return sampler.sample_task()
