"""Checks for hyper-parameter values, declared by the parts that read them.

A part names its rules per hyper-parameter (``rules=dict(lr=nonnegative, betas=betas)``); a
recipe applies the rules of all its parts when it is built and whenever a param group is added.
A rule is called as ``rule(name, value)`` and raises ``ValueError`` naming the hyper-parameter.
Rules that relate several hyper-parameters of one part (``nesterov`` needs ``momentum > 0``) are
the part's ``checks``, called with the whole param group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

Rule = Callable[[str, Any], None]
GroupCheck = Callable[[Mapping[str, Any]], None]


def number(value: Any) -> float:
    """A hyper-parameter as a Python float (a one-element tensor is read once, on the host)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError("a tensor hyper-parameter must hold exactly one value")
        return float(value.detach().cpu())
    return float(value)


def nonnegative(name: str, value: Any) -> None:
    """``value >= 0`` (NaN is refused)."""
    if not number(value) >= 0.0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be >= 0")


def unit_interval(name: str, value: Any) -> None:
    """``0 <= value < 1``: a decay rate that forgets."""
    if not 0.0 <= number(value) < 1.0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be in [0, 1)")


def closed_unit_interval(name: str, value: Any) -> None:
    """``0 <= value <= 1``: an interpolation weight."""
    if not 0.0 <= number(value) <= 1.0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be in [0, 1]")


def _each(rule: Rule, what: str) -> Rule:
    def check(name: str, value: Any) -> None:
        try:
            items = list(value)
        except TypeError:
            raise ValueError(f"Invalid {name}: {value!r}; expected a tuple of {what}") from None
        for i, item in enumerate(items):
            rule(f"{name}[{i}]", item)

    check.__name__ = f"each({rule.__name__})"
    return check


# Decay rates of moving averages, each in [0, 1).
betas = _each(unit_interval, "betas")
# Interpolation weights, each in [0, 1] (1 is allowed: QHAdam's nu = 1 is plain Adam).
weights = _each(closed_unit_interval, "weights")


def at_least(bound: float) -> Rule:
    """``value >= bound``."""

    def check(name: str, value: Any) -> None:
        if not number(value) >= bound:
            raise ValueError(f"Invalid {name}: {value!r}; {name} must be >= {bound:g}")

    check.__name__ = f"at_least({bound:g})"
    return check


def positive_integer(name: str, value: Any) -> None:
    """An ``int`` >= 1 (``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be an integer >= 1")


def one_of(*allowed: Any, meaning: str = "") -> Rule:
    """``value`` is one of ``allowed``; ``meaning`` says what each stands for in the message."""

    def check(name: str, value: Any) -> None:
        if value not in allowed:
            said = meaning or " or ".join(repr(a) for a in allowed)
            raise ValueError(f"Invalid {name}: {value!r}; {name} must be {said}")

    check.__name__ = f"one_of{allowed!r}"
    return check


# torch.optim's conventional hyper-parameters: the rules for an optimizer that declares none.
CONVENTIONS: dict[str, tuple[Rule, ...]] = {
    "lr": (nonnegative,),
    "eps": (nonnegative,),
    "weight_decay": (nonnegative,),
    "momentum": (nonnegative,),
    "betas": (betas,),
}
