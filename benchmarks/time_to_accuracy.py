"""Time-to-accuracy curves: validation accuracy against training CPU-seconds, one curve per run.

Every training run made with ``--val-every N`` (on a ``--train-split train`` run, so the validation classes are
held out) records in its checkpoint's history the validation accuracy and the process CPU time spent training
(``cpu_seconds``, validation excluded, carried over ``--resume``). This script reads those histories and writes

- ``checkpoints/training_curves.json``: the points of each curve, with the run's command (beside the checkpoints,
  since the app's Benchmark page draws it and the app reads nothing under ``benchmarks/``);
- ``benchmarks/time_to_accuracy.svg``: the figure (plain SVG, no plotting library);

Usage::

    python benchmarks/time_to_accuracy.py LABEL=PATH.safetensors [LABEL=PATH ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot import read_checkpoint_info  # noqa: E402

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def curve(path: Path) -> dict:
    """The validation points of one checkpoint's history: CPU-seconds, accuracy, CI, step."""
    meta = read_checkpoint_info(path)
    points = []
    for h in meta.get("history") or []:
        if "val_accuracy" in h and "cpu_seconds" in h:
            points.append({"cpu_seconds": h["cpu_seconds"], "step": h["step"], "accuracy": h["val_accuracy"],
                           "ci95": h.get("val_ci95")})
    if not points:
        raise SystemExit(f"error: {path} has no validation points with cpu_seconds in its history "
                         "(train with --val-every N on --train-split train)")
    return {"method": meta.get("method"), "n_way": meta.get("n_way"), "n_shot": meta.get("n_shot"),
            "command": meta.get("command"), "resumed_with": meta.get("resumed_with", []),
            "init_backbone": (meta.get("init_backbone") or {}).get("checkpoint"), "points": points}


def svg(curves: dict[str, dict], width: int = 720, height: int = 420) -> str:
    """A line chart of the curves (x: CPU-seconds, y: validation accuracy in %)."""
    left, right, top, bottom = 64, 200, 24, 48
    xs = [p["cpu_seconds"] for c in curves.values() for p in c["points"]]
    ys = [100 * p["accuracy"] for c in curves.values() for p in c["points"]]
    x_max = max(xs) * 1.05 or 1.0
    y_lo, y_hi = max(0.0, min(ys) - 2), min(100.0, max(ys) + 1)
    if y_hi - y_lo < 1:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5

    def px(x: float) -> float:
        return left + (width - left - right) * x / x_max

    def py(y: float) -> float:
        return top + (height - top - bottom) * (1 - (y - y_lo) / (y_hi - y_lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>']
    for i in range(6):  # grid and tick labels
        y = y_lo + (y_hi - y_lo) * i / 5
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
        x = x_max * i / 5
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:.0f}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">training CPU-seconds'
               f' (this 2-core machine)</text>')
    out.append(f'<text transform="translate(16,{(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f'validation accuracy (%)</text>')
    for i, (label, c) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(p['cpu_seconds']):.1f},{py(100 * p['accuracy']):.1f}" for p in c["points"])
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        out.append(f'<rect x="{width - right + 12}" y="{top + 18 * i}" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{width - right + 30}" y="{top + 18 * i + 10}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=PATH")
    parser.add_argument("--json", default=str(ROOT / "checkpoints" / "training_curves.json"))
    parser.add_argument("--svg", default=str(ROOT / "benchmarks" / "time_to_accuracy.svg"))
    args = parser.parse_args(argv)
    curves = {}
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"expected LABEL=PATH, got {item!r}")
        curves[label] = {"checkpoint": path, **curve(Path(path))}
    Path(args.json).write_text(json.dumps(curves, indent=1) + "\n")
    Path(args.svg).write_text(svg(curves) + "\n")
    for label, c in curves.items():
        last = c["points"][-1]
        best = max(c["points"], key=lambda p: p["accuracy"])
        print(f"{label}: last {100 * last['accuracy']:.2f}% at {last['cpu_seconds']:.0f} CPU-s (step {last['step']}); "
              f"best {100 * best['accuracy']:.2f}% at {best['cpu_seconds']:.0f} CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
