"""Stats: parts that keep per-parameter state."""

from ..steppers.rectified import radam_direction  # a stat, next to radam_step's shared math
from .centralize import centralize_gradient
from .friction import grad_friction
from .gradient import accumulate_grad, layer_normalize, momentum, rms_normalize, weight_decay
from .layerwise import layer_sqr_avg, max_layer_sqr_avg
from .moments import (
    average_grad,
    average_sqr_grad,
    average_sqr_grad_alpha,
    centered_grad_avg,
    max_sqr_avg,
    step_stat,
    sum_sqr_grad,
)
from .step_sizes import adam_step_sizes, blended_step_sizes, bounded_step_sizes
from .trust import adam_direction, debias_direction, layer_norms, new_weights_norm, trust_ratio

__all__ = [
    "average_grad",
    "average_sqr_grad",
    "average_sqr_grad_alpha",
    "centered_grad_avg",
    "max_sqr_avg",
    "momentum",
    "rms_normalize",
    "step_stat",
    "sum_sqr_grad",
    "weight_decay",
    "accumulate_grad",
    "adam_step_sizes",
    "blended_step_sizes",
    "bounded_step_sizes",
    "grad_friction",
    "layer_normalize",
    "layer_sqr_avg",
    "max_layer_sqr_avg",
    "adam_direction",
    "centralize_gradient",
    "debias_direction",
    "layer_norms",
    "new_weights_norm",
    "radam_direction",
    "trust_ratio",
]
