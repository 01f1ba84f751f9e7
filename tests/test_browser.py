"""Real-browser end-to-end tests of the Streamlit lab (issue 4 "Tests", issue 6 "many users").

Starts ``python -m streamlit run app.py`` on a free loopback port and drives Debian's
``/usr/bin/chromium`` with Playwright (``executable_path``; never ``playwright install``).
Draws real strokes on the canvases, classifies, steps MAML, opens the embedding plot, and
writes a screenshot of every page to ``docs/screenshots/<page>.png``.

When chromium or playwright is missing these tests skip, except when ``CI`` is set: then they
fail, because CI must run them (``.ci/run`` installs chromium with apt-get).
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("FEWSHOT_CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1300, "height": 900}
LOAD_MS = 90_000      # first page load includes torch import + checkpoint load
ACT_MS = 60_000       # one interaction (rerun) at most


# --------------------------------------------------------------------------- requirements
def _require_browser() -> None:
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        problems.append(f"the playwright package is not importable ({exc})")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    if problems:
        msg = "real-browser tests need: " + "; ".join(problems)
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(msg + " -- CI is set, so this is a failure, not a skip", pytrace=False)
        pytest.skip(msg)


def _data_dir() -> str | None:
    if os.environ.get("FEWSHOT_DATA_DIR"):
        return os.environ["FEWSHOT_DATA_DIR"]
    shared = REPO.parent / "shared" / "data" / "omniglot"
    return str(shared) if shared.is_dir() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- harness
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ``streamlit run app.py`` on a free port; yields its base URL; kills that PID after."""
    _require_browser()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = dict(os.environ)
    if _data_dir():
        env["FEWSHOT_DATA_DIR"] = _data_dir()
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not healthy after 60 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        text = log_path.read_text(errors="replace")
        if "Traceback" in text:
            print("---- streamlit server log (tail) ----\n" + text[-6000:])


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    """One persistent chromium context (fresh profile); each new page is a new Streamlit session."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROME_ARGS,
            viewport=VIEWPORT,
        )
        ctx.set_default_timeout(ACT_MS)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture()
def page(browser, server, request):
    """A new tab (= a new Streamlit session) on the app; on failure its screenshot goes to out/browser/."""
    pg = browser.new_page()
    failed_before = request.session.testsfailed
    pg.goto(server)
    _wait_app_idle(pg, LOAD_MS)
    yield pg
    if request.session.testsfailed > failed_before:
        _save_failure(pg, request.node.name)
    pg.close()


def _save_failure(pg, name: str) -> None:
    out = REPO / "out" / "browser"
    out.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(out / f"{name}.png"), full_page=True)
        (out / f"{name}.txt").write_text(pg.locator("body").inner_text())
    except Exception as exc:  # the page may be gone; the failure itself is what matters
        print(f"[browser] could not save the failing page: {exc}")


# --------------------------------------------------------------------------- helpers
def _wait_app_idle(pg, timeout=ACT_MS) -> None:
    """Wait until Streamlit has rendered and is not running the script."""
    pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    pg.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app) return false;
            if (app.getAttribute('data-test-script-state') === 'running') return false;
            return !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]');
        }""",
        timeout=timeout, polling=100,  # an interval, not requestAnimationFrame: works in background tabs
    )
    _no_exception(pg)  # a traceback in the page fails at once instead of waiting for text that never comes


def _no_exception(pg) -> None:
    exc = pg.locator('[data-testid="stException"]')
    if exc.count():
        raise AssertionError("the page shows an exception:\n" + exc.first.inner_text()[:3000])


