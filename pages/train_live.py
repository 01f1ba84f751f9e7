"""Watch meta-training: a small run on Omniglot's background alphabets, and, live, its training loss, its accuracy on
characters it never sees in training, and a map of those characters' embeddings organising itself."""

import pandas as pd
import plotly.express as px
import streamlit as st

import fewshot
from pages.lab import checkpoints, data, live_runs, session_models, widgets
from pages.lab.runtime import require_router, trace

require_router()

st.title("Watch meta-training")
st.markdown(
    "Every model on the other pages arrived trained. Here you train one and watch it happen: each **episode** is "
    "an N-way K-shot task drawn from Omniglot's 30 *background* alphabets, and the model takes one optimiser step "
    "on it. Every few dozen episodes it is tested on a fixed set of tasks from the 20 *evaluation* alphabets, "
    "characters it never meets in training, and a fixed set of those characters is embedded and mapped to 2-D "
    "(PCA or t-SNE): watch the drawings of each character gather as the embedding learns what matters. Stop at any "
    "time; the model can then be picked on the other pages, for this session only.")

if not data.has_omniglot():
    data.data_missing(data.omniglot_dir()[1])
    st.stop()

LIMITS = live_runs.LIMITS
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
# what the person picks -> (method, Proto-MAML head)
METHODS = {"protonet": ("protonet", False), "maml": ("maml", False), "fomaml": ("fomaml", False),
           "protomaml": ("fomaml", True)}
run = live_runs.current()
running = run is not None and not run.snapshot().done

# ---- settings (a form: nothing starts until Start is pressed)
encoders = live_runs.encoder_options()
with st.form("live_settings", border=True):
    c1, c2, c3 = st.columns(3)
    choice = c1.selectbox("Method", list(METHODS), key="live_method", format_func=live_runs.method_title,
                          help="ProtoNet learns an embedding; MAML learns an initialisation that one inner step "
                               "adapts (first-order MAML leaves out the second derivatives: faster); Proto-MAML "
                               "starts each task's head from the support prototypes (any N-way at test time).")
    method, proto_head = METHODS[choice]
    start_from = c2.selectbox("Start from", ["scratch", *encoders], key="live_init",
                              format_func=lambda c: "random weights (from scratch)" if c == "scratch"
                              else f"the encoder of {c}",
                              help="A shipped encoder (lake protocol: it never saw the evaluation alphabets) gives "
                                   "the run a head start; from scratch shows the whole climb.")
    lr = c3.select_slider("Learning rate (Adam)", LEARNING_RATES, value=1e-3, key="live_lr",
                          help="From a shipped encoder, a lower rate keeps what it already knows.")
    c4, c5, c6, c7 = st.columns(4)
    n_way = c4.slider("Classes per episode (N-way)", int(LIMITS["n_way"][0]), int(LIMITS["n_way"][1]), key="live_way",
                      **widgets.bind("live_way", 5, lo=int(LIMITS["n_way"][0]), hi=int(LIMITS["n_way"][1])))
    n_shot = c5.slider("Examples per class (K-shot)", int(LIMITS["n_shot"][0]), int(LIMITS["n_shot"][1]),
                       key="live_shot", **widgets.bind("live_shot", 1, lo=1, hi=int(LIMITS["n_shot"][1])))
    most = int(LIMITS["episodes"][1])
    episodes = c6.number_input("Episodes", min_value=10, max_value=most, step=50, key="live_episodes",
                               **widgets.bind("live_episodes", 300, lo=10, hi=most),
                               help="About 0.1-0.2 s each for ProtoNet and first-order MAML on this CPU.")
    eval_every = c7.slider("Test every (episodes)", 10, 100, step=5, key="live_eval_every",
                           **widgets.bind("live_eval_every", 25, lo=10, hi=100))
    projection = st.radio("Map of the never-seen characters", ["pca", "tsne"], horizontal=True, key="live_projection",
                          format_func={"pca": "PCA (cheap; axes kept from flipping)",
                                       "tsne": "t-SNE (perplexity 10; neighbourhoods, not distances)"}.get)
    submitted = st.form_submit_button("Start meta-training", type="primary", disabled=running,
                                      icon=":material/play_arrow:")

if submitted and not running:
    try:
        config = fewshot.LiveConfig(method=method, proto_head=proto_head, n_way=int(n_way), n_shot=int(n_shot),
                                    episodes=int(episodes), meta_lr=float(lr), eval_every=int(eval_every),
                                    map_projection=projection,
                                    init=None if start_from == "scratch" else live_runs.encoder_path(start_from))
    except ValueError as exc:
        st.error(f"Not started: {exc}.")
    else:
        problem = live_runs.start(config)
        trace(f"live_start:{'refused' if problem else 'ok'}")
        if problem:
            st.error(f"Not started: {problem}")
        else:
            run, running = live_runs.current(), True

