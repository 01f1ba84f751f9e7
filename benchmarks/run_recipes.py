"""Train the recipes of ``recipes.py`` in parallel processes (one GPU or the CPU), each within a time budget.

    python benchmarks/run_recipes.py --device cuda --max-seconds 330 --data-dir DIR [--only lake-] [--jobs 22]

Every run is an ordinary ``python -m fewshot train`` (or ``pretrain``) command (its exact command line is stored in
the checkpoint); logs go to ``--log-dir``. A recipe listed in ``SOUPS`` runs once per ingredient (its arguments plus
the ingredient's, written under ``runs/soups/NAME/``), then ``python -m fewshot soup`` averages them into its file.
Where ``AFTER`` names one more run from a recipe's result, that result (the soup, or the single run) goes to
``runs/soups/NAME/soup.safetensors`` or ``runs/soups/NAME/base.safetensors`` and the run (``--init-backbone`` that
file) writes the recipe's file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import AFTER, RECIPES, SOUPS, command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-seconds", type=float, required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--only", nargs="*", default=None, help="recipe name prefixes")
    p.add_argument("--jobs", type=int, default=len(RECIPES))
    p.add_argument("--episodes", type=int, default=None, help="override every recipe's --episodes (smoke tests)")
    p.add_argument("--out-root", default=str(ROOT), help="checkpoint paths are relative to this folder")
    p.add_argument("--log-dir", default=str(ROOT / "runs" / "logs"))
    p.add_argument("--extra-args", default="", help="appended to every train command, e.g. --no-batch-tasks")
    args = p.parse_args()

    from fewshot.omniglot import load_omniglot_arrays

    t0 = time.time()
    load_omniglot_arrays(args.data_dir)  # decode once before the parallel runs read the cache
    print(f"omniglot cache ready in {time.time() - t0:.1f} s", flush=True)
    names = [n for n in RECIPES if not args.only or any(n.startswith(o) for o in args.only)]
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    jobs = [(n, i) for n in names for i in (range(len(SOUPS[n])) if n in SOUPS else [None])]
    pending, running, failed = list(jobs), {}, []

    def ingredient(name: str, i: int | str) -> Path:
        return Path(args.out_root) / "runs" / "soups" / name / f"{i}.safetensors"

    while pending or running:
        while pending and len(running) < args.jobs:
            name, i = pending.pop(0)
            out, recipe = RECIPES[name]
            recipe = list(recipe) + (SOUPS[name][i] if i is not None else [])
            out = (ingredient(name, i) if i is not None else ingredient(name, "base") if name in AFTER
                   else Path(args.out_root) / out)
            out.parent.mkdir(parents=True, exist_ok=True)
            kind = command(name)
            name = name if i is None else f"{name}.{i}"
            if kind == "pretrain":
                recipe = recipe[1:]
            elif args.episodes is not None:
                recipe[recipe.index("--episodes") + 1] = str(args.episodes)
            cmd = [sys.executable, "-m", "fewshot", kind, *recipe, "--out", str(out),
                   "--device", args.device, "--max-seconds", str(args.max_seconds), "--quiet", *args.extra_args.split()]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            log = open(Path(args.log_dir) / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT), log)
        time.sleep(1.0)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[name]
                tail = (Path(args.log_dir) / f"{name}.log").read_text().strip().splitlines()[-1:]
                print(f"[{time.time() - t0:6.0f}s] {name}: exit {proc.returncode} {tail[0] if tail else ''}", flush=True)
                if proc.returncode:
                    failed.append(name)
    for name in (n for n in names if n in SOUPS or n in AFTER):
        final = Path(args.out_root) / RECIPES[name][0]
        if name not in SOUPS:  # a single run whose result AFTER continues
            code, source = (1 if name in failed else 0), ingredient(name, "base")
        elif any(f.startswith(f"{name}.") for f in failed):
            failed.append(name)
            continue
        else:
            source = ingredient(name, "soup") if name in AFTER else final
            cmd = [sys.executable, "-m", "fewshot", "soup", "--checkpoints",
                   *(str(ingredient(name, i)) for i in range(len(SOUPS[name]))), "--out", str(source)]
            code = subprocess.run(cmd, env=env, cwd=ROOT).returncode
            print(f"[{time.time() - t0:6.0f}s] {name}: soup of {len(SOUPS[name])}, exit {code}", flush=True)
        if not code and name in AFTER:
            recipe = list(AFTER[name])
            protocol = RECIPES[name][1][RECIPES[name][1].index("--protocol") + 1]
            if args.episodes is not None:
                recipe[recipe.index("--episodes") + 1] = str(args.episodes)
            cmd = [sys.executable, "-m", "fewshot", "train", "--protocol", protocol, *recipe, "--init-backbone",
                   str(source), "--out", str(final), "--device", args.device, "--max-seconds", str(args.max_seconds),
                   "--quiet", *args.extra_args.split()] + (["--data-dir", args.data_dir] if args.data_dir else [])
            code = subprocess.run(cmd, env=env, cwd=ROOT).returncode
            print(f"[{time.time() - t0:6.0f}s] {name}: the run from its {'soup' if name in SOUPS else 'result'}, "
                  f"exit {code}", flush=True)
        if code and name not in failed:
            failed.append(name)
    print(f"done in {time.time() - t0:.0f} s; failed: {failed or 'none'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
