"""The registry: every optimizer by lower-case name, with its reference and its test settings.

One entry per optimizer drives ``optimkit.create``, ``optimkit list``, the benchmark and the
whole parametrized test suite (in the spirit of torch's ``OptimizerInfo``).
"""

from __future__ import annotations

import dataclasses
import importlib
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
    # optimkit state name -> the reference's state name, for comparing state.
    state: Mapping[str, str] = dataclasses.field(default_factory=dict)

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
    # Keywords that make it converge on the toy problems in the test suite.
    converge: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"lr": 1e-2})
    status: str = "stable"
    aliases: tuple[str, ...] = ()
    # How the tests read a param's state (a wrapper's state may live in two places).
    state_of: Callable[[torch.optim.Optimizer, torch.Tensor], Mapping[str, Any]] = (
        lambda optimizer, p: optimizer.state[p]
    )

    @property
    def parts(self) -> tuple[str, ...]:
        cls = self.factory if isinstance(self.factory, type) else None
        return tuple(p.name for p in getattr(cls, "parts", ()))


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
    """Build an optimizer by its lower-case name: ``optimkit.create("radam", model.parameters())``."""
    return get(name).factory(params, **kwargs)


_TORCH_ADAM_STATE = {"grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq", "step": "step"}

register(Entry(
    name="sgd",
    factory=recipes.SGD,
    reference=Reference("torch.optim:SGD", "torch.optim.SGD", state={"momentum_buffer": "momentum_buffer"}),
    settings=(
        {"lr": 0.1},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ),
    converge={"lr": 1e-3, "momentum": 0.9},
))
register(Entry(
    name="adagrad",
    factory=recipes.Adagrad,
    year=2011,
    paper="https://jmlr.org/papers/v12/duchi11a.html",
    reference=Reference("torch.optim:Adagrad", "torch.optim.Adagrad", state={"sqr_sum": "sum", "step": "step"}),
    settings=(
        {},
        {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1},
        {"initial_accumulator_value": 0.1, "eps": 1e-6},
    ),
    converge={"lr": 0.5},
))
register(Entry(
    name="rmsprop",
    factory=recipes.RMSprop,
    year=2012,
    paper="https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf",
    reference=Reference(
        "torch.optim:RMSprop", "torch.optim.RMSprop",
        state={"sqr_avg": "square_avg", "grad_avg": "grad_avg", "momentum_buffer": "momentum_buffer", "step": "step"},
    ),
    settings=(
        {},
        {"centered": True, "weight_decay": 0.1},
        {"momentum": 0.9, "alpha": 0.9},
        {"momentum": 0.5, "centered": True, "eps": 1e-4},
    ),
    converge={"lr": 1e-3},
))
register(Entry(
    name="adam",
    factory=recipes.Adam,
    year=2014,
    paper="https://arxiv.org/abs/1412.6980",
    reference=Reference("torch.optim:Adam", "torch.optim.Adam", state={**_TORCH_ADAM_STATE, "max_sqr_avg": "max_exp_avg_sq"}),
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
    reference=Reference("torch.optim:AdamW", "torch.optim.AdamW", state={**_TORCH_ADAM_STATE, "max_sqr_avg": "max_exp_avg_sq"}),
    settings=({}, {"lr": 1e-2, "weight_decay": 0.5}, {"amsgrad": True}),
))
register(Entry(
    name="amsgrad",
    factory=recipes.AMSGrad,
    year=2018,
    paper="https://arxiv.org/abs/1904.09237",
    reference=Reference(
        "torch.optim:Adam", "torch.optim.Adam(amsgrad=True)", fixed={"amsgrad": True},
        state={**_TORCH_ADAM_STATE, "max_sqr_avg": "max_exp_avg_sq"},
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
    converge={"lr": 0.1},
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
    converge={"lr": 0.3},
))
register(Entry(
    name="rangerlars",
    factory=recipes.RangerLars,
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
    converge={"lr": 0.3},
))
