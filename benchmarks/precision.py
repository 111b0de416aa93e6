"""Precision and memory policies on a language-model task: final loss, state memory, step time.

    python benchmarks/precision.py                      # Adam, AdamW, LAMB, Ranger; 3 seeds
    python benchmarks/precision.py --quick              # Adam only, 2 seeds, 3 epochs
    python benchmarks/precision.py -o adam lamb --seeds 5 --epochs 20 --json out.json

For each optimizer it trains the task in the six configurations of issue 12, with the same
hyper-parameters:

    fp32                  fp32 params, today's behaviour
    bf16                  bf16 params, plain updates (torch.optim's bf16 behaviour)
    bf16+fp32-state       bf16 params, state_dtype=torch.float32 (math in fp32)
    bf16+stochastic       bf16 params, param_update="stochastic"
    bf16+kahan            bf16 params, param_update="kahan"
    fp32+8bit             fp32 params, state_bits=8

and the 8-bit optimizers of bitsandbytes and torchao where they import (``--peers``). For each
configuration it reports the final training loss (mean over the last epoch; the quantity the
policies could degrade) with a 95 % Student-t interval over the seeds, the held-out loss, the
state bytes per param (over all params, and over the tensors large enough to be quantized), and
the compiled step time (``compile=True``) as x the fp32 compiled step of the same optimizer,
timed in the same process on the task's params (overhead-bound) and on one synthetic tensor
of ``--big`` elements (bandwidth/compute-bound). bf16 configurations train with bf16 forward
and backward passes; the losses are computed in fp32.

The task is the bench's language-model task when ``optimkit.bench.tasks`` has one (``--task``),
else a character-level GRU on the bench's Zen-of-Python corpus, widened (embedding 32, hidden
128: 76k params, 95 % of them in tensors >= 4096 elements) so that 8-bit state applies to it:
the bench's own char-GRU keeps every tensor below bitsandbytes' 4096-element threshold.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optimkit  # noqa: E402
from optimkit.bench import tasks  # noqa: E402
from optimkit.bench.scoring import mean_ci  # noqa: E402

CONFIGS: dict[str, tuple[torch.dtype, dict]] = {
    "fp32": (torch.float32, {}),
    "bf16": (torch.bfloat16, {}),
    "bf16+fp32-state": (torch.bfloat16, {"state_dtype": torch.float32}),
    "bf16+stochastic": (torch.bfloat16, {"param_update": "stochastic"}),
    "bf16+kahan": (torch.bfloat16, {"param_update": "kahan"}),
    "fp32+8bit": (torch.float32, {"state_bits": 8}),
}

# One setting per optimizer for every configuration: the comparison is between policies.
HYPERS: dict[str, dict] = {
    "adam": {"lr": 3e-3},
    "adamw": {"lr": 3e-3, "weight_decay": 1e-2},
    "lamb": {"lr": 1e-2, "weight_decay": 1e-2},
    "ranger": {"lr": 3e-3},
}

# 8-bit peers: (module, class) per optimizer, with the keywords they take.
PEERS: dict[str, list[tuple[str, str, str]]] = {
    "adam": [("bitsandbytes", "bitsandbytes.optim", "Adam8bit"),
             ("torchao", "torchao.optim", "Adam8bit")],
    "adamw": [("bitsandbytes", "bitsandbytes.optim", "AdamW8bit"),
              ("torchao", "torchao.optim", "AdamW8bit")],
    "lamb": [("bitsandbytes", "bitsandbytes.optim", "LAMB8bit")],
    "ranger": [],
}

QUANTIZED_MIN = 4096  # bitsandbytes' and optimkit's threshold (optimkit.precision.quantize)


# ------------------------------------------------------------------------------ the task
class Task:
    """A model factory, seeded epochs of batches and a held-out loss, for any param dtype."""

    def __init__(self, name: str | None, epochs: int):
        self.name = name
        self.epochs = epochs
        if name is None:
            self._text_setup()

    def _text_setup(self, length: int = 16) -> None:
        text = tasks.zen_corpus()
        vocab = sorted(set(text))
        codes = torch.tensor([vocab.index(c) for c in text], dtype=torch.long)
        windows = codes[: len(codes) // (length + 1) * (length + 1)].view(-1, length + 1)
        n_test = max(1, len(windows) // 10)  # the last tenth, never trained on
        self.vocab = len(vocab)
        self.train, self.test = windows[:-n_test], windows[-n_test:]

    def build(self, seed: int, dtype: torch.dtype):
        """(model, batches(), held_out_loss()) for this seed; a batch is (inputs, loss_fn)."""
        if self.name is not None:
            instance = tasks.get(self.name).build(seed)
            model = instance.model.to(dtype)

            def batches() -> Iterator:
                for x, y in instance.batches():
                    yield x, lambda out, y=y: instance.loss_fn(out.float(), y)

            return model, batches, lambda: instance.evaluate("test")
        torch.manual_seed(seed)
        model = tasks.CharGRU(self.vocab, embed=32, hidden=128).to(dtype)
        gen = torch.Generator().manual_seed(seed)
        vocab = self.vocab

        def loss_of(out, y):
            return nn.functional.cross_entropy(out.float().reshape(-1, vocab), y.reshape(-1))

        def batches() -> Iterator:
            order = torch.randperm(len(self.train), generator=gen)
            for start in range(0, len(order), 64):
                w = self.train[order[start:start + 64]]
                yield w[:, :-1], lambda out, y=w[:, 1:]: loss_of(out, y)

        @torch.no_grad()
        def held_out() -> float:
            twin = tasks.CharGRU(vocab, embed=32, hidden=128)
            twin.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
            return float(loss_of(twin(self.test[:, :-1]), self.test[:, 1:]))

        return model, batches, held_out


# -------------------------------------------------------------------------- optimizers
def make_optimizer(name: str, config: str, params, peer: tuple | None = None):
    """The optimizer of ``name`` in ``config`` (or a peer's); None when it cannot be built."""
    kwargs = dict(HYPERS[name])
    if peer is not None:
        _, module, cls = peer
        factory = getattr(importlib.import_module(module), cls)
        return factory(params, **kwargs)
    _, policy = CONFIGS[config]
    try:
        return optimkit.create(name, params, **kwargs, **policy)
    except TypeError as error:  # a keyword this optimkit does not have yet
        if "unexpected keyword" in str(error):
            return None
        raise


def peers_available(name: str) -> list[tuple[str, str, str]]:
    found = []
    for peer in PEERS.get(name, []):
        try:
            importlib.import_module(peer[1])
        except Exception:  # noqa: BLE001 - an optional peer that does not import is skipped
            continue
        found.append(peer)
    return found


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds; a tensor subclass (torchao's 8-bit state) counts its inner tensors."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) is not torch.Tensor:
        names, _ = flatten()
        return sum(tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def state_bytes(optimizer, params) -> tuple[float, float]:
    """State bytes per param over all params, and over the tensors >= QUANTIZED_MIN (0-d
    state such as step counters left out)."""
    total = big = 0
    n_total = n_big = 0
    for p in params:
        state = optimizer.state.get(p, {})
        size = sum(tensor_bytes(v) for v in state.values()
                   if isinstance(v, torch.Tensor) and v.dim() > 0)
        total += size
        n_total += p.numel()
        if p.numel() >= QUANTIZED_MIN:
            big += size
            n_big += p.numel()
    return total / n_total, (big / n_big if n_big else float("nan"))


# ----------------------------------------------------------------------------- training
def train(task: Task, name: str, config: str, seed: int, peer=None) -> dict | None:
    dtype = CONFIGS[config][0]
    model, batches, held_out = task.build(seed, dtype)
    params = list(model.parameters())
    optimizer = make_optimizer(name, config, params, peer)
    if optimizer is None:
        return None
    losses: list[float] = []
    for _ in range(task.epochs):
        losses = []
        for x, loss_fn in batches():
            optimizer.zero_grad()
            loss = loss_fn(model(x))
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    final = statistics.fmean(losses) if losses else float("nan")
    all_bytes, big_bytes = state_bytes(optimizer, params)
    return {"final_loss": final, "test_loss": held_out(), "bytes_per_param": all_bytes,
            "bytes_per_param_large": big_bytes}


# ---------------------------------------------------------------------------- step time
def time_steps(make: Callable[[list], object], shapes: list[tuple[int, ...]],
               dtype: torch.dtype, repeats: int) -> float:
    """Median ms of one optimizer step on fixed random grads (after 3 warm-up steps)."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes]
    for p in params:
        p.grad = (0.01 * torch.randn(p.shape, generator=gen)).to(dtype)
    optimizer = make(params)
    if optimizer is None:
        return float("nan")
    for _ in range(3):
        optimizer.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def compiled_maker(name: str, config: str, peer=None):
    def make(params):
        if peer is not None:
            return make_optimizer(name, config, params, peer)
        _, policy = CONFIGS[config]
        try:
            return optimkit.create(name, params, **HYPERS[name], **policy, compile=True)
        except TypeError as error:
            if "unexpected keyword" in str(error):
                return None
            raise
    return make


# ------------------------------------------------------------------------------- report
def fmt(mean: float, half: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    task = Task(args.task, args.epochs)
    model, _, _ = task.build(0, torch.float32)
    shapes = [tuple(p.shape) for p in model.parameters()]
    del model
    results: dict = {"machine": args.machine, "task": args.task or "wide char-GRU",
                     "epochs": args.epochs, "seeds": args.seeds, "optimizers": {}}
    for name in args.optimizers:
        rows = {}
        variants = [(config, None) for config in args.configs]
        if args.peers:
            variants += [("fp32", peer) for peer in peers_available(name)]
        base_task = base_big = None
        for config, peer in variants:
            label = config if peer is None else f"{peer[0]} {peer[2]}"
            runs = [train(task, name, config, seed, peer) for seed in range(args.seeds)]
            if any(r is None for r in runs):
                rows[label] = {"available": False}
                print(f"{name:7s} {label:24s} not available here", flush=True)
                continue
            dtype = CONFIGS[config][0]
            make = compiled_maker(name, config, peer)
            # (a peer's step is its own, eager: its ratio is to optimkit's compiled fp32 step)
            timed = peer is not None or args.timed is None or config in args.timed or (
                config == "fp32")
            t_task = time_steps(make, shapes, dtype, args.repeats) if timed else float("nan")
            t_big = time_steps(make, [(args.big,)], dtype, args.repeats) if timed else float("nan")
            if config == "fp32" and peer is None:
                base_task, base_big = t_task, t_big
            row = {
                "available": True,
                "final_loss": mean_ci(r["final_loss"] for r in runs),
                "test_loss": mean_ci(r["test_loss"] for r in runs),
                "bytes_per_param": runs[0]["bytes_per_param"],
                "bytes_per_param_large": runs[0]["bytes_per_param_large"],
                "step_ms_task": t_task, "step_ms_big": t_big,
                "x_fp32_task": t_task / base_task if base_task else float("nan"),
                "x_fp32_big": t_big / base_big if base_big else float("nan"),
                "runs": runs,
            }
            rows[label] = row
            print(f"{name:7s} {label:24s} loss {fmt(*row['final_loss'])}  "
                  f"test {fmt(*row['test_loss'])}  {row['bytes_per_param']:.2f} B/param "
                  f"({row['bytes_per_param_large']:.2f} on large)  step x{row['x_fp32_task']:.2f}"
                  f" (task) x{row['x_fp32_big']:.2f} ({args.big} elements)", flush=True)
        results["optimizers"][name] = rows
    return results


def markdown(results: dict) -> str:
    lines = [
        f"Task: {results['task']}, {results['epochs']} epochs, {results['seeds']} seeds; "
        f"{results['machine']}.",
        "",
        "| optimizer | configuration | final train loss (95 % CI) | within fp32 CI or 1 % | "
        "test loss | state B/param (all / large tensors) | compiled step (task / big) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results["optimizers"].items():
        base = rows.get("fp32", {})
        for label, row in rows.items():
            if not row.get("available"):
                lines.append(f"| {name} | {label} | not available | | | | |")
                continue
            mean, half = row["final_loss"]
            ok = ""
            if base.get("available"):
                b_mean, b_half = base["final_loss"]
                inside = abs(mean - b_mean) <= (b_half if not math.isnan(b_half) else 0)
                ok = "yes" if inside or abs(mean - b_mean) <= 0.01 * abs(b_mean) else "no"
            lines.append(
                f"| {name} | {label} | {fmt(mean, half)} | {ok} | {fmt(*row['test_loss'])} | "
                f"{row['bytes_per_param']:.2f} / {row['bytes_per_param_large']:.2f} | "
                f"x{row['x_fp32_task']:.2f} / x{row['x_fp32_big']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--optimizers", nargs="+", default=list(HYPERS), choices=HYPERS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--task", default=None, help="a task of optimkit.bench.tasks")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--timed", nargs="+", choices=CONFIGS, default=None,
                        help="configurations whose compiled step is timed (default: all; fp32, "
                        "the baseline, always)")
    parser.add_argument("--big", type=int, default=2**22, help="elements of the big tensor")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-peers", dest="peers", action="store_false")
    parser.add_argument("--machine", default="CPU, 2 cores shared with other jobs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.optimizers, args.seeds, args.epochs, args.repeats = ["adam"], 2, 3, 5
        args.big = 2**18
    results = run(args)
    print()
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
