"""MAML and first-order MAML (Finn, Abbeel & Levine 2017, arXiv:1703.03400), written with torch.func.

Weights are plain dicts and adaptation is a pure function: the model being adapted is never
modified, so one cached model can serve many users at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from ..functional import functional_call  # thread-safe: cached models are shared by sessions

from ..augment import AffineAugment
from ..backbones import Conv4, conv4
from ..tasks import Task
from .base import FewShotClassifier
from .conv4_ops import (_Classifier, _conv4_features, _conv4_logits, _direct_conv4, _few_channel_conv, _frozen_stats,  # noqa: F401
                        _stacked_forward, _stacked_loss)
from .protonet import compute_prototypes

__all__ = ["Weights", "AdaptStep", "MAML", "adapt", "adapt_head_path", "adapt_steps", "msl_weights"]

Weights = dict[str, Tensor]
BATCH_NORM_MODES = ("transductive", "support", "running")
INNER_PARAMS = ("all", "head")  # MAML(inner_params=...): what the inner loop adapts
HEAD = ("head.weight", "head.bias")
_INNER_AUGMENT = AffineAugment()  # MAML(inner_augment=K): the warps of the support copies


def check_inner_values(*, temperature: float | None = None, grad_clip: float | None = None) -> None:
    """Refuse an inner-loss temperature that is not a positive number, or an inner gradient clip below 0 (ValueError);
    ``None``: not checked. The constructor's check, and :meth:`MAML.set_test_inner_loop`'s."""
    if grad_clip is not None and not grad_clip >= 0.0:  # NaN fails too
        raise ValueError(f"inner_grad_clip is a gradient norm >= 0 (0: off), got {grad_clip}")
    if temperature is not None and not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"inner_temperature must be a positive number, got {temperature}")


def check_inner_params(inner_params: str) -> None:
    """Refuse an ``inner_params`` (``--inner-params``) other than ``"all"`` or ``"head"`` (ValueError)."""
    if inner_params not in INNER_PARAMS:
        raise ValueError(f"inner_params (--inner-params) is what the inner loop adapts, one of {INNER_PARAMS}, "
                         f"got {inner_params!r}")


def check_inner_augment(inner_augment: int, batch_norm: str) -> None:
    """Refuse an ``inner_augment`` (``--inner-augment``) a MAML with this BatchNorm mode cannot use (ValueError):
    the constructor's check, and ``evaluate --inner-augment``'s on a loaded checkpoint."""
    if isinstance(inner_augment, bool) or not isinstance(inner_augment, int) or not 0 <= inner_augment <= 64:
        raise ValueError(f"inner_augment (--inner-augment) is a number of warped copies per support image, 0 to 64, "
                         f"got {inner_augment!r}")
    if inner_augment and batch_norm == "support":
        raise ValueError("inner_augment (--inner-augment) with batch_norm 'support': the queries are normalised with "
                         "the support images' statistics, which the warped copies would change; use 'running' or "
                         "'transductive'")



@dataclass
class AdaptStep:
    """State after ``step`` inner steps (step 0 = the meta-learned initialisation).

    ``support_loss``/``support_accuracy`` are measured at ``weights``; ``query_logits`` too when
    queries were given.
    """

    step: int
    weights: Weights
    support_loss: float
    support_accuracy: float
    query_logits: Tensor | None


def _logits(net: nn.Module, weights: Weights, buffers: dict[str, Tensor], images: Tensor,
            stats_from: int | None = None, *, features_only: bool = False) -> Tensor:
    """``functional_call(net, (weights, buffers), (images,), {"stats_from": ...})``, directly for MAML's Conv-4.

    With running statistics (``batch_norm="running"``) every image is normalised with them and
    ``stats_from`` does not matter. ``features_only``: the backbone's features, no head.
    """
    eps = _direct_conv4(net, weights)
    if eps is not None:
        run = _conv4_features if features_only else _conv4_logits
        frozen = _frozen_stats(net)
        return run(weights, images, eps, stats_from=None if frozen else stats_from, stats=frozen)
    kwargs: dict = {"stats_from": stats_from} if stats_from is not None else {}
    if features_only:
        kwargs["features_only"] = True
    if getattr(net, "head", 0) is None and "head.weight" in weights:  # Proto-MAML: the task's own head
        kwargs["task_head"] = (weights["head.weight"], weights["head.bias"])
        weights = {k: v for k, v in weights.items() if not k.startswith("head.")}
    return functional_call(net, (weights, buffers), (images,), kwargs or None)


LossFn = Callable[[Tensor, Tensor], Tensor]


def _support_loss(net: nn.Module, weights: Weights, buffers: dict[str, Tensor], images: Tensor,
                  labels: Tensor, loss_fn: LossFn | None = None) -> tuple[Tensor, Tensor]:
    logits = _logits(net, weights, buffers, images)
    return (F.cross_entropy if loss_fn is None else loss_fn)(logits, labels), logits


def _checkpointed(step: Callable[[Weights], Weights], weights: Weights) -> Weights:
    """``step(weights)`` under activation checkpointing: nothing it saves for backward is kept.

    The inner step's forward pass (and its gradient graph) is recomputed during the outer backward
    instead, so the memory of second-order MAML no longer grows with the number of inner steps, at
    the cost of one more forward + gradient per step. (Non-reentrant checkpointing supports the
    ``autograd.grad(create_graph=True)`` inside; tests check the meta-gradient is unchanged.)
    """
    names = list(weights)

    def run(*tensors: Tensor) -> tuple[Tensor, ...]:
        out = step(dict(zip(names, tensors)))
        return tuple(out[k] for k in names)

    return dict(zip(names, checkpoint(run, *weights.values(), use_reentrant=False)))


def _lr_of(inner_lr, step: int, name: str):
    return inner_lr(step, name) if callable(inner_lr) else inner_lr


def clip_inner_grads(grads: Sequence[Tensor], max_norm: float, *, per_task: bool = False) -> list[Tensor]:
    """The inner gradient scaled down to norm ``max_norm`` where it is longer (``max_norm`` 0: unchanged).

    One norm over all the weights' gradients (per task, over every dimension but the first, when ``per_task``:
    the stacked inner loop's), scaled differentiably, so second-order MAML's meta-gradient sees the clip too. It
    bounds a single step's damage: one support set with an outlier drawing can give a gradient far longer than
    the usual one, and one step of it can throw every query to chance.
    """
    if not max_norm:
        return list(grads)
    if per_task:
        norm = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in grads))  # (T,)
        factor = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        return [g * factor.view(-1, *([1] * (g.dim() - 1))) for g in grads]
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    factor = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    return [g * factor for g in grads]


def msl_weights(n_steps: int, progress: float, anneal_fraction: float) -> list[float]:
    """MAML++'s multi-step loss weights (Antoniou et al. 2019, section 4): the importance of the query loss after
    each of ``n_steps`` inner steps, at ``progress`` in [0, 1] of the run.

    Uniform at the start; the weights of steps before the last decay linearly to 3% of uniform over the first
    ``anneal_fraction`` of the run, then to 0 (only the final step counts), the last step taking the rest. They
    always sum to 1.
    """
    if n_steps < 1:
        raise ValueError("the multi-step loss needs at least one inner step")
    if anneal_fraction <= 0 or progress >= anneal_fraction:
        return [0.0] * (n_steps - 1) + [1.0]
    t = max(progress, 0.0) / anneal_fraction
    early = max((1.0 - t) / n_steps, 0.03 / n_steps)
    return [early] * (n_steps - 1) + [1.0 - early * (n_steps - 1)]


def adapt(net: nn.Module, weights: Weights, buffers: dict[str, Tensor], images: Tensor, labels: Tensor, *,
          inner_lr, inner_steps: int, create_graph: bool, checkpoint_steps: bool = False,
          loss_fn: LossFn | None = None, grad_clip: float = 0.0) -> Weights:
    """Run ``inner_steps`` SGD steps on the support loss and return new weights; inputs are not modified.

    Args:
        net: the module whose structure is used (its own parameters are ignored).
        weights: name -> tensor; the starting point (meta-parameters or a detached copy).
        buffers: name -> tensor, passed through (clone them if the module tracks running stats).
        images, labels: the support set ``(N, C, H, W)``, ``(N,)``.
        inner_lr: step size: a number, or ``inner_lr(step, name)`` giving each weight's rate at each step
            (MAML++'s learned per-layer, per-step rates; ``step`` counts from 0).
        inner_steps: number of steps (0 returns ``weights`` unchanged).
        create_graph: keep the graph of the gradients (second-order MAML).
        checkpoint_steps: recompute each step in the backward pass instead of storing it (flat
            memory as ``inner_steps`` grows; only matters with ``create_graph``).
        loss_fn: ``loss_fn(outputs, labels)`` -> scalar; default cross-entropy (classification). The
            sine-wave regression of Finn et al. passes mean-squared error.
        grad_clip: each step's gradient is scaled down to this norm where longer (:func:`clip_inner_grads`);
            0: never.
    """
    for weights in adapt_path(net, weights, buffers, images, labels, inner_lr=inner_lr, inner_steps=inner_steps,
                              create_graph=create_graph, checkpoint_steps=checkpoint_steps, loss_fn=loss_fn,
                              grad_clip=grad_clip):
        pass
    return weights


def adapt_path(net: nn.Module, weights: Weights, buffers: dict[str, Tensor], images: Tensor, labels: Tensor, *,
               inner_lr, inner_steps: int, create_graph: bool, checkpoint_steps: bool = False,
               loss_fn: LossFn | None = None, grad_clip: float = 0.0) -> Iterator[Weights]:
    """:func:`adapt` one step at a time: yields the starting ``weights``, then the weights after each step
    (for MAML++'s multi-step loss, which scores the queries after every step)."""
    yield weights
    for i in range(inner_steps):
        def step(w: Weights, i: int = i) -> Weights:
            loss, _ = _support_loss(net, w, buffers, images, labels, loss_fn)
            grads = clip_inner_grads(torch.autograd.grad(loss, list(w.values()), create_graph=create_graph), grad_clip)
            return {name: v - _lr_of(inner_lr, i, name) * g for (name, v), g in zip(w.items(), grads)}

        weights = _checkpointed(step, weights) if checkpoint_steps and create_graph else step(weights)
        yield weights


def adapt_head_path(features: Tensor, head: tuple[Tensor, Tensor], labels: Tensor, *, inner_lr, inner_steps: int,
                    create_graph: bool, loss_fn: LossFn | None = None,
                    grad_clip: float = 0.0) -> Iterator[tuple[Tensor, Tensor]]:
    """The inner loop of ``MAML(inner_params="head")`` (ANIL, Raghu et al. 2020, arXiv:1909.09157): only the linear
    head ``(weight, bias)`` steps, on the support ``features`` of an encoder that does not move.

    Yields the starting head, then the head after each of ``inner_steps`` SGD steps on
    ``loss_fn(features @ weight.T + bias, labels)`` (default cross-entropy). ``inner_lr``: a number or
    ``inner_lr(step, name)`` with the names ``"head.weight"``, ``"head.bias"``; ``grad_clip`` as in :func:`adapt`.
    The same steps as :func:`adapt` would take with every encoder weight's rate at 0, for the price of one encoder
    pass instead of one per step. ``create_graph``: keep the graph of the gradients (second order).
    """
    loss_of = F.cross_entropy if loss_fn is None else loss_fn
    weight, bias = head
    yield weight, bias
    for i in range(inner_steps):
        loss = loss_of(F.linear(features, weight, bias), labels)
        grads = clip_inner_grads(torch.autograd.grad(loss, [weight, bias], create_graph=create_graph), grad_clip)
        weight, bias = (v - _lr_of(inner_lr, i, name) * g for v, name, g in zip((weight, bias), HEAD, grads))
        yield weight, bias


def adapt_steps(net: nn.Module, weights: Weights, buffers: dict[str, Tensor], images: Tensor, labels: Tensor, *,
                inner_lr, inner_steps: int, query_images: Tensor | None = None,
                stats_from_support: bool = False, grad_clip: float = 0.0,
                loss_fn: LossFn | None = None) -> Iterator[AdaptStep]:
    """Observable adaptation: yields an :class:`AdaptStep` for step 0..``inner_steps`` (no graph kept).

    Each step's weights equal those :func:`adapt` would return after that many steps (with the same ``loss_fn``;
    ``support_loss`` is that loss).
    """
    loss_of = F.cross_entropy if loss_fn is None else loss_fn
    eps = _direct_conv4(net, weights)
    if eps is not None and images.device.type == "cpu":  # the format _conv4_logits runs in, converted once
        weights = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in weights.items()}
    weights = {k: v.detach().requires_grad_() for k, v in weights.items()}
    n_support = images.shape[0]
    frozen = _frozen_stats(net) if eps is not None else None
    for step in range(inner_steps + 1):
        support_stats: list[tuple[Tensor, Tensor]] = []
        with torch.enable_grad():
            if frozen is not None:  # fixed running statistics for support and queries alike
                support_stats = frozen
                logits = _conv4_logits(weights, images, eps, stats=frozen)
                loss = loss_of(logits, labels)
            elif eps is not None:  # keeps the support set's BatchNorm statistics for the queries below
                logits = _conv4_logits(weights, images, eps, save_stats=support_stats)
                loss = loss_of(logits, labels)
            else:
                loss, logits = _support_loss(net, weights, buffers, images, labels, loss_fn)
            grads = (clip_inner_grads(torch.autograd.grad(loss, list(weights.values())), grad_clip)
                     if step < inner_steps else None)
        query_logits = None
        if query_images is not None and query_images.shape[0] > 0:
            with torch.no_grad():
                if eps is not None:  # the queries alone, normalised with the support statistics just computed
                    query_logits = _conv4_logits(weights, query_images, eps,
                                                 stats=support_stats if stats_from_support or frozen else None)
                elif stats_from_support:
                    both = torch.cat([images, query_images])
                    query_logits = functional_call(net, (weights, buffers), (both,), {"stats_from": n_support})[n_support:]
                else:
                    query_logits = functional_call(net, (weights, buffers), (query_images,))
        acc = (logits.argmax(1) == labels).float().mean().item()
        yield AdaptStep(step, {k: v.detach() for k, v in weights.items()}, loss.item(), acc, query_logits)
        if grads is not None:
            weights = {k: (w - _lr_of(inner_lr, step, k) * g).detach().requires_grad_()
                       for (k, w), g in zip(weights.items(), grads)}


class MAML(FewShotClassifier):
    """Model-Agnostic Meta-Learning (Finn et al. 2017, arXiv:1703.03400); ``first_order=True`` is FOMAML.

    MAML learns an initialisation from which a few gradient steps on a new task's support set give a
    good classifier. Second-order MAML backpropagates through those inner steps; first-order MAML
    treats the inner gradients as constants, which is cheaper and usually nearly as good.

    Args:
        n_way: width of the output head (a 5-way model cannot answer 20-way tasks).
        inner_lr, inner_steps: inner loop during meta-training.
        inner_lr_test, inner_steps_test: inner loop at evaluation (default: the training values).
        first_order: drop second-order terms of the meta-gradient.
        batch_norm: ``"transductive"`` (the paper: every forward pass normalises with its own batch's
            statistics, so the query batch is normalised by itself) or ``"support"`` (queries are
            normalised with the support set's statistics, so each query's answer is independent of
            the other queries; what the app uses for one drawn query). No running statistics are
            kept in either mode.
            ``"running"``: fixed running statistics, those of the encoder the model was initialised from
            (``--init-backbone`` of a ProtoNet, say), for support and queries alike; BatchNorm is then a fixed
            affine map and every answer is independent of the other images. Conv-4 only.
        checkpoint_inner: activation checkpointing through the inner loop (second order only):
            memory stays flat as ``inner_steps`` grows, for about one more forward per step.
        proto_head: Proto-MAML (Triantafillou et al. 2020, Meta-Dataset): no meta-learned head; each task's
            linear head is built from its support prototypes ``c_k`` of the current encoder, ``W_k = 2 c_k``,
            ``b_k = -||c_k||^2`` (differentiably: the meta-gradient flows through it), then the whole network
            takes the inner steps. At 0 steps its logits are ProtoNet's plus a per-query constant, and it
            answers tasks of any number of classes.
        learn_inner_lr: MAML++ (Antoniou et al. 2019): one learned inner learning rate per weight tensor and
            per inner step (kept positive as ``exp`` of a learned log-rate, starting at ``inner_lr``); used in
            training and at test time (steps beyond those trained use the last step's rates).
        multi_step_loss: MAML++'s multi-step loss: during the first ``multi_step_loss`` fraction of training
            the query loss after every inner step counts (weights from :func:`msl_weights`); 0 turns it off.
        inner_grad_clip: each inner step's gradient (all weights together) is scaled down to this norm where
            longer, in training and at test time (:func:`clip_inner_grads`); 0 turns it off (the paper's MAML).
        inner_temperature: the inner loop's support loss is the cross-entropy of the logits divided by this
            temperature (1: the plain loss). With the prototype head a support image sits on or near its own
            class's prototype, so the plain loss is ~1e-4 and its gradient ~0; a temperature above 1 softens the
            softmax and leaves the inner step something to learn. Only the inner loop uses it: the queries' logits
            and the outer loss are unchanged.
        learn_inner_temperature: meta-learn that temperature (kept positive as ``exp`` of a learned log, starting
            at ``inner_temperature``). Only second-order MAML's meta-gradient reaches it.
        inner_augment: the inner loop descends the support loss of the support images and of ``inner_augment``
            randomly warped copies of each (:class:`fewshot.augment.AffineAugment`'s small rotation, scale, shear
            and shift), in training and at test time; 0: the support images alone (the paper's MAML). With one
            example per class the prototype head already classifies the support images themselves (loss ~1e-4),
            so a step on them alone has nothing to learn; their warped copies are new drawings of the same
            characters, and the step then moves the network towards classifying those. The Proto-MAML head is built
            from the support images alone, so step 0 is still ProtoNet. Randomness: in training the global torch
            generator (reproducible from ``--seed``, and restored on ``--resume``); in evaluation a generator seeded
            afresh for each support set, so the same support set always gives the same answer.
        inner_params: what the inner loop adapts. ``"all"``: every weight (MAML). ``"head"``: only the linear head
            (ANIL, Raghu et al. 2020), on the features of an encoder that stays at the meta-learned weights: the
            encoder runs over the inner support set once instead of once per step (:func:`adapt_head_path`), so
            many steps cost little. With ``proto_head`` the head starts at the support prototypes, so step 0 is
            still ProtoNet; learned rates (``learn_inner_lr``) are then the head's alone.
    """

    def __init__(self, n_way: int = 5, *, in_channels: int = 1, hidden: int = 64, inner_lr: float = 0.4,
                 inner_steps: int = 1, inner_lr_test: float | None = None, inner_steps_test: int | None = None,
                 first_order: bool = False, batch_norm: str = "transductive", feature_dim: int | None = None,
                 backbone: nn.Module | None = None, checkpoint_inner: bool = False, proto_head: bool = False,
                 learn_inner_lr: bool = False, multi_step_loss: float = 0.0, inner_grad_clip: float = 0.0,
                 inner_temperature: float = 1.0, learn_inner_temperature: bool = False, inner_augment: int = 0,
                 inner_params: str = "all"):
        super().__init__()
        if batch_norm not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {batch_norm!r}")
        if inner_steps < 0 or (inner_steps_test is not None and inner_steps_test < 0):
            raise ValueError("inner_steps must be >= 0")
        check_inner_values(temperature=inner_temperature, grad_clip=inner_grad_clip)
        check_inner_augment(inner_augment, batch_norm)
        check_inner_params(inner_params)
        if not 0.0 <= multi_step_loss <= 1.0:
            raise ValueError(f"multi_step_loss is a fraction of the run in [0, 1], got {multi_step_loss}")
        if batch_norm == "running" and backbone is not None:
            raise ValueError("batch_norm='running' needs MAML's own Conv-4 backbone")
        if (learn_inner_lr or multi_step_loss) and inner_steps < 1:
            raise ValueError("learned inner learning rates and the multi-step loss need inner_steps >= 1")
        if backbone is None:  # a given backbone (e.g. photo mode's frozen features) adapts only what it exposes
            backbone = conv4(in_channels, hidden, track_running_stats=batch_norm == "running")
        dim = feature_dim if feature_dim is not None else hidden
        self.net = _Classifier(backbone, None if proto_head else nn.Linear(dim, n_way))
        self.proto_head, self.multi_step_loss, self.inner_grad_clip = proto_head, multi_step_loss, float(inner_grad_clip)
        self.n_way, self.first_order, self.batch_norm = (None if proto_head else n_way), first_order, batch_norm
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.inner_lr_test = inner_lr if inner_lr_test is None else inner_lr_test
        self.inner_steps_test = inner_steps if inner_steps_test is None else inner_steps_test
        self.config = {"n_way": n_way, "in_channels": in_channels, "hidden": hidden, "inner_lr": inner_lr,
                       "inner_steps": inner_steps, "inner_lr_test": self.inner_lr_test,
                       "inner_steps_test": self.inner_steps_test, "first_order": first_order,
                       "batch_norm": batch_norm, "feature_dim": dim}
        self.checkpoint_inner = checkpoint_inner
        # Recorded only when set, so older checkpoints and their configs stay identical.
        for name, value, off in (("checkpoint_inner", checkpoint_inner, False), ("proto_head", proto_head, False),
                                 ("learn_inner_lr", learn_inner_lr, False), ("multi_step_loss", multi_step_loss, 0.0),
                                 ("inner_grad_clip", float(inner_grad_clip), 0.0),
                                 ("inner_temperature", float(inner_temperature), 1.0),
                                 ("learn_inner_temperature", learn_inner_temperature, False),
                                 ("inner_augment", inner_augment, 0), ("inner_params", inner_params, "all")):
            if value != off:
                self.config[name] = value
        self._lr_names = list(self.meta_weights()) + (["head.weight", "head.bias"] if proto_head else [])
        self._lr_index = {name: i for i, name in enumerate(self._lr_names)}
        self.log_inner_lr: nn.Parameter | None = None
        if learn_inner_lr:
            if inner_lr <= 0:
                raise ValueError("learned inner learning rates start from inner_lr, which must be > 0")
            self.log_inner_lr = nn.Parameter(torch.full((inner_steps, len(self._lr_names)), math.log(inner_lr)))
        self.inner_temperature = float(inner_temperature)
        self.inner_augment, self.inner_params = inner_augment, inner_params
        self.log_inner_temperature: nn.Parameter | None = None
        if learn_inner_temperature:
            self.log_inner_temperature = nn.Parameter(torch.tensor(math.log(inner_temperature)))
        self._progress = 0.0
        self.fast_weights: Weights | None = None
        self._support_images: Tensor | None = None
        self._support_labels: Tensor | None = None

    @property
    def backbone(self) -> nn.Module:  # type: ignore[override]
        return self.net.backbone

    def meta_weights(self) -> Weights:
        return dict(self.net.named_parameters())

    def buffers_copy(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.net.named_buffers()}

    def inner_lr_at(self, step: int, name: str) -> Tensor:
        """The learned inner learning rate of weight ``name`` at inner step ``step`` (``learn_inner_lr`` only)."""
        assert self.log_inner_lr is not None
        return self.log_inner_lr[min(step, self.log_inner_lr.shape[0] - 1), self._lr_index[name]].exp()

    def inner_temperature_now(self) -> Tensor | float:
        """The inner loss's temperature: the learned one (a tensor, in the meta-gradient's graph) or the fixed one."""
        return self.log_inner_temperature.exp() if self.log_inner_temperature is not None else self.inner_temperature

    def inner_temperature_value(self) -> float:
        """:meth:`inner_temperature_now` as a plain number (for reports and the app)."""
        temperature = self.inner_temperature_now()
        return float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)

    def learned_inner_loop(self) -> dict | None:
        """What the meta-training learned about the inner loop (``learn_inner_lr`` / ``learn_inner_temperature``),
        as plain numbers: ``{"inner_lr": [{weight name: rate} per inner step], "inner_temperature": T}`` (each key
        only where learned); ``None`` when nothing of the inner loop is learned. ``fewshot info`` prints it."""
        out: dict = {}
        if self.log_inner_lr is not None:
            rates = self.log_inner_lr.detach().exp().tolist()
            adapted = self.adapted_names()
            out["inner_lr"] = [{k: r for k, r in zip(self._lr_names, step) if k in adapted} for step in rates]
        if self.log_inner_temperature is not None:
            out["inner_temperature"] = float(self.log_inner_temperature.detach().exp())
        return out or None

    def adapted_names(self) -> list[str]:
        """The names of the weights the inner loop changes: every weight, or (``inner_params="head"``) the head's."""
        return list(HEAD) if self.inner_params == "head" else list(self._lr_names)

    def set_test_inner_loop(self, *, steps: int | None = None, lr: float | None = None,
                            temperature: float | None = None, augment: int | None = None, params: str | None = None,
                            grad_clip: float | None = None) -> None:
        """Replace this model's own test-time inner loop, each given part (``evaluate --inner-steps``, ``--inner-lr``,
        ``--inner-temperature``, ``--inner-augment``, ``--inner-params``, ``--inner-grad-clip``); ``None`` keeps it.
        ``lr`` is one fixed rate for every weight, in place of learned ones; ``temperature`` a fixed one in place of
        a learned one. For evaluation: the learned values it replaces are dropped from this model.

        Raises:
            ValueError: a value the constructor would refuse; nothing is changed then.
        """
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ValueError(f"inner steps must be an integer >= 0, got {steps!r}")
        if lr is not None and not lr >= 0:
            raise ValueError(f"the inner learning rate must be >= 0, got {lr}")
        check_inner_values(temperature=temperature, grad_clip=grad_clip)
        if augment is not None:
            check_inner_augment(augment, self.batch_norm)
        if params is not None:
            check_inner_params(params)
        if steps is not None:
            self.inner_steps_test = steps
        if lr is not None:
            self.inner_lr_test, self.log_inner_lr = lr, None
        if temperature is not None:
            self.inner_temperature, self.log_inner_temperature = float(temperature), None
        if augment is not None:
            self.inner_augment = augment
        if params is not None:
            self.inner_params = params
        if grad_clip is not None:
            self.inner_grad_clip = float(grad_clip)

    def inner_loss_fn(self) -> LossFn | None:
        """The inner loop's support loss: cross-entropy of the logits over the temperature (``None``: the plain
        cross-entropy, temperature 1 and not learned)."""
        if self.log_inner_temperature is None and self.inner_temperature == 1.0:
            return None
        temperature = self.inner_temperature_now()
        if not self.training and isinstance(temperature, Tensor):  # evaluation: nothing reaches the parameters
            temperature = temperature.detach()
        return lambda logits, labels: F.cross_entropy(logits / temperature, labels)

    def inner_support(self, support_images: Tensor, support_labels: Tensor) -> tuple[Tensor, Tensor]:
        """The support set the inner loop descends: the support images, then ``inner_augment`` warped copies of
        each (all the first copies, then all the second ...), with their labels. Unchanged when ``inner_augment``
        is 0. Training draws the warps from the global generator; evaluation from a generator seeded afresh (0),
        so the answer to a support set does not depend on what ran before."""
        if not self.inner_augment:
            return support_images, support_labels
        copies = support_images.repeat(self.inner_augment, 1, 1, 1)
        generator = None if self.training else torch.Generator().manual_seed(0)
        warped = _INNER_AUGMENT.apply(copies, _INNER_AUGMENT.draw(copies.shape[0], generator))
        return torch.cat([support_images, warped]), support_labels.repeat(self.inner_augment + 1)

    def _inner_lr(self, training: bool):
        if self.log_inner_lr is not None:
            return self.inner_lr_at
        return self.inner_lr if training else self.inner_lr_test

    def on_train_progress(self, progress: float) -> None:
        self._progress = progress

    def start_weights(self, weights: Weights, support_images: Tensor, support_labels: Tensor) -> Weights:
        """The weights the inner loop starts from: ``weights``, plus (Proto-MAML) the task's head from the support
        prototypes of the encoder at ``weights``.

        The head is computed from ``weights`` while the returned encoder weights are aliases of them (new autograd
        nodes), so the inner loop's gradient treats the head as a variable of its own (a partial derivative) while
        the meta-gradient still flows through the head's initialisation.
        """
        if not self.proto_head:
            return weights
        n_way = self.check_labels(support_labels)
        features = _logits(self.net, weights, self.buffers_copy(), support_images, features_only=True)
        prototypes = compute_prototypes(features, support_labels, n_way)
        head = {"head.weight": 2 * prototypes, "head.bias": -prototypes.pow(2).sum(1)}
        return {**{k: v.view_as(v) if v.requires_grad else v for k, v in weights.items()}, **head}

    def _adapt_path(self, support_images: Tensor, support_labels: Tensor) -> Iterator[Weights]:
        head_only = self.inner_params == "head"
        if self.training:
            # A weight kept fixed (train --freeze-backbone) still takes inner steps: a leaf of its own per task.
            weights = {k: v if v.requires_grad or head_only else v.detach().requires_grad_()
                       for k, v in self.meta_weights().items()}
            create_graph, steps = not self.first_order, self.inner_steps
        else:
            # Evaluation: start from a detached copy, so nothing can reach the meta-parameters.
            weights = {k: v.detach() if head_only else v.detach().requires_grad_() for k, v in self.meta_weights().items()}
            create_graph, steps = False, self.inner_steps_test
        weights = self.start_weights(weights, support_images, support_labels)
        images, labels = self.inner_support(support_images, support_labels)
        if head_only:
            return self._adapt_head(weights, images, labels, inner_lr=self._inner_lr(self.training), inner_steps=steps,
                                    create_graph=create_graph)
        return adapt_path(self.net, weights, self.buffers_copy(), images, labels,
                          inner_lr=self._inner_lr(self.training), inner_steps=steps, create_graph=create_graph,
                          checkpoint_steps=self.checkpoint_inner, grad_clip=self.inner_grad_clip,
                          loss_fn=self.inner_loss_fn())

    def _adapt_head(self, weights: Weights, images: Tensor, labels: Tensor, *, inner_lr, inner_steps: int,
                    create_graph: bool) -> Iterator[Weights]:
        """``inner_params="head"``: :func:`adapt_head_path` on the features of ``images`` at ``weights``, yielding
        whole weight dicts (the encoder's entries are ``weights``' own at every step)."""
        if inner_steps == 0:  # nothing to step: the encoder need not run
            yield weights
            return
        features = _logits(self.net, weights, self.buffers_copy(), images, features_only=True)
        head = tuple(weights[k] if weights[k].requires_grad else weights[k].detach().requires_grad_() for k in HEAD)
        for weight, bias in adapt_head_path(features, head, labels, inner_lr=inner_lr,  # type: ignore[arg-type]
                                            inner_steps=inner_steps, create_graph=create_graph,
                                            loss_fn=self.inner_loss_fn(), grad_clip=self.inner_grad_clip):
            yield {**weights, "head.weight": weight, "head.bias": bias}

    def process_support_set(self, support_images: Tensor, support_labels: Tensor) -> None:
        self._task_way = self.check_labels(support_labels, self.n_way)
        with torch.enable_grad():  # evaluate() runs under no_grad; the inner loop needs gradients
            for fast in self._adapt_path(support_images, support_labels):
                pass
        self.fast_weights = fast if self.training else {k: v.detach() for k, v in fast.items()}
        self._support_images, self._support_labels = support_images, support_labels
        self._support_ready = True

    def _query_logits(self, weights: Weights, query_images: Tensor) -> Tensor:
        assert self._support_images is not None
        if self.batch_norm == "support":
            n = self._support_images.shape[0]
            both = torch.cat([self._support_images, query_images])
            logits = _logits(self.net, weights, self.buffers_copy(), both, stats_from=n)[n:]
        else:
            logits = _logits(self.net, weights, self.buffers_copy(), query_images)
        return logits[:, : self._task_way]  # a 5-way head answering a 3-way task

    def episode_loss(self, task: Task) -> tuple[Tensor, Tensor]:
        """Query cross-entropy after the inner loop; with MAML++'s multi-step loss (early in training), the
        :func:`msl_weights`-weighted sum of the query losses after every inner step."""
        weights_per_step = msl_weights(self.inner_steps, self._progress, self.multi_step_loss) \
            if self.training and self.multi_step_loss and self.inner_steps > 0 else None
        if weights_per_step is None or weights_per_step[-1] == 1.0:
            return super().episode_loss(task)
        self._task_way = self.check_labels(task.support_labels, self.n_way)
        self._support_images = task.support_images
        loss = torch.zeros((), device=task.query_images.device)
        path = self._adapt_path(task.support_images, task.support_labels)
        next(path)  # the starting weights: the multi-step loss scores the queries after each step
        for w, fast in zip(weights_per_step, path):
            logits = self._query_logits(fast, task.query_images)
            loss = loss + w * F.cross_entropy(logits, task.query_labels)
        self.fast_weights, self._support_ready = fast, True
        return loss, logits

    def forward(self, query_images: Tensor) -> Tensor:
        self._require_support()
        assert self.fast_weights is not None and self._support_images is not None
        return self._query_logits(self.fast_weights, query_images)

    @property
    def fixed_way(self) -> int:
        return self.n_way

    def explain(self, query_images: Tensor) -> dict[str, Tensor]:
        """``probabilities`` after the inner loop and ``start_probabilities`` at the meta-learned weights (before
        any step): what adaptation to this support set changed."""
        out = {"probabilities": torch.softmax(self(query_images).float(), dim=1)}
        adapted = self.fast_weights
        try:
            with torch.no_grad():
                start = self.start_weights(self.meta_weights(), self._support_images, self._support_labels)
            self.fast_weights = {k: v.detach() for k, v in start.items()}
            out["start_probabilities"] = torch.softmax(self(query_images).float(), dim=1)
        finally:
            self.fast_weights = adapted
        return out

    def embed_with(self, weights: Weights, images: Tensor, *, stats_from: int | None = None) -> Tensor:
        """Backbone features ``(B, D)`` of ``images`` at ``weights`` (named as :meth:`meta_weights` names them, e.g.
        an :class:`AdaptStep`'s); the module is not changed. ``stats_from``: BatchNorm statistics from the first
        ``stats_from`` images (the support set) instead of the whole batch."""
        prefix = "backbone."
        params = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        buffers = {k[len(prefix):]: v for k, v in self.net.named_buffers() if k.startswith(prefix)}
        kwargs = {"stats_from": stats_from} if stats_from is not None else None
        with torch.no_grad():
            return functional_call(self.backbone, (params, buffers), (images,), kwargs).flatten(1)

    def adaptation(self, support_images: Tensor, support_labels: Tensor, query_images: Tensor | None = None, *,
                   inner_lr: float | None = None, inner_steps: int | None = None) -> Iterator[AdaptStep]:
        """Step-by-step view of the inner loop (for the app): see :func:`adapt_steps`."""
        self.check_labels(support_labels, self.n_way)
        with torch.no_grad():
            start = self.start_weights({k: v.detach() for k, v in self.meta_weights().items()}, support_images,
                                       support_labels)
        images, labels = self.inner_support(support_images, support_labels)
        if self.inner_params == "head":
            return self._head_adaptation(start, support_images, images, labels, query_images,
                                         inner_lr=self._inner_lr(False) if inner_lr is None else inner_lr,
                                         inner_steps=self.inner_steps_test if inner_steps is None else inner_steps)
        return adapt_steps(self.net, start, self.buffers_copy(), images, labels,
                           inner_lr=self._inner_lr(False) if inner_lr is None else inner_lr,
                           inner_steps=self.inner_steps_test if inner_steps is None else inner_steps,
                           query_images=query_images, stats_from_support=self.batch_norm == "support",
                           grad_clip=self.inner_grad_clip, loss_fn=self.inner_loss_fn())

    def _head_adaptation(self, start: Weights, support_images: Tensor, images: Tensor, labels: Tensor,
                         query_images: Tensor | None, *, inner_lr, inner_steps: int) -> Iterator[AdaptStep]:
        """:meth:`adaptation` of ``inner_params="head"``: the encoder runs once for the inner support set and once
        for the queries (normalised as :meth:`forward` normalises them), then each step is the head's alone."""
        loss_of = self.inner_loss_fn() or F.cross_entropy
        buffers = self.buffers_copy()
        with torch.no_grad():
            query_features = None
            if query_images is not None and query_images.shape[0] > 0:
                if self.batch_norm == "support":
                    n = support_images.shape[0]
                    both = torch.cat([support_images, query_images])
                    query_features = _logits(self.net, start, buffers, both, stats_from=n, features_only=True)[n:]
                else:
                    query_features = _logits(self.net, start, buffers, query_images, features_only=True)
            features = _logits(self.net, start, buffers, images, features_only=True)
        head = tuple(start[k].detach().requires_grad_() for k in HEAD)
        with torch.enable_grad():
            for step, (weight, bias) in enumerate(adapt_head_path(
                    features, head, labels, inner_lr=inner_lr, inner_steps=inner_steps,  # type: ignore[arg-type]
                    create_graph=False, loss_fn=self.inner_loss_fn(), grad_clip=self.inner_grad_clip)):
                weight, bias = weight.detach(), bias.detach()
                with torch.no_grad():
                    logits = F.linear(features, weight, bias)
                    query_logits = None if query_features is None else F.linear(query_features, weight, bias)
                    loss = loss_of(logits, labels)
                yield AdaptStep(step, {**start, "head.weight": weight, "head.bias": bias}, loss.item(),
                                (logits.argmax(1) == labels).float().mean().item(), query_logits)

    def batched_episode_loss(self, tasks: list[Task]) -> tuple[Tensor, list[Tensor]] | None:
        """Mean query loss of several same-shaped tasks in one batched pass (see :func:`_stacked_forward`).

        Equals averaging :meth:`episode_loss` over the tasks (tests check the meta-gradients agree).
        Returns ``None`` when the batched path does not apply (tasks of different shapes, or a backbone
        other than Conv-4, e.g. photo mode's), and the training loop then falls back to the per-task loop.
        """
        if not isinstance(self.net.backbone, Conv4) or len(self.net.backbone.blocks) != 4:
            return None
        if (self.proto_head or self.log_inner_lr is not None or self.multi_step_loss or self.batch_norm == "running"
                or self.inner_loss_fn() is not None or self.inner_augment or self.inner_params != "all"):
            return None  # the per-task loop handles these
        if len({(t.support_images.shape, t.query_images.shape) for t in tasks}) != 1:
            return None
        return self.stacked_episode_loss(*self.stack_tasks(tasks))

    def stack_tasks(self, tasks: list[Task]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Check each task's labels against the head, then stack them: support images ``(T, S, C, H, W)``, support
        labels ``(T, S)``, query images and query labels, the arguments of :meth:`stacked_episode_loss`."""
        for task in tasks:
            self.check_labels(task.support_labels, self.n_way)
        return tuple(torch.stack([getattr(t, name) for t in tasks])  # type: ignore[return-value]
                     for name in ("support_images", "support_labels", "query_images", "query_labels"))

    def stacked_episode_loss(self, support: Tensor, support_labels: Tensor, query: Tensor,
                             query_labels: Tensor) -> tuple[Tensor, list[Tensor]]:
        """:meth:`batched_episode_loss` of tasks already stacked: images ``(T, N, C, H, W)``, labels ``(T, N)``.

        No label checks (the caller's) and nothing that waits for the device, so a CUDA graph can capture a
        whole meta-iteration around it (``benchmarks/maml_throughput.py --cuda-graph``).
        """
        n_tasks = support.shape[0]
        training = self.training
        lr = self.inner_lr if training else self.inner_lr_test
        steps = self.inner_steps if training else self.inner_steps_test
        create_graph = training and not self.first_order
        weights = {k: v.unsqueeze(0).expand(n_tasks, *v.shape) for k, v in self.meta_weights().items()}
        if not training:
            weights = {k: v.detach().clone().requires_grad_() for k, v in weights.items()}
        def step(w: Weights) -> Weights:
            loss, _ = _stacked_loss(w, support, support_labels)
            grads = clip_inner_grads(torch.autograd.grad(loss, list(w.values()), create_graph=create_graph),
                                     self.inner_grad_clip, per_task=True)
            return {k: v - lr * g for (k, v), g in zip(w.items(), grads)}

        with torch.enable_grad():
            for _ in range(steps):
                weights = _checkpointed(step, weights) if self.checkpoint_inner and create_graph else step(weights)
        query_loss, logits = _stacked_loss(weights, query, query_labels,
                                           support=support if self.batch_norm == "support" else None)
        return query_loss / n_tasks, list(logits.unbind(0))
