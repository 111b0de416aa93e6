"""The report: leaderboard.md, leaderboard.json, report.html (self-contained), results.csv,
results.json, runs.csv and PNGs, all rebuilt from the database alone.

``build(out)`` reads only the database in ``out`` and rewrites every other file there. One row
builder (:func:`optimizer_rows`, :func:`pair_rows`) feeds the markdown, the HTML and the JSON
alike, so they cannot disagree.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from .. import registry
from . import profiles, ranking
from .notes import NOTES_TABLE, by_key, key
from .notes import rows as note_rows
from .scoring import SCORE_RULE, Summary, pick_text, summarise, what_to_pick
from .store import Store
from .suite import Config

STAR = "⭐"
PROVISIONAL = ("Provisional: the quick preset's tasks are small and mostly saturated, so its "
               "tiers say little; the standard preset fills the Score.")
PAIR_COLUMNS = (
    "task", "optimizer", "tier", "metric", "seeds", "mean", "ci95", "per_seed",
    "tied_with_best", "rank_on_task", "lr", "weight_decay", "lrs_tried", "lr_on_edge",
    "lr_sensitivity_decades", "divergence_rate", "reached_rate", "steps_to_target",
    "seconds_to_target", "error", "verdict", "ci95_low", "ci95_high", "ci95_clipped",
    "failure_rate", "below_chance", "target", "target_steps", "target_seconds",
    "median_target_steps", "median_target_seconds",
)
RUN_COLUMNS = ("task", "optimizer", "role", "seed", "lr", "weight_decay", "schedule",
               "final_metric", "diverged", "steps", "seconds", "error", "warnings")


def load(out: Path | str) -> Summary:
    """The summary of the last run recorded in ``out``'s database."""
    with Store(out, create=False) as store:
        config = store.last_config()
        if config is None:
            raise ValueError(f"the database in {out} records no run")
        broken = store.environment_failures(config["version"])
        if broken:
            task, optimizer, error = broken[0]
            raise ValueError(
                f"{store.path}: {len(broken)} cells are recorded as failed for the environment, "
                f"not the optimizer (e.g. {optimizer} on {task}: {error}); an older optimkit "
                "stored them as results. Rerun the same `optimkit bench` command (or "
                f"`optimkit bench --resume --out {out}`) to compute them again")
        return summarise(Config.from_json(config, version=config["version"],
                                          check_tasks=False),
                         store.task_meta(), store.cells())


def _rows_of(out: Path) -> list[dict]:
    with Store(out, create=False) as store:
        return store.cells()


def build(out: Path | str, notes: Path | str | None = None,
          summary: Summary | None = None) -> list[Path]:
    """Rebuild every output in ``out`` from its database; returns the files written.

    With ``notes`` (a markdown file holding a table with a Score column), also writes
    ``notes.md``: that file with every Score cell replaced by the measured one. ``summary``
    (``load(out)``) may be passed when the caller has it already.
    """
    from .plots import all_plots

    out = Path(out)
    summary = summary if summary is not None else load(out)
    pictures = all_plots(summary, out)
    files = [] if notes is None else [
        write(out / "notes.md", fill_notes(Path(notes).read_text(encoding="utf-8"), summary))]
    files += [
        write(out / "leaderboard.md", leaderboard(summary)),
        write(out / "leaderboard.json", json.dumps(leaderboard_json(summary), indent=2) + "\n"),
        write(out / "results.csv", _csv(PAIR_COLUMNS, pair_rows(summary))),
        write(out / "runs.csv", _csv(RUN_COLUMNS, run_rows(summary, _rows_of(out)))),
        write(out / "results.json", json.dumps(results_json(summary), indent=2) + "\n"),
    ]
    files.append(write(out / "report.html", page(summary, pictures)))
    return files + pictures


def write(path: Path, text: str) -> Path:
    """Write then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------ numbers as text
def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def mean_pm(mean: float, ci: float, error: str | None = None) -> str:
    if error:
        return "failed"
    if math.isnan(mean):
        return "–"
    return fmt(mean) if math.isnan(ci) else f"{fmt(mean)} ± {fmt(ci)}"


def stars_text(count: int | None, emoji: bool = True) -> str:
    if count is None:
        return "–"
    if emoji:
        return STAR * count if count else "☆"
    # HTML: text stars (in every font), not the emoji: many desktops lack a colour-emoji font.
    return "★" * count + "☆" * (3 - count)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return None if _missing(value) else value


# ------------------------------------------------------------------ the row builders
def order(summary: Summary) -> list[str]:
    """Optimizers by tier, then mean rank; unranked ones last, in the config's order."""
    ranked = summary.ranked
    return ranked + [o for o in summary.config.optimizers if o not in ranked]


COST_RULE = ("step() time on a 10.9M-parameter transformer, one thread, as a multiple of "
             "torch's fused Adam (alternating in one process), in the optimizer's fastest mode: "
             "eager or flat=True, and compile=True on CUDA (on a CPU compile=True is not timed: "
             "it needs a C++ toolchain and long compiles); the mode is named next to the "
             "number. State B/param: the bytes of the optimizer's state after the timed steps.")


def _cost(summary: Summary, optimizer: str) -> tuple[float, float]:
    row = summary.costs.get(optimizer)
    if row is None or row.get("error"):
        return float("nan"), float("nan")
    return row["extra"].get("x_fused_adam", float("nan")), row["state_bytes_per_param"]


def _step_seconds(summary: Summary, optimizer: str) -> float:
    row = summary.costs.get(optimizer)
    return float("nan") if row is None or row.get("error") else row["step_time"]


def lr_families(groups: list[dict[str, Any]]) -> str:
    """The lr each param family got ("matrices lr=0.02, other lr=0.0003 (adamw_lr=0.0003)"),
    or "" for a single group."""
    parts = []
    for group in groups:
        extra = ", ".join(f"{k}={_num(v)}" for k, v in group.items()
                          if k.endswith("_lr") and isinstance(v, (int, float)))
        parts.append(f"{md(group.get('family', '?'))} lr={_num(group.get('lr', float('nan')))}"
                     + (f" ({md(extra)})" if extra else ""))
    return ", ".join(parts)


