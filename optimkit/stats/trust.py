"""Layer-wise trust ratios: LARS, LARC, LAMB and Ralamb share these parts.

The trust ratio of a tensor compares the norm of its weights with the norm of its update, so
that every layer moves by a similar fraction of its size (You et al. 2017, arXiv:1708.03888).
The parts are:

* ``layer_norms`` computes ``||w||`` and ``||u||`` for the whole bucket in ONE call to
  :meth:`optimkit.core.Bucket.norms`, so that a shard-aware bucket needs one reduction per
  step (and flat mode one row reduction over the buffer);
* ``trust_ratio`` turns them into a per-tensor ratio, with its variants (LARS's weight decay
  in the denominator, LARC's clip, LAMB's clamp of ``||w||``, the zero-norm rule), and
  rescales the direction by it. Everything stays on the device: no ``.item()``, no branch on
  a tensor's value;
* ``adam_direction`` and ``debias_direction`` build what LAMB and Ralamb hand to them, and
  ``new_weights_norm`` measures over9000's norms for Ralamb in place of ``layer_norms``.
"""

from __future__ import annotations

import math

import torch

from ..core.parts import stat
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative
from ..core.tensorlists import debias, is_zero, scalars


@stat(reads=("first_moment", "second_moment", "step"), provides=("update",),
      rules=dict(eps=nonnegative, betas=betas_rule), eps=1e-8, betas=(0.9, 0.999),
      debias_moments=False)
def adam_direction(b, eps, betas, debias_moments):
    """Adam's direction ``d = m / (sqrt(v) + eps)``: LAMB's paper v3, torch_optimizer.Lamb.

    With ``debias_moments`` (LAMB paper v5, Alg. 2) the moments are bias-corrected first:
    ``d = m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - beta1**t)``,
    ``v_hat = v / (1 - beta2**t)``.
    """
    denom = torch._foreach_sqrt(b.second_moment)
    if debias_moments:
        corrected1, corrected2 = debias(betas, b.steps)
        torch._foreach_div_(denom, scalars(corrected2**0.5))
    torch._foreach_add_(denom, eps)
    # m / denom written into denom: one param-sized temporary, not two
    torch._foreach_reciprocal_(denom)
    torch._foreach_mul_(denom, b.first_moment)
    if debias_moments:
        torch._foreach_div_(denom, scalars(corrected1))
    b.update = denom


@stat(reads=("update", "step"), provides=("update",), rules=dict(betas=betas_rule),
      betas=(0.9, 0.999))
def debias_direction(b, betas):
    """Scale the direction by ``sqrt(1 - beta2**t) / (1 - beta1**t)``, per tensor.

    Placed after the trust ratio it is ``torch_optimizer.Lamb(debias=True)``: the step size
    is corrected, not the moments (so the trust ratio cannot cancel it).
    """
    corrected1, corrected2 = debias(betas, b.steps)
    factor = scalars(corrected2**0.5 / corrected1)
    if b.is_scratch(b.update):
        torch._foreach_mul_(b.update, factor)
    else:
        b.update = torch._foreach_mul(b.update, factor)


@stat(reads=("update",), provides=("weight_norms", "update_norms"),
      overrides=("weight_norms", "update_norms"),
      rules=dict(lr=nonnegative, weight_decay=nonnegative), lr=1e-3, weight_decay=0.0)
def new_weights_norm(b, lr, weight_decay):
    """over9000's Ralamb compares the would-be new weights with the decayed ones.

    Provides ``||w'||``, ``w' = p * (1 - lr * weight_decay)``, as the weight norms and
    ``||w' - lr * d||``, the norm of the params after a full, untrusted step, as the update
    norms (over9000 decays float32 params in place before it measures them, so ``||w'||``).
    Neither tensor is made: with ``c = 1 - lr * weight_decay`` both norms follow from three
    per-tensor sums of one ``b.dots`` call, ``||w'||**2 = c**2 p.p`` and
    ``||w' - lr d||**2 = c**2 p.p - 2 c lr p.d + lr**2 d.d`` (no param-sized temporary; in
    flat and compiled mode the sums ride on the pass that reads ``p`` and ``d``). Replaces
    ``layer_norms`` where it runs.
    """
    d = b.update
    c = 1 - lr * weight_decay
    pp, pd, dd = b.dots((b.params, b.params), (b.params, d), (d, d))
    weights = c * c * pp
    b.weight_norms = weights.sqrt()
    # rounding may leave a tiny negative where w' and lr * d nearly cancel
    b.update_norms = (weights - 2 * c * lr * pd + lr * lr * dd).clamp(min=0).sqrt()


