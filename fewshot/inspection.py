"""What the lab shows about a model, computed here (no Streamlit): predictions with probabilities, each method's
own explanation, MAML's inner loop step by step, embeddings of images and prototypes, and a benchmark run.

Every function takes a trained :class:`~fewshot.methods.base.FewShotClassifier` and never changes it: the app's
models are shared by every session, so anything that keeps per-task state (``process_support_set``) runs on a
private copy, and MAML's inner loop is the library's functional one. A MAML model that normalises each batch
by itself (``batch_norm="transductive"``, the paper's) answers with the support set's BatchNorm statistics here
(``"support"``), so one query is never normalised by itself and each answer does not depend on the other queries.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .embedding import extract_features
from .methods import MAML, AdaptStep, FewShotClassifier, MatchingNetwork
from .tasks import Task
from .training import EvalResult, evaluate

__all__ = ["PointSet", "adapted_weights", "adaptation", "benchmark", "check_way", "embed", "embed_points",
           "embedding_metric", "explain", "layer_change", "layer_name", "predict", "private_copy", "query_predictions",
           "step_probabilities"]


def _support_statistics(model: MAML) -> None:
    if model.batch_norm == "transductive":
        model.batch_norm = "support"


def private_copy(model: FewShotClassifier) -> FewShotClassifier:
    """A copy that may hold per-task state; MAML's copy normalises queries with the support set's statistics."""
    work = copy.deepcopy(model)
    if isinstance(work, MAML):
        _support_statistics(work)
    return work


def _device(model: FewShotClassifier) -> torch.device:
    param = next(model.parameters(), None)  # photo mode's ProtoNet/Matching have no parameters: CPU
    return param.device if param is not None else torch.device("cpu")


def check_way(model: FewShotClassifier, n_way: int) -> str | None:
    """Why ``model`` cannot answer an ``n_way``-way task (a fixed output head that is too narrow), else ``None``."""
    fixed = model.fixed_way
    if fixed is not None and n_way > fixed:
        return (f"this checkpoint has a {fixed}-way output head and cannot answer a {n_way}-way task (use at most "
                f"{fixed} classes, or train a {n_way}-way model).")
    return None


def _adapted(model: FewShotClassifier, support_images: Tensor, support_labels: Tensor) -> FewShotClassifier:
    message = check_way(model, int(support_labels.max()) + 1)
    if message:
        raise ValueError(message)
    work = private_copy(model)
    work.process_support_set(support_images.to(_device(work)), support_labels.to(_device(work)))
    return work


def predict(model: FewShotClassifier, support_images: Tensor, support_labels: Tensor,
            query_images: Tensor) -> np.ndarray:
    """Class probabilities ``(Q, n_way)`` of each query.

    Raises:
        ValueError: the model cannot answer this task (the message says why).
    """
    with torch.no_grad():
        work = _adapted(model, support_images, support_labels)
        logits = work(query_images.to(_device(work)))
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


def explain(model: FewShotClassifier, support_images: Tensor, support_labels: Tensor,
            query_images: Tensor) -> dict[str, np.ndarray]:
    """The method's own "why" (its :meth:`~FewShotClassifier.explain`) as arrays, ``probabilities`` always among them.

    Raises:
        ValueError: the model cannot answer this task.
    """
    with torch.no_grad():
        work = _adapted(model, support_images, support_labels)
        qx = query_images.to(_device(work))
        out = {"probabilities": torch.softmax(work(qx).float(), dim=1)}
        out.update(work.explain(qx))
    return {name: (value.float() if value.is_floating_point() else value).cpu().numpy() for name, value in out.items()}


# ---------------------------------------------------------------------------------------------------- MAML's steps


def layer_name(param: str) -> str:
    """A parameter's layer in words: ``net.backbone.blocks.0.conv.weight`` -> ``block 1 conv``."""
    m = re.search(r"backbone\.blocks\.(\d+)\.(conv|norm)\.(weight|bias)$", param)
    if m:
        return f"block {int(m.group(1)) + 1} {'conv' if m.group(2) == 'conv' else 'BN'}"
    if param.startswith("head.") or ".head." in param:
        return "head (linear)"
    return param


