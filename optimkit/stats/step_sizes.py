"""Per-element step sizes, and AdaMod's memory of them.

``adam_step_sizes`` provides Adam's per-element step size as ``step_size``; the memory stats
bound or blend it with a running average; ``per_element_step`` applies it.
"""

from __future__ import annotations

import torch

from ..core.parts import stat, zeros
from ..core.rules import at_least, nonnegative, unit_interval
from ..core.rules import betas as betas_rule
from ..core.tensorlists import debias, scalars


@stat(reads=("step", "second_moment"), provides=("step_size",),
      rules=dict(lr=nonnegative, betas=betas_rule, eps=nonnegative), lr=1e-3,
      betas=(0.9, 0.999), eps=1e-8)
def adam_step_sizes(b, lr, betas, eps):
    """Adam's per-element step size in the paper's efficient form (Kingma & Ba 2014, §2):

    ``step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t) / (sqrt(v) + eps)`` with ``v`` the
    second moment, eps added to the *uncorrected* root (torch.optim.Adam adds it after
    correction).
    """
    corrected1, corrected2 = debias(betas, b.steps)
    alpha = lr * corrected2**0.5 / corrected1
    sizes = torch._foreach_sqrt(b.second_moment)
    torch._foreach_add_(sizes, eps)
    torch._foreach_reciprocal_(sizes)
    torch._foreach_mul_(sizes, scalars(alpha))
    b.step_size = sizes


def remember_step_sizes(b, decay: float) -> list:
    """``step_size_avg = decay * step_size_avg + (1 - decay) * step_size``; starts at 0."""
    memory = b.state["step_size_avg"]
    torch._foreach_mul_(memory, decay)
    torch._foreach_add_(memory, b.step_size, alpha=1 - decay)
    return memory


@stat(state={"step_size_avg": zeros}, storage={"step_size_avg": "positive"},
      reads=("step_size",), provides=("step_size",),
      rules=dict(beta3=unit_interval), beta3=0.999)
def bounded_step_sizes(b, beta3):
    """AdaMod's momental bound (Ding et al. 2019, arXiv:1910.12249):
    ``step_size_avg = beta3 * step_size_avg + (1 - beta3) * step_size``;
    ``step_size = min(step_size, step_size_avg)``.

    ``step_size_avg`` starts at 0, so the first steps are small: a built-in warm-up over roughly
    ``1 / (1 - beta3)`` steps.
    """
    torch._foreach_minimum_(b.step_size, remember_step_sizes(b, beta3))


# DeepMemory's beta3 = 1 - 1 / len_memory must lie in [0, 1).
@stat(state={"step_size_avg": zeros}, storage={"step_size_avg": "positive"},
      reads=("step_size",), provides=("step_size",),
      rules=dict(len_memory=at_least(1)), len_memory=200)
def blended_step_sizes(b, len_memory):
    """DeepMemory's long-term memory (lessw2020, 2020): AdaMod's average of the step sizes with
    ``beta3 = 1 - 1 / len_memory``, blended instead of bounding:
    ``step_size = (step_size + step_size_avg) / 2``. The memory starts at 0, so the first steps
    are about halved.
    """
    memory = remember_step_sizes(b, 1 - 1 / len_memory)
    torch._foreach_add_(b.step_size, memory)
    torch._foreach_mul_(b.step_size, 0.5)
