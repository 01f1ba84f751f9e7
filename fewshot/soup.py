"""A uniform model soup: the weight average of several runs fine-tuned from one model.

Wortsman et al. 2022 ("Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time"): runs that start from the same weights and differ in their data order, seed or
augmentation stay in one basin of the loss, so the average of their weights is itself a good model, and often a
better one than each of them. The result is one model of the same architecture, as fast as any of them.

Only models that can be averaged are: the same method with the same constructor arguments, the same input
contract (protocol, image size, channels, preprocessing) and the same tensors. Averaging anything else gives a
model that answers nonsense, so it is refused with the reason. BatchNorm's running statistics are averaged like the
weights; its integer step counters are taken from the first model (they only matter with a cumulative-average
momentum, which the Conv-4 does not use).
"""

from __future__ import annotations

from typing import Any

import torch

from .methods import FewShotClassifier

__all__ = ["INPUT_KEYS", "average_state_dicts", "check_soupable"]

# metadata that says what input a model expects: ingredients of one soup must agree on all of it
INPUT_KEYS = ("protocol", "dataset", "image_size", "in_channels", "preprocess", "rotations")


def check_soupable(infos: list[tuple[str, dict[str, Any]]]) -> None:
    """Raise ``ValueError`` naming the first checkpoint that cannot be averaged with the first one.

    ``infos``: (name, metadata) of each ingredient, metadata as :func:`fewshot.read_checkpoint_info` gives it.
    """
    if len(infos) < 2:
        raise ValueError("a soup needs at least two checkpoints to average")
    first_name, first = infos[0]
    for name, meta in infos[1:]:
        if meta.get("method") != first.get("method"):
            raise ValueError(f"{name} is a {meta.get('method')} model and {first_name} a {first.get('method')} one; "
                             "average models of one method")
        if meta.get("method_kwargs") != first.get("method_kwargs"):
            diff = sorted(k for k in set(meta.get("method_kwargs") or {}) | set(first.get("method_kwargs") or {})
                          if (meta.get("method_kwargs") or {}).get(k) != (first.get("method_kwargs") or {}).get(k))
            raise ValueError(f"{name} and {first_name} are built differently ({', '.join(diff)}); average models "
                             "with the same architecture and settings")
        for key in INPUT_KEYS:
            if meta.get(key) != first.get(key):
                raise ValueError(f"{name} and {first_name} expect different input ({key}: {meta.get(key)!r} vs "
                                 f"{first.get(key)!r}); average models trained on the same kind of images")


def average_state_dicts(models: list[FewShotClassifier]) -> dict[str, torch.Tensor]:
    """The uniform average of the models' floating-point tensors (in float64, cast back); integer tensors
    (BatchNorm's step counters) from the first model. ``ValueError`` if their tensors differ in name or shape."""
    states = [m.state_dict() for m in models]
    names = list(states[0])
    for i, state in enumerate(states[1:], start=2):
        if list(state) != names:
            missing = sorted(set(names) ^ set(state))
            raise ValueError(f"model {i} has other tensors than model 1 ({', '.join(missing[:3])}); average models "
                             "with the same architecture")
        for name in names:
            if state[name].shape != states[0][name].shape:
                raise ValueError(f"model {i}'s {name} is {tuple(state[name].shape)}, model 1's "
                                 f"{tuple(states[0][name].shape)}; average models with the same architecture")
    averaged = {}
    for name in names:
        first = states[0][name]
        if first.is_floating_point():
            total = sum(s[name].double() for s in states)
            averaged[name] = (total / len(states)).to(first.dtype)
        else:
            averaged[name] = first.clone()
    return averaged
