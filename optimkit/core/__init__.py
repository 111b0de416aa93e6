"""The engine: parts, the recipe check, the executor and the optimizer that runs a recipe.

Hyper-parameter rules live in :mod:`optimkit.core.rules`.
"""

from .executor import BucketPolicy, Executor
from .optimizer import Optimizer, accelerate
from .parts import (
    MATRIX,
    Barrier,
    Part,
    Route,
    barrier,
    copy_of_param,
    full,
    is_matrix,
    own_shape,
    same_shapes,
    stat,
    step_counter,
    stepper,
    transition,
    zero_scalar,
    zeros,
)
from .policy import Layout
from .recipe import Recipe, check_recipe
from .tensorlists import FIELDS, Bucket, debias, norms, scalars

__all__ = [
    "FIELDS",
    "Barrier",
    "MATRIX",
    "Layout",
    "Bucket",
    "BucketPolicy",
    "Executor",
    "Optimizer",
    "Part",
    "Recipe",
    "Route",
    "accelerate",
    "barrier",
    "check_recipe",
    "copy_of_param",
    "debias",
    "full",
    "is_matrix",
    "norms",
    "own_shape",
    "same_shapes",
    "scalars",
    "stat",
    "step_counter",
    "stepper",
    "transition",
    "zero_scalar",
    "zeros",
]