def screenshot(pg, name: str) -> Path:
    """Full-page PNG of the current page into docs/screenshots/<name>.png (overwritten).

    Streamlit scrolls inside its own container, so the viewport is grown to the content height
    for the shot (capped), then restored.
    """
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = pg.evaluate(
        """() => {
            const el = document.querySelector('[data-testid="stMain"]') ||
                       document.querySelector('section.main') || document.body;
            el.scrollTo(0, 0); window.scrollTo(0, 0);
            return Math.max(el.scrollHeight, document.body.scrollHeight);
        }"""
    )
    height = int(min(max(height, VIEWPORT["height"]), 6000))
    pg.mouse.move(2, 2)  # no hover effects (the canvas toolbar) in the picture
    pg.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    try:  # charts re-render after the resize: wait until every vega chart has drawn itself
        pg.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].every(
                   e => e.querySelector('canvas, svg') && e.getBoundingClientRect().height > 20)""",
            timeout=10_000, polling=100)
    except Exception:
        print(f"[browser] {name}: a chart had not rendered within 10 s; taking the screenshot anyway")
    pg.wait_for_timeout(800)
    path = SHOTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    pg.set_viewport_size(VIEWPORT)
    return path


# Shapes in unit coordinates (x right, y down) of a canvas; strokes keep away from the top 30 px
# where the canvas toolbar sits before the first hover.
def _circle(cx=0.5, cy=0.57, r=0.28, n=28):
    return [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)) for k in range(n + 1)]


SHAPES = {
    "bar": [[(0.5, 0.25), (0.5, 0.9)]],
    "dash": [[(0.15, 0.58), (0.85, 0.58)]],
    "ring": [_circle()],
    "cross": [[(0.22, 0.28), (0.78, 0.88)], [(0.78, 0.28), (0.22, 0.88)]],
    "vee": [[(0.2, 0.28), (0.5, 0.88), (0.8, 0.28)]],
}


def draw(pg, canvas, strokes) -> None:
    """Draw polylines (unit coordinates) on one fabric ``canvas.upper-canvas`` locator."""
    canvas.scroll_into_view_if_needed()
    b = canvas.bounding_box()
    assert b and b["width"] > 40 and b["height"] > 40, f"canvas not visible: {b}"
    x0, y0 = b["x"], b["y"]
    w, h = b["width"], b["height"]
    top = 32 / h  # never start a stroke in the top 30 px
    pg.mouse.move(x0 + w / 2, y0 + h / 2)
    pg.wait_for_timeout(300)  # hover first: the hidden toolbar stops covering the canvas top
    for stroke in strokes:
        pts = [(x0 + u * w, y0 + max(v, top) * h) for u, v in stroke]
        pg.mouse.move(*pts[0])
        pg.mouse.down()
        for p in pts[1:]:
            pg.mouse.move(*p, steps=5)
        pg.mouse.up()
        pg.wait_for_timeout(150)


class Clock:
    """Prints how long each phase took (shows in CI logs with -s / on failure)."""

    def __init__(self, name: str):
        self.name, self.t0 = name, time.monotonic()
        self.last = self.t0

    def __call__(self, phase: str) -> None:
        now = time.monotonic()
        print(f"[browser:{self.name}] {phase}: {now - self.last:.1f}s (total {now - self.t0:.1f}s)")
        self.last = now


def _sidebar_link(pg, title: str):
    """The sidebar navigation link: clicking it keeps the session (page.goto would start a new one)."""
    return pg.locator('[data-testid="stSidebarNav"] a', has_text=title).first


def _open_page(pg, title: str) -> None:
    """Click the sidebar link, then wait for the page's own title (h1) and the end of the run."""
    _sidebar_link(pg, title).click()
    pg.get_by_role("heading", name=title, level=1).wait_for(state="visible", timeout=ACT_MS)
    _wait_app_idle(pg)


def _canvases(pg):
    return pg.locator("canvas.upper-canvas")


def _wait_text(pg, text: str, timeout=ACT_MS) -> None:
    pg.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout)


def _set_text_input(pg, label: str, value: str) -> None:
    box = pg.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    _wait_app_idle(pg)


def _choose(pg, label: str, option: str) -> None:
    """Pick ``option`` in the st.selectbox labelled ``label`` (a combobox: open it, click the option)."""
    combo = pg.get_by_role("combobox", name=label, exact=True)
    wanted = pg.get_by_role("option", name=option, exact=True)
    for attempt in range(3):
        if attempt == 0:
            combo.click()
        else:  # the list did not open on click: ask the combobox by keyboard
            combo.focus()
            pg.keyboard.press("ArrowDown")
        try:
            wanted.wait_for(state="visible", timeout=1500)
            break
        except Exception:
            continue  # seen: the first click focuses the combobox without opening it
    wanted.click()
    _wait_app_idle(pg)


def _prediction(pg, method_title: str, query: int = 1) -> tuple[str, str]:
    """``(predicted class, full line)`` of "Prediction for Query <q> (<method>): <class> — <p>%"."""
    prefix = f"Prediction for Query {query} ({method_title}):"
    line = pg.get_by_text(prefix, exact=False).first
    line.wait_for(state="visible", timeout=ACT_MS)
    text = " ".join(line.inner_text().split())
    m = re.search(re.escape(prefix) + r"\s*(.+?)\s+—\s+[\d.]+%", text)
    assert m, f"cannot parse the prediction line: {text!r}"
    return m.group(1).strip(), text


