"""The one image transform shared by training, evaluation, ``predict`` and the app.

Every image reaches a model as a float tensor ``(1, H, W)`` in ``[0, 1]`` where **1 is ink and 0 is
background** (Omniglot's PNGs are the opposite: white background, black ink). Polarity is decided
here, once: an image whose border is mostly light is inverted, so black-on-white drawings,
white-on-black drawings and transparent PNGs all arrive the same way.

Photos (photo mode, :mod:`fewshot.photo`) take the RGB path of the same module: :func:`preprocess_photo`
decodes with the same safe :func:`open_image` (size limit, first frame) and :func:`to_rgb` (EXIF rotation,
transparency over white) and keeps the colours: ``(3, H, W)`` in ``[0, 1]``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .files import FileTooLargeError, NotARegularFileError, read_regular_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_BYTES",
    "ImageError",
    "open_image",
    "ink_problem",
    "to_ink",
    "center_ink",
    "preprocess_image",
    "to_rgb",
    "preprocess_photo",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Decompression-bomb guard: 40 megapixels is far above any photo or drawing a user sends.
MAX_IMAGE_PIXELS = 40_000_000
# A file is read whole before decoding (only regular files: a named pipe would block): 128 MB bounds that read.
MAX_IMAGE_BYTES = 128_000_000
# An ink map whose values span less than this shows no strokes ("looks blank", as the app says).
BLANK_CONTRAST = 0.05
# Below this side (pixels) an image cannot show a symbol.
MIN_SYMBOL_SIDE = 8
# Strokes make neighbouring pixels alike (Omniglot's drawings: correlation >= 0.86, the app's synthetic symbols
# >= 0.9); random pixels do not (white noise ~0.0, noise saved as JPEG ~0.0, random binary patterns ~0.06).
NOISE_CORRELATION = 0.4


class ImageError(ValueError):
    """An input that is not a usable image; the message says what is wrong and what to do."""


def open_image(source: str | Path | bytes | Image.Image, *, name: str | None = None) -> Image.Image:
    """Decode an image file (path or bytes) safely and return it fully loaded.

    Raises:
        ImageError: the file is missing, not an image, truncated, or too large.
    """
    if isinstance(source, Image.Image):
        return source
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with io.BytesIO(source if isinstance(source, bytes) else read_regular_file(source, MAX_IMAGE_BYTES)) as fp:
                image = Image.open(fp)
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{label}: {image.width}x{image.height} pixels is too large "
                        f"(limit {MAX_IMAGE_PIXELS // 1_000_000} megapixels); resize it and try again"
                    )
                image.seek(0)  # first frame of an animated GIF
                image.load()
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError(f"{label}: file not found") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{label}: is a folder, not an image file") from exc
    except NotARegularFileError as exc:
        raise ImageError(f"{label}: is {exc.kind}, not an image file") from exc
    except FileTooLargeError as exc:
        raise ImageError(f"{label}: the file is too large ({exc}); resize it and try again") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: image is too large to decode safely; resize it and try again") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{label}: not an image (could not identify the format); use PNG or JPEG") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: the image is truncated or corrupt ({exc}); export it again") from exc
    return image


def _upright_8bit(image: Image.Image) -> Image.Image:
    """EXIF rotation applied; 16/32-bit greyscale scaled to 8 bits by the image's own range."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.astype(np.uint8), "L")
    return image


def to_ink(image: Image.Image) -> np.ndarray:
    """Greyscale ink map ``(H, W)`` float32 in ``[0, 1]``, 1 = ink, with EXIF rotation applied.

    Transparent pixels count as background. The polarity is chosen from the image border: if the
    border is mostly light the image is inverted (dark ink on light paper, Omniglot's case).
    """
    image = _upright_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        grey = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
        if (alpha < 0.5).mean() > 0.05:
            # A transparent canvas: the opaque strokes are the ink, whatever their colour.
            opaque = grey[alpha >= 0.5]
            ink_is_dark = opaque.size == 0 or float(np.median(opaque)) < 0.5
            return (alpha * ((1.0 - grey) if ink_is_dark else grey)).astype(np.float32)
        grey = grey * alpha + (1.0 - alpha)  # composite over white
    else:
        grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return (1.0 - grey) if float(np.median(border)) >= 0.5 else grey


