"""Watch MAML adapt: the inner loop on the current task, one gradient step at a time."""

import time

import pandas as pd
import streamlit as st

from fewshot import inspection
from pages.lab import examples, models, render, task, widgets
from pages.lab.runtime import require_router

require_router()

st.title("Watch MAML adapt")
st.markdown(
    "MAML starts every task from the same meta-learned weights and takes a few gradient steps on the support "
    "set's loss. Press **Step** to take one more step, or **Play** to watch them all. Nothing here changes the "
    "model: each step is computed from the previous weights as a new set of weights (the inner loop is a pure "
    "function). BatchNorm uses the support set's statistics, so every query is answered on its own."
)

view, own = examples.task_for_page()
render.example_banner(view, own)
source = models.source(view.mode)
available = [m for m in ("maml", "fomaml") if m in source.methods()]
if not available:
    st.warning(source.missing() if not source.methods() else "No MAML checkpoint found (maml or fomaml); see the sidebar.")
    st.stop()
if task.MODES[view.mode].maml_note:
    st.info(task.MODES[view.mode].maml_note)

c1, c2, c3 = st.columns(3)
variant = c1.radio("MAML variant", available, key="maml_variant", format_func=models.method_label,
                   **widgets.bind_choice("maml_variant", "maml", available, available[0]),
                   help="Second- and first-order MAML differ in meta-training only (whether the meta-gradient "
                        "flows through the inner steps); the inner loop you watch here is the same SGD for both, "
                        "so this picks which trained checkpoint to start from.")
loaded = models.require(view.mode, variant)
proto_head = bool(getattr(loaded.model, "proto_head", False))
learned = getattr(loaded.model, "log_inner_lr", None) is not None
head_only = getattr(loaded.model, "inner_params", "all") == "head"
if proto_head:
    st.info("**Proto-MAML** (Triantafillou et al. 2020): this MAML has no meta-learned output layer. For each task "
            "it builds one from the support set's class means (prototypes) in its current embedding, so **step 0 "
            "is exactly ProtoNet's answer on this encoder**, and it answers tasks of any number of classes. Each "
            "step then adapts " + ("**only that output layer** (ANIL, Raghu et al. 2020: the embedding stays where "
                                   "it is)" if head_only else "the whole network") + " on the support loss: what "
            "the steps change is what adaptation adds. With one example per class the prototypes already fit the support set (its loss starts near "
            "zero), so the steps change little; with more examples per class they do more.")
augment = int(getattr(loaded.model, "inner_augment", 0) or 0)
if augment:
    temperature = loaded.model.inner_temperature_value()
    st.caption(f"This checkpoint's inner loop also learns from **{augment} randomly warped copies** of each support "
               "image (small rotations, scalings, shears and shifts: new drawings of the same character)"
               + (f", with its support loss softened by a temperature of {temperature:.3g}" if temperature != 1 else "")
               + ". So even with one example per class the steps have something to learn. The support loss and "
               "accuracy below are over the support images and their copies; the copies are the same each time "
               "for the same support set.")
elif not proto_head:
    st.caption("This checkpoint is the paper-faithful MAML: a meta-learned output layer with a fixed number of "
               "classes, adapted from the same starting weights on every task.")
default_lr = float(getattr(loaded.model, "inner_lr_test", 0.4))
use_learned = learned and c2.toggle("Learned inner rates", value=True, key="maml_learned_lr",
                                    help="MAML++: this checkpoint learned one inner learning rate per layer and "
                                         "per step; switch off to set one rate for all layers yourself.")
inner_lr = None if use_learned else c2.slider(
    "Inner learning rate", 0.01, 2.0, key="maml_lr", step=0.01,
    **widgets.bind("maml_lr", min(max(default_lr, 0.01), 2.0), lo=0.01, hi=2.0),
    help=f"This checkpoint was evaluated with {default_lr:g}.")
inner_steps = c3.slider("Inner steps", 1, 20, key="maml_steps", **widgets.bind("maml_steps", 5, lo=1, hi=20),
                        help=f"This checkpoint was trained with {getattr(loaded.model, 'inner_steps', '?')} step(s).")

message = loaded.check_way(view.n_way)
if message:
    st.warning(message)
    st.stop()

sx, sy, qx = view.tensors(loaded.image_size)
config = (loaded.key, view.fingerprint(), inner_lr, inner_steps)
state = st.session_state.setdefault("maml_view", {"config": None, "shown": 0, "trajectory": None})
if state["config"] != config:
    state.update(config=config, shown=0, trajectory=None)


def adapt():
    """One record per inner step (step 0 = the meta-learned start): what the page shows of a ``fewshot.AdaptStep``
    (its weights are not kept: they would sit in the session for as long as it lasts)."""
    start = None
    for step in inspection.adaptation(loaded.model, sx, sy, qx, inner_lr=inner_lr, inner_steps=inner_steps):
        start = start or step
        yield {"step": step.step, "support_loss": step.support_loss, "support_accuracy": step.support_accuracy,
               "probabilities": inspection.step_probabilities(step, view.n_way),
               "layer_change": inspection.layer_change(start, step)}


