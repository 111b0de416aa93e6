"""Steppers: parts that write the params."""

from .basic import adagrad_step, adam_step, per_element_step, qhadam_step, sgd_step
from .rectified import radam_step

__all__ = [
    "adagrad_step", "adam_step", "radam_step", "sgd_step", "per_element_step", "qhadam_step",
]
