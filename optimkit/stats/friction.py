"""DiffGrad's friction: damp the step where the gradient barely changes."""

from __future__ import annotations

import torch

from ..core.parts import stat, zeros
from ..core.rules import one_of

_VERSION = one_of(0, 1, meaning="0 (sigmoid(|g_prev - g|)) or 1 (sigmoid(g_prev - g))")


@stat(state={"prev_grad": zeros}, storage={"prev_grad": "signed"},
      reads=("first_moment",), provides=("first_moment",),
      rules=dict(version=_VERSION), version=0)
def grad_friction(b, version):
    """DiffGrad's friction coefficient (Dubey et al. 2019, arXiv:1909.11015):

    ``xi = sigmoid(|prev_grad - grad|)`` (``version=0``, the paper's, in [0.5, 1)) or
    ``xi = sigmoid(prev_grad - grad)`` (``version=1``, signed, in (0, 1), as lessw2020 codes it);
    then ``prev_grad = grad`` (a copy: aliasing ``p.grad`` would make the difference 0 under
    ``zero_grad(set_to_none=False)``). ``prev_grad`` starts at 0.

    It damps the first moment for this step only: ``first_moment = xi * first_moment`` is a new
    list for the steppers (``adam_step``, ``per_element_step``); the stored ``grad_avg`` is left
    alone. It sees the gradient as the earlier parts left it (with the L2 term when L2 weight
    decay runs before it, as in torch_optimizer.DiffGrad).
    """
    prev = b.state["prev_grad"]
    diff = torch._foreach_sub(prev, b.grads)
    if version == 0:
        torch._foreach_abs_(diff)
    torch._foreach_sigmoid_(diff)
    torch._foreach_copy_(prev, b.grads)
    b.first_moment = torch._foreach_mul(b.first_moment, diff)
