"""Stats of the 2023-25 optimizers that mix several averages of the gradient: Adan's gradient
difference, AdEMAMix's slow momentum, MARS's variance-reduced (corrected) gradient."""

from __future__ import annotations

import math
import numbers

import torch

from ..core.parts import stat, zeros
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative, one_of
from ..core.tensorlists import lerp, lerp_, per_tensor, scalars


def copy_into_fresh(b, name: str, source) -> None:
    """``state[name] = source`` for the tensors whose ``name`` state was created this step."""
    fresh = b.created.get(name, ())
    if fresh:
        torch._foreach_copy_([b.state[name][i] for i in fresh], [source[i] for i in fresh])


@stat(state={"grad_avg": zeros, "grad_diff_avg": zeros, "sqr_avg": zeros, "prev_grad": zeros},
      storage={"grad_avg": "signed", "grad_diff_avg": "signed", "sqr_avg": "positive",
               "prev_grad": "signed"},
      provides=("first_moment", "second_moment"), rules=dict(betas=betas_rule),
      betas=(0.98, 0.92, 0.99))
def adan_moments(b, betas):
    """Adan's three averages (Xie et al. 2022, arXiv:2208.06677, Alg. 1), with the gradient
    difference ``diff = g - prev_grad``:

    ``grad_avg = beta1 * grad_avg + (1 - beta1) * g``;
    ``grad_diff_avg = beta2 * grad_diff_avg + (1 - beta2) * diff``;
    ``sqr_avg = beta3 * sqr_avg + (1 - beta3) * (g + beta2 * diff)**2``; then ``prev_grad = g``.

    ``prev_grad`` is a copy of the gradient (never an alias of ``p.grad``); at a param's first
    step it is the gradient itself, so the first difference is 0 (as the authors' code and
    pytorch_optimizer). Provides ``grad_avg`` as the first moment and ``sqr_avg`` as the second.
    """
    beta1, beta2, beta3 = betas
    grads, prev = b.grads, b.state["prev_grad"]
    copy_into_fresh(b, "prev_grad", grads)
    diff = torch._foreach_sub(grads, prev)
    torch._foreach_lerp_(b.state["grad_avg"], grads, 1 - beta1)
    torch._foreach_lerp_(b.state["grad_diff_avg"], diff, 1 - beta2)
    # g + beta2 * diff, written into diff
    torch._foreach_mul_(diff, beta2)
    torch._foreach_add_(diff, grads)
    sqr = b.state["sqr_avg"]
    torch._foreach_mul_(sqr, beta3)
    torch._foreach_addcmul_(sqr, diff, diff, value=1 - beta3)
    torch._foreach_copy_(prev, grads)
    b.first_moment = b.state["grad_avg"]
    b.second_moment = sqr


def _optional_positive(name, value):
    """None (off) or a number > 0 (not a bool, not a tensor: it is read on the host)."""
    if value is not None and not (isinstance(value, numbers.Real)
                                  and not isinstance(value, bool) and value > 0):
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be None or a number > 0")


def _log(value):
    return math.log(value) if isinstance(value, (int, float)) else torch.log(value)


def ademamix_beta3(betas, steps, t_alpha_beta3):
    """AdEMAMix's slow rate at step ``t`` (per tensor): ``beta3`` without warm-up, else the
    schedule of the paper (§3, eq. 4), ``min(exp(ln b1 ln b3 / ((1 - t/T) ln b3 + t/T ln b1)),
    b3)``, which starts at ``beta1`` and reaches ``beta3`` at ``T = t_alpha_beta3``."""
    beta1, _, beta3 = betas
    if t_alpha_beta3 is None:
        return beta3
    log1, log3 = _log(beta1), _log(beta3)
    frac = steps / t_alpha_beta3
    return torch.exp(log1 * log3 / ((1 - frac) * log3 + frac * log1)).clamp(max=beta3)


@stat(state={"slow_grad_avg": zeros}, storage={"slow_grad_avg": "signed"}, reads=("step",),
      rules=dict(betas=betas_rule, t_alpha_beta3=_optional_positive),
      betas=(0.9, 0.999, 0.9999), t_alpha_beta3=None)
def slow_grad_avg(b, betas, t_alpha_beta3):
    """AdEMAMix's slow momentum (Pagliardini et al. 2024, arXiv:2409.03137, Alg. 1):
    ``slow_grad_avg = beta3_t * slow_grad_avg + (1 - beta3_t) * g``, never bias-corrected.

    ``beta3_t`` is ``betas[2]``, or with ``t_alpha_beta3=T`` the paper's warm-up from
    ``betas[0]`` to ``betas[2]`` over ``T`` steps (:func:`ademamix_beta3`), per tensor from its
    step count.
    """
    beta3 = ademamix_beta3(betas, b.steps, t_alpha_beta3)
    weight = scalars(1 - beta3) if t_alpha_beta3 is not None else 1 - beta3
    lerp_(b.state["slow_grad_avg"], b.grads, weight)


def mars_mixed(b, optimize_1d):
    """Which tensors MARS corrects: ``ndim >= 2``, or all of them with ``optimize_1d`` (a
    ``[count]`` bool tensor where ``b.ndims`` is: the CPU, or a flat bucket's device)."""
    ndims = b.ndims
    if optimize_1d:
        return torch.ones_like(ndims, dtype=torch.bool)
    return ndims >= 2


