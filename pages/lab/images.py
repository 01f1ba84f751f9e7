"""Images in the lab: PNG bytes to what a model sees (28×28 ink or a photo), and pictures of either for the page."""

from __future__ import annotations

import base64
import io

import numpy as np
import streamlit as st
import torch
from PIL import Image

import fewshot
from fewshot.photo import PHOTO_IMAGE_SIZE


def ink_to_png(ink: np.ndarray) -> bytes:
    """An ink map (1 = ink) as a black-on-white PNG."""
    arr = np.clip(255.0 * (1.0 - np.asarray(ink, dtype=np.float32)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return buf.getvalue()


def tensor_to_png(image: torch.Tensor) -> bytes:
    """A model input ``(1, H, W)`` (1 = ink) as a PNG."""
    return ink_to_png(image.detach().float().cpu().numpy()[0])


@st.cache_data(show_spinner=False, max_entries=4096)
def model_input(png: bytes, image_size: int) -> np.ndarray:
    """What a drawing model sees: ``fewshot.preprocess_image(..., center=True)`` as an ``(H, W)`` array (1 = ink).

    Raises:
        fewshot.ImageError: not a usable image.
    """
    return fewshot.preprocess_image(png, image_size, center=True).numpy()[0]


def has_ink(png: bytes) -> bool:
    """Whether a drawing has strokes (an emptied canvas still sends a white picture)."""
    try:
        return float(model_input(png, 28).max()) > 0.05
    except fewshot.ImageError:
        return False


def display_ink(ink: np.ndarray, scale: int = 3) -> np.ndarray:
    """Black ink on white, enlarged with nearest-neighbour so the pixels stay visible."""
    arr = np.clip(255.0 * (1.0 - np.asarray(ink, dtype=np.float32)), 0, 255).astype(np.uint8)
    return np.kron(arr, np.ones((scale, scale), dtype=np.uint8))


@st.cache_data(show_spinner=False, max_entries=4096)
def photo_view(png: bytes, image_size: int = PHOTO_IMAGE_SIZE) -> np.ndarray:
    """What the photo backbone sees: the resized, centre-cropped RGB photo ``(S, S, 3)`` uint8.

    Raises:
        fewshot.ImageError: not a usable image.
    """
    rgb = fewshot.preprocess_photo(png, image_size).permute(1, 2, 0).numpy()
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _ink_picture(png: bytes, scale: int, image_size: int) -> tuple[np.ndarray, int]:
    return display_ink(model_input(png, image_size), scale), image_size * scale


def _photo_picture(png: bytes, scale: int, image_size: int) -> tuple[np.ndarray, int]:
    return photo_view(png), 40 * scale


PICTURES = {"drawn": _ink_picture, "photo": _photo_picture}


def picture(png: bytes, mode: str, scale: int = 3, image_size: int = 28) -> tuple[np.ndarray, int]:
    """``(array, width)``: a task image as the model of ``mode`` sees it (``drawn``: enlarged ink, ``photo``: the
    photo), for ``st.image``.

    Raises:
        fewshot.ImageError: not a usable image.
    """
    return PICTURES[mode](png, scale, image_size)


def data_uri(array: np.ndarray, *, ink_colour: str | None = None) -> str:
    """An image array (``(H, W)`` black ink on white, or ``(H, W, 3)`` RGB, uint8) as a PNG ``data:`` URI, for
    plotly's layout images (the embedding explorer draws the images themselves at their map positions).

    A black-on-white ink image becomes ink of ``ink_colour`` (``"#rrggbb"``, default black) on a transparent
    background, so images that overlap on a map do not hide each other behind white squares.
    """
    arr = np.asarray(array, dtype=np.uint8)
    if arr.ndim == 2:
        colour = (ink_colour or "#000000").lstrip("#")
        rgb = [int(colour[k:k + 2], 16) for k in (0, 2, 4)]
        arr = np.dstack([np.full_like(arr, v) for v in rgb] + [255 - arr])  # (H, W, 4): alpha = ink
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def show_input(png: bytes, mode: str = "drawn", *, caption: str | None = "what the model sees", scale: int = 3,
               image_size: int = 28) -> None:
    """One task image as its model sees it, or the reason it cannot be read."""
    try:
        array, width = picture(png, mode, scale, image_size)
    except fewshot.ImageError as exc:
        st.error(str(exc))
        return
    st.image(array, caption=caption, width=width)


def show_image(image, *, scale: int = 3, caption: str | None = None) -> None:
    """Show one model input ``(1, H, W)`` (tensor or array, 1 = ink) as black on white, enlarged."""
    arr = np.asarray(image.detach().float().cpu() if isinstance(image, torch.Tensor) else image)[0]
    st.image(display_ink(arr, scale), caption=caption, width=arr.shape[1] * scale)