def adaptation(model: MAML, support_images: Tensor, support_labels: Tensor, query_images: Tensor | None = None, *,
               inner_lr: float | None = None, inner_steps: int | None = None) -> Iterator[AdaptStep]:
    """MAML's inner loop as :meth:`MAML.adaptation` runs it, one :class:`AdaptStep` per step (0 = where the inner
    loop starts), with the support set's BatchNorm statistics; ``model`` is not changed. ``inner_lr`` and
    ``inner_steps`` default to the model's own (evaluation) settings.

    Raises:
        ValueError: the task does not fit the model's head.
    """
    message = check_way(model, int(support_labels.max()) + 1)
    if message:
        raise ValueError(message)
    work = copy.copy(model)  # shares the (read-only) weights; only its BatchNorm mode may differ
    _support_statistics(work)
    device = _device(model)
    return work.adaptation(support_images.to(device), support_labels.to(device),
                           None if query_images is None else query_images.to(device),
                           inner_lr=inner_lr, inner_steps=inner_steps)


def step_probabilities(step: AdaptStep, n_way: int) -> np.ndarray:
    """The queries' class probabilities ``(Q, n_way)`` at one step (empty when the step saw no queries)."""
    if step.query_logits is None:
        return np.zeros((0, n_way), dtype=np.float32)
    return torch.softmax(step.query_logits[:, :n_way].float(), dim=1).cpu().numpy()


def layer_change(start: AdaptStep, step: AdaptStep) -> dict[str, float]:
    """How far each layer moved from where the inner loop started (``start``, step 0): ``||w - w0|| / ||w0||`` per
    layer (a layer that starts at zero, like photo mode's head, reports its absolute change)."""
    moved: dict[str, float] = {}
    norms: dict[str, float] = {}
    for name, w in step.weights.items():
        layer = layer_name(name)
        w0 = start.weights[name]
        moved[layer] = moved.get(layer, 0.0) + float((w - w0).float().pow(2).sum())
        norms[layer] = norms.get(layer, 0.0) + float(w0.float().pow(2).sum())
    return {layer: math.sqrt(moved[layer]) / (math.sqrt(norms[layer]) if norms[layer] > 0 else 1.0)
            for layer in moved}


def adapted_weights(model: MAML, support_images: Tensor, support_labels: Tensor, *, inner_lr: float,
                    step: int) -> dict[str, Tensor]:
    """MAML's fast weights after ``step`` inner steps of ``inner_lr`` (the model is unchanged)."""
    last = None
    for last in adaptation(model, support_images, support_labels, inner_lr=inner_lr, inner_steps=step):
        pass
    assert last is not None
    return last.weights


# ---------------------------------------------------------------------------------------------------- embeddings


def embed(model: FewShotClassifier, images: Tensor, *, maml_weights: dict[str, Tensor] | None = None,
          n_support: int | None = None) -> np.ndarray:
    """Backbone embeddings ``(N, D)``. With ``maml_weights`` (a MAML model), its backbone at those weights,
    normalised with the statistics of the first ``n_support`` images (the support set)."""
    if maml_weights is None:
        return extract_features(model.backbone, images).numpy()
    if not isinstance(model, MAML):
        raise TypeError(f"maml_weights are for a MAML model, not {type(model).__name__}")
    return model.embed_with(maml_weights, images.to(_device(model)), stats_from=n_support).float().cpu().numpy()


