"""Lookahead as a wrapper that keeps slow weights around any ``torch.optim.Optimizer``.

For optimkit's own recipes Lookahead is a part (``optimkit.steppers.lookahead``): Ranger,
RangerLars and LookaheadSGD are recipes with it, one optimizer and one state dict. The
wrapper is for optimizers that are not recipes (torch.optim's, other libraries').
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor

from ..core.rules import closed_unit_interval, positive_integer
from ..steppers.slow_weights import interpolate

# The wrapper's own per-param state, kept next to the inner optimizer's.
OWN_STATE = ("slow_param", "lookahead_step")
# The wrapper's hyper-parameters, kept in the (inner optimizer's) param groups.
K, ALPHA = "lookahead_k", "lookahead_alpha"


def _check_k(k: Any) -> int:
    positive_integer("k", k)
    return k


def _check_alpha(alpha: Any) -> float:
    closed_unit_interval("alpha", alpha)
    return float(alpha)


class _ParamState(MutableMapping):
    """One param's state under the wrapper: the inner optimizer's entries and the slow weights."""

    __slots__ = ("_wrapper", "_param")

    def __init__(self, wrapper: Lookahead, param: Tensor) -> None:
        self._wrapper, self._param = wrapper, param

    def _home(self, key: str, create: bool = False) -> MutableMapping:
        if key not in OWN_STATE:
            return self._wrapper.optimizer.state[self._param]
        own = self._wrapper._own
        return own.setdefault(self._param, {}) if create else own.get(self._param, {})

    def __getitem__(self, key: str) -> Any:
        return self._home(key)[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._home(key, create=True)[key] = value

    def __delitem__(self, key: str) -> None:
        del self._home(key)[key]

    def _parts(self) -> list[Mapping]:
        parts = []
        for state in (self._wrapper.optimizer.state, self._wrapper._own):
            if self._param in state:
                parts.append(state[self._param])
        return parts

    def __iter__(self) -> Iterator[str]:
        return iter([key for part in self._parts() for key in part])

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts())

    def __repr__(self) -> str:
        return repr(dict(self))


class _State(MutableMapping):
    """``Lookahead.state``: param -> the inner state plus the slow weights, as one mapping.

    Writing a whole entry (``state[p] = {...}``, as ``ZeroRedundancyOptimizer.load_state_dict``
    does) sends the slow weights to the wrapper and everything else to the inner optimizer.
    Like ``torch.optim``'s state it is a default dict: reading an unknown param gives an empty
    entry.
    """

    __slots__ = ("_wrapper",)

    def __init__(self, wrapper: Lookahead) -> None:
        self._wrapper = wrapper

    def __getitem__(self, param: Tensor) -> _ParamState:
        return _ParamState(self._wrapper, param)

    def __setitem__(self, param: Tensor, value: Mapping[str, Any]) -> None:
        own = {k: v for k, v in value.items() if k in OWN_STATE}
        self._wrapper.optimizer.state[param] = {
            k: v for k, v in value.items() if k not in OWN_STATE
        }
        if own:
            self._wrapper._own[param] = own
        else:
            self._wrapper._own.pop(param, None)

    def __delitem__(self, param: Tensor) -> None:
        found = param in self
        self._wrapper.optimizer.state.pop(param, None)
        self._wrapper._own.pop(param, None)
        if not found:
            raise KeyError(param)

    def __contains__(self, param: object) -> bool:
        return param in self._wrapper.optimizer.state or param in self._wrapper._own

    def __iter__(self) -> Iterator[Tensor]:
        inner, own = self._wrapper.optimizer.state, self._wrapper._own
        return iter([*inner, *(p for p in own if p not in inner)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"LookaheadState({len(self)} params)"


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang, Lucas, Hinton & Ba 2019, arXiv:1907.08610, Alg. 1).

    ``Lookahead(optimizer, k=5, alpha=0.5)`` wraps any ``torch.optim.Optimizer`` (the *fast*
    one). A param's slow weights are a copy of it as it was before its first update; after
    every ``k``-th inner step ``slow += alpha * (fast - slow)`` and ``fast = slow`` (the timing
    of the paper and of ``pytorch_ranger.Ranger``; ``torch_optimizer.Lookahead`` syncs at
    steps 1, k+1, ...).

    Steps are counted per parameter and only when the parameter had a gradient, i.e. was
    actually updated (as ``pytorch_ranger`` does with its per-param ``step``): when every
    parameter gets a gradient at every step this is the paper's single counter. A step that
    ``GradScaler`` skips never reaches ``step()`` and so is not counted. A param that never
    gets a gradient (frozen, or outside the loss) gets no slow weights.

    * ``param_groups`` and ``defaults`` are the inner optimizer's, live: schedulers
      (``OneCycleLR`` with momentum cycling included) act on the inner optimizer. ``k`` and
      ``alpha`` live there too, as ``lookahead_k`` and ``lookahead_alpha`` (per group, so a
      scheduler can drive ``lookahead_alpha``); ``opt.k`` and ``opt.alpha`` set every group.
    * ``state[p]`` is the inner optimizer's state of ``p`` plus ``slow_param`` and
      ``lookahead_step``; the inner optimizer's own ``state`` never holds the latter.
    * ``state_dict()`` is torch's format: per-param state (the slow weights included) keyed
      by index, and the param groups. So ``ZeroRedundancyOptimizer(optimizer_class=...)`` and
      ``torch.distributed.checkpoint`` (``get/set_optimizer_state_dict``) save and load it
      exactly; a checkpoint of the previous format (a ``"lookahead"`` entry) still loads.
    * Under FSDP2 the params and slow weights are DTensors; the sync runs on them as they are.
    * ``step(closure)`` hands the closure to the inner optimizer, which evaluates it once.

    Extra memory: one copy of the params.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if isinstance(optimizer, Lookahead) or set(OWN_STATE) & set(
            getattr(type(optimizer), "state_inits", ())
        ):
            raise ValueError(
                f"optimizer: {type(optimizer).__name__} keeps Lookahead's slow weights already; "
                "wrap the optimizer inside it instead"
            )
        self.optimizer = optimizer
        self._k, self._alpha = _check_k(k), _check_alpha(alpha)
        # What torch.optim.Optimizer.__init__ sets up, except the param groups (the inner's).
        self._optimizer_step_pre_hooks: dict = OrderedDict()
        self._optimizer_step_post_hooks: dict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: dict = OrderedDict()
        self._optimizer_state_dict_post_hooks: dict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: dict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: dict = OrderedDict()
        self._patch_step_function()
        self._own: dict[Tensor, dict[str, Any]] = {}
        self._warned_capturable_if_run_uncaptured = True
        for group in optimizer.param_groups:
            self._configure(group)

    # ------------------------------------------------------------ the inner optimizer's views
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's param groups (schedulers reach them through the wrapper)."""
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def defaults(self) -> dict[str, Any]:
        """The inner optimizer's defaults."""
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    @property
    def state(self) -> _State:
        """Per-param state: the inner optimizer's, with the slow weights (``slow_param``)."""
        return _State(self)

    @property
    def k(self) -> int:
        """Steps between syncs (of the first param group; ``opt.k = n`` sets every group)."""
        return self.param_groups[0][K] if self.param_groups else self._k

    @k.setter
    def k(self, value: int) -> None:
        self._k = _check_k(value)
        for group in self.param_groups:
            group[K] = self._k

    @property
    def alpha(self) -> float:
        """The slow weights' step (of the first param group; ``opt.alpha = a`` sets every group)."""
        return self.param_groups[0][ALPHA] if self.param_groups else self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = _check_alpha(value)
        for group in self.param_groups:
            group[ALPHA] = self._alpha

    def _configure(self, group: dict[str, Any]) -> None:
        group[K] = _check_k(group.setdefault(K, self._k))
        group[ALPHA] = _check_alpha(group.setdefault(ALPHA, self._alpha))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self._configure(self.optimizer.param_groups[-1])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------------------- the step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step (the closure, if any, is evaluated once by the inner optimizer),
        then the sync of every param whose own step count reached a multiple of its ``k``."""
        own = self._own
        first = {}  # the params before their first update: their slow weights, if they get one
        for group in self.param_groups:
            self._configure(group)  # groups added to the inner optimizer directly
            for p in group["params"]:
                if p.requires_grad and "slow_param" not in own.get(p, ()):
                    first[p] = p.detach().clone()
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        for group in self.param_groups:
            fast, slow = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = own.setdefault(p, {})
                if "slow_param" not in state:
                    state.update(slow_param=first.get(p, p.detach().clone()), lookahead_step=0)
                state["lookahead_step"] += 1
                if state["lookahead_step"] % group[K] == 0:
                    fast.append(p)
                    slow.append(state["slow_param"])
            with torch.no_grad():
                interpolate(fast, slow, group[ALPHA])
        return loss

    # ------------------------------------------------------------------------ checkpoints
    def _indexed_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's ``state_dict`` with each param's slow weights in its state."""
        sd = self.optimizer.state_dict()
        state = dict(sd["state"])
        for index, p in enumerate(self._indexed_params()):
            if self._own.get(p):
                state[index] = {**state.get(index, {}), **self._own[p]}
        return {**sd, "state": state}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load what :meth:`state_dict` saved (or the wrapper's earlier format). Everything of
        the wrapper's own is checked before the inner optimizer loads its part (``k``,
        ``alpha``, each param's slow weights: their shape, and their step count), so that a
        state_dict refused by the wrapper or by an optimkit inner optimizer changes nothing."""
        if "lookahead" in state_dict:
            state_dict = _from_previous_format(state_dict)
        groups = state_dict["param_groups"]
        if not all(K in group for group in groups):
            raise ValueError(
                f"state_dict was not saved by Lookahead: its param groups lack {K!r}; load it "
                "into the inner optimizer (wrapper.optimizer) instead"
            )
        if len(groups) != len(self.param_groups) or any(
            len(saved["params"]) != len(group["params"])
            for saved, group in zip(groups, self.param_groups, strict=False)
        ):
            raise ValueError(
                "state_dict: its param groups do not match the optimizer's (number of groups "
                "or of params in a group); nothing was loaded"
            )
        for index, group in enumerate(groups):
            try:
                _check_k(group[K])
                _check_alpha(group.get(ALPHA, self._alpha))
            except ValueError as error:
                raise ValueError(f"param group {index} of the state_dict: {error}") from None
        # The saved groups name their params (by index, or by FQN under DCP) in the order of
        # ours, as torch's own load_state_dict assumes.
        names = [name for group in groups for name in group["params"]]
        by_name = dict(zip(names, self._indexed_params(), strict=True))
        inner_state, own = {}, {}
        for name, entry in state_dict["state"].items():
            rest = {k: v for k, v in entry.items() if k not in OWN_STATE}
            if rest:
                inner_state[name] = rest
            if "slow_param" not in entry:
                continue
            p, slow = by_name.get(name), entry["slow_param"]
            if p is None:
                raise ValueError(f"state_dict: slow weights of param {name!r}, which no param "
                                 "group of the state_dict lists")
            if not isinstance(slow, Tensor) or slow.shape != p.shape:
                found = tuple(slow.shape) if isinstance(slow, Tensor) else type(slow).__name__
                raise ValueError(
                    f"slow weights of param {name!r} have shape {found}, the param "
                    f"{tuple(p.shape)}; nothing was loaded"
                )
            if not isinstance(entry.get("lookahead_step"), (int, Tensor)):
                raise ValueError(f"state_dict: param {name!r} has slow weights but no "
                                 "'lookahead_step'; nothing was loaded")
            own[p] = entry
        self.optimizer.load_state_dict({**state_dict, "state": inner_state})
        for group in self.param_groups:
            self._configure(group)
        with torch.no_grad():
            self._own = {
                p: {"slow_param": entry["slow_param"].detach().to(p.device, p.dtype, copy=True),
                    "lookahead_step": int(entry["lookahead_step"])}
                for p, entry in own.items()
            }

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "_k": self._k, "_alpha": self._alpha,
                "_own": self._own}

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


def _from_previous_format(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint with a top-level ``"lookahead"`` entry (k, alpha and the slow weights by
    param index), as Lookahead saved it before, in today's per-param format."""
    extra = state_dict["lookahead"]
    state = {index: dict(entry) for index, entry in state_dict["state"].items()}
    for index, slow in extra["slow_param"].items():
        state.setdefault(index, {}).update(
            slow_param=slow, lookahead_step=extra["lookahead_step"][index]
        )
    groups = [{**g, K: extra["k"], ALPHA: extra["alpha"]} for g in state_dict["param_groups"]]
    rest = {k: v for k, v in state_dict.items() if k not in ("lookahead", "state", "param_groups")}
    return {**rest, "state": state, "param_groups": groups}
