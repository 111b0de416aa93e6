"""What the timing scripts need to time steps on a device other than the CPU."""

from __future__ import annotations

import torch


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (a CUDA step returns before they have run)."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the device type."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
