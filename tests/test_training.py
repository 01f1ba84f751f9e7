"""The one training loop: every method learns, runs are reproducible, resumable, and fail loudly on NaN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot import (METHODS, MANN, NonFiniteLossError, StepLog, TaskSampler, TensorDataset, TrainConfig,
                     build_model, evaluate, load_checkpoint, save_checkpoint, train)

# Settings that let each method learn the 16x16 grating task in a few dozen steps on a CPU.
LEARNING = {
    "protonet": {},
    "matching": {},
    "siamese": {},
    "maml": {"n_way": 5, "inner_steps": 2},
    "fomaml": {"n_way": 5, "inner_steps": 2},
    "finetune": {"n_classes": 10, "finetune_steps": 30},
}


def test_every_registered_method_has_a_learning_test():
    assert set(METHODS) == set(LEARNING) | {"mann"}


@pytest.mark.parametrize("method", sorted(LEARNING))
def test_method_learns_the_synthetic_task(gratings, method):
    model = build_model(method, hidden=16, **LEARNING[method])
    # held-out episodes: their own sampler seed, many tasks drawn from one sampler
    eval_sampler = TaskSampler(gratings, 5, 1, 5, seed=1234)
    eval_tasks = [eval_sampler.sample_task() for _ in range(40)]
    before = evaluate(model, eval_tasks).accuracy
    result = train(model, TaskSampler(gratings, 5, 1, 5, seed=0), TrainConfig(episodes=40, meta_lr=3e-3, eval_every=0))
    assert result.steps == 40 and not result.stopped_early
    after = evaluate(model, eval_tasks)
    assert after.episodes == 40
    chance = 1 / 5
    assert after.accuracy >= chance + 0.4, f"{method}: {after.accuracy:.3f} after training ({before:.3f} before)"
    assert after.accuracy >= before + 0.2, f"{method}: {before:.3f} -> {after.accuracy:.3f}"


def _one_hot_codes(n_classes: int = 10, per_class: int = 10) -> TensorDataset:
    """'Images' that are noisy one-hot codes (N, 1, 1, n_classes): perfect features, so only memory is learnt."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    codes = F.one_hot(labels, n_classes).float() + 0.05 * torch.rand(len(labels), n_classes, generator=g)
    return TensorDataset(codes.reshape(-1, 1, 1, n_classes), labels.tolist(), [f"code{c}" for c in range(n_classes)])


def test_mann_learns_to_bind_labels_in_memory():
    # The memory alone, with perfect features (identity backbone), in MANN's own protocol, accuracy by
    # instance: from the 2nd showing of a class on, a model that binds labels in memory beats chance.
    # (Learning through the Conv-4 encoder: tests/test_mann.py::test_learns_synthetic_images_through_its_encoder.)
    data = _one_hot_codes()
    model = MANN(3, controller_size=64, memory_slots=16, memory_width=16, read_heads=1, feature_dim=10)
    model.backbone = nn.Identity()
    eval_sampler = TaskSampler(data, 3, 2, 2, seed=1234)
    eval_tasks = [eval_sampler.sample_task() for _ in range(60)]

    def later_instances() -> float:
        model.eval()
        return float(torch.stack([model.instance_accuracy(t)[1:4] for t in eval_tasks]).mean())

    before = later_instances()
    result = train(model, TaskSampler(data, 3, 2, 2, seed=0), TrainConfig(episodes=60, meta_lr=1e-2, eval_every=0),
                   log_every=30)
    after = later_instances()
    assert result.history[-1]["loss"] < math.log(3) - 0.03  # below the loss of a uniform guess
    assert after >= before + 0.08 and after >= 1 / 3 + 0.08, f"{before:.3f} -> {after:.3f}"


def _small(method: str):
    kwargs = {"maml": {"n_way": 3}, "mann": {"n_way": 3, "controller_size": 16, "memory_slots": 8,
                                             "memory_width": 4, "read_heads": 1}}.get(method, {})
    return build_model(method, hidden=8, **kwargs)


class _Float64:
    """A dataset view whose images are float64 (so a 3-step comparison is not lost in float32 rounding)."""

    def __init__(self, data: TensorDataset):
        self.data, self.class_names = data, data.class_names

    def get_labels(self) -> list[int]:
        return self.data.get_labels()

    def get_images(self, indices: torch.Tensor) -> torch.Tensor:
        return self.data.get_images(indices).double()


@pytest.mark.parametrize("method", ["protonet", "matching", "siamese", "maml", "mann", "finetune"])
def test_channels_last_training_gives_the_same_weights(gratings, method):
    """The CPU fast path (channels_last weights and activations) trains to the same weights as NCHW."""
    states = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = _small(method).double()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        train(model, TaskSampler(_Float64(gratings), 3, 1, 2, seed=5),
              TrainConfig(episodes=3, meta_lr=1e-3, meta_batch_size=2, eval_every=0, channels_last=channels_last))
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        states.append(model.state_dict())
    # atol 1e-8: a conv bias right before BatchNorm has a true gradient of zero, and Adam scales the
    # float64 rounding noise of that zero (~1e-17) up to steps of ~1e-9; every other tensor agrees to ~1e-14.
    for k in states[0]:
        torch.testing.assert_close(states[1][k], states[0][k], rtol=1e-9, atol=1e-8)
    assert any(not torch.equal(states[0][k], initial[k]) for k in initial)  # it did train


