"""``HyperScheduler``: drive any hyper-parameter of any optimizer by a schedule of progress.

It is a ``torch.optim.lr_scheduler.LRScheduler``: build it after the optimizer, call
``optimizer.step()`` then ``scheduler.step()`` once per optimizer step. Step ``t`` of ``T``
(``total_steps``) gets the value at progress ``t / (T - 1)``, so the first step uses the start
value and the last step the end value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..core.optimizer import rules_for
from ..core.rules import CONVENTIONS
from .curves import Schedule, as_schedule

OVERRUN = ("hold", "raise")
_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")


def resolve(group: Mapping[str, Any], name: str) -> tuple[str, int | None]:
    """Where ``name`` lives in ``group``: ``(key, index)``; index is None for a plain value.

    ``"momentum"`` is ``betas[0]`` for a group with ``betas`` and no ``momentum`` (Adam family).
    """
    match = _INDEXED.match(name)
    if match:
        key, index = match.group(1), int(match.group(2))
    elif name == "momentum" and "momentum" not in group and "betas" in group:
        key, index = "betas", 0
    else:
        key, index = name, None
    if key not in group:
        raise ValueError(
            f"cannot schedule {name!r}: the param group has no {key!r} "
            f"(it has {', '.join(k for k in group if k != 'params')})"
        )
    if index is not None and not 0 <= index < len(group[key]):
        raise ValueError(f"cannot schedule {name!r}: {key} has {len(group[key])} entries")
    return key, index


def read_hyper(group: Mapping[str, Any], name: str) -> float:
    """A group's value of the hyper-parameter ``name`` (``momentum`` resolves to ``betas[0]`` where
    the group has betas)."""
    key, index = resolve(group, name)
    value = group[key] if index is None else group[key][index]
    return float(value)


def check_hyper(
    group: Mapping[str, Any], name: str, value: float, rules: Mapping[str, Sequence] | None = None
) -> None:
    """Raise ``ValueError`` if one of the optimizer's rules for ``name`` refuses ``value``.

    ``rules``: name -> rules, as ``optimkit.core.optimizer.rules_for(optimizer)`` gives them
    (default: torch.optim's conventions).
    """
    key, index = resolve(group, name)
    checks = (CONVENTIONS if rules is None else rules).get(key, ())
    if not checks:
        return
    candidate: Any = value
    if index is not None:
        items = [float(v) for v in group[key]]
        items[index] = value
        candidate = tuple(items)
    try:
        for check in checks:
            check(key, candidate)
    except ValueError as err:
        raise ValueError(f"the schedule for {name!r} gives {value!r}: {err}") from None


def write_hyper(
    group: MutableMapping[str, Any], name: str, value: float,
    rules: Mapping[str, Sequence] | None = None,
) -> None:
    """Set ``name`` in ``group`` to ``value``, after checking it with the optimizer's rules.

    A tensor hyper-parameter is filled in place (no recompile under torch.compile); a tuple
    such as ``betas`` is rebuilt with only entry ``index`` changed.
    """
    check_hyper(group, name, value, rules)
    key, index = resolve(group, name)
    old = group[key]
    if index is None:
        if isinstance(old, torch.Tensor):
            old.fill_(value)
        else:
            group[key] = value
    elif isinstance(old[index], torch.Tensor):
        old[index].fill_(value)
    else:
        items = list(old)
        items[index] = value
        group[key] = tuple(items) if isinstance(old, tuple) else items


def _per_group(name: str, value: Any, groups: int) -> list[Schedule | None]:
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ValueError(
                f"{name}: got {len(value)} schedules for {groups} param groups; "
                "give one schedule, or one per group (None leaves a group alone)"
            )
        return [None if v is None else as_schedule(v) for v in value]
    return [as_schedule(value)] * groups


def _check_total_steps(total_steps: Any) -> int:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"Invalid total_steps: {total_steps!r}; it must be an int >= 1")
    return total_steps


class HyperScheduler(LRScheduler):
    """Schedule hyper-parameters by name over ``total_steps`` optimizer steps.

    ``schedules`` maps a name to a schedule (or one per param group): ``"lr"``,
    ``"momentum"`` (``betas[0]`` for Adam-like groups, keeping ``betas[1]``), ``"betas[0]"``,
    ``"weight_decay"``, or any other key of the param groups. Numbers are constants and any
    ``f(progress) -> float`` works. Every value is checked with the optimizer's own rule for
    that name (so a beta never reaches 1) and a bad one raises ``ValueError`` naming it.

    ``on_overrun``: what a ``step()`` past the end does. ``"hold"`` (default) keeps the final
    values; ``"raise"`` raises ``ValueError`` once the scheduler is stepped more than
    ``total_steps`` times (the ``total_steps``-th call, after the last optimizer step, is
    allowed, as in torch).

    ``state_dict()`` holds the step count (the schedules are code, like torch's lambdas), so
    ``load_state_dict`` on a fresh scheduler with the same schedules resumes exactly.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        schedules: Mapping[str, Any] | None = None,
        *,
        on_overrun: str = "hold",
        last_epoch: int = -1,
        **named: Any,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        self.total_steps = _check_total_steps(total_steps)
        if on_overrun not in OVERRUN:
            raise ValueError(f"Invalid on_overrun: {on_overrun!r}; choose from {OVERRUN}")
        self.on_overrun = on_overrun
        merged = {**(schedules or {}), **named}
        self.rules = rules_for(optimizer)
        groups = optimizer.param_groups
        self.schedules = {name: _per_group(name, v, len(groups)) for name, v in merged.items()}
        self._check_bounds(groups)
        super().__init__(optimizer, last_epoch)

    def _check_bounds(self, groups: Sequence[Mapping[str, Any]]) -> None:
        # Both ends of a monotone schedule are its extremes: refuse bad values now, not mid-run.
        for name, per_group in self.schedules.items():
            for group, schedule in zip(groups, per_group, strict=True):
                if schedule is None:
                    continue
                for bound in schedule.bounds:
                    if math.isfinite(bound):
                        check_hyper(group, name, bound, self.rules)

    # ------------------------------------------------------------ values
    def progress(self, step: int) -> float:
        """Training progress at optimizer step ``step`` (0-based): ``step / (total_steps - 1)``."""
        if self.total_steps == 1:
            return 1.0
        return min(max(step / (self.total_steps - 1), 0.0), 1.0)

    def values(self, step: int) -> dict[str, list[float | None]]:
        """Every scheduled hyper-parameter at ``step``, one value per param group (None for a
        group the schedule leaves alone)."""
        step = min(max(step, 0), self.total_steps - 1)  # past the end: hold
        return {
            name: [None if s is None else s.at_step(step, self.total_steps) for s in per_group]
            for name, per_group in self.schedules.items()
        }

    def _apply(self, step: int) -> list[Any]:
        if step > self.total_steps and self.on_overrun == "raise":
            raise ValueError(
                f"the scheduler was stepped {step} times but total_steps is {self.total_steps}; "
                "pass on_overrun='hold' to keep the final values"
            )
        values = self.values(step)
        groups = self.optimizer.param_groups
        for name, per_group in values.items():
            if name != "lr":
                for group, value in zip(groups, per_group, strict=True):
                    if value is not None:
                        write_hyper(group, name, value, self.rules)
        lrs = values.get("lr", [None] * len(groups))
        return [group["lr"] if lr is None else lr for group, lr in zip(groups, lrs, strict=True)]

    def get_lr(self) -> list[Any]:
        lrs = self._apply(self.last_epoch)
        # Validate lrs here; LRScheduler.step writes them (filling tensor lrs in place).
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            check_hyper(group, "lr", float(lr), self.rules)
        return lrs

    def get_last_values(self) -> dict[str, list[float]]:
        """The scheduled hyper-parameters as the optimizer now holds them."""
        return {
            name: [
                None if s is None else read_hyper(g, name)
                for g, s in zip(self.optimizer.param_groups, per_group, strict=True)
            ]
            for name, per_group in self.schedules.items()
        }

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "total_steps": self.total_steps,
            "on_overrun": self.on_overrun,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the step count and write that step's values back into the optimizer."""
        if int(state_dict["total_steps"]) != self.total_steps:
            raise ValueError(
                f"the checkpoint was made with total_steps={state_dict['total_steps']}, "
                f"this scheduler has total_steps={self.total_steps}"
            )
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        self.on_overrun = state_dict.get("on_overrun", self.on_overrun)
        lrs = self._apply(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            write_hyper(group, "lr", float(lr), self.rules)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
