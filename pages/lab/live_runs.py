"""This session's live meta-training run (``fewshot.live``) for the *Watch meta-training* page: the data it trains
and evaluates on (shared, read-only), starting and stopping, and keeping its model for the other pages."""

from __future__ import annotations

import streamlit as st

import fewshot
from fewshot.live import LIVE_METHODS, LIMITS

from . import checkpoints, data, session_models

RUN_KEY = "live_run"
KEPT_KEY = "live_kept"  # id(run) -> session model id, so a run's model is kept once
ENCODER_METHODS = ("protonet", "maml", "fomaml", "matching", "siamese", "finetune")  # a 64-filter Conv-4 backbone

__all__ = ["LIVE_METHODS", "LIMITS", "current", "start", "stop", "keep", "use", "encoder_options", "encoder_path",
           "method_title", "owner"]


def owner() -> str:
    """This browser session (one run per session)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def current() -> fewshot.LiveRun | None:
    return st.session_state.get(RUN_KEY)


def encoder_options() -> list[str]:
    """Checkpoint ids whose Conv-4 can start a run: trained on the lake protocol (never saw the evaluation
    alphabets the run is measured on), 28×28 ink, 64 filters."""
    by_method, metas, _ = checkpoints.list_checkpoints()
    out = []
    for method in ENCODER_METHODS:
        for cid in by_method.get(method, []):
            meta = metas[cid]
            kwargs = meta.get("method_kwargs", {})
            if (meta.get("protocol") == "lake" and int(meta.get("image_size", 28)) == 28
                    and int(kwargs.get("hidden", 64)) == 64 and not kwargs.get("backbone")):
                out.append(cid)
    return out


def start(config: fewshot.LiveConfig) -> str | None:
    """Start this session's run; ``None``, or the message saying why it did not start (the lab is full, a run of
    this session is going, the data is missing)."""
    train_set = data.omniglot("lake", "train", 28, explain=False)
    test_set = data.omniglot("lake", "test", 28, explain=False)
    if train_set is None or test_set is None:
        return "Omniglot was not found, so there is nothing to train on (set FEWSHOT_DATA_DIR)."
    try:
        run = fewshot.LiveRun(config, train_set, test_set, owner=owner()).start()
    except (fewshot.RunLimitError, ValueError) as exc:
        return str(exc)
    st.session_state[RUN_KEY] = run
    return None


def stop() -> None:
    """Callback of the Stop button."""
    run = current()
    if run is not None:
        run.stop()


def method_title(choice: str) -> str:
    """The page's method choices: the registry's methods, and ``protomaml`` (first-order MAML, prototype head)."""
    return "Proto-MAML (first order)" if choice == "protomaml" else checkpoints.method_label(choice)


def encoder_path(checkpoint_id: str) -> str:
    return str(checkpoints.checkpoint_dir() / checkpoint_id)


def keep(run: fewshot.LiveRun) -> str | None:
    """The session-model id of a finished or stopped run's model (kept the first time), ``None`` without one."""
    result = run.result
    if result is None:
        return None
    kept = st.session_state.setdefault(KEPT_KEY, {})
    if id(run) not in kept:
        config = run.config
        start_from = "from a shipped encoder" if config.init else "from scratch"
        name = "Proto-MAML (first order)" if config.proto_head else checkpoints.method_label(config.method)
        title = (f"{name}, {config.n_way}-way {config.n_shot}-shot, "
                 f"{result.steps} episodes {start_from}")
        kept[id(run)] = session_models.add(result, title)
    return kept[id(run)]


def use(model_id: str, method: str) -> None:
    """Callback: pick a session model for ``method`` on every page (the sidebar's checkpoint choice)."""
    st.session_state[f"ckpt_{method}"] = model_id
