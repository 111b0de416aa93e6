"""Stats that regularise the gradient or turn it into the update direction.

None writes the user's ``p.grad``: each provides ``grads`` or ``update`` as a new list.
"""

from __future__ import annotations

import torch

from ..core.parts import stat, zeros
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative
from ..core.tensorlists import is_zero

_DECAY_RULES = dict(weight_decay=nonnegative, lr=nonnegative)


def _decay(b, tensors, weight_decay, decoupled, lr):
    """``tensors + weight_decay * p`` (L2), or ``tensors`` after ``p *= 1 - lr * weight_decay``
    (decoupled)."""
    if is_zero(weight_decay):
        return tensors
    if decoupled:
        torch._foreach_mul_(b.params, 1 - lr * weight_decay)
        return tensors
    return torch._foreach_add(tensors, b.params, alpha=weight_decay)


@stat(provides=("grads",), rules=_DECAY_RULES, weight_decay=0.0, decoupled_weight_decay=False,
      lr=1e-3)
def weight_decay(b, weight_decay, decoupled_weight_decay, lr):
    """Weight decay, applied before the moments (as torch.optim does).

    * L2 (default): ``grad = grad + weight_decay * p``.
    * decoupled (Loshchilov & Hutter, AdamW/SGDW): ``p = p * (1 - lr * weight_decay)``.
    """
    b.grads = _decay(b, b.grads, weight_decay, decoupled_weight_decay, lr)


@stat(reads=("update",), provides=("update",), rules=_DECAY_RULES, weight_decay=0.0,
      decoupled_weight_decay=False, lr=1e-3)
def update_weight_decay(b, weight_decay, decoupled_weight_decay, lr):
    """Weight decay added to the update direction, after it was normalised (NovoGrad's
    ``d = g / (sqrt(v) + eps) + weight_decay * p``, LAMB's ``d = m / (sqrt(v) + eps) +
    weight_decay * p``), or decoupled: ``p = p * (1 - lr * weight_decay)``."""
    if not is_zero(weight_decay) and not decoupled_weight_decay and b.is_scratch(b.update):
        # a direction this step made (LAMB's): add the decay in place, no second temporary
        torch._foreach_add_(b.update, b.params, alpha=weight_decay)
        return
    update = _decay(b, b.update, weight_decay, decoupled_weight_decay, lr)
    if update is not b.update:
        b.update = update


def _nesterov_needs_momentum(group):
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("nesterov requires momentum > 0 and dampening = 0")


@stat(state={"momentum_buffer": zeros}, storage={"momentum_buffer": "signed"},
      reads=("update",), provides=("update",),
      rules=dict(momentum=nonnegative), checks=(_nesterov_needs_momentum,), momentum=0.0,
      dampening=0.0, nesterov=False)
def momentum(b, momentum, dampening, nesterov):
    """Heavy-ball momentum as torch.optim.SGD: ``buf = momentum * buf + (1 - dampening) * d``
    of the update ``d`` so far (the gradient, unless an earlier part provided another).

    The buffer starts as the first ``d`` itself. The update becomes ``buf``, or
    ``d + momentum * buf`` with ``nesterov``.
    """
    bufs = b.state["momentum_buffer"]
    update = b.update
    fresh = b.created.get("momentum_buffer", ())
    if fresh:
        if len(fresh) == len(bufs):
            torch._foreach_copy_(bufs, update)
        else:
            fresh_set = set(fresh)
            old = [i for i in range(len(bufs)) if i not in fresh_set]
            torch._foreach_copy_([bufs[i] for i in fresh], [update[i] for i in fresh])
            olds = [bufs[i] for i in old]
            torch._foreach_mul_(olds, momentum)
            torch._foreach_add_(olds, [update[i] for i in old], alpha=1 - dampening)
    else:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, update, alpha=1 - dampening)
    if nesterov:
        b.update = torch._foreach_add(update, bufs, alpha=momentum)
    else:
        b.update = bufs


@stat(reads=("second_moment", "update"), provides=("update",), rules=dict(eps=nonnegative),
      eps=1e-8)
def rms_normalize(b, eps):
    """RMSprop's direction: ``d = d / (sqrt(second_moment) + eps)`` (eps outside the root);
    with the centred stat the second moment is ``sqr_avg - grad_avg**2``."""
    _divide_by_root(b, b.second_moment, eps)


@stat(reads=("second_moment", "update"), provides=("update",), rules=dict(eps=nonnegative),
      eps=1e-8)
def layer_normalize(b, eps):
    """NovoGrad's direction: ``d = d / (sqrt(v) + eps)`` with ``v`` the layer-wise second moment,
    one per tensor (a ``[count]`` vector: divided per tensor through ``b.expand``)."""
    roots = b.stack(b.second_moment).sqrt() + eps
    b.update = torch._foreach_div(b.update, b.expand(roots))


def _divide_by_root(b, second_moments, eps):
    denom = torch._foreach_sqrt(second_moments)
    torch._foreach_add_(denom, eps)
    # d / denom written into denom: one param-sized temporary per step, not two
    torch._foreach_reciprocal_(denom)
    torch._foreach_mul_(denom, b.update)
    b.update = denom


@stat(state={"grad_avg": zeros}, storage={"grad_avg": "signed"},
      reads=("update",), provides=("update",),
      rules=dict(betas=betas_rule), betas=(0.95, 0.98), grad_averaging=False)
def accumulate_grad(b, betas, grad_averaging):
    """NovoGrad's momentum, starting from zero: ``grad_avg = beta1 * grad_avg + c * d`` of the
    update ``d`` so far, with ``c = 1 - beta1`` when ``grad_averaging``, else ``c = 1``. The
    update becomes ``grad_avg``.
    """
    avgs = b.state["grad_avg"]
    torch._foreach_mul_(avgs, betas[0])
    torch._foreach_add_(avgs, b.update, alpha=1 - betas[0] if grad_averaging else 1.0)
    b.update = avgs
