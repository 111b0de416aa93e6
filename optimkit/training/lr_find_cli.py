"""``optimkit lr-find``: the LR range test on a built-in task, from the command line."""

from __future__ import annotations

import argparse
import importlib

from .. import registry
from ..cli import add


def _tasks():
    try:
        return importlib.import_module("optimkit.bench.tasks")
    except ImportError as err:
        # main() reports ValueError cleanly; an ImportError would be a traceback.
        raise ValueError(f"built-in tasks (optimkit.bench.tasks) unavailable: {err}") from err


@add("lr-find", "Run the LR range test for an optimizer on a built-in task; print suggestions.")
def _configure(parser: argparse.ArgumentParser):
    parser.add_argument("--optimizer", required=True, help="a name from `optimkit list`")
    parser.add_argument("--task", required=True, help="a built-in task, e.g. digits-mlp")
    parser.add_argument("--start-lr", type=float, default=1e-7)
    parser.add_argument("--end-lr", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep")
    parser.add_argument("--mode", choices=["exponential", "linear"], default="exponential")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="lr_find.png",
                        help="where to write the figure ('' for none; needs matplotlib)")

    def run(args: argparse.Namespace) -> int:
        from .lr_finder import lr_find

        task = _tasks().get(args.task).build(args.seed)
        optimizer = registry.create(args.optimizer, task.model.parameters())

        class Epochs:  # a fresh epoch of batches each time the sweep runs out
            def __iter__(self):
                return iter(task.batches())

        result = lr_find(
            optimizer, model=task.model, loss_fn=task.loss_fn, batches=Epochs(),
            start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps, mode=args.mode,
        )
        print(f"{args.optimizer} on {args.task}")
        print(result.summary())
        if args.plot:
            try:
                result.plot(args.plot)
            except ImportError as err:
                raise ValueError(str(err)) from None
            print(f"plot written to {args.plot}")
        return 0

    return run
