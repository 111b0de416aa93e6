"""optimkit: deep-learning optimizers built from stats and steppers over tensor lists.

The names below load on first use (PEP 562), so ``import optimkit`` and the ``optimkit``
command start without importing torch; ``optimkit.Adam`` imports what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Optimizer", "Part", "copy_of_param", "full", "stat", "stepper", "zeros"),
                    "core"),
    "accelerate": "core.optimizer",
    "param_groups": "groups",
    "Lookahead": "lookahead",
    **dict.fromkeys(("LAMB", "LARC", "LARS", "SGD", "Adagrad", "Adam", "AdaMod", "AdamW",
                     "AMSGrad", "DeepMemory", "DiffGrad", "LookaheadSGD", "MomentumSGD",
                     "NovoGrad", "Over9000", "QHAdam", "RAdam", "Ralamb", "Ranger",
                     "RangerLars", "RMSprop"), "recipes"),
    "available": "registry",
    "create": "registry",
    "OneCycle": "schedules",
    "SelectiveBackprop": "training",
    "lr_find": "training",
}
_SUBMODULES = ("schedules", "stats", "steppers")

__all__ = sorted([*_EXPORTS, *_SUBMODULES], key=str.lower)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        try:  # any submodule, e.g. optimkit.registry after a bare ``import optimkit``
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs; the runtime loads these lazily
    from . import schedules, stats, steppers
    from .core import Optimizer, Part, copy_of_param, full, stat, stepper, zeros
    from .core.optimizer import accelerate
    from .groups import param_groups
    from .lookahead import Lookahead
    from .recipes import (
        LAMB,
        LARC,
        LARS,
        SGD,
        Adagrad,
        Adam,
        AdaMod,
        AdamW,
        AMSGrad,
        DeepMemory,
        DiffGrad,
        LookaheadSGD,
        MomentumSGD,
        NovoGrad,
        Over9000,
        QHAdam,
        RAdam,
        Ralamb,
        Ranger,
        RangerLars,
        RMSprop,
    )
    from .registry import available, create
    from .schedules import OneCycle
    from .training import SelectiveBackprop, lr_find
