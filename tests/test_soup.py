"""``fewshot soup``: the uniform weight average of runs fine-tuned from one model (Wortsman et al. 2022)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from fewshot import build_model, load_checkpoint, read_checkpoint_info
from fewshot.cli import main
from fewshot.soup import average_state_dicts

REPO = Path(__file__).resolve().parents[1]


def run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def runs(pattern_folder, tmp_path_factory):
    """Three tiny ProtoNet runs on one folder dataset, two from one start (seed 0's weights), one another size."""
    folder, out = pattern_folder(5, 6, 28), tmp_path_factory.mktemp("soup")

    def train(path: Path, *extra) -> None:
        assert main([str(a) for a in ["train", "--method", "protonet", "--dataset", "folder", "--data-dir", folder,
                                      "--n-way", "3", "--n-query", "2", "--val-every", "0", "--device", "cpu",
                                      "--quiet", "--out", path, *extra]]) == 0

    paths = {"start": out / "start.safetensors", "a": out / "a.safetensors", "b": out / "b.safetensors",
             "wide": out / "wide.safetensors"}
    train(paths["start"], "--hidden", "8", "--episodes", "2")
    train(paths["a"], "--hidden", "8", "--episodes", "3", "--seed", "1", "--init-backbone", paths["start"])
    train(paths["b"], "--hidden", "8", "--episodes", "3", "--seed", "2", "--augment", "--init-backbone",
          paths["start"])
    train(paths["wide"], "--hidden", "16", "--episodes", "1")
    paths["folder"] = folder
    return paths


def test_the_average_is_the_mean_of_the_weights():
    torch.manual_seed(0)
    models = [build_model("protonet", hidden=4) for _ in range(3)]
    for m in models:  # BatchNorm statistics differ too
        m.train()
        m.backbone(torch.randn(6, 1, 28, 28))
    averaged = average_state_dicts(models)
    for name, value in models[0].state_dict().items():
        if value.is_floating_point():
            expected = sum(m.state_dict()[name].double() for m in models) / 3
            assert torch.allclose(averaged[name].double(), expected, atol=1e-7), name
            if not torch.equal(models[1].state_dict()[name], value):
                assert not torch.equal(averaged[name], value), f"{name}: not just the first model's"
        else:
            assert torch.equal(averaged[name], value), name


def test_a_soup_of_one_model_with_itself_is_that_model(runs, capsys, tmp_path):
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(Path(runs["a"]).read_bytes())
    code, _, err = run(["soup", "--checkpoints", runs["a"], copy, "--out", tmp_path / "s.safetensors"], capsys)
    assert code == 0, err
    soup, _ = load_checkpoint(tmp_path / "s.safetensors")
    model, _ = load_checkpoint(runs["a"])
    for (name, x), y in zip(model.state_dict().items(), soup.state_dict().values()):
        assert torch.equal(x, y), name


def test_soup_writes_a_model_that_records_its_ingredients_and_evaluates(runs, capsys, tmp_path):
    out = tmp_path / "soup.safetensors"
    code, _, err = run(["soup", "--checkpoints", runs["a"], runs["b"], "--out", out], capsys)
    assert code == 0 and "average of 2 protonet models" in err, err
    meta = read_checkpoint_info(out)
    assert [Path(i["checkpoint"]) for i in meta["soup"]] == [runs["a"], runs["b"]]
    assert [(i["steps_done"], Path(i["init_backbone"]).name) for i in meta["soup"]] == [(3, "start.safetensors")] * 2
    assert meta["image_size"] == read_checkpoint_info(runs["a"])["image_size"] and "train_state" not in meta
    soup, _ = load_checkpoint(out)
    a, b = load_checkpoint(runs["a"])[0], load_checkpoint(runs["b"])[0]
    for w, value in soup.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, (a.state_dict()[w] + b.state_dict()[w]) / 2, atol=1e-6), w
    code, out_text, err = run(["evaluate", "--checkpoint", out, "--dataset", "folder", "--data-dir", runs["folder"],
                               "--n-way", "3", "--n-query", "2", "--episodes", "3", "--device", "cpu"], capsys)
    assert code == 0 and "accuracy" in out_text.lower(), err
    # the shipped-checkpoints table sums the ingredients' steps and seconds and shows their commands
    spec = importlib.util.spec_from_file_location("list_checkpoints", REPO / "benchmarks" / "list_checkpoints.py")
    listing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(listing)
    steps, seconds, command = listing.row_facts(meta)
    assert seconds == pytest.approx(sum(i["seconds"] for i in meta["soup"]))
    assert steps == 6 and command.count("(backbone initialised from start.safetensors)") == 2
    assert command.count(" ; the average of ") == 2


@pytest.mark.parametrize("which, fragment", [
    (["a"], "a soup needs at least two checkpoints"),
    (["a", "a"], "names one file twice"),
    (["a", "wide"], "built differently (hidden)"),
])
def test_what_cannot_be_averaged_is_one_error_line(runs, capsys, tmp_path, which, fragment):
    out = tmp_path / "x.safetensors"
    code, out_text, err = run(["soup", "--checkpoints", *(runs[w] for w in which), "--out", out], capsys)
    assert code == 2 and out_text == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert not out.exists()


def test_other_methods_or_inputs_are_refused(runs, capsys, tmp_path):
    matching = tmp_path / "m.safetensors"
    assert main(["train", "--method", "matching", "--dataset", "folder", "--data-dir", str(runs["folder"]),
                 "--n-way", "3", "--n-query", "2", "--hidden", "8", "--episodes", "1", "--val-every", "0", "--device",
                 "cpu", "--quiet", "--out", str(matching)]) == 0
    code, _, err = run(["soup", "--checkpoints", runs["a"], matching, "--out", tmp_path / "x.safetensors"], capsys)
    assert code == 2 and "average models of one method" in err, err
    big = tmp_path / "big.safetensors"
    assert main(["train", "--method", "protonet", "--dataset", "folder", "--data-dir", str(runs["folder"]),
                 "--n-way", "3", "--n-query", "2", "--hidden", "8", "--image-size", "32", "--episodes", "1",
                 "--val-every", "0", "--device", "cpu", "--quiet", "--out", str(big)]) == 0
    code, _, err = run(["soup", "--checkpoints", runs["a"], big, "--out", tmp_path / "x.safetensors"], capsys)
    assert code == 2 and "expect different input (image_size" in err, err
