"""The 1cycle policy (Smith 2018, arXiv:1803.09820; "The 1cycle policy", S. Gugger 2018)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from .curves import Curve, Piecewise, constant, cosine, linear
from .scheduler import HyperScheduler


@dataclasses.dataclass(frozen=True)
class Preset:
    pct_start: float
    div: float
    final_div: float
    moms: tuple[float, float, float]
    anneal: str
    three_phase: bool
    # OneCycleLR ends a phase at pct * T - 1 (a fraction of a step early); the others at
    # pct * (T - 1), so that the peak falls exactly on a step.
    torch_ends: bool = False


PRESETS = {
    # torch.optim.lr_scheduler.OneCycleLR defaults; its final_div_factor=1e4 is relative to the
    # initial lr (max_lr / 25), so relative to max_lr it is 25 * 1e4.
    "torch": Preset(0.3, 25.0, 25.0 * 1e4, (0.95, 0.85, 0.95), "cos", False, torch_ends=True),
    # fastai's fit_one_cycle: pct_start=0.25, div=25, div_final=1e5, moms=(0.95, 0.85, 0.95).
    "fastai": Preset(0.25, 25.0, 1e5, (0.95, 0.85, 0.95), "cos", False),
    # Smith 2018: linear up over 45%, linear down over 45%, then annihilate to 1/100 of the
    # start lr over the last 10%; momentum mirrors the first two phases, then stays high.
    "paper": Preset(0.45, 10.0, 10.0 * 100, (0.95, 0.85, 0.95), "linear", True),
}
_CURVES = {"cos": cosine, "linear": linear}


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be a number > 0")
    return float(value)


def total_optimizer_steps(epochs: int, steps_per_epoch: int, accum_steps: int = 1) -> int:
    """Optimizer steps in ``epochs`` epochs of ``steps_per_epoch`` micro-batches, stepping
    every ``accum_steps`` micro-batches (a last partial accumulation still steps)."""
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch),
                        ("accum_steps", accum_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid {name}: {value!r}; {name} must be an int >= 1")
    return epochs * math.ceil(steps_per_epoch / accum_steps)


class OneCycle(HyperScheduler):
    """The 1cycle policy: lr warms up from ``max_lr / div`` to ``max_lr`` then anneals to
    ``max_lr / final_div``, while momentum (``betas[0]`` for Adam-like optimizers) goes the
    other way, from ``moms[0]`` down to ``moms[1]`` and back to ``moms[2]``.

    Stepped like a torch scheduler: ``optimizer.step(); scheduler.step()`` once per optimizer
    step. ``total_steps`` counts optimizer steps; or give ``epochs`` and ``steps_per_epoch``
    (micro-batches) with ``accum_steps`` for gradient accumulation.

    Presets (every field can be overridden by keyword):

    * ``"torch"`` (default): ``torch.optim.lr_scheduler.OneCycleLR`` step for step, lr and
      momentum: two cosine phases, pct_start=0.3, div=25, final lr ``max_lr / 25 / 1e4``,
      momentum 0.95 -> 0.85 -> 0.95. ``final_div`` here is relative to ``max_lr`` (torch's
      ``final_div_factor`` is relative to the start lr), hence 2.5e5.
    * ``"fastai"``: the shape of ``fit_one_cycle``: cosine, pct_start=0.25, div=25,
      final_div=1e5, moms (0.95, 0.85, 0.95). Progress is ``t / (T - 1)`` (fastai uses
      ``t / T``), so the last step reaches the final lr.
    * ``"paper"``: Smith's three linear phases: up over pct_start=0.45, down to the start lr
      over another 0.45, then down to ``max_lr / final_div`` (div=10, final_div=1000, i.e.
      1/100 of the start lr); momentum 0.95 -> 0.85 -> 0.95, then held.

    ``cycle_momentum``: cycle momentum in every group that has ``momentum`` or ``betas``
    (a group with neither, e.g. Adagrad's, gets the lr cycle only; torch raises there). As in
    torch, SGD built with momentum=0 gets momentum when it is cycled.
    Past the end the final values hold (``on_overrun="raise"`` raises instead); torch gives
    a value past the end on step ``total_steps`` and raises after it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        *,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        accum_steps: int = 1,
        preset: str = "torch",
        pct_start: float | None = None,
        div: float | None = None,
        final_div: float | None = None,
        moms: Sequence[float] | None = None,
        anneal: str | None = None,
        cycle_momentum: bool = True,
        on_overrun: str = "hold",
        last_epoch: int = -1,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"Invalid preset: {preset!r}; choose from {sorted(PRESETS)}")
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("give total_steps, or epochs and steps_per_epoch")
            total_steps = total_optimizer_steps(epochs, steps_per_epoch, accum_steps)
        base = PRESETS[preset]
        self.preset = dataclasses.replace(
            base,
            pct_start=base.pct_start if pct_start is None else pct_start,
            div=base.div if div is None else _positive("div", div),
            final_div=base.final_div if final_div is None else _positive("final_div", final_div),
            moms=base.moms if moms is None else tuple(float(m) for m in moms),
            anneal=base.anneal if anneal is None else anneal,
        )
        self._check_preset(self.preset)
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"max_lr: got {len(max_lrs)} values for {len(groups)} param groups")
        max_lrs = [_positive("max_lr", lr) for lr in max_lrs]
        steps = self._ends(total_steps)
        schedules: dict[str, Any] = {"lr": [self._lr_curve(lr, steps) for lr in max_lrs]}
        if cycle_momentum:
            has = [("momentum" in g or "betas" in g) for g in groups]
            if any(has):
                momentum = self._momentum_curve(steps)
                # None: a group without momentum or betas is left alone.
                schedules["momentum"] = [momentum if h else None for h in has]
        super().__init__(
            optimizer, total_steps, schedules,
            on_overrun=on_overrun, last_epoch=last_epoch,
        )

    @staticmethod
    def _check_preset(p: Preset) -> None:
        if not isinstance(p.pct_start, (int, float)) or not 0.0 <= p.pct_start <= 1.0:
            raise ValueError(f"Invalid pct_start: {p.pct_start!r}; it must be in [0, 1]")
        if p.three_phase and p.pct_start > 0.5:
            raise ValueError(f"Invalid pct_start: {p.pct_start!r}; the paper form needs <= 0.5")
        if p.anneal not in _CURVES:
            raise ValueError(f"Invalid anneal: {p.anneal!r}; choose from {sorted(_CURVES)}")
        if len(p.moms) != 3:
            raise ValueError(f"Invalid moms: {p.moms!r}; give (start, middle, end)")

    def _ends(self, total_steps: int) -> list[float]:
        """Phase ends in steps, where OneCycleLR places them."""
        p, last = self.preset, float(total_steps - 1)
        if p.torch_ends:
            ends = [float(p.pct_start * total_steps) - 1]
            if p.three_phase:
                ends.append(float(2 * p.pct_start * total_steps) - 2)
        else:
            ends = [p.pct_start * last] + ([2 * p.pct_start * last] if p.three_phase else [])
        return ends + [last]

    def _lr_curve(self, max_lr: float, ends: list[float]) -> Piecewise:
        p, curve = self.preset, _CURVES[self.preset.anneal]
        start = max_lr / p.div
        # (max_lr / div) / (final_div / div): torch's exact float for its min_lr.
        final = start / (p.final_div / p.div)
        pieces: list[Curve] = [curve(start, max_lr)]
        if p.three_phase:
            pieces += [curve(max_lr, start), curve(start, final)]
        else:
            pieces.append(curve(max_lr, final))
        return Piecewise(ends, pieces, span=ends[-1])

    def _momentum_curve(self, ends: list[float]) -> Piecewise:
        p, curve = self.preset, _CURVES[self.preset.anneal]
        high, low, end = p.moms
        pieces: list[Curve] = [curve(high, low), curve(low, end)]
        if p.three_phase:
            pieces.append(constant(end))
        return Piecewise(ends, pieces, span=ends[-1])
