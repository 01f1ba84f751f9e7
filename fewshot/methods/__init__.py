"""The method registry: the single source of truth for the CLI, the app and checkpoints."""

from __future__ import annotations

from typing import Any

from .base import FewShotClassifier
from .finetune import FineTuneBaseline
from .mann import MANN
from .maml import MAML, AdaptStep, adapt, adapt_steps
from .matching import MatchingNetwork
from .protonet import PrototypicalNetwork, compute_prototypes
from .siamese import SiameseNetwork

__all__ = [
    "METHODS", "METHOD_TITLES", "build_model", "FewShotClassifier", "PrototypicalNetwork", "MatchingNetwork",
    "SiameseNetwork", "MAML", "MANN", "FineTuneBaseline", "AdaptStep", "adapt", "adapt_steps", "compute_prototypes",
]

# name -> (class, fixed constructor arguments)
METHODS: dict[str, tuple[type[FewShotClassifier], dict[str, Any]]] = {
    "protonet": (PrototypicalNetwork, {}),
    "matching": (MatchingNetwork, {}),
    "siamese": (SiameseNetwork, {}),
    "maml": (MAML, {"first_order": False}),
    "fomaml": (MAML, {"first_order": True}),
    "mann": (MANN, {}),
    "finetune": (FineTuneBaseline, {}),
}

METHOD_TITLES = {
    "protonet": "Prototypical Networks",
    "matching": "Matching Networks",
    "siamese": "Siamese network",
    "maml": "MAML (second order)",
    "fomaml": "First-order MAML",
    "mann": "Memory-augmented network (MANN)",
    "finetune": "Transfer baseline (pre-train + fine-tune)",
}


def build_model(method: str, **kwargs: Any) -> FewShotClassifier:
    """Instantiate a registered method. Unknown keyword arguments raise ``TypeError`` from the constructor.

    Raises:
        ValueError: ``method`` is not registered.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cls, fixed = METHODS[method]
    return cls(**{**kwargs, **fixed})
