"""The one sidebar every page shares (drawn by app.py): the device and a checkpoint per method."""

from __future__ import annotations

import streamlit as st

import fewshot

from . import session_models
from .checkpoints import (checkpoint_dir, default_checkpoint, describe_checkpoint, device_options, list_checkpoints,
                          method_label)


def sidebar() -> None:
    """Keys ``device`` and ``ckpt_<method>``; the extra folder in ``ckpt_extra_dir``."""
    by_method, metas, problems = list_checkpoints()
    with st.sidebar:
        st.markdown("### Models")
        options = device_options()
        if st.session_state.get("device") not in options:
            st.session_state["device"] = options[-1]
        st.radio("Device", options, key="device", horizontal=True, index=options.index(st.session_state["device"]),
                 help="Where models run. 'cuda' appears when a GPU is available.")
        if not any(by_method.values()):
            st.warning(f"No checkpoints found in `{checkpoint_dir()}`. Train one with `python -m fewshot train "
                       "... --out checkpoints/lake/protonet.safetensors`, or set FEWSHOT_CHECKPOINT_DIR.")
        with st.expander("Checkpoints", expanded=False):
            st.caption(f"Every `*.safetensors` under `{checkpoint_dir()}`. Defaults: the *lake* protocol "
                       "(never saw the evaluation alphabets).")
            for method in fewshot.METHODS:
                paths = by_method[method] + session_models.ids(method)
                if not paths:
                    st.caption(f"**{method_label(method)}**: no checkpoint")
                    continue
                key = f"ckpt_{method}"
                if st.session_state.get(key) not in paths:
                    st.session_state[key] = default_checkpoint(method, paths)
                chosen = st.selectbox(method_label(method), paths, key=key, index=paths.index(st.session_state[key]))
                st.caption(session_models.describe(chosen) if session_models.is_session_model(chosen)
                           else describe_checkpoint(metas[chosen], chosen))
            st.text_input("Also look in this folder", key="ckpt_extra_dir", placeholder="/path/to/my/checkpoints",
                          value=st.session_state.get("ckpt_extra_dir") or "",
                          help="Your own checkpoints (written by `python -m fewshot train`), on the machine "
                               "running the app.")
            for problem in problems:
                st.caption(f"Skipped: {problem}")