@stat(reads=("norm_target", "norm_weights"), provides=("weight_norms", "update_norms"),
      exclude_1d=False)
def layer_norms(b, exclude_1d):
    """``||w||`` and ``||u||`` per tensor, ``w`` being ``norm_weights`` (the params, unless a
    part provided other tensors) and ``u`` being ``norm_target`` (the update, unless a part
    provided other tensors). Both lists go through ONE ``b.norms`` call (one reduction, one
    collective once params are sharded).

    With ``exclude_1d`` a bucket of params with ndim <= 1 only (decided on the host from the
    shapes) measures nothing: ``trust_ratio`` leaves all of them untouched."""
    if exclude_1d and b.at_most_1d:
        b.weight_norms = b.update_norms = b.params[0].new_zeros(b.count)
        return
    b.weight_norms, b.update_norms = b.norms(b.norm_weights, b.norm_target)


@stat(
    reads=("weight_norms", "update_norms", "update"), provides=("update",),
    rules=dict(lr=nonnegative, weight_decay=nonnegative, trust_coefficient=nonnegative,
               eps=nonnegative, clamp_value=nonnegative),
    lr=1e-3, weight_decay=0.0, trust_coefficient=1.0, eps=0.0, clip=False,
    clamp_value=math.inf, exclude_1d=False,
)
def trust_ratio(b, lr, weight_decay, trust_coefficient, eps, clip, clamp_value, exclude_1d):
    """Rescale the direction by the layer-wise trust ratio.

    ``ratio = trust_coefficient * min(||w||, clamp_value) / (||u|| + weight_decay * ||w|| + eps)``,
    clipped to ``min(ratio / lr, 1)`` with ``clip`` (LARC). Where ``||w||`` or ``||u||`` is 0
    the ratio is 1 and weight decay is skipped (apex LARC, torch_optimizer.Lamb). Then
    ``d = ratio * (d + weight_decay * w)``: LARS folds its weight decay in here; LAMB and
    Ralamb pin ``weight_decay=0`` (their decay is part of the direction or decoupled).
    With ``exclude_1d`` tensors with ndim <= 1 (biases, norm weights) keep ``d`` untouched: no
    trust ratio and no weight decay, the SimCLR/BYOL convention.

    The ratios are per-tensor numbers (``[count]`` tensors on the device, no host sync); each
    tensor is multiplied by its own through ``b.expand``. A direction this step made (LAMB's
    ``m / (sqrt(v) + eps)``) is scaled in place; the gradient itself is never written.
    """
    if exclude_1d and b.at_most_1d:
        return  # no tensor adapted (see layer_norms): the direction as it is
    w, u = b.weight_norms, b.update_norms
    ratio = trust_coefficient * w.clamp(max=clamp_value) / (u + weight_decay * w + eps)
    if clip:
        ratio = (ratio / lr).clamp(max=1.0)
    adapted = (w > 0) & (u > 0)
    if exclude_1d:
        adapted &= b.ndims.to(adapted.device) > 1
    ratio = torch.where(adapted, ratio, 1.0)
    if not is_zero(weight_decay):
        decay = torch.where(adapted, ratio * weight_decay, 0.0)
        direction = torch._foreach_mul(b.params, b.expand(decay))
        torch._foreach_addcmul_(direction, b.update, b.expand(ratio))
    elif b.is_scratch(b.update):
        direction = b.update
        torch._foreach_mul_(direction, b.expand(ratio))
    else:
        direction = torch._foreach_mul(b.update, b.expand(ratio))
    b.update = direction
