"""Time one optimizer step: optimkit's modes against torch.optim and the peer libraries.

    python benchmarks/step_time.py                      # everything (long: compiles many steps)
    python benchmarks/step_time.py --quick              # W1-W3 shrunk, few repeats
    python benchmarks/step_time.py -w W2 -o adam sgd --modes eager flat flat+compile

For each workload (W1 resnet-like, W2 many small tensors, W3 a few huge ones) and each
optimizer it times optimkit's ``eager``, ``compile``, ``flat`` and ``flat+compile`` steps, the
same algorithm in torch.optim (for-loop, foreach, fused where torch has it), torch_optimizer
and pytorch_optimizer (when installed), in one run on fixed random grads. It reports the median
ms per step, the ratio to ``torch.optim.Adam(fused=True)``, the effective GB/s from the
algorithm's own minimum bytes moved (read grad, read and write param and each param-sized
state tensor), that as a fraction of the memory bandwidth measured in the same run (``a.add_(b)``
on tensors of the workload's size), the state bytes per param and the peak of the temporaries
one eager step allocates. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import optim_db  # noqa: E402  (the test database: each optimizer's peers)

import optimkit.registry as registry  # noqa: E402

# ----------------------------------------------------------------------------- workloads


def resnet_like() -> list[tuple[int, ...]]:
    """~160 tensors, ~11M params: conv weights, batch-norm weights and biases, a classifier."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    widths = [64, 128, 256, 512]
    cin = 64
    for w in widths:
        for block in range(2):
            shapes += [(w, cin, 3, 3), (w,), (w,), (w, w, 3, 3), (w,), (w,)]
            if block == 0 and cin != w:
                shapes += [(w, cin, 1, 1), (w,), (w,)]
            cin = w
    shapes += [(1000, 512), (1000,)]
    # pad with small norm layers to reach ~160 tensors, as a real resnet18 state has
    shapes += [(64,)] * (160 - len(shapes))
    return shapes


def many_small(count: int = 2000) -> list[tuple[int, ...]]:
    gen = torch.Generator().manual_seed(0)
    return [(int(n),) for n in torch.randint(1000, 5001, (count,), generator=gen)]


