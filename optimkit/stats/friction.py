"""DiffGrad's friction: damp the step where the gradient barely changes."""

from __future__ import annotations

import torch

from ..core.parts import stat, zeros
from ..core.rules import one_of
from ..core.tensorlists import sigmoid_

_VERSION = one_of(0, 1, meaning="0 (sigmoid(|g_prev - g|)) or 1 (sigmoid(g_prev - g))")


@stat(state={"prev_grad": zeros}, storage={"prev_grad": "signed"},
      reads=("step_size",), provides=("step_size",),
      rules=dict(version=_VERSION), version=0)
def grad_friction(b, version):
    """DiffGrad's friction coefficient (Dubey et al. 2019, arXiv:1909.11015):

    ``xi = sigmoid(|prev_grad - grad|)`` (``version=0``, the paper's, in [0.5, 1)) or
    ``xi = sigmoid(prev_grad - grad)`` (``version=1``, signed, in (0, 1), as lessw2020 codes it);
    then ``prev_grad = grad`` (a copy: aliasing ``p.grad`` would make the difference 0 under
    ``zero_grad(set_to_none=False)``). ``prev_grad`` starts at 0.

    It damps this step's per-element step sizes: ``step_size = xi * step_size``, so the
    stepper moves by ``xi * step_size * m`` (DiffGrad's ``xi * m`` damped moment; the stored
    ``grad_avg`` is left alone). It runs after the step sizes are made (``adam_step_sizes``,
    and DeepMemory's blend with their memory, which remembers them undamped). ``xi`` is
    computed in ``prev_grad``'s own storage before it takes the new gradient, and the step
    sizes are damped in place: no param-sized temporary of its own. It sees the gradient as
    the earlier parts left it (with the L2 term when L2 weight decay runs before it, as in
    torch_optimizer.DiffGrad).
    """
    prev = b.state["prev_grad"]
    torch._foreach_sub_(prev, b.grads)
    if version == 0:
        torch._foreach_abs_(prev)
    sigmoid_(prev)
    torch._foreach_mul_(b.step_size, prev)
    torch._foreach_copy_(prev, b.grads)
