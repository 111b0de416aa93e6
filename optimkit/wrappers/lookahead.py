"""Lookahead as a wrapper that keeps slow weights around any ``torch.optim.Optimizer``.

For optimkit's own recipes Lookahead is a part (``optimkit.steppers.lookahead``): Ranger,
RangerLars and LookaheadSGD are recipes with it, one optimizer and one state dict. The
wrapper is for optimizers that are not recipes (torch.optim's, other libraries').
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..core.rules import closed_unit_interval, positive_integer
from ..steppers.slow_weights import interpolate


def _check_k(k: Any) -> int:
    positive_integer("k", k)
    return k


def _check_alpha(alpha: Any) -> float:
    closed_unit_interval("alpha", alpha)
    return float(alpha)


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang, Lucas, Hinton & Ba 2019, arXiv:1907.08610, Alg. 1).

    ``Lookahead(optimizer, k=5, alpha=0.5)`` wraps any ``torch.optim.Optimizer`` (the *fast*
    one). The slow weights are a copy of the params when wrapped; after every ``k``-th inner
    step ``slow += alpha * (fast - slow)`` and ``fast = slow`` (the timing of the paper and of
    ``pytorch_ranger.Ranger``; ``torch_optimizer.Lookahead`` syncs at steps 1, k+1, ...).

    Steps are counted per parameter and only when the parameter had a gradient, i.e. was
    actually updated (as ``pytorch_ranger`` does with its per-param ``step``): when every
    parameter gets a gradient at every step this is the paper's single counter. A step that
    ``GradScaler`` skips never reaches ``step()`` and so is not counted.

    * ``param_groups`` and ``defaults`` are the inner optimizer's, live: schedulers
      (``OneCycleLR`` with momentum cycling included) act on the inner optimizer.
    * ``state`` holds only the wrapper's own per-param state (``slow_param`` and
      ``lookahead_step``); nothing is ever written into the inner optimizer's state.
    * ``state_dict()`` is the inner optimizer's, plus a ``"lookahead"`` entry with ``k``,
      ``alpha``, and the slow weights and step counts keyed by parameter index (the inner
      ``state_dict``'s numbering), so it loads into a freshly built wrapper.
    * ``step(closure)`` hands the closure to the inner optimizer, which evaluates it once.

    Extra memory: one copy of the params.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.k = _check_k(k)
        self.alpha = _check_alpha(alpha)
        # What torch.optim.Optimizer.__init__ sets up, except the param groups (the inner's).
        self._optimizer_step_pre_hooks: dict = OrderedDict()
        self._optimizer_step_post_hooks: dict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: dict = OrderedDict()
        self._optimizer_state_dict_post_hooks: dict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: dict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: dict = OrderedDict()
        self._patch_step_function()
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self._warned_capturable_if_run_uncaptured = True
        for group in optimizer.param_groups:
            self._track(group["params"])

    # ------------------------------------------------------------ the inner optimizer's views
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self._track(self.optimizer.param_groups[-1]["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _track(self, params: Iterable[Tensor]) -> None:
        for p in params:
            if "slow_param" not in self.state[p]:
                self.state[p] = {"slow_param": p.detach().clone(), "lookahead_step": 0}

    # ------------------------------------------------------------------------- the step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step (the closure, if any, is evaluated once by the inner optimizer),
        then the sync of every param whose own step count reached a multiple of ``k``."""
        for group in self.param_groups:  # params added to the inner optimizer directly
            self._track(group["params"])
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        fast, slow = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["lookahead_step"] += 1
                if state["lookahead_step"] % self.k == 0:
                    fast.append(p)
                    slow.append(state["slow_param"])
        with torch.no_grad():
            interpolate(fast, slow, self.alpha)
        return loss

    # ------------------------------------------------------------------------ checkpoints
    def _indexed_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        sd = dict(self.optimizer.state_dict())
        params = self._indexed_params()
        sd["lookahead"] = {
            "k": self.k,
            "alpha": self.alpha,
            "slow_param": {i: self.state[p]["slow_param"] for i, p in enumerate(params)},
            "lookahead_step": {i: self.state[p]["lookahead_step"] for i, p in enumerate(params)},
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "lookahead" not in state_dict:
            raise ValueError(
                "state_dict has no 'lookahead' entry: it was not saved by Lookahead; load it "
                "into the inner optimizer (wrapper.optimizer) instead"
            )
        own = state_dict["lookahead"]
        params = self._indexed_params()
        missing = [i for i in range(len(params)) if i not in own["slow_param"]]
        if missing:
            raise ValueError(f"state_dict lacks the slow weights of params {missing}")
        inner = {k: v for k, v in state_dict.items() if k != "lookahead"}
        self.optimizer.load_state_dict(inner)
        self.k, self.alpha = _check_k(own["k"]), _check_alpha(own["alpha"])
        with torch.no_grad():
            for i, p in enumerate(params):
                slow = own["slow_param"][i]
                if slow.shape != p.shape:
                    raise ValueError(
                        f"slow weights of param {i} have shape {tuple(slow.shape)}, "
                        f"the param {tuple(p.shape)}"
                    )
                self.state[p] = {
                    "slow_param": slow.detach().to(p.device, p.dtype, copy=True),
                    "lookahead_step": int(own["lookahead_step"][i]),
                }

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "k": self.k, "alpha": self.alpha, "state": self.state}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in (
            "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
        ):
            self.__dict__.setdefault(name, OrderedDict())
        self._patch_step_function()

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}) around {self.optimizer!r}"
