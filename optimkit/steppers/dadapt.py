"""D-Adaptation and Prodigy: the estimate of ``d`` (the barriers) and the steps (phase 2).

See :mod:`optimkit.stats.dadapt`. The barriers follow the reference packages'
(``prodigyopt``, ``dadaptation``) arithmetic on Python floats: the sums are read once per step
(the references read two numbers per param), and ``d``, ``d_max``, ``d_numerator``, ``k``, ...
live in every param group, as the references keep them, so ``state_dict()`` holds them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.parts import barrier, stepper
from ..core.rules import nonnegative
from ..core.tensorlists import addcdiv_, is_zero

_log = logging.getLogger("optimkit")


def _per_tensor(value, n: int):
    """A step factor as ``tensorlists.addcdiv_`` takes it: a number, or (compiled: a 0-d
    tensor) one per tensor."""
    return [value] * n if isinstance(value, torch.Tensor) else value


def _step_lr(groups: Sequence[Mapping[str, Any]]) -> float:
    """The largest lr of the groups; every other group must have it or 0 (the references'
    rule: ``d`` is one number for the whole optimizer, so is its step size)."""
    lr = max(float(group["lr"]) for group in groups)
    for index, group in enumerate(groups):
        if float(group["lr"]) not in (lr, 0.0):
            raise ValueError(
                f"lr: param group {index} has lr={group['lr']!r} and another {lr!r}; "
                "D-Adaptation and Prodigy take one lr for all groups (others at 0); scale a "
                "group with layer_scale (DAdaptAdam) instead"
            )
    return lr


def slice_p_rule(name: str, value: Any) -> None:
    """``slice_p``: only 1. The reference's ``slice_p > 1`` estimates ``d`` from every
    ``slice_p``-th element (an approximation that saves the memory of ``s`` and ``p0``);
    optimkit keeps them whole, so the estimate is always Prodigy's exact one."""
    if isinstance(value, bool) or value != 1:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be 1 (optimkit keeps s and p0 "
                         "for every element: slice_p > 1 is not supported)")


