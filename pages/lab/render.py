"""Showing results and messages: percentages and verdicts, probability tables, the example-task banner and the one
box that lists what a task still lacks."""

from __future__ import annotations

import numpy as np
import streamlit as st

from .task import TaskView


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def verdict(pred: int, truth: int | None) -> str:
    if truth is None:
        return ""
    return "✓ right" if pred == truth else "✗ wrong"


def probability_frame(probabilities: np.ndarray, names: list[str]):
    import pandas as pd

    return pd.DataFrame({"class": names, "probability": probabilities.astype(float)})


def probability_columns(columns) -> dict:
    """``column_config`` drawing each of ``columns`` (probabilities) as a bar with a percentage."""
    return {c: st.column_config.ProgressColumn(c, min_value=0.0, max_value=1.0, format="percent") for c in columns}


def _listed(messages: list[str]) -> str:
    return messages[0] if len(messages) == 1 else "\n".join(f"- {m}" for m in messages)


def show_problems(view: TaskView) -> None:
    """What stops the task (one error box) and what is odd about it (one warning box), each as a list."""
    if view.errors:
        st.error(_listed(view.errors))
    if view.warnings:
        st.warning(_listed(view.warnings))


def example_banner(view: TaskView, own: TaskView) -> None:
    """On pages that work on the task: say when an example stands in for the user's own task (see :func:`example_box`)."""
    if view.example is not None:
        example_box(view.example, own)


def example_box(description: str, own: TaskView) -> None:
    """One box: what the example shown is, the one way to switch (a link to *Build a task*), and, when the user has
    started a task of their own, what it still lacks."""
    with st.container(border=True):
        st.markdown(f"**Example task**: {description}. This page shows it until you build a task of your own.")
        st.page_link("pages/build.py", label="Build your own task", icon=":material/draw:")
        if not own.is_empty:
            missing = own.errors or ([] if own.queries else own.warnings)
            st.caption("Your own task is not complete yet, so the example is shown:\n" + _listed(missing))
