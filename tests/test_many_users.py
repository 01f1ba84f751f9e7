"""Many users at once (issue 6): the shared cached models are never modified, and sessions never see each other.

* Many adaptations of every method (MAML's ``adapt`` / ``adapt_steps`` included) run from several threads
  against the very model objects ``st.cache_resource`` hands to every session; afterwards every parameter
  and buffer is bit-identical, and every thread got exactly the answer a lone user gets for its own task.
* Several AppTest sessions run in threads at once, each building and classifying its own task; each sees
  only its own class names and predictions.

(The browser version, two pages at once, is ``test_browser.py::test_two_sessions_see_their_own_task``.)
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import fewshot
from fewshot import inspection
from fewshot.symbols import synthetic_task

# Fixtures and helpers of the AppTest suite (the same checkpoints, the same app.py-every-run workaround).
from test_app import APP, SHAPES, canvas_state, checkpoint_dir, env, run_app_py_every_time, texts  # noqa: F401

ALL_METHODS = list(fewshot.METHODS)
THREADS, ROUNDS = 4, 2


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {f"param:{k}": v.detach().clone() for k, v in model.named_parameters()}
    state.update({f"buffer:{k}": v.detach().clone() for k, v in model.named_buffers()})
    return state


def _differences(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> list[str]:
    now = _snapshot(model)
    if now.keys() != snapshot.keys():
        return [f"tensor names changed: {sorted(now.keys() ^ snapshot.keys())}"]
    return [k for k in snapshot if now[k].dtype != snapshot[k].dtype or not torch.equal(now[k], snapshot[k])]


def _task(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 5-way 1-shot task of synthetic symbols with 5 queries; every seed gives other drawings."""
    example = synthetic_task(5, 1, 1, seed=seed)
    support = torch.stack([fewshot.preprocess_image(pngs[0], 28, center=True) for pngs in example.support])
    queries = torch.stack([fewshot.preprocess_image(png, 28, center=True) for png, _ in example.queries])
    return support, torch.arange(5), queries


def _everything(loaded, sx, sy, qx) -> dict[str, np.ndarray]:
    """Every adaptation the app (and the library) runs on a shared model, with its results."""
    model = loaded.model
    out = {"predict": inspection.predict(model, sx, sy, qx)}
    out.update({f"explain:{k}": v for k, v in inspection.explain(model, sx, sy, qx).items()})
    if loaded.method in ("maml", "fomaml"):
        steps = list(inspection.adaptation(model, sx, sy, qx, inner_lr=0.4, inner_steps=3))
        out["maml_steps"] = np.stack([inspection.step_probabilities(s, 5) for s in steps])
        out["layer_change"] = np.array([list(inspection.layer_change(steps[0], s).values()) for s in steps])
        weights = inspection.adapted_weights(model, sx, sy, inner_lr=0.4, step=2)
        out["maml_features"] = inspection.embed(model, torch.cat([sx, qx]), maml_weights=weights, n_support=len(sx))
        # the library's own entry points, called on the shared module itself
        out["adaptation"] = np.stack([s.support_loss for s in model.adaptation(sx, sy, qx, inner_steps=2)])
        start = {k: v.detach().requires_grad_() for k, v in model.meta_weights().items()}
        with torch.enable_grad():
            fast = fewshot.adapt(model.net, start, model.buffers_copy(), sx, sy, inner_lr=0.4, inner_steps=2,
                                 create_graph=False)
        out["adapt"] = torch.cat([v.detach().flatten() for v in fast.values()]).numpy()
        out["adapt_steps"] = np.stack([s.support_loss for s in fewshot.adapt_steps(
            model.net, model.meta_weights(), model.buffers_copy(), sx, sy, inner_lr=0.4, inner_steps=2)])
    else:
        out["features"] = inspection.embed(model, torch.cat([sx, qx]))
    return out


@pytest.fixture()
def shared_models(tmp_path):
    """The app's cached models (``checkpoints.cached_model``, the ``st.cache_resource`` every session gets).

    Small (16 filters) so that many adaptations run in seconds; BatchNorm running statistics are moved off
    their initial values so that any update of them shows.
    """
    import streamlit as st

    from pages.lab import checkpoints

    st.cache_resource.clear()
    torch.manual_seed(0)
    models = {}
    for method in ALL_METHODS:
        kwargs = {"n_way": 5} if method in ("maml", "fomaml", "mann") else {}
        if method == "finetune":
            kwargs = {"n_classes": 20, "finetune_steps": 10}
        if method == "fomaml":
            kwargs["first_order"] = True
        model = fewshot.build_model(method, hidden=16, feature_dim=16, **kwargs) if method != "protonet" \
            else fewshot.build_model(method, hidden=16)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if buf.is_floating_point():
                    buf.add_(torch.rand_like(buf))
        path = fewshot.save_checkpoint(tmp_path / f"{method}.safetensors", model.eval(), method=method)
        model, meta = checkpoints.cached_model(str(path), path.stat().st_mtime, "cpu")
        models[method] = checkpoints.Loaded(method, model, meta, str(path), f"{path}:cpu")
    yield models
    st.cache_resource.clear()