def _dump_model_inputs(pg, name: str) -> None:
    """On a wrong answer: save what the page shows (incl. the 'what the model sees' thumbnails)."""
    _save_failure(pg, name)


# Class names and shapes of the drawn 5-way 1-shot task; the query redraws QUERY_SHAPE.
TASK = [("bar", "bar"), ("dash", "dash"), ("ring", "ring"), ("cross", "cross"), ("vee", "vee")]
QUERY_SHAPE = os.environ.get("FEWSHOT_E2E_QUERY", "ring")  # any key of SHAPES


def _jitter(strokes, dx=0.03, dy=-0.02, scale=0.92):
    """The same shape drawn again, a little smaller and shifted (a person never redraws it exactly)."""
    return [[(0.5 + (u - 0.5) * scale + dx, 0.57 + (v - 0.57) * scale + dy) for u, v in s] for s in strokes]


def test_e2e_draw_classify_maml_embeddings(page):
    """Issue 4: draw a 5-way 1-shot task + a query, classify, step/play MAML, open the embedding plot."""
    clock = Clock("e2e")
    pg = page
    # ---- Home
    pg.get_by_role("heading", name="Few-shot learning lab", level=1).wait_for(timeout=LOAD_MS)
    _wait_app_idle(pg, LOAD_MS)
    _no_exception(pg)
    screenshot(pg, "home")
    clock("home")

    # ---- Build a task (sidebar link: keeps the session)
    _open_page(pg, "Build a task")
    for i, (name, _) in enumerate(TASK):
        _set_text_input(pg, f"Class {i + 1} name", name)
    clock("build page + class names")
    canvases = _canvases(pg)
    assert canvases.count() == len(TASK) + 1, f"expected {len(TASK)} support canvases + 1 query canvas"
    for i, (_, shape) in enumerate(TASK):
        draw(pg, canvases.nth(i), SHAPES[shape])
        _wait_text(pg, f"Class {i + 1}, example 1: drawn")
    draw(pg, canvases.nth(len(TASK)), _jitter(SHAPES[QUERY_SHAPE]))
    _wait_text(pg, "Query 1: drawn")
    _wait_app_idle(pg)
    _no_exception(pg)

    clock("drawing 6 canvases")
    # (the "Task status" line is outside the canvas fragments: it updates on the next full rerun)
    pg.get_by_role("button", name="Classify", exact=True).click()
    _wait_app_idle(pg)
    _no_exception(pg)
    _wait_text(pg, f"Task status: {len(TASK)}/{len(TASK)} classes have examples · 1 queries")
    predicted, line = _prediction(pg, "Prototypical Networks")
    print(f"[browser] {line}")
    if predicted != QUERY_SHAPE:
        _dump_model_inputs(pg, "build_wrong_prediction")
    screenshot(pg, "build")
    assert predicted == QUERY_SHAPE, (
        f"ProtoNet called the redrawn '{QUERY_SHAPE}' '{predicted}' ({line}); see out/browser/"
        "build_wrong_prediction.png for what the model saw")
    clock("classify + screenshot")

    # All methods side by side: every line is printed for the report; ProtoNet must still be right.
    _choose(pg, "Method", "All methods side by side")
    _wait_app_idle(pg)
    pg.get_by_role("button", name="Classify", exact=True).click()
    pg.get_by_text(re.compile(r"Prediction for Query 1 \((?!Prototypical Networks)")).first.wait_for(timeout=ACT_MS)
    _wait_app_idle(pg)
    lines = pg.get_by_text("Prediction for Query 1 (", exact=False).all_inner_texts()
    for text in lines:
        print("[browser]   " + " ".join(text.split()))
    assert len(lines) >= 2, lines
    assert _prediction(pg, "Prototypical Networks")[0] == QUERY_SHAPE
    clock("all methods side by side")

    # ---- Watch MAML adapt
    _open_page(pg, "Watch MAML adapt")
    _wait_text(pg, "Adapted: step 0 of")
    _wait_app_idle(pg)
    _no_exception(pg)
    pg.get_by_role("button", name="Step", exact=True).click()
    _wait_text(pg, "Adapted: step 1 of")
    pg.get_by_role("button", name="Step", exact=True).click()
    _wait_text(pg, "Adapted: step 2 of")
    # Play: record every step counter the page shows while it animates.
    pg.evaluate(
        """() => {
            window.__steps = [];
            const seen = () => {
                for (const m of document.body.innerText.matchAll(/Playing: step (\\d+) of (\\d+)/g))
                    if (window.__steps[window.__steps.length - 1] !== +m[1]) window.__steps.push(+m[1]);
            };
            window.__obs = new MutationObserver(seen);
            window.__obs.observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    pg.get_by_role("button", name="Play", exact=True).click()
    pg.get_by_text("(done)", exact=False).first.wait_for(timeout=ACT_MS)
    _wait_app_idle(pg)
    steps = pg.evaluate("() => { window.__obs.disconnect(); return window.__steps; }")
    done = " ".join(pg.get_by_text("Adapted: step", exact=False).first.inner_text().split())
    print(f"[browser] MAML play showed steps {steps}; final: {done}")
    assert len(steps) >= 2 and steps == sorted(steps), f"the step counter did not advance while playing: {steps}"
    _no_exception(pg)
    screenshot(pg, "maml")
    clock("MAML page")

    # ---- Embedding explorer
    _open_page(pg, "Embedding explorer")
    pg.wait_for_selector(".js-plotly-plot", timeout=ACT_MS)
    _wait_app_idle(pg)
    pg.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot .scatterlayer path.point').length >= 6", timeout=ACT_MS)
    n_points = pg.locator(".js-plotly-plot .scatterlayer path.point").count()
    n_traces = pg.locator(".js-plotly-plot .scatterlayer g.trace").count()
    print(f"[browser] embedding plot: {n_points} points in {n_traces} traces")
    # 5 support + 1 query + 5 prototypes
    assert n_points >= len(TASK) * 2 + 1
    _no_exception(pg)
    screenshot(pg, "embeddings")
    clock("embedding explorer")

    # ---- the other pages: render without an exception, and a screenshot each
    for title, name in [("Inside each method", "inside"), ("Benchmark", "benchmark"),
                        ("You vs the model", "human")]:
        _open_page(pg, title)
        screenshot(pg, name)
        clock(f"page {name}")


def test_two_sessions_see_their_own_task(browser, server):
    """Issue 6: two pages at once are two sessions; each keeps its own task and gets its own answer."""
    clock = Clock("2 sessions")
    pages = []
    for _ in range(2):
        pg = browser.new_page()
        pg.goto(server)
        pages.append(pg)
    try:
        for pg in pages:
            pg.bring_to_front()
            _wait_app_idle(pg, LOAD_MS)
            _open_page(pg, "Build a task")
            pg.get_by_role("button", name="Load the example task (synthetic symbols)").click()
            _wait_text(pg, "Task status: 5/5 classes have examples · 5 queries")
            _wait_app_idle(pg)
        clock("two sessions open with the example task")
        a, b = pages
        a.bring_to_front()
        _set_text_input(a, "Class 1 name", "only-in-A")
        # different drawings: A draws a circle query, B a vertical bar (example classes circle ... bar)
        clock("rename in A")
        a.bring_to_front()
        draw(a, _canvases(a).last, SHAPES["ring"])
        b.bring_to_front()
        draw(b, _canvases(b).last, SHAPES["bar"])
        clock("draw in both")
        for pg in pages:
            pg.bring_to_front()
            _wait_text(pg, "Query 1: drawn")
            _wait_app_idle(pg)
        clock("both drawings reached Python")
        for pg in pages:  # both clicks before either answer is read: the two runs overlap on the server
            pg.bring_to_front()
            pg.get_by_role("button", name="Classify", exact=True).click()
        for pg in pages:
            pg.bring_to_front()
            _wait_app_idle(pg)
            _no_exception(pg)
        clock("classify in both")
        pred_a, line_a = _prediction(a, "Prototypical Networks")
        pred_b, line_b = _prediction(b, "Prototypical Networks")
        print(f"[browser] session A: {line_a}\n[browser] session B: {line_b}")
        assert pred_a == "only-in-A", line_a      # A's renamed circle class
        assert pred_b == "bar", line_b
        assert a.get_by_text("only-in-A").count() > 0
        assert b.get_by_text("only-in-A").count() == 0, "session B shows session A's class name"
    finally:
        for pg in pages:
            pg.close()


def test_a_page_opened_by_its_own_link_gets_the_app_around_it(browser, server):
    """A shared link to /build on a fresh connection: the router's menu and sidebar, not the pages/ file list."""
    pg = browser.new_page()
    try:
        pg.goto(server.rstrip("/") + "/build")
        _wait_app_idle(pg, LOAD_MS)
        pg.get_by_role("heading", name="Build a task").first.wait_for(timeout=ACT_MS)
        _sidebar_link(pg, "Watch MAML adapt").wait_for(timeout=ACT_MS)  # the router's titles, not file names
        nav = pg.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "embeddings" not in nav.split() and "Embedding explorer" in nav, nav
        _no_exception(pg)
        _open_page(pg, "Watch MAML adapt")  # and the menu works from there
        pg.get_by_role("heading", name="Watch MAML adapt").first.wait_for(timeout=ACT_MS)
    except Exception:
        _save_failure(pg, "direct-link")
        raise
    finally:
        pg.close()


def _boxes(pg, kind: str) -> list[str]:
    """The texts of the page's alert boxes of one kind ("Error", "Warning", "Info", "Success")."""
    return pg.locator(f'[data-testid="stAlertContent{kind}"]').all_inner_texts()


# What a first visitor must see working at once on the pages that work on a task (issue 17): the page's marker of a
# working example, and the screenshot it leaves in docs/screenshots.
FIRST_VISIT_WORKS = {
    "maml": ("Adapted: step 0 of", "first-visit-maml"),
    "embeddings": (None, "first-visit-embeddings"),  # a plot of many points (checked below)
    "inside": ("Answer of Prototypical Networks for Query 1:", "first-visit-inside"),
}


def test_every_page_opened_first_shows_something_working(browser, server):
    """Issue 17: a page opened first in a fresh session (a shared link, a classroom handout) shows no error box and no
    exception, and the pages that work on a task show a labelled example working at once."""
    clock = Clock("first visits")
    pg = browser.new_page()
    try:
        pg.goto(server)
        _wait_app_idle(pg, LOAD_MS)
        links = pg.locator('[data-testid="stSidebarNav"] a')
        links.first.wait_for(timeout=ACT_MS)
        paths = [re.sub(r"^https?://[^/]+/?", "", href or "") for href in
                 [links.nth(k).get_attribute("href") for k in range(links.count())]]
    finally:
        pg.close()
    assert {"", "build", "maml", "embeddings", "inside", "benchmark", "human"} <= set(paths), paths
    seen = {}
    for path in paths:
        pg = browser.new_page()  # a new tab: a new session, its task store empty
        name = path or "home"
        try:
            pg.goto(server.rstrip("/") + "/" + path)
            _wait_app_idle(pg, LOAD_MS)
            _no_exception(pg)
            errors = _boxes(pg, "Error")
            assert errors == [], f"{name} opened first shows error boxes: {errors}"
            if name in FIRST_VISIT_WORKS:
                marker, shot = FIRST_VISIT_WORKS[name]
                assert _boxes(pg, "Warning") == [], f"{name} opened first shows warnings: {_boxes(pg, 'Warning')}"
                _wait_text(pg, "Example task")  # labelled as an example ...
                pg.get_by_role("link", name="Build your own task").first.wait_for(timeout=ACT_MS)  # ... with the way out
                if marker:
                    _wait_text(pg, marker)
                else:  # Omniglot when the data is there: 10 characters x 10 drawings + 10 prototypes
                    pg.wait_for_selector(".js-plotly-plot", timeout=ACT_MS)
                    pg.wait_for_function(
                        "() => document.querySelectorAll('.js-plotly-plot .scatterlayer path.point').length >= 20",
                        timeout=ACT_MS)
                    seen["embedding points"] = pg.locator(".js-plotly-plot .scatterlayer path.point").count()
                _wait_app_idle(pg)
                _no_exception(pg)
                screenshot(pg, shot)
            seen[name] = f"{len(_boxes(pg, 'Warning'))} warnings, {len(_boxes(pg, 'Info'))} info boxes"
            clock(name)
        except Exception:
            _save_failure(pg, f"first-visit-{name}")
            raise
        finally:
            pg.close()
    print(f"[browser] first visits: {seen}")
