"""MAML++'s options on vs off at the same budget: a table in ``benchmarks/results.md`` from the runs' checkpoints.

Each run is a ``python -m fewshot train`` checkpoint made with the same command but for the option(s) under test,
the same wall-clock budget (``--max-seconds``) and validation every 50 steps on held-out background alphabets
(``--train-split train --val-every 50``). For each run the table gives its steps, the training CPU-seconds its
history records, its last validation accuracy, and its test accuracy from ``python -m fewshot evaluate`` (Lake
protocol, 5-way 1-shot, 1000 episodes, seed 0)::

    python benchmarks/maml_ablation.py --data-dir DIR plain=runs/a.safetensors lslr=runs/b.safetensors ...

``--reuse DIR`` takes ``DIR/eval-ablation-LABEL.json`` (the output of that same evaluate command) instead of
evaluating again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import results_md  # noqa: E402
from fewshot import read_checkpoint_info  # noqa: E402

BEGIN = "<!-- maml-ablation: made by python benchmarks/maml_ablation.py from benchmarks/results/maml_ablation.json -->"
END = "<!-- end of maml-ablation -->"
OUT = ROOT / "benchmarks" / "results" / "maml_ablation.json"


def evaluate_command(path: str, data_dir: str) -> list[str]:
    return [sys.executable, "-m", "fewshot", "evaluate", "--checkpoint", path, "--protocol", "lake", "--n-way", "5",
            "--n-shot", "1", "--n-query", "5", "--episodes", "1000", "--seed", "0", "--device", "cpu", "--json",
            "--data-dir", data_dir]


def run_record(label: str, path: str, data_dir: str, reuse: Path | None) -> dict:
    meta = read_checkpoint_info(path)
    history = meta.get("history") or []
    vals = [h for h in history if "val_accuracy" in h]
    cached = reuse / f"eval-ablation-{label}.json" if reuse else None
    if cached is not None and cached.exists():
        result = json.loads(cached.read_text())
    else:
        done = subprocess.run(evaluate_command(path, data_dir), capture_output=True, text=True, check=True)
        result = json.loads(done.stdout)
    kwargs = meta.get("method_kwargs") or {}
    return {"label": label, "command": meta.get("command"), "steps": meta.get("steps_done"),
            "cpu_seconds": history[-1].get("cpu_seconds") if history else None,
            "inner_steps": kwargs.get("inner_steps"), "learn_inner_lr": bool(kwargs.get("learn_inner_lr")),
            "multi_step_loss": kwargs.get("multi_step_loss", 0.0),
            "val_accuracy": vals[-1]["val_accuracy"] if vals else None, "val_step": vals[-1]["step"] if vals else None,
            "test_accuracy": result["accuracy"], "test_ci95": result["ci95"],
            "evaluate": " ".join(["python"] + evaluate_command(path, "DIR")[1:])}


def section(records: list[dict], note: str = "") -> str:
    lines = [BEGIN, "### MAML++ options, on vs off at the same budget (Lake protocol, MAML 5-way 1-shot)", "",
             "| run | inner steps (train) | learned inner rates | multi-step loss | steps | training CPU-s | "
             "last validation % | test 5w1s % |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        val = f"{100 * r['val_accuracy']:.1f} (step {r['val_step']})" if r["val_accuracy"] is not None else "—"
        lines.append(f"| {r['label']} | {r['inner_steps']} | {'yes' if r['learn_inner_lr'] else 'no'} | "
                     f"{r['multi_step_loss'] or 'off'} | {r['steps']} | {r['cpu_seconds']:.0f} | {val} | "
                     f"{100 * r['test_accuracy']:.1f} ± {100 * r['test_ci95']:.1f} |")
    lines += ["", "Every run: `" + (records[0]["command"] or "") + "` with the option(s) of its row (the commands are "
              "in `benchmarks/results/maml_ablation.json`); test: `" + records[0]["evaluate"] + "` (3 inner steps at "
              "test, the model's own setting). Made by `python benchmarks/maml_ablation.py`." + (" " + note if note else ""),
              END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=CHECKPOINT")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--reuse", type=Path, default=None)
    parser.add_argument("--note", default="", help="a sentence on how the runs went, appended to the section")
    args = parser.parse_args(argv)
    records = []
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"expected LABEL=CHECKPOINT, got {item!r}")
        records.append(run_record(label, path, args.data_dir, args.reuse))
    OUT.write_text(json.dumps(records, indent=1) + "\n")
    results_md.write_section(section(records, args.note), BEGIN, END)
    print(section(records, args.note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