def test_many_adaptations_from_many_threads_leave_shared_models_bit_identical(shared_models):
    before = {m: _snapshot(loaded.model) for m, loaded in shared_models.items()}
    tasks = [_task(seed) for seed in range(THREADS)]
    # what a lone user gets, one task after another
    expected = [{m: _everything(loaded, *task) for m, loaded in shared_models.items()} for task in tasks]
    assert not any(_differences(shared_models[m].model, before[m]) for m in shared_models)

    barrier = threading.Barrier(THREADS)

    def user(k: int) -> list[str]:
        barrier.wait()  # all threads start together, so the adaptations overlap
        problems = []
        for _ in range(ROUNDS):
            for m, loaded in shared_models.items():
                got = _everything(loaded, *tasks[k])
                for key, value in expected[k][m].items():
                    if not np.array_equal(got[key], value):
                        problems.append(f"thread {k}, {m}, {key}: differs from the lone user's answer")
        return problems

    with ThreadPoolExecutor(THREADS) as pool:
        problems = [p for result in pool.map(user, range(THREADS)) for p in result]
    assert not problems, problems[:10]

    for method, loaded in shared_models.items():
        model = loaded.model
        assert _differences(model, before[method]) == [], method
        assert not model.training, method
        assert not any(p.requires_grad for p in model.parameters()), method
        fresh, _ = fewshot.load_checkpoint(loaded.path)
        for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
            assert torch.equal(a, b), (method, name)
        # per-task state only ever lives on private copies
        assert getattr(model, "_support_ready", False) is False, method
        assert getattr(model, "fast_weights", None) is None and getattr(model, "prototypes", None) is None, method

    # the check can fail: one train-mode pass (what a careless session might do) is caught
    spoiled = copy.deepcopy(shared_models["protonet"].model).train()
    with torch.no_grad():
        spoiled.backbone(tasks[0][0])
    assert any(k.startswith("buffer:") and "running_mean" in k
               for k in _differences(spoiled, before["protonet"])), "a BatchNorm update went unnoticed"


# ------------------------------------------------------------------------------------------------ AppTest sessions


def _session(k: int, barrier: threading.Barrier) -> dict:
    """One user: draws a 5-way task with its own class names and its own query, classifies with ProtoNet."""
    from streamlit.testing.v1 import AppTest

    names = [f"user{k}-{shape}" for shape in SHAPES]
    query = k % len(SHAPES)
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/build.py").run()
    barrier.wait()  # the sessions work on the server at the same time from here on
    for i, shape in enumerate(SHAPES):
        at.session_state[f"draw_s{i}_0"] = canvas_state(shape, seed=10 * k + i)
        at.text_input(key=f"class_name_{i}").set_value(names[i])
    at.session_state["draw_q0"] = canvas_state(SHAPES[query], seed=10 * k + 7)
    at.run()
    at.selectbox(key="build_method").set_value("protonet")
    at.button(key="classify").click().run()
    return {"names": names, "query": query, "exceptions": list(at.exception), "texts": texts(at),
            "store_names": list(at.session_state["task"].names[:5]),
            "results": at.session_state["build_results"] if "build_results" in at.session_state else None}


def test_concurrent_app_sessions_see_only_their_own_task(env):  # noqa: F811
    """4 users in 4 threads, interleaved run by run on one process's caches; each sees only its own task.

    AppTest (streamlit 1.67) cannot run scripts in parallel threads: each run installs its mock runtime as the
    global ``Runtime._instance`` and clears it at the end, and compiles the page anew (CPython 3.11's compiler
    is not thread-safe). So one script run at a time, in whatever order the threads reach it. Truly parallel
    sessions are covered by the server: ``test_browser.py::test_two_sessions_see_their_own_task`` and
    ``benchmarks/load_test.py`` (20 sessions).
    """
    from streamlit.testing.v1.app_test import AppTest

    one_at_a_time, run = threading.Lock(), AppTest._run

    def serialised(self, *args, **kwargs):
        with one_at_a_time:
            return run(self, *args, **kwargs)

    env.setattr(AppTest, "_run", serialised)
    n = 4
    barrier = threading.Barrier(n)
    with ThreadPoolExecutor(n) as pool:
        sessions = list(pool.map(lambda k: _session(k, barrier), range(n)))
    for k, s in enumerate(sessions):
        assert not s["exceptions"], (k, s["exceptions"])
        assert s["store_names"] == s["names"], k
        out = s["texts"]
        line = [ln for ln in out.splitlines() if ln.startswith("Prediction for Query 1 (Prototypical Networks):")]
        assert line, (k, out[-2000:])
        predicted = line[0].split("**")[1]
        assert predicted in s["names"], f"session {k} was answered with another session's class: {line[0]}"
        for other in range(n):
            if other != k:
                assert f"user{other}-" not in out, f"session {k} shows session {other}'s names"
        assert s["results"] is not None and list(s["results"]["results"]) == ["protonet"]
        assert s["results"]["results"]["protonet"].shape == (1, 5)
