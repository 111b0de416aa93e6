from .optimizer import Optimizer, accelerate, validate_hypers
from .parts import Part, copy_of_param, full, stat, step_counter, stepper, zero_scalar, zeros
from .tensorlists import Bucket, norms, scalars

__all__ = [
    "Bucket",
    "Optimizer",
    "Part",
    "accelerate",
    "copy_of_param",
    "full",
    "norms",
    "scalars",
    "stat",
    "step_counter",
    "stepper",
    "validate_hypers",
    "zero_scalar",
    "zeros",
]
