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
    # Keywords that let it minimise the toy problems of the test suite; two more keys are read
    # there: ``steps`` (default 3000) and ``anneal`` (cosine lr decay, default True).
    converge: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"lr": 0.1})
    status: str = "stable"
    aliases: tuple[str, ...] = ()

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
    # Adagrad's accumulator anneals the step already; a cosine decay on top stalls it.
    converge={"lr": 0.3, "steps": 6000, "anneal": False},
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
    converge={"lr": 0.03},
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
    converge={"lr": 0.1, "weight_decay": 0.0},  # decay would move the minimum
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
    # Its first steps are momentum SGD, which a Rosenbrock gradient throws far off.
    converge={"lr": 0.1, "degenerated_to_sgd": False},
))
