"""Load test: N concurrent browser sessions against one ``streamlit run app.py`` server (issue 6).

    python benchmarks/load_test.py [--sessions 20] [--out benchmarks/results/load_test.json]

Starts the app on a free loopback port (shipped checkpoints, ``checkpoints/``), then one headless chromium
(``/usr/bin/chromium``, Playwright) with one browser context per session, all at once. Every session:

1. opens the app and, from the sidebar, *Build a task*; loads the example task (five synthetic symbols), removes its queries;
2. renames one class to a name only it uses (``s07-triangle``) and uploads, as its query, a byte-for-byte copy
   of that class's support image, marking the true class, so the right answer is known and is different in
   every session;
3. **classify**: clicks *Classify* (ProtoNet) and waits for the answer;
4. **adapt**: opens *Watch MAML adapt*, clicks *Step* (one inner step) and then *Play* (all steps, animated
   with 0.25 s per step by the page) and reads MAML's query accuracy.

With ``--live-run`` one more session first starts a meta-training run on *Watch meta-training* (2,000 episodes,
ProtoNet, its page open and polling) and the sessions above are measured while it trains; the JSON says how many
episodes it ran during them. Compare ``classify_s`` with and without it.

Latency = click to the answer on screen (the page idle again). The JSON has p50/p90/p99 per operation, every
session's answers and whether each was right for its own session (a session answered with another session's
class name would be wrong). This is a benchmark, not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = os.environ.get("FEWSHOT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
        "--disable-backgrounding-occluded-windows"]
ACTION_MS = 300_000
IDLE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') === 'running') return false;
    return !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]');
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log_path: Path, trace_path: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **({"FEWSHOT_TRACE_FILE": str(trace_path)} if trace_path else {})})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError("streamlit not healthy after 120 s")


async def idle(page) -> None:
    await page.wait_for_selector('[data-testid="stApp"]', timeout=ACTION_MS)
    await page.wait_for_function(IDLE_JS, timeout=ACTION_MS, polling=100)
    if await page.locator('[data-testid="stException"]').count():
        raise RuntimeError("exception in page: " + (await page.locator('[data-testid="stException"]').first.inner_text())[:500])


async def wait_text(page, text: str) -> None:
    await page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=ACTION_MS)


async def choose(page, label: str, option: str) -> None:
    combo = page.get_by_role("combobox", name=label, exact=True)
    wanted = page.get_by_role("option", name=option, exact=True)
    for attempt in range(5):
        if attempt == 0:
            await combo.click()
        else:
            await combo.focus()
            await page.keyboard.press("ArrowDown")
        try:
            await wanted.wait_for(state="visible", timeout=3000)
            break
        except Exception:
            continue
    await wanted.click()
    await idle(page)


async def session(browser, url: str, k: int, support_png: list[bytes], symbols: list[str], start: asyncio.Event,
                  args_shots: str | None = None) -> dict:
    c = k % len(symbols)
    own = f"s{k:02d}-{symbols[c]}"
    record: dict = {"session": k, "own_class": own, "errors": [], "timeline": []}

    def mark(what: str) -> None:  # wall-clock times, to line up with the server's run trace
        record["timeline"].append([round(time.time(), 3), what])

    ctx = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await ctx.new_page()
    page.set_default_timeout(ACTION_MS)
    try:
        await start.wait()
        t0 = time.perf_counter()
        # (the home page, then the sidebar link: a deep link to /build runs pages/build.py without app.py's router)
        await page.goto(url, timeout=ACTION_MS)
        await page.get_by_role("heading", name="Few-shot learning lab", level=1).wait_for(timeout=ACTION_MS)
        await idle(page)
        record["open_home_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await page.locator('[data-testid="stSidebarNav"] a', has_text="Build a task").first.click()
        await page.get_by_role("heading", name="Build a task", level=1).wait_for(timeout=ACTION_MS)
        await idle(page)
        record["open_build_s"] = time.perf_counter() - t0
        mark("load example")
        await page.get_by_role("button", name="Load the example task (synthetic symbols)").click()
        await wait_text(page, "Task status: 5/5 classes have examples · 5 queries")
        await idle(page)
        mark("remove queries")
        await page.get_by_role("button", name="Remove uploaded queries").click()
        await wait_text(page, "Task status: 5/5 classes have examples · 0 queries")
        await idle(page)
        box = page.get_by_label(f"Class {c + 1} name", exact=True)
        mark("rename class")
        await box.fill(own)
        await box.press("Enter")
        await idle(page)
        record["upload_attempts"] = 0
        while True:  # dropped again only if the page, idle, still shows no query (what a user would do)
            record["upload_attempts"] += 1
            mark(f"upload query (attempt {record['upload_attempts']})")
            uploader = page.locator('[data-testid="stFileUploader"]', has_text="Upload query images")
            await uploader.locator('input[type="file"]').set_input_files(
                files=[{"name": f"query-{k:02d}.png", "mimeType": "image/png", "buffer": support_png[c]}])
            status = page.get_by_text("Task status: 5/5 classes have examples · 1 queries").first
            try:
                await status.wait_for(state="visible", timeout=90_000)
                break
            except Exception:
                await idle(page)
                if await status.count():
                    break
                if record["upload_attempts"] >= 3 or not await page.get_by_text("· 0 queries").count():
                    raise
        await idle(page)
        mark("choose true class")
        await choose(page, "True class", own)

        # ---- classify (ProtoNet, the page's default method)
        t0 = time.perf_counter()
        mark("click classify")
        await page.get_by_role("button", name="Classify", exact=True).click()
        line = page.get_by_text("Prediction for Query 1 (Prototypical Networks):", exact=False).first
        await line.wait_for(state="visible", timeout=ACTION_MS)
        await idle(page)
        record["classify_s"] = time.perf_counter() - t0
        text = " ".join((await line.inner_text()).split())
        m = re.search(r"\(Prototypical Networks\):\s*(.+?)\s+—", text)
        record["protonet_answer"] = m.group(1) if m else text
        record["protonet_right"] = bool(m) and m.group(1) == own and "✓ right" in text

        # ---- adapt (MAML): open the page (step 0 computed), one Step, then Play to the end
        t0 = time.perf_counter()
        await page.locator('[data-testid="stSidebarNav"] a', has_text="Watch MAML adapt").first.click()
        await wait_text(page, "Adapted: step 0 of")
        await idle(page)
        record["maml_open_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mark("click step")
        await page.get_by_role("button", name="Step", exact=True).click()
        await wait_text(page, "Adapted: step 1 of")
        await idle(page)
        record["maml_step_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mark("click play")
        await page.get_by_role("button", name="Play", exact=True).click()
        await wait_text(page, "(done)")
        await idle(page)
        record["maml_play_s"] = time.perf_counter() - t0
        metric = page.locator('[data-testid="stMetric"]', has_text="Query accuracy").first
        value = " ".join((await metric.inner_text()).split())
        record["maml_query_accuracy"] = value
        record["maml_right"] = value.endswith("1/1")
        # no other session's class name anywhere on this session's page
        body = await page.locator("body").inner_text()
        record["sees_other_sessions"] = sorted(set(re.findall(r"s\d\d-[a-z]+", body)) - {own})
    except Exception as exc:  # reported in the JSON: a failure is a result of a load test
        mark("failed")
        record["errors"].append(f"{type(exc).__name__}: {str(exc)[:500]}")
        try:  # what the page showed when the session gave up
            record["page_text_at_failure"] = " ".join((await page.locator("body").inner_text(timeout=10_000)).split())[-3000:]
            if args_shots:
                await page.screenshot(path=str(Path(args_shots) / f"session-{k:02d}.png"), full_page=True, timeout=20_000)
        except Exception as exc2:
            record["page_text_at_failure"] = f"(could not read the page: {type(exc2).__name__})"
    finally:
        await ctx.close()
    return record


async def start_live_run(browser, url: str) -> tuple:
    """``--live-run``: a session that starts a 2,000-episode run on *Watch meta-training* and keeps its page open."""
    ctx = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await ctx.new_page()
    page.set_default_timeout(ACTION_MS)
    await page.goto(url, timeout=ACTION_MS)
    await idle(page)
    await page.locator('[data-testid="stSidebarNav"] a', has_text="Watch meta-training").first.click()
    await page.get_by_role("heading", name="Watch meta-training", level=1).wait_for(timeout=ACTION_MS)
    await idle(page)
    box = page.get_by_label("Episodes", exact=True)
    await box.fill("2000")
    await box.press("Enter")  # a form's text box submits it: Start
    await wait_text(page, "running: episode")
    return ctx, page, time.perf_counter()


async def finish_live_run(ctx, page, t0: float) -> dict:
    """How far the run got while the sessions were measured; then Stop."""
    seconds = time.perf_counter() - t0
    line = " ".join((await page.get_by_text(": episode", exact=False).first.inner_text()).split())
    m = re.search(r"(\w+): episode (\d+) of (\d+)", line)
    record = {"state_at_end": m.group(1) if m else line, "episodes_done": int(m.group(2)) if m else None,
              "seconds": round(seconds, 1)}
    if m and m.group(1) == "running":
        await page.locator(".st-key-live_stop button").first.click()
        await wait_text(page, "stopped: episode")
    await ctx.close()
    return record


def percentiles(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"n": 0}
    v = np.asarray(values)
    return {"n": len(values), "p50": round(float(np.percentile(v, 50)), 3), "p90": round(float(np.percentile(v, 90)), 3),
            "p99": round(float(np.percentile(v, 99)), 3), "max": round(float(v.max()), 3)}


async def run(args) -> dict:
    from playwright.async_api import async_playwright

    from fewshot.symbols import synthetic_task

    example = synthetic_task(5, 1, 1, seed=0)  # exactly what "Load the example task" installs
    support_png = [pngs[0] for pngs in example.support]
    port = free_port()
    log_path = Path(args.log)
    trace_path = Path(args.trace)
    trace_path.unlink(missing_ok=True)
    if args.screenshots:
        Path(args.screenshots).mkdir(parents=True, exist_ok=True)
    server = start_server(port, log_path, trace_path)
    url = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            live = await start_live_run(browser, url) if args.live_run else None
            start = asyncio.Event()
            tasks = [asyncio.create_task(session(browser, url, k, support_png, example.names, start, args.screenshots))
                     for k in range(args.sessions)]
            start.set()  # every session starts at once
            records = await asyncio.gather(*tasks)
            live_run = await finish_live_run(*live) if live else None
            await browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    wall = time.perf_counter() - t_start
    ops = {op: percentiles([r[op] for r in records if op in r])
           for op in ("open_home_s", "open_build_s", "classify_s", "maml_open_s", "maml_step_s", "maml_play_s")}
    done = [r for r in records if not r["errors"]]
    summary = {
        "sessions": args.sessions, "completed": len(done),
        "protonet_right": sum(bool(r.get("protonet_right")) for r in records),
        "maml_right": sum(bool(r.get("maml_right")) for r in records),
        "saw_another_session": sum(bool(r.get("sees_other_sessions")) for r in records),
        "errors": sum(bool(r["errors"]) for r in records),
        "wall_s": round(wall, 1),
        "live_run_during_sessions": live_run,
    }
    server_log = log_path.read_text(errors="replace")
    runs = [json.loads(line) for line in trace_path.read_text().splitlines() if line.strip()] \
        if trace_path.exists() else []
    for r in records:  # a failed session's own script runs (its class name is in its task), beside its timeline
        if r["errors"]:
            r["server_runs"] = [run for run in runs if r["own_class"] in run.get("names", [])]
    outcomes: dict[str, int] = {}
    for run_ in runs:
        outcomes[run_["outcome"]] = outcomes.get(run_["outcome"], 0) + 1
    return {
        "command": "python benchmarks/load_test.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                    "note": "a shared machine: other processes (other engineers' tests) ran at the same time"},
        "app": {"checkpoints": "checkpoints/lake (shipped)", "torch_threads": os.environ.get("FEWSHOT_TORCH_THREADS", "1"),
                "classify_method": "protonet", "maml_inner_steps": 5, "maml_play_sleep_per_step_s": 0.25},
        "summary": summary,
        "latency_s": ops,
        "server_log_tracebacks": server_log.count("Traceback"),
        "server_runs": {"traced": len(runs), "outcomes": outcomes},
        "sessions_detail": records,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load_test.json"))
    parser.add_argument("--log", default="/tmp/fewshot-load-test-server.log")
    parser.add_argument("--trace", default="/tmp/fewshot-load-test-trace.jsonl",
                        help="the server's run trace (FEWSHOT_TRACE_FILE): one JSON line per script run")
    parser.add_argument("--screenshots", default=None, help="folder for a screenshot of every session that fails")
    parser.add_argument("--live-run", action="store_true",
                        help="measure the sessions while another session runs meta-training (Watch meta-training)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"summary": result["summary"], "latency_s": result["latency_s"]}, indent=1))
    return 0 if result["summary"]["completed"] == result["summary"]["sessions"] else 1


if __name__ == "__main__":
    sys.exit(main())
