"""Prototype compiled steps of the layer-wise optimizers over one padded flat buffer.

    python benchmarks/flat_steps.py                 # W1-W3, every prototype
    python benchmarks/flat_steps.py -w W1 -o lamb lars --chunk 64 256

Plain functions (outside the library) that learn what code shape inductor fuses into the
fewest passes. Every param of a workload lives in one buffer, each padded to a multiple of
``chunk`` elements and the buffer viewed as ``[rows, chunk]``: a per-tensor norm is a row
reduction (masked to the valid elements of each tensor's last row) plus a tiny per-tensor sum
over the row sums, and a per-tensor factor reaches the elements as a ``[rows, 1]`` column,
so no per-element segment id is ever read. Every float hyper-parameter (lr, betas, eps,
weight decay, trust coefficient...) is a 0-d tensor, so a schedule of any of them must not
recompile: the script checks that with ``error_on_recompile``. What depends on the step count
alone (Adam's bias corrections, RAdam's rectification) is computed on the host, as the library
does, and passed in as 0-d tensors too: computed in the graph, inductor inlines ``beta**t`` into
the elementwise loop and evaluates two double ``pow`` per vector of 8 floats (W1 Adam: 9x
slower than torch's fused Adam).

For each prototype it prints the kernels, the passes over param-sized memory and the bytes
per param they move (read from the generated code, ``benchmarks/counting.py``), the
param-sized temporaries inductor allocates, the first call's seconds (compile included; the
inductor cache is a fresh directory per run), and the median step time as a multiple of
``torch.optim.Adam(fused=True)`` on the same workload's tensors, timed interleaved.

Physical floors (bytes per fp32 param per step, two passes where a norm must be known before
the update): Adam 28 (read p g m v, write p m v); LAMB and Ralamb 40 (pass 1 reads p g m v and
writes m v while reducing ||w||, ||d||; pass 2 reads p m v, writes p); LARS and LARC 28 (pass 1
reads p g; pass 2 reads p g buf, writes buf p); NovoGrad 24 (pass 1 reads g; pass 2 reads p g m,
writes m p); DiffGrad 36 and DeepMemory 44 (one pass; prev_grad, and DeepMemory's step-size
average, are one more state each).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # first-compile times are cold ones
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="flat_steps_inductor_")

import torch  # noqa: E402
import torch._inductor.inductor_prims  # noqa: E402, F401  (registers inductor_force_stride_order)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from counting import analyse  # noqa: E402
from segmented import Layout, side_by_side  # noqa: E402
from step_time import WORKLOADS, make_params  # noqa: E402

# ----------------------------------------------------------------------------- helpers


class Segments:
    """What a step needs to know about the padded layout, as tensors (graph inputs)."""

    def __init__(self, lay: Layout):
        self.row_seg = lay.row_seg
        self.last_row = lay.last_rows
        self.valid = lay.valid
        self.n = lay.n

    def mask(self, x):
        return torch.arange(x.shape[1], device=x.device)[None, :] < self.valid[:, None]

    def sums(self, *squares):
        """Per-tensor sums of each ``[rows, chunk]`` operand (padding masked), ``[k, n]``."""
        mask = self.mask(squares[0])
        rows = torch.stack([torch.where(mask, s, 0).sum(1) for s in squares])
        # Each tensor's rows are consecutive: its sum is the difference of the running sum at
        # its last row and at the last row before it. In float64, so the difference of two
        # large running sums keeps the small tensors' digits. Measured against index_add_ over
        # the row ids (atomic adds): 0.6 ms against 2.0 ms on W1's 183k rows, one thread.
        ends = torch.cumsum(rows.double(), 1)[:, self.last_row]
        return torch.cat([ends[:, :1], ends[:, 1:] - ends[:, :-1]], 1)

    def column(self, per_tensor):
        """A per-tensor value as a ``[rows, 1]`` column that broadcasts over the elements.

        The per-tensor values are made a buffer of their own first: otherwise inductor inlines
        their math (square roots, divisions) into the elementwise loop, once per vector of 8
        (W1 LAMB's update pass: 34 ms against 20 ms, one thread)."""
        if torch.compiler.is_compiling():
            per_tensor = torch.ops.prims.inductor_force_stride_order(per_tensor, (1,))
        return per_tensor[self.row_seg].unsqueeze(1)

    def masked(self, x):
        """``x`` with its padding read as zeros: a no-op for buffers whose padding is zero (the
        gradient), but the elementwise math that reads it keeps the ``[rows, chunk]`` loops of the
        row reductions, so inductor fuses the two into one pass."""
        return torch.where(self.mask(x), x, 0)


def hyper(value):
    return torch.tensor(float(value), dtype=torch.float64)


# ----------------------------------------------------------------------------- prototypes
# Each takes (params, grads, state..., hypers..., segments) and updates in place.


def adam(p, g, m, v, beta1, beta2, eps, step_size, bc2_sqrt, seg):
    m.mul_(beta1).add_(g * (1 - beta1))
    v.mul_(beta2).add_(g * g * (1 - beta2))
    p.sub_(step_size * m / (v.sqrt() / bc2_sqrt + eps))


def lamb(p, g, m, v, lr, beta1, beta2, eps, wd, clamp, seg):
    """torch_optimizer.Lamb: d = m / (sqrt(v) + eps) + wd p, ratio = min(|w|, clamp) / |d|."""
    m.mul_(beta1).add_(g * (1 - beta1))
    v.mul_(beta2).add_(g * g * (1 - beta2))
    d = m / (v.sqrt() + eps) + wd * p
    w, u = seg.sums(p * p, d * d).sqrt()
    ratio = torch.where((w > 0) & (u > 0), torch.minimum(w, clamp) / u, 1.0)
    p.sub_(lr * seg.column(ratio).float() * d)


def lamb_masked(p, g, m, v, lr, beta1, beta2, eps, wd, clamp, seg):
    """LAMB reading the gradient through the row mask: the moments' stores then keep the
    ``[rows, chunk]`` loop shape of the row reductions, and inductor fuses them (pass 1)."""
    lamb(p, seg.masked(g), m, v, lr, beta1, beta2, eps, wd, clamp, seg)


def lamb_two_graphs(p, g, m, v, lr, beta1, beta2, eps, wd, clamp, seg):
    """LAMB with a graph break after pass 1, so that pass 2 reads the stored m, v (not g)."""
    g = seg.masked(g)
    m.mul_(beta1).add_(g * (1 - beta1))
    v.mul_(beta2).add_(g * g * (1 - beta2))
    d = m / (v.sqrt() + eps) + wd * p
    norms = seg.sums(p * p, d * d).sqrt()
    torch._dynamo.graph_break()
    w, u = norms
    ratio = torch.where((w > 0) & (u > 0), torch.minimum(w, clamp) / u, 1.0)
    d = m / (v.sqrt() + eps) + wd * p
    p.sub_(lr * seg.column(ratio).float() * d)


def ralamb(p, g, m, v, lr, beta1, beta2, eps, wd, clamp, size, rectified, seg):
    """over9000 Ralamb: RAdam's direction, ratio = min(|w|, clamp) / |w (1 - lr wd) - lr d|.
    ``size`` (the rectified step size) and ``rectified`` (1.0 or 0.0) come from the step count,
    computed on the host as RAdam does."""
    m.mul_(beta1).add_(g * (1 - beta1))
    v.mul_(beta2).add_(g * g * (1 - beta2))
    d = torch.where(rectified > 0, size * m / (v.sqrt() + eps), size * m)
    decayed = p * (1 - lr * wd)
    w, u = seg.sums(p * p, (decayed - lr * d) ** 2).sqrt()
    ratio = torch.where((w > 0) & (u > 0), torch.minimum(w, clamp) / u, 1.0)
    p.copy_(decayed - lr * seg.column(ratio).float() * d)


def lars(p, g, buf, lr, momentum, wd, trust, eps, seg, clip=False):
    """apex LARC(SGD): local = trust |w| / (|g| + wd |w| + eps); d = local (g + wd w)."""
    w, gn = seg.sums(p * p, g * g).sqrt()
    adapted = (w > 0) & (gn > 0)
    local = trust * w / (gn + wd * w + eps)
    if clip:
        local = torch.clamp(local / lr, max=1.0)
    local = torch.where(adapted, local, 1.0)
    decay = torch.where(adapted, local * wd, 0.0)
    d = seg.column(local).float() * g + seg.column(decay).float() * p
    buf.mul_(momentum).add_(d)
    p.sub_(lr * buf)


def larc(p, g, buf, lr, momentum, wd, trust, eps, seg):
    lars(p, g, buf, lr, momentum, wd, trust, eps, seg, clip=True)


def novograd(p, g, m, layer_v, lr, beta1, beta2, eps, wd, seg):
    """torch_optimizer.NovoGrad: v = b2 v + (1 - b2) |g|^2 per tensor; m = b1 m + g / (sqrt(v) +
    eps) + wd p; p -= lr m."""
    (gsq,) = seg.sums(g * g)
    new = torch.where(layer_v == 0, gsq, beta2 * layer_v + (1 - beta2) * gsq)
    layer_v.copy_(new)
    d = g / seg.column(new.sqrt() + eps).float() + wd * p
    m.mul_(beta1).add_(d)
    p.sub_(lr * m)


def diffgrad(p, g, m, v, prev, beta1, beta2, eps, step_size, seg):
    """torch_optimizer.DiffGrad: xi = sigmoid(|prev - g|), p -= step_size xi m / (sqrt(v) + eps)
    with step_size = lr sqrt(1 - beta2^t) / (1 - beta1^t) (from the step count, on the host)."""
    m.mul_(beta1).add_(g * (1 - beta1))
    v.mul_(beta2).add_(g * g * (1 - beta2))
    xi = torch.sigmoid((prev - g).abs())
    prev.copy_(g)
    p.sub_(step_size * xi * m / (v.sqrt() + eps))


def deepmemory(p, g, m, v, prev, s, beta1, beta2, beta3, eps, step_size, seg):
    """lessw2020 DeepMemory: eta = step_size / (sqrt(v) + eps); s = b3 s + (1 - b3) eta;
    p -= (eta + s) / 2 * sigmoid(prev - g) * m."""
    m.mul_(beta1).add_(g * (1 - beta1))
    v.mul_(beta2).add_(g * g * (1 - beta2))
    eta = step_size / (v.sqrt() + eps)
    s.mul_(beta3).add_(eta * (1 - beta3))
    xi = torch.sigmoid(prev - g)
    prev.copy_(g)
    p.sub_((eta + s) / 2 * xi * m)


# name -> (fn, state buffers (param-sized), per-tensor state, hypers, floor B/param)
PROTOTYPES = {
    "adam": (adam, 2, 0, dict(beta1=0.9, beta2=0.999, eps=1e-8, step_size=1e-2, bc2_sqrt=0.04),
             28),
    "lamb": (lamb, 2, 0, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.01, clamp=10), 40),
    "lamb-masked": (lamb_masked, 2, 0,
                    dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.01, clamp=10), 40),
    "lamb-2graphs": (lamb_two_graphs, 2, 0,
                     dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.01, clamp=10), 40),
    "ralamb": (ralamb, 2, 0,
               dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01, clamp=10, size=0.5,
                    rectified=1.0), 40),
    "lars": (lars, 1, 0, dict(lr=1e-3, momentum=0.9, wd=1e-4, trust=1e-3, eps=1e-8), 28),
    "larc": (larc, 1, 0, dict(lr=1e-3, momentum=0.9, wd=1e-4, trust=0.02, eps=1e-8), 28),
    "novograd": (novograd, 1, 1, dict(lr=1e-3, beta1=0.95, beta2=0.98, eps=1e-8, wd=1e-4), 24),
    "diffgrad": (diffgrad, 3, 0, dict(beta1=0.9, beta2=0.999, eps=1e-8, step_size=1e-3), 36),
    "deepmemory": (deepmemory, 4, 0,
                   dict(beta1=0.9, beta2=0.999, beta3=0.995, eps=1e-6, step_size=4e-3), 44),
}


