"""benchmarks/campaign_curve.py: a long run's snapshots evaluated as `fewshot evaluate` does, merged into one curve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import fewshot
import fewshot.cli

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "campaign_curve.py"


def snapshot(path: Path, step: int, cpu: float) -> Path:
    torch.manual_seed(step)
    model = fewshot.build_model("protonet", hidden=8)
    return fewshot.save_checkpoint(path, model.eval(), method="protonet", metadata={
        "protocol": "vinyals", "image_size": 28, "n_way": 20, "n_shot": 1, "n_query": 5, "steps_done": step,
        "history": [{"step": step, "loss": 1.0, "accuracy": 0.5, "lr": 1e-3, "seconds": cpu, "cpu_seconds": cpu}]})


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_points_match_evaluate_and_merge_by_step(tmp_path, omniglot_dir, omniglot_cache):
    a, b = snapshot(tmp_path / "a.safetensors", 100, 50.0), snapshot(tmp_path / "b.safetensors", 200, 99.0)
    out = tmp_path / "curves.json"
    common = ["--data-dir", omniglot_dir, "--label", "tiny", "--settings", "5w1s", "--episodes", "20", "--out", out]
    done = run(b, *common, "--base-cpu-seconds", "1000")
    assert done.returncode == 0, done.stderr
    done = run(a, b, *common)  # b again, without the base: its point is replaced, not duplicated
    assert done.returncode == 0, done.stderr
    points = json.loads(out.read_text())["tiny"]
    assert [(p["step"], p["cpu_seconds"], p["hidden"]) for p in points] == [(100, 50.0, 8), (200, 99.0, 8)]
    # the same figure `fewshot evaluate` gives for that file, setting and seed
    model, _ = fewshot.load_checkpoint(b)
    sampler = fewshot.TaskSampler(fewshot.load_omniglot("vinyals", "test", data_dir=omniglot_dir), 5, 1, 5, seed=0)
    expected = fewshot.evaluate(model, (sampler.sample_task() for _ in range(20)))
    assert points[1]["cells"]["5w1s"]["accuracy"] == round(expected.accuracy, 6)
    assert "| 200 | 99 |" in done.stdout
    # a soup of the two: their steps and CPU-seconds added, after the base
    assert fewshot.cli.main(["soup", "--checkpoints", str(a), str(b), "--out", str(tmp_path / "soup.safetensors")]) == 0
    done = run(tmp_path / "soup.safetensors", *common[:3], "soups", *common[4:], "--base-cpu-seconds", "1000")
    assert done.returncode == 0, done.stderr
    assert [(p["step"], p["cpu_seconds"]) for p in json.loads(out.read_text())["soups"]] == [(300, 1149.0)]


def test_a_missing_snapshot_is_one_error_line(tmp_path):
    done = run(tmp_path / "nope.safetensors", "--label", "x", "--out", tmp_path / "c.json")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: no such checkpoint: {tmp_path / 'nope.safetensors'}"]
    assert not (tmp_path / "c.json").exists()
