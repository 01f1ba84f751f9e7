"""The sine-wave page (pages/sine.py) in Streamlit's AppTest: points entered, steps taken, bad input answered.

The page runs on its own (it needs no router). Its models are two small checkpoints made here with
``fewshot train-sine`` in a temporary FEWSHOT_CHECKPOINT_DIR, so the test does not depend on the shipped ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fewshot.cli import main

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "sine.py")


@pytest.fixture(scope="module")
def sine_checkpoints(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    for model in ("maml", "pretrained"):
        assert main(["train-sine", "--model", model, "--iterations", "30", "--log-every", "30", "--quiet",
                     "--out", str(root / "sine" / f"{model}.safetensors")]) == 0
    return root


@pytest.fixture
def page(sine_checkpoints, monkeypatch) -> AppTest:
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_DIR", str(sine_checkpoints))
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def _step_caption(at: AppTest) -> str:
    return [c.value for c in at.caption if c.value.startswith("STEP ")][0]


def _points(at: AppTest) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in line.split(",")) for line in at.text_area(key="sine_points_text").value.splitlines()]


def test_the_page_starts_with_ten_points_on_a_sine_and_steps(page):
    at = page
    assert _step_caption(at) == "STEP 0/10"
    assert len(_points(at)) == 10
    assert [m.label for m in at.metric] == ["MAML: MSE on the whole sine", "Pre-trained on all sines: MSE on the whole sine"]
    before = [m.value for m in at.metric]
    at.button(key="sine_step_btn").click().run()
    assert not at.exception
    assert _step_caption(at) == "STEP 1/10"
    assert [m.value for m in at.metric] != before
    at.button(key="sine_step_btn").click().run()
    assert _step_caption(at) == "STEP 2/10"
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    at.button(key="sine_reset").click().run()
    assert _step_caption(at) == "STEP 0/10"


def test_k_half_range_draw_and_play(page):
    at = page
    first = _points(at)
    at.radio(key="sine_k").set_value(5).run()
    assert len(_points(at)) == 5
    at.toggle(key="sine_half").set_value(True).run()
    points = _points(at)
    assert len(points) == 5 and all(x <= 0 for x, _ in points)
    at.button(key="sine_draw").click().run()
    assert _points(at) != points and len(_points(at)) == 5
    at.button(key="sine_play").click().run()
    assert not at.exception
    assert _step_caption(at) == "STEP 10/10"
    assert first != _points(at)


def test_points_typed_by_hand(page):
    at = page
    at.text_area(key="sine_points_text").set_value("-4, 1\n-1, -2\n2, 0.5").run()
    assert not at.exception and not at.error
    assert "not on the sine that was drawn" in at.info[0].value
    assert [m.label for m in at.metric] == ["MAML: MSE on the points", "Pre-trained on all sines: MSE on the points"]
    at.button(key="sine_step_btn").click().run()
    assert _step_caption(at) == "STEP 1/10"


def test_a_step_size_that_blows_up_is_shown_as_divergence(page):
    at = page
    at.text_area(key="sine_points_text").set_value("-4.5, 10\n-4, -10\n4, 10\n4.5, -10")
    at.text_input(key="sine_lr_text").set_value("0.5").run()
    at.button(key="sine_play").click().run()
    assert not at.exception and _step_caption(at) == "STEP 10/10"
    assert any("diverged at step" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "diverged" in [m.value for m in at.metric]


@pytest.mark.parametrize("text, lr, message", [
    ("1, abc", "0.01", "must be numbers"),
    ("1 2 3", "0.01", "one point per line"),
    ("7, 1", "0.01", "outside [-5, 5]"),
    ("1, 50", "0.01", "beyond ±10"),
    ("\n".join(f"{-4 + 0.1 * i:.1f}, 0" for i in range(25)), "0.01", "at most 20"),
    ("", "0.01", "at least one point"),
    ("1, 1", "-1", "inner learning rate must be a number from 0.001 to 0.5"),
    ("1, 1", "lots", "inner learning rate must be a number"),
    ("1, 1", "nan", "inner learning rate must be a number"),
])
def test_bad_input_gets_one_message_and_the_text_is_kept(page, text, lr, message):
    at = page
    at.text_area(key="sine_points_text").set_value(text)
    at.text_input(key="sine_lr_text").set_value(lr).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value, [e.value for e in at.error]
    assert at.text_area(key="sine_points_text").value == text  # the person's work is kept
    at.text_area(key="sine_points_text").set_value("1, 1")
    at.text_input(key="sine_lr_text").set_value("0.01").run()
    assert not at.error and _step_caption(at) == "STEP 0/10"


def test_missing_checkpoints_explain_how_to_make_them(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_DIR", str(tmp_path))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "python -m fewshot train-sine --model maml" in at.warning[0].value
