"""``optimkit bench``, ``optimkit report``, ``optimkit plot`` and ``optimkit compare``.

Every argument and every output path is checked before any work starts: a bad optimizer, task,
number (each has a bound), device, output folder or task module, a missing package, and a
damaged, foreign or read-only results database are refused with a one-line error naming what is
wrong and exit status 2. A cell that fails for the environment (a missing module or file) stops
the run the same way and is never stored as the optimizer's result.
Ctrl-C (or SIGTERM) during a bench stops the workers, keeps every finished cell, prints one line
saying how to resume, and exits with status 130 (143 for SIGTERM); later signals are ignored
while it stops.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from .. import registry
from ..cli import add
from ..outputs import check_folder
from . import tasks as task_registry

DEFAULT_OUT = "optimkit-report"
PLOT_OUT = "optimkit-plots"
PRESET_OUT = {"standard": DEFAULT_OUT, "quick": f"{DEFAULT_OUT}-quick",
              "full": f"{DEFAULT_OUT}-full"}
PROGRESS_EVERY = 30.0  # seconds between progress lines when stdout is not a terminal
# What makes two runs the same run (a folder's report shows one run).
_IDENTITY = ("preset", "optimizers", "tasks", "seeds", "seed_start", "tuning_seeds", "lr_range",
             "per_decade", "budget", "extend", "weight_decays", "schedule", "cost", "device",
             "task_modules")


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _canonical(names: tuple[str, ...]) -> tuple[str, ...]:
    """Registry names (case and aliases resolved, duplicates dropped); ValueError if unknown."""
    return tuple(dict.fromkeys(registry.get(name).name for name in names))


def _whole(low: int, high: int):
    """An argparse type: a whole number in [low, high]. The upper bounds keep a typo (an extra
    zero or three) from allocating the run's seed lists or process pool before any check."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _floats(text: str, low: float = 0.0, high: float | None = None,
            most: int | None = None) -> tuple[float, ...]:
    from .suite import MAX_WEIGHT_DECAY, MAX_WEIGHT_DECAYS

    high = MAX_WEIGHT_DECAY if high is None else high
    most = MAX_WEIGHT_DECAYS if most is None else most
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from None
    if any(not low < v <= high for v in values):  # NaN and inf fail too
        raise argparse.ArgumentTypeError(f"every value must be > {low:g} and <= {high:g}, "
                                         f"got {text!r}")
    if len(values) > most:
        raise argparse.ArgumentTypeError(f"at most {most} values, got {len(values)}")
    return values


def _lr_range(text: str) -> tuple[float, float]:
    from .search import LR_LIMITS

    values = _floats(text, 0.0, LR_LIMITS[1], 2)
    if len(values) != 2 or values[0] > values[1] or values[0] < LR_LIMITS[0]:
        raise argparse.ArgumentTypeError(
            f"expected LOW,HIGH with {LR_LIMITS[0]:g} <= LOW <= HIGH <= {LR_LIMITS[1]:g}, "
            f"got {text!r}")
    return values


