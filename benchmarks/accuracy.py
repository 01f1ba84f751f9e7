"""Evaluate the shipped checkpoints into ``checkpoints/accuracy.json`` and render the results table.

    python benchmarks/accuracy.py --evaluate --data-dir DIR [--device auto] [--jobs 2] [--only PREFIX ...]
    python benchmarks/accuracy.py --checks --data-dir DIR     # (re)make only the 100-episode checks [--missing]
    python benchmarks/accuracy.py --verify --data-dir DIR     # the full re-make: every 1000-episode figure, compared
    python benchmarks/accuracy.py --merge A.json [B.json ...]  # store rows made side by side with --results FILE
    python benchmarks/accuracy.py                             # only re-render the tables from checkpoints/accuracy.json

Every figure is ``python -m fewshot evaluate --checkpoint ... --json`` (1000 episodes, seed 0, 5 queries per class)
on the test split of the protocol the checkpoint was trained on; MANN is also scored in its own protocol (accuracy
at the 1st..10th showing of a class in 50-image sequences). Beside each figure, ``check`` holds the same command's
figure on 100 episodes (seed 0, on the CPU): ``tests/test_shipped_checkpoints.py`` re-makes that one and must
match it exactly, which holds every checkpoint to account in seconds; ``--verify`` re-makes the 1000-episode
figures themselves (the cheapest one per checkpoint, ``--cheapest``, took 403 s on the idle 2-core machine).

The table goes to ``benchmarks/results.md`` and between README's ``results table`` markers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import RECIPES, evaluations, recipe_arg, trained_shot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "checkpoints" / "accuracy.json"
TABLE = ROOT / "benchmarks" / "results.md"
README = ROOT / "README.md"
README_BEGIN = "<!-- results table: made by python benchmarks/accuracy.py from checkpoints/accuracy.json -->"
README_END = "<!-- end of results table -->"
CHECK_EPISODES = 100
TOLERANCE = 0.002  # --verify: a 1000-episode figure re-made on another CPU may flip a near-tie or two

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


def _evaluate(job: tuple[str, int, int], args: argparse.Namespace, episodes: int, device: str) -> dict:
    """One ``python -m fewshot evaluate --json`` run in a subprocess; its report plus recipe, checkpoint and command."""
    name, way, shot = job
    out, protocol = RECIPES[name][0], recipe_arg(name, "--protocol")
    cmd = [sys.executable, "-m", "fewshot", "evaluate", "--checkpoint", str(Path(args.ckpt_root) / out), "--protocol", protocol,
           "--n-way", str(way), "--n-shot", str(shot), "--n-query", "5", "--episodes", str(episodes),
           "--seed", "0", "--device", device, "--json"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    shown = cmd[3:-2] + ["--data-dir", os.path.relpath(args.data_dir, ROOT)] if args.data_dir else cmd[3:]
    env = dict(os.environ)
    if device == "cpu" or args.jobs > 1:  # several processes with a thread per core each crawl on a small machine
        env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        return {"recipe": name, "n_way": way, "n_shot": shot, "error": proc.stderr.strip()[-500:]}
    result = json.loads(proc.stdout)
    result["recipe"] = name
    result["checkpoint"] = out  # relative to the repository root
    result["command"] = " ".join(["python -m fewshot"] + shown).replace(str(ROOT) + "/", "")
    return result


def _figure_with_check(job: tuple[str, int, int], args: argparse.Namespace) -> dict:
    """The figure (``--episodes``, ``--device``) and, under ``check``, its 100-episode twin made on the CPU."""
    result = _evaluate(job, args, args.episodes, args.device)
    if "error" not in result:
        result["check"] = _check(job, args)
    return result


def _check(job: tuple[str, int, int], args: argparse.Namespace) -> dict:
    check = _evaluate(job, args, CHECK_EPISODES, "cpu")
    if "error" in check:
        raise RuntimeError(f"{job}: {check['error']}")
    return {key: check[key] for key in ("episodes", "seed", "accuracy", "ci95", "command")}


def cheapest_per_checkpoint(results: list[dict]) -> list[dict]:
    """Per checkpoint, its figure with the smallest way, then shot (a 20-way MAML head has no 5-way figure)."""
    chosen: dict[str, dict] = {}
    for r in results:
        if r.get("checkpoint") and r.get("accuracy") is not None:
            best = chosen.get(r["checkpoint"])
            if best is None or (r["n_way"], r["n_shot"]) < (best["n_way"], best["n_shot"]):
                chosen[r["checkpoint"]] = r
    return [chosen[k] for k in sorted(chosen)]


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
    return {"recipe": name, "checkpoint": out, "protocol": protocol, "sequences": args.episodes,
            "instance_accuracy": [float(x) for x in mean], "instance_ci95": [float(x) for x in ci]}


# Table rows: the methods, with Proto-MAML (a MAML recipe with --proto-head) in rows of its own beside the
# paper-faithful MAML and FOMAML (fixed N-way head).
ROWS = {"maml": "maml", "fomaml": "fomaml", "protomaml": "Proto-MAML (maml --proto-head)",
        "foprotomaml": "Proto-MAML, first order (fomaml --proto-head)", "protonet": "protonet", "matching": "matching",
        "siamese": "siamese", "mann": "mann", "finetune": "finetune"}


def row_key(name: str) -> str:
    """The table row of a recipe: its method, or protomaml / foprotomaml for a MAML recipe with ``--proto-head``."""
    method = recipe_arg(name, "--method")
    if method in ("maml", "fomaml") and "--proto-head" in RECIPES[name][1]:
        return "protomaml" if method == "maml" else "foprotomaml"
    return method


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
            methods.append((row_key(name), name, out))
        for key in ROWS:
            method = {"protomaml": "maml", "foprotomaml": "fomaml"}.get(key, key)  # the method the row runs
            rows = [(n, o) for m, n, o in methods if m == key and any(k[0] == n for k in by)]
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
                acc = 100 * r["accuracy"]
                paper = PAPER[method][1]  # Proto-MAML rows: the MAML (FOMAML) paper's figure, the method it runs
                ref = paper[SETTINGS.index((way, shot))] if protocol == "vinyals" and paper else None
                # two decimals where the figure is below the paper's yet rounds to it
                digits = 2 if ref is not None and round(acc, 1) >= ref > acc else 1
                text = f"{acc:.{digits}f} ± {100 * r['ci95']:.1f}"
                if method in CROSS_SHOT_MARKED and trained_shot(n) != shot:
                    text += "†"
                if ref is not None:
                    text += f" ({'≥' if acc >= ref else '<'} {ref})"
                cells.append(text)
            ckpts = ", ".join(sorted({Path(o).name for n, o in rows}))
            lines.append(f"| {ROWS[key]} | {ckpts} | " + " | ".join(cells) + " |")
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
              "(≥ x) / (< x): at or above / below the paper's figure x (Proto-MAML: Finn et al.'s MAML, first order: "
              "their FOMAML); †: a model trained on 1-shot episodes, "
              "tested with 5 support images per class (the papers train a separate 5-shot model)."]
    return "\n".join(lines) + "\n"


def split_results_md(text: str) -> tuple[str, str]:
    """``benchmarks/results.md`` as (the tables rendered here, the sections other scripts keep after them).

    Other benchmarks (``sine.py``, ``within_alphabet.py``) write their own section between their own ``<!-- ... -->``
    markers below the accuracy tables; this script rewrites only what comes before the first marker.
    """
    i = text.find("\n<!-- ")
    return (text, "") if i < 0 else (text[:i].rstrip("\n") + "\n", text[i + 1:])


def write_results_md(table: str) -> None:
    rest = split_results_md(TABLE.read_text())[1] if TABLE.exists() else ""
    TABLE.write_text(table + ("\n" + rest if rest else ""))


def render_readme(readme: str, table: str) -> str:
    """README with the text between its results-table markers replaced by ``table`` (headings one level down)."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError(f"README.md lacks the results-table markers {README_BEGIN!r} ... {README_END!r}")
    head, rest = readme.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    body = "".join("#" + line if line.startswith("### ") else line for line in table.splitlines(keepends=True))
    return f"{head}{README_BEGIN}\n{body}{README_END}{tail}"


