"""Start-up of the Streamlit lab (issue 5, "the app ready to use <= 5 s after start").

``streamlit run app.py`` must find the ASGI app in ``app.py`` (so its lifespan hook runs at server start), importing
``app.py`` as a module must not run the router, and the hook must import what the first pages need in the background.
The timing itself is ``benchmarks/speed.py --only demo`` (``app_ready``); the pages are covered by ``test_app.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: this process has long imported torch and the lab.
CHILD = r"""
import asyncio, gc, json, sys, threading
sys.path.insert(0, sys.argv[1])
import app  # what `streamlit run app.py` does at server start (module name "app", not "__main__")
import streamlit as st
out = {"is_st_app": isinstance(app.app, st.App), "heavy_after_import": [m for m in ("pages.lab.runtime", "torch", "fewshot") if m in sys.modules]}

async def serve_start():
    async with app.lifespan(app.app):
        pass

asyncio.run(serve_start())
warm = [t for t in threading.enumerate() if t.name == "fewshot-warm-up"]
out["warm_up_threads"] = len(warm)
while not all(m in sys.modules for m in app.FIRST_PAGE_MODULES) and warm[0].is_alive():
    warm[0].join(0.05)
out["later_before_first_page"] = [m for m in app.LATER_MODULES if m in sys.modules]
app.first_page_done.set()  # what the router does after its first page
warm[0].join(120)
out["warm"] = {m: m in sys.modules for m in app.FIRST_PAGE_MODULES + app.LATER_MODULES}
from pages.lab import runtime
runtime.configure_torch()
out["frozen"] = gc.get_freeze_count()
print(json.dumps(out))
"""


def test_streamlit_run_finds_the_asgi_app_and_importing_it_does_not_run_the_router():
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(REPO / "app.py")
    assert found.is_asgi_app and found.import_string == "app:app"

    proc = subprocess.run([sys.executable, "-c", CHILD, str(REPO)], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["is_st_app"]
    assert out["heavy_after_import"] == [], "importing app.py ran the router (or imported torch) at server start"
    assert out["warm_up_threads"] == 1
    assert all(out["warm"].values()), f"the warm-up did not import: {out['warm']}"
    assert "pages.lab.runtime" in out["warm"] and "pandas" in out["warm"]
    assert out["later_before_first_page"] == [], "the later pages' modules were imported before the first page"
    # configure_torch freezes the objects of the imports, so Streamlit's gc.collect() after each run skips them
    assert out["frozen"] > 50_000
