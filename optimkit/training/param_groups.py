"""Parameter groups the way practitioners set them: no weight decay on biases and norms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def is_bias_or_norm(name: str, param: torch.Tensor) -> bool:
    """The usual rule: tensors with ndim <= 1 (biases, LayerNorm/BatchNorm weights)."""
    return param.ndim <= 1


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: Callable[[str, torch.Tensor], bool] | None = None,
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    ``no_decay(name, param)`` picks the parameters that get ``weight_decay=0``; by default
    :func:`is_bias_or_norm` (ndim <= 1). The others get ``weight_decay``. Empty groups are left
    out, and each group carries ``param_names``. For LARS, LARC and LAMB, ``exclude_1d=True``
    applies the same ndim <= 1 rule to the trust ratio (the SimCLR/BYOL convention)::

        optimkit.LARS(optimkit.param_groups(model, weight_decay=1e-6), lr=0.3, exclude_1d=True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not float(weight_decay) >= 0.0:
        raise ValueError(f"Invalid weight_decay: {weight_decay!r}; weight_decay must be >= 0")
    rule = no_decay or is_bias_or_norm
    decayed: dict[str, list] = {"params": [], "param_names": []}
    plain: dict[str, list] = {"params": [], "param_names": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = plain if rule(name, param) else decayed
        group["params"].append(param)
        group["param_names"].append(name)
    groups = [
        {**decayed, "weight_decay": weight_decay},
        {**plain, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
