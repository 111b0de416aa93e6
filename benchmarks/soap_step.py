"""Time SOAP's step: optimkit (eager, compiled) against pytorch_optimizer.SOAP and heavyball.SOAP.

    python benchmarks/soap_step.py                       # d=256, 4 layers, CPU, 1 thread
    python benchmarks/soap_step.py --dim 512 --layers 2 --threads 2
    python benchmarks/soap_step.py --device cuda --dim 1024 --layers 8

The workload is transformer-like: per layer four ``[d, d]`` matrices, a ``[4d, d]`` and a
``[d, 4d]`` one, and two ``[d]`` norm weights (plain Adam in every implementation:
``precondition_1d=False``). Every implementation runs the same schedule: eigenbases refreshed
every ``precondition_frequency`` (10) steps, ``shampoo_beta = beta2 = 0.95``, no dimension
merged, no warm-up (heavyball: ``use_precond_schedule=False``, ``merge_dims=False``). Fixed
random grads; the first ``2 * frequency + 2`` steps (initialisation, compilation) are not
timed; then the implementations take turns, ``--repeat`` windows of ``3 * frequency`` steps
each, and the table gives:

* ``ms/step``: the median over windows of the window's mean, refreshes included (what a
  training step pays on average);
* ``plain``: the median of the steps that refresh nothing; ``refresh``: of those that do;
  ``amortized``: ``plain + (refresh - plain) / frequency`` from those medians (steadier than
  ``ms/step`` on a shared machine, where one slow window moves a mean);
* for optimkit, where the time goes: the eigenbasis part (``soap_eigenbases``: ``eigh`` at the
  first step, power iteration + QR afterwards) per refreshing step, and the rest (rotations,
  the element-wise pass, the factors' update).

``--json`` writes the numbers too. Ratios are to optimkit's eager step of the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optimkit.recipes import SOAP  # noqa: E402

COMMON = dict(lr=3e-3, betas=(0.95, 0.95), eps=1e-8, weight_decay=0.01)


def shapes(dim: int, layers: int) -> list[tuple[int, ...]]:
    one = [(dim, dim)] * 4 + [(4 * dim, dim), (dim, 4 * dim), (dim,), (dim,)]
    return one * layers


def builders(freq: int) -> dict:
    found = {
        "optimkit eager": lambda ps: SOAP(ps, precondition_frequency=freq, **COMMON),
        "optimkit compile": lambda ps: SOAP(ps, precondition_frequency=freq, compile=True,
                                            **COMMON),
    }
    try:
        import pytorch_optimizer

        found["pytorch_optimizer"] = lambda ps: pytorch_optimizer.SOAP(
            ps, precondition_frequency=freq, **COMMON)
    except ImportError:
        pass
    try:
        import heavyball

        def heavy(compile_step):
            return lambda ps: heavyball.SOAP(
                ps, precondition_frequency=freq, shampoo_beta=0.95, max_precond_dim=10000,
                merge_dims=False, precondition_1d=False, warmup_steps=0,
                use_precond_schedule=False, compile_step=compile_step, **COMMON)

        found["heavyball"] = heavy(False)
        found["heavyball compile_step"] = heavy(True)
    except ImportError:
        pass
    return found


class PartTimer:
    """Wall time spent in optimkit's host-gated eigenbasis part (synchronised)."""

    def __init__(self, device):
        from optimkit.stats import preconditioned

        self.part = preconditioned.soap_eigenbases
        self.fn = self.part.fn
        self.device = device
        self.seconds = 0.0
        self.calls = 0

        def timed(b, **hypers):
            sync(device)
            start = time.perf_counter()
            self.fn(b, **hypers)
            sync(device)
            self.seconds += time.perf_counter() - start
            self.calls += 1

        object.__setattr__(self.part, "fn", timed)

    def restore(self):
        object.__setattr__(self.part, "fn", self.fn)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--freq", type=int, default=10, help="precondition_frequency")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", help="implementations to time (labels)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    sizes = shapes(args.dim, args.layers)
    start = [torch.randn(s, generator=gen) * 0.02 for s in sizes]
    window = 3 * args.freq
    warmup = 2 * args.freq + 2
    grads = [[torch.randn(s, generator=gen).to(device) for s in sizes]
             for _ in range(window)]
    found = builders(args.freq)
    if args.only:
        found = {k: v for k, v in found.items() if k in args.only}
    timer = PartTimer(device)
    runs = {}
    for label, build in found.items():
        params = [p.clone().to(device).requires_grad_() for p in start]
        opt = build(params)
        t0 = time.perf_counter()
        for step in range(warmup):
            for p, g in zip(params, grads[step % window]):
                p.grad = g
            opt.step()
        sync(device)
        runs[label] = dict(params=params, opt=opt, steps=warmup, windows=[], plain=[],
                           refresh=[], eig=[], warmup_s=time.perf_counter() - t0)
    for _ in range(args.repeat):
        for label, run in runs.items():
            params, opt = run["params"], run["opt"]
            total = 0.0
            for i in range(window):
                for p, g in zip(params, grads[i]):
                    p.grad = g
                timer.seconds, timer.calls = 0.0, 0
                sync(device)
                t = time.perf_counter()
                opt.step()
                sync(device)
                dt = time.perf_counter() - t
                total += dt
                run["steps"] += 1
                # the reference's schedule: a refresh after step t = 1 + k * freq (t counts
                # the initialising first step), heavyball's every freq-th step
                refreshing = (run["steps"] - 1) % args.freq == 0
                (run["refresh"] if refreshing else run["plain"]).append(dt)
                if label.startswith("optimkit") and timer.calls:
                    run["eig"].append(timer.seconds)
            run["windows"].append(total / window)
    timer.restore()
    base = statistics.median(runs["optimkit eager"]["windows"]) if "optimkit eager" in runs \
        else None
    rows = []
    print(f"SOAP step, {len(sizes)} tensors ({sum(torch.Size(s).numel() for s in sizes) / 1e6:.2f}"
          f"M params, d={args.dim}, {args.layers} layers), {device}, {args.threads} thread(s), "
          f"precondition_frequency={args.freq}, torch {torch.__version__}\n")
    base_amortized = None
    if "optimkit eager" in runs:
        run = runs["optimkit eager"]
        plain, refresh = statistics.median(run["plain"]), statistics.median(run["refresh"])
        base_amortized = plain + (refresh - plain) / args.freq
    print("| implementation | ms/step | vs optimkit eager | plain step ms | refresh step ms "
          "| amortized ms | vs optimkit eager | eigenbasis part ms/refresh | warm-up s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, run in runs.items():
        ms = 1e3 * statistics.median(run["windows"])
        plain = 1e3 * statistics.median(run["plain"])
        refresh = 1e3 * statistics.median(run["refresh"]) if run["refresh"] else float("nan")
        eig = 1e3 * statistics.median(run["eig"]) if run["eig"] else None
        ratio = ms / (1e3 * base) if base else float("nan")
        amortized = plain + (refresh - plain) / args.freq
        amortized_ratio = amortized / (1e3 * base_amortized) if base_amortized else float("nan")
        rows.append(dict(label=label, ms=ms, ratio=ratio, plain_ms=plain, refresh_ms=refresh,
                         amortized_ms=amortized, amortized_ratio=amortized_ratio,
                         eigenbasis_ms=eig, warmup_s=run["warmup_s"]))
        eig_text = f"{eig:.1f}" if eig is not None else "-"
        print(f"| {label} | {ms:.1f} | {ratio:.2f} | {plain:.1f} | {refresh:.1f} | "
              f"{amortized:.1f} | {amortized_ratio:.2f} | {eig_text} | {run['warmup_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(dict(args=vars(args) | {"json": str(args.json)},
                                             rows=rows), indent=1))


if __name__ == "__main__":
    main()
