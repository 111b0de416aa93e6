"""Time to target and performance profiles: how fast each optimizer gets there, next to how
good it ends up.

Pure functions of validation curves (``[(step, metric, seconds), ...]``, one point per epoch,
as :mod:`.runner` records them), so the report can rebuild them from the database.

**Target.** Per task, the validation value that the tuned AdamW reaches at the end of its
budget: the median over the test seeds of its last validation point (:func:`target_of`). So
AdamW reaches it on at least half of its seeds. Where AdamW is not in the run, the task's
declared ``target`` is used instead, and the report says so.

**Time to target.** Per run, the steps and the training seconds at the first validation point
that reaches the target (:func:`time_to_target`); the curve is sampled once per epoch, so
the time is that of the epoch's end, not interpolated. A run that never reaches it (or
diverges) has time ``inf``. Per (task, optimizer), the median over the test seeds: ``inf``
when fewer than half of the seeds reach it.

**Performance profile** (Dolan & Moré 2002; AlgoPerf, Dahl et al. 2023). On each task, an
optimizer's ratio ``r = time / best time`` (the best over the optimizers compared; ``inf``
when it never reaches the target). ``rho(tau)`` is the fraction of the tasks where
``r <= tau``; the score is ``B = integral of rho over [1, TAU_MAX], divided by TAU_MAX - 1``,
in [0, 1]: 1 means fastest on every task, 0 never within ``TAU_MAX`` times the fastest. Since
``rho`` is a step function the integral is exact: each task adds
``max(0, TAU_MAX - max(r, 1)) / (TAU_MAX - 1)``, divided by the number of tasks. A task that
no optimizer reaches counts for every optimizer as a 0 (it stays in the denominator).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

TAU_MAX = 4.0


def reached(value: float, target: float, higher_is_better: bool) -> bool:
    """Whether a validation value reaches ``target`` (NaN never does)."""
    if math.isnan(value):
        return False
    return value >= target if higher_is_better else value <= target


def time_to_target(evals: Sequence[Sequence[float]], target: float,
                   higher_is_better: bool) -> tuple[float, float]:
    """(steps, seconds) at the first point of the curve that reaches ``target``; (inf, inf)
    when none does. ``evals``: ``(step, metric, seconds)`` in training order."""
    for step, value, seconds in evals:
        if reached(float(value), target, higher_is_better):
            return float(step), float(seconds)
    return math.inf, math.inf


def median_time(times: Sequence[float]) -> float:
    """The median over seeds, ``inf`` included (so ``inf`` when fewer than half reach)."""
    if not times:
        return math.inf
    return float(statistics.median(sorted(times)))


def target_of(last_values: Sequence[float]) -> float:
    """The target set by a reference optimizer: the median of its last validation values
    over the seeds (NaN values, from diverged runs, dropped; NaN if none is left)."""
    finite = [v for v in last_values if not math.isnan(v)]
    return float(statistics.median(finite)) if finite else math.nan


def ratios(times: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``times[optimizer][task]`` -> ``r[optimizer][task] = time / best time on the task``
    (``inf`` where the optimizer, or every optimizer, never reaches the target)."""
    tasks = sorted({t for per in times.values() for t in per})
    best = {t: min((per[t] for per in times.values() if t in per), default=math.inf)
            for t in tasks}
    out: dict[str, dict[str, float]] = {}
    for optimizer, per in times.items():
        out[optimizer] = {}
        for t in tasks:
            value = per.get(t, math.inf)
            if math.isinf(value) or math.isinf(best[t]):
                out[optimizer][t] = math.inf
            elif best[t] <= 0:
                out[optimizer][t] = 1.0 if value <= 0 else math.inf
            else:
                out[optimizer][t] = value / best[t]
    return out


def rho(task_ratios: Mapping[str, float], tau: float) -> float:
    """The profile at ``tau``: the fraction of the tasks with ratio <= ``tau``."""
    if not task_ratios:
        return math.nan
    return sum(r <= tau for r in task_ratios.values()) / len(task_ratios)


def profile_score(task_ratios: Mapping[str, float], tau_max: float = TAU_MAX) -> float:
    """``B = integral of rho(tau) d tau over [1, tau_max] / (tau_max - 1)``, exactly."""
    if not task_ratios:
        return math.nan
    span = tau_max - 1.0
    return sum(max(0.0, tau_max - max(r, 1.0)) / span for r in task_ratios.values()
               if not math.isinf(r)) / len(task_ratios)


def profiles(times: Mapping[str, Mapping[str, float]],
             tau_max: float = TAU_MAX) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """The ratios and each optimizer's score ``B`` from ``times[optimizer][task]``."""
    r = ratios(times)
    return r, {o: profile_score(per, tau_max) for o, per in r.items()}


__all__ = ["TAU_MAX", "median_time", "profile_score", "profiles", "ratios", "reached", "rho",
           "target_of", "time_to_target"]
