"""Lookahead's slow weights (Zhang, Lucas, Hinton & Ba 2019, arXiv:1907.08610, Alg. 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..core.parts import copy_of_param, stepper
from ..core.rules import closed_unit_interval, positive_integer
from ..core.tensorlists import is_dtensor


def interpolate(fast: Sequence[Tensor], slow: Sequence[Tensor], alpha: float) -> None:
    """The Lookahead synchronisation: ``slow += alpha * (fast - slow)``, then ``fast = slow``.

    DTensors (FSDP2 params, as the ``Lookahead`` wrapper sees them) are copied one by one:
    ``_foreach_copy_`` has no DTensor sharding strategy.
    """
    if not fast:
        return
    torch._foreach_lerp_(slow, fast, alpha)
    if is_dtensor(fast[0]):
        for f, s in zip(fast, slow, strict=True):
            f.copy_(s)
    else:
        torch._foreach_copy_(fast, slow)


@stepper(state={"slow_param": copy_of_param}, reads=("step",), every="k",
         rules=dict(k=positive_integer, alpha=closed_unit_interval), k=5, alpha=0.5)
def lookahead(b, alpha):
    """Lookahead around the parts before it: after every ``k``-th step of a param,
    ``slow_param += alpha * (p - slow_param)`` and ``p = slow_param``.

    ``slow_param`` is a copy of the param taken at its first step, before that step's update
    (so weights loaded after the optimizer was built are the ones it starts from). Steps are
    the param's own ``step`` count, which moves only when the param had a gradient, as
    ``pytorch_ranger`` counts. The executor picks the due tensors on the host, from the CPU
    step counters, and runs this part outside the compiled step (``every="k"``).
    """
    interpolate(b.params, b.state["slow_param"], alpha)


def from_wrapper_state_dict(state_dict: dict) -> dict:
    """A state dict saved by the ``optimkit.Lookahead`` wrapper (Ranger, RangerLars and
    LookaheadSGD were built on it), in the form of a recipe with the ``lookahead`` part: the
    slow weights join each param's state, ``k`` and ``alpha`` each param group, and the
    wrapper's step count becomes ``step`` where the inner optimizer kept none. Both of the
    wrapper's formats are read: a top-level ``"lookahead"`` entry (before it kept torch's
    format), and per-param ``slow_param``/``lookahead_step`` with ``lookahead_k`` and
    ``lookahead_alpha`` in the groups. Any other state dict is returned as it is."""
    own = state_dict.get("lookahead")
    if own is not None:
        state = {}
        for index, inner in state_dict["state"].items():
            merged = dict(inner)
            merged["slow_param"] = own["slow_param"][index]
            if "step" not in merged:
                merged["step"] = torch.tensor(float(own["lookahead_step"][index]))
            state[index] = merged
        groups = [{**group, "k": own["k"], "alpha": own["alpha"]}
                  for group in state_dict["param_groups"]]
        return {"state": state, "param_groups": groups}
    groups = state_dict["param_groups"]
    if not groups or "lookahead_k" not in groups[0]:
        return state_dict
    state = {}
    for index, entry in state_dict["state"].items():
        merged = {k: v for k, v in entry.items() if k != "lookahead_step"}
        if "step" not in merged and "lookahead_step" in entry:
            merged["step"] = torch.tensor(float(entry["lookahead_step"]))
        state[index] = merged
    groups = [
        {**{k: v for k, v in group.items() if k not in ("lookahead_k", "lookahead_alpha")},
         "k": group["lookahead_k"], "alpha": group["lookahead_alpha"]}
        for group in groups
    ]
    return {**state_dict, "state": state, "param_groups": groups}
