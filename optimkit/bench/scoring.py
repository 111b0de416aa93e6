"""From database rows to the numbers of the report: means, confidence intervals, ranks, stars.

Everything here is a pure function of the rows, so ``optimkit report`` rebuilds the same report
from the database alone.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable
from typing import Any

from .suite import Config, best_lr, lr_grid

STAR_FORMULA = (
    "stars = min(3, floor(4 * (K - r) / (K - 1))), where r is the optimizer's mean rank over the "
    "real (non-illustrative) tasks, K the number of optimizers compared, and each task ranks "
    "the optimizers by their mean final test metric over the seeds (1 = best, ties share the "
    "mean rank; a diverged or failed seed counts as the worst final value seen on that task, "
    "and of two equal values the one with more diverged seeds ranks lower). "
    "3 stars: r in the best quarter of the possible range; 0 stars: the worst quarter."
)

# Two-sided 95 % Student-t quantiles by degrees of freedom (1..30); 1.96 beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def mean_ci(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % Student-t interval (NaN half-width for one value)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    df = len(values) - 1
    t = _T95[df - 1] if df <= len(_T95) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def average_ranks(values: dict[str, float], higher_is_better: bool,
                  penalty: dict[str, float] | None = None) -> dict[str, float]:
    """Rank 1 = best; ties share the mean of their ranks; NaN ranks last (tied).

    ``penalty`` (e.g. the divergence rate) breaks ties of value: lower penalty ranks first.
    """
    def key(name: str) -> tuple[float, float]:
        v = values[name]
        extra = (penalty or {}).get(name, 0.0)
        if math.isnan(v):
            return math.inf, extra
        return (-v if higher_is_better else v), extra

    ordered = sorted(values, key=key)
    ranks: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and key(ordered[j + 1]) == key(ordered[i]):
            j += 1
        for name in ordered[i:j + 1]:
            ranks[name] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def stars(mean_rank: float, count: int) -> int:
    if math.isnan(mean_rank):
        return 0
    quality = 1.0 if count <= 1 else (count - mean_rank) / (count - 1)
    return min(3, int(math.floor(4 * quality + 1e-9)))


@dataclasses.dataclass
class Cell:
    """One (task, optimizer) pair after tuning: its lr and its final runs, summarised."""

    task: str
    optimizer: str
    lr: float
    tuning: list[tuple[float, float, bool]]  # (lr, validation metric, diverged)
    finals: list[dict[str, Any]]
    mean: float = float("nan")
    ci: float = float("nan")
    rank_value: float = float("nan")
    divergence_rate: float = 0.0
    reached_rate: float = 0.0
    steps_to_target: float = float("nan")
    seconds_to_target: float = float("nan")
    step_time_us: float = float("nan")
    state_bytes_per_param: float = float("nan")
    error: str | None = None  # set when every final run raised
    path: list | None = None  # 2-D tasks: the tuning run at the chosen lr (seed 0, exact start)


@dataclasses.dataclass
class Summary:
    config: Config
    tasks: dict[str, dict[str, Any]]  # name -> meta, in the config's order
    cells: dict[tuple[str, str], Cell]
    ranks: dict[str, dict[str, float]]  # task -> optimizer -> rank (real tasks only)
    mean_rank: dict[str, float]
    stars: dict[str, int]

    @property
    def real_tasks(self) -> list[str]:
        return [t for t, meta in self.tasks.items() if not meta["illustrative"]]


def summarise(config: Config, task_meta: dict[str, dict], rows: list[dict]) -> Summary:
    """Summarise the rows of ``config``'s cells (others in the database are ignored)."""
    grid = set(lr_grid(config.budget))
    seeds = set(range(1, config.seeds + 1))
    cells: dict[tuple[str, str], Cell] = {}
    for task in config.tasks:
        for optimizer in config.optimizers:
            mine = [r for r in rows if r["task"] == task and r["optimizer"] == optimizer
                    and r["device"] == config.device and r["version"] == config.version]
            tuning = [r for r in mine if r["role"] == "tune" and r["lr"] in grid]
            if len(tuning) < len(grid):
                continue  # not tuned yet: the pair has no result
            lr = best_lr(task, tuning)
            finals = [r for r in mine if r["role"] == "final" and r["lr"] == lr
                      and r["seed"] in seeds]
            curve = [(r["lr"], r["final_metric"], bool(r["diverged"])) for r in tuning]
            cell = _cell(task, optimizer, lr, sorted(curve), finals)
            cell.path = next(r["path"] for r in tuning if r["lr"] == lr)
            cells[(task, optimizer)] = cell
    _fill_rank_values(config, task_meta, cells)
    ranks, mean_rank, score = _rank(config, task_meta, cells)
    tasks = {t: task_meta[t] for t in config.tasks}
    return Summary(config, tasks, cells, ranks, mean_rank, score)


def _cell(task: str, optimizer: str, lr: float, tuning, finals: list[dict]) -> Cell:
    finals = sorted(finals, key=lambda r: r["seed"])
    cell = Cell(task, optimizer, lr, tuning, finals)
    if not finals:
        return cell
    if all(r.get("error") for r in finals):
        cell.error = finals[0]["error"]
    cell.mean, cell.ci = mean_ci(r["final_metric"] for r in finals if not r["diverged"])
    cell.divergence_rate = sum(r["diverged"] for r in finals) / len(finals)
    reached = [r for r in finals if r["steps_to_target"] is not None]
    cell.reached_rate = len(reached) / len(finals)
    if reached:
        cell.steps_to_target = statistics.fmean(r["steps_to_target"] for r in reached)
        cell.seconds_to_target = statistics.fmean(r["seconds_to_target"] for r in reached)
    cell.step_time_us = 1e6 * statistics.fmean(r["step_time"] for r in finals)
    cell.state_bytes_per_param = statistics.fmean(r["state_bytes_per_param"] for r in finals)
    return cell


def _fill_rank_values(config: Config, task_meta: dict, cells: dict) -> None:
    for task in config.tasks:
        higher = task_meta[task]["higher_is_better"]
        mine = [c for (t, _), c in cells.items() if t == task]
        finite = [r["final_metric"] for c in mine for r in c.finals
                  if not r["diverged"] and not math.isnan(r["final_metric"])]
        worst = (min(finite) if higher else max(finite)) if finite else float("nan")
        for cell in mine:
            values = [worst if r["diverged"] or math.isnan(r["final_metric"])
                      else r["final_metric"] for r in cell.finals]
            cell.rank_value = statistics.fmean(values) if values else float("nan")


def _rank(config: Config, task_meta: dict, cells: dict):
    ranks: dict[str, dict[str, float]] = {}
    for task in config.tasks:
        if task_meta[task]["illustrative"]:
            continue
        values = {o: cells[(task, o)].rank_value for o in config.optimizers if (task, o) in cells}
        diverged = {o: cells[(task, o)].divergence_rate for o in values}
        if values:
            ranks[task] = average_ranks(values, task_meta[task]["higher_is_better"], diverged)
    mean_rank: dict[str, float] = {}
    for optimizer in config.optimizers:
        mine = [r[optimizer] for r in ranks.values() if optimizer in r]
        mean_rank[optimizer] = statistics.fmean(mine) if mine else float("nan")
    count = len(config.optimizers)
    return ranks, mean_rank, {o: stars(mean_rank[o], count) for o in config.optimizers}
