"""Synthetic example symbols: hand-drawn-looking shapes (circle, cross, ...) that need no data set.

They make a task anyone can run without Omniglot: the lab's example task when the data is missing, the tests'
drawings, the load test's uploads. Every symbol is a black-on-white PNG whose position, scale, angle, stroke
width and corners are jittered by its seed, so two seeds give two drawings of the same class.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SYMBOLS", "ExampleTask", "synthetic_symbol", "synthetic_task"]

SYMBOLS = ("circle", "cross", "triangle", "square", "bar", "plus", "zigzag", "arrow", "star", "wave")


@dataclass(frozen=True)
class ExampleTask:
    """A task as images: ``support[c]`` holds class ``c``'s PNGs; ``queries`` are ``(png, class index)`` pairs."""

    names: list[str]
    support: list[list[bytes]]
    queries: list[tuple[bytes, int]]


def _stroke(draw: ImageDraw.ImageDraw, points, width: int) -> None:
    draw.line(points, fill=0, width=width, joint="curve")
    r = width / 2
    for x, y in (points[0], points[-1]):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)


def synthetic_symbol(kind: str, seed: int = 0, size: int = 210) -> bytes:
    """One ``kind`` symbol (one of :data:`SYMBOLS`) as a ``size``×``size`` black-on-white PNG.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in SYMBOLS:
        raise ValueError(f"unknown symbol {kind!r}; choose one of {', '.join(SYMBOLS)}")
    rng = np.random.default_rng(seed)
    scale = size * rng.uniform(0.28, 0.36)
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.08, 0.08) * size
    angle = rng.uniform(-0.2, 0.2)
    width = int(round(size / 21 * rng.uniform(0.85, 1.15)))
    cos, sin = math.cos(angle), math.sin(angle)

    def pt(u: float, v: float) -> tuple[float, float]:
        u, v = u + rng.normal(0, 0.02), v + rng.normal(0, 0.02)
        return cx + scale * (u * cos - v * sin), cy + scale * (u * sin + v * cos)

    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        _stroke(draw, [pt(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40)], width)
    elif kind == "cross":
        _stroke(draw, [pt(-1, -1), pt(1, 1)], width)
        _stroke(draw, [pt(-1, 1), pt(1, -1)], width)
    elif kind == "triangle":
        _stroke(draw, [pt(0, -1), pt(1, 0.8), pt(-1, 0.8), pt(0, -1)], width)
    elif kind == "square":
        _stroke(draw, [pt(-0.9, -0.9), pt(0.9, -0.9), pt(0.9, 0.9), pt(-0.9, 0.9), pt(-0.9, -0.9)], width)
    elif kind == "bar":
        _stroke(draw, [pt(0, -1), pt(0, 1)], width)
    elif kind == "plus":
        _stroke(draw, [pt(0, -1), pt(0, 1)], width)
        _stroke(draw, [pt(-1, 0), pt(1, 0)], width)
    elif kind == "zigzag":
        _stroke(draw, [pt(-1, -0.8), pt(-0.3, 0.8), pt(0.3, -0.8), pt(1, 0.8)], width)
    elif kind == "arrow":
        _stroke(draw, [pt(-1, 0), pt(1, 0)], width)
        _stroke(draw, [pt(0.4, -0.6), pt(1, 0), pt(0.4, 0.6)], width)
    elif kind == "star":
        _stroke(draw, [pt(math.cos(t), math.sin(t)) for t in -math.pi / 2 + np.arange(6) * 4 * math.pi / 5], width)
    else:  # wave
        _stroke(draw, [pt(u, 0.5 * math.sin(3 * u)) for u in np.linspace(-1, 1, 30)], width)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def synthetic_task(n_way: int = 5, n_shot: int = 1, n_query: int = 1, seed: int = 0) -> ExampleTask:
    """An ``n_way``-way ``n_shot``-shot task of the first ``n_way`` symbols with ``n_query`` queries per class.

    Raises:
        ValueError: ``n_way`` is not between 1 and ``len(SYMBOLS)``.
    """
    if not 1 <= n_way <= len(SYMBOLS):
        raise ValueError(f"n_way must be between 1 and {len(SYMBOLS)} (one class per symbol), got {n_way}")
    names = list(SYMBOLS[:n_way])
    support = [[synthetic_symbol(k, seed=1000 * seed + 10 * c + s) for s in range(n_shot)]
               for c, k in enumerate(names)]
    queries = [(synthetic_symbol(k, seed=1000 * seed + 500 + 10 * c + q), c)
               for q in range(n_query) for c, k in enumerate(names)]
    return ExampleTask(names, support, queries)
