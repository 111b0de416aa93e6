"""What an optimizer costs per step, on a model big enough that the update itself dominates.

The model is the bench's transformer scaled up (width 384, 6 blocks: 10.9M parameters in 78
tensors of mixed shapes, LayerNorm vectors included). Gradients are fixed random tensors, so
only ``step()`` is timed. Each repetition times one step of the optimizer and then one step of
torch's fused Adam on an identical copy, in the same process, alternating, so a busy machine
slows both alike; the ratio of the medians is the "x fused Adam" column. State memory is the
bytes held in the optimizer's ``state_dict()`` per parameter.
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


def big_params(device: str, seed: int = 0) -> list[torch.Tensor]:
    """The >= 10M parameters of the cost model, each with a fixed random gradient."""
    from .lm import TinyGPT

    torch.manual_seed(seed)
    params = [p.detach().to(device).requires_grad_() for p in
              TinyGPT(DIM, LAYERS, HEADS, CONTEXT).parameters()]
    for p in params:
        p.grad = 1e-3 * torch.randn_like(p)
    return params


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
    ours_params = big_params(spec.device)
    base_params = big_params(spec.device)
    n_params = sum(p.numel() for p in ours_params)
    ours = registry.create(spec.optimizer, ours_params, lr=1e-4)
    fused = torch.optim.Adam(base_params, lr=1e-4, fused=True)
    for _ in range(WARMUP):
        ours.step()
        fused.step()
    mine, base = [], []
    for _ in range(REPEATS):
        mine.append(_time(ours, spec.device))
        base.append(_time(fused, spec.device))
    step, reference = statistics.median(mine), statistics.median(base)
    return {
        "final_metric": float("nan"), "diverged": 0, "steps": WARMUP + REPEATS,
        "steps_to_target": None, "seconds": sum(mine), "seconds_to_target": None,
        "step_time": step, "state_bytes_per_param": state_bytes(ours) / n_params,
        "n_params": n_params, "losses": [], "evals": [], "path": None,
        "extra": {"fused_adam_step_time": reference, "x_fused_adam": step / reference,
                  "tensors": len(ours_params), "repeats": REPEATS},
        "error": None,
    }


__all__ = ["big_params", "measure"]
