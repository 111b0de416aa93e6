"""The report's pictures (matplotlib, Agg backend, PNG); matplotlib is imported lazily.

* ``task-<task>.png``: the optimizers sorted by their test mean, 95 % intervals (clipped to
  the metric's range), the set tied with the best filled, the inconclusive ones in orange;
* ``critical-difference.png``: mean ranks across the tasks with the tiers as bars (Demšar 2006);
* ``profiles.png``: performance profiles of the seconds to each task's target (AlgoPerf);
* ``curves-<task>.png``: validation metric against steps and against wall-clock seconds;
* ``lr-sensitivity.png``: validation metric against lr, one line per optimizer;
* ``cost.png``: step time in the fastest mode (x fused Adam) and state bytes per parameter;
* ``trajectories-<toy>.png``: paths on the 2-D toys.

Twenty optimizers stay apart by colour *and* line style *and* marker (:func:`styles`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from .scoring import Summary
from .tasks import SURFACES

_DASHES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plots need matplotlib: pip install 'optimkit[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def styles(names: Sequence[str]) -> dict[str, dict]:
    """A distinct (colour, line style, marker) per name: 10 colours x 4 dashes x 8 markers."""
    cmap = _pyplot().get_cmap("tab10")
    return {name: {"color": cmap(i % 10), "linestyle": _DASHES[(i // 10) % 4],
                   "marker": _MARKERS[(i + i // 10) % len(_MARKERS)]}
            for i, name in enumerate(names)}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    # Fixed metadata: the same data always gives the same bytes.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    _pyplot().close(fig)
    return path


def _legend(ax, count: int) -> None:
    ax.legend(fontsize=7, ncol=1 if count <= 12 else 2, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)


def task_chart(summary: Summary, task: str, out: Path) -> Path | None:
    """Optimizers sorted by mean test metric, with 95 % intervals; tied-with-best filled."""
    plt = _pyplot()
    meta = summary.tasks[task]
    pairs = [p for (t, _), p in summary.pairs.items() if t == task and p.values]
    if not pairs:
        return None
    higher = meta["higher_is_better"]
    pairs.sort(key=lambda p: (p.mean if higher else -p.mean))  # best at the top
    tied = set(summary.task_results[task].tied)
    test = summary.task_results[task].test
    unsure = set(test.inconclusive) if test else set()
    clipped = False
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(pairs) + 1.4))
    for y, pair in enumerate(pairs):
        inside = pair.optimizer in tied
        color = "#2b6cb0" if inside else "#c98a00" if pair.optimizer in unsure else "#8a939c"
        # The interval clipped to the metric's range (an accuracy never exceeds 1).
        low, high = pair.interval if not math.isnan(pair.ci) else (pair.mean, pair.mean)
        clipped |= pair.clipped
        ax.errorbar(pair.mean, y, xerr=[[pair.mean - low], [high - pair.mean]], fmt="o",
                    color=color, ecolor=color, capsize=3,
                    markerfacecolor=color if inside else "white", ms=6)
        for value in pair.values:
            ax.plot(value, y, "|", color=color, alpha=0.5, ms=8)
    ax.set_yticks(range(len(pairs)), [p.optimizer for p in pairs], fontsize=8)
    best = summary.pairs[(task, summary.task_results[task].test.best)].mean \
        if summary.task_results[task].test else None
    if best is not None:
        ax.axvline(best, color="#2b6cb0", lw=0.8, ls="--")
    seeds = len(summary.config.rules().test_seeds)
    ax.set(xlabel=f"{meta['metric']} ({'higher' if higher else 'lower'} is better)",
           title=f"{task}: mean ± 95 % CI over {seeds} test seeds (ticks: seeds)"
                 + (", CIs clipped to the metric's range" if clipped else "") + "\n"
                 "filled = tied with the best (within its tolerance); orange = inconclusive")
    ax.title.set_fontsize(9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out / f"task-{task}.png")


def cd_diagram(summary: Summary, out: Path) -> Path | None:
    """Critical-difference diagram: mean ranks on an axis, tiers as thick bars, the CD."""
    plt = _pyplot()
    rank = summary.rank
    if rank is None:
        return None
    names = summary.ranked
    k = len(names)
    half = math.ceil(k / 2)
    fig, ax = plt.subplots(figsize=(10, 2.2 + 0.24 * half))
    ax.set_xlim(0.5, k + 0.5)
    top = 0.0
    ax.set_ylim(-(half + 1.5), 1.6)
    ax.hlines(top, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, top, top + 0.15, color="black", lw=0.8)
        ax.text(r, top + 0.3, str(r), ha="center", fontsize=8)
    for i, name in enumerate(names):
        x = rank.mean_rank[name]
        left = i < half
        row = i if left else k - 1 - i
        y = -(row + 1) * 0.9 / max(1, half / 6)
        end = 0.6 if left else k + 0.4
        ax.plot([x, x, end], [top, y, y], color="#444", lw=0.7)
        ax.text(end + (-0.05 if left else 0.05), y,
                f"{name} ({x:.2f}, T{summary.tier(name)})", ha="right" if left else "left",
                va="center", fontsize=7.5)
    tiers = sorted(set(rank.tiers.values()))
    colors = _pyplot().get_cmap("tab10")
    for j, tier in enumerate(tiers):
        members = [rank.mean_rank[n] for n in names if rank.tiers[n] == tier]
        y = top - 0.18 - 0.16 * j
        ax.hlines(y, min(members), max(members), color=colors(j), lw=4, alpha=0.8)
    if not math.isnan(rank.cd):
        ax.hlines(1.2, 1, 1 + rank.cd, color="#a4330d", lw=2)
        ax.text(1 + rank.cd / 2, 1.35, f"CD = {rank.cd:.2f}", ha="center", fontsize=8,
                color="#a4330d")
    ax.axis("off")
    p = "p < 1e-12" if rank.p < 1e-12 else f"p = {rank.p:.2g}"
    ax.set_title(f"mean rank over {rank.blocks} blocks (task x test seed); bars: tiers "
                 f"(Friedman {p}, Nemenyi)", fontsize=9)
    return _save(fig, out / "critical-difference.png")


def curves(summary: Summary, task: str, out: Path) -> Path | None:
    """Validation metric of the final runs (mean over the test seeds) vs steps and seconds."""
    plt = _pyplot()
    names = list(summary.config.optimizers)
    look = styles(names)
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    drawn = 0
    for optimizer in names:
        pair = summary.pairs.get((task, optimizer))
        if pair is None or not pair.finals:
            continue
        runs = [r["evals"] for r in pair.finals if r["evals"] and not r["diverged"]]
        if not runs:
            continue
        length = min(len(e) for e in runs)
        steps = [runs[0][i][0] for i in range(length)]
        values = [sum(e[i][1] for e in runs) / len(runs) for i in range(length)]
        seconds = [sum(e[i][2] for e in runs) / len(runs) for i in range(length)]
        if not all(math.isfinite(v) for v in values):
            continue
        style = {**look[optimizer], "ms": 3, "lw": 1.2}
        by_step.plot(steps, values, label=optimizer, **style)
        by_time.plot(seconds, values, label=optimizer, **style)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    meta = summary.tasks[task]
    metric = meta["metric"].replace("test ", "validation ")
    by_step.set(xlabel="optimizer steps", ylabel=metric, title=f"{task}: {metric} vs steps")
    by_time.set(xlabel="training seconds (one thread)", title="vs wall-clock")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
        if meta["illustrative"]:
            ax.set_yscale("log", nonpositive="clip")
    _legend(by_time, drawn)
    return _save(fig, out / f"curves-{task}.png")


def lr_sensitivity(summary: Summary, out: Path) -> Path | None:
    """Validation metric (mean over the tuning seeds) against lr, per task, one line each."""
    plt = _pyplot()
    tasks = summary.real_tasks or list(summary.tasks)
    tasks = [t for t in tasks if any(k[0] == t for k in summary.pairs)]
    if not tasks:
        return None
    names = list(summary.config.optimizers)
    look = styles(names)
    cols = min(2, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols + 2.2, 3.9 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        meta = summary.tasks[task]
        bests = []
        for optimizer in names:
            pair = summary.pairs.get((task, optimizer))
            if pair is None or not pair.search.lr_trials:
                continue
            trials = pair.search.lr_trials
            lrs = [t.lr for t in trials]
            values = [t.mean for t in trials]
            ax.plot(lrs, values, label=optimizer, ms=3, lw=1.1, **look[optimizer])
            chosen = [t.mean for t in trials if t.lr == pair.lr]
            if chosen and not math.isnan(chosen[0]):
                ax.plot([pair.lr], chosen, marker=look[optimizer]["marker"], ms=8,
                        color=look[optimizer]["color"], markerfacecolor="none")
                bests.append(chosen[0])
        ax.set_xscale("log")
        if bests:  # show the interesting band: from the best down to well below the worst best
            finite = [v for v in bests if math.isfinite(v)]
            spread = max(finite) - min(finite)
            pad = max(spread, meta.get("tolerance", 0.01) * 5)
            if meta["higher_is_better"]:
                ax.set_ylim(min(finite) - pad, max(finite) + 0.1 * pad)
            else:
                ax.set_ylim(min(finite) - 0.1 * pad, max(finite) + pad)
        ax.set(title=f"{task} (circle: tuned lr; tolerance {meta.get('tolerance', 0.01):g})",
               xlabel="learning rate", ylabel=meta["metric"].replace("test", "validation"))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    _legend(axes.flat[cols - 1], len(names))
    fig.suptitle("lr sensitivity: validation result at every lr tried (weight decay 0), "
                 "mean over the tuning seeds", fontsize=10)
    return _save(fig, out / "lr-sensitivity.png")


def cost_bars(summary: Summary, out: Path) -> Path | None:
    """step() time as a multiple of fused torch Adam, and state bytes per parameter."""
    plt = _pyplot()
    names = [o for o in summary.config.optimizers if o in summary.costs
             and not summary.costs[o].get("error")]
    if not names:
        return None
    ratio = [summary.costs[o]["extra"].get("x_fused_adam", 0.0) for o in names]
    memory = [summary.costs[o]["state_bytes_per_param"] for o in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.3 * len(names) + 1.6))
    colors = [styles(names)[o]["color"] for o in names]
    left.barh(names, ratio, color=colors)
    left.axvline(1.0, color="black", lw=0.8, ls="--")
    params = summary.costs[names[0]]["n_params"]
    left.set(xlabel=f"step() time, × torch fused Adam ({params / 1e6:.1f}M params, 1 thread)",
             title="step time, fastest mode (eager or flat)")
    right.barh(names, memory, color=colors)
    right.set(xlabel="bytes of optimizer state per parameter", title="state memory")
    for ax in (left, right):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, out / "cost.png")


def profiles_plot(summary: Summary, out: Path) -> Path | None:
    """AlgoPerf-style performance profiles: rho(tau), the share of the tasks on which an
    optimizer reaches the target within tau times the fastest optimizer's seconds."""
    from .profiles import TAU_MAX, rho

    ratios = summary.profile_ratios.get("seconds") or {}
    if not ratios:
        return None
    plt = _pyplot()
    scores = summary.profile_scores["seconds"]
    names = sorted(ratios, key=lambda o: (-scores[o], o))
    look = styles(names)
    taus = [1.0 + i * (TAU_MAX - 1.0) / 300 for i in range(301)]
    fig, ax = plt.subplots(figsize=(9.5, 5.0))
    for name in names:
        style = look[name]
        ax.step(taus, [rho(ratios[name], t) for t in taus], where="post",
                color=style["color"], linestyle=style["linestyle"], lw=1.4,
                label=f"{name} (B = {scores[name]:.2f})")
    ax.set(xlim=(1.0, TAU_MAX), ylim=(-0.02, 1.02), xlabel="τ (× the fastest optimizer's "
           "seconds to the target)", ylabel="share of the tasks reached within τ",
           title="Time to target: performance profiles (each task's target: the tuned "
                 "AdamW's final validation result, or the task's own)")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    _legend(ax, len(names))
    return _save(fig, out / "profiles.png")


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
    fig, ax = plt.subplots(figsize=(8.5, 5.6))
    ax.contourf(gx.numpy(), gy.numpy(), torch.log1p(z).numpy(), levels=30, cmap="viridis",
                alpha=0.85)
    look = styles(list(paths))
    for name, path in paths.items():
        if not path:
            continue
        px = [p[0] for p in path]
        py = [p[1] for p in path]
        style = look[name]
        ax.plot(px, py, color=style["color"], linestyle=style["linestyle"], lw=1.5,
                label=(labels or {}).get(name, name))
        ax.plot(px[-1:], py[-1:], marker=style["marker"], color=style["color"], ms=6)
    ax.plot(*surface.start, "w^", ms=8, label="start")
    ax.plot(*surface.minimum, "r*", ms=12, label="minimum")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y",
           title=f"{function} (illustrative): optimizer paths, colour = log(1 + f)")
    _legend(ax, len(paths) + 2)
    return _save(fig, out_file)


def all_plots(summary: Summary, out: Path) -> list[Path]:
    """Every PNG of the report; returns their paths in the order the report shows them."""
    made = [cd_diagram(summary, out), profiles_plot(summary, out), lr_sensitivity(summary, out),
            cost_bars(summary, out)]
    for task, meta in summary.tasks.items():
        if meta["illustrative"]:
            paths, labels = {}, {}
            for optimizer in summary.config.optimizers:
                pair = summary.pairs.get((task, optimizer))
                if pair is not None and pair.path:
                    paths[optimizer] = pair.path
                    labels[optimizer] = f"{optimizer} (lr={pair.lr:g})"
            if paths:
                made.append(trajectories(task, paths, out / f"trajectories-{task}.png", labels))
        else:
            made.append(task_chart(summary, task, out))
        made.append(curves(summary, task, out))
    return [p for p in made if p is not None]


__all__ = ["all_plots", "cd_diagram", "cost_bars", "curves", "lr_sensitivity", "profiles_plot",
           "styles",
           "task_chart", "trajectories"]
