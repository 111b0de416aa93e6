"""Time one optimizer step: optimkit's modes against torch.optim and the peer libraries.

    pip install -e ".[peers]"                           # the peer libraries it times
    python benchmarks/step_time.py                      # everything (long: compiles many steps)
    python benchmarks/step_time.py --quick              # W1-W3 shrunk, few repeats
    python benchmarks/step_time.py -w W2 -o adam sgd --modes eager flat flat+compile
    python benchmarks/step_time.py -w W1 --cold          # first compiles with an empty cache
    python benchmarks/step_time.py --device cuda -w W1 W3 -o lamb lars --modes eager flat+compile
    python benchmarks/step_time.py --muon                # Muon on a transformer-shaped model

For each workload (W1 resnet-like, W2 many small tensors, W3 a few huge ones) and each
optimizer it times optimkit's ``eager``, ``compile``, ``flat`` and ``flat+compile`` steps, the
same algorithm in torch.optim (for-loop, foreach, fused where torch has it), torch_optimizer
and pytorch_optimizer (foreach and per-param loop, when installed), in one run on fixed random
grads. It reports:

* the median ms per step and its ratio to ``torch.optim.Adam(fused=True)`` timed in the same run;
* the effective GB/s from the algorithm's own byte model (:data:`BYTE_MODEL`: the bytes a step
  must move per fp32 param at the physical floor) and that as a fraction of the memory
  bandwidth measured in the same run (``a.add_(b)`` on tensors of the workload's size);
* the param-sized temporaries of one step, in param sizes: for eager steps the peak of the
  tensors ops allocate and keep alive (a dispatch mode, ``benchmarks/counting.py``); for
  compiled steps the param-sized buffers the generated code allocates;
* for compiled steps, the passes over param-sized memory and the bytes per param of the code
  inductor generated (read from it, ``benchmarks/counting.py``);
* the state bytes per param and the time of the first two steps (the second compiles).

Prints a markdown table and writes JSON.

``--device cuda`` (or any device torch has) runs everything there: the params, grads, the
bandwidth probe and every implementation; each timed step ends with a device synchronize and
the clock is the wall clock. The pass and byte counts read inductor's C++ code, so on another
device they are left out (the temporaries of an eager step are counted on any device).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE.parent / "tests")]

import devices  # noqa: E402
import optim_db  # noqa: E402  (the test database: each optimizer's peers)
from counting import TemporaryPeak, analyse, generated_code  # noqa: E402

import optimkit.registry as registry  # noqa: E402
from optimkit.core import Layout  # noqa: E402

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

# Bytes per fp32 param that one step must move at the physical floor: read the grad once, read
# and write the param and each param-sized state tensor once. Where the update needs a per-tensor
# norm first, it takes two passes and the first pass reads what the norms need. Lookahead's sync
# (read and write the param and the slow copy, 16 B) runs every k steps, so it adds 16 / k.
BYTE_MODEL = {
    "sgd": (20, "p g buf; read g, read+write p, buf (momentum 0.9 here)"),
    "sgd-momentum": (20, "p g buf"),
    "adagrad": (20, "p g sum"),
    "rmsprop": (20, "p g sqr_avg"),
    "adam": (28, "p g m v"),
    "adamw": (28, "p g m v"),
    "amsgrad": (36, "p g m v max_v"),
    "radam": (28, "p g m v"),
    "qhadam": (28, "p g m v"),
    "adamod": (36, "p g m v step_size_avg"),
    "diffgrad": (36, "p g m v prev_grad"),
    "deepmemory": (44, "p g m v prev_grad step_size_avg"),
    "novograd": (24, "pass 1 reads g (||g||); pass 2 reads p g m, writes m p"),
    "lars": (28, "pass 1 reads p g (||w||, ||g||); pass 2 reads p g buf, writes buf p"),
    "larc": (28, "as LARS"),
    "lamb": (40, "pass 1 reads p g m v, writes m v (||w||, ||d||); pass 2 reads p m v, writes p"),
    "ralamb": (40, "as LAMB (||w||, ||w' - lr d||)"),
    "ranger": (28 + 16 / 6, "RAdam's p g m v, Lookahead's sync every 6 steps"),
    "rangerlars": (40 + 16 / 6, "Ralamb's two passes, Lookahead's sync every 6 steps"),
    "lookahead": (20 + 16 / 5, "momentum SGD, Lookahead's sync every 5 steps"),
    # the 2023-25 element-wise ones (cautious=True adds a pass reading the update and g)
    "nadamw": (28, "p g m v"),
    "nadam": (28, "p g m v"),
    "adopt": (28, "p g m v"),
    "laprop": (28, "p g m v"),
    # 2023-25, mixing averages (issue 23)
    "adan": (44, "p g m d(iff avg) v prev_grad"),
    "ademamix": (36, "p g m v m_slow"),
    "mars": (44, "pass 1 reads g last_grad (||c||); pass 2 reads p g m v last_grad, writes "
             "p m v last_grad"),
    # learning-rate-free (issue 22): two passes, the barrier's sums between them
    "prodigy": (52, "pass 1 reads p g p0 m v s, writes m v s; pass 2 reads p m v, writes p"),
    "dadapt-adam": (44, "pass 1 reads g m v s, writes m v s; pass 2 reads p m v, writes p"),
    # factored: the row and column averages are O(rows + cols), not param-sized
    "adafactor": (24, "pass 1 reads p g (||p||, row and column sums of g**2); pass 2 reads g "
                  "(||u||); pass 3 reads g p, writes p"),
    # Schedule-Free (issue 22): the params are y, z the only param copy
    "schedulefree-adamw": (28, "p(y) g z v"),
    "schedulefree-sgd": (20, "p(y) g z"),
}


# The device every tensor of a run lives on (``--device``).
DEVICE = torch.device("cpu")


def make_params(shapes, device=None):
    """Fixed random params and grads of ``shapes`` (drawn on the CPU: the same numbers on
    every device)."""
    device = DEVICE if device is None else device
    gen = torch.Generator().manual_seed(1)
    params = [torch.randn(s, generator=gen).to(device).requires_grad_() for s in shapes]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
    return params


def synchronize():
    devices.synchronize(DEVICE)


# Where the peers run another variant of the algorithm than optimkit's defaults, optimkit is
# timed a second time with the keywords of the peers' variant, so that one row compares like
# with like. pytorch_optimizer's LARS leaves params with ndim <= 1 out of the trust ratio and
# the weight decay (every param of W2 and W3): optimkit's exclude_1d=True.
LIKE_PEERS = {"lars": {"exclude_1d": True}}


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
            if peers and name in LIKE_PEERS:
                like = {**info.bench_kwargs, **LIKE_PEERS[name]}
                variant = " ".join(f"{k}={v}" for k, v in LIKE_PEERS[name].items())
                label = f"optimkit {mode} {variant}"
                out.append((name, label, _builder(info.factory, like, opts)))
        for peer in info.peers:
            is_torch = peer.target.startswith("torch.optim:")
            cls = peer.factory() if (peers or is_torch) else None
            if cls is not None:
                out.append((name, peer.label, _builder(cls, peer.kwargs, {})))
    return out


def _builder(cls, kwargs, options):
    def build(params):
        opt = cls(params, **kwargs, **options)
        # optimizers with train/eval modes step in train mode (schedulefree's start in eval
        # mode and refuse to step); a no-op for the others
        with contextlib.suppress(Exception):
            if callable(getattr(opt, "train", None)):
                opt.train()
        return opt

    return build


# ----------------------------------------------------------------------------- measuring


# The clock of every timing: wall time, or with ``--clock cpu`` the process's CPU time, which
# leaves out the time other processes hold the cores (meaningful with ``--threads 1``).
CLOCK = time.perf_counter


def time_steps(opt, warmup, repeat):
    for _ in range(warmup):
        opt.step()
    times = []
    for _ in range(repeat):
        synchronize()
        start = CLOCK()
        opt.step()
        synchronize()
        times.append(CLOCK() - start)
    return statistics.median(times)


def bandwidth(numel, repeat):
    """GB/s of ``a.add_(b)`` (read a, read b, write a) on a tensor of ``numel`` floats."""
    a, b = torch.randn(numel, device=DEVICE), torch.randn(numel, device=DEVICE)
    times = []
    for _ in range(repeat + 2):
        synchronize()
        start = CLOCK()
        a.add_(b)
        synchronize()
        times.append(CLOCK() - start)
    return 3 * 4 * numel / min(times[2:]) / 1e9  # the limit: the best run, not the typical one


def param_sized_state(opt, params):
    """Number of param-sized state tensors per param, and state bytes per param element.
    An optimkit optimizer says which states are param-shaped (``state_layouts``); another
    library's, by their shape."""
    total = sum(p.numel() for p in params)
    nbytes, big = 0, 0
    layouts = opt.state_layouts() if hasattr(opt, "state_layouts") else None
    for p in params:
        for name, value in opt.state[p].items():
            if isinstance(value, torch.Tensor):
                nbytes += value.numel() * value.element_size()
                aligned = (layouts.get(name) is Layout.PARAM if layouts is not None
                           else value.shape == p.shape)
                if aligned and p.numel() > 1:
                    big += 1
    return big / len(params), nbytes / total


