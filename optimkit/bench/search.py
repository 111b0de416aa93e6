"""The search protocol: the same rules and the same budget for every optimizer.

For each (task, optimizer) the search walks three stages, each a set of cells, every tuning
cell run on each of the ``tuning_seeds`` and scored on the validation split:

1. **lr**: a log grid with ``per_decade`` points per decade, starting on the window
   ``lr_range`` (the same for every optimizer), weight decay 0. While the best lr lies on an
   edge of the lrs tried so far, or an edge lr is within the task's ``tolerance`` of the best
   (a plateau that reaches the edge: the best may lie beyond it, and on a plateau at chance
   level noise alone picks an interior lr), the grid extends beyond that edge by ``extend``
   more points; every extension is counted in the budget: at most ``budget`` lrs in all. An lr
   that is still on an edge when the budget (or the limits ``LR_LIMITS``) stops the search is
   flagged.
2. **weight decay**: for every optimizer that takes a ``weight_decay``, each value of
   ``weight_decays`` at the best lr (the same values, the same count for every such
   optimizer); weight decay 0 is the lr stage's run. Ties go to the smaller weight decay.
3. **final**: the chosen (lr, weight decay) on ``seeds`` test seeds, scored on the test split.
   Tuning never sees a test seed.

"Best" is the mean validation metric over the tuning seeds; an lr diverged on any tuning seed
is worse than every lr that did not. Of several lrs with the same (best) mean the middle one is
taken, so a flat plateau does not push the choice to an edge.

:func:`walk` replays the protocol from the results recorded so far: it returns what was tried,
what was chosen, and the cells needed next. Both the executor (what to run) and the report
(what was run) use it, so the two can never disagree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .runner import CellSpec

LR_LIMITS = (1e-7, 1e3)  # the grid never extends beyond these


@dataclasses.dataclass(frozen=True)
class Rules:
    """The knobs of the protocol (stored with the run)."""

    lr_range: tuple[float, float] = (1e-3, 1e-1)
    per_decade: int = 3
    budget: int = 19
    extend: int = 1
    weight_decays: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    tuning_seeds: tuple[int, ...] = (0, 1)
    test_seeds: tuple[int, ...] = (2, 3, 4, 5, 6)
    schedule: str = "cosine"
    device: str = "cpu"

    def __post_init__(self) -> None:
        low, high = self.lr_range
        if not (LR_LIMITS[0] <= low <= high <= LR_LIMITS[1]):  # NaN and inf fail too
            raise ValueError(f"lr_range must be {LR_LIMITS[0]:g} <= low <= high <= "
                             f"{LR_LIMITS[1]:g}, got {self.lr_range!r}")
        if self.per_decade < 1:
            raise ValueError(f"per_decade must be >= 1, got {self.per_decade!r}")
        if self.budget < len(self.initial()):
            raise ValueError(f"budget: {self.budget} lrs cannot cover the initial window of "
                             f"{len(self.initial())} lrs ({low:g} to {high:g})")
        if self.extend < 1:
            raise ValueError(f"extend must be >= 1, got {self.extend!r}")
        if any(not wd > 0 for wd in self.weight_decays):
            raise ValueError(f"weight decays must be > 0 (0 is always tried), "
                             f"got {self.weight_decays!r}")

    # ---------------------------------------------------------------- the grid
    def index(self, lr: float) -> int:
        """The grid index of ``lr`` (lr = 10 ** (index / per_decade))."""
        return round(math.log10(lr) * self.per_decade)

    def lr(self, index: int) -> float:
        return float(f"{10 ** (index / self.per_decade):.4g}")

    def initial(self) -> list[int]:
        return list(range(self.index(self.lr_range[0]), self.index(self.lr_range[1]) + 1))

    def in_limits(self, index: int) -> bool:
        low, high = (self.index(v) for v in LR_LIMITS)
        return low <= index <= high


@dataclasses.dataclass
class Trial:
    """One tuning point: its hypers and its validation results, one per tuning seed."""

    lr: float
    weight_decay: float
    values: list[float]  # metric per tuning seed (NaN: diverged or failed)
    diverged: bool
    failed: bool

    @property
    def mean(self) -> float:
        finite = [v for v in self.values if not math.isnan(v)]
        if self.diverged or not finite or len(finite) < len(self.values):
            return float("nan")
        return sum(finite) / len(finite)


@dataclasses.dataclass
class Search:
    """Where the protocol stands for one (task, optimizer)."""

    task: str
    optimizer: str
    lr_trials: list[Trial]  # sorted by lr (those whose every tuning seed has a result)
    wd_trials: list[Trial]  # at the chosen lr, weight decay > 0
    lr_grid: list[float] = dataclasses.field(default_factory=list)  # lrs asked for so far
    lr: float | None = None  # chosen by the lr stage (None until it is over)
    weight_decay: float | None = None  # chosen by the weight-decay stage
    on_edge: bool = False  # the chosen lr is an edge of the lrs tried
    takes_weight_decay: bool = True
    needed: list[CellSpec] = dataclasses.field(default_factory=list)
    stage: str = "lr"  # "lr", "weight_decay", "final" or "done"

    @property
    def hypers(self) -> dict[str, float]:
        out = {"lr": self.lr}
        if self.takes_weight_decay:
            out["weight_decay"] = self.weight_decay
        return out


Lookup = Callable[[CellSpec], Mapping[str, Any] | None]


def _hypers(lr: float, wd: float | None) -> dict[str, float]:
    return {"lr": lr} if wd is None else {"lr": lr, "weight_decay": wd}


def _trial(specs: Sequence[CellSpec], lookup: Lookup, lr: float, wd: float | None) -> Trial | None:
    rows = [lookup(s) for s in specs]
    if any(r is None for r in rows):
        return None
    values = [float("nan") if r["diverged"] else float(r["final_metric"]) for r in rows]
    return Trial(lr, wd or 0.0, values, any(bool(r["diverged"]) for r in rows),
                 all(r.get("error") for r in rows))


def better(a: float, b: float, higher_is_better: bool) -> bool:
    """Whether mean ``a`` is strictly better than ``b`` (NaN is worse than anything)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if higher_is_better else a < b


