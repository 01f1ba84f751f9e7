"""Checkpoints: round trip, self-description, and refusal of pickles, corrupt and mismatched files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fewshot import (MAML, CheckpointError, PrototypicalNetwork, build_model, load_checkpoint, read_checkpoint_info,
                     save_checkpoint)


@pytest.fixture
def protonet_file(tmp_path: Path) -> Path:
    model = PrototypicalNetwork(hidden=8)
    return save_checkpoint(tmp_path / "proto.safetensors", model, method="protonet",
                           metadata={"protocol": "lake", "image_size": 16, "n_way": 3, "n_shot": 2,
                                     "command": "fewshot train --method protonet", "history": [{"step": 1}]})


@pytest.mark.parametrize("method, kwargs", [("protonet", {}), ("matching", {"fce": True, "feature_dim": 8}),
                                            ("siamese", {"feature_dim": 8}), ("maml", {"n_way": 3}),
                                            ("fomaml", {"n_way": 3, "inner_steps": 2}),
                                            ("mann", {"n_way": 3, "controller_size": 8, "memory_slots": 4,
                                                      "memory_width": 4, "read_heads": 1, "feature_dim": 8}),
                                            ("finetune", {"n_classes": 7, "finetune_steps": 3, "feature_dim": 8})])
def test_save_then_load_gives_identical_logits(tmp_path, make_task, method, kwargs):
    model = build_model(method, hidden=8, **kwargs)
    task = make_task(3, 2, 2, size=16)
    train_steps = torch.optim.SGD(model.parameters(), lr=0.1)
    loss, _ = model.train().episode_loss(task)  # move the weights (and BatchNorm statistics) off their init
    loss.backward()
    train_steps.step()
    model.eval()
    model.process_support_set(task.support_images, task.support_labels)
    expected = model(task.query_images).detach()
    path = save_checkpoint(tmp_path / f"{method}.safetensors", model, method=method)
    loaded, info = load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    assert info["method"] == method and info.train_state is None
    loaded.process_support_set(task.support_images, task.support_labels)
    assert torch.equal(loaded(task.query_images), expected)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert [p.name for p in tmp_path.iterdir()] == [f"{method}.safetensors"]  # no temporary file left behind


def test_info_fields(protonet_file):
    meta = read_checkpoint_info(protonet_file)
    assert meta["format"] == "fewshot-checkpoint" and meta["format_version"] == 1
    assert meta["method"] == "protonet"
    assert meta["method_kwargs"] == {"in_channels": 1, "hidden": 8, "distance": "euclidean", "cosine_scale": 10.0}
    assert meta["protocol"] == "lake" and meta["image_size"] == 16 and meta["n_way"] == 3 and meta["n_shot"] == 2
    assert meta["command"].startswith("fewshot train") and meta["history"] == [{"step": 1}]
    assert "saved_at" in meta
    _, info = load_checkpoint(protonet_file)
    assert info.metadata == meta and info.get("missing", 5) == 5 and info["protocol"] == "lake"
    assert info.path == str(protonet_file)


def test_a_resumed_runs_old_record_never_overrides_what_describes_the_new_file(tmp_path):
    """``train --resume`` passes the loaded file's metadata back to save_checkpoint: its time and format are stale."""
    model = build_model("protonet", hidden=8)
    stale = {"format_version": 0, "method_kwargs": {"hidden": 64}, "saved_at": "2000-01-01T00:00:00", "protocol": "lake"}
    meta = read_checkpoint_info(save_checkpoint(tmp_path / "p.safetensors", model, method="protonet", metadata=stale))
    assert meta["format_version"] == 1 and meta["method_kwargs"]["hidden"] == 8 and meta["protocol"] == "lake"
    assert meta["saved_at"] != stale["saved_at"]


def test_file_is_plain_safetensors_with_json_metadata(protonet_file):
    tensors = load_file(str(protonet_file))
    assert all(name.startswith("model/") for name in tensors)
    assert tensors["model/backbone.blocks.0.conv.weight"].shape == (8, 1, 3, 3)


class Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickle_checkpoint_is_refused_without_running_it(tmp_path, writer):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    payload = {"model": PrototypicalNetwork(hidden=4).state_dict(), "extra": Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="pickle") as info:
        load_checkpoint(path)
    assert "never unpickles" in str(info.value)
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint_info(path)
    assert not marker.exists()
    # the payload is live: an unsafe loader would have run it
    if writer == "pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_protocol_0_pickle_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=0))  # text pickle: no \x80 magic byte
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_file(protonet_file):
    data = protonet_file.read_bytes()
    protonet_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(protonet_file)


