"""Steppers of the 2023-25 optimizers that mix several averages (Adan, AdEMAMix, MARS); their
stats are in :mod:`optimkit.stats.mixing`."""

from __future__ import annotations

import torch

from ..core.parts import stepper
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative
from ..core.tensorlists import addcdiv_, debias, is_zero, per_tensor, scalars
from ..stats.mixing import _optional_positive, _pick, mars_mixed

_RULES = dict(lr=nonnegative, betas=betas_rule, eps=nonnegative)


@stepper(reads=("first_moment", "second_moment", "grad_diff_avg", "step"), rules=_RULES,
         lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8)
def adan_step(b, lr, betas, eps):
    """Adan's step (Xie et al. 2022, arXiv:2208.06677), with its moments ``m`` (first),
    ``n`` (second) and ``grad_diff_avg`` ``d``:
    ``p = p - lr * (m / (1 - beta1**t) + beta2 * d / (1 - beta2**t))
    / (sqrt(n / (1 - beta3**t)) + eps)``.
    """
    steps = b.steps
    corrected1, corrected2 = debias(betas, steps)
    root3 = (1 - betas[2] ** steps) ** 0.5
    # sqrt(n / c3) + eps = (sqrt(n) + eps sqrt(c3)) / sqrt(c3): sqrt(c3) rides on the step
    # sizes, one pass over memory fewer
    denom = torch._foreach_sqrt(b.second_moment)
    torch._foreach_add_(denom, scalars(eps * root3))
    addcdiv_(b.params, b.first_moment, denom, scalars(-lr * root3 / corrected1))
    addcdiv_(b.params, b.state["grad_diff_avg"], denom,
             scalars(-lr * betas[1] * root3 / corrected2))


@stepper(rules=dict(lr=nonnegative, weight_decay=nonnegative), lr=1e-3, weight_decay=0.0)
def proximal_decay(b, lr, weight_decay):
    """Weight decay as a proximal step after the update (Adan's default, the paper's Alg. 1):
    ``p = p / (1 + lr * weight_decay)``."""
    if not is_zero(weight_decay):
        torch._foreach_div_(b.params, 1 + lr * weight_decay)


@stepper(reads=("first_moment", "second_moment", "slow_grad_avg", "step"),
         rules=dict(_RULES, alpha=nonnegative, t_alpha_beta3=_optional_positive),
         lr=1e-3, betas=(0.9, 0.999, 0.9999), eps=1e-8, alpha=5.0, t_alpha_beta3=None)
def ademamix_step(b, lr, betas, eps, alpha, t_alpha_beta3):
    """AdEMAMix's step (Pagliardini et al. 2024, arXiv:2409.03137, Alg. 1), with Adam's
    moments ``m, v`` and the slow momentum ``m2``:
    ``p = p - lr * (m / (1 - beta1**t) + alpha_t * m2) / (sqrt(v / (1 - beta2**t)) + eps)``.

    ``alpha_t`` is ``alpha``, or with ``t_alpha_beta3=T`` the linear warm-up
    ``min(t * alpha / T, alpha)`` per tensor (the paper's eq. 3).
    """
    steps = b.steps
    corrected1, corrected2 = debias(betas, steps)
    alpha_t = alpha if t_alpha_beta3 is None else (steps * alpha / t_alpha_beta3).clamp(max=alpha)
    root2 = corrected2**0.5
    # as Adan's: sqrt(v / c2) + eps = (sqrt(v) + eps sqrt(c2)) / sqrt(c2)
    denom = torch._foreach_sqrt(b.second_moment)
    torch._foreach_add_(denom, scalars(eps * root2))
    # (m + alpha_t (1 - beta1**t) m2) scaled by lr / (1 - beta1**t) on the way in
    numerator = torch._foreach_mul(b.state["slow_grad_avg"], scalars(alpha_t * corrected1))
    torch._foreach_add_(numerator, b.first_moment)
    addcdiv_(b.params, numerator, denom, scalars(-lr * root2 / corrected1))


@stepper(reads=("update",),
         rules=dict(lr=nonnegative, lr_1d=nonnegative, weight_decay=nonnegative,
                    weight_decay_1d=nonnegative),
         lr=3e-3, lr_1d=3e-3, weight_decay=0.0, weight_decay_1d=0.1, optimize_1d=False)
def mars_step(b, lr, lr_1d, weight_decay, weight_decay_1d, optimize_1d):
    """MARS's step, per tensor: tensors with ``ndim >= 2`` (all with ``optimize_1d``) take
    ``lr`` and ``weight_decay``, the others ``lr_1d`` and ``weight_decay_1d`` (pytorch_optimizer's
    AdamW for 1-D params): ``p = p * (1 - lr_t * wd_t)``, then ``p = p - lr_t * update``."""
    mixed = mars_mixed(b, optimize_1d)
    rate = _pick(mixed, lr, lr_1d)
    if not (is_zero(weight_decay) and is_zero(weight_decay_1d)):
        decay = _pick(mixed, weight_decay, weight_decay_1d)
        factors = per_tensor(b, 1 - rate * decay)
        if isinstance(factors, list) and factors and not isinstance(factors[0], torch.Tensor):
            # known on the host: leave out the tensors whose factor is exactly 1 (the matrices
            # under the defaults, weight_decay 0 and weight_decay_1d 0.1): a pass over their
            # params that changes no bit
            kept = [i for i, f in enumerate(factors) if f != 1.0]
            if kept:
                torch._foreach_mul_([b.params[i] for i in kept], [factors[i] for i in kept])
        else:
            torch._foreach_mul_(b.params, factors)
    update = b.update
    if b.is_scratch(update):
        torch._foreach_mul_(update, per_tensor(b, -rate))
    else:
        update = torch._foreach_mul(update, per_tensor(b, -rate))
    torch._foreach_add_(b.params, update)
