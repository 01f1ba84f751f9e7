"""Evaluate the shipped checkpoints and write the results table with the papers' numbers beside ours.

    python benchmarks/accuracy.py --evaluate --data-dir DIR [--device auto] [--jobs 4] [--episodes 1000]
    python benchmarks/accuracy.py            # only re-render benchmarks/results.md from results/accuracy.json

Every figure is ``python -m fewshot evaluate --checkpoint ... --json`` (1000 episodes, seed 0,
5 queries per class) on the test split of the protocol the checkpoint was trained on; MANN is also
scored in its own protocol (accuracy at the 1st..10th showing of a class in 50-image sequences).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import RECIPES, evaluations, recipe_arg, trained_shot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "accuracy.json"
TABLE = ROOT / "benchmarks" / "results.md"

PAPER = {  # Omniglot, Vinyals split; (5w1s, 5w5s, 20w1s, 20w5s) in %
    "maml": ("Finn et al. 2017", (98.7, 99.9, 95.8, 98.9)),
    "fomaml": ("Finn et al. 2017", (98.3, 99.2, 89.4, 97.9)),
    "protonet": ("Snell et al. 2017", (98.8, 99.7, 96.0, 98.9)),
    "matching": ("Vinyals et al. 2016", (98.1, 98.9, 93.8, 98.5)),
    "siamese": ("Koch et al. 2015", (97.3, 98.4, 88.2, 97.0)),
    "mann": ("Santoro et al. 2016", None),
    "finetune": ("(no paper figure)", None),
}
SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
CROSS_SHOT_MARKED = ("maml", "fomaml", "protonet", "matching", "siamese")  # episodic training with a shot
MANN_PAPER = {2: 82.8, 5: 94.9}  # Santoro et al. 2016, Table 1, 5 classes: 2nd and 5th instance


def _evaluate(job: tuple[str, int, int], args: argparse.Namespace) -> dict:
    name, way, shot = job
    out, protocol = RECIPES[name][0], recipe_arg(name, "--protocol")
    cmd = [sys.executable, "-m", "fewshot", "evaluate", "--checkpoint", str(Path(args.ckpt_root) / out), "--protocol", protocol,
           "--n-way", str(way), "--n-shot", str(shot), "--n-query", "5", "--episodes", str(args.episodes),
           "--seed", "0", "--device", args.device, "--json"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        return {"recipe": name, "n_way": way, "n_shot": shot, "error": proc.stderr.strip()[-500:]}
    result = json.loads(proc.stdout)
    result["recipe"] = name
    result["checkpoint"] = out  # relative to the repository root
    result["command"] = " ".join(["python -m fewshot"] + cmd[3:]).replace(str(ROOT) + "/", "")
    return result


def _mann_instances(name: str, args: argparse.Namespace) -> dict:
    import torch

    from fewshot import TaskSampler, load_checkpoint, load_omniglot, resolve_device

    out, protocol = RECIPES[name][0], recipe_arg(name, "--protocol")
    device = resolve_device(args.device)
    model, _ = load_checkpoint(Path(args.ckpt_root) / out, device)
    dataset = load_omniglot(protocol, "test", data_dir=args.data_dir).to(device)
    sampler = TaskSampler(dataset, 5, 10, 0, seed=0)  # 5 classes x 10 instances = 50-image sequences
    rows = torch.stack([model.instance_accuracy(sampler.sample_task()) for _ in range(args.episodes)])
    mean = rows.nanmean(0)
    ci = 1.96 * rows.std(0) / math.sqrt(rows.shape[0])
    return {"recipe": name, "protocol": protocol, "sequences": args.episodes,
            "instance_accuracy": [float(x) for x in mean], "instance_ci95": [float(x) for x in ci]}


def render(results: list[dict]) -> str:
    by = {(r["recipe"], r["n_way"], r["n_shot"]): r for r in results if "accuracy" in r}
    lines = []
    for protocol in ("vinyals", "lake"):
        title = ("Vinyals split (the papers' protocol; x4 rotation classes; trained on trainval)" if protocol == "vinyals"
                 else "Lake protocol (trained on images_background only, tested on images_evaluation, never seen)")
        lines += [f"### {title}", "", "| method | checkpoint | 5-way 1-shot | 5-way 5-shot | 20-way 1-shot | 20-way 5-shot |",
                  "|---|---|---|---|---|---|"]
        methods = []
        for name, (out, _) in RECIPES.items():
            if not name.startswith(protocol):
                continue
            method = recipe_arg(name, "--method")
            methods.append((method, name, out))
        for method in PAPER:
            rows = [(n, o) for m, n, o in methods if m == method and any(k[0] == n for k in by)]
            if not rows:
                continue
            cells = []
            for way, shot in SETTINGS:
                found = [(n, by[(n, way, shot)]) for n, _ in rows if (n, way, shot) in by]
                if not found:
                    cells.append("—")
                    continue
                # A model trained with this shot first; else one trained with another, marked †.
                n, r = sorted(found, key=lambda f: trained_shot(f[0]) != shot)[0]
                text = f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f}"
                if method in CROSS_SHOT_MARKED and trained_shot(n) != shot:
                    text += "†"
                paper = PAPER[method][1]
                if protocol == "vinyals" and paper:
                    ref = paper[SETTINGS.index((way, shot))]
                    mark = "≥" if 100 * r["accuracy"] >= ref else "<"
                    text += f" ({mark} {ref})"
                cells.append(text)
            ckpts = ", ".join(sorted({Path(o).name for n, o in rows}))
            lines.append(f"| {method} | {ckpts} | " + " | ".join(cells) + " |")
        lines.append("")
    mann = [r for r in results if "instance_accuracy" in r]
    if mann:
        lines += ["### MANN in its own protocol (5 classes, 50-image sequences, accuracy % at the k-th showing)", "",
                  "| checkpoint | 1st | 2nd | 3rd | 5th | 10th |", "|---|---|---|---|---|---|"]
        for r in mann:
            acc = r["instance_accuracy"]
            cells = [f"{100 * acc[i - 1]:.1f}" + (f" (paper {MANN_PAPER[i]})" if i in MANN_PAPER else "") for i in (1, 2, 3, 5, 10)]
            lines.append(f"| {r['recipe']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Figures: mean accuracy % ± 95% CI over 1000 test episodes (seed 0, 5 queries per class); "
              "(≥ x) / (< x): at or above / below the paper's figure x; †: a model trained on 1-shot episodes, "
              "tested with 5 support images per class (the papers train a separate 5-shot model)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--evaluate", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--ckpt-root", default=str(ROOT), help="checkpoint paths are relative to this folder")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args()
    results_path = Path(args.results)
    if args.evaluate:
        names = [n for n in RECIPES if (Path(args.ckpt_root) / RECIPES[n][0]).exists()
                 and (not args.only or any(n.startswith(o) for o in args.only))]
        jobs = [(n, w, s) for n in names for w, s in evaluations(n)]
        old = json.loads(results_path.read_text()) if results_path.exists() else []
        keep = [r for r in old if r["recipe"] not in names]
        results: list[dict] = []
        results_path.parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(_evaluate, j, args) for j in jobs]
            futures += [pool.submit(_mann_instances, n, args) for n in names if "-mann" in n]
            for future in as_completed(futures):
                results.append(future.result())
                print(json.dumps(results[-1])[:300], flush=True)
                results_path.write_text(json.dumps(keep + results, indent=1))  # partial results survive a kill
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    TABLE.write_text(render(results))
    print(TABLE.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
