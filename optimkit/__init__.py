"""optimkit: deep-learning optimizers built from stats and steppers over tensor lists."""

from . import stats, steppers
from .core import Optimizer, Part, stat, stepper
from .groups import param_groups
from .lookahead import Lookahead
from .recipes import (
    LAMB,
    LARC,
    LARS,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    AMSGrad,
    Over9000,
    RAdam,
    Ralamb,
    Ranger,
    RangerLars,
    RMSprop,
)

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "AMSGrad",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "Part",
    "RAdam",
    "RMSprop",
    "stat",
    "stats",
    "stepper",
    "steppers",
    "LAMB",
    "LARC",
    "LARS",
    "Lookahead",
    "Over9000",
    "Ralamb",
    "Ranger",
    "RangerLars",
    "param_groups",
]
