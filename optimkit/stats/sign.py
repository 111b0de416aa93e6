"""Sign-based directions: every element moves by the same amount (Lion)."""

from __future__ import annotations

import torch

from ..core.parts import stat, zeros
from ..core.rules import betas as betas_rule


@stat(state={"grad_avg": zeros}, storage={"grad_avg": "signed"},
      provides=("update",), rules=dict(betas=betas_rule),
      betas=(0.9, 0.99))
def lion_direction(b, betas):
    """Lion's direction (Chen et al. 2023, arXiv:2302.06675, Alg. 2):

    ``d = sign(beta1 * m + (1 - beta1) * g)``, then ``m = beta2 * m + (1 - beta2) * g``. The
    momentum ``m`` (``grad_avg``, starting at 0) is updated after the direction is taken from
    it, with its own, slower rate ``beta2``.
    """
    avgs = b.state["grad_avg"]
    update = torch._foreach_lerp(avgs, b.grads, 1 - betas[0])
    torch._foreach_sign_(update)
    torch._foreach_lerp_(avgs, b.grads, 1 - betas[1])
    b.update = update
