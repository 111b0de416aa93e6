"""From database rows to the numbers of the report: per-task results, ties, tiers, stars.

Everything here is a pure function of the rows, so ``optimkit report`` rebuilds the same report
from the database alone. The search of each (task, optimizer) is replayed with
:func:`.search.walk` (what was tried, what was chosen), the statistics are :mod:`.ranking`'s.

A final run that diverged or failed ranks below every finished run of its (task, seed) block
(failures tie with each other); for its mean, interval and paired test it scores the worst
final value seen on its task (over every optimizer's final runs), so the seeds stay paired.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

import numpy as np

from . import ranking
from .runner import CellSpec
from .search import Search, final_specs, sensitivity, walk
from .suite import Config, results_lookup_rows, takes_weight_decay

SCORE_RULE = (
    "Score = the optimizer's tier across the tasks: tier 1 (★★★) is every optimizer that "
    "Friedman's test with Nemenyi's post-hoc test (alpha 0.05, one block per task and test "
    "seed) cannot tell apart from the best mean rank; tier 2 (★★) applies the same rule to the "
    "rest, tier 3 (★), lower tiers ☆. The grouping is bagged: each optimizer's tier is its "
    f"median tier over {ranking.BAG} bootstrap resamples of the test seeds. Optimizers in one "
    "tier are tied: their order inside it is not significant."
)


@dataclasses.dataclass
class Pair:
    """One (task, optimizer): its search, its final runs, and their summary."""

    task: str
    optimizer: str
    search: Search
    finals: list[dict[str, Any]]  # in test-seed order
    values: list[float] = dataclasses.field(default_factory=list)  # per seed, failures penalised
    failed: list[bool] = dataclasses.field(default_factory=list)  # per seed: diverged or raised
    mean: float = float("nan")
    ci: float = float("nan")
    divergence_rate: float = 0.0
    reached_rate: float = 0.0
    steps_to_target: float = float("nan")
    seconds_to_target: float = float("nan")
    sensitivity: float = float("nan")  # decades of lr within the task's tolerance of the best
    sensitivity_bound: bool = False  # the width reaches an edge of the lrs tried
    rank: float = float("nan")  # mean rank on this task over the seeds
    error: str | None = None  # set when every final run raised
    path: list | None = None  # 2-D tasks: a tuning run at the chosen lr

    @property
    def complete(self) -> bool:
        return self.search.stage == "done"

    @property
    def lr(self) -> float | None:
        return self.search.lr

    @property
    def weight_decay(self) -> float | None:
        return self.search.weight_decay


@dataclasses.dataclass
class TaskResult:
    name: str
    meta: dict[str, Any]
    test: ranking.TaskTest | None  # tied with the best (None when nothing to compare)

    @property
    def tied(self) -> list[str]:
        return self.test.tied if self.test else []


@dataclasses.dataclass
class Summary:
    config: Config
    tasks: dict[str, dict[str, Any]]  # name -> meta, in the config's order
    pairs: dict[tuple[str, str], Pair]
    task_results: dict[str, TaskResult]
    rank: ranking.RankTest | None  # across the real tasks (None: fewer than 2 optimizers)
    stability: dict[str, float]
    costs: dict[str, dict[str, Any]]  # optimizer -> its cost cell

    @property
    def real_tasks(self) -> list[str]:
        return [t for t, meta in self.tasks.items() if not meta["illustrative"]]

    @property
    def ranked(self) -> list[str]:
        """The optimizers with a tier, best mean rank first."""
        if self.rank is None:
            return []
        return sorted(self.rank.names, key=lambda o: (self.rank.mean_rank[o], o))

    def tier(self, optimizer: str) -> int | None:
        return None if self.rank is None else self.rank.tiers.get(optimizer)

    def stars(self, optimizer: str) -> int | None:
        tier = self.tier(optimizer)
        return None if tier is None else ranking.stars(tier)

    def mean_rank(self, optimizer: str) -> float:
        return float("nan") if self.rank is None else self.rank.mean_rank.get(optimizer, math.nan)

    @property
    def stability_figure(self) -> float:
        """The smaller of the two bootstrap figures (NaN when not computed)."""
        values = [v for v in self.stability.values() if not math.isnan(v)]
        return min(values) if values else float("nan")

    @property
    def edges(self) -> list[tuple[str, str]]:
        """The pairs whose tuned lr sits on an edge of the lrs tried."""
        return [k for k, p in self.pairs.items() if p.search.lr is not None and p.search.on_edge]


def summarise(config: Config, task_meta: dict[str, dict], rows: list[dict],
              bootstrap: int = ranking.BOOTSTRAP) -> Summary:
    """Summarise the rows of ``config``'s cells (others in the database are ignored)."""
    rows = [r for r in rows if r["version"] == config.version and r["device"] == config.device]
    known = results_lookup_rows(rows)
    rules = config.rules()
    pairs: dict[tuple[str, str], Pair] = {}
    for task in config.tasks:
        higher = task_meta[task]["higher_is_better"]
        for optimizer in config.optimizers:
            state = walk(rules, task, optimizer, higher, takes_weight_decay(optimizer), known.get,
                         task_meta[task].get("tolerance", 0.01))
            if state.lr is None:
                continue  # not tuned yet: the pair has no result
            finals = [known[s] for s in final_specs(rules, state) if s in known]
            pair = Pair(task, optimizer, state, finals)
            pair.sensitivity, pair.sensitivity_bound = sensitivity(
                state, higher, task_meta[task].get("tolerance", 0.01), rules.per_decade)
            if task_meta[task]["illustrative"]:
                spec = CellSpec.make(task, optimizer, {"lr": state.lr, **_wd0(state)},
                                     rules.tuning_seeds[0], "tune", rules.device, rules.schedule)
                pair.path = (known.get(spec) or {}).get("path")
            pairs[(task, optimizer)] = pair
    for task in config.tasks:
        _fill(task, task_meta[task], [p for (t, _), p in pairs.items() if t == task])
    task_results = {t: TaskResult(t, task_meta[t], _task_test(t, task_meta[t], pairs, config))
                    for t in config.tasks}
    rank, stability = _rank(config, task_meta, pairs, bootstrap)
    costs = {r["optimizer"]: r for r in rows if r["role"] == "cost"
             and r["optimizer"] in config.optimizers}
    return Summary(config, {t: task_meta[t] for t in config.tasks}, pairs, task_results, rank,
                   stability, costs)


