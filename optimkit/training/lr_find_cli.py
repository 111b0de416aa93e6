"""``optimkit lr-find``: the LR range test on a built-in task, from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add
from ..outputs import DEFAULT_OUT


def sweep(task: str, optimizer: str, seed: int = 0, **kwargs):
    """``lr_find`` for the registered ``optimizer`` (at its defaults) on the bench task
    ``task`` built with ``seed``; ``kwargs`` go to ``lr_find``. Returns the ``LRFindResult``.

    The batches are the task's training epochs, a fresh shuffle each time the sweep runs out.
    ValueError for an unknown task or optimizer, or when the task's data needs a missing extra.
    """
    from .. import registry
    from ..bench import tasks
    from .lr_finder import lr_find

    try:
        instance = tasks.get(task).build(seed)
    except ImportError as err:  # scikit-learn, for the digits and diabetes tasks
        raise ValueError(f"task {task!r} needs {err.name or err}: "
                         "pip install 'optimkit[bench]'") from None
    opt = registry.create(optimizer, instance.model.parameters())

    class Epochs:
        def __iter__(self):
            return iter(instance.batches())

    return lr_find(opt, model=instance.model, loss_fn=instance.loss_fn, batches=Epochs(),
                   **kwargs)


def recommendation(result) -> str:
    """The lines that say which suggestion to use, and why."""
    from .lr_finder import DEFAULT_RULE, DEFAULT_RULE_EVIDENCE, rule_tables

    lr = result.suggestion
    if lr is None:
        return "no recommendation: the sweep was too short (raise --steps or --end-lr)"
    tables = " and ".join(str(path) for path in rule_tables())
    return (f"recommended: lr = {lr:.3g} (the {DEFAULT_RULE!r} rule; result.suggestion and "
            f"result.apply() use it)\n  why: {DEFAULT_RULE_EVIDENCE}\n  the measurements: "
            f"{tables}")


@add("lr-find", "Run the LR range test for an optimizer on a built-in task; print suggestions.")
def _configure(parser: argparse.ArgumentParser):
    parser.add_argument("--optimizer", required=True, help="a name from `optimkit list`")
    parser.add_argument("--task", required=True,
                        help="a task of `optimkit bench`, e.g. digits-mlp")
    parser.add_argument("--start-lr", type=float, default=1e-7, help="the sweep's first lr")
    parser.add_argument("--end-lr", type=float, default=10.0, help="the sweep's last lr")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep")
    parser.add_argument("--mode", choices=["exponential", "linear"], default="exponential",
                        help="how the lr grows from step to step")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the task's initial weights and batch order")
    parser.add_argument("--plot", default=None,
                        help=f"the figure's path, '' for none (default: {DEFAULT_OUT}/"
                        "lr-find-OPTIMIZER-TASK.png; needs matplotlib)")

    def run(args: argparse.Namespace) -> int:
        from ..outputs import check_file, image_formats
        plot = args.plot
        if plot is None:
            plot = str(Path(DEFAULT_OUT) / f"lr-find-{args.optimizer}-{args.task}.png")
        if plot:  # checked before the sweep: a bad path must not cost the run
            check_file(plot, "--plot", image_formats())
        result = sweep(args.task, args.optimizer, args.seed, start_lr=args.start_lr,
                       end_lr=args.end_lr, num_steps=args.steps, mode=args.mode)
        print(f"{args.optimizer} on {args.task} (seed {args.seed})")
        print(result.summary())
        print(recommendation(result))
        if plot:
            Path(plot).parent.mkdir(parents=True, exist_ok=True)
            result.plot(plot)
            print(f"plot written to {plot}")
        return 0

    return run
