"""The run: presets, the configuration, which cells run in what order, and on which executor.

The protocol itself (the lr grid and its extension, weight decay, tuning and test seeds) is
:mod:`.search`; this module walks it for every (task, optimizer) pair and hands the cells it
needs to an executor: inline (``workers=1``), a local process pool, or Ray. The parent process
alone writes the database, one transaction per finished cell, and skips finished cells, so an
interrupted run resumes where it stopped.

Presets (``--preset``):

* ``quick``: the small tasks (digits, diabetes, a char-GRU), under 10 minutes on 2 cores; the
  same protocol on a narrower start window (3 lrs, extended by the same rule), without the
  weight-decay stage, the 2-D toys (``optimkit plot`` draws them) or the cost cell; its tiers
  are provisional (the tasks are small and mostly saturated);
* ``standard`` (the default, the one that fills the Score): a transformer language model on the
  standard library's source at two token budgets (about 1x and 8x its parameter count), a 2-D
  CNN on the digits, a 1-D CNN and a deep autoencoder on MNIST-1D-style data; under 75 minutes
  on an idle 2-core machine with ``--workers 2`` for up to 37 optimizers (see
  :func:`estimated_seconds`);
* ``full``: every real task of both, more seeds, a wider lr window and more weight decays.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

from .. import registry
from . import tasks as task_registry
from .fingerprint import code_version
from .notes import bench_optimizers
from .runner import SCHEDULES, CellSpec, canonical, run_cell
from .search import Rules, Search, final_specs, walk
from .store import Store

QUICK_TASKS = ("digits-mlp", "digits-cnn", "diabetes-mlp", "zen-char-gru")
TOYS = ("rosenbrock", "beale", "rastrigin")
# (mnist1d-cnn left standard for full: with 35 optimizers, SOAP's and Kron's heavier cells and
# the self-tuning track it took the estimate past 75 minutes; the conv net is digits-convnet)
STANDARD_TASKS = ("stdlib-lm-1x", "stdlib-lm-8x", "digits-convnet", "mnist1d-autoencoder")


@dataclasses.dataclass(frozen=True)
class Preset:
    tasks: tuple[str, ...]
    seeds: int
    lr_range: tuple[float, float]
    budget: int
    weight_decays: tuple[float, ...]
    cost: bool  # time step() on a >= 10M-parameter model
    provisional: bool = False


PRESETS: dict[str, Preset] = {
    # quick fits 10 minutes on 2 cores: on the quick run of 3,182 cells (1,116 CPU seconds),
    # the toys took a third of the CPU time, the weight-decay stage a tenth and the 5-lr start
    # window another tenth. This preset then ran 1,324 cells in 405 CPU seconds (9 min 46 s
    # wall with 2 workers on the shared 2-core machine, report included).
    "quick": Preset(QUICK_TASKS, seeds=5, lr_range=(1e-2, 5e-2), budget=19,
                    weight_decays=(), cost=False, provisional=True),
    "standard": Preset(STANDARD_TASKS, seeds=5, lr_range=(2e-3, 5e-2), budget=19,
                       weight_decays=(1e-3, 1e-2, 1e-1), cost=True),
    "full": Preset(STANDARD_TASKS + ("mnist1d-cnn",) + QUICK_TASKS + TOYS, seeds=10,
                   lr_range=(1e-4, 1.0), budget=25, weight_decays=(1e-4, 1e-3, 1e-2, 1e-1),
                   cost=True),
}
DEFAULT_PRESET = "standard"
TUNING_SEEDS = 2
# Bounds of the run's numbers (the flags and a recorded run alike): far above any useful run,
# low enough that a typo is refused before the seed lists or the process pool are allocated.
LIMITS: dict[str, tuple[int, int]] = {
    "seeds": (2, 1000), "tuning_seeds": (1, 100), "budget": (1, 100), "workers": (1, 1024),
    "per_decade": (1, 12), "extend": (1, 10), "seed_start": (0, 10**9),
}
MAX_WEIGHT_DECAY, MAX_WEIGHT_DECAYS = 10.0, 20


@dataclasses.dataclass(frozen=True)
class Config:
    """One ``optimkit bench`` run; stored in the database so that ``--resume`` can replay it."""

    optimizers: tuple[str, ...]
    tasks: tuple[str, ...]
    preset: str = DEFAULT_PRESET
    seeds: int = 5
    seed_start: int = 0
    tuning_seeds: int = TUNING_SEEDS
    lr_range: tuple[float, float] = (2e-3, 5e-2)
    per_decade: int = 3
    budget: int = 19
    extend: int = 1
    weight_decays: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    schedule: str = "cosine"
    cost: bool = True
    device: str = "cpu"
    workers: int = 1
    executor: str = "local"
    # Task modules (absolute .py paths or module names) that register tasks of this run; their
    # source is part of the version, and the workers load them.
    task_modules: tuple[str, ...] = ()
    version: str = ""  # whose cells these are (default: the installed code's, task modules in)
    # False where only the stored cells are read (the report): the tasks need not be loaded.
    check_tasks: dataclasses.InitVar[bool] = True

    def __post_init__(self, check_tasks: bool = True) -> None:
        if not self.optimizers:
            raise ValueError("optimizers: give at least one")
        if not self.tasks:
            raise ValueError("tasks: give at least one")
        for name in self.optimizers:
            registry.get(name)  # ValueError naming it
        for name in self.tasks:
            if check_tasks:
                task_registry.get(name)
            elif not isinstance(name, str) or not task_registry._NAME.fullmatch(name):
                raise ValueError(f"tasks: {name!r} is not a task name")
        if not self.version:
            object.__setattr__(self, "version", code_version(
                [task_registry.module_file(m) for m in self.task_modules]))
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for field, (low, high) in LIMITS.items():
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{field} must be an int between {low} and {high}, "
                                 f"got {value!r}")
        if len(self.weight_decays) > MAX_WEIGHT_DECAYS or any(
                not 0 < w <= MAX_WEIGHT_DECAY for w in self.weight_decays):
            raise ValueError(f"weight_decays: at most {MAX_WEIGHT_DECAYS} values in "
                             f"(0, {MAX_WEIGHT_DECAY:g}], got {self.weight_decays!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor must be 'local' or 'ray', got {self.executor!r}")
        check_device(self.device)
        self.rules()  # lr_range, budget and weight decays, checked by the protocol itself

    @staticmethod
    def for_preset(preset: str = DEFAULT_PRESET, **override: Any) -> Config:
        """The configuration of ``preset`` (every registered optimizer, the notes' rows first)."""
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        p = PRESETS[preset]
        base = dict(optimizers=bench_optimizers(), tasks=p.tasks, preset=preset, seeds=p.seeds,
                    lr_range=p.lr_range, budget=p.budget, weight_decays=p.weight_decays,
                    cost=p.cost)
        return Config(**{**base, **{k: v for k, v in override.items() if v is not None}})

    @property
    def provisional(self) -> bool:
        return PRESETS[self.preset].provisional

    def rules(self) -> Rules:
        start = self.seed_start
        return Rules(
            lr_range=tuple(self.lr_range), per_decade=self.per_decade, budget=self.budget,
            extend=self.extend, weight_decays=tuple(self.weight_decays),
            tuning_seeds=tuple(range(start, start + self.tuning_seeds)),
            test_seeds=tuple(range(start + self.tuning_seeds,
                                   start + self.tuning_seeds + self.seeds)),
            schedule=self.schedule, device=self.device,
        )

    def to_json(self) -> dict[str, Any]:
        rules = self.rules()
        return {**dataclasses.asdict(self), "tuning_seed_list": list(rules.tuning_seeds),
                "test_seed_list": list(rules.test_seeds),
                "initial_lr_grid": [rules.lr(i) for i in rules.initial()]}

    @staticmethod
    def from_json(data: dict[str, Any], **override: Any) -> Config:
        fields = {f.name for f in dataclasses.fields(Config)}
        kept = {k: v for k, v in data.items() if k in fields and k != "version"}
        for name in ("optimizers", "tasks", "lr_range", "weight_decays", "task_modules"):
            if name in kept:
                kept[name] = tuple(kept[name])
        return Config(**{**kept, **override})


def check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: {device!r} is not a torch device ({err})") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but CUDA is not available here")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {device!r}: only cpu and cuda are supported")


