"""pytorch_optimizer's PSGD ``Kron`` with optimkit's probe vectors and balancing schedule.

The reference draws each preconditioner update's probe ``V`` from torch's global generator
(``torch.randn_like``) and balances the factors when numpy's global generator draws below
``balance_prob``. optimkit draws ``V`` from a counter-based hash of the param's
``probe_key`` and step count, and balances after every ``balance_every``-th step of a param
(see ``optimkit/stats/kron.py``). This runs the reference's own step, one param at a time
(with that param's step count, as ``per_group_steps`` does), with those two draws replaced:
``torch.randn_like`` returns optimkit's probe of that param and step, and numpy's draw is 1
(never balance); the reference's own ``balance_q`` then runs after every ``balance_every``-th
step of a param of 2 dims or more, where optimkit balances. The preconditioner update
schedule is the reference's own: ``precondition_update_probability`` (a number, a callable of
the steps taken, or None for its default annealing schedule) is its
``pre_conditioner_update_probability``, and its update counter, which it keeps in its first
param group, is kept per param here (each param steps as a group of its own, with its own step
count, as optimkit counts). Everything else is the reference's code; ``precondition_lr`` and
``precondition_init_scale``, which its constructor does not take, are set in its param groups.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytorch_optimizer
import torch
from pytorch_optimizer.optimizer.psgd import balance_q

from optimkit.stats.kron import probe_key, probes

from .per_group_steps import step_each_param


class Kron(pytorch_optimizer.Kron):
    """``pytorch_optimizer.Kron`` stepped per param with optimkit's probes (module doc)."""

    def __init__(self, params, *, balance_every: int = 100, probe_seed: int = 0,
                 precondition_lr: float = 0.1, precondition_init_scale: float = 1.0,
                 precondition_update_probability=None, **kwargs):
        super().__init__(params, pre_conditioner_update_probability=precondition_update_probability,
                         **kwargs)
        for group in self.param_groups:
            group.update(balance_every=balance_every, probe_seed=probe_seed,
                         precondition_lr=precondition_lr,
                         precondition_init_scale=precondition_init_scale)

    @torch.no_grad()
    def step(self, closure=None):
        base = super().step

        def step_one(group, index, p, state):
            t = state.get("step", 0) + 1
            key = probe_key(group["probe_seed"], index)
            v = probes(p.shape, key, t, group["precondition_dtype"], p.device)
            one = {**group, "params": [p], "step": t - 1,
                   "update_counter": state.get("update_counter", 0)}
            self.param_groups = [one]
            with mock.patch.object(torch, "randn_like", lambda *a, v=v, **k: v.clone()), \
                    mock.patch.object(np.random, "random", lambda: 1.0):
                base()
            if p.dim() > 1 and t % group["balance_every"] == 0:
                balance_q(state["Q"])
            state["step"] = one["step"]
            state["update_counter"] = one["update_counter"]
            state["probe_key"] = key

        return step_each_param(self, closure, step_one)
