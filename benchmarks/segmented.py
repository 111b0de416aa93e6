"""Per-tensor reductions and their broadcast back: which implementation, in which mode.

    python benchmarks/segmented.py                          # W1-W3, every part
    python benchmarks/segmented.py -w W1 --parts reduce broadcast --rounds 7

Layer-wise optimizers (LARS, LAMB, NovoGrad...) need one number per tensor (a norm, a dot
product) and then multiply each tensor by its own number. This script measures every way to do
both on the workloads of ``benchmarks/step_time.py`` (W1 resnet-like, W2 many small, W3 few
huge), in three settings:

* **eager**: a list of separate tensors (``torch._foreach_norm``, ``_foreach_powsum``,
  ``_foreach_mm`` for dot products, a Python loop for comparison);
* **flat**: one buffer holding every tensor back to back (``split`` + foreach over views,
  ``torch.segment_reduce``, ``index_add_`` / ``scatter_add_`` over segment ids), or padded so
  that every tensor starts at a multiple of ``chunk`` elements, viewed as ``[n_chunks, chunk]``:
  a dense row reduction then a tiny per-tensor sum over the chunk sums; broadcast back by
  ``repeat_interleave``, a gather by segment id, per-view foreach with a scalar list, or a
  ``[n_chunks, 1]`` per-chunk factor;
* **compiled**: the same under ``torch.compile`` (inductor), with the kernels and the passes
  over memory counted in the generated code (``benchmarks/counting.py``).

For each it prints the best-of-rounds ms (implementations interleaved round by round, so a
loaded machine slows them alike), the ratio to the first row of its table, the effective GB/s
at the physical floor (a reduction reads each element once; an in-place broadcast reads and
writes it once), the param-sized temporaries one call allocates (a dispatch mode tracks them)
and, compiled, the passes and bytes per element of the generated code.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from counting import TemporaryPeak, analyse  # noqa: E402
from step_time import WORKLOADS  # noqa: E402

# ----------------------------------------------------------------------------- layouts


class Layout:
    """Segment bookkeeping of a flat buffer, unpadded and padded to ``chunk``-element rows."""

    def __init__(self, shapes, chunk: int):
        self.sizes = [torch.Size(s).numel() for s in shapes]
        self.n = len(self.sizes)
        self.numel = sum(self.sizes)
        self.lengths = torch.tensor(self.sizes)
        self.seg_ids = torch.repeat_interleave(torch.arange(self.n), self.lengths)
        self.seg_ids32 = self.seg_ids.int()
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.chunk = chunk
        self.padded = [(s + chunk - 1) // chunk * chunk for s in self.sizes]
        self.rows = sum(self.padded) // chunk
        self.rows_per_seg = torch.tensor([p // chunk for p in self.padded])
        self.row_seg = torch.repeat_interleave(torch.arange(self.n), self.rows_per_seg)
        # valid elements of each row (chunk everywhere but in a tensor's last row)
        self.valid = torch.full((self.rows,), chunk)
        last = torch.cumsum(self.rows_per_seg, 0) - 1
        self.valid[last] = torch.tensor(self.sizes) - (self.rows_per_seg - 1) * chunk
        self.last_rows = last
        self.padding = sum(self.padded) / self.numel - 1

    def flat(self, gen):
        return torch.randn(self.numel, generator=gen)

    def pad(self, flat):
        """The padded ``[rows, chunk]`` copy of ``flat`` (zeros in the padding)."""
        out = torch.zeros(self.rows * self.chunk)
        for src, dst in zip(flat.split(self.sizes), self.views(out), strict=True):
            dst.copy_(src)
        return out.view(self.rows, self.chunk)

    def views(self, padded):
        starts = torch.cumsum(torch.tensor([0] + self.padded[:-1]), 0).tolist()
        flat = padded.reshape(-1)
        return [flat[s:s + n] for s, n in zip(starts, self.sizes, strict=True)]


# ----------------------------------------------------------------------------- timing


def side_by_side(cases: dict[str, Callable[[], object]], rounds: int, reps: int):
    """Best-of-rounds median ms of each case, the cases interleaved within every round."""
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            best[name] = min(best[name], statistics.median(times))
    return {name: 1e3 * t for name, t in best.items()}


def temporaries(fn, param_bytes):
    with TemporaryPeak() as tracker:
        fn()
    return tracker.peak / param_bytes


def compiled_counts(fn, args, numel):
    """Compile ``fn`` (fresh), return (compiled callable, Analysis, first-call seconds)."""
    from torch._inductor.utils import run_and_get_code

    compiled = torch.compile(fn, dynamic=False)
    start = time.perf_counter()
    with torch._inductor.config.patch(fx_graph_cache=False):
        _, codes = run_and_get_code(compiled, *args)
    return compiled, analyse(codes, numel), time.perf_counter() - start


# ----------------------------------------------------------------------------- reductions


def reduce_cases(lay: Layout, gen, compile: bool):
    """name -> (fn, setting, floor bytes per element, expected result) for per-tensor norms
    and dot products."""
    tensors = [torch.randn(s, generator=gen) for s in lay.sizes]
    others = [torch.randn(s, generator=gen) for s in lay.sizes]
    flat, other_flat = torch.cat(tensors), torch.cat(others)
    padded, other_padded = lay.pad(flat), lay.pad(other_flat)
    views = list(flat.split(lay.sizes))
    other_views = list(other_flat.split(lay.sizes))
    norms = torch.stack([t.double().norm() for t in tensors])
    dots = torch.stack([(a.double() * b.double()).sum() for a, b in zip(tensors, others,
                                                                         strict=True)])
    rows, cols = [t.view(1, -1) for t in tensors], [t.view(-1, 1) for t in others]
    row_seg, seg_ids, lengths = lay.row_seg, lay.seg_ids, lay.lengths
    n = lay.n

    def per_segment(row_values):  # the chunk sums of each tensor, added up (small)
        return torch.zeros(n, dtype=row_values.dtype).index_add_(0, row_seg, row_values)

    cases = {
        # eager: separate tensors
        "eager foreach_norm": (
            lambda: torch.stack(torch._foreach_norm(tensors)), "eager", 4, norms),
        "eager foreach_powsum": (
            lambda: torch.stack(torch._foreach_powsum(tensors, 2)).sqrt(), "eager", 4, norms),
        "eager loop vector_norm": (
            lambda: torch.stack([torch.linalg.vector_norm(t) for t in tensors]), "eager", 4, norms),
        # flat: one buffer
        "flat split+foreach_norm": (
            lambda: torch.stack(torch._foreach_norm(list(flat.split(lay.sizes)))), "flat", 4,
            norms),
        "flat segment_reduce": (
            lambda: torch.segment_reduce(flat * flat, "sum", lengths=lengths).sqrt(), "flat", 4,
            norms),
        "flat index_add (ids)": (
            lambda: torch.zeros(n).index_add_(0, seg_ids, flat * flat).sqrt(), "flat", 4, norms),
        "flat scatter_add (ids)": (
            lambda: torch.zeros(n).scatter_add_(0, seg_ids, flat * flat).sqrt(), "flat", 4, norms),
        "padded rows vector_norm": (
            lambda: per_segment(torch.linalg.vector_norm(padded, dim=1).square()).sqrt(), "flat", 4,
            norms),
        "padded rows (x*x).sum": (
            lambda: per_segment((padded * padded).sum(1)).sqrt(), "flat", 4, norms),
        # dot products
        "eager foreach_mm dot": (
            lambda: torch.stack(torch._foreach_mm(rows, cols)).view(-1), "eager", 8, dots),
        "eager loop dot": (
            lambda: torch.stack([torch.dot(a.view(-1), b.view(-1)) for a, b in
                                 zip(tensors, others, strict=True)]), "eager", 8, dots),
        "flat split+foreach_mm dot": (
            lambda: torch.stack(torch._foreach_mm(
                [v.view(1, -1) for v in views], [v.view(-1, 1) for v in other_views])).view(-1),
            "flat", 8, dots),
        "flat segment_reduce dot": (
            lambda: torch.segment_reduce(flat * other_flat, "sum", lengths=lengths), "flat", 8,
            dots),
        "padded rows (a*b).sum dot": (
            lambda: per_segment((padded * other_padded).sum(1)), "flat", 8, dots),
        "padded rows vecdot dot": (
            lambda: per_segment(torch.linalg.vecdot(padded, other_padded, dim=1)), "flat", 8,
            dots),
    }
    if compile:
        valid = lay.valid

        def c_segment_reduce(x):
            return torch.segment_reduce(x * x, "sum", lengths=lengths).sqrt()

        def c_index_add(x):
            return torch.zeros(n).index_add_(0, seg_ids, x * x).sqrt()

        def c_bucketize(x):  # segment ids computed, not read
            ids = torch.bucketize(torch.arange(x.numel()), lay.offsets, right=True) - 1
            return torch.zeros(n).index_add_(0, ids, x * x).sqrt()

        def c_rows(x2d):  # padded rows, padding masked (it may hold anything)
            mask = torch.arange(x2d.shape[1])[None, :] < valid[:, None]
            return per_segment(torch.where(mask, x2d * x2d, 0).sum(1)).sqrt()

        def c_rows_dot(a, b):
            mask = torch.arange(a.shape[1])[None, :] < valid[:, None]
            return per_segment(torch.where(mask, a * b, 0).sum(1))

        for name, fn, args, floor, want in [
            ("compiled segment_reduce", c_segment_reduce, (flat,), 4, norms),
            ("compiled index_add (ids)", c_index_add, (flat,), 4, norms),
            ("compiled index_add (bucketize)", c_bucketize, (flat,), 4, norms),
            ("compiled padded rows", c_rows, (padded,), 4, norms),
            ("compiled padded rows dot", c_rows_dot, (padded, other_padded), 8, dots),
        ]:
            compiled, counts, seconds = compiled_counts(fn, args, lay.numel)
            call = (lambda c=compiled, a=args: c(*a))
            cases[name] = (call, "compiled", floor, want, counts, seconds)
    return cases


# ----------------------------------------------------------------------------- broadcast


def broadcast_cases(lay: Layout, gen, compile: bool):
    """name -> (fn, setting, floor bytes per element, check) for ``x *= s[tensor]`` in place."""
    s = torch.ones(lay.n)  # values stay put over repeats (no drift into denormals)
    tensors = [torch.ones(size) for size in lay.sizes]
    flat = torch.ones(lay.numel)
    padded = torch.ones(lay.rows, lay.chunk)
    views = list(flat.split(lay.sizes))
    lengths, seg_ids, row_seg = lay.lengths, lay.seg_ids, lay.row_seg
    numel = lay.numel
    cases = {
        "eager foreach scalar list": (
            lambda: torch._foreach_mul_(tensors, s.tolist()), "eager", 8, None),
        "eager foreach 0-d tensors": (
            lambda: torch._foreach_mul_(tensors, list(s.unbind())), "eager", 8, None),
        "flat repeat_interleave": (
            lambda: flat.mul_(s.repeat_interleave(lengths, output_size=numel)), "flat", 8, None),
        "flat gather (ids)": (lambda: flat.mul_(s[seg_ids]), "flat", 8, None),
        "flat split+foreach scalars": (
            lambda: torch._foreach_mul_(list(flat.split(lay.sizes)), s.tolist()), "flat", 8, None),
        "flat views foreach 0-d tensors": (
            lambda: torch._foreach_mul_(views, list(s.unbind())), "flat", 8, None),
        "padded rows [rows,1] factor": (
            lambda: padded.mul_(s[row_seg].unsqueeze(1)), "flat", 8, None),
        "padded foreach [rows,1] factor": (
            lambda: torch._foreach_mul_([padded], [s[row_seg].unsqueeze(1)]), "flat", 8, None),
    }
    if compile:
        offsets = lay.offsets

        def c_repeat(x, s):
            x.mul_(s.repeat_interleave(lengths, output_size=numel))

        def c_gather(x, s):
            x.mul_(s[seg_ids])

        def c_bucketize(x, s):
            ids = torch.bucketize(torch.arange(x.numel()), offsets, right=True) - 1
            x.mul_(s[ids])

        def c_rows(x2d, s):
            x2d.mul_(s[row_seg].unsqueeze(1))

        for name, fn, buf in [
            ("compiled repeat_interleave", c_repeat, flat),
            ("compiled gather (ids)", c_gather, flat),
            ("compiled gather (bucketize)", c_bucketize, flat),
            ("compiled padded rows", c_rows, padded),
        ]:
            compiled, counts, seconds = compiled_counts(fn, (buf, s), lay.numel)
            call = (lambda c=compiled, b=buf: c(b, s))
            cases[name] = (call, "compiled", 8, None, counts, seconds)
    return cases


# ----------------------------------------------------------------------------- report


def run_table(title, cases, lay, bandwidth, rounds, reps):
    param_bytes = 4 * lay.numel
    errors = {}
    for name, case in cases.items():
        fn, want = case[0], case[3]
        if want is not None:  # against float64 per-tensor sums
            errors[name] = ((fn().double() - want) / want.abs().clamp(min=1e-30)).abs().max()
    ms = side_by_side({name: case[0] for name, case in cases.items()}, rounds, reps)
    first = next(iter(ms.values()))
    print(f"\n#### {title}\n")
    print("| implementation | setting | ms | × first row | GB/s at floor | % of bw "
          "| temporaries (param sizes) | passes, B/elem (compiled) | first call s "
          "| max rel. error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, case in cases.items():
        fn, setting, floor = case[0], case[1], case[2]
        gbs = floor * lay.numel / (ms[name] / 1e3) / 1e9
        if setting == "compiled":
            counts, seconds = case[4], case[5]
            temp = f"{counts.temporaries:.2f}"
            code = f"{counts.kernels} kernels, {len(counts.passes)} passes, " \
                   f"{counts.bytes_per_element} B"
            first_s = f"{seconds:.1f}"
        else:
            temp = f"{temporaries(fn, param_bytes):.2f}"
            code, first_s = "", ""
        error = f"{errors[name]:.0e}" if name in errors else ""
        print(f"| {name} | {setting} | {ms[name]:.2f} | {ms[name] / first:.2f} | {gbs:.1f} "
              f"| {100 * gbs / bandwidth:.0f} | {temp} | {code} | {first_s} | {error} |")


def measure_bandwidth(numel, repeat=7):
    a, b = torch.randn(numel), torch.randn(numel)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        a.add_(b)
        best = min(best, time.perf_counter() - start)
    return 12 * numel / best / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workloads", nargs="+", default=list(WORKLOADS),
                        choices=list(WORKLOADS))
    parser.add_argument("--parts", nargs="+", default=["reduce", "broadcast"],
                        choices=["reduce", "broadcast"])
    parser.add_argument("--chunk", type=int, default=64, help="row length of the padded layout")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="W2/W3 shrunk")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, chunk {args.chunk}")
    for wname in args.workloads:
        lay = Layout(WORKLOADS[wname](args.quick), args.chunk)
        bw = measure_bandwidth(lay.numel)
        print(f"\n### {wname}: {lay.n} tensors, {lay.numel / 1e6:.1f}M elements; padding to "
              f"{args.chunk} adds {100 * lay.padding:.1f} %; bandwidth {bw:.1f} GB/s")
        gen = torch.Generator().manual_seed(0)
        if "reduce" in args.parts:
            run_table(f"{wname} per-tensor norms and dot products",
                      reduce_cases(lay, gen, not args.no_compile), lay, bw, args.rounds, args.reps)
        if "broadcast" in args.parts:
            run_table(f"{wname} x *= s[tensor] (in place)",
                      broadcast_cases(lay, gen, not args.no_compile), lay, bw, args.rounds,
                      args.reps)


if __name__ == "__main__":
    main()
