"""Precision and memory policies on the bench's language-model task: loss, state memory, step time.

    python benchmarks/precision.py                      # Adam, AdamW, LAMB, Ranger; 3 seeds
    python benchmarks/precision.py --quick              # Adam only, 2 seeds, 2 epochs
    python benchmarks/precision.py --timed none         # training only, no step timing
    python benchmarks/precision.py --seeds 0 --timed fp32+8bit   # step timing only
    python benchmarks/precision.py -o ademamix --seeds 0 --timed fp32+8bit --modes eager flat
                                                        # AdEMAMix 8-bit vs bitsandbytes'

For each optimizer it trains the bench's ``stdlib-lm`` task (``--task``: any task of
``optimkit.bench.tasks``; a small decoder-only transformer on the standard library's source,
84k params, 90 % of them in tensors >= 4096 elements) in the six configurations of issue 12,
with the same hyper-parameters:

    fp32                  fp32 params, today's behaviour
    bf16                  bf16 params, plain updates (torch.optim's bf16 behaviour)
    bf16+fp32-state       bf16 params, state_dtype=torch.float32 (math in fp32)
    bf16+stochastic       bf16 params, param_update="stochastic"
    bf16+kahan            bf16 params, param_update="kahan"
    fp32+8bit             fp32 params, state_bits=8

and the 8-bit optimizers of bitsandbytes and torchao where they import (``--no-peers`` to
skip them). The lr follows a cosine decay to 0 over the run (``--schedule``), so the loss
flattens at its end and the last, small updates are those bf16 params lose to rounding. For
each configuration it reports the task's test metric (bits per byte for ``stdlib-lm``) and the
final training loss (mean over the last epoch), each with a 95 % Student-t interval over the
seeds, whether it is within the fp32 interval or 1 % of the fp32 mean, and the state bytes per
param (over all params, and over the tensors large enough to be quantized).

bf16 configurations keep bf16 params (the optimizer sees bf16 params and bf16 grads) but run
the forward and backward passes in fp32 on the params' values (``--bf16-matmul`` runs them in
bf16): a CPU without bf16 matrix units runs bf16 matmuls several times slower than fp32 (6x
for a step of this task on the machine the README's numbers come from), and the policies
under test are the optimizer's.

Step time: each configuration's compiled step (``compile=True``; a peer's own eager step, as
they have no compiled CPU path) on fixed random grads, on the task's param shapes (overhead-
bound) and on one tensor of ``--big`` elements (bandwidth/compute-bound), timed interleaved in
one process: every round times every configuration (median of ``--repeats`` steps), and a
ratio is taken to the fp32 step of the same round; the median ratio and its range over
``--rounds`` rounds are reported. ``--modes`` times optimkit's steps in other execution modes
too (``eager``, ``flat``: labelled ``"<config> <mode>"``; their baseline is the fp32 step of
the same mode), and every optimkit step is also given as a ratio to each peer's step of the
same round (``vs <peer>``). ``--device cuda`` times the steps there (each step ends with
a device synchronize; the peers' CUDA kernels are then their fast path); the training runs stay
on the CPU, so ``--seeds 0 --device cuda`` is the GPU timing alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optimkit  # noqa: E402
from benchmarks import devices  # noqa: E402
from optimkit.bench import tasks  # noqa: E402
from optimkit.bench.ranking import mean_ci  # noqa: E402

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
    # decoupled weight decay, as bitsandbytes' AdEMAMix applies it (its default 1e-2)
    "ademamix": {"lr": 1e-3, "weight_decay": 1e-2, "decoupled_weight_decay": True},
}

# optimkit keywords the peers do not take (their weight decay is always decoupled)
OPTIMKIT_ONLY = {"decoupled_weight_decay"}

# 8-bit peers: (module, class) per optimizer, with the keywords they take.
PEERS: dict[str, list[tuple[str, str, str]]] = {
    "adam": [("bitsandbytes", "bitsandbytes.optim", "Adam8bit"),
             ("torchao", "torchao.optim", "Adam8bit")],
    "adamw": [("bitsandbytes", "bitsandbytes.optim", "AdamW8bit"),
              ("torchao", "torchao.optim", "AdamW8bit")],
    "lamb": [("bitsandbytes", "bitsandbytes.optim", "LAMB8bit")],
    "ranger": [],
    "ademamix": [("bitsandbytes", "bitsandbytes.optim", "AdEMAMix8bit")],
}

QUANTIZED_MIN = 4096  # bitsandbytes' and optimkit's threshold (optimkit.precision.quantize)


# ------------------------------------------------------------------------------ the task
class Task:
    """A bench task (:mod:`optimkit.bench.tasks`) trained with params of any dtype."""

    def __init__(self, name: str, epochs: int, bf16_matmul: bool = False):
        self.name = name
        self.epochs = epochs
        self.bf16_matmul = bf16_matmul
        self.task = tasks.get(name)

    def build(self, seed: int, dtype: torch.dtype):
        """(model, forward, batches(), held_out()) for this seed; a batch is (inputs, loss_fn).

        ``forward(x)`` runs the model in fp32 on the values of its (possibly bf16) params unless
        ``bf16_matmul``: the gradients reach the bf16 params rounded to bf16, and only the
        optimizer's policy differs between configurations (this CPU has no bf16 matmul: bf16
        matmuls made a step of the LM task 6x slower than fp32). ``held_out()`` is the task's
        test metric of the fp32 values of the trained params."""
        instance = self.task.build(seed)
        model = instance.model.to(dtype)
        if dtype == torch.float32 or self.bf16_matmul:
            forward = model
        else:
            def forward(x):
                values = {n: p.float() for n, p in model.named_parameters()}
                return torch.func.functional_call(model, values, (x,))

        def batches() -> Iterator:
            for x, y in instance.batches():
                yield x, lambda out, y=y: instance.loss_fn(out.float(), y)

        def held_out() -> float:
            model.float()  # the end of the run: the metric of the trained values, in fp32
            return instance.evaluate("test")

        return model, forward, batches, held_out, instance.steps_per_epoch


# -------------------------------------------------------------------------- optimizers
def make_optimizer(name: str, config: str, params, peer: tuple | None = None):
    """The optimizer of ``name`` in ``config`` (or a peer's); None when it cannot be built."""
    kwargs = dict(HYPERS[name])
    if peer is not None:
        _, module, cls = peer
        factory = getattr(importlib.import_module(module), cls)
        return factory(params, **{k: v for k, v in kwargs.items() if k not in OPTIMKIT_ONLY})
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
def train(task: Task, name: str, config: str, seed: int, peer=None,
          schedule: str = "cosine") -> dict | None:
    dtype = CONFIGS[config][0]
    model, forward, batches, held_out, per_epoch = task.build(seed, dtype)
    params = list(model.parameters())
    optimizer = make_optimizer(name, config, params, peer)
    if optimizer is None:
        return None
    # cosine decay to 0 over the run: the loss flattens at its end, and the late, small
    # updates are where bf16 params lose them to rounding
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, task.epochs * per_epoch)
                 if schedule == "cosine" else None)
    epoch_losses: list[float] = []
    for _ in range(task.epochs):
        losses = []
        for x, loss_fn in batches():
            optimizer.zero_grad()
            loss = loss_fn(forward(x))
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(float(loss.detach()))
        epoch_losses.append(statistics.fmean(losses) if losses else float("nan"))
    all_bytes, big_bytes = state_bytes(optimizer, params)
    return {"final_loss": epoch_losses[-1], "previous_epoch_loss": epoch_losses[-2]
            if len(epoch_losses) > 1 else float("nan"), "test_metric": held_out(),
            "bytes_per_param": all_bytes, "bytes_per_param_large": big_bytes}


