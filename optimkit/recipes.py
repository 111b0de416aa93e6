"""Every optimizer, as a recipe of stats and steppers.

A recipe lists its parts and its defaults; the docstring gives the update rule, the paper, the
reference it reproduces and every variant flag. Keyword names follow torch.optim.
"""

from __future__ import annotations

import torch

from . import precision  # noqa: F401  (provides the policies of state_dtype, state_bits...)
from .core.optimizer import Optimizer
from .core.parts import MATRIX
from .stats import (
    accumulate_grad,
    adam_direction,
    adam_step_sizes,
    adopt_direction,
    average_grad,
    average_sqr_grad,
    average_sqr_grad_alpha,
    blended_step_sizes,
    bounded_step_sizes,
    cautious_moment,
    cautious_update,
    centered_grad_avg,
    centralize_gradient,
    debias_direction,
    grad_friction,
    laprop_direction,
    layer_normalize,
    layer_norms,
    layer_sqr_avg,
    lion_direction,
    max_layer_sqr_avg,
    max_sqr_avg,
    momentum,
    new_weights_norm,
    radam_direction,
    rms_normalize,
    step_stat,
    sum_sqr_grad,
    trust_ratio,
    update_weight_decay,
    weight_decay,
)
from .stats.dadapt import dadapt_adam_stats, prodigy_grad_avg, prodigy_stats
from .stats.factored import adafactor_direction
from .stats.kron import (
    kron_balance,
    kron_decay,
    kron_direction,
    kron_factors,
    kron_fit,
    kron_fit_on_grads,
    kron_l2,
    kron_momentum,
)
from .stats.mixing import adan_moments, mars_direction, slow_grad_avg
from .stats.orthogonal import NS_COEFFICIENTS, muon_momentum, muon_step, orthogonalize
from .stats.preconditioned import soap_bases, soap_direction, soap_eigenbases
from .steppers import (
    adagrad_step,
    adam_step,
    decay_after_step,
    lookahead,
    lr_avg_step,
    nadam_step,
    per_element_step,
    qhadam_step,
    radam_step,
    sgd_step,
)
from .steppers.dadapt import (
    dadapt_adam_estimate,
    dadapt_adam_step,
    prodigy_estimate,
    prodigy_sign_free_step,
    prodigy_step,
)
from .steppers.factored import adafactor_step
from .steppers.mixing import adan_step, ademamix_step, mars_step, proximal_decay
from .steppers.preconditioned import soap_step
from .steppers.schedule_free import (
    schedule_free_adam_eval,
    schedule_free_adam_step,
    schedule_free_adam_train,
    schedule_free_sgd_eval,
    schedule_free_sgd_step,
    schedule_free_sgd_train,
)
from .steppers.slow_weights import from_wrapper_state_dict


def _positive(value):
    return value > 0


def _not(value):
    return not value


# Momentum switched on per group by momentum > 0 (SGD, RMSprop, LARS, LARC).
_MOMENTUM = momentum.only_if("momentum", _positive)


class SGD(Optimizer):
    """Stochastic gradient descent, with optional heavy-ball or Nesterov momentum.

    ``g = grad + weight_decay * p``; ``buf = momentum * buf + (1 - dampening) * g`` (``buf`` starts
    as the first ``g``); ``d = g + momentum * buf`` (nesterov) or ``buf``; ``p = p - lr * d``.

    Reproduces ``torch.optim.SGD`` (same defaults: lr=1e-3, momentum=0, dampening=0,
    weight_decay=0, nesterov=False). Variant: ``decoupled_weight_decay=True`` is SGDW
    (Loshchilov & Hutter 2017): ``p = p * (1 - lr * weight_decay)`` instead of the L2 term.
    """

    parts = (weight_decay, _MOMENTUM, sgd_step)
    hypers = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)
    reference = "torch.optim.SGD"
    torch_class = "SGD"


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
    torch_class = "Adagrad"


class RMSprop(Optimizer):
    """RMSprop (Hinton 2012, lecture 6e), with the centred variant of Graves 2013.

    ``sqr_avg = alpha * sqr_avg + (1 - alpha) * g**2``;
    ``d = g / (sqrt(sqr_avg - grad_avg**2) + eps)`` (``grad_avg`` only when ``centered``);
    with momentum ``buf = momentum * buf + d``, ``d = buf``; ``p = p - lr * d``. eps is added
    outside the square root, as in torch.

    Reproduces ``torch.optim.RMSprop`` (lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
    momentum=0, centered=False). Variants: ``decoupled_weight_decay``, and the momentum
    flags shared with SGD (``dampening``, ``nesterov``), off by default as in torch.
    """

    parts = (
        weight_decay,
        step_stat,
        average_sqr_grad_alpha,
        centered_grad_avg.only_if("centered", default=False),
        rms_normalize,
        _MOMENTUM,
        sgd_step,
    )
    hypers = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)
    reference = "torch.optim.RMSprop"
    torch_class = "RMSprop"


class MomentumSGD(Optimizer):
    """SGD with heavy-ball momentum (Polyak 1964), momentum=0.9 by default.

    ``optimkit.SGD`` with another default (torch's SGD has momentum=0); every keyword and
    variant of ``SGD`` applies. Reproduces ``torch.optim.SGD(momentum=0.9)``.
    """

    parts = SGD.parts
    hypers = {**SGD.hypers, "momentum": 0.9}
    reference = "torch.optim.SGD(momentum=0.9)"
    torch_class = "SGD"


# The cautious mask (Liang et al. 2024), off by default, on the update of a recipe whose
# stepper applies ``update`` and on the first moment of one that divides it by a root.
_CAUTIOUS = cautious_update.only_if("cautious", default=False)
_CAUTIOUS_MOMENT = cautious_moment.only_if("cautious", default=False)

