"""The method registry: the single source of truth for the CLI, the app and checkpoints."""

from __future__ import annotations

from typing import Any

from ..mlp import MLPRegressor
from .base import FewShotClassifier
from .finetune import FineTuneBaseline
from .mann import MANN
from .maml import MAML, AdaptStep, adapt, adapt_steps
from .matching import MatchingNetwork
from .protonet import PrototypicalNetwork, compute_prototypes
from .siamese import SiameseNetwork

__all__ = [
    "METHODS", "METHOD_TITLES", "REGRESSORS", "MODELS", "build_model", "FewShotClassifier", "PrototypicalNetwork",
    "MatchingNetwork", "SiameseNetwork", "MAML", "MANN", "FineTuneBaseline", "AdaptStep", "adapt", "adapt_steps", "compute_prototypes",
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

# Models a checkpoint can hold that are not few-shot image classifiers: the sine-wave regressor of Finn et al.
# (fewshot.sine), trained by MAML or pre-trained on all sines (`fewshot train-sine`). Checkpoints save and rebuild
# them like METHODS' models, so `fewshot info`/`export` work on them; everything that offers an image classifier
# (`fewshot train --method`, the app's model pickers and checkpoint lists) iterates METHODS and never sees them.
REGRESSORS: dict[str, tuple[type, dict[str, Any]]] = {
    "sine_maml": (MLPRegressor, {}),
    "sine_pretrained": (MLPRegressor, {}),
}

# Everything build_model() and the checkpoints can rebuild.
MODELS = {**METHODS, **REGRESSORS}

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
    """Instantiate a registered method (or regressor, see ``REGRESSORS``). Unknown keyword arguments raise
    ``TypeError`` from the constructor.

    Raises:
        ValueError: ``method`` is not registered.
    """
    if method not in MODELS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(MODELS)}")
    cls, fixed = MODELS[method]
    return cls(**{**kwargs, **fixed})