def test_wrong_method(protonet_file):
    with pytest.raises(CheckpointError, match="'protonet' checkpoint, not 'maml'"):
        load_checkpoint(protonet_file, expect_method="maml")
    assert load_checkpoint(protonet_file, expect_method="protonet")[1]["method"] == "protonet"


def _write_record(path: Path, record: dict, tensors: dict | None = None) -> Path:
    save_file(tensors or {"model/x": torch.zeros(1)}, str(path), metadata={"fewshot": json.dumps(record)})
    return path


def test_future_format_version(tmp_path):
    record = {"format": "fewshot-checkpoint", "format_version": 999, "method": "protonet", "method_kwargs": {}}
    path = _write_record(tmp_path / "future.safetensors", record)
    with pytest.raises(CheckpointError, match="version 999.*upgrade fewshot"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="version 999"):
        read_checkpoint_info(path)


def test_unknown_method(tmp_path):
    record = {"format": "fewshot-checkpoint", "format_version": 1, "method": "reptile", "method_kwargs": {}}
    path = _write_record(tmp_path / "other.safetensors", record)
    with pytest.raises(CheckpointError, match="unknown method 'reptile'"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_described_model(tmp_path):
    model = MAML(3, hidden=4)
    path = save_checkpoint(tmp_path / "m.safetensors", model, method="maml")
    tensors = load_file(str(path))
    record = read_checkpoint_info(path)
    record["method_kwargs"].update(hidden=8, feature_dim=8)
    _write_record(path, record, tensors)
    with pytest.raises(CheckpointError, match=r"do not match.*tensor model/net.backbone.blocks.0.conv.weight has shape "
                                              r"\(4, 1, 3, 3\), but the maml model described by method_kwargs needs "
                                              r"\(8, 1, 3, 3\)"):
        load_checkpoint(path)
    record["method_kwargs"]["hidden"] = 4  # feature_dim 8 no longer follows from hidden 4 on 28x28 images
    _write_record(path, record, tensors)
    with pytest.raises(CheckpointError, match="method_kwargs.feature_dim is 8, but a Conv-4 with hidden 4"):
        load_checkpoint(path)


def test_safetensors_file_from_another_program(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a fewshot checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="not a readable fewshot checkpoint|pickle"):
        load_checkpoint(path)


def test_unknown_method_is_refused_at_save(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        save_checkpoint(tmp_path / "x.safetensors", PrototypicalNetwork(hidden=4), method="reptile")


def test_a_killed_writers_temp_file_is_removed_by_the_next_save(tmp_path):
    import os
    import subprocess
    import sys

    from fewshot import save_checkpoint

    model = PrototypicalNetwork()
    path = tmp_path / "run [1].safetensors"  # glob characters in the name must not matter
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".{path.name}.{int(dead.stdout)}.abc123.tmp"  # a writer killed mid-write
    orphan.write_bytes(b"half a checkpoint")
    writing = tmp_path / f".{path.name}.{os.getpid()}.def456.tmp"  # a living writer's file: not ours to delete
    writing.write_bytes(b"being written")
    other = tmp_path / ".other.safetensors.1.x.tmp"  # another checkpoint's temp file
    other.write_bytes(b"x")
    save_checkpoint(path, model, method="protonet")
    assert not orphan.exists()
    assert writing.exists() and other.exists()
    assert load_checkpoint(path)[0] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, writing.name, other.name])


@pytest.mark.parametrize("method, kwargs", [("protonet", {}), ("maml", {"n_way": 3}), ("matching", {"feature_dim": 8})])
def test_use_fast_layout_changes_the_layout_not_the_answers(tmp_path, make_task, method, kwargs):
    from fewshot import use_fast_layout

    model = build_model(method, hidden=8, **kwargs).eval()
    task = make_task(3, 2, 4, size=28)
    path = save_checkpoint(tmp_path / f"{method}.safetensors", model, method=method)
    plain, _ = load_checkpoint(path)
    fast, _ = load_checkpoint(path)
    assert use_fast_layout(fast) is fast
    convs = [v for v in fast.state_dict().values() if v.dim() == 4]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last) for v in convs)
    assert not any(v.is_contiguous() for v in convs if v.shape[1] > 1)  # (1 input channel: both layouts at once)
    answers = []
    for m in (plain, fast):
        m.process_support_set(task.support_images, task.support_labels)
        answers.append(m(task.query_images).detach())
    torch.testing.assert_close(answers[1], answers[0], rtol=1e-4, atol=1e-5)
    saved = save_checkpoint(tmp_path / "again.safetensors", fast, method=method)  # stored contiguous, loads as before
    again, _ = load_checkpoint(saved)
    assert all(v.is_contiguous() for v in again.state_dict().values())


