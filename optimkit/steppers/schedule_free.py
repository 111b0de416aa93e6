"""Schedule-Free steppers and their train/eval transitions (Defazio, Yang, Mehta, Mishchenko,
Khaled & Cutkosky 2024, "The Road Less Scheduled", arXiv:2405.15682, NeurIPS 2024).

Three sequences per param: ``z`` takes the base optimizer's steps, ``x`` is a weighted
average of the ``z`` iterates (the point to evaluate), and the gradient is taken at their
interpolation ``y = beta * x + (1 - beta) * z``. With ``c`` the weight of this step's ``z`` in
the average and ``u`` the base direction at ``y``:

``z' = z - lr * u``;  ``x' = (1 - c) * x + c * z'``;  ``y' = beta * x' + (1 - beta) * z'``.

As in ``schedulefree.AdamWScheduleFree`` (the authors' fast form), the params hold ``y`` in
train mode and only ``z`` is state; ``x = (y - (1 - beta) * z) / beta`` is recovered by the
eval transition. Eliminating ``x``: ``y' = lerp(y, z, c) + lr * (beta * (1 - c) - 1) * u``.

The weights: with ``k`` the param's steps before this one, ``sched = min((k + 1) /
warmup_steps, 1)`` (1 without warm-up), ``lr_k = lr * sched``, ``lr_max = max(lr_max, lr_k)``
(``lr_max`` state), ``w = (k + 1)**r * lr_max**weight_lr_power``, ``weight_sum += w``
(``weight_sum`` state), ``c = w / weight_sum`` (0 while ``weight_sum`` is 0). ``lr_max`` and
``weight_sum`` are float64 CPU numbers per param, read on the host like the step counter.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.parts import copy_of_param, stepper, transition
from ..core.policy import Layout
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative, number
from ..core.tensorlists import addcdiv_, is_zero, lerp_, per_tensor


def _number(value: float):
    def init(p: torch.Tensor, group) -> torch.Tensor:
        # a float64 CPU number, read on the host (as the step counter); float64 because the
        # sum of weights over many steps must keep its digits (the reference's Python float)
        return torch.tensor(value, dtype=torch.float64)

    init.layout = Layout.SCALAR  # type: ignore[attr-defined]
    init.dtype = torch.float64  # type: ignore[attr-defined]  (kept so by load_state_dict)
    return init


lr_max_start = _number(-1.0)
lr_max_start.__name__ = "lr_max_start"
weight_sum_start = _number(0.0)
weight_sum_start.__name__ = "weight_sum_start"

_STATE = {"z": copy_of_param, "lr_max": lr_max_start, "weight_sum": weight_sum_start}
_STORAGE = {"z": "exact", "lr_max": "counter", "weight_sum": "counter"}


def _open_unit(name: str, value: Any) -> None:
    if not 0.0 < number(value) < 1.0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be in (0, 1)")


def _betas(name: str, value: Any) -> None:
    """Each beta in [0, 1), and ``betas[0]`` > 0: ``x`` is recovered from ``y`` and ``z`` by
    dividing by it (the reference, which keeps ``x`` as state, allows 0)."""
    betas_rule(name, value)
    _open_unit(f"{name}[0]", value[0])


_AVERAGING_RULES = dict(lr=nonnegative, warmup_steps=nonnegative, r=nonnegative,
                        weight_lr_power=nonnegative)


def _weights(b, lr, warmup_steps, r, weight_lr_power):
    """This step's step counts, ``lr_k`` and ``c`` per param (``[count]`` float64 CPU tensors);
    updates ``lr_max`` and ``weight_sum``."""
    # k + 1, counted by step_stat before this part (a flat bucket's params share one count)
    counts = b.steps.expand(b.count)
    sched = (counts / warmup_steps).clamp(max=1.0) if warmup_steps else torch.ones_like(counts)
    lr_k = lr * sched
    before = b.stack(b.state["lr_max"])
    lr_max = torch.maximum(before, lr_k)
    weight = counts**r * lr_max**weight_lr_power
    eager = not torch.compiler.is_compiling()
    # Eagerly, the host skips what does not change (lr_max after the warm-up) and adds one
    # number to every weight_sum in one op: on many small tensors these per-tensor writes
    # cost as much as the update itself. (CPU values: no device sync.)
    if not eager or not torch.equal(lr_max, before):
        torch._foreach_copy_(b.state["lr_max"], b.unstack(lr_max))
    uniform = _each(b, weight) if eager else None
    if isinstance(uniform, float) and len(b.state["weight_sum"]) == weight.numel():
        torch._foreach_add_(b.state["weight_sum"], uniform)
        weight_sum = b.stack(b.state["weight_sum"])
    else:
        weight_sum = b.stack(b.state["weight_sum"]) + weight
        torch._foreach_copy_(b.state["weight_sum"], b.unstack(weight_sum))
    c = torch.where(weight_sum > 0, weight / weight_sum, 0.0)
    return counts, lr_k, c


def _each(b, values):
    """Per-param numbers (``[count]``, float64 CPU) as foreach operands: one Python number when
    they are all equal (every param at the same step: the common case, and the foreach ops'
    fastest overload), else :func:`per_tensor`'s list or column. Read on the host from CPU
    values (no device sync); inside a compiled step always the per-tensor form."""
    if not torch.compiler.is_compiling() and values.numel() and bool((values == values[0]).all()):
        return float(values[0])
    return per_tensor(b, values)


def _average(b, update, lr_k, c, beta) -> None:
    """``y = lerp(y, z, c) + lr_k * (beta * (1 - c) - 1) * u`` and ``z = z - lr_k * u`` for the
    direction ``u`` = ``update``."""
    y, z = b.params, b.state["z"]
    size, coef = _each(b, lr_k), _each(b, lr_k * (beta * (1 - c) - 1))
    lerp_(y, z, _each(b, c))  # with z before this step
    if isinstance(size, float) and isinstance(coef, float):
        # one number each: the alpha forms, no temporary
        torch._foreach_add_(y, update, alpha=coef)
        torch._foreach_add_(z, update, alpha=-size)
        return
    step = torch._foreach_mul(update, size)  # one temporary, scaled twice
    torch._foreach_sub_(z, step)
    torch._foreach_mul_(step, _each(b, 1 - beta * (1 - c)))
    torch._foreach_sub_(y, step)


@stepper(state=_STATE, storage=_STORAGE, reads=("second_moment", "step"),
         rules=dict(_AVERAGING_RULES, betas=_betas, eps=nonnegative,
                    weight_decay=nonnegative),
         lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0,
         weight_lr_power=2.0)
def schedule_free_adam_step(b, lr, betas, eps, weight_decay, warmup_steps, r, weight_lr_power):
    """Schedule-Free AdamW's step (see the module doc) with the Adam direction at ``y``,
    ``u = g / (sqrt(v / (1 - beta2**t)) + eps) + weight_decay * y`` (``v`` the second moment,
    the decay taken at ``y`` as the reference's default), and ``beta = betas[0]``."""
    beta1, beta2 = betas
    counts, lr_k, c = _weights(b, lr, warmup_steps, r, weight_lr_power)
    # d = s * (sqrt(v / (1 - beta2**t)) + eps) with s = sqrt(1 - beta2**t): the division by s
    # rides on the per-tensor coefficients (one pass fewer)
    root = (1 - beta2**counts).sqrt()
    denom = torch._foreach_sqrt(b.second_moment)
    torch._foreach_add_(denom, _each(b, eps * root))
    if is_zero(weight_decay):
        # both updates straight from g / d: no param-sized direction is made
        lerp_(b.params, b.state["z"], _each(b, c))
        addcdiv_(b.params, b.grads, denom, _each(b, lr_k * (beta1 * (1 - c) - 1) * root))
        addcdiv_(b.state["z"], b.grads, denom, _each(b, -lr_k * root))
        return
    torch._foreach_div_(denom, _each(b, root))
    update = torch._foreach_div(b.grads, denom)
    torch._foreach_add_(update, b.params, alpha=weight_decay)
    _average(b, update, lr_k, c, beta1)


@stepper(state=_STATE, storage=_STORAGE, reads=("update", "step"),
         rules=dict(_AVERAGING_RULES, momentum=_open_unit),
         lr=1.0, momentum=0.9, warmup_steps=0, r=0.0, weight_lr_power=2.0)
def schedule_free_sgd_step(b, lr, momentum, warmup_steps, r, weight_lr_power):
    """Schedule-Free SGD's step (see the module doc): ``u`` is the update so far (the gradient
    at ``y``, with the L2 term of ``weight_decay`` added by an earlier part) and
    ``beta = momentum``."""
    _, lr_k, c = _weights(b, lr, warmup_steps, r, weight_lr_power)
    _average(b, b.update, lr_k, c, momentum)


# The transitions: y = beta * x + (1 - beta) * z, so x = lerp(y, z, 1 - 1 / beta) and
# y = lerp(x, z, 1 - beta).

@transition(reads=("z",), betas=(0.9, 0.999))
def schedule_free_adam_eval(b, betas):
    """Schedule-Free AdamW's ``eval()``: the params become ``x = lerp(y, z, 1 - 1 / beta1)``."""
    lerp_(b.params, b.state["z"], 1 - 1 / betas[0])


@transition(reads=("z",), betas=(0.9, 0.999))
def schedule_free_adam_train(b, betas):
    """Schedule-Free AdamW's ``train()``: the params become ``y = lerp(x, z, 1 - beta1)``."""
    lerp_(b.params, b.state["z"], 1 - betas[0])


@transition(reads=("z",), momentum=0.9)
def schedule_free_sgd_eval(b, momentum):
    """Schedule-Free SGD's ``eval()``: the params become ``x = lerp(y, z, 1 - 1 / momentum)``."""
    lerp_(b.params, b.state["z"], 1 - 1 / momentum)


@transition(reads=("z",), momentum=0.9)
def schedule_free_sgd_train(b, momentum):
    """Schedule-Free SGD's ``train()``: the params become ``y = lerp(x, z, 1 - momentum)``."""
    lerp_(b.params, b.state["z"], 1 - momentum)
