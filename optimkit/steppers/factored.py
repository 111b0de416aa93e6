"""Adafactor's step (Shazeer & Stern 2018): a step size relative to the param's own scale, the
update clipped by its root mean square; the direction is :mod:`optimkit.stats.factored`'s."""

from __future__ import annotations

import torch

from ..core.parts import stepper
from ..core.rules import at_least, nonnegative
from ..core.tensorlists import is_zero, per_tensor
from ..stats.factored import adafactor_eps_rule


@stepper(reads=("update", "step"),
         rules=dict(lr=nonnegative, eps=adafactor_eps_rule, d=at_least(1.0),
                    weight_decay=nonnegative),
         lr=1e-2, eps=(None, 1e-3), d=1.0, weight_decay=0.0)
def adafactor_step(b, lr, eps, d, weight_decay):
    """Adafactor's relative step (Shazeer & Stern 2018, arXiv:1804.04235, §8, as
    ``torch.optim.Adafactor``), per tensor ``p`` of ``n`` elements, ``t`` its step:

    ``alpha = max(eps[1], ||p|| / sqrt(n)) * min(lr, 1 / sqrt(t))`` (the param's RMS, before the
    decay); ``p = p * (1 - lr * weight_decay)``; then, with the update's RMS clipped at ``d``,
    ``p = p - alpha / max(1, ||u|| / (sqrt(n) * d)) * u``.
    """
    # both norms and the sizes in one reduction (one all-reduce for sharded vectors)
    sums, sizes = b.sum_squares_and_sizes(b.params, b.update)
    sums, roots = sums.double(), sizes.double().sqrt()
    steps = b.steps.to(sums.device)
    rho = torch.clamp(1 / steps.sqrt(), max=lr)
    alpha = torch.clamp(sums[0].sqrt() / roots, min=eps[1]) * rho
    clip = torch.clamp(sums[1].sqrt() / (roots * d), min=1.0)
    if not is_zero(weight_decay):
        torch._foreach_mul_(b.params, 1 - lr * weight_decay)
    update = b.update
    if not b.is_scratch(update):
        update = [u.clone() for u in update]
    torch._foreach_mul_(update, per_tensor(b, -alpha / clip))
    torch._foreach_add_(b.params, update)