@functools.cache
def takes_weight_decay(optimizer: str) -> bool:
    """Whether the optimizer's param groups have a ``weight_decay`` (it is then tuned)."""
    import torch

    try:
        built = registry.create(optimizer, [torch.zeros(1, requires_grad=True)])
    except Exception:  # noqa: BLE001  (a broken optimizer is recorded by its cells)
        return False
    return "weight_decay" in built.param_groups[0]


def search(config: Config, task: str, optimizer: str, lookup) -> Search:
    """Where the protocol stands for one pair, given the results ``lookup`` knows."""
    spec = task_registry.get(task)
    return walk(config.rules(), task, optimizer, spec.higher_is_better,
                takes_weight_decay(optimizer), lookup, spec.tolerance)


def self_tuning(optimizer: str) -> bool:
    """Whether the optimizer's registry entry is marked lr-free / schedule-free."""
    return bool(getattr(registry.get(optimizer), "self_tuning", False))


def self_tuning_specs(config: Config) -> list[CellSpec]:
    """The self-tuning track (AlgoPerf's): every self-tuning optimizer of the run at its own
    defaults (hypers ``{}``: no tuning, no external lr schedule) and, as the baseline, AdamW at
    its defaults (default lr, the run's schedule), each on every test seed of every ranked
    task, scored on the test split (role ``"default"``). Empty without a self-tuning optimizer."""
    marked = [o for o in config.optimizers if self_tuning(o)]
    if not marked:
        return []
    rules = config.rules()
    real = [t for t in config.tasks if not task_registry.get(t).illustrative] \
        if all(t in task_registry.TASKS for t in config.tasks) else list(config.tasks)
    out = []
    for task in real:
        for optimizer in [*marked, *([BASELINE] if BASELINE not in marked else [])]:
            schedule = "constant" if optimizer in marked else config.schedule
            out += [CellSpec.make(task, optimizer, {}, seed, "default", config.device, schedule)
                    for seed in rules.test_seeds]
    return out


