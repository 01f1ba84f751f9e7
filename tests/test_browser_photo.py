"""Photo mode in a real browser (Debian's chromium via Playwright; the harness of ``test_browser.py``).

Switch "Build a task" to Photos, upload real JPEG files through the browser's file chooser (objects drawn by
``fewshot.photo.synthetic_photo``), classify with every photo-mode method, check that the camera input is
offered, and save ``docs/screenshots/photo.png``.
"""

from __future__ import annotations

import pytest

from fewshot.photo import SYNTHETIC_OBJECTS, synthetic_photo
from test_browser import (ACT_MS, _choose, _open_page, _prediction, _set_text_input, _wait_app_idle,  # noqa: F401
                          _wait_text, browser, page, screenshot, server)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def test_photo_mode_upload_classify_and_camera(page, tmp_path):
    pg = page
    _open_page(pg, "Build a task")
    pg.get_by_text("Photos", exact=True).click()
    _wait_app_idle(pg)
    _wait_text(pg, "upload 1–5 photos")
    assert pg.locator("canvas.upper-canvas").count() == 0  # no drawing canvases in photo mode
    names = [kind for kind in SYNTHETIC_OBJECTS[:3]]
    slider = pg.get_by_role("slider").first  # Classes (N-way)
    slider.focus()
    for _ in range(2):  # 5 -> 3 classes
        pg.keyboard.press("ArrowLeft")
    _wait_app_idle(pg)
    _wait_text(pg, "0/3 classes have examples")

    def uploader(label: str):
        box = pg.locator('[data-testid="stFileUploader"]', has_text=label).first
        return box.locator('[data-testid="stFileUploaderDropzoneInput"]')

    for i, kind in enumerate(names):
        _set_text_input(pg, f"Class {i + 1} name", kind)
        files = []
        for k in range(2):
            path = tmp_path / f"{kind}{k}.jpg"
            path.write_bytes(synthetic_photo(kind, 300 + 10 * i + k))
            files.append(str(path))
        uploader(f"Photos of class {i + 1}").set_input_files(files)
        _wait_text(pg, f"2 photo(s) of class {i + 1}")
        _wait_app_idle(pg)
    query = tmp_path / "query.jpg"
    query.write_bytes(synthetic_photo(names[1], 999))  # a mug
    uploader("Upload query photos").set_input_files(str(query))
    _wait_text(pg, "Query photos, as the model sees them")
    _wait_app_idle(pg)
    _choose(pg, "Method", "All methods side by side")
    pg.get_by_role("button", name="Classify", exact=True).click()
    _wait_app_idle(pg)
    for title in ("Prototypical Networks", "Matching Networks", "Transfer baseline (pre-train + fine-tune)",
                  "MAML (second order)"):
        predicted, line = _prediction(pg, title)
        assert predicted == names[1], line
    pg.get_by_text("Use the camera", exact=True).click()
    _wait_app_idle(pg)
    pg.locator('[data-testid="stCameraInput"]').first.wait_for(state="visible", timeout=ACT_MS)
    screenshot(pg, "photo")