@dataclass
class PointSet:
    """Images to embed (each ``(1, H, W)``, or a feature vector in photo mode) with a row per image:
    ``{"class", "role", "label"}``; the role is ``support``, ``query`` or ``background``."""

    images: list = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def add(self, image, cls: str, role: str, label: str) -> None:
        self.images.append(torch.as_tensor(image).float())
        self.rows.append({"class": cls, "role": role, "label": label})

    def __len__(self) -> int:
        return len(self.images)

    def ordered(self) -> "PointSet":
        """Support points first (MAML adapts on them and takes BatchNorm statistics from them)."""
        order = sorted(range(len(self.rows)), key=lambda r: self.rows[r]["role"] != "support")
        return PointSet([self.images[r] for r in order], [self.rows[r] for r in order])

    @property
    def n_support(self) -> int:
        return sum(r["role"] == "support" for r in self.rows)

    def support_labels(self) -> list[int]:
        """Episode labels of the support points, classes numbered in order of first appearance."""
        names = [r["class"] for r in self.rows if r["role"] == "support"]
        index = {name: c for c, name in enumerate(dict.fromkeys(names))}
        return [index[n] for n in names]

    def image(self, i: int) -> np.ndarray:
        return self.images[i][0].numpy()

    def add_task(self, task: Task, names: list[str], *, support_role: str = "support", query_role: str = "query",
                 cls: str | None = None) -> None:
        """Add a sampled task; ``names[c]`` names episode class ``c`` (``cls``: one class for every point)."""
        for k in range(len(task.support_labels)):
            name = names[int(task.support_labels[k])]
            self.add(task.support_images[k], cls or name, support_role, name)
        for k in range(len(task.query_labels)):
            name = names[int(task.query_labels[k])]
            self.add(task.query_images[k], cls or name, query_role, name)


def embed_points(model: FewShotClassifier, points: PointSet, *, maml_step: int | None = None,
                 inner_lr: float = 0.4) -> tuple[np.ndarray, list[dict]]:
    """Embeddings of every point plus one prototype (mean support embedding) per support class:
    ``(features (N + C, D), the prototypes' rows)``. With ``maml_step`` (a MAML model whose support points come
    first), MAML's backbone after that many inner steps on the support points."""
    batch = torch.stack(points.images)
    n_support = points.n_support
    if maml_step is None or n_support == 0:
        feats = embed(model, batch)
    else:
        labels = torch.tensor(points.support_labels(), dtype=torch.long)
        weights = adapted_weights(model, batch[:n_support], labels, inner_lr=inner_lr, step=maml_step)
        feats = embed(model, batch, maml_weights=weights, n_support=n_support)
    protos, proto_rows = [], []
    roles = np.asarray([r["role"] for r in points.rows])
    classes = np.asarray([r["class"] for r in points.rows])
    for name in dict.fromkeys(c for c, role in zip(classes, roles) if role == "support"):
        protos.append(feats[(classes == name) & (roles == "support")].mean(0))
        proto_rows.append({"class": name, "role": "prototype", "label": f"{name} (prototype)"})
    return (np.concatenate([feats, np.stack(protos)]) if protos else feats).astype(np.float32), proto_rows


def query_predictions(model: FewShotClassifier, points: PointSet) -> dict[int, str]:
    """The class the model takes each query point for, the support points being its support set:
    ``{point index: predicted class name}`` (empty with fewer than two support classes or no queries).

    Raises:
        ValueError: the model cannot answer a task of that many classes (the message says why).
    """
    support = [i for i, row in enumerate(points.rows) if row["role"] == "support"]
    queries = [i for i, row in enumerate(points.rows) if row["role"] == "query"]
    names = list(dict.fromkeys(points.rows[i]["class"] for i in support))
    if len(names) < 2 or not queries:
        return {}
    labels = torch.tensor([names.index(points.rows[i]["class"]) for i in support], dtype=torch.long)
    probabilities = predict(model, torch.stack([points.images[i] for i in support]), labels,
                            torch.stack([points.images[i] for i in queries]))
    return {i: names[int(p.argmax())] for i, p in zip(queries, probabilities)}


def embedding_metric(model: FewShotClassifier) -> str:
    """How the method compares embeddings (for :func:`fewshot.embedding.nearest_neighbours`): ``"cosine"`` for
    Matching Networks and a cosine ProtoNet, else ``"euclidean"``."""
    if isinstance(model, MatchingNetwork) or getattr(model, "distance", None) == "cosine":
        return "cosine"
    return "euclidean"


def benchmark(model: FewShotClassifier, tasks: Iterable[Task]) -> EvalResult:
    """:func:`fewshot.evaluate` on a private copy, with the checkpoint's own settings (MAML: its BatchNorm mode)."""
    return evaluate(copy.deepcopy(model), tasks)