# ---------------------------------------------------------------------------- step time
# Where the timed steps run (``--device``); the training runs stay on the CPU.
DEVICE = torch.device("cpu")


def synchronize() -> None:
    devices.synchronize(DEVICE)


MODES = {"compiled": {"compile": True}, "flat": {"flat": True}, "eager": {}}


def timed_optimizer(name: str, config: str, peer, shapes: list[tuple[int, ...]],
                    mode: str = "compiled"):
    """An optimizer of ``config`` in ``mode`` (a peer's, eager: it has no compiled CPU path) on
    fresh params of ``shapes`` with fixed random grads, warmed up (compiled); None when it
    cannot be built."""
    dtype = CONFIGS[config][0]
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(DEVICE, dtype).requires_grad_() for s in shapes]
    for p in params:
        p.grad = (0.01 * torch.randn(p.shape, generator=gen)).to(DEVICE, dtype)
    if peer is not None:
        optimizer = make_optimizer(name, config, params, peer)
    else:
        try:
            optimizer = optimkit.create(name, params, **HYPERS[name], **CONFIGS[config][1],
                                        **MODES[mode])
        except TypeError as error:  # a keyword this optimkit does not have yet
            if "unexpected keyword" in str(error):
                return None
            raise
    for _ in range(3):
        optimizer.step()
    return optimizer


