"""MAML on sine waves: the regression of Finn et al. 2017 (section 5.1, Figure 2), one inner step at a time.

Self-contained: imports ``fewshot``, Streamlit and plotly (and pandas, for plotly) only. The two models are the shipped
``checkpoints/sine/{maml,pretrained}.safetensors``; both adapt with the same SGD (``fewshot.adaptation_curves``,
i.e. ``fewshot.adapt`` with mean-squared error), and nothing here changes them.
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from pathlib import Path

# Imported, not used: plotly's validators look pandas up in sys.modules without the import lock, so while the
# app's warm-up thread is still importing pandas (app.py) a figure built here met a half-initialised module
# ("partially initialized module 'pandas' has no attribute 'Series'"). This import waits for that one to finish.
import pandas  # noqa: F401
import plotly.graph_objects as go
import streamlit as st
import torch

import fewshot
from fewshot.sine import (AMPLITUDE_RANGE, DIVERGED_MSE, PHASE_RANGE, X_RANGE, SineTaskSampler, adaptation_curves,
                          query_grid)

MAX_STEPS = 10
MAX_POINTS = 20
Y_LIMIT = 10.0
LR_RANGE = (0.001, 0.5)
PLAY_PAUSE_S = 0.25
CLICK_GRID = 0.25  # the chart's click targets: a point every 0.25 in x and y, so a click anywhere adds a point
MODELS = {"maml": "MAML", "pretrained": "Pre-trained on all sines"}
COLOURS = {"maml": "#d62728", "pretrained": "#1f77b4"}
CHECKPOINT_DIR = Path(os.environ.get("FEWSHOT_CHECKPOINT_DIR") or Path(__file__).resolve().parents[1] / "checkpoints")


@st.cache_resource(show_spinner="Loading the sine-wave models…")
def _load(path: str, mtime: float) -> tuple[torch.nn.Module, dict]:
    """One shared, read-only model per file version; adaptation never modifies it."""
    model, info = fewshot.load_checkpoint(path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dict(info.metadata)


def load_models() -> dict[str, tuple[torch.nn.Module, dict]] | None:
    models, problems = {}, []
    for name in MODELS:
        path = CHECKPOINT_DIR / "sine" / f"{name}.safetensors"
        try:
            models[name] = _load(str(path), path.stat().st_mtime)
        except (OSError, fewshot.CheckpointError) as exc:
            problems.append(f"`sine/{name}.safetensors`: {exc}")
            continue
        if models[name][1].get("method") != f"sine_{name}":
            problems.append(f"`sine/{name}.safetensors` is a {models[name][1].get('method')!r} checkpoint, "
                            f"not sine_{name}")
    if problems:
        st.warning("The sine-wave models are missing or unusable: " + "; ".join(problems) + ". Make them with "
                   "`python -m fewshot train-sine --model maml --iterations 70000 --out checkpoints/sine/maml.safetensors` "
                   "(and `--model pretrained ... pretrained.safetensors`).")
        return None
    return models


def _sample_points(amplitude: float, phase: float, k: int, half: bool, seed: int) -> list[tuple[float, float]]:
    sampler = SineTaskSampler(k, 0, seed=seed, x_range=(X_RANGE[0], 0.0) if half else X_RANGE)
    xs = sorted(float(x) for x in sampler.sample(1).support_x.flatten())
    return [(x, amplitude * math.sin(x - phase)) for x in xs]


def _points_text(points: list[tuple[float, float]]) -> str:
    return "\n".join(f"{x:.3f}, {y:.3f}" for x, y in points)


def _new_points() -> None:
    """K, the half-range toggle or "Resample" changed: new points on the same sine (the step counter restarts)."""
    s = st.session_state
    s["sine_draws"] = s.get("sine_draws", 0) + 1
    sine = s["sine_task"]
    points = _sample_points(sine["amplitude"], sine["phase"], int(s.get("sine_k", 10)), bool(s.get("sine_half")),
                            seed=10_000 + s["sine_draws"])
    s["sine_points_text"], s["sine_step"] = _points_text(points), 0


def _new_sine(first: bool = False) -> None:
    """A random sine from the task distribution; a session's first one is a clearly visible fixed example."""
    s = st.session_state
    s["sine_draws"] = s.get("sine_draws", 0) + 1
    g = torch.Generator().manual_seed(s["sine_draws"])
    amplitude = AMPLITUDE_RANGE[0] + (AMPLITUDE_RANGE[1] - AMPLITUDE_RANGE[0]) * float(torch.rand(1, generator=g))
    phase = PHASE_RANGE[0] + (PHASE_RANGE[1] - PHASE_RANGE[0]) * float(torch.rand(1, generator=g))
    s["sine_task"] = {"amplitude": 3.0, "phase": 1.0} if first else {"amplitude": amplitude, "phase": phase}
    _new_points()


