"""Lake et al.'s one-shot task: one alphabet per episode, support and query by different drawers."""

from __future__ import annotations

import json
import re
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from fewshot import SyntheticDataset, load_omniglot
from fewshot.cli import main
from fewshot.tasks import AlphabetTaskSampler, TaskSampler


@pytest.fixture(scope="module")
def evaluation(omniglot_cache, omniglot_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
        return load_omniglot("lake", "test", data_dir=omniglot_dir)


def test_drawers_are_the_numbers_in_the_file_names(evaluation, omniglot_dir):
    with zipfile.ZipFile(omniglot_dir / "images_evaluation.zip") as archive:
        names = [n for n in archive.namelist() if n.endswith(".png")]
    by_character: dict[str, list[int]] = {}
    for name in names:
        _, alphabet, character, file = name.split("/")
        by_character.setdefault(f"{alphabet}/{character}", []).append(int(re.fullmatch(r"\d+_(\d+)\.png", file)[1]))
    labels = evaluation.get_labels()
    for c, class_name in enumerate(evaluation.class_names):
        ours = [d for d, label in zip(evaluation.drawers, labels) if label == c]
        assert ours == sorted(by_character[class_name.rsplit("/", 1)[0]]), class_name


def alphabet(name: str) -> str:
    return name.split("/")[0]


def test_episodes_hold_one_alphabet_and_disjoint_drawers(evaluation):
    sampler = AlphabetTaskSampler(evaluation, 20, 1, 3, seed=0)
    labels, drawers = torch.tensor(evaluation.get_labels()), torch.tensor(evaluation.drawers)
    seen = set()
    for _ in range(60):
        indices, class_ids, name, chosen = sampler.sample_episode()
        assert indices.shape == (20, 4) and len(set(class_ids.tolist())) == 20
        assert {alphabet(evaluation.class_names[c]) for c in class_ids.tolist()} == {name}
        assert torch.equal(labels[indices], class_ids[:, None].expand(20, 4)), "each row is its character's images"
        assert torch.equal(drawers[indices], chosen.expand(20, 4)), "column j is drawer j's image of every character"
        support, query = set(drawers[indices[:, :1]].flatten().tolist()), set(drawers[indices[:, 1:]].flatten().tolist())
        assert len(support) == 1 and len(query) == 3 and not support & query
        seen.add(name)
    assert len(seen) > 10, "episodes come from many alphabets"


def test_tasks_are_those_episodes_and_seeded(evaluation):
    a, b = AlphabetTaskSampler(evaluation, 5, 1, 1, seed=4), AlphabetTaskSampler(evaluation, 5, 1, 1, seed=4)
    indices, class_ids, _, _ = a.sample_episode()
    task = b.sample_task()
    assert torch.equal(task.class_ids, class_ids)
    assert torch.equal(task.support_images, evaluation.get_images(indices[:, 0]))
    assert torch.equal(task.query_images, evaluation.get_images(indices[:, 1]))
    assert task.support_labels.tolist() == task.query_labels.tolist() == list(range(5))
    assert not torch.equal(AlphabetTaskSampler(evaluation, 5, seed=5).sample_task().support_images,
                           task.support_images)


def test_one_chosen_alphabet(evaluation):
    sampler = AlphabetTaskSampler(evaluation, 20, seed=1, alphabet="Angelic")
    for _ in range(5):
        _, class_ids, name, _ = sampler.sample_episode()
        assert name == "Angelic" and {alphabet(evaluation.class_names[c]) for c in class_ids.tolist()} == {"Angelic"}


def test_rotated_classes_keep_one_rotation_per_episode(omniglot_cache, omniglot_dir, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
    val = load_omniglot("lake", "val", data_dir=omniglot_dir)  # rotations on: an alphabet at 4 rotations
    sampler = AlphabetTaskSampler(val, 10, seed=0)
    for _ in range(20):
        _, class_ids, _, _ = sampler.sample_episode()
        groups = {(n.split("/")[0], n.split("/")[2]) for n in (val.class_names[c] for c in class_ids.tolist())}
        assert len(groups) == 1


@pytest.mark.parametrize("kwargs, fragment", [
    ({"n_way": 48}, "no alphabet in this split has 48 characters (the largest, 'Malayalam', has 47)"),
    ({"n_way": 21, "alphabet": "Angelic"}, "alphabet 'Angelic' has 20 characters but n_way = 21"),
    ({"n_way": 5, "alphabet": "Klingon"}, "no alphabet 'Klingon'"),
    ({"n_way": 5, "n_shot": 5, "n_query": 16}, "n_shot + n_query = 21 different drawers"),
    ({"n_way": 5, "n_query": 0}, "n_query must be an integer >= 1"),
])
def test_impossible_requests_say_what_fits(evaluation, kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        AlphabetTaskSampler(evaluation, **kwargs)


def test_a_dataset_without_drawers_is_refused():
    with pytest.raises(ValueError, match="need Omniglot"):
        AlphabetTaskSampler(SyntheticDataset(8, 10), 5)


def run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, omniglot_cache, omniglot_dir) -> str:
    out = str(tmp_path_factory.mktemp("within") / "p.safetensors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
        assert main(["train", "--method", "protonet", "--protocol", "lake", "--data-dir", str(omniglot_dir),
                     "--episodes", "2", "--hidden", "8", "--val-every", "0", "--device", "cpu", "--quiet",
                     "--out", out]) == 0
    return out


def evaluate_args(checkpoint: str, omniglot_dir, *extra: str) -> list[str]:
    return ["evaluate", "--checkpoint", checkpoint, "--data-dir", str(omniglot_dir), "--device", "cpu",
            "--episodes", "4", "--n-shot", "1", "--n-query", "1", *extra]


def test_evaluate_within_alphabet_reports_it(checkpoint, omniglot_dir, omniglot_cache, monkeypatch, capsys):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
    code, out, err = run(evaluate_args(checkpoint, omniglot_dir, "--protocol", "lake", "--within-alphabet",
                                       "--n-way", "20", "--json"), capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["within_alphabet"] is True and report["n_way"] == 20 and report["episodes"] == 4
    assert 0 <= report["accuracy"] <= 1


@pytest.mark.parametrize("extra, fragment", [
    (["--protocol", "lake", "--within-alphabet", "--n-way", "48"], "no alphabet in this split has 48 characters"),
    (["--protocol", "lake", "--within-alphabet", "--n-way", "21", "--alphabet", "Angelic"],
     "alphabet 'Angelic' has 20 characters"),
    (["--protocol", "lake", "--within-alphabet", "--n-way", "5", "--n-query", "20"], "different drawers"),
    (["--protocol", "vinyals", "--within-alphabet"], "--protocol lake"),
    (["--protocol", "lake", "--alphabet", "Angelic"], "--alphabet applies to --within-alphabet"),
])
def test_bad_within_alphabet_input_is_one_error_line(checkpoint, omniglot_dir, omniglot_cache, monkeypatch, capsys,
                                                     extra, fragment):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
    code, out, err = run(evaluate_args(checkpoint, omniglot_dir, *extra), capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


# --- training on alphabet-grouped episodes (--alphabet-groups) ------------------------------------------------------


def group(name: str) -> tuple[str, str]:
    parts = name.split("/")
    return parts[0], parts[2] if len(parts) > 2 else "rot000"


def test_grouped_tasks_come_in_alphabet_blocks(evaluation):
    sampler = TaskSampler(evaluation, 20, 1, 2, seed=0, alphabet_groups=8)
    seen_labels = []
    for _ in range(40):
        indices, class_ids = sampler.sample_indices()
        assert len(set(class_ids.tolist())) == 20
        blocks = Counter(group(evaluation.class_names[c]) for c in class_ids.tolist())
        assert max(blocks.values()) <= 8
        # blocks are as large as their alphabets allow: at most one block is cut short by n_way (the last one), and any
        # other short block took every character of its alphabet
        sizes = {g: sum(1 for n in evaluation.class_names if group(n) == g) for g in blocks}
        assert sum(1 for g, k in blocks.items() if k < min(8, sizes[g])) <= 1
        assert len(blocks) <= 20 // 2, "look-alike characters share each task"
        seen_labels.append(class_ids.tolist())
    assert any(ids[:8] != sorted(ids[:8]) for ids in seen_labels), "the blocks are spread over the task's labels"


def test_grouped_tasks_are_seeded_and_the_default_draw_is_unchanged(evaluation):
    a, b = (TaskSampler(evaluation, 10, 1, 1, seed=3, alphabet_groups=5) for _ in range(2))
    assert all(torch.equal(a.sample_indices()[0], b.sample_indices()[0]) for _ in range(5))
    plain, reference = TaskSampler(evaluation, 10, 1, 1, seed=3), torch.Generator().manual_seed(3)
    class_ids = plain.sample_indices()[1]
    assert torch.equal(class_ids, plain.classes[torch.randperm(len(plain.classes), generator=reference)[:10]])
    grouped = TaskSampler(evaluation, 10, 1, 1, seed=3, alphabet_groups=5)
    spread = [len({group(evaluation.class_names[c]) for c in s.sample_indices()[1].tolist()})
              for s in (plain, grouped) for _ in range(20)]
    assert sum(spread[20:]) < sum(spread[:20]), "grouped tasks hold fewer alphabets than uniform ones"


def test_grouping_needs_alphabets_and_blocks_of_two():
    with pytest.raises(ValueError, match="no alphabet"):
        TaskSampler(SyntheticDataset(8, 10), 5, 1, 1, alphabet_groups=3)
    with pytest.raises(ValueError, match="alphabet_groups must be an integer >= 2"):
        TaskSampler(SyntheticDataset(8, 10), 5, 1, 1, alphabet_groups=1)


def train_args(omniglot_dir, out, *extra: str) -> list[str]:
    return ["train", "--method", "protonet", "--protocol", "lake", "--data-dir", str(omniglot_dir), "--n-way", "10",
            "--n-query", "1", "--hidden", "8", "--val-every", "0", "--device", "cpu", "--quiet", "--out", str(out),
            *extra]


def test_train_with_alphabet_groups_records_it_and_resumes(omniglot_dir, omniglot_cache, monkeypatch, capsys,
                                                           tmp_path):
    from fewshot.checkpoints import load_checkpoint
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
    out = tmp_path / "g.safetensors"
    code, _, err = run(train_args(omniglot_dir, out, "--episodes", "2", "--alphabet-groups", "5"), capsys)
    assert code == 0, err
    assert load_checkpoint(out, "cpu")[1].metadata["alphabet_groups"] == 5
    code, _, err = run(train_args(omniglot_dir, out, "--episodes", "3", "--alphabet-groups", "5", "--resume"), capsys)
    assert code == 0 and "after 3 steps" in err, err
    code, out_text, err = run(train_args(omniglot_dir, out, "--episodes", "4", "--resume"), capsys)
    assert code == 2 and out_text == "" and "--alphabet-groups 5" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("extra, fragment", [
    (["--alphabet-groups", "11"], "--alphabet-groups 11: give 2 to --n-way (10)"),
    (["--alphabet-groups", "1"], "--alphabet-groups 1: give 2 to --n-way (10)"),
])
def test_bad_alphabet_groups_are_one_error_line(omniglot_dir, omniglot_cache, monkeypatch, capsys, tmp_path, extra,
                                                fragment):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
    code, out, err = run(train_args(omniglot_dir, tmp_path / "x.safetensors", "--episodes", "1", *extra), capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert not (tmp_path / "x.safetensors").exists()


def test_alphabet_groups_on_a_folder_is_one_error_line(pattern_folder, capsys, tmp_path):
    folder = pattern_folder(4, 4, 28)
    code, out, err = run(["train", "--method", "protonet", "--dataset", "folder", "--data-dir", str(folder),
                          "--n-way", "3", "--episodes", "1", "--alphabet-groups", "2", "--device", "cpu", "--quiet",
                          "--out", str(tmp_path / "f.safetensors")], capsys)
    assert code == 2 and "a folder dataset has none" in err and len(err.strip().splitlines()) == 1, err


# --- the app: Benchmark option and "You vs the model" question type -------------------------------------------------


@pytest.fixture()
def lab(monkeypatch, tmp_path, omniglot_dir, omniglot_cache):
    """The app with one untrained Lake ProtoNet checkpoint and the real Omniglot (as tests/test_app.py sets it up)."""
    from streamlit.runtime.pages_manager import PagesManager

    import fewshot

    original = PagesManager.__init__

    def init(self, *args, **kwargs):  # run app.py (st.navigation) on every rerun, as the server does
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
    torch.manual_seed(0)
    fewshot.save_checkpoint(tmp_path / "lake" / "protonet-5w1s.safetensors", fewshot.build_model("protonet").eval(),
                            method="protonet", metadata={"protocol": "lake", "image_size": 28, "n_way": 5,
                                                         "n_shot": 1, "n_query": 5})
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("FEWSHOT_DATA_DIR", str(omniglot_dir))
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))

    def open_page(page: str):
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
        at.run()
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
        return at

    return open_page


def test_benchmark_page_runs_lake_task(lab):
    at = lab("benchmark")
    at.radio(key="bench_protocol").set_value("lake")
    at.checkbox(key="bench_within").check()
    at.radio(key="bench_way").set_value(20)
    at.number_input(key="bench_episodes").set_value(2)
    at.number_input(key="bench_query").set_value(1)
    at.multiselect(key="bench_methods").set_value(["protonet"])
    [b for b in at.button if b.label == "Run benchmark"][0].click().run()
    assert not at.exception, at.exception
    assert any("one alphabet per episode, two drawers" in h.value for h in at.subheader)
    assert list(at.dataframe[0].value["episodes"]) == [2]
    names = list(at.dataframe[1].value["true class"])  # the inspected episode's queries, "Alphabet NN"
    assert len(names) == 20 and len({n.rsplit(" ", 1)[0] for n in names}) == 1, names
    at.number_input(key="bench_episode").set_value(2).run()
    assert not at.exception, at.exception


def test_benchmark_page_refuses_the_lake_task_on_vinyals(lab):
    at = lab("benchmark")
    at.radio(key="bench_protocol").set_value("vinyals")
    at.checkbox(key="bench_within").check()
    [b for b in at.button if b.label == "Run benchmark"][0].click().run()
    assert not at.exception, at.exception
    assert any("choose the lake protocol" in w.value for w in at.warning)
    assert not at.dataframe


def test_you_vs_the_model_asks_lake_questions(lab):
    at = lab("human")
    at.radio(key="human_way").set_value("lake").run()
    assert not at.exception, at.exception
    game = at.session_state["human_game"]
    assert game["within"] and game["n_way"] == 20
    at.radio(key=f"human_answer_{game['round']}_0").set_value(1)
    at.button(key="human_submit").click().run()
    assert not at.exception, at.exception
    assert at.session_state["human_game"]["answers"], "the answer was recorded"
    assert "Prototypical Networks" in list(at.dataframe[0].value["who"])
