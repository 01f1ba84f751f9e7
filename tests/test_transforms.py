"""The one image transform: polarity, transparency, odd modes, EXIF, GIFs, and refusing bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import fewshot.transforms as transforms
from fewshot import ImageError, preprocess_image
from fewshot.transforms import center_ink, open_image, to_ink


def _cross(height: int = 40, width: int = 40) -> np.ndarray:
    """A black cross on white (uint8), Omniglot's polarity."""
    canvas = np.full((height, width), 255, np.uint8)
    canvas[10:30, 18:22] = 0
    canvas[18:22, 10:30] = 0
    return canvas


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def reference_ink() -> np.ndarray:
    ink = (_cross() == 0).astype(np.float32)  # 1 = ink
    assert to_ink(Image.fromarray(_cross())).tolist() == ink.tolist()
    return ink


def test_polarity_black_on_white_equals_white_on_black(reference_ink):
    white_on_black = 255 - _cross()
    np.testing.assert_array_equal(to_ink(Image.fromarray(white_on_black)), reference_ink)
    a = preprocess_image(_encode(Image.fromarray(_cross()), "PNG"))
    b = preprocess_image(_encode(Image.fromarray(white_on_black), "PNG"))
    torch.testing.assert_close(a, b)
    assert a.shape == (1, 28, 28) and float(a.max()) > 0.9 and float(a[0, 0, 0]) == 0.0  # ink is 1, paper is 0


@pytest.mark.parametrize("stroke", [(0, 0, 0, 255), (255, 255, 255, 255)])
def test_transparent_canvas_black_or_white_strokes_are_ink(reference_ink, stroke):
    rgba = np.zeros((40, 40, 4), np.uint8)  # fully transparent canvas (what a drawing widget exports)
    rgba[_cross() == 0] = stroke
    image = open_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(to_ink(image), reference_ink)


def test_transparent_canvas_coloured_strokes_are_ink(reference_ink):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[_cross() == 0] = (200, 30, 30, 255)  # a red pen
    ink = to_ink(Image.fromarray(rgba, "RGBA"))
    assert (ink[reference_ink == 1] > 0.5).all() and (ink[reference_ink == 0] == 0).all()


def test_opaque_rgba_is_composited_like_rgb(reference_ink):
    rgba = np.stack([_cross()] * 3 + [np.full((40, 40), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_ink(Image.fromarray(rgba, "RGBA")), reference_ink)


def test_palette_image(reference_ink):
    palette = Image.fromarray(_cross()).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    image = open_image(_encode(palette, "PNG"))
    assert image.mode == "P"
    np.testing.assert_array_equal(to_ink(image), reference_ink)


def test_16_bit_greyscale(reference_ink):
    image = open_image(_encode(Image.fromarray(_cross().astype(np.uint16) * 257), "PNG"))
    assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(to_ink(image), reference_ink)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk(reference_ink, fmt):
    options = {"quality": 100} if fmt == "JPEG" else {}
    image = open_image(_encode(Image.fromarray(_cross()).convert("CMYK"), fmt, **options))
    assert image.mode == "CMYK"
    np.testing.assert_allclose(to_ink(image), reference_ink, atol=0.05)


def test_exif_orientation_is_applied():
    upright = np.full((30, 50), 255, np.uint8)  # an "L": asymmetric, landscape
    upright[5:10, 5:45] = 0
    upright[5:25, 5:10] = 0
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # camera stored it sideways (50x30)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image = open_image(_encode(stored, "PNG", exif=exif))
    assert image.size == (30, 50)
    np.testing.assert_array_equal(to_ink(image), (upright == 0).astype(np.float32))


def test_animated_gif_uses_the_first_frame(reference_ink):
    other = np.full((40, 40), 255, np.uint8)
    other[2:6, :] = 0
    frames = [Image.fromarray(_cross()).convert("P"), Image.fromarray(other).convert("P")]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames == 2
    np.testing.assert_array_equal(to_ink(open_image(data)), reference_ink)


def test_truncated_png_is_an_image_error():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "PNG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        preprocess_image(data[: len(data) // 2])


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n" * 20)
    with pytest.raises(ImageError, match="not an image") as info:
        preprocess_image(path)
    assert "notes.png" in str(info.value)
    with pytest.raises(ImageError, match="file not found"):
        preprocess_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="folder"):
        preprocess_image(tmp_path)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no real pixel data): a decompression bomb's shape."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    pixels = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + pixels + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(50_000, 50_000), (8_000, 6_000)])
def test_decompression_bomb_is_an_image_error(width, height):
    # 2.5 gigapixels trips PIL's own bomb check; 48 megapixels trips fewshot's 40-megapixel limit
    with pytest.raises(ImageError, match="too large"):
        preprocess_image(_png_header_only(width, height))


def test_pixel_limit_is_checked_before_decoding(monkeypatch):
    monkeypatch.setattr(transforms, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="11x11 pixels is too large"):
        open_image(_encode(Image.new("L", (11, 11), 255), "PNG"))
    open_image(_encode(Image.new("L", (10, 10), 255), "PNG"))


def test_center_ink_centres_and_keeps_a_margin():
    ink = np.zeros((60, 60), np.float32)
    ink[2:12, 40:50] = 1.0  # a blob in a corner
    centred = center_ink(ink, margin=0.25)
    assert centred.shape == (20, 20)  # 10 px of ink over (1 - 2 * 0.25)
    rows, cols = np.flatnonzero(centred.any(1)), np.flatnonzero(centred.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (5, 14, 5, 14)  # equal margins on every side
    assert centred.sum() == ink.sum()  # nothing cut, nothing added
    empty = np.zeros((5, 5), np.float32)
    assert center_ink(empty) is empty


def test_centring_makes_position_irrelevant():
    a, b = np.zeros((50, 50), np.float32), np.zeros((50, 50), np.float32)
    a[3:13, 5:9] = 1.0
    b[30:40, 40:44] = 1.0
    torch.testing.assert_close(preprocess_image(a, center=True), preprocess_image(b, center=True))
    assert not torch.allclose(preprocess_image(a), preprocess_image(b))


def test_preprocess_accepts_paths_arrays_and_pil(tmp_path):
    path = tmp_path / "cross.png"
    Image.fromarray(_cross()).save(path)
    from_path = preprocess_image(path, 20)
    assert from_path.shape == (1, 20, 20) and from_path.dtype == torch.float32
    torch.testing.assert_close(preprocess_image(Image.fromarray(_cross()), 20), from_path)
    torch.testing.assert_close(preprocess_image((_cross() == 0).astype(np.float32), 20), from_path)
    with pytest.raises(ImageError, match="2-D"):
        preprocess_image(np.zeros((2, 2, 2), np.float32))