@pytest.mark.parametrize("method", ["protonet", "maml", "mann"])
def test_same_seed_same_history(gratings, method):
    runs = []
    for _ in range(2):
        torch.manual_seed(123)  # the loop seeds torch itself; model init is the caller's business
        model = _small(method)
        logs: list[StepLog] = []
        result = train(model, TaskSampler(gratings, 3, 1, 2, seed=5), TrainConfig(episodes=6, meta_lr=1e-3, seed=7),
                       on_step=logs.append, log_every=1)
        runs.append((result.history, [(log.loss, log.accuracy) for log in logs], model.state_dict()))
    (h1, l1, s1), (h2, l2, s2) = runs
    assert len(h1) == 6
    drop_time = lambda history: [{k: v for k, v in h.items() if k not in ("seconds", "cpu_seconds")} for h in history]  # noqa: E731
    assert drop_time(h1) == drop_time(h2)
    assert l1 == l2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # a different loop seed changes the run (MANN shuffles its sequences with torch's RNG)
    if method == "mann":
        torch.manual_seed(123)
        model = _small(method)
        other = train(model, TaskSampler(gratings, 3, 1, 2, seed=5), TrainConfig(episodes=6, meta_lr=1e-3, seed=8),
                      log_every=1)
        assert drop_time(other.history) != drop_time(h1)


def test_on_step_called_once_per_step_with_increasing_step(gratings):
    logs: list[StepLog] = []
    config = TrainConfig(episodes=7, meta_batch_size=2)
    result = train(_small("protonet"), TaskSampler(gratings, 3, 1, 2, seed=0), config, on_step=logs.append)
    assert [log.step for log in logs] == list(range(1, 8))
    assert all(log.total_steps == 7 for log in logs)
    assert all(math.isfinite(log.loss) and 0.0 <= log.accuracy <= 1.0 for log in logs)
    assert all(a.seconds <= b.seconds for a, b in zip(logs, logs[1:]))
    assert result.steps == 7 and result.history[-1]["step"] == 7


def test_validate_runs_every_eval_every_steps(gratings):
    calls = []

    def validate(model):
        calls.append(1)
        s = TaskSampler(gratings, 3, 1, 2, seed=99)
        return evaluate(model, [s.sample_task() for _ in range(3)])

    logs: list[StepLog] = []
    model = _small("protonet")
    result = train(model, TaskSampler(gratings, 3, 1, 2, seed=0), TrainConfig(episodes=6, eval_every=3),
                   on_step=logs.append, validate=validate)
    assert len(calls) == 2
    assert model.training is False  # train() leaves the model in eval mode when done
    assert [log.step for log in logs if log.val_accuracy is not None] == [3, 6]
    assert [h["step"] for h in result.history if "val_accuracy" in h] == [3, 6]


def test_nan_images_raise_non_finite_loss_error_with_the_step():
    images = torch.rand(40, 1, 16, 16)
    images[::2] = float("nan")  # half the images of every class are NaN
    data = TensorDataset(images, [c for c in range(4) for _ in range(10)], list("abcd"))
    with pytest.raises(NonFiniteLossError, match=r"at step 1\b"):
        train(_small("protonet"), TaskSampler(data, 3, 2, 2, seed=0), TrainConfig(episodes=5))


def test_absurd_meta_lr_raises_non_finite_loss_error_with_the_step(gratings):
    logs: list[StepLog] = []
    with pytest.raises(NonFiniteLossError) as info:
        train(_small("protonet"), TaskSampler(gratings, 3, 1, 2, seed=0), TrainConfig(episodes=20, meta_lr=1e30),
              on_step=logs.append)
    step = len(logs) + 1
    assert step >= 2
    assert f"at step {step};" in str(info.value) and "meta-lr" in str(info.value)


@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(gratings, tmp_path, method):
    config = TrainConfig(episodes=6, checkpoint_every=3, meta_lr=1e-2, seed=3)
    torch.manual_seed(0)
    model = _small(method)
    saved = []

    def on_checkpoint(state):
        path = tmp_path / f"step{state.step}.safetensors"
        save_checkpoint(path, model, method=method, train_state=state)
        saved.append(state.step)

    full = train(model, TaskSampler(gratings, 3, 1, 2, seed=0), config, on_checkpoint=on_checkpoint, log_every=1)
    assert saved == [3, 6]
    resumed_model, info = load_checkpoint(tmp_path / "step3.safetensors")
    assert info.train_state is not None and info.train_state.step == 3
    torch.manual_seed(999)  # the global RNG state must come from the checkpoint, not from here
    resumed = train(resumed_model, TaskSampler(gratings, 3, 1, 2, seed=42), config, state=info.train_state,
                    log_every=1)
    assert resumed.steps == 6
    for key, value in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    strip = lambda history: [{k: v for k, v in h.items() if k not in ("seconds", "cpu_seconds")} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