if run is None:
    st.info("Choose the settings and press **Start meta-training**. A run of a few hundred episodes takes a minute "
            "or two; you can stop it whenever you like.")
    st.stop()

if running:
    st.button("Stop", key="live_stop", on_click=live_runs.stop, icon=":material/stop:",
              help="Stops after the current episode; the model keeps what it has learnt so far.")


def short_name(name: str) -> str:
    return data.class_label(name)


def draw(snap: fewshot.LiveSnapshot, config: fewshot.LiveConfig) -> None:
    """The run's curves and map, from one snapshot."""
    state = {"starting": "starting", "running": "running", "stopped": "stopped", "finished": "finished",
             "failed": "failed"}[snap.state]
    st.progress(snap.step / max(snap.total_steps, 1),
                text=f"{state}: episode {snap.step} of {snap.total_steps} · {snap.seconds:.0f} s")
    left, right = st.columns(2)
    with left:
        st.markdown("**Training loss** (query cross-entropy of each episode)")
        if snap.losses:
            frame = pd.DataFrame(snap.losses, columns=["episode", "loss"]).set_index("episode")
            frame["moving average (20)"] = frame["loss"].rolling(20, min_periods=1).mean()
            st.line_chart(frame, height=260, x_label="episode", y_label="loss")
        else:
            st.caption("The first episode is on its way…")
    with right:
        st.markdown(f"**Accuracy on never-seen characters** ({config.eval_tasks} fixed {config.n_way}-way "
                    f"{config.n_shot}-shot tasks from the evaluation alphabets)")
        if snap.eval_accuracies:
            frame = pd.DataFrame([(s, a) for s, a, _ in snap.eval_accuracies], columns=["episode", "accuracy"])
            frame["chance"] = 1.0 / config.n_way
            st.line_chart(frame.set_index("episode"), height=260, x_label="episode", y_label="accuracy")
            step, accuracy, ci = snap.eval_accuracies[-1]
            st.caption(f"After {step} episodes: {100 * accuracy:.1f}% ± {100 * ci:.1f} (95% CI); chance is "
                       f"{100 / config.n_way:.0f}%.")
    if snap.map_xy is not None:
        names = [short_name(snap.map_names[int(c)]) for c in snap.map_labels]
        frame = pd.DataFrame({"x": snap.map_xy[:, 0], "y": snap.map_xy[:, 1], "character": names})
        fig = px.scatter(frame, x="x", y="y", color="character", height=420,
                         title=f"Embeddings of {len(snap.map_names)} never-seen characters × "
                               f"{len(names) // max(len(snap.map_names), 1)} drawings "
                               f"({'t-SNE' if config.map_projection == 'tsne' else 'PCA'}), after episode "
                               f"{snap.map_step}",
                         color_discrete_sequence=px.colors.qualitative.D3 if len(snap.map_names) <= 10
                         else px.colors.qualitative.Alphabet)
        fig.update_traces(marker=dict(size=11, line=dict(width=0.5, color="white")))
        fig.update_xaxes(showticklabels=False, title=None)
        fig.update_yaxes(showticklabels=False, title=None, scaleanchor="x")
        fig.update_layout(legend_title_text="", margin=dict(l=10, r=10, t=50, b=10))
        st.plotly_chart(fig, key="live_map")
    if snap.state == "failed":
        st.error(f"The run failed: {snap.message}. No model was kept; change the settings and start again.")
    elif snap.message:
        st.info(snap.message[0].upper() + snap.message[1:] + ".")


@st.fragment(run_every=1.0 if running else None)
def live_view() -> None:
    current = live_runs.current()
    snap = current.snapshot()
    draw(snap, current.config)
    if running and snap.done:
        st.rerun()  # the whole page: the controls and the kept model change when a run ends


live_view()

snap = run.snapshot()
if snap.done:
    model_id = live_runs.keep(run)
    if model_id is not None:
        method = run.config.method
        chosen = st.session_state.get(f"ckpt_{method}") == model_id
        kept = session_models.get(model_id)
        accuracy = kept.meta["live_run"]["eval_accuracy"]
        st.success(f"The model is kept for this session: **{kept.title}**, {100 * accuracy:.1f}% on never-seen "
                   "characters. It is not saved to disk"
                   + (f"; the other pages use it for {checkpoints.method_label(method)}." if chosen else "."))
        if not chosen:
            st.button(f"Use it for {checkpoints.method_label(method)} on the other pages", key="live_use",
                      on_click=live_runs.use, args=(model_id, method), type="primary",
                      help="The sidebar's checkpoint choice for this method switches to it; switch back there. "
                           "It is never saved to disk and goes when this session ends.")
    st.caption("Change the settings and press **Start meta-training** for another run; every kept model stays "
               "selectable in the sidebar (*Checkpoints*).")