def _wd0(state: Search) -> dict[str, float]:
    return {"weight_decay": 0.0} if state.takes_weight_decay else {}


def _fill(task: str, meta: dict, pairs: list[Pair]) -> None:
    finite = [r["final_metric"] for p in pairs for r in p.finals
              if not r["diverged"] and not math.isnan(r["final_metric"])]
    higher = meta["higher_is_better"]
    worst = (min(finite) if higher else max(finite)) if finite else 0.0
    for pair in pairs:
        if not pair.finals:
            continue
        if all(r.get("error") for r in pair.finals):
            pair.error = pair.finals[0]["error"]
        pair.failed = [bool(r["diverged"]) or math.isnan(r["final_metric"]) for r in pair.finals]
        pair.values = [worst if bad else r["final_metric"]
                       for r, bad in zip(pair.finals, pair.failed, strict=True)]
        pair.mean, pair.ci = ranking.mean_ci(pair.values)
        pair.divergence_rate = sum(bool(r["diverged"]) for r in pair.finals) / len(pair.finals)
        reached = [r for r in pair.finals if r["steps_to_target"] is not None]
        pair.reached_rate = len(reached) / len(pair.finals)
        if reached:
            pair.steps_to_target = statistics.fmean(r["steps_to_target"] for r in reached)
            pair.seconds_to_target = statistics.fmean(r["seconds_to_target"] for r in reached)


def _scores(meta: dict, pair: Pair, ranks: bool = False) -> list[float]:
    """Per-seed values oriented so that higher is better (for ranks: a failure is -inf)."""
    sign = 1.0 if meta["higher_is_better"] else -1.0
    return [-math.inf if ranks and bad else sign * v
            for v, bad in zip(pair.values, pair.failed, strict=True)]


def _task_test(task: str, meta: dict, pairs: dict, config: Config) -> ranking.TaskTest | None:
    done = {o: pairs[(task, o)] for o in config.optimizers
            if (task, o) in pairs and pairs[(task, o)].complete}
    if not done:
        return None
    test = ranking.tied_with_best({o: _scores(meta, p) for o, p in done.items()})
    ranks = np.stack([ranking.block_ranks(row) for row in
                      np.array([_scores(meta, p, ranks=True) for p in done.values()]).T])
    for optimizer, r in zip(done, ranks.mean(axis=0), strict=True):
        done[optimizer].rank = float(r)
    return test


def _rank(config: Config, task_meta: dict, pairs: dict, bootstrap: int):
    real = [t for t in config.tasks if not task_meta[t]["illustrative"]]
    names = [o for o in config.optimizers
             if real and all((t, o) in pairs and pairs[(t, o)].complete for t in real)]
    nan = {"seeds": float("nan"), "tasks": float("nan")}
    if len(names) < 2:
        return None, nan
    blocks = [ranking.TaskBlocks(t, np.array([_scores(task_meta[t], pairs[(t, o)], ranks=True)
                                              for o in names]).T) for t in real]
    return ranking.analyse(names, blocks, bootstrap=bootstrap)


__all__ = ["SCORE_RULE", "Pair", "Summary", "TaskResult", "summarise"]
