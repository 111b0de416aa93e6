"""Stats that track moments of the gradient."""

from __future__ import annotations

import torch

from ..core.parts import full, stat, step_counter, zeros


@stat(state={"step": step_counter})
def step_stat(b):
    """Count the steps each param has taken (``step``, a tensor, as in torch.optim)."""
    b.increment_steps()


@stat(state={"grad_avg": zeros}, betas=(0.9, 0.999))
def average_grad(b, betas):
    """First moment: ``grad_avg = beta1 * grad_avg + (1 - beta1) * grad`` (Adam's ``m``)."""
    torch._foreach_lerp_(b.state["grad_avg"], b.grads, 1 - betas[0])


@stat(state={"sqr_avg": zeros}, betas=(0.9, 0.999))
def average_sqr_grad(b, betas):
    """Second moment: ``sqr_avg = beta2 * sqr_avg + (1 - beta2) * grad**2`` (Adam's ``v``)."""
    _ema_of_squares(b, betas[1])


@stat(state={"sqr_avg": zeros}, alpha=0.99)
def average_sqr_grad_alpha(b, alpha):
    """RMSprop's second moment: ``sqr_avg = alpha * sqr_avg + (1 - alpha) * grad**2``."""
    _ema_of_squares(b, alpha)


def _ema_of_squares(b, decay):
    torch._foreach_mul_(b.state["sqr_avg"], decay)
    torch._foreach_addcmul_(b.state["sqr_avg"], b.grads, b.grads, value=1 - decay)


@stat(state={"grad_avg": zeros}, alpha=0.99, centered=False)
def centered_grad_avg(b, alpha, centered):
    """RMSprop's centred variant: ``grad_avg = alpha * grad_avg + (1 - alpha) * grad``."""
    torch._foreach_lerp_(b.state["grad_avg"], b.grads, 1 - alpha)


@stat(state={"max_sqr_avg": zeros}, amsgrad=False)
def max_sqr_avg(b, amsgrad):
    """AMSGrad: ``max_sqr_avg = max(max_sqr_avg, sqr_avg)``; Adam's step then divides by it."""
    running_max(b, "sqr_avg", "max_sqr_avg")


def running_max(b, source: str, target: str) -> None:
    """``state[target] = max(state[target], state[source])``, AMSGrad's memory of the largest
    second moment (shared by the element-wise and the layer-wise form)."""
    torch._foreach_maximum_(b.state[target], b.state[source])


@stat(state={"sqr_sum": full("initial_accumulator_value")}, initial_accumulator_value=0.0)
def sum_sqr_grad(b, initial_accumulator_value):
    """Adagrad's accumulator: ``sqr_sum += grad**2``."""
    torch._foreach_addcmul_(b.state["sqr_sum"], b.grads, b.grads, value=1)