def median_ms(optimizer, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        optimizer.step()
        synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def time_interleaved(name: str, variants: list[tuple[str, object]], shapes: dict[str, list],
                     rounds: int, repeats: int, modes: tuple[str, ...] = ("compiled",)
                     ) -> dict[str, dict]:
    """Step times of every variant, interleaved: each round times every variant once (median
    of ``repeats`` steps), so that a slow spell of the machine hits all of them; a variant's
    ratio is taken to the fp32 step of the same round (in the same mode). Returns, per variant
    label and per shape set, the median ms and the median, min and max of the per-round ratios,
    and for optimkit's variants the median per-round ratio to each peer (``vs``)."""
    built = {}
    baseline, mode_of = {}, {}
    peer_labels = []
    for config, peer in variants:
        for mode in (modes if peer is None else ("eager",)):
            if peer is not None:
                label = f"{peer[0]} {peer[2]}"
                peer_labels.append(label)
            else:
                label = config if mode == "compiled" else f"{config} {mode}"
            baseline[label] = "fp32" if mode == "compiled" or peer is not None else f"fp32 {mode}"
            mode_of[label] = mode
            for kind, shape_list in shapes.items():
                built[label, kind] = timed_optimizer(name, config, peer, shape_list, mode)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in built}
    for _ in range(rounds):
        for key, optimizer in built.items():
            if optimizer is not None:
                samples[key].append(median_ms(optimizer, repeats))

    def median_ratio(ms: list[float], base: list[float]) -> float:
        ratios = [a / b for a, b in zip(ms, base)]
        return statistics.median(ratios) if ratios else float("nan")

    out: dict[str, dict] = {}
    for (label, kind), ms in samples.items():
        base = samples[baseline[label], kind]
        ratios = [a / b for a, b in zip(ms, base)]
        out.setdefault(label, {})[kind] = {
            "ms": statistics.median(ms) if ms else float("nan"),
            "ratio": statistics.median(ratios) if ratios else float("nan"),
            "ratio_min": min(ratios, default=float("nan")),
            "ratio_max": max(ratios, default=float("nan")),
            "mode": mode_of[label],
            "vs": {} if label in peer_labels else
                  {peer: median_ratio(ms, samples[peer, kind]) for peer in peer_labels},
        }
    return out


