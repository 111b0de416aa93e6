"""Naive Lookahead around torch.optim.SGD, from the paper (Zhang et al. 2019, Alg. 1).

The slow weights are a copy of the params when the optimizer is built. Each param counts its
own updates; after every k-th one: ``slow = slow + alpha * (p - slow)`` and ``p = slow``.
"""

from __future__ import annotations

import torch


class LookaheadSGD(torch.optim.SGD):
    def __init__(self, params, lr=1e-3, k=5, alpha=0.5, momentum=0.9, **sgd_kwargs):
        super().__init__(params, lr=lr, momentum=momentum, **sgd_kwargs)
        self.k, self.alpha = k, alpha
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["slow_buffer"] = p.detach().clone()
                self.state[p]["la_step"] = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["la_step"] += 1
                if state["la_step"] % self.k == 0:
                    slow = state["slow_buffer"]
                    slow += self.alpha * (p - slow)
                    p.copy_(slow)
        return loss
