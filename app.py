"""Few-shot lab: the router. Run with ``streamlit run app.py``; pages live in ``pages/``, shared helpers in ``ui.py``."""

import streamlit as st

import ui

st.set_page_config(page_title="Few-shot lab", page_icon="✏️", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", url_path="home", default=True),
    st.Page("pages/build.py", title="Build a task", icon="✏️", url_path="build"),
    st.Page("pages/maml.py", title="Watch MAML adapt", icon="🎞️", url_path="maml"),
    st.Page("pages/embeddings.py", title="Embedding explorer", icon="🗺️", url_path="embeddings"),
    st.Page("pages/benchmark.py", title="Benchmark", icon="📊", url_path="benchmark"),
    st.Page("pages/inside.py", title="Inside each method", icon="🔍", url_path="inside"),
    st.Page("pages/human.py", title="You vs the model", icon="🧑", url_path="human"),
]

ui.configure_torch()
page = st.navigation(PAGES)
st.session_state["_page"] = page.url_path or "home"
ui.sidebar()
ui.run_page(page)