def build(name, lay, gen):
    fn, n_state, n_layer, hypers, floor = PROTOTYPES[name]
    flat = lay.pad(torch.randn(lay.numel, generator=gen))
    grad = lay.pad(torch.randn(lay.numel, generator=gen) * 1e-2)
    state = [lay.pad(torch.rand(lay.numel, generator=gen) * 1e-3) for _ in range(n_state)]
    layer = [torch.rand(lay.n, generator=gen) * 1e-4 for _ in range(n_layer)]
    args = [flat, grad, *state, *layer, *[hyper(v) for v in hypers.values()], Segments(lay)]
    return fn, args, floor


def schedule(args, step):
    """The same arguments with every hyper-parameter moved, as a schedule would."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() == 0:
            a = a * (1 + 1e-3 * step) if float(a) < 0.5 else 1 - (1 - a) * (1 + 1e-3 * step)
        out.append(a)
    return out


def main(argv=None):
    from torch._inductor.utils import run_and_get_code

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workloads", nargs="+", default=list(WORKLOADS),
                        choices=list(WORKLOADS))
    parser.add_argument("-o", "--optimizers", nargs="+", default=list(PROTOTYPES),
                        choices=list(PROTOTYPES))
    parser.add_argument("--chunk", nargs="+", type=int, default=[64])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-time", action="store_true", help="counts and compile times only")
    parser.add_argument("--inductor", nargs="*", default=[], metavar="KEY=INT",
                        help="inductor options, e.g. realize_reads_threshold=64")
    args = parser.parse_args(argv)
    options = {k: int(v) for k, v in (kv.split("=") for kv in args.inductor)}
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; inductor cache "
          f"{os.environ['TORCHINDUCTOR_CACHE_DIR']}; inductor options {options}")
    for wname in args.workloads:
        shapes = WORKLOADS[wname](args.quick)
        params = make_params(shapes)
        fused = torch.optim.Adam(params, fused=True)
        fused.step()
        numel = sum(p.numel() for p in params)
        print(f"\n### {wname}: {len(shapes)} tensors, {numel / 1e6:.1f}M params\n")
        print("| prototype | chunk | kernels | passes | B/param (floor) | temporaries "
              "| first call s | recompiles under schedules | × fused Adam |")
        print("|---|---|---|---|---|---|---|---|---|")
        rows, cases = [], {"torch fused Adam": fused.step}
        for chunk in args.chunk:
            lay = Layout(shapes, chunk)
            for name in args.optimizers:
                gen = torch.Generator().manual_seed(0)
                fn, fargs, floor = build(name, lay, gen)
                compiled = torch.compile(fn, dynamic=False, options=options)
                start = time.perf_counter()
                with torch._inductor.config.patch(fx_graph_cache=False):
                    _, codes = run_and_get_code(compiled, *fargs)
                first = time.perf_counter() - start
                counts = analyse(codes, lay.numel)
                try:
                    with torch._dynamo.config.patch(error_on_recompile=True):
                        for step in range(1, 4):
                            compiled(*schedule(fargs, step))
                    recompiles = "none"
                except Exception as exc:  # a recompile raises
                    recompiles = f"yes: {str(exc).splitlines()[0][:80]}"
                cases[f"{name}/{chunk}"] = (lambda c=compiled, a=fargs: c(*a))
                rows.append((name, chunk, counts, floor, first, recompiles))
        ms = {} if args.no_time else side_by_side(cases, args.rounds, args.reps)
        base = ms.get("torch fused Adam")
        for name, chunk, counts, floor, first, recompiles in rows:
            ratio = f"{ms[f'{name}/{chunk}'] / base:.2f}" if ms else ""
            print(f"| {name} | {chunk} | {counts.kernels} | {len(counts.passes)} "
                  f"| {counts.bytes_per_element} ({floor}) | {counts.temporaries:.2f} "
                  f"| {first:.1f} | {recompiles} | {ratio} |")
        if ms:
            print(f"\ntorch fused Adam: {base:.2f} ms")


if __name__ == "__main__":
    main()
