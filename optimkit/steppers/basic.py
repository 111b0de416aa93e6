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
    # Divided, as torch.optim.Adam does, so that a torch checkpoint continues bit for bit.
    torch._foreach_div_(denom, scalars(bias_correction2_sqrt))
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(b.params, first_moment(b), denom, scalars(step_size))


def first_moment(b):
    """The first moment a stepper applies: ``grad_avg``, or what a stat left in
    ``b.extras["grad_avg"]`` for this step only (DiffGrad's friction damps it there)."""
    return b.extras.get("grad_avg", b.state["grad_avg"])


@stepper()
def per_element_step(b):
    """``p = p - step_size * grad_avg``, with the per-element ``step_size`` that the stats left in
    ``b.extras["step_size"]`` (``adam_step_sizes``, maybe bounded or blended by a memory)."""
    torch._foreach_addcmul_(b.params, b.extras["step_size"], first_moment(b), value=-1)


@stepper(lr=1e-3, betas=(0.995, 0.999), nus=(0.7, 1.0), eps=1e-8)
def qhadam_step(b, lr, betas, nus, eps):
    """Quasi-hyperbolic Adam (Ma & Yarats 2018, arXiv:1810.06801), with Adam's moments ``m, v``:

    ``p = p - lr * (nu1 * m / (1 - beta1**t) + (1 - nu1) * g)
    / (sqrt(nu2 * v / (1 - beta2**t) + (1 - nu2) * g**2) + eps)``.
    """
    t = b.steps
    nu1, nu2 = nus
    numerator = torch._foreach_mul(first_moment(b), scalars(nu1 / (1 - betas[0] ** t)))
    if nu1 != 1:
        torch._foreach_add_(numerator, b.grads, alpha=1 - nu1)
    denom = torch._foreach_mul(b.state["sqr_avg"], scalars(nu2 / (1 - betas[1] ** t)))
    if nu2 != 1:
        torch._foreach_addcmul_(denom, b.grads, b.grads, value=1 - nu2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(b.params, numerator, denom, value=-lr)


@stepper(lr=1e-2, lr_decay=0.0, eps=1e-10)
def adagrad_step(b, lr, lr_decay, eps):
    """Adagrad (Duchi et al. 2011): ``p = p - lr_t * grad / (sqrt(sqr_sum) + eps)`` with
    ``lr_t = lr / (1 + (t - 1) * lr_decay)``."""
    minus_lr = -lr / (1 + (b.steps - 1) * lr_decay)
    std = torch._foreach_sqrt(b.state["sqr_sum"])
    torch._foreach_add_(std, eps)
    # the per-tensor step size rides on addcdiv: no param-sized numerator is allocated
    torch._foreach_addcdiv_(b.params, b.grads, std, scalars(minus_lr))
