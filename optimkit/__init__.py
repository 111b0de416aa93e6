"""optimkit: deep-learning optimizers built from stats and steppers over tensor lists."""

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

__version__ = "0.1.0"

__all__ = [
    "Adagrad",
    "Adam",
    "AdaMod",
    "AdamW",
    "AMSGrad",
    "DeepMemory",
    "DiffGrad",
    "LAMB",
    "LARC",
    "LARS",
    "Lookahead",
    "LookaheadSGD",
    "MomentumSGD",
    "NovoGrad",
    "OneCycle",
    "Optimizer",
    "Over9000",
    "Part",
    "QHAdam",
    "RAdam",
    "Ralamb",
    "Ranger",
    "RangerLars",
    "RMSprop",
    "SGD",
    "SelectiveBackprop",
    "available",
    "copy_of_param",
    "create",
    "full",
    "lr_find",
    "param_groups",
    "schedules",
    "stat",
    "stats",
    "stepper",
    "steppers",
    "zeros",
    "accelerate",
]
