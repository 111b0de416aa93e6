"""Rectified Adam's direction, and the rectified step size its stepper shares."""

from __future__ import annotations

import torch

from ..core.parts import stat
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative
from ..core.tensorlists import debias, scalars

RADAM_RULES = dict(betas=betas_rule, eps=nonnegative)


def rectification(t: torch.Tensor, beta2: float, threshold: float):
    """RAdam's variance rectification ``r_t`` per tensor (0 where ``rho_t <= threshold``).

    ``rho_inf = 2 / (1 - beta2) - 1``, ``rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)``,
    ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``.
    """
    rho_inf = 2 / (1 - beta2) - 1
    beta2_t = beta2**t
    rho_t = rho_inf - 2 * t * beta2_t / (1 - beta2_t)
    ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    return torch.where(rho_t > threshold, ratio.clamp(min=0) ** 0.5, 0.0)


def rectified_scale(b, betas, eps, n_sma_threshold, degenerated_to_sgd, step_size):
    """The per-element factor ``f`` with RAdam's update ``= first_moment * f``, as a new list.

    ``f = step_size * r_t * sqrt(1 - beta2**t) / (1 - beta1**t) / (sqrt(v) + eps)`` where the
    variance is tractable, ``step_size / (1 - beta1**t)`` elsewhere (0 without
    ``degenerated_to_sgd``); ``v`` is the second moment.
    """
    t = b.steps
    rect = rectification(t, betas[1], n_sma_threshold)
    corrected1, corrected2 = debias(betas, t)
    unrectified = (rect <= 0).to(t.dtype) if degenerated_to_sgd else torch.zeros_like(t)
    sgd_step_size = step_size * unrectified / corrected1
    adaptive_step_size = (corrected2**0.5) * (step_size * rect / corrected1)
    # 1 / ((sqrt(v) + eps) / step) is 0 where the adaptive step is 0, so one list serves both.
    scale = torch._foreach_sqrt(b.second_moment)
    torch._foreach_add_(scale, eps)
    torch._foreach_div_(scale, scalars(adaptive_step_size))
    torch._foreach_reciprocal_(scale)
    torch._foreach_add_(scale, scalars(sgd_step_size))
    return scale


@stat(reads=("first_moment", "second_moment", "step"), provides=("update",), rules=RADAM_RULES,
      betas=(0.9, 0.999), eps=1e-8, n_sma_threshold=5.0, degenerated_to_sgd=True)
def radam_direction(b, betas, eps, n_sma_threshold, degenerated_to_sgd):
    """RAdam's step as a direction, for parts that rescale it before ``sgd_step`` (Ralamb):
    ``d = r_t / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)``, or ``m / (1 - beta1**t)``
    before rectification; ``radam_step`` is ``p = p - lr * d``.
    """
    scale = rectified_scale(b, betas, eps, n_sma_threshold, degenerated_to_sgd, 1.0)
    torch._foreach_mul_(scale, b.first_moment)
    b.update = scale
