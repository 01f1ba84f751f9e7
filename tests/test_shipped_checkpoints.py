"""The shipped checkpoints reproduce, from this checkout, the figures the README claims (issues 3 and 17).

``checkpoints/accuracy.json`` holds every figure of README's and ``benchmarks/results.md``'s results table, each
with the ``python -m fewshot evaluate ... --json`` command that made it (1000 episodes, seed 0) and, under
``check``, the same command's figure on 100 episodes on the CPU. Here every shipped checkpoint must have figures
there, the tables must be the ones rendered from them, and for every checkpoint the check figure of its cheapest
setting (the smallest way, then shot) is re-made through the CLI and must match exactly: the same episodes through
the same code give the same predictions, bit for bit (the checks were made in subprocesses and are re-made here in
pytest's process; two of them were also made with two threads, identically), and a changed model, data, sampler or
evaluation changes at least one of the 500-2000 predictions, and with it the figure.
Re-making the 1000-episode figures themselves (the figures the table shows) is one benchmark command:
``python benchmarks/accuracy.py --verify --data-dir DIR`` (``--cheapest`` for the same settings as here).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot import cli

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "checkpoints" / "accuracy.json"


def _accuracy_module():
    spec = importlib.util.spec_from_file_location("accuracy_table", REPO / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records() -> list[dict]:
    return json.loads(RESULTS.read_text())


def _claims() -> list[dict]:
    return [r for r in _records() if r.get("checkpoint") and r.get("accuracy") is not None]


def _args(command: str) -> dict[str, str]:
    """A ``python -m fewshot evaluate`` command's options, without ``--data-dir`` (where the data was)."""
    words = command.split()
    assert words[:4] == ["python", "-m", "fewshot", "evaluate"], command
    assert "--json" in words, command
    pairs = [w for w in words[4:] if w != "--json"]
    options = dict(zip(pairs[::2], pairs[1::2]))
    options.pop("--data-dir", None)
    return options


def _cheapest_per_checkpoint() -> list[dict]:
    return _accuracy_module().cheapest_per_checkpoint(_records())


def test_every_shipped_checkpoint_has_claimed_figures_and_the_tables_are_rendered_from_them():
    # the few-shot classifiers, one folder per Omniglot protocol (checkpoints/sine/ holds sine-wave regressors,
    # which benchmarks/sine.py scores in their own section of results.md)
    shipped = sorted(str(p.relative_to(REPO)) for protocol in ("lake", "vinyals")
                     for p in (REPO / "checkpoints" / protocol).glob("*.safetensors"))
    assert shipped, "no checkpoints shipped"
    claimed = {r["checkpoint"] for r in _claims()}
    assert [p for p in shipped if p not in claimed] == [], "shipped checkpoints without a figure in accuracy.json"
    assert [c for c in sorted(claimed) if c not in shipped] == [], "figures for checkpoints that are not shipped"

    module = _accuracy_module()
    table = module.render(_records())
    assert module.split_results_md((REPO / "benchmarks" / "results.md").read_text())[0] == table, \
        "benchmarks/results.md is stale: run python benchmarks/accuracy.py"
    readme = (REPO / "README.md").read_text()
    assert module.render_readme(readme, table) == readme, "README's results table is stale: run python benchmarks/accuracy.py"
    rows = [line for line in table.splitlines() if line.startswith("| ") and "±" in line]
    assert rows and [row for row in rows if row not in readme] == [], "README's results table differs from results.md"


def test_every_figure_has_its_100_episode_check_made_by_the_same_command():
    for claim in _claims():
        assert claim["episodes"] == 1000 and claim["seed"] == 0, claim["command"]
        check = claim.get("check")
        assert check, f"{claim['command']}: no 100-episode check (python benchmarks/accuracy.py --checks)"
        assert check["episodes"] == 100 and check["seed"] == 0
        same = _args(claim["command"]) | {"--episodes": "100", "--device": "cpu"}
        assert _args(check["command"]) == same, "the check is not the figure's own command on 100 episodes"
        assert 0.0 <= check["accuracy"] <= 1.0 and abs(check["accuracy"] - claim["accuracy"]) < 0.05, check


@pytest.mark.parametrize("claim", _cheapest_per_checkpoint(), ids=lambda r: f"{r['checkpoint']}-{r['n_way']}w{r['n_shot']}s")
def test_a_shipped_checkpoint_reproduces_its_check_figure_exactly(claim, omniglot_cache, omniglot_dir, capsys):
    check = claim["check"]
    argv = ["evaluate", "--checkpoint", str(REPO / claim["checkpoint"]), "--protocol", claim["protocol"],
            "--data-dir", str(omniglot_dir), "--n-way", str(claim["n_way"]), "--n-shot", str(claim["n_shot"]),
            "--n-query", str(claim["n_query"]), "--episodes", str(check["episodes"]), "--seed", str(check["seed"]),
            "--device", "cpu", "--json"]
    capsys.readouterr()
    assert cli.main(argv) == 0, capsys.readouterr().err
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["episodes"] == check["episodes"] == 100
    predictions = check["episodes"] * claim["n_way"] * claim["n_query"]
    assert got["accuracy"] == check["accuracy"], (
        f"{claim['checkpoint']} {claim['n_way']}-way {claim['n_shot']}-shot, 100 episodes: "
        f"{100 * got['accuracy']:.4f}% now, {100 * check['accuracy']:.4f}% stored "
        f"(~{abs(got['accuracy'] - check['accuracy']) * predictions:.1f} of {predictions} predictions differ)")
    assert got["ci95"] == pytest.approx(check["ci95"], rel=1e-9, abs=1e-12)


def test_rows_made_side_by_side_are_merged_by_recipe(tmp_path):
    """``accuracy.py --merge``: rows from other ``--results`` files replace the stored rows of the same recipes."""
    rows = _records()
    recipe = rows[0]["recipe"]
    ours = [r for r in rows if r["recipe"] == recipe]
    stored, other = tmp_path / "stored.json", tmp_path / "other.json"
    stored.write_text(json.dumps(rows))
    other.write_text(json.dumps([{**r, "accuracy": 0.5} for r in ours]))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "accuracy.py"), "--results", str(stored),
                           "--merge", str(other)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    merged = json.loads(stored.read_text())
    assert len(merged) == len(rows) and [r for r in merged if r["recipe"] != recipe] == [r for r in rows if r["recipe"] != recipe]
    assert [r["accuracy"] for r in merged if r["recipe"] == recipe] == [0.5] * len(ours)
