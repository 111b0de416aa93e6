"""From database rows to the numbers of the report: per-task results, ties, tiers, stars.

Everything here is a pure function of the rows, so ``optimkit report`` rebuilds the same report
from the database alone. The search of each (task, optimizer) is replayed with
:func:`.search.walk` (what was tried, what was chosen), the statistics are :mod:`.ranking`'s.

A final run that diverged, raised, or scored worse than the task's declared ``chance`` level
(a guessing model) or than its own untrained model (evaluated on the test split before
training, recorded as ``extra["untrained"]``): a run below either has learnt nothing, and
*failed*: it ranks below
every finished run of its (task, seed) block (failures tie with each other), it is never tied
with the best, and for its mean, interval and paired test it scores the worst final value seen
on its task (over every optimizer's final runs), so the seeds stay paired.

Intervals are clipped to the metric's range (the task's ``bounds``, e.g. [0, 1] for an
accuracy): :attr:`Pair.interval` is the clipped one, :attr:`Pair.clipped` says whether it was.

Time to target (:mod:`.profiles`): per task the target is the validation value the tuned AdamW
reaches at the end of its budget (the median over its test seeds); without AdamW in the run,
the task's declared ``target`` (``Summary.targets`` says which).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

import numpy as np

from . import profiles, ranking
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
    failure_rate: float = 0.0  # diverged, raised or below chance
    below_chance: int = 0  # test seeds that finished worse than the task's chance level
    interval: tuple[float, float] = (float("nan"), float("nan"))  # clipped to the metric's range
    clipped: bool = False  # the interval was clipped
    # Per test seed, steps and training seconds to the run's target (inf: never reached).
    target_steps: list[float] = dataclasses.field(default_factory=list)
    target_seconds: list[float] = dataclasses.field(default_factory=list)
    reached_rate: float = 0.0
    steps_to_target: float = float("nan")
    seconds_to_target: float = float("nan")
    sensitivity: float = float("nan")  # decades of lr within the task's tolerance of the best
    sensitivity_bound: bool = False  # the width reaches an edge of the lrs tried
    rank: float = float("nan")  # mean rank on this task over the seeds
    error: str | None = None  # set when every final run raised
    path: list | None = None  # 2-D tasks: a tuning run at the chosen lr

    @property
    def groups(self) -> list[dict[str, Any]]:
        """The lr each param family got in the scored runs (several param groups only: an
        entry whose ``model_groups`` routes params), from the first final run."""
        for run in self.finals:
            found = (run.get("extra") or {}).get("groups")
            if found:
                return list(found)
        return []

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
    # task -> (target, source): source "adamw" (the tuned AdamW's final validation value) or
    # "declared" (the task's own target: AdamW is not in the run or has no final run).
    targets: dict[str, tuple[float, str]] = dataclasses.field(default_factory=dict)
    # Performance profiles over the real tasks, per basis ("seconds", "steps"):
    # ratio[basis][optimizer][task] and score[basis][optimizer] (see .profiles).
    profile_ratios: dict[str, dict[str, dict[str, float]]] = dataclasses.field(
        default_factory=dict)
    profile_scores: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    # Cells that raised Python warnings while training (counted, never printed by the run):
    # {"cells": n, "warnings": total, "examples": [...]}.
    warned: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The self-tuning track (see :func:`self_tuning_track`): {} when the run has no
    # self-tuning optimizer.
    self_tuning: dict[str, Any] = dataclasses.field(default_factory=dict)

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
    targets = {t: _target(t, task_meta[t], pairs) for t in config.tasks}
    for (task, _), pair in pairs.items():
        _time_to_target(pair, targets[task][0], task_meta[task]["higher_is_better"])
    ratios, scores = _profiles(config, task_meta, pairs)
    mine = [r for r in rows if r["task"] in set(config.tasks) | {"cost"}
            and r["optimizer"] in config.optimizers and (r.get("extra") or {}).get("warnings")]
    warned = {"cells": len(mine), "warnings": sum(r["extra"]["warnings"] for r in mine),
              "examples": list(dict.fromkeys(t for r in mine
                                             for t in r["extra"].get("warning_texts", [])))[:3]}
    summary = Summary(config, {t: task_meta[t] for t in config.tasks}, pairs, task_results,
                      rank, stability, costs, targets, ratios, scores, warned)
    summary.self_tuning = self_tuning_track(config, task_meta, pairs, rows,
                                            rank.names if rank else [])
    return summary


def _default_runs(rows: list[dict], task: str, optimizer: str, seeds: tuple[int, ...],
                  schedule: str) -> list[dict] | None:
    """The runs of ``optimizer`` at its defaults (role "default") on ``task`` under
    ``schedule``, in seed order; None unless every seed is there."""
    found = {r["seed"]: r for r in rows if r["role"] == "default" and r["task"] == task
             and r["optimizer"] == optimizer and r["schedule"] == schedule}
    return [found[s] for s in seeds] if all(s in found for s in seeds) else None


def self_tuning_track(config: Config, task_meta: dict, pairs: dict, rows: list[dict],
                      field: list[str]) -> dict[str, Any]:
    """AlgoPerf's self-tuning track: each self-tuning optimizer at its own defaults (no
    tuning), against the tuned field and against AdamW at its default lr, on the test seeds.

    Per task: its mean and interval (failures scored as the task's worst value, as in the
    tuned field), its verdict against the tuned field's best (the per-task tie rule, with it
    added to the field), its mean rank among the tuned optimizers of ``field`` plus itself,
    and its verdict against the AdamW baseline (:func:`.ranking.versus`). Across tasks: its
    mean rank and tier with it added to the tuned field (Friedman + Nemenyi over the same
    (task, seed) blocks, not bagged), and the verdicts' counts. The baseline gets the same.
    """
    from .suite import BASELINE, self_tuning

    marked = [o for o in config.optimizers if _marked(o, self_tuning)]
    if not marked:
        return {}
    rules = config.rules()
    real = [t for t in config.tasks if not task_meta[t]["illustrative"]]
    runs = {(t, o): _default_runs(rows, t, o, rules.test_seeds,
                                  "constant" if o in marked else config.schedule)
            for t in real for o in [*marked, BASELINE]}
    out: dict[str, Any] = {"baseline": BASELINE, "optimizers": {}}
    for optimizer in [*marked, *([BASELINE] if BASELINE not in marked else [])]:
        per_task, blocks = {}, []
        for task in real:
            mine, base = runs.get((task, optimizer)), runs.get((task, BASELINE))
            if mine is None:
                continue
            meta = task_meta[task]
            pseudo = Pair(task, optimizer, None, mine)  # type: ignore[arg-type]
            tuned = [p for (t, o), p in pairs.items() if t == task and o in field]
            _fill(task, meta, [pseudo], worst_from=[*tuned, pseudo])
            done = {o: p for o in field if (p := pairs.get((task, o))) is not None
                    and p.complete and len(p.values) == len(pseudo.values)}
            scores = {o: _scores(meta, p) for o, p in done.items()}
            name = f"{optimizer} (defaults)"
            test = ranking.tied_with_best(
                {**scores, name: _scores(meta, pseudo)}, tolerance=meta.get("tolerance", 0.01),
                failed={**{o: any(p.failed) for o, p in done.items()}, name: any(pseudo.failed)})
            table = np.array([*[_scores(meta, p, ranks=True) for p in done.values()],
                              _scores(meta, pseudo, ranks=True)]).T
            ranks = np.stack([ranking.block_ranks(row) for row in table])
            if len(done) == len(field) and field:
                blocks.append(ranking.TaskBlocks(task, table))
            entry = {"mean": pseudo.mean, "ci95": pseudo.ci, "ci95_low": pseudo.interval[0],
                     "ci95_high": pseudo.interval[1], "per_seed": list(pseudo.values),
                     "failure_rate": pseudo.failure_rate,
                     "vs_tuned_best": test.verdict[name] if test.best != name else "best",
                     "tuned_best": test.best if test.best != name else optimizer,
                     "rank_in_field": float(ranks[:, -1].mean()), "field_size": len(done) + 1}
            if base is not None and optimizer != BASELINE:
                other = Pair(task, BASELINE, None, base)  # type: ignore[arg-type]
                _fill(task, meta, [other], worst_from=[*tuned, pseudo, other])
                entry["vs_adamw_default"] = ranking.versus(
                    _scores(meta, pseudo), _scores(meta, other), meta.get("tolerance", 0.01),
                    failed=any(pseudo.failed) or any(other.failed))
            per_task[task] = entry
        result: dict[str, Any] = {"tasks": per_task, "schedule": "constant"
                                  if optimizer != BASELINE else config.schedule}
        if blocks and len(blocks) == len(real):
            names = [*field, optimizer]
            per = [b.ranks() for b in blocks]
            all_ranks = np.concatenate(per)
            ties = np.array([ranking._ties(r) for r in all_ranks])
            test = ranking.rank_test(names, all_ranks, ties)
            result.update(mean_rank_in_field=test.mean_rank[optimizer],
                          tier_in_field=test.tiers[optimizer], field_size=len(names),
                          critical_difference=test.cd)
        if not per_task:
            continue  # no run at its defaults (a database from before it was marked)
        verdicts = [e.get("vs_adamw_default") for e in per_task.values()]
        if optimizer != BASELINE and any(verdicts):
            result["vs_adamw_default"] = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)
                                          if v}
        out["optimizers"][optimizer] = result
    if not any(o in out["optimizers"] for o in marked):
        return {}  # no self-tuning optimizer has runs at its defaults: no track
    return out


def _marked(optimizer: str, rule) -> bool:
    try:
        return rule(optimizer)
    except ValueError:  # a database from a build that registered other names
        return False


REFERENCE = "adamw"  # the optimizer whose final validation value sets each task's target


def _curve(row: dict) -> list[tuple[float, float, float]]:
    return [(s, math.nan if m is None else m, t) for s, m, t in row.get("evals") or []]


def _target(task: str, meta: dict, pairs: dict) -> tuple[float, str]:
    ref = pairs.get((task, REFERENCE))
    if ref is not None and ref.finals:
        value = profiles.target_of([_curve(r)[-1][1] if r.get("evals") else math.nan
                                    for r in ref.finals])
        if not math.isnan(value):
            return value, REFERENCE
    return float(meta["target"]), "declared"


def _time_to_target(pair: Pair, target: float, higher: bool) -> None:
    times = [profiles.time_to_target(_curve(r), target, higher) for r in pair.finals]
    pair.target_steps = [t[0] for t in times]
    pair.target_seconds = [t[1] for t in times]


def _profiles(config: Config, task_meta: dict, pairs: dict):
    real = [t for t in config.tasks if not task_meta[t]["illustrative"]]
    names = [o for o in config.optimizers
             if real and all((t, o) in pairs and pairs[(t, o)].complete for t in real)]
    ratios, scores = {}, {}
    for basis in ("seconds", "steps"):
        times = {o: {t: profiles.median_time(getattr(pairs[(t, o)], f"target_{basis}"))
                     for t in real} for o in names}
        ratios[basis], scores[basis] = profiles.profiles(times) if times else ({}, {})
    return ratios, scores


def _wd0(state: Search) -> dict[str, float]:
    return {"weight_decay": 0.0} if state.takes_weight_decay else {}


def _fill(task: str, meta: dict, pairs: list[Pair], worst_from: list[Pair] | None = None) -> None:
    """Each pair's per-seed values, failures, mean and interval; a failed seed scores the worst
    final value of the task, over ``worst_from`` (default: ``pairs``)."""
    finite = [r["final_metric"] for p in (pairs if worst_from is None else worst_from)
              for r in p.finals if not r["diverged"] and not math.isnan(r["final_metric"])]
    higher = meta["higher_is_better"]
    chance = meta.get("chance")
    worst = (min(finite) if higher else max(finite)) if finite else 0.0
    for pair in pairs:
        if not pair.finals:
            continue
        if all(r.get("error") for r in pair.finals):
            pair.error = pair.finals[0]["error"]
        low_chance = [_below(r["final_metric"], chance, higher)
                      or _below(r["final_metric"], (r.get("extra") or {}).get("untrained"),
                                higher) for r in pair.finals]
        pair.below_chance = sum(low_chance)
        pair.failed = [bool(r["diverged"]) or math.isnan(r["final_metric"]) or below
                       for r, below in zip(pair.finals, low_chance, strict=True)]
        pair.values = [worst if r["diverged"] or math.isnan(r["final_metric"])
                       else r["final_metric"] for r in pair.finals]
        pair.mean, pair.ci = ranking.mean_ci(pair.values)
        pair.interval, pair.clipped = clip_interval(pair.mean, pair.ci, meta.get("bounds"))
        pair.divergence_rate = sum(bool(r["diverged"]) for r in pair.finals) / len(pair.finals)
        pair.failure_rate = sum(pair.failed) / len(pair.finals)
        reached = [r for r in pair.finals if r["steps_to_target"] is not None]
        pair.reached_rate = len(reached) / len(pair.finals)
        if reached:
            pair.steps_to_target = statistics.fmean(r["steps_to_target"] for r in reached)
            pair.seconds_to_target = statistics.fmean(r["seconds_to_target"] for r in reached)


def _below(value: float, chance: float | None, higher: bool) -> bool:
    """Whether a finished run's value is worse than ``chance`` (the task's chance level, or
    its untrained model's value on the run's seed)."""
    if chance is None or math.isnan(chance) or math.isnan(value):
        return False
    return value < chance if higher else value > chance


def clip_interval(mean: float, half: float,
                  bounds: tuple[float | None, float | None] | list | None) -> tuple[
                      tuple[float, float], bool]:
    """``mean ± half`` clipped to the metric's ``bounds`` (None: unbounded on that side);
    the second value says whether a side was clipped."""
    if math.isnan(mean) or math.isnan(half):
        return (mean, mean), False
    low, high = mean - half, mean + half
    lo_bound, hi_bound = tuple(bounds) if bounds else (None, None)
    clipped = False
    if lo_bound is not None and low < lo_bound:
        low, clipped = float(lo_bound), True
    if hi_bound is not None and high > hi_bound:
        high, clipped = float(hi_bound), True
    return (low, high), clipped


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
    test = ranking.tied_with_best({o: _scores(meta, p) for o, p in done.items()},
                                  tolerance=meta.get("tolerance", 0.01),
                                  failed={o: any(p.failed) for o, p in done.items()})
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




SCALE_CAVEAT = (
    "Scale: these are small models (tens of thousands of parameters up to about 0.1M) trained "
    "for seconds on one CPU thread; what ties here may separate on large models and long "
    "runs, and the reverse (AlgoPerf's and the newer optimizers' papers report gaps that grow "
    "or shrink with scale). Read it as the answer for workloads of this size.")


def what_to_pick(summary: Summary) -> dict[str, Any]:
    """A short answer derived from the numbers alone, with the caveat of scale.

    * ``families``: per task family (the tasks' ``family``), the optimizers tied with the best
      on every task of the family (``tied``), else the best of each task (``best``);
    * ``fastest``: the optimizers with the highest time-to-target profile score B (seconds;
      equal to 0.01), with the score; empty when no optimizer reaches any target;
    * ``untuned``: the best optimizer run at its defaults in the self-tuning track (its mean
      rank in the tuned field, and its tier there), or None without that track;
    * ``top_tier``: the tier-1 optimizers across the tasks; ``caveat``: :data:`SCALE_CAVEAT`.
    """
    families: dict[str, list[str]] = {}
    for task in summary.real_tasks:
        families.setdefault(str(summary.tasks[task].get("family") or task), []).append(task)
    out: dict[str, Any] = {"families": {}, "fastest": [], "untuned": None,
                           "top_tier": [o for o in summary.ranked if summary.tier(o) == 1],
                           "caveat": SCALE_CAVEAT}
    for family, names in families.items():
        results = [summary.task_results[t] for t in names if summary.task_results[t].test]
        if not results:
            continue
        tied = [o for o in results[0].tied if all(o in r.tied for r in results[1:])]
        out["families"][family] = {"tasks": names, "tied": tied,
                                   "best": {r.name: r.test.best for r in results}}
    scores = {o: b for o, b in (summary.profile_scores.get("seconds") or {}).items()
              if b is not None and not math.isnan(b)}
    if scores and max(scores.values()) > 0:
        top = max(scores.values())
        out["fastest"] = [(o, scores[o]) for o in sorted(scores, key=lambda o: -scores[o])
                          if scores[o] >= top - 0.01]
    track = (summary.self_tuning or {}).get("optimizers") or {}
    ranked = {o: r for o, r in track.items() if "mean_rank_in_field" in r}
    if ranked:
        best = min(ranked, key=lambda o: (ranked[o]["mean_rank_in_field"], o))
        out["untuned"] = {"optimizer": best,
                          "baseline": best == summary.self_tuning.get("baseline"),
                          "mean_rank_in_field": ranked[best]["mean_rank_in_field"],
                          "tier_in_field": ranked[best]["tier_in_field"],
                          "field_size": ranked[best]["field_size"]}
    return out


def pick_text(answer: dict[str, Any]) -> list[str]:
    """:func:`what_to_pick` as a few markdown lines (one per point)."""
    lines = []
    for family, found in answer["families"].items():
        if found["tied"]:
            lines.append(f"- **{family}** ({', '.join(found['tasks'])}): tied with the best "
                         f"on every task: {', '.join(found['tied'])}.")
        else:
            best = "; ".join(f"{t}: {o}" for t, o in found["best"].items())
            lines.append(f"- **{family}** ({', '.join(found['tasks'])}): no optimizer ties "
                         f"with the best on every task (best per task: {best}).")
    if answer["fastest"]:
        lines.append("- **Fastest to target**: " + ", ".join(
            f"{o} (B = {b:.2f})" for o, b in answer["fastest"]) + ".")
    else:
        lines.append("- **Fastest to target**: no optimizer reaches the targets.")
    untuned = answer["untuned"]
    if untuned is None:
        lines.append("- **Best untuned**: no self-tuning optimizer in this run.")
    else:
        what = "AdamW at its default lr (no self-tuning optimizer beats it)" \
            if untuned["baseline"] else f"{untuned['optimizer']} at its defaults"
        lines.append(f"- **Best untuned**: {what}: mean rank "
                     f"{untuned['mean_rank_in_field']:.2f} among the "
                     f"{untuned['field_size'] - 1} tuned optimizers plus itself, tier "
                     f"{untuned['tier_in_field']} there.")
    if answer["top_tier"]:
        lines.append(f"- **Across all tasks** (tier 1): {', '.join(answer['top_tier'])}.")
    lines.append(f"- *{answer['caveat']}*")
    return lines


__all__ = ["REFERENCE", "SCALE_CAVEAT", "SCORE_RULE", "Pair", "Summary", "TaskResult",
           "clip_interval", "pick_text", "self_tuning_track", "summarise", "what_to_pick"]
