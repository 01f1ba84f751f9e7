"""Models trained in this browser session (the *Watch meta-training* page): held in session state only, offered
beside the checkpoints of their method in the sidebar, never written to disk, gone when the session ends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import streamlit as st

import fewshot

KEY = "session_models"
PREFIX = "session:"
MAX_KEPT = 5  # per session; the oldest goes first (each Conv-4 holds ~0.5 MB)


@dataclass
class SessionModel:
    """A trained model of this session, read-only from now on (pages work on private copies)."""

    id: str
    method: str
    model: Any
    meta: dict
    title: str
    key: str  # unique in the process: caches keyed on it never mix two sessions' models


def _models() -> dict[str, SessionModel]:
    return st.session_state.setdefault(KEY, {})


def add(result: fewshot.LiveResult, title: str) -> str:
    """Keep a live run's model for this session (the last :data:`MAX_KEPT`); returns its id (what the sidebar's
    checkpoint choice holds)."""
    model = result.model
    fewshot.use_fast_layout(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    models = _models()
    used = st.session_state.setdefault(f"{KEY}_ids", set())  # an id is never given twice, even once let go
    model_id = f"{PREFIX}{title}"
    n = 2
    while model_id in used:
        model_id, n = f"{PREFIX}{title} #{n}", n + 1
    used.add(model_id)
    models[model_id] = SessionModel(model_id, result.method, model, dict(result.metadata), title,
                                    f"{model_id}:{uuid.uuid4().hex}")
    while len(models) > MAX_KEPT:  # a page still set to the dropped one falls back to a checkpoint
        models.pop(next(iter(models)))
    return model_id


def ids(method: str) -> list[str]:
    """This session's models of ``method``, oldest first."""
    return [m.id for m in _models().values() if m.method == method]


def get(model_id: str) -> SessionModel | None:
    return _models().get(model_id)


def is_session_model(model_id: str | None) -> bool:
    return isinstance(model_id, str) and model_id.startswith(PREFIX)


def describe(model_id: str) -> str:
    """One line for the sidebar: how it was trained and its accuracy on never-seen characters."""
    model = get(model_id)
    if model is None:
        return "no longer available"
    run = model.meta.get("live_run", {})
    config = run.get("config", {})
    accuracy = run.get("eval_accuracy")
    parts = ["trained in this session, not saved",
             f"{config.get('n_way', '?')}-way {config.get('n_shot', '?')}-shot, {model.meta.get('steps_done', '?')} "
             "episodes"]
    if accuracy is not None:
        parts.append(f"{100 * accuracy:.1f}% on never-seen characters ({config.get('eval_tasks', '?')} tasks)")
    return " · ".join(parts)
