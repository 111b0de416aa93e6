"""The registry: every optimizer by lower-case name, with its reference and its test settings.

One entry per optimizer drives ``optimkit.create``, ``optimkit list``, the benchmark and the
whole parametrized test suite (in the spirit of torch's ``OptimizerInfo``).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from . import recipes


@dataclasses.dataclass(frozen=True)
class Reference:
    """The implementation an optimizer reproduces, as the tests build it.

    ``target`` is ``"module:attr"``; test-only packages (torch_optimizer, pytorch_ranger) and the
    naive references under ``tests/reference`` are imported only when it is built.
    """

    target: str
    description: str
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # optimkit state name -> the reference's state name, for comparing state; or a function
    # (reference state, param group) -> our value, where the reference stores it differently.
    state: Mapping[str, str | Callable[[Mapping[str, Any], Mapping[str, Any]], Any]] = (
        dataclasses.field(default_factory=dict)
    )

    def build(self, params, **kwargs) -> torch.optim.Optimizer:
        module, _, attr = self.target.partition(":")
        factory = importlib.import_module(module)
        for name in attr.split("."):
            factory = getattr(factory, name)
        kwargs = {self.rename.get(k, k): v for k, v in kwargs.items()}
        return factory(params, **{**kwargs, **self.fixed})


@dataclasses.dataclass(frozen=True)
class Entry:
    """One optimizer: how to build it, what it reproduces, and how the suite tests it."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    reference: Reference
    year: int | None = None
    paper: str | None = None
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
    status: str = "stable"
    aliases: tuple[str, ...] = ()
    # Whether flat mode runs its recipe as one tensor per bucket (and so compiles it as one);
    # False for layer-wise recipes (per-layer norms or scalar state), which step per tensor
    # over the views.
    flat_step: bool = True
    # Contract tests that do not apply, by test name, with the reason (torch's DecorateInfo).
    skips: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # How the tests read a param's state (a wrapper's state may live in two places).
    state_of: Callable[[torch.optim.Optimizer, torch.Tensor], Mapping[str, Any]] = (
        lambda optimizer, p: optimizer.state[p]
    )

    @property
    def parts(self) -> tuple[str, ...]:
        """The names of the parts it runs; a wrapper's (Lookahead) come after its own step."""
        cls = self.factory if isinstance(self.factory, type) else None
        if getattr(cls, "parts", ()):
            return tuple(p.name for p in cls.parts)
        # A wrapper around a recipe: build one on a dummy param to see what it wraps.
        opt = self.factory([torch.zeros(1, requires_grad=True)])
        inner = getattr(opt, "optimizer", None)
        own = f"lookahead(k={opt.k}, alpha={opt.alpha})" if hasattr(opt, "k") else "(wrapper)"
        return (*(p.name for p in getattr(type(inner), "parts", ())), own)


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    for name in (entry.name, *entry.aliases):
        if name in REGISTRY:
            raise ValueError(f"optimizer {name!r} is registered twice")
        REGISTRY[name] = entry
    return entry


def available() -> list[str]:
    """The names ``create`` accepts (aliases left out), in the order of the notes' table."""
    seen: list[str] = []
    for entry in REGISTRY.values():
        if entry.name not in seen:
            seen.append(entry.name)
    return seen


def entries() -> list[Entry]:
    return [REGISTRY[name] for name in available()]


def get(name: str) -> Entry:
    key = name.lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    return REGISTRY[key]


