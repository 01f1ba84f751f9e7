"""The CLI keeps its promise under hostile input (issue 19): one ``error:`` line and exit status 2, or a correct answer.

Never a traceback, never a hang, never code from a file. Property-based (Hypothesis) over a real checkpoint -- a tiny
ProtoNet trained two steps on a folder dataset by ``fewshot train``, so it is resumable -- whose metadata record,
tensors and command-line arguments are mutated (wrong types, missing keys, shapes, NaN, huge numbers, pipes,
devices, folders). Every case runs in-process (``fewshot.cli.main``) under a per-case time limit (SIGALRM), with
derandomized, bounded examples so CI runs the same cases in well under a minute. The explicit tests below the
fuzzers pin one case of each class of failure the issue lists.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import signal
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

import fewshot
from fewshot.cli import main

CASE_SECONDS = 30  # per CLI run; a blocked open() or an endless loop fails the case instead of hanging CI
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TRIED: dict[str, dict[str, int]] = {}  # kind of case -> outcome -> count (printed at the end, for the issue's note)


class CaseTimeout(Exception):
    """A CLI run took longer than CASE_SECONDS: a hang."""


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``fewshot.cli.main(argv)`` in-process: (exit status, stdout, stderr). An exception escaping it fails the test."""
    out, err = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise CaseTimeout(f"fewshot {' '.join(argv)} ran longer than {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # e.g. PyTorch's state-dict warnings: a crash, not an answer
            try:
                status = main(argv)
            except SystemExit as exc:  # argparse
                status = exc.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return status, out.getvalue(), err.getvalue()


def error_line(status: int, out: str, err: str) -> str:
    """The one ``error:`` line of a refused command (argparse's usage lines aside)."""
    assert status == 2, (status, err[-2000:])
    assert out == "" and "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1 and "error: " in lines[0], err[-2000:]
    return lines[0]


def strict_json(text: str):
    def refuse(token: str):
        raise AssertionError(f"invalid JSON token {token} in the output")
    return json.loads(text, parse_constant=refuse)


def tally(kind: str, status: int) -> None:
    outcome = {0: "answered", 2: "refused (one error line)"}.get(status, f"exit {status}")
    TRIED.setdefault(kind, {}).setdefault(outcome, 0)
    TRIED[kind][outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    lines = [f"{kind}: {sum(c.values())} cases, " + ", ".join(f"{n} {o}" for o, n in sorted(c.items()))
             for kind, c in sorted(TRIED.items())]
    print("\nissue 19 fuzz outcomes:\n  " + "\n  ".join(lines))


# ------------------------------------------------------------------------------------------------------ fixtures
class World(dict):
    """The fixture's files; a short repr, so Hypothesis's failure reports stay readable."""

    def __repr__(self) -> str:
        return f"World({self['root']})"


def _symbol(kind: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("L", (56, 56), 255)
    draw = ImageDraw.Draw(image)
    j = rng.integers(-4, 5, 4)
    if kind == "line":
        draw.line([(10 + j[0], 10 + j[1]), (46 + j[2], 46 + j[3])], fill=0, width=4)
    elif kind == "cross":
        draw.line([(28 + j[0], 8), (28 + j[1], 48)], fill=0, width=4)
        draw.line([(8, 28 + j[2]), (48, 28 + j[3])], fill=0, width=4)
    else:
        draw.rectangle([12 + j[0], 12 + j[1], 44 + j[2], 44 + j[3]], outline=0, width=4)
    return image


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A folder dataset (3 classes x 4 drawings), odd files (blank, noise, 1x1, a FIFO, a file used as a folder),
    and a resumable ProtoNet checkpoint written by ``fewshot train``; the working directory is a scratch folder."""
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    for c, kind in enumerate(("line", "cross", "box")):
        (data / kind).mkdir(parents=True)
        for k in range(4):
            _symbol(kind, 10 * c + k).save(data / kind / f"{k}.png")
    Image.new("L", (56, 56), 255).save(root / "blank.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (56, 56), dtype=np.uint8)).save(root / "noise.png")
    Image.new("L", (1, 1), 0).save(root / "dot.png")
    os.mkfifo(root / "fifo.png")
    os.mkfifo(root / "fifo.safetensors")
    checkpoint = root / "proto.safetensors"
    status, _, err = run_cli(["train", "--method", "protonet", "--dataset", "folder", "--data-dir", str(data),
                              "--n-way", "2", "--n-shot", "1", "--n-query", "1", "--episodes", "2", "--hidden", "4",
                              "--val-every", "0", "--checkpoint-every", "1", "--quiet", "--device", "cpu",
                              "--out", str(checkpoint)])
    assert status == 0, err
    scratch = root / "cwd"
    scratch.mkdir()
    cwd = os.getcwd()
    os.chdir(scratch)  # fuzzed relative paths land here
    try:
        yield World(root=root, data=data, checkpoint=checkpoint, query=data / "cross" / "0.png",
                    record=fewshot.read_checkpoint_info(checkpoint), tensors=load_file(str(checkpoint)))
    finally:
        os.chdir(cwd)


def commands(w: dict, checkpoint: Path, out: Path) -> dict[str, list[str]]:
    data, folder = str(w["data"]), ["--dataset", "folder", "--data-dir", str(w["data"]), "--n-way", "2", "--n-shot",
                                    "1", "--n-query", "1", "--device", "cpu"]
    return {
        "info": ["info", "--checkpoint", str(checkpoint), "--json"],
        "predict": ["predict", "--checkpoint", str(checkpoint), "--support", data, "--query", str(w["query"]),
                    "--device", "cpu", "--json"],
        "evaluate": ["evaluate", "--checkpoint", str(checkpoint), *folder, "--episodes", "2", "--json"],
        "export": ["export", "--checkpoint", str(checkpoint), "--out", str(out)],
        "resume": ["train", "--method", "protonet", *folder, "--hidden", "4", "--episodes", "3", "--val-every", "0",
                   "--quiet", "--max-seconds", "5", "--resume", "--out", str(checkpoint)],
    }


def check_answer(name: str, argv: list[str], status: int, out: str, err: str) -> None:
    """A command that exited 0 gave a correct answer (not just no error)."""
    assert status == 0 and "Traceback" not in err, err[-2000:]
    if name == "info":
        assert strict_json(out)["method"] in fewshot.methods.MODELS
    elif name == "predict":
        (prediction,) = strict_json(out)["predictions"]
        probabilities = prediction["probabilities"]
        assert sorted(probabilities) == ["box", "cross", "line"] and prediction["label"] in probabilities
        assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-4)
    elif name == "evaluate":
        report = strict_json(out)
        assert 0.0 <= report["accuracy"] <= 1.0 and report["episodes"] == 2
    elif name == "export":
        model, info = fewshot.load_checkpoint(argv[argv.index("--out") + 1])
        assert info.train_state is None
    elif name == "resume":
        _, info = fewshot.load_checkpoint(argv[-1])
        assert info.train_state.step == info["steps_done"] == 3


# ------------------------------------------------------------------------------------------------ hostile values
HUGE = [10**30, -(10**30), 2**63, 2**64 + 1, 1e308, -1, 0, 10**9]
CODE = ["__import__('os').system('touch PWNED')", "{{7*7}}", "$(touch PWNED)", "'; touch PWNED; '"]
scalars = (st.none() | st.booleans() | st.integers(-10, 10) | st.sampled_from(HUGE) | st.floats()
           | st.text(max_size=12) | st.sampled_from(CODE))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def key_paths(value, prefix=()) -> list[tuple]:
    """Every key/index path into the record (depth <= 4), for choosing what to mutate."""
    paths = [prefix] if prefix else []
    if len(prefix) < 4:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
        for key, item in items:
            paths += key_paths(item, prefix + (key,))
    return paths


def mutate(record: dict, path: tuple, action: str, value) -> dict:
    record = json.loads(json.dumps(record))
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    elif action == "new key" and isinstance(parent, dict):
        parent[f"{path[-1]}_extra"] = value
    else:
        parent[path[-1]] = value
    return record


def assert_no_code_ran(w: dict) -> None:
    for folder in (w["root"], w["root"] / "cwd", Path.cwd()):
        assert not (folder / "PWNED").exists()


# -------------------------------------------------------------------------------------------------------- fuzzers
@FUZZ
@given(data=st.data(), command=st.sampled_from(["info", "predict", "evaluate", "export", "resume"]),
       action=st.sampled_from(["replace", "replace", "delete", "new key"]), value=json_values)
def test_fuzzed_metadata_record(world, tmp_path_factory, data, command, action, value):
    paths = key_paths(world["record"])
    path = data.draw(st.sampled_from(paths), label="path")
    record = mutate(world["record"], path, action, value)
    folder = tmp_path_factory.mktemp("rec")
    checkpoint = folder / "m.safetensors"
    save_file(world["tensors"], str(checkpoint), metadata={"fewshot": json.dumps(record)})
    argv = commands(world, checkpoint, folder / "export.safetensors")[command]
    status, out, err = run_cli(argv)
    tally(f"metadata record ({command})", status)
    if status != 0:
        error_line(status, out, err)
    else:
        check_answer(command, argv, status, out, err)
    assert_no_code_ran(world)


TENSOR_ACTIONS = ["drop", "reshape", "dtype", "nan", "inf", "huge", "extra"]


def mutate_tensor(tensors: dict, name: str, action: str, rng: np.random.Generator) -> dict:
    tensors = dict(tensors)
    t = tensors[name]
    if action == "drop":
        del tensors[name]
    elif action == "reshape":
        tensors[name] = torch.zeros(tuple(int(n) for n in rng.integers(1, 5, int(rng.integers(0, 4)))))
    elif action == "dtype":
        dtype = [torch.int64, torch.int8, torch.float16, torch.float64, torch.bool, torch.uint8][int(rng.integers(6))]
        tensors[name] = t.to(dtype)
    elif action in ("nan", "inf", "huge"):
        fill = {"nan": float("nan"), "inf": float("inf"), "huge": 3e38}[action]
        tensors[name] = torch.full_like(t, fill) if t.is_floating_point() else torch.full_like(t, 255 if t.dtype ==
                                                                                                torch.uint8 else 2**40)
    else:
        tensors[name.rsplit("/", 1)[0] + "/extra"] = torch.zeros(3)
    return tensors


@FUZZ
@given(data=st.data(), command=st.sampled_from(["info", "predict", "evaluate", "export", "resume"]),
       action=st.sampled_from(TENSOR_ACTIONS), seed=st.integers(0, 2**16))
def test_fuzzed_tensors(world, tmp_path_factory, data, command, action, seed):
    name = data.draw(st.sampled_from(sorted(world["tensors"])), label="tensor")
    original = world["tensors"][name]
    tensors = mutate_tensor(world["tensors"], name, action, np.random.default_rng(seed))
    folder = tmp_path_factory.mktemp("ten")
    checkpoint = folder / "m.safetensors"
    save_file(tensors, str(checkpoint), metadata={"fewshot": json.dumps(world["record"])})
    argv = commands(world, checkpoint, folder / "export.safetensors")[command]
    status, out, err = run_cli(argv)
    tally(f"tensors ({command})", status)
    if status != 0:
        error_line(status, out, err)
    else:
        check_answer(command, argv, status, out, err)
        changed = name not in tensors or tensors[name].shape != original.shape or action == "extra" or (
            action in ("nan", "inf") and original.is_floating_point())
        if command != "info" and name.startswith("model/") and changed:  # (info reads the record only)
            pytest.fail(f"{action} of {name} was accepted by {command}")


def hostile_paths(w: dict, flag: str) -> list[str]:
    """Paths that are not what the flag wants: pipes, devices, folders, unwritable places, odd images."""
    root = w["root"]
    paths = [str(root / "fifo.png"), str(root / "fifo.safetensors"), "/dev/zero", "/dev/null", str(w["data"]),
             "/proc/fewshot.safetensors", str(root / "blank.png" / "x.safetensors"), str(root / "missing.png"), "",
             "-"]
    if flag != "--out":  # (never overwrite the fixture's own files)
        paths += [str(root / "blank.png"), str(root / "noise.png"), str(root / "dot.png")]
    return paths


NUMBERS = ["-1", "0", "1", "2", "nan", "inf", "-inf", "1e309", "99999999999999999999999", "0x10", "1.5", "", " ",
           "--", "1e-320", "-0"]
# (command, flag) pairs that take a value; fuzzed one at a time on an otherwise valid command line
FLAGS = {
    "train": ["--n-way", "--n-shot", "--n-query", "--episodes", "--seed", "--device", "--out", "--data-dir",
              "--meta-batch-size", "--meta-lr", "--grad-clip", "--image-size", "--hidden", "--inner-steps",
              "--inner-lr", "--cosine-scale", "--checkpoint-every", "--lr-schedule", "--method", "--init-backbone"],
    "evaluate": ["--checkpoint", "--n-way", "--n-shot", "--n-query", "--episodes", "--seed", "--device", "--data-dir",
                 "--inner-steps", "--inner-lr", "--split"],
    "predict": ["--checkpoint", "--support", "--query", "--device"],
    "info": ["--checkpoint"],
    "export": ["--checkpoint", "--out"],
}


def base_command(w: dict, command: str, out: Path) -> list[str]:
    folder = ["--dataset", "folder", "--data-dir", str(w["data"]), "--n-way", "2", "--n-shot", "1", "--n-query", "1",
              "--device", "cpu"]
    return {
        "train": ["train", "--method", "protonet", *folder, "--hidden", "4", "--episodes", "2", "--val-every", "0",
                  "--quiet", "--max-seconds", "5", "--out", str(out)],
        "evaluate": ["evaluate", "--checkpoint", str(w["checkpoint"]), *folder, "--episodes", "2", "--json"],
        "predict": ["predict", "--checkpoint", str(w["checkpoint"]), "--support", str(w["data"]), "--query",
                    str(w["query"]), "--device", "cpu", "--json"],
        "info": ["info", "--checkpoint", str(w["checkpoint"]), "--json"],
        "export": ["export", "--checkpoint", str(w["checkpoint"]), "--out", str(out)],
    }[command]


@FUZZ
@given(data=st.data(), command=st.sampled_from(sorted(FLAGS)))
def test_fuzzed_arguments(world, tmp_path_factory, data, command):
    flag = data.draw(st.sampled_from(FLAGS[command]), label="flag")
    value = data.draw(st.sampled_from(NUMBERS + hostile_paths(world, flag)) | st.text(max_size=10), label="value")
    out = tmp_path_factory.mktemp("arg") / "out.safetensors"
    argv = base_command(world, command, out)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    before = world["checkpoint"].read_bytes()
    status, stdout, err = run_cli(argv)
    tally(f"arguments ({command})", status)
    if status != 0:
        error_line(status, stdout, err)
    else:
        assert "Traceback" not in err
        if "--json" in argv:
            strict_json(stdout)
        if command in ("train", "export"):
            written = argv[argv.index("--out") + 1]
            model, info = fewshot.load_checkpoint(written)  # whatever was written loads
            if command == "train":
                assert info["steps_done"] >= 1
    if world["checkpoint"].read_bytes() != before:  # a fuzzed --out pointed at the fixture: restore it
        pytest.fail("the fixture checkpoint was overwritten: " + " ".join(argv))
    assert_no_code_ran(world)


# ------------------------------------------------------------------------- one explicit case per class of the issue
def _with_record(w: dict, folder: Path, change, tensors: dict | None = None) -> Path:
    record = json.loads(json.dumps(w["record"]))
    change(record)
    path = folder / "edited.safetensors"
    save_file(tensors if tensors is not None else w["tensors"], str(path), metadata={"fewshot": json.dumps(record)})
    return path


def _with_tensors(w: dict, folder: Path, change) -> Path:
    tensors = dict(w["tensors"])
    change(tensors)
    return _with_record(w, folder, lambda r: None, tensors)


def _predict(w: dict, checkpoint, query=None) -> list[str]:
    return ["predict", "--checkpoint", str(checkpoint), "--support", str(w["data"]), "--query",
            str(query or w["query"]), "--device", "cpu"]


def _folder(data) -> list[str]:
    return ["--dataset", "folder", "--data-dir", str(data), "--n-way", "2", "--n-shot", "1", "--n-query", "1",
            "--device", "cpu"]


def _train(w: dict, out, *extra: str, method: str = "protonet", data=None, episodes: str = "1") -> list[str]:
    return ["train", "--method", method, *_folder(data or w["data"]), "--episodes", episodes, "--hidden", "4",
            "--val-every", "0", "--quiet", "--out", str(out), *extra]


def _resume(w: dict, checkpoint) -> list[str]:
    return _train(w, checkpoint, "--resume", episodes="3")


def _maml_n_way_0(w: dict, folder: Path) -> Path:
    path = fewshot.save_checkpoint(folder / "maml.safetensors", fewshot.build_model("maml", n_way=2, hidden=4),
                                   method="maml", metadata={"image_size": 28})
    record = fewshot.read_checkpoint_info(path)
    record["method_kwargs"]["n_way"] = 0
    save_file(load_file(str(path)), str(path), metadata={"fewshot": json.dumps(record)})
    return path


def _rng_wrong_size(t: dict) -> None:
    t["train/torch_rng"] = t["train/torch_rng"][:100].clone()


CLASSES = {
    # 1. a valid safetensors file whose record has the wrong types
    "1-kwargs-a-string": (lambda w, f: _predict(w, _with_record(w, f, lambda r: r.update(method_kwargs="hidden=4"))),
                          "method_kwargs must be an object"),
    "1-kwargs-a-list": (lambda w, f: _predict(w, _with_record(w, f, lambda r: r.update(method_kwargs=[4]))),
                        "method_kwargs must be an object"),
    "1-method-a-list": (lambda w, f: _predict(w, _with_record(w, f, lambda r: r.update(method=["protonet"]))),
                        "method names an unknown method list ['protonet']"),
    "1-negative-hidden": (lambda w, f: _predict(w, _with_record(w, f, lambda r: r["method_kwargs"].update(hidden=-4))),
                          "method_kwargs.hidden must be a whole number from 1 to 4096, got int -4"),
    "1-image-size-a-list": (lambda w, f: _predict(w, _with_record(w, f, lambda r: r.update(image_size=[28]))),
                            "image_size must be a whole number from 16 to 512"),
    "1-preprocess-a-string": (lambda w, f: _predict(w, _with_record(w, f, lambda r: r.update(preprocess="center"))),
                              "preprocess must be an object"),
    # 2. a resumable checkpoint with a corrupt training state: --resume refuses it (inference: see below)
    "2-train-state-empty": (lambda w, f: _resume(w, _with_record(w, f, lambda r: r.update(train_state={}))),
                            "train_state.step must be a whole number"),
    "2-optimizer-missing": (lambda w, f: _resume(w, _with_record(w, f, lambda r: r["train_state"].pop("optimizer"))),
                            "train_state.optimizer must be an object"),
    "2-rng-tensor-missing": (lambda w, f: _resume(w, _with_tensors(w, f, lambda t: t.pop("train/sampler_rng"))),
                             "tensor train/sampler_rng is missing"),
    "2-rng-tensor-wrong-size": (lambda w, f: _resume(w, _with_tensors(w, f, _rng_wrong_size)),
                                "tensor train/torch_rng must be a uint8 RNG state of shape (5056,)"),
    "2-param-groups-a-string": (lambda w, f: _resume(w, _with_record(
        w, f, lambda r: r["train_state"]["optimizer"].update(param_groups="adam"))),
        "train_state.optimizer.param_groups must be a list of 1 group(s)"),
    # 3. devices
    "3-device-banana": (lambda w, f: _predict(w, w["checkpoint"]) + ["--device", "banana"], "is not a device"),
    "3-device-mps": (lambda w, f: _predict(w, w["checkpoint"]) + ["--device", "mps"], "mps"),
    "3-device-cuda-99": (lambda w, f: _train(w, f / "x.safetensors", "--device", "cuda:99"), "cuda:99"),
    # 4. image sizes the backbone cannot take
    "4-image-size-1-protonet": (lambda w, f: _train(w, f / "x.safetensors", "--image-size", "1"),
                                "--image-size must be from 16 to 512"),
    "4-image-size-8-matching": (lambda w, f: _train(w, f / "x.safetensors", "--image-size", "8", method="matching"),
                                "--image-size must be from 16 to 512"),
    # 5. --out that cannot be written, refused before training
    "5-out-a-folder": (lambda w, f: _train(w, f), "is a folder; give a file path"),
    "5-out-under-proc": (lambda w, f: _train(w, "/proc/fewshot/x.safetensors"), "choose a path in a folder you can"),
    "5-out-below-a-file": (lambda w, f: _train(w, w["query"] / "x.safetensors"), "choose a path in a folder you can"),
    "5-export-out-a-folder": (lambda w, f: ["export", "--checkpoint", str(w["checkpoint"]), "--out", str(f)],
                              "is a folder; give a file path"),
    # 6. named pipes are refused without blocking
    "6-fifo-checkpoint": (lambda w, f: _predict(w, w["root"] / "fifo.safetensors"), "is a named pipe (FIFO)"),
    "6-fifo-query": (lambda w, f: _predict(w, w["checkpoint"], w["root"] / "fifo.png"), "is a named pipe (FIFO)"),
    "6-device-as-checkpoint": (lambda w, f: ["info", "--checkpoint", "/dev/zero"], "/dev/zero is a device"),
    # 7. one line (not PyTorch's state-dict text, no warning) for tensors that do not fit
    "7-tensor-missing": (lambda w, f: _predict(w, _with_tensors(
        w, f, lambda t: t.pop("model/backbone.blocks.1.conv.weight"))),
        "tensor model/backbone.blocks.1.conv.weight is missing"),
    "7-tensor-wrong-shape": (lambda w, f: _predict(w, _with_tensors(
        w, f, lambda t: t.update({"model/backbone.blocks.0.conv.bias": torch.zeros(5)}))),
        "has shape (5,), but the protonet model described by method_kwargs needs (4,)"),
    "7-n-way-0": (lambda w, f: ["info", "--checkpoint", str(_maml_n_way_0(w, f))],
                  "method_kwargs.n_way must be a whole number from 2 to 10000, got int 0"),
    # 8. silently wrong answers, now refused
    "8-nan-weights": (lambda w, f: _predict(w, _with_tensors(w, f, lambda t: t.update(
        {k: torch.full_like(v, float("nan")) for k, v in t.items() if k.startswith("model/") and v.is_floating_point()}
    ))), "holds NaN or infinite values"),
    "8-evaluate-0-episodes": (lambda w, f: ["evaluate", "--checkpoint", str(w["checkpoint"]), *_folder(w["data"]),
                                            "--episodes", "0", "--json"], "--episodes must be at least 1"),
    "8-resumed-step-1e30": (lambda w, f: _resume(w, _with_record(w, f, lambda r: r["train_state"].update(step=10**30))),
                            "train_state.step must be a whole number from 0 to 2"),
    "8-train-0-episodes": (lambda w, f: _train(w, f / "x.safetensors", episodes="0"),
                           "--episodes 0 would write an untrained model"),
    "8-grad-clip-negative": (lambda w, f: _train(w, f / "x.safetensors", "--grad-clip", "-1"),
                             "argument --grad-clip: must be a finite number above 0, got -1"),
    "8-blank-query": (lambda w, f: _predict(w, w["checkpoint"], w["root"] / "blank.png"), "looks blank"),
    "8-1x1-query": (lambda w, f: _predict(w, w["checkpoint"], w["root"] / "dot.png"), "only 1x1 pixels"),
    "8-noise-query": (lambda w, f: _predict(w, w["checkpoint"], w["root"] / "noise.png"), "looks like noise"),
    "8-format-version-a-string": (lambda w, f: ["info", "--checkpoint", str(_with_record(
        w, f, lambda r: r.update(format_version="1")))],
        "format_version must be a whole number (this fewshot reads 1), got str '1'"),
}


# Found by the fuzzers above (random runs with more examples) and fixed; kept as plain regression cases.
CLASSES.update({
    "found-n-shot-beyond-int64": (lambda w, f: _train(w, f / "x.safetensors", "--n-shot", "99999999999999999999999"),
                                  "argument --n-shot: must be at most 1000000000"),
    "found-line-break-in-a-path": (lambda w, f: ["info", "--checkpoint", "\r0"], "checkpoint \\r0 does not exist"),
})


@pytest.mark.parametrize("case", list(CLASSES), ids=list(CLASSES))
def test_each_class_of_the_issue_is_one_error_line(world, tmp_path, case):
    make_argv, fragment = CLASSES[case]
    argv = make_argv(world, tmp_path)
    status, out, err = run_cli(argv)
    line = error_line(status, out, err)
    assert fragment in line, line
    if "edited.safetensors" in " ".join(argv) and not case.startswith("8-format"):
        assert "edited.safetensors" in line  # the message names the file
    assert not (tmp_path / "x.safetensors").exists()  # nothing written by a refused run


@pytest.mark.parametrize("change", [lambda r: r.update(train_state={}), lambda r: r["train_state"].pop("optimizer"),
                                    lambda r: r["train_state"]["optimizer"].update(param_groups="adam")],
                         ids=["empty", "no-optimizer", "param-groups-a-string"])
def test_a_broken_training_state_does_not_stop_inference(world, tmp_path, change):
    checkpoint = _with_record(world, tmp_path, change)
    for name, argv in commands(world, checkpoint, tmp_path / "export.safetensors").items():
        if name != "resume":
            status, out, err = run_cli(argv)
            check_answer(name, argv, status, out, err)


def test_resume_of_an_intact_state_continues(world, tmp_path):
    checkpoint = tmp_path / "run.safetensors"
    shutil.copy(world["checkpoint"], checkpoint)
    argv = commands(world, checkpoint, tmp_path / "x")["resume"]
    status, out, err = run_cli(argv)
    check_answer("resume", argv, status, out, err)


def test_skipped_images_are_reported_with_the_reason(world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    (data / "line" / "notes.png").write_text("not pixels")
    shutil.copy(world["root"] / "blank.png", data / "box" / "empty.png")
    os.mkfifo(data / "cross" / "pipe.png")
    status, _, err = run_cli(_train(world, tmp_path / "t.safetensors", data=data))
    assert status == 0, err
    assert "skipped 2 of 15 image files" in err
    assert "notes.png: not an image" in err and "pipe.png: is a named pipe" in err
    status, out, err = run_cli(["evaluate", "--checkpoint", str(world["checkpoint"]), *_folder(data), "--episodes", "2",
                                "--json"])
    assert status == 0 and "skipped 2 of 15 image files" in err, err
    assert len(strict_json(out)["skipped"]) == 2
    status, out, err = run_cli(["predict", "--checkpoint", str(world["checkpoint"]), "--support", str(data), "--query",
                                str(world["query"]), "--device", "cpu", "--json"])
    assert status == 0, err
    skipped = strict_json(out)["skipped"]  # predict also drops a support image that shows no symbol
    assert len(skipped) == 3 and any("empty.png: the image looks blank" in s for s in skipped)


def test_json_output_never_holds_nan():
    from fewshot.cli_args import ArgumentError, dumps_json

    assert json.loads(dumps_json({"accuracy": 0.5})) == {"accuracy": 0.5}
    with pytest.raises(ArgumentError, match="not a finite number"):
        dumps_json({"accuracy": float("nan")})


@pytest.mark.parametrize("writer", ["pickle-0", "pickle-2", "pickle-4", "pickle-5", "torch.save", "behind-a-prefix"])
def test_no_code_from_a_pickled_checkpoint_ever_runs(world, tmp_path, writer):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    if writer == "torch.save":
        torch.save({"model": Payload()}, path)
    elif writer == "behind-a-prefix":  # a safetensors-like length, then a pickle
        blob = pickle.dumps({"model": Payload()}, protocol=4)
        path.write_bytes(len(blob).to_bytes(8, "little") + blob)
    else:
        path.write_bytes(pickle.dumps({"model": Payload()}, protocol=int(writer[-1])))
    for argv in (_predict(world, path), ["info", "--checkpoint", str(path)], _resume(world, path)):
        error_line(*run_cli(argv))
    assert not marker.exists()
