"""The Streamlit lab, page by page, with ``streamlit.testing.v1.AppTest`` (no browser).

Checkpoints are small untrained models written to a temporary folder (``FEWSHOT_CHECKPOINT_DIR``), so these
tests need no training run and no shipped files. Pages that use Omniglot run against the shared data (the
``omniglot_dir`` fixture of conftest.py), and every page is also run with ``FEWSHOT_DATA_DIR`` pointing
nowhere, where the Omniglot pages must explain how to set it.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import streamlit as st
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import fewshot
from fewshot.symbols import synthetic_symbol

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
ALL_METHODS = list(fewshot.METHODS)


@pytest.fixture(autouse=True)
def run_app_py_every_time(monkeypatch):
    """Make AppTest run ``app.py`` on every rerun, as the server does.

    AppTest (streamlit 1.67) resets ``PagesManager.uses_pages_directory`` before each run, and a new
    PagesManager sets it again because a ``pages/`` folder exists; the runner then executes the page file
    alone (multipage v1) and skips ``app.py`` (its ``st.navigation`` call and the shared sidebar). The server
    sets the flag once, to False, when ``st.navigation`` runs. Forcing it to False here gives the server's
    behaviour.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    """One untrained checkpoint per method, in the shipped layout ``lake/<method>-5w1s.safetensors``."""
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    for method in ALL_METHODS:
        kwargs = {"n_way": 5} if method in ("maml", "fomaml", "mann") else {}
        if method == "finetune":
            kwargs = {"n_classes": 20, "finetune_steps": 10}
        if method in ("maml", "fomaml"):
            kwargs.update(inner_steps=1, inner_lr=0.4)
        model = fewshot.build_model(method, **kwargs)
        fewshot.save_checkpoint(root / "lake" / f"{method}-5w1s.safetensors", model.eval(), method=method,
                                metadata={"protocol": "lake", "image_size": 28, "n_way": 5, "n_shot": 1,
                                          "n_query": 5, "val_accuracy": 0.5})
    return root


@pytest.fixture()
def env(monkeypatch, checkpoint_dir, tmp_path):
    """Checkpoints from the fixture; no Omniglot unless a test asks for it."""
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_DIR", str(checkpoint_dir))
    monkeypatch.setenv("FEWSHOT_DATA_DIR", str(tmp_path / "no-omniglot-here"))
    return monkeypatch


@pytest.fixture()
def with_data(env, omniglot_dir, omniglot_cache):
    """The real Omniglot (conftest: a missing folder fails), decoded once per session."""
    env.setenv("FEWSHOT_DATA_DIR", str(omniglot_dir))
    env.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
    return env


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    """Every markdown, caption, alert and dataframe string of the finished run, joined."""
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption]
    parts += [e.value for kind in (at.error, at.warning, at.info, at.success) for e in kind]
    for frame in at.dataframe:
        parts.append(frame.value.to_string())
    return "\n".join(str(p) for p in parts)


def canvas_state(kind: str | None, seed: int = 0) -> dict:
    """What streamlit-drawable-canvas 0.13.0 keeps in session state after a drawing (``None``: an empty canvas)."""
    if kind is None:
        image = Image.new("RGBA", (210, 210), "white")
        objects: list = []
    else:
        image = Image.open(io.BytesIO(synthetic_symbol(kind, seed=seed))).convert("RGBA")
        objects = [{"type": "path", "path": [["M", 10, 10], ["L", 100, 100]]}]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"drawing": {"raw": {"objects": objects, "background": "#FFFFFF"}, "data": url}}


SHAPES = ["circle", "cross", "triangle", "square", "bar"]


def draw_task(at: AppTest, *, query: str = "triangle") -> None:
    """Draw one example of each of five symbols and one query, as a browser would leave the canvases."""
    for i, shape in enumerate(SHAPES):
        at.session_state[f"draw_s{i}_0"] = canvas_state(shape, seed=i)
        at.text_input(key=f"class_name_{i}").set_value(shape)
    at.session_state["draw_q0"] = canvas_state(query, seed=99)
    at.run()
    assert not at.exception, at.exception


