"""Adafactor's factored second moment (Shazeer & Stern 2018): a matrix's squared gradients
averaged per row and per column, and their outer product as the estimate of the full average."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.parts import own_shape, stat
from ..core.rules import nonnegative
from ..core.tensorlists import is_dtensor, lerp_, scalars


def beta2_decay_rule(name, value) -> None:
    """``beta2_decay <= 0``: the rate ``t**beta2_decay`` of the second moment shrinks with ``t``."""
    if not float(value) <= 0.0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be <= 0")


def adafactor_eps_rule(name, value) -> None:
    """``(eps1, eps2)``: ``eps1`` None (the dtype's machine epsilon) or >= 0, ``eps2`` >= 0."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be a pair (eps1, eps2)")
    if value[0] is not None:
        nonnegative(f"{name}[0]", value[0])
    nonnegative(f"{name}[1]", value[1])


_SHARDED = (
    "Adafactor: a DTensor (FSDP2) param of ndim >= 2 is not supported: its column averages "
    "run over the rows of every shard; use DDP, or keep these params unsharded"
)


def _refuse_shards(p: Tensor) -> None:
    # FSDP2 shards dim 0: a matrix's column averages would need every rank's rows
    if is_dtensor(p) and p.dim() >= 2:
        raise NotImplementedError(_SHARDED)


def _row_zeros(p: Tensor, group) -> Tensor:
    """``row_var``: ``[..., rows, 1]`` for a param of ndim >= 2, else empty."""
    _refuse_shards(p)
    if p.dim() < 2:
        return torch.zeros(0, dtype=p.dtype, device=p.device)
    return torch.zeros((*p.shape[:-1], 1), dtype=p.dtype, device=p.device)


def _col_zeros(p: Tensor, group) -> Tensor:
    """``col_var``: ``[..., 1, cols]`` for a param of ndim >= 2, else empty."""
    if p.dim() < 2:
        return torch.zeros(0, dtype=p.dtype, device=p.device)
    return torch.zeros((*p.shape[:-2], 1, p.shape[-1]), dtype=p.dtype, device=p.device)


def _full_zeros(p: Tensor, group) -> Tensor:
    """``variance``: the param's shape for a vector or a scalar, else empty."""
    if p.dim() >= 2:
        return torch.zeros(0, dtype=p.dtype, device=p.device)
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _clamp_min_(tensors: list[Tensor], bound) -> None:
    # a traced (0-d tensor) bound when compiled: the per-tensor form takes it
    if isinstance(bound, Tensor):
        for t in tensors:
            t.clamp_(min=bound)
    else:
        torch._foreach_clamp_min_(tensors, bound)


# Up to this size a sum along a dim is added up slice by slice: the reduction kernel over a
# short dim is slow (W1's [512, 512, 3, 3] kernel, one thread: 4.5 and 7.8 ms along dims -1
# and -2 as a sum, 3.1 and 2.9 ms by slices; a [1000, 512] matrix is faster as a sum).
SHORT_DIM = 8


def _sum(t: Tensor, dim: int) -> Tensor:
    size = t.size(dim)
    if size > SHORT_DIM or size == 0 or torch.compiler.is_compiling():
        return t.sum(dim=dim, keepdim=True)
    total = t.narrow(dim, 0, 1).clone()
    for j in range(1, size):
        total.add_(t.narrow(dim, j, 1))
    return total


def _means(squares: list[Tensor], dim: int) -> list[Tensor]:
    """``squares.mean(dim, keepdim=True)`` per tensor, as a sum divided by the size (torch's
    order: it squares the norm along ``dim``, then divides). Summed from the squares, not
    through ``torch.norm``: a norm along dim -2 of a conv kernel (``[..., 3, 3]``) took 77 ms
    on W1's largest tensor, the sum of the squares 8 ms (one thread)."""
    means = [_sum(t, dim) for t in squares]
    torch._foreach_div_(means, [float(t.size(dim)) for t in squares])
    return means


@stat(state={"row_var": own_shape(_row_zeros), "col_var": own_shape(_col_zeros),
             "variance": own_shape(_full_zeros)},
      storage={"row_var": "positive", "col_var": "positive", "variance": "positive"},
      reads=("step",), provides=("update",), shaped=True,
      rules=dict(beta2_decay=beta2_decay_rule, eps=adafactor_eps_rule),
      beta2_decay=-0.8, eps=(None, 1e-3))
def adafactor_direction(b, beta2_decay, eps):
    """Adafactor's normalised gradient (Shazeer & Stern 2018, arXiv:1804.04235, Alg. 4/5, as
    ``torch.optim.Adafactor``): with ``w = t**beta2_decay`` (the second moment's rate,
    ``1 - beta2_t``) and ``eps1`` (``eps[0]``; None: the dtype's machine epsilon),

    * a param of ndim >= 2 keeps the averages of ``g**2`` over its last dim and its
      second-to-last: ``row_var = lerp(row_var, mean(g**2, -1), w)`` (``[..., rows, 1]``),
      ``col_var = lerp(col_var, mean(g**2, -2), w)`` (``[..., 1, cols]``), and estimates the
      full average as ``v = row_var @ col_var / max(mean(row_var), eps1)``;
    * a vector or a scalar keeps it whole: ``variance = lerp(variance, g**2, w)``, ``v`` a copy;

    the update is ``g / sqrt(max(v, eps1**2))``. The states a param does not use are empty
    tensors (every param carries all three names). ``eps[1]`` is the stepper's.
    """
    eps1 = eps[0] if eps[0] is not None else torch.finfo(b.dtype).eps
    grads = b.grads
    weights = scalars(b.steps**beta2_decay)
    each = weights if isinstance(weights, list) else [weights] * len(grads)
    matrices = [i for i, g in enumerate(grads) if g.dim() >= 2]
    vectors = [i for i, g in enumerate(grads) if g.dim() < 2]
    estimates: list[Tensor | None] = [None] * len(grads)
    if matrices:
        g = [grads[i] for i in matrices]
        w = [each[i] for i in matrices]
        rows = [b.state["row_var"][i] for i in matrices]
        cols = [b.state["col_var"][i] for i in matrices]
        if getattr(b, "groups", None):  # local shards of FSDP2 (a ShardedBucket)
            raise NotImplementedError(_SHARDED)
        squares = torch._foreach_mul(g, g)
        lerp_(rows, _means(squares, -1), w)
        lerp_(cols, _means(squares, -2), w)
        # the outer products r_i * c_j (torch's row_var @ col_var: one product per element,
        # no sum), written into the squares' buffers: one param-sized temporary
        if torch.compiler.is_compiling():
            products = [r * c for r, c in zip(rows, cols, strict=True)]
        else:
            products = [torch.mul(r, c, out=t) for r, c, t in zip(rows, cols, squares,
                                                                   strict=True)]
        row_means = [r.mean(dim=-2, keepdim=True) for r in rows]
        _clamp_min_(row_means, eps1)
        torch._foreach_div_(products, row_means)
        for i, v in zip(matrices, products, strict=True):
            estimates[i] = v
    if vectors:
        g = [grads[i] for i in vectors]
        full = [b.state["variance"][i] for i in vectors]
        lerp_(full, torch._foreach_mul(g, g), [each[i] for i in vectors])
        for i, v in zip(vectors, full, strict=True):
            estimates[i] = v.clone()
    update = [v for v in estimates if v is not None]
    _clamp_min_(update, eps1 * eps1)
    torch._foreach_rsqrt_(update)
    torch._foreach_mul_(update, grads)
    b.update = update
