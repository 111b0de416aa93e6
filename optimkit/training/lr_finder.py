"""The LR range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks",
arXiv:1506.01186, section 3.3), with several suggestions and an exact restore.

The lr grows from ``start_lr`` to ``end_lr`` over ``num_steps`` optimizer steps
(geometrically by default); the loss of each step is smoothed with an exponential moving
average (``smoothing=0.98``, bias-corrected) and the sweep stops early once the smoothed loss
exceeds ``best + diverge * |best|`` (valid for negative losses too) or is not finite.
Afterwards the model, the optimizer and the RNG are put back exactly as they were.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .evaluation import _switchable
from .snapshot import Snapshot

MODES = ("exponential", "linear")
MAX_CALLS_WITHOUT_STEP = 10_000


# ---------------------------------------------------------------- the result
@dataclasses.dataclass
class LRFindResult:
    """What ``lr_find`` measured, and what it suggests.

    ``lrs`` are the lrs of the reference param group (the one with the largest lr; the others
    moved in proportion, ``ratios``). ``losses`` are the raw losses (the mean over the
    micro-batches of a step), ``smoothed`` the bias-corrected moving average.

    Suggestions (all on the reference group's scale):

    * ``steepest``: where the loss falls fastest per unit of log-lr (a derivative that
      honours the geometric spacing of the lrs), searched before the lowest loss;
    * ``valley``: the middle of the longest stretch over which the loss keeps falling
      (the longest decreasing subsequence), robust to a noisy or shallow curve;
    * ``minimum/10``: a tenth of the lr at the lowest loss;
    * ``minimum/3``: a third of the lr at the lowest loss.

    ``suggestion`` and ``apply()`` use ``minimum/3`` (``DEFAULT_RULE``): over the seven real
    tasks of ``optimkit bench`` (its ``standard`` preset, warm-up + cosine, and the ``quick``
    tasks at a constant lr) and all 20 optimizers, it landed closest to the lr the bench's
    tuning picked more often than the other rules, and chose a poor lr least often
    (``valley`` was about two decades too low there). The measured tables ship with the
    package: :func:`rule_tables`.

    They read the raw losses under a centred moving average (``centred_average``), not the
    running average, whose lag would push them towards larger lrs.

    ``agreement`` is how many decades separate the highest and the lowest suggestion: 0 means
    they agree; more than about 1 means the curve is ambiguous, so look at the plot.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    ratios: list[float]
    stop_reason: str
    suggestions: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.suggestions:
            self.suggestions = suggest(self.lrs, self.losses)

    @property
    def suggestion(self) -> float | None:
        """The recommended suggestion, ``DEFAULT_RULE``'s (None when the sweep was too short
        to suggest anything)."""
        return self.suggestions.get(DEFAULT_RULE)

    @property
    def agreement(self) -> float:
        """How far the suggestions spread, in decades (log10 of the largest over the smallest); NaN
        with fewer than two."""
        values = [v for v in self.suggestions.values() if v > 0]
        if len(values) < 2:
            return math.nan
        return math.log10(max(values) / min(values))

    def apply(self, optimizer: torch.optim.Optimizer, method: str | None = None) -> float:
        """Set every group's lr to the suggestion of ``method`` (default: ``DEFAULT_RULE``)
        times the group's ratio; return the lr."""
        method = DEFAULT_RULE if method is None else method
        if method not in self.suggestions:
            raise ValueError(f"Invalid method: {method!r}; choose from {sorted(self.suggestions)}")
        if len(optimizer.param_groups) != len(self.ratios):
            raise ValueError("optimizer: its number of param groups differs from the sweep's")
        lr = self.suggestions[method]
        for group, ratio in zip(optimizer.param_groups, self.ratios, strict=True):
            _set_lr(group, lr * ratio)
        return lr

    def summary(self) -> str:
        """The sweep in words: steps, why it stopped, each suggestion, the recommended one."""
        lines = [f"lr range test: {len(self.lrs)} steps, stopped: {self.stop_reason}"]
        for name, value in self.suggestions.items():
            mark = "  <- recommended (result.suggestion)" if name == DEFAULT_RULE else ""
            lines.append(f"  {name:<11} {value:<9.3g}{mark}".rstrip())
        if not self.suggestions:
            lines.append("  (too few steps for a suggestion)")
        else:
            lines.append(f"  suggestions span {self.agreement:.2f} decades")
        return "\n".join(lines)

    __str__ = summary

    def plot(self, path: str | None = None, ax: Any = None):
        """Plot the loss against the lr (log scale), marking each suggestion.

        Works headless: without ``ax`` it draws on a new Agg figure (no display, the global
        matplotlib backend untouched), saved to ``path`` when given. Returns the figure.
        Needs matplotlib: ``pip install optimkit[plot]``.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as err:
            raise ImportError(
                "LRFindResult.plot needs matplotlib; install the plot extra: "
                "pip install 'optimkit[plot]'"
            ) from err
        if ax is None:
            fig = Figure(figsize=(6.4, 4.0))
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.plot(self.lrs, self.losses, color="0.75", linewidth=0.8, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", label="running average (stop test)")
        if len(self.losses) >= 3:
            curve = centred_average(self.losses)
            ax.plot(self.lrs, curve, color="k", linewidth=1.2, label="centred average")
            finite = curve[np.isfinite(curve)]
            if len(finite) > 1:  # show the descent; the divergence would flatten it
                lowest = int(np.argmin(finite))
                low, high = finite[lowest], finite[: lowest + 1].max()
                pad = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
                ax.set_ylim(low - pad, high + 3 * pad)
        for i, (name, lr) in enumerate(self.suggestions.items()):
            if name == DEFAULT_RULE:
                ax.axvline(lr, color=f"C{i + 1}", linestyle="-", linewidth=2.5,
                           label=f"{name}: {lr:.2g} (recommended)")
            else:
                ax.axvline(lr, color=f"C{i + 1}", linestyle="--", label=f"{name}: {lr:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title(f"LR range test (suggestions span {self.agreement:.2f} decades)")
        ax.legend(fontsize="small")
        if path is not None:
            fig.savefig(path, dpi=100, bbox_inches="tight")
        return fig


def centred_average(losses: list[float], window: int | None = None) -> np.ndarray:
    """A moving average centred on each point (no lag; the window shrinks at the ends).

    The suggestions read this curve rather than the running average: the running average
    (beta 0.98) lags by tens of steps, which shifts every suggestion to larger lrs.
    """
    loss = np.asarray(losses, dtype=np.float64)
    n = len(loss)
    half = max(1, (window or max(3, n // 10)) // 2)
    sums = np.concatenate([[0.0], np.cumsum(loss)])
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    return (sums[hi] - sums[lo]) / (hi - lo)


def _steepest(lr: np.ndarray, loss: np.ndarray) -> float:
    # The first steps barely move the loss and the last ones diverge: leave them out.
    lo, hi = len(lr) // 10, len(lr) - max(len(lr) // 20, 1)
    if hi - lo < 3:
        lo, hi = 0, len(lr)
    lowest = int(np.argmin(loss))
    # Steepest descent on the way down to the minimum: after it the curve is divergence.
    hi = min(hi, lowest + 1) if lowest - lo >= 2 else hi
    slope = np.gradient(loss[lo:hi], np.log(lr[lo:hi]))  # spacing-aware derivative
    return float(lr[lo + int(np.argmin(slope))])


# name -> rule(lrs, centred losses) -> the suggested lr
RULES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "steepest": _steepest,
    "valley": lambda lr, loss: float(lr[_valley(loss)]),
    "minimum/10": lambda lr, loss: float(lr[int(np.argmin(loss))] / 10.0),
    "minimum/3": lambda lr, loss: float(lr[int(np.argmin(loss))] / 3.0),
}
# The rule behind ``LRFindResult.suggestion`` and ``apply()``, chosen by measurement:
# benchmarks/lr_rules.py compares every rule with the lr that ``optimkit bench`` tunes.
DEFAULT_RULE = "minimum/3"
DEFAULT_RULE_EVIDENCE = (
    "of the rules, it landed closest to the lr that `optimkit bench` tuned in 97 of 180 sweeps "
    "on the standard tasks (steepest 62, minimum/10 21, valley 0) and in 156 of 240 on the quick "
    "ones (steepest 59, minimum/10 22, valley 3), 20 optimizers, 3 seeds, and picked a poor lr "
    "least often"
)


def rule_tables() -> list[Path]:
    """The measured tables behind ``DEFAULT_RULE`` (markdown, installed with the package): the
    bench's ``standard`` tasks, then its ``quick`` ones. Made by the repository's
    ``lr_rules.py`` benchmark."""
    # a package installed as files (pip's wheels are), so the resources are real paths
    root = importlib.resources.files(__package__)
    return [Path(str(root / name)) for name in ("lr_rules.md", "lr_rules_quick.md")]


def suggest(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """Every rule of ``RULES`` on the raw losses (smoothed by ``centred_average``); empty with
    fewer than 5 points."""
    if len(lrs) < 5:
        return {}
    lr, loss = np.asarray(lrs, dtype=np.float64), centred_average(losses)
    return {name: rule(lr, loss) for name, rule in RULES.items()}


def _valley(loss: np.ndarray) -> int:
    """Middle index of the longest strictly decreasing subsequence of ``loss`` (O(n^2))."""
    n = len(loss)
    length = np.ones(n, dtype=np.int64)
    start = np.arange(n)
    for i in range(1, n):
        earlier = np.nonzero(loss[:i] > loss[i])[0]
        if len(earlier):
            best = earlier[np.argmax(length[earlier])]
            length[i] = length[best] + 1
            start[i] = start[best]
    end = int(np.argmax(length))
    return (int(start[end]) + end) // 2


# ---------------------------------------------------------------- the sweep
def _set_lr(group: dict[str, Any], lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def sweep_lrs(start_lr: float, end_lr: float, num_steps: int, mode: str) -> list[float]:
    """The lr of each step: geometric (``exponential``) or evenly spaced (``linear``)."""
    pct = [i / (num_steps - 1) for i in range(num_steps)]
    if mode == "exponential":
        return [start_lr * (end_lr / start_lr) ** p for p in pct]
    return [start_lr + (end_lr - start_lr) * p for p in pct]


def _check(
    start_lr: float, end_lr: float, num_steps: int, mode: str, smoothing: float,
    diverge: float, accum_steps: int,
) -> None:
    if not (isinstance(start_lr, (int, float)) and start_lr > 0 and math.isfinite(start_lr)):
        raise ValueError(f"Invalid start_lr: {start_lr!r}; it must be a number > 0")
    if not (isinstance(end_lr, (int, float)) and end_lr > start_lr and math.isfinite(end_lr)):
        raise ValueError(f"Invalid end_lr: {end_lr!r}; it must be > start_lr ({start_lr!r})")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"Invalid num_steps: {num_steps!r}; it must be an int >= 2")
    if mode not in MODES:
        raise ValueError(f"Invalid mode: {mode!r}; choose from {MODES}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"Invalid smoothing: {smoothing!r}; it must be in [0, 1)")
    if not diverge > 0:
        raise ValueError(f"Invalid diverge: {diverge!r}; it must be > 0")
    if isinstance(accum_steps, bool) or not isinstance(accum_steps, int) or accum_steps < 1:
        raise ValueError(f"Invalid accum_steps: {accum_steps!r}; it must be an int >= 1")


def _batches(batches: Iterable[Any] | None) -> Iterator[Any]:
    """Batches for as long as needed: a re-iterable (list, DataLoader) is iterated again."""
    if batches is None:
        yield from itertools.repeat(None)
        return
    while True:
        got = False
        for batch in batches:
            got = True
            yield batch
        if not got or iter(batches) is batches:  # empty, or a one-shot iterator: done
            return


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(
        "batches: each batch must be an (inputs, targets) pair for model/loss_fn; "
        f"got {type(batch).__name__}. For other batch formats pass train_step(batch) -> loss"
    )


def _standard_step(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, loss_fn: Callable,
    accum_steps: int,
) -> Callable[[Any], torch.Tensor]:
    micro = itertools.count(1)

    def train_step(batch: Any) -> torch.Tensor:
        inputs, targets = _split(batch)
        loss = loss_fn(model(inputs), targets)
        (loss / accum_steps).backward()
        if next(micro) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
        return loss.detach()

    return train_step


def _count_steps(optimizer: torch.optim.Optimizer, after_step: Callable[[], None]):
    """Call ``after_step`` after each ``optimizer.step()``, through torch's step post-hook
    (GradScaler calls ``step`` only for finite gradients, so a skipped step is not counted);
    return the hook's handle, whose ``remove()`` undoes it."""
    return optimizer.register_step_post_hook(lambda _optimizer, _args, _kwargs: after_step())


def _as_float(loss: Any) -> float:
    if loss is None:
        raise ValueError("train_step returned None; it must return the loss of the batch")
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"train_step returned a tensor of shape {tuple(loss.shape)}; "
                             "return the scalar loss")
        return float(loss.detach())
    return float(loss)