def dadapt_start(groups: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``dlr = d * lr * bias correction`` before the step (both references' ``dlr``), from the
    first group's ``d``, ``k`` and betas and the largest lr."""
    group = groups[0]
    lr = _step_lr(groups)
    beta1, beta2 = group["betas"]
    k = group["k"]
    correction = 1.0
    if group["use_bias_correction"]:
        correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
    return {"dlr": group["d"] * lr * correction}


@barrier(
    sums=("d_numerator_delta", "d_denom"),
    values={"d": lambda g: g["d0"], "d_max": lambda g: g["d0"], "d_numerator": lambda g: 0.0,
            "k": lambda g: 0},
    start=dadapt_start, derived=("dlr",),
    rules=dict(d_coef=nonnegative, lr=nonnegative, growth_rate=nonnegative, slice_p=slice_p_rule),
    lr=1.0, betas=(0.9, 0.999), beta3=None, d0=1e-6, d_coef=1.0, growth_rate=math.inf,
    use_bias_correction=False, fsdp_in_use=False, slice_p=1,
)
def prodigy_estimate(totals: Mapping[str, float], groups: Sequence[dict]):
    """Prodigy's ``d`` (``prodigyopt.Prodigy``): ``d_numerator = beta3 * d_numerator +
    (d / d0) * dlr * sum(g * (p0 - p))``, ``d_hat = d_coef * d_numerator / sum(|s|)``;
    ``d = max(d, d_hat)`` while ``d`` is still ``d0``, ``d_max = max(d_max, d_hat)``,
    ``d = min(d_max, d * growth_rate)``. With every gradient zero (``sum(|s|) = 0``) the step
    ends here, as the reference's does."""
    group = groups[0]
    beta3 = group["beta3"]
    if beta3 is None:
        beta3 = math.sqrt(group["betas"][1])
    d, d0, d_max = group["d"], group["d0"], group["d_max"]
    lr = _step_lr(groups)
    dlr = dadapt_start(groups)["dlr"]
    numerator = group["d_numerator"] * beta3 + (d / d0) * dlr * totals["d_numerator_delta"]
    denom = totals["d_denom"]
    if denom == 0 and not group["fsdp_in_use"]:
        return False
    d_hat = d
    if lr > 0.0:
        d_hat = group["d_coef"] * numerator / denom
        if d == d0:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * group["growth_rate"])
    for g in groups:
        g.update(d_numerator=numerator, d_denom=denom, d=d, d_max=d_max, d_hat=d_hat,
                 k=g["k"] + 1)
    return None


@stepper(reads=("grad_avg", "sqr_avg"), group_values=("d", "dlr"), rules=dict(eps=nonnegative),
         eps=1e-8, weight_decay=0.0, decouple=True)
def prodigy_step(b, eps, weight_decay, decouple, d, dlr):
    """``p = p - dlr * weight_decay * p`` (``decouple``), then
    ``p = p - dlr * m / (sqrt(v) + d * eps)``, with the new ``d`` and the step's ``dlr``."""
    denom = torch._foreach_sqrt(b.state["sqr_avg"])
    torch._foreach_add_(denom, d * eps)
    if decouple and not is_zero(weight_decay):
        torch._foreach_add_(b.params, b.params, alpha=-weight_decay * dlr)
    addcdiv_(b.params, b.state["grad_avg"], denom, _per_tensor(-dlr, len(b.params)))


@stepper(reads=("sqr_avg",), group_values=("d", "dlr"), rules=dict(eps=nonnegative), eps=1e-8,
         weight_decay=0.0, decouple=True)
def prodigy_sign_free_step(b, eps, weight_decay, decouple, d, dlr):
    """Prodigy with ``beta1 = 0`` (no first moment): ``p = p - dlr * d * g / (sqrt(v) +
    d * eps)``, ``g`` with the L2 decay (``decouple=False``), after the decoupled decay."""
    grads = b.grads
    if not is_zero(weight_decay) and not decouple:
        grads = torch._foreach_add(grads, b.params, alpha=weight_decay)
    denom = torch._foreach_sqrt(b.state["sqr_avg"])
    torch._foreach_add_(denom, d * eps)
    if decouple and not is_zero(weight_decay):
        torch._foreach_add_(b.params, b.params, alpha=-weight_decay * dlr)
    addcdiv_(b.params, grads, denom, _per_tensor(-dlr * d, len(b.params)))


@barrier(
    sums=("numerator", "sk_l1"),
    values={"d": lambda g: g["d0"], "k": lambda g: 0, "layer_scale": lambda g: 1.0,
            "numerator_weighted": lambda g: 0.0},
    start=dadapt_start, derived=("dlr",),
    rules=dict(lr=nonnegative, growth_rate=nonnegative, log_every=nonnegative),
    lr=1.0, betas=(0.9, 0.999), d0=1e-6, growth_rate=math.inf, use_bias_correction=False,
    log_every=0, fsdp_in_use=False,
)
def dadapt_adam_estimate(totals: Mapping[str, float], groups: Sequence[dict]):
    """D-Adaptation Adam's ``d`` (``dadaptation.DAdaptAdam``): ``numerator_weighted =
    sqrt(beta2) * numerator_weighted + (1 - sqrt(beta2)) * dlr * sum(r * g * s / (sqrt(v) +
    eps))``, ``d_hat = numerator_weighted / ((1 - sqrt(beta2)) * sum(r * |s|))``,
    ``d = max(d, min(d_hat, d * growth_rate))``. With every gradient zero the step ends here."""
    group = groups[0]
    sqrt_beta2 = group["betas"][1] ** 0.5
    lr = _step_lr(groups)
    d = group["d"]
    dlr = dadapt_start(groups)["dlr"]
    weighted = (sqrt_beta2 * group["numerator_weighted"]
                + (1 - sqrt_beta2) * dlr * totals["numerator"])
    sk_l1 = totals["sk_l1"]
    if sk_l1 == 0:
        return False
    d_hat = d
    if lr > 0.0:
        d_hat = weighted / ((1 - sqrt_beta2) * sk_l1)
        d = max(d, min(d_hat, d * group["growth_rate"]))
    if group["log_every"] > 0 and group["k"] % group["log_every"] == 0:
        _log.info("lr: %s dlr: %s d_hat: %s, d: %s. sk_l1=%.1e numerator_weighted=%.1e",
                  lr, dlr, d_hat, d, sk_l1, weighted)
    for g in groups:
        g.update(numerator_weighted=weighted, d=d, k=g["k"] + 1)
    return None


@stepper(reads=("grad_avg", "sqr_avg"), group_values=("dlr",), eps=1e-8, weight_decay=0.0,
         decouple=False)
def dadapt_adam_step(b, eps, weight_decay, decouple, dlr):
    """``p = p - dlr * weight_decay * p`` (``decouple``), then ``p = p - m / (sqrt(v) + eps)``
    (``m`` carries ``dlr`` already)."""
    denom = torch._foreach_sqrt(b.state["sqr_avg"])
    torch._foreach_add_(denom, eps)
    if decouple and not is_zero(weight_decay):
        torch._foreach_add_(b.params, b.params, alpha=-weight_decay * dlr)
    torch._foreach_addcdiv_(b.params, b.state["grad_avg"], denom, -1.0)
