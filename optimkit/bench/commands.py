"""``optimkit bench``, ``optimkit report`` and ``optimkit plot``.

Every argument is checked before anything is written: a bad optimizer, task, number, device or
output folder is refused with a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .. import registry
from ..cli import add
from . import tasks as task_registry

DEFAULT_OUT = "optimkit-report"


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _canonical(names: tuple[str, ...]) -> tuple[str, ...]:
    """Registry names (case and aliases resolved, duplicates dropped); ValueError if unknown."""
    return tuple(dict.fromkeys(registry.get(name).name for name in names))


def check_out(out: str) -> Path:
    """The output folder, or ValueError if it cannot be written; creates nothing."""
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--out {out!r} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"--out {out!r} is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out!r}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out!r}: cannot create it inside {parent} (not writable)")
    return path


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


@add("bench", "Score every registered optimizer on the benchmark suite and write the report.")
def _configure_bench(parser: argparse.ArgumentParser):
    parser.add_argument("--optimizers", help="comma-separated names (default: every registered)")
    parser.add_argument("--tasks", help="comma-separated tasks (default: all: "
                        + ", ".join(task_registry.TASKS) + ")")
    parser.add_argument("--seeds", type=_positive, help="seeds per cell (default 3)")
    parser.add_argument("--budget", type=_positive,
                        help="learning rates tried per optimizer and task (default 5)")
    parser.add_argument("--device", help="torch device (default cpu)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output folder (default ./{DEFAULT_OUT})")
    parser.add_argument("--workers", type=_positive, default=None,
                        help="parallel cells (default: the CPU count)")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local process pool, or Ray (pip install 'optimkit[ray]')")
    parser.add_argument("--resume", action="store_true",
                        help="finish the last run recorded in --out, with its settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--notes", help="a markdown file whose table's Score column to fill "
                        "(written as notes.md in --out)")
    return run_bench


def _check_notes(notes: str | None) -> None:
    if notes is not None and not Path(notes).is_file():
        raise ValueError(f"--notes {notes!r} is not a readable file")


def _bench_config(args: argparse.Namespace, out: Path):
    from .store import DB_NAME, Store
    from .suite import Config

    workers = args.workers or max(1, os.cpu_count() or 1)
    if args.resume:
        if not (out / DB_NAME).exists():
            raise ValueError(f"--resume: no results database in {out}")
        given = [f"--{k}" for k in ("optimizers", "tasks", "seeds", "budget", "device")
                 if getattr(args, k) is not None]
        if given:
            raise ValueError(f"--resume replays the recorded run; drop {', '.join(given)}")
        with Store(out, create=False) as store:
            recorded = store.last_config()
        if recorded is None:
            raise ValueError(f"--resume: the database in {out} records no run")
        return Config.from_json(recorded, workers=workers, executor=args.executor)
    return Config(
        optimizers=_canonical(_names(args.optimizers)) if args.optimizers
        else tuple(registry.available()),
        tasks=_names(args.tasks) if args.tasks is not None else tuple(task_registry.TASKS),
        seeds=args.seeds or 3, budget=args.budget or 5, device=args.device or "cpu",
        workers=workers, executor=args.executor,
    )


def run_bench(args: argparse.Namespace) -> int:
    from . import report, suite
    from .store import Store

    out = check_out(args.out)
    _check_notes(args.notes)
    config = _bench_config(args, out)  # every check before the folder is created
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Store(out) as store:
        store.record_run(config.to_json(), [task_registry.get(t).meta() for t in config.tasks])
        bar, update = suite.rich_progress(suite.count_cells(config), not args.quiet)
        if bar is not None:
            with bar:
                ran = suite.run(config, store, update)
        else:
            ran = suite.run(config, store)
        failures = store.errors(config.version)
    files = report.build(out, args.notes)
    took = time.perf_counter() - started
    for task, optimizer, error in failures[:5]:
        print(f"optimkit bench: warning: {optimizer} on {task} failed: {error}", file=sys.stderr)
    if len(failures) > 5:
        print(f"optimkit bench: warning: {len(failures)} cells failed in all", file=sys.stderr)
    print(f"optimkit bench: {ran} cells run, {suite.count_cells(config) - ran} already done, "
          f"{took:.1f} s; report in {out}/ ({len(files)} files: leaderboard.md, report.html, ...)")
    return 0


@add("report", "Rebuild the report (markdown, HTML, CSV, JSON, plots) from a bench database.")
def _configure_report(parser: argparse.ArgumentParser):
    parser.add_argument("--out", default=DEFAULT_OUT, help="the folder holding results.sqlite")
    parser.add_argument("--notes", help="a markdown file whose table's Score column to fill")

    def run(args: argparse.Namespace) -> int:
        from . import report

        out = check_out(args.out)
        _check_notes(args.notes)
        files = report.build(out, args.notes)
        print(f"optimkit report: wrote {len(files)} files in {out}/")
        return 0

    return run


@add("plot", "Draw optimizer paths on a 2-D test function (rosenbrock, beale, rastrigin).")
def _configure_plot(parser: argparse.ArgumentParser):
    parser.add_argument("function", help="rosenbrock, beale or rastrigin")
    parser.add_argument("--optimizers", default="sgd,adam", help="comma-separated names")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--lr", type=float, default=None,
                        help="one lr for all (default: each tuned on the bench's lr grid)")
    parser.add_argument("--budget", type=_positive, default=5, help="lrs tried when tuning")
    return run_plot


def run_plot(args: argparse.Namespace) -> int:
    from .plots import trajectories
    from .runner import CellSpec, run_cell
    from .suite import best_lr, lr_grid

    if args.function not in task_registry.SURFACES:
        raise ValueError(f"unknown function {args.function!r}; available: "
                         + ", ".join(task_registry.SURFACES))
    names = _names(args.optimizers)
    if not names:
        raise ValueError("--optimizers: give at least one")
    names = _canonical(names)  # ValueError naming an unknown one
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    out = check_out(args.out)
    grid = [args.lr] if args.lr is not None else lr_grid(args.budget)
    paths, labels = {}, {}
    for name in names:
        runs = {lr: run_cell(CellSpec.make(args.function, name, {"lr": lr}, 0, "tune"))
                for lr in grid}
        rows = [{"lr": lr, **r} for lr, r in runs.items()]
        lr = best_lr(args.function, rows)
        paths[name], labels[name] = runs[lr]["path"], f"{name} (lr={lr:g})"
    out.mkdir(parents=True, exist_ok=True)
    file = trajectories(args.function, paths, out / f"trajectories-{args.function}.png", labels)
    print(f"optimkit plot: wrote {file}")
    return 0


__all__ = ["check_out", "run_bench", "run_plot"]