def classify_with_every_method(at: AppTest) -> str:
    """Press Classify with "all" methods on the Build page; every method answers Query 1. Returns the page's text."""
    at.selectbox(key="build_method").set_value("all")
    at.button(key="classify").click().run()
    assert not at.exception, at.exception
    out = texts(at)
    for method in ALL_METHODS:
        assert f"Prediction for Query 1 ({fewshot.METHOD_TITLES[method]}):" in out, method
    return out


def test_every_page_renders_without_data(env):
    at = app()
    assert at.title[0].value == "Few-shot learning lab"
    assert "synthetic task" in texts(at)  # the live episode falls back to a built-in task
    for page, title in [("build", "Build a task"), ("maml", "Watch MAML adapt"), ("embeddings", "Embedding explorer"),
                        ("benchmark", "Benchmark"), ("inside", "Inside each method"), ("human", "You vs the model")]:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert at.title[0].value == title
        if page in ("benchmark", "human"):
            assert "FEWSHOT_DATA_DIR" in texts(at)
    # the sidebar (drawn by app.py on every page): a device and a checkpoint per method, with protocol and accuracy
    assert at.sidebar.radio(key="device").value == "cpu"
    assert at.selectbox(key="ckpt_protonet").value == "lake/protonet-5w1s.safetensors"
    assert "protocol **lake**" in "\n".join(c.value for c in at.sidebar.caption)


def test_the_sidebar_shows_the_accuracies_measured_beside_the_checkpoints(env, tmp_path, checkpoint_dir):
    import json
    import shutil

    root = tmp_path / "checkpoints"
    shutil.copytree(checkpoint_dir, root)
    env.setenv("FEWSHOT_CHECKPOINT_DIR", str(root))
    at = app()

    def protonet_line() -> str:
        return next(c.value for c in at.sidebar.caption if c.value.startswith("protocol **lake**"))

    assert "val 50.0%" in protonet_line()  # no accuracy.json yet: the validation accuracy, and no message
    record = {"accuracy": 0.612, "ci95": 0.011, "episodes": 1000, "n_way": 5, "n_shot": 1, "protocol": "lake",
              "checkpoint": "checkpoints/lake/protonet-5w1s.safetensors", "episodes_check": 100}
    (root / "accuracy.json").write_text(json.dumps([record]))
    at.run()
    assert "test 61.2% ± 1.1 (5-way 1-shot, lake test split)" in protonet_line()
    (root / "accuracy.json").write_text("[{not json")
    at.run()
    assert not at.exception and "val 50.0%" in protonet_line() and not at.sidebar.error


def test_no_checkpoints_is_explained_and_own_folder_works(env, tmp_path, checkpoint_dir):
    env.setenv("FEWSHOT_CHECKPOINT_DIR", str(tmp_path / "empty"))
    at = app("build")
    assert "No checkpoints found" in texts(at)
    assert "build_method" not in [w.key for w in at.selectbox]
    # the sidebar's "Also look in this folder": the user's own checkpoints
    at.text_input(key="ckpt_extra_dir").set_value(str(checkpoint_dir / "lake")).run()
    assert not at.exception, at.exception
    own = str((checkpoint_dir / "lake" / "protonet-5w1s.safetensors").resolve())
    assert at.selectbox(key="ckpt_protonet").value == own
    assert "No checkpoints found" not in texts(at)
    assert at.selectbox(key="build_method").options


def test_build_classifies_drawn_task_with_every_method(env):
    at = app("build")
    draw_task(at)
    assert "Class 1, example 1: drawn" in texts(at) and "Query 1: drawn" in texts(at)
    assert len(at.image) >= 6  # what the model sees, under each drawing
    at.selectbox(key="truth_draw_q0").set_value(2)  # the query is a triangle: class 3
    assert "Accuracy on the queries with a true class:" in classify_with_every_method(at)
    table = at.dataframe[0].value  # one row per query, one column per method
    assert list(table["true class"]) == ["triangle"] and len(table.columns) == 2 + len(ALL_METHODS)
    assert not at.error


