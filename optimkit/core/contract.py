"""The part contract, enforced at run time when asked (the test suite does).

:func:`~optimkit.core.recipe.check_recipe` checks what the parts *declare*; this checks what
they *do*. With enforcement on, every part runs on a :class:`GuardedBucket`: a view of the
bucket whose ``state`` holds only the states the part declares (``state``, ``reads``,
``overrides``), whose per-step fields it may read only if it declares them (``reads``,
``provides``, ``overrides``; the fields every bucket starts with, ``grads``, ``update``,
``norm_target`` and ``norm_weights``, are always there) and set only if it provides them.
Anything else raises :class:`ContractViolation` naming the part. A part that read a state it did
not declare, placed before the part that writes it, would otherwise run on last step's values.

Off by default, and then free: the only cost is one test of :data:`ENFORCED` per part call.
Turn it on with the environment variable ``OPTIMKIT_CHECK_CONTRACT=1`` (read at import, so it
reaches subprocesses too) or :func:`enforce`. Steps traced by ``torch.compile`` are not guarded
(the first step of a compiled optimizer runs eagerly, guarded).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from typing import Any

from .tensorlists import FIELDS, INITIAL_FIELDS

ENFORCED: bool = os.environ.get("OPTIMKIT_CHECK_CONTRACT", "") not in ("", "0")

# bucket members that read a state: the step counts read ``state["step"]``
_STEP_MEMBERS = ("steps", "increment_steps")


class ContractViolation(TypeError):
    """A part touched a state or a per-step field it does not declare."""


def enforce(on: bool = True) -> bool:
    """Turn the run-time check on or off; returns the previous setting."""
    global ENFORCED
    previous, ENFORCED = ENFORCED, bool(on)
    return previous


def guard(bucket: Any, part: Any) -> GuardedBucket:
    """``bucket`` as ``part`` may see it."""
    return GuardedBucket(bucket, part)


class GuardedState(MutableMapping):
    """``bucket.state`` restricted to the names a part declares."""

    __slots__ = ("_bucket", "_names", "_part")

    def __init__(self, bucket: Any, names: frozenset[str], part: str) -> None:
        self._bucket, self._names, self._part = bucket, names, part

    def _check(self, name: str) -> None:
        if name not in self._names:
            raise ContractViolation(
                f"part {self._part} uses state {name!r}, which it does not declare (state=, "
                f"reads= or overrides=); it declares {sorted(self._names) or 'none'}"
            )

    def __getitem__(self, name: str) -> Any:
        self._check(name)
        return self._bucket.state[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._check(name)
        self._bucket.state[name] = value

    def __delitem__(self, name: str) -> None:
        self._check(name)
        del self._bucket.state[name]

    def __contains__(self, name: object) -> bool:
        self._check(name)  # type: ignore[arg-type]
        return name in self._bucket.state

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._bucket.state if name in self._names)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class GuardedBucket:
    """A bucket as one part may see it (see the module doc); everything else passes through."""

    __slots__ = ("_bucket", "_part", "_reads", "_writes", "_state")

    def __init__(self, bucket: Any, part: Any) -> None:
        declared = {*part.reads, *part.provides, *part.overrides}
        names = frozenset({*part.state, *part.reads, *part.overrides} - set(FIELDS))
        set_ = object.__setattr__
        set_(self, "_bucket", bucket)
        set_(self, "_part", part.name)
        set_(self, "_reads", frozenset(declared | set(INITIAL_FIELDS)))
        set_(self, "_writes", frozenset({*part.provides, *part.overrides}))
        set_(self, "_state", GuardedState(bucket, names, part.name))

    def __getattr__(self, name: str) -> Any:
        if name == "state":
            return self._state
        if name in FIELDS and name not in self._reads:
            raise ContractViolation(
                f"part {self._part} reads the field {name!r}, which it does not declare "
                "(reads= or provides=)"
            )
        if name in _STEP_MEMBERS:
            self._state._check("step")
        return getattr(self._bucket, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state":
            raise ContractViolation(f"part {self._part} replaces bucket.state")
        if name in FIELDS and name not in self._writes:
            raise ContractViolation(
                f"part {self._part} sets the field {name!r}, which it does not declare "
                "(provides= or overrides=)"
            )
        setattr(self._bucket, name, value)

    def __len__(self) -> int:
        return len(self._bucket)

    def __repr__(self) -> str:
        return f"<bucket of {len(self._bucket)} as part {self._part} sees it>"
