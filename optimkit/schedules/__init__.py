"""Schedules of any hyper-parameter and the 1cycle policy, in the style of torch.optim.lr_scheduler.

* curves of progress (0 -> 1): ``linear``, ``cosine``, ``exponential``, ``polynomial``,
  ``constant``, joined with ``phases``;
* ``HyperScheduler(optimizer, total_steps, lr=..., momentum=..., weight_decay=...)`` drives
  them by name in ``param_groups`` (``momentum`` is ``betas[0]`` for Adam-like optimizers);
* ``OneCycle(optimizer, max_lr, total_steps, preset="torch" | "fastai" | "paper")``.
"""

from .curves import (
    Curve,
    Piecewise,
    Schedule,
    as_schedule,
    constant,
    cosine,
    exponential,
    linear,
    phases,
    polynomial,
)
from .onecycle import PRESETS, OneCycle, total_optimizer_steps
from .scheduler import HyperScheduler, check_hyper, read_hyper, resolve, write_hyper

__all__ = [
    "PRESETS",
    "Curve",
    "HyperScheduler",
    "OneCycle",
    "Piecewise",
    "Schedule",
    "as_schedule",
    "check_hyper",
    "constant",
    "cosine",
    "exponential",
    "linear",
    "phases",
    "polynomial",
    "read_hyper",
    "resolve",
    "total_optimizer_steps",
    "write_hyper",
]