def test_build_example_task_single_method_shows_probabilities(env):
    at = app("build")
    at.button(key="example_synthetic").click().run()
    assert [at.text_input(key=f"class_name_{i}").value for i in range(5)] == SHAPES
    at.selectbox(key="build_method").set_value("protonet")
    at.button(key="classify").click().run()
    assert not at.exception, at.exception
    out = texts(at)
    for j in range(1, 6):
        assert f"Prediction for Query {j} (Prototypical Networks):" in out
    assert ("✓ right" in out) or ("✗ wrong" in out)  # the example's queries carry their true class
    bars = [f.value for f in at.dataframe if list(f.value.columns) == ["class", "probability"]]
    assert len(bars) == 5 and all(abs(b["probability"].sum() - 1) < 1e-4 for b in bars)  # one per query
    # changing the task invalidates the shown predictions instead of showing stale ones
    at.session_state["draw_q0"] = canvas_state("circle", seed=5)
    at.run()
    assert "The task changed" in texts(at)


def test_bad_input_gets_messages_and_keeps_the_rest(env):
    at = app("build")
    draw_task(at)
    # a file that is not an image, uploaded for class 2
    at.file_uploader(key="upload_s1").upload("notes.png", b"this is not a picture", "image/png").run()
    assert not at.exception, at.exception
    assert any("not an image" in e.value for e in at.error)
    blank = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(blank, format="JPEG")
    at.file_uploader(key="upload_s1").upload("blank.jpg", blank.getvalue(), "image/jpeg").run()
    assert any("looks blank" in e.value for e in at.error)
    # duplicate and empty names
    at.text_input(key="class_name_1").set_value("circle").run()
    assert any("both called 'circle'" in e.value for e in at.error)
    at.text_input(key="class_name_1").set_value("   ").run()
    assert any("Class 2 has no name" in e.value for e in at.error)
    at.text_input(key="class_name_1").set_value("cross").run()
    # an empty canvas (drawn, then reset) and a class with no examples
    at.session_state["draw_s4_0"] = canvas_state(None)
    at.run()
    assert "Class 5, example 1: empty" in texts(at)
    at.button(key="classify").click().run()
    assert not at.exception, at.exception
    assert any("Class 5 ('bar') has no examples" in e.value for e in at.error)
    assert "Prediction for Query" not in texts(at)
    # nothing else was lost
    assert [at.text_input(key=f"class_name_{i}").value for i in range(5)] == SHAPES
    assert "Class 1, example 1: drawn" in texts(at) and "Query 1: drawn" in texts(at)
    # a real upload fixes class 5 and classification works
    at.file_uploader(key="upload_s4").upload("bar.png", synthetic_symbol("bar", seed=3), "image/png").run()
    at.button(key="classify").click().run()
    assert not at.exception, at.exception
    assert "Prediction for Query 1 (Prototypical Networks):" in texts(at)


def browser_remounts_every_widget_at_its_default(at: AppTest) -> None:
    """What a browser does with a widget it (re)mounts without knowing its state (seen under load: 20 sessions):
    the widget shows its *default* and sends that back with the next interaction."""
    for slider in at.slider:
        slider.set_value(type(slider.value)(slider.proto.default[0]))
    for box in at.text_input:
        box.set_value(box.proto.default)
    for box in at.selectbox:
        if box.proto.HasField("default"):
            box.select_index(box.proto.default)


def test_widgets_remounted_at_their_default_keep_the_task(env):
    at = app("build")
    at.button(key="example_synthetic").click().run()
    at.text_input(key="class_name_2").set_value("my triangle").run()
    before = at.session_state["task"]
    kept = (before.n_way, list(before.names[:5]), dict(before.truth), at.selectbox(key="build_method").value)
    assert kept[0] == 5 and kept[1][2] == "my triangle" and any(v is not None for v in kept[2].values())
    browser_remounts_every_widget_at_its_default(at)
    at.run()
    assert not at.exception, at.exception
    after = at.session_state["task"]
    assert (after.n_way, list(after.names[:5]), dict(after.truth), at.selectbox(key="build_method").value) == kept
    assert "5/5 classes have examples · 5 queries" in texts(at)


