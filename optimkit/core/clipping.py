"""``max_grad_norm=``: global gradient-norm clipping for every recipe, as a barrier.

``Optimizer(params, max_grad_norm=1.0)`` scales the gradients the recipe sees as
``torch.nn.utils.clip_grad_norm_(params, 1.0)`` would scale ``p.grad``: by
``min(1, max_grad_norm / (norm + 1e-6))``, ``norm`` the L2 norm of all the grads of all the
param groups together. ``p.grad`` itself is never written: the executor runs a first phase
(:data:`grad_sqr_sum`, each bucket's sum of squares), the barrier :data:`clip_barrier` turns
the total (one all-reduce over FSDP2 shards) into the coefficient, and every later phase
starts with :data:`scale_grads`, which hands the parts ``grads * coefficient`` as a new list.
Off (``None``, the default) none of this runs. A coefficient of exactly 1 (no clipping this
step) makes no copy; compiled, it is then a constant of the graph (``core/compiled.py``: 0
and 1 stay Python numbers), so a run whose clipping starts or stops binding compiles one more
graph per bucket, once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .parts import barrier, stat
from .scratch import MMAP_BYTES
from .tensorlists import is_one

# clip_grad_norm_'s guard against a zero norm
CLIP_EPS = 1e-6


def check_max_grad_norm(value: Any) -> None:
    """``ValueError`` naming ``max_grad_norm`` unless it is None or a positive finite number."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(
            f"Invalid max_grad_norm: {value!r}; it must be None (no clipping) or a positive "
            "finite number"
        )


@stat(contributes=("grad_sqr_sum",))
def grad_sqr_sum(b):
    """The bucket's sum of the squares of every grad element (its share of the global norm)."""
    # local: the executor adds the buckets and the shards up (one all-reduce)
    return (b._local_sum_squares(b.grads).reshape(-1),)


@barrier(sums=("grad_sqr_sum",), values={})
def clip_barrier(totals: Mapping[str, float], groups: Sequence[Mapping[str, Any]]):
    """``clip_coef = min(1, max_grad_norm / (norm + 1e-6))`` for the phases after it."""
    norm = math.sqrt(totals["grad_sqr_sum"])
    return {"clip_coef": min(1.0, groups[0]["max_grad_norm"] / (norm + CLIP_EPS))}


@stat(provides=("grads",), group_values=("clip_coef",))
def scale_grads(b, clip_coef):
    """``grads * clip_coef`` (a new list: ``p.grad`` stays as it is)."""
    if is_one(clip_coef):
        return
    grads = b.grads
    if (grads[0].device.type == "cpu" and not torch.compiler.is_compiling()
            and sum(g.numel() for g in grads) * grads[0].element_size() < MMAP_BYTES
            and not isinstance(clip_coef, torch.Tensor)
            and all(type(g) is torch.Tensor and g.is_contiguous() and g.dtype == grads[0].dtype
                    for g in grads)):
        # one buffer for the block's scaled grads, each written by mul's own kernel (the
        # foreach op's on the CPU: the same bits): freed as one chunk, glibc raises its
        # thresholds past it and keeps it in the heap for the next block and step, where a
        # list of fresh tensors freed together is trimmed and page-faulted in again each time
        # (2x Adam's step on a 2.6M-param model). From 32 MiB on glibc always maps fresh
        # pages: the foreach op's results then come from the executor's scratch pool
        buffer = torch.empty(sum(g.numel() for g in grads), dtype=grads[0].dtype)
        scaled = []
        for g, piece in zip(grads, buffer.split([g.numel() for g in grads]), strict=True):
            scaled.append(torch.mul(g, clip_coef, out=piece.view(g.shape)))
        b.grads = scaled
        return
    b.grads = torch._foreach_mul(grads, clip_coef)
