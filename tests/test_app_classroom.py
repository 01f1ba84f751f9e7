"""The classroom pages with ``streamlit.testing.v1.AppTest`` (no browser): sharing a task on the Build page, the
Watch meta-training page, and the Embedding explorer's neighbours, wrong queries and image view.

Checkpoints are small untrained models in a temporary folder, as in ``tests/test_app.py``.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import fewshot
from fewshot import live
from fewshot.symbols import synthetic_symbol

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")


@pytest.fixture(autouse=True)
def run_app_py_every_time(monkeypatch):
    """AppTest runs ``app.py`` on every rerun, as the server does (see tests/test_app.py for why)."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    for method in ("protonet", "maml"):
        kwargs = {"n_way": 5, "inner_steps": 1, "inner_lr": 0.4} if method == "maml" else {}
        fewshot.save_checkpoint(root / "lake" / f"{method}.safetensors", fewshot.build_model(method, **kwargs).eval(),
                                method=method, metadata={"protocol": "lake", "image_size": 28, "n_way": 5,
                                                         "n_shot": 1, "n_query": 5})
    return root


@pytest.fixture()
def env(monkeypatch, checkpoint_dir, tmp_path):
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_DIR", str(checkpoint_dir))
    monkeypatch.setenv("FEWSHOT_DATA_DIR", str(tmp_path / "no-omniglot-here"))
    return monkeypatch


@pytest.fixture()
def with_data(env, omniglot_dir, omniglot_cache):
    env.setenv("FEWSHOT_DATA_DIR", str(omniglot_dir))
    env.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
    return env


def app(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption]
    parts += [e.value for kind in (at.error, at.warning, at.info, at.success) for e in kind]
    return "\n".join(str(p) for p in parts)


SHAPES = ["circle", "cross", "triangle"]


def shared_task() -> fewshot.SharedTask:
    support = [[fewshot.TaskImage(synthetic_symbol(kind, seed=s), f"{kind} {s + 1}") for s in range(2)]
               for kind in SHAPES]
    queries = [fewshot.TaskImage(synthetic_symbol(kind, seed=50), f"which {kind}?") for kind in SHAPES]
    return fewshot.SharedTask(["Circle", "Cross", "Triangle"], support, queries, [0, None, 2], n_shot=2)


# ---------------------------------------------------------------------------------------------------- Build: share


def upload_task_file(at: AppTest, name: str, data: bytes) -> None:
    uploader = next(u for u in at.get("file_uploader") if u.key.startswith("task_file_"))
    uploader.upload(name, data, "application/zip").run()
    assert not at.exception, at.exception


def test_a_task_file_becomes_the_task(env):
    at = app("build")
    upload_task_file(at, "lesson.zip", fewshot.write_task(shared_task()))
    assert "Loaded lesson.zip: 3 classes, 6 examples, 3 queries" in texts(at)
    store = at.session_state["task"]
    assert store.mode == "drawn" and store.n_way == 3 and store.n_shot == 2
    assert store.names[:3] == ["Circle", "Cross", "Triangle"]
    assert [at.text_input(key=f"class_name_{i}").value for i in range(3)] == ["Circle", "Cross", "Triangle"]
    support = [[u.png for u in store.uploads["s" + str(i)].values()] for i in range(3)]
    assert support == [[im.png for im in examples] for examples in shared_task().support]
    queries = list(store.uploads["q"].items())
    assert [u.name for _, u in queries] == ["which circle?", "which cross?", "which triangle?"]
    assert [store.truth[f"up:{uid}"] for uid, _ in queries] == [0, None, 2]
    assert "Not ready to share" not in texts(at)  # the loaded task can be downloaded again


def test_a_bad_task_file_keeps_the_task(env):
    at = app("build")
    upload_task_file(at, "lesson.zip", fewshot.write_task(shared_task()))
    before = at.session_state["task"].names[:3]
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("cat/1.png", synthetic_symbol("circle"))
        z.writestr("dog/1.png", synthetic_symbol("cross"))
        z.writestr("../../etc/cron.d/x.png", synthetic_symbol("bar"))
    upload_task_file(at, "evil.zip", evil.getvalue())
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "evil.zip was not loaded" in errors[0] and "climbs out" in errors[0]
    assert "Your task is unchanged" in errors[0]
    assert at.session_state["task"].names[:3] == before and at.session_state["task"].n_way == 3
    upload_task_file(at, "notes.zip", b"not a zip at all")
    assert any("not a zip file" in e.value for e in at.error)
    assert at.session_state["task"].names[:3] == before


def test_a_zip_of_class_folders_loads_as_support(env):
    folders = io.BytesIO()
    with zipfile.ZipFile(folders, "w") as z:
        for kind in SHAPES:
            z.writestr(f"symbols/{kind}/1.png", synthetic_symbol(kind, seed=1))
    at = app("build")
    upload_task_file(at, "symbols.zip", folders.getvalue())
    store = at.session_state["task"]
    assert store.names[:3] == SHAPES and store.n_way == 3 and not store.uploads.get("q")


