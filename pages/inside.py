"""Inside each method: the "why" behind each answer on the current task."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from fewshot import inspection
from pages.lab import examples, images, models, render, widgets
from pages.lab.runtime import require_router
from pages.lab.task import Example

require_router()

st.title("Inside each method")
st.markdown("Every method answers the same question (which class is this query?) for a different reason. "
            "Pick a query of the current task and look at what each method computed.")

view, own = examples.task_for_page()
render.example_banner(view, own)
source = models.source(view.mode)

query_options = list(range(len(view.queries)))
q = st.selectbox("Query", query_options, key="inside_query", **widgets.bind_choice("inside_query", 0, query_options, 0),
                 format_func=lambda j: f"Query {j + 1} ({view.queries[j].label})")

support_examples = view.support_examples()
support_names = [f"{view.names[c]} #{k + 1}" for c, class_examples in enumerate(view.support)
                 for k in range(len(class_examples))]

left, right = st.columns([1, 5])
with left:
    images.show_input(view.queries[q].png, view.mode, caption=f"Query {q + 1}", scale=3)
    truth = view.truth[q]
    st.caption(f"true class: {view.names[truth] if truth is not None else 'unknown'}")
with right:
    st.caption("Support set, as the model sees it")
    widgets.image_strip([Example(ex.id, name, ex.png, ex.source) for ex, name in zip(support_examples, support_names)],
                        view.mode, per_row=10)


def run(method: str):
    try:
        loaded = source.get(method)
        sx, sy, qx = view.tensors(loaded.image_size)
        return loaded, inspection.explain(loaded.model, sx, sy, qx)
    except models.ModelUnavailable as exc:
        st.info(str(exc))
    except ValueError as exc:
        st.info(f"{models.method_label(method)}: {exc}")
    return None, None


def answer_line(loaded, probs) -> None:
    pred = int(probs[q].argmax())
    st.markdown(f"Answer of {loaded.title} for Query {q + 1}: **{view.names[pred]}** "
                f"({render.percent(probs[q, pred])}) {render.verdict(pred, view.truth[q])}")


def bar(values, labels, title: str, key: str, *, x_title: str) -> None:
    frame = pd.DataFrame({"item": labels, "value": np.asarray(values, dtype=float)})
    fig = px.bar(frame, x="value", y="item", orientation="h", title=title)
    fig.update_layout(height=max(220, 26 * len(labels) + 90), margin=dict(l=10, r=10, t=40, b=10),
                      yaxis_title=None, xaxis_title=x_title)
    fig.update_yaxes(autorange="reversed")
    st.plotly_chart(fig, key=key)


def heatmap(matrix, x_labels, y_labels, title: str, key: str) -> None:
    fig = px.imshow(np.asarray(matrix, dtype=float), x=x_labels, y=y_labels, aspect="auto", title=title,
                    color_continuous_scale="Viridis")
    fig.update_layout(height=max(240, 26 * len(y_labels) + 120), margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, key=key)


def scores(method: str, key: str, labels, bar_title: str, x_title: str, heat_title: str) -> None:
    """The method's answer, its per-item scores for the chosen query, and all queries as a heatmap."""
    loaded, out = run(method)
    if out is not None:
        answer_line(loaded, out["probabilities"])
        bar(out[key][q], labels, bar_title, f"inside_{method}_bar", x_title=x_title)
        heatmap(out[key], labels, [f"Query {j + 1}" for j in range(len(view.queries))], heat_title,
                f"inside_{method}_heat")


tabs = st.tabs(["Prototypical Networks", "Matching Networks", "Siamese network", "MANN", "MAML", "Transfer baseline"])

with tabs[0]:
    st.markdown("Each class is the **mean embedding** of its support examples (its prototype). The query goes to "
                "the nearest prototype; probabilities are a softmax over **negative squared distances**.")
    scores("protonet", "distances", view.names, "Distance from the query to each prototype (smaller = closer)",
           "squared Euclidean distance", "All queries × prototypes")

with tabs[1]:
    st.markdown("The query **attends** to every support example: a softmax over cosine similarities of the "
                "embeddings (times the scale the model learned, if it has one: sharper attention than plain "
                "cosines in [-1, 1] allow). A class's probability is the total attention on its examples.")
    scores("matching", "attention", support_names, "Attention of the query on each support example",
           "attention weight", "All queries × support examples")

with tabs[2]:
    st.markdown("A learned, weighted L1 distance between two embeddings gives the probability that two images "
                "show **the same character**. Each class scores its most similar example.")
    scores("siamese", "similarity", support_names, "P(same class) for the query and each support example",
           "similarity", "All queries × support examples")

with tabs[3]:
    st.markdown("The memory-augmented network reads the support set as a sequence (each image with its label one "
                "step later), **writing** into an external memory; a query is answered from what it **reads** back. "
                "Rows are time steps (support examples in the order read), columns are memory slots.")
    loaded, out = run("mann")
    if out is not None:
        answer_line(loaded, out["probabilities"])
        order = [int(i) for i in out["support_order"]]  # the support examples in the order MANN wrote them
        reads = out["support_reads"].mean(axis=1)  # (T, slots), averaged over read heads
        step_names = [f"t{t + 1}: {support_names[i]}" for t, i in enumerate(order)]
        heatmap(reads, list(range(reads.shape[1])), step_names, "Read weights while reading the support set",
                "inside_mann_support")
        query_reads = out["query_reads"][q].mean(axis=0)
        overlap = reads @ query_reads / (np.linalg.norm(reads, axis=1) * np.linalg.norm(query_reads) + 1e-12)
        bar(overlap, step_names, "How much the query's memory read overlaps each support step's read (cosine)",
            "inside_mann_overlap", x_title="cosine of read weights")

with tabs[4]:
    st.markdown("MAML's answer is the classifier it becomes after a few gradient steps on the support set. "
                "Watch the steps one by one on **Watch MAML adapt**.")
    loaded, out = run("maml")
    if out is not None:
        answer_line(loaded, out["probabilities"])
        after = f"after {loaded.model.inner_steps_test} inner step(s)"
        frame = pd.DataFrame({"class": view.names * 2,
                              "probability": np.concatenate([out["start_probabilities"][q], out["probabilities"][q]]),
                              "weights": ["meta-learned start"] * view.n_way + [after] * view.n_way})
        fig = px.bar(frame, x="probability", y="class", color="weights", barmode="group", orientation="h",
                     title="Probabilities at the meta-learned start and after adapting to the support set")
        fig.update_layout(height=max(240, 40 * view.n_way + 110), margin=dict(l=10, r=10, t=40, b=10),
                          yaxis_title=None, legend_title_text="")
        fig.update_yaxes(autorange="reversed")
        st.plotly_chart(fig, key="inside_maml_bar")

with tabs[5]:
    st.markdown("The transfer baseline never practised few-shot tasks: it pre-trained a classifier on all training "
                "characters and now fits a **new linear head** on the support set's features.")
    loaded, out = run("finetune")
    if out is not None:
        answer_line(loaded, out["probabilities"])
        bar(out["probabilities"][q], view.names, "Probabilities of the fitted head", "inside_finetune_bar",
            x_title="probability")
        heatmap(out["scores"], view.names, [f"Query {j + 1}" for j in range(len(view.queries))],
                "The head's score of each class (logits), all queries", "inside_finetune_heat")