# --------------------------------------------------------------- issue 19: one validation layer for the record
def _edited(path: Path, change, tensors: dict | None = None) -> Path:
    record = read_checkpoint_info(path)
    change(record)
    return _write_record(path, record, tensors or load_file(str(path)))


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(method_kwargs="hidden=8"), "method_kwargs must be an object"),
    (lambda r: r.update(method=["protonet"]), "method names an unknown method"),
    (lambda r: r["method_kwargs"].update(hidden=-8), "method_kwargs.hidden must be a whole number from 1 to 4096"),
    (lambda r: r["method_kwargs"].update(hidden=8.0), "method_kwargs.hidden must be int"),
    (lambda r: r["method_kwargs"].update(distance=3), "method_kwargs.distance must be str"),
    (lambda r: r["method_kwargs"].update(depth=5), "method_kwargs.depth is not an argument of PrototypicalNetwork"),
    (lambda r: r["method_kwargs"].update(backbone="resnet"), "method_kwargs.backbone cannot be set from a checkpoint"),
    (lambda r: r.update(image_size=[16]), "image_size must be a whole number from 16 to 512"),
    (lambda r: r["method_kwargs"].update(in_channels=3), "method_kwargs.in_channels is 3, but fewshot's images are"),
    (lambda r: r.update(preprocess="center"), "preprocess must be an object"),
    (lambda r: r.update(history=[{"step": 1, "loss": float("nan")}]), "history[0].loss holds nan"),
    (lambda r: r.update(note=json.loads("[" * 500 + "]" * 500)), "note" + "[0]" * 32 + " is nested more than 32"),
    (lambda r: r.update(train_config={"episodes": -3}), "train_config.episodes must be a whole number"),
    (lambda r: r.update(format_version="1"), "format_version must be a whole number (this fewshot reads 1), got str"),
    (lambda r: r.update(format_version=0), "format_version is 0; fewshot format versions start at 1"),
    (lambda r: r.update(format_version=True), "format_version must be a whole number"),
], ids=["kwargs-str", "method-list", "hidden-negative", "hidden-float", "distance-int", "unknown-kwarg", "backbone",
        "image-size-list", "three-channels", "preprocess-str", "nan-in-history", "nested-500-deep", "episodes-negative",
        "version-str", "version-0", "version-bool"])
def test_the_record_is_checked_field_by_field_before_a_model_is_built(protonet_file, monkeypatch, change, field):
    import fewshot.checkpoint_schema as schema

    path = _edited(protonet_file, change)
    monkeypatch.setattr(schema, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    for read in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(path)
        assert str(info.value).startswith(f"{path}: ") and field in str(info.value)


def test_constructor_arguments_follow_the_methods_signature(tmp_path, monkeypatch):
    """A keyword argument added to a method later is checked by its annotation, with no change to the schema."""
    import fewshot.methods as methods

    class Tempered(PrototypicalNetwork):
        def __init__(self, backbone=None, *, in_channels: int = 1, hidden: int = 64, distance: str = "euclidean",
                     cosine_scale: float = 10.0, temperature: float = 1.0, label: str | None = None):
            super().__init__(backbone, in_channels=in_channels, hidden=hidden, distance=distance,
                             cosine_scale=cosine_scale)
            self.config.update(temperature=temperature, label=label)

    monkeypatch.setitem(methods.MODELS, "protonet", (Tempered, {}))
    path = save_checkpoint(tmp_path / "t.safetensors", Tempered(hidden=4, temperature=2.0), method="protonet")
    assert load_checkpoint(path)[1]["method_kwargs"]["temperature"] == 2.0
    good, weights = read_checkpoint_info(path), load_file(str(path))
    for value, problem in (("hot", "temperature must be float, got str 'hot'"),
                           (None, "temperature must be float, got NoneType"), (float("inf"), "temperature holds inf")):
        _write_record(path, {**good, "method_kwargs": {**good["method_kwargs"], "temperature": value}}, weights)
        with pytest.raises(CheckpointError, match=problem):
            load_checkpoint(path)
    _write_record(path, {**good, "method_kwargs": {**good["method_kwargs"], "temperature": 3, "label": None}}, weights)
    assert load_checkpoint(path)[0].config["temperature"] == 3  # an int is a float; the label may be None


def test_a_record_describing_a_huge_model_fails_at_once(tmp_path):
    import time

    path = save_checkpoint(tmp_path / "f.safetensors", build_model("finetune", n_classes=5, hidden=4, feature_dim=4),
                           method="finetune", metadata={"image_size": 16})
    _edited(path, lambda r: r["method_kwargs"].update(n_classes=1_000_000, hidden=4096, feature_dim=4096))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="method_kwargs do not build a finetune model.*far larger"):
        load_checkpoint(path)
    assert time.perf_counter() - start < 5  # nothing like 4096x4096 filters was allocated