def measure(name, label, build, shapes, warmup, repeat, count=True):
    """Time one implementation; with ``count``, also read its compiled code or temporaries."""
    params = make_params(shapes)
    opt = build(params)
    numel = sum(p.numel() for p in params)
    compiled = "compile" in label and count
    # the pass and byte counts read inductor's C++ code: CPU only
    read_code = compiled and DEVICE.type == "cpu"
    synchronize()
    first = CLOCK()  # with --clock cpu (and TORCHINDUCTOR_COMPILE_THREADS=1): compile CPU time
    opt.step()
    if read_code:  # a compiled step compiles at its second step (the first creates state)
        with generated_code() as codes:
            opt.step()
    else:
        opt.step()
    synchronize()
    first_two = CLOCK() - first
    ms = time_steps(opt, warmup, repeat) * 1e3
    n_state, state_bytes = param_sized_state(opt, params)
    row = {
        "optimizer": name, "implementation": label, "ms": ms, "first_two_steps_s": first_two,
        "state_tensors_per_param": n_state, "state_bytes_per_param": state_bytes, "numel": numel,
    }
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    if read_code:
        counts = analyse(codes, numel)
        row.update(temporaries=counts.temporaries, kernels=counts.kernels,
                   passes=len(counts.passes), generated_bytes_per_param=counts.bytes_per_element,
                   graphs=len(codes))
    elif count and not compiled:
        with TemporaryPeak() as tracker:
            opt.step()
        # optimkit's eager CPU blocks of 32 MiB or more reuse buffers kept between steps
        # (core/scratch.py): temporaries too, though no op of the step allocates them
        executor = getattr(opt, "_executor", None)
        held = executor.scratch.nbytes if executor is not None else 0
        row["temporaries"] = (tracker.peak + held) / param_bytes
        row["scratch_held"] = held / param_bytes
    return row


