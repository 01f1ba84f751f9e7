"""The shipped checkpoints reproduce, from this checkout, the figures the README claims (issue 3, "done when").

``benchmarks/results/accuracy.json`` holds every figure of README's and ``benchmarks/results.md``'s results table,
each with the ``python -m fewshot evaluate ... --json`` command that made it. Here every shipped checkpoint must
have figures there, the table must be the one rendered from them, and one figure per checkpoint (its cheapest
setting: the smallest way, then shot) is re-made with the same arguments (1000 episodes, seed 0) through the CLI.
The episodes are the same, so the result must match to within a few flipped predictions (floating-point differences
between CPUs can flip a near-tie): 0.2 points, where the 95% CI of these figures is 0.1-0.8 points.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fewshot import cli

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "accuracy.json"
TOLERANCE = 0.002


def _claims() -> list[dict]:
    return [r for r in json.loads(RESULTS.read_text()) if r.get("checkpoint") and r.get("accuracy") is not None]


def _cheapest_per_checkpoint() -> list[dict]:
    chosen: dict[str, dict] = {}
    for r in _claims():  # the smallest way, then the smallest shot (a 20-way MAML head has no 5-way figure)
        best = chosen.get(r["checkpoint"])
        if best is None or (r["n_way"], r["n_shot"]) < (best["n_way"], best["n_shot"]):
            chosen[r["checkpoint"]] = r
    return [chosen[k] for k in sorted(chosen)]


def test_every_shipped_checkpoint_has_claimed_figures_and_the_table_is_rendered_from_them():
    shipped = sorted(str(p.relative_to(REPO)) for p in (REPO / "checkpoints").rglob("*.safetensors"))
    assert shipped, "no checkpoints shipped"
    claimed = {r["checkpoint"] for r in _claims()}
    assert [p for p in shipped if p not in claimed] == [], "shipped checkpoints without a figure in accuracy.json"
    assert [c for c in sorted(claimed) if c not in shipped] == [], "figures for checkpoints that are not shipped"

    spec = importlib.util.spec_from_file_location("accuracy_table", REPO / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.render(json.loads(RESULTS.read_text()))
    assert (REPO / "benchmarks" / "results.md").read_text() == table, \
        "benchmarks/results.md is stale: run python benchmarks/accuracy.py"
    readme = (REPO / "README.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "±" in line]
    assert rows and [row for row in rows if row not in readme] == [], "README's results table differs from results.md"


@pytest.mark.parametrize("claim", _cheapest_per_checkpoint(), ids=lambda r: f"{r['checkpoint']}-{r['n_way']}w{r['n_shot']}s")
def test_a_shipped_checkpoint_reproduces_its_claimed_accuracy(claim, omniglot_cache, omniglot_dir, capsys):
    argv = ["evaluate", "--checkpoint", str(REPO / claim["checkpoint"]), "--protocol", claim["protocol"],
            "--data-dir", str(omniglot_dir), "--n-way", str(claim["n_way"]), "--n-shot", str(claim["n_shot"]),
            "--n-query", str(claim["n_query"]), "--episodes", str(claim["episodes"]), "--seed", str(claim["seed"]),
            "--device", "cpu", "--json"]
    capsys.readouterr()
    assert cli.main(argv) == 0, capsys.readouterr().err
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["episodes"] == claim["episodes"] == 1000
    assert abs(got["accuracy"] - claim["accuracy"]) <= TOLERANCE, \
        f"{claim['checkpoint']}: {100 * got['accuracy']:.2f}% now, {100 * claim['accuracy']:.2f}% claimed"
