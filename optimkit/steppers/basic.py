"""Steppers of the classic optimizers: they write the params."""

from __future__ import annotations

import torch

from ..core.parts import stepper
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative, weights
from ..core.tensorlists import addcdiv_, debias, is_one, scalars

_ADAM_RULES = dict(lr=nonnegative, betas=betas_rule, eps=nonnegative)


@stepper(reads=("update",), rules=dict(lr=nonnegative), lr=1e-3)
def sgd_step(b, lr):
    """``p = p - lr * update``: the update is the gradient unless a stat provided another."""
    torch._foreach_add_(b.params, b.update, alpha=-lr)


@stepper(reads=("first_moment", "second_moment", "step"), rules=_ADAM_RULES, lr=1e-3,
         betas=(0.9, 0.999), eps=1e-8)
def adam_step(b, lr, betas, eps):
    """Adam (Kingma & Ba 2014, Alg. 1, bias correction folded into the step size):

    ``p = p - lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)``, with ``m`` the
    first moment and ``v`` the second (``sqr_avg``, or its running max under AMSGrad).
    """
    corrected1, corrected2 = debias(betas, b.steps)
    step_size = -(lr / corrected1)
    denom = torch._foreach_sqrt(b.second_moment)
    # Divided, as torch.optim.Adam does, so that a torch checkpoint continues bit for bit.
    torch._foreach_div_(denom, scalars(corrected2**0.5))
    torch._foreach_add_(denom, eps)
    addcdiv_(b.params, b.first_moment, denom, scalars(step_size))


@stepper(reads=("step_size", "first_moment"))
def per_element_step(b):
    """``p = p - step_size * first_moment``, with the per-element ``step_size`` the stats
    provided (``adam_step_sizes``, maybe bounded or blended by a memory)."""
    torch._foreach_addcmul_(b.params, b.step_size, b.first_moment, value=-1)


@stepper(reads=("first_moment", "second_moment", "step"), rules=dict(_ADAM_RULES, nus=weights),
         lr=1e-3, betas=(0.995, 0.999), nus=(0.7, 1.0), eps=1e-8)
def qhadam_step(b, lr, betas, nus, eps):
    """Quasi-hyperbolic Adam (Ma & Yarats 2018, arXiv:1810.06801), with Adam's moments ``m, v``:

    ``p = p - lr * (nu1 * m / (1 - beta1**t) + (1 - nu1) * g)
    / (sqrt(nu2 * v / (1 - beta2**t) + (1 - nu2) * g**2) + eps)``.
    """
    nu1, nu2 = nus
    corrected1, corrected2 = debias(betas, b.steps)
    numerator = torch._foreach_mul(b.first_moment, scalars(nu1 / corrected1))
    if not is_one(nu1):
        torch._foreach_add_(numerator, b.grads, alpha=1 - nu1)
    denom = torch._foreach_mul(b.second_moment, scalars(nu2 / corrected2))
    if not is_one(nu2):
        torch._foreach_addcmul_(denom, b.grads, b.grads, value=1 - nu2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(b.params, numerator, denom, value=-lr)


@stepper(reads=("second_moment", "step"),
         rules=dict(lr=nonnegative, lr_decay=nonnegative, eps=nonnegative), lr=1e-2,
         lr_decay=0.0, eps=1e-10)
def adagrad_step(b, lr, lr_decay, eps):
    """Adagrad (Duchi et al. 2011): ``p = p - lr_t * grad / (sqrt(v) + eps)`` with ``v`` the sum
    of squared gradients and ``lr_t = lr / (1 + (t - 1) * lr_decay)``."""
    minus_lr = -lr / (1 + (b.steps - 1) * lr_decay)
    std = torch._foreach_sqrt(b.second_moment)
    torch._foreach_add_(std, eps)
    # the per-tensor step size rides on addcdiv: no param-sized numerator is allocated
    addcdiv_(b.params, b.grads, std, scalars(minus_lr))
