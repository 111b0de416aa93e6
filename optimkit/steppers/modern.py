"""Steppers of the 2023-25 element-wise optimizers (NAdam, LaProp)."""

from __future__ import annotations

import torch

from ..core.parts import stepper
from ..core.policy import Layout
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative
from ..core.tensorlists import addcdiv_, is_zero, scalars


def mu_product_one(p, group) -> torch.Tensor:
    # torch.optim.NAdam's format: a float32 0-d tensor on the CPU, read on the host
    return torch.tensor(1.0, dtype=torch.float32)


# one number per param, declared (see optimkit.core.parts.layout_of): flat mode stacks it with
# the step counters, and a load checks it is 0-d
mu_product_one.layout = Layout.SCALAR  # type: ignore[attr-defined]


@stepper(state={"mu_product": mu_product_one}, storage={"mu_product": "counter"},
         reads=("first_moment", "second_moment", "step"),
         rules=dict(lr=nonnegative, betas=betas_rule, eps=nonnegative,
                    momentum_decay=nonnegative),
         lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3)
def nadam_step(b, lr, betas, eps, momentum_decay):
    """NAdam (Dozat 2016), as ``torch.optim.NAdam``: Nesterov momentum on Adam's moments with
    a momentum schedule ``mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))``:

    ``P_t = mu_1 * ... * mu_t`` (``mu_product``, float32 as torch keeps it);
    ``d = sqrt(v / (1 - beta2**t)) + eps``;
    ``p = p - lr * (1 - mu_t) / (1 - P_t) * g / d - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d``.
    """
    beta1, beta2 = betas
    steps = b.steps
    mu = beta1 * (1 - 0.5 * 0.96 ** (steps * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((steps + 1) * momentum_decay))
    products = b.stack(b.state["mu_product"])
    products = products * mu.to(products.dtype)  # rounded as torch's float32 `*=`
    torch._foreach_copy_(b.state["mu_product"], b.unstack(products))
    # one number per tensor of the lists (a flat bucket's params share their step)
    product = products[: steps.numel()].to(torch.float64)
    grad_size = -lr * (1 - mu) / (1 - product)
    moment_size = -lr * mu_next / (1 - product * mu_next)
    denom = torch._foreach_div(b.second_moment, scalars(1 - beta2**steps))
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    addcdiv_(b.params, b.grads, denom, scalars(grad_size))
    addcdiv_(b.params, b.first_moment, denom, scalars(moment_size))


@stepper(reads=("update", "lr_avg"), rules=dict(lr=nonnegative), lr=4e-4)
def lr_avg_step(b, lr):
    """LaProp's step: ``p = p - lr / lr_avg * update``, ``lr_avg`` being the average of the
    lr with the momentum's rate (``laprop_direction``), i.e. ``1 - beta1**t`` under a constant
    lr. Where ``lr_avg`` is 0 (lr 0 so far) the step is 0."""
    lr_avgs = b.stack(b.state["lr_avg"])
    sizes = torch.where(lr_avgs != 0, -lr / lr_avgs, 0.0)
    torch._foreach_addcmul_(b.params, b.update, b.expand(sizes))


@stepper(rules=dict(weight_decay=nonnegative, lr=nonnegative), weight_decay=0.0, lr=4e-4)
def decay_after_step(b, weight_decay, lr):
    """Decoupled weight decay after the step, ``p = p * (1 - lr * weight_decay)`` (LaProp's
    order in pytorch_optimizer; AdamW's decay comes before)."""
    if not is_zero(weight_decay):
        torch._foreach_mul_(b.params, 1 - lr * weight_decay)
