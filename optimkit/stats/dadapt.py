"""D-Adaptation and Prodigy: the statistics of the distance estimate ``d`` (phase 1).

Both methods estimate ``d`` (the distance to the solution) from sums over EVERY param of
every group, so their recipes have a barrier (``core/parts.py``): these stats update the
moments of each bucket and contribute its share of the two sums; the barrier
(:mod:`optimkit.steppers.dadapt`) adds them up over the optimizer and sets ``d``; the steppers
after it move the params with the new ``d``. ``d`` (and ``dlr = d * lr * bias correction``,
computed from the groups before the step) reach the parts as group values, never keywords.
"""

from __future__ import annotations

import torch

from ..core.parts import copy_of_param, stat, zeros
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative
from ..core.tensorlists import is_zero

# A contribution is returned per tensor (a 1-D tensor): the executor adds them up in the
# params' order, so an eager step over CPU blocks sums exactly as one over the whole bucket.
# A tensor of more than _PIECE elements (a flat store's block, a big param) contributes one
# value per piece of it: the temporaries of a piece stay in the cache instead of making a
# fresh block-sized buffer (page faults, memory traffic) for each.
_PIECE = 1 << 18


def _pieces(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    flat = t.reshape(-1)
    return (flat,) if flat.numel() <= _PIECE else flat.split(_PIECE)


def local_dot(left, right) -> torch.Tensor:
    """``sum(a * b)`` of each pair of tensors of two aligned lists, ``[len(left)]`` (this
    bucket's, this shard's share; the executor adds the rest up)."""
    return torch.stack([torch.dot(a.reshape(-1), b.reshape(-1))
                        for a, b in zip(left, right, strict=True)])


# (The loops below take a tensor of at most _PIECE elements, the usual case, without
# _pieces' tuples and zips: the same ops on the same flat views, ~half the Python per tensor.)


def local_abs_sum(tensors) -> torch.Tensor:
    """``sum(|x|)`` of each tensor (of each piece of a big one), a 1-D tensor. ``abs().sum()``
    as the references compute it: ``linalg.vector_norm(x, 1)`` is 5-10x slower on the CPU."""
    out = []
    for t in tensors:
        if t.numel() <= _PIECE:
            out.append(t.reshape(-1).abs().sum())
        else:
            out.extend(piece.abs().sum() for piece in _pieces(t))
    return torch.stack(out)


def diff_dot(grads, p0, params) -> torch.Tensor:
    """``sum(g * (p0 - p))`` of each tensor (of each piece of a big one), a 1-D tensor: each
    difference freed at once (``dot(g, p0) - dot(g, p)`` would cancel catastrophically while
    ``p`` is still near ``p0``)."""
    out = []
    dot = torch.dot
    for g, q, p in zip(grads, p0, params, strict=True):
        if g.numel() <= _PIECE:
            out.append(dot(g.reshape(-1), q.reshape(-1) - p.reshape(-1)))
            continue
        for gi, qi, pi in zip(_pieces(g), _pieces(q), _pieces(p), strict=True):
            out.append(dot(gi, qi - pi))
    return torch.stack(out)


def _ratio_piece(g, s, v, eps) -> torch.Tensor:
    q = torch.sqrt(v)
    q.add_(eps)
    torch.div(s, q, out=q)
    return torch.dot(g, q)


def ratio_dot(grads, s, sqr_avg, eps) -> torch.Tensor:
    """``sum(g * s / (sqrt(v) + eps))`` of each tensor (of each piece of a big one), a 1-D
    tensor: one temporary per piece, worked on in place."""
    out = []
    for g, si, v in zip(grads, s, sqr_avg, strict=True):
        if g.numel() <= _PIECE:
            out.append(_ratio_piece(g.reshape(-1), si.reshape(-1), v.reshape(-1), eps))
            continue
        for gj, sj, vj in zip(_pieces(g), _pieces(si), _pieces(v), strict=True):
            out.append(_ratio_piece(gj, sj, vj, eps))
    return torch.stack(out)


def _zero(b) -> torch.Tensor:
    return b.params[0].new_zeros(())


def _coupled(b, weight_decay, decouple):
    """The gradient with L2 weight decay (``decouple=False``), as a new list."""
    if is_zero(weight_decay) or decouple:
        return b.grads
    return torch._foreach_add(b.grads, b.params, alpha=weight_decay)


def _beta3(betas, beta3):
    return betas[1] ** 0.5 if beta3 is None else beta3


def beta3_rule(name, value):
    """``beta3``: None (``sqrt(beta2)``) or in [0, 1)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not 0.0 <= float(value) < 1.0):
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be None or in [0, 1)")


def d0_rule(name, value):
    """``d0 > 0``: the estimate starts there and only grows."""
    if not float(value) > 0.0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be > 0")


@stat(state={"grad_avg": zeros}, storage={"grad_avg": "signed"}, rules=dict(betas=betas_rule),
      group_values=("d",), betas=(0.9, 0.999), weight_decay=0.0, decouple=True, lr=1.0)
def prodigy_grad_avg(b, betas, weight_decay, decouple, lr, d):
    """Prodigy's first moment: ``m = beta1 * m + d * (1 - beta1) * g`` (only while beta1 > 0)."""
    if is_zero(lr):  # the reference moves nothing of a group whose lr is 0
        return
    grads = _coupled(b, weight_decay, decouple)
    torch._foreach_mul_(b.state["grad_avg"], betas[0])
    torch._foreach_add_(b.state["grad_avg"], grads, alpha=d * (1 - betas[0]))


@stat(state={"sqr_avg": zeros, "s": zeros, "p0": copy_of_param},
      storage={"sqr_avg": "positive", "s": "signed"},
      rules=dict(betas=betas_rule, beta3=beta3_rule, d0=d0_rule, weight_decay=nonnegative),
      contributes=("d_numerator_delta", "d_denom"), group_values=("d", "dlr"),
      betas=(0.9, 0.999), beta3=None, weight_decay=0.0, decouple=True, safeguard_warmup=False,
      d0=1e-6, lr=1.0)
def prodigy_stats(b, betas, beta3, weight_decay, decouple, safeguard_warmup, d0, lr, d, dlr):
    """Prodigy's statistics (Mishchenko & Defazio 2023, Alg. 4 with Adam's moments):
    ``v = beta2 * v + d**2 * (1 - beta2) * g**2``,
    ``s = beta3 * s + (d / d0) * dlr * g`` (``(d / d0) * d`` with ``safeguard_warmup``);
    contributes ``sum(g * (p0 - p))`` (the barrier scales it by ``(d / d0) * dlr``) and
    ``sum(|s|)``. A group with lr 0 contributes nothing and keeps its state, as in the
    reference."""
    if is_zero(lr):
        return _zero(b), _zero(b)
    grads = _coupled(b, weight_decay, decouple)
    numerator = diff_dot(grads, b.state["p0"], b.params)
    torch._foreach_mul_(b.state["sqr_avg"], betas[1])
    torch._foreach_addcmul_(b.state["sqr_avg"], grads, grads, value=d * d * (1 - betas[1]))
    torch._foreach_mul_(b.state["s"], _beta3(betas, beta3))
    torch._foreach_add_(b.state["s"], grads, alpha=(d / d0) * (d if safeguard_warmup else dlr))
    return numerator, local_abs_sum(b.state["s"])


@stat(state={"grad_avg": zeros, "sqr_avg": zeros, "s": zeros},
      storage={"grad_avg": "signed", "sqr_avg": "positive", "s": "signed"},
      rules=dict(betas=betas_rule, weight_decay=nonnegative, eps=nonnegative),
      contributes=("numerator", "sk_l1"), group_values=("dlr", "layer_scale"),
      betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decouple=False, lr=1.0)
def dadapt_adam_stats(b, betas, eps, weight_decay, decouple, lr, dlr, layer_scale):
    """D-Adaptation Adam's statistics (Defazio & Mishchenko 2023, Alg. 3 as in the
    ``dadaptation`` package): with ``r = layer_scale`` and ``v``, ``s`` of the last step it
    contributes ``r * sum(g * s / (sqrt(v) + eps))``, then ``m = beta1 * m + r * dlr *
    (1 - beta1) * g``, ``v = beta2 * v + (1 - beta2) * g**2``, ``s = sqrt(beta2) * s + dlr *
    (1 - sqrt(beta2)) * g``, and contributes ``r * sum(|s|)``."""
    if is_zero(lr):
        return _zero(b), _zero(b)
    beta1, beta2 = betas
    sqrt_beta2 = beta2 ** 0.5
    grads = _coupled(b, weight_decay, decouple)
    numerator = ratio_dot(grads, b.state["s"], b.state["sqr_avg"], eps) * layer_scale
    torch._foreach_mul_(b.state["grad_avg"], beta1)
    torch._foreach_add_(b.state["grad_avg"], grads, alpha=layer_scale * dlr * (1 - beta1))
    torch._foreach_mul_(b.state["sqr_avg"], beta2)
    torch._foreach_addcmul_(b.state["sqr_avg"], grads, grads, value=1 - beta2)
    torch._foreach_mul_(b.state["s"], sqrt_beta2)
    torch._foreach_add_(b.state["s"], grads, alpha=dlr * (1 - sqrt_beta2))
    return numerator, local_abs_sum(b.state["s"]) * layer_scale