def few_huge(total: int = 50_000_000) -> list[tuple[int, ...]]:
    return [(total // 2,), (total // 4,), (total // 8,), (total // 8,)]


WORKLOADS: dict[str, Callable[[bool], list[tuple[int, ...]]]] = {
    "W1": lambda quick: resnet_like(),
    "W2": lambda quick: many_small(2000 if not quick else 400),
    "W3": lambda quick: few_huge(50_000_000 if not quick else 8_000_000),
}

# ----------------------------------------------------------------------------- implementations

MODES = ("eager", "compile", "flat", "flat+compile")


def make_params(shapes):
    gen = torch.Generator().manual_seed(1)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    return params


def candidates(names, modes, peers=True):
    """(optimizer name, implementation label, build(params) -> optimizer) for every run.

    The peers of each optimizer (torch.optim's for-loop, foreach and fused implementations,
    torch_optimizer's, pytorch_optimizer's) come from the test database, tests/optim_db.py.
    """
    out = []
    for name in names:
        info = optim_db.get(name)
        for mode in modes:
            opts = {"flat": "flat" in mode, "compile": "compile" in mode}
            out.append((name, f"optimkit {mode}", _builder(info.factory, info.bench_kwargs, opts)))
        for peer in info.peers:
            is_torch = peer.target.startswith("torch.optim:")
            cls = peer.factory() if (peers or is_torch) else None
            if cls is not None:
                out.append((name, peer.label, _builder(cls, peer.kwargs, {})))
    return out


def _builder(cls, kwargs, options):
    return lambda params: cls(params, **kwargs, **options)


# ----------------------------------------------------------------------------- measuring


class TemporaryPeak(TorchDispatchMode):
    """Peak bytes of the tensors that ops allocate (and that are still alive) during a step."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            ptr = t.untyped_storage().data_ptr()
            if ptr in inputs or ptr in self._seen or t.device.type == "meta":
                continue
            self._seen.add(ptr)
            size = t.untyped_storage().nbytes()
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(t.untyped_storage(), self._free, ptr, size)
        return out

    def _free(self, ptr, size):
        self.live -= size
        self._seen.discard(ptr)


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


def time_steps(opt, warmup, repeat):
    for _ in range(warmup):
        opt.step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bandwidth(numel, repeat):
    """GB/s of ``a.add_(b)`` (read a, read b, write a) on a tensor of ``numel`` floats."""
    a, b = torch.randn(numel), torch.randn(numel)
    times = []
    for _ in range(repeat + 2):
        start = time.perf_counter()
        a.add_(b)
        times.append(time.perf_counter() - start)
    return 3 * 4 * numel / min(times[2:]) / 1e9  # the limit: the best run, not the typical one


def param_sized_state(opt, params):
    """Number of param-sized state tensors per param, and state bytes per param element."""
    total = sum(p.numel() for p in params)
    nbytes, big = 0, 0
    for p in params:
        for value in opt.state[p].values():
            if isinstance(value, torch.Tensor):
                nbytes += value.numel() * value.element_size()
                if value.shape == p.shape and p.numel() > 1:
                    big += 1
    return big / len(params), nbytes / total


def measure(name, label, build, shapes, warmup, repeat):
    params = make_params(shapes)
    opt = build(params)
    first = time.perf_counter()
    opt.step()
    opt.step()  # a compiled step compiles at its second step (the first creates state)
    first_two = time.perf_counter() - first
    ms = time_steps(opt, warmup, repeat) * 1e3
    n_state, state_bytes = param_sized_state(opt, params)
    peak = None
    if "compile" not in label:
        with TemporaryPeak() as tracker:
            opt.step()
        peak = tracker.peak
    numel = sum(p.numel() for p in params)
    return {
        "optimizer": name, "implementation": label, "ms": ms, "first_two_steps_s": first_two,
        "state_tensors_per_param": n_state, "state_bytes_per_param": state_bytes,
        "peak_temporaries_bytes": peak, "numel": numel,
    }


def run(args):
    results = []
    for wname in args.workloads:
        shapes = WORKLOADS[wname](args.quick)
        numel = sum(torch.Size(s).numel() for s in shapes)
        bw = bandwidth(numel, args.repeat)
        base = measure("adam", "torch fused", _builder(torch.optim.Adam, {}, {"fused": True}),
                       shapes, args.warmup, args.repeat)
        rows = []
        for name, label, build in candidates(args.optimizers, args.modes, not args.no_peers):
            try:
                row = measure(name, label, build, shapes, args.warmup, args.repeat)
            except Exception as exc:  # a peer that cannot run here is reported, not fatal
                row = {"optimizer": name, "implementation": label, "error": repr(exc)[:200]}
            rows.append(row)
            print(f"  {wname} {name:10s} {label:24s} {row.get('ms', float('nan')):9.2f} ms",
                  file=sys.stderr, flush=True)
        # each algorithm's own minimum traffic, from optimkit's eager state
        minimum = {}
        for row in rows:
            if row["implementation"] == "optimkit eager" and "ms" in row:
                minimum[row["optimizer"]] = (1 + 2 * (1 + row["state_tensors_per_param"])) * 4
        for row in rows:
            if "ms" not in row:
                continue
            moved = minimum.get(row["optimizer"], 28) * numel
            row["gb_per_s"] = moved / (row["ms"] / 1e3) / 1e9
            row["fraction_of_bandwidth"] = row["gb_per_s"] / bw
            row["x_fused_adam"] = row["ms"] / base["ms"]
        results.append({
            "workload": wname, "tensors": len(shapes), "numel": numel,
            "bandwidth_gb_per_s": bw, "fused_adam_ms": base["ms"], "rows": rows,
        })
    return results


def markdown(results):
    lines = []
    for wl in results:
        lines.append(
            f"\n### {wl['workload']}: {wl['tensors']} tensors, {wl['numel'] / 1e6:.1f}M params; "
            f"bandwidth {wl['bandwidth_gb_per_s']:.1f} GB/s; torch fused Adam "
            f"{wl['fused_adam_ms']:.2f} ms\n"
        )
        lines.append("| optimizer | implementation | ms/step | × fused Adam | GB/s | % of bw "
                     "| state B/param | peak temp MB | first 2 steps s |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for row in wl["rows"]:
            if "ms" not in row:
                lines.append(f"| {row['optimizer']} | {row['implementation']} | error: "
                             f"{row['error']} | | | | | | |")
                continue
            peak = row["peak_temporaries_bytes"]
            peak = "–" if peak is None else f"{peak / 1e6:.1f}"
            lines.append(
                f"| {row['optimizer']} | {row['implementation']} | {row['ms']:.2f} "
                f"| {row['x_fused_adam']:.2f} | {row['gb_per_s']:.1f} "
                f"| {100 * row['fraction_of_bandwidth']:.0f} | {row['state_bytes_per_param']:.1f} "
                f"| {peak} | {row['first_two_steps_s']:.1f} |"
            )
    return "\n".join(lines)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workloads", nargs="+", default=list(WORKLOADS),
                        choices=list(WORKLOADS))
    parser.add_argument("-o", "--optimizers", nargs="+", default=None,
                        help="registry names (default: all)")
    parser.add_argument("--modes", nargs="+", default=["eager", "flat", "flat+compile"],
                        choices=MODES, help="compile without flat unrolls per tensor: slow to"
                        " compile on W2")
    parser.add_argument("--quick", action="store_true", help="smaller workloads, fewer repeats")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default); 1 is steadier on a "
                        "loaded shared machine, where OpenMP threads wait on each other")
    parser.add_argument("--json", default="benchmarks/step_time.json")
    args = parser.parse_args(argv)
    if args.optimizers is None:
        args.optimizers = registry.available()
    for name in args.optimizers:
        registry.get(name)  # a clear error for an unknown name
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.repeat = args.repeat if args.repeat is not None else (5 if args.quick else 15)
    return args


def main(argv=None):
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args)
    print(markdown(results))
    meta = {"argv": sys.argv[1:], "threads": torch.get_num_threads(), "torch": torch.__version__}
    Path(args.json).write_text(json.dumps({**meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
