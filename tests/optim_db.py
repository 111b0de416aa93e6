"""The test database: how the suite checks every optimizer of the catalogue.

One :class:`OptimizerInfo` per entry of ``optimkit/registry.py`` (in the spirit of torch's
``common_optimizers.py``): the reference implementation it reproduces and how to compare state
with it, the settings the parity tests run, tolerances, keywords that make it converge on the
toy problems, the peers ``benchmarks/step_time.py`` times it against, and the tests that do
not apply to it. ``conftest.optims`` parametrizes a test over this list and applies the skips.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

import optimkit.registry as registry
from optimkit.core import Part
from optimkit.stats import (
    accumulate_grad,
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
    grad_friction,
    laprop_direction,
    layer_normalize,
    layer_sqr_avg,
    lion_direction,
    max_layer_sqr_avg,
    max_sqr_avg,
    momentum,
    rms_normalize,
    step_stat,
    sum_sqr_grad,
    update_weight_decay,
    weight_decay,
)
from optimkit.stats.dadapt import dadapt_adam_stats, prodigy_grad_avg, prodigy_stats
from optimkit.stats.factored import adafactor_direction
from optimkit.stats.kron import (
    UpdateProbabilitySchedule,
    kron_balance,
    kron_decay,
    kron_direction,
    kron_factors,
    kron_fit,
    kron_l2,
    kron_momentum,
)
from optimkit.stats.mixing import adan_moments, mars_direction, slow_grad_avg
from optimkit.stats.orthogonal import muon_momentum, muon_step, orthogonalize
from optimkit.stats.preconditioned import soap_bases, soap_direction, soap_eigenbases
from optimkit.steppers import (
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
from optimkit.steppers.dadapt import (
    dadapt_adam_step,
    prodigy_sign_free_step,
    prodigy_step,
)
from optimkit.steppers.factored import adafactor_step
from optimkit.steppers.mixing import adan_step, ademamix_step, mars_step, proximal_decay
from optimkit.steppers.preconditioned import soap_step
from optimkit.steppers.schedule_free import (
    schedule_free_adam_eval,
    schedule_free_adam_step,
    schedule_free_adam_train,
    schedule_free_sgd_eval,
    schedule_free_sgd_step,
    schedule_free_sgd_train,
)


@dataclasses.dataclass(frozen=True)
class Reference:
    """The implementation an optimizer reproduces, as the tests build it.

    ``target`` is ``"module:attr"``; test-only packages (torch_optimizer, pytorch_ranger) and the
    naive references under ``tests/reference`` are imported only when it is built.
    """

    target: str
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # optimkit state name -> the reference's state name, for comparing state; or a function
    # (reference state, param group) -> our value, where the reference stores it differently.
    state: Mapping[str, str | Callable[[Mapping[str, Any], Mapping[str, Any]], Any]] = (
        dataclasses.field(default_factory=dict)
    )

    def build(self, params, **kwargs) -> torch.optim.Optimizer:
        return _load(self.target)(params, **{**{self.rename.get(k, k): v
                                                for k, v in kwargs.items()}, **self.fixed})


@dataclasses.dataclass(frozen=True)
class Peer:
    """Another library's implementation of the same algorithm, timed by step_time.py."""

    label: str
    target: str  # "module:attr"
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def factory(self):
        """The optimizer class, or None where its package is not installed."""
        try:
            return _load(self.target)
        except (ImportError, AttributeError):
            return None


def torch_peers(name: str, fused: bool = False, **kwargs: Any) -> tuple[Peer, ...]:
    """torch.optim's ``name`` as a for-loop, foreach and (``fused``) fused implementation."""
    options = [("for-loop", {"foreach": False}), ("foreach", {"foreach": True})]
    if fused:
        options.append(("fused", {"fused": True}))
    return tuple(Peer(f"torch {label}", f"torch.optim:{name}", {**kwargs, **extra})
                 for label, extra in options)


def library_peers(name: str, **kwargs: Any) -> tuple[Peer, ...]:
    """``name`` in torch_optimizer and pytorch_optimizer (each timed where installed, built
    with ``kwargs``); pytorch_optimizer's twice, over tensor lists (``foreach``) and per
    param."""
    return (
        Peer("torch_optimizer", f"torch_optimizer:{name}", kwargs),
        Peer("pytorch_optimizer foreach", f"pytorch_optimizer:{name}", {**kwargs, "foreach": True}),
        Peer("pytorch_optimizer loop", f"pytorch_optimizer:{name}", {**kwargs, "foreach": False}),
    )


def _load(target: str):
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    for name in attr.split("."):
        value = getattr(value, name)
    return value


@dataclasses.dataclass(frozen=True)
class OptimizerInfo:
    """How the suite tests one optimizer of the catalogue (``name`` is its registry name)."""

    name: str
    reference: Reference
    # Keyword sets the parity tests run against the reference (besides ``pinned``).
    settings: tuple[Mapping[str, Any], ...] = ({},)
    # Passed in every parity run, where optimkit's defaults differ from the reference's.
    pinned: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Relative tolerance of the parity test, per dtype.
    rtol: Mapping[torch.dtype, float] = dataclasses.field(
        default_factory=lambda: {torch.float64: 1e-7, torch.float32: 1e-4}
    )
    # Relative tolerance of test_compile's compiled == eager check (fp32, 120 steps): inductor
    # rounds an ulp otherwise than eager kernels (benchmarks/compiled_drift.py), which a step
    # that estimates its own lr (Prodigy) amplifies.
    compiled_rtol: float = 1e-5
    # Keywords that let it minimise the toy problems of the test suite, in ``converge_steps``
    # steps, with a cosine-annealed lr unless ``converge_anneal`` is False.
    converge: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"lr": 0.1})
    converge_steps: int = 1500  # 22 of 36 need no more
    converge_anneal: bool = True
    # Tests that do not apply, by test function name ("<test>[<case id>]": one case of it),
    # with the reason (torch's DecorateInfo).
    skips: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Implementations of the same algorithm benchmarks/step_time.py times, and the keywords it
    # builds ours with.
    peers: tuple[Peer, ...] = ()
    bench_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def entry(self) -> registry.Entry:
        return registry.get(self.name)

    @property
    def factory(self) -> Callable[..., torch.optim.Optimizer]:
        return self.entry.factory

    def __repr__(self) -> str:
        return f"OptimizerInfo({self.name!r})"


# What does not apply to a recipe with one d over all its params (Prodigy, D-Adaptation).
_ONE_ESTIMATE = {
    "test_param_groups_with_different_hypers_equal_separate_optimizers": (
        "one d is estimated over every group together: two optimizers estimate two"
    ),
    # (a scenario of tests/test_distributed.py, not a test: its ZeRO cases are left out)
    "zero": (
        "ZeRO gives each rank an optimizer over its share of the params: each would estimate a "
        "d of its own"
    ),
    "test_mixed_float32_and_float64_params": (
        "one d is estimated over all the params: a param stepped alone sees another d"
    ),
}

_TORCH_ADAM_STATE = {"grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq", "step": "step"}
_TORCH_AMSGRAD_STATE = {**_TORCH_ADAM_STATE, "max_sqr_avg": "max_exp_avg_sq"}
_SGD_MOMENTUM = {"momentum_buffer": "momentum_buffer"}
_RALAMB_STATE = {"step": "step", "grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq"}


# QHAdam's reference keeps the bias-corrected averages and w_t = sum_{i<t} beta**i
# (``beta1_weight``) instead of the step; since 1 - beta**t = (1 - beta) * w_t, Adam's moments
# and the step follow from them exactly.
def _qhadam_moment(name: str, index: int):
    def ours(state, group):
        beta = group["betas"][index]
        return state[name] * ((1 - beta) * state[f"beta{index + 1}_weight"])

    return ours


def _packed(name: str):
    # SOAP's GG / Q lists, packed as optimkit keeps them (tests/reference/per_group_steps.py)
    def ours(state, group):
        from reference.per_group_steps import packed

        return packed(name)(state, group)

    return ours


# the model of the distributed tests, where DDP's and FSDP2's runs of SOAP part from one
# process's (tests/test_distributed.py)
_SOAP_NULL_SPACE = (
    "the eigenbasis of a rank-deficient factor is not unique (the [1, 3] layer's 3x3 factor "
    "has rank 1 after one step): the last-bit difference between an all-reduced (DDP) or "
    "reduce-scattered (FSDP2) gradient and one process's picks another basis of its null "
    "space, and the runs part by ~3 % (pytorch_optimizer.SOAP too: 2.9 % from a 1e-15 "
    "relative change of the gradients); ZeRO checkpoints resume exactly"
)


def _rotated_avg(state, group):
    from reference.per_group_steps import rotated_avg

    return rotated_avg(state, group)


def _qhadam_step(state, group):
    beta2 = group["betas"][1]
    return math.log(1 - (1 - beta2) * state["beta2_weight"]) / math.log(beta2)


def _theirs_or_empty(name: str):
    """torch.optim.Adafactor's ``name`` state, or an empty tensor where torch keeps none (a
    matrix has no ``variance``, a vector no ``row_var``/``col_var``; optimkit keeps every name,
    the unused ones empty)."""

    def ours(state, group):
        return state.get(name, torch.zeros(0))

    return ours


_ADAFACTOR_FSDP2 = (
    "a matrix's column averages run over the rows of every dim-0 shard: FSDP2 params of "
    "ndim >= 2 are refused (NotImplementedError), see the Adafactor docstring"
)


