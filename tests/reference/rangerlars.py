"""Naive RangerLars: Lookahead with the paper's timing around the naive over9000 Ralamb.

The slow copy of each param is taken when the optimizer is built; after every k-th step of a
param (its own ``step`` count) ``slow = slow + alpha * (p - slow)`` and ``p = slow``.
"""

from __future__ import annotations

import torch

from .ralamb import Ralamb


class RangerLars(Ralamb):
    def __init__(self, params, lr=1e-3, alpha=0.5, k=6, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.alpha, self.k = alpha, k
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["slow_buffer"] = p.detach().clone()

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or self.state[p]["step"] % self.k != 0:
                    continue
                slow = self.state[p]["slow_buffer"]
                slow += self.alpha * (p - slow)
                p.copy_(slow)
        return loss
