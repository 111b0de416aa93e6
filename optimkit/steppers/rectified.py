"""Rectified Adam's stepper."""

from __future__ import annotations

import torch

from ..core.parts import stepper
from ..core.rules import nonnegative
from ..stats.rectified import RADAM_RULES, rectified_scale


@stepper(reads=("first_moment", "second_moment", "step"),
         rules=dict(RADAM_RULES, lr=nonnegative), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         n_sma_threshold=5.0, degenerated_to_sgd=True)
def radam_step(b, lr, betas, eps, n_sma_threshold, degenerated_to_sgd):
    """RAdam (Liu et al. 2019, arXiv:1908.03265, Alg. 2).

    Where the variance is tractable (``rho_t > n_sma_threshold``):
    ``p = p - lr * r_t / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)``;
    elsewhere ``p = p - lr / (1 - beta1**t) * m`` (momentum SGD), or no update at all with
    ``degenerated_to_sgd=False``.
    """
    scale = rectified_scale(b, betas, eps, n_sma_threshold, degenerated_to_sgd, -lr)
    torch._foreach_addcmul_(b.params, b.first_moment, scale)
