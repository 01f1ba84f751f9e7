"""Test accuracy against training CPU-seconds for a run saved at several points: where a long run flattens.

A campaign run (``train --train-split trainval --val-every 0``, continued with ``--resume`` across sessions) has no
held-out validation classes, so its curve comes from snapshots of its checkpoint, each evaluated as ``fewshot
evaluate`` does (seed 0, 5 queries per class) on the protocol's test split. Each point records the snapshot's step
and the training CPU-seconds its metadata holds (carried over ``--resume``; ``--init-backbone`` starts a new count,
so ``--base-cpu-seconds`` adds what the encoder it started from cost). A soup's point (``fewshot soup``) adds up its
ingredients' steps and CPU-seconds (each at its last logged step).

    python benchmarks/campaign_curve.py --data-dir DIR --protocol vinyals --label NAME \\
        [--settings 5w1s 20w1s] [--episodes 1000] [--base-cpu-seconds S] SNAPSHOT.safetensors [...]

Points are merged into ``benchmarks/results/campaign_curves.json`` (keyed by label and step; a point measured again
replaces the old one) and the whole file is printed as markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot import TaskSampler, evaluate, load_checkpoint, load_omniglot  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from adaptation_gain import cell  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "campaign_curves.json"


def point(path: Path, dataset, settings, episodes: int, base_cpu: float) -> dict:
    """One snapshot's step, CPU-seconds and accuracy ± CI in each cell."""
    model, info = load_checkpoint(path)
    if info.get("soup"):  # `fewshot soup` of runs: their steps and CPU-seconds together
        step = sum(int(p.get("steps_done") or 0) for p in info["soup"])
        cpu = sum(float(p.get("cpu_seconds") or 0.0) for p in info["soup"])
    else:
        history = info.get("history") or []
        step, cpu = int(info.get("steps_done") or 0), float(history[-1].get("cpu_seconds", 0.0)) if history else 0.0
    cells = {}
    for way, shot in settings:
        sampler = TaskSampler(dataset, way, shot, 5, seed=0)
        result = evaluate(model, (sampler.sample_task() for _ in range(episodes)))
        cells[f"{way}w{shot}s"] = {"accuracy": round(result.accuracy, 6), "ci95": round(result.ci95, 6)}
        print(f"{path.name}: step {step}, {way}-way {shot}-shot {100 * result.accuracy:.2f} "
              f"± {100 * result.ci95:.2f}", flush=True)
    return {"step": step, "cpu_seconds": round(base_cpu + cpu, 1),
            "hidden": int(info.get("method_kwargs", {}).get("hidden", 64)), "episodes": episodes, "cells": cells,
            "command": info.get("command")}


def tables(curves: dict) -> str:
    out = []
    for label, points in curves.items():
        cells = sorted({c for p in points for c in p["cells"]}, key=lambda c: (int(c.split("w")[0]), c))
        out += [f"**{label}**", "", "| step | training CPU-s | " + " | ".join(cells) + " |",
                "|---|---|" + "---|" * len(cells)]
        for p in sorted(points, key=lambda p: p["step"]):
            row = [f"{100 * p['cells'][c]['accuracy']:.2f} ± {100 * p['cells'][c]['ci95']:.2f}" if c in p["cells"]
                   else "" for c in cells]
            out.append(f"| {p['step']} | {p['cpu_seconds']:.0f} | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("snapshots", nargs="+", type=Path)
    p.add_argument("--label", required=True, help="the curve's name, e.g. vinyals-protonet-h128")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--protocol", choices=("lake", "vinyals"), default="vinyals")
    p.add_argument("--settings", nargs="+", type=cell, default=[(5, 1), (20, 1)], metavar="NwKs")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--base-cpu-seconds", type=float, default=0.0,
                   help="training CPU-seconds of the encoder the run started from (--init-backbone)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    missing = [str(s) for s in args.snapshots if not s.is_file()]
    if missing:
        print(f"error: no such checkpoint: {', '.join(missing)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    dataset = load_omniglot(args.protocol, "test", data_dir=args.data_dir)
    curves = json.loads(args.out.read_text()) if args.out.is_file() else {}
    points = {p["step"]: p for p in curves.get(args.label, [])}
    for snapshot in args.snapshots:
        new = point(snapshot, dataset, args.settings, args.episodes, args.base_cpu_seconds)
        points[new["step"]] = new
        curves[args.label] = sorted(points.values(), key=lambda p: p["step"])
        args.out.write_text(json.dumps(curves, indent=1) + "\n")  # after each point: a long run loses nothing
    print(tables(curves))
    return 0


if __name__ == "__main__":
    sys.exit(main())