def _median(values: list[float]) -> float:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def optimizer_rows(summary: Summary) -> list[dict[str, Any]]:
    """One row per optimizer: the leaderboard's (markdown, HTML and JSON alike)."""
    real = summary.real_tasks
    out = []
    for optimizer in order(summary):
        pairs = [summary.pairs.get((t, optimizer)) for t in real]
        done = [p for p in pairs if p is not None and p.complete]
        x_adam, state = _cost(summary, optimizer)
        out.append({
            "name": optimizer,
            "tier": summary.tier(optimizer),
            "tier_share": summary.rank.tier_share.get(optimizer) if summary.rank else None,
            "stars": summary.stars(optimizer),
            "mean_rank": summary.mean_rank(optimizer),
            "tied_with_best_on": [t for t in real
                                  if optimizer in summary.task_results[t].tied],
            "lr_sensitivity_decades": _median([p.sensitivity for p in done]),
            "divergence_rate": (sum(p.divergence_rate for p in done) / len(done)
                                if done else float("nan")),
            "failure_rate": (sum(p.failure_rate for p in done) / len(done)
                             if done else float("nan")),
            "profile_score": summary.profile_scores.get("seconds", {}).get(optimizer),
            "profile_score_steps": summary.profile_scores.get("steps", {}).get(optimizer),
            "time_to_target": {p.task: _ttt(p) for p in done},
            "x_fused_adam": x_adam,
            "cost_mode": (summary.costs.get(optimizer) or {}).get("extra", {}).get("mode"),
            "step_seconds": _step_seconds(summary, optimizer),
            "state_bytes_per_param": state,
            "self_tuning": ((summary.self_tuning or {}).get("optimizers") or {}).get(optimizer)
            if optimizer != (summary.self_tuning or {}).get("baseline") else None,
            "lr_on_edge": [p.task for p in done if p.search.on_edge],
        })
    return out


