"""1cycle against a tuned constant lr on the digits data (Smith & Topin 2017, arXiv:1708.07120).

The super-convergence claim is that the 1cycle policy reaches a given accuracy in fewer epochs
than a constant learning rate. A fair test tunes both, so this example:

1. splits scikit-learn's digits into train (70 %), validation (15 %) and test (15 %);
2. for each epoch budget (``--epochs``, e.g. 1, 2, 4, 8), trains an MLP with Adam under a
   **constant lr** and under **1cycle** (``optimkit.OneCycle``, its lr peaking at ``max_lr``),
   each over the same grid of lrs (``--grid``: the constant lr, or 1cycle's max_lr) and the
   same seeds: the same tuning budget for both;
3. picks each schedule's lr by the mean **validation** accuracy over the seeds, then reports
   the **test** accuracy of those runs (mean, spread, and 1cycle minus constant seed by seed);
4. adds the untuned recipe: the LR finder's recommended lr as 1cycle's max_lr;
5. says, from the numbers, whether 1cycle won, lost or tied at each budget, and the fewest
   epochs at which each schedule's tuned validation accuracy reaches ``--target``.

What it found with the defaults (5 seeds, 13 lrs from 1e-4 to 1; deterministic on CPU):
1cycle does not reach the target sooner (the tuned validation accuracy of both first reaches
0.95 at 4 epochs). 1cycle minus constant, in test-accuracy points with 95 % intervals:
+0.2 ± 6.8 at 1 epoch, -1.3 ± 1.0 at 2, -0.1 ± 0.6 at 4, +1.0 ± 0.4 at 8. The LR finder's
recommended lr (0.022, ``minimum/3``) is the tuned constant lr (0.0215); as 1cycle's max_lr,
untuned, it trails both at 1 to 4 epochs and lands between them at 8: 1cycle's tuned max_lr
was 2 to 5 times that suggestion, which is meant for a constant lr.

Limits, stated up front: one small MLP on one small data set (a test split of 270 digits: one
digit is 0.37 points), Adam only, four budgets compared without a correction for multiple
comparisons. It shows how to test the claim; it says nothing about large models, where
super-convergence was reported. The figure goes to ``--out`` (default ``optimkit-output/``).

    python examples/superconvergence.py        # about 30 s of CPU; minutes on a busy machine
    python examples/superconvergence.py --epochs 1,2 --seeds 3 --grid 1e-3,1e-2,1e-1
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from pathlib import Path

import torch

import optimkit
from optimkit.outputs import DEFAULT_OUT, check_folder

SCHEDULES = ("constant", "1cycle")


# ----------------------------------------------------------------------------- data, model
def load_digits_splits():
    """Train / validation / test tensors of scikit-learn's digits (a fixed permutation)."""
    from sklearn.datasets import load_digits  # ships with scikit-learn; nothing is downloaded

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(12345))
    n_val = n_test = int(0.15 * len(x))
    val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def batches(x, y, batch_size, generator):
    perm = torch.randperm(len(x), generator=generator)
    return [(x[perm[i:i + batch_size]], y[perm[i:i + batch_size]])
            for i in range(0, len(x), batch_size)]


def accuracy(model, split) -> float:
    x, y = split
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# ----------------------------------------------------------------------------- training
@dataclasses.dataclass
class Run:
    """One training run: validation and test accuracy after each epoch. Tuning reads
    ``val`` only; ``test`` is read for the runs that tuning picked."""

    schedule: str
    lr: float
    seed: int
    val: list[float]
    test: list[float]

    def after(self, epochs: int) -> Run:
        """This run seen after its first ``epochs`` epochs (a constant lr does not depend on
        the budget, so that is the run a budget of ``epochs`` would have made)."""
        return Run(self.schedule, self.lr, self.seed, self.val[:epochs], self.test[:epochs])