def lr_find(
    optimizer: torch.optim.Optimizer,
    train_step: Callable[..., Any] | None = None,
    *,
    model: torch.nn.Module | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    batches: Iterable[Any] | None = None,
    accum_steps: int = 1,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exponential",
    smoothing: float = 0.98,
    diverge: float = 4.0,
    restore: bool = True,
    extra_state: Iterable[Any] = (),
) -> LRFindResult:
    """Run the LR range test and return an ``LRFindResult``.

    Two ways to call it:

    * ``lr_find(optimizer, train_step, batches=loader, model=model)``: ``train_step(batch)``
      (or ``train_step()`` without ``batches``) runs your own forward, backward and
      ``optimizer.step()``, with any accumulation, AMP or batch format, and returns the loss;
    * ``lr_find(optimizer, model=model, loss_fn=loss_fn, batches=loader, accum_steps=1)``:
      the standard loop over ``(inputs, targets)`` batches, stepping every ``accum_steps``.

    To sweep on a validation loss, let ``train_step`` step on a training batch and return
    the validation loss. Under DDP run it on every rank with the same ``num_steps``: the
    stop test reads each rank's own loss, so reduce the loss across ranks in ``train_step``
    if the ranks must stop together.

    Steps are counted by a step post-hook (``register_step_post_hook``), so micro-batches of
    gradient accumulation are not steps, and a step that ``GradScaler`` skips (inf/NaN
    gradients) is not counted either. The loss of a step is the mean of the losses returned
    since the last step. Each step's lr multiplies every param group's lr alike, keeping their
    ratios. ``batches`` is iterated again when it runs out (a one-shot iterator ends the sweep).

    ``restore=True`` puts back exactly: the params and their grads, ``optimizer.state_dict()``
    (Lookahead's slow weights included), ``model.state_dict()`` when ``model`` is given (pass
    it in the train_step form too if the model has buffers), every object in ``extra_state``
    (schedulers, a GradScaler) and the RNG states of torch (CPU, and CUDA if initialised),
    ``random`` and numpy. Training afterwards is bit for bit the training without the test.

    An optimizer with train and eval modes (``optimkit.ScheduleFreeAdamW``, schedulefree's) is
    switched to train mode for the sweep (``restore`` brings its mode back with its state).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
    _check(start_lr, end_lr, num_steps, mode, smoothing, diverge, accum_steps)
    if train_step is None:
        if model is None or loss_fn is None or batches is None:
            raise ValueError("give train_step, or model, loss_fn and batches")
        train_step = _standard_step(optimizer, model, loss_fn, accum_steps)
    elif not callable(train_step):
        raise ValueError(f"train_step must be callable, got {train_step!r}")

    snapshot = Snapshot.take(optimizer, model, extra_state) if restore else None
    try:
        # the sweep trains: an optimizer with modes (Schedule-Free) in eval mode goes to
        # train mode first (restore puts its mode and params back)
        for inner in _switchable(optimizer):
            inner.train()
        return _sweep(optimizer, train_step, batches, sweep_lrs(start_lr, end_lr, num_steps, mode),
                      smoothing, diverge, zero_grad=model is not None and loss_fn is not None)
    finally:
        if snapshot is not None:
            snapshot.restore()


def _sweep(
    optimizer: torch.optim.Optimizer, train_step: Callable[..., Any],
    batches: Iterable[Any] | None, schedule: list[float], smoothing: float, diverge: float,
    zero_grad: bool,
) -> LRFindResult:
    groups = optimizer.param_groups
    base = [float(g["lr"]) for g in groups]
    reference = max(base)
    ratios = [b / reference if reference > 0 else 1.0 for b in base]
    steps = [0]

    def set_lrs(lr: float) -> None:
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            _set_lr(group, lr * ratio)

    def after_step() -> None:
        steps[0] += 1
        set_lrs(schedule[min(steps[0], len(schedule) - 1)])

    set_lrs(schedule[0])
    if zero_grad:
        optimizer.zero_grad()
    hook = _count_steps(optimizer, after_step)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    pending: list[float] = []
    average, best, reason = 0.0, math.inf, "out of batches"
    try:
        for batch in _batches(batches):
            before = steps[0]
            loss = train_step() if batches is None else train_step(batch)
            pending.append(_as_float(loss))
            if steps[0] == before:  # a micro-batch, or a step GradScaler skipped
                if len(pending) >= MAX_CALLS_WITHOUT_STEP:
                    raise ValueError(
                        f"train_step ran {len(pending)} times without calling optimizer.step(); "
                        "it must step the optimizer it was given"
                    )
                continue
            lrs.append(schedule[steps[0] - 1])
            losses.append(sum(pending) / len(pending))
            pending.clear()
            average = smoothing * average + (1 - smoothing) * losses[-1]
            smoothed.append(average / (1 - smoothing ** len(losses)))
            if not math.isfinite(smoothed[-1]):
                reason = "loss is not finite"
                break
            if smoothed[-1] - best > diverge * abs(best):
                reason = f"diverged (smoothed loss > best + {diverge:g} * |best|)"
                break
            best = min(best, smoothed[-1])
            if steps[0] >= len(schedule):
                reason = "reached end_lr"
                break
    finally:
        hook.remove()
    # A non-finite last point would break the suggestions: keep it out of them only.
    finite = [i for i, s in enumerate(losses) if math.isfinite(s)]
    suggestions = suggest([lrs[i] for i in finite], [losses[i] for i in finite])
    return LRFindResult(lrs, losses, smoothed, ratios, reason, suggestions)