# ------------------------------------------------------------------ optimkit bench
@add("bench", "Score every registered optimizer on the benchmark suite; write the report.")
def _configure_bench(parser: argparse.ArgumentParser):
    from .suite import DEFAULT_PRESET, LIMITS, PRESETS

    _seeds, _tuning, _budget, _start, _workers = (
        _whole(*LIMITS[k]) for k in ("seeds", "tuning_seeds", "budget", "seed_start", "workers"))
    presets = "; ".join(f"{name}: {', '.join(p.tasks)}, {p.seeds} test seeds"
                        for name, p in PRESETS.items())
    parser.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                        help=f"which suite (default: %(default)s). {presets}")
    parser.add_argument("--optimizers", help="comma-separated names (default: every registered "
                        "optimizer, the notes' table rows first)")
    parser.add_argument("--tasks", help="comma-separated tasks (default: the preset's, or the "
                        "tasks of --task-module); known: " + ", ".join(task_registry.TASKS))
    parser.add_argument("--task-module", action="append", metavar="FILE_OR_MODULE",
                        help="a .py file or a module name that registers tasks with "
                        "optimkit.bench.tasks.register (repeatable). Its tasks replace the "
                        "preset's (the preset still sets the seeds, lr window, budget, weight "
                        "decays and cost cell); --tasks picks among its and the built-in tasks "
                        "(default: none)")
    parser.add_argument("--seeds", type=_seeds,
                        help=f"test seeds per (task, optimizer), {LIMITS['seeds'][0]} to "
                        f"{LIMITS['seeds'][1]} (default: the preset's)")
    parser.add_argument("--seed-start", type=_start, default=0,
                        help="first seed: tuning uses seeds S, S+1, testing the next --seeds "
                        "(default: %(default)s)")
    parser.add_argument("--tuning-seeds", type=_tuning,
                        help="validation seeds each tuning point runs on (default: 2)")
    parser.add_argument("--budget", type=_budget,
                        help="most lrs tried per (task, optimizer), grid extensions included "
                        "(default: the preset's: " + ", ".join(
                            f"{n} {p.budget}" for n, p in PRESETS.items()) + ")")
    parser.add_argument("--lr-range", type=_lr_range,
                        help="LOW,HIGH: the initial lr window, 3 points per decade, the same for "
                        "every optimizer (default: the preset's: " + ", ".join(
                            f"{n} {p.lr_range[0]:g},{p.lr_range[1]:g}"
                            for n, p in PRESETS.items()) + ")")
    parser.add_argument("--weight-decays", type=_floats,
                        help="weight decays tried at the tuned lr ('none' for none; 0 is "
                        "always tried) (default: the preset's: " + "; ".join(
                            f"{n} {','.join(f'{w:g}' for w in p.weight_decays) or 'none'}"
                            for n, p in PRESETS.items()) + ")")
    parser.add_argument("--schedule", choices=["cosine", "constant"],
                        help="lr schedule: linear warm-up (5%% of the steps) then cosine decay, "
                        "or constant (default: cosine)")
    parser.add_argument("--cost", action=argparse.BooleanOptionalAction, default=None,
                        help="time step() on a 10.9M-parameter model vs fused torch Adam "
                        "(default: on)")
    parser.add_argument("--device", help="torch device: cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--out", help="output folder (default: ./optimkit-report for the "
                        "standard suite, ./optimkit-report-quick, ./optimkit-report-full, and "
                        "./optimkit-report-<preset>-subset for any other choice of optimizers "
                        "or tasks)")
    parser.add_argument("--replace", action="store_true",
                        help="let this run replace the report of a different run in --out "
                        "(default: refuse)")
    parser.add_argument("--workers", type=_workers, default=None,
                        help="parallel cells (default: the CPU count, here "
                        f"{os.cpu_count() or 1})")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local process pool, or Ray (pip install 'optimkit[ray]') "
                        "(default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="finish the last run recorded in --out, with its settings "
                        "(default: off)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar or progress lines (default: off)")
    parser.add_argument("--notes", help="a markdown file whose table's Score column to fill "
                        "(written as notes.md in --out) (default: none; leaderboard.md always "
                        "holds the notes' own table filled)")
    return run_bench


# What the report needs besides the tasks: module -> (package to install, what needs it).
REPORT_NEEDS = {"scipy": ("scipy", "the statistics of the Score"),
                "matplotlib": ("matplotlib", "the report's plots")}
# The packages the [bench] extra installs, by module name.
BENCH_EXTRA = {"sklearn": "scikit-learn", "scipy": "scipy", "matplotlib": "matplotlib"}


def check_dependencies(tasks: tuple[str, ...] = (), report: bool = True) -> None:
    """ValueError naming every missing package, what needs it and how to install it, before
    any work: a run without them would store every cell of a task as failed."""
    needs: dict[str, list[str]] = {}
    for name in tasks:
        for module in task_registry.get(name).requires:
            needs.setdefault(module, []).append(f"task {name}")
    if report:
        for module, (_, why) in REPORT_NEEDS.items():
            needs.setdefault(module, []).append(why)
    missing = task_registry.missing_modules(needs)
    if not missing:
        return
    parts = [f"{BENCH_EXTRA.get(m, m)} (module {m}, for {', '.join(needs[m])})" for m in missing]
    ours = [m for m in missing if m in BENCH_EXTRA]
    other = [m for m in missing if m not in BENCH_EXTRA]
    how = (["pip install 'optimkit[bench]'"] if ours else []) + (
        [f"install the package(s) providing {', '.join(other)}"] if other else [])
    raise ValueError(f"missing {'; '.join(parts)}: {' and '.join(how)}; nothing was run")