def _on_chart_click(key: str) -> None:
    """A click on the curve chart: on one of the K points removes it; anywhere else adds a point there."""
    s = st.session_state
    clicked = ((s.get(key) or {}).get("selection") or {}).get("points") or []
    if not clicked:
        return
    s["sine_clicks"] = s.get("sine_clicks", 0) + 1  # a new chart: no selection left on the old one
    points, problem = parse_points(s["sine_points_text"])
    if problem is not None:
        s["sine_click_note"] = "Fix the points in the box first; a click adds to them or removes one of them."
        return
    target = clicked[0].get("customdata")
    target = target[0] if isinstance(target, list) and target else target
    if isinstance(target, str) and target.startswith("point "):
        index = int(target.split()[1])
        if 0 <= index < len(points):
            points.pop(index)
    elif len(points) >= MAX_POINTS:
        s["sine_click_note"] = f"There are {MAX_POINTS} points already, the most the page takes; click one to remove it."
        return
    else:
        x = min(max(round(float(clicked[0]["x"]), 2), X_RANGE[0]), X_RANGE[1])
        y = min(max(round(float(clicked[0]["y"]), 2), -Y_LIMIT), Y_LIMIT)
        points.append((x, y))
    s["sine_points_text"], s["sine_step"] = _points_text(sorted(points)), 0


def parse_points(text: str) -> tuple[list[tuple[float, float]], str | None]:
    """``(points, None)``, or ``([], message)`` naming the first bad line and the fix."""
    points = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.replace(",", " ").replace(";", " ").split()
        if len(parts) != 2:
            return [], f"Line {n} (`{line}`): write one point per line as `x, y`."
        try:
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            return [], f"Line {n} (`{line}`): `x` and `y` must be numbers."
        if not (math.isfinite(x) and math.isfinite(y)):
            return [], f"Line {n}: `x` and `y` must be finite numbers."
        if not X_RANGE[0] <= x <= X_RANGE[1]:
            return [], (f"Line {n}: x = {x:g} is outside [{X_RANGE[0]:g}, {X_RANGE[1]:g}], the range both models "
                        "were trained on; move the point inside it.")
        if abs(y) > Y_LIMIT:
            return [], (f"Line {n}: y = {y:g} is beyond ±{Y_LIMIT:g} (the sines here reach ±{AMPLITUDE_RANGE[1]:g}); "
                        "use a smaller value.")
        points.append((x, y))
    if not points:
        return [], "Give at least one point (`x, y` per line), or press **Draw a random sine**."
    if len(points) > MAX_POINTS:
        return [], f"{len(points)} points given; the page takes at most {MAX_POINTS}. Delete some lines."
    return points, None


st.title("MAML on sine waves")
st.markdown(
    "The regression experiment of the MAML paper (Finn et al. 2017, §5.1): every task is a sine "
    f"*y = A·sin(x − φ)* with amplitude *A* in [{AMPLITUDE_RANGE[0]:g}, {AMPLITUDE_RANGE[1]:g}] and phase *φ* in "
    "[0, π], seen through K points. Both networks (1 → 40 → 40 → 1, ReLU) then take the same plain gradient steps "
    "on those K points. **MAML** was meta-trained so that one step from its weights fits any such sine; the "
    "**pre-trained** network learnt to regress all sines at once, so it starts from their average and moves slowly. "
    "Press **Step** to take one more step, or **Play** to watch all ten. Click on the chart to add a point there, "
    "or on one of the points to remove it."
)

models = load_models()
if models is None:
    st.stop()

s = st.session_state
if "sine_task" not in s:  # a new session starts from the same first sine, so what a class sees is reproducible
    s["sine_draws"] = 0
    s.setdefault("sine_k", 10)
    s.setdefault("sine_half", False)
    _new_sine(first=True)
s.setdefault("sine_step", 0)
s.setdefault("sine_clicks", 0)
s.setdefault("sine_lr_text", f'{float(models["maml"][1].get("inner_lr_test", 0.01)):g}')

c1, c2, c3, c4 = st.columns([1, 1.4, 1.2, 1.2])
c1.radio("K points", (5, 10), key="sine_k", horizontal=True, on_change=_new_points,
         help="How many points of the sine the networks see (the paper shows K = 5 and 10).")