BASELINE = "adamw"  # the untuned baseline of the self-tuning track (at its default lr)
TRACKS = ("cost", "default")  # roles of cells outside the search: submitted once, up front


def cost_specs(config: Config) -> list[CellSpec]:
    if not config.cost:
        return []
    return [CellSpec.make("cost", optimizer, {}, 0, "cost", config.device, "constant")
            for optimizer in config.optimizers]


# ------------------------------------------------------------------ executors
@dataclasses.dataclass(eq=False)
class _Deferred:
    """A cell queued in this process; it runs when the executor is waited on."""

    order: int
    spec: CellSpec
    result: dict[str, Any] | None = None


class InlineExecutor:
    """Runs the cells in this process, one at a time, in the order given (``workers=1``)."""

    def __init__(self) -> None:
        self.queued = 0

    def submit(self, spec: CellSpec):
        self.queued += 1
        return _Deferred(self.queued, spec)

    def wait(self, pending: set) -> tuple[set, set]:
        first = min(pending, key=lambda handle: handle.order)
        first.result = run_cell(first.spec)
        return {first}, set(pending) - {first}

    def result(self, handle) -> dict[str, Any]:
        return handle.result

    def shutdown(self) -> None:
        pass

    abort = shutdown


def _worker_init(pid: int, period: float = 0.5) -> None:
    """In a pool worker: leave Ctrl-C to the bench process (which stops the pool), and exit as
    soon as the bench process ``pid`` is gone (kill -9 included)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(period)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="optimkit-bench-watchdog").start()


class PoolExecutor:
    """A local process pool.

    Workers fork from a fresh 'forkserver' that has imported the runner once: no worker
    inherits this process's torch threads, and none pays for importing torch again.
    """

    def __init__(self, workers: int, task_modules: tuple[str, ...] = ()):
        self.task_modules = task_modules
        methods = multiprocessing.get_all_start_methods()
        method = "forkserver" if "forkserver" in methods else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["optimkit.bench.runner", "optimkit.bench.tasks"])
        self.pool = futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_worker_init,
            initargs=(os.getpid(),))

    def submit(self, spec: CellSpec):
        return self.pool.submit(run_cell, spec, self.task_modules)

    def wait(self, pending: set) -> tuple[set, set]:
        done, rest = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
        return done, rest

    def result(self, handle) -> dict[str, Any]:
        return handle.result()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop now: drop queued cells and end the workers (their running cells are lost)."""
        # ProcessPoolExecutor has no public way to end busy workers before Python 3.14
        # (terminate_workers); its ``_processes`` map has been stable since Python 3.3.
        workers = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.terminate()
        deadline = time.monotonic() + 5
        for process in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1)
        self.pool.shutdown(wait=True)  # returns at once: every worker is gone