def test_task_survives_page_switches(env):
    at = app("build")
    draw_task(at)
    at.switch_page("pages/inside.py").run()
    assert not at.exception, at.exception
    at.switch_page("pages/build.py").run()
    assert not at.exception, at.exception
    assert [at.text_input(key=f"class_name_{i}").value for i in range(5)] == SHAPES
    assert "5/5 classes have examples · 1 queries" in texts(at)


def test_maml_page_steps_and_plays(env):
    at = app("build")
    at.button(key="example_synthetic").click().run()
    at.switch_page("pages/maml.py").run()
    assert not at.exception, at.exception
    at.slider(key="maml_steps").set_value(3)
    at.button(key="maml_step").click().run()
    assert not at.exception, at.exception
    assert "Adapted: step 1 of 3" in texts(at)
    at.button(key="maml_play").click().run()
    assert not at.exception, at.exception
    assert "Adapted: step 3 of 3 (done)" in texts(at)
    steps_tables = [f.value for f in at.dataframe if "support loss" in f.value.columns]
    assert steps_tables and list(steps_tables[0]["step"]) == [0, 1, 2, 3]
    assert at.progress[0].value == 100
    assert [m.label for m in at.metric][:2] == ["Support loss", "Support accuracy"]
    assert "ProtoNet" in texts(at)
    # first-order variant, other learning rate: back to step 0
    at.radio(key="maml_variant").set_value("fomaml")
    at.slider(key="maml_lr").set_value(0.1).run()
    assert not at.exception, at.exception
    assert "Adapted: step 0 of 3" in texts(at)


def test_embedding_page_plots(env):
    at = app("build")
    at.button(key="example_synthetic").click().run()
    at.switch_page("pages/embeddings.py").run()
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    assert "t-SNE" in charts[0].proto.spec
    at.radio(key="emb_projection").set_value("PCA").run()
    assert not at.exception, at.exception
    assert "PCA" in at.get("plotly_chart")[0].proto.spec
    # MAML: before vs after adaptation
    at.selectbox(key="emb_method").set_value("maml").run()
    at.slider(key="emb_maml_step").set_value(2).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2


def test_embedding_page_folder_source(env, tmp_path):
    for i, shape in enumerate(SHAPES[:3]):
        (tmp_path / "mine" / shape).mkdir(parents=True)
        for k in range(4):
            (tmp_path / "mine" / shape / f"{k}.png").write_bytes(synthetic_symbol(shape, seed=k))
    (tmp_path / "mine" / "circle" / "broken.png").write_bytes(b"nope")
    at = app("embeddings")
    at.radio(key="emb_source").set_value("folder").run()
    at.text_input(key="emb_folder").set_value(str(tmp_path / "mine")).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1
    assert "skipped" in texts(at)
    at.text_input(key="emb_folder").set_value(str(tmp_path / "missing")).run()
    assert not at.exception and any("Cannot use that folder" in e.value for e in at.error)


def test_inside_each_method(env):
    """Opened first, the page explains the example task at once (no Omniglot here: the synthetic symbols)."""
    at = app("inside")
    out = texts(at)
    assert "Example task" in out and not at.error and not at.warning
    assert [link.proto.page for link in at.get("page_link")] == ["build"]  # the one way to your own task
    for title in ["Prototypical Networks", "Matching Networks", "Siamese network", "Memory-augmented network (MANN)",
                  "MAML (second order)", "Transfer baseline (pre-train + fine-tune)"]:
        assert f"Answer of {title} for Query 1:" in out, title
    assert len(at.get("plotly_chart")) >= 10


def test_own_task_replaces_the_example_and_what_it_lacks_is_one_box(env):
    at = app("build")
    at.text_input(key="class_name_0").set_value("circle")
    at.session_state["draw_s0_0"] = canvas_state("circle")
    at.run()
    for page in ("inside", "maml", "embeddings"):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert not at.error and not at.warning, page
        lacking = [c.value for c in at.caption if c.value.startswith("Your own task is not complete yet")]
        assert len(lacking) == 1 and "Class 2 ('Class 2') has no examples" in lacking[0], page
        assert "Class 1 (" not in lacking[0]  # the class that has its example is not listed
    at.switch_page("pages/build.py").run()
    draw_task(at)
    at.switch_page("pages/inside.py").run()
    assert "Example task" not in texts(at)
    assert "Answer of Prototypical Networks for Query 1:" in texts(at)
    assert at.selectbox(key="inside_query").options == ["Query 1 (drawn query 1)"]  # the user's one query


