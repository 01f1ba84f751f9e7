"""Data-parallel training (``fewshot.distributed``) on the CPU: gloo, 2 processes, as torchrun runs it.

One spawned pair of processes runs every scenario in turn (a process start costs seconds here, a
scenario a fraction of one) and writes what it saw; the tests compare that with one process
training on the whole meta-batch. A real ``torchrun`` CLI run (train, resume) is the last test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot import (NonFiniteLossError, SyntheticDataset, TaskSampler, TrainConfig, build_model, load_checkpoint,
                     save_checkpoint, train)
from fewshot.cli import main
from fewshot.distributed import World, init_from_env, local_task_indices, shutdown, step_seed
from fewshot.training import EvalResult

REPO = Path(__file__).resolve().parents[1]
WORLD_SIZE = 2
STEPS = 3
# (name, method, meta_batch_size): 3 tasks over 2 processes is the uneven split (2 + 1)
SCENARIOS = [("maml", "maml", 4), ("fomaml", "fomaml", 4), ("protonet", "protonet", 4),
             ("protonet_uneven", "protonet", 3), ("maml_uneven", "maml", 3)]


class _Float64Dataset(SyntheticDataset):
    """Float64 images. In float32, the conv biases (each followed by BatchNorm, so their true gradient
    is exactly zero) get gradients of pure rounding noise, which Adam scales up to full-size steps:
    even one process's batched and per-task paths then end ~1e-2 apart. In float64 they agree to ~1e-9."""

    def get_images(self, indices: torch.Tensor) -> torch.Tensor:
        return super().get_images(indices).double()


def _model(method: str, init_seed: int):
    torch.manual_seed(init_seed)
    return build_model(method, hidden=8, **({"n_way": 3} if method in ("maml", "fomaml") else {})).double()


def _sampler() -> TaskSampler:
    return TaskSampler(_Float64Dataset(n_classes=10, n_per_class=8, image_size=16, seed=0), 3, 1, 2, seed=0)


def _config(method: str, meta_batch_size: int, episodes: int = STEPS, **kw) -> TrainConfig:
    lr = 1e-2 if method != "maml" else 3e-3
    return TrainConfig(episodes=episodes, meta_batch_size=meta_batch_size, meta_lr=lr, seed=3, **kw)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, out: str, port: int) -> None:
    """One rank: every scenario in turn; results go to ``out/rank{rank}.pt`` (errors to ``.err``)."""
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    folder = Path(out)
    try:
        world = init_from_env("cpu", timeout_minutes=1)  # a deadlock fails the run within a minute
        assert world is not None
        results: dict = {"backend": world.backend}
        for name, method, batch in SCENARIOS:
            # A different initialisation on each rank: train() must start every rank from rank 0's.
            model = _model(method, init_seed=rank)
            logs, val_calls, saved = [], [], []

            def validate(m, calls=val_calls) -> EvalResult:
                calls.append(len(calls))
                return EvalResult(0.5, 0.0, 1)

            def on_checkpoint(state, saved=saved, model=model, name=name, method=method) -> None:
                save_checkpoint(folder / f"{name}-rank{rank}-step{state.step}.safetensors", model, method=method,
                                train_state=state)
                saved.append(state.step)

            config = _config(method, batch, eval_every=2, checkpoint_every=2)
            train(model, _sampler(), config, on_step=logs.append, validate=validate, on_checkpoint=on_checkpoint,
                  log_every=1, world=world)
            results[name] = {"weights": _weights(model), "losses": [log.loss for log in logs],
                             "val_calls": len(val_calls), "saved": saved}
        # Resume under 2 processes: rank 0's step-2 ProtoNet checkpoint (written above), two more steps.
        torch.distributed.barrier()
        resumed, info = load_checkpoint(folder / "protonet-rank0-step2.safetensors")
        resumed.double()  # the checkpoint holds float64 tensors; the rebuilt model is float32 until told
        train(resumed, _sampler(), _config("protonet", 4, episodes=4), state=info.train_state, world=world)
        results["resumed"] = _weights(resumed)
        # A meta-batch smaller than the world is refused before any collective, on every rank.
        try:
            train(_model("protonet", 0), _sampler(), _config("protonet", 1), world=world)
            results["refused"] = None
        except ValueError as exc:
            results["refused"] = str(exc)
        # A loss that becomes infinite stops every rank at the same step (nobody waits forever).
        try:
            train(_model("protonet", 0), _sampler(), TrainConfig(episodes=20, meta_batch_size=2, meta_lr=1e30),
                  world=world)
            results["non_finite"] = None
        except NonFiniteLossError as exc:
            results["non_finite"] = str(exc)
        # --max-seconds: every rank takes rank 0's clock, so all stop after the same step.
        timed = train(_model("protonet", 0), _sampler(), _config("protonet", 2, episodes=50), max_seconds=1e-3,
                      world=world)
        results["timed"] = (timed.steps, timed.stopped_early)
        torch.save(results, folder / f"rank{rank}.pt")
        shutdown(world)
    except BaseException:
        (folder / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[list[dict], Path]:
    folder = tmp_path_factory.mktemp("distributed")
    context = torch.multiprocessing.start_processes(_worker, args=(str(folder), _free_port()), nprocs=WORLD_SIZE,
                                                    join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail("the 2-process run did not finish in 240 s (a deadlock?)")
    except Exception as exc:  # a rank failed: show its traceback, not only the spawn wrapper's
        errors = "\n".join(p.read_text() for p in sorted(folder.glob("*.err")))
        pytest.fail(f"a rank failed: {exc}\n{errors}")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)], folder


