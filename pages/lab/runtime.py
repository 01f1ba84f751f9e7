"""The lab's process and script runs: torch's set-up, the router wrapper every page runs inside, and the run trace
the load test reads."""

from __future__ import annotations

import gc
import json
import os
import runpy
import threading
import time
from typing import Any

import streamlit as st
import torch

from . import task
from .checkpoints import REPO

TRACE_FILE = os.environ.get("FEWSHOT_TRACE_FILE")
_trace_lock = threading.Lock()
_router = threading.local()  # one script run = one thread: is app.py's router running this page?
_torch_configured = False


def configure_torch() -> None:
    """Once per process: torch's CPU thread count (``FEWSHOT_TORCH_THREADS``, default 1).

    The app's work is many tiny forward passes, often from several sessions at once; one intra-op thread per
    pass avoids oversubscription, which made a 5-way classification ~10x slower on a busy two-core machine.
    """
    global _torch_configured
    if not _torch_configured:
        torch.set_num_threads(max(1, int(os.environ.get("FEWSHOT_TORCH_THREADS", "1"))))
        # Streamlit runs a full gc.collect() after every script run; with torch, numpy and streamlit loaded that
        # walks ~240,000 objects (0.2 s on this CPU, holding the GIL) for nothing: they live as long as the
        # process. Freezing them once leaves those collections only the objects made since.
        gc.freeze()
        _torch_configured = True


def run_page(page: Any) -> None:
    """app.py: run the selected page, marked as routed (see :func:`require_router`).

    With ``FEWSHOT_TRACE_FILE`` set, every script run appends one JSON line there: session, page, start time,
    duration, how it ended (``done``, ``rerun`` = interrupted by a newer request, ``stop``, or an exception's
    name) and the marks the page left with :func:`trace` (what was clicked, what was computed). It is how the
    load test (``benchmarks/load_test.py``) tells a lost click from a slow one.
    """
    _router.active = True
    _router.marks = []
    started, outcome = time.time(), "done"
    try:
        page.run()
    except BaseException as exc:
        name = type(exc).__name__
        outcome = {"RerunException": "rerun", "StopException": "stop"}.get(name, name)
        raise
    finally:
        _router.active = False
        if TRACE_FILE:
            _write_trace(page, started, outcome)
        _router.marks = None  # a fragment's own rerun (no page run around it) is not traced


def trace(mark: str) -> None:
    """Note what this script run did (a click seen, a result computed) in the run trace; free when tracing is off."""
    if TRACE_FILE:
        marks = getattr(_router, "marks", None)
        if marks is not None:
            marks.append(f"{mark}@{time.time():.3f}")


def _write_trace(page: Any, started: float, outcome: str) -> None:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        line = {"t": round(started, 3), "dt": round(time.time() - started, 3), "outcome": outcome,
                "session": ctx.session_id if ctx else None, "page": getattr(page, "url_path", None) or "home",
                "names": task.store().user_names(), "marks": getattr(_router, "marks", [])}
        with _trace_lock, open(TRACE_FILE, "a") as f:
            f.write(json.dumps(line) + "\n")
    except Exception:  # a trace must never break the page
        pass


def require_router() -> None:
    """Every page starts here. A page opened by its own link (``/build``) on a fresh connection is run by
    Streamlit's ``pages/`` folder convention without app.py: no sidebar, file names as the menu. Then
    app.py runs instead; its ``st.navigation`` picks the same page from the URL and runs it properly."""
    if not getattr(_router, "active", False):
        runpy.run_path(str(REPO / "app.py"), run_name="__main__")
        st.stop()
