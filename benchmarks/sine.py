"""Sine-wave regression (Finn et al. 2017, section 5.1): MAML vs the network pre-trained on all sines.

    OMP_NUM_THREADS=1 python benchmarks/sine.py [--tasks 1000] [--seed 0]

Scores the shipped ``checkpoints/sine/{maml,pretrained}.safetensors`` with :func:`fewshot.sine.evaluate_sine`:
1,000 random sines (seed 0, the same sines and points for both models), K = 5 and 10 points drawn from [-5, 5]
(and, for the paper's extrapolation figure, K = 10 from [-5, 0] only), SGD at the training inner learning rate
0.01, mean-squared error on 100 evenly spaced points over [-5, 5] after 0, 1 and 10 steps, ± 95% CI.

The paper fine-tunes its baseline "using an automatically tuned step size"; the ``pretrained, tuned lr`` rows do
that: the step size from {0.01, 0.02, 0.05, 0.1, 0.2} with the lowest 10-step MSE on 200 other sines (seed 1)
among those that diverge on the fewest of them.

Writes ``benchmarks/results/sine.json`` and the section between the sine markers of ``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot import load_checkpoint  # noqa: E402
from fewshot.sine import DIVERGED_MSE, X_RANGE, evaluate_sine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "sine.json"
TABLE = ROOT / "benchmarks" / "results.md"
BEGIN = "<!-- sine: made by python benchmarks/sine.py from benchmarks/results/sine.json -->"
END = "<!-- end of sine -->"
STEPS = (0, 1, 10)
TUNE_LRS = (0.01, 0.02, 0.05, 0.1, 0.2)
SETTINGS = ((5, X_RANGE), (10, X_RANGE), (10, (-5.0, 0.0)))


def measure(n_tasks: int, seed: int) -> dict:
    models = {name: load_checkpoint(ROOT / "checkpoints" / "sine" / f"{name}.safetensors",
                                    expect_method=f"sine_{name}") for name in ("maml", "pretrained")}
    rows = []
    for n_shot, x_range in SETTINGS:
        lrs = {name: float(info["inner_lr_test"]) for name, (_, info) in models.items()}
        def tuning_score(lr: float) -> tuple[int, float]:  # the fewest diverged sines, then the lowest mean MSE
            r = evaluate_sine(models["pretrained"][0], n_tasks=200, n_shot=n_shot, steps=(10,), inner_lr=lr,
                              seed=seed + 1, x_range=x_range)[0]
            return r.diverged, r.mse

        tuned = min(TUNE_LRS, key=tuning_score)
        runs = [("maml", "maml", lrs["maml"]), ("pretrained", "pretrained", lrs["pretrained"]),
                ("pretrained, tuned lr", "pretrained", tuned)]
        for label, name, lr in runs:
            results = evaluate_sine(models[name][0], n_tasks=n_tasks, n_shot=n_shot, steps=STEPS, inner_lr=lr,
                                    seed=seed, x_range=x_range)
            rows.append({"model": label, "checkpoint": f"checkpoints/sine/{name}.safetensors", "n_shot": n_shot,
                         "x_range": list(x_range), "inner_lr": lr, "n_tasks": n_tasks, "seed": seed,
                         "mse": {str(r.steps): r.mse for r in results}, "ci95": {str(r.steps): r.ci95 for r in results},
                         "median": {str(r.steps): r.median for r in results},
                         "diverged": {str(r.steps): r.diverged for r in results}})
    claims = []
    for n_shot, x_range in SETTINGS:
        pick = {r["model"]: r for r in rows if r["n_shot"] == n_shot and r["x_range"] == list(x_range)}
        maml_1 = pick["maml"]["mse"]["1"]
        assert pick["maml"]["diverged"]["1"] == 0, "MAML diverged in one step: the comparison below would be unfair"
        for baseline in ("pretrained", "pretrained, tuned lr"):
            claims.append({"n_shot": n_shot, "x_range": list(x_range), "baseline": baseline, "maml_1_step": maml_1,
                           "baseline_10_steps": pick[baseline]["mse"]["10"],
                           "maml_1_step_beats_baseline_10_steps": maml_1 < pick[baseline]["mse"]["10"]})
    training = {name: {"command": info["command"], "steps_done": info.get("steps_done"), "seconds": info.get("seconds")}
                for name, (_, info) in models.items()}
    return {"rows": rows, "claims": claims, "training": training}


def render(report: dict) -> str:
    lines = [BEGIN, "### Sine-wave regression (Finn et al. 2017, section 5.1)", "",
             "| model | K | support x | inner lr | MSE after 0 steps | 1 step | 10 steps |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        cells = []
        for s in ("0", "1", "10"):
            text = f"{r['mse'][s]:.3f} ± {r['ci95'][s]:.3f} (median {r['median'][s]:.3f})"
            if r["diverged"][s]:
                text += f", **diverged on {r['diverged'][s]}**"
            cells.append(text)
        lines.append(f"| {r['model']} | {r['n_shot']} | [{r['x_range'][0]:g}, {r['x_range'][1]:g}] | {r['inner_lr']:g} | "
                     + " | ".join(cells) + " |")
    lines += ["", "MAML after one step vs the pre-trained network after ten (the paper's claim):", ""]
    for c in report["claims"]:
        verdict = "yes" if c["maml_1_step_beats_baseline_10_steps"] else "**no**"
        lines.append(f"- K = {c['n_shot']}, x in [{c['x_range'][0]:g}, {c['x_range'][1]:g}], vs {c['baseline']}: "
                     f"{c['maml_1_step']:.3f} vs {c['baseline_10_steps']:.3f}: {verdict}")
    lines += ["", f"Mean-squared error on 100 evenly spaced points over [-5, 5], mean ± 95% CI over "
              f"{report['rows'][0]['n_tasks']} random sines (seed {report['rows'][0]['seed']}; the same sines and "
              "points for every row of a K), SGD on the K points. *Diverged on n*: on n sines SGD blew up (an "
              f"error above {DIVERGED_MSE:g} or not finite); the mean and CI are over the other sines and the "
              "median over all. Checkpoints made by:"]
    for name, t in report["training"].items():
        lines.append(f"`{t['command']}` ({t['steps_done']} iterations, {t['seconds']} s with one thread on the "
                     "shared 2-core CPU)")
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    results_md.write_section(section, BEGIN, END, TABLE)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    report = measure(args.tasks, args.seed)
    report["command"] = "python benchmarks/sine.py" + (f" --tasks {args.tasks}" if args.tasks != 1000 else "") + \
        (f" --seed {args.seed}" if args.seed else "")
    report["seconds"] = round(time.perf_counter() - start, 1)
    section = render(report)
    print(section)
    if not args.no_write:
        RESULTS.write_text(json.dumps(report, indent=1) + "\n")
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
