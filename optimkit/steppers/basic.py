"""Steppers of the classic optimizers: they write the params."""

from __future__ import annotations

import torch

from ..core.parts import stepper
from ..core.tensorlists import scalars


@stepper(lr=1e-3)
def sgd_step(b, lr):
    """``p = p - lr * direction``, the direction being what the stats left in ``b.grads``."""
    torch._foreach_add_(b.params, b.grads, alpha=-lr)


@stepper(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
def adam_step(b, lr, betas, eps):
    """Adam (Kingma & Ba 2014, Alg. 1, bias correction folded into the step size):

    ``p = p - lr / (1 - beta1**t) * grad_avg / (sqrt(v / (1 - beta2**t)) + eps)``, where ``v``
    is ``max_sqr_avg`` when AMSGrad's stat runs and ``sqr_avg`` otherwise.
    """
    t = b.steps
    step_size = -(lr / (1 - betas[0] ** t))
    bias_correction2_sqrt = (1 - betas[1] ** t) ** 0.5
    second = b.state.get("max_sqr_avg", b.state["sqr_avg"])
    denom = torch._foreach_sqrt(second)
    # a multiply, not a divide: under torch.compile dividing by a per-tensor scalar blocks fusion
    torch._foreach_mul_(denom, scalars(1 / bias_correction2_sqrt))
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(b.params, b.state["grad_avg"], denom, scalars(step_size))


@stepper(lr=1e-2, lr_decay=0.0, eps=1e-10)
def adagrad_step(b, lr, lr_decay, eps):
    """Adagrad (Duchi et al. 2011): ``p = p - lr_t * grad / (sqrt(sqr_sum) + eps)`` with
    ``lr_t = lr / (1 + (t - 1) * lr_decay)``."""
    minus_lr = -lr / (1 + (b.steps - 1) * lr_decay)
    std = torch._foreach_sqrt(b.state["sqr_sum"])
    torch._foreach_add_(std, eps)
    # the per-tensor step size rides on addcdiv: no param-sized numerator is allocated
    torch._foreach_addcdiv_(b.params, b.grads, std, scalars(minus_lr))
