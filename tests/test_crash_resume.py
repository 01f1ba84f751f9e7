"""Training survives SIGKILL (issue 6): a real ``python -m fewshot train`` is killed mid-run, its last checkpoint
is readable, ``--resume`` finishes the run, and the final weights equal those of an uninterrupted run.

A kill during the checkpoint write itself (a half-written temporary file left behind) never touches the last
good checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fewshot

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EPISODES = 60


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def folder_data(pattern_folder) -> Path:
    """6 classes x 6 noisy binary patterns (28x28 PNGs): a real folder dataset, no Omniglot needed."""
    return pattern_folder(6, 6, 28)


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    # checkpoint after every step: a kill at a random moment often lands in the middle of a write
    return ["train", "--method", "protonet", "--dataset", "folder", "--data-dir", str(data), "--n-way", "3",
            "--n-shot", "1", "--n-query", "2", "--episodes", str(EPISODES), "--checkpoint-every", "1",
            "--val-every", "0", "--hidden", "8", "--seed", "3", "--quiet", "--out", str(out), *extra]


def _steps_done(path: Path) -> int:
    try:
        return int(fewshot.read_checkpoint_info(path).get("steps_done") or 0)
    except fewshot.CheckpointError:
        return 0  # not written yet (a reader never sees half a file: the write is a rename)


def test_sigkill_mid_run_then_resume_matches_uninterrupted(folder_data, tmp_path):
    # the reference: the same command, never interrupted, running meanwhile (--seed fixes the initial weights)
    reference = tmp_path / "reference.safetensors"
    ref_proc = subprocess.Popen([sys.executable, "-m", "fewshot", *_train_args(folder_data, reference)], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    out = tmp_path / "run" / "model.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "fewshot", *_train_args(folder_data, out)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _steps_done(out) < 3:
            assert proc.poll() is None, f"training ended before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.005)
        time.sleep(float(np.random.default_rng().uniform(0.0, 0.05)))  # any moment, often mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill; the test did not test a crash"

    model, info = fewshot.load_checkpoint(out)  # the last good checkpoint is readable
    killed_at = info.train_state.step
    assert 3 <= killed_at < EPISODES and info["steps_done"] == killed_at
    leftovers = [p.name for p in out.parent.iterdir() if p != out]
    assert all(name.startswith(".model.safetensors.") and name.endswith(".tmp") for name in leftovers), leftovers

    resumed = subprocess.run([sys.executable, "-m", "fewshot", *_train_args(folder_data, out, "--resume")],
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after {EPISODES} steps" in resumed.stderr
    _, ref_err = ref_proc.communicate(timeout=300)
    assert ref_proc.returncode == 0, ref_err

    final, final_info = fewshot.load_checkpoint(out)
    ref, ref_info = fewshot.load_checkpoint(reference)
    assert final_info.train_state.step == ref_info.train_state.step == EPISODES
    for (name, a), (_, b) in zip(final.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs after kill at step {killed_at} + --resume"
    for key, value in ref_info.train_state.optimizer["state"].items():  # Adam moments too
        for k, v in value.items():
            other = final_info.train_state.optimizer["state"][key][k]
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(other)), (key, k)
    assert len(final_info["resumed_with"]) == 1 and "--resume" in final_info["resumed_with"][0]
    print(f"killed at step {killed_at}/{EPISODES}; leftovers {leftovers}; resumed to the identical weights")


KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys
    import torch
    import fewshot
    import fewshot.checkpoints as checkpoints

    path = sys.argv[1]
    model = fewshot.build_model("protonet", hidden=8)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)  # the new weights that never make it
    real_save = checkpoints.save_file

    def save_then_die(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "rb+") as fh:  # the process dies with half of the bytes on disk
            fh.truncate(os.path.getsize(filename) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoints.save_file = save_then_die
    fewshot.save_checkpoint(path, model, method="protonet", metadata={"steps_done": 2})
""")


def test_kill_during_the_write_never_corrupts_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    good = fewshot.build_model("protonet", hidden=8)
    fewshot.save_checkpoint(path, good, method="protonet", metadata={"steps_done": 1})
    before = path.read_bytes()

    proc = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(path)], env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # really killed inside save_checkpoint

    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".model.safetensors.") \
        and leftovers[0].suffix == ".tmp", leftovers
    with pytest.raises(fewshot.CheckpointError, match="truncated or corrupt"):
        fewshot.load_checkpoint(leftovers[0])  # the half-written file is what the kill left ...
    assert path.read_bytes() == before  # ... and the checkpoint itself was never touched
    model, info = fewshot.load_checkpoint(path)
    assert info["steps_done"] == 1
    for (name, a), (_, b) in zip(model.state_dict().items(), good.state_dict().items()):
        assert torch.equal(a, b), name
    # the leftover is invisible to anything that lists checkpoints, and the next save works beside it
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    fewshot.save_checkpoint(path, good, method="protonet", metadata={"steps_done": 3})
    assert fewshot.read_checkpoint_info(path)["steps_done"] == 3
