"""Which LR-finder rule lands closest to the lr that ``optimkit bench``'s tuning picks?

For every (task, optimizer) of a finished bench run, the LR range test (``lr_find``, at the
``optimkit lr-find`` settings) runs on the same task, once per seed, and each of its rules
(``result.suggestions``: steepest, valley, minimum/10, ...) is compared with the lr the bench
tuned on its validation split, in decades: ``|log10(suggestion / tuned)|``.

Per rule the table gives how often it is the closest of all rules (a tie shares the point),
how often it picks the tuned grid point (the grid lr nearest to it is the tuned one), and the
median and mean distance. The rule that is closest most often should be the library's default
(``optimkit.training.lr_finder.DEFAULT_RULE``); the script says whether it is.

The tuned lrs come from the bench's output folder: ``leaderboard.json`` or ``results.json``
(any list of records with ``task``, ``optimizer`` and the tuned ``lr``), else the SQLite
database (its ``final`` cells run at the tuned lr). Tasks that ``optimkit.bench.tasks`` does
not know, and the illustrative 2-D functions, are skipped and listed. When the tuned lr sits
at an end of the bench's lr grid, the true best may lie beyond it: a suggestion past that end
counts as distance 0 (censored; the table says how many cases were).

    optimkit bench --out /tmp/bench            # or any finished bench folder
    python benchmarks/lr_rules.py --bench-dir /tmp/bench
    # writes optimkit/training/lr_rules.md (the tables) and benchmarks/lr_rules.json (every case)

The tables ship with the package (``optimkit lr-find`` cites them as the evidence for its
default); every case stays here, too large to install.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TABLES = HERE.parent / "optimkit" / "training"  # where the package keeps the tables it cites
LR_KEYS = ("tuned_lr", "best_lr", "lr")
NESTED = ("tuned", "best", "hypers", "best_hypers", "tuned_hypers")


# ----------------------------------------------------------------------------- bench output
def _record_lr(record: dict) -> float | None:
    for key in LR_KEYS:
        if isinstance(record.get(key), (int, float)) and not isinstance(record[key], bool):
            return float(record[key])
    for key in NESTED:
        if isinstance(record.get(key), dict):
            lr = _record_lr(record[key])
            if lr is not None:
                return lr
    return None


def _walk(node, tuned: dict, grids: list) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("task"), str) and isinstance(node.get("optimizer"), str):
            lr = _record_lr(node)
            if lr is not None and lr > 0:
                tuned.setdefault((node["task"], node["optimizer"]), lr)
                return
        for key, value in node.items():
            if key == "lr_grid" and isinstance(value, list):
                grids.append([float(v) for v in value])
            else:
                _walk(value, tuned, grids)
    elif isinstance(node, list):
        for value in node:
            _walk(value, tuned, grids)


def _latest_version(conn: sqlite3.Connection):
    return conn.execute("SELECT version FROM cells ORDER BY rowid DESC LIMIT 1").fetchone()


def _from_sqlite(path: Path) -> tuple[dict, list[float] | None]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = _latest_version(conn)
        if version is None:
            return {}, None
        rows = conn.execute("SELECT DISTINCT task, optimizer, lr FROM cells WHERE role='final' "
                            "AND version=?", version).fetchall()
        grid = [lr for (lr,) in conn.execute(
            "SELECT DISTINCT lr FROM cells WHERE role='tune' AND version=? ORDER BY lr", version)]
    finally:
        conn.close()
    return {(task, opt): lr for task, opt, lr in rows}, grid or None


def load_metrics(bench_dir: Path) -> dict[tuple[str, str], dict[float, float | None]]:
    """The tuning runs' validation metric per (task, optimizer) and lr (the best over any
    other tuned hyper-parameter; None for a diverged run); empty when the database is absent
    or has another layout."""
    path = bench_dir / "results.sqlite"
    if not path.is_file():
        return {}
    out: dict = defaultdict(dict)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = _latest_version(conn)
            rows = [] if version is None else conn.execute(
                "SELECT task, optimizer, lr, final_metric, diverged FROM cells "
                "WHERE role='tune' AND version=?", version).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    for task, opt, lr, metric, diverged in rows:
        value = None if diverged or metric is None or not math.isfinite(metric) else metric
        out[(task, opt)].setdefault(lr, []).append(value)
    return dict(out)


def load_tuned(bench_dir: Path) -> tuple[dict[tuple[str, str], float], list[float] | None, str]:
    """The tuned lr per (task, optimizer), the lr grid when known, and the file read."""
    if not bench_dir.is_dir():
        raise SystemExit(f"--bench-dir {str(bench_dir)!r} is not a folder")
    grid = None
    for name in ("leaderboard.json", "results.json"):
        path = bench_dir / name
        if path.is_file():
            tuned, grids = {}, []
            _walk(json.loads(path.read_text(encoding="utf-8")), tuned, grids)
            if tuned:
                grid = grids[0] if grids else None
                if grid is None and (bench_dir / "results.sqlite").is_file():
                    grid = _from_sqlite(bench_dir / "results.sqlite")[1]
                return tuned, grid, name
    path = bench_dir / "results.sqlite"
    if path.is_file():
        tuned, grid = _from_sqlite(path)
        if tuned:
            return tuned, grid, path.name
    raise SystemExit(f"--bench-dir {str(bench_dir)!r}: no tuned lrs found in leaderboard.json, "
                     "results.json or results.sqlite (did the bench finish?)")


# ----------------------------------------------------------------------------- candidates
def _half_drop(lr: np.ndarray, loss: np.ndarray) -> float:
    """The lr where the curve has made half its fall, from its level a tenth of the way in
    down to its minimum (a rule on the descent region)."""
    start, lowest = len(loss) // 10, int(np.argmin(loss))
    if lowest <= start:
        return float(lr[lowest])
    target = loss[start] - 0.5 * (loss[start] - loss[lowest])
    return float(lr[start + int(np.argmax(loss[start:lowest + 1] <= target))])


# Rules tried here but not in the library; each reads the lrs and the centred losses.
CANDIDATES = {
    "half-drop": _half_drop,
}


# ----------------------------------------------------------------------------- distances
def distance(lr: float, tuned: float, grid: list[float] | None) -> tuple[float, bool]:
    """Decades from ``lr`` to ``tuned``; 0 past a grid end the tuned lr sits on (censored)."""
    d = math.log10(lr / tuned)
    if grid:
        if tuned >= max(grid) * (1 - 1e-9) and d > 0:
            return 0.0, True
        if tuned <= min(grid) * (1 + 1e-9) and d < 0:
            return 0.0, True
    return abs(d), False


def _nearest(lr: float, grid) -> float:
    return min(grid, key=lambda g: abs(math.log10(lr / g)))


def picks_tuned(lr: float, tuned: float, grid: list[float] | None) -> bool:
    """Whether the grid lr nearest to ``lr`` (in log) is the tuned one (half a decade without
    a grid)."""
    if not grid:
        return abs(math.log10(lr / tuned)) <= 0.5
    return math.isclose(_nearest(lr, grid), tuned, rel_tol=1e-6)


def regret(lr: float, metrics: dict[float, list], higher: bool) -> float | None:
    """How much worse the tuning run at the grid lr nearest to ``lr`` scored than the best
    one, as a share of the spread between the grid's best and worst (a diverged run: 1);
    None without at least two distinct finite scores."""
    sign = 1.0 if higher else -1.0
    per_lr = {g: max((sign * v for v in values if v is not None), default=None)
              for g, values in metrics.items()}
    finite = [v for v in per_lr.values() if v is not None]
    if len(finite) < 2 or max(finite) == min(finite):
        return None
    got = per_lr[_nearest(lr, per_lr)]
    return 1.0 if got is None else (max(finite) - got) / (max(finite) - min(finite))


def score(cases: list[dict], rules: list[str]) -> dict[str, dict]:
    """Per rule: closest of ``rules`` (ties shared), picks of the tuned grid point,
    median/mean decades and signed median, mean regret and poor picks (regret > 0.5)."""
    out = {r: {"closest": 0.0, "picks": 0, "n": 0, "dist": [], "signed": [], "regret": []}
           for r in rules}
    for case in cases:
        dists = {r: case["distance"][r] for r in rules}
        best = min(dists.values())
        winners = [r for r, d in dists.items() if d <= best + 1e-9]
        for r, d in dists.items():
            s = out[r]
            s["n"] += 1
            s["dist"].append(d)
            s["signed"].append(math.log10(case["suggestions"][r] / case["tuned"]))
            s["picks"] += case["picks"][r]
            if case["regret"].get(r) is not None:
                s["regret"].append(case["regret"][r])
            if r in winners:
                s["closest"] += 1 / len(winners)
    for s in out.values():
        dist, signed, regrets = s.pop("dist"), s.pop("signed"), s.pop("regret")
        s["median"] = statistics.median(dist) if dist else math.nan
        s["mean"] = statistics.fmean(dist) if dist else math.nan
        s["bias"] = statistics.median(signed) if signed else math.nan
        s["regret"] = statistics.fmean(regrets) if regrets else math.nan
        s["poor"] = sum(r > 0.5 for r in regrets)
        s["rated"] = len(regrets)
    return out


def winner(scores: dict[str, dict]) -> str:
    """Closest most often; ties go to the smaller median distance."""
    return max(scores, key=lambda r: (scores[r]["closest"], -scores[r]["median"]))


# ----------------------------------------------------------------------------- the report
def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(row) + " |" for row in rows)]


def rule_table(scores: dict[str, dict]) -> list[str]:
    head = ["rule", "closest (of these rules)", "picks the tuned grid lr",
            "median distance (decades)", "mean distance", "median signed (+ = above tuned)",
            "mean regret", "poor picks (regret > 0.5)"]
    rows = []
    for r in sorted(scores, key=lambda r: (-scores[r]["closest"], scores[r]["median"])):
        s = scores[r]
        rated = s["rated"] > 0
        rows.append([f"`{r}`", f"{s['closest']:.1f} / {s['n']}", f"{s['picks']} / {s['n']}",
                     f"{s['median']:.2f}", f"{s['mean']:.2f}", f"{s['bias']:+.2f}",
                     f"{s['regret']:.3f}" if rated else "n/a",
                     f"{s['poor']} / {s['rated']}" if rated else "n/a"])
    return _table(head, rows)


def report(cases: list[dict], meta: dict) -> tuple[str, str]:
    library, candidates = meta["rules"], meta["candidates"]
    scores = score(cases, library)
    best = winner(scores)
    everything = score(cases, library + candidates)
    lines = [
        "# LR-finder rules against the bench's tuned lr",
        "",
        # shipped in the wheel, which has no benchmarks/ folder: the script's URL
        "Made by the repository's benchmark script (its docstring says how), "
        "https://github.com/optimkit/optimkit/blob/main/benchmarks/lr_rules.py; "
        "do not edit by hand.",
        "",
        f"* bench output: `{meta['source']}`; lr grid: "
        + (", ".join(f"{g:g}" for g in meta["grid"]) if meta["grid"] else "unknown"),
        f"* tasks: {', '.join(meta['tasks'])}",
        f"* optimizers: {', '.join(meta['optimizers'])}",
        f"* sweeps: seeds {', '.join(map(str, meta['seeds']))}, {meta['steps']} steps from "
        f"{meta['start_lr']:g} to {meta['end_lr']:g} (the `optimkit lr-find` defaults); "
        f"{len(cases)} cases; {meta['censored']} distances censored at a grid end",
        f"* torch {meta['torch']}, {meta['machine']}; {meta['seconds']:.0f} s",
        "",
        "Distance: `|log10(suggestion / tuned lr)|`. Regret: how much worse the bench's tuning "
        "run at the grid lr nearest to the suggestion scored than the tuned one, as a share of "
        "the spread between the grid's best and worst runs (a diverged run counts 1).",
        "",
        "## The library's rules",
        "",
        *rule_table(scores),
        "",
        f"Closest most often: **`{best}`**. The library's default (`result.suggestion`, "
        f"`apply()`): `{meta['default']}`"
        + ("." if best == meta["default"] else " — they differ: update `DEFAULT_RULE`."),
        "",
        "## With the candidate rules (" + ", ".join(f"`{c}`" for c in candidates)
        + ", not in the library)",
        "",
        *rule_table(everything),
        "",
        "## By task (the library's rules)",
        "",
    ]
    for task in meta["tasks"]:
        sub = [c for c in cases if c["task"] == task]
        lines += [f"### {task}", "", *rule_table(score(sub, library)), ""]
    lines += ["## By optimizer (the library's rules): cases where each is closest", ""]
    rows = []
    for opt in meta["optimizers"]:
        sub = score([c for c in cases if c["optimizer"] == opt], library)
        rows.append([opt, f"`{winner(sub)}`", *(f"{sub[r]['closest']:.1f}" for r in library)])
    lines += [*_table(["optimizer", "closest most often", *library], rows), ""]
    lines += ["## Every pair (median suggestion over the seeds)", ""]
    pairs = defaultdict(list)
    for case in cases:
        pairs[(case["task"], case["optimizer"])].append(case)
    rows = []
    for (task, opt), group in pairs.items():
        medians = [statistics.median(c["suggestions"][r] for c in group)
                   for r in library + candidates]
        rows.append([task, opt, f"{group[0]['tuned']:.3g}", *(f"{m:.3g}" for m in medians)])
    lines += _table(["task", "optimizer", "tuned lr", *library, *candidates], rows)
    return "\n".join(lines) + "\n", best


def cases_path(out: Path) -> Path:
    """Where every case of the tables ``out`` goes: next to them as ``.json``, except for
    tables in the package, whose cases stay in ``benchmarks/`` (not installed)."""
    cases = out.with_suffix(".json")
    return HERE / cases.name if out.resolve().parent == TABLES.resolve() else cases


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bench-dir", required=True, type=Path,
                        help="a finished `optimkit bench --out` folder")
    parser.add_argument("--optimizers", help="comma-separated subset (default: all the bench ran)")
    parser.add_argument("--tasks", help="comma-separated subset (default: all the bench ran)")
    parser.add_argument("--seeds", type=int, default=3, help="sweeps per pair (seeds 0..N-1)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per sweep")
    parser.add_argument("--start-lr", type=float, default=1e-7, help="the sweeps' first lr")
    parser.add_argument("--end-lr", type=float, default=10.0, help="the sweeps' last lr")
    parser.add_argument("--out", type=Path, default=TABLES / "lr_rules.md",
                        help="the markdown tables (the default ships with the package)")
    parser.add_argument("--cases", type=Path, default=None,
                        help="every case, as JSON (default: next to --out, but in benchmarks/ "
                        "for tables in the package)")
    args = parser.parse_args(argv)

    import torch

    from optimkit import registry
    from optimkit.bench import tasks as bench_tasks
    from optimkit.outputs import check_file
    from optimkit.training.lr_find_cli import sweep
    from optimkit.training.lr_finder import DEFAULT_RULE, RULES, centred_average

    check_file(args.out, "--out", {"md"})
    cases_file = args.cases or cases_path(args.out)
    check_file(cases_file, "--cases", {"json"})
    tuned, grid, source = load_tuned(args.bench_dir)
    metrics = load_metrics(args.bench_dir)
    wanted_tasks = set(args.tasks.split(",")) if args.tasks else None
    wanted_opts = set(args.optimizers.split(",")) if args.optimizers else None
    skipped, pairs = set(), []
    for (task, opt), lr in sorted(tuned.items()):
        if (wanted_tasks and task not in wanted_tasks) or (wanted_opts and opt not in wanted_opts):
            continue
        known = bench_tasks.TASKS.get(task)
        if known is None or known.illustrative:
            skipped.add(f"task {task}")
        elif opt not in registry.available():
            skipped.add(f"optimizer {opt}")
        else:
            pairs.append((task, opt, lr))
    if skipped:
        print(f"skipped (unknown here, or illustrative): {', '.join(sorted(skipped))}")
    if not pairs:
        raise SystemExit("no (task, optimizer) pair to study")
    torch.set_num_threads(1)
    started, cases, censored = time.perf_counter(), [], 0
    for i, (task, opt, lr) in enumerate(pairs, 1):
        for seed in range(args.seeds):
            result = sweep(task, opt, seed, start_lr=args.start_lr, end_lr=args.end_lr,
                           num_steps=args.steps)
            if not result.suggestions:
                print(f"  {task} / {opt} seed {seed}: sweep too short, no suggestion")
                continue
            finite = [j for j, v in enumerate(result.losses) if math.isfinite(v)]
            lrs = np.asarray([result.lrs[j] for j in finite])
            curve = centred_average([result.losses[j] for j in finite])
            found = {**result.suggestions,
                     **{name: rule(lrs, curve) for name, rule in CANDIDATES.items()}}
            case = {"task": task, "optimizer": opt, "seed": seed, "tuned": lr,
                    "suggestions": found, "distance": {}, "picks": {}, "regret": {}}
            for rule, value in found.items():
                case["distance"][rule], cut = distance(value, lr, grid)
                case["picks"][rule] = picks_tuned(value, lr, grid)
                if (task, opt) in metrics:
                    case["regret"][rule] = regret(value, metrics[(task, opt)],
                                                  bench_tasks.get(task).higher_is_better)
                censored += cut
            cases.append(case)
        print(f"[{i}/{len(pairs)}] {task} / {opt}: tuned {lr:g}; "
              + ", ".join(f"{r} {v:.2g}" for r, v in case["suggestions"].items()), flush=True)
    if not cases:
        raise SystemExit("no sweep gave a suggestion")
    meta = {
        "source": source, "grid": grid, "seeds": list(range(args.seeds)), "steps": args.steps,
        "start_lr": args.start_lr, "end_lr": args.end_lr, "censored": censored,
        "tasks": list(dict.fromkeys(c["task"] for c in cases)),
        "optimizers": list(dict.fromkeys(c["optimizer"] for c in cases)),
        "rules": list(RULES), "candidates": list(CANDIDATES),
        "torch": torch.__version__, "machine": f"{platform.machine()}, 1 thread",
        "seconds": time.perf_counter() - started, "default": DEFAULT_RULE,
    }
    text, best = report(cases, meta)
    scores = score(cases, meta["rules"])
    others = ", ".join(f"{r} {scores[r]['closest']:.0f}" for r in meta["rules"] if r != best)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    rows = ",\n".join(json.dumps(case, separators=(",", ":")) for case in cases)
    cases_file.parent.mkdir(parents=True, exist_ok=True)
    cases_file.write_text(  # one case a line: readable diffs
        f'{{"meta": {json.dumps(meta)},\n"cases": [\n{rows}\n]}}\n', encoding="utf-8")
    print(text)
    print(f"wrote {args.out} and {cases_file}")
    safest = min(scores[r]["poor"] for r in meta["rules"]) == scores[best]["poor"]
    print("for optimkit/training/lr_finder.py:\n"
          f'DEFAULT_RULE = "{best}"\nDEFAULT_RULE_EVIDENCE = (\n    "of the rules, it landed '
          f"closest to the lr that `optimkit bench` tuned in {scores[best]['closest']:.0f} of "
          f"{len(cases)} sweeps ({len(meta['tasks'])} tasks, {len(meta['optimizers'])} "
          f"optimizers, {len(meta['seeds'])} seeds; {others})"
          + (" and picked a poor lr least often" if safest and scores[best]["rated"] else "")
          + '"\n)')
    if best != DEFAULT_RULE:
        print(f"note: {best!r} was closest most often, but DEFAULT_RULE is {DEFAULT_RULE!r}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