class RayExecutor:
    """The same cells as Ray tasks (optional extra ``ray``): in this process's Ray if it has one,
    else on the cluster ``RAY_ADDRESS`` names (``ray start --head`` prints it; the cluster's
    workers must import the same optimkit), else on a local Ray it starts with ``workers``
    CPUs. Each cell asks for one CPU."""

    def __init__(self, workers: int, task_modules: tuple[str, ...] = ()):
        self.task_modules = task_modules
        try:
            import ray
        except ImportError:
            raise ValueError("executor 'ray' needs Ray: pip install 'optimkit[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            if address:  # a running cluster (``ray start --head``): join it, its CPUs as they are
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        self.remote = ray.remote(num_cpus=1)(run_cell)
        self.submitted: list = []

    def submit(self, spec: CellSpec):
        ref = self.remote.remote(spec, self.task_modules)
        self.submitted.append(ref)
        return ref

    def wait(self, pending: set) -> tuple[set, set]:
        done, rest = self.ray.wait(list(pending), num_returns=1)
        return set(done), set(rest)

    def result(self, handle) -> dict[str, Any]:
        return self.ray.get(handle)

    def shutdown(self) -> None:
        pass  # a Ray instance outlives the run: the caller (or its exit) shuts it down

    def abort(self) -> None:
        for ref in self.submitted:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001  (already finished, or Ray is going down)
                pass


def make_executor(config: Config):
    if config.executor == "ray":
        return RayExecutor(config.workers, config.task_modules)
    if config.workers == 1:
        return InlineExecutor()  # this process has loaded the task modules
    return PoolExecutor(config.workers, config.task_modules)


# ------------------------------------------------------------------ the run
@dataclasses.dataclass
class Tally:
    """How far a run is: cells finished (recorded before or now), ran now, and the total."""

    finished: int = 0
    ran: int = 0
    total: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)


Progress = Callable[[CellSpec | None, Tally], None]


def expected_extensions(initial: int, budget: int) -> float:
    """The lrs a pair's grid is expected to add past its initial ``initial`` points (at most
    ``budget - initial``): an empirical prior, fitted to the bench's own measured runs at 3 lrs
    per decade (quick: 3-point window, 3.5 lrs added per pair on average; standard: 5 points,
    2.2; full: 13 points, 0.42), ``6.6 * exp(-0.21 * initial)``. A wider start window needs
    fewer extensions. The run replaces it with what its finished lr stages added."""
    return max(0.0, min(float(budget - initial), 6.6 * math.exp(-0.21 * initial)))


def _estimate(config: Config, state: Search, extensions: float | None = None) -> float:
    """Cells of one pair: what its search has asked for so far, plus the stages to come; a
    pair still in its lr stage counts the extensions it is expected to need (``extensions``,
    the run's own average so far, or the prior :func:`expected_extensions`)."""
    rules = config.rules()
    lrs = float(len(state.lr_grid))
    if state.stage == "lr":
        initial = len(rules.initial())
        extra = (expected_extensions(initial, rules.budget) if extensions is None
                 else extensions)
        lrs = max(lrs, min(float(rules.budget), initial + extra))
    wds = len(rules.weight_decays) if state.takes_weight_decay else 0
    return (lrs + wds) * len(rules.tuning_seeds) + len(rules.test_seeds)


