"""Time optimkit's Prodigy and DAdaptAdam (eager, flat) against prodigyopt and dadaptation.

    python benchmarks/lr_free_speed.py                   # 30 interleaved rounds, one thread
    python benchmarks/lr_free_speed.py --rounds 60 --warm-malloc

One process, one CPU thread, fixed random grads on a model of 52 tensors (2.6M params: 24
256x256 matrices, 24 vectors, 4 1024x256 matrices). Each round steps every optimizer once in
turn (interleaved, so a load change on a shared machine hits them all); the table gives the
median ms per step and its ratio to the reference package timed in the same run; the
``max_grad_norm=1`` rows are relative to optimkit's Adam without clipping.

``--warm-malloc`` first allocates and frees one 24 MiB tensor, as a training step's
activations do: glibc then raises its mmap and trim thresholds (only for a freed block under
32 MiB), and a list of temporaries
freed together is no longer handed back to the kernel and page-faulted in again at the next
step. A bench that allocates nothing else (the default here) pays those faults.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import optimkit

SHAPES = [(256, 256)] * 24 + [(256,)] * 24 + [(1024, 256)] * 4


def make_params() -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return params


def implementations() -> dict[str, tuple[str | None, object]]:
    """name -> (the row it is compared with, a factory)."""
    out: dict[str, tuple[str | None, object]] = {}
    try:
        import prodigyopt
        out["prodigyopt.Prodigy"] = (None, prodigyopt.Prodigy)
    except ImportError:
        pass
    out["optimkit Prodigy eager"] = ("prodigyopt.Prodigy", optimkit.Prodigy)
    out["optimkit Prodigy flat"] = ("prodigyopt.Prodigy",
                                    lambda ps: optimkit.Prodigy(ps, flat=True))
    try:
        import dadaptation
        out["dadaptation.DAdaptAdam"] = (None, dadaptation.DAdaptAdam)
    except ImportError:
        pass
    out["optimkit DAdaptAdam eager"] = ("dadaptation.DAdaptAdam", optimkit.DAdaptAdam)
    out["optimkit DAdaptAdam flat"] = ("dadaptation.DAdaptAdam",
                                       lambda ps: optimkit.DAdaptAdam(ps, flat=True))
    out["optimkit Adam eager"] = (None, optimkit.Adam)
    out["optimkit Adam eager max_grad_norm=1"] = (
        "optimkit Adam eager", lambda ps: optimkit.Adam(ps, max_grad_norm=1.0))
    out["optimkit Adam flat max_grad_norm=1"] = (
        "optimkit Adam eager", lambda ps: optimkit.Adam(ps, max_grad_norm=1.0, flat=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warm-malloc", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.warm_malloc:
        del_me = torch.ones(6 << 20)
        del del_me
    impls = implementations()
    optimizers = {name: factory(make_params()) for name, (_, factory) in impls.items()}
    for opt in optimizers.values():
        for _ in range(3):
            opt.step()
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(args.rounds):
        for name, opt in optimizers.items():
            start = time.process_time()
            opt.step()
            times[name].append(time.process_time() - start)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"| optimizer | ms/step (median of {args.rounds}) | vs |")
    print("|---|---:|---|")
    for name, (base, _) in impls.items():
        vs = f"{median[name] / median[base]:.2f}x {base}" if base in median else ""
        print(f"| {name} | {1e3 * median[name]:.1f} | {vs} |")


if __name__ == "__main__":
    main()