def test_an_incomplete_task_says_why_it_cannot_be_shared(env):
    at = app("build")  # a fresh session: empty canvases, no examples
    assert "Not ready to share yet: the task: class 'Class 1' has 0 examples" in texts(at)


# ---------------------------------------------------------------------------------------------------- live training


def wait_until_done(at: AppTest, timeout: float = 240) -> fewshot.LiveRun:
    run = at.session_state["live_run"]
    assert run.join(timeout), "the run did not end in time"
    at.run()
    assert not at.exception, at.exception
    return run


def test_watch_a_short_run_and_use_its_model(with_data):
    at = app("train_live")
    assert "Choose the settings" in texts(at)
    at.number_input(key="live_episodes").set_value(20)
    at.slider(key="live_eval_every").set_value(10)
    at.button[0].click().run()  # the form's Start button is the page's first button
    assert not at.exception, at.exception
    assert at.button(key="live_stop") is not None
    run = wait_until_done(at)
    snap = run.snapshot()
    assert snap.state == "finished" and snap.step == 20 and [s for s, _, _ in snap.eval_accuracies] == [0, 10, 20]
    assert "Accuracy on never-seen characters" in texts(at) and "finished: episode 20 of 20" in str(
        [p.proto.text for p in at.get("progress")])
    model_id = at.session_state["live_kept"][id(run)]
    assert model_id.startswith("session:") and "kept for this session" in texts(at)
    at.button(key="live_use").click().run()
    assert at.session_state["ckpt_protonet"] == model_id
    at.switch_page("pages/build.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ckpt_protonet").value == model_id  # the sidebar offers and shows it
    assert any("trained in this session, not saved" in c.value for c in at.sidebar.caption)
    at.button(key="example_synthetic").click().run()
    at.button(key="classify").click().run()
    assert "Prediction for Query 1 (Prototypical Networks):" in texts(at)
    for page in ("embeddings", "inside", "human", "home"):  # every page takes the session's model
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
    at.switch_page("pages/benchmark.py").run()
    at.number_input(key="bench_episodes").set_value(2)
    at.multiselect(key="bench_methods").set_value(["protonet"])
    [b for b in at.button if b.label == "Run benchmark"][0].click().run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value["checkpoint"][0].startswith("this session/Prototypical Networks, 5-way 1-shot")


def test_stop_a_run(with_data):
    at = app("train_live")
    at.number_input(key="live_episodes").set_value(2000)
    at.button[0].click().run()
    run = at.session_state["live_run"]
    deadline = time.monotonic() + 60
    while run.snapshot().step < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    at.button(key="live_stop").click().run()
    run = wait_until_done(at)
    assert run.snapshot().state == "stopped" and run.result is not None
    assert "kept for this session" in texts(at)


def test_a_full_lab_says_so(with_data, monkeypatch):
    monkeypatch.setattr(live, "MAX_RUNS", 1)
    train_set, test_set = fewshot.SyntheticDataset(12, 10, 28), fewshot.SyntheticDataset(12, 10, 28, seed=1)
    other = fewshot.LiveRun(fewshot.LiveConfig(episodes=2000, n_way=3), train_set, test_set, owner="someone else")
    other.start()
    try:
        at = app("train_live")
        at.button[0].click().run()
        assert not at.exception, at.exception
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "the lab is full" in errors[0]
        assert "live_run" not in at.session_state
    finally:
        other.stop()
        other.join(60)


def test_the_page_without_omniglot_explains(env):
    at = app("train_live")
    assert any("FEWSHOT_DATA_DIR" in w.value for w in at.warning)


# ---------------------------------------------------------------------------------------------------- embeddings


def figure(at: AppTest, index: int = 0) -> dict:
    import json

    return json.loads(at.get("plotly_chart")[index].proto.spec)


