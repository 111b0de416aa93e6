"""optimkit: deep-learning optimizers built from stats and steppers over tensor lists."""

from . import stats, steppers
from .core import Optimizer, Part, stat, stepper
from .recipes import SGD, Adagrad, Adam, AdamW, AMSGrad, RAdam, RMSprop

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
]

# Schedules, the LR range test and Selective-Backprop (issue 4).
from . import schedules  # noqa: E402
from .schedules import OneCycle  # noqa: E402
from .training import SelectiveBackprop, lr_find  # noqa: E402

__all__ += ["OneCycle", "SelectiveBackprop", "lr_find", "schedules"]
