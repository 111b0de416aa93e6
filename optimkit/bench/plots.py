"""The report's pictures (matplotlib, Agg backend, PNG); matplotlib is imported lazily."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from .scoring import Summary
from .tasks import SURFACES


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plots need matplotlib: pip install 'optimkit[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    # Fixed metadata: the same data always gives the same bytes.
    fig.savefig(path, dpi=110, metadata={"Software": None})
    _pyplot().close(fig)
    return path


def loss_curves(summary: Summary, task: str, out: Path) -> Path | None:
    """Training loss against steps at the tuned lr: the seeds' mean, and a min-max band."""
    plt = _pyplot()
    colors = _colors(list(summary.config.optimizers))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    for optimizer in summary.config.optimizers:
        cell = summary.cells.get((task, optimizer))
        if cell is None or not cell.finals:
            continue
        per_step: dict[int, list[float]] = {}
        for row in cell.finals:
            for step, loss in row["losses"]:
                per_step.setdefault(step, []).append(loss)
        steps = [s for s in sorted(per_step) if len(per_step[s]) == len(cell.finals)]
        steps = [s for s in steps if all(math.isfinite(v) for v in per_step[s])]
        if not steps:
            continue
        mean = [sum(per_step[s]) / len(per_step[s]) for s in steps]
        ax.plot(steps, mean, color=colors[optimizer], label=f"{optimizer} (lr={cell.lr:g})")
        ax.fill_between(steps, [min(per_step[s]) for s in steps],
                        [max(per_step[s]) for s in steps], color=colors[optimizer], alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    meta = summary.tasks[task]
    ax.set(title=f"{task}: training loss ({summary.config.seeds} seeds, band = min-max)",
           xlabel="step", ylabel="training loss")
    if summary.tasks[task]["illustrative"] or _all_positive(ax):
        ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.text(0.01, -0.2, meta["description"], transform=ax.transAxes, fontsize=7)
    return _save(fig, out / f"loss-{task}.png")


def _all_positive(ax) -> bool:
    return all((line.get_ydata() > 0).all() for line in ax.get_lines())


def trajectories(function: str, paths: Mapping[str, Sequence[Sequence[float]]],
                 out_file: Path, labels: Mapping[str, str] | None = None) -> Path:
    """The paths of several optimizers over the contours of a 2-D test function."""
    import torch

    plt = _pyplot()
    surface = SURFACES[function]
    x0, x1, y0, y1 = surface.window
    xs = torch.linspace(x0, x1, 200, dtype=torch.float64)
    ys = torch.linspace(y0, y1, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    z = surface.fn(torch.stack([gx, gy]))  # the functions broadcast over a grid
    fig, ax = plt.subplots(figsize=(6.5, 5.2))
    ax.contourf(gx.numpy(), gy.numpy(), torch.log1p(z).numpy(), levels=30, cmap="viridis",
                alpha=0.85)
    colors = _colors(list(paths))
    for name, path in paths.items():
        if not path:
            continue
        px = [p[0] for p in path]
        py = [p[1] for p in path]
        label = (labels or {}).get(name, name)
        ax.plot(px, py, "-", color=colors[name], lw=1.6, label=label)
        ax.plot(px[-1:], py[-1:], "o", color=colors[name], ms=5)
    ax.plot(*surface.start, "w^", ms=8, label="start")
    ax.plot(*surface.minimum, "r*", ms=12, label="minimum")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y",
           title=f"{function} (illustrative): optimizer paths, colour = log(1 + f)")
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, out_file)


def lr_tuning(summary: Summary, out: Path) -> Path:
    """The tuning curves: validation metric against lr, per task; crosses mark divergence."""
    plt = _pyplot()
    tasks = list(summary.tasks)
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.6 * cols, 8), 3.4 * rows),
                             squeeze=False)
    colors = _colors(list(summary.config.optimizers))
    for ax, task in zip(axes.flat, tasks, strict=False):
        meta = summary.tasks[task]
        for optimizer in summary.config.optimizers:
            cell = summary.cells.get((task, optimizer))
            if cell is None:
                continue
            lrs = [lr for lr, _, _ in cell.tuning]
            values = [v for _, v, _ in cell.tuning]
            ax.plot(lrs, values, "o-", ms=3, color=colors[optimizer], label=optimizer)
            bad = [lr for lr, _, d in cell.tuning if d]
            ax.plot(bad, [_edge(ax, meta)] * len(bad), "x", color=colors[optimizer])
        ax.set_xscale("log")
        if meta["illustrative"]:
            ax.set_yscale("log", nonpositive="clip")
        ax.set(title=task, xlabel="learning rate", ylabel=meta["metric"].replace("test", "val."))
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"learning-rate tuning: {summary.config.budget} lrs per optimizer, seed 0, "
                 "validation split (x = diverged)", fontsize=10)
    return _save(fig, out / "lr-tuning.png")


def _edge(ax, meta) -> float:
    low, high = ax.get_ylim()
    return low if meta["higher_is_better"] else high


def cost_bars(summary: Summary, out: Path) -> Path:
    """Optimizer step time (mean over the real tasks) and state bytes per parameter."""
    plt = _pyplot()
    names = list(summary.config.optimizers)
    real = summary.real_tasks or list(summary.tasks)
    times, memory = [], []
    for name in names:
        cells = [summary.cells[(t, name)] for t in real if (t, name) in summary.cells]
        times.append(_mean([c.step_time_us for c in cells]))
        memory.append(_mean([c.state_bytes_per_param for c in cells]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.35 * len(names) + 1.8))
    colors = list(_colors(names).values())
    left.barh(names, times, color=colors)
    left.set(xlabel="µs per optimizer.step() (mean over the real tasks)", title="step time")
    right.barh(names, memory, color=colors)
    right.set(xlabel="bytes of optimizer state per parameter", title="state memory")
    for ax in (left, right):
        ax.invert_yaxis()
    return _save(fig, out / "cost.png")


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else 0.0


def all_plots(summary: Summary, out: Path) -> list[Path]:
    """Every PNG of the report; returns their paths in the order the report shows them."""
    made: list[Path] = []
    for task, meta in summary.tasks.items():
        if meta["illustrative"]:
            paths, labels = {}, {}
            for optimizer in summary.config.optimizers:
                cell = summary.cells.get((task, optimizer))
                if cell is not None and cell.path:
                    paths[optimizer] = cell.path
                    labels[optimizer] = f"{optimizer} (lr={cell.lr:g})"
            if paths:
                made.append(trajectories(task, paths, out / f"trajectories-{task}.png", labels))
        curve = loss_curves(summary, task, out)
        if curve is not None:
            made.append(curve)
    if summary.cells:
        made.append(lr_tuning(summary, out))
        made.append(cost_bars(summary, out))
    return made