def _run_all(fn, jobs: list, args: argparse.Namespace, save=None) -> list[dict]:
    """``fn(job, args)`` for every job on ``args.jobs`` threads; a job that raises is reported and left out."""
    results: list[dict] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(fn, j, args): j for j in jobs}
        for future in as_completed(futures):
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - one failed evaluation must not lose the others
                args.failed.append(f"{futures[future]}: {exc}")
                print(f"FAILED {args.failed[-1]}", file=sys.stderr, flush=True)
                continue
            print(json.dumps(results[-1])[:300], flush=True)
            if save:
                save(results)  # partial results survive a kill
    return results


def _key(r: dict) -> tuple:
    return r["recipe"], r["n_way"], r["n_shot"]


def _verify(stored: list[dict], args: argparse.Namespace) -> int:
    """Re-make the stored figures (1000 episodes; their checks too) and compare; 1 if any differs."""
    claims = cheapest_per_checkpoint(stored) if args.cheapest else [r for r in stored if r.get("accuracy") is not None]
    claims = [r for r in claims if not args.only or any(r["recipe"].startswith(o) for o in args.only)]
    by_key = {_key(r): r for r in claims}
    args.episodes = claims[0]["episodes"] if claims else args.episodes
    bad = 0
    for got in sorted(_run_all(_figure_with_check, list(by_key), args), key=_key):
        claim = by_key[_key(got)]
        if "error" in got:
            print(f"FAIL {_key(got)}: {got['error']}")
            bad += 1
            continue
        diff = got["accuracy"] - claim["accuracy"]
        check_diff = got["check"]["accuracy"] - claim["check"]["accuracy"] if "check" in claim else float("nan")
        ok = abs(diff) <= TOLERANCE and not abs(check_diff) > 1e-9
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {claim['checkpoint']} {claim['n_way']}w{claim['n_shot']}s: "
              f"{100 * got['accuracy']:.2f}% now, {100 * claim['accuracy']:.2f}% stored ({100 * diff:+.2f}); "
              f"100-episode check {100 * check_diff:+.2f}")
    bad += len(args.failed)
    print(f"{len(by_key) - bad} of {len(by_key)} figures reproduced (1000 episodes within {100 * TOLERANCE} points, "
          f"100-episode checks exactly)")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--evaluate", action="store_true", help="make every figure and its check, store them")
    what.add_argument("--checks", action="store_true", help="make only the 100-episode checks of the stored figures")
    what.add_argument("--verify", action="store_true", help="re-make the stored figures and compare; writes nothing")
    what.add_argument("--merge", nargs="+", metavar="FILE", default=None,
                      help="store the rows of other --results files (runs made side by side), replacing the stored "
                           "rows of the same recipes")
    p.add_argument("--cheapest", action="store_true", help="--verify: one figure per checkpoint (as the test checks)")
    p.add_argument("--missing", action="store_true", help="--checks: only for figures that have none yet")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", nargs="*", default=None, help="recipe name prefixes, e.g. lake vinyals-maml")
    p.add_argument("--ckpt-root", default=str(ROOT), help="checkpoint paths are relative to this folder")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args()
    args.failed = []
    results_path = Path(args.results)
    stored = json.loads(results_path.read_text()) if results_path.exists() else []
    if args.verify:
        return _verify(stored, args)
    if args.evaluate:
        names = [n for n in RECIPES if (Path(args.ckpt_root) / RECIPES[n][0]).exists()
                 and (not args.only or any(n.startswith(o) for o in args.only))]
        jobs = [(n, w, s) for n in names for w, s in evaluations(n)]
        keep = [r for r in stored if r["recipe"] not in names]
        results_path.parent.mkdir(parents=True, exist_ok=True)
        save = lambda done: results_path.write_text(json.dumps(keep + done, indent=1))  # noqa: E731
        done = _run_all(_figure_with_check, jobs, args, save)
        done += _run_all(_mann_instances, [n for n in names if "-mann" in n], args, lambda more: save(done + more))
    elif args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())]
        replaced = {r["recipe"] for r in rows}
        results_path.write_text(json.dumps([r for r in stored if r["recipe"] not in replaced] + rows, indent=1))
    elif args.checks:
        todo = [r for r in stored if r.get("accuracy") is not None and not (args.missing and "check" in r)
                and (not args.only or any(r["recipe"].startswith(o) for o in args.only))]

        def save(done: list[dict]) -> None:
            made = {_key(r): r["check"] for r in done}
            for r in stored:
                if r.get("accuracy") is not None and _key(r) in made:
                    r["check"] = made[_key(r)]
            results_path.write_text(json.dumps(stored, indent=1))

        _run_all(lambda r, a: {**r, "check": _check(_key(r), a)}, todo, args, save)
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    table = render(results)
    if results_path.resolve() == RESULTS.resolve():
        write_results_md(table)
        README.write_text(render_readme(README.read_text(), table))
    print(table)
    if args.failed:
        print(f"{len(args.failed)} evaluation(s) failed:\n" + "\n".join(args.failed), file=sys.stderr)
    return 1 if args.failed else 0


if __name__ == "__main__":
    sys.exit(main())