def trajectory():
    if state["trajectory"] is None:
        state["trajectory"] = list(adapt())
    return state["trajectory"]


def query_label(j: int) -> str:
    return f"Query {j + 1}"


def draw(steps, boxes) -> None:
    """Draw the state after ``steps[-1]`` into the placeholders."""
    last = steps[-1]
    boxes["progress"].progress(last['step'] / inner_steps, text=f"Step {last['step']} / {inner_steps}")
    with boxes["metrics"].container():
        m1, m2, m3 = st.columns(3)
        m1.metric("Support loss", f"{last['support_loss']:.4f}",
                  delta=None if last['step'] == 0 else f"{last['support_loss'] - steps[0]['support_loss']:+.4f}",
                  delta_color="inverse")
        m2.metric("Support accuracy", render.percent(last['support_accuracy']))
        known = [j for j, t in enumerate(view.truth) if t is not None]
        if known:
            right = sum(int(last['probabilities'][j].argmax()) == view.truth[j] for j in known)
            m3.metric("Query accuracy", f"{right}/{len(known)}")
        else:
            m3.metric("Queries", len(view.queries))
    boxes["loss"].line_chart(pd.DataFrame({"step": [s['step'] for s in steps],
                                           "support loss": [s['support_loss'] for s in steps]}).set_index("step"),
                             height=220)
    probs = last['probabilities']
    columns = [query_label(j) for j in range(len(probs))]
    frame = pd.DataFrame({"class": view.names, **{c: probs[j].astype(float) for j, c in enumerate(columns)}})
    boxes["queries"].dataframe(frame, hide_index=True, column_config=render.probability_columns(columns))
    layers = pd.DataFrame({"layer": list(last['layer_change']),
                           "relative change": [100 * v for v in last['layer_change'].values()]})
    boxes["layers"].bar_chart(layers, x="layer", y="relative change", height=240)
    rows = []
    for s in steps:
        row = {"step": s['step'], "support loss": round(s['support_loss'], 4),
               "support acc": render.percent(s['support_accuracy'])}
        for j in range(len(s['probabilities'])):
            pred = int(s['probabilities'][j].argmax())
            row[query_label(j)] = f"{view.names[pred]} {render.percent(s['probabilities'][j, pred])}"
        rows.append(row)
    boxes["table"].dataframe(pd.DataFrame(rows), hide_index=True)


@st.fragment
def panel() -> None:
    b1, b2, b3, _ = st.columns([1, 1, 1, 4])
    step = b1.button("Step", key="maml_step", type="primary")
    play = b2.button("Play", key="maml_play")
    reset = b3.button("Reset", key="maml_reset")
    boxes = {"progress": st.empty(), "metrics": st.empty()}
    left, right = st.columns(2)
    with left:
        st.markdown("**Support loss**")
        boxes["loss"] = st.empty()
        st.markdown("**How far each layer's weights moved** (‖w − w₀‖ / ‖w₀‖, %)")
        boxes["layers"] = st.empty()
    with right:
        st.markdown("**Query probabilities after this step**")
        boxes["queries"] = st.empty()
    st.markdown("**All steps so far**")
    boxes["table"] = st.empty()
    status = st.empty()

    if reset:
        state["shown"] = 0
    if step:
        state["shown"] = min(state["shown"] + 1, inner_steps)
    try:
        if play:
            start = 0 if state["shown"] >= inner_steps else state["shown"]
            seen = []
            for s in adapt():
                seen.append(s)
                if s['step'] >= start:
                    draw(seen, boxes)
                    status.caption(f"Playing: step {s['step']} of {inner_steps}")
                    time.sleep(0.25)
            state["trajectory"], state["shown"] = seen, inner_steps
        steps = trajectory()[: state["shown"] + 1]
    except ValueError as exc:
        st.warning(str(exc))
        return
    draw(steps, boxes)
    status.markdown(f"Adapted: step {state['shown']} of {inner_steps}" +
                    (" (done)" if state["shown"] == inner_steps else ""))


panel()

st.subheader("ProtoNet's answer on the same task")
try:
    proto = source.get("protonet")
    psx, psy, pqx = view.tensors(proto.image_size)
    proto_probs = inspection.predict(proto.model, psx, psy, pqx)
    final = trajectory()[-1]['probabilities']
    rows = []
    for j in range(len(view.queries)):
        p_pred, m_pred = int(proto_probs[j].argmax()), int(final[j].argmax())
        rows.append({"query": query_label(j),
                     "true class": "unknown" if view.truth[j] is None else view.names[view.truth[j]],
                     f"MAML after {inner_steps} steps": f"{view.names[m_pred]} ({render.percent(final[j, m_pred])})",
                     "ProtoNet": f"{view.names[p_pred]} ({render.percent(proto_probs[j, p_pred])})"})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption("ProtoNet needs no gradient steps: it compares each query's embedding with the class means."
               + (" This ProtoNet may use another encoder than the Proto-MAML checkpoint above; the Proto-MAML's own "
                  "step 0 is ProtoNet on its encoder." if proto_head else ""))
except (models.ModelUnavailable, ValueError) as exc:
    st.info(str(exc))
