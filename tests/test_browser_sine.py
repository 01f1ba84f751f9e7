"""Real-browser test of the sine-wave page (issue 18 items 1 and 5): points entered and steps taken in chromium.

Uses the harness of ``tests/test_browser.py`` (a ``streamlit run app.py`` on a free port, Debian's chromium driven
by Playwright; skipped without them unless ``CI`` is set). The page is reached by its sidebar link, as a person
would, with the shipped ``checkpoints/sine`` models.
"""

from __future__ import annotations

import re

import pytest

from test_browser import (ACT_MS, _no_exception, _open_page, _wait_app_idle, _wait_text, browser, page,  # noqa: F401
                          screenshot, server)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

TITLE = "MAML on sine waves"
TYPED = "-4, 1\n-2.5, -1\n-1, 1.5\n1, 0\n3.5, -1"


def _metric_values(pg) -> list[str]:
    return [v.inner_text() for v in pg.locator('[data-testid="stMetricValue"]').all()]


def _step(pg, expected: int) -> None:
    pg.get_by_role("button", name="Step", exact=True).click()
    _wait_text(pg, f"STEP {expected}/10")
    _wait_app_idle(pg)


def _curve_traces(pg) -> int:
    """Traces drawn by plotly in the first chart (true sine, two models, the points)."""
    chart = pg.locator('[data-testid="stPlotlyChart"]').first
    chart.locator(".scatterlayer .trace").first.wait_for(state="attached", timeout=ACT_MS)
    return chart.locator(".scatterlayer .trace").count()


def _click_chart(pg, x: float, y: float) -> None:
    """Click the curve chart at data coordinates ``(x, y)`` (axes fixed at [-5, 5] x [-6, 6])."""
    chart = pg.locator('[data-testid="stPlotlyChart"]').first
    box = chart.locator("rect.nsewdrag").first.bounding_box()
    px, py = box["x"] + (x + 5) / 10 * box["width"], box["y"] + (6 - y) / 12 * box["height"]
    pg.mouse.move(px, py)
    pg.wait_for_timeout(300)  # plotly picks the hovered point; the click selects it
    pg.mouse.click(px, py)


def _lines(pg) -> list[str]:
    return pg.locator("textarea").first.input_value().splitlines()


def _wait_lines(pg, n: int) -> None:
    pg.wait_for_function("n => document.querySelector('textarea').value.split('\\n').length === n", arg=n,
                         timeout=ACT_MS, polling=100)
    _wait_app_idle(pg)


def test_sine_page_points_typed_and_steps_taken(page):
    pg = page
    _open_page(pg, TITLE)
    _wait_text(pg, "STEP 0/10")
    assert _curve_traces(pg) == 5  # true sine, MAML, pre-trained, the ten points, click targets
    _step(pg, 1)
    screenshot(pg, "sine")  # a session's first sine (A = 3, phi = 1) after one step

    box = pg.locator("textarea").first
    box.fill(TYPED)
    box.press("Control+Enter")  # st.text_area commits on Ctrl+Enter (or leaving the box)
    _wait_text(pg, "not on the sine that was drawn")
    _wait_text(pg, "STEP 0/10")  # new points: the steps start again
    _wait_app_idle(pg)
    _no_exception(pg)
    assert box.input_value() == TYPED
    before = _metric_values(pg)
    assert len(before) == 2 and all(re.fullmatch(r"\d+\.\d{3}", v) for v in before), before

    _step(pg, 1)
    after = _metric_values(pg)
    assert after != before, "a step changed neither model's error"
    assert _curve_traces(pg) == 4  # no true sine for typed points: MAML, pre-trained, the five points, click targets

    _click_chart(pg, 4.5, 5.0)  # an empty spot: a sixth point there
    _wait_lines(pg, 6)
    assert "4.500, 5.000" in _lines(pg), _lines(pg)
    _wait_text(pg, "STEP 0/10")  # new points: the steps start again
    _click_chart(pg, -4.0, 1.0)  # one of the typed points: removed
    _wait_lines(pg, 5)
    assert "-4.000, 1.000" not in _lines(pg) and "4.500, 5.000" in _lines(pg), _lines(pg)
    _step(pg, 1)

    pg.get_by_role("button", name="Draw a random sine").click()
    _wait_app_idle(pg)
    _wait_text(pg, "STEP 0/10")
    _step(pg, 1)
    _step(pg, 2)
    assert _curve_traces(pg) == 5  # true sine, MAML, pre-trained, the points, click targets

    lr = pg.get_by_label("Inner learning rate", exact=True)
    lr.fill("5")
    lr.press("Enter")
    _wait_text(pg, "inner learning rate must be a number from 0.001 to 0.5")
    _no_exception(pg)