def _check_notes(notes: str | None) -> None:
    if notes is not None and not Path(notes).is_file():
        raise ValueError(f"--notes {notes!r} is not a readable file")


_RECORDED_FLAGS = ("preset", "optimizers", "tasks", "seeds", "tuning_seeds", "budget",
                   "lr_range", "weight_decays", "schedule", "cost", "device", "task_module")


def _bench_config(args: argparse.Namespace):
    """The run's configuration and its output folder (nothing written yet)."""
    from .store import DB_NAME, Store
    from .suite import DEFAULT_PRESET, Config

    workers = args.workers or max(1, os.cpu_count() or 1)
    if args.resume:
        out = check_folder(args.out or DEFAULT_OUT)
        if not (out / DB_NAME).exists():
            raise ValueError(f"--resume: no results database in {out}")
        given = [f"--{k.replace('_', '-')}" for k in _RECORDED_FLAGS
                 if getattr(args, k) not in (None, DEFAULT_PRESET if k == "preset" else None)]
        if args.seed_start:
            given.append("--seed-start")
        if given:
            raise ValueError(f"--resume replays the recorded run; drop {', '.join(given)}")
        with Store(out, create=False) as store:
            recorded = store.last_config()
        if recorded is None:
            raise ValueError(f"--resume: the database in {out} records no run")
        modules = tuple(recorded.get("task_modules") or ())
        for module in modules:
            try:
                task_registry.load_module(module)
            except ValueError as err:  # a file moved away, or broken since
                raise ValueError(f"--resume: the run's task module cannot be loaded: {err}") \
                    from None
        _check_same_code(recorded, out)
        # Without --workers, the recorded run's own count is kept.
        workers = args.workers or recorded.get("workers") or workers
        try:
            config = Config.from_json(recorded, workers=workers, executor=args.executor)
        except (ValueError, TypeError) as err:
            raise ValueError(f"--resume: the run recorded in {out} cannot be replayed: {err}") \
                from None
        return config, out
    if args.optimizers is not None and not _names(args.optimizers):
        raise ValueError("--optimizers: give at least one name (it is empty)")
    if args.tasks is not None and not _names(args.tasks):
        raise ValueError("--tasks: give at least one task (it is empty)")
    modules, module_tasks = [], []
    for spec in args.task_module or ():
        module_tasks += task_registry.load_module(spec)  # ValueError naming it
        path = task_registry.module_file(spec)
        # Recorded so that --resume and the workers find it from any folder.
        modules.append(str(path) if spec.endswith(".py") or Path(spec).is_file() else spec)
    tasks = _names(args.tasks) if args.tasks else tuple(dict.fromkeys(module_tasks)) or None
    config = Config.for_preset(
        args.preset,
        optimizers=_canonical(_names(args.optimizers)) if args.optimizers else None,
        tasks=tasks, task_modules=tuple(modules) or None,
        seeds=args.seeds, seed_start=args.seed_start, tuning_seeds=args.tuning_seeds,
        budget=args.budget, lr_range=args.lr_range, weight_decays=args.weight_decays,
        schedule=args.schedule, cost=args.cost, device=args.device, workers=workers,
        executor=args.executor,
    )
    if args.out is not None:
        out = check_folder(args.out)
    else:
        base = PRESET_OUT[config.preset]
        whole = Config.for_preset(config.preset)
        subset = (config.optimizers, config.tasks) != (whole.optimizers, whole.tasks)
        out = check_folder(f"{base}-subset" if subset else base)
    _check_same_run(config, out, args.replace)
    return config, out


def _check_same_code(recorded: dict, out: Path) -> None:
    """Refuse to resume a run recorded by another version (code, task modules, torch, numpy or
    Python): its cells would not be comparable. The message says which of them differs."""
    from . import fingerprint

    files = [task_registry.module_file(m) for m in recorded.get("task_modules") or ()]
    version, installed = recorded.get("version", "?"), fingerprint.code_version(files)
    if version != installed:
        what = fingerprint.differences(recorded.get("fingerprint"),
                                       fingerprint.components(task_files=files))
        raise ValueError(
            f"--resume: the run in {out} was recorded by optimkit {version}, this environment "
            f"is optimkit {installed}; what differs: {what}. Cells computed by the two would not "
            "be comparable: start a new run with another --out, or re-install the code and "
            "packages that started this run")


