"""schedulefree's reference Schedule-Free AdamW and SGD, stepped one param at a time with that
param's own counters, and starting in train mode.

The reference keeps ``k``, ``lr_max`` and ``weight_sum`` per param group; optimkit keeps them
per param (``step``, ``lr_max``, ``weight_sum``). The two agree while every param steps every
time; the parity tests also let one param skip steps, so this runs the reference on a
one-param group whose counters are that param's own (kept in its state). Nothing else changes:
each call is the reference's own update. ``train()`` / ``eval()`` are the reference's, without
its printing. The reference AdamW starts in eval mode and refuses to step until ``train()``;
optimkit starts in train mode, which this does too (no param has state yet, so nothing moves).
"""

from __future__ import annotations

import contextlib
import io

import schedulefree
import torch

from .per_group_steps import step_each_param

_COUNTERS = ("k", "lr_max", "weight_sum")


def _per_param(cls):
    class PerParam(cls):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            for group in self.param_groups:
                group["train_mode"] = True

        @torch.no_grad()
        def step(self, closure=None):
            base = super().step

            def step_one(group, index, p, state):
                own = {name: state.get(name, group[name]) for name in _COUNTERS}
                if "k" not in state:
                    own = {"k": 0, "lr_max": -1.0, "weight_sum": 0.0}
                one = {**group, "params": [p], **own}
                self.param_groups = [one]
                base()
                state.update({name: one[name] for name in _COUNTERS})

            return step_each_param(self, closure, step_one)

        def train(self):
            with contextlib.redirect_stdout(io.StringIO()):
                super().train()

        def eval(self):
            with contextlib.redirect_stdout(io.StringIO()):
                super().eval()

    PerParam.__name__ = PerParam.__qualname__ = cls.__name__
    return PerParam


AdamW = _per_param(schedulefree.AdamWScheduleFreeReference)
SGD = _per_param(schedulefree.SGDScheduleFreeReference)
