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


_NO_DEFAULT = object()


@dataclasses.dataclass(frozen=True)
class Part:
    """A stat or a stepper, with the state and hyper-parameters it declares."""

    fn: Callable[..., None]
    kind: str
    state: Mapping[str, Init]
    hypers: Mapping[str, Any]
    when: Callable[[Mapping[str, Any]], bool] | None = None
    label: str = ""
    # Hyper-parameters pinned by the recipe: passed as these constants, not read from the group.
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Hyper-parameters declared only to switch the part on or off (see ``only_if``).
    gates: tuple[str, ...] = ()
    # Takes per-tensor norms (layer-wise): in flat mode its per-tensor numbers are spread over
    # each param's elements, which pays only where tensors are small (see core/optimizer.py).
    layerwise: bool = False

    @property
    def name(self) -> str:
        return self.label or self.fn.__name__

    def active(self, group: Mapping[str, Any]) -> bool:
        return self.when is None or bool(self.when(group))

    def only_if(
        self, hyper: str, test: Callable[[Any], bool] = bool, default: Any = _NO_DEFAULT
    ) -> Part:
        """The same part, run only for param groups where ``test(group[hyper])`` holds.

        This is how a recipe switches on a variant (``amsgrad``, ``centered``, ``momentum > 0``)
        without a flag inside the update math: the part and its state exist only when used.
        A ``hyper`` the part does not read itself (e.g. LAMB's ``adam`` switching the trust ratio
        off) needs a ``default``; it is then declared by the part but not passed to it.
        """
        gates = self.gates
        hypers = self.hypers
        if hyper not in hypers:
            if default is _NO_DEFAULT:
                raise ValueError(f"{self.name} does not read hyper-parameter {hyper!r}")
            hypers, gates = {**hypers, hyper: default}, (*gates, hyper)
        return dataclasses.replace(
            self, when=lambda g: test(g[hyper]), label=f"{self.name}[{hyper}]",
            hypers=hypers, gates=gates,
        )

    def with_fixed(self, **values: Any) -> Part:
        """The same part with some hyper-parameters pinned to constants.

        A recipe uses it where a shared part must not read a group hyper of the same name,
        e.g. LAMB's trust ratio takes ``eps=0`` while the group's ``eps`` belongs to Adam's
        direction. Pinned names leave the part's ``hypers`` (and so the recipe's signature).
        """
        unknown = set(values) - set(self.hypers)
        if unknown:
            raise ValueError(f"{self.name} does not read hyper-parameters {sorted(unknown)}")
        kept = {k: v for k, v in self.hypers.items() if k not in values}
        return dataclasses.replace(self, hypers=kept, fixed={**self.fixed, **values})

    def __call__(self, bucket, group: Mapping[str, Any]) -> None:
        self.fn(bucket, **self.fixed, **{k: group[k] for k in self.hypers if k not in self.gates})

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


def _declare(
    kind: str, state: Mapping[str, Init] | None, hypers: Mapping[str, Any] | None,
    layerwise: bool = False,
):
    def wrap(fn: Callable[..., None]) -> Part:
        return Part(
            fn=fn, kind=kind, state=dict(state or {}), hypers=dict(hypers or {}),
            layerwise=layerwise,
        )

    return wrap


def stat(state: Mapping[str, Init] | None = None, *, layerwise: bool = False, **hypers: Any):
    """Declare a stat: ``@stat(state={"grad_avg": zeros}, betas=(0.9, 0.999))``.

    ``layerwise=True`` marks a stat that takes per-tensor norms (trust ratios).
    """
    return _declare("stat", state, hypers, layerwise)


def stepper(state: Mapping[str, Init] | None = None, **hypers: Any):
    """Declare a stepper: a part that writes the params."""
    return _declare("stepper", state, hypers)


def zero_scalar(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    """A 0-d zero with the param's dtype and device: one number per tensor (a layer-wise stat)."""
    return torch.zeros((), dtype=p.dtype, device=p.device)