DB: list[OptimizerInfo] = [
    OptimizerInfo(
        "sgd",
        Reference("torch.optim:SGD", state=_SGD_MOMENTUM),
        settings=(
            {"lr": 0.1},
            {"lr": 0.05, "momentum": 0.9},
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        ),
        converge={"lr": 1e-3, "momentum": 0.9},
        converge_steps=3000,
        peers=torch_peers("SGD", fused=True, lr=1e-3, momentum=0.9),
        bench_kwargs={"momentum": 0.9},
    ),
    OptimizerInfo(
        "sgd-momentum",
        Reference("torch.optim:SGD", fixed={"momentum": 0.9}, state=_SGD_MOMENTUM),
        settings=({}, {"lr": 0.05, "nesterov": True, "weight_decay": 0.01}),
        converge={"lr": 1e-3},
        converge_steps=3000,
    ),
    OptimizerInfo(
        "adagrad",
        Reference("torch.optim:Adagrad", state={"sqr_sum": "sum", "step": "step"}),
        settings=(
            {},
            {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1},
            {"initial_accumulator_value": 0.1, "eps": 1e-6},
        ),
        # Adagrad's accumulator anneals the step already; a cosine decay on top stalls it.
        converge={"lr": 0.3},
        converge_steps=6000,
        converge_anneal=False,
        peers=torch_peers("Adagrad", fused=True),
    ),
    OptimizerInfo(
        "rmsprop",
        Reference(
            "torch.optim:RMSprop",
            state={
                "sqr_avg": "square_avg", "grad_avg": "grad_avg",
                "momentum_buffer": "momentum_buffer", "step": "step",
            },
        ),
        settings=(
            {},
            {"centered": True, "weight_decay": 0.1},
            {"momentum": 0.9, "alpha": 0.9},
            {"momentum": 0.5, "centered": True, "eps": 1e-4},
        ),
        converge={"lr": 0.01},
        converge_steps=3000,
        peers=torch_peers("RMSprop"),
    ),
    OptimizerInfo(
        "adam",
        # torch.optim.Adam; with cautious=True the naive C-Adam of tests/reference/cautious.py
        Reference("reference.cautious:Adam", state=_TORCH_AMSGRAD_STATE),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"amsgrad": True, "betas": (0.8, 0.99)},
            {"weight_decay": 0.1, "decoupled_weight_decay": True},
            {"cautious": True},
            {"cautious": True, "amsgrad": True, "lr": 1e-2, "weight_decay": 0.1},
        ),
        peers=torch_peers("Adam", fused=True),
    ),
    OptimizerInfo(
        "adamw",
        Reference("reference.cautious:AdamW", state=_TORCH_AMSGRAD_STATE),
        settings=({}, {"lr": 1e-2, "weight_decay": 0.5}, {"amsgrad": True},
                  {"cautious": True, "lr": 1e-2, "weight_decay": 0.5}),
        converge={"lr": 0.1, "weight_decay": 0.0},  # decay would move the minimum
        peers=torch_peers("AdamW", fused=True),
    ),
    OptimizerInfo(
        "amsgrad",
        Reference("reference.cautious:Adam", fixed={"amsgrad": True},
                  state=_TORCH_AMSGRAD_STATE),
        settings=({}, {"lr": 1e-2, "weight_decay": 0.1}, {"cautious": True}),
    ),
    OptimizerInfo(
        "radam",
        Reference("torch.optim:RAdam", state=_TORCH_ADAM_STATE),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"weight_decay": 0.1, "decoupled_weight_decay": True, "betas": (0.9, 0.99)},
        ),
        # Its first steps are momentum SGD, which a Rosenbrock gradient throws far off.
        converge={"lr": 0.1, "degenerated_to_sgd": False},
        converge_steps=3000,
        peers=torch_peers("RAdam") + library_peers("RAdam"),
    ),
    OptimizerInfo(
        "qhadam",
        Reference(
            "torch_optimizer:QHAdam",
            rename={"decoupled_weight_decay": "decouple_weight_decay"},
            state={
                "grad_avg": _qhadam_moment("exp_avg", 0),
                "sqr_avg": _qhadam_moment("exp_avg_sq", 1),
                "step": _qhadam_step,
            },
        ),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"weight_decay": 0.1, "decoupled_weight_decay": True, "nus": (0.5, 0.8)},
            {"nus": (1.0, 1.0), "betas": (0.9, 0.99)},
            {"nus": (0.0, 0.3), "eps": 1e-4},
        ),
        # the paper's recommendation; the reference's nus=(1, 1) is Adam
        pinned={"nus": (0.7, 1.0), "betas": (0.995, 0.999)},
        converge_steps=3000,
        peers=library_peers("QHAdam"),
    ),
    OptimizerInfo(
        "novograd",
        Reference(
            # torch_optimizer.NovoGrad, its layer moment kept in the param dtype (it hard-codes
            # float32, which would round every float64 run to float32 precision)
            "reference.novograd:NovoGrad",
            state={
                "grad_avg": "exp_avg", "layer_sqr_avg": "exp_avg_sq",
                "max_layer_sqr_avg": "max_exp_avg_sq", "step": "step",
            },
        ),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"grad_averaging": True, "betas": (0.9, 0.5)},
            {"amsgrad": True, "weight_decay": 0.01},
            {"amsgrad": True, "grad_averaging": True, "betas": (0.95, 0.0)},
        ),
        # the paper's; the reference's beta2=0 averages nothing
        pinned={"betas": (0.95, 0.98)},
        converge={"lr": 1e-2, "grad_averaging": True},
        converge_steps=3000,
        peers=library_peers("NovoGrad"),
    ),
    OptimizerInfo(
        "diffgrad",
        Reference("torch_optimizer:DiffGrad",
                  state={**_TORCH_ADAM_STATE, "prev_grad": "previous_grad"}),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"betas": (0.8, 0.99), "eps": 1e-6},
        ),
        # the friction (>= 0.5) shrinks the steps: a larger lr than Adam's
        converge={"lr": 0.1},
        peers=library_peers("DiffGrad"),
    ),
    OptimizerInfo(
        "adamod",
        Reference("torch_optimizer:AdaMod",
                  state={**_TORCH_ADAM_STATE, "step_size_avg": "exp_avg_lr"}),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"beta3": 0.9, "betas": (0.8, 0.99)},
        ),
        # beta3 = 0.9 shortens the built-in warm-up (see the AdaMod docstring)
        converge={"lr": 0.1, "beta3": 0.9},
        peers=library_peers("AdaMod"),
    ),
    OptimizerInfo(
        "deepmemory",
        Reference(
            "reference.deepmemory:DeepMemory",
            state={
                **_TORCH_ADAM_STATE, "step_size_avg": "exp_avg_lr", "prev_grad": "previous_grad",
            },
        ),
        settings=(
            {},
            {"version": 0, "weight_decay": 0.1},
            {"len_memory": 10, "betas": (0.8, 0.99), "eps": 1e-8},
        ),
        converge={"lr": 0.1, "len_memory": 20},
        converge_steps=3000,
        skips={
            "test_lr_scheduler_drives_the_live_param_groups": (
                "its step blends in the remembered step sizes, so lr=0 still moves the params"
            ),
        },
    ),
    OptimizerInfo(
        "lars",
        Reference("reference.larc:LARC", fixed={"clip": False}, state=_SGD_MOMENTUM),
        pinned={"momentum": 0.9, "trust_coefficient": 0.001},
        settings=(
            {"lr": 1.0},
            {"lr": 2.0, "weight_decay": 5e-3, "nesterov": True},
            {"lr": 0.5, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1, "eps": 1e-3},
            {"lr": 1.0, "momentum": 0.0, "trust_coefficient": 0.01},
        ),
        converge={"lr": 5.0, "trust_coefficient": 0.01},
        # torch_optimizer's LARS scales only when weight_decay != 0 and defaults to no
        # momentum: the same algorithm needs both, for every implementation timed
        peers=library_peers("LARS", momentum=0.9, weight_decay=1e-4, trust_coefficient=1e-3),
        bench_kwargs={"weight_decay": 1e-4},
    ),
    OptimizerInfo(
        "larc",
        Reference("reference.larc:LARC", fixed={"clip": True}, state=_SGD_MOMENTUM),
        pinned={"momentum": 0.9},
        # With lr around 0.01 the clip min(local / lr, 1) binds for some params and not others.
        settings=(
            {"lr": 0.01},
            {"lr": 0.02, "weight_decay": 0.05, "nesterov": True},
            {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3, "trust_coefficient": 0.05},
        ),
        converge={"lr": 0.05},
        converge_steps=3000,
    ),
    OptimizerInfo(
        "lamb",
        Reference("torch_optimizer:Lamb", state=_RALAMB_STATE),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1, "debias": True},
            # A clamp below ||w|| of the larger params, so it binds.
            {"clamp_value": 1.5, "betas": (0.8, 0.99), "eps": 1e-4},
            {"adam": True, "weight_decay": 0.01},
        ),
        peers=library_peers("Lamb"),
    ),
    OptimizerInfo(
        "ralamb",
        Reference("reference.ralamb:Ralamb", state=_RALAMB_STATE),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"betas": (0.8, 0.99), "eps": 1e-6},
        ),
        # As for RAdam: the momentum-SGD warm-up steps overshoot on these surfaces.
        converge={"lr": 0.1, "degenerated_to_sgd": False},
        converge_steps=3000,
    ),
    OptimizerInfo(
        "ranger",
        Reference(
            "pytorch_ranger:Ranger",
            rename={"n_sma_threshold": "N_sma_threshhold"},
            # its Lookahead counts the same per-param step as RAdam
            state={**_RALAMB_STATE, "slow_param": "slow_buffer"},
        ),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"k": 4, "alpha": 0.8, "betas": (0.9, 0.99), "n_sma_threshold": 4.0},
        ),
        # pytorch_ranger computes in float32 even for float64 params (p.data.float()).
        rtol={torch.float64: 1e-5, torch.float32: 1e-4},
        # As for RAdam: the momentum-SGD warm-up steps overshoot on these surfaces.
        converge={"lr": 0.1, "degenerated_to_sgd": False},
        converge_steps=3000,
        peers=library_peers("Ranger"),
    ),
    OptimizerInfo(
        "rangerlars",
        Reference("reference.rangerlars:RangerLars",
                  state={**_RALAMB_STATE, "slow_param": "slow_buffer"}),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"k": 3, "alpha": 0.3},
        ),
        # As for RAdam: the momentum-SGD warm-up steps overshoot on these surfaces.
        converge={"lr": 0.3, "degenerated_to_sgd": False},
    ),
    OptimizerInfo(
        "lookahead",
        Reference(
            "reference.lookahead:LookaheadSGD",
            state={**_SGD_MOMENTUM, "slow_param": "slow_buffer", "step": "la_step"},
        ),
        settings=({}, {"lr": 0.05, "k": 3, "alpha": 0.8, "weight_decay": 0.01}),
        converge={"lr": 3e-3},
    ),
    OptimizerInfo(
        "lion",
        Reference("reference.lion:Lion", state={"grad_avg": "exp_avg"}),
        settings=(
            {},
            {"lr": 1e-3, "weight_decay": 0.1},
            {"lr": 3e-4, "betas": (0.95, 0.98)},
            {"cautious": True, "lr": 1e-3, "weight_decay": 0.1},
        ),
        # every element moves by lr: a small lr, annealed, lands on the minimum
        converge={"lr": 1e-2},
        skips={
            "test_nan_gradients_do_not_crash_and_the_checkpoint_warns": (
                "torch.sign(nan) is 0: a NaN gradient reaches the momentum, not the params"
            ),
        },
        peers=library_peers("Lion"),
    ),
    # ---- the 2023-25 element-wise optimizers
    OptimizerInfo(
        "nadamw",
        Reference("torch.optim:NAdam", fixed={"decoupled_weight_decay": True},
                  state={**_TORCH_ADAM_STATE, "mu_product": "mu_product"}),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"betas": (0.8, 0.99), "momentum_decay": 0.01, "eps": 1e-6, "weight_decay": 0.01},
        ),
        converge={"lr": 0.05},
        converge_steps=3000,
        # (pytorch_optimizer.NAdam is torch's class, re-exported)
        peers=torch_peers("NAdam", decoupled_weight_decay=True),
    ),
    OptimizerInfo(
        "nadam",
        Reference("torch.optim:NAdam", state={**_TORCH_ADAM_STATE, "mu_product": "mu_product"}),
        settings=({}, {"lr": 1e-2, "weight_decay": 0.1}),
        converge={"lr": 0.05},
        converge_steps=3000,
        peers=torch_peers("NAdam"),
    ),
    OptimizerInfo(
        "adopt",
        # pytorch_optimizer.ADOPT, stepped per param with its own step count
        Reference(
            "reference.per_group_steps:ADOPT",
            rename={"decoupled_weight_decay": "weight_decouple"}, fixed={"foreach": False},
            state={"grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq", "step": "step"},
        ),
        # the first setting with weight decay is the distributed suite's: cautious there, so
        # FSDP2 shards check the mask's per-tensor counts against the unsharded run
        settings=(
            {},
            {"cautious": True, "lr": 1e-2, "weight_decay": 0.01, "eps": 1e-3},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"weight_decay": 0.1, "decoupled_weight_decay": True, "betas": (0.8, 0.99)},
            {"cautious": True},
        ),
        # the clip (t**0.25) bounds each element's step near lr: a large lr, annealed
        converge={"lr": 0.5},
        skips={
            "test_grad_scaler_skips_steps_with_inf_and_applies_the_others": (
                "its first step only sets the second moment: the params move from the second"
            ),
        },
        peers=library_peers("ADOPT"),
    ),
    OptimizerInfo(
        "laprop",
        # pytorch_optimizer.LaProp, stepped per param with its own step count
        Reference(
            "reference.per_group_steps:LaProp", rename={"amsgrad": "ams_bound"},
            fixed={"foreach": False},
            state={"grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq", "lr_avg": "exp_avg_lr_1",
                   "max_sqr_avg": "max_exp_avg_sq", "step": "step"},
        ),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"amsgrad": True, "betas": (0.8, 0.99), "eps": 1e-8},
            {"cautious": True, "lr": 1e-3},
        ),
        converge={"lr": 0.05},
        peers=library_peers("LaProp"),
    ),
    # ---- 2023-25: optimizers that mix averages (issue 23). pytorch_optimizer counts steps
    # per param group: tests/reference/per_group_steps.py steps each param with its own count.
    OptimizerInfo(
        "adan",
        Reference(
            "reference.per_group_steps:Adan",
            rename={"no_prox": "weight_decouple"},
            state={
                "step": "step", "grad_avg": "exp_avg", "grad_diff_avg": "exp_avg_diff",
                "sqr_avg": "exp_avg_sq",
                # it keeps the negated last gradient
                "prev_grad": lambda state, group: -state["previous_grad"],
            },
        ),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"lr": 1e-2, "weight_decay": 0.1, "no_prox": True},
            {"betas": (0.9, 0.8, 0.95), "eps": 1e-6},
        ),
        converge={"lr": 0.05},
        peers=library_peers("Adan")[1:],
    ),
    OptimizerInfo(
        "ademamix",
        Reference(
            "reference.per_group_steps:AdEMAMix",
            rename={"decoupled_weight_decay": "weight_decouple"},
            state={"step": "step", "grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq",
                   "slow_grad_avg": "exp_avg_slow"},
        ),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"weight_decay": 0.1, "decoupled_weight_decay": True, "alpha": 2.0},
            # the warm-ups of alpha and beta3, over fewer steps than the test runs
            {"t_alpha_beta3": 50.0, "betas": (0.8, 0.99, 0.999)},
        ),
        # beta3 = 0.9999 averages over 10000 steps, longer than the 3000 of these problems
        converge={"lr": 0.05, "betas": (0.9, 0.999, 0.999)},
        converge_steps=3000,
        peers=library_peers("AdEMAMix")[1:],
    ),
    OptimizerInfo(
        "mars",
        Reference("reference.per_group_steps:MARS",
                  state={"step": "step", "grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq",
                         "last_grad": "last_grad"}),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1, "gamma": 0.1},
            {"optimize_1d": True, "betas": (0.9, 0.95)},
            {"lr_1d": 1e-2, "betas_1d": (0.8, 0.99), "weight_decay_1d": 0.0, "eps": 1e-6},
        ),
        converge={"lr": 0.02, "lr_1d": 0.02, "weight_decay_1d": 0.0},
        skips={
            "test_lr_scheduler_drives_the_live_param_groups": (
                "the 1-D params step with lr_1d, a hyper-parameter of its own: lr=0 leaves "
                "them moving (see the MARS docstring)"
            ),
        },
        peers=library_peers("MARS")[1:],
    ),
    # ---- learning-rate-free: one d over every param of every group (issue 22: barriers);
    # the parity test compares the d estimate in the param groups too
    OptimizerInfo(
        "prodigy",
        Reference(
            "prodigyopt:Prodigy",
            state={"step": "step", "grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq",
                   # the reference flattens s and p0 (p0 of an all-zero param: a 0-d zero)
                   "s": lambda state, group: state["s"].view_as(state["exp_avg_sq"]),
                   "p0": lambda state, group: state["p0"].expand(
                       state["exp_avg_sq"].numel()).view_as(state["exp_avg_sq"])},
        ),
        # its d estimate carries inductor's ulp differences: 1.5e-5 on one element at step 120
        compiled_rtol=1e-4,
        settings=(
            {},
            {"weight_decay": 0.1, "use_bias_correction": True, "safeguard_warmup": True},
            {"weight_decay": 0.1, "decouple": False, "betas": (0.0, 0.99), "d_coef": 0.5},
            {"growth_rate": 1.02, "d0": 1e-4, "beta3": 0.9, "eps": 1e-6},
        ),
        converge={"lr": 1.0},
        # d is a ratio of two sums over every param, which a compiled graph adds in inductor's
        # order: over 120 steps Prodigy's growing d/d0 scales that last-bit difference up in
        # s (1.03e-5 on one element, with the reference's abs().sum() for sum(|s|) eagerly)
        skips=_ONE_ESTIMATE,
        peers=(Peer("prodigyopt", "prodigyopt:Prodigy"),
               Peer("pytorch_optimizer", "pytorch_optimizer:Prodigy")),
    ),
    OptimizerInfo(
        "dadapt-adam",
        Reference(
            "dadaptation:DAdaptAdam",
            state={"step": "step", "grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq", "s": "s"},
        ),
        settings=(
            {},
            {"weight_decay": 0.1, "decouple": True, "use_bias_correction": True},
            {"weight_decay": 0.1, "betas": (0.8, 0.99), "growth_rate": 1.05, "d0": 1e-4},
        ),
        converge={"lr": 1.0},
        skips=_ONE_ESTIMATE,
        peers=(Peer("dadaptation", "dadaptation:DAdaptAdam"),
               Peer("pytorch_optimizer", "pytorch_optimizer:DAdaptAdam")),
    ),
    OptimizerInfo(
        "adafactor",
        Reference("torch.optim:Adafactor", fixed={"foreach": True},
                  state={"step": "step", "row_var": _theirs_or_empty("row_var"),
                         "col_var": _theirs_or_empty("col_var"),
                         "variance": _theirs_or_empty("variance")}),
        settings=(
            {},
            {"lr": 0.05, "weight_decay": 0.1, "d": 2.0, "beta2_decay": -0.5,
             "eps": (1e-20, 1e-2)},
        ),
        # the relative step shrinks as 1 / sqrt(t): Rosenbrock's valley takes 5000 steps
        converge={"lr": 0.1, "beta2_decay": -0.5},
        converge_steps=5000,
        skips={
            "test_fsdp2_matches_the_unsharded_run": _ADAFACTOR_FSDP2,
            "test_checkpoint_resumes_exactly_in_a_new_process_group[dcp-load]": _ADAFACTOR_FSDP2,
            "test_flat_mode_steps_as_one_tensor": (
                "its factored moment reads each param's shape (shaped=True): flat mode steps "
                "it per tensor over the buffer's views"
            ),
        },
        peers=torch_peers("Adafactor"),
    ),
    # ---- Schedule-Free: train()/eval() transitions (issue 22); the reference's counters are
    # per param group, tests/reference/schedulefree.py steps each param with its own
    OptimizerInfo(
        "schedulefree-adamw",
        Reference("reference.schedulefree:AdamW",
                  state={"z": "z", "sqr_avg": "exp_avg_sq", "step": "k", "lr_max": "lr_max",
                         "weight_sum": "weight_sum"}),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"warmup_steps": 20, "r": 1.0, "weight_lr_power": 1.0, "betas": (0.8, 0.99)},
            {"eps": 1e-6, "weight_lr_power": 0.0, "lr": 1e-3},
        ),
        # no schedule (the point of it); judged at the averaged params (opt.eval())
        converge={"lr": 0.05},
        converge_steps=3000,
        converge_anneal=False,
        peers=(Peer("schedulefree AdamWScheduleFree", "schedulefree:AdamWScheduleFree"),
               Peer("schedulefree reference", "schedulefree:AdamWScheduleFreeReference")),
    ),
    OptimizerInfo(
        "schedulefree-sgd",
        Reference("reference.schedulefree:SGD",
                  state={"z": "z", "step": "k", "lr_max": "lr_max", "weight_sum": "weight_sum"}),
        settings=(
            {},
            {"lr": 0.1, "weight_decay": 0.01, "warmup_steps": 10},
            {"momentum": 0.5, "r": 0.5, "lr": 0.3},
        ),
        # the fast form (x implicit, y updated in place) rounds otherwise than the reference's
        # explicit x and y: with lr=1 over 110 fp32 steps, ~2e-6 on entries near 0
        rtol={torch.float64: 1e-7, torch.float32: 5e-4},
        converge={"lr": 0.01},
        converge_steps=3000,
        converge_anneal=False,
        peers=(Peer("schedulefree SGDScheduleFree", "schedulefree:SGDScheduleFree"),),
    ),
    OptimizerInfo(
        "muon",
        # torch.optim.Muon on the params of 2+ dims (viewed as [shape[0], rest]), Keller
        # Jordan's SingleDeviceMuonWithAuxAdam's AdamW on the rest (tests/reference/muon.py)
        Reference("reference.muon:MuonWithAuxAdam",
                  state={"momentum_buffer": "momentum_buffer", "grad_avg": "exp_avg",
                         "sqr_avg": "exp_avg_sq", "step": "step"}),
        settings=(
            {},
            {"adjust_lr_fn": "match_rms_adamw", "lr": 0.01, "weight_decay": 0.0},
            {"adjust_lr_fn": "original", "nesterov": False, "momentum": 0.9, "ns_steps": 3,
             "eps": 1e-5},
            {"adam_lr": 1e-3, "adam_betas": (0.8, 0.99), "adam_eps": 1e-8,
             "adam_weight_decay": 0.1, "weight_decay": 0.01},
        ),
        converge={"lr": 0.02, "adam_lr": 0.02, "weight_decay": 0.0},
        skips={
            "test_lr_scheduler_drives_the_live_param_groups": (
                "the AdamW params step with adam_lr, a hyper-parameter of its own: lr=0 leaves "
                "them moving"
            ),
            "test_flat_mode_steps_as_one_tensor": (
                "routed: the matrices step per shape (stacked for Newton-Schulz), the AdamW "
                "params as one flat tensor"
            ),
            "test_cache_blocks_step_as_the_whole_bucket": (
                "routed: the matrices step per shape, never as one block of the whole bucket"
            ),
        },
    ),
    OptimizerInfo(
        "kron",
        # pytorch_optimizer.Kron stepped per param (its update counter per param), with
        # optimkit's probe vectors and balancing schedule in place of its global-generator draws;
        # the default schedule fits the factors at every step of the first 500: two settings
        # anneal within the 120 steps, or fit at every 3rd step
        Reference(
            "reference.kron:Kron", rename={"decoupled_weight_decay": "weight_decouple"},
            state={"step": "step", "momentum_buffer": "momentum_buffer",
                   "precond": lambda state, group: torch.cat([q.flatten() for q in state["Q"]]),
                   "probe_key": "probe_key"},
        ),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1, "memory_save_mode": "one_diag",
             "balance_every": 7, "probe_seed": 3,
             "precondition_update_probability": UpdateProbabilitySchedule(
                 min_prob=0.1, decay=0.05, flat_start=20)},
            {"lr": 3e-3, "momentum": 0.5, "weight_decay": 0.05, "decoupled_weight_decay": False,
             "memory_save_mode": "smart_one_diag", "precondition_lr": 0.3,
             "precondition_init_scale": 2.0, "balance_every": 1},
            {"memory_save_mode": "all_diag", "max_size_triangular": 4,
             "precondition_update_probability": 0.4},
            # (momentum_into_precondition_update=False is not compared: the reference's einsum
            # then takes the grad in the param's dtype with factors in precondition_dtype, and
            # refuses the mix, which one of fp64 and fp32 params always makes)
            {"min_ndim_triangular": 3, "precondition_dtype": torch.float64},
        ),
        # a preconditioned step is sized by its RMS clip: 500 steps are enough (the eager
        # step's per-tensor Python work makes 3000 take a minute per problem)
        converge={"lr": 0.05},
        converge_steps=500,
        skips={
            "test_flat_mode_steps_as_one_tensor": (
                "its factors read each param's shape (shaped=True): flat mode steps it per "
                "tensor over the buffers' views"
            ),
            "test_cache_blocks_step_as_the_whole_bucket": (
                "flat mode steps it per tensor (shaped=True): there are no flat blocks to cut"
            ),
        },
        peers=(
            Peer("pytorch_optimizer", "pytorch_optimizer:Kron",
                 {"pre_conditioner_update_probability": 1.0}),
            Peer("kron_torch", "kron_torch:Kron", {"preconditioner_update_probability": 1.0}),
        ),
    ),
    # ---- 2024-25: matrix-preconditioned optimizers (issue 23)
    OptimizerInfo(
        "soap",
        Reference(
            "reference.per_group_steps:SOAP",
            # optimkit keeps m rotated into the eigenbases, the reference unrotated
            state={"step": "step", "grad_avg": _rotated_avg, "sqr_avg": "exp_avg_sq",
                   "factors": _packed("GG"), "eigenbases": _packed("Q")},
        ),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1, "precondition_frequency": 3},
            {"precondition_1d": True, "shampoo_beta": 0.9, "betas": (0.9, 0.99)},
            # the (5, 3) matrix's 5 and the (2, 3, 2) tensor's 3 unrotated
            {"max_precondition_dim": 2, "eps": 1e-6, "precondition_frequency": 5},
        ),
        converge={"lr": 0.05},
        skips={
            "test_grad_scaler_skips_steps_with_inf_and_applies_the_others": (
                "its first step only initialises the preconditioner: the params move from "
                "the second"
            ),
            "test_flat_mode_steps_as_one_tensor": (
                "its parts read each param's shape (shaped): flat mode steps it per tensor, "
                "over the views of the flat buffers"
            ),
            "test_cache_blocks_step_as_the_whole_bucket": (
                "flat mode steps it per tensor (shaped): no flat buffer is cut into blocks, "
                "and this test's eager blocks put the (4,) and 0-d params together, so its "
                "count of one block per param does not hold"
            ),
            "test_ddp_matches_one_process": _SOAP_NULL_SPACE,
            # (FSDP2's reduce-scattered gradient is DDP's, to the last bit: the same 3 %; with
            # one process's gradients on every rank the whole-tensor tests' SOAP run is equal
            # bit for bit, and its DCP checkpoint resumes exactly)
            "test_fsdp2_matches_the_unsharded_run": _SOAP_NULL_SPACE,
        },
        peers=(
            Peer("pytorch_optimizer", "pytorch_optimizer:SOAP"),
            Peer("heavyball", "heavyball:SOAP"),
        ),
    ),
]