def run(args):
    results = []
    for wname in args.workloads:
        shapes = WORKLOADS[wname](args.quick)
        numel = sum(torch.Size(s).numel() for s in shapes)
        bw = bandwidth(numel, args.repeat)
        runs = [("adam", "torch fused", _builder(torch.optim.Adam, {}, {"fused": True}))]
        runs += candidates(args.optimizers, args.modes, not args.no_peers)
        # Every implementation once per round, the baseline first; each keeps its best round
        # (a shared machine slows some rounds), its counts from the first.
        best: dict[tuple[str, str], dict] = {}
        for index in range(args.rounds):
            for name, label, build in runs:
                try:
                    row = measure(name, label, build, shapes, args.warmup, args.repeat,
                                  count=index == 0)
                except Exception as exc:  # a peer that cannot run here is reported, not fatal
                    row = {"optimizer": name, "implementation": label, "error": repr(exc)[:200]}
                kept = best.setdefault((name, label), row)
                if "ms" in row and row["ms"] < kept.get("ms", float("inf")):
                    kept["ms"] = row["ms"]
                print(f"  {wname} round {index} {name:10s} {label:26s} "
                      f"{row.get('ms', float('nan')):9.2f} ms", file=sys.stderr, flush=True)
        base, *rows = best.values()
        # each algorithm's own byte model; one pass over optimkit's eager state where none is
        # written down
        minimum = {}
        for row in rows:
            if row["implementation"] == "optimkit eager" and "ms" in row:
                minimum[row["optimizer"]] = (1 + 2 * (1 + row["state_tensors_per_param"])) * 4
        minimum.update({name: model[0] for name, model in BYTE_MODEL.items()})
        for row in rows:
            if "ms" not in row:
                continue
            row["floor_bytes_per_param"] = minimum.get(row["optimizer"], 28)
            moved = row["floor_bytes_per_param"] * numel
            row["gb_per_s"] = moved / (row["ms"] / 1e3) / 1e9
            row["fraction_of_bandwidth"] = row["gb_per_s"] / bw
            row["x_fused_adam"] = row["ms"] / base["ms"]
        results.append({
            "workload": wname, "device": devices.device_name(DEVICE), "tensors": len(shapes),
            "numel": numel,
            "bandwidth_gb_per_s": bw, "fused_adam_ms": base["ms"], "rows": rows,
        })
    return results


