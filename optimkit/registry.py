"""The catalogue: every optimizer by lower-case name, with its paper, year and status.

``optimkit.create``, ``optimkit.available``, ``optimkit list`` and ``optimkit bench`` read it.
How the tests check each optimizer (its reference implementation, settings, tolerances) lives
in the test database (one entry per optimizer here),
https://github.com/optimkit/optimkit/blob/main/tests/optim_db.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch

from . import recipes


@dataclasses.dataclass(frozen=True)
class Reference:
    """What an optimizer reproduces, in words (the implementation or the paper's algorithm)."""

    description: str


@dataclasses.dataclass(frozen=True)
class Entry:
    """One optimizer of the catalogue."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    reference: Reference
    year: int | None = None
    paper: str | None = None
    status: str = "stable"
    aliases: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The first line of the optimizer's docstring."""
        doc = (getattr(self.factory, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def parts(self) -> tuple[str, ...]:
        """The names of the parts it runs, in order; a part that runs every k-th step shows
        its period and weight (``lookahead(k=6, alpha=0.5)``)."""
        cls = self.factory if isinstance(self.factory, type) else None
        names = []
        for part in getattr(cls, "parts", ()):
            if part.every is None:
                names.append(part.name)
            else:
                shown = ", ".join(f"{k}={cls.hypers[k]}" for k in part.hypers)
                names.append(f"{part.name}({shown})")
        return tuple(names)


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    for name in (entry.name, *entry.aliases):
        if name in REGISTRY:
            raise ValueError(f"optimizer {name!r} is registered twice")
        REGISTRY[name] = entry
    return entry


def available() -> list[str]:
    """The names ``create`` accepts (aliases left out), in the order they were registered."""
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


def _add(name, factory, reproduces, year, paper, **more):
    register(Entry(name, factory, Reference(reproduces), year, paper, **more))


_add("sgd", recipes.SGD, "torch.optim.SGD", 1951, "https://doi.org/10.1214/aoms/1177729586")
_add("sgd-momentum", recipes.MomentumSGD, "torch.optim.SGD(momentum=0.9)", 1964,
     "https://doi.org/10.1016/0041-5553(64)90137-5", aliases=("sgd-with-momentum",))
_add("adagrad", recipes.Adagrad, "torch.optim.Adagrad", 2011,
     "https://jmlr.org/papers/v12/duchi11a.html")
_add("rmsprop", recipes.RMSprop, "torch.optim.RMSprop", 2012,
     "https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf")
_add("adam", recipes.Adam, "torch.optim.Adam", 2014, "https://arxiv.org/abs/1412.6980")
_add("adamw", recipes.AdamW, "torch.optim.AdamW", 2017, "https://arxiv.org/abs/1711.05101")
_add("amsgrad", recipes.AMSGrad, "torch.optim.Adam(amsgrad=True)", 2018,
     "https://arxiv.org/abs/1904.09237")
_add("radam", recipes.RAdam, "torch.optim.RAdam", 2019, "https://arxiv.org/abs/1908.03265")
_add("qhadam", recipes.QHAdam, "torch_optimizer.QHAdam", 2018,
     "https://arxiv.org/abs/1810.06801")
_add("novograd", recipes.NovoGrad, "torch_optimizer.NovoGrad", 2019,
     "https://arxiv.org/abs/1905.11286")
_add("diffgrad", recipes.DiffGrad, "torch_optimizer.DiffGrad", 2019,
     "https://arxiv.org/abs/1909.11015")
_add("adamod", recipes.AdaMod, "torch_optimizer.AdaMod", 2019, "https://arxiv.org/abs/1910.12249")
_add("deepmemory", recipes.DeepMemory,
     "DeepMemory/deepmemory.py (lessw2020/Best-Deep-Learning-Optimizers), g_prev copied", 2020,
     "https://github.com/lessw2020/Best-Deep-Learning-Optimizers/tree/master/DeepMemory",
     status="experimental")
_add("lars", recipes.LARS, "apex LARC(torch.optim.SGD, clip=False) = LARS paper Alg. 1", 2017,
     "https://arxiv.org/abs/1708.03888")
_add("larc", recipes.LARC, "apex LARC(torch.optim.SGD, clip=True)", 2017,
     "https://arxiv.org/abs/1708.03888")
_add("lamb", recipes.LAMB, "torch_optimizer.Lamb", 2019, "https://arxiv.org/abs/1904.00962")
_add("ralamb", recipes.Ralamb, "mgrankin/over9000 ralamb.py", 2019,
     "https://github.com/mgrankin/over9000")
_add("ranger", recipes.Ranger, "pytorch_ranger.Ranger (RAdam + Lookahead)", 2019,
     "https://github.com/lessw2020/Ranger-Deep-Learning-Optimizer")
_add("rangerlars", recipes.RangerLars, "Lookahead(over9000 Ralamb, k=6, alpha=0.5)", 2019,
     "https://github.com/mgrankin/over9000", aliases=("over9000",))
_add("lookahead", recipes.LookaheadSGD, "Lookahead paper Alg. 1 around torch.optim.SGD", 2019,
     "https://arxiv.org/abs/1907.08610")
_add("lion", recipes.Lion, "Lion paper Alg. 2 (lion_pytorch)", 2023,
     "https://arxiv.org/abs/2302.06675")
