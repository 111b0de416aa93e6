"""Stats and steppers: the two kinds of parts an optimizer is built from.

A part is a small function ``fn(bucket, **hypers)`` over the aligned tensor lists of one
(param group, device, dtype) bucket. It declares

* the per-parameter state it needs (name and how to initialise it), which the optimizer
  allocates lazily and hands in as ``bucket.state[name]``;
* the hyper-parameters it reads, with their defaults. They are looked up in the live
  ``param_groups`` on every step, so schedulers act on them at once.

A *stat* updates state (``grad_avg``, ``sqr_avg``, ``step``...), a *stepper* writes the params.
Neither may modify ``p.grad``: a part that changes the gradient rebinds ``bucket.grads`` to a
new list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

# How a state tensor starts. Each is called as init(param, group) and returns a new tensor.
Init = Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]


def zeros(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def copy_of_param(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    return p.detach().clone(memory_format=torch.preserve_format)


def full(hyper: str) -> Init:
    """Initialise to the value of hyper-parameter ``hyper`` (e.g. Adagrad's accumulator)."""

    def init(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
        return torch.full_like(p, group[hyper], memory_format=torch.preserve_format)

    init.__name__ = f"full({hyper})"
    return init


def step_counter(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    # torch.optim's format: a float32 0-d tensor on the CPU, so reading it never waits for a device.
    return torch.tensor(0.0, dtype=torch.float32)


@dataclasses.dataclass(frozen=True)
class Part:
    """A stat or a stepper, with the state and hyper-parameters it declares."""

    fn: Callable[..., None]
    kind: str
    state: Mapping[str, Init]
    hypers: Mapping[str, Any]
    when: Callable[[Mapping[str, Any]], bool] | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.fn.__name__

    def active(self, group: Mapping[str, Any]) -> bool:
        return self.when is None or bool(self.when(group))

    def only_if(self, hyper: str, test: Callable[[Any], bool] = bool) -> Part:
        """The same part, run only for param groups where ``test(group[hyper])`` holds.

        This is how a recipe switches on a variant (``amsgrad``, ``centered``, ``momentum > 0``)
        without a flag inside the update math: the part and its state exist only when used.
        """
        if hyper not in self.hypers:
            raise ValueError(f"{self.name} does not read hyper-parameter {hyper!r}")
        return dataclasses.replace(
            self, when=lambda g: test(g[hyper]), label=f"{self.name}[{hyper}]"
        )

    def __call__(self, bucket, group: Mapping[str, Any]) -> None:
        self.fn(bucket, **{k: group[k] for k in self.hypers})

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


def _declare(kind: str, state: Mapping[str, Init] | None, hypers: Mapping[str, Any] | None):
    def wrap(fn: Callable[..., None]) -> Part:
        return Part(fn=fn, kind=kind, state=dict(state or {}), hypers=dict(hypers or {}))

    return wrap


def stat(state: Mapping[str, Init] | None = None, **hypers: Any):
    """Declare a stat: ``@stat(state={"grad_avg": zeros}, betas=(0.9, 0.999))``."""
    return _declare("stat", state, hypers)


def stepper(state: Mapping[str, Init] | None = None, **hypers: Any):
    """Declare a stepper: a part that writes the params."""
    return _declare("stepper", state, hypers)


def zero_scalar(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    """A 0-d zero with the param's dtype and device: one number per tensor (a layer-wise stat)."""
    return torch.zeros((), dtype=p.dtype, device=p.device)