# ------------------------------------------------------------------------------- report
def fmt(mean: float, half: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def within(row: dict, base: dict, key: str) -> str:
    """'yes' when ``row``'s mean of ``key`` is inside the fp32 interval or within 1 % of it."""
    if not base.get("available") or not row.get("available"):
        return ""
    mean, _ = row[key]
    b_mean, b_half = base[key]
    inside = abs(mean - b_mean) <= (0 if math.isnan(b_half) else b_half)
    return "yes" if inside or abs(mean - b_mean) <= 0.01 * abs(b_mean) else "no"


def variants_of(name: str, args) -> list[tuple[str, object]]:
    variants = [(config, None) for config in args.configs]
    if args.peers:
        variants += [("fp32", peer) for peer in peers_available(name)]
    return variants


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    task = Task(args.task, args.epochs, args.bf16_matmul)
    model = task.build(0, torch.float32)[0]
    shapes = {"task": [tuple(p.shape) for p in model.parameters()], "big": [(args.big,)]}
    del model
    results: dict = {"machine": args.machine, "task": args.task, "metric": task.task.metric,
                     "epochs": args.epochs, "schedule": args.schedule, "seeds": args.seeds,
                     "bf16_matmul": args.bf16_matmul, "optimizers": {}}
    for name in args.optimizers:
        rows = {}
        variants = variants_of(name, args)
        for config, peer in variants if args.seeds else []:
            label = config if peer is None else f"{peer[0]} {peer[2]}"
            runs = [train(task, name, config, seed, peer, args.schedule)
                    for seed in range(args.seeds)]
            if any(r is None for r in runs):
                rows[label] = {"available": False}
                print(f"{name:7s} {label:24s} not available here", flush=True)
                continue
            rows[label] = row = {
                "available": True,
                "final_loss": mean_ci([r["final_loss"] for r in runs]),
                "test_metric": mean_ci([r["test_metric"] for r in runs]),
                "bytes_per_param": runs[0]["bytes_per_param"],
                "bytes_per_param_large": runs[0]["bytes_per_param_large"],
                "runs": runs,
            }
            print(f"{name:7s} {label:24s} loss {fmt(*row['final_loss'])}  "
                  f"test {fmt(*row['test_metric'])}  {row['bytes_per_param']:.2f} B/param "
                  f"({row['bytes_per_param_large']:.2f} on large)", flush=True)
        if args.timed != ["none"]:
            timed = [(c, p) for c, p in variants
                     if c == "fp32" or p is not None or args.timed is None or c in args.timed]
            if ("fp32", None) not in timed:
                timed.insert(0, ("fp32", None))
            modes = tuple(dict.fromkeys(("compiled", *args.modes)))
            times = time_interleaved(name, timed, shapes, args.rounds, args.repeats, modes)
            for label, t in times.items():
                rows.setdefault(label, {"available": True})["step"] = t
                versus = "".join(
                    f"; vs {peer}: x{t['task']['vs'][peer]:.2f} (task) x{t['big']['vs'][peer]:.2f}"
                    " (big)" for peer in t["task"]["vs"])
                print(f"{name:7s} {label:24s} {t['task']['mode']} step x{t['task']['ratio']:.2f} "
                      f"[{t['task']['ratio_min']:.2f}-{t['task']['ratio_max']:.2f}] (task, "
                      f"{t['task']['ms']:.2f} ms) x{t['big']['ratio']:.2f} "
                      f"[{t['big']['ratio_min']:.2f}-{t['big']['ratio_max']:.2f}] "
                      f"({args.big} elements, {t['big']['ms']:.2f} ms){versus}", flush=True)
        results["optimizers"][name] = rows
    return results


def markdown(results: dict) -> str:
    lines = [
        f"Task: {results['task']}, {results['epochs']} epochs ({results['schedule']} lr), "
        f"{results['seeds']} seeds; {results['machine']}.",
        "",
        f"| optimizer | configuration | {results['metric']} (95 % CI) | within fp32 CI or 1 % "
        "| final train loss (95 % CI) | within | state B/param (all / large tensors) | "
        "step x fp32 of its mode (task / big) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results["optimizers"].items():
        base = rows.get("fp32", {})
        for label, row in rows.items():
            if not row.get("available"):
                lines.append(f"| {name} | {label} | not available | | | | | |")
                continue
            step = row.get("step")
            step_text = (f"x{step['task']['ratio']:.2f} / x{step['big']['ratio']:.2f}"
                         if step else "")
            if "final_loss" not in row:
                lines.append(f"| {name} | {label} | | | | | | {step_text} |")
                continue
            lines.append(
                f"| {name} | {label} | {fmt(*row['test_metric'])} | "
                f"{within(row, base, 'test_metric')} | {fmt(*row['final_loss'])} | "
                f"{within(row, base, 'final_loss')} | {row['bytes_per_param']:.2f} / "
                f"{row['bytes_per_param_large']:.2f} | {step_text} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--optimizers", nargs="+", default=list(HYPERS), choices=HYPERS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--task", default="stdlib-lm", help="a task of optimkit.bench.tasks")
    parser.add_argument("--seeds", type=int, default=3, help="0: timing only")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--bf16-matmul", action="store_true",
                        help="run bf16 configurations' forward and backward in bf16 (default: "
                        "in fp32 on the bf16 params' values)")
    parser.add_argument("--repeats", type=int, default=10, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--timed", nargs="+", choices=[*CONFIGS, "none"], default=None,
                        help="configurations whose compiled step is timed (default: all; fp32, "
                        "the baseline, and the peers always; 'none': no timing)")
    parser.add_argument("--modes", nargs="+", choices=("eager", "flat"), default=[],
                        help="also time optimkit's steps in these execution modes (compiled "
                        "always)")
    parser.add_argument("--big", type=int, default=2**20, help="elements of the big tensor")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-peers", dest="peers", action="store_false")
    parser.add_argument("--machine", default="CPU, 2 cores shared with other jobs")
    parser.add_argument("--device", default="cpu", help="where the timed steps run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.optimizers, args.seeds, args.epochs, args.repeats = ["adam"], 2, 2, 5
        args.rounds, args.big = 2, 2**16
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type != "cpu" and args.machine == parser.get_default("machine"):
        args.machine = f"{devices.device_name(DEVICE)} (steps); CPU (training)"
    results = run(args)
    print()
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
