"""Naive Lion, one param at a time (Chen et al. 2023, arXiv:2302.06675, Algorithm 2).

Per param: decay the weights (decoupled), take the sign of an interpolation between the
momentum and the gradient as the step, then move the momentum towards the gradient with the
second, slower rate. The momentum starts at zero.

``cautious=True`` (Liang et al. 2024, C-Lion) zeroes the sign step where it disagrees with the
gradient and rescales it by ``n / (k + 1)`` (``n`` elements, ``k`` kept), as
pytorch_optimizer's ``Lion(cautious=True)``.
"""

from __future__ import annotations

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, cautious=False):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      cautious=cautious))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), decay = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                momentum, grad = state["exp_avg"], p.grad
                p.mul_(1 - lr * decay)
                interpolated = beta1 * momentum + (1 - beta1) * grad
                direction = torch.sign(interpolated)
                if group["cautious"]:
                    mask = (direction * grad > 0).to(grad.dtype)
                    direction = direction * (mask * (mask.numel() / (mask.sum() + 1)))
                p.add_(direction, alpha=-lr)
                momentum.mul_(beta2).add_(grad, alpha=1 - beta2)
        return loss
