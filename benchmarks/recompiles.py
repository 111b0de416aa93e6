"""Does a schedule of any numeric hyper-parameter recompile the compiled step?

    python benchmarks/recompiles.py                       # the layer-wise family and Adam
    python benchmarks/recompiles.py -o lamb larc --steps 20

For each optimizer: ``compile=True`` on a small model (flat mode, one bucket), two steps (the
first creates state eagerly, the second compiles), then every step changes EVERY float
hyper-parameter of the group at once (``lr``, each of ``betas``, ``eps``, ``weight_decay``,
``trust_coefficient``, ``clamp_value``, ...: each multiplied by a factor that wanders between
0.8 and 1.2, kept below 1 where it was), and counts the graphs dynamo made. A weight decay of
0 is set to 1e-4 first: 0 and 1 are constants the parts may skip work for (see
``core/compiled.py``), so crossing them recompiles once by design. Integers and flags
(``k``, ``len_memory``, ``clip``) are constants. Prints one line per optimizer and exits 1
if any step after the second made a graph (or the second made none: a graph break
that sends the step back to eager would otherwise pass for "no recompile").
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch._dynamo.utils import counters

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

import optim_db  # noqa: E402

FAMILY = ["lamb", "ralamb", "rangerlars", "lars", "larc", "novograd", "diffgrad", "deepmemory",
          "adam"]


def scheduled(value, factor):
    """``value`` moved by ``factor``; tuples element by element; None for a constant."""
    if isinstance(value, tuple):
        moved = tuple(scheduled(v, factor) for v in value)
        return None if all(m is None for m in moved) else tuple(
            v if m is None else m for v, m in zip(value, moved, strict=True))
    if isinstance(value, bool) or not isinstance(value, float) or value in (0.0, 1.0):
        return None
    if 0 < value < 1:
        return min(value * factor, 1 - (1 - value) / 2)  # betas stay below 1
    return value * factor


def check(name: str, steps: int) -> tuple[int, list[str]]:
    info = optim_db.get(name)
    torch.manual_seed(0)
    params = [torch.randn(s, requires_grad=True) for s in [(16, 8), (16,), (4, 16), (4,)]]
    kwargs = dict(info.bench_kwargs)
    group_defaults = info.factory([torch.zeros(1, requires_grad=True)], **kwargs).param_groups[0]
    if group_defaults.get("weight_decay") == 0.0:
        kwargs["weight_decay"] = 1e-4
    opt = info.factory(params, **kwargs, compile=True)
    torch._dynamo.reset()
    counters.clear()

    def step():
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()

    step()
    step()
    after_first = counters["stats"]["unique_graphs"]
    group = opt.param_groups[0]
    start = {k: v for k, v in group.items() if k != "params"}
    moved = sorted(k for k, v in start.items() if scheduled(v, 1.1) is not None)
    for i in range(steps):
        factor = 1 + 0.2 * math.sin(i + 1)
        for key in moved:
            group[key] = scheduled(start[key], factor)
        step()
    extra = counters["stats"]["unique_graphs"] - after_first
    if after_first == 0:  # a graph break skipped the frame: the step ran eagerly
        raise AssertionError(f"{name}: the second step compiled no graph")
    if not all(torch.isfinite(p).all() for p in params):
        raise AssertionError(f"{name}: non-finite params under the schedule")
    return extra, moved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--optimizers", nargs="+", default=FAMILY)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    bad = 0
    with torch._dynamo.config.patch(recompile_limit=256):
        for name in args.optimizers:
            extra, moved = check(name, args.steps)
            bad += extra > 0
            print(f"{name:11s} graphs made after the first compile: {extra}  "
                  f"(scheduled: {', '.join(moved)})", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
