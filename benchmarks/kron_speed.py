"""Time one PSGD Kron step: optimkit's eager and compiled steps against pytorch_optimizer.Kron,
kron_torch.Kron and heavyball.PSGDKron, in one run, on the matrices of a small transformer.

    python benchmarks/kron_speed.py                    # d_model 128, 2 layers (CPU: minutes)
    python benchmarks/kron_speed.py --d-model 64 --layers 1 --repeat 10
    python benchmarks/kron_speed.py --device cuda --d-model 512 --layers 4

Every implementation updates its preconditioner with one probability (``--update-probability``,
1 by default: at every step; 0.03, the floor of the references' default schedule: at every
34th step, by each one's deterministic update counter), on the same fixed random gradients;
each step is timed on its own (wall clock, a device synchronize after it), after warm-up
steps that include any compiling (``--warmup 35`` to take both of optimkit's compiled
graphs, with and without the fit, at 0.03), in rounds over the
implementations in turn (so that a change of the machine's load reaches them all alike), and
the median is reported with its ratio to optimkit's eager step timed in the same run. The
peers' algorithms differ in details (kron_torch damps the gradient with noise and merges
dims; heavyball's PSGDKron has its own defaults, e.g. max_size_triangular=2048, and clips
differently), so read their times as the cost of a step of the same kind, not of the same
numbers. Prints a markdown table and writes JSON. """

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import optimkit  # noqa: E402


def transformer_shapes(d_model: int, layers: int, vocab: int) -> list[tuple[int, ...]]:
    """The params of a GPT-like model: token embedding, per layer two layer norms, the
    attention's qkv and output projections and the MLP's two matrices (with biases), then a
    final layer norm."""
    ff = 4 * d_model
    shapes: list[tuple[int, ...]] = [(vocab, d_model)]
    for _ in range(layers):
        shapes += [(d_model,), (d_model,), (3 * d_model, d_model), (3 * d_model,),
                   (d_model, d_model), (d_model,), (d_model,), (d_model,),
                   (ff, d_model), (ff,), (d_model, ff), (d_model,)]
    return shapes + [(d_model,), (d_model,)]


def implementations(lr: float, prob: float = 1.0):
    """(label, build(params) -> optimizer or None where the package is missing)."""

    def optional(module: str, attr: str, **kwargs):
        def build(params):
            try:
                cls = getattr(__import__(module, fromlist=[attr]), attr)
            except ImportError:
                return None
            return cls(params, lr=lr, **kwargs)

        return build

    ours = {"precondition_update_probability": prob} if prob != 1.0 else {}
    return [
        ("optimkit eager", lambda ps: optimkit.Kron(ps, lr=lr, **ours)),
        ("optimkit compile", lambda ps: optimkit.Kron(ps, lr=lr, compile=True, **ours)),
        ("pytorch_optimizer eager", optional(
            "pytorch_optimizer", "Kron", pre_conditioner_update_probability=prob)),
        ("kron_torch (its torch.compile'd functions)", optional(
            "kron_torch", "Kron", preconditioner_update_probability=prob)),
        ("heavyball eager", optional(
            "heavyball", "PSGDKron", preconditioner_update_probability=prob, compile_step=False)),
        ("heavyball compile_step", optional(
            "heavyball", "PSGDKron", preconditioner_update_probability=prob, compile_step=True)),
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare(build, shapes, device, warmup: int):
    """An optimizer built by ``build`` on fresh params, stepped ``warmup`` times (compiling
    included): ``(step, warm-up seconds)``, ``{"error": ...}`` where it does not run, or None
    where its package is missing."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(device).requires_grad_() for s in shapes]
    grads = [torch.randn(s, generator=gen).to(device) * 1e-2 for s in shapes]

    def step() -> float:
        # grads set before every step, untimed: heavyball sets p.grad to None after its step
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        start = time.perf_counter()
        opt.step()
        _sync(device)
        return time.perf_counter() - start

    try:
        # kron_torch prints its state sizes at the first step
        with contextlib.redirect_stdout(io.StringIO()):
            opt = build(params)
            if opt is None:
                return None
            first = sum(step() for _ in range(warmup))
    except Exception as error:  # a peer that does not run here: say why, time the others
        return {"error": f"{type(error).__name__}: {error}"[:200]}
    return step, first, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--only", nargs="+", default=None, help="labels to time (prefixes)")
    parser.add_argument("--update-probability", type=float, default=1.0,
                        help="preconditioner update probability (0.03: the annealed floor)")
    parser.add_argument("--json", default="benchmarks/kron_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes = transformer_shapes(args.d_model, args.layers, args.vocab)
    numel = sum(torch.Size(s).numel() for s in shapes)
    print(f"{len(shapes)} tensors, {numel / 1e6:.2f} M params (d_model {args.d_model}, "
          f"{args.layers} layers, vocab {args.vocab}), {device}, {args.threads} thread(s), "
          f"update probability {args.update_probability}")
    rows, runners = {}, {}
    for label, build in implementations(1e-3, args.update_probability):
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        ready = prepare(build, shapes, device, args.warmup)
        if ready is None:
            print(f"{label}: not installed")
        elif isinstance(ready, dict):
            rows[label] = ready
            print(f"{label}: {ready['error']}")
        else:
            runners[label] = ready
            print(f"{label}: ready after {ready[1]:.1f} s of warm-up", flush=True)
    # rounds over the implementations in turn, so that a change of the machine's load
    # reaches them all alike
    times: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(args.rounds):
        for label, (step, _, _) in runners.items():
            times[label] += [step() for _ in range(args.repeat)]
    for label, (_, first, params) in runners.items():
        rows[label] = {"median_ms": statistics.median(times[label]) * 1e3, "warmup_s": first,
                       "finite": all(bool(torch.isfinite(p).all()) for p in params)}
    base = rows.get("optimkit eager", {}).get("median_ms")
    print("\n| implementation | ms / step | vs optimkit eager | warm-up (s) |")
    print("|---|---|---|---|")
    for label, r in rows.items():
        if "error" in r:
            print(f"| {label} | does not run: {r['error']} | | |")
            continue
        ratio = f"{r['median_ms'] / base:.2f}x" if base else ""
        print(f"| {label} | {r['median_ms']:.2f} | {ratio} | {r['warmup_s']:.1f} |")
    Path(args.json).write_text(json.dumps({"shapes": shapes, "device": str(device),
                                           "threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
