"""Stats of the 2023-25 element-wise optimizers: ADOPT's and LaProp's directions, and the
cautious mask (Liang et al. 2024) that any momentum recipe may switch on."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.parts import stat, zero_scalar, zeros
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative
from ..core.tensorlists import addcdiv_, scalars


def cautious_mask(b, direction: list[Tensor]) -> list[Tensor]:
    """``direction * 1[direction * grad > 0] * n / (k + 1)`` per tensor, a new list: ``n`` the
    tensor's number of elements, ``k`` how many the mask keeps (both of the full tensor, so
    flat buffers and FSDP2 shards give the same numbers)."""
    mask = torch._foreach_mul(direction, b.grads)
    torch._foreach_sign_(mask)
    torch._foreach_clamp_min_(mask, 0.0)  # 1 where they agree, else 0 (NaN: sign is 0)
    # a 0/1 mask: its sum of squares counts the ones; one reduction (collective) for both
    kept, sizes = b.sum_squares_and_sizes(mask)
    # n / (k + 1) as pytorch_optimizer computes it: the reciprocal, times n
    scale = (kept[0] + 1).reciprocal() * sizes
    torch._foreach_mul_(mask, direction)
    torch._foreach_mul_(mask, b.expand(scale))
    return mask


@stat(reads=("update",), provides=("update",))
def cautious_update(b):
    """Cautious optimizers (Liang et al. 2024, arXiv:2411.16085): keep the update only where
    it agrees in sign with the gradient, rescaled per tensor so its size stays about the same:
    ``u = u * 1[u * g > 0] * n / (k + 1)`` (``n`` elements, ``k`` kept), as
    ``pytorch_optimizer``'s ``cautious=True``. The paper's code and timm divide by
    ``max(k / n, 1e-3)`` instead: ``n / k`` against ``n / (k + 1)``, the same up to ``1 / k``.
    ``g`` is the gradient as the parts see it (with the L2 term, if any)."""
    b.update = cautious_mask(b, b.update)


@stat(reads=("first_moment",), provides=("first_moment",))
def cautious_moment(b):
    """The cautious mask (see ``cautious_update``) on the first moment an Adam stepper
    divides by the root of the second: ``m / (sqrt(v) + eps)`` has ``m``'s sign, so masking
    ``m`` masks the update (C-AdamW, Liang et al. 2024, Alg. 1). A copy: ``grad_avg`` keeps
    its unmasked values."""
    b.first_moment = cautious_mask(b, b.first_moment)


def _clamp_(tensors: list[Tensor], bounds) -> None:
    """``t.clamp_(-c, c)`` with ``c`` per tensor (from :func:`scalars`: numbers, or 0-d
    tensors when compiled). One pass per tensor: the foreach forms would take two
    (``clamp_min_``, ``clamp_max_``), a full pass over memory more on W1."""
    if not isinstance(bounds, list):
        bounds = [bounds] * len(tensors)
    for t, c in zip(tensors, bounds, strict=True):
        t.clamp_(min=-c, max=c)


@stat(state={"grad_avg": zeros, "sqr_avg": zeros},
      storage={"grad_avg": "signed", "sqr_avg": "positive"}, reads=("step",),
      provides=("update",), rules=dict(betas=betas_rule, eps=nonnegative),
      betas=(0.9, 0.9999), eps=1e-6)
def adopt_direction(b, betas, eps):
    """ADOPT (Taniguchi et al. 2024, arXiv:2411.02853, Alg. 2 with the 2024-11 clipping):
    normalise the gradient by the *previous* second moment, clip, then average:

    ``n = clip(g / max(sqrt(v), eps), t**0.25)``; ``m = beta1 * m + (1 - beta1) * n``;
    ``v = beta2 * v + (1 - beta2) * g**2``; the update is ``m``. A param's first step only
    sets ``v = g**2`` (``m`` stays 0, so the update is 0).
    """
    avgs, sqrs = b.state["grad_avg"], b.state["sqr_avg"]
    fresh = b.created.get("sqr_avg", ())
    if fresh:  # known on the host: the tensors whose state this step created
        torch._foreach_addcmul_([sqrs[i] for i in fresh], [b.grads[i] for i in fresh],
                                [b.grads[i] for i in fresh])
        old = [i for i in range(len(sqrs)) if i not in set(fresh)]
        if old:
            _adopt_update(b.select(old), [b.grads[i] for i in old], betas, eps)
    else:
        _adopt_update(b, b.grads, betas, eps)
    b.update = avgs


def _adopt_update(b, grads, betas, eps):
    beta1, beta2 = betas
    avgs, sqrs = b.state["grad_avg"], b.state["sqr_avg"]
    normed = torch._foreach_sqrt(sqrs)
    torch._foreach_clamp_min_(normed, eps)
    # g / root written into the root's buffer: one param-sized temporary per step, not two
    # (g * (1 / root): within an ulp of the reference's g / root)
    torch._foreach_reciprocal_(normed)
    torch._foreach_mul_(normed, grads)
    _clamp_(normed, scalars(b.steps**0.25))
    torch._foreach_lerp_(avgs, normed, 1 - beta1)
    torch._foreach_mul_(sqrs, beta2)
    torch._foreach_addcmul_(sqrs, grads, grads, value=1 - beta2)


@stat(state={"grad_avg": zeros, "lr_avg": zero_scalar}, storage={"grad_avg": "signed"},
      reads=("second_moment", "step"), provides=("update",),
      rules=dict(lr=nonnegative, betas=betas_rule, eps=nonnegative),
      lr=4e-4, betas=(0.9, 0.999), eps=1e-15)
def laprop_direction(b, lr, betas, eps):
    """LaProp (Ziyin, Wang & Ueda 2020, arXiv:2002.04839): momentum of the *normalised*
    gradient, as ``pytorch_optimizer.LaProp``:

    ``d = sqrt(v + 1e-15) + eps``, divided by ``sqrt(1 - beta2**t)``;
    ``m = beta1 * m + (1 - beta1) * lr * g / d`` (``grad_avg``: the learning rate is inside);
    ``lr_avg = beta1 * lr_avg + (1 - beta1) * lr``, the same average of the lr alone, by
    which the stepper divides ``m`` (bias correction that follows an lr schedule). The update
    is ``m``.
    """
    beta1, beta2 = betas
    denom = torch._foreach_add(b.second_moment, 1e-15)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    lr_avgs = b.stack(b.state["lr_avg"]) * beta1 + (1 - beta1) * lr
    torch._foreach_copy_(b.state["lr_avg"], b.unstack(lr_avgs))
    avgs = b.state["grad_avg"]
    torch._foreach_mul_(avgs, beta1)
    # the division of d by sqrt(1 - beta2**t) rides on the per-tensor weight: a pass fewer
    weights = (1 - beta1) * lr * (1 - beta2**b.steps).sqrt()
    addcdiv_(avgs, b.grads, denom, scalars(weights))
    b.update = avgs
