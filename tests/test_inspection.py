"""fewshot.inspection and fewshot.symbols, called directly: what the lab's pages show about a model, computed
without Streamlit, on small untrained models and tiny tasks (``make_task`` of conftest.py)."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image

import fewshot
from fewshot import inspection
from fewshot.methods.base import FewShotClassifier
from fewshot.symbols import SYMBOLS, synthetic_symbol, synthetic_task


def small(method: str) -> FewShotClassifier:
    kwargs = {"hidden": 8}
    if method in ("maml", "fomaml"):
        kwargs.update(n_way=3, inner_steps=2, inner_lr=0.4)
    elif method == "mann":
        kwargs.update(n_way=3, controller_size=16, memory_slots=8, memory_width=4, read_heads=2)
    elif method == "finetune":
        kwargs.update(n_classes=5, finetune_steps=5)
    if method in ("matching", "siamese", "mann", "finetune"):
        kwargs["feature_dim"] = 8
    return fewshot.build_model(method, **kwargs).eval()


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unchanged(model: FewShotClassifier, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before) \
        and not model._support_ready


@pytest.mark.parametrize("method", list(fewshot.METHODS))
def test_predict_gives_probabilities_and_leaves_the_model_alone(method, make_task):
    model = small(method)
    task = make_task(3, 2, 2, size=28)
    before = snapshot(model)
    probs = inspection.predict(model, task.support_images, task.support_labels, task.query_images)
    assert probs.shape == (6, 3) and np.allclose(probs.sum(1), 1, atol=1e-5) and (probs >= 0).all()
    assert unchanged(model, before)
    again = inspection.predict(model, task.support_images, task.support_labels, task.query_images[:1])
    assert np.allclose(again[0], probs[0], atol=1e-5), "one query's answer depends on the other queries"


@pytest.mark.parametrize("method", list(fewshot.METHODS))
def test_explain_returns_the_methods_own_quantities(method, make_task):
    model = small(method)
    task = make_task(3, 2, 2, size=28)
    before = snapshot(model)
    out = inspection.explain(model, task.support_images, task.support_labels, task.query_images)
    assert unchanged(model, before)
    probs = out["probabilities"]
    assert np.allclose(probs, inspection.predict(model, task.support_images, task.support_labels, task.query_images),
                       atol=1e-5)
    own = {"protonet": {"distances", "prototypes"}, "matching": {"attention"}, "siamese": {"similarity"},
           "mann": {"support_order", "support_reads", "query_reads"}, "maml": {"start_probabilities"},
           "fomaml": {"start_probabilities"}, "finetune": {"scores", "feature_norms"}}[method]
    assert own <= set(out), sorted(out)
    if method == "protonet":  # the nearest prototype wins
        assert out["distances"].shape == (6, 3) and (out["distances"].argmin(1) == probs.argmax(1)).all()
    if method == "matching":
        assert out["attention"].shape == (6, 6) and np.allclose(out["attention"].sum(1), 1, atol=1e-5)
    if method == "siamese":
        assert out["similarity"].shape == (6, 6) and ((out["similarity"] >= 0) & (out["similarity"] <= 1)).all()
    if method == "finetune":
        scores = torch.from_numpy(out["scores"])
        assert np.allclose(torch.softmax(scores, 1).numpy(), probs, atol=1e-5)


def test_mann_explains_its_reads_in_the_order_it_wrote_the_support_set(make_task):
    model = small("mann")
    task = make_task(3, 2, 2, size=28)
    out = inspection.explain(model, task.support_images, task.support_labels, task.query_images)
    order = torch.from_numpy(out["support_order"]).long()
    assert sorted(order.tolist()) == list(range(6))  # a permutation of the support set
    assert out["support_reads"].shape == (6, 2, 8) and out["query_reads"].shape == (6, 2, 8)
    assert np.allclose(out["support_reads"].sum(-1), 1, atol=1e-5)
    # the reads are those of the sequence in that order (and not of another order)
    with torch.no_grad():
        features = model.backbone(task.support_images[order]).flatten(1)
        _, _, reads = model.run_sequence(features, task.support_labels[order])
        _, _, other = model.run_sequence(features.flip(0), task.support_labels[order].flip(0))
    assert np.allclose(torch.stack(reads).numpy(), out["support_reads"], atol=1e-6)
    assert not np.allclose(torch.stack(other).numpy(), out["support_reads"], atol=1e-3)


@pytest.mark.parametrize("method", ["maml", "fomaml"])
def test_maml_trajectory_matches_its_answers(method, make_task):
    model = small(method)
    task = make_task(3, 2, 2, size=28)
    before = snapshot(model)
    steps = list(inspection.adaptation(model, task.support_images, task.support_labels, task.query_images,
                                       inner_lr=0.4, inner_steps=2))
    assert [s.step for s in steps] == [0, 1, 2] and unchanged(model, before)
    assert model.batch_norm == "transductive"  # the shared model's mode is untouched
    out = inspection.explain(model, task.support_images, task.support_labels, task.query_images)
    # explain's start and answer are the trajectory's first and last steps (support-set BatchNorm statistics)
    assert np.allclose(inspection.step_probabilities(steps[0], 3), out["start_probabilities"], atol=1e-5)
    assert np.allclose(inspection.step_probabilities(steps[-1], 3), out["probabilities"], atol=1e-5)
    assert steps[-1].support_loss < steps[0].support_loss
    change = [inspection.layer_change(steps[0], s) for s in steps]
    assert set(change[0]) == {"block 1 conv", "block 1 BN", "block 2 conv", "block 2 BN", "block 3 conv", "block 3 BN",
                              "block 4 conv", "block 4 BN", "head (linear)"}
    assert all(v == 0 for v in change[0].values()) and all(v > 0 for v in change[2].values())
    weights = inspection.adapted_weights(model, task.support_images, task.support_labels, inner_lr=0.4, step=1)
    assert all(torch.equal(weights[k], steps[1].weights[k]) for k in weights)


def test_a_narrow_head_is_refused_with_a_message(make_task):
    model = small("maml")  # a 3-way head
    task = make_task(4, 1, 1, size=28)
    assert "3-way output head" in inspection.check_way(model, 4) and inspection.check_way(model, 3) is None
    for call in (inspection.predict, inspection.explain):
        with pytest.raises(ValueError, match="cannot answer a 4-way task"):
            call(model, task.support_images, task.support_labels, task.query_images)
    with pytest.raises(ValueError, match="3-way output head"):
        list(inspection.adaptation(model, task.support_images, task.support_labels, inner_lr=0.4, inner_steps=1))
    assert inspection.check_way(small("protonet"), 20) is None  # no head: any number of classes


def test_the_base_class_explains_with_the_answer_itself(make_task):
    class Nearest(FewShotClassifier):  # a method that declares nothing of its own
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Flatten()

        def process_support_set(self, support_images, support_labels):
            self.support, self.labels, self._support_ready = support_images.flatten(1), support_labels, True

        def forward(self, query_images):
            return -torch.cdist(query_images.flatten(1), self.support)  # one example per class, in class order

    task = make_task(2, 1, 1, size=8)
    model = Nearest()
    model.process_support_set(task.support_images, task.support_labels)
    out = model.explain(task.query_images)
    assert set(out) == {"probabilities"} and out["probabilities"].shape == (2, 2)
    assert model.fixed_way is None


def test_embeddings_of_images_and_prototypes(make_task):
    model = small("protonet")
    task = make_task(3, 2, 2, size=28)
    feats = inspection.embed(model, task.support_images)
    assert feats.shape == (6, model.embed(task.support_images).shape[1])
    assert np.allclose(feats, model.embed(task.support_images).numpy(), atol=1e-6)
    points = inspection.PointSet()
    points.add_task(task, ["a", "b", "c"])
    points = points.ordered()
    assert points.n_support == 6 and points.support_labels() == task.support_labels.tolist()
    everything, proto_rows = inspection.embed_points(model, points)
    assert everything.shape == (12 + 3, feats.shape[1]) and [r["class"] for r in proto_rows] == ["a", "b", "c"]
    first = task.support_labels == 0
    assert np.allclose(everything[12], feats[first.numpy()].mean(0), atol=1e-5)  # the prototype is the class mean
    with pytest.raises(TypeError, match="MAML"):
        inspection.embed(model, task.support_images, maml_weights={})


def test_maml_embeddings_move_with_adaptation(make_task):
    model = small("maml")
    task = make_task(3, 2, 2, size=28)
    points = inspection.PointSet()
    points.add_task(task, ["a", "b", "c"])
    points = points.ordered()
    before = snapshot(model)
    start, _ = inspection.embed_points(model, points, maml_step=0)
    plain, _ = inspection.embed_points(model, points)
    after, _ = inspection.embed_points(model, points, maml_step=2)
    assert unchanged(model, before)
    batch = torch.stack(points.images)
    stats = model.embed_with(model.meta_weights(), batch, stats_from=6).numpy()
    assert np.allclose(start[:12], stats, atol=1e-5)  # step 0: the meta-learned backbone, support-set statistics
    assert not np.allclose(start[:12], plain[:12], atol=1e-4)  # (whole-batch statistics differ)
    assert not np.allclose(after, start, atol=1e-4)


def test_benchmark_runs_on_a_copy(make_task):
    model = small("protonet")
    before = snapshot(model)
    result = inspection.benchmark(model, [make_task(3, 1, 2, size=28) for _ in range(4)])
    assert result.episodes == 4 and 0 <= result.accuracy <= 1
    assert unchanged(model, before)


def test_synthetic_symbols():
    a, b = synthetic_symbol("circle", seed=1), synthetic_symbol("circle", seed=2)
    assert a == synthetic_symbol("circle", seed=1) and a != b  # deterministic per seed, jittered across seeds
    image = np.asarray(Image.open(io.BytesIO(a)).convert("L"))
    assert image.shape == (210, 210) and image.min() == 0 and image.max() == 255  # black ink on white
    with pytest.raises(ValueError, match="unknown symbol 'blob'"):
        synthetic_symbol("blob")
    task = synthetic_task(4, 2, 3, seed=5)
    assert task.names == list(SYMBOLS[:4]) and [len(s) for s in task.support] == [2, 2, 2, 2]
    assert len(task.queries) == 12 and sorted({c for _, c in task.queries}) == [0, 1, 2, 3]
    assert len({png for pngs in task.support for png in pngs} | {png for png, _ in task.queries}) == 8 + 12
    with pytest.raises(ValueError, match="n_way"):
        synthetic_task(11)
    # a model sees distinct symbols as distinct: each class's drawings are nearer each other than to the others
    ink = torch.stack([fewshot.preprocess_image(png, 28, center=True) for pngs in task.support for png in pngs])
    d = torch.cdist(ink.flatten(1), ink.flatten(1))
    assert d[0, 1] < d[0, 2:].min() and d[2, 3] < torch.cat([d[2, :2], d[2, 4:]]).min()


def test_private_copies_answer_with_support_statistics_only_where_maml_would_use_the_batch():
    maml = small("maml")
    work = inspection.private_copy(maml)
    assert work.batch_norm == "support" and maml.batch_norm == "transductive"
    for mode in ("support", "running"):  # a model's own choice stays
        shared = copy.deepcopy(maml)
        shared.batch_norm = mode
        assert inspection.private_copy(shared).batch_norm == mode
