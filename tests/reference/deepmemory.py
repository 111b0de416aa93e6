"""DeepMemory as lessw2020 wrote it (Best-Deep-Learning-Optimizers, DeepMemory/deepmemory.py, 2020),
restated per parameter in plain torch. Two changes from the original, both deliberate: the previous
gradient is stored as a copy (the original keeps a reference to ``p.grad``) and nothing is printed.
Everything else follows the original's formulas and their order.
"""

from __future__ import annotations

import math

import torch


class DeepMemory(torch.optim.Optimizer):
    def __init__(self, params, lr=4e-3, betas=(0.9, 0.999), len_memory=200, version=1, eps=1e-6,
                 weight_decay=0.0):
        if version not in (0, 1):
            raise ValueError(f"Invalid version: {version!r}; the original defines 0 and 1")
        beta3 = 1 - 1 / len_memory
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.version = version

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._update(p, p.grad, group, beta1, beta2)
        return loss

    def _update(self, p, grad, group, beta1, beta2):
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            state["exp_avg_lr"] = torch.zeros_like(p)
            state["previous_grad"] = torch.zeros_like(p)
        state["step"] += 1
        t = state["step"]

        state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = state["exp_avg_sq"].sqrt().add_(group["eps"])
        alpha = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)

        change = state["previous_grad"] - grad
        if self.version == 0:
            change = change.abs()
        friction = 1.0 / (1.0 + torch.exp(-change))
        state["previous_grad"] = grad.clone()  # the fix: the original aliases p.grad here

        if group["weight_decay"] != 0:
            p.mul_(1 - group["weight_decay"] * group["lr"])

        step_size = torch.full_like(denom, alpha) / denom
        state["exp_avg_lr"].mul_(group["beta3"]).add_(step_size, alpha=1 - group["beta3"])
        blended = (step_size + state["exp_avg_lr"]) / 2.0
        p.add_(-(blended * (state["exp_avg"] * friction)))