def create(name: str, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """Build an optimizer by its lower-case name.

    ``optimkit.create("radam", model.parameters(), lr=1e-3)``; ``available()`` lists the names.
    """
    return get(name).factory(params, **kwargs)


_TORCH_ADAM_STATE = {"grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq", "step": "step"}
_TORCH_AMSGRAD_STATE = {**_TORCH_ADAM_STATE, "max_sqr_avg": "max_exp_avg_sq"}

register(Entry(
    name="sgd",
    factory=recipes.SGD,
    year=1951,
    paper="https://doi.org/10.1214/aoms/1177729586",
    reference=Reference(
        "torch.optim:SGD", "torch.optim.SGD", state={"momentum_buffer": "momentum_buffer"}
    ),
    settings=(
        {"lr": 0.1},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ),
    converge={"lr": 1e-3, "momentum": 0.9},
))
register(Entry(
    name="sgd-momentum",
    factory=recipes.MomentumSGD,
    year=1964,
    paper="https://doi.org/10.1016/0041-5553(64)90137-5",
    reference=Reference(
        "torch.optim:SGD", "torch.optim.SGD(momentum=0.9)", fixed={"momentum": 0.9},
        state={"momentum_buffer": "momentum_buffer"},
    ),
    settings=({}, {"lr": 0.05, "nesterov": True, "weight_decay": 0.01}),
    converge={"lr": 1e-3},
    aliases=("sgd-with-momentum",),
))
register(Entry(
    name="adagrad",
    factory=recipes.Adagrad,
    year=2011,
    paper="https://jmlr.org/papers/v12/duchi11a.html",
    reference=Reference(
        "torch.optim:Adagrad", "torch.optim.Adagrad", state={"sqr_sum": "sum", "step": "step"}
    ),
    settings=(
        {},
        {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1},
        {"initial_accumulator_value": 0.1, "eps": 1e-6},
    ),
    # Adagrad's accumulator anneals the step already; a cosine decay on top stalls it.
    converge={"lr": 0.3},
    converge_steps=6000,
    converge_anneal=False,
))
register(Entry(
    name="rmsprop",
    factory=recipes.RMSprop,
    year=2012,
    paper="https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf",
    reference=Reference(
        "torch.optim:RMSprop", "torch.optim.RMSprop",
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
))
register(Entry(
    name="adam",
    factory=recipes.Adam,
    year=2014,
    paper="https://arxiv.org/abs/1412.6980",
    reference=Reference("torch.optim:Adam", "torch.optim.Adam", state=_TORCH_AMSGRAD_STATE),
    settings=(
        {},
        {"lr": 1e-2, "weight_decay": 0.1},
        {"amsgrad": True, "betas": (0.8, 0.99)},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
))
register(Entry(
    name="adamw",
    factory=recipes.AdamW,
    year=2017,
    paper="https://arxiv.org/abs/1711.05101",
    reference=Reference("torch.optim:AdamW", "torch.optim.AdamW", state=_TORCH_AMSGRAD_STATE),
    settings=({}, {"lr": 1e-2, "weight_decay": 0.5}, {"amsgrad": True}),
    converge={"lr": 0.1, "weight_decay": 0.0},  # decay would move the minimum
))
register(Entry(
    name="amsgrad",
    factory=recipes.AMSGrad,
    year=2018,
    paper="https://arxiv.org/abs/1904.09237",
    reference=Reference(
        "torch.optim:Adam", "torch.optim.Adam(amsgrad=True)", fixed={"amsgrad": True},
        state=_TORCH_AMSGRAD_STATE,
    ),
    settings=({}, {"lr": 1e-2, "weight_decay": 0.1}),
))
register(Entry(
    name="radam",
    factory=recipes.RAdam,
    year=2019,
    paper="https://arxiv.org/abs/1908.03265",
    reference=Reference("torch.optim:RAdam", "torch.optim.RAdam", state=_TORCH_ADAM_STATE),
    settings=(
        {},
        {"lr": 1e-2, "weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True, "betas": (0.9, 0.99)},
    ),
    # Its first steps are momentum SGD, which a Rosenbrock gradient throws far off.
    converge={"lr": 0.1, "degenerated_to_sgd": False},
))


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


register(Entry(
    name="qhadam",
    factory=recipes.QHAdam,
    year=2018,
    paper="https://arxiv.org/abs/1810.06801",
    reference=Reference(
        "torch_optimizer:QHAdam", "torch_optimizer.QHAdam",
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
))
register(Entry(
    name="novograd",
    factory=recipes.NovoGrad,
    year=2019,
    paper="https://arxiv.org/abs/1905.11286",
    reference=Reference(
        # torch_optimizer.NovoGrad, its layer moment kept in the param dtype (it hard-codes
        # float32, which would round every float64 run to float32 precision)
        "reference.novograd:NovoGrad", "torch_optimizer.NovoGrad",
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
))
register(Entry(
    name="diffgrad",
    factory=recipes.DiffGrad,
    year=2019,
    paper="https://arxiv.org/abs/1909.11015",
    reference=Reference(
        "torch_optimizer:DiffGrad", "torch_optimizer.DiffGrad",
        state={**_TORCH_ADAM_STATE, "prev_grad": "previous_grad"},
    ),
    settings=(
        {},
        {"lr": 1e-2, "weight_decay": 0.1},
        {"betas": (0.8, 0.99), "eps": 1e-6},
    ),
    # the friction (>= 0.5) shrinks the steps: a larger lr than Adam's
    converge={"lr": 0.1},
))
register(Entry(
    name="adamod",
    factory=recipes.AdaMod,
    year=2019,
    paper="https://arxiv.org/abs/1910.12249",
    reference=Reference(
        "torch_optimizer:AdaMod", "torch_optimizer.AdaMod",
        state={**_TORCH_ADAM_STATE, "step_size_avg": "exp_avg_lr"},
    ),
    settings=(
        {},
        {"lr": 1e-2, "weight_decay": 0.1},
        {"beta3": 0.9, "betas": (0.8, 0.99)},
    ),
    # beta3 = 0.9 shortens the built-in warm-up (see the AdaMod docstring)
    converge={"lr": 0.1, "beta3": 0.9},
))
register(Entry(
    name="deepmemory",
    factory=recipes.DeepMemory,
    year=2020,
    paper="https://github.com/lessw2020/Best-Deep-Learning-Optimizers/tree/master/DeepMemory",
    reference=Reference(
        "reference.deepmemory:DeepMemory",
        "DeepMemory/deepmemory.py (lessw2020/Best-Deep-Learning-Optimizers), g_prev copied",
        state={
            **_TORCH_ADAM_STATE, "step_size_avg": "exp_avg_lr", "prev_grad": "previous_grad",
        },
    ),
    settings=(
        {},
        {"version": 0, "weight_decay": 0.1},
        {"len_memory": 10, "betas": (0.8, 0.99), "eps": 1e-8},
    ),
    status="experimental",
    converge={"lr": 0.1, "len_memory": 20},
    skips={
        "test_lr_scheduler_drives_the_live_param_groups": (
            "its step blends in the remembered step sizes, so lr=0 still moves the params"
        ),
    },
))


# ------------------------------------------------- layer-wise trust ratios and Lookahead
def wrapped_state(optimizer, p) -> dict[str, Any]:
    """A Lookahead wrapper's view of a param: the inner state plus the slow weights."""
    return {**optimizer.optimizer.state[p], **optimizer.state[p]}


_SGD_MOMENTUM = {"momentum_buffer": "momentum_buffer"}
_RALAMB_STATE = {"step": "step", "grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq"}
# Lookahead counts each param's own steps, as the references' per-param ``step`` does.
_LOOKAHEAD_STATE = {"slow_param": "slow_buffer", "lookahead_step": "step"}

register(Entry(
    name="lars",
    factory=recipes.LARS,
    flat_step=False,  # layer-wise: flat mode steps it per tensor
    year=2017,
    paper="https://arxiv.org/abs/1708.03888",
    reference=Reference(
        "reference.larc:LARC", "apex LARC(torch.optim.SGD, clip=False) = LARS paper Alg. 1",
        fixed={"clip": False}, state=_SGD_MOMENTUM,
    ),
    pinned={"momentum": 0.9, "trust_coefficient": 0.001},
    settings=(
        {"lr": 1.0},
        {"lr": 2.0, "weight_decay": 5e-3, "nesterov": True},
        {"lr": 0.5, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1, "eps": 1e-3},
        {"lr": 1.0, "momentum": 0.0, "trust_coefficient": 0.01},
    ),
    converge={"lr": 5.0, "trust_coefficient": 0.01},
))
register(Entry(
    name="larc",
    factory=recipes.LARC,
    flat_step=False,  # layer-wise: flat mode steps it per tensor
    year=2017,
    paper="https://arxiv.org/abs/1708.03888",
    reference=Reference(
        "reference.larc:LARC", "apex LARC(torch.optim.SGD, clip=True)",
        fixed={"clip": True}, state=_SGD_MOMENTUM,
    ),
    pinned={"momentum": 0.9},
    # With lr around 0.01 the clip min(local / lr, 1) binds for some params and not others.
    settings=(
        {"lr": 0.01},
        {"lr": 0.02, "weight_decay": 0.05, "nesterov": True},
        {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3, "trust_coefficient": 0.05},
    ),
    converge={"lr": 0.05},
))
register(Entry(
    name="lamb",
    factory=recipes.LAMB,
    flat_step=False,  # layer-wise: flat mode steps it per tensor
    year=2019,
    paper="https://arxiv.org/abs/1904.00962",
    reference=Reference(
        "torch_optimizer:Lamb", "torch_optimizer.Lamb", state=_RALAMB_STATE,
    ),
    settings=(
        {},
        {"lr": 1e-2, "weight_decay": 0.1, "debias": True},
        # A clamp below ||w|| of the larger params, so it binds.
        {"clamp_value": 1.5, "betas": (0.8, 0.99), "eps": 1e-4},
        {"adam": True, "weight_decay": 0.01},
    ),
))
register(Entry(
    name="ralamb",
    factory=recipes.Ralamb,
    flat_step=False,  # layer-wise: flat mode steps it per tensor
    year=2019,
    paper="https://github.com/mgrankin/over9000",
    reference=Reference(
        "reference.ralamb:Ralamb", "mgrankin/over9000 ralamb.py", state=_RALAMB_STATE,
    ),
    settings=(
        {},
        {"lr": 1e-2, "weight_decay": 0.1},
        {"betas": (0.8, 0.99), "eps": 1e-6},
    ),
    # As for RAdam: the momentum-SGD warm-up steps overshoot on these surfaces.
    converge={"lr": 0.1, "degenerated_to_sgd": False},
))
register(Entry(
    name="ranger",
    factory=recipes.Ranger,
    year=2019,
    paper="https://github.com/lessw2020/Ranger-Deep-Learning-Optimizer",
    reference=Reference(
        "pytorch_ranger:Ranger", "pytorch_ranger.Ranger (RAdam + Lookahead)",
        rename={"n_sma_threshold": "N_sma_threshhold"},
        state={**_RALAMB_STATE, **_LOOKAHEAD_STATE},
    ),
    settings=(
        {},
        {"lr": 1e-2, "weight_decay": 0.1},
        {"k": 4, "alpha": 0.8, "betas": (0.9, 0.99), "n_sma_threshold": 4.0},
    ),
    state_of=wrapped_state,
    # pytorch_ranger computes in float32 even for float64 params (p.data.float()).
    rtol={torch.float64: 1e-5, torch.float32: 1e-4},
    # As for RAdam: the momentum-SGD warm-up steps overshoot on these surfaces.
    converge={"lr": 0.1, "degenerated_to_sgd": False},
))
register(Entry(
    name="rangerlars",
    factory=recipes.RangerLars,
    flat_step=False,  # layer-wise: flat mode steps it per tensor
    year=2019,
    paper="https://github.com/mgrankin/over9000",
    reference=Reference(
        "reference.rangerlars:RangerLars", "Lookahead(over9000 Ralamb, k=6, alpha=0.5)",
        state={**_RALAMB_STATE, **_LOOKAHEAD_STATE},
    ),
    settings=(
        {},
        {"lr": 1e-2, "weight_decay": 0.1},
        {"k": 3, "alpha": 0.3},
    ),
    state_of=wrapped_state,
    aliases=("over9000",),
    # As for RAdam: the momentum-SGD warm-up steps overshoot on these surfaces.
    converge={"lr": 0.3, "degenerated_to_sgd": False},
))
register(Entry(
    name="lookahead",
    factory=recipes.LookaheadSGD,
    year=2019,
    paper="https://arxiv.org/abs/1907.08610",
    reference=Reference(
        "reference.lookahead:LookaheadSGD", "Lookahead paper Alg. 1 around torch.optim.SGD",
        state={**_SGD_MOMENTUM, "slow_param": "slow_buffer", "lookahead_step": "la_step"},
    ),
    settings=({}, {"lr": 0.05, "k": 3, "alpha": 0.8, "weight_decay": 0.01}),
    state_of=wrapped_state,
    converge={"lr": 3e-3},
))