def _single_process(method: str, meta_batch_size: int, episodes: int = STEPS) -> tuple[dict, list[float]]:
    model = _model(method, init_seed=0)
    logs = []
    train(model, _sampler(), _config(method, meta_batch_size, episodes=episodes), on_step=logs.append)
    return _weights(model), [log.loss for log in logs]


def _assert_weights_close(actual: dict, expected: dict) -> None:
    """Parameters only: BatchNorm running statistics are averaged over the ranks each step, which is
    not one process's sequence of updates (and they never enter a training-mode forward)."""
    for key, value in expected.items():
        if "running_" not in key and "num_batches_tracked" not in key:
            torch.testing.assert_close(actual[key], value, rtol=1e-6, atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.parametrize("name, method, meta_batch_size", SCENARIOS)
def test_two_processes_give_the_parameters_of_one_process(two_ranks, name, method, meta_batch_size):
    results, _ = two_ranks
    expected, expected_losses = _single_process(method, meta_batch_size)
    start = _model(method, init_seed=0).state_dict()
    moved = max(float((expected[k] - start[k]).abs().max()) for k in expected if expected[k].is_floating_point())
    assert moved > 1e-3  # the comparison is about trained weights, not the initial ones
    for rank in range(WORLD_SIZE):
        _assert_weights_close(results[rank][name]["weights"], expected)
        # every rank logs the loss of the whole meta-batch, not of its share
        np.testing.assert_allclose(results[rank][name]["losses"], expected_losses, rtol=1e-6)
    for key, value in results[0][name]["weights"].items():  # the replicas are identical, buffers included
        assert torch.equal(results[1][name]["weights"][key], value), key


def test_the_split_differs_from_halving_the_meta_batch(two_ranks):
    """The comparison above can fail: each rank on its own half (2 tasks) does not give the 4-task result."""
    results, _ = two_ranks
    half, _ = _single_process("protonet", 2)
    full, _ = _single_process("protonet", 4)
    params = dict(_model("protonet", 0).named_parameters())  # BatchNorm running statistics are not compared
    distance = lambda a, b: max(float((a[k] - b[k]).abs().max()) for k in params)  # noqa: E731
    assert distance(half, full) > 1e-3
    assert distance(results[0]["protonet"]["weights"], full) < 1e-4


def test_rank_zero_alone_validates_and_writes_checkpoints(two_ranks):
    results, folder = two_ranks
    for name, _, _ in SCENARIOS:
        assert results[0][name]["val_calls"] == 2 and results[1][name]["val_calls"] == 0  # steps 2 and 3
        assert results[0][name]["saved"] == [2, 3] and results[1][name]["saved"] == []
    assert not list(folder.glob("*-rank1-*"))
    assert len(list(folder.glob("*-rank0-*"))) == 2 * len(SCENARIOS)


def test_resume_under_two_processes_continues_the_run(two_ranks):
    results, _ = two_ranks
    expected, _ = _single_process("protonet", 4, episodes=4)
    for rank in range(WORLD_SIZE):
        _assert_weights_close(results[rank]["resumed"], expected)


def test_meta_batch_smaller_than_the_world_is_refused_on_every_rank(two_ranks):
    results, _ = two_ranks
    for rank in range(WORLD_SIZE):
        message = results[rank]["refused"]
        assert message is not None and "--meta-batch-size 1 is smaller than the number of processes (2)" in message


def test_a_non_finite_loss_stops_every_rank_at_the_same_step(two_ranks):
    results, _ = two_ranks
    messages = [results[rank]["non_finite"] for rank in range(WORLD_SIZE)]
    assert messages[0] is not None and "non-finite loss" in messages[0] and messages[0] == messages[1]


def test_a_time_budget_stops_every_rank_after_the_same_step(two_ranks):
    results, _ = two_ranks
    assert results[0]["timed"] == results[1]["timed"] == (1, True)


def test_task_assignment_and_per_rank_seeds():
    world = lambda rank: World(rank, 3, rank, "gloo", torch.device("cpu"))  # noqa: E731
    assignment = [local_task_indices(8, world(rank)) for rank in range(3)]
    assert assignment == [[0, 3, 6], [1, 4, 7], [2, 5]]
    seeds = {step_seed(0, rank, step) for rank in range(4) for step in range(1, 200)}
    assert len(seeds) == 4 * 199 and all(0 <= s < 2 ** 63 for s in seeds)
    assert step_seed(0, 1, 5) == step_seed(0, 1, 5) != step_seed(1, 1, 5)


def test_single_process_environment_means_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_from_env("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="start several processes with torchrun"):
        init_from_env("cpu")
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        init_from_env("cuda:1")


def _folder_dataset(root: Path) -> Path:
    """6 classes x 6 PNGs (28x28): a class is a bar at its own height, with noise."""
    rng = np.random.default_rng(0)
    for c in range(6):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):
            image = (rng.random((28, 28)) < 0.1).astype(np.uint8) * 255
            image[4 * c:4 * c + 4, 2:26] = 255
            Image.fromarray(255 - image).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_torchrun_cli_resumes_a_run_and_matches_one_process(tmp_path):
    """``torchrun -m fewshot train --resume``: rank 0 alone writes; the result is one process's, up to rounding."""
    data = _folder_dataset(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    common = ["train", "--method", "protonet", "--dataset", "folder", "--data-dir", str(data), "--n-way", "3",
              "--n-query", "2", "--hidden", "8", "--meta-batch-size", "4", "--meta-lr", "1e-2", "--val-every", "0",
              "--checkpoint-every", "2", "--quiet", "--device", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD_SIZE),
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "fewshot"]

    def run(command: list[str]) -> subprocess.CompletedProcess:
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    # Two steps in one process, then two more from that checkpoint: under torchrun, and in one process
    # (the one-process runs call the CLI's main() in this process: torch is imported already).
    two, one = tmp_path / "two.safetensors", tmp_path / "one.safetensors"
    assert main([*common, "--episodes", "2", "--out", str(two)]) == 0
    one.write_bytes(two.read_bytes())
    step2, _ = load_checkpoint(two)
    resumed = run([*torchrun, *common, "--episodes", "4", "--out", str(two), "--resume"])
    assert resumed.stderr.count(f"saved {two} after 4 steps") == 1  # rank 0 alone reports (and writes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "one.safetensors", "two.safetensors"]  # no temp files
    assert main([*common, "--episodes", "4", "--out", str(one), "--resume"]) == 0
    (two_model, two_info), (one_model, one_info) = load_checkpoint(two), load_checkpoint(one)
    assert two_info["world_size"] == 2 and two_info["backend"] == "gloo" and "world_size" not in one_info.metadata
    assert two_info["steps_done"] == one_info["steps_done"] == 4 and len(two_info["resumed_with"]) == 1
    two_params, one_params = dict(two_model.named_parameters()), dict(one_model.named_parameters())
    moved = max(float((two_params[k] - p).detach().abs().max()) for k, p in step2.named_parameters())
    assert moved > 1e-3  # the two more steps changed the weights
    # Weights only, in float32: a conv bias feeds BatchNorm and ProtoNet's distances cancel a shift
    # of the features, so some biases have a true gradient of 0, and Adam turns the rounding noise of a
    # different summation order into lr-sized steps (the float64 tests above compare every parameter).
    for key, value in one_params.items():
        if key.endswith(".weight"):
            torch.testing.assert_close(two_params[key], value, rtol=1e-4, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
    assert [h["step"] for h in two_info["history"]] == [h["step"] for h in one_info["history"]] == [2, 4]
    np.testing.assert_allclose([h["loss"] for h in two_info["history"]], [h["loss"] for h in one_info["history"]],
                               rtol=1e-4)
