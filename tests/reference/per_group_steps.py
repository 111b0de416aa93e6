"""pytorch_optimizer's ADOPT, LaProp, Adan, AdEMAMix, MARS and SOAP, stepped one param at a time
with that param's own step count.

pytorch_optimizer counts steps per param group (``group["step"]``); torch.optim and optimkit
count them per param. The two agree while every param steps every time; the parity tests also
let one param skip steps, so this runs the reference on a one-param group whose ``step`` is
that param's own count (kept in its state as ``step``). Nothing else changes: each call is
the reference's own per-param update.
"""

from __future__ import annotations

import pytorch_optimizer
import torch


def step_each_param(optimizer, closure, step_one):
    """A reference's ``step`` one param at a time: the closure's loss, then
    ``step_one(group, index, p, state)`` for each param with a grad (it sets
    ``optimizer.param_groups`` to a one-param group and steps); the groups put back after."""
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    groups = optimizer.param_groups
    try:
        for group in groups:
            for index, p in enumerate(group["params"]):
                if p.grad is not None:
                    step_one(group, index, p, optimizer.state[p])
    finally:
        optimizer.param_groups = groups
    return loss


def _per_param(cls):
    class PerParam(cls):
        @torch.no_grad()
        def step(self, closure=None):
            base = super().step

            def step_one(group, index, p, state):
                one = {**group, "params": [p], "step": state.get("step", 0)}
                self.param_groups = [one]
                base()
                state["step"] = one["step"]

            return step_each_param(self, closure, step_one)

    PerParam.__name__ = PerParam.__qualname__ = cls.__name__
    return PerParam


ADOPT = _per_param(pytorch_optimizer.ADOPT)
LaProp = _per_param(pytorch_optimizer.LaProp)
Adan = _per_param(pytorch_optimizer.Adan)
AdEMAMix = _per_param(pytorch_optimizer.AdEMAMix)
MARS = _per_param(pytorch_optimizer.MARS)
SOAP = _per_param(pytorch_optimizer.SOAP)


def packed(name):
    """SOAP's ``GG`` or ``Q`` list of one param (an empty list for a dimension it does not
    precondition) as optimkit packs it: the matrices flattened, one after the other."""

    def ours(state, group):
        mats = [m.reshape(-1) for m in state[name] if len(m)]
        return torch.cat(mats) if mats else torch.zeros(0, dtype=state["exp_avg"].dtype)

    return ours


def rotated_avg(state, group):
    """SOAP's ``exp_avg`` (kept unrotated there) in its eigenbases ``Q``, as optimkit keeps it."""
    from optimkit.stats.preconditioned import rotate

    bases = [q if len(q) else None for q in state["Q"]]
    return rotate(state["exp_avg"], bases)