def train(data, schedule: str, lr: float, epochs: int, seed: int, batch_size: int = 64) -> Run:
    """Adam under a constant ``lr``, or 1cycle peaking at ``lr``, for ``epochs`` epochs."""
    model = make_model(seed)
    optimizer = optimkit.Adam(model.parameters(), lr=lr)
    x, y = data["train"]
    scheduler = None
    if schedule == "1cycle":
        scheduler = optimkit.OneCycle(optimizer, lr, epochs=epochs,
                                      steps_per_epoch=math.ceil(len(x) / batch_size))
    order = torch.Generator().manual_seed(seed + 1)
    val, test = [], []
    for _ in range(epochs):
        for inputs, targets in batches(x, y, batch_size, order):
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        # (a no-op for Adam; a Schedule-Free optimizer evaluates its averaged params)
        with optimkit.evaluating(optimizer):
            val.append(accuracy(model, data["val"]))
            test.append(accuracy(model, data["test"]))
    return Run(schedule, lr, seed, val, test)


def finder_lr(data, seed: int = 0, batch_size: int = 64, num_steps: int = 100) -> float:
    """The LR finder's recommended lr (``result.suggestion``) for this model and data."""
    model = make_model(seed)
    optimizer = optimkit.Adam(model.parameters())
    x, y = data["train"]
    result = optimkit.lr_find(
        optimizer, model=model, loss_fn=torch.nn.functional.cross_entropy,
        batches=batches(x, y, batch_size, torch.Generator().manual_seed(seed + 2)),
        num_steps=num_steps,
    )
    return result.suggestion


def tuned(runs: list[Run]) -> tuple[float, dict[float, float]]:
    """The lr with the best mean validation accuracy (ties: the smaller lr), and every lr's
    mean. Only validation scores are read: the test split stays for the final number."""
    by_lr: dict[float, list[float]] = {}
    for run in runs:
        by_lr.setdefault(run.lr, []).append(run.val[-1])
    means = {lr: statistics.fmean(v) for lr, v in sorted(by_lr.items())}
    best = max(means, key=lambda lr: (means[lr], -lr))
    return best, means