def center_ink(ink: np.ndarray, *, margin: float = 0.12, threshold: float = 0.1) -> np.ndarray:
    """Crop to the ink's bounding box, pad it square and leave ``margin`` of empty border.

    Omniglot characters fill roughly the middle three quarters of their frame; drawings and photos of
    a symbol often sit in a corner. An empty image is returned unchanged.
    """
    mask = ink > threshold
    if not mask.any():
        return ink
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = int(round(max(crop.shape) / (1.0 - 2 * margin)))
    out = np.zeros((side, side), dtype=np.float32)
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    out[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    return out


def ink_problem(ink: np.ndarray) -> str | None:
    """Why an ink map ``(H, W)`` (1 = ink) cannot show a symbol, or ``None`` when it can.

    ``"looks blank (no strokes found)"``: no contrast at all (white, black, transparent, one grey);
    ``"looks like noise ..."``: neighbouring pixels are unrelated, as in random pixels, while strokes make
    them alike (the best lag-1 correlation over the four directions, on at most 512 pixels a side);
    ``"is only WxH pixels ..."``: too small to hold a symbol.
    """
    height, width = ink.shape
    if min(height, width) < MIN_SYMBOL_SIDE:
        return f"is only {width}x{height} pixels, too small to show a symbol"
    if float(ink.max() - ink.min()) < BLANK_CONTRAST:
        return "looks blank (no strokes found)"
    if max(height, width) > 512:  # the box filter keeps thin strokes connected and noise unrelated
        scale = 512 / max(height, width)
        small = Image.fromarray(ink.astype(np.float32), "F").resize(
            (max(MIN_SYMBOL_SIDE, round(width * scale)), max(MIN_SYMBOL_SIDE, round(height * scale))), Image.BOX)
        ink = np.asarray(small, dtype=np.float32)
    best = -1.0
    for a, b in ((ink[:, :-1], ink[:, 1:]), (ink[:-1, :], ink[1:, :]), (ink[:-1, :-1], ink[1:, 1:]),
                 (ink[:-1, 1:], ink[1:, :-1])):
        a, b = a - a.mean(), b - b.mean()
        spread = float(np.sqrt((a * a).sum() * (b * b).sum()))
        best = max(best, float((a * b).sum()) / spread if spread > 0 else 1.0)
    if best < NOISE_CORRELATION:
        return "looks like noise (no strokes: neighbouring pixels are unrelated)"
    return None


def resize_ink(ink: np.ndarray, image_size: int) -> np.ndarray:
    """Resize an ink map to ``image_size`` x ``image_size`` with an antialiasing filter."""
    pil = Image.fromarray(np.clip(ink * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return np.asarray(pil.resize((image_size, image_size), Image.LANCZOS), dtype=np.float32) / 255.0


def preprocess_image(
    source: str | Path | bytes | Image.Image | np.ndarray,
    image_size: int = 28,
    *,
    center: bool = False,
    name: str | None = None,
    check_ink: bool = False,
) -> torch.Tensor:
    """Any image (file, bytes, PIL image or ink array) -> model input ``(1, image_size, image_size)``.

    Args:
        source: a path, encoded bytes, a PIL image, or an ``(H, W)`` ink array (1 = ink) in [0, 1].
        image_size: side of the square output.
        center: crop to the ink and centre it (for drawings and photos of symbols).
        name: how to call the input in error messages.
        check_ink: refuse an image that shows no symbol (blank, noise, tiny: :func:`ink_problem`).

    Raises:
        ImageError: the input cannot be decoded (or, with ``check_ink``, shows no symbol).
    """
    if isinstance(source, np.ndarray):
        if source.ndim != 2:
            raise ImageError(f"{name or 'array'}: expected a 2-D ink array, got shape {source.shape}")
        ink = np.clip(source.astype(np.float32), 0.0, 1.0)
    else:
        ink = to_ink(open_image(source, name=name))
    problem = ink_problem(ink) if check_ink else None
    if problem is not None:
        label = name or (str(source) if isinstance(source, (str, Path)) else "image")
        raise ImageError(f"{label}: the image {problem}; use a picture of one symbol")
    if center:
        ink = center_ink(ink)
    return torch.from_numpy(resize_ink(ink, image_size).copy()).unsqueeze(0)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Colour array ``(H, W, 3)`` float32 in ``[0, 1]`` with EXIF rotation applied (the photo path).

    Transparent pixels are composited over white (a cut-out object or an emoji on a white page);
    greyscale, palette and 16-bit images become RGB.
    """
    image = _upright_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        return (rgba[..., :3] * alpha + (1.0 - alpha)).astype(np.float32)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def preprocess_photo(
    source: str | Path | bytes | Image.Image | np.ndarray,
    image_size: int = 160,
    *,
    name: str | None = None,
) -> torch.Tensor:
    """Any photo (file, bytes, PIL image or ``(H, W, 3)`` array in [0, 1]) -> ``(3, image_size, image_size)``.

    The shorter side is resized to ``image_size`` (antialiased) and the centre square is kept, so the
    aspect ratio is preserved. Values are RGB in ``[0, 1]``; normalisation belongs to the backbone.

    Raises:
        ImageError: the input cannot be decoded.
    """
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3:
            raise ImageError(f"{name or 'array'}: expected an (H, W, 3) RGB array, got shape {source.shape}")
        rgb = np.clip(source.astype(np.float32), 0.0, 1.0)
    else:
        rgb = to_rgb(open_image(source, name=name))
    pil = Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
    scale = image_size / min(pil.width, pil.height)
    width, height = max(image_size, round(pil.width * scale)), max(image_size, round(pil.height * scale))
    pil = pil.resize((width, height), Image.LANCZOS)
    left, top = (width - image_size) // 2, (height - image_size) // 2
    pil = pil.crop((left, top, left + image_size, top + image_size))
    arr = np.asarray(pil, dtype=np.float32) / 255.0  # (S, S, 3)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())
