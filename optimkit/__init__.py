"""optimkit: deep-learning optimizers built from stats and steppers over tensor lists."""

from . import stats, steppers
from .core import Optimizer, Part, copy_of_param, full, stat, stepper, zeros
from .groups import param_groups
from .lookahead import Lookahead
from .recipes import (
    LAMB,
    LARC,
    LARS,
    LookaheadSGD,
    MomentumSGD,
    SGD,
    Adagrad,
    Adam,
    AdaMod,
    AdamW,
    AMSGrad,
    DeepMemory,
    DiffGrad,
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

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "AMSGrad",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "Part",
    "available",
    "copy_of_param",
    "create",
    "full",
    "RAdam",
    "RMSprop",
    "stat",
    "stats",
    "stepper",
    "steppers",
    "zeros",
    "AdaMod",
    "DeepMemory",
    "DiffGrad",
    "NovoGrad",
    "QHAdam",
    "LAMB",
    "LARC",
    "LARS",
    "LookaheadSGD",
    "MomentumSGD",
    "Lookahead",
    "Over9000",
    "Ralamb",
    "Ranger",
    "RangerLars",
    "param_groups",
]

# Schedules, the LR range test and Selective-Backprop (issue 4).
from . import schedules  # noqa: E402
from .schedules import OneCycle  # noqa: E402
from .training import SelectiveBackprop, lr_find  # noqa: E402

__all__ += ["OneCycle", "SelectiveBackprop", "lr_find", "schedules"]
