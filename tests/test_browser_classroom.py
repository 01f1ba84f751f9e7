"""Real-browser tests of the classroom features (issue 18): a task downloaded, cleared and loaded back identical; a
short live meta-training run started, showing its curves, stopped.

The harness (a ``streamlit run app.py`` server, Debian's chromium through Playwright, the waits) is
``tests/test_browser.py``'s: its fixtures are imported here, so both files start and drive the app the same way
and skip (or fail under ``CI``) for the same reasons.
"""

from __future__ import annotations

import io
import zipfile

import pytest

import fewshot
from test_browser import (ACT_MS, Clock, _data_dir, _open_page, _wait_app_idle, _wait_text, browser, page,  # noqa: F401
                          screenshot, server)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]


def _download(pg, label: str) -> bytes:
    with pg.expect_download(timeout=ACT_MS) as info:
        pg.get_by_role("button", name=label).click()
    path = info.value.path()
    with open(path, "rb") as f:
        return f.read()


def _wait_value(pg, label: str, value: str) -> None:
    """Wait until the text input labelled ``label`` shows ``value`` (a rerun may still be on its way)."""
    box = pg.get_by_label(label, exact=True)
    deadline = pg.evaluate("Date.now()") + ACT_MS
    while box.input_value() != value:
        assert pg.evaluate("Date.now()") < deadline, f"{label!r} shows {box.input_value()!r}, not {value!r}"
        pg.wait_for_timeout(100)
    _wait_app_idle(pg)


def _share_box(pg):
    """Open the Build page's "Share this task" expander (if it is closed)."""
    summary = pg.get_by_text("Share this task: download it as one file, or load one", exact=False).first
    summary.scroll_into_view_if_needed()
    if not pg.get_by_role("button", name="Download this task (.zip)").is_visible():
        summary.click()
        pg.get_by_role("button", name="Download this task (.zip)").wait_for(state="visible", timeout=ACT_MS)


def test_a_task_downloaded_cleared_and_loaded_back_is_identical(page, tmp_path):
    pg, clock = page, Clock("share")
    _open_page(pg, "Build a task")
    pg.get_by_role("button", name="Load the example task (synthetic symbols)").click()
    _wait_app_idle(pg)
    _share_box(pg)
    first = _download(pg, "Download this task (.zip)")
    clock("downloaded")
    original = fewshot.read_task(first)
    assert original.class_names == ["circle", "cross", "triangle", "square", "bar"]
    assert len(original.queries) == 5 and original.true_classes == [0, 1, 2, 3, 4]

    pg.get_by_role("button", name="Clear the task").click()
    _wait_app_idle(pg)
    _wait_value(pg, "Class 1 name", "Class 1")  # the task is gone
    _share_box(pg)
    _wait_text(pg, "Not ready to share yet")
    clock("cleared")

    saved = tmp_path / "fewshot-task.zip"
    saved.write_bytes(first)
    uploader = pg.locator('[data-testid="stFileUploader"]').filter(has_text="Load a task file")
    uploader.locator('input[type="file"]').set_input_files(str(saved))
    _wait_text(pg, "Loaded fewshot-task.zip: 5 classes, 5 examples, 5 queries")
    _wait_app_idle(pg)
    clock("loaded")
    _wait_value(pg, "Class 1 name", "circle")

    _share_box(pg)
    second = _download(pg, "Download this task (.zip)")
    assert fewshot.read_task(second) == original
    assert second == first  # the same task gives the same file, byte for byte
    with zipfile.ZipFile(io.BytesIO(second)) as z:
        assert sorted(n for n in z.namelist() if n.endswith(".png"))[:2] == ["queries/0.png", "queries/1.png"]
    clock("identical")


@pytest.mark.skipif(_data_dir() is None, reason="needs Omniglot (FEWSHOT_DATA_DIR)")
def test_a_short_live_run_shows_its_curves_and_stops(page):
    pg, clock = page, Clock("live")
    _open_page(pg, "Watch meta-training")
    pg.get_by_role("button", name="Start meta-training").click()
    _wait_text(pg, "running: episode", timeout=ACT_MS)
    clock("started")
    # the loss curve (a vega chart) and the accuracy curve draw while the run goes on
    pg.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].filter(
               e => e.querySelector('canvas, svg') && e.getBoundingClientRect().height > 100).length >= 2""",
        timeout=ACT_MS, polling=200)
    _wait_text(pg, "Accuracy on never-seen characters")
    pg.locator('[data-testid="stPlotlyChart"]').first.wait_for(state="visible", timeout=ACT_MS)  # the map
    clock("curves")
    pg.locator(".st-key-live_stop button").first.click()  # not the status bar's own "Stop"
    _wait_text(pg, "stopped: episode", timeout=ACT_MS)
    _wait_text(pg, "is kept for this session", timeout=ACT_MS)
    _wait_app_idle(pg)
    clock("stopped")
    screenshot(pg, "train_live")


def test_embedding_explorer_draws_images_and_a_points_neighbours(page):
    pg, clock = page, Clock("embeddings")
    _open_page(pg, "Embedding explorer")
    pg.get_by_text("Draw the images at their map positions", exact=True).click()
    _wait_app_idle(pg)
    # plotly draws layout images as <image> elements in the chart's SVG
    pg.wait_for_function("""() => document.querySelectorAll('[data-testid="stPlotlyChart"] svg image').length >= 10""",
                         timeout=ACT_MS, polling=200)
    clock("images drawn")
    combo = pg.get_by_role("combobox", name="Or choose a point", exact=True)
    combo.scroll_into_view_if_needed()
    combo.click()
    pg.get_by_role("option").nth(1).click()  # the first point (option 0 is "—")
    _wait_app_idle(pg)
    _wait_text(pg, "nearest neighbours in the model's")
    _wait_text(pg, "are also among its")
    clock("neighbours")
    screenshot(pg, "embeddings_images")
