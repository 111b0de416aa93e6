"""One benchmark cell: train one task with one optimizer, one set of hypers and one seed.

A cell is deterministic given its key (task, optimizer, hypers, seed, role, device, schedule,
version): it seeds torch, runs on one thread, and its results hold no clock reading except the
timing columns (``seconds``, ``seconds_to_target``, ``step_time``, and the evals' seconds),
which are measurements, not outcomes.

The lr follows the cell's schedule: ``"cosine"`` (the standard: linear warm-up over the first
5 % of the steps, then a cosine decay to 0) or ``"constant"``. Every run records the validation
metric after each epoch (the curves of the report); a tuning run ("tune") is scored on the
validation split, a final run ("final") on the test split, once, at the end (and once
before training: the untrained model's value, ``extra["untrained"]``, the floor below which
the report counts the run as failed; it reads no training signal and leaves the random state
as it was). A "cost" cell
times ``step()`` on a model of more than 10M parameters instead (:mod:`.cost`).
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import math
import random
import time
import warnings
from typing import Any

import torch

from .. import registry
from ..training.evaluation import evaluating
from . import tasks as task_registry

# A loss above this many times the first one (or NaN/inf) counts as divergence.
DIVERGENCE_FACTOR = 1e3
CURVE_POINTS = 100
SCHEDULES = ("cosine", "constant")
# Roles scored on the test split: "final" (the tuned hypers) and "default" (the optimizer's
# own defaults, untuned: the self-tuning track).
SCORED = ("final", "default")
WARMUP = 0.05  # share of the steps spent warming up under the "cosine" schedule

# Failures of the machine, not of the optimizer: a missing package or data file, an unreadable
# file, no memory left. A cell that raises one stops the run (EnvironmentFailure) instead of
# being recorded as the optimizer's failure; rows recorded so by older versions are not trusted.
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (ImportError, OSError, MemoryError)
ENVIRONMENT_ERROR_NAMES = frozenset(
    name for name, kind in vars(builtins).items()
    if isinstance(kind, type) and issubclass(kind, ENVIRONMENT_ERRORS))


class EnvironmentFailure(Exception):
    """A cell could not run for a reason that is not the optimizer's: the environment (see
    ``ENVIRONMENT_ERRORS``), a task module that does not load, or a task whose ``build``
    raises. Its message names the cell and the original error; never recorded as a result."""


def is_environment_error(error: str | None) -> bool:
    """Whether a recorded error text (``"Type: message"``) is an environment failure."""
    return bool(error) and error.split(":", 1)[0].strip() in ENVIRONMENT_ERROR_NAMES


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """The key of one cell. ``hypers`` is canonical JSON (sorted keys)."""

    task: str
    optimizer: str
    hypers: str
    seed: int
    role: str  # "tune" (validation split), "final" / "default" (test split), "cost" (timing)
    device: str = "cpu"
    schedule: str = "cosine"

    @staticmethod
    def make(task: str, optimizer: str, hypers: dict[str, Any], seed: int, role: str,
             device: str = "cpu", schedule: str = "cosine") -> CellSpec:
        return CellSpec(task, optimizer, canonical(hypers), seed, role, device, schedule)

    @property
    def lr(self) -> float:
        return float(json.loads(self.hypers).get("lr", 0.0))

    @property
    def weight_decay(self) -> float | None:
        return json.loads(self.hypers).get("weight_decay")


def canonical(hypers: dict[str, Any]) -> str:
    """Hyper-parameters as canonical JSON (sorted keys), the form cells are keyed by."""
    return json.dumps(hypers, sort_keys=True, separators=(",", ":"))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state (every tensor in ``state_dict()['state']``)."""
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(optimizer.state_dict().get("state", {}))
    return total


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is a dependency, but a cell must not die for it
        pass


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str):
    """The clock of a cell's training seconds (its time to target and step time).

    On a CPU, the cell thread's CPU seconds: a cell runs on one thread (``set_num_threads(1)``)
    and autograd runs a CPU backward on the calling thread, so this is the time the run takes
    on an idle core, however busy the machine is. Wall-clock seconds on a shared machine made
    the same cell 1 s or 50 s (one standard run: LARS on stdlib-lm-1x took 51 s a cell, its
    neighbours about 1 s). On CUDA, wall-clock seconds between synchronizations."""
    return time.perf_counter if device.startswith("cuda") else time.thread_time


