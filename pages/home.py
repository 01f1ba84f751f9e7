"""Home: what few-shot learning is, and one live example episode."""

import streamlit as st
import torch

from fewshot import inspection
from pages.lab import data, examples, images, models, render, widgets
from pages.lab.runtime import require_router

require_router()

st.title("Few-shot learning lab")
st.markdown(
    """
A **few-shot** classifier learns new classes from a handful of examples. One problem is an **N-way K-shot task**:
N classes the model has never seen, K labelled examples of each (the **support set**), and new images to label
(the **queries**). Omniglot, 1,623 handwritten characters from 50 alphabets drawn by 20 people each, is the
classic testbed: a 5-way 1-shot task shows one drawing of each of five unseen characters and asks which one a
new drawing is.

**Episodic training.** Meta-learners are trained on thousands of such small tasks sampled from the training
classes, scored on each task's queries, so what they learn is *how to learn a task from K examples*:
Prototypical Networks learn an embedding where each class's mean (its prototype) classifies by distance;
Matching Networks attend over the support examples; a Siamese network learns whether two images match;
MAML learns initial weights from which a few gradient steps on the support set give a good classifier;
a memory-augmented network (MANN) learns to write examples into an external memory and read them back.

**Meta-learning vs transfer learning.** The transfer baseline instead trains an ordinary classifier on all
training classes at once, then fits a new linear head on the support set's features. It never practises
few-shot tasks, which is why it is the comparison point.
"""
)

st.subheader("An example episode")
drawn = models.source("drawn")
methods = drawn.methods()
if not methods:
    st.warning(drawn.missing())
    st.stop()
method = st.selectbox("Model", methods, format_func=models.method_label, key="home_method",
                      **widgets.bind_choice("home_method", "protonet", methods, methods[0]))
loaded = models.require("drawn", method)

dataset = data.omniglot("lake", "test", loaded.image_size, explain=False)
if dataset is not None:
    st.session_state.setdefault("home_episode", 0)
    if st.button("Another episode", key="home_new_episode"):
        st.session_state["home_episode"] += 1
    episode = data.sample_episode(dataset, 5, 1, 1, seed=7, index=st.session_state["home_episode"])
    names = data.episode_names(dataset, episode)
    support_pngs = [images.tensor_to_png(x) for x in episode.support_images]
    query_pngs = [images.tensor_to_png(x) for x in episode.query_images]
    truth = [int(v) for v in episode.query_labels]
    st.caption("Five characters from Omniglot's evaluation alphabets (the *lake* protocol: the shipped models "
               "never saw these alphabets), one example each, and one new drawing of each to classify.")
else:
    view, own = examples.task_for_page()
    if view is own and own.mode == "drawn":
        st.caption("Omniglot is not available (set FEWSHOT_DATA_DIR to use it), so this is your own task from "
                   "*Build a task*.")
    else:
        view = examples.visitor_example("drawn")
        st.caption("Omniglot is not available (set FEWSHOT_DATA_DIR to use it), so this is a small synthetic "
                   "task; draw your own on *Build a task*.")
    names = view.names
    support_pngs = [class_examples[0].png for class_examples in view.support]
    query_pngs = [q.png for q in view.queries]
    truth = view.truth

st.markdown("**Support set** (one labelled example per class)")
cols = st.columns(len(names))
for col, name, png in zip(cols, names, support_pngs):
    with col:
        images.show_input(png, caption=name, scale=3, image_size=loaded.image_size)

sx = drawn.inputs(support_pngs, names, loaded.image_size)
qx = drawn.inputs(query_pngs, [f"query {j + 1}" for j in range(len(query_pngs))], loaded.image_size)
try:
    probabilities = inspection.predict(loaded.model, sx, torch.arange(len(support_pngs)), qx)
except ValueError as exc:
    st.warning(f"{loaded.title}: {exc}")
    st.stop()

st.markdown(f"**Queries**, answered by {loaded.title}")
cols = st.columns(len(query_pngs))
correct = 0
for j, (col, png) in enumerate(zip(cols, query_pngs)):
    pred = int(probabilities[j].argmax())
    correct += int(truth[j] is not None and pred == truth[j])
    with col:
        images.show_input(png, caption=f"query {j + 1}", scale=3, image_size=loaded.image_size)
        st.markdown(f"→ **{names[pred]}** ({render.percent(probabilities[j, pred])}) {render.verdict(pred, truth[j])}")
known = sum(t is not None for t in truth)
if known:
    st.metric("Episode accuracy", f"{correct}/{known}")

st.divider()
st.markdown("Next: **Build a task** to draw your own classes, **Watch MAML adapt** to see gradient steps "
            "happen, or **You vs the model** to compare yourself with the networks.")
st.markdown("For a class: **Build a task** also downloads the task as one file (images, names and true classes) "
            "that anyone can load back, and loads a zip of class folders. **Watch meta-training** trains a small "
            "model while you watch its loss, its accuracy on characters it never sees and its embedding space "
            "organising itself; the result can be picked on the other pages. The **Embedding explorer** draws the "
            "images at their map positions, shows a point's nearest neighbours in the model's own embedding space "
            "and crosses out the queries the model gets wrong.")
st.markdown("**MAML on sine waves** is the MAML paper's first experiment: pick a few points of a sine and watch the "
            "meta-learned network snap to the curve in one or two gradient steps, while a network pre-trained on all "
            "sines at once does not.")