_BY_NAME = {info.name: info for info in DB}


def get(name: str) -> OptimizerInfo:
    """The test database's entry of a registry name (an alias works too)."""
    return _BY_NAME[registry.get(name).name]


# ------------------------------------------------------------ closed forms of the parts
# Each entry runs one part on tiny float64 tensors and compares the result with numbers worked
# out by hand (the formula is written out in the entry); tests/test_parts.py runs them. A part
# exported from optimkit.stats or optimkit.steppers without a case here (or a chain in
# tests/test_trust_parts.py) fails test_every_part_has_a_closed_form_case.

EPS = 1e-8


def _quintic(s, steps=5, a=3.4445, b=-4.775, c=2.0315):
    """A singular value after Muon's Newton-Schulz steps (the iteration is a polynomial of
    each singular value: s -> a s + b s**3 + c s**5)."""
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


@dataclasses.dataclass
class Case:
    """One closed-form check. Values are per tensor of the bucket (nested lists or numbers).

    ``grads`` holds the gradients of each call (one list per call, so two entries = two steps).
    ``expect`` maps ``"params"``, ``"grads"``, ``"state:NAME"`` or ``"field:NAME"`` (a per-step
    field such as ``update`` or ``second_moment``) to the values after the last call. ``fresh``
    lists, per state name, the tensors whose state is new on the first call; ``fields`` are set
    before every call (a value ``"state:NAME"`` hands in that state's own tensors).
    """

    id: str
    part: Part
    hypers: dict
    params: list
    grads: list
    expect: dict
    state: dict = dataclasses.field(default_factory=dict)
    fresh: dict = dataclasses.field(default_factory=dict)
    fields: dict = dataclasses.field(default_factory=dict)


