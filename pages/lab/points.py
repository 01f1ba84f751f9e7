"""Points for the embedding explorer: from the task, from a folder of class subfolders, and their 2-D maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st
import torch

import fewshot
from fewshot.inspection import PointSet

from .task import TaskView


def from_view(view: TaskView, image_size: int) -> PointSet:
    """The task's images (support first) as points; a query's class is its true class when it has one.

    Raises:
        fewshot.ImageError, ModelUnavailable: see :meth:`TaskView.tensors`.
    """
    points = PointSet()
    sx, sy, qx = view.tensors(image_size)
    for k in range(len(sy)):
        name = view.names[int(sy[k])]
        points.add(sx[k], name, "support", f"{name} (support)")
    for j in range(len(qx)):
        truth = view.truth[j]
        points.add(qx[j], view.names[truth] if truth is not None else "query (unknown class)", "query", f"Query {j + 1}")
    return points


@st.cache_resource(show_spinner="Reading the folder…", max_entries=4)
def _folder_dataset(path: str, mtime: float, image_size: int):
    return fewshot.FolderDataset(path, image_size, center=True)


def from_folder(path: str, image_size: int, *, max_classes: int = 40, per_class: int = 12):
    """``(PointSet, skipped files)`` from a folder of class subfolders; half of each class is the support set.

    Raises:
        ValueError: not a usable folder (the message says why).
    """
    folder = Path(path).expanduser()
    try:
        dataset = _folder_dataset(str(folder), folder.stat().st_mtime, image_size)
    except OSError as exc:
        raise ValueError(f"{folder}: {exc.strerror or exc}") from exc
    labels = np.asarray(dataset.get_labels())
    points = PointSet()
    for c, name in enumerate(dataset.class_names[:max_classes]):
        idx = np.flatnonzero(labels == c)[:per_class]
        batch = dataset.get_images(torch.as_tensor(idx))
        half = max(1, len(idx) // 2)
        for k in range(len(idx)):
            points.add(batch[k], name, "support" if k < half else "query", f"{name} #{k + 1}")
    return points.ordered(), list(dataset.skipped)


@st.cache_data(show_spinner="Computing the 2-D map…", max_entries=64)
def project_2d(points: np.ndarray, projection: str, perplexity: float, seed: int = 0) -> np.ndarray:
    """t-SNE or PCA map of ``points (N, D)``; cached on the array's contents."""
    if projection == "PCA":
        return fewshot.pca_2d(points)
    return fewshot.tsne_2d(points, perplexity=perplexity, seed=seed)
