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


def library_peers(name: str) -> tuple[Peer, ...]:
    """``name`` in torch_optimizer and pytorch_optimizer (each timed where installed)."""
    return tuple(Peer(module, f"{module}:{name}") for module in ("torch_optimizer",
                                                                 "pytorch_optimizer"))


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
    # Keywords that let it minimise the toy problems of the test suite, in ``converge_steps``
    # steps, with a cosine-annealed lr unless ``converge_anneal`` is False.
    converge: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"lr": 0.1})
    converge_steps: int = 3000
    converge_anneal: bool = True
    # Whether flat mode runs its recipe as one tensor per bucket (and so compiles it as one);
    # False for layer-wise recipes (per-layer norms or scalar state), which step per tensor
    # over the views.
    flat_step: bool = True
    # Tests that do not apply, by test function name, with the reason (torch's DecorateInfo).
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


def _qhadam_step(state, group):
    beta2 = group["betas"][1]
    return math.log(1 - (1 - beta2) * state["beta2_weight"]) / math.log(beta2)


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
        peers=torch_peers("SGD", fused=True, lr=1e-3, momentum=0.9),
        bench_kwargs={"momentum": 0.9},
    ),
    OptimizerInfo(
        "sgd-momentum",
        Reference("torch.optim:SGD", fixed={"momentum": 0.9}, state=_SGD_MOMENTUM),
        settings=({}, {"lr": 0.05, "nesterov": True, "weight_decay": 0.01}),
        converge={"lr": 1e-3},
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
        peers=torch_peers("RMSprop"),
    ),
    OptimizerInfo(
        "adam",
        Reference("torch.optim:Adam", state=_TORCH_AMSGRAD_STATE),
        settings=(
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"amsgrad": True, "betas": (0.8, 0.99)},
            {"weight_decay": 0.1, "decoupled_weight_decay": True},
        ),
        peers=torch_peers("Adam", fused=True),
    ),
    OptimizerInfo(
        "adamw",
        Reference("torch.optim:AdamW", state=_TORCH_AMSGRAD_STATE),
        settings=({}, {"lr": 1e-2, "weight_decay": 0.5}, {"amsgrad": True}),
        converge={"lr": 0.1, "weight_decay": 0.0},  # decay would move the minimum
        peers=torch_peers("AdamW", fused=True),
    ),
    OptimizerInfo(
        "amsgrad",
        Reference("torch.optim:Adam", fixed={"amsgrad": True}, state=_TORCH_AMSGRAD_STATE),
        settings=({}, {"lr": 1e-2, "weight_decay": 0.1}),
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
        # Its per-layer second moment is one scalar per tensor: flat mode steps it per tensor.
        flat_step=False,
        converge={"lr": 1e-2, "grad_averaging": True},
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
        flat_step=False,  # layer-wise: flat mode steps it per tensor
        converge={"lr": 5.0, "trust_coefficient": 0.01},
        peers=library_peers("LARS"),
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
        flat_step=False,  # layer-wise: flat mode steps it per tensor
        converge={"lr": 0.05},
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
        flat_step=False,  # layer-wise: flat mode steps it per tensor
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
        flat_step=False,  # layer-wise: flat mode steps it per tensor
        # As for RAdam: the momentum-SGD warm-up steps overshoot on these surfaces.
        converge={"lr": 0.1, "degenerated_to_sgd": False},
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
        flat_step=False,  # layer-wise: flat mode steps it per tensor
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
        ),
        # every element moves by lr: a small lr, annealed, lands on the minimum
        converge={"lr": 1e-2},
        peers=library_peers("Lion"),
    ),
]

_BY_NAME = {info.name: info for info in DB}


def get(name: str) -> OptimizerInfo:
    """The test database's entry of a registry name (an alias works too)."""
    return _BY_NAME[registry.get(name).name]
