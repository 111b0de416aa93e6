"""Checks for hyper-parameter values, declared by the parts that read them.

A part names its rules per hyper-parameter (``rules=dict(lr=nonnegative, betas=betas)``); a
recipe applies the rules of all its parts when it is built and whenever a param group is added.
A rule is called as ``rule(name, value)`` and raises ``ValueError`` naming the hyper-parameter.
Rules that relate several hyper-parameters of one part (``nesterov`` needs ``momentum > 0``) are
the part's ``checks``, called with the whole param group.
"""

from __future__ import annotations

import numbers
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


def _is_number(value: Any) -> bool:
    """A real number: a Python or numpy number (not a bool), or a one-element real tensor."""
    if isinstance(value, Tensor):
        return value.numel() == 1 and not value.dtype.is_complex and value.dtype.is_floating_point
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _kind(default: Any) -> str:
    """What a value must be, in words, given the default of its hyper-parameter."""
    if isinstance(default, bool):
        return "True or False"
    if isinstance(default, numbers.Integral):
        return "an integer"
    if isinstance(default, numbers.Real):
        return "a number (a float, an int or a one-element float tensor)"
    if isinstance(default, tuple):
        return f"a tuple of {len(default)} values, like the default {default!r}"
    return f"a {type(default).__name__}"


def like_default(name: str, value: Any, default: Any) -> None:
    """Refuse ``value`` for hyper-parameter ``name`` unless it has the type of the recipe's
    ``default`` (``ValueError`` naming ``name``), so that a wrong type fails at construction,
    not at the first ``step()``:

    * a ``bool`` default takes ``True`` or ``False`` only (not ``"False"``, not ``0``);
    * an ``int`` default takes an integer (Python or numpy; not a bool, not a float);
    * a ``float`` default takes a real number: float, int, numpy number or, as torch.optim
      accepts for ``lr``, a one-element floating-point tensor (not a bool, not a string);
    * a ``tuple`` default takes a tuple or list of the same length (its arity: ``betas=(0.9,)``
      is refused where the default has two), each item checked against the default's item;
    * a ``None`` default takes anything; any other default, an instance of its type.

    The values' ranges are the rules' business; this only checks types and arity.
    """
    if default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, numbers.Integral):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif isinstance(default, numbers.Real):
        ok = _is_number(value)
    elif isinstance(default, tuple):
        ok = isinstance(value, (tuple, list)) and len(value) == len(default)
        if ok:
            for i, (item, item_default) in enumerate(zip(value, default)):
                like_default(f"{name}[{i}]", item, item_default)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be {_kind(default)}")


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
