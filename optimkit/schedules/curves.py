"""Schedules: pure functions of training progress, from 0 (first step) to 1 (last step).

A schedule maps ``progress`` in [0, 1] to a value; past either end it holds the end value.
``linear``, ``cosine``, ``exponential`` and ``polynomial`` go from ``start`` to ``end``;
``phases`` joins several of them, each over a share of training::

    lr = phases((0.25, linear(1e-4, 1e-2)), (0.75, cosine(1e-2, 1e-6)))
    lr(0.0), lr(0.25), lr(1.0)  # 1e-4, 1e-2, 1e-6
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Invalid {name}: {value!r}; it must be a finite number")
    return value


def _clamp(progress: float) -> float:
    return min(max(float(progress), 0.0), 1.0)


class Schedule:
    """A value as a function of progress in [0, 1]; ``bounds`` are its lowest and highest values."""

    def __call__(self, progress: float) -> float:
        return self.at(_clamp(progress))

    def at(self, pct: float) -> float:  # pct already in [0, 1]
        """The value at progress ``pct``, already clamped to [0, 1]."""
        raise NotImplementedError

    def at_step(self, step: int, total_steps: int) -> float:
        """The value at optimizer step ``step`` (0-based) of ``total_steps``."""
        return self(1.0 if total_steps <= 1 else step / (total_steps - 1))

    @property
    def bounds(self) -> tuple[float, float]:
        """The lowest and highest values the schedule takes."""
        raise NotImplementedError


class Curve(Schedule):
    """A monotone curve from ``start`` (progress 0) to ``end`` (progress 1)."""

    kind = "curve"

    def __init__(self, start: float, end: float) -> None:
        self.start = _finite("start", start)
        self.end = _finite("end", end)

    @property
    def bounds(self) -> tuple[float, float]:
        return min(self.start, self.end), max(self.start, self.end)

    def __repr__(self) -> str:
        return f"{self.kind}({self.start!r}, {self.end!r})"


class linear(Curve):  # noqa: N801 - lower case, like a function
    """``start + (end - start) * pct``."""

    kind = "linear"

    def at(self, pct: float) -> float:
        return (self.end - self.start) * pct + self.start


class cosine(Curve):  # noqa: N801
    """Half a cosine: ``end + (start - end) / 2 * (1 + cos(pi * pct))`` (torch's formula)."""

    kind = "cosine"

    def at(self, pct: float) -> float:
        return self.end + (self.start - self.end) / 2.0 * (math.cos(math.pi * pct) + 1)


class exponential(Curve):  # noqa: N801
    """Geometric: ``start * (end / start) ** pct``; start and end must share a sign, not 0."""

    kind = "exponential"

    def __init__(self, start: float, end: float) -> None:
        super().__init__(start, end)
        if self.start * self.end <= 0:
            raise ValueError(
                f"exponential needs start and end of the same sign, not 0; got {start!r}, {end!r}"
            )

    def at(self, pct: float) -> float:
        return self.start * (self.end / self.start) ** pct


class polynomial(Curve):  # noqa: N801
    """``end + (start - end) * (1 - pct) ** power`` (power 1 is linear)."""

    kind = "polynomial"

    def __init__(self, start: float, end: float, power: float = 1.0) -> None:
        super().__init__(start, end)
        self.power = _finite("power", power)
        if self.power <= 0:
            raise ValueError(f"Invalid power: {power!r}; power must be > 0")

    def at(self, pct: float) -> float:
        return self.end + (self.start - self.end) * (1.0 - pct) ** self.power


class constant(Curve):  # noqa: N801
    """The same ``value`` throughout."""

    kind = "constant"

    def __init__(self, value: float) -> None:
        super().__init__(value, value)

    def at(self, pct: float) -> float:
        return self.start

    def __repr__(self) -> str:
        return f"constant({self.start!r})"


class Piecewise(Schedule):
    """Schedules joined end to end: piece ``i`` runs from ``ends[i-1]`` (0 for the first) to
    ``ends[i]``; past the last end the last piece holds its end value.

    ``ends`` are progress (0 to 1), or with ``span`` they are steps (0 to ``span``, the last
    step index): then a scheduler evaluates the pieces at the exact step, with no rounding of
    ``step / span``, which is how the ``torch`` preset of OneCycle matches OneCycleLR bit for
    bit. Ends may start below 0 (an empty first piece), as OneCycleLR's do on tiny runs.
    """

    def __init__(
        self, ends: Sequence[float], pieces: Sequence[Schedule], span: float | None = None
    ) -> None:
        if len(ends) != len(pieces) or not pieces:
            raise ValueError("phases needs one end per schedule, and at least one schedule")
        self.ends = [float(e) for e in ends]
        self.pieces = list(pieces)
        self.span = span

    def at(self, pct: float) -> float:
        return self._locate(pct if self.span is None else pct * self.span)

    def at_step(self, step: int, total_steps: int) -> float:
        if self.span is None:
            return super().at_step(step, total_steps)
        return self._locate(min(max(step, 0), self.span))

    def _locate(self, x: float) -> float:
        start = 0.0
        last = len(self.pieces) - 1
        for i, (end, piece) in enumerate(zip(self.ends, self.pieces, strict=True)):
            if x <= end or i == last:
                width = end - start
                local = 1.0 if width == 0 else (x - start) / width
                return piece.at(min(max(local, 0.0), 1.0))
            start = end
        raise AssertionError("unreachable")

    @property
    def bounds(self) -> tuple[float, float]:
        lows, highs = zip(*(piece.bounds for piece in self.pieces), strict=True)
        return min(lows), max(highs)

    def __repr__(self) -> str:
        return f"Piecewise(ends={self.ends!r}, pieces={self.pieces!r})"


def phases(*shares: tuple[float, Schedule]) -> Piecewise:
    """Join schedules, each over a share of training: ``phases((0.3, warm), (0.7, anneal))``.

    The shares must be >= 0 and add up to 1.
    """
    if not shares:
        raise ValueError("phases needs at least one (share, schedule) pair")
    ends, total = [], 0.0
    for i, (share, schedule) in enumerate(shares):
        if not share >= 0:
            raise ValueError(f"Invalid share of phase {i}: {share!r}; it must be >= 0")
        if not isinstance(schedule, Schedule):
            raise ValueError(f"phase {i} is {schedule!r}, not a schedule")
        total += share
        ends.append(total)
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise ValueError(f"the shares of phases must add up to 1, got {total!r}")
    ends[-1] = 1.0
    return Piecewise(ends, [schedule for _, schedule in shares])


def as_schedule(value: Schedule | Callable[[float], float] | float) -> Schedule:
    """A Schedule from a schedule, a number (constant) or any ``f(progress) -> float``."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return constant(value)
    if callable(value):
        return _Function(value)
    raise ValueError(f"expected a schedule, a number or a function of progress, got {value!r}")


class _Function(Schedule):
    """A user function of progress; its bounds are unknown, so values are checked when set."""

    def __init__(self, fn: Callable[[float], float]) -> None:
        self.fn = fn

    def at(self, pct: float) -> float:
        return float(self.fn(pct))

    @property
    def bounds(self) -> tuple[float, float]:
        return -math.inf, math.inf

    def __repr__(self) -> str:
        return f"function({self.fn!r})"