def _pick(mixed, when_mixed, otherwise):
    """Per tensor, ``when_mixed`` or ``otherwise`` (numbers or 0-d tensors), in float64."""
    as64 = lambda v: torch.as_tensor(v, dtype=torch.float64, device=mixed.device)
    return torch.where(mixed, as64(when_mixed), as64(otherwise))


@stat(state={"grad_avg": zeros, "sqr_avg": zeros, "last_grad": zeros},
      storage={"grad_avg": "signed", "sqr_avg": "positive", "last_grad": "signed"},
      reads=("step",), provides=("update",),
      rules=dict(betas=betas_rule, betas_1d=betas_rule, gamma=nonnegative, eps=nonnegative,
                 mars_type=one_of("adamw", meaning="'adamw' (the only MARS type implemented)")),
      betas=(0.95, 0.99), gamma=0.025, optimize_1d=False, betas_1d=(0.9, 0.95), eps=1e-8,
      mars_type="adamw")
def mars_direction(b, betas, gamma, optimize_1d, betas_1d, eps, mars_type):
    """MARS-AdamW's direction (Yuan et al. 2024, arXiv:2411.10438, Alg. 2 with AdamW), per
    tensor; "mixed" tensors are those with ``ndim >= 2`` (every tensor with ``optimize_1d``):

    * mixed: the corrected gradient ``c = g + gamma * beta1 / (1 - beta1) * (g - last_grad)``,
      divided by ``max(||c||, 1)`` (its per-tensor norm clipped to 1); ``betas``;
    * the others: ``c = g``, not clipped, and ``betas_1d`` (plain AdamW);

    then ``grad_avg = beta1 * grad_avg + (1 - beta1) * c``,
    ``sqr_avg = beta2 * sqr_avg + (1 - beta2) * c**2``,
    ``d = grad_avg / ((sqrt(sqr_avg) + eps) / sqrt(1 - beta2**t) * (1 - beta1**t))`` (eps on
    the uncorrected root, as pytorch_optimizer) and ``last_grad = g``, a copy; ``last_grad``
    starts at 0.

    The choice is per tensor inside one bucket: every per-tensor number (the correction's
    weight, the betas, the bias corrections, the clip) is a ``[count]`` vector chosen with
    ``torch.where`` from ``b.ndims``, reaching the elements as a scalar list or through
    ``b.expand`` (:func:`per_tensor`); the norm goes through ``b.norms``, so flat mode and
    sharded params stay exact. Compiled, ``c`` is computed again in the update's pass rather
    than stored between the norm's pass and it.
    """
    mixed = mars_mixed(b, optimize_1d)
    beta1 = _pick(mixed, betas[0], betas_1d[0])
    beta2 = _pick(mixed, betas[1], betas_1d[1])
    # c = g + k (g - last) = lerp(g, last, -k): one pass, and for k < 0.5 the reference's
    # rounding, g + (-k) (last - g)
    weight = per_tensor(b, _pick(mixed, -gamma * betas[0] / (1 - betas[0]), 0.0))
    grads, last = b.grads, b.state["last_grad"]
    correct = lambda: lerp(grads, last, weight)

    corrected = correct()
    (norms,) = b.norms(corrected)
    if torch.compiler.is_compiling():
        # made again from g and last_grad in the pass that uses it: not stored between passes
        corrected = correct()
    clip = torch.where(mixed.to(norms.device), norms.clamp(min=1.0), 1.0)
    torch._foreach_div_(corrected, per_tensor(b, clip))
    avg, sqr = b.state["grad_avg"], b.state["sqr_avg"]
    lerp_(avg, corrected, per_tensor(b, 1 - beta1))
    # c**2 in place (c's last use), then sqr = beta2 * sqr + (1 - beta2) * c**2
    torch._foreach_mul_(corrected, corrected)
    lerp_(sqr, corrected, per_tensor(b, 1 - beta2))
    torch._foreach_copy_(last, grads)
    steps = b.steps.to(mixed.device)
    corrected1, corrected2 = 1 - beta1**steps, 1 - beta2**steps
    if torch.compiler.is_compiling():
        denom = torch._foreach_sqrt(sqr)
    else:
        # eager: the root, then the update, into c's buffer (dead after the second moment):
        # one param-sized temporary per step, not three (a fresh one page-faults as it is
        # first written, when malloc has just given the pages back). The out= forms are the
        # kernels the foreach ops run per tensor on the CPU: the same bits.
        # (c in another dtype than the state, under a precision policy: a fresh root)
        denom = [torch.sqrt(s, out=c) if c.dtype == s.dtype else torch.sqrt(s)
                 for s, c in zip(sqr, corrected, strict=True)]
    torch._foreach_add_(denom, eps)
    torch._foreach_mul_(denom, per_tensor(b, corrected1 / corrected2.sqrt()))
    if torch.compiler.is_compiling():
        b.update = torch._foreach_div(avg, denom)
    else:
        b.update = [torch.div(m, d, out=d) if m.dtype == d.dtype else torch.div(m, d)
                    for m, d in zip(avg, denom, strict=True)]