def test_weights_that_are_not_finite_are_refused_and_never_written(tmp_path):
    model = PrototypicalNetwork(hidden=4)
    path = save_checkpoint(tmp_path / "p.safetensors", model, method="protonet")
    tensors = load_file(str(path))
    tensors["model/backbone.blocks.3.norm.running_var"][0] = float("inf")
    _edited(path, lambda r: None, tensors)
    with pytest.raises(CheckpointError, match="running_var holds NaN or infinite values"):
        load_checkpoint(path)
    with torch.no_grad():
        model.backbone.blocks[0].conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="not written: model/backbone.blocks.0.conv.weight holds NaN"):
        save_checkpoint(tmp_path / "nan.safetensors", model, method="protonet")
    assert not (tmp_path / "nan.safetensors").exists()


@pytest.fixture
def resumable(tmp_path, make_task) -> Path:
    from fewshot import SyntheticDataset, TaskSampler, TrainConfig, train

    model, states = PrototypicalNetwork(hidden=4), []
    train(model, TaskSampler(SyntheticDataset(4, 4, 16), 2, 1, 1, seed=0),
          TrainConfig(episodes=2, checkpoint_every=1, eval_every=0), on_checkpoint=states.append)
    return save_checkpoint(tmp_path / "run.safetensors", model, method="protonet",
                           metadata={"image_size": 16, "train_config": {"episodes": 2}}, train_state=states[-1])


def _drop(name: str):
    def change(tensors: dict) -> None:
        del tensors[name]
    return change


@pytest.mark.parametrize("change, tensors, field", [
    (lambda r: r.update(train_state={}), None, "train_state.step must be a whole number"),
    (lambda r: r["train_state"].update(step=10**30), None, "train_state.step must be a whole number from 0 to 2"),
    (lambda r: r["train_state"].pop("optimizer"), None, "train_state.optimizer must be an object"),
    (lambda r: r["train_state"]["optimizer"].update(param_groups="adam"), None, "param_groups must be a list"),
    (lambda r: r["train_state"]["optimizer"]["param_groups"][0].update(lr=-1), None, "param_groups[0].lr must be"),
    (lambda r: r["train_state"]["optimizer"]["param_groups"][0].update(params=[0, 1]), None, "must list the model's"),
    (lambda r: None, _drop("train/torch_rng"), "tensor train/torch_rng is missing"),
    (lambda r: None, _drop("train/optim/0/exp_avg"), "has optimiser state ['exp_avg_sq', 'step'], Adam keeps"),
    (lambda r: None, lambda t: t.update({"train/sampler_rng": torch.zeros(5056, dtype=torch.uint8)}),
     "tensor train/sampler_rng is not a valid RNG state"),
    (lambda r: None, lambda t: t.update({"train/optim/0/exp_avg": torch.zeros(3)}), "train/optim/0/exp_avg has shape"),
], ids=["empty", "step-1e30", "no-optimizer", "groups-str", "lr-negative", "params", "rng-missing", "moment-missing",
        "rng-invalid", "moment-shape"])
def test_the_training_state_is_checked_only_when_a_run_resumes(resumable, change, tensors, field):
    loaded = load_checkpoint(resumable)[1]
    assert loaded.train_state.step == 2 and len(loaded.train_state.optimizer["state"]) == 16
    weights = load_file(str(resumable))
    if tensors is not None:
        tensors(weights)
    _edited(resumable, change, weights)
    model, info = load_checkpoint(resumable)  # inference does not read the training state
    assert isinstance(model, PrototypicalNetwork) and info["method"] == "protonet"
    with pytest.raises(CheckpointError, match="the training state cannot be resumed") as error:
        info.train_state
    assert field in str(error.value), error.value


def test_pipes_and_devices_are_never_opened_as_checkpoints(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.safetensors")  # open() on it would block until a writer came
    with pytest.raises(CheckpointError, match="is a named pipe \\(FIFO\\); give the path"):
        load_checkpoint(tmp_path / "pipe.safetensors")
    with pytest.raises(CheckpointError, match="/dev/zero is a device"):
        read_checkpoint_info("/dev/zero")
