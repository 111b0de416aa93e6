"""Take and restore everything a trial run changes: model, optimizer, extras and RNG."""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen.setdefault(id(p), p)
    return list(seen.values())


def _clone(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().clone()


@dataclasses.dataclass
class RNGState:
    """torch's CPU generator, CUDA's (only when CUDA is initialised), ``random`` and numpy."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None
    python: Any
    numpy: Any

    @classmethod
    def take(cls) -> RNGState:
        """The current RNG states: torch (CPU, and CUDA when initialised), ``random``, numpy."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda, random.getstate(), np.random.get_state())

    def restore(self) -> None:
        """Put the RNG states back."""
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        random.setstate(self.python)
        np.random.set_state(self.numpy)


@dataclasses.dataclass
class Snapshot:
    """A deep copy of the training state, restored exactly by ``restore()``.

    Covers the params of ``optimizer`` and their ``.grad``, ``optimizer.state_dict()`` (so a
    wrapper such as ``optimkit.Lookahead`` brings back its slow weights and counter), the
    whole ``model.state_dict()`` when a model is given (buffers such as BatchNorm's running
    statistics live only there), any ``extras`` with ``state_dict``/``load_state_dict``
    (schedulers, ``torch.amp.GradScaler``) and the RNG states.

    The copies stay on the tensors' devices: taking a snapshot costs about one more model
    plus one more optimizer state of memory.
    """

    optimizer: torch.optim.Optimizer
    optimizer_state: dict[str, Any]
    params: list[torch.Tensor]
    values: list[torch.Tensor]
    grads: list[torch.Tensor | None]
    model: torch.nn.Module | None
    model_state: dict[str, Any] | None
    extras: list[tuple[Any, dict[str, Any]]]
    rng: RNGState

    @classmethod
    def take(
        cls,
        optimizer: torch.optim.Optimizer,
        model: torch.nn.Module | None = None,
        extras: Iterable[Any] = (),
    ) -> Snapshot:
        """Copy what ``restore`` puts back: params and grads, the optimizer's and the model's state
        dicts, ``extra_state``, the RNGs."""
        params = _params(optimizer)
        extras = list(extras)
        for extra in extras:
            if not (hasattr(extra, "state_dict") and hasattr(extra, "load_state_dict")):
                raise ValueError(f"extra_state: {extra!r} has no state_dict/load_state_dict")
        model_state = None
        if model is not None:
            model_state = {k: _clone(v) for k, v in model.state_dict(keep_vars=False).items()}
        return cls(
            optimizer=optimizer,
            optimizer_state=copy.deepcopy(optimizer.state_dict()),
            params=params,
            values=[_clone(p) for p in params],
            grads=[_clone(p.grad) for p in params],
            model=model,
            model_state=model_state,
            extras=[(e, copy.deepcopy(e.state_dict())) for e in extras],
            rng=RNGState.take(),
        )

    @torch.no_grad()
    def restore(self) -> None:
        """Put everything taken back, exactly."""
        if self.model is not None:
            self.model.load_state_dict(self.model_state)
        for p, value, grad in zip(self.params, self.values, self.grads, strict=True):
            p.copy_(value)
            if grad is None:
                p.grad = None
            elif p.grad is not None and p.grad.shape == grad.shape:
                p.grad.copy_(grad)
            else:
                p.grad = grad.clone()
        # A deep copy: load_state_dict may keep the tensors it is given.
        self.optimizer.load_state_dict(copy.deepcopy(self.optimizer_state))
        for extra, state in self.extras:
            extra.load_state_dict(copy.deepcopy(state))
        self.rng.restore()
