"""Layer-wise stats: one number per tensor instead of one per element (NovoGrad)."""

from __future__ import annotations

import torch

from ..core.parts import stat, zero_scalar
from ..core.rules import betas as betas_rule
from .moments import running_max


@stat(state={"layer_sqr_avg": zero_scalar}, provides=("second_moment",),
      rules=dict(betas=betas_rule), betas=(0.95, 0.98))
def layer_sqr_avg(b, betas):
    """NovoGrad's second moment, one 0-d tensor per param (Ginsburg et al. 2019, Alg. 1):

    ``layer_sqr_avg = ||g||**2`` while it is 0 (the first step), else
    ``layer_sqr_avg = beta2 * layer_sqr_avg + (1 - beta2) * ||g||**2``.
    """
    beta2 = betas[1]
    avgs = b.state["layer_sqr_avg"]
    (sqr_norms,) = b.sum_squares(b.grads)
    old = b.stack(avgs)
    # torch.where instead of a Python branch: no device sync, and exact for each tensor.
    new = torch.where(old == 0, sqr_norms, old * beta2 + sqr_norms * (1 - beta2))
    torch._foreach_copy_(avgs, b.unstack(new))
    b.second_moment = avgs


@stat(state={"max_layer_sqr_avg": zero_scalar}, reads=("second_moment",),
      provides=("second_moment",))
def max_layer_sqr_avg(b):
    """AMSGrad for the layer-wise moment:
    ``max_layer_sqr_avg = max(max_layer_sqr_avg, second_moment)``."""
    b.second_moment = running_max(b, "max_layer_sqr_avg")