def pair_rows(summary: Summary, tasks: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per (task, optimizer) with a tuned lr: results.csv, results.json, the tables."""
    out = []
    for task in tasks or list(summary.tasks):
        tied = summary.task_results[task].tied
        test = summary.task_results[task].test
        target = summary.targets.get(task, (float("nan"), "declared"))[0]
        by_mean = sorted(
            (p for (t, _), p in summary.pairs.items() if t == task),
            key=lambda p: (math.isnan(p.mean), -p.mean if summary.tasks[task]["higher_is_better"]
                           else p.mean, p.optimizer))
        for pair in by_mean:
            out.append({
                "task": task, "optimizer": pair.optimizer, "tier": summary.tier(pair.optimizer),
                "metric": summary.tasks[task]["metric"], "seeds": len(pair.finals),
                "mean": pair.mean, "ci95": pair.ci, "per_seed": list(pair.values),
                "tied_with_best": pair.optimizer in tied, "rank_on_task": pair.rank,
                "lr": pair.lr, "weight_decay": pair.weight_decay,
                "lrs_tried": len(pair.search.lr_trials), "lr_on_edge": pair.search.on_edge,
                "lr_sensitivity_decades": pair.sensitivity,
                "lr_sensitivity_lower_bound": pair.sensitivity_bound,
                "divergence_rate": pair.divergence_rate, "reached_rate": pair.reached_rate,
                "steps_to_target": pair.steps_to_target,
                "seconds_to_target": pair.seconds_to_target, "error": pair.error,
                "complete": pair.complete,
                "verdict": _verdict(test, pair.optimizer),
                "ci95_low": pair.interval[0], "ci95_high": pair.interval[1],
                "ci95_clipped": pair.clipped, "failure_rate": pair.failure_rate,
                "below_chance": pair.below_chance, "target": target,
                "target_steps": _finite_list(pair.target_steps),
                "target_seconds": _finite_list(pair.target_seconds),
                "median_target_steps": _finite(profiles.median_time(pair.target_steps)),
                "median_target_seconds": _finite(profiles.median_time(pair.target_seconds)),
                "lr_by_family": pair.groups,
            })
    return out


def _verdict(test, optimizer: str) -> str | None:
    """"best", "tied", "inconclusive", "worse" or "failed" (None: no test on the task)."""
    if test is None or (optimizer not in test.verdict and optimizer != test.best):
        return None
    return "best" if optimizer == test.best else test.verdict[optimizer]


def _finite(value: float) -> float | None:
    """``inf`` (never reached) as None, for JSON."""
    return None if math.isinf(value) else value


def _finite_list(values: list[float]) -> list[float | None]:
    return [_finite(v) for v in values]


def _ttt(pair) -> dict[str, Any]:
    """Time to target of one pair for leaderboard.json (None: not reached on that seed)."""
    return {"steps": _finite_list(pair.target_steps),
            "seconds": _finite_list(pair.target_seconds),
            "median_steps": _finite(profiles.median_time(pair.target_steps)),
            "median_seconds": _finite(profiles.median_time(pair.target_seconds))}


def run_rows(summary: Summary, rows: list[dict]) -> list[dict[str, Any]]:
    """Every cell of the run (tuning, final and cost), one per line of runs.csv."""
    tasks, optimizers = set(summary.config.tasks) | {"cost"}, set(summary.config.optimizers)
    out = []
    for r in rows:
        if (r["task"] not in tasks or r["optimizer"] not in optimizers
                or r["version"] != summary.config.version):
            continue
        hypers = json.loads(r["hypers"])
        out.append({"task": r["task"], "optimizer": r["optimizer"], "role": r["role"],
                    "seed": r["seed"], "lr": hypers.get("lr"),
                    "weight_decay": hypers.get("weight_decay"), "schedule": r["schedule"],
                    "final_metric": r["final_metric"], "diverged": r["diverged"],
                    "steps": r["steps"], "seconds": r["seconds"], "error": r["error"],
                    "warnings": (r.get("extra") or {}).get("warnings", 0)})
    return out


def _csv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if _missing(v) else ";".join(
            "" if x is None else f"{x:.6g}" for x in v) if isinstance(v, list) else v)
            for k, v in row.items() if k in columns})
    return buffer.getvalue()


# ------------------------------------------------------------------ JSON
def statistics_json(summary: Summary) -> dict[str, Any]:
    rank = summary.rank
    return _clean({
        "per_task": "vs the best mean, paired by test seed: tied when the 95 % interval of the "
                    "paired difference lies within +-the task's tolerance; worse when the "
                    "one-sided paired t-test (Holm-corrected over the k-1 comparisons) rejects "
                    "and the interval leaves the tolerance; inconclusive otherwise; failed "
                    "when a test seed diverged, raised or ended worse than the task's chance "
                    "level",
        "across_tasks": "Friedman test (Iman-Davenport F, tie-corrected) over blocks = (task, "
                        "test seed), Nemenyi critical difference; tiers from the best mean rank "
                        "down (Demsar 2006), bagged: the median tier over bootstrap resamples of "
                        "the test seeds (Breiman 1996)",
        "alpha": ranking.ALPHA,
        "blocks": rank.blocks if rank else None,
        "critical_difference": rank.cd if rank else None,
        "friedman_chi2": rank.chi2 if rank else None,
        "iman_davenport_f": rank.f if rank else None,
        "p_value": rank.p if rank else None,
        "tiers": max(rank.tiers.values()) if rank and rank.tiers else None,
        "bagging_replicates": ranking.BAG,
        "bootstrap_replicates": ranking.BOOTSTRAP,
    })


def leaderboard_json(summary: Summary) -> dict[str, Any]:
    """The machine-readable leaderboard: tiers, stars, ties, grids, stability."""
    c = summary.config
    rules = c.rules()
    tasks = []
    for task in summary.real_tasks:
        pairs = pair_rows(summary, [task])
        grid = sorted({t.lr for (t_name, _), p in summary.pairs.items() if t_name == task
                       for t in p.search.lr_trials})
        tasks.append({
            "name": task, "metric": summary.tasks[task]["metric"],
            "higher_is_better": summary.tasks[task]["higher_is_better"],
            **({"data": summary.tasks[task]["data"]} if "data" in summary.tasks[task] else {}),
            "best": summary.task_results[task].test.best if summary.task_results[task].test
            else None,
            "tied_with_best": summary.task_results[task].tied,
            "inconclusive": (summary.task_results[task].test.inconclusive
                             if summary.task_results[task].test else []),
            "tolerance": summary.tasks[task].get("tolerance", 0.01),
            "chance": summary.tasks[task].get("chance"),
            "target": _target_json(summary, task),
            "lr_grid": grid,
            "results": [{k: row[k] for k in (
                "optimizer", "lr", "weight_decay", "lrs_tried", "lr_on_edge",
                "lr_sensitivity_decades", "mean", "ci95", "ci95_low", "ci95_high",
                "ci95_clipped", "per_seed", "rank_on_task", "tied_with_best", "verdict",
                "failure_rate", "below_chance", "lr_by_family")} | {"lrs": [
                    t.lr for t in summary.pairs[(task, row["optimizer"])].search.lr_trials]}
                for row in pairs],
        })
    return _clean({
        "preset": c.preset, "provisional": c.provisional, "optimkit": c.version,
        "device": c.device,
        "seeds": {"tuning": list(rules.tuning_seeds), "test": list(rules.test_seeds)},
        "stability": summary.stability_figure,
        "stability_over_seeds": summary.stability.get("seeds"),
        "stability_over_tasks": summary.stability.get("tasks"),
        "score_rule": SCORE_RULE,
        "statistics": statistics_json(summary),
        "optimizers": [{k: row[k] for k in ("name", "tier", "tier_share", "stars", "mean_rank",
                                            "tied_with_best_on", "x_fused_adam", "cost_mode",
                                            "step_seconds", "state_bytes_per_param",
                                            "profile_score", "profile_score_steps",
                                            "time_to_target")}
                       | ({"self_tuning": row["self_tuning"]} if row["self_tuning"] else {})
                       for row in optimizer_rows(summary)],
        "self_tuning_track": _track_json(summary),
        "what_to_pick": what_to_pick(summary),
        "time_to_target": PROFILE_RULE,
        "notes": notes_checks(summary),
        "tasks": tasks,
    })


SELF_TUNING_RULE = (
    "Self-tuning track (AlgoPerf's): each optimizer whose registry entry is marked self_tuning "
    "(lr-free or schedule-free) also runs at its own defaults, with no tuning and no external "
    "lr schedule, on every test seed of every ranked task; AdamW runs at its defaults (its "
    "default lr, the run's schedule) as the baseline. Per task: vs_tuned_best is the per-task "
    "tie rule against the best tuned optimizer with it added to the field; rank_in_field its "
    "mean rank among the tuned optimizers plus itself; vs_adamw_default: better / worse when a "
    "one-sided paired t-test (alpha 0.05) says so, tied when the 95 % interval of the paired "
    "difference lies within the task's tolerance, else inconclusive. Across tasks: its mean "
    "rank and Nemenyi tier with it added to the tuned field (same blocks, not bagged).")


def _track_json(summary: Summary) -> dict[str, Any] | None:
    track = summary.self_tuning or {}
    if not track:
        return None
    return {"rule": SELF_TUNING_RULE, "baseline": track["baseline"],
            "baseline_results": track["optimizers"].get(track["baseline"]),
            "optimizers": sorted(o for o in track["optimizers"] if o != track["baseline"])}


PROFILE_RULE = (
    "Time to target: per task, the target is the validation value the tuned AdamW reaches at "
    "the end of its budget (median over its test seeds), or the task's declared target where "
    "AdamW is not in the run (see each task's target.source). Per test seed, the steps and "
    "training seconds at the first validation point (one per epoch) that reaches it; null: "
    "never reached. profile_score: AlgoPerf's performance-profile score B = integral of "
    f"rho(tau) over tau in [1, {profiles.TAU_MAX:g}] / {profiles.TAU_MAX - 1:g}, where rho(tau) "
    "is the share of the ranked tasks on which the optimizer's median seconds to target are "
    "at most tau times the fastest optimizer's; a task never reached adds 0. "
    "profile_score_steps: the same on steps.")


def _target_json(summary: Summary, task: str) -> dict[str, Any]:
    value, source = summary.targets.get(task, (float("nan"), "declared"))
    return {"value": value, "source": source,
            "direction": ">=" if summary.tasks[task]["higher_is_better"] else "<="}


def protocol(summary: Summary) -> dict[str, Any]:
    c = summary.config
    rules = c.rules()
    return {
        "version": c.version, "device": c.device, "preset": c.preset,
        "optimizers": list(c.optimizers), "tasks": list(c.tasks),
        "tuning_seeds": list(rules.tuning_seeds), "test_seeds": list(rules.test_seeds),
        "initial_lr_grid": [rules.lr(i) for i in rules.initial()],
        "lrs_per_decade": rules.per_decade, "lr_budget": rules.budget,
        "extension_step": rules.extend, "weight_decays": list(rules.weight_decays),
        "schedule": rules.schedule,
        "search": "lr: the initial grid on every tuning seed (validation split), weight decay 0;"
                  " while the best mean lies on an edge the grid extends by the extension step,"
                  " within the lr budget; then each weight decay at the best lr; then the chosen"
                  " (lr, weight decay) on every test seed, scored on the test split",
    }


def results_json(summary: Summary) -> dict[str, Any]:
    """Everything: the protocol, the statistics, every pair with its search and its seeds."""
    pairs = []
    for row in pair_rows(summary):
        pair = summary.pairs[(row["task"], row["optimizer"])]
        pairs.append({**row, "lr_trials": [
            {"lr": t.lr, "values": t.values, "mean": t.mean, "diverged": t.diverged}
            for t in pair.search.lr_trials], "weight_decay_trials": [
            {"weight_decay": t.weight_decay, "values": t.values, "mean": t.mean,
             "diverged": t.diverged} for t in pair.search.wd_trials],
            "test_seeds": [r["seed"] for r in pair.finals]})
    return _clean({
        "protocol": protocol(summary),
        "statistics": statistics_json(summary),
        "stability": summary.stability,
        "score_rule": SCORE_RULE,
        "tasks": summary.tasks,
        "optimizers": optimizer_rows(summary),
        "results": pairs,
        "cost": {o: {"x_fused_adam": r["extra"].get("x_fused_adam"),
                     "mode": r["extra"].get("mode"),
                     "x_fused_adam_by_mode": r["extra"].get("x_fused_adam_by_mode"),
                     "step_seconds": r["step_time"],
                     "fused_adam_step_seconds": r["extra"].get("fused_adam_step_time"),
                     "state_bytes_per_param": r["state_bytes_per_param"],
                     "state_layouts": r["extra"].get("state_layouts"),
                     "params": r["n_params"], "error": r["error"]}
                 for o, r in summary.costs.items()},
    })


# ------------------------------------------------------------------ text blocks
def _grid_text(summary: Summary) -> str:
    rules = summary.config.rules()
    first, last = rules.lr(rules.initial()[0]), rules.lr(rules.initial()[-1])
    wds = ", ".join(f"{w:g}" for w in rules.weight_decays) or "none"
    return (f"lr: {rules.per_decade} points per decade from {first:g} to {last:g}, extended "
            f"{rules.extend} points at a time past any edge that holds the best or lies within the "
            f"task's tolerance of it, at most "
            f"{rules.budget} lrs; weight decay 0 and {wds} at the best lr; "
            f"{'linear warm-up + cosine decay' if rules.schedule == 'cosine' else 'constant lr'}"
            f"; tuning on seeds {', '.join(map(str, rules.tuning_seeds))} (validation split), "
            f"scores on test seeds {rules.test_seeds[0]}..{rules.test_seeds[-1]} "
            f"({len(rules.test_seeds)} seeds, test split)")


def statistics_text(summary: Summary) -> list[str]:
    rank = summary.rank
    if rank is None:
        return ["Too few complete optimizers to rank."]
    tiers = max(rank.tiers.values())
    p = "p < 1e-12" if rank.p < 1e-12 else f"p = {rank.p:.2g}"
    verdict = (f"{p}, so some optimizers differ; Nemenyi's test groups them in {tiers} tier(s)"
               if rank.p < ranking.ALPHA else f"{p}: no significant difference, so one tier")
    lines = [
        f"Friedman test over {rank.blocks} blocks (task x test seed), {len(rank.names)} "
        f"optimizers: {verdict}. Nemenyi critical difference of mean ranks: "
        f"{rank.cd:.2f} (alpha {ranking.ALPHA}). Each tier is the median over {ranking.BAG} "
        f"bootstrap resamples of the test seeds (bagging); close votes: "
        + (", ".join(f"{n} {rank.tier_share[n]:.0%} in tier {rank.tiers[n]}"
                     for n in sorted(rank.names, key=lambda n: rank.mean_rank[n])
                     if rank.tier_share.get(n, 1.0) < ranking.CLOSE_VOTE) or "none") + ".",
        f"Stability: {fmt(summary.stability.get('seeds'), 2)} of the optimizers keep their tier "
        f"under a bootstrap over the test seeds, {fmt(summary.stability.get('tasks'), 2)} under "
        f"a bootstrap over the tasks ({ranking.BOOTSTRAP} replicates each).",
    ]
    if summary.warned.get("cells"):
        lines.append(warnings_text(summary))
    if summary.edges:
        lines.append("Warning: tuned lr on an edge of the lrs tried (the budget ran out): "
                     + ", ".join(f"{o} on {t}" for t, o in summary.edges) + ".")
    return lines


def warnings_text(summary: Summary) -> str:
    """One line counting the cells that raised Python warnings while training."""
    w = summary.warned
    return (f"{w['cells']} cells raised {w['warnings']} Python warning(s) while training "
            f"(counted, not printed; per cell in runs.csv), e.g. "
            + "; ".join(w["examples"]) + ".")


def end_summary(summary: Summary, out: Path | str) -> str:
    """The lines printed at the end of a bench: top tier, stability, where the report is."""
    lines = []
    if summary.rank is not None:
        top = [o for o in summary.ranked if summary.tier(o) == 1]
        lines.append(f"top tier ({len(top)} of {len(summary.ranked)}, tied with each other): "
                     + ", ".join(top))
        lines.append(f"stability: {fmt(summary.stability_figure, 2)} (bootstrap over seeds "
                     f"{fmt(summary.stability.get('seeds'), 2)}, over tasks "
                     f"{fmt(summary.stability.get('tasks'), 2)})")
    if summary.warned.get("cells"):
        lines.append(f"warnings: {summary.warned['cells']} cells raised "
                     f"{summary.warned['warnings']} (counted in runs.csv, not printed)")
    if summary.config.provisional:
        lines.append(PROVISIONAL)
    lines.append(f"report: {Path(out) / 'report.html'}")
    return "\n".join(lines)


# ------------------------------------------------------------------ leaderboard.md
def _paper(name: str) -> str:
    try:
        entry = registry.get(name)
    except ValueError:
        return ""
    if not getattr(entry, "paper", None):
        return str(getattr(entry, "year", "") or "")
    return f"[{entry.year or 'paper'}]({entry.paper})"


def _description(name: str) -> str:
    try:
        entry = registry.get(name)
    except ValueError:
        return ""
    text = getattr(entry, "description", None)
    if text is None:  # the registry before its catalogue split kept it on the reference
        text = getattr(getattr(entry, "reference", None), "description", "")
    return text or ""


def _num(value: Any) -> str:
    """A stored number as ``:g`` text; anything else (a hand-edited database) as its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


def md(value: Any) -> str:
    """Stored text made inert in markdown: one line, no table-breaking ``|``, no raw HTML."""
    text = " ".join(str(value).splitlines())
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|"))


def md_line(value: str) -> str:
    """A line of the report's own markdown (its ``**`` kept), with ``<``, ``>`` and ``|``
    made inert (task and optimizer names in it are stored text)."""
    return " ".join(value.splitlines()).replace("<", "&lt;").replace(">", "&gt;").replace(
        "|", "\\|")


def self_tuning_md(summary: Summary) -> list[str]:
    """The self-tuning track's section of leaderboard.md (none without the track)."""
    track = summary.self_tuning or {}
    if not track:
        return []
    lines = ["## Self-tuning track (untuned, at the optimizers' defaults)", "",
             md(SELF_TUNING_RULE), ""]
    tasks = summary.real_tasks
    head = ["", "schedule", "mean rank in the tuned field (tier)", "vs AdamW at default lr",
            *[md(t) for t in tasks]]
    body = []
    for name, result in track["optimizers"].items():
        label = f"**{md(name)}**" + (" (baseline)" if name == track["baseline"] else "")
        rank = (f"{result['mean_rank_in_field']:.2f} of {result['field_size']} "
                f"(tier {result['tier_in_field']})" if "mean_rank_in_field" in result else "–")
        versus = ", ".join(f"{n} {v}" for v, n in (result.get("vs_adamw_default") or {}).items())
        cells = []
        for task in tasks:
            entry = result["tasks"].get(task)
            if entry is None:
                cells.append("–")
                continue
            text = f"{mean_pm(entry['mean'], entry['ci95'])} ({entry['vs_tuned_best']}"
            cells.append(text + (f"; vs AdamW default {entry['vs_adamw_default']})"
                                 if "vs_adamw_default" in entry else ")"))
        body.append([label, md(result.get("schedule", "")), rank, versus or "–", *cells])
    return [*lines, *_md_table(head, "|:--|:--|--:|:--|" + "--:|" * len(tasks), body), ""]


def _md_table(head: list[str], align: str, body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", align,
            *("| " + " | ".join(row) + " |" for row in body)]


def _leader_cells(row: dict[str, Any], n_tasks: int, emoji: bool) -> list[str]:
    share = row.get("tier_share")
    close = share is not None and share < ranking.CLOSE_VOTE
    tier = str(row["tier"] or "–") + (f" ({share:.0%})" if close else "")
    return [stars_text(row["stars"], emoji), tier, fmt(row["mean_rank"], 2),
            f"{len(row['tied_with_best_on'])}/{n_tasks}",
            fmt(row["profile_score"], 2), fmt(row["lr_sensitivity_decades"], 2),
            fmt(row["failure_rate"], 2), fmt(row["x_fused_adam"], 2)
            + (f" ({row['cost_mode']})" if row.get("cost_mode") else ""),
            fmt(row["state_bytes_per_param"], 1)]


LEADER_HEAD = ["Score", "tier", "mean rank", "tied with best", "time-to-target profile B",
               "lr sensitivity (decades)", "failed", "× fused Adam (fastest mode)",
               "state B/param"]
TASK_HEAD = ["", "mean ± 95 % CI", "vs the best", "rank", "lr", "weight decay", "lrs tried",
             "lr sensitivity", "to target (median)", "failed"]


def _task_cells(row: dict[str, Any], pair) -> list[str]:
    sens = fmt(row["lr_sensitivity_decades"], 2)
    if row["lr_sensitivity_lower_bound"] and sens != "–":
        sens = "≥ " + sens
    lr = fmt(row["lr"], 3) + (" (edge!)" if row["lr_on_edge"] else "")
    if row.get("lr_by_family"):
        lr += f" ({lr_families(row['lr_by_family'])})"
    failed = fmt(row["failure_rate"], 2)
    if row["below_chance"]:
        failed += f" ({row['below_chance']} below chance or untrained)"
    return [_interval_text(row), VERDICT_TEXT.get(row["verdict"], ""),
            fmt(row["rank_on_task"], 2), lr,
            fmt(row["weight_decay"], 3), str(row["lrs_tried"]), sens, _reach(pair), failed]


VERDICT_TEXT = {"best": "best", "tied": "tied", "inconclusive": "inconclusive",
                "worse": "", "failed": "failed", None: ""}


def _interval_text(row: dict[str, Any]) -> str:
    """``mean ± half``, or, when the interval was clipped to the metric's range, the mean and
    the clipped interval, marked "clipped" (the task's note says why)."""
    if row["error"] or not row.get("ci95_clipped"):
        return mean_pm(row["mean"], row["ci95"], row["error"])
    return f"{fmt(row['mean'])} [{fmt(row['ci95_low'])}, {fmt(row['ci95_high'])}] clipped"


def _reach(pair) -> str:
    if pair is None or not pair.finals:
        return "–"
    steps = profiles.median_time(pair.target_steps)
    reached = sum(not math.isinf(v) for v in pair.target_steps)
    if math.isinf(steps):
        return f"not reached ({reached}/{len(pair.target_steps)} seeds)"
    seconds = profiles.median_time(pair.target_seconds)
    return f"{steps:.0f} steps, {fmt(seconds, 2)} s ({reached}/{len(pair.target_steps)})"


def _task_note(summary: Summary, task: str) -> str:
    """The rules behind a task table's columns, in one paragraph."""
    meta = summary.tasks[task]
    tol = _num(meta.get("tolerance", 0.01))
    value, source = summary.targets.get(task, (meta["target"], "declared"))
    where = ("the tuned AdamW's final validation value (median over its test seeds)"
             if source == "adamw" else "the task's declared target (AdamW is not in this run)")
    chance = meta.get("chance")
    return (f"Tolerance {tol} (the gap that matters): vs the best, 'tied' means the 95 % "
            f"interval of the paired difference from the best lies within ±{tol}; "
            "'inconclusive': not significantly worse, but the interval is too wide to exclude "
            f"a gap of {tol}; 'failed': a test seed diverged, raised"
            + (f" or ended worse than chance ({_num(chance)})" if chance is not None else "")
            + "; blank: significantly worse. Intervals are clipped to the metric's range "
            f"({_bounds_text(meta.get('bounds'))}) and marked when they are. Target "
            f"{'≥' if meta['higher_is_better'] else '≤'} {fmt(value)} (validation): {where}; "
            "to target: median over the test seeds of the steps and training seconds at the "
            "first epoch's end that reaches it, and how many seeds reach it.")


def _bounds_text(bounds) -> str:
    if not bounds or all(b is None for b in bounds):
        return "unbounded"
    low, high = bounds
    return f"{'-inf' if low is None else _num(low)} to {'inf' if high is None else _num(high)}"


def leaderboard(summary: Summary) -> str:
    """``leaderboard.md``: the notes' table with the Score filled, and the per-task results."""
    c = summary.config
    real = summary.real_tasks
    lines = ["# optimkit bench: leaderboard", ""]
    if c.provisional:
        lines += [f"**{PROVISIONAL}**", ""]
    lines += ["## What to pick", "", "Derived from the measurements below (ties by the per-task "
              "rule, speed by the time-to-target profile, untuned by the self-tuning track):",
              "", *[md_line(line) for line in pick_text(what_to_pick(summary))], ""]
    lines += [
        f"optimkit {md(c.version)}, preset {md(c.preset)}, device {md(c.device)}; "
        f"{len(c.optimizers)} optimizers, {len(real)} ranked tasks "
        f"({', '.join(md(t) for t in real)}). The same search for every "
        f"optimizer: {_grid_text(summary)}.", "",
        f"**Score**: {SCORE_RULE}", "",
        *[f"{line}" for line in statistics_text(summary)], "",
        "## Leaderboard (measured)", "",
        "Sorted by tier, then mean rank (the order inside a tier is not significant). "
        "lr sensitivity: median over the tasks of the width, in decades, of the lr range whose "
        "validation result stays within the task's tolerance of the best lr's (interpolated "
        "in log-lr between the grid's lrs). failed: the share of test seeds that diverged, "
        f"raised or ended worse than chance. × fused Adam: {COST_RULE}", "",
    ]
    body = [[f"**{md(row['name'])}**", _description(row["name"]), _paper(row["name"]),
             *_leader_cells(row, len(real), True)] for row in optimizer_rows(summary)]
    lines += _md_table(["", "Reproduces", "Paper", *LEADER_HEAD],
                       "|:--|:--|:--|:--|" + "--:|" * (len(LEADER_HEAD) - 1), body)
    lines += ["", f"Time-to-target profile B: {md(PROFILE_RULE)}", ""]
    lines += self_tuning_md(summary)
    lines += ["## The notes' text (not measured)", "",
              "What the fast.ai-course notes say, quoted, apart from the measurements above; "
              "the last column says where a measurement agrees with, or contradicts, a claim "
              "the notes make (their stars, \"worse than ...\").", ""]
    checks = notes_checks(summary)
    lines += _md_table(["", "the notes' description", "the notes' Fast.ai 2", "the notes' Score",
                        "checked against the measurements"], "|:--|:--|:--|:--|:--|",
                       [[f"**{md(c['notes_name'])}**", md(c["notes_description"]),
                         md(c["notes_fastai2"]), md(c["notes_score"]),
                         md("; ".join(c["checks"]))] for c in checks])
    lines += ["", "## The notes' table, Score filled", "",
              fill_notes(NOTES_TABLE.read_text(encoding="utf-8"), summary).rstrip("\n")]
    for task in summary.tasks:
        meta = summary.tasks[task]
        kind = "illustrative, not ranked" if meta["illustrative"] else "ranked"
        lines += ["", f"## {md(task)}: {md(meta['metric'])} ({kind})", "",
                  md(meta["description"]) + ".", md(_task_note(summary, task)), ""]
        body = [[f"**{md(row['optimizer'])}**", *_task_cells(row, summary.pairs[(task,
                                                                          row["optimizer"])])]
                for row in pair_rows(summary, [task])]
        lines += _md_table(TASK_HEAD, "|:--|" + "--:|" * (len(TASK_HEAD) - 1), body)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the notes' table
def fill_notes(text: str, summary: Summary) -> str:
    """Replace the Score cell of every row of the table whose first cell is ``**Name**``.

    A row whose name is a benchmarked optimizer gets its stars and tier; any other row's score
    is cleared to "–" (a star without a measurement behind it is not kept). The rule is added
    under the table; under the quick preset every score says "provisional".
    """
    names = by_key(list(summary.config.optimizers))
    lines, score_col, in_table, done = text.splitlines(), None, False, False
    tiers = max(summary.rank.tiers.values()) if summary.rank and summary.rank.tiers else 0
    out = []
    for line in lines:
        cells = line.split("|")
        if line.lstrip().startswith("|") and any(c.strip() == "Score" for c in cells):
            score_col = [c.strip() for c in cells].index("Score")
            in_table = True
        elif in_table and not line.lstrip().startswith("|"):
            in_table = False
            if not done:
                out += ["", f"Score measured by `optimkit bench` (preset "
                        f"{md(summary.config.preset)}, optimkit {md(summary.config.version)}): "
                        f"{SCORE_RULE}"
                        + (f" {PROVISIONAL}" if summary.config.provisional else "")]
                done = True
        elif in_table and score_col is not None and len(cells) > score_col:
            match = re.match(r"\s*\*\*(.+?)\*\*", cells[1])
            if match:
                name = names.get(key(match.group(1)))
                cells[score_col] = f" {_score_text(summary, name, tiers)} "
                line = "|".join(cells)
        out.append(line)
    if score_col is None:
        raise ValueError("notes: no markdown table with a 'Score' column found")
    return "\n".join(out) + "\n"


def _score_text(summary: Summary, name: str | None, tiers: int) -> str:
    if name is None or summary.tier(name) is None:
        return "–"
    mark = ", provisional" if summary.config.provisional else ""
    return f"{stars_text(summary.stars(name))} (tier {summary.tier(name)} of {tiers}{mark})"


# ------------------------------------------------------------------ the notes vs the measurements
_CLAIM = re.compile(r"\b(worse|better|faster|slower)\s+than\s+([A-Za-z][\w-]*)", re.I)


def notes_checks(summary: Summary, text: str | None = None) -> list[dict[str, Any]]:
    """The notes' own text per benchmarked row, next to what was measured, with a verdict
    where the notes make a checkable claim: their stars (against the measured tier's stars)
    and "worse/better than X" (against the measured tiers and mean ranks of both)."""
    names = by_key(list(summary.config.optimizers))
    out = []
    for row in note_rows(text):
        name = names.get(key(row["name"]))
        if name is None:
            continue
        stars_noted = row.get("Score", "").count(STAR)
        checks = []
        measured = summary.stars(name)
        if stars_noted and measured is not None:
            same = stars_noted == measured
            checks.append(f"the notes give {stars_noted} star(s), measured {measured} (tier "
                          f"{summary.tier(name)}): {'agrees' if same else 'contradicts'}")
        for match in _CLAIM.finditer(row.get("Description", "")):
            word, other = match.group(1).lower(), names.get(key(match.group(2)))
            if other is None or summary.tier(other) is None or summary.tier(name) is None:
                continue
            if word in ("faster", "slower"):
                continue  # speed claims: see the cost and time-to-target columns
            ta, tb = summary.tier(name), summary.tier(other)
            ra, rb = summary.mean_rank(name), summary.mean_rank(other)
            claim_worse = word == "worse"
            if ta == tb:
                verdict = "not supported: the same tier (no significant difference)"
            elif (ta > tb) == claim_worse:
                verdict = "agrees"
            else:
                verdict = "contradicts"
            checks.append(f"\"{match.group(0)}\": measured tier {ta} (mean rank {ra:.2f}) vs "
                          f"{other} tier {tb} ({rb:.2f}): {verdict}")
        out.append({"name": name, "notes_name": row["name"],
                    "notes_description": row.get("Description", ""),
                    "notes_fastai2": row.get("Fast.ai 2", ""),
                    "notes_score": row.get("Score", ""), "checks": checks})
    return out


# ------------------------------------------------------------------ report.html
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;
max-width:1320px;color:#1d232a;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
h3{margin-top:1.6rem}
table{border-collapse:collapse;font-size:.84rem;margin:.6rem 0}
th,td{border:1px solid #d8dde3;padding:.28rem .5rem;text-align:right;white-space:nowrap}
th{background:#f3f5f8;white-space:normal;max-width:9rem}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}.stars{color:#c98a00;letter-spacing:1px}
tr.tier1 td:first-child{border-left:4px solid #2b6cb0}
.note{color:#5a6470;font-size:.9rem;max-width:1100px}.warn{color:#a4330d}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e3e6ea}
figcaption{font-size:.85rem;color:#5a6470}
code{background:#f3f5f8;padding:0 .25rem;border-radius:3px}#tasks td,#notes td{text-align:left;
white-space:normal}
"""


class Markup(str):
    """HTML built here, from escaped parts: the one kind of cell :func:`_table` does not
    escape. Every other cell, and every id and class, is escaped, whatever its origin."""


def _cell(value: Any) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value))


def _table(head: list[str], body: list[list[Any]], table_id: str = "",
           row_class: list[str] | None = None) -> str:
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    out = [f"<table{ident}><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for i, row in enumerate(body):
        cls = f' class="{html.escape(row_class[i])}"' if row_class and row_class[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_cell(cell)}</td>" for cell in row) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def page(summary: Summary, pictures: list[Path]) -> str:
    """``report.html``: the self-contained report page."""
    c = summary.config
    real = summary.real_tasks
    rows = optimizer_rows(summary)
    body, classes = [], []
    for row in rows:
        cells = _leader_cells(row, len(real), False)
        cells[0] = (Markup(f'<span class="stars" title="{html.escape(str(row["stars"]))} of 3 '
                           f'stars">{html.escape(cells[0])}</span>')
                    if row["stars"] is not None else "–")
        body.append([Markup(f"<b>{html.escape(row['name'])}</b>"), *cells])
        classes.append("tier1" if row["tier"] == 1 else "")
    by_name = {p.name: p for p in pictures}
    sections = []
    for task, meta in summary.tasks.items():
        rows_t = pair_rows(summary, [task])
        table = _table(
            ["optimizer", *TASK_HEAD[1:]],
            [[Markup(f"<b>{html.escape(r['optimizer'])}</b>"),
              *_task_cells(r, summary.pairs[(task, r["optimizer"])])]
             for r in rows_t], f"task-{task}",
            ["tier1" if r["tied_with_best"] else "" for r in rows_t])
        figures = "".join(_figure(by_name[n]) for n in (f"task-{task}.png", f"curves-{task}.png",
                                                         f"trajectories-{task}.png")
                          if n in by_name)
        kind = "illustrative, not ranked" if meta["illustrative"] else "ranked"
        sections.append(f"<h3>{html.escape(task)}: {html.escape(str(meta['metric']))} ({kind})"
                        f'</h3><p class="note">{html.escape(str(meta["description"]))}. '
                        f"{html.escape(_task_note(summary, task))} Rows marked at the left are "
                        f"tied with the best.</p>{table}{figures}")
    shown = {f"task-{t}.png" for t in summary.tasks} | {f"curves-{t}.png" for t in summary.tasks}
    shown |= {f"trajectories-{t}.png" for t in summary.tasks}
    overview = "".join(_figure(p) for p in pictures if p.name not in shown)
    stats = "".join(f'<p class="note{" warn" if line.startswith("Warning") else ""}">'
                    f"{html.escape(line)}</p>" for line in statistics_text(summary))
    provisional = f'<p class="warn"><b>{html.escape(PROVISIONAL)}</b></p>' if c.provisional else ""
    pick = "".join(f"<li>{html.escape(line.lstrip('- ').replace('**', '').strip('*'))}</li>"
                   for line in pick_text(what_to_pick(summary)))
    # Text stars, as in the leaderboard: not every desktop has a colour-emoji font.
    notes_table = _table(
        ["optimizer", "the notes' description", "the notes' Fast.ai 2", "the notes' Score",
         "checked against the measurements"],
        [[n["notes_name"], n["notes_description"], n["notes_fastai2"],
          n["notes_score"].replace(STAR, "★"), "; ".join(n["checks"])]
         for n in notes_checks(summary)], "notes")
    tasks_body = [[t, m["description"], m["metric"],  # escaped by _table, like every cell
                   ("≥ " if m["higher_is_better"] else "≤ ") + _num(m["target"]),
                   m["epochs"], "illustrative" if m["illustrative"] else "ranked"]
                  for t, m in summary.tasks.items()]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>optimkit bench report</title><style>{_CSS}</style></head>
<body>
<h1>optimkit bench</h1>
<p class="note">optimkit {html.escape(c.version)} · preset {html.escape(c.preset)} ·
device {html.escape(c.device)} · {len(c.optimizers)} optimizers · {len(real)} ranked tasks</p>
{provisional}
<h2>What to pick</h2>
<ul class="note">{pick}</ul>
<h2>Leaderboard</h2>
{_table(["optimizer", *LEADER_HEAD], body, "leaderboard", classes)}
<p class="note"><b>Score.</b> {html.escape(SCORE_RULE)}</p>
{stats}
<p class="note"><b>Search, the same for every optimizer.</b> {html.escape(_grid_text(summary))}.
A run diverges when its loss is NaN/inf or exceeds 1000× its first value; a diverged or failed
test seed scores the worst final value of its task, and so does one that ends worse than the
task's chance level: both count as failed. <b>Per task</b>: mean ± 95 % Student-t interval over
the test seeds, clipped to the metric's range; <i>tied</i>: the 95 % interval of the paired
difference from the best lies within the task's tolerance; <i>inconclusive</i>: not
significantly worse (one-sided paired t-test, Holm-corrected) but not shown to be within the
tolerance either. × fused Adam: {html.escape(COST_RULE)}</p>
{overview}
<p class="note"><b>Time-to-target profile B.</b> {html.escape(PROFILE_RULE)}</p>
<h2>The notes' text (not measured)</h2>
<p class="note">What the fast.ai-course notes say, quoted, apart from the measurements; the last
column says where a measurement agrees with, or contradicts, a claim the notes make.</p>
{notes_table}
<h2>Tasks</h2>
{_table(["task", "description", "metric", "target", "epochs", "kind"], tasks_body, "tasks")}
{"".join(sections)}
</body></html>
"""


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(path.stem.replace("-", " "))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


# ------------------------------------------------------------------ optimkit compare
def compare(first: Summary, second: Summary, name_a: str = "A",
            name_b: str = "B") -> tuple[str, dict[str, Any]]:
    """Which tiers changed between two runs, and why (markdown and JSON)."""
    names = [o for o in first.ranked if o in set(second.ranked)]
    lines = [f"# optimkit compare: {name_a} vs {name_b}", ""]
    differs = [k for k in ("preset", "tasks", "optimizers", "lr_range", "budget",
                           "weight_decays", "schedule", "version")
               if getattr(first.config, k) != getattr(second.config, k)]
    if differs:
        lines += [f"Note: the runs differ in {', '.join(differs)}, not only in their seeds.", ""]
    seeds_a, seeds_b = first.config.rules(), second.config.rules()
    lines += [f"Seeds: {name_a} tunes on {list(seeds_a.tuning_seeds)} and tests on "
              f"{seeds_a.test_seeds[0]}..{seeds_a.test_seeds[-1]}; {name_b} tunes on "
              f"{list(seeds_b.tuning_seeds)} and tests on {seeds_b.test_seeds[0]}.."
              f"{seeds_b.test_seeds[-1]}.", ""]
    same = [o for o in names if first.tier(o) == second.tier(o)]
    share = len(same) / len(names) if names else float("nan")
    lines += [f"**{len(same)} of {len(names)} optimizers ({share:.0%}) keep their tier.** "
              f"Tiers: {max(first.rank.tiers.values()) if first.rank else 0} in {name_a}, "
              f"{max(second.rank.tiers.values()) if second.rank else 0} in {name_b}; critical "
              f"difference {fmt(first.rank.cd if first.rank else None, 2)} and "
              f"{fmt(second.rank.cd if second.rank else None, 2)}.", ""]
    body, changes = [], []
    for o in names:
        ta, tb = first.tier(o), second.tier(o)
        changed = ta != tb
        body.append([f"**{o}**", str(ta), str(tb), fmt(first.mean_rank(o), 2),
                     fmt(second.mean_rank(o), 2), "**changed**" if changed else ""])
        if changed:
            changes.append(_explain(first, second, o, name_a, name_b))
    lines += _md_table(["optimizer", f"tier {name_a}", f"tier {name_b}", f"mean rank {name_a}",
                        f"mean rank {name_b}", ""], "|:--|--:|--:|--:|--:|:--|", body)
    lines += ["", "## Why each change", ""]
    lines += [f"- {c}" for c in changes] or ["- none"]
    lines += ["", "## Tied with the best, per task", ""]
    task_data = {}
    for task in [t for t in first.real_tasks if t in second.real_tasks]:
        a, b = set(first.task_results[task].tied), set(second.task_results[task].tied)
        lr_moves = [o for o in names if (task, o) in first.pairs and (task, o) in second.pairs
                    and first.pairs[(task, o)].lr != second.pairs[(task, o)].lr]
        lines.append(f"- {task}: {len(a)} tied in {name_a}, {len(b)} in {name_b}; only in "
                     f"{name_a}: {', '.join(sorted(a - b)) or 'none'}; only in {name_b}: "
                     f"{', '.join(sorted(b - a)) or 'none'}; tuned lr moved for "
                     f"{len(lr_moves)} of {len(names)}.")
        task_data[task] = {"tied_a": sorted(a), "tied_b": sorted(b), "lr_moved": lr_moves}
    data = {"a": str(name_a), "b": str(name_b), "same_tier": share, "optimizers": [
        {"name": o, "tier_a": first.tier(o), "tier_b": second.tier(o),
         "mean_rank_a": first.mean_rank(o), "mean_rank_b": second.mean_rank(o)} for o in names],
        "changes": changes, "tasks": task_data, "differs_in": differs}
    return "\n".join(lines) + "\n", _clean(data)


def _explain(first: Summary, second: Summary, o: str, name_a: str, name_b: str) -> str:
    """Why ``o`` changed tier: the bagging votes in each run and its largest rank moves."""
    def where(s: Summary) -> str:
        r = s.rank
        return (f"tier {s.tier(o)} in {r.tier_share[o]:.0%} of the replicates (a better tier in "
                f"{r.tier_above[o]:.0%}, a worse one in {r.tier_below[o]:.0%}), mean rank "
                f"{s.mean_rank(o):.2f}")

    moves = []
    for task in first.real_tasks:
        a, b = first.pairs.get((task, o)), second.pairs.get((task, o))
        if a is not None and b is not None and not math.isnan(a.rank) and not math.isnan(b.rank):
            moves.append((abs(a.rank - b.rank), task, a.rank, b.rank))
    moves.sort(reverse=True)
    detail = "; ".join(f"{t}: rank {ra:.1f} -> {rb:.1f}" for _, t, ra, rb in moves[:2])
    return (f"**{o}**: {name_a} {where(first)}; {name_b} {where(second)}. Largest moves: "
            f"{detail or 'none'}.")


__all__ = ["build", "compare", "end_summary", "fill_notes", "leaderboard", "leaderboard_json",
           "load", "lr_families", "md_line", "notes_checks", "optimizer_rows", "page",
           "pair_rows", "results_json", "self_tuning_md", "write"]