def markdown(results):
    lines = []
    for wl in results:
        lines.append(
            f"\n### {wl['workload']} on {wl.get('device', 'cpu')}: {wl['tensors']} tensors, "
            f"{wl['numel'] / 1e6:.1f}M params; "
            f"bandwidth {wl['bandwidth_gb_per_s']:.1f} GB/s; torch fused Adam "
            f"{wl['fused_adam_ms']:.2f} ms\n"
        )
        lines.append("| optimizer | implementation | ms/step | × fused Adam | GB/s | % of bw "
                     "| floor B/param | passes, B/param (generated) | temporaries "
                     "| state B/param | first 2 steps s |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in wl["rows"]:
            if "ms" not in row:
                lines.append(f"| {row['optimizer']} | {row['implementation']} | error: "
                             f"{row['error']} | | | | | | | | |")
                continue
            generated = (f"{row['passes']}, {row['generated_bytes_per_param']}"
                         if "passes" in row else "")
            lines.append(
                f"| {row['optimizer']} | {row['implementation']} | {row['ms']:.2f} "
                f"| {row['x_fused_adam']:.2f} | {row['gb_per_s']:.1f} "
                f"| {100 * row['fraction_of_bandwidth']:.0f} | {row['floor_bytes_per_param']:.0f} "
                f"| {generated} | {row.get('temporaries', float('nan')):.2f} "
                f"| {row['state_bytes_per_param']:.1f} "
                f"| {row['first_two_steps_s']:.1f} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------ Muon (issue 22)


def transformer_like(blocks: int = 12, d: int = 384, vocab: int = 4096):
    """A transformer's params, Muon's workload: per block 4 hidden ``[d, d]`` matrices (Muon)
    and 2 norm weights, plus a token embedding, a final norm and an output head (AdamW)."""
    shapes = [(vocab, d)]
    for _ in range(blocks):
        shapes += [(d, d)] * 4 + [(d,), (d,)]
    return shapes + [(d,), (vocab, d)]


class _Pair:
    """Two optimizers stepped as one (a peer's Muon on the hidden matrices, AdamW on the rest)."""

    def __init__(self, *optimizers, regrad=False):
        self.optimizers = optimizers
        self.state = {p: s for opt in optimizers for p, s in opt.state.items()}
        # heavyball sets p.grad to None after its step: hand the same grads back each step,
        # as a training loop's backward would (else the timed steps have nothing to do)
        self.grads = ([(p, p.grad) for opt in optimizers for g in opt.param_groups
                       for p in g["params"]] if regrad else [])

    def step(self):
        for p, grad in self.grads:
            p.grad = grad
        for opt in self.optimizers:
            opt.step()
        self.state = {p: s for opt in self.optimizers for p, s in opt.state.items()}


def _hidden(params, d):
    """The hidden matrices (Muon's) and the rest (AdamW's) of a ``transformer_like`` model."""
    hidden = [p for p in params if p.shape == (d, d)]
    return hidden, [p for p in params if p.shape != (d, d)]


# Keller Jordan's AdamW branch defaults, which every peer's auxiliary AdamW is given
_AUX = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)


def muon_candidates(d):
    """(label, NS dtype, build) for optimkit's Muon and its peers, each at its own defaults."""
    import optimkit

    def ours(**options):
        def build(params):
            hidden, rest = _hidden(params, d)
            return optimkit.Muon([{"params": hidden},
                                  {"params": rest, "routes": {"matrix": False}}], **options)
        return build

    def torch_muon(params):
        hidden, rest = _hidden(params, d)
        return _Pair(torch.optim.Muon(hidden),
                     torch.optim.AdamW(rest, foreach=True, **_AUX))

    def pytorch_optimizer_muon(params):
        import pytorch_optimizer

        hidden, rest = _hidden(params, d)
        return pytorch_optimizer.Muon([{"params": hidden, "use_muon": True},
                                       {"params": rest, "use_muon": False}])

    def heavyball_muon(params):
        import heavyball

        hidden, rest = _hidden(params, d)
        return _Pair(heavyball.Muon(hidden), torch.optim.AdamW(rest, foreach=True, **_AUX),
                     regrad=True)

    return [
        ("optimkit eager", "bf16", ours()),
        ("optimkit eager flat", "bf16", ours(flat=True)),
        ("optimkit compile (flat=False)", "bf16", ours(compile=True, flat=False)),
        ("optimkit compile (flat=True)", "bf16", ours(compile=True)),
        ("optimkit eager ns_dtype=fp32", "fp32", ours(ns_dtype=torch.float32)),
        ("torch.optim.Muon + AdamW foreach", "bf16", torch_muon),
        ("pytorch_optimizer.Muon", "bf16", pytorch_optimizer_muon),
        ("heavyball.Muon + torch AdamW", "bf16 stochastic-rounded, 5 tuned coefficient sets",
         heavyball_muon),
    ]


def muon_run(args):
    d = 384
    shapes = transformer_like(d=d)
    rows = []
    for label, ns, build in muon_candidates(d):
        try:
            row = measure("muon", label, build, shapes, args.warmup, args.repeat, count=False)
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            row = {"implementation": label, "error": repr(exc)[:300]}
        row["ns_dtype"] = ns
        rows.append(row)
        print(f"  muon {label:34s} {row.get('ms', float('nan')):9.2f} ms "
              f"(first two steps {row.get('first_two_steps_s', float('nan')):.1f} s)",
              file=sys.stderr, flush=True)
    base = next((r["ms"] for r in rows if r["implementation"].startswith("torch.optim")
                 and "ms" in r), None)
    numel = sum(torch.Size(s).numel() for s in shapes)
    lines = [f"\n### Muon on a transformer-shaped model: 12 blocks x 4 [{d}, {d}] matrices, "
             f"norms, a [4096, {d}] embedding and head ({numel / 1e6:.1f}M params), "
             f"{torch.get_num_threads()} threads\n",
             "| implementation | NS dtype | ms/step | x torch.optim.Muon | first 2 steps s |",
             "|---|---|---|---|---|"]
    for row in rows:
        if "ms" not in row:
            lines.append(f"| {row['implementation']} | {row['ns_dtype']} | error: "
                         f"{row['error']} | | |")
            continue
        ratio = f"{row['ms'] / base:.2f}" if base else ""
        lines.append(f"| {row['implementation']} | {row['ns_dtype']} | {row['ms']:.1f} | {ratio} "
                     f"| {row['first_two_steps_s']:.1f} |")
    return rows, "\n".join(lines)


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
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every implementation this many times, keep the best")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the process's CPU time (with --threads 1 on a shared "
                        "machine: leaves out the time other processes hold the core)")
    parser.add_argument("--cold", action="store_true",
                        help="an empty inductor cache: first-compile times as on a fresh machine")
    parser.add_argument("--device", default="cpu",
                        help="where the params, grads and steps live (cuda: wall clock, each "
                        "step synchronized; no pass counts)")
    parser.add_argument("--muon", action="store_true",
                        help="only Muon, on a transformer-shaped model, against its peers")
    parser.add_argument("--json", default="benchmarks/step_time.json")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type != "cpu" and args.clock == "cpu":
        parser.error("--clock cpu times the host process: use the wall clock with --device")
    if args.optimizers is None:
        args.optimizers = registry.available()
    for name in args.optimizers:
        registry.get(name)  # a clear error for an unknown name
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.repeat = args.repeat if args.repeat is not None else (5 if args.quick else 15)
    return args


def main(argv=None):
    args = parse(argv)
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="step_time_inductor_")
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK, DEVICE
    if args.clock == "cpu":
        CLOCK = time.process_time
    DEVICE = args.device
    if args.muon:
        rows, table = muon_run(args)
        print(table)
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "muon": rows}, indent=1))
        return
    results = run(args)
    print(markdown(results))
    meta = {"argv": sys.argv[1:], "threads": torch.get_num_threads(), "torch": torch.__version__,
            "clock": args.clock, "rounds": args.rounds, "device": devices.device_name(args.device)}
    Path(args.json).write_text(json.dumps({**meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