def _thin(points: list, limit: int = CURVE_POINTS) -> list:
    """At most ``limit`` evenly spaced points, always keeping the last one."""
    if len(points) <= limit:
        return points
    stride = len(points) / limit
    picked = [points[int(i * stride)] for i in range(limit - 1)]
    return picked + [points[-1]]


def run_cell(spec: CellSpec, task_modules: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train one cell and return its results (a flat dict of JSON-able values).

    ``task_modules`` (``--task-module``) are loaded first, once per process: a pool worker
    knows only the built-in tasks. A module that fails to load is an environment failure."""
    for module in task_modules:
        try:
            task_registry.load_module(module)
        except Exception as err:  # noqa: BLE001  (never the optimizer's failure)
            raise EnvironmentFailure(f"{spec.task} / {spec.optimizer}: {err} (a task module "
                                     "that does not load)") from None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per cell: deterministic and fair between workers
    cpu = time.process_time()
    # Warnings of a cell (e.g. an overflow as a run diverges) are counted in its result, not
    # printed between the progress lines.
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if spec.role == "cost":
                from .cost import measure

                result = measure(spec)
            else:
                result = _train(spec)
    except EnvironmentFailure:
        raise
    except ENVIRONMENT_ERRORS as err:
        raise EnvironmentFailure(
            f"environment error in {spec.task} / {spec.optimizer} ({spec.role}, lr "
            f"{spec.lr:g}, seed {spec.seed}): {type(err).__name__}: {err}") from None
    except Exception as err:  # noqa: BLE001  (one broken optimizer must not end the run)
        result = failed(err)
    finally:
        torch.set_num_threads(threads)
    # CPU seconds: what the cell would take on an idle core, however busy the machine was.
    result["extra"] = {**result["extra"], "cpu_seconds": time.process_time() - cpu}
    if caught:
        kinds = dict.fromkeys(f"{w.category.__name__}: {w.message}"[:200] for w in caught)
        result["extra"]["warnings"] = len(caught)
        result["extra"]["warning_texts"] = list(kinds)[:3]
    return result


def failed(err: BaseException) -> dict[str, Any]:
    """The result of a cell that raised: recorded (with the error) and ranked as diverged."""
    return {
        "final_metric": float("nan"), "diverged": 1, "steps": 0, "steps_to_target": None,
        "seconds": 0.0, "seconds_to_target": None, "step_time": 0.0,
        "state_bytes_per_param": 0.0, "n_params": 0, "losses": [], "evals": [], "path": None,
        "extra": {}, "error": f"{type(err).__name__}: {err}"[:500],
    }


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int):
    """The cell's lr schedule over ``total_steps`` steps (None for a constant lr)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "constant" or total_steps < 2:
        return None
    from ..schedules import HyperScheduler, cosine, linear, phases

    warm = max(1, round(WARMUP * total_steps))
    share = warm / total_steps
    per_group = [phases((share, linear(g["lr"] / warm, g["lr"])), (1 - share, cosine(g["lr"], 0.0)))
                 for g in optimizer.param_groups]
    return HyperScheduler(optimizer, total_steps, lr=per_group)


def _train(spec: CellSpec) -> dict[str, Any]:
    _seed_everything(spec.seed)
    task = task_registry.get(spec.task)
    try:
        instance = task.build(spec.seed, spec.device)
    except ENVIRONMENT_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001  (no optimizer exists yet: never its failure)
        raise EnvironmentFailure(f"task {spec.task} failed to build (seed {spec.seed}), before "
                                 f"any optimizer ran: {type(err).__name__}: {err}") from None
    model = instance.model
    # A scored run's floor: the untrained model on the test split. A run that ends worse has
    # learnt nothing (the report counts it as failed). The random state is kept as it was, so
    # the training that follows is the same with or without this evaluation.
    untrained = _untouched(lambda: _finite(instance.evaluate("test"))) \
        if spec.role in SCORED else None
    params = [p for p in model.parameters() if p.requires_grad]
    # An optimizer that routes params by kind (its entry's model_groups: Muon's matrices vs the
    # rest) gets the model; every other one the flat list of params, as it always did.
    routed = getattr(registry.get(spec.optimizer), "model_groups", None) is not None
    optimizer = registry.create(spec.optimizer, model if routed else params,
                                **json.loads(spec.hypers))
    groups = group_lrs(optimizer)
    total_steps = task.epochs * instance.steps_per_epoch
    scheduler = lr_scheduler(optimizer, spec.schedule, total_steps)
    n_params = sum(p.numel() for p in params)
    path = [] if task.illustrative else None

    losses: list[tuple[int, float]] = []
    evals: list[tuple[int, float, float]] = []  # (step, metric, seconds)
    step, seconds, step_seconds = 0, 0.0, 0.0
    now = clock(spec.device)
    first_loss, diverged = None, False
    steps_to_target = seconds_to_target = None
    for _epoch in range(task.epochs):
        for inputs, targets in instance.batches():
            if path is not None:
                path.append([float(v) for v in model.xy.detach()])
            _sync(spec.device)
            start = now()
            optimizer.zero_grad(set_to_none=True)
            loss = instance.loss_fn(model(inputs), targets)
            loss.backward()
            _sync(spec.device)
            mid = now()
            optimizer.step()
            _sync(spec.device)
            end = now()
            if scheduler is not None:
                scheduler.step()
            seconds += end - start
            step_seconds += end - mid
            step += 1
            value = float(loss.detach())
            first_loss = value if first_loss is None else first_loss
            losses.append((step, value))
            limit = DIVERGENCE_FACTOR * max(abs(first_loss), 1e-12)
            if not math.isfinite(value) or abs(value) > limit:
                diverged = True
                break
        # at the optimizer's evaluation point (Schedule-Free's averaged params), then back
        with evaluating(optimizer):
            metric = _finite(instance.evaluate("val")) if not diverged else float("nan")
        evals.append((step, metric, seconds))
        if steps_to_target is None and task.reached(metric):
            steps_to_target, seconds_to_target = step, seconds
        if diverged:
            break
    if path is not None:
        path.append([float(v) for v in model.xy.detach()])
    final = evals[-1][1]
    if spec.role != "tune" and not diverged:
        with evaluating(optimizer):
            final = _finite(instance.evaluate("test"))  # the test split, read once trained

    return {
        "final_metric": final,
        "diverged": int(diverged),
        "steps": step,
        "steps_to_target": steps_to_target,
        "seconds": seconds,
        "seconds_to_target": seconds_to_target,
        "step_time": step_seconds / max(step, 1),
        "state_bytes_per_param": state_bytes(optimizer) / max(n_params, 1),
        "n_params": n_params,
        "losses": _thin(losses),
        "evals": evals,
        "path": path,
        "extra": {**({} if untrained is None else {"untrained": untrained}),
                  **({"groups": groups} if groups else {})},
        "error": None,
    }


# Param-group keys that name a group's family (the first one present is used).
GROUP_LABELS = ("family", "name", "kind", "role")


def group_lrs(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The lr each param family got, when the optimizer has several param groups (an entry's
    ``model_groups`` routing matrices and the rest, say): per group its label (the first of
    ``GROUP_LABELS`` it holds, ``"use_muon"`` as matrices / other, else its index), ``lr``,
    any other ``*_lr`` number it holds (an auxiliary optimizer's), and its parameter count.
    Empty for a single group: its lr is the cell's."""
    groups = getattr(optimizer, "param_groups", [])
    if len(groups) < 2:
        return []
    out = []
    for index, group in enumerate(groups):
        label = next((str(group[k]) for k in GROUP_LABELS if isinstance(group.get(k), str)),
                     None)
        if label is None and "use_muon" in group:
            label = "matrices" if group["use_muon"] else "other"
        item: dict[str, Any] = {"family": label or f"group {index}",
                                "params": sum(p.numel() for p in group["params"])}
        for key, value in group.items():
            if (key == "lr" or key.endswith("_lr")) and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                item[key] = float(value)
        out.append(item)
    return out


def _untouched(fn):
    """``fn()`` with every random generator (torch, Python, numpy) left as it was."""
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    try:
        import numpy as np

        numpy_state = np.random.get_state()
    except ImportError:
        np = numpy_state = None
    try:
        return fn()
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        if np is not None:
            np.random.set_state(numpy_state)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else float("nan")
