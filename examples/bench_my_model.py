"""Bench your own model: a task module for ``optimkit bench --task-module``.

A task module registers one or more :class:`optimkit.bench.tasks.Task` at import time; the
bench then tunes and scores every chosen optimizer on them with the same protocol, statistics
and report as its built-in tasks. This one is a small MLP regression on synthetic data (a
second or two per run on one CPU thread)::

    optimkit bench --task-module examples/bench_my_model.py --optimizers adam,sgd,lion \\
        --preset quick --out optimkit-output/bench-my-model

or ``python examples/bench_my_model.py`` for the same run. The report (report.html,
leaderboard.md, leaderboard.json) is written in the --out folder.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from optimkit.bench.tasks import Instance, Task, register

SAMPLES, FEATURES, HIDDEN, BATCH = 768, 8, 32, 32


def build(seed: int, device: str) -> Instance:
    """A fresh model and the (fixed) data; ``seed`` drives the initial weights and batch order."""
    data = torch.Generator().manual_seed(1234)  # the data and its split never depend on the seed
    x = torch.randn(SAMPLES, FEATURES, generator=data)
    w = torch.randn(FEATURES, 1, generator=data)
    y = (torch.tanh(x @ w) + 0.3 * torch.sin(3 * x[:, :1])).squeeze(-1)
    y = y + 0.05 * torch.randn(SAMPLES, generator=data)
    x, y = x.to(device), y.to(device)
    n_train, n_val = SAMPLES * 2 // 3, SAMPLES // 6
    split = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val),
             "test": slice(n_train + n_val, SAMPLES)}

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1)).to(device)

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(outputs.squeeze(-1), targets)

    order = torch.Generator().manual_seed(seed)

    def batches():
        xt, yt = x[split["train"]], y[split["train"]]
        perm = torch.randperm(len(xt), generator=order).to(device)
        for start in range(0, len(xt), BATCH):
            idx = perm[start:start + BATCH]
            yield xt[idx], yt[idx]

    @torch.no_grad()
    def evaluate(split_name: str = "test") -> float:
        if split_name not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split_name!r}")
        model.eval()
        value = float(loss_fn(model(x[split[split_name]]), y[split[split_name]]))
        model.train()
        return value

    return Instance(model, loss_fn, batches, evaluate,
                    steps_per_epoch=math.ceil(n_train / BATCH))


register(Task(
    name="my-mlp-regression",
    description="MLP 8-32-1 regression on synthetic tanh/sine data (768 samples, fixed split)",
    metric="test MSE", target=0.05, higher_is_better=False, epochs=6, builder=build,
    tolerance=0.005,
))


if __name__ == "__main__":
    from optimkit.cli import main

    sys.exit(main(["bench", "--task-module", __file__, "--optimizers", "adam,sgd,lion",
                   "--preset", "quick", "--out", "optimkit-output/bench-my-model",
                   *sys.argv[1:]]))