def test_pages_with_omniglot(with_data):
    at = app()
    assert "Episode accuracy" in [m.label for m in at.metric]
    at.switch_page("pages/build.py").run()
    at.button(key="example_omniglot").click().run()
    assert not at.exception, at.exception
    assert "5/5 classes have examples · 5 queries" in texts(at)
    at.button(key="classify").click().run()
    assert "Prediction for Query 5 (Prototypical Networks):" in texts(at)


def test_first_visits_with_omniglot_show_its_characters(with_data):
    """Opened first with the data there: the example task is Omniglot's, and the embedding map starts on it."""
    for page, shown in [("maml", "Adapted: step 0 of 5"), ("inside", "Answer of Prototypical Networks for Query 1:"),
                        ("embeddings", "10 characters from Omniglot's evaluation alphabets")]:
        at = app(page)
        out = texts(at)
        assert not at.error and not at.warning, (page, [e.value for e in at.error], [w.value for w in at.warning])
        assert "Example task" in out and "Omniglot's evaluation alphabets" in out and shown in out, page
    assert at.radio(key="emb_source").value == "omniglot"
    assert len(at.get("plotly_chart")) == 1


def test_benchmark_runs_and_inspects(with_data):
    at = app("benchmark")
    at.number_input(key="bench_episodes").set_value(3)
    at.multiselect(key="bench_methods").set_value(["protonet", "maml", "finetune"])
    submit = [b for b in at.button if b.label == "Run benchmark"][0]
    submit.click().run()
    assert not at.exception, at.exception
    frame = at.dataframe[0].value
    assert list(frame["episodes"]) == [3, 3, 3]
    assert frame["accuracy %"].between(0, 100).all() and (frame["± 95% CI"] >= 0).all()
    assert list(frame["paper %"]) == [98.8, 98.7, 80.0]
    assert "Episode accuracy" in texts(at)
    at.number_input(key="bench_episode").set_value(2).run()
    assert not at.exception, at.exception


def test_you_vs_the_model(with_data):
    at = app("human")
    assert "Question 1 of 10" in [h.value for h in at.subheader]
    at.button(key="human_submit").click().run()
    assert any("Pick a number first" in w.value for w in at.warning)
    at.radio(key="human_answer_1_0").set_value(3)
    at.button(key="human_submit").click().run()
    assert not at.exception, at.exception
    assert "Your score:" in texts(at)
    who = list(at.dataframe[0].value["who"])
    assert who[0] == "You" and "Prototypical Networks" in who and who[-1].startswith("People in Lake")
    at.button(key="human_next").click().run()
    assert "Question 2 of 10" in [h.value for h in at.subheader]


def test_cached_models_are_never_changed(env, checkpoint_dir):
    """Classifying with every method leaves the shared cached models exactly as loaded."""
    from pages.lab import checkpoints

    st.cache_resource.clear()
    at = app("build")
    draw_task(at)
    at.selectbox(key="build_method").set_value("all")
    at.button(key="classify").click().run()
    assert not at.exception, at.exception
    for method in ALL_METHODS:
        path = checkpoint_dir / "lake" / f"{method}-5w1s.safetensors"
        cached, _ = checkpoints.cached_model(str(path), path.stat().st_mtime, "cpu")
        fresh, _ = fewshot.load_checkpoint(path)
        assert not cached.training
        for (name, a), (_, b) in zip(cached.state_dict().items(), fresh.state_dict().items()):
            assert torch.equal(a, b), (method, name)
        assert getattr(cached, "prototypes", None) is None and getattr(cached, "_support_ready", False) is False


