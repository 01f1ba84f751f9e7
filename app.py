"""Few-shot lab: the router. Run with ``streamlit run app.py``; pages live in ``pages/``, their shared toolbox in
``pages/lab/`` (one module per concept; the computing itself is ``fewshot.inspection``).

Every script run (each session, each rerun) executes this file as ``__main__``: that is the router below.
``streamlit run app.py`` also finds the ``app = st.App(...)`` at the bottom and imports this file once, at server
start, as the module ``app``. Its lifespan hook imports the lab (torch and fewshot: ~3 s of CPU here) and the modules
of the next pages in a background thread while the browser is still loading the page, so the first visitor does not
wait for them (``benchmarks/speed.py --only demo``, ``app_ready``).
"""

import sys

import streamlit as st

from pages.lab import patches

patches.keep_upload_answers_through_queue_clears()  # before any session exists; idempotent
patches.read_component_metadata_headers_only()  # before the server starts (its component scan)

if __name__ == "__main__":
    from pages.lab import runtime, sidebar

    st.set_page_config(page_title="Few-shot lab", page_icon=":material/draw:", layout="wide")

    PAGES = [
        st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
        st.Page("pages/build.py", title="Build a task", icon=":material/draw:", url_path="build"),
        st.Page("pages/maml.py", title="Watch MAML adapt", icon=":material/animation:", url_path="maml"),
        st.Page("pages/sine.py", title="MAML on sine waves", icon=":material/show_chart:", url_path="sine"),
        st.Page("pages/embeddings.py", title="Embedding explorer", icon=":material/scatter_plot:", url_path="embeddings"),
        st.Page("pages/train_live.py", title="Watch meta-training", icon=":material/model_training:",
                url_path="train"),
        st.Page("pages/benchmark.py", title="Benchmark", icon=":material/bar_chart:", url_path="benchmark"),
        st.Page("pages/inside.py", title="Inside each method", icon=":material/manage_search:", url_path="inside"),
        st.Page("pages/human.py", title="You vs the model", icon=":material/person:", url_path="human"),
    ]

    runtime.configure_torch()
    page = st.navigation(PAGES)
    sidebar.sidebar()
    try:
        runtime.run_page(page)
    finally:  # let the server-start warm-up (below) go on with the other pages' modules
        started = sys.modules.get("app")  # this file as `streamlit run` imported it at server start
        if started is not None and hasattr(started, "first_page_done"):
            started.first_page_done.set()
else:  # imported once by `streamlit run app.py` at server start, to find the ASGI app below
    import importlib
    import threading
    import time
    from contextlib import asynccontextmanager

    # What the pages import, in the order they need it: the router and home page need the lab's runtime, sidebar,
    # examples and render (torch, fewshot); Build a task adds the widgets and, once it shows results, pandas. The later ones wait until a first page has been shown
    # (or a minute) so as not to compete with it for the CPU. Only imports: models and data load on first use.
    # (The page icons are Material icons, not emoji: an emoji icon makes Streamlit import its emoji table, ~0.1 s
    # of CPU holding the GIL, 0.2-0.3 s of the first page's time on two busy cores.)
    FIRST_PAGE_MODULES = ("pages.lab.runtime", "pages.lab.sidebar", "pages.lab.examples", "pages.lab.render")
    LATER_MODULES = ("pages.lab.widgets", "pages.lab.points", "pandas")
    first_page_done = threading.Event()
    LATER_IMPORTS_AFTER_S = 2.0

    def warm_up() -> None:
        for name in FIRST_PAGE_MODULES:
            importlib.import_module(name)  # a script run importing the same module waits for this one (import lock)
        first_page_done.wait(60)
        # The first script run has ended, but the browser is still fetching the page's components (one script file
        # per kind of element) from this process's event loop and drawing them; an import now would hold the GIL
        # against those requests. A click that needs one of these modules sooner just imports it itself.
        time.sleep(LATER_IMPORTS_AFTER_S)
        for name in LATER_MODULES:
            importlib.import_module(name)

    def open_browser() -> None:
        """What plain `streamlit run` does when not headless (in st.App mode Streamlit leaves it out)."""
        if st.get_option("server.headless"):
            return
        try:
            from streamlit import cli_util
            from streamlit.web.server import server_util

            cli_util.open_browser(server_util.get_url(st.get_option("browser.serverAddress") or "localhost"))
        except Exception as exc:  # Streamlit internals; the URL is printed anyway
            print(f"Could not open a browser ({exc}); open the URL above.")

    @asynccontextmanager
    async def lifespan(_app):
        threading.Thread(target=warm_up, name="fewshot-warm-up", daemon=True).start()
        open_browser()
        yield

    app = st.App(__file__, lifespan=lifespan)