c2.toggle("Only x in [−5, 0]", key="sine_half", on_change=_new_points,
          help="Points from the left half only: the paper's extrapolation figure. MAML still recovers the periodic "
               "shape on the right half, which it never sees points of.")
c3.button("Draw a random sine", key="sine_draw", on_click=_new_sine, width="stretch")
c4.button("Resample the points", key="sine_resample", on_click=_new_points, width="stretch")

left, right = st.columns([1, 2.2])
with left:
    st.text_area("Points (one `x, y` per line; edit freely)", key="sine_points_text", height=250,
                 on_change=lambda: st.session_state.update(sine_step=0),  # new points: the steps start again
                 help=f"x in [{X_RANGE[0]:g}, {X_RANGE[1]:g}], |y| ≤ {Y_LIMIT:g}, 1 to {MAX_POINTS} points.")
    lr_text = st.text_input("Inner learning rate", key="sine_lr_text",
                            help=f"Both networks were trained and are benchmarked with 0.01; between "
                                 f"{LR_RANGE[0]:g} and {LR_RANGE[1]:g}.")
points, problem = parse_points(s["sine_points_text"])
try:
    inner_lr = float(lr_text)
except ValueError:
    inner_lr = float("nan")
if problem is None and not LR_RANGE[0] <= inner_lr <= LR_RANGE[1]:
    problem = (f"The inner learning rate must be a number from {LR_RANGE[0]:g} to {LR_RANGE[1]:g} "
               f"(got `{lr_text}`); the models were trained with 0.01.")
if problem is not None:
    right.error(problem)
    st.stop()

sine = s["sine_task"]
xs = torch.tensor([[x] for x, _ in points])
ys = torch.tensor([[y] for _, y in points])
on_sine = all(abs(y - sine["amplitude"] * math.sin(x - sine["phase"])) < 1e-2 for x, y in points)
grid = query_grid(200)
truth = sine["amplitude"] * torch.sin(grid.squeeze(1) - sine["phase"]) if on_sine else None
curves = {}
for name, (model, _) in models.items():
    predictions, support_mse = adaptation_curves(model, xs, ys, grid, inner_lr=inner_lr, inner_steps=MAX_STEPS)
    true_mse = ((predictions - truth) ** 2).mean(1) if truth is not None else None
    curves[name] = (predictions, support_mse, true_mse)


def _diverged(values: torch.Tensor) -> torch.Tensor:
    return ~torch.isfinite(values) | (values > DIVERGED_MSE)


diverged_at = {}  # model -> the first step at which SGD has blown up on these points
for name, (_, support_mse, true_mse) in curves.items():
    bad = _diverged(support_mse) | (_diverged(true_mse) if true_mse is not None else False)
    if bool(bad.any()):
        diverged_at[name] = int(bad.nonzero()[0])


def _plottable(values: torch.Tensor, limit: float) -> list[float | None]:
    """Gaps (None) where SGD has blown up: plotly gets no NaN/inf, and the axes keep a readable scale."""
    return [v if math.isfinite(v) and abs(v) <= limit else None for v in values.tolist()]

b1, b2, b3, _ = right.columns([1, 1, 1, 2])
if b1.button("Step", key="sine_step_btn", disabled=s["sine_step"] >= MAX_STEPS, width="stretch"):
    s["sine_step"] = min(s["sine_step"] + 1, MAX_STEPS)
play = b2.button("Play", key="sine_play", width="stretch")
if b3.button("Reset", key="sine_reset", width="stretch"):
    s["sine_step"] = 0


def _click_targets() -> tuple[list[float], list[float]]:
    """Grid points to click on, leaving out those next to a point (a click there should pick the point itself)."""
    xs = [X_RANGE[0] + CLICK_GRID * i for i in range(round((X_RANGE[1] - X_RANGE[0]) / CLICK_GRID) + 1)]
    ys = [-6 + CLICK_GRID * j for j in range(round(12 / CLICK_GRID) + 1)]
    free = [(x, y) for x in xs for y in ys if all(abs(x - px) > 0.3 or abs(y - py) > 0.3 for px, py in points)]
    return [x for x, _ in free], [y for _, y in free]


