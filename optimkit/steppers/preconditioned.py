"""SOAP's stepper (Vyas et al. 2024, arXiv:2409.11321); its stats are in
``optimkit/stats/preconditioned.py``."""

from __future__ import annotations

import torch

from ..core.parts import stepper
from ..core.rules import nonnegative
from ..core.tensorlists import is_zero


@stepper(reads=("update",), rules=dict(lr=nonnegative, weight_decay=nonnegative), lr=3e-3,
         weight_decay=1e-2)
def soap_step(b, lr, weight_decay):
    """``p = p - lr * update``, then the decoupled decay ``p = p * (1 - lr * weight_decay)``
    (the order of the authors' ``soap.py``), except at a param's first step, which only
    initialises SOAP's preconditioner (its state is made this step): that param is left as it
    is, decay included, as in the reference."""
    fresh = set(b.created.get("factors", ()))
    params, update = b.params, b.update
    if fresh:
        old = [i for i in range(len(params)) if i not in fresh]
        params, update = [params[i] for i in old], [update[i] for i in old]
        if not params:
            return
    torch._foreach_add_(params, update, alpha=-lr)
    if not is_zero(weight_decay):
        torch._foreach_mul_(params, 1 - lr * weight_decay)