def best_index(trials: Sequence[Trial], higher_is_better: bool) -> int:
    """Index of the best trial; of equal bests, the middle one (the lower middle if even)."""
    best = [0]
    for i in range(1, len(trials)):
        a, b = trials[i].mean, trials[best[0]].mean
        if better(a, b, higher_is_better):
            best = [i]
        elif not better(b, a, higher_is_better):
            best.append(i)
    return best[(len(best) - 1) // 2]


def within(trial: Trial, best: Trial, tolerance: float, higher_is_better: bool) -> bool:
    """Whether ``trial``'s mean is at most ``tolerance`` worse than ``best``'s."""
    if math.isnan(trial.mean) or math.isnan(best.mean):
        return False
    gap = best.mean - trial.mean if higher_is_better else trial.mean - best.mean
    return gap <= tolerance + 1e-12


def walk(rules: Rules, task: str, optimizer: str, higher_is_better: bool,
         takes_weight_decay: bool, lookup: Lookup, tolerance: float = 0.0) -> Search:
    """Replay the protocol for one pair from the results ``lookup`` knows.

    ``tolerance``: the task's; an edge lr within it of the best extends the grid too.
    """
    wd0 = 0.0 if takes_weight_decay else None
    search = Search(task, optimizer, [], [], takes_weight_decay=takes_weight_decay)

    def tune(lr: float, wd: float | None) -> list[CellSpec]:
        return [CellSpec.make(task, optimizer, _hypers(lr, wd), seed, "tune", rules.device,
                              rules.schedule) for seed in rules.tuning_seeds]

    # -- stage 1: lr
    indices = rules.initial()
    while True:
        search.lr_grid = [rules.lr(i) for i in indices]
        missing, trials = [], []
        for i in indices:
            specs = tune(rules.lr(i), wd0)
            trial = _trial(specs, lookup, rules.lr(i), wd0)
            if trial is None:
                missing += [s for s in specs if lookup(s) is None]
            else:
                trials.append(trial)
        search.lr_trials = sorted(trials, key=lambda t: t.lr)
        if missing:
            search.needed = missing
            return search
        trials = search.lr_trials
        pick = best_index(trials, higher_is_better)
        at_low, at_high = pick == 0, pick == len(indices) - 1
        grow_low = at_low or within(trials[0], trials[pick], tolerance, higher_is_better)
        grow_high = at_high or within(trials[-1], trials[pick], tolerance, higher_is_better)
        if all(t.failed for t in trials):  # an optimizer that cannot run: nothing to extend
            at_low = at_high = grow_low = grow_high = False
        room = rules.budget - len(indices)
        # The best's own edge first; of two plateau edges, the high one (each pass adds one).
        sides, new = [at_low and -1, at_high and 1, grow_high and 1, grow_low and -1], []
        for step in (s for s in sides if s):
            edge = indices[0] if step < 0 else indices[-1]
            new = [edge + step * k for k in range(1, min(rules.extend, room) + 1)]
            new = [i for i in new if rules.in_limits(i)]
            if new:
                break
        if new:  # (empty when no room is left)
            indices = sorted(indices + new)
            continue
        search.lr = search.lr_trials[pick].lr
        search.on_edge = at_low or at_high
        break

    # -- stage 2: weight decay
    search.stage = "weight_decay"
    chosen = search.lr_trials[pick]
    search.weight_decay = 0.0 if takes_weight_decay else None
    if takes_weight_decay and rules.weight_decays:
        missing, trials = [], []
        for wd in rules.weight_decays:
            specs = tune(search.lr, wd)
            trial = _trial(specs, lookup, search.lr, wd)
            if trial is None:
                missing += [s for s in specs if lookup(s) is None]
            else:
                trials.append(trial)
        search.wd_trials = trials
        if missing:
            search.needed = missing
            return search
        best = chosen
        for trial in trials:  # in increasing order: ties keep the smaller weight decay
            if better(trial.mean, best.mean, higher_is_better):
                best = trial
        search.weight_decay = best.weight_decay

    # -- stage 3: final runs on the test seeds
    search.stage = "final"
    search.needed = [s for s in final_specs(rules, search) if lookup(s) is None]
    if not search.needed:
        search.stage = "done"
    return search


def final_specs(rules: Rules, search: Search) -> list[CellSpec]:
    """The test cells of a finished search: its chosen hypers on every test seed."""
    return [CellSpec.make(search.task, search.optimizer, search.hypers, seed, "final",
                          rules.device, rules.schedule) for seed in rules.test_seeds]


def sensitivity(search: Search, higher_is_better: bool, tolerance: float,
                per_decade: int) -> tuple[float, bool]:
    """Width in decades of the lr range whose validation result stays within ``tolerance``.

    The contiguous run of grid lrs around the chosen one whose mean validation metric is at
    most ``tolerance`` worse than the best, widened on each side to where the metric,
    interpolated linearly in log10(lr) between the last grid lr inside and the first one
    outside, crosses ``best - tolerance`` (so the width is not a multiple of the grid step).
    A side whose first lr outside diverged (no value to interpolate) ends at the last lr
    inside. The second value is True when the run reaches an edge of the lrs tried (the
    width is then a lower bound). ``per_decade`` is kept for the callers; the grid's own lrs
    set the spacing.
    """
    trials = search.lr_trials
    if search.lr is None or not trials:
        return float("nan"), False
    pick = next(i for i, t in enumerate(trials) if t.lr == search.lr)
    if math.isnan(trials[pick].mean):
        return float("nan"), False
    best = trials[pick]

    def ok(trial: Trial) -> bool:
        return within(trial, best, tolerance, higher_is_better)

    low = pick
    while low > 0 and ok(trials[low - 1]):
        low -= 1
    high = pick
    while high < len(trials) - 1 and ok(trials[high + 1]):
        high += 1
    bounded = low == 0 or high == len(trials) - 1
    sign = 1.0 if higher_is_better else -1.0
    level = sign * best.mean - tolerance  # the crossing, in higher-is-better orientation

    def crossing(inside: Trial, outside: Trial) -> float:
        """log10 of the lr where the interpolated metric crosses ``level``."""
        x0, x1 = math.log10(inside.lr), math.log10(outside.lr)
        if math.isnan(outside.mean):
            return x0
        y0, y1 = sign * inside.mean, sign * outside.mean
        share = 0.0 if y0 == y1 else min(1.0, max(0.0, (y0 - level) / (y0 - y1)))
        return x0 + share * (x1 - x0)

    left = math.log10(trials[low].lr) if low == 0 else crossing(trials[low], trials[low - 1])
    right = (math.log10(trials[high].lr) if high == len(trials) - 1
             else crossing(trials[high], trials[high + 1]))
    return right - left, bounded


__all__ = ["LR_LIMITS", "Rules", "Search", "Trial", "best_index", "final_specs",
           "sensitivity", "walk"]