def test_embeddings_mark_a_wrong_query_with_the_class_it_was_taken_for(env):
    base = shared_task()
    # query 1 says "Circle" but is a copy of the only Cross example: any ProtoNet takes it for Cross (distance 0)
    task = fewshot.SharedTask(base.class_names, [examples[:1] for examples in base.support],
                              [fewshot.TaskImage(base.support[1][0].png, "looks like a cross")], [0], n_shot=1)
    at = app("build")
    upload_task_file(at, "tricky.zip", fewshot.write_task(task))
    at.switch_page("pages/embeddings.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="emb_method").set_value("protonet").run()
    assert "gets 0 of the 1 queries with a known class right; the 1 wrong one(s) are crossed in red" in texts(at)
    traces = figure(at)["data"]
    crossed = [t for t in traces if t.get("name") == "wrong: taken for another class"]
    assert len(crossed) == 1 and crossed[0]["hovertext"] == ["Query 1: taken for Cross"]


def test_embeddings_images_at_their_positions_and_a_points_neighbours(env):
    at = app("embeddings")  # a fresh session: the example task (five synthetic symbols, one query each)
    at.selectbox(key="emb_method").set_value("protonet").run()
    at.toggle(key="emb_images").set_value(True).run()
    assert not at.exception, at.exception
    layout_images = figure(at)["layout"]["images"]
    assert len(layout_images) == 10 and all(im["source"].startswith("data:image/png;base64,") for im in layout_images)
    at.slider(key="emb_k").set_value(3).run()
    at.selectbox(key="emb_point").set_value(0).run()
    assert not at.exception, at.exception
    text = texts(at)
    assert "Its 3 nearest neighbours in the model's 64-d embedding space** (euclidean distance" in text
    assert "of these 3 are also among its 3 nearest points" in text


def test_embeddings_on_omniglot_with_maml(with_data):
    at = app("embeddings")
    at.selectbox(key="emb_method").set_value("maml").run()
    at.selectbox(key="emb_point").set_value(1).run()
    assert not at.exception, at.exception
    text = texts(at)
    assert "nearest neighbours in the model's" in text


def session_models_max() -> int:
    from pages.lab import session_models

    return session_models.MAX_KEPT


def test_a_session_keeps_its_last_few_models():
    def script():
        import streamlit as st

        import fewshot
        from pages.lab import session_models

        if "kept" not in st.session_state:
            model = fewshot.build_model("protonet", hidden=8)
            st.session_state["kept"] = [session_models.add(fewshot.LiveResult(model, "protonet", k, {}), "run")
                                        for k in range(session_models.MAX_KEPT + 2)]
        st.write(" | ".join(session_models.ids("protonet")))

    at = AppTest.from_function(script).run()
    assert not at.exception, at.exception
    kept = at.session_state["kept"]
    assert kept == ["session:run"] + [f"session:run #{n}" for n in range(2, session_models_max() + 3)]
    assert at.markdown[0].value == " | ".join(kept[2:])  # the oldest two were let go


def test_a_photo_task_file_switches_to_photos_and_keeps_the_drawn_task(env):
    from fewshot.photo import synthetic_photo

    photos = fewshot.SharedTask(["Ball", "Mug"], [[fewshot.TaskImage(synthetic_photo("ball", 1), "ball.jpg")],
                                                  [fewshot.TaskImage(synthetic_photo("mug", 2), "mug.jpg")]],
                                [fewshot.TaskImage(synthetic_photo("mug", 3), "which.jpg")], [1], n_shot=1,
                                mode="photo")
    at = app("build")
    at.button(key="example_synthetic").click().run()  # a drawn task first: it must survive
    drawn_before = [u.png for u in at.session_state["task"].uploads["s0"].values()]
    upload_task_file(at, "photos.zip", fewshot.write_task(photos))
    store = at.session_state["task"]
    assert store.mode == "photo" and at.radio(key="task_mode").value == "photo"
    assert [u.name for u in store.uploads["p1"].values()] == ["mug.jpg"]
    assert all(u.png.startswith(b"\x89PNG") for slot in ("p0", "p1", "pq") for u in store.uploads[slot].values())
    assert [u.png for u in store.uploads["s0"].values()] == drawn_before
    assert "Not ready to share" not in texts(at)


def test_a_proto_maml_run_becomes_the_sessions_first_order_maml(with_data):
    at = app("train_live")
    at.selectbox(key="live_method").set_value("protomaml")
    at.number_input(key="live_episodes").set_value(10)
    at.button[0].click().run()
    run = wait_until_done(at)
    assert run.config.method == "fomaml" and run.config.proto_head and run.snapshot().state == "finished"
    model_id = at.session_state["live_kept"][id(run)]
    assert model_id.startswith("session:Proto-MAML (first order), 5-way 1-shot, 10 episodes from scratch")
    at.button(key="live_use").click().run()
    at.switch_page("pages/build.py").run()
    at.button(key="example_synthetic").click().run()
    at.selectbox(key="build_method").set_value("fomaml")
    at.button(key="classify").click().run()
    assert not at.exception, at.exception
    assert "Prediction for Query 5 (First-order MAML):" in texts(at)


def test_a_t_sne_map_on_the_page(with_data):
    at = app("train_live")
    at.radio(key="live_projection").set_value("tsne")
    at.number_input(key="live_episodes").set_value(10)
    at.button[0].click().run()
    run = wait_until_done(at)
    assert run.config.map_projection == "tsne" and run.snapshot().map_xy.shape == (60, 2)
    assert "drawings (t-SNE), after episode 10" in str(figure_titles(at))


def figure_titles(at: AppTest) -> list[str]:
    import json

    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
