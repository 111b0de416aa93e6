"""optimkit: deep-learning optimizers built from stats and steppers over tensor lists."""

from . import stats, steppers
from .core import Optimizer, Part, stat, stepper
from .recipes import (
    SGD,
    Adagrad,
    Adam,
    AdaMod,
    AdamW,
    AMSGrad,
    DeepMemory,
    DiffGrad,
    NovoGrad,
    QHAdam,
    RAdam,
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
    "AdaMod",
    "DeepMemory",
    "DiffGrad",
    "NovoGrad",
    "QHAdam",
]
