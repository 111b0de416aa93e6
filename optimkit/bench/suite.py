"""The protocol: which cells run, in what order, on which executor.

For every (task, optimizer):

1. **tune**: the same log-grid of ``budget`` learning rates for every optimizer,
   ``lr = 10 ** linspace(-4, 0, budget)``, one run each on seed 0, scored on the validation
   split. Every other hyper-parameter stays at the optimizer's default.
2. **final**: the best lr (best validation metric among the runs that did not diverge; ties go
   to the smaller lr) is run on seeds 1..``seeds`` and scored on the test split.

The final runs of a pair start as soon as its tuning runs are done. Cells run inline
(``workers=1``), in a local process pool (``concurrent.futures``) or on Ray; the parent process
alone writes the database, one transaction per finished cell, and skips finished cells.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

from .. import __version__, registry
from . import tasks as task_registry
from .runner import CellSpec, canonical, run_cell
from .store import Store

LR_LOW, LR_HIGH = -4.0, 0.0  # log10 bounds of the learning-rate grid
TUNING_SEED = 0


@dataclasses.dataclass(frozen=True)
class Config:
    """One ``optimkit bench`` run; stored in the database so that ``--resume`` can replay it."""

    optimizers: tuple[str, ...]
    tasks: tuple[str, ...]
    seeds: int = 3
    budget: int = 5
    device: str = "cpu"
    workers: int = 1
    executor: str = "local"
    version: str = __version__

    def __post_init__(self) -> None:
        for name in self.optimizers:
            registry.get(name)  # ValueError naming it
        for name in self.tasks:
            task_registry.get(name)
        if not self.optimizers:
            raise ValueError("optimizers: give at least one")
        if not self.tasks:
            raise ValueError("tasks: give at least one")
        for field, low in (("seeds", 1), ("budget", 1), ("workers", 1)):
            value = getattr(self, field)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{field} must be an int >= {low}, got {value!r}")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor must be 'local' or 'ray', got {self.executor!r}")
        check_device(self.device)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lr_grid": lr_grid(self.budget)}

    @staticmethod
    def from_json(data: dict[str, Any], **override: Any) -> Config:
        fields = {f.name for f in dataclasses.fields(Config)}
        kept = {k: v for k, v in data.items() if k in fields and k != "version"}
        kept["optimizers"], kept["tasks"] = tuple(kept["optimizers"]), tuple(kept["tasks"])
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


def lr_grid(budget: int) -> list[float]:
    """``budget`` learning rates, evenly spaced in log10 from 1e-4 to 1 (1e-2 alone if 1)."""
    if budget == 1:
        return [1e-2]
    step = (LR_HIGH - LR_LOW) / (budget - 1)
    return [float(f"{10 ** (LR_LOW + i * step):.6g}") for i in range(budget)]


def tuning_specs(config: Config, task: str, optimizer: str) -> list[CellSpec]:
    return [CellSpec.make(task, optimizer, {"lr": lr}, TUNING_SEED, "tune", config.device)
            for lr in lr_grid(config.budget)]


def best_lr(task: str, rows: Iterable[dict[str, Any]]) -> float:
    """The tuned lr: best validation metric among runs that did not diverge, then smaller lr."""
    spec = task_registry.get(task)
    rows = sorted(rows, key=lambda r: r["lr"])
    pool = [r for r in rows if not r["diverged"] and not math.isnan(r["final_metric"])] or rows
    best = pool[0]
    for row in pool[1:]:
        if spec.worse(best["final_metric"], row["final_metric"]):
            best = row
    return best["lr"]


def final_specs(config: Config, task: str, optimizer: str, lr: float) -> list[CellSpec]:
    return [CellSpec.make(task, optimizer, {"lr": lr}, seed, "final", config.device)
            for seed in range(1, config.seeds + 1)]


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


def _watch_parent(pid: int, period: float = 0.5) -> None:
    """In a pool worker: exit as soon as the bench process ``pid`` is gone (kill -9 included)."""

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

    def __init__(self, workers: int):
        methods = multiprocessing.get_all_start_methods()
        method = "forkserver" if "forkserver" in methods else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["optimkit.bench.runner", "sklearn.datasets"])
        self.pool = futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_watch_parent,
            initargs=(os.getpid(),))

    def submit(self, spec: CellSpec):
        return self.pool.submit(run_cell, spec)

    def wait(self, pending: set) -> tuple[set, set]:
        done, rest = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
        return done, rest

    def result(self, handle) -> dict[str, Any]:
        return handle.result()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """The same cells as Ray tasks (optional extra ``ray``); joins a running Ray or starts one."""

    def __init__(self, workers: int):
        try:
            import ray
        except ImportError:
            raise ValueError("executor 'ray' needs Ray: pip install 'optimkit[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        self.remote = ray.remote(num_cpus=1)(run_cell)

    def submit(self, spec: CellSpec):
        return self.remote.remote(spec)

    def wait(self, pending: set) -> tuple[set, set]:
        done, rest = self.ray.wait(list(pending), num_returns=1)
        return set(done), set(rest)

    def result(self, handle) -> dict[str, Any]:
        return self.ray.get(handle)

    def shutdown(self) -> None:
        pass  # a Ray instance outlives the run: the caller (or its exit) shuts it down


def make_executor(config: Config):
    if config.executor == "ray":
        return RayExecutor(config.workers)
    if config.workers == 1:
        return InlineExecutor()
    return PoolExecutor(config.workers)


# ------------------------------------------------------------------ the run
Progress = Callable[[CellSpec, int, int], None]


def count_cells(config: Config) -> int:
    per_pair = config.budget + config.seeds
    return per_pair * len(config.tasks) * len(config.optimizers)


def run(config: Config, store: Store, progress: Progress | None = None) -> int:
    """Run every missing cell of ``config``; returns how many ran (finished ones are skipped)."""
    total, finished, ran = count_cells(config), 0, 0
    executor = make_executor(config)
    pending: dict[Any, CellSpec] = {}
    tuning_left: dict[tuple[str, str], set[CellSpec]] = {}

    def start(spec: CellSpec) -> None:
        nonlocal finished
        if store.done(spec, config.version):
            finished += 1
            if progress:
                progress(spec, finished, total)
            on_done(spec)
            return
        pending[executor.submit(spec)] = spec

    def on_done(spec: CellSpec) -> None:
        if spec.role != "tune":
            return
        key = (spec.task, spec.optimizer)
        tuning_left[key].discard(spec)
        if not tuning_left[key]:
            grid = {s.hypers for s in tuning_specs(config, *key)}
            rows = [r for r in store.tuning_rows(*key, config.version, config.device)
                    if r["hypers"] in grid]
            for final in final_specs(config, *key, best_lr(spec.task, rows)):
                start(final)

    try:
        for task in config.tasks:
            for optimizer in config.optimizers:
                specs = tuning_specs(config, task, optimizer)
                tuning_left[(task, optimizer)] = set(specs)
                for spec in specs:
                    start(spec)
        while pending:
            done, _ = executor.wait(set(pending))
            for handle in done:
                spec = pending.pop(handle)
                result = executor.result(handle)
                store.save(spec, config.version, result)
                finished, ran = finished + 1, ran + 1
                if progress:
                    progress(spec, finished, total)
                on_done(spec)
    finally:
        executor.shutdown()
    return ran


def rich_progress(total: int, enabled: bool):
    """A rich progress bar (cells done / total), or None when off, not a TTY or rich absent."""
    if not enabled or not sys.stderr.isatty():
        return None, None
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

    def update(spec: CellSpec, finished: int, _total: int) -> None:
        lr = json.loads(spec.hypers)["lr"]
        bar.update(handle, completed=finished,
                   description=f"{spec.task} / {spec.optimizer} lr={lr:g} seed={spec.seed}")

    return bar, update


__all__ = ["Config", "best_lr", "canonical", "count_cells", "lr_grid", "run"]
