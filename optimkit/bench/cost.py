"""What an optimizer costs per step, on a model big enough that the update itself dominates.

The model is the bench's transformer scaled up (width 384, 6 blocks: 10.9M parameters in 78
tensors of mixed shapes, LayerNorm vectors included). Gradients are fixed random tensors, so
only ``step()`` is timed. The optimizer runs in each of its CPU-robust modes (``MODES``):
eager (a foreach call per part over the tensor lists) and flat (``flat=True``: one contiguous
buffer per bucket), where it takes the option; on CUDA also ``compile=True``. On a CPU
``compile=True`` is left out: it needs a C++ toolchain and tens of seconds of compilation per
optimizer, too fragile for a bench cell. An optimizer whose entry routes params by kind
(``model_groups``) gets the model, so its routing is what is timed.
Each repetition times one step in each mode and then one step of torch's fused Adam on an
identical copy, in the same process, alternating, so a busy machine slows all alike. The
reported step time is the fastest mode's median ("x fused Adam": its ratio to fused Adam's
median), and ``extra`` records every mode's time and which one was fastest. State memory is
the bytes held in the eager optimizer's ``state_dict()`` per parameter, after the timed steps;
``extra["state_layouts"]`` names each state and its layout (``state_layouts()``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from .. import registry
from .runner import CellSpec, state_bytes

DIM, LAYERS, HEADS, CONTEXT = 384, 6, 6, 64
WARMUP, REPEATS = 2, 7
MODES = {"eager": {}, "flat": {"flat": True}}


def big_model(device: str, seed: int = 0) -> torch.nn.Module:
    """The cost model (>= 10M parameters), each parameter with a fixed random gradient."""
    from .lm import TinyGPT

    torch.manual_seed(seed)
    model = TinyGPT(DIM, LAYERS, HEADS, CONTEXT).to(device)
    for p in model.parameters():
        p.grad = 1e-3 * torch.randn_like(p)
    return model


def big_params(device: str, seed: int = 0) -> list[torch.Tensor]:
    """The >= 10M parameters of the cost model, each with a fixed random gradient."""
    return list(big_model(device, seed).parameters())


def modes(device: str) -> dict[str, dict[str, Any]]:
    """The modes timed on ``device``: eager and flat; on CUDA also ``compile=True`` (on a CPU
    it needs a C++ toolchain and long compiles per optimizer)."""
    if str(device).startswith("cuda"):
        return {**MODES, "compiled": {"compile": True}}
    return dict(MODES)


def _build(name: str, device: str, options: dict[str, Any]) -> torch.optim.Optimizer:
    # An entry that routes params by kind (model_groups) gets the model, the others its params.
    routed = getattr(registry.get(name), "model_groups", None) is not None
    model = big_model(device)
    return registry.create(name, model if routed else list(model.parameters()), lr=1e-4,
                           **options)


def _time(optimizer: torch.optim.Optimizer, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(spec: CellSpec) -> dict[str, Any]:
    """The cost cell's result, in the store's columns (``extra`` holds the comparison)."""
    base_params = big_params(spec.device)
    n_params = sum(p.numel() for p in base_params)
    built = {}
    for mode, options in modes(spec.device).items():
        try:
            built[mode] = _build(spec.optimizer, spec.device, options)
        except TypeError:  # an optimizer without that option: its other modes are timed
            if not options:
                raise
    fused = torch.optim.Adam(base_params, lr=1e-4, fused=True)
    for _ in range(WARMUP):
        for mode, optimizer in list(built.items()):
            try:
                optimizer.step()
            except Exception:  # noqa: BLE001  (a mode that fails, e.g. a compile: untimed)
                if mode == "eager":
                    raise
                del built[mode]
        fused.step()
    mine: dict[str, list[float]] = {mode: [] for mode in built}
    base = []
    for _ in range(REPEATS):
        for mode, optimizer in built.items():
            mine[mode].append(_time(optimizer, spec.device))
        base.append(_time(fused, spec.device))
    medians = {mode: statistics.median(times) for mode, times in mine.items()}
    layouts = getattr(built["eager"], "state_layouts", None)
    try:  # what each state is, as the optimizer declares it (param-shaped, scalar, own)
        declared = {str(k): getattr(v, "value", str(v)) for k, v in layouts().items()} \
            if callable(layouts) else None
    except Exception:  # noqa: BLE001  (a wrapper without an executor: the bytes still count)
        declared = None
    fastest = min(medians, key=medians.get)
    step, reference = medians[fastest], statistics.median(base)
    return {
        "final_metric": float("nan"), "diverged": 0, "steps": WARMUP + REPEATS,
        "steps_to_target": None, "seconds": sum(mine[fastest]), "seconds_to_target": None,
        "step_time": step, "state_bytes_per_param": state_bytes(built["eager"]) / n_params,
        "n_params": n_params, "losses": [], "evals": [], "path": None,
        "extra": {"fused_adam_step_time": reference, "x_fused_adam": step / reference,
                  "mode": fastest, "step_time_by_mode": medians,
                  "x_fused_adam_by_mode": {m: t / reference for m, t in medians.items()},
                  "tensors": len(base_params), "repeats": REPEATS,
                  **({"state_layouts": declared} if declared is not None else {})},
        "error": None,
    }


__all__ = ["big_model", "big_params", "measure", "modes"]