def curve_figure(step: int, clickable: bool) -> go.Figure:
    fig = go.Figure()
    x = grid.squeeze(1).tolist()
    if truth is not None:
        fig.add_scatter(x=x, y=truth.tolist(), name="true sine", line={"color": "#444", "dash": "dot"})
    for name, (predictions, _, _) in curves.items():
        fig.add_scatter(x=x, y=_plottable(predictions[step], 1e3), name=f"{MODELS[name]}, {step} step{'s' * (step != 1)}",
                        line={"color": COLOURS[name]})
    fig.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers", name=f"the {len(points)} points",
                    marker={"color": "black", "size": 10, "symbol": "circle"},
                    customdata=[f"point {i}" for i in range(len(points))],
                    hovertemplate="(%{x:.2f}, %{y:.2f}): click to remove<extra></extra>")
    if clickable:  # invisible targets on top: hovering shows where a click adds a point
        gx, gy = _click_targets()
        fig.add_scatter(x=gx, y=gy, mode="markers", marker={"size": 8, "opacity": 0}, showlegend=False,
                        customdata=["add"] * len(gx), hovertemplate="click to add (%{x:.2f}, %{y:.2f})<extra></extra>")
    if s.get("sine_half"):
        fig.add_vrect(x0=0, x1=X_RANGE[1], fillcolor="#eee", opacity=0.5, line_width=0)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis={"range": list(X_RANGE)},
                      yaxis={"range": [-6, 6]}, legend={"orientation": "h", "y": -0.15})
    return fig


def loss_figure(step: int) -> go.Figure:
    fig = go.Figure()
    steps = list(range(step + 1))
    for name, (_, support_mse, true_mse) in curves.items():
        fig.add_scatter(x=steps, y=_plottable(support_mse[: step + 1], DIVERGED_MSE), name=f"{MODELS[name]}: on the K points",
                        mode="lines+markers", line={"color": COLOURS[name]})
        if true_mse is not None:
            fig.add_scatter(x=steps, y=_plottable(true_mse[: step + 1], DIVERGED_MSE), name=f"{MODELS[name]}: on the whole sine",
                            mode="lines+markers", line={"color": COLOURS[name], "dash": "dot"})
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis={"title": "step",
                      "range": [-0.3, MAX_STEPS + 0.3]}, yaxis={"title": "mean-squared error", "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def show(step: int, holder, clickable: bool = True) -> None:
    with holder.container():
        st.caption(f"STEP {step}/{MAX_STEPS}")
        cols = st.columns(2)
        for col, (name, (_, support_mse, true_mse)) in zip(cols, curves.items()):
            shown = true_mse if true_mse is not None else support_mse
            what = "MSE on the whole sine" if true_mse is not None else "MSE on the points"
            if name in diverged_at and step >= diverged_at[name]:
                col.metric(f"{MODELS[name]}: {what}", "diverged")
                continue
            col.metric(f"{MODELS[name]}: {what}", f"{float(shown[step]):.3f}",
                       delta=f"{float(shown[step] - shown[0]):+.3f} since step 0" if step else None, delta_color="inverse")
        for name, first in diverged_at.items():
            if step >= first:
                st.warning(f"{MODELS[name]} diverged at step {first} on these points: a step of {inner_lr:g} is too "
                           "large where its loss is this steep, so each step overshoots further. Lower the inner "
                           "learning rate to see it settle.")
        if clickable:
            key = f"sine_curve_{step}_{s['sine_clicks']}"
            st.plotly_chart(curve_figure(step, True), key=key, width="stretch", on_select=partial(
                _on_chart_click, key), selection_mode="points")
        else:  # a frame of Play
            st.plotly_chart(curve_figure(step, False), key=f"sine_frame_{step}", width="stretch")
        st.plotly_chart(loss_figure(step), key=f"sine_loss_{step}", width="stretch")


with right:
    if not on_sine:
        st.info("These points are not on the sine that was drawn, so there is no true curve to compare with: the "
                "chart shows each network's fit and its error on your points.")
    holder = st.empty()
    if play:
        for step in range(s["sine_step"] if s["sine_step"] < MAX_STEPS else 0, MAX_STEPS):
            show(step, holder, clickable=False)
            time.sleep(PLAY_PAUSE_S)
        s["sine_step"] = MAX_STEPS
    show(s["sine_step"], holder)
    if "sine_click_note" in s:
        st.warning(s.pop("sine_click_note"))
    if on_sine:
        st.caption(f"The drawn sine: A = {sine['amplitude']:.2f}, φ = {sine['phase']:.2f}. Inner learning rate "
                   f"{inner_lr:g}. Benchmarked over 1,000 sines in `benchmarks/results.md`.")
