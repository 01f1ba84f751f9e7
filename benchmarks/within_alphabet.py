"""Lake et al.'s one-shot task for the shipped Lake checkpoints, into ``benchmarks/results/within_alphabet.json``.

    python benchmarks/within_alphabet.py --data-dir DIR [--methods protonet matching siamese] [--episodes 1000]
                                         (re-makes the rows of the named methods; the others' stay)
    python benchmarks/within_alphabet.py --render     # only re-write the section of benchmarks/results.md

Every figure is ``python -m fewshot evaluate --protocol lake --within-alphabet --n-way 20 --n-shot 1 --n-query 1
--episodes 1000 --seed 0 --json``: 20 characters of one evaluation alphabet, one drawer's image of each as the
support set, another drawer's as the queries (Lake, Salakhutdinov & Tenenbaum 2015). Beside it, the same command
without ``--within-alphabet`` (characters from any evaluation alphabet, any drawers): the gap is what same-alphabet
look-alikes cost. The 20-way methods only: the fixed 5-way heads (MAML, FOMAML, MANN) cannot answer it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "within_alphabet.json"
TABLE = ROOT / "benchmarks" / "results.md"
BEGIN = "<!-- within-alphabet: made by python benchmarks/within_alphabet.py from benchmarks/results/within_alphabet.json -->"
END = "<!-- end of within-alphabet -->"
REFERENCES = {"people (Lake et al. 2015)": 4.5, "Siamese net (Koch et al. 2015, as reported by Lake et al. 2019)": 8.0,
              "ProtoNet (Snell et al. 2017, as reported by Lake et al. 2019)": 13.7}


def evaluate(checkpoint: Path, args: argparse.Namespace, within: bool) -> dict:
    cmd = ["python", "-m", "fewshot", "evaluate", "--checkpoint", str(checkpoint.relative_to(ROOT)), "--protocol",
           "lake", *(["--within-alphabet"] if within else []), "--n-way", "20", "--n-shot", "1", "--n-query", "1",
           "--episodes", str(args.episodes), "--seed", str(args.seed), "--device", "cpu", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    done = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    report["error_percent"] = round(100 * (1 - report["accuracy"]), 2)
    report["command"] = " ".join(cmd)
    return report


def render(report: dict) -> str:
    """The results.md section: error % within one alphabet and across alphabets, per checkpoint."""
    rows: dict[str, dict[bool, dict]] = {}
    for r in report["results"]:
        rows.setdefault(r["checkpoint"], {})[bool(r.get("within_alphabet"))] = r
    lines = [BEGIN, "### Lake et al.'s one-shot task: 20 characters of one alphabet, support and query by different "
             "drawers", "", "| checkpoint | within one alphabet: error % | accuracy % | any alphabets: error % |",
             "|---|---|---|---|"]
    for checkpoint, pair in rows.items():
        within, mixed = pair.get(True), pair.get(False)
        cells = [f"{within['error_percent']:.1f}" if within else "—",
                 f"{100 * within['accuracy']:.1f} ± {100 * within['ci95']:.1f}" if within else "—",
                 f"{mixed['error_percent']:.1f}" if mixed else "—"]
        lines.append(f"| {checkpoint} | " + " | ".join(cells) + " |")
    refs = "; ".join(f"{who} {err}%" for who, err in report["reference_error_percent"].items())
    lines += ["", f"Published error at this task: {refs}. Ours: 20-way 1-shot, one query per character, 1000 "
              "episodes (seed 0) on images_evaluation; *within one alphabet*: every episode's 20 characters from one "
              "of the 20 evaluation alphabets, the support images by one drawer and the queries by another "
              "(`fewshot evaluate --protocol lake --within-alphabet --n-way 20 --n-shot 1 --n-query 1`); *any "
              "alphabets*: the same command without `--within-alphabet`. Made by `python benchmarks/within_alphabet.py`.",
              END]
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    results_md.write_section(section, BEGIN, END, TABLE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", nargs="+", default=["protonet", "matching", "siamese"])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", action="store_true", help="only re-write the results.md section from the JSON")
    args = parser.parse_args()
    if args.render:
        write_section(render(json.loads(OUT.read_text())))
        return
    # the other checkpoints' rows stay as they were: --methods re-makes only those named
    kept = json.loads(OUT.read_text())["results"] if OUT.exists() else []
    names = {str((ROOT / "checkpoints" / "lake" / f"{m}.safetensors").relative_to(ROOT)) for m in args.methods}
    rows = [r for r in kept if r["checkpoint"] not in names]
    new_rows: list[dict] = []
    for method in args.methods:
        checkpoint = ROOT / "checkpoints" / "lake" / f"{method}.safetensors"
        for within in (True, False):
            report = evaluate(checkpoint, args, within)
            new_rows.append(report)
            print(f"{method:9s} {'within one alphabet' if within else 'any alphabets      '}: "
                  f"{100 * report['accuracy']:.2f}% ± {100 * report['ci95']:.2f} "
                  f"(error {report['error_percent']:.1f}%)", file=sys.stderr)
    order = [r["checkpoint"] for r in kept]  # a re-made checkpoint keeps its place in the table
    rows = sorted(rows + new_rows, key=lambda r: order.index(r["checkpoint"]) if r["checkpoint"] in order else len(order))
    OUT.write_text(json.dumps({"task": "20-way 1-shot, Lake protocol test split (images_evaluation); within: one "
                                       "alphabet per episode, support and query drawers disjoint",
                               "reference_error_percent": REFERENCES, "results": rows}, indent=1) + "\n")
    write_section(render(json.loads(OUT.read_text())))
    print(f"wrote {OUT.relative_to(ROOT)} and its section of {TABLE.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