def verdict(onecycle: list[float], constant: list[float]) -> tuple[str, float, float]:
    """From paired test accuracies (same seeds): '1cycle better', '1cycle worse' or 'tie',
    with the mean difference (1cycle - constant) and its 95 % interval's half-width, in
    accuracy points. A side wins only when the paired t interval excludes 0."""
    from scipy.stats import t  # scipy comes with scikit-learn

    diffs = [100 * (a - b) for a, b in zip(onecycle, constant, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return "tie", mean, math.inf
    half = float(t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    if mean - half > 0:
        return "1cycle better", mean, half
    if mean + half < 0:
        return "1cycle worse", mean, half
    return "tie", mean, half


def first_budget(rows: list[dict], schedule: str, target: float) -> int | None:
    """The fewest epochs at which ``schedule``'s tuned mean validation accuracy reaches
    ``target`` (None if no budget does)."""
    hits = [r["epochs"] for r in rows if r["schedule"] == schedule and r["val"] >= target]
    return min(hits, default=None)


# ----------------------------------------------------------------------------- the study
def study(data, budgets: list[int], grid: list[float], seeds: list[int]) -> dict:
    """Tune both schedules over ``grid`` on validation for every budget; test the winners.

    A constant lr does not depend on the budget, so one run of ``max(budgets)`` epochs gives
    the constant lr's accuracy after every shorter budget too; 1cycle is run per budget.
    """
    longest = max(budgets)
    constant = [train(data, "constant", lr, longest, seed) for lr in grid for seed in seeds]
    rows, tuning = [], []
    for epochs in budgets:
        runs = {
            "constant": [run.after(epochs) for run in constant],
            "1cycle": [train(data, "1cycle", lr, epochs, seed) for lr in grid for seed in seeds],
        }
        for schedule, group in runs.items():
            lr, means = tuned(group)
            tuning.append({"epochs": epochs, "schedule": schedule, "val_by_lr": means})
            picked = [r for r in group if r.lr == lr]
            rows.append({"epochs": epochs, "schedule": schedule, "lr": lr,
                         "val": means[lr], "test": [r.test[-1] for r in picked]})
    return {"rows": rows, "tuning": tuning, "runs_per_schedule": len(grid) * len(seeds)}


# ----------------------------------------------------------------------------- output
def summarise(result: dict, finder: dict | None, target: float) -> list[str]:
    lines = ["epochs  schedule            lr       val acc   test acc (mean ± sd over seeds)"]
    rows = result["rows"] + (finder["rows"] if finder else [])
    for row in sorted(rows, key=lambda r: (r["epochs"], r["schedule"])):
        sd = statistics.stdev(row["test"]) if len(row["test"]) > 1 else 0.0
        lines.append(f"{row['epochs']:>6}  {row['schedule']:<18} {row['lr']:<8.3g} "
                     f"{row['val']:.4f}    {statistics.fmean(row['test']):.4f} ± {sd:.4f}")
    lines.append("")
    by = {(r["epochs"], r["schedule"]): r for r in result["rows"]}
    for epochs in sorted({r["epochs"] for r in result["rows"]}):
        one, const = by[(epochs, "1cycle")]["test"], by[(epochs, "constant")]["test"]
        said, mean, half = verdict(one, const)
        diffs = ", ".join(f"{100 * (a - b):+.1f}" for a, b in zip(one, const, strict=True))
        lines.append(f"{epochs:>2} epochs: {said:<13} 1cycle - constant = {mean:+.1f} ± "
                     f"{half:.1f} test accuracy points (95 % interval; per seed {diffs})")
    for schedule in SCHEDULES:
        first = first_budget(result["rows"], schedule, target)
        lines.append(f"tuned {schedule}: validation accuracy reaches {target:.2f} at "
                     + (f"{first} epochs" if first else "no budget tried"))
    return lines


def plot(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for schedule in SCHEDULES:
        rows = [r for r in result["rows"] if r["schedule"] == schedule]
        means = [statistics.fmean(r["test"]) for r in rows]
        ax.plot([r["epochs"] for r in rows], means, marker="o",
                label=f"{schedule} (lr tuned on validation per budget)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epochs (training budget)")
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.set_title("digits MLP, Adam: 1cycle vs tuned constant lr")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")


def _numbers(text: str, kind):
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers > 0, got {text!r}")
    return values


def default_grid() -> list[float]:
    """3 lrs per decade from 1e-4 to 1."""
    return [float(f"{10 ** (-4 + i / 3):.3g}") for i in range(13)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=lambda t: _numbers(t, int), default=[1, 2, 4, 8],
                        help="the training budgets compared, comma-separated")
    parser.add_argument("--grid", type=lambda t: _numbers(t, float), default=default_grid(),
                        help="lrs tried for both schedules (constant lr, or 1cycle's max_lr)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 for every lr")
    parser.add_argument("--target", type=float, default=0.95,
                        help="validation accuracy for the epochs-to-target line")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for the figure")
    parser.add_argument("--no-plot", action="store_true", help="write no figure")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    try:
        out = check_folder(args.out)  # before any training
    except ValueError as err:
        parser.error(str(err))

    data = load_digits_splits()
    seeds = list(range(args.seeds))
    result = study(data, sorted(set(args.epochs)), sorted(set(args.grid)), seeds)
    max_lr = finder_lr(data)
    finder = {"max_lr": max_lr, "rows": []}
    for epochs in sorted(set(args.epochs)):
        runs = [train(data, "1cycle", max_lr, epochs, seed) for seed in seeds]
        finder["rows"].append({"epochs": epochs, "schedule": "1cycle (finder lr)", "lr": max_lr,
                               "val": statistics.fmean(r.val[-1] for r in runs),
                               "test": [r.test[-1] for r in runs]})
    print(f"digits MLP, Adam; {len(seeds)} seeds; both schedules tuned over the same "
          f"{len(args.grid)} lrs ({result['runs_per_schedule']} runs per schedule and budget), "
          "picked on validation, scored on test")
    print(f"LR finder's recommended lr (used untuned as 1cycle's max_lr): {max_lr:.3g}")
    print("\n".join(summarise(result, finder, args.target)))
    if not args.no_plot:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "superconvergence.png"
        plot(result, path)
        print(f"plot written to {path}")
    return {**result, "finder": finder}


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
    sys.exit(0)