def _tensor(value):
    return torch.tensor(value, dtype=torch.float64)


def _state_tensor(name, value):
    # torch.optim's step format: a float32 0-d tensor.
    return torch.tensor(float(value)) if name == "step" else _tensor(value)


# Adam-family numbers at step 2 with betas (0.9, 0.99): 1 - 0.9**2 = 0.19, 1 - 0.99**2 = 0.0199.
PART_CASES = [
    # ---- stats: moments
    Case("step_stat-two-steps", step_stat, {}, params=[[1.0], [2.0]], grads=[[[0.0], [0.0]]] * 2,
         state={"step": [0, 3]}, expect={"state:step": [2.0, 5.0]}),
    Case("average_grad-two-steps", average_grad, {"betas": (0.9, 0.99)}, params=[[0.0, 0.0]],
         grads=[[[3.0, 0.5]], [[-1.0, 0.0]]], state={"grad_avg": [[1.0, -2.0]]},
         # 0.9 * 1 + 0.1 * 3 = 1.2, then 0.9 * 1.2 - 0.1 = 0.98; 0.9 * -2 + 0.05 = -1.75, * 0.9
         expect={"state:grad_avg": [[0.98, -1.575]]}),
    Case("average_sqr_grad", average_sqr_grad, {"betas": (0.9, 0.99)}, params=[[0.0, 0.0]],
         grads=[[[2.0, -1.0]]], state={"sqr_avg": [[0.5, 2.0]]},
         expect={"state:sqr_avg": [[0.99 * 0.5 + 0.01 * 4, 0.99 * 2 + 0.01 * 1]]}),
    Case("average_sqr_grad_alpha", average_sqr_grad_alpha, {"alpha": 0.9}, params=[[0.0]],
         grads=[[[3.0]]], state={"sqr_avg": [[1.0]]}, expect={"state:sqr_avg": [[1.8]]}),
    Case("centered_grad_avg", centered_grad_avg, {"alpha": 0.8},
         params=[[0.0]], grads=[[[-1.5]]], state={"grad_avg": [[0.5]]},
         fields={"second_moment": [[1.0]]},  # grad_avg 0.1: variance 1 - 0.1**2
         expect={"state:grad_avg": [[0.8 * 0.5 - 0.2 * 1.5]], "field:second_moment": [[0.99]]}),
    Case("max_sqr_avg", max_sqr_avg, {}, params=[[0.0, 0.0]], grads=[[[0.0, 0.0]]],
         state={"sqr_avg": [[1.0, 4.0]], "max_sqr_avg": [[2.0, 3.0]]},
         fields={"second_moment": "state:sqr_avg"},
         expect={"state:max_sqr_avg": [[2.0, 4.0]], "state:sqr_avg": [[1.0, 4.0]],
                 "field:second_moment": [[2.0, 4.0]]}),
    Case("sum_sqr_grad-two-steps", sum_sqr_grad, {}, params=[[0.0, 0.0]],
         grads=[[[2.0, -3.0]], [[1.0, 1.0]]], state={"sqr_sum": [[0.1, 0.0]]},
         expect={"state:sqr_sum": [[0.1 + 4 + 1, 9 + 1]]}),
    # ---- stats: the direction
    Case("weight_decay-l2", weight_decay, {"weight_decay": 0.1}, params=[[2.0, -4.0]],
         grads=[[[1.0, 1.0]]], expect={"grads": [[1.2, 0.6]], "params": [[2.0, -4.0]]}),
    Case("weight_decay-decoupled", weight_decay,
         {"weight_decay": 0.1, "decoupled_weight_decay": True, "lr": 0.5}, params=[[2.0, -4.0]],
         grads=[[[1.0, 1.0]]], expect={"params": [[1.9, -3.8]], "grads": [[1.0, 1.0]]}),
    # NovoGrad's and LAMB's decay, added to the update (0.5, -1) after it was normalised
    Case("update_weight_decay-l2", update_weight_decay, {"weight_decay": 0.1},
         params=[[2.0, -4.0]], grads=[[[1.0, 1.0]]], fields={"update": [[0.5, -1.0]]},
         expect={"field:update": [[0.7, -1.4]], "grads": [[1.0, 1.0]], "params": [[2.0, -4.0]]}),
    Case("update_weight_decay-decoupled", update_weight_decay,
         {"weight_decay": 0.1, "decoupled_weight_decay": True, "lr": 0.5}, params=[[2.0, -4.0]],
         grads=[[[1.0, 1.0]]], fields={"update": [[0.5, -1.0]]},
         expect={"params": [[1.9, -3.8]], "field:update": [[0.5, -1.0]]}),
    Case("momentum-two-steps", momentum, {"momentum": 0.9}, params=[[0.0]],
         grads=[[[1.0]], [[2.0]]], state={"momentum_buffer": [[0.0]]},
         fresh={"momentum_buffer": [0]},  # starts as the first grad, then 0.9 * 1 + 2
         expect={"state:momentum_buffer": [[2.9]], "field:update": [[2.9]]}),
    Case("momentum-one-fresh-one-old", momentum, {"momentum": 0.9}, params=[[0.0], [0.0]],
         grads=[[[2.0], [3.0]]], state={"momentum_buffer": [[0.0], [1.0]]},
         fresh={"momentum_buffer": [0]},
         expect={"state:momentum_buffer": [[2.0], [0.9 + 3.0]]}),
    Case("momentum-dampening", momentum, {"momentum": 0.9, "dampening": 0.5}, params=[[0.0]],
         grads=[[[4.0]]], state={"momentum_buffer": [[2.0]]},
         expect={"state:momentum_buffer": [[1.8 + 2.0]], "field:update": [[3.8]]}),
    Case("momentum-nesterov", momentum, {"momentum": 0.9, "nesterov": True}, params=[[0.0]],
         grads=[[[1.0]]], state={"momentum_buffer": [[2.0]]},
         expect={"state:momentum_buffer": [[2.8]], "field:update": [[1.0 + 0.9 * 2.8]]}),
    Case("rms_normalize", rms_normalize, {"eps": EPS}, params=[[0.0, 0.0]],
         grads=[[[1.0, -1.0]]], fields={"second_moment": [[4.0, 0.25]]},
         expect={"field:update": [[1 / (2 + EPS), -1 / (0.5 + EPS)]]}),
    # centred: the second moment is the variance sqr_avg - grad_avg**2 = 5 - 1
    Case("rms_normalize-centered", rms_normalize, {"eps": EPS}, params=[[0.0]],
         grads=[[[2.0]]], fields={"second_moment": [[5.0 - 1.0]]},
         expect={"field:update": [[2 / (math.sqrt(5 - 1) + EPS)]]}),
    Case("accumulate_grad", accumulate_grad, {"betas": (0.9, 0.5)}, params=[[0.0]],
         grads=[[[2.0]]], state={"grad_avg": [[1.0]]},
         expect={"state:grad_avg": [[0.9 + 2.0]], "field:update": [[2.9]]}),
    Case("accumulate_grad-averaging", accumulate_grad,
         {"betas": (0.9, 0.5), "grad_averaging": True}, params=[[0.0]], grads=[[[2.0]]],
         state={"grad_avg": [[1.0]]},
         expect={"state:grad_avg": [[0.9 + 0.1 * 2.0]], "field:update": [[1.1]]}),
    # ---- stats: layer-wise (NovoGrad), one 0-d value per tensor
    Case("layer_sqr_avg-two-steps", layer_sqr_avg, {"betas": (0.9, 0.5)}, params=[[0.0, 0.0]] * 2,
         grads=[[[3.0, 4.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]],
         state={"layer_sqr_avg": [0.0, 4.0]},
         # first: 0 -> ||g||^2 = 25 and 0.5 * 4 + 0.5 * 2 = 3; then 0.5 * 25 + 0.5 * 1, 0.5 * 3 + 1
         expect={"state:layer_sqr_avg": [13.0, 2.5]}),
    Case("max_layer_sqr_avg", max_layer_sqr_avg, {}, params=[[0.0], [0.0]],
         grads=[[[0.0], [0.0]]],
         state={"layer_sqr_avg": [3.0, 1.0], "max_layer_sqr_avg": [2.0, 5.0]},
         fields={"second_moment": "state:layer_sqr_avg"},
         expect={"state:max_layer_sqr_avg": [3.0, 5.0], "field:second_moment": [3.0, 5.0]}),
    Case("layer_normalize", layer_normalize, {"eps": EPS}, params=[[0.0, 0.0]],
         grads=[[[1.0, -2.0]]], fields={"second_moment": [4.0]},
         expect={"field:update": [[1 / (2 + EPS), -2 / (2 + EPS)]]}),
    # AMSGrad's running max (16) as the second moment
    Case("layer_normalize-amsgrad", layer_normalize, {"eps": EPS}, params=[[0.0]],
         grads=[[[1.0]]], fields={"second_moment": [16.0]},
         expect={"field:update": [[1 / (4 + EPS)]]}),
    # ---- stats: DiffGrad's friction
    Case("grad_friction", grad_friction, {"version": 0}, params=[[0.0, 0.0]],
         grads=[[[0.0, 0.0]]], state={"prev_grad": [[1.0, 0.0]], "grad_avg": [[2.0, 3.0]]},
         fields={"step_size": [[2.0, 3.0]]},
         expect={"field:step_size": [[2 * sigmoid(1.0), 3 * 0.5]],
                 "state:prev_grad": [[0.0, 0.0]], "state:grad_avg": [[2.0, 3.0]]}),
    Case("grad_friction-two-steps", grad_friction, {"version": 0}, params=[[0.0]],
         grads=[[[1.0]], [[1.0]]], state={"prev_grad": [[0.0]]},
         fields={"step_size": [[2.0]]},
         # step 1: sigmoid(|0 - 1|); step 2: the gradient did not change, sigmoid(0) = 0.5
         expect={"field:step_size": [[1.0]], "state:prev_grad": [[1.0]]}),
    Case("grad_friction-signed", grad_friction, {"version": 1}, params=[[0.0]],
         grads=[[[3.0]]], state={"prev_grad": [[1.0]]}, fields={"step_size": [[2.0]]},
         expect={"field:step_size": [[2 / (1 + math.exp(2.0))]],
                 "state:prev_grad": [[3.0]]}),
    # ---- stats: per-element step sizes
    Case("adam_step_sizes", adam_step_sizes, {"lr": 0.1, "betas": (0.9, 0.99), "eps": 0.01},
         params=[[0.0, 0.0]], grads=[[[0.0, 0.0]]], state={"step": [1]},
         fields={"second_moment": [[0.04, 0.0]]},
         # alpha = 0.1 * sqrt(1 - 0.99) / (1 - 0.9) = 0.1; eps on the uncorrected root
         expect={"field:step_size": [[0.1 / (0.2 + 0.01), 0.1 / 0.01]]}),
    Case("bounded_step_sizes", bounded_step_sizes, {"beta3": 0.9}, params=[[0.0, 0.0]],
         grads=[[[0.0, 0.0]]], state={"step_size_avg": [[0.5, 0.0]]},
         fields={"step_size": [[1.0, 2.0]]},  # memory 0.45 + 0.1, 0 + 0.2; then the min
         expect={"state:step_size_avg": [[0.55, 0.2]], "field:step_size": [[0.55, 0.2]]}),
    Case("blended_step_sizes", blended_step_sizes, {"len_memory": 4}, params=[[0.0]],
         grads=[[[0.0]]], state={"step_size_avg": [[0.4]]}, fields={"step_size": [[2.0]]},
         # beta3 = 1 - 1/4: memory 0.75 * 0.4 + 0.25 * 2 = 0.8; blend (2 + 0.8) / 2
         expect={"state:step_size_avg": [[0.8]], "field:step_size": [[1.4]]}),
    # ---- steppers
    Case("sgd_step", sgd_step, {"lr": 0.1}, params=[[1.0, 2.0]], grads=[[[0.5, -1.0]]],
         expect={"params": [[0.95, 2.1]]}),
    Case("adam_step", adam_step, {"lr": 0.1, "betas": (0.9, 0.99), "eps": EPS},
         params=[[1.0, -2.0]], grads=[[[0.0, 0.0]]], state={"step": [2]},
         fields={"first_moment": [[0.3, -0.1]], "second_moment": [[0.04, 0.09]]},
         expect={"params": [[1 - 0.1 / 0.19 * 0.3 / (math.sqrt(0.04 / 0.0199) + EPS),
                             -2 + 0.1 / 0.19 * 0.1 / (math.sqrt(0.09 / 0.0199) + EPS)]]}),
    Case("adam_step-amsgrad", adam_step, {"lr": 0.1, "betas": (0.9, 0.99), "eps": EPS},
         params=[[1.0]], grads=[[[0.0]]], state={"step": [2]},
         # AMSGrad's running max (0.16, not sqr_avg's 0.04) as the second moment
         fields={"first_moment": [[0.3]], "second_moment": [[0.16]]},
         expect={"params": [[1 - 0.1 / 0.19 * 0.3 / (math.sqrt(0.16 / 0.0199) + EPS)]]}),
    Case("adam_step-damped-first-moment", adam_step, {"lr": 0.1, "betas": (0.9, 0.99), "eps": EPS},
         params=[[1.0]], grads=[[[0.0]]], state={"step": [2]},
         # DiffGrad's friction halved grad_avg's 0.3 for this step
         fields={"first_moment": [[0.15]], "second_moment": [[0.04]]},
         expect={"params": [[1 - 0.1 / 0.19 * 0.15 / (math.sqrt(0.04 / 0.0199) + EPS)]]}),
    Case("adagrad_step", adagrad_step, {"lr": 0.1, "lr_decay": 0.5, "eps": 1e-10},
         params=[[1.0]], grads=[[[1.0]]], state={"step": [3]}, fields={"second_moment": [[4.0]]},
         # lr_t = 0.1 / (1 + (3 - 1) * 0.5) = 0.05
         expect={"params": [[1 - 0.05 * 1 / (2 + 1e-10)]]}),
    Case("radam_step-sgd-below-threshold", radam_step, {"lr": 0.1, "betas": (0.9, 0.999)},
         params=[[1.0]], grads=[[[0.0]]],
         # rho_1 = 1999 - 2 * 0.999 / 0.001 = 1 <= 5: p - lr / (1 - 0.9) * m
         state={"step": [1]}, fields={"first_moment": [[0.02]], "second_moment": [[1.0]]},
         expect={"params": [[1 - 0.1 / 0.1 * 0.02]]}),
    Case("radam_step-no-sgd-below-threshold", radam_step,
         {"lr": 0.1, "betas": (0.9, 0.999), "degenerated_to_sgd": False}, params=[[1.0]],
         grads=[[[0.0]]], state={"step": [1]},
         fields={"first_moment": [[0.02]], "second_moment": [[1.0]]},
         expect={"params": [[1.0]]}),
    Case("radam_step-rectified", radam_step, {"lr": 0.1, "betas": (0.9, 0.9), "eps": EPS},
         params=[[1.0]], grads=[[[0.0]]],
         state={"step": [10]}, fields={"first_moment": [[0.5]], "second_moment": [[0.25]]},
         expect={"params": [[1 - 0.1 * (lambda rho_inf, rho: math.sqrt(
             (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)))(
             19.0, 19 - 2 * 10 * 0.9**10 / (1 - 0.9**10))  # rho_10 = 8.29 > 5
             / (1 - 0.9**10) * 0.5 * math.sqrt(1 - 0.9**10) / (math.sqrt(0.25) + EPS)]]}),
    # (torch.optim.RAdam adds eps to the uncorrected root, as above)
    Case("qhadam_step", qhadam_step,
         {"lr": 0.1, "betas": (0.9, 0.99), "nus": (0.7, 0.5), "eps": EPS}, params=[[1.0]],
         grads=[[[2.0]]], state={"step": [1]},
         fields={"first_moment": [[0.2]], "second_moment": [[0.0009]]},
         # (0.7 * 0.2 / 0.1 + 0.3 * 2) / (sqrt(0.5 * 0.0009 / 0.01 + 0.5 * 4) + eps)
         expect={"params": [[1 - 0.1 * 2.0 / (math.sqrt(0.045 + 2.0) + EPS)]]}),
    Case("per_element_step", per_element_step, {}, params=[[1.0, 1.0]], grads=[[[0.0, 0.0]]],
         fields={"first_moment": [[1.0, -3.0]], "step_size": [[0.1, 0.2]]},
         expect={"params": [[0.9, 1.6]]}),
    # ---- Lion's direction: sign(0.9 m + 0.1 g), then m = 0.99 m + 0.01 g
    Case("lion_direction", lion_direction, {"betas": (0.9, 0.99)}, params=[[0.0, 0.0, 0.0]],
         grads=[[[1.0, -5.0, 0.0]]], state={"grad_avg": [[-2.0, 0.1, 0.0]]},
         # 0.9 * -2 + 0.1 = -1.7; 0.09 - 0.5 = -0.41; 0: sign 0
         expect={"field:update": [[-1.0, -1.0, 0.0]],
                 "state:grad_avg": [[-1.98 + 0.01, 0.099 - 0.05, 0.0]]}),
    Case("lion_direction-two-steps", lion_direction, {"betas": (0.5, 0.75)}, params=[[0.0]],
         grads=[[[4.0]], [[-1.0]]], state={"grad_avg": [[0.0]]},
         # m = 0.25 * 4 = 1 after step 1; step 2: sign(0.5 - 0.5) = 0, m = 0.75 - 0.25
         expect={"field:update": [[0.0]], "state:grad_avg": [[0.5]]}),
    # ---- the cautious mask: u * 1[u * g > 0] * n / (k + 1), per tensor
    # tensor 0: only u = 2 agrees with g = 1 (k = 1 of n = 4): 2 * 4 / 2 = 4;
    # tensor 1: both agree (k = 2 of n = 2): scale 2 / 3
    Case("cautious_update", cautious_update, {}, params=[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0]],
         grads=[[[1.0, -2.0, 3.0, 0.0], [1.0, 1.0]]],
         fields={"update": [[2.0, 1.0, -1.0, 5.0], [3.0, 2.0]]},
         expect={"field:update": [[4.0, 0.0, 0.0, 0.0], [2.0, 4 / 3]]}),
    # on a copy of the first moment: grad_avg keeps -0.5 (k = 1 of n = 2: scale 1)
    Case("cautious_moment", cautious_moment, {}, params=[[0.0, 0.0]], grads=[[[1.0, 1.0]]],
         state={"grad_avg": [[0.5, -0.5]]}, fields={"first_moment": "state:grad_avg"},
         expect={"field:first_moment": [[0.5, 0.0]], "state:grad_avg": [[0.5, -0.5]]}),
    # ---- ADOPT: first step v = g**2 only; then n = clip(g / max(sqrt(v), eps), t**0.25)
    # step 1: v = (4, 1), m stays 0; step 2 at t = 16 (clip 2): n = clip(8 / 2, 2) = 2,
    # 1 / 1 = 1; m = 0.5 * n = (1, 0.5); v = 0.75 * (4, 1) + 0.25 * (64, 1) = (19, 1)
    Case("adopt_direction-two-steps", adopt_direction, {"betas": (0.5, 0.75), "eps": 1e-6},
         params=[[0.0, 0.0]], grads=[[[2.0, -1.0]], [[8.0, 1.0]]],
         state={"step": [16], "grad_avg": [[0.0, 0.0]], "sqr_avg": [[0.0, 0.0]]},
         fresh={"grad_avg": [0], "sqr_avg": [0]},
         expect={"state:grad_avg": [[1.0, 0.5]], "state:sqr_avg": [[19.0, 1.0]],
                 "field:update": [[1.0, 0.5]]}),
    # v = 0: the root is clamped to eps, n = 1e-9 / 1e-6 = 1e-3 (under the clip 1 at t = 1)
    Case("adopt_direction-eps", adopt_direction, {"betas": (0.5, 0.75), "eps": 1e-6},
         params=[[0.0]], grads=[[[1e-9]]],
         state={"step": [1], "grad_avg": [[0.0]], "sqr_avg": [[0.0]]},
         expect={"state:grad_avg": [[5e-4]], "state:sqr_avg": [[0.25e-18]]}),
    # ---- LaProp: d = sqrt(4 + 1e-15) / sqrt(1 - 0.75) ~ 4; m = 0.5 * 1 + 0.5 * 0.5 * 2 / d
    # = 0.625; lr_avg = 0.5 * 0.25 + 0.5 * 0.5 = 0.375
    Case("laprop_direction", laprop_direction, {"lr": 0.5, "betas": (0.5, 0.75), "eps": 0.0},
         params=[[0.0]], grads=[[[2.0]]],
         state={"step": [1], "grad_avg": [[1.0]], "lr_avg": [0.25]},
         fields={"second_moment": [[4.0]]},
         expect={"state:grad_avg": [[0.5 + 0.25 * 2 / (math.sqrt(4 + 1e-15) / 0.5)]],
                 "state:lr_avg": [0.375], "field:update": [[0.625]]}),
    Case("lr_avg_step", lr_avg_step, {"lr": 0.1}, params=[[1.0], [1.0]],
         grads=[[[0.0], [0.0]]], state={"lr_avg": [0.05, 0.0]},
         fields={"update": [[2.0], [3.0]]},
         # 1 - 0.1 / 0.05 * 2; lr_avg 0 (lr 0 so far): no step
         expect={"params": [[-3.0], [1.0]]}),
    Case("decay_after_step", decay_after_step, {"lr": 0.5, "weight_decay": 0.1},
         params=[[2.0, -4.0]], grads=[[[1.0, 1.0]]], expect={"params": [[1.9, -3.8]]}),
    # ---- NAdam at t = 2, momentum_decay 0.5: mu_2 = 0.9 (1 - 0.5 * 0.96) = 0.468,
    # P_2 = 0.5 * 0.468 = 0.234; v / (1 - 0.99**2) = 4, d = 2 + eps
    Case("nadam_step", nadam_step,
         {"lr": 0.1, "betas": (0.9, 0.99), "eps": EPS, "momentum_decay": 0.5},
         params=[[1.0]], grads=[[[1.0]]], state={"step": [2], "mu_product": [0.5]},
         fields={"first_moment": [[0.3]], "second_moment": [[0.0199 * 4]]},
         expect={"state:mu_product": [0.234], "params": [[(lambda mu3: (
             1 - 0.1 * (1 - 0.468) / (1 - 0.234) * 1.0 / (2 + EPS)
             - 0.1 * mu3 / (1 - 0.234 * mu3) * 0.3 / (2 + EPS)))(
             0.9 * (1 - 0.5 * 0.96**1.5))]]}),
    # ---- 2023-25, mixing averages (stats/mixing.py, steppers/mixing.py)
    # Adan's first step: prev_grad is new, so it is the gradient and diff = 0; n = g
    Case("adan_moments-first-step", adan_moments, {"betas": (0.5, 0.5, 0.5)},
         params=[[0.0, 0.0]], grads=[[[2.0, -1.0]]],
         state={"grad_avg": [[0.0, 0.0]], "grad_diff_avg": [[0.0, 0.0]],
                "sqr_avg": [[0.0, 0.0]], "prev_grad": [[0.0, 0.0]]},
         fresh={"prev_grad": [0]},
         expect={"state:grad_avg": [[1.0, -0.5]], "state:grad_diff_avg": [[0.0, 0.0]],
                 "state:sqr_avg": [[2.0, 0.5]], "state:prev_grad": [[2.0, -1.0]],
                 "field:first_moment": [[1.0, -0.5]], "field:second_moment": [[2.0, 0.5]]}),
    # betas (0.9, 0.8, 0.5). Step 1, g = 3, prev 1: diff 2; m = 0.9 + 0.3 = 1.2;
    # d = 0.4 + 0.4 = 0.8; n = 3 + 0.8 * 2 = 4.6, v = 2 + 0.5 * 21.16 = 12.58.
    # Step 2, g = 2, prev 3: diff -1; m = 1.08 + 0.2 = 1.28; d = 0.64 - 0.2 = 0.44;
    # n = 2 - 0.8 = 1.2, v = 6.29 + 0.72 = 7.01
    Case("adan_moments-two-steps", adan_moments, {"betas": (0.9, 0.8, 0.5)}, params=[[0.0]],
         grads=[[[3.0]], [[2.0]]],
         state={"grad_avg": [[1.0]], "grad_diff_avg": [[0.5]], "sqr_avg": [[4.0]],
                "prev_grad": [[1.0]]},
         expect={"state:grad_avg": [[1.28]], "state:grad_diff_avg": [[0.44]],
                 "state:sqr_avg": [[7.01]], "state:prev_grad": [[2.0]]}),
    # t = 1, betas (0.5, 0.5, 0.75): corrections 0.5, 0.5, 0.25; denom sqrt(0.04) / 0.5 + 0.01
    # = 0.41; u = (0.2 / 0.5 + 0.5 * 0.1 / 0.5) / 0.41 = 0.5 / 0.41
    Case("adan_step", adan_step, {"lr": 0.1, "betas": (0.5, 0.5, 0.75), "eps": 0.01},
         params=[[1.0]], grads=[[[0.0]]],
         state={"step": [1], "grad_diff_avg": [[0.1]]},
         fields={"first_moment": [[0.2]], "second_moment": [[0.04]]},
         expect={"params": [[1 - 0.1 * 0.5 / 0.41]]}),
    Case("proximal_decay", proximal_decay, {"lr": 0.5, "weight_decay": 0.2},
         params=[[2.2, -1.1]], grads=[[[0.0, 0.0]]],  # p / (1 + 0.1)
         expect={"params": [[2.0, -1.0]]}),
    Case("slow_grad_avg", slow_grad_avg, {"betas": (0.9, 0.999, 0.75)}, params=[[0.0]],
         grads=[[[8.0]]], state={"step": [1], "slow_grad_avg": [[4.0]]},
         expect={"state:slow_grad_avg": [[0.75 * 4 + 0.25 * 8]]}),
    # warm-up over T = 10 with ln b1 = -2L, ln b3 = -L (L = ln 2): at t = 5,
    # exp(2L^2 / (0.5 * -L + 0.5 * -2L)) = 2**(-4/3) < 0.5; at t = 20,
    # exp(2L^2 / (-1 * -L + 2 * -2L)) = 2**(-2/3) > 0.5, so beta3 itself
    Case("slow_grad_avg-warm-up", slow_grad_avg,
         {"betas": (0.25, 0.999, 0.5), "t_alpha_beta3": 10.0}, params=[[0.0], [0.0]],
         grads=[[[1.0], [4.0]]], state={"step": [5, 20], "slow_grad_avg": [[0.0], [2.0]]},
         expect={"state:slow_grad_avg": [[1 - 2 ** (-4 / 3)], [0.5 * 2 + 0.5 * 4]]}),
    # t = 1, betas (0.5, 0.75, 0.9): denom sqrt(0.04) / sqrt(0.25) + 0.01 = 0.41;
    # u = 0.2 / 0.5 + alpha * 0.05
    Case("ademamix_step", ademamix_step,
         {"lr": 0.1, "betas": (0.5, 0.75, 0.9), "eps": 0.01, "alpha": 2.0}, params=[[1.0]],
         grads=[[[0.0]]], state={"step": [1], "slow_grad_avg": [[0.05]]},
         fields={"first_moment": [[0.2]], "second_moment": [[0.04]]},
         expect={"params": [[1 - 0.1 * (0.4 + 2.0 * 0.05) / 0.41]]}),
    # alpha's warm-up: min(1 * 2 / 4, 2) = 0.5 at t = 1
    Case("ademamix_step-warm-up", ademamix_step,
         {"lr": 0.1, "betas": (0.5, 0.75, 0.9), "eps": 0.01, "alpha": 2.0,
          "t_alpha_beta3": 4.0}, params=[[1.0]],
         grads=[[[0.0]]], state={"step": [1], "slow_grad_avg": [[0.05]]},
         fields={"first_moment": [[0.2]], "second_moment": [[0.04]]},
         expect={"params": [[1 - 0.1 * (0.4 + 0.5 * 0.05) / 0.41]]}),
    # A matrix and a vector in one bucket, t = 1. Matrix (betas (0.5, 0.75), gamma 0.5):
    # c = g + 0.5 * 0.5 / 0.5 * (g - last) = [3, 0], ||c|| = 3 -> [1, 0]; m = [0.5, 0],
    # v = [0.25, 0]; d = m / ((sqrt(v) + 0.5) / sqrt(0.25) * 0.5) = [0.5, 0].
    # Vector (betas_1d (0.5, 0.5)): c = g, neither corrected (last ignored) nor clipped;
    # m = [0.5, -1], v = [0.5, 2], d = m / ((sqrt(v) + 0.5) / sqrt(0.5) * 0.5)
    Case("mars_direction-matrix-and-vector", mars_direction,
         {"betas": (0.5, 0.75), "betas_1d": (0.5, 0.5), "gamma": 0.5, "eps": 0.5},
         params=[[[0.0, 0.0]], [0.0, 0.0]], grads=[[[[2.0, 0.0]], [1.0, -2.0]]],
         state={"step": [1, 1], "grad_avg": [[[0.0, 0.0]], [0.0, 0.0]],
                "sqr_avg": [[[0.0, 0.0]], [0.0, 0.0]], "last_grad": [[[0.0, 0.0]], [5.0, 5.0]]},
         expect={"field:update": [
                     [[0.5, 0.0]],
                     [0.5 / ((math.sqrt(0.5) + 0.5) / math.sqrt(0.5) * 0.5),
                      -1.0 / ((math.sqrt(2.0) + 0.5) / math.sqrt(0.5) * 0.5)]],
                 "state:grad_avg": [[[0.5, 0.0]], [0.5, -1.0]],
                 "state:sqr_avg": [[[0.25, 0.0]], [0.5, 2.0]],
                 "state:last_grad": [[[2.0, 0.0]], [1.0, -2.0]]}),
    # optimize_1d: the vector is corrected, c = 1.5 g = [0.9, 1.2], ||c|| = 1.5 -> [0.6, 0.8];
    # m = [0.3, 0.4], v = [0.09, 0.16]; d = m / ((sqrt(v) + 0.5) / 0.5 * 0.5) = m / [0.8, 0.9]
    Case("mars_direction-optimize-1d", mars_direction,
         {"betas": (0.5, 0.75), "gamma": 0.5, "eps": 0.5, "optimize_1d": True},
         params=[[0.0, 0.0]], grads=[[[0.6, 0.8]]],
         state={"step": [1], "grad_avg": [[0.0, 0.0]], "sqr_avg": [[0.0, 0.0]],
                "last_grad": [[0.0, 0.0]]},
         expect={"field:update": [[0.3 / 0.8, 0.4 / 0.9]],
                 "state:sqr_avg": [[0.09, 0.16]]}),
    # matrix: p (1 - 0.1 * 0.5) - 0.1 u; vector: p (1 - 0.01 * 1) - 0.01 u
    Case("mars_step", mars_step,
         {"lr": 0.1, "lr_1d": 0.01, "weight_decay": 0.5, "weight_decay_1d": 1.0},
         params=[[[1.0, 2.0]], [1.0]], grads=[[[[0.0, 0.0]], [0.0]]],
         fields={"update": [[[1.0, -1.0]], [2.0]]},
         expect={"params": [[[0.85, 2.0]], [0.97]]}),
    # Adafactor, one bucket of a matrix at t = 1 (w = 1**-0.5 = 1) and a vector at t = 4
    # (w = 4**-0.5 = 0.5). Matrix g = [[1, 3], [1, 1]]: row_var = mean(g**2, -1) = [5, 1],
    # col_var = mean(g**2, -2) = [1, 5], v = [[5, 25], [1, 5]] / mean(row_var) 3,
    # u = g / sqrt(v). Vector: variance lerp([2, 0], [4, 0], 0.5) = [3, 0], v clamped at
    # eps1**2 = 0.25: u = [2 / sqrt(3), 0]
    Case("adafactor_direction-matrix-and-vector", adafactor_direction,
         {"beta2_decay": -0.5, "eps": (0.5, 1e-3)},
         params=[[[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0]],
         grads=[[[[1.0, 3.0], [1.0, 1.0]], [2.0, 0.0]]],
         state={"step": [1, 4], "row_var": [[[0.0], [0.0]], []],
                "col_var": [[[0.0, 0.0]], []], "variance": [[], [2.0, 0.0]]},
         expect={"field:update": [
                     [[math.sqrt(3 / 5), 3 * math.sqrt(3) / 5],
                      [math.sqrt(3), math.sqrt(3 / 5)]],
                     [2 / math.sqrt(3), 0.0]],
                 "state:row_var": [[[5.0], [1.0]], []], "state:col_var": [[[1.0, 5.0]], []],
                 "state:variance": [[], [3.0, 0.0]]}),
    # p = [3, 4] at t = 4: alpha = rms(p) 5 / sqrt(2) * min(0.1, 1 / 2); rms(u) = sqrt(2)
    # clipped to 1 -> step 0.25 u = [0.5, 0] after the decay p * (1 - 0.1 * 0.5).
    # p = 0 at t = 100: alpha = eps2 0.01 * min(0.1, 0.1); rms(u) < 1: p = -1e-3 u
    Case("adafactor_step", adafactor_step,
         {"lr": 0.1, "eps": (None, 0.01), "d": 1.0, "weight_decay": 0.5},
         params=[[3.0, 4.0], [0.0, 0.0]], grads=[[[0.0, 0.0], [0.0, 0.0]]],
         state={"step": [4, 100]}, fields={"update": [[2.0, 0.0], [0.3, 0.4]]},
         expect={"params": [[2.85 - 0.5, 3.8], [-3e-4, -4e-4]]}),
    # ---- Muon (stats/orthogonal.py). Momentum 0.5: buf = 2 + 0.5 (4 - 2) = 3; Nesterov
    # update g + 0.5 (buf - g) = 3.5, plain: buf
    Case("muon_momentum-nesterov", muon_momentum, {"momentum": 0.5}, params=[[[0.0]]],
         grads=[[[[4.0]]]], state={"momentum_buffer": [[[2.0]]]},
         expect={"state:momentum_buffer": [[[3.0]]], "field:update": [[[3.5]]]}),
    Case("muon_momentum-plain", muon_momentum, {"momentum": 0.5, "nesterov": False},
         params=[[[0.0]]], grads=[[[[4.0]]]], state={"momentum_buffer": [[[2.0]]]},
         expect={"field:update": [[[3.0]]]}),
    # Newton-Schulz in fp64 on diagonal matrices acts on each singular value alone:
    # s -> a s + b s**3 + c s**5, five times, from s / ||G||. Two 2x2 (one batch of one shape)
    # and a tall 3x2 (transposed, then back): diag(3, 4) / 5 = (0.6, 0.8), diag(0, 2) / 2
    Case("orthogonalize-fp64-batched", orthogonalize, {"ns_dtype": torch.float64},
         params=[[[0.0, 0.0]] * 2, [[0.0, 0.0]] * 2, [[0.0, 0.0]] * 3], grads=[[
             [[0.0, 0.0]] * 2, [[0.0, 0.0]] * 2, [[0.0, 0.0]] * 3]],
         fields={"update": [[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]],
                            [[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]]]},
         expect={"field:update": (lambda f: [
             [[f(0.6), 0.0], [0.0, f(0.8)]], [[0.0, 0.0], [0.0, f(1.0)]],
             [[f(0.6), 0.0], [0.0, f(0.8)], [0.0, 0.0]]])(_quintic)}),
    # lr 0.1; a tall [4, 1]: ratio sqrt(4 / 1) = 2; a wide [1, 4]: 1; a [2, 1, 2] as [2, 2]: 1
    Case("muon_step-original", muon_step, {"lr": 0.1},
         params=[[[1.0]] * 4, [[1.0] * 4], [[[1.0, 1.0]]] * 2], grads=[[
             [[0.0]] * 4, [[0.0] * 4], [[[0.0, 0.0]]] * 2]],
         fields={"update": [[[1.0]] * 4, [[1.0] * 4], [[[1.0, -1.0]]] * 2]},
         expect={"params": [[[0.8]] * 4, [[0.9] * 4], [[[0.9, 1.1]]] * 2]}),
    # match_rms_adamw: 0.2 sqrt(max(rows, cols)) = 0.2 * 2 for both
    Case("muon_step-match-rms-adamw", muon_step, {"lr": 0.1, "adjust_lr_fn": "match_rms_adamw"},
         params=[[[1.0]] * 4, [[1.0] * 4]], grads=[[[[0.0]] * 4, [[0.0] * 4]]],
         fields={"update": [[[1.0]] * 4, [[1.0] * 4]]},
         expect={"params": [[[1 - 0.04]] * 4, [[1 - 0.04] * 4]]}),
    # ---- PSGD Kron. Momentum 0.5: m = 0.5 * (2, 0) + 0.5 * (2, 4) = (2, 2), the update
    Case("kron_momentum", kron_momentum, {"momentum": 0.5}, params=[[0.0, 0.0]],
         grads=[[[2.0, 4.0]]], state={"momentum_buffer": [[2.0, 0.0]]},
         expect={"state:momentum_buffer": [[2.0, 2.0]], "field:update": [[2.0, 2.0]]}),
    # the factors and probe keys are made by their inits (initial_precond, initial_probe_key)
    Case("kron_factors", kron_factors, {}, params=[[1.0, 1.0]], grads=[[[1.0, 4.0]]],
         state={"precond": [[1.0, 1.0]]}, fresh={"precond": [0]},
         expect={"state:precond": [[1.0, 1.0]], "params": [[1.0, 1.0]]}),
    # the fit, with precondition_lr 0: the probes move nothing (parity checks the PSGD step)
    Case("kron_fit-still", kron_fit,
         {"momentum": 0.5, "precondition_lr": 0.0, "precondition_dtype": torch.float64},
         params=[[1.0, 1.0]], grads=[[[1.0, 4.0]]],
         state={"step": [1], "precond": [[2.0, 0.5]], "probe_key": [7]},
         fields={"update": [[0.5, 2.0]]}, expect={"state:precond": [[2.0, 0.5]]}),
    # a vector's one diagonal factor q = (2, 0.5); m = (0.5, 2), debiased by 1 - 0.5 to
    # (1, 4); u = q**2 m^ = (4, 1), rms sqrt(8.5), scaled by 1.1 / (rms + 1e-6)
    Case("kron_direction-diagonal", kron_direction,
         {"momentum": 0.5, "precondition_dtype": torch.float64},
         params=[[1.0, 1.0]], grads=[[[1.0, 4.0]]],
         state={"step": [1], "precond": [[2.0, 0.5]]},
         fields={"update": [[0.5, 2.0]]},
         expect={"field:update": [[4 * 1.1 / (math.sqrt(8.5) + 1e-6),
                                   1.1 / (math.sqrt(8.5) + 1e-6)]],
                 "state:precond": [[2.0, 0.5]]}),
    # weight decay 0.5 on the matrix only (2 dims or more): L2 on the gradient, decoupled on
    # the update
    Case("kron_l2", kron_l2, {"weight_decay": 0.5}, params=[[[2.0, -4.0]], [2.0]],
         grads=[[[[1.0, 1.0]], [1.0]]], expect={"grads": [[[2.0, -1.0]], [1.0]]}),
    Case("kron_decay", kron_decay, {"weight_decay": 0.5}, params=[[[2.0, -4.0]], [2.0]],
         grads=[[[[0.0, 0.0]], [0.0]]], fields={"update": [[[1.0, 1.0]], [1.0]]},
         expect={"field:update": [[[2.0, -1.0]], [1.0]]}),
    # a 2x2 matrix's two dense factors 4 I and I: largest entries 4 and 1, geometric mean 2
    Case("kron_balance", kron_balance, {}, params=[[[0.0, 0.0], [0.0, 0.0]]],
         grads=[[[[0.0, 0.0], [0.0, 0.0]]]],
         state={"precond": [[4.0, 0.0, 0.0, 4.0, 1.0, 0.0, 0.0, 1.0]]},
         expect={"state:precond": [[2.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 2.0]]}),
    # ---- SOAP at s = t - 1 = 1, betas (0.5, 0.75): the 2x2 matrix's left basis swaps the rows
    # (R(g) = Q_L^T g, its right one is I): m = R(g) / 2 (kept rotated), v = R(g)**2 / 4,
    # R(m) / sqrt(v) = sign(R(g)) (up to eps), swapped back; sqrt(1 - 0.75) / (1 - 0.5) = 1.
    # Factors (from 0): L = g g^T / 4, R = g^T g / 4 (shampoo_beta None: beta2). The vector is
    # plain Adam (no factors: precondition_1d=False).
    Case("soap_direction-rotated", soap_direction,
         {"betas": (0.5, 0.75), "eps": EPS}, params=[[[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0]],
         grads=[[[[3.0, 0.0], [0.0, -1.0]], [2.0, -1.0]]],
         state={"step": [2, 2], "grad_avg": [[[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0]],
                "sqr_avg": [[[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0]],
                "factors": [[0.0] * 8, []],
                "eigenbases": [[0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0], []]},
         expect={"state:grad_avg": [[[0.0, -0.5], [1.5, 0.0]], [1.0, -0.5]],
                 "state:sqr_avg": [[[0.0, 0.25], [2.25, 0.0]], [1.0, 0.25]],
                 "state:factors": [[2.25, 0.0, 0.0, 0.25, 2.25, 0.0, 0.0, 0.25], []],
                 "field:update": [[[1.5 / (1.5 + EPS), 0.0], [0.0, -0.5 / (0.5 + EPS)]],
                                  [1.0 / (1.0 + EPS), -0.5 / (0.5 + EPS)]]}),
    # the eigenbases are made (zeros, by the init) and left to soap_eigenbases
    Case("soap_bases", soap_bases, {}, params=[[[0.0, 0.0]]], grads=[[[[1.0, 2.0]]]],
         state={"eigenbases": [[0.0] * 5]}, fresh={"eigenbases": [0]},
         expect={"state:eigenbases": [[0.0] * 5]}),
    # a param's first step (its state made now) only accumulates the factors, here with
    # shampoo_beta 0.5: L = [[1 + 4]] / 2, R = [[1, 2], [2, 4]] / 2 for g = [[1, 2]]
    Case("soap_direction-first-step", soap_direction,
         {"betas": (0.5, 0.75), "eps": EPS, "shampoo_beta": 0.5}, params=[[[0.0, 0.0]]],
         grads=[[[[1.0, 2.0]]]],
         state={"step": [1], "grad_avg": [[[0.0, 0.0]]], "sqr_avg": [[[0.0, 0.0]]],
                "factors": [[0.0] * 5], "eigenbases": [[0.0] * 5]},
         fresh={"grad_avg": [0], "sqr_avg": [0], "factors": [0]},
         expect={"state:factors": [[2.5, 0.5, 1.0, 1.0, 2.0]], "state:grad_avg": [[[0.0, 0.0]]],
                 "state:sqr_avg": [[[0.0, 0.0]]], "field:update": [[[0.0, 0.0]]]}),
    # p = (1 - 0.1 * 2) * (1 - 0.1 * 0.5) = 0.76; the param at its first step stays
    Case("soap_step", soap_step, {"lr": 0.1, "weight_decay": 0.5}, params=[[1.0], [2.0]],
         grads=[[[0.0], [0.0]]], fields={"update": [[2.0], [4.0]]},
         fresh={"factors": [1]}, expect={"params": [[0.76], [2.0]]}),
    # after the first step: eigenvectors by descending eigenvalue, L = [[2]] -> [[1]],
    # R = diag(1, 3) -> the columns e2, e1
    Case("soap_eigenbases-eigh", soap_eigenbases, {}, params=[[[0.0, 0.0]]],
         grads=[[[[0.0, 0.0]]]],
         state={"step": [1], "grad_avg": [[[0.0, 0.0]]], "sqr_avg": [[[5.0, 7.0]]],
                "factors": [[2.0, 1.0, 0.0, 0.0, 3.0]], "eigenbases": [[0.0] * 5]},
         expect={"state:eigenbases": [[1.0, 0.0, 1.0, 1.0, 0.0]],
                 "state:sqr_avg": [[[5.0, 7.0]]], "state:grad_avg": [[[0.0, 0.0]]]}),
    # a refresh: P = R Q = diag(1, 3) with Q = I, estimates (1, 3) -> columns and v's entries
    # swapped; Q = qr([[0, 1], [3, 0]]).Q = [[0, -1], [-1, 0]] (LAPACK's Householder signs,
    # which the update never sees: each column enters it twice); L = [[2]] keeps Q = [[1]].
    # The rotated m = (2, 3) turns into the new basis: Q_new^T Q_old^-T m = (-3, -2)
    Case("soap_eigenbases-qr", soap_eigenbases, {}, params=[[[0.0, 0.0]]],
         grads=[[[[0.0, 0.0]]]],
         state={"step": [11], "grad_avg": [[[2.0, 3.0]]], "sqr_avg": [[[5.0, 7.0]]],
                "factors": [[2.0, 1.0, 0.0, 0.0, 3.0]],
                "eigenbases": [[1.0, 1.0, 0.0, 0.0, 1.0]]},
         expect={"state:eigenbases": [[1.0, 0.0, -1.0, -1.0, 0.0]],
                 "state:sqr_avg": [[[7.0, 5.0]]], "state:grad_avg": [[[-3.0, -2.0]]]}),
    # ---- Lookahead's sync (the executor runs it only on due tensors): slow += 0.5 (p - slow)
    Case("lookahead", lookahead, {"alpha": 0.5}, params=[[3.0, -1.0], [0.0]],
         grads=[[[0.0, 0.0], [0.0]]], state={"slow_param": [[1.0, 1.0], [2.0]]},
         expect={"params": [[2.0, 0.0], [1.0]], "state:slow_param": [[2.0, 0.0], [1.0]]}),
    # ---- Prodigy and D-Adaptation (phase 1 around the barrier, phase 2 after it); d, dlr and
    # layer_scale are the group values the barrier keeps or computes
    # m = 0.9 * 1 + d * 0.1 * (3 + 0.5 * 1) with L2 decay and d = 2: 1.6
    Case("prodigy_grad_avg-l2", prodigy_grad_avg,
         {"betas": (0.9, 0.99), "weight_decay": 0.5, "decouple": False, "d": 2.0},
         params=[[1.0]], grads=[[[3.0]]], state={"grad_avg": [[1.0]]},
         expect={"state:grad_avg": [[1.6]]}),
    # v = 0.99 v + d^2 0.01 g^2 (d = 1): [1.03, 3.97]; s = 0.5 s + (d / d0) dlr g = 0.5 s + 4 g
    Case("prodigy_stats", prodigy_stats,
         {"betas": (0.9, 0.99), "beta3": 0.5, "d0": 0.5, "d": 1.0, "dlr": 2.0},
         params=[[1.0, 2.0]], grads=[[[2.0, -1.0]]],
         state={"sqr_avg": [[1.0, 4.0]], "s": [[0.5, 0.0]], "p0": [[3.0, 2.0]]},
         expect={"state:sqr_avg": [[1.03, 3.97]], "state:s": [[8.25, -4.0]],
                 "state:p0": [[3.0, 2.0]]}),
    # betas (0.5, 0.25), dlr 2: m = 0.5 + 2 * 0.5 * 2 = 2.5; v = 1 + 0.75 * 4 = 4;
    # s = 0.5 * 1 + 2 * 0.5 * 2 = 2.5
    Case("dadapt_adam_stats", dadapt_adam_stats,
         {"betas": (0.5, 0.25), "eps": 0.0, "dlr": 2.0, "layer_scale": 1.0},
         params=[[1.0]], grads=[[[2.0]]],
         state={"grad_avg": [[1.0]], "sqr_avg": [[4.0]], "s": [[1.0]]},
         expect={"state:grad_avg": [[2.5]], "state:sqr_avg": [[4.0]], "state:s": [[2.5]]}),
    # p = 2 - 0.1 * 0.5 * 2 = 1.9, then - dlr m / (sqrt(v) + d eps) = 0.5 * 3 / 5: 1.6
    Case("prodigy_step", prodigy_step,
         {"eps": 0.5, "weight_decay": 0.1, "decouple": True, "d": 2.0, "dlr": 0.5},
         params=[[2.0]], grads=[[[0.0]]], state={"grad_avg": [[3.0]], "sqr_avg": [[16.0]]},
         expect={"params": [[1.6]]}),
    # beta1 = 0, L2 decay: g = 1 + 0.1 * 2; p = 2 - dlr d g / (4 + d eps) = 2 - 1.2 / 5
    Case("prodigy_sign_free_step-l2", prodigy_sign_free_step,
         {"eps": 0.5, "weight_decay": 0.1, "decouple": False, "d": 2.0, "dlr": 0.5},
         params=[[2.0]], grads=[[[1.0]]], state={"sqr_avg": [[16.0]]},
         expect={"params": [[1.76]]}),
    # p = 2 - 0.5 * 0.2 * 2 = 1.8, then - m / sqrt(v) = 3 / 3: 0.8
    Case("dadapt_adam_step", dadapt_adam_step,
         {"eps": 0.0, "weight_decay": 0.5, "decouple": True, "dlr": 0.2},
         params=[[2.0]], grads=[[[0.0]]], state={"grad_avg": [[3.0]], "sqr_avg": [[9.0]]},
         expect={"params": [[0.8]]}),
    # ---- Schedule-Free (steppers/schedule_free.py): c = w / weight_sum, w = lr_max**2 here;
    # y = lerp(y, z, c) + lr * (beta * (1 - c) - 1) * u, z = z - lr * u.
    # k + 1 = 2, lr 0.5: w = 0.25, weight_sum 0.5, c = 0.5; y = lerp(1, 3, 0.5) + 0.5 * (0.25 - 1)
    # * 2 = 1.25 (through x: x = (1 - 0.5 * 3) / 0.5 = -1, x' = (-1 + 2) / 2, y' = (0.5 + 2) / 2)
    Case("schedule_free_sgd_step", schedule_free_sgd_step, {"lr": 0.5, "momentum": 0.5},
         params=[[1.0]], grads=[[[2.0]]],
         state={"step": [2], "z": [[3.0]], "lr_max": [0.5], "weight_sum": [0.25]},
         expect={"params": [[1.25]], "state:z": [[2.0]], "state:lr_max": [0.5],
                 "state:weight_sum": [0.5]}),
    # the first step of a 4-step warm-up: lr 0.4 / 4 = 0.1, w = 0.01 = weight_sum, c = 1:
    # y = z - 0.1 * 2 = 0.8
    Case("schedule_free_sgd_step-warm-up", schedule_free_sgd_step,
         {"lr": 0.4, "momentum": 0.5, "warmup_steps": 4}, params=[[1.0]], grads=[[[2.0]]],
         state={"step": [1], "z": [[1.0]], "lr_max": [-1.0], "weight_sum": [0.0]},
         expect={"params": [[0.8]], "state:z": [[0.8]], "state:lr_max": [0.1],
                 "state:weight_sum": [0.01]}),
    # t = 1, betas (0.5, 0.75): sqrt(0.25 / (1 - 0.75)) + 0.01 = 1.01; c = 1: y = z = 1 - 0.1 u
    Case("schedule_free_adam_step", schedule_free_adam_step,
         {"lr": 0.1, "betas": (0.5, 0.75), "eps": 0.01}, params=[[1.0]], grads=[[[2.0]]],
         state={"step": [1], "z": [[1.0]], "lr_max": [-1.0], "weight_sum": [0.0]},
         fields={"second_moment": [[0.25]]},
         expect={"params": [[1 - 0.2 / 1.01]], "state:z": [[1 - 0.2 / 1.01]],
                 "state:lr_max": [0.1], "state:weight_sum": [0.01]}),
    # t = 2: v / (1 - 0.75**2) = 1, d = 1.01; u = 1.01 / 1.01 + 0.5 * 2 = 2 (decay at y = 2);
    # c = 0.01 / 0.02: y = lerp(2, 4, 0.5) + 0.1 * (0.25 - 1) * 2 = 2.85, z = 4 - 0.2
    Case("schedule_free_adam_step-weight-decay", schedule_free_adam_step,
         {"lr": 0.1, "betas": (0.5, 0.75), "eps": 0.01, "weight_decay": 0.5}, params=[[2.0]],
         grads=[[[1.01]]], state={"step": [2], "z": [[4.0]], "lr_max": [0.1],
                                  "weight_sum": [0.01]},
         fields={"second_moment": [[0.4375]]},
         expect={"params": [[2.85]], "state:z": [[3.8]], "state:weight_sum": [0.02]}),
    # the transitions: x = (y - (1 - beta) z) / beta, y = beta x + (1 - beta) z
    Case("schedule_free_adam_eval", schedule_free_adam_eval, {"betas": (0.5, 0.9)},
         params=[[2.0, 1.0]], grads=[[[0.0, 0.0]]], state={"z": [[4.0, 1.0]]},
         expect={"params": [[0.0, 1.0]], "state:z": [[4.0, 1.0]]}),
    Case("schedule_free_adam_train", schedule_free_adam_train, {"betas": (0.5, 0.9)},
         params=[[0.0, 1.0]], grads=[[[0.0, 0.0]]], state={"z": [[4.0, 1.0]]},
         expect={"params": [[2.0, 1.0]]}),
    Case("schedule_free_sgd_eval", schedule_free_sgd_eval, {"momentum": 0.8}, params=[[1.0]],
         grads=[[[0.0]]], state={"z": [[2.0]]}, expect={"params": [[0.75]]}),
    Case("schedule_free_sgd_train", schedule_free_sgd_train, {"momentum": 0.8},
         params=[[0.75]], grads=[[[0.0]]], state={"z": [[2.0]]}, expect={"params": [[1.0]]}),
]
