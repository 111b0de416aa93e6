"""Muon's parts (Jordan et al. 2024): momentum, Newton-Schulz orthogonalization of each matrix's
update, and the step with the per-shape learning-rate adjustment.

They apply to matrices: a recipe routes them with ``.where(MATRIX)`` (``core/parts.py``) and
sends every other param elsewhere (Muon's AdamW branch). ``orthogonalize`` is declared
``batch="shape"``: the executor hands it buckets of one shape, which it stacks into one
``[n, rows, cols]`` tensor, so the five Newton-Schulz iterations are 15 batched matrix products
per shape (``torch.bmm`` / ``torch.baddbmm``), not 15 per tensor, and a compiled step traces
them once per shape. A param of more than two dimensions (a conv filter ``[out, in, h, w]``) is
orthogonalized as the matrix ``[out, in * h * w]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.parts import same_shapes, stat, stepper, zeros
from ..core.rules import nonnegative, one_of, positive_integer
from ..core.tensorlists import lerp, lerp_

# The quintic's coefficients (Jordan et al. 2024; torch.optim.Muon's defaults): chosen to
# maximise the slope at zero, so five steps push every singular value into about [0.7, 1.2].
NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
# the Newton-Schulz dtypes offered (bf16: torch's and the authors'; float32/64 for accuracy)
NS_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def _ns_dtype(name: str, value) -> None:
    if value not in NS_DTYPES:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be one of "
                         f"{', '.join(map(str, NS_DTYPES))}")


def _coefficients(name: str, value) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 3):
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be 3 numbers (a, b, c)")


def _ns_steps(name: str, value) -> None:
    positive_integer(name, value)
    if value >= 100:  # as torch.optim.Muon
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be below 100")


def as_matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The matrix a param of ``shape`` is orthogonalized as: ``[shape[0], the rest]`` (a conv
    filter's ``[out, in * h * w]``)."""
    rows = shape[0]
    return rows, math.prod(shape[1:])


def newton_schulz(g: Tensor, coefficients, steps: int, eps, dtype: torch.dtype | None) -> Tensor:
    """The quintic Newton-Schulz iteration over a batch of matrices ``g`` (``[n, rows, cols]``),
    in ``dtype`` (None: ``g``'s), in torch.optim.Muon's op order: ``X = G / max(||G||_F,
    eps)`` (transposed when tall), then ``steps`` times ``A = X X^T``,
    ``B = b A + c A A``, ``X = a X + B X`` (each a fused ``baddbmm``). Returns ``[n, rows,
    cols]`` in ``dtype``: ``U S' V^T`` with ``S'`` about 1, the orthogonalized update."""
    a, b, c = coefficients
    x = g.to(dtype) if dtype is not None else g
    # One matrix: torch's own 2-D kernels (mm, addmm), the same bits as torch.optim.Muon. A
    # batch: bmm / baddbmm, which on the CPU in bf16 round differently in about 1 matrix in
    # 1000 (one bf16 step in one element).
    single = x.shape[0] == 1
    if single:
        x = x[0]
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    # (compiled, ns_coefficients stay Python numbers: compiled.CONSTANT_HYPERS)
    fused = not any(isinstance(v, Tensor) for v in (a, b, c))
    mul, add_mul = (torch.mm, torch.addmm) if single else (torch.bmm, torch.baddbmm)
    for _ in range(steps):
        gram = mul(x, x.mT)
        if fused:
            poly = add_mul(gram, gram, gram, beta=b, alpha=c)
            x = add_mul(x, poly, x, beta=a)
        else:  # compiled: the coefficients are graph inputs (0-d tensors), not Python numbers
            poly = gram * b.to(x.dtype) + mul(gram, gram) * c.to(x.dtype)
            x = x * a.to(x.dtype) + mul(poly, x)
    x = x.mT if tall else x
    return x[None] if single else x


@stat(state={"momentum_buffer": zeros}, storage={"momentum_buffer": "signed"},
      provides=("update",), rules=dict(momentum=nonnegative), momentum=0.95, nesterov=True)
def muon_momentum(b, momentum, nesterov):
    """Muon's momentum, an EMA of the gradients: ``buf = buf + (1 - momentum) (g - buf)``
    (``lerp``); the update is ``g + momentum (buf - g)`` (Nesterov, the default) or ``buf``.
    torch.optim.Muon's and the authors' form (``buf`` starts at zero)."""
    buffers = b.state["momentum_buffer"]
    lerp_(buffers, b.grads, 1 - momentum)
    b.update = lerp(b.grads, buffers, momentum) if nesterov else buffers


@stat(reads=("update",), provides=("update",), batch="shape", whole=True,
      rules=dict(ns_coefficients=_coefficients, ns_steps=_ns_steps, eps=nonnegative,
                 ns_dtype=_ns_dtype),
      ns_coefficients=NS_COEFFICIENTS, ns_steps=5, eps=1e-7, ns_dtype=torch.bfloat16)
def orthogonalize(b, ns_coefficients, ns_steps, eps, ns_dtype):
    """Replace each matrix's update by its orthogonalization, ``ns_steps`` quintic
    Newton-Schulz steps in ``ns_dtype`` (:func:`newton_schulz`); the result is cast back to
    the param's dtype. One batched call per shape: the tensors of one shape are stacked (a
    conv filter as ``[out, in * h * w]``). Needs params of two or more dimensions."""
    update = b.update
    out: list[Tensor] = [None] * len(update)  # type: ignore[list-item]
    for shape, indices in same_shapes(update):
        rows, cols = as_matrix_shape(shape)
        stacked = torch.stack([update[i].reshape(rows, cols) for i in indices])
        ortho = newton_schulz(stacked, ns_coefficients, ns_steps, eps, ns_dtype)
        for i, matrix in zip(indices, ortho.to(update[indices[0]].dtype).unbind(0),
                             strict=True):
            out[i] = matrix.view(shape)
    b.update = out


def lr_ratio(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
    """Muon's lr factor for a param of ``shape`` (as the matrix ``[rows, cols]`` of
    :func:`as_matrix_shape`): ``"original"`` / None ``sqrt(max(1, rows / cols))`` (Jordan et
    al.), ``"match_rms_adamw"`` ``0.2 * sqrt(max(rows, cols))`` (Liu et al. 2025: the update's
    RMS then matches AdamW's, so AdamW's lr and weight decay carry over)."""
    rows, cols = as_matrix_shape(shape)
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


@stepper(reads=("update",), rules=dict(lr=nonnegative, adjust_lr_fn=one_of(*ADJUST_LR_FNS)),
         lr=1e-3, adjust_lr_fn=None)
def muon_step(b, lr, adjust_lr_fn):
    """``p = p - lr * ratio * update``, ``ratio`` per shape (:func:`lr_ratio`), computed as
    torch.optim.Muon does (``alpha = -(lr * ratio)``): one foreach call per shape. The shapes
    are the full tensors' (``b.shapes``), under FSDP2 too, where the params are shards."""
    groups = same_shapes(b.shapes)
    for shape, indices in groups:
        alpha = -(lr * lr_ratio(shape, adjust_lr_fn))
        if len(groups) == 1:
            torch._foreach_add_(b.params, b.update, alpha=alpha)
        else:
            torch._foreach_add_([b.params[i] for i in indices], [b.update[i] for i in indices],
                                alpha=alpha)