def _interleaved(config: Config) -> list[tuple[str, str]]:
    # Round-robin over tasks, so that cheap and costly cells mix and the ETA holds.
    return [(t, o) for o in config.optimizers for t in config.tasks]


def results_lookup_rows(rows: Iterable[dict[str, Any]]) -> dict[CellSpec, dict[str, Any]]:
    """Rows by their cell key."""
    return {CellSpec(r["task"], r["optimizer"], r["hypers"], r["seed"], r["role"], r["device"],
                     r["schedule"]): r for r in rows}


def results_lookup(store: Store, config: Config) -> dict[CellSpec, dict[str, Any]]:
    """Every recorded cell of this version and device, by its key."""
    return results_lookup_rows(store.outcomes(config.version, config.device))


def run(config: Config, store: Store, progress: Progress | None = None,
        tally: Tally | None = None) -> Tally:
    """Run every missing cell of ``config``; finished cells are skipped.

    ``tally`` (updated as cells finish) tells a caller how far the run got, even when it is
    interrupted; it is also returned.
    """
    tally = tally if tally is not None else Tally()
    known = results_lookup(store, config)
    pairs = _interleaved(config)
    costs = cost_specs(config) + self_tuning_specs(config)
    tally.finished = _recorded(config, known, pairs)
    executor = make_executor(config)
    pending: dict[Any, CellSpec] = {}
    states: dict[tuple[str, str], Search] = {}
    initial = len(config.rules().initial())

    def advance(pair: tuple[str, str]) -> None:
        state = search(config, *pair, known.get)
        states[pair] = state
        inflight = set(pending.values())
        for spec in state.needed:
            if spec not in inflight:
                pending[executor.submit(spec)] = spec
        # The extensions that this run's finished lr stages needed, once there are a few.
        added = [len(s.lr_grid) - initial for s in states.values() if s.stage != "lr"]
        extensions = sum(added) / len(added) if len(added) >= 5 else None
        tally.total = round(sum(_estimate(config, s, extensions) for s in states.values())
                            + len(costs))

    try:
        for pair in pairs:
            advance(pair)
        for spec in costs:
            if spec not in known:
                pending[executor.submit(spec)] = spec
        if progress:
            progress(None, tally)
        while pending:
            done, _ = executor.wait(set(pending))
            for handle in done:
                spec = pending.pop(handle)
                result = executor.result(handle)
                store.save(spec, config.version, result)
                known[spec] = result
                tally.finished, tally.ran = tally.finished + 1, tally.ran + 1
                pair = (spec.task, spec.optimizer)
                # Its stage is complete: the search decides what is next (the cost and
                # self-tuning cells are no stage of any search).
                if spec.role not in TRACKS and all(
                        (s.task, s.optimizer) != pair for s in pending.values()
                        if s.role not in TRACKS):
                    advance(pair)
                if progress:
                    progress(spec, tally)
    except BaseException:
        executor.abort()
        raise
    executor.shutdown()
    return tally


def _recorded(config: Config, known: dict, pairs: Iterable[tuple[str, str]]) -> int:
    """How many cells of ``config`` are already in ``known``."""
    rules = config.rules()
    count = sum(s in known for s in cost_specs(config) + self_tuning_specs(config))
    for task, optimizer in pairs:
        state = search(config, task, optimizer, known.get)
        count += (len(state.lr_trials) + len(state.wd_trials)) * len(rules.tuning_seeds)
        if state.stage in ("final", "done"):
            count += sum(s in known for s in final_specs(rules, state))
    return count


def finished_cells(config: Config, store: Store) -> int:
    """The cells of ``config`` already recorded in ``store``."""
    return _recorded(config, results_lookup(store, config), _interleaved(config))


def expected_cells(config: Config) -> int:
    """The cells a run is expected to need: :func:`count_cells` plus the lr grids' expected
    extensions (:func:`expected_extensions`). An estimate: the grids extend as the results
    require."""
    rules = config.rules()
    extra = expected_extensions(len(rules.initial()), rules.budget) * len(rules.tuning_seeds)
    return round(count_cells(config) + extra * len(config.tasks) * len(config.optimizers))