def test_benchmark_shows_the_training_curves_beside_the_checkpoints(env, checkpoint_dir, tmp_path):
    """benchmarks/time_to_accuracy.py reads val points from a checkpoint's history; the page draws that file, even
    without Omniglot (the curves need no data)."""
    import json
    import subprocess
    import sys

    path = next((checkpoint_dir / "lake").glob("protonet*.safetensors"))
    model, info = fewshot.load_checkpoint(path)
    history = [{"step": 50, "loss": 1.0, "accuracy": 0.5, "lr": 1e-3, "seconds": 9.0, "cpu_seconds": 8.0},
               {"step": 100, "loss": 0.9, "accuracy": 0.6, "lr": 1e-3, "seconds": 19.0, "cpu_seconds": 16.5,
                "val_accuracy": 0.71, "val_ci95": 0.02},
               {"step": 200, "loss": 0.8, "accuracy": 0.7, "lr": 1e-3, "seconds": 40.0, "cpu_seconds": 33.0,
                "val_accuracy": 0.78, "val_ci95": 0.02}]
    curved = tmp_path / "curved.safetensors"
    fewshot.save_checkpoint(curved, model, method=info.metadata["method"], metadata={**info.metadata, "history": history})
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
    out = checkpoint_dir / "training_curves.json"
    run = subprocess.run([sys.executable, str(script), f"a run={curved}", "--json", str(out), "--svg",
                          str(tmp_path / "c.svg")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    curves = json.loads(out.read_text())
    assert [(p["cpu_seconds"], p["accuracy"]) for p in curves["a run"]["points"]] == [(16.5, 0.71), (33.0, 0.78)]
    assert "<polyline" in (tmp_path / "c.svg").read_text()
    at = app("benchmark")
    assert "Time to accuracy" in at.expander[0].label
    assert "a run" in json.dumps(at.get("plotly_chart")[0].proto.spec if at.get("plotly_chart") else "")
    no_val = tmp_path / "no-val.safetensors"
    fewshot.save_checkpoint(no_val, model, method=info.metadata["method"], metadata={**info.metadata, "history": history[:1]})
    bad = subprocess.run([sys.executable, str(script), f"x={no_val}", "--json", str(tmp_path / "x.json"), "--svg",
                          str(tmp_path / "x.svg")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr


def test_a_wider_encoder_works_on_every_model_page(env, tmp_path):
    """Checkpoints describe their encoder: 128-filter models (the Vinyals campaign's width; Proto-MAML adapting its
    head alone) classify, adapt step by step and plot embeddings like the 64-filter ones."""
    torch.manual_seed(1)
    root = tmp_path / "wide"
    for method in ALL_METHODS:
        kwargs: dict = {"hidden": 128}
        if method in ("maml", "fomaml"):
            kwargs.update(proto_head=True, inner_steps=2, inner_lr=0.1, inner_params="head")
        elif method == "mann":
            kwargs.update(n_way=5)
        elif method == "finetune":
            kwargs.update(n_classes=20, finetune_steps=5)
        model = fewshot.build_model(method, **kwargs)
        fewshot.save_checkpoint(root / "vinyals" / f"{method}-wide.safetensors", model.eval(), method=method,
                                metadata={"protocol": "vinyals", "image_size": 28, "n_way": 20, "n_shot": 1,
                                          "n_query": 5, "val_accuracy": 0.5})
    env.setenv("FEWSHOT_CHECKPOINT_DIR", str(root))
    at = app("build")
    assert at.selectbox(key="ckpt_maml").value == "vinyals/maml-wide.safetensors"
    at.button(key="example_synthetic").click().run()
    classify_with_every_method(at)
    assert not at.error
    at.switch_page("pages/maml.py").run()
    at.button(key="maml_play").click().run()
    assert not at.exception, at.exception
    out = texts(at)
    assert "Adapted: step 5 of 5 (done)" in out and "only that output layer" in out
    assert "paper-faithful" not in out  # a Proto-MAML without warped copies was once captioned as one
    at.switch_page("pages/embeddings.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="emb_method").set_value("maml").run()
    at.slider(key="emb_maml_step").set_value(1).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2
