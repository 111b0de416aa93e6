"""Every optimizer, as a recipe of stats and steppers.

A recipe lists its parts and its defaults; the docstring gives the update rule, the paper, the
reference it reproduces and every variant flag. Keyword names follow torch.optim.
"""

from __future__ import annotations

from .core.optimizer import Optimizer
from .stats import (
    average_grad,
    average_sqr_grad,
    average_sqr_grad_alpha,
    centered_grad_avg,
    max_sqr_avg,
    momentum,
    rms_normalize,
    step_stat,
    sum_sqr_grad,
    weight_decay,
)
from .steppers import adagrad_step, adam_step, radam_step, sgd_step


def _nesterov_needs_momentum(group):
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("nesterov requires momentum > 0 and dampening = 0")


def _positive(name):
    return lambda m: m > 0


class SGD(Optimizer):
    """Stochastic gradient descent, with optional heavy-ball or Nesterov momentum.

    ``g = grad + weight_decay * p``; ``buf = momentum * buf + (1 - dampening) * g`` (``buf`` starts
    as the first ``g``); ``d = g + momentum * buf`` (nesterov) or ``buf``; ``p = p - lr * d``.

    Reproduces ``torch.optim.SGD`` (same defaults: lr=1e-3, momentum=0, dampening=0,
    weight_decay=0, nesterov=False). Variant: ``decoupled_weight_decay=True`` is SGDW
    (Loshchilov & Hutter 2017): ``p = p * (1 - lr * weight_decay)`` instead of the L2 term.
    """

    parts = (weight_decay, momentum.only_if("momentum", _positive("momentum")), sgd_step)
    hypers = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)
    reference = "torch.optim.SGD"
    checks = (_nesterov_needs_momentum,)


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer 2011).

    ``sqr_sum += g**2``; ``p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sqr_sum) + eps)``.

    Reproduces ``torch.optim.Adagrad`` (lr=1e-2, lr_decay=0, weight_decay=0,
    initial_accumulator_value=0, eps=1e-10). State starts lazily, at a param's first step,
    where torch allocates it in the constructor. Variant: ``decoupled_weight_decay``.
    """

    parts = (weight_decay, step_stat, sum_sqr_grad, adagrad_step)
    hypers = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10)
    reference = "torch.optim.Adagrad"


class RMSprop(Optimizer):
    """RMSprop (Hinton 2012, lecture 6e), with the centred variant of Graves 2013.

    ``sqr_avg = alpha * sqr_avg + (1 - alpha) * g**2``; ``d = g / (sqrt(sqr_avg - grad_avg**2) + eps)``
    (``grad_avg`` only when ``centered``); with momentum ``buf = momentum * buf + d``, ``d = buf``;
    ``p = p - lr * d``. eps is added outside the square root, as in torch.

    Reproduces ``torch.optim.RMSprop`` (lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
    momentum=0, centered=False). Variants: ``decoupled_weight_decay``, and the momentum
    flags shared with SGD (``dampening``, ``nesterov``), off by default as in torch.
    """

    parts = (
        weight_decay,
        step_stat,
        average_sqr_grad_alpha,
        centered_grad_avg.only_if("centered"),
        rms_normalize,
        momentum.only_if("momentum", _positive("momentum")),
        sgd_step,
    )
    hypers = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)
    reference = "torch.optim.RMSprop"
    checks = (_nesterov_needs_momentum,)


_ADAM_PARTS = (
    weight_decay,
    step_stat,
    average_grad,
    average_sqr_grad,
    max_sqr_avg.only_if("amsgrad"),
    adam_step,
)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2014, arXiv:1412.6980).

    ``m = beta1 m + (1 - beta1) g``; ``v = beta2 v + (1 - beta2) g**2``;
    ``p = p - lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)``.

    Reproduces ``torch.optim.Adam`` (lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0).
    Variants as in torch: ``amsgrad`` (Reddi et al. 2018: divide by the running max of ``v``,
    taken before bias correction) and ``decoupled_weight_decay`` (AdamW). State: ``step``,
    ``grad_avg`` (torch's ``exp_avg``), ``sqr_avg`` (``exp_avg_sq``), ``max_sqr_avg``; a
    torch.optim.Adam checkpoint loads directly.
    """

    parts = _ADAM_PARTS
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
        decoupled_weight_decay=False,
    )
    reference = "torch.optim.Adam"


class AdamW(Optimizer):
    """AdamW (Loshchilov & Hutter 2017, arXiv:1711.05101): Adam with decoupled weight decay,
    ``p = p * (1 - lr * weight_decay)`` before the Adam step.

    Reproduces ``torch.optim.AdamW`` (lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
    amsgrad=False). Setting ``decoupled_weight_decay=False`` turns it back into L2 Adam.
    """

    parts = _ADAM_PARTS
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
        decoupled_weight_decay=True,
    )
    reference = "torch.optim.AdamW"


class AMSGrad(Optimizer):
    """AMSGrad (Reddi, Kale & Kumar 2018, arXiv:1904.09237): Adam dividing by the running
    maximum of the second moment, ``max_sqr_avg = max(max_sqr_avg, v)``, bias-corrected
    afterwards as torch does.

    Reproduces ``torch.optim.Adam(amsgrad=True)`` with torch's defaults.
    """

    parts = _ADAM_PARTS
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=True,
        decoupled_weight_decay=False,
    )
    reference = "torch.optim.Adam(amsgrad=True)"


class RAdam(Optimizer):
    """RAdam, rectified Adam (Liu et al. 2019, arXiv:1908.03265).

    Adam's moments; the adaptive step is scaled by the rectification ``r_t`` once the
    approximated SMA length ``rho_t`` exceeds ``n_sma_threshold``; before that the step is
    momentum SGD with a bias-corrected ``m``.

    Reproduces ``torch.optim.RAdam`` (lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    decoupled_weight_decay=False, rectifies when rho_t > 5). Variants: ``n_sma_threshold``
    (the paper's Alg. 2 uses 4; torch, the authors' code and Ranger use 5) and
    ``degenerated_to_sgd=False`` (skip the update instead of the SGD step, as the authors'
    code allows).
    """

    parts = (weight_decay, step_stat, average_grad, average_sqr_grad, radam_step)
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
        n_sma_threshold=5.0, degenerated_to_sgd=True,
    )
    reference = "torch.optim.RAdam"
