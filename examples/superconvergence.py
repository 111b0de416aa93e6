"""Super-convergence on the digits data (Smith & Topin 2017, arXiv:1708.07120).

1. The LR range test picks ``max_lr`` (its ``minimum/10`` suggestion, the usual 1cycle choice).
2. A 1cycle run (``optimkit.OneCycle``) and a run at the optimizer's usual constant lr
   (Adam's 1e-3) train the same model from the same start for the same epochs.
3. Both curves of test accuracy are printed, with the epochs each needs to reach
   ``--target``, and plotted to ``--plot`` (needs matplotlib).

    python examples/superconvergence.py --epochs 12 --target 0.93
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

import optimkit


def load_digits_tensors(seed: int = 0):
    from sklearn.datasets import load_digits  # the dev/bench extra; nothing is downloaded

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = perm[:1400], perm[1400:]
    return x[train], y[train], x[test], y[test]


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )


def batches(x, y, batch_size, generator):
    perm = torch.randperm(len(x), generator=generator)
    return [(x[perm[i:i + batch_size]], y[perm[i:i + batch_size]])
            for i in range(0, len(x), batch_size)]


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(data, epochs, batch_size, seed, lr, max_lr=None):
    """Train with a constant ``lr``, or with 1cycle to ``max_lr``; accuracy after each epoch."""
    x, y, x_test, y_test = data
    model = make_model(seed)
    optimizer = optimkit.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    scheduler = None
    if max_lr is not None:
        scheduler = optimkit.OneCycle(optimizer, max_lr, epochs=epochs,
                                      steps_per_epoch=steps_per_epoch)
    order = torch.Generator().manual_seed(seed + 1)
    curve = []
    for _ in range(epochs):
        for inputs, targets in batches(x, y, batch_size, order):
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        curve.append(accuracy(model, x_test, y_test))
    return curve


def find_max_lr(data, batch_size, seed, num_steps=100):
    x, y, _, _ = data
    model = make_model(seed)
    optimizer = optimkit.Adam(model.parameters())
    order = torch.Generator().manual_seed(seed + 2)
    result = optimkit.lr_find(
        optimizer, model=model, loss_fn=torch.nn.functional.cross_entropy,
        batches=batches(x, y, batch_size, order), start_lr=1e-6, end_lr=10.0,
        num_steps=num_steps,
    )
    return result


def epochs_to(curve, target):
    """1-based epoch at which ``curve`` first reaches ``target`` (None if never)."""
    return next((i + 1 for i, acc in enumerate(curve) if acc >= target), None)


def plot(curves, target, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=label)
    ax.axhline(target, color="0.5", linestyle=":", label=f"target {target:.2f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title("digits: 1cycle vs constant lr (Adam)")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.93)
    parser.add_argument("--finder-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="superconvergence.png", help="'' for no plot")
    args = parser.parse_args(argv)

    data = load_digits_tensors(args.seed)
    found = find_max_lr(data, args.batch_size, args.seed, args.finder_steps)
    max_lr = found.suggestions["minimum/10"]
    print(found.summary())
    print(f"max_lr for 1cycle (minimum/10): {max_lr:.3g}")

    constant = train(data, args.epochs, args.batch_size, args.seed, lr=1e-3)
    onecycle = train(data, args.epochs, args.batch_size, args.seed, lr=1e-3, max_lr=max_lr)
    labels = ("constant lr 1e-3", f"1cycle, max_lr {max_lr:.2g}")
    curves = dict(zip(labels, (constant, onecycle), strict=True))
    print("epoch  " + "  ".join(f"{label:>24}" for label in curves))
    for epoch in range(args.epochs):
        print(f"{epoch + 1:>5}  " + "  ".join(f"{c[epoch]:>24.4f}" for c in curves.values()))
    reached = {label: epochs_to(curve, args.target) for label, curve in curves.items()}
    for label, epoch in reached.items():
        print(f"{label}: reaches {args.target:.2f} at epoch {epoch or 'never'}")
    if args.plot:
        plot(curves, args.target, args.plot)
        print(f"plot written to {args.plot}")
    return {"max_lr": max_lr, "constant": constant, "onecycle": onecycle,
            "constant_epochs": reached[labels[0]], "onecycle_epochs": reached[labels[1]]}


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
    sys.exit(0)
