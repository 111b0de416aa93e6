"""Stats that turn the gradient into the direction the later parts use.

Each rebinds ``b.grads`` to a new list and never writes the user's ``p.grad``.
"""

from __future__ import annotations

import torch

from ..core.parts import stat, zeros


@stat(weight_decay=0.0, decoupled_weight_decay=False, lr=1e-3)
def weight_decay(b, weight_decay, decoupled_weight_decay, lr):
    """Weight decay, applied before the moments (as torch.optim does).

    * L2 (default): ``grad = grad + weight_decay * p``.
    * decoupled (Loshchilov & Hutter, AdamW/SGDW): ``p = p * (1 - lr * weight_decay)``.
    """
    if weight_decay == 0:
        return
    if decoupled_weight_decay:
        torch._foreach_mul_(b.params, 1 - lr * weight_decay)
    else:
        b.grads = torch._foreach_add(b.grads, b.params, alpha=weight_decay)


@stat(state={"momentum_buffer": zeros}, momentum=0.0, dampening=0.0, nesterov=False)
def momentum(b, momentum, dampening, nesterov):
    """Heavy-ball momentum as torch.optim.SGD: ``buf = momentum * buf + (1 - dampening) * grad``.

    The buffer starts as the first gradient itself. The direction becomes ``buf``, or
    ``grad + momentum * buf`` with ``nesterov``.
    """
    bufs = b.state["momentum_buffer"]
    fresh = b.created.get("momentum_buffer", ())
    if fresh:
        if len(fresh) == len(bufs):
            torch._foreach_copy_(bufs, b.grads)
        else:
            fresh_set = set(fresh)
            old = [i for i in range(len(bufs)) if i not in fresh_set]
            torch._foreach_copy_([bufs[i] for i in fresh], [b.grads[i] for i in fresh])
            olds = [bufs[i] for i in old]
            torch._foreach_mul_(olds, momentum)
            torch._foreach_add_(olds, [b.grads[i] for i in old], alpha=1 - dampening)
    else:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, b.grads, alpha=1 - dampening)
    if nesterov:
        b.grads = torch._foreach_add(b.grads, bufs, alpha=momentum)
    else:
        b.grads = bufs


@stat(eps=1e-8, centered=False)
def rms_normalize(b, eps, centered):
    """RMSprop's direction: ``grad / (sqrt(sqr_avg - centered * grad_avg**2) + eps)``."""
    second = b.state["sqr_avg"]
    if centered:
        second = torch._foreach_addcmul(second, b.state["grad_avg"], b.state["grad_avg"], value=-1)
    _divide_by_root(b, second, eps, elementwise=True)


@stat(eps=1e-8)
def layer_normalize(b, eps):
    """NovoGrad's direction: ``grad / (sqrt(v) + eps)`` with ``v`` the layer-wise second moment
    (``max_layer_sqr_avg`` when AMSGrad's stat runs, else ``layer_sqr_avg``), one per tensor."""
    _divide_by_root(b, b.state.get("max_layer_sqr_avg", b.state["layer_sqr_avg"]), eps)


def _divide_by_root(b, second_moments, eps, elementwise=False):
    denom = torch._foreach_sqrt(second_moments)
    torch._foreach_add_(denom, eps)
    if elementwise:
        # grad / denom written into denom: one param-sized temporary per step, not two
        torch._foreach_reciprocal_(denom)
        torch._foreach_mul_(denom, b.grads)
        b.grads = denom
    else:  # one moment per tensor: a per-layer scalar
        b.grads = torch._foreach_div(b.grads, denom)


@stat(state={"grad_avg": zeros}, betas=(0.95, 0.98), grad_averaging=False)
def accumulate_grad(b, betas, grad_averaging):
    """NovoGrad's momentum, starting from zero: ``grad_avg = beta1 * grad_avg + c * grad`` with
    ``c = 1 - beta1`` when ``grad_averaging``, else ``c = 1``. The direction becomes ``grad_avg``.
    """
    avgs = b.state["grad_avg"]
    torch._foreach_mul_(avgs, betas[0])
    torch._foreach_add_(avgs, b.grads, alpha=1 - betas[0] if grad_averaging else 1.0)
    b.grads = avgs