def count_cells(config: Config) -> int:
    """The cells of a run before any grid extends (the progress total starts there)."""
    rules = config.rules()
    total = len(cost_specs(config)) + len(self_tuning_specs(config))
    for optimizer in config.optimizers:
        wds = len(rules.weight_decays) if takes_weight_decay(optimizer) else 0
        per_pair = (len(rules.initial()) + wds) * len(rules.tuning_seeds) + len(rules.test_seeds)
        total += per_pair * len(config.tasks)
    return total


# CPU seconds of one cell (one thread, AdamW's tuning and scored cells, start-up and
# evaluation included) per built-in task, measured on this project's 2-core machine at low
# load (the smallest of 6 cells). They reproduce the recorded runs' CPU time: quick 0.29 s a
# cell (measured 0.31: 405 s / 1,324 cells), the previous standard 2.03 s (measured 1.99:
# 51 min / 1,540 cells). ``CELL_FACTOR``: the optimizers' mean cell time over AdamW's (1.01
# measured for the 28 registered ones on stdlib-lm-1x, Lion 0.89x to MARS 1.11x; 1.1 leaves
# room for the heavier newer ones); ``COST_SECONDS``: one cost cell; ``REPORT_SECONDS``: the
# report.
CELL_SECONDS = {
    "digits-mlp": 0.14, "digits-cnn": 0.28, "diabetes-mlp": 0.15, "zen-char-gru": 0.6,
    "stdlib-lm": 4.1, "mnist1d-cnn": 1.5, "mnist1d-autoencoder": 0.5,
    "stdlib-lm-1x": 0.75, "stdlib-lm-8x": 5.1, "digits-convnet": 0.4,
    "rosenbrock": 0.2, "beale": 0.2, "rastrigin": 0.2,
}
COST_SECONDS, REPORT_SECONDS, CELL_FACTOR = 3.0, 60.0, 1.1


def estimated_seconds(config: Config, optimizers: int | None = None) -> float:
    """The run's expected wall time on an idle machine with one free core per worker: the
    expected cells (:func:`expected_cells`, the grids' extensions included) times each task's
    measured cell time (``CELL_SECONDS`` x ``CELL_FACTOR``), the cost cells and the
    self-tuning track, over ``config.workers``, plus the report. ``optimizers``: estimate for
    that many optimizers instead of the run's (each like the run's average). NaN when a task
    has no measured time (a task module's), or off the CPU (the times are CPU times)."""
    if config.device != "cpu" or any(t not in CELL_SECONDS for t in config.tasks):
        return float("nan")
    rules = config.rules()
    count = optimizers if optimizers is not None else len(config.optimizers)
    lrs = len(rules.initial()) + expected_extensions(len(rules.initial()), rules.budget)
    share = sum(takes_weight_decay(o) for o in config.optimizers) / len(config.optimizers)
    per_pair = (lrs + share * len(rules.weight_decays)) * len(rules.tuning_seeds) \
        + len(rules.test_seeds)
    seconds = sum(CELL_SECONDS[t] for t in config.tasks) * per_pair * count * CELL_FACTOR
    tracks = self_tuning_specs(config)
    seconds += sum(CELL_SECONDS[s.task] for s in tracks) * CELL_FACTOR
    seconds += len(cost_specs(config)) * COST_SECONDS * count / len(config.optimizers)
    return seconds / max(1, min(config.workers, os.cpu_count() or 1)) + REPORT_SECONDS


def eta(tally: Tally) -> float:
    """Seconds left, from the pace of the cells run so far (NaN before the first)."""
    if tally.ran == 0:
        return float("nan")
    pace = (time.monotonic() - tally.started) / tally.ran
    return max(0, tally.total - tally.finished) * pace


__all__ = ["PRESETS", "Config", "Preset", "Tally", "canonical", "count_cells",
           "estimated_seconds", "eta", "expected_cells", "expected_extensions",
           "self_tuning_specs",
           "finished_cells", "run", "search"]