def _identity(config: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()
            if k in _IDENTITY and not (k == "task_modules" and not v)}  # older runs lack it


def _check_same_run(config, out: Path, replace: bool) -> None:
    """Refuse to replace the report of a different run in ``out`` (unless ``replace``)."""
    from .store import DB_NAME, Store

    if replace or not (out / DB_NAME).exists():
        return
    with Store(out, create=False) as store:
        recorded = store.last_config()
    if recorded is None or _identity(recorded) == _identity(config.to_json()):
        return
    what = (f"preset {recorded.get('preset', '?')}, {len(recorded['optimizers'])} optimizers, "
            f"tasks {', '.join(recorded['tasks'])}, seed start {recorded.get('seed_start', 0)}")
    raise ValueError(f"--out {out} holds the report of another run ({what}); choose another "
                     "--out, or add --replace to replace that report (its cells are kept)")


class LineProgress:
    """One line every ``every`` seconds on stdout: cells done / total, elapsed, ETA."""

    def __init__(self, every: float = PROGRESS_EVERY, stream=None):
        self.every, self.stream = every, stream or sys.stdout
        self.last = time.monotonic()

    def __call__(self, spec, tally) -> None:
        from .suite import eta

        now = time.monotonic()
        if spec is not None and now - self.last < self.every and tally.finished < tally.total:
            return
        if spec is None and tally.finished == 0:
            return
        self.last = now
        left = eta(tally)
        share = tally.finished / tally.total if tally.total else 1.0
        print(f"optimkit bench: {tally.finished}/{tally.total} cells ({share:.0%}), "
              f"{_clock(now - tally.started)} elapsed"
              + ("" if left != left else f", ETA {_clock(left)}"),
              file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _rich_progress(total: int):
    """A rich progress bar on a terminal's stderr (None without rich)."""
    try:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        return None, None
    bar = Progress(TextColumn("[bold]bench[/] {task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   transient=False)
    handle = bar.add_task("", total=total)

    def update(spec, tally) -> None:
        text = "" if spec is None else (f"{spec.task} / {spec.optimizer} "
                                         f"lr={spec.lr:g} seed={spec.seed}")
        bar.update(handle, completed=tally.finished, total=tally.total, description=text)

    return bar, update


class Interrupted(BaseException):
    """A stop signal. A ``BaseException``, like ``KeyboardInterrupt``: the cell runner catches
    every ``Exception`` (a broken optimizer must not end a run), so an ``Exception`` raised in
    the middle of a cell would be recorded as that cell's failure and the run would go on."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopOnSignal:
    """SIGINT/SIGTERM -> ``Interrupted`` once; every later one is ignored while we stop.

    The handlers are installed even where SIGINT was inherited as ignored (a background job of
    a non-interactive shell): ``kill -INT`` then stops the bench as cleanly as Ctrl-C does."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.fired = False
        self.active = threading_is_main()
        if self.active:
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, _frame):
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        self.fired = True
        raise Interrupted(signum)

    def __exit__(self, kind, *_):
        # After an interrupt the signals stay ignored until the process ends: the command
        # catches Interrupted inside this block, and a late Ctrl-C reaching a restored
        # handler would kill the exiting interpreter with SIGINT instead of status 130.
        if self.active and kind is None and not self.fired:
            for s, handler in self.previous.items():
                signal.signal(s, handler)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_bench(args: argparse.Namespace) -> int:
    """The bench; Ctrl-C at any point (imports included) ends it cleanly with status 130."""
    where: dict = {}
    with _StopOnSignal():
        try:
            return _bench(args, where)
        except (Interrupted, KeyboardInterrupt) as err:
            code = 128 + getattr(err, "signum", signal.SIGINT)
            print(_interrupted(where), file=sys.stderr, flush=True)
            return code


def _interrupted(where: dict) -> str:
    """The one line printed on Ctrl-C: how many cells are safe, and how to finish."""
    from .store import DB_NAME, Store
    from .suite import finished_cells

    out, config = where.get("out"), where.get("config")
    if out is None or config is None or not (out / DB_NAME).exists():
        return "interrupted: no cells saved yet"
    with Store(out) as store:
        saved = finished_cells(config, store)
    return f"interrupted: {saved} cells saved; finish with `optimkit bench --resume --out {out}`"


def _bench(args: argparse.Namespace, where: dict) -> int:
    from . import fingerprint, report, suite
    from .runner import EnvironmentFailure
    from .store import Store

    _check_notes(args.notes)
    config, out = _bench_config(args)  # every check before the folder is created
    check_dependencies(config.tasks)
    out.mkdir(parents=True, exist_ok=True)
    tally = suite.Tally()
    quiet = args.quiet
    with Store(out) as store:
        files = [task_registry.module_file(m) for m in config.task_modules]
        store.record_run({**config.to_json(), "fingerprint": fingerprint.components(
            task_files=files)}, [task_registry.get(t).meta() for t in config.tasks])
        where.update(out=out, config=config)
        total = suite.expected_cells(config)
        if not quiet:
            print(f"optimkit bench: preset {config.preset}"
                  f"{' (provisional)' if config.provisional else ''}, "
                  f"{len(config.optimizers)} optimizers x {len(config.tasks)} tasks, "
                  f"about {total} cells (an estimate: the lr grids extend as the results "
                  f"require) on {config.workers} worker(s); {_time_estimate(config)}; "
                  f"results in {out}/", flush=True)
        bar, update = (None, None)
        if not quiet and sys.stderr.isatty():
            bar, update = _rich_progress(total)
        if bar is None and not quiet and not sys.stdout.isatty():
            update = LineProgress()
        try:
            if bar is not None:
                with bar:
                    suite.run(config, store, update, tally)
            else:
                suite.run(config, store, update, tally)
        except EnvironmentFailure as err:
            print(f"optimkit bench: error: the run stopped on a failure that is not an "
                  f"optimizer's (not stored): {err}. {tally.finished} cells are saved; fix it, "
                  f"then finish with `optimkit bench --resume --out {out}`",
                  file=sys.stderr, flush=True)
            return 2
        failures = store.errors(config.version)
    summary = report.load(out)
    files = report.build(out, args.notes, summary)
    for task, optimizer, error in failures[:5]:
        print(f"optimkit bench: warning: {optimizer} on {task} failed: {error}", file=sys.stderr)
    if len(failures) > 5:
        print(f"optimkit bench: warning: {len(failures)} cells failed in all", file=sys.stderr)
    print(f"optimkit bench: {tally.finished} cells ({tally.ran} run now, "
          f"{tally.finished - tally.ran} already done) in "
          f"{_clock(time.monotonic() - tally.started)}; {len(files)} files in {out}/")
    print(report.end_summary(summary, out))
    return 0


def _time_estimate(config) -> str:
    """The run's expected wall time, in words (before any cell ran)."""
    from .suite import estimated_seconds

    seconds = estimated_seconds(config)
    if seconds != seconds:  # a task module's task, or a GPU: no measured cell time
        return ("time: no estimate (" + ("the cell times were measured on a CPU"
                if config.device != "cpu" else "a task without a measured cell time") + ")")
    return (f"about {_clock(seconds)} on an idle machine with {config.workers} free core(s) "
            "(an estimate from per-cell times measured on the project's machine)")


# ------------------------------------------------------------------ optimkit report
def _other_code(recorded: str) -> str:
    from .fingerprint import code_version

    installed = code_version()
    return "" if recorded == installed else f" (the installed code is optimkit {installed})"


@add("report", "Rebuild the report (markdown, HTML, CSV, JSON, plots) from a bench database.")
def _configure_report(parser: argparse.ArgumentParser):
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="the folder holding results.sqlite (default: ./%(default)s)")
    parser.add_argument("--notes", help="a markdown file whose table's Score column to fill "
                        "(default: none)")

    def run(args: argparse.Namespace) -> int:
        from . import report

        out = check_folder(args.out)
        _check_notes(args.notes)
        check_dependencies()
        summary = report.load(out)
        files = report.build(out, args.notes, summary)
        print(f"optimkit report: wrote {len(files)} files in {out}/ from the cells of optimkit "
              f"{summary.config.version}" + _other_code(summary.config.version))
        print(report.end_summary(summary, out))
        return 0

    return run


# ------------------------------------------------------------------ optimkit compare
@add("compare", "Compare the tiers of two bench runs (e.g. --seed-start 0 and 100).")
def _configure_compare(parser: argparse.ArgumentParser):
    parser.add_argument("run_a", metavar="DIR_A", help="a bench output folder")
    parser.add_argument("run_b", metavar="DIR_B", help="another bench output folder")
    parser.add_argument("--out", help="also write compare.md and compare.json in this folder "
                        "(default: print only)")

    def run(args: argparse.Namespace) -> int:
        from . import report

        out = check_folder(args.out) if args.out else None
        first, second = report.load(args.run_a), report.load(args.run_b)
        text, data = report.compare(first, second, args.run_a, args.run_b)
        print(text, end="")
        if out is not None:
            import json

            out.mkdir(parents=True, exist_ok=True)
            report.write(out / "compare.md", text)
            report.write(out / "compare.json", json.dumps(data, indent=2) + "\n")
        return 0

    return run


# ------------------------------------------------------------------ optimkit plot
@add("plot", "Draw optimizer paths on a 2-D test function (rosenbrock, beale, rastrigin).")
def _configure_plot(parser: argparse.ArgumentParser):
    parser.add_argument("function", help="rosenbrock, beale or rastrigin")
    parser.add_argument("--optimizers", default="sgd,adam",
                        help="comma-separated names (default: %(default)s)")
    parser.add_argument("--out", default=PLOT_OUT,
                        help="output folder, never a bench report's (default: ./%(default)s)")
    parser.add_argument("--lr", type=float, default=None,
                        help="one lr for all (default: each tuned by the bench's lr search)")
    parser.add_argument("--budget", type=_whole(1, 31), default=13,
                        help="most lrs tried when tuning (default: %(default)s)")
    return run_plot


def run_plot(args: argparse.Namespace) -> int:
    """``optimkit plot``: draw optimizers' trajectories on a 2-D test function."""
    from .plots import trajectories
    from .runner import run_cell
    from .search import LR_LIMITS, Rules, walk
    from .store import DB_NAME

    if args.function not in task_registry.SURFACES:
        raise ValueError(f"unknown function {args.function!r}; available: "
                         + ", ".join(task_registry.SURFACES))
    names = _names(args.optimizers)
    if not names:
        raise ValueError("--optimizers: give at least one name (it is empty)")
    names = _canonical(names)  # ValueError naming an unknown one
    if args.lr is not None and not LR_LIMITS[0] <= args.lr <= LR_LIMITS[1]:  # NaN, inf too
        raise ValueError(f"--lr must be between {LR_LIMITS[0]:g} and {LR_LIMITS[1]:g}, "
                         f"got {args.lr}")
    out = check_folder(args.out)
    if (out / DB_NAME).exists():
        raise ValueError(f"--out {out} holds a bench report; optimkit plot writes elsewhere "
                         f"(default ./{PLOT_OUT})")
    if args.lr is not None:
        window, budget = (args.lr, args.lr), 1
    else:  # up to 7 grid lrs around 1e-2 (3 per decade), extended like the bench's search
        first = -6 - (min(args.budget, 7) - 1) // 2
        window = (10 ** (first / 3), 10 ** ((first + min(args.budget, 7) - 1) / 3))
        budget = args.budget
    rules = Rules(lr_range=window, budget=budget, weight_decays=(), tuning_seeds=(0,),
                  test_seeds=())
    paths, labels = {}, {}
    for name in names:
        results: dict = {}
        state = walk(rules, args.function, name, False, False, results.get)
        while state.needed:
            for spec in state.needed:
                results[spec] = run_cell(spec)
            state = walk(rules, args.function, name, False, False, results.get)
        chosen = next(r for s, r in results.items() if s.lr == state.lr)
        paths[name], labels[name] = chosen["path"], f"{name} (lr={state.lr:g})"
    out.mkdir(parents=True, exist_ok=True)
    file = trajectories(args.function, paths, out / f"trajectories-{args.function}.png", labels)
    print(f"optimkit plot: wrote {file}")
    return 0


__all__ = ["run_bench", "run_plot"]
