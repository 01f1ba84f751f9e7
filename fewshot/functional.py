"""``functional_call`` that never touches the module it is given, so threads can share one module.

``torch.func.functional_call`` runs a module with the given tensors by swapping them into the module's
attributes for the duration of the call and swapping the originals back afterwards. Two threads doing that
on the same module at once (the app's cached models are shared by every session) run with each other's
weights, and anything else reading the module meanwhile (a ``deepcopy``, a plain forward pass) sees the
wrong tensors; the originals can even be restored wrongly and stay wrong. Seen with the cached MAML model:
"differentiated Tensor ... not used in the graph" and answers that differed from a lone user's.

Here the swap happens on a per-thread structural copy of the module whose own tensors are empty
(``meta`` device, no memory). Tensors not passed in are taken from the real module, and the copy follows
the real module's train/eval mode, so the result (and the autograd graph) is what
``torch.func.functional_call`` on the real module gives.
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from typing import Any

import torch
from torch import nn
from torch.func import functional_call as _torch_functional_call

__all__ = ["functional_call"]

_local = threading.local()


def _skeleton(module: nn.Module) -> nn.Module:
    """This thread's copy of ``module`` with ``meta`` tensors (made once per thread and module)."""
    clones = getattr(_local, "clones", None)
    if clones is None:
        clones = _local.clones = weakref.WeakKeyDictionary()
    clone = clones.get(module)
    if clone is None:
        memo: dict[int, Any] = {}
        for t in itertools.chain(module.parameters(), module.buffers()):
            empty = torch.empty_like(t, device="meta")
            memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty
        clone = clones[module] = copy.deepcopy(module, memo)
    for c, m in zip(clone.modules(), module.modules()):
        c.training = m.training
    return clone


def functional_call(module: nn.Module, parameters_and_buffers: dict[str, torch.Tensor] | tuple[dict, ...],
                    args: Any, kwargs: dict | None = None) -> Any:
    """:func:`torch.func.functional_call` without modifying ``module`` (not even for the duration of the call)."""
    dicts = parameters_and_buffers if isinstance(parameters_and_buffers, tuple) else (parameters_and_buffers,)
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for d in dicts:
        tensors.update(d)
    return _torch_functional_call(_skeleton(module), tensors, args, kwargs)
