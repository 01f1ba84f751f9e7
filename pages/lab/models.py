"""Where a task's models come from, keyed by the task's mode: drawn symbols go to the checkpoints' Conv-4 models
(28×28 ink), photos to a frozen ImageNet EfficientNet-Lite0 whose features each photo-mode method classifies
(``fewshot.photo``). Pages ask :func:`source` for the mode's models and inputs and never branch on the mode."""

from __future__ import annotations

from typing import Protocol

import streamlit as st
import torch

from fewshot.photo import (PHOTO_IMAGE_SIZE, PHOTO_METHODS, PhotoBackendMissing, PhotoFeatureExtractor,
                           build_photo_model, photo_weights_path)

from . import checkpoints, images
from .checkpoints import Loaded, ModelUnavailable, method_label

PHOTO_BACKBONE = "EfficientNet-Lite0 (ImageNet-pretrained, frozen)"


class ModelSource(Protocol):
    def methods(self) -> list[str]:
        """The methods that can answer a task of this mode here."""

    def get(self, method: str) -> Loaded:
        """The shared model of ``method``; raises :class:`ModelUnavailable` with what to do."""

    def missing(self) -> str:
        """What to say when :meth:`methods` is empty."""

    def inputs(self, pngs: list[bytes], names: list[str], image_size: int) -> torch.Tensor:
        """The model inputs of the task images ``pngs`` (``names`` name them in error messages)."""


class CheckpointModels:
    """Drawn symbols: the sidebar's checkpoint per method; inputs are the centred 28×28 ink maps."""

    def methods(self) -> list[str]:
        return checkpoints.available_methods()

    def get(self, method: str) -> Loaded:
        return checkpoints.get_model(method)

    def missing(self) -> str:
        return "No checkpoints found, so no model can classify yet; see the sidebar."

    def inputs(self, pngs: list[bytes], names: list[str], image_size: int) -> torch.Tensor:
        if not pngs:
            return torch.zeros(0, 1, image_size, image_size)
        return torch.stack([torch.from_numpy(images.model_input(png, image_size).copy()).unsqueeze(0) for png in pngs])


def photo_problem() -> str | None:
    """Why photo mode cannot run here (the packages are missing), or ``None``."""
    try:
        photo_weights_path()
        import efficientnet_lite_pytorch  # noqa: F401
    except (PhotoBackendMissing, ImportError) as exc:
        return f"Photo mode is not available: {exc}"
    return None


@st.cache_resource(show_spinner="Loading EfficientNet-Lite0 (ImageNet weights from the installed package)…")
def extractor() -> PhotoFeatureExtractor:
    """The one shared feature extractor (features cached per photo content, LRU, thread-safe)."""
    return PhotoFeatureExtractor().load()


@st.cache_resource(show_spinner=False)
def _photo_model(method: str):
    model = build_photo_model(method)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class PhotoModels:
    """Photos: each method's head on the shared EfficientNet-Lite0 features (no training, nothing downloaded)."""

    def methods(self) -> list[str]:
        return [] if photo_problem() else list(PHOTO_METHODS)

    def get(self, method: str) -> Loaded:
        problem = photo_problem()
        if problem:
            raise ModelUnavailable(problem)
        if method not in PHOTO_METHODS:
            raise ModelUnavailable(f"{method_label(method)} has no photo mode (photo mode has "
                                   f"{', '.join(method_label(m) for m in PHOTO_METHODS)}).")
        meta = {"image_size": PHOTO_IMAGE_SIZE, "photo": True, "backbone": PHOTO_BACKBONE}
        return Loaded(method, _photo_model(method), meta, f"photo:{method}", f"photo:{method}:{PHOTO_IMAGE_SIZE}")

    def missing(self) -> str:
        return photo_problem() or "No photo-mode method is available."

    def inputs(self, pngs: list[bytes], names: list[str], image_size: int) -> torch.Tensor:
        problem = photo_problem()
        if problem:
            raise ModelUnavailable(problem)
        return extractor().features(pngs, names=names)


SOURCES: dict[str, ModelSource] = {"drawn": CheckpointModels(), "photo": PhotoModels()}


def source(mode: str) -> ModelSource:
    """The models of a task mode (``drawn`` or ``photo``)."""
    return SOURCES[mode]


def require(mode: str, method: str) -> Loaded:
    """``source(mode).get(method)``, or a warning in the page and ``st.stop()``."""
    try:
        return source(mode).get(method)
    except ModelUnavailable as exc:
        st.warning(str(exc))
        st.stop()
