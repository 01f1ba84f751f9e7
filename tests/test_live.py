"""Live meta-training runs (``fewshot.live``): tiny runs on synthetic classes, stopping, limits and failures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot import TaskSampler, live
from fewshot.datasets import SyntheticDataset
from fewshot.live import LiveConfig, LiveRun, RunLimitError, build_live_model

REPO = Path(__file__).resolve().parents[1]
TINY = dict(n_way=3, n_shot=1, n_query=2, eval_every=5, eval_tasks=3, map_classes=4, map_per_class=3)


@pytest.fixture(scope="module")
def data():
    return SyntheticDataset(12, 10, 28, seed=1), SyntheticDataset(8, 10, 28, seed=2)


def wait_for(run: LiveRun, condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = run.snapshot()
        if condition(snap):
            return snap
        time.sleep(0.02)
    raise AssertionError(f"timed out; last snapshot state {run.snapshot().state} step {run.snapshot().step}")


@pytest.fixture(autouse=True)
def no_runs_left():
    yield
    deadline = time.monotonic() + 30
    while live.active_runs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.active_runs() == 0


def test_a_run_to_the_end_records_everything(data):
    config = LiveConfig(episodes=12, **TINY)
    run = LiveRun(config, *data).start()
    assert run.join(120)
    snap = run.snapshot()
    assert snap.state == "finished" and snap.done and snap.step == 12 and snap.message is None
    assert [s for s, _ in snap.losses] == list(range(1, 13)) and all(np.isfinite(v) for _, v in snap.losses)
    assert [s for s, _, _ in snap.eval_accuracies] == [0, 5, 10, 12]  # the start, every 5, the end
    assert all(0.0 <= a <= 1.0 for _, a, _ in snap.eval_accuracies)
    assert snap.map_xy.shape == (12, 2) and snap.map_step == 12 and len(snap.map_names) == 4
    assert sorted(set(snap.map_labels.tolist())) == [0, 1, 2, 3] and snap.threads == 1
    result = run.result
    assert result.steps == 12 and result.method == "protonet" and not result.model.training
    assert result.metadata["live_run"]["outcome"] == "finished" and result.metadata["n_way"] == 3
    initial = build_live_model(config)  # the same seed: the weights the run started from
    trained, start = dict(result.model.named_parameters()), dict(initial.named_parameters())
    assert any(not torch.equal(trained[k], start[k]) for k in start)


def test_training_lowers_the_loss_on_separable_classes(data):
    run = LiveRun(LiveConfig(episodes=40, meta_lr=3e-3, **TINY), *data).start()
    assert run.join(240)
    losses = [v for _, v in run.snapshot().losses]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_stop_leaves_a_complete_model(data):
    run = LiveRun(LiveConfig(episodes=2000, **TINY), *data).start()
    wait_for(run, lambda s: s.step >= 3)
    assert run.result is None  # nothing to pick while it runs
    run.stop()
    assert run.join(60)
    snap = run.snapshot()
    assert snap.state == "stopped" and 3 <= snap.step < 2000
    assert run.result.steps == snap.step and snap.eval_accuracies[-1][0] == snap.step
    task = TaskSampler(data[1], 3, 1, 2, seed=5).sample_task()
    with torch.no_grad():
        run.result.model.process_support_set(task.support_images, task.support_labels)
        assert torch.isfinite(run.result.model(task.query_images)).all()


def test_time_limit_stops_a_run(data):
    run = LiveRun(LiveConfig(episodes=2000, max_seconds=1, **TINY), *data).start()
    assert run.join(60)
    snap = run.snapshot()
    assert snap.state == "stopped" and "time limit" in snap.message and run.result is not None


def test_one_run_per_owner_and_a_global_limit(data, monkeypatch):
    monkeypatch.setattr(live, "MAX_RUNS", 2)
    first = LiveRun(LiveConfig(episodes=2000, **TINY), *data, owner="alice").start()
    try:
        with pytest.raises(RunLimitError, match="of yours is still going"):
            LiveRun(LiveConfig(episodes=5, **TINY), *data, owner="alice").start()
        second = LiveRun(LiveConfig(episodes=2000, **TINY), *data, owner="bob").start()
        try:
            with pytest.raises(RunLimitError, match="full: 2 meta-training runs are going"):
                LiveRun(LiveConfig(episodes=5, **TINY), *data, owner="carol").start()
        finally:
            second.stop()
            second.join(60)
    finally:
        first.stop()
        first.join(60)
    again = LiveRun(LiveConfig(episodes=2, **TINY), *data, owner="alice").start()  # a slot is free again
    assert again.join(60) and again.snapshot().state == "finished"


class FailingDataset(SyntheticDataset):
    """Serves images for a few tasks, then breaks (a disk error, say)."""

    calls = 0

    def get_images(self, indices):
        FailingDataset.calls += 1
        if FailingDataset.calls > 3:
            raise RuntimeError("the disk went away")
        return super().get_images(indices)


def test_a_failed_run_leaves_no_model(data):
    run = LiveRun(LiveConfig(episodes=50, **TINY), FailingDataset(12, 10, 28), data[1]).start()
    assert run.join(60)
    snap = run.snapshot()
    assert snap.state == "failed" and "the disk went away" in snap.message
    assert run.result is None


def test_datasets_too_small_for_the_task(data):
    with pytest.raises(ValueError, match="classes but n_way = 20"):
        LiveRun(LiveConfig(n_way=20, n_shot=1), *data)


@pytest.mark.parametrize("change, fragment", [
    ({"method": "siamese"}, "method must be one of protonet, maml, fomaml"),
    ({"n_way": 1}, "n_way must be a whole number from 2 to 20"),
    ({"n_way": 21}, "n_way must be a whole number from 2 to 20"),
    ({"n_shot": 0}, "n_shot must be a whole number from 1 to 5"),
    ({"episodes": 0}, "episodes must be a whole number from 1 to 2000"),
    ({"episodes": -5}, "episodes"),
    ({"episodes": 2.5}, "episodes must be a whole number"),
    ({"meta_lr": 0.0}, "meta_lr must be a number from 1e-05 to 0.1"),
    ({"meta_lr": -1e-3}, "meta_lr"),
    ({"meta_lr": float("nan")}, "meta_lr"),
    ({"eval_every": 0}, "eval_every"),
    ({"threads": 16}, "threads must be a whole number from 1 to 4"),
    ({"n_shot": True}, "n_shot"),
    ({"proto_head": True}, "proto_head .Proto-MAML. applies to maml and fomaml, not protonet"),
    ({"map_projection": "umap"}, "map_projection must be one of pca, tsne"),
])
def test_settings_are_bounded(change, fragment):
    with pytest.raises(ValueError, match=fragment):
        LiveConfig(**change)


def test_sign_alignment_keeps_the_map_from_mirroring():
    previous = np.array([[1.0, 2.0], [-1.0, -2.0], [0.5, 0.0]], dtype=np.float32)
    flipped = previous * np.array([-1.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(live._sign_aligned(flipped, previous), previous)
    np.testing.assert_array_equal(live._sign_aligned(flipped, None), flipped)


SHIPPED = REPO / "checkpoints" / "lake" / "protonet.safetensors"


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")
@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_start_from_a_shipped_encoder(method):
    from fewshot import load_checkpoint

    before = SHIPPED.read_bytes()
    model = build_live_model(LiveConfig(method=method, init=str(SHIPPED)))
    source, _ = load_checkpoint(SHIPPED, "cpu")
    given = dict(source.backbone.named_parameters())
    for name, param in model.backbone.named_parameters():
        torch.testing.assert_close(param, given[name])
    assert SHIPPED.read_bytes() == before  # read, never written


def test_an_unreadable_encoder_is_one_clear_error(tmp_path):
    bogus = tmp_path / "x.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot start from"):
        build_live_model(LiveConfig(init=str(bogus)))


def test_a_maml_run_finishes(data):
    run = LiveRun(LiveConfig(method="fomaml", episodes=3, eval_every=5, **{k: v for k, v in TINY.items()
                                                                          if k != "eval_every"}), *data).start()
    assert run.join(120)
    snap = run.snapshot()
    assert snap.state == "finished" and run.result.model.fixed_way == 3


def test_a_proto_maml_run_answers_any_number_of_classes(data):
    config = LiveConfig(method="fomaml", proto_head=True, episodes=3, **TINY)
    run = LiveRun(config, *data).start()
    assert run.join(120) and run.snapshot().state == "finished"
    model = run.result.model
    assert model.proto_head and model.fixed_way is None
    task = TaskSampler(data[1], 5, 1, 1, seed=3).sample_task()  # 5-way, though trained 3-way
    with torch.no_grad():
        model.process_support_set(task.support_images, task.support_labels)
        assert model(task.query_images).shape == (5, 5)


def test_a_t_sne_map(data):
    run = LiveRun(LiveConfig(episodes=5, map_projection="tsne", **TINY), *data).start()
    assert run.join(120)
    snap = run.snapshot()
    assert snap.state == "finished" and snap.map_xy.shape == (12, 2) and np.isfinite(snap.map_xy).all()
    assert np.ptp(snap.map_xy, axis=0).min() > 0  # spread out, not collapsed
