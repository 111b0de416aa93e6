"""optimkit: deep-learning optimizers built from stats and steppers over tensor lists.

The names here come from the packages' own export lists: every recipe of ``recipes.py``, the
engine (``core``), the wrappers, and the training, schedule and registry entry points.
"""

from . import core, recipes, schedules, stats, steppers, wrappers
from .core import *  # noqa: F403
from .recipes import *  # noqa: F403
from .registry import available, create
from .schedules import OneCycle
from .training import SelectiveBackprop, lr_find, param_groups
from .wrappers import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    *core.__all__,
    *recipes.__all__,
    *wrappers.__all__,
    "OneCycle",
    "SelectiveBackprop",
    "available",
    "create",
    "lr_find",
    "param_groups",
    "schedules",
    "stats",
    "steppers",
]
