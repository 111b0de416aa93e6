"""Every optimizer, as a recipe of stats and steppers.

A recipe lists its parts and its defaults; the docstring gives the update rule, the paper, the
reference it reproduces and every variant flag. Keyword names follow torch.optim.
"""

from __future__ import annotations

from . import precision  # noqa: F401  (provides the policies of state_dtype, state_bits...)
from .core.optimizer import Optimizer
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
from .stats.mixing import adan_moments, mars_direction, slow_grad_avg
from .stats.preconditioned import soap_direction, soap_eigenbases
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
from .steppers.mixing import adan_step, ademamix_step, mars_step, proximal_decay
from .steppers.preconditioned import soap_step
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
    stored in 8 bits (``state_bits=8``), as bitsandbytes' ``AdEMAMix8bit`` does.

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
    factors of bf16/fp16 params are float32 (the reference keeps the grad's dtype). Not on
    FSDP2 yet: the factors need whole matrices.
    """

    parts = (step_stat, soap_direction, soap_step, soap_eigenbases)
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
