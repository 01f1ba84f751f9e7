"""Memory-augmented neural network (Santoro, Bartunov, Botvinick, Wierstra & Lillicrap 2016, arXiv:1605.06065)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import conv4
from ..tasks import Task
from .base import FewShotClassifier

__all__ = ["MANN", "MemoryState"]


@dataclass
class MemoryState:
    """Everything the MANN carries from one time step to the next, batched over ``B`` sequences."""

    h: Tensor  # (B, H) controller hidden state
    c: Tensor  # (B, H) controller cell state
    memory: Tensor  # (B, N, W)
    reads: Tensor  # (B, R, W + L) last read vectors (key part, then label part)
    read_weights: Tensor  # (B, R, N)
    usage: Tensor  # (B, N)
    last_label: Tensor  # (B, n_way) one-hot of the previous step's label (zeros if none)
    labels: Tensor  # (B, N, L) label part of the memory: L = n_way with ``label_in_memory``, else 0
    write_weights: Tensor  # (B, R, N) where the last step wrote its keys

    def expand(self, batch: int) -> "MemoryState":
        return MemoryState(*(t.expand(batch, *t.shape[1:]) for t in (
            self.h, self.c, self.memory, self.reads, self.read_weights, self.usage, self.last_label, self.labels,
            self.write_weights)))


class MANN(FewShotClassifier):
    """Memory-augmented neural network (Santoro et al. 2016, arXiv:1605.06065).

    An LSTM controller reads from and writes to an external memory with least-recently-used access
    (LRUA): each step writes its key to the least used slot or to the slot read last (a learned gate
    mixes the two), after clearing the least used slot. Trained on sequences where each image is
    shown together with the *previous* image's label, it learns to bind images to labels in memory
    and recall them when a class comes back.

    Images are embedded by the Conv-4 backbone (trained end to end) before entering the
    controller; Santoro et al. fed raw 20x20 pixels. An N-way K-shot task is answered by reading
    the support set as a sequence and then presenting each query as the next step.

    Where this differs from the paper, and why. As published (``label_in_memory=False,
    feature_norm=False, strength_init=None``), the only way a label reaches memory is through the
    controller: the label of image t arrives at step t+1, the LSTM must put it into the key of step
    t+1, and the gate must add that key to the slot image t was written to. The output layer can
    only ever see a label through a read of such a slot. With a Conv-4 encoder learning at the same
    time, nothing in that chain gets a useful gradient until all of it works: MANN stayed at chance
    on the separable synthetic task that every other method learns in 40 steps (5-way 1-shot 0.20
    after 60 steps of meta-batch 4) and in the 141-step Omniglot run of the first shipped
    checkpoint (19.9%). The default model therefore:

    - ``label_in_memory``: memory slots carry a label part next to the key part (the key is still
      the written content, as in the paper). The label shown at step t+1 is added to the label
      part of the slots where step t wrote its key, with the same LRUA write weights; reads return
      both parts. Reads at step t use the memory *before* step t's write: read after the write, a
      freshly written slot matches its own key with cosine 1 but cannot yet carry a label.
    - ``label_vote``: the output layer's weights on each head's read label part start as
      ``label_vote / read_heads * identity``, so a read of a same-class slot votes for its label
      from the first step; this is what gives the keys (and the encoder behind them) a gradient.
      It is only an initialisation of the paper's output layer ``softmax(W [h, r])``.
    - ``strength_init``: reads are ``softmax(beta * cosine)`` with a learned ``beta >= 1`` (as in the
      Neural Turing Machine; ``key_strength=False`` is the paper's beta = 1, which leaves reads
      over 128 slots nearly uniform), starting at ``beta = strength_init``.
    - ``feature_norm``: a parameter-free LayerNorm of the CNN features. Conv-4 ends in ReLU +
      max-pool, so its features are non-negative and share a large common component (cosine 0.82
      between images of one synthetic class, 0.79 between classes, at initialisation; 0.35 vs
      0.26 once centred): centring makes the controller's keys tell images apart from the start.

    What each change buys, measured on the synthetic task (5-way sequences of 25 images, meta-batch
    4, Adam 3e-3; 5-way 1-shot accuracy on 50 held-out tasks). Small size (controller 64, 32 slots of
    width 16, one head), 100 steps: defaults 0.99; ``label_vote=0`` 0.20 (chance); ``strength_init=
    None`` 0.95 (slower start); ``feature_norm=False`` 1.00. Default size (controller 200, 128
    slots, 4 heads), 60 steps: defaults 0.995; ``feature_norm=False`` 0.73 (flat for 40 steps).
    Checkpoints saved before these
    options existed load as the published model (:attr:`checkpoint_defaults`).

    Args:
        n_way: label width (tasks may use up to ``n_way`` classes).
        controller_size: LSTM hidden size. memory_slots, memory_width: memory shape (key part).
        read_heads: number of read (and write) heads. gamma: usage decay.
        key_strength: sharpen reads with a learned strength ``beta >= 1`` (``False``: beta = 1).
        feature_dim: width of the encoder's output (64 for Conv-4 on 28x28).
        label_in_memory, feature_norm, strength_init, label_vote: see above; ``False, False, None, 0``
            is Santoro et al.'s architecture.
    """

    # Constructor arguments added after the first checkpoints were saved, set as those checkpoints were built.
    checkpoint_defaults = {"label_in_memory": False, "feature_norm": False, "strength_init": None, "label_vote": 0.0}

    def __init__(self, n_way: int = 5, *, in_channels: int = 1, hidden: int = 64, controller_size: int = 200,
                 memory_slots: int = 128, memory_width: int = 40, read_heads: int = 4, gamma: float = 0.95,
                 key_strength: bool = True, feature_dim: int | None = None, label_in_memory: bool = True,
                 feature_norm: bool = True, strength_init: float | None = 10.0,
                 label_vote: float = 5.0):
        super().__init__()
        if strength_init is not None and not strength_init > 1:
            raise ValueError(f"strength_init must be > 1 (the key strength is 1 + softplus), got {strength_init}")
        self.backbone = conv4(in_channels, hidden)
        dim = feature_dim if feature_dim is not None else hidden
        self.n_way, self.slots, self.width, self.heads, self.gamma = n_way, memory_slots, memory_width, read_heads, gamma
        self.label_in_memory = label_in_memory
        self.label_width = n_way if label_in_memory else 0
        read_width = read_heads * (memory_width + self.label_width)
        # Parameter-free LayerNorm of the CNN features (no affine weights: checkpoints hold the same tensors).
        self.feature_norm = nn.LayerNorm(dim, elementwise_affine=False) if feature_norm else None
        self.controller = nn.LSTMCell(dim + n_way + read_width, controller_size)
        self.key = nn.Linear(controller_size, read_heads * memory_width)
        self.gate = nn.Linear(controller_size, read_heads)
        # Key strength (as in the Neural Turing Machine): softmax(beta * cosine). Santoro et al. use
        # beta = 1, which leaves reads over 128 slots nearly uniform and makes learning start very late.
        self.strength = nn.Linear(controller_size, read_heads) if key_strength else None
        if self.strength is not None and strength_init is not None:
            nn.init.constant_(self.strength.bias, math.log(math.expm1(strength_init - 1)))  # beta starts at strength_init
        self.output = nn.Linear(controller_size + read_width, n_way)
        if label_in_memory and label_vote:
            with torch.no_grad():  # each head's read label part starts as a vote for its label
                label_weights = self.output.weight[:, controller_size:].view(n_way, read_heads, memory_width + n_way)
                label_weights[:, :, memory_width:] = label_vote / read_heads * torch.eye(n_way).unsqueeze(1)
        self.config = {"n_way": n_way, "in_channels": in_channels, "hidden": hidden, "controller_size": controller_size,
                       "memory_slots": memory_slots, "memory_width": memory_width, "read_heads": read_heads,
                       "gamma": gamma, "key_strength": key_strength, "feature_dim": dim,
                       "label_in_memory": label_in_memory, "feature_norm": feature_norm, "strength_init": strength_init,
                       "label_vote": label_vote}
        self.state: MemoryState | None = None
        self.last_read_weights: list[Tensor] = []
        self.support_order: Tensor | None = None  # the order the last support set was read (and written) in

    def initial_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MemoryState:
        z = lambda *shape: torch.zeros(*shape, device=device, dtype=dtype)  # noqa: E731
        return MemoryState(z(batch, self.controller.hidden_size), z(batch, self.controller.hidden_size),
                           torch.full((batch, self.slots, self.width), 1e-6, device=device, dtype=dtype),
                           z(batch, self.heads, self.width + self.label_width), z(batch, self.heads, self.slots),
                           z(batch, self.slots), z(batch, self.n_way), z(batch, self.slots, self.label_width),
                           z(batch, self.heads, self.slots))

    def _address(self, keys: Tensor, memory: Tensor, h: Tensor) -> Tensor:
        """Read weights ``(B, R, N)``: softmax over the cosine similarity of each key to each slot."""
        similarity = F.normalize(keys, dim=-1) @ F.normalize(memory, dim=-1).transpose(1, 2)  # (B, R, N) cosine
        if self.strength is not None:
            similarity = similarity * (1 + F.softplus(self.strength(h))).unsqueeze(-1)  # beta >= 1
        return torch.softmax(similarity, dim=-1)

    def step(self, features: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState]:
        """One time step for ``features (B, D)``: returns logits ``(B, n_way)`` and the new state."""
        b = features.shape[0]
        if self.feature_norm is not None:
            features = self.feature_norm(features)
        x = torch.cat([features, state.last_label, state.reads.reshape(b, -1)], dim=1)
        h, c = self.controller(x, (state.h, state.c))
        keys = self.key(h).view(b, self.heads, self.width)  # (B, R, W); also the written content
        alpha = torch.sigmoid(self.gate(h)).unsqueeze(-1)  # (B, R, 1)
        # Least-used slots of the previous step: the `heads` smallest usages get weight 1.
        least_used = F.one_hot(torch.topk(-state.usage, self.heads, dim=1).indices, self.slots).to(h.dtype)  # (B, R, N)
        write_weights = alpha * state.read_weights + (1 - alpha) * least_used
        # Clear the single least used slot before writing (Santoro et al., section 3.2).
        cleared = 1 - F.one_hot(state.usage.argmin(dim=1), self.slots).to(h.dtype).unsqueeze(-1)  # (B, N, 1)
        if self.label_in_memory:
            # The label shown now belongs to the previous image: bind it to the slots its key went to,
            # then read the memory as it was before this step's write (see the class docstring).
            labels = state.labels + torch.einsum("brn,bl->bnl", state.write_weights, state.last_label)
            read_weights = self._address(keys, state.memory, h)
            reads = read_weights @ torch.cat([state.memory, labels], dim=-1)  # (B, R, W + n_way)
            memory = state.memory * cleared + torch.einsum("brn,brw->bnw", write_weights, keys)
            labels = labels * cleared
        else:  # Santoro et al. as published: write the key, then read the written memory with it
            labels = state.labels
            memory = state.memory * cleared + torch.einsum("brn,brw->bnw", write_weights, keys)
            read_weights = self._address(keys, memory, h)
            reads = read_weights @ memory  # (B, R, W)
        usage = self.gamma * state.usage + read_weights.sum(1) + write_weights.sum(1)
        logits = self.output(torch.cat([h, reads.reshape(b, -1)], dim=1))
        return logits, MemoryState(h, c, memory, reads, read_weights, usage, state.last_label, labels, write_weights)

    def run_sequence(self, features: Tensor, labels: Tensor) -> tuple[Tensor, MemoryState, list[Tensor]]:
        """Feed ``features (T, D)`` with ``labels (T,)`` (each label shown at the next step).

        Also accepts a batch of sequences, ``features (B, T, D)`` and ``labels (B, T)``. Returns the
        logits ``(T, n_way)`` (or ``(B, T, n_way)``) predicted at each step, before that step's label
        is shown, the final state and the read weights of every step.
        """
        single = features.ndim == 2
        if single:
            features, labels = features.unsqueeze(0), labels.unsqueeze(0)
        state = self.initial_state(features.shape[0], features.device, features.dtype)
        outputs, reads = [], []
        for t in range(features.shape[1]):
            logits, state = self.step(features[:, t], state)
            state.last_label = F.one_hot(labels[:, t].long(), self.n_way).to(features.dtype)
            outputs.append(logits)
            reads.append(state.read_weights[0] if single else state.read_weights)
        out = torch.stack(outputs, dim=1)  # (B, T, n_way)
        return (out[0] if single else out), state, reads

    def process_support_set(self, support_images: Tensor, support_labels: Tensor) -> None:
        self.check_labels(support_labels, self.n_way)
        # A fixed shuffle (not class by class) so the sequence looks like the training sequences.
        order = torch.randperm(len(support_labels), generator=torch.Generator().manual_seed(0)).to(support_labels.device)
        features = self.backbone(support_images[order]).flatten(1)
        _, self.state, self.last_read_weights = self.run_sequence(features, support_labels[order])
        self.support_order = order
        self._task_way = int(support_labels.max()) + 1
        self._support_ready = True

    @property
    def fixed_way(self) -> int:
        return self.n_way

    def explain(self, query_images: Tensor) -> dict[str, Tensor]:
        """The memory at work: ``support_order (T,)``, the support examples in the order they were written (index
        into the support set); ``support_reads (T, read_heads, slots)``, the read weights at each of those steps;
        ``query_reads (Q, read_heads, slots)``, each query's read (a query is the step after the support set)."""
        self._require_support()
        assert self.state is not None and self.support_order is not None
        features = self.backbone(query_images).flatten(1)
        logits, state = self.step(features, self.state.expand(features.shape[0]))
        return {"probabilities": torch.softmax(logits[:, : self._task_way].float(), dim=1),
                "support_order": self.support_order, "support_reads": torch.stack(self.last_read_weights),
                "query_reads": state.read_weights}

    def forward(self, query_images: Tensor) -> Tensor:
        """Each query is presented as the step after the support sequence (independently of the others)."""
        self._require_support()
        assert self.state is not None
        features = self.backbone(query_images).flatten(1)
        logits, _ = self.step(features, self.state.expand(features.shape[0]))
        return logits[:, : self._task_way]

    def episode_loss(self, task: Task) -> tuple[Tensor, Tensor]:
        """Santoro et al.'s objective: predict every image of a shuffled sequence before its label is shown."""
        self.check_labels(task.support_labels, self.n_way)
        images = torch.cat([task.support_images, task.query_images])
        labels = torch.cat([task.support_labels, task.query_labels])
        order = torch.randperm(len(labels), device=labels.device)
        logits, _, _ = self.run_sequence(self.backbone(images[order]).flatten(1), labels[order])
        loss = F.cross_entropy(logits, labels[order])
        # Logits in the original order; the query rows are what the training loop scores.
        unshuffled = torch.empty_like(logits)
        unshuffled[order] = logits
        return loss, unshuffled[len(task.support_labels):]

    def batched_episode_loss(self, tasks: list[Task]) -> tuple[Tensor, list[Tensor]] | None:
        """All tasks' sequences side by side in one batch (same objective as :meth:`episode_loss`)."""
        if len({(t.support_images.shape, t.query_images.shape) for t in tasks}) != 1:
            return None
        for task in tasks:
            self.check_labels(task.support_labels, self.n_way)
        n_support = tasks[0].support_labels.shape[0]
        images = torch.stack([torch.cat([t.support_images, t.query_images]) for t in tasks])  # (B, T, C, H, W)
        labels = torch.stack([torch.cat([t.support_labels, t.query_labels]) for t in tasks])  # (B, T)
        b, length = labels.shape
        order = torch.argsort(torch.rand(b, length, device=labels.device), dim=1)  # a shuffle per sequence
        labels = labels.gather(1, order)
        images = images[torch.arange(b, device=labels.device).unsqueeze(1), order]
        features = self.backbone(images.flatten(0, 1)).flatten(1).view(b, length, -1)
        logits, _, _ = self.run_sequence(features, labels)  # (B, T, n_way)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        unshuffled = torch.empty_like(logits).scatter_(1, order.unsqueeze(-1).expand_as(logits), logits)
        return loss, list(unshuffled[:, n_support:].unbind(0))

    @torch.no_grad()
    def instance_accuracy(self, task: Task, max_instance: int = 10) -> Tensor:
        """Santoro et al.'s protocol on one task: accuracy ``(max_instance,)`` at the 1st, 2nd, ... showing of a class.

        The task's support and query images are shuffled into one sequence; entries for instances
        that never occur are NaN.
        """
        images = torch.cat([task.support_images, task.query_images])
        labels = torch.cat([task.support_labels, task.query_labels])
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(len(labels))).to(labels.device)
        labels = labels[order]
        logits, _, _ = self.run_sequence(self.backbone(images[order]).flatten(1), labels)
        correct = (logits.argmax(1) == labels).float()
        seen = torch.zeros(self.n_way, dtype=torch.long)
        instance = torch.empty_like(labels)
        for t, y in enumerate(labels.tolist()):
            instance[t] = seen[y]
            seen[y] += 1
        out = torch.full((max_instance,), float("nan"))
        for i in range(max_instance):
            mask = instance == i
            if mask.any():
                out[i] = correct[mask].mean()
        return out