_ADAM_PARTS = (
    weight_decay,
    step_stat,
    average_grad,
    average_sqr_grad,
    max_sqr_avg.only_if("amsgrad", default=False),
    _CAUTIOUS_MOMENT,
    adam_step,
)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2014, arXiv:1412.6980).

    ``m = beta1 m + (1 - beta1) g``; ``v = beta2 v + (1 - beta2) g**2``;
    ``p = p - lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)``.

    Reproduces ``torch.optim.Adam`` (lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0).
    Variants as in torch: ``amsgrad`` (Reddi et al. 2018: divide by the running max of ``v``,
    taken before bias correction), ``decoupled_weight_decay`` (AdamW), and ``cautious``
    (C-Adam, Liang et al. 2024, arXiv:2411.16085, off by default: ``m`` is zeroed where its
    sign disagrees with the gradient's and rescaled by ``n / (k + 1)`` per tensor for this
    step, see ``optimkit.stats.cautious_moment``; not in torch). State: ``step``,
    ``grad_avg`` (torch's ``exp_avg``), ``sqr_avg`` (``exp_avg_sq``), ``max_sqr_avg``; a
    torch.optim.Adam checkpoint loads directly.
    """

    parts = _ADAM_PARTS
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
        decoupled_weight_decay=False,
    )
    reference = "torch.optim.Adam"
    torch_class = "Adam"


class AdamW(Optimizer):
    """AdamW (Loshchilov & Hutter 2017, arXiv:1711.05101): Adam with decoupled weight decay,
    ``p = p * (1 - lr * weight_decay)`` before the Adam step.

    Reproduces ``torch.optim.AdamW`` (lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
    amsgrad=False). Setting ``decoupled_weight_decay=False`` turns it back into L2 Adam;
    ``cautious=True`` is C-AdamW (Liang et al. 2024, arXiv:2411.16085; see ``Adam``).
    """

    parts = _ADAM_PARTS
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
        decoupled_weight_decay=True,
    )
    reference = "torch.optim.AdamW"
    torch_class = "AdamW"


class AMSGrad(Optimizer):
    """AMSGrad (Reddi, Kale & Kumar 2018, arXiv:1904.09237): Adam dividing by the running
    maximum of the second moment, ``max_sqr_avg = max(max_sqr_avg, v)``, bias-corrected
    afterwards as torch does.

    Reproduces ``torch.optim.Adam(amsgrad=True)`` with torch's defaults. ``cautious`` as
    ``Adam``'s.
    """

    parts = _ADAM_PARTS
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=True,
        decoupled_weight_decay=False,
    )
    reference = "torch.optim.Adam(amsgrad=True)"
    torch_class = "Adam"


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
    torch_class = "RAdam"


class QHAdam(Optimizer):
    """QHAdam, quasi-hyperbolic Adam (Ma & Yarats 2018, arXiv:1810.06801).

    Adam's moments ``m, v`` (bias-corrected); the step averages them with the plain gradient:
    ``p = p - lr * (nu1 * m_hat + (1 - nu1) * g) / (sqrt(nu2 * v_hat + (1 - nu2) * g**2) + eps)``.
    ``nus=(1, 1)`` is Adam (with eps after the bias correction, as torch.optim.Adam).

    Reproduces ``torch_optimizer.QHAdam`` given the same keywords. Defaults: lr=1e-3,
    **nus=(0.7, 1.0), betas=(0.995, 0.999)** (the paper's recommendation; the reference's
    nus=(1, 1), betas=(0.9, 0.999) is plain Adam), eps=1e-8, weight_decay=0.
    Variant: ``decoupled_weight_decay=True`` (``p = p * (1 - lr * weight_decay)``; the reference
    spells it ``decouple_weight_decay``). Deviations: state is Adam's (``grad_avg``, ``sqr_avg``,
    ``step``), where the reference keeps the bias-corrected averages and the sums of the beta
    powers (``beta1_weight``), which give the same trajectory; ``p.grad`` is never modified (the
    reference adds the L2 term into it).
    """

    parts = (weight_decay, step_stat, average_grad, average_sqr_grad, qhadam_step)
    hypers = dict(
        lr=1e-3, betas=(0.995, 0.999), nus=(0.7, 1.0), eps=1e-8, weight_decay=0.0,
        decoupled_weight_decay=False,
    )
    reference = "torch_optimizer.QHAdam"


class NovoGrad(Optimizer):
    """NovoGrad (Ginsburg et al. 2019, arXiv:1905.11286): Adam-like with a layer-wise second
    moment, one number per tensor.

    ``v = ||g||**2`` on the first step (whenever ``v`` is 0), else
    ``v = beta2 * v + (1 - beta2) * ||g||**2``; ``d = g / (sqrt(v) + eps) + weight_decay * p``;
    ``m = beta1 * m + c * d`` with ``c = 1 - beta1`` (``grad_averaging``) or 1; ``p = p - lr * m``.

    Reproduces ``torch_optimizer.NovoGrad`` given the same keywords. Defaults: lr=1e-3,
    **betas=(0.95, 0.98)** (the paper's; the reference's beta2=0 averages nothing, ``v`` is then
    just the last ``||g||**2``), eps=1e-8, weight_decay=0, grad_averaging=False, amsgrad=False.
    Variants: ``grad_averaging``; ``amsgrad`` (divide by the running max of ``v``);
    ``decoupled_weight_decay`` (``p = p * (1 - lr * weight_decay)`` instead of the term in ``d``).

    First step, as the reference (torch_optimizer, over9000): ``m`` starts at 0, so
    ``m_1 = c * d_1``. The paper and NVIDIA's code start at ``m_1 = d_1``: the same without
    ``grad_averaging``, ``1 / (1 - beta1)`` times larger with it. Both start at
    ``v_1 = ||g_1||**2``. Per-tensor norms go through ``Bucket.norms`` (shard-aware
    later). Deviation: the reference keeps ``v`` in float32 whatever the param dtype, ours in the
    param's dtype; it also writes into ``p.grad``, ours never does.
    """

    parts = (
        step_stat,
        layer_sqr_avg,
        max_layer_sqr_avg.only_if("amsgrad", default=False),
        layer_normalize,
        update_weight_decay,
        accumulate_grad,
        sgd_step,
    )
    hypers = dict(
        lr=1e-3, betas=(0.95, 0.98), eps=1e-8, weight_decay=0.0, grad_averaging=False,
        amsgrad=False, decoupled_weight_decay=False,
    )
    reference = "torch_optimizer.NovoGrad"


class DiffGrad(Optimizer):
    """DiffGrad (Dubey et al. 2019, arXiv:1909.11015): Adam whose first moment is damped by a
    friction term where the gradient changes little.

    Adam's ``m, v``; ``xi = sigmoid(|g_prev - g|)``, in [0.5, 1);
    ``p = p - lr * sqrt(1 - beta2**t) / (1 - beta1**t) * xi * m / (sqrt(v) + eps)``
    (eps on the uncorrected root, the Adam paper's efficient form, as the reference).

    Reproduces ``torch_optimizer.DiffGrad`` (lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0). Like the reference, weight decay is L2, added to the gradient before the
    moments, and the friction and ``prev_grad`` use that L2-augmented gradient. ``prev_grad``
    starts at 0 and is a copy, never an alias of ``p.grad`` (the aliasing bug of the original
    code made the friction a constant 0.5). Variants: ``version=1`` (signed difference,
    ``sigmoid(g_prev - g)``, lessw2020's version 1); ``decoupled_weight_decay`` (decay the
    weights, the friction then sees the raw gradient). The friction damps the per-element step
    sizes (``xi`` times Adam's), which the stepper then multiplies by ``m``: the reference's
    ``xi * m`` in another order of the same products.
    """

    parts = (
        weight_decay, step_stat, average_grad, average_sqr_grad, adam_step_sizes, grad_friction,
        per_element_step,
    )
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
        version=0,
    )
    reference = "torch_optimizer.DiffGrad"


class AdaMod(Optimizer):
    """AdaMod (Ding, Ren, Luo & Sun 2019, arXiv:1910.12249): Adam whose per-element step sizes are
    bounded by their own exponential moving average.

    Adam's ``m, v``; ``eta = lr * sqrt(1 - beta2**t) / (1 - beta1**t) / (sqrt(v) + eps)``;
    ``s = beta3 * s + (1 - beta3) * eta``; ``p = p - min(eta, s) * m``.

    Reproduces ``torch_optimizer.AdaMod`` (lr=1e-3, betas=(0.9, 0.999), beta3=0.999, eps=1e-8,
    weight_decay=0, decoupled: ``p = p * (1 - lr * weight_decay)``). ``s`` (``step_size_avg``)
    starts at 0, so ``min(eta, s)`` makes the first steps tiny: a built-in warm-up of roughly
    ``1 / (1 - beta3)`` = 1000 steps, on top of any schedule. Variant:
    ``decoupled_weight_decay=False`` adds an L2 term to the gradient instead (other ports do).
    """

    parts = (
        weight_decay, step_stat, average_grad, average_sqr_grad, adam_step_sizes,
        bounded_step_sizes, per_element_step,
    )
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), beta3=0.999, eps=1e-8, weight_decay=0.0,
        decoupled_weight_decay=True,
    )
    reference = "torch_optimizer.AdaMod"


class DeepMemory(Optimizer):
    """DeepMemory (lessw2020, 2020; blog/repo only, no paper): DiffGrad's friction plus AdaMod's
    memory of step sizes, blended with the current step size instead of bounding it.

    Adam's ``m, v``; ``eta = lr * sqrt(1 - beta2**t) / (1 - beta1**t) / (sqrt(v) + eps)``;
    ``s = beta3 * s + (1 - beta3) * eta`` with ``beta3 = 1 - 1 / len_memory``;
    ``xi = sigmoid(g_prev - g)`` (``version=1``) or ``sigmoid(|g_prev - g|)`` (``version=0``);
    ``p = p - (eta + s) / 2 * xi * m``.

    Reproduces ``DeepMemory/deepmemory.py`` in lessw2020/Best-Deep-Learning-Optimizers (the
    tests hold a naive copy,
    https://github.com/optimkit/optimkit/blob/main/tests/reference/deepmemory.py).
    Defaults: lr=4e-3, betas=(0.9, 0.999), len_memory=200 (about the batches per epoch),
    version=1, eps=1e-6, weight_decay=0, decoupled (``p = p * (1 - lr * weight_decay)``) as the
    original; the friction sees the raw gradient. ``s`` starts at 0, so the first steps are
    about halved. Deviations: ``g_prev`` is a copy (the original aliases ``p.grad``, so under
    ``zero_grad(set_to_none=False)`` its friction is a constant 0.5); nothing is printed;
    ``version`` is a per-group hyper-parameter (the original keeps it on the optimizer) and
    anything but 0 or 1 is refused. Variant: ``decoupled_weight_decay=False`` (L2).
    """

    parts = (
        weight_decay, step_stat, average_grad, average_sqr_grad, adam_step_sizes,
        blended_step_sizes, grad_friction, per_element_step,
    )
    hypers = dict(
        lr=4e-3, betas=(0.9, 0.999), len_memory=200, version=1, eps=1e-6, weight_decay=0.0,
        decoupled_weight_decay=True,
    )
    reference = "lessw2020/Best-Deep-Learning-Optimizers DeepMemory"


# ----------------------------------------------------------------- layer-wise trust ratios
# LARS, LARC, LAMB and Ralamb share layer_norms and trust_ratio (optimkit/stats/trust.py);
# they differ only in the direction handed to them and in which trust-ratio terms they pin.

_LARS_PARTS = (
    layer_norms,
    trust_ratio.with_fixed(clamp_value=float("inf")),
    _MOMENTUM,
    sgd_step,
)


def _lars_hypers(trust_coefficient, clip):
    return dict(
        lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
        trust_coefficient=trust_coefficient, eps=1e-8, clip=clip, exclude_1d=False,
    )


# LAMB's and Ralamb's weight decay is not in the trust ratio's denominator.
_UNIT_TRUST = trust_ratio.with_fixed(weight_decay=0.0, trust_coefficient=1.0, eps=0.0, clip=False)


class LARS(Optimizer):
    """LARS, layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, arXiv:1708.03888,
    Alg. 1): SGD with momentum whose gradient is rescaled per tensor by a trust ratio.

    ``local_lr = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)``;
    ``g = local_lr * (g + weight_decay * w)``; then torch's SGD momentum and ``p = p - lr * buf``.
    Where ``||w||`` or ``||g||`` is 0 the gradient passes unscaled and without weight decay.

    Reproduces NVIDIA apex ``LARC(torch.optim.SGD(...), clip=False)`` (the scaling mode of
    ``apex/parallel/LARC.py``), which is the paper's algorithm with ``lr`` as the global rate.
    Defaults: lr=1e-3 (torch SGD's), momentum=0.9, dampening=0, weight_decay=0, nesterov=False,
    trust_coefficient=0.001 (the paper's eta), eps=1e-8, clip=False.

    Variants: ``clip=True`` is LARC (``optimkit.LARC``); ``exclude_1d=True`` leaves tensors with
    ndim <= 1 (biases, norm weights) out of the adaptation and the weight decay, the SimCLR/BYOL
    convention (off by default, as in apex).
    """

    parts = _LARS_PARTS
    hypers = _lars_hypers(trust_coefficient=0.001, clip=False)
    reference = ("apex LARC(torch.optim.SGD, clip=False) "
                 "(https://github.com/optimkit/optimkit/blob/main/tests/reference/larc.py)")


class LARC(Optimizer):
    """LARC, layer-wise adaptive rate *clipping* (NVIDIA apex ``apex/parallel/LARC.py``).

    As LARS, but the local rate is clipped so that the effective rate ``lr * local`` never
    exceeds ``lr``: ``local = min(trust_coefficient * ||w|| / (||g|| + wd * ||w|| + eps) / lr, 1)``;
    ``g = local * (g + weight_decay * w)``; torch's SGD momentum; ``p = p - lr * buf``. Zero-norm
    tensors pass unscaled and without weight decay.

    Reproduces apex ``LARC(torch.optim.SGD(...), clip=True)`` (the file left apex's main
    branch in 2025). Defaults: lr=1e-3, momentum=0.9, dampening=0, weight_decay=0,
    nesterov=False, trust_coefficient=0.02 (apex's), eps=1e-8, clip=True. ``clip=False`` is
    LARS; ``exclude_1d`` as in LARS.
    """

    parts = _LARS_PARTS
    hypers = _lars_hypers(trust_coefficient=0.02, clip=True)
    reference = ("apex LARC(torch.optim.SGD, clip=True) "
                 "(https://github.com/optimkit/optimkit/blob/main/tests/reference/larc.py)")


class LAMB(Optimizer):
    """LAMB (You et al. 2019, arXiv:1904.00962): Adam's direction rescaled by a layer-wise trust
    ratio.

    ``m``, ``v`` as Adam; ``d = m / (sqrt(v) + eps) + weight_decay * w`` (no bias correction:
    paper v3); ``ratio = min(||w||, clamp_value) / ||d||`` (1 where either norm is 0);
    ``p = p - lr * ratio * d``.

    Reproduces ``torch_optimizer.Lamb`` with its defaults: lr=1e-3, betas=(0.9, 0.999),
    eps=1e-6, weight_decay=0, clamp_value=10, debias=False, adam=False.

    Variants: ``clamp_value`` bounds ``||w||`` in the ratio (paper v1's clamp of the weight
    norm; ``math.inf`` turns it off); ``debias=True`` multiplies the step by
    ``sqrt(1 - beta2**t) / (1 - beta1**t)`` after the trust ratio, as torch_optimizer does (the
    moments themselves are not corrected); ``debias_moments=True`` is paper v5's Alg. 2,
    ``d = m_hat / (sqrt(v_hat) + eps) + weight_decay * w`` with bias-corrected moments, which
    changes the balance of eps and weight decay in ``d`` (use it with ``debias=False`` and
    ``clamp_value=math.inf`` for the v5 algorithm); ``adam=True`` drops the trust ratio
    (plain Adam with L2 on the direction, for comparison); ``exclude_1d=True`` keeps tensors
    with ndim <= 1 out of the adaptation (SimCLR/BYOL convention).
    """

    parts = (
        step_stat,
        average_grad,
        average_sqr_grad,
        adam_direction,
        update_weight_decay.with_fixed(decoupled_weight_decay=False),
        layer_norms,
        _UNIT_TRUST.only_if("adam", _not, default=False),
        debias_direction.only_if("debias", default=False),
        sgd_step,
    )
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, clamp_value=10.0,
        debias=False, adam=False, exclude_1d=False, debias_moments=False,
    )
    reference = "torch_optimizer.Lamb"


class Ralamb(Optimizer):
    """Ralamb: RAdam's step rescaled by a LAMB-like trust ratio (mgrankin/over9000, 2019).

    ``m``, ``v`` and the rectified step ``d`` as RAdam (``radam_direction``: SGD with
    momentum before rectification); weight decay is decoupled: ``w' = w (1 - lr wd)``. With
    ``over9000_trust_ratio=True`` (default) the ratio is over9000's:
    ``ratio = min(||w'||, clamp_value) / ||w' - lr d||``, the norm of the would-be new weights,
    not of the update, so it is about ``min(1, 10 / ||w'||)``; ``over9000_trust_ratio=False`` is
    the textbook ``min(||w||, clamp_value) / ||d||``. The ratio is 1 where a norm is 0. Then
    ``p = w' - lr * ratio * d``.

    ``||w'||``, after the decay, is what over9000 computes on float32 params, where its
    ``p.data.float()`` is ``p.data`` itself and the decay is applied in place before it takes
    the norm. On float64 params its ``float()`` makes a copy, so there it measures ``||w||``
    before the decay: an accident of dtypes that optimkit does not reproduce.

    Reproduces over9000's ``ralamb.py`` (naive copy in
    https://github.com/optimkit/optimkit/blob/main/tests/reference/ralamb.py) with its
    defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0; clamp_value=10 is its
    hard-coded clamp. over9000 rectifies when rho_t >= 5, optimkit when rho_t >
    ``n_sma_threshold`` (=5): rho_t is never exactly 5 in floating point. Also
    ``degenerated_to_sgd`` (RAdam's) and ``exclude_1d`` (as LAMB's).
    """

    parts = (
        step_stat,
        average_grad,
        average_sqr_grad,
        radam_direction,
        layer_norms.only_if("over9000_trust_ratio", _not, default=True),
        new_weights_norm.only_if("over9000_trust_ratio", default=True),
        _UNIT_TRUST,
        update_weight_decay.with_fixed(decoupled_weight_decay=True),
        sgd_step,
    )
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clamp_value=10.0,
        over9000_trust_ratio=True, n_sma_threshold=5.0, degenerated_to_sgd=True, exclude_1d=False,
    )
    reference = ("mgrankin/over9000 ralamb.py "
                 "(https://github.com/optimkit/optimkit/blob/main/tests/reference/ralamb.py)")


# ------------------------------------------------------------- Lookahead compositions
# Lookahead is a part (optimkit/steppers/slow_weights.py): its slow weights are ordinary
# per-param state, so these recipes are one optimizer with one state dict. The wrapper
# optimkit.Lookahead(optimizer) remains for optimizers that are not recipes.


class _WithLookahead(Optimizer):
    """Loads, besides its own, the checkpoints these recipes made when they were built on the
    ``optimkit.Lookahead`` wrapper (a ``"lookahead"`` entry beside the inner state dict)."""

    def load_state_dict(self, state_dict):
        super().load_state_dict(from_wrapper_state_dict(state_dict))


class CentralizedRAdam(Optimizer):
    """RAdam on the centralised gradient (Yong et al. 2020): Ranger without Lookahead.

    ``optimkit.RAdam``'s parts after ``centralize_gradient``, which runs only with
    ``use_gc=True`` (``gc_conv_only`` limits it to conv kernels, ndim > 3). Defaults as
    Ranger's: betas=(0.95, 0.999), eps=1e-5, decoupled weight decay; with ``use_gc=False`` it
    is ``RAdam(decoupled_weight_decay=True)``.
    """

    parts = (centralize_gradient.only_if("use_gc", default=False), *RAdam.parts)
    hypers = dict(
        lr=1e-3, betas=(0.95, 0.999), eps=1e-5, weight_decay=0.0, decoupled_weight_decay=True,
        n_sma_threshold=5.0, degenerated_to_sgd=True, use_gc=False, gc_conv_only=False,
    )
    reference = "pytorch_ranger.Ranger's RAdam (use_gc=False)"


class Ranger(_WithLookahead):
    """Ranger (Wright 2019): RAdam with Lookahead (k=6, alpha=0.5), no new update math.

    ``CentralizedRAdam``'s parts, i.e. ``optimkit.RAdam`` with Ranger's variant of it:
    decoupled weight decay ``p = p (1 - lr wd)``, rectification when
    ``rho_t > n_sma_threshold``, momentum SGD before; ``use_gc=True`` adds gradient
    centralization (Ranger 2020, off by default as in the reference package), without
    writing ``p.grad``. Then the ``lookahead`` part: after every k-th step of each param,
    ``slow_param += alpha * (p - slow_param)`` and ``p = slow_param``, the slow weights being a
    copy of the param taken at its first step.

    Reproduces ``pytorch_ranger.Ranger`` with its defaults: lr=1e-3, alpha=0.5, k=6,
    n_sma_threshold=5, betas=(0.95, 0.999), eps=1e-5, weight_decay=0. Differences: the keyword
    is ``n_sma_threshold`` (the reference spells it ``N_sma_threshhold``), the closure is
    evaluated (the reference ignores it), hyper-parameters are validated, ``k`` and ``alpha``
    are per param group (the reference reads alpha from the instance). State per param:
    ``step``, ``grad_avg``, ``sqr_avg``, ``slow_param``. Keywords are keyword-only.
    """

    parts = (*CentralizedRAdam.parts, lookahead)
    hypers = dict(
        lr=1e-3, alpha=0.5, k=6, n_sma_threshold=5.0, betas=(0.95, 0.999), eps=1e-5,
        weight_decay=0.0, decoupled_weight_decay=True, degenerated_to_sgd=True, use_gc=False,
        gc_conv_only=False,
    )
    reference = "pytorch_ranger.Ranger"


class RangerLars(_WithLookahead):
    """RangerLars, alias Over9000 (mgrankin/over9000, 2019): Ralamb with Lookahead (k=6,
    alpha=0.5), no new update math.

    ``Ralamb``'s parts, then the ``lookahead`` part with the paper's timing (slow weights = the
    params at their first step, a sync after every k-th step of each param); over9000's own
    Lookahead skips its first interpolation, ours does not. Defaults: Ralamb's (lr=1e-3,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=0) plus k=6, alpha=0.5; every Ralamb keyword
    (``clamp_value``, ``over9000_trust_ratio``, ...) applies.
    """

    parts = (*Ralamb.parts, lookahead)
    hypers = dict(Ralamb.hypers, k=6, alpha=0.5)
    reference = ("Lookahead(over9000 Ralamb, k=6, alpha=0.5) "
                 "(https://github.com/optimkit/optimkit/blob/main/tests/reference/rangerlars.py)")


Over9000 = RangerLars


class LookaheadSGD(_WithLookahead):
    """Lookahead around momentum SGD (k=5, alpha=0.5), as fast.ai's ``Lookahead(SGD(...))``:
    no new update math.

    ``optimkit.SGD``'s parts with lr=1e-3 and momentum=0.9 (every ``SGD`` keyword applies), a
    step counter, then the ``lookahead`` part with the paper's defaults and timing (see
    ``Ranger``). To wrap an optimizer that is not a recipe, use
    ``optimkit.Lookahead(optimizer, k, alpha)``.
    """

    parts = (*SGD.parts, step_stat, lookahead)
    hypers = dict(SGD.hypers, momentum=0.9, k=5, alpha=0.5)
    reference = ("Lookahead paper Alg. 1 around torch.optim.SGD "
                 "(https://github.com/optimkit/optimkit/blob/main/tests/reference/lookahead.py)")


class Lion(Optimizer):
    """Lion, evolved sign momentum (Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms", arXiv:2302.06675, Alg. 2).

    ``p = p * (1 - lr * weight_decay)``; ``d = sign(beta1 * m + (1 - beta1) * g)``;
    ``m = beta2 * m + (1 - beta2) * g``; ``p = p - lr * d``. Every element moves by exactly
    ``lr`` (plus the decay), so Lion wants an lr 3-10x smaller than AdamW's and a weight decay
    3-10x larger (the paper's advice). One state tensor per param (``grad_avg``), half of Adam's.

    Reproduces the paper's Algorithm 2 and the authors' ``lion_pytorch`` (a naive per-param
    version in https://github.com/optimkit/optimkit/blob/main/tests/reference/lion.py),
    with their defaults: lr=1e-4, betas=(0.9, 0.99),
    weight_decay=0, decoupled as in the paper. As there, ``torch.sign(nan)`` is 0: a NaN
    gradient does not reach the params but stays in ``grad_avg`` (``state_dict()`` warns).
    Variant: ``cautious=True`` (C-Lion, Liang et al. 2024, arXiv:2411.16085; off by default):
    the sign update is zeroed where it disagrees with the gradient and rescaled by
    ``n / (k + 1)`` per tensor (``n`` elements, ``k`` kept), as
    ``pytorch_optimizer.Lion(cautious=True)``.
    """

    parts = (weight_decay.with_fixed(decoupled_weight_decay=True), lion_direction, _CAUTIOUS,
             sgd_step)
    hypers = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    reference = ("Lion paper Alg. 2 / lion_pytorch "
                 "(https://github.com/optimkit/optimkit/blob/main/tests/reference/lion.py)")


# ------------------------------------------------------------- the 2023-25 element-wise ones

_NADAM_PARTS = (weight_decay, step_stat, average_grad, average_sqr_grad, nadam_step)


class NAdamW(Optimizer):
    """NAdamW: NAdam with decoupled weight decay (Dozat 2016, "Incorporating Nesterov Momentum
    into Adam"; the AlgoPerf baseline, Dahl et al. 2023, arXiv:2306.07179).

    ``p = p * (1 - lr * weight_decay)``; Adam's ``m``, ``v``; with the momentum schedule
    ``mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))`` and ``P_t = mu_1 * ... * mu_t``,
    ``d = sqrt(v / (1 - beta2**t)) + eps`` and
    ``p = p - lr * (1 - mu_t) / (1 - P_t) * g / d - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d``.

    Reproduces ``torch.optim.NAdam(decoupled_weight_decay=True)`` with torch's defaults:
    lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0 (torch's NAdam default: give one,
    e.g. 1e-2 as AdamW's), momentum_decay=4e-3. ``decoupled_weight_decay=False`` is
    ``optimkit.NAdam``. State: ``step``, ``grad_avg`` (torch's ``exp_avg``), ``sqr_avg``
    (``exp_avg_sq``), ``mu_product`` (a float32 CPU scalar, as torch's): a torch.optim.NAdam
    checkpoint loads and ``torch_state_dict()`` gives one back. No ``cautious`` flag: the step
    mixes the raw gradient into the update, which the cautious rule does not cover, and no
    reference implements it.
    """

    parts = _NADAM_PARTS
    hypers = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  momentum_decay=4e-3, decoupled_weight_decay=True)
    reference = "torch.optim.NAdam(decoupled_weight_decay=True)"
    torch_class = "NAdam"


class NAdam(Optimizer):
    """NAdam (Dozat 2016): ``optimkit.NAdamW``'s update with L2 weight decay
    (``g = g + weight_decay * p``), no new parts.

    Reproduces ``torch.optim.NAdam`` with its defaults (lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, momentum_decay=4e-3, decoupled_weight_decay=False).
    """

    parts = _NADAM_PARTS
    hypers = {**NAdamW.hypers, "decoupled_weight_decay": False}
    reference = "torch.optim.NAdam"
    torch_class = "NAdam"


class ADOPT(Optimizer):
    """ADOPT, "Modified Adam can converge with any beta2" (Taniguchi et al. 2024,
    arXiv:2411.02853, NeurIPS 2024), with the authors' 2024-11 clipping.

    The gradient is normalised by the second moment of the *previous* steps, clipped, then
    averaged: ``n = clip(g / max(sqrt(v), eps), t**0.25)``; ``m = beta1 * m + (1 - beta1) * n``;
    ``p = p - lr * m``; ``v = beta2 * v + (1 - beta2) * g**2``. A param's first step only sets
    ``v = g**2``. Weight decay: L2 (``g = g + weight_decay * p``, the default) or decoupled
    (``decoupled_weight_decay=True``: ``p = p * (1 - lr * weight_decay)``, ADOPTW), applied on
    every step, the first included.

    Reproduces ``pytorch_optimizer.ADOPT`` (4.1.0) with its defaults: lr=1e-3,
    betas=(0.9, 0.9999), eps=1e-6, weight_decay=0, clip ``step**0.25``. Keyword
    ``decoupled_weight_decay`` is the reference's ``weight_decouple``. Variant:
    ``cautious=True`` (Liang et al. 2024, as ``ADOPT(cautious=True)`` there).

    Deviations: ``m`` is kept rotated (``grad_avg = R(m)``, updated with ``R(g)`` and turned
    into each new basis at a refresh), where the reference keeps it unrotated and rotates it
    at every step: the same update up to rounding, with one rotation (two matmuls per matrix)
    less per step. The step count is per param (torch.optim's convention, ``step`` state); the
    reference counts per param group, which differs only for params that skip steps or join
    late. The clip is fixed to ``step**0.25`` (the reference takes any ``clip_lambda``, None
    for the unclipped first version) and ``fixed_decay`` is not offered.
    """

    parts = (weight_decay, step_stat, adopt_direction, _CAUTIOUS, sgd_step)
    hypers = dict(lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.0,
                  decoupled_weight_decay=False)
    reference = "pytorch_optimizer.ADOPT"


class LaProp(Optimizer):
    """LaProp, "Separating momentum and adaptivity in Adam" (Ziyin, Wang & Ueda 2020,
    arXiv:2002.04839): RMSprop-normalised gradients, then momentum over them.

    ``v = beta2 * v + (1 - beta2) * g**2``; ``d = (sqrt(v + 1e-15) + eps) / sqrt(1 - beta2**t)``;
    ``m = beta1 * m + (1 - beta1) * lr * g / d``; ``c = beta1 * c + (1 - beta1) * lr``;
    ``p = p - lr / c * m``; then ``p = p * (1 - lr * weight_decay)``. The learning rate enters
    the momentum, and ``c`` (``lr_avg``, ``1 - beta1**t`` times lr under a constant lr) is the
    bias correction that follows an lr schedule.

    Reproduces ``pytorch_optimizer.LaProp`` (4.1.0) with its defaults: lr=4e-4,
    betas=(0.9, 0.999), eps=1e-15, weight_decay=0 (decoupled, after the step, as there).
    Variants: ``amsgrad`` (the reference's ``ams_bound``: divide by the running max of ``v``)
    and ``cautious`` (Liang et al. 2024, as ``LaProp(cautious=True)`` there).

    Deviations: ``m`` is kept rotated (``grad_avg = R(m)``, updated with ``R(g)`` and turned
    into each new basis at a refresh), where the reference keeps it unrotated and rotates it
    at every step: the same update up to rounding, with one rotation (two matmuls per matrix)
    less per step. The step count is per param, the reference's per param group (see
    ``ADOPT``); ``lr_avg`` is kept in the param's dtype (the reference: a Python float);
    with lr 0 the reference still moves the params by ``m`` (step size 1), optimkit by
    ``lr / c * m`` = 0. Not offered: ``centered`` (the reference's is switched on after a
    fixed 10 group steps), L2 weight decay (``weight_decouple=False``: the reference adds the
    term to ``p.grad`` after the update, so it never changes the trajectory), ``fixed_decay``.
    """

    parts = (
        step_stat,
        average_sqr_grad,
        max_sqr_avg.only_if("amsgrad", default=False),
        laprop_direction,
        _CAUTIOUS,
        lr_avg_step,
        decay_after_step,
    )
    hypers = dict(lr=4e-4, betas=(0.9, 0.999), eps=1e-15, weight_decay=0.0, amsgrad=False)
    reference = "pytorch_optimizer.LaProp"


# ------------------------------------------------- 2023-25: optimizers that mix averages
# Adan, AdEMAMix and MARS (issue 23); their parts are in stats/mixing.py, steppers/mixing.py.


class Adan(Optimizer):
    """Adan, adaptive Nesterov momentum (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum
    Algorithm for Faster Optimizing Deep Models", arXiv:2208.06677, Alg. 1).

    With the gradient difference ``diff = g - g_prev`` (0 at the first step):
    ``m = beta1 m + (1 - beta1) g``; ``d = beta2 d + (1 - beta2) diff``;
    ``n = beta3 n + (1 - beta3) (g + beta2 diff)**2``;
    ``u = (m / (1 - beta1**t) + beta2 d / (1 - beta2**t)) / (sqrt(n / (1 - beta3**t)) + eps)``;
    ``p = (p - lr u) / (1 + lr weight_decay)`` (the proximal weight decay of the paper, the
    default), or with ``no_prox=True`` ``p = p (1 - lr weight_decay) - lr u`` (decoupled).

    Reproduces ``pytorch_optimizer.Adan`` and the authors' code (sail-sg/Adan), with their
    defaults: lr=1e-3, betas=(0.98, 0.92, 0.99) (the authors' convention: each beta weighs the
    old average), eps=1e-8, weight_decay=0, no_prox=False. ``no_prox`` is the authors'
    keyword; pytorch_optimizer calls it ``weight_decouple``. State: ``grad_avg``
    (``exp_avg``), ``grad_diff_avg`` (``exp_avg_diff``), ``sqr_avg`` (``exp_avg_sq``),
    ``prev_grad`` (a copy of the last gradient; pytorch_optimizer keeps its negative,
    ``previous_grad``), ``step``.

    Deviations: ``max_grad_norm`` (the authors' and pytorch_optimizer's clip of all gradients
    by their global norm, off by default) is not a keyword: clip before ``step()``
    (``torch.nn.utils.clip_grad_norm_``; its ``eps`` differs slightly); pytorch_optimizer's
    ``use_gc`` and ``adanorm`` extras are not reproduced; ``p.grad`` is never written (the
    reference negates it in its per-param path); the step count is per param, not per group.
    """

    parts = (
        weight_decay.with_fixed(decoupled_weight_decay=True).only_if("no_prox", default=False),
        step_stat,
        adan_moments,
        adan_step,
        proximal_decay.only_if("no_prox", _not, default=False),
    )
    hypers = dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False)
    reference = "pytorch_optimizer.Adan (sail-sg/Adan)"


class AdEMAMix(Optimizer):
    """AdEMAMix, Adam with a mixture of two momenta (Pagliardini, Ablin & Grangier 2024, "The
    AdEMAMix Optimizer: Better, Faster, Older", arXiv:2409.03137, Alg. 1).

    Adam's ``m`` (``beta1``) and ``v`` (``beta2``) plus a slow, uncorrected momentum
    ``m2 = beta3_t m2 + (1 - beta3_t) g``;
    ``p = p - lr (m / (1 - beta1**t) + alpha_t m2) / (sqrt(v / (1 - beta2**t)) + eps)``.
    Without warm-up ``alpha_t = alpha``, ``beta3_t = beta3``; with ``t_alpha_beta3=T``
    (the paper's schedulers, recommended for large ``beta3``) ``alpha_t = min(t alpha / T,
    alpha)`` rises linearly and ``beta3_t`` rises from ``beta1`` to ``beta3`` so that the
    half-life grows linearly over ``T`` steps.

    Reproduces ``pytorch_optimizer.AdEMAMix`` with its defaults: lr=1e-3,
    betas=(0.9, 0.999, 0.9999), alpha=5.0, t_alpha_beta3=None (no warm-up), eps=1e-8,
    weight_decay=0 as L2 (``decoupled_weight_decay=True``: ``p = p (1 - lr weight_decay)``,
    pytorch_optimizer's ``weight_decouple``). State: ``grad_avg`` (``exp_avg``), ``sqr_avg``
    (``exp_avg_sq``), ``slow_grad_avg`` (``exp_avg_slow``), ``step``; the three moments may be
    stored in 8 bits (``state_bits=8``), as bitsandbytes' ``AdEMAMix8bit`` does, in the same
    bytes (1 per element and a float32 scale per 256, per moment) and at least as close to the
    fp32 run: measured against bitsandbytes 0.50.2's CPU step (``t_alpha = t_beta3 =
    t_alpha_beta3``, its decoupled weight decay, same gradients, 100-200 steps over 10 seeds)
    the error was 0.36-1.03 times bitsandbytes' with the warm-ups and 0.78-1.01 times without.
    The gap is bitsandbytes' signed code, whose most negative value is -0.993, not -1: a block
    whose largest element is negative shrinks by 0.7 % at each requantization (with optimkit's
    signed code put in its place, bitsandbytes' error equals optimkit's).

    Deviations: pytorch_optimizer's ``fixed_decay``, ``cautious`` and ``stable_adamw`` extras
    are not keywords here; ``p.grad`` is never written (the reference adds the L2 term into
    it); the step count (which drives the warm-ups) is per param, not per group.
    """

    parts = (weight_decay, step_stat, average_grad, average_sqr_grad, slow_grad_avg, ademamix_step)
    hypers = dict(
        lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, t_alpha_beta3=None, eps=1e-8,
        weight_decay=0.0, decoupled_weight_decay=False,
    )
    reference = "pytorch_optimizer.AdEMAMix"


class MARS(Optimizer):
    """MARS-AdamW, variance reduction for adaptive optimizers (Yuan, Liu, Gu et al. 2024, "MARS:
    Unleashing the Power of Variance Reduction for Training Large Models", arXiv:2411.10438,
    Alg. 2 with the AdamW update and the approximate, one-gradient correction).

    For params with ``ndim >= 2`` (every param with ``optimize_1d=True``): the corrected
    gradient ``c = g + gamma beta1 / (1 - beta1) (g - g_prev)`` (``g_prev`` is 0 at the first
    step), divided by ``max(||c||, 1)``; ``m = beta1 m + (1 - beta1) c``;
    ``v = beta2 v + (1 - beta2) c**2``;
    ``p = p (1 - lr wd) - lr m / (1 - beta1**t) / ((sqrt(v) + eps) / sqrt(1 - beta2**t))``.
    The other params (biases, norm weights) take plain AdamW on ``g`` with ``betas_1d``,
    ``lr_1d`` and ``weight_decay_1d``, as pytorch_optimizer does.

    Reproduces ``pytorch_optimizer.MARS(mars_type="adamw")`` with its defaults: lr=3e-3,
    betas=(0.95, 0.99), gamma=0.025, optimize_1d=False, lr_1d=3e-3, betas_1d=(0.9, 0.95),
    weight_decay=0, weight_decay_1d=0.1 (decoupled, as the reference's default
    ``weight_decouple=True``), eps=1e-8. The choice between the two rules is made per tensor
    inside each param group (from the tensors' ndim, with ``torch.where`` over per-tensor
    numbers), so one group may hold both kinds, in eager, flat and compiled mode alike. State:
    ``grad_avg`` (``exp_avg``), ``sqr_avg`` (``exp_avg_sq``), ``last_grad``, ``step``.

    Deviations: only ``mars_type="adamw"`` is implemented (``"lion"`` and ``"shampoo"`` are
    refused); ``lr_1d`` is a hyper-parameter of its own, where the reference keeps
    ``lr_1d / lr`` fixed at construction and so scales ``lr_1d`` with a schedule of ``lr``:
    schedule ``lr_1d`` too (a scheduler acts on every param group key it is given);
    ``weight_decouple=False`` (the reference then adds the L2 term to ``p.grad`` after the
    update, where it only reaches the next correction), ``fixed_decay``, ``ams_bound`` and
    ``cautious`` are not reproduced; the step count is per param, not per group.
    """

    parts = (step_stat, mars_direction, mars_step)
    hypers = dict(
        lr=3e-3, betas=(0.95, 0.99), gamma=0.025, mars_type="adamw", optimize_1d=False,
        lr_1d=3e-3, betas_1d=(0.9, 0.95), weight_decay=0.0, weight_decay_1d=0.1, eps=1e-8,
    )
    reference = "pytorch_optimizer.MARS(mars_type='adamw')"


def _has_first_moment(betas):
    return betas[0] > 0


def _no_first_moment(betas):
    return betas[0] == 0


class Prodigy(Optimizer):
    """Prodigy, "An Expeditiously Adaptive Parameter-Free Learner" (Mishchenko & Defazio 2023,
    arXiv:2306.06101, ICML 2024): Adam whose step size ``d`` estimates the distance to the
    solution, one number for the whole optimizer. Leave ``lr`` at 1.

    Per step, with ``d`` and ``dlr = d * lr`` (times ``sqrt(1 - beta2**k) / (1 - beta1**k)``
    with ``use_bias_correction``) of the step before, over EVERY param of every group:
    ``m = beta1 * m + d * (1 - beta1) * g``; ``v = beta2 * v + d**2 * (1 - beta2) * g**2``;
    ``s = beta3 * s + (d / d0) * dlr * g`` (``(d / d0) * d`` with ``safeguard_warmup``);
    ``d_numerator = beta3 * d_numerator + (d / d0) * dlr * <g, p0 - p>``;
    ``d_hat = d_coef * d_numerator / |s|_1``; ``d = max(d, d_hat)`` at the first update,
    ``d_max = max(d_max, d_hat)``, ``d = min(d_max, d * growth_rate)``; then with the new ``d``
    ``p = p - dlr * weight_decay * p`` (``decouple``) and ``p = p - dlr * m / (sqrt(v) +
    d * eps)`` (``beta1 = 0``: ``dlr * d * g`` for ``dlr * m``). ``p0`` is the param at its
    first step. ``weight_decay`` with ``decouple=False`` is added to the gradient (L2).

    The sums are a barrier (see ``core/parts.py``): phase 1 runs over every bucket, the
    barrier adds the sums up (one all-reduce over FSDP2 shards, so the estimate is the
    unsharded run's) and updates ``d``, then phase 2 steps. ``d``, ``d_max``, ``d_numerator``,
    ``d_denom``, ``d_hat`` and ``k`` live in every param group, as the reference keeps them.

    Reproduces ``prodigyopt.Prodigy`` (1.1.2) with its defaults and keywords: lr=1.0,
    betas=(0.9, 0.999), beta3=None (``sqrt(beta2)``), eps=1e-8, weight_decay=0,
    decouple=True, use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0,
    growth_rate=inf, fsdp_in_use=False, slice_p=1. Deviations: ``slice_p`` must be 1
    (ValueError otherwise; the reference's ``slice_p > 1`` approximates the estimate);
    ``fsdp_in_use`` only keeps a step whose gradients are all zero (the reference's meaning
    besides its all-reduce): DTensor params (FSDP2) are summed over their shards whatever it
    says, FSDP1's flattened params are not detected; the reference's ``p.grad`` is modified
    in place by the L2 decay, optimkit's is not; ``p0`` and ``s`` are kept in the param's
    shape (the reference flattens them, and keeps ``p0`` of an all-zero param as a 0-d zero);
    every group's lr must be the largest or 0 (ValueError, the reference's RuntimeError).
    """

    parts = (
        prodigy_grad_avg.only_if("betas", _has_first_moment),
        prodigy_stats,
        prodigy_estimate,
        step_stat,
        prodigy_step.only_if("betas", _has_first_moment),
        prodigy_sign_free_step.only_if("betas", _no_first_moment),
    )
    hypers = dict(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0,
                  decouple=True, use_bias_correction=False, safeguard_warmup=False, d0=1e-6,
                  d_coef=1.0, growth_rate=float("inf"), fsdp_in_use=False, slice_p=1)
    reference = "prodigyopt.Prodigy"


class DAdaptAdam(Optimizer):
    """D-Adaptation Adam, "Learning-Rate-Free Learning by D-Adaptation" (Defazio & Mishchenko
    2023, arXiv:2301.07733, ICML 2023): Adam whose step size ``d`` is estimated from the
    gradients, one number for the whole optimizer. Leave ``lr`` at 1.

    Per step, with ``dlr = d * lr`` (times ``sqrt(1 - beta2**k) / (1 - beta1**k)`` with
    ``use_bias_correction``) and ``r`` the group's ``layer_scale`` (1; set it in a param group
    to scale that group), over EVERY param of every group, ``v`` and ``s`` of the step before:
    ``numerator_weighted = sqrt(beta2) * numerator_weighted + (1 - sqrt(beta2)) * dlr *
    sum(r * <g, s / (sqrt(v) + eps)>)``; ``m = beta1 * m + r * dlr * (1 - beta1) * g``;
    ``v = beta2 * v + (1 - beta2) * g**2``; ``s = sqrt(beta2) * s + dlr * (1 - sqrt(beta2)) *
    g``; ``d_hat = numerator_weighted / ((1 - sqrt(beta2)) * sum(r * |s|_1))``,
    ``d = max(d, min(d_hat, d * growth_rate))``; then ``p = p - dlr * weight_decay * p``
    (``decouple``) and ``p = p - m / (sqrt(v) + eps)``. ``decouple=False`` adds
    ``weight_decay * p`` to the gradient.

    A barrier recipe like :class:`Prodigy`; ``d``, ``k``, ``layer_scale`` and
    ``numerator_weighted`` live in every param group, as the reference keeps them.

    Reproduces ``dadaptation.DAdaptAdam`` (3.2) with its defaults and keywords: lr=1.0,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=0, log_every=0 (logs ``d`` every that many
    steps through the ``optimkit`` logger), decouple=False, use_bias_correction=False,
    d0=1e-6, growth_rate=inf, fsdp_in_use=False. Deviations: under FSDP2 the per-step sums are
    added up over the shards (the unsharded run's estimate); the reference all-reduces its
    running ``numerator_weighted`` instead, which counts the history once per rank;
    ``fsdp_in_use`` has no effect; ``p.grad`` is never modified (the reference adds the L2
    decay into it); every group's lr must be the largest or 0.
    """

    parts = (dadapt_adam_stats, dadapt_adam_estimate, step_stat, dadapt_adam_step)
    hypers = dict(lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, log_every=0,
                  decouple=False, use_bias_correction=False, d0=1e-6, growth_rate=float("inf"),
                  fsdp_in_use=False)
    reference = "dadaptation.DAdaptAdam"


class Adafactor(Optimizer):
    """Adafactor, "Adaptive learning rates with sublinear memory cost" (Shazeer & Stern 2018,
    arXiv:1804.04235, ICML 2018): Adam without a first moment, whose second moment of a matrix
    is kept as one average per row and one per column.

    Per tensor ``p`` of ``n`` elements at its step ``t``, with ``w = t**beta2_decay``:

    * ndim >= 2: ``row_var = lerp(row_var, mean(g**2, -1), w)``,
      ``col_var = lerp(col_var, mean(g**2, -2), w)``,
      ``v = row_var @ col_var / max(mean(row_var), eps1)`` (over the last two dims; leading
      dims are a batch);
    * ndim < 2: ``variance = lerp(variance, g**2, w)``, ``v = variance``;
    * ``u = g / sqrt(max(v, eps1**2))``;
      ``alpha = max(eps2, rms(p)) * min(lr, 1 / sqrt(t))``;
      ``p = p * (1 - lr * weight_decay)``; ``p = p - alpha / max(1, rms(u) / d) * u``.

    Reproduces ``torch.optim.Adafactor`` (torch 2.13) with its defaults and keyword names:
    lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3) (``eps1`` None: the params' dtype's machine
    epsilon), d=1.0, weight_decay=0.0; ``foreach`` is accepted. ``lr`` caps the relative step
    size ``1 / sqrt(t)`` (the paper's ``rho``), as torch's; there is no first moment (the
    paper's ``beta1 = 0``) and no update-parameter scaling switch: the step is always relative
    to the param's RMS, as torch's.

    State, torch's names: ``step``; ``row_var`` ``[..., rows, 1]`` and ``col_var``
    ``[..., 1, cols]`` for a param of ndim >= 2, ``variance`` (the param's shape) for a vector
    or a scalar: a torch.optim.Adafactor checkpoint loads, and ``torch_state_dict()`` gives
    one back. Deviations: every param carries all three names, the unused ones as empty
    tensors (state is declared per recipe, not per param; a torch checkpoint's missing ones
    are filled in, ``torch_state_dict()`` leaves them out); ``eps1=None`` is
    each bucket's dtype's epsilon (torch's foreach step keeps the first dtype's for a whole
    param group); ``maximize=True`` is refused, as by every optimkit optimizer. FSDP2
    (DTensor) params of ndim >= 2 are refused (``NotImplementedError``): their column
    averages would run over the rows of every shard; vectors and DDP work.
    """

    parts = (step_stat, adafactor_direction, adafactor_step)
    hypers = dict(lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0)
    reference = "torch.optim.Adafactor"
    torch_class = "Adafactor"


# ------------------------------------------------------------- Schedule-Free (issue 22)


class ScheduleFreeAdamW(Optimizer):
    """Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled", arXiv:2405.15682,
    NeurIPS 2024; the AlgoPerf 2024 self-tuning winner): no learning-rate schedule, an average
    of the iterates instead.

    ``z = z - lr_k * u``, ``u = g / (sqrt(v / (1 - beta2**t)) + eps) + weight_decay * y`` (``v``
    Adam's second moment, the gradient ``g`` and the decay taken at ``y``);
    ``x = (1 - c) * x + c * z``; ``y = beta1 * x + (1 - beta1) * z``. ``lr_k`` is ``lr`` with a
    linear warm-up over ``warmup_steps``; ``c`` weighs step ``k`` by ``k**r * lr_max**
    weight_lr_power`` (see ``optimkit.steppers.schedule_free``).

    **Call** ``opt.train()`` **before training and** ``opt.eval()`` **before evaluating or
    saving**: in train mode the params are ``y`` (where gradients are taken), in eval mode
    ``x`` (the averaged weights to use). ``step()`` in eval mode raises ``RuntimeError``; the
    mode is saved in the param groups (``train_mode``). ``optimkit.evaluating(opt)`` does both
    around an evaluation; ``optimkit.training.recompute_bn_stats`` fixes BatchNorm statistics
    at ``x``.

    Reproduces ``schedulefree.AdamWScheduleFreeReference`` (1.4.1) with its defaults:
    lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0, r=0,
    weight_lr_power=2. State: ``z``, ``sqr_avg`` (the reference's ``exp_avg_sq``), ``step``,
    ``lr_max`` and ``weight_sum`` (float64 CPU numbers).

    Deviations: as the reference's fast ``AdamWScheduleFree``, only ``z`` is kept (the params
    are ``y`` or ``x``, the other is recovered with ``betas[0]``), so ``betas[0]`` must be > 0;
    the reference's ``k``, ``lr_max`` and ``weight_sum`` are per param group, here per param
    (``step``, ``lr_max``, ``weight_sum``), which differs only for params that skip steps or
    join late; ``decay_at_z`` is not offered; the optimizer starts in train mode (the
    reference in eval mode, with ``step()`` refused until ``train()``; at the start ``x = y``,
    so only the refusal differs); nothing is printed.
    """

    parts = (step_stat, average_sqr_grad, schedule_free_adam_step)
    hypers = dict(lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0,
                  r=0.0, weight_lr_power=2.0)
    transitions = {"train": schedule_free_adam_train, "eval": schedule_free_adam_eval}
    reference = "schedulefree.AdamWScheduleFreeReference"


class ScheduleFreeSGD(Optimizer):
    """Schedule-Free SGD (Defazio et al. 2024, "The Road Less Scheduled", arXiv:2405.15682):
    SGD steps on ``z``, the params an average of them.

    ``z = z - lr_k * (g + weight_decay * y)`` (the gradient and an L2 term at ``y``);
    ``x = (1 - c) * x + c * z``; ``y = momentum * x + (1 - momentum) * z``; ``lr_k`` and ``c``
    as in ``ScheduleFreeAdamW``. Call ``opt.train()`` / ``opt.eval()`` as there: the params are
    ``y`` in train mode, ``x`` in eval mode; ``step()`` in eval mode raises.

    Reproduces ``schedulefree.SGDScheduleFreeReference`` (1.4.1) with its defaults: lr=1.0,
    momentum=0.9 (in (0, 1)), weight_decay=0, warmup_steps=0, r=0, weight_lr_power=2. State:
    ``z``, ``step``, ``lr_max``, ``weight_sum``. Deviations as ``ScheduleFreeAdamW``'s (only
    ``z`` kept, counts per param); the reference adds the L2 term into ``p.grad``, which
    optimkit never writes.
    """

    parts = (weight_decay.with_fixed(decoupled_weight_decay=False), step_stat,
             schedule_free_sgd_step)
    hypers = dict(lr=1.0, momentum=0.9, weight_decay=0.0, warmup_steps=0, r=0.0,
                  weight_lr_power=2.0)
    transitions = {"train": schedule_free_sgd_train, "eval": schedule_free_sgd_eval}
    reference = "schedulefree.SGDScheduleFreeReference"


# ------------------------------------------------------- 2024-25: matrix optimizers (issue 22)

# Muon's AdamW branch: the AdamW parts under the ``adam_*`` names (Keller Jordan's
# SingleDeviceMuonWithAuxAdam: decoupled decay p *= 1 - lr wd, then Adam).
_ADAM = dict(lr="adam_lr", betas="adam_betas", eps="adam_eps")
_MUON_ADAMW = (
    weight_decay.with_fixed(decoupled_weight_decay=True)
    .renamed(lr="adam_lr", weight_decay="adam_weight_decay"),
    step_stat,
    average_grad.renamed(betas="adam_betas"),
    average_sqr_grad.renamed(betas="adam_betas"),
    _CAUTIOUS_MOMENT,
    adam_step.renamed(**_ADAM),
)


class Muon(Optimizer):
    """Muon, MomentUm Orthogonalized by Newton-Schulz (Jordan et al. 2024,
    https://kellerjordan.github.io/posts/muon/), with an AdamW branch for the other params.

    Matrices (params of 2+ dimensions; a conv filter ``[out, in, h, w]`` as the matrix
    ``[out, in*h*w]``): ``p = p (1 - lr wd)``; ``buf = buf + (1 - momentum) (g - buf)``;
    ``u = g + momentum (buf - g)`` (``nesterov``, the default) or ``buf``;
    ``O = NS(u)``, ``ns_steps`` quintic Newton-Schulz steps in ``ns_dtype`` (bf16 by default,
    coefficients ``ns_coefficients``), which maps ``u = U S V^T`` to about ``U V^T``;
    ``p = p - lr * ratio * O`` with ``ratio = sqrt(max(1, rows / cols))`` (``adjust_lr_fn``
    None or ``"original"``) or ``0.2 sqrt(max(rows, cols))`` (``"match_rms_adamw"``, Liu et
    al. 2025, "Muon is Scalable for LLM Training", arXiv:2502.16982: the update's RMS matches
    AdamW's, so AdamW's lr and weight decay transfer).

    Every other param (biases, norm weights, and, given a model to ``optimkit.create``, the
    embeddings and the output head) steps with AdamW: ``p = p (1 - adam_lr adam_weight_decay)``
    then Adam with ``adam_betas``, ``adam_eps``, ``adam_lr``. One param group may hold both: the
    engine routes each param by its shape (the ``matrix`` route, ``Part.where``), and a param
    group's ``routes={"matrix": False}`` sends its matrices to AdamW too (what
    ``optimkit.create("muon", model)`` does for embeddings and the head). The matrices are
    orthogonalized one batched call per shape (``orthogonalize``, ``batch="shape"``).

    Reproduces ``torch.optim.Muon`` on the matrices, with its defaults and keywords: lr=1e-3,
    weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=(3.4445, -4.775,
    2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None; NS in bf16 with torch's op order (the
    same bits on the CPU). The AdamW branch reproduces the muon-optimizer package's
    ``SingleDeviceMuonWithAuxAdam`` (Keller Jordan's ``muon.py``), with its defaults
    adam_lr=3e-4, adam_betas=(0.9, 0.95), adam_eps=1e-10, adam_weight_decay=0. Variants:
    ``ns_dtype`` (``torch.float32`` / ``torch.float64`` for an exact polar factor's
    approximation, slower), ``cautious=True`` (Liang et al. 2024, arXiv:2411.16085: on the
    orthogonalized update of the matrices, as ``cautious_update``, and on Adam's first moment).
    State: ``momentum_buffer`` (matrices, torch's name), ``grad_avg`` / ``sqr_avg`` / ``step``
    (the AdamW params, Keller's ``exp_avg`` / ``exp_avg_sq`` / ``step``).

    Deviations: torch.optim.Muon refuses params that are not 2-D and the authors' code
    orthogonalizes a 3-D param as a batch of matrices; here every param of 2+ dimensions is
    ``[shape[0], rest]``, and its lr ratio comes from that matrix (Keller's code takes it from
    a conv filter's last two dims, ``h / w``). The authors' NS normalises by ``||G|| + 1e-7``
    and scales the bf16 update by the ratio; torch's (followed here) clamps the norm at
    ``eps`` and folds the ratio into the step size. ``p.grad`` is never written (the authors'
    Nesterov step lerps into it). Under FSDP2 (sharded params) Muon needs whole matrices,
    which the engine does not gather yet.
    """

    parts = (
        weight_decay.with_fixed(decoupled_weight_decay=True).where(MATRIX),
        muon_momentum.where(MATRIX),
        orthogonalize.where(MATRIX),
        _CAUTIOUS.where(MATRIX),
        muon_step.where(MATRIX),
        *(part.where(~MATRIX) for part in _MUON_ADAMW),
    )
    hypers = dict(
        lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=NS_COEFFICIENTS,
        eps=1e-7, ns_steps=5, adjust_lr_fn=None, ns_dtype=torch.bfloat16, adam_lr=3e-4,
        adam_betas=(0.9, 0.95), adam_eps=1e-10, adam_weight_decay=0.0, cautious=False,
    )
    reference = ("torch.optim.Muon (matrices); muon-optimizer SingleDeviceMuonWithAuxAdam "
                 "(AdamW branch)")


class Kron(Optimizer):
    """PSGD Kron: SGD with momentum, preconditioned by a Kronecker product of per-dim factors
    fitted online by preconditioned stochastic gradient descent (Li 2015, arXiv:1512.04202;
    Li 2018, "Preconditioner on matrix Lie group for SGD", arXiv:1809.10232; the Kron form of
    Li's psgd_torch, as E. Walters' kron_torch (2024) and pytorch_optimizer's ``Kron`` run it).

    Per param, with ``t`` its step count: ``m = momentum * m + (1 - momentum) * g``;
    ``m^ = m / (1 - momentum**t)``. Each dim ``i`` of the param has a factor ``Q_i``, upper
    triangular (``d_i x d_i``) or diagonal; ``Q = Q_0 (x) ... (x) Q_{k-1}``, ``P = Q^T Q``.
    At the steps the update schedule picks (below), a Gaussian probe ``V`` and ``m^`` fit
    the factors: ``A = Q m^``, ``B^T = V Q^{-1}``, and per factor
    ``Q_i -= precondition_lr * triu(A_i A_i^T - B_i B_i^T) / ||A_i A_i^T + B_i B_i^T||_2 Q_i``
    (the norm a cheap lower bound of the spectral one; a diagonal factor moves elementwise,
    divided by the largest entry), where ``X_i X_i^T`` contracts ``X`` over every dim but
    ``i``. Then ``u = P m^``, scaled to an RMS of at most 1.1 (``u * min(1.1 / (rms(u) +
    1e-6), 1)``), plus ``weight_decay * p`` on params of 2 dims or more, and
    ``p = p - lr * u``. After every ``balance_every``-th step of a param the factors of a
    matrix are rescaled to equal largest entries (``P`` unchanged).

    Update schedule (``precondition_update_probability``, the references'
    ``pre_conditioner_update_probability``): a probability ``p`` in ``(0, 1]``, or a callable
    of ``n``, the number of steps a param took before this one, returning it; ``None`` (the
    default) is the references' schedule ``optimkit.stats.kron.UpdateProbabilitySchedule()``:
    ``clamp(exp(-0.001 (n - 500)), 0.03, 1)``, 1 for the first 500 steps, then annealed to
    0.03 by step ~4000, which is what makes Kron cheap (after warm-up ~3% of the steps fit
    the factors). As both references do, the "probability" drives a deterministic counter,
    not a coin: ``c = c + 1`` at every step, and the factors are fitted when
    ``c >= 1 / p(n)``, which sets ``c = 0`` (a constant ``p`` fits at every ``ceil(1 / p)``-th
    step; the default at every step up to 500, every 2nd just after, every 34th at the
    floor). Here ``c`` is a pure function of the param's step count, worked out on the host
    (:func:`optimkit.stats.kron.fit_due`): no counter in the state, so a checkpoint resumes
    exactly, and a schedule must be a pure function of ``n`` too (kept in the param groups,
    it is saved by ``state_dict()``: ``torch.save`` needs it to pickle, which a lambda does
    not; ``UpdateProbabilitySchedule(...)`` does, and loads with ``torch.load``'s default
    ``weights_only=True`` once optimkit is imported). A probability outside
    ``(0, 1]``, given or returned, raises ``ValueError``. The fit is its own part
    (``kron_fit``, declared ``due=``): the executor decides on the host, from the CPU step
    counters, which params it is due on, and runs the step with the fit on those and
    without it on the others; compiled, that is two graphs (with and without the fit), each
    compiled once, so a step without a fit costs the momentum and ``P m^`` only.

    Reproduces ``pytorch_optimizer.Kron`` (4.1.0) with its defaults: lr=1e-3, momentum=0.9,
    weight_decay=0 (decoupled: the keyword ``decoupled_weight_decay`` is the reference's
    ``weight_decouple``), pre_conditioner_update_probability=None (its annealing schedule),
    max_size_triangular=8192, min_ndim_triangular=2, memory_save_mode=None,
    momentum_into_precondition_update=True, precondition_lr=0.1, precondition_init_scale=1.0,
    precondition_dtype=torch.float32.
    Variants: ``memory_save_mode`` ``"one_diag"`` (the largest dim diagonal),
    ``"smart_one_diag"`` (the largest dim, if strictly the largest), ``"all_diag"``;
    ``momentum_into_precondition_update=False`` fits the factors on ``g``;
    ``decoupled_weight_decay=False`` adds ``weight_decay * p`` to ``g`` (L2).

    Factors: 0-d params have one scalar factor, 1-D params a diagonal one (fewer dims than
    ``min_ndim_triangular``), a dim of size 1 or above ``max_size_triangular`` a diagonal one.
    State: ``step`` (which also decides the update schedule), ``momentum_buffer`` (the
    reference's), ``precond`` (every factor of the
    param in one tensor of its own shape, the reference's list ``Q`` flattened and joined) and
    ``probe_key``. The factors are kept in ``precondition_dtype`` (float32 by default, as the
    reference) whatever the param's dtype and the precision policy: a policy may narrow or
    quantize ``momentum_buffer`` only.

    FSDP2: the factors are fitted and applied on whole matrices. The momentum and the weight
    decay (``kron_momentum``, ``kron_l2``, ``kron_decay``) are element-wise and run on each
    rank's shards; the fit (``kron_fit``) and the direction (``kron_direction``) are
    whole-tensor parts (``whole=True``, ``optimkit/core/whole.py``): each param's owner rank
    (largest params first, dealt round-robin) receives the other ranks' shards of what the
    part reads. At a step that fits, ``kron_fit`` gathers the momentum (the gradient with
    ``momentum_into_precondition_update=False``: ``kron_fit_on_grads``) to the owner, which
    fits the factors and sends its params' new ``precond`` whole to every other rank; at every
    step ``kron_direction`` computes ``u = P m^`` on the owner from the full momentum and
    sends each rank its shard of ``u``. ``precond`` and ``probe_key`` are kept whole on every rank
    (plain tensors, the same on each, made by ``kron_factors``), so the direction only reads
    them. The direction runs right after the fit, on the same params: it reuses the momentum
    the fit gathered (the executor keeps the fields a whole part gathered for the whole part
    run straight after it), so the momentum is gathered once a step. Per step, on ``W``
    ranks, for a param of ``N`` elements with ``P`` numbers of factors (``2 d**2`` for a
    ``d x d`` matrix of dense factors), over all ranks (each rank sends and receives a
    ``W``-th): ``2 N (W - 1) / W`` elements (the momentum and ``u``), plus ``P (W - 1)``
    numbers of factors at a step that fits (and ``N (W - 1) / W`` more for the gradient with
    ``momentum_into_precondition_update=False``). With the default schedule that is every
    step of the first 500, then ~3 % of them: the factors, which at 8 ranks outweigh the
    gathered tensors, are sent at those steps only. The executor picks the due
    params on the host before the step, the same on every rank, and gathers only those for
    the fit (``ShardedBucket.select`` keeps their full shapes). Balancing reads only
    ``precond``: each rank balances its own copy, nothing is sent. With ``compile=True`` the
    element-wise parts are compiled around the whole ones, which run eagerly. Given the same
    gradients the sharded run equals the unsharded one bit for bit.

    Deterministic by construction, in every execution mode: the probes ``V`` come from a
    counter-based hash of the param's ``probe_key`` (from the group's ``probe_seed`` and the
    param's position in its group, set at its first step) and its step count, not from
    torch's generator (``optimkit.stats.kron.probes``). Params at the same position of two
    param groups with the same ``probe_seed`` draw the same probe stream (harmless: each
    factor sees i.i.d. probes over its steps); give the groups different seeds to separate
    them. Balancing is on a fixed schedule,
    decided on the host from the CPU step counters and run outside the compiled step.

    Deviations: the update counter is per param, from the param's own step count (the
    reference keeps one counter, in its first param group, driven by that group's step: the
    same schedule while every param steps together); the reference draws ``V`` from torch's
    global generator and balances with probability ``balance_prob=0.01`` per step that fits
    the factors, from numpy's global generator, where balancing here happens after every
    ``balance_every``-th step (100 by default; it changes ``Q`` only by rounding);
    the triangular solves run in float32 whatever ``precondition_dtype`` (as the reference);
    ``g`` with ``momentum_into_precondition_update=False`` is cast to ``precondition_dtype``
    (the reference's einsum would refuse mixed dtypes); the step count is per param (the
    reference's is per group); ``mu_dtype`` is the precision policies' job (``state_dtype``),
    ``maximize`` is not offered; at most 13 dims per param.
    """

    parts = (
        step_stat, kron_l2.only_if("decoupled_weight_decay", lambda on: not on), kron_momentum,
        kron_factors, kron_fit.only_if("momentum_into_precondition_update"),
        kron_fit_on_grads.only_if("momentum_into_precondition_update", lambda on: not on),
        kron_direction, kron_decay.only_if("decoupled_weight_decay"), sgd_step, kron_balance,
    )
    hypers = dict(
        lr=1e-3, momentum=0.9, weight_decay=0.0, decoupled_weight_decay=True,
        max_size_triangular=8192, min_ndim_triangular=2, memory_save_mode=None,
        momentum_into_precondition_update=True, precondition_lr=0.1,
        precondition_init_scale=1.0, precondition_dtype=torch.float32,
        precondition_update_probability=None, balance_every=100, probe_seed=0,
    )
    reference = "pytorch_optimizer.Kron"


# ------------------------------------------------- 2024-25: matrix-preconditioned optimizers


class SOAP(Optimizer):
    """SOAP, "ShampoO with Adam in the Preconditioner's eigenbasis" (Vyas, Morwani, Zhao,
    Kwun, Shapira, Brandfonbrener, Janson & Kakade 2024, arXiv:2409.11321, ICLR 2025, Alg. 3).

    Per param, each dimension ``i`` of size ``d_i <= max_precondition_dim`` keeps Shampoo's
    factor ``L_i`` (the running average of the gradient unfolded along ``i`` times its
    transpose; ``L = G G^T`` and ``R = G^T G`` for a matrix) and an eigenbasis ``Q_i`` of it.
    With ``R(x) = Q_L^T x Q_R`` (each preconditioned dimension contracted with its ``Q``):

    ``m = beta1 m + (1 - beta1) g``; ``v = beta2 v + (1 - beta2) R(g)**2``;
    ``p = p - lr sqrt(1 - beta2**s) / (1 - beta1**s) R^-1(R(m) / (sqrt(v) + eps))``;
    ``p = p (1 - lr weight_decay)``; ``L_i = b L_i + (1 - b) G_(i) G_(i)^T``
    (``b = shampoo_beta``, ``beta2`` when None).
    ``s = t - 1``: a param's first step (``t = 1``) only accumulates the factors and computes
    the eigenbases (``torch.linalg.eigh``); the param does not move, nor decay. Every
    ``precondition_frequency`` steps after that (after ``t = 11, 21, ...`` with 10) the
    eigenbases are refreshed by one power iteration and a QR decomposition, ``v`` reordered
    with the sorted eigenvalue estimates.

    Reproduces ``pytorch_optimizer.SOAP`` (4.1.0), which follows the authors' ``soap.py``, with
    its defaults: lr=3e-3, betas=(0.95, 0.95), shampoo_beta=None, eps=1e-8, weight_decay=1e-2,
    precondition_frequency=10, max_precondition_dim=10000, precondition_1d=False (1-D params:
    plain Adam in the unrotated space; 0-d params always). Variants: ``precondition_1d=True``
    (a ``[d, d]`` factor for vectors of ``d <= max_precondition_dim``), ``shampoo_beta``.
    State: ``step`` (counting the first, initialising step), ``grad_avg`` (``R(m)``: the
    reference's ``exp_avg`` rotated into the eigenbases), ``sqr_avg`` (``exp_avg_sq``, rotated
    there too), ``factors`` and ``eigenbases`` (the reference's ``GG`` and ``Q`` lists, packed
    per param into one 1-D tensor each: see ``optimkit/stats/preconditioned.py``).

    Schedule: the eigenbases are computed by a host-gated part (``soap_eigenbases``,
    ``every="precondition_frequency"``, ``start=1``) after the compiled step, eagerly, on the
    params whose CPU step count is due; the compiled step itself never recompiles for it.
    Precision: ``state_dtype`` and ``state_bits`` apply to the moments ``grad_avg`` and
    ``sqr_avg``; the factors and eigenbases stay exact (the param's dtype, float32 for
    bf16/fp16 params: ``eigh``/``qr`` need it, and a basis must stay orthogonal). Keeping ``m``
    rotated matters there: stored unrotated in bf16 (the reference's layout), its rounding
    error, rotated at every step, landed in eigen-directions where ``v`` is tiny and the loss
    of the policy suite's least-squares fit rose at step 4; rotated, bf16 and 8-bit moments
    follow the fp32 run to 3 digits over 40 steps. An ``eigh`` that fails in float32 is
    retried in float64, with a warning said once.

    Deviations: ``m`` is kept rotated (``grad_avg = R(m)``, updated with ``R(g)`` and turned
    into each new basis at a refresh), where the reference keeps it unrotated and rotates it
    at every step: the same update up to rounding, with one rotation (two matmuls per matrix)
    less per step. The step count is per param (the reference counts per param group: a param
    whose first gradient comes late starts its own initialising step there); ``merge_dims``,
    ``data_format``, ``normalize_gradient`` and ``correct_bias=False`` are not offered;
    factors of bf16/fp16 params are float32 (the reference keeps the grad's dtype).

    FSDP2: the preconditioner is computed on whole matrices. ``soap_direction`` and
    ``soap_eigenbases`` are whole-tensor parts (``whole=True``, ``optimkit/core/whole.py``):
    each param has one owner rank (largest params first, dealt round-robin), which receives
    the other ranks' shards of the gradient, ``grad_avg`` and ``sqr_avg``, computes the
    rotations, the update and the factors on the full tensors, and sends each rank its shard
    of the update and of both moments; ``soap_step`` runs on the shards. ``factors`` and
    ``eigenbases`` are kept whole on every rank (plain tensors, the same on each): at every
    step the owner sends its params' new ``factors`` whole to every other rank, and at each
    refresh (a param's first step, then every ``precondition_frequency``) the new
    ``eigenbases``, gathering and sending back the moments once more. Per step, on ``W``
    ranks, for a param of ``N`` elements with factors of ``F`` numbers (``2 d**2`` for a
    ``d x d`` matrix), over all ranks: ``6 N (W - 1) / W`` elements of the gradient and the
    moments (each rank sends and receives a ``W``-th), and ``F (W - 1)`` numbers of factors
    from the owner (at ``W = 8``, for a square matrix: ``14 N`` against ``5.25 N``); a refresh
    adds ``4 N (W - 1) / W`` and ``F (W - 1)``. Given the same
    gradients the sharded run equals the unsharded one bit for bit (the eigenbases are
    computed factor by factor, never batched, so that a param's numbers do not depend on
    which params its owner holds).
    """

    parts = (step_stat, soap_bases, soap_direction, soap_step, soap_eigenbases)
    hypers = dict(
        lr=3e-3, betas=(0.95, 0.95), shampoo_beta=None, eps=1e-8, weight_decay=1e-2,
        precondition_frequency=10, max_precondition_dim=10000, precondition_1d=False,
    )
    reference = "pytorch_optimizer.SOAP"


__all__ = [
    name for name, value in dict(globals()).items()
    if not name.startswith("_") and isinstance(value, type) and issubclass(value, Optimizer)
    and value.__module__ == __name__
]
