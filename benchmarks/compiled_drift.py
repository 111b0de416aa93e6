"""How far a compiled step is from the eager one, and where the rest comes from.

    python benchmarks/compiled_drift.py                 # the recipes below, 100 steps
    python benchmarks/compiled_drift.py adamw nadamw --steps 10 --backend eager

For each recipe (a tests/optim_db.py entry at its first setting, fp32, the test shapes, one of
them 0-d) it steps an eager optimizer and a ``compile=True`` one (``flat=False``, then
``flat=True``) on the same gradients and prints, at a few steps, the largest difference of
the params relative to each tensor's largest entry, and the first step that differs at all.
``--backend eager`` runs the traced graph through dynamo's eager backend (the graph's aten ops
as eager kernels): what optimkit's compiled code path computes, without inductor's codegen.

Then ``--ops`` shows, op by op, the two differences torch itself leaves between an inductor
kernel and the eager CPU kernel (torch 2.13, AVX-512 CPU): eager's vectorised sqrt is not
correctly rounded (inductor's is), and eager's lerp / addcmul / add(alpha=) use a fused
multiply-add where inductor's C++ does not contract. Each is one ulp on some elements; a step
that divides by sqrt(v) (every Adam) carries it to the params at ~1e-7 relative.

Measured (2026-12-08, the shared 2-core CPU machine, torch 2.13, inductor, flat=False), the
largest difference relative to a tensor's largest entry after 100 steps, before -> after the
fixes of the h-drift branch: AdamW 2.7e-6 -> 1.0e-7 (its 0-d param computed in float64);
Adam 3.4e-7 -> 2.9e-7; NAdamW 2.1e-7; RAdam 8.7e-8; LAMB 8.9e-8; Muon 3.0e-7; AdEMAMix 5.1e-7;
Lion 0. flat=True gives the same orders (1.6e-7 .. 5.1e-7). None grows with the steps: ulp
noise, not drift. Under ``--backend eager`` 18 registry entries differed from eager mode
before (DAdaptAdam failed to trace: a dot of a float32 and a promoted float64 tensor), none
after except steps that sum per-tensor norms in another order (LARS, MARS) or take another
exact form (Schedule-Free SGD): tests/test_compile.py's bit-for-bit test.
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

RECIPES = ["adam", "adamw", "radam", "nadam", "nadamw", "lion", "lamb", "muon"]


def use_backend(backend: str) -> None:
    from optimkit.core import compiled

    if backend == "inductor":
        return

    @functools.cache
    def step():
        return torch.compile(compiled._traced_step, backend=backend, dynamic=False,
                             fullgraph=True, recompile_limit=compiled.RECOMPILE_LIMIT)

    compiled._compiled_step = step


def drift(name: str, flat: bool, steps: int) -> str:
    from helpers import build_fast, clone_params, make_params, run
    from optim_db import get

    info = get(name)
    start = make_params(torch.float32)
    a, b = clone_params(start), clone_params(start)
    kwargs = {**info.pinned, **info.settings[0]}
    eager = build_fast(info, a, flat=False, **kwargs)
    fast = build_fast(info, b, flat=flat, compile=True, **kwargs)
    first, shown = None, []
    for step in range(steps):
        run(eager, a, 1, start=step)
        run(fast, b, 1, start=step)
        rel = max(((p - q).abs().max() / p.abs().max().clamp_min(1e-30)).item()
                  for p, q in zip(a, b, strict=True))
        if first is None and rel > 0:
            first = step + 1
        if step + 1 in (2, 10, 50, 100, steps):
            shown.append(f"t{step + 1}: {rel:.1e}")
    return f"{name:10s} flat={flat!s:5s} first differing step {first}; " + ", ".join(
        dict.fromkeys(shown))


def ops() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(100_000, generator=gen) * 1e-2
    y = torch.randn(100_000, generator=gen)
    exact = x.double().sqrt().float()
    compiled_sqrt = torch.compile(torch.sqrt)(x)
    print(f"sqrt: eager {(x.sqrt() != exact).sum().item()} / {x.numel()} not correctly "
          f"rounded, inductor {(compiled_sqrt != exact).sum().item()}")
    w = torch.tensor(0.1, dtype=torch.float64)
    eager = torch.lerp(x, y, 0.1)

    def written(s, e, w):
        return s + w * (e - s)

    print(f"lerp w=0.1: eager kernel vs eager s + w*(e - s): "
          f"{(eager != written(x, y, w)).sum().item()} differ (fma); vs inductor's "
          f"{(eager != torch.compile(written)(x, y, w)).sum().item()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", default=RECIPES)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager",
                                                                   "eager"])
    parser.add_argument("--ops", action="store_true", help="the torch-level differences")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.ops:
        ops()
        return
    use_backend(args.backend)
    for name in args.recipes:
        for flat in (False, True):
            print(drift(name, flat, args.steps), flush=True)


if __name__ == "__main__":
    main()
