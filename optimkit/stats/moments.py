"""Stats that track moments of the gradient."""

from __future__ import annotations

import torch

from ..core.parts import full, stat, step_counter, zeros
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative

_BETAS = dict(betas=betas_rule)


@stat(state={"step": step_counter})
def step_stat(b):
    """Count the steps each param has taken (``step``, a tensor, as in torch.optim)."""
    b.increment_steps()


@stat(state={"grad_avg": zeros}, storage={"grad_avg": "signed"},
      provides=("first_moment",), rules=_BETAS, betas=(0.9, 0.999))
def average_grad(b, betas):
    """First moment: ``grad_avg = beta1 * grad_avg + (1 - beta1) * grad`` (Adam's ``m``)."""
    torch._foreach_lerp_(b.state["grad_avg"], b.grads, 1 - betas[0])
    b.first_moment = b.state["grad_avg"]


@stat(state={"sqr_avg": zeros}, storage={"sqr_avg": "positive"},
      provides=("second_moment",), rules=_BETAS, betas=(0.9, 0.999))
def average_sqr_grad(b, betas):
    """Second moment: ``sqr_avg = beta2 * sqr_avg + (1 - beta2) * grad**2`` (Adam's ``v``)."""
    _ema_of_squares(b, betas[1])


@stat(state={"sqr_avg": zeros}, storage={"sqr_avg": "positive"},
      provides=("second_moment",), rules=dict(alpha=nonnegative),
      alpha=0.99)
def average_sqr_grad_alpha(b, alpha):
    """RMSprop's second moment: ``sqr_avg = alpha * sqr_avg + (1 - alpha) * grad**2``."""
    _ema_of_squares(b, alpha)


def _ema_of_squares(b, decay):
    torch._foreach_mul_(b.state["sqr_avg"], decay)
    torch._foreach_addcmul_(b.state["sqr_avg"], b.grads, b.grads, value=1 - decay)
    b.second_moment = b.state["sqr_avg"]


@stat(state={"grad_avg": zeros}, storage={"grad_avg": "signed"},
      reads=("second_moment",), provides=("second_moment",),
      rules=dict(alpha=nonnegative), alpha=0.99)
def centered_grad_avg(b, alpha):
    """RMSprop's centred variant (Graves 2013): ``grad_avg = alpha * grad_avg + (1 - alpha) *
    grad``; the second moment becomes the variance estimate ``second_moment - grad_avg**2``."""
    avgs = b.state["grad_avg"]
    torch._foreach_lerp_(avgs, b.grads, 1 - alpha)
    b.second_moment = torch._foreach_addcmul(b.second_moment, avgs, avgs, value=-1)


@stat(state={"max_sqr_avg": zeros}, storage={"max_sqr_avg": "positive"},
      reads=("second_moment",), provides=("second_moment",))
def max_sqr_avg(b):
    """AMSGrad (Reddi et al. 2018): ``max_sqr_avg = max(max_sqr_avg, second_moment)``, which
    becomes the second moment the later parts divide by."""
    b.second_moment = running_max(b, "max_sqr_avg")


def running_max(b, name: str) -> list:
    """``state[name] = max(state[name], second_moment)``, AMSGrad's memory of the largest
    second moment (shared by the element-wise and the layer-wise form); returns ``state[name]``."""
    torch._foreach_maximum_(b.state[name], b.second_moment)
    return b.state[name]


@stat(state={"sqr_sum": full("initial_accumulator_value")}, storage={"sqr_sum": "positive"},
      provides=("second_moment",),
      rules=dict(initial_accumulator_value=nonnegative), initial_accumulator_value=0.0)
def sum_sqr_grad(b, initial_accumulator_value):
    """Adagrad's accumulator: ``sqr_sum += grad**2``, the second moment Adagrad divides by."""
    torch._foreach_addcmul_(b.state["sqr_sum"], b.grads, b.grads, value=1)
    b.second_moment = b.state["sqr_sum"]
