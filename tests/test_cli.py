"""``python -m fewshot`` end to end on the real Omniglot: train -> evaluate -> info -> predict, and user errors.

Each command runs in a subprocess, as a user would run it, with the session's Omniglot cache so
that nothing is decoded twice. User errors must exit with status 2 and one ``error:`` line, never
a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cli_env(omniglot_cache: Path, omniglot_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "FEWSHOT_CACHE_DIR": str(omniglot_cache),
        "FEWSHOT_DATA_DIR": str(omniglot_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        # small convolutions: one thread is as fast, and far faster on a busy shared runner
        "OMP_NUM_THREADS": "1",
    })
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


def fewshot_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fewshot", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, fragment: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def protonet_checkpoint(cli_env, workdir) -> Path:
    out = workdir / "tmp" / "p.safetensors"
    result = fewshot_cli(cli_env, workdir, "train", "--method", "protonet", "--protocol", "lake", "--episodes", 30,
                         "--n-way", 5, "--n-query", 5, "--val-every", 0, "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"saved {out} after 30 steps" in result.stderr
    return out


@pytest.fixture(scope="module")
def maml_checkpoint(cli_env, workdir) -> Path:
    out = workdir / "maml.safetensors"
    result = fewshot_cli(cli_env, workdir, "train", "--method", "maml", "--protocol", "lake", "--episodes", 2,
                         "--n-way", 5, "--n-query", 2, "--hidden", 16, "--val-every", 0, "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def support_and_queries(omniglot_dir, workdir) -> tuple[Path, Path, dict[str, str]]:
    """5 evaluation characters x 1 drawing as support folders; 3 other drawers of each as query files."""
    support, queries, truth = workdir / "support", workdir / "queries", {}
    with zipfile.ZipFile(omniglot_dir / "images_evaluation.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        characters = sorted({n.rsplit("/", 1)[0] for n in names})[::130][:5]  # 5 different alphabets
        for character in characters:
            label = character.split("/", 1)[1].replace("/", "_")  # Alphabet_characterNN
            drawings = sorted(n for n in names if n.startswith(character + "/"))
            (support / label).mkdir(parents=True)
            (support / label / Path(drawings[0]).name).write_bytes(archive.read(drawings[0]))
            queries.mkdir(exist_ok=True)
            for drawing in drawings[1:4]:
                path = queries / Path(drawing).name
                path.write_bytes(archive.read(drawing))
                truth[str(path)] = label
    assert len({label.split("_character")[0] for label in truth.values()}) == 5
    return support, queries, truth


def test_train_writes_a_loadable_checkpoint(protonet_checkpoint):
    from fewshot import load_checkpoint

    model, info = load_checkpoint(protonet_checkpoint)
    assert info["method"] == "protonet" and info["steps_done"] == 30
    assert info.train_state is not None and info.train_state.step == 30  # resumable


def test_evaluate_json(cli_env, workdir, protonet_checkpoint):
    result = fewshot_cli(cli_env, workdir, "evaluate", "--checkpoint", protonet_checkpoint, "--protocol", "lake",
                         "--n-way", 5, "--n-shot", 1, "--n-query", 5, "--episodes", 60, "--seed", 1, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("accuracy", "ci95", "episodes", "n_way", "n_shot", "n_query", "method", "protocol"):
        assert key in report
    assert (report["episodes"], report["n_way"], report["n_shot"], report["n_query"]) == (60, 5, 1, 5)
    assert report["method"] == "protonet" and report["protocol"] == "lake" and report["split"] == "test"
    # 30 steps reach ~0.65 on unseen alphabets (5-way 1-shot); chance is 0.2
    assert report["accuracy"] > 0.5, report
    assert 0.0 < report["ci95"] < 0.1


def test_info_json_and_text(cli_env, workdir, protonet_checkpoint):
    result = fewshot_cli(cli_env, workdir, "info", "--checkpoint", protonet_checkpoint, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["method"] == "protonet" and info["protocol"] == "lake"
    assert info["n_way"] == 5 and info["n_shot"] == 1 and info["image_size"] == 28
    assert "train" in info["command"] and "--method protonet" in info["command"] and "--episodes 30" in info["command"]
    assert info["train_config"]["episodes"] == 30 and "train_state" not in info
    text = fewshot_cli(cli_env, workdir, "info", "--checkpoint", protonet_checkpoint)
    assert text.returncode == 0 and "method: protonet" in text.stdout and "protocol: lake" in text.stdout


def test_predict_json(cli_env, workdir, protonet_checkpoint, support_and_queries):
    support, queries, truth = support_and_queries
    one_file = sorted(truth)[0]
    result = fewshot_cli(cli_env, workdir, "predict", "--checkpoint", protonet_checkpoint, "--support", support,
                         "--query", queries, one_file, "--json")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["query"] for p in predictions] == sorted(truth) + [one_file]  # folder contents, then the file
    classes = sorted(p.name for p in support.iterdir())
    for p in predictions:
        assert sorted(p["probabilities"]) == classes
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    correct = sum(p["label"] == truth[p["query"]] for p in predictions[:-1])
    assert correct >= 8, f"{correct}/15 correct (chance: 3)"  # measured: 13/15


# --- user errors: status 2, one line, no traceback ---------------------------------------------------


def test_missing_checkpoint(cli_env, workdir):
    assert_user_error(fewshot_cli(cli_env, workdir, "info", "--checkpoint", workdir / "nope.safetensors"),
                      "does not exist")


def test_pickle_checkpoint(cli_env, workdir):
    path = workdir / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    assert_user_error(fewshot_cli(cli_env, workdir, "evaluate", "--checkpoint", path, "--protocol", "lake",
                                  "--episodes", 1), "pickle")


def test_20_way_evaluation_of_a_5_way_maml(cli_env, workdir, maml_checkpoint):
    line = assert_user_error(fewshot_cli(cli_env, workdir, "evaluate", "--checkpoint", maml_checkpoint, "--protocol",
                                         "lake", "--n-way", 20, "--episodes", 1), "5-way output head")
    assert "--n-way 5" in line


def test_more_shots_and_queries_than_images(cli_env, workdir, protonet_checkpoint):
    assert_user_error(fewshot_cli(cli_env, workdir, "evaluate", "--checkpoint", protonet_checkpoint, "--protocol",
                                  "lake", "--n-shot", 5, "--n-query", 16, "--episodes", 1),
                      "has 20 images but n_shot + n_query = 21")


def test_support_folder_with_one_class(cli_env, workdir, protonet_checkpoint, support_and_queries):
    support, queries, truth = support_and_queries
    lonely = workdir / "one-class"
    (lonely / "only").mkdir(parents=True)
    first = next((support / sorted(p.name for p in support.iterdir())[0]).iterdir())
    (lonely / "only" / first.name).write_bytes(first.read_bytes())
    assert_user_error(fewshot_cli(cli_env, workdir, "predict", "--checkpoint", protonet_checkpoint, "--support", lonely,
                                  "--query", sorted(truth)[0]), "at least 2 class")


def test_query_that_is_not_an_image(cli_env, workdir, protonet_checkpoint, support_and_queries):
    support, _, _ = support_and_queries
    bogus = workdir / "query.png"
    bogus.write_text("not an image at all\n")
    result = fewshot_cli(cli_env, workdir, "predict", "--checkpoint", protonet_checkpoint, "--support", support,
                         "--query", bogus)
    assert_user_error(result, "not an image")


def test_missing_data_dir(cli_env, workdir, protonet_checkpoint):
    empty = workdir / "no-data"
    empty.mkdir()
    result = fewshot_cli(cli_env, workdir, "evaluate", "--checkpoint", protonet_checkpoint, "--protocol", "lake",
                         "--data-dir", empty, "--episodes", 1)
    line = assert_user_error(result, "Omniglot not found")
    assert str(empty) in line


def test_train_checkpoint_inner_is_recorded_and_loads(cli_env, workdir):
    """--checkpoint-inner reaches MAML and its checkpoint (memory-flat inner loop, same meta-gradient)."""
    from fewshot import load_checkpoint

    out = workdir / "maml-ck.safetensors"
    result = fewshot_cli(cli_env, workdir, "train", "--method", "maml", "--protocol", "lake", "--episodes", 1,
                         "--n-way", 5, "--n-query", 1, "--hidden", 8, "--inner-steps", 2, "--checkpoint-inner",
                         "--val-every", 0, "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr
    model, info = load_checkpoint(out)
    assert info["method_kwargs"]["checkpoint_inner"] is True and model.checkpoint_inner
