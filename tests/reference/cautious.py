"""Naive cautious Adam/AdamW (Liang et al. 2024, arXiv:2411.16085, Alg. 1: C-AdamW), one
param at a time, and the factories the test database builds Adam's and AdamW's references
with: torch.optim's class, or the naive one where ``cautious=True``.

The mask keeps the elements where the first moment and the gradient (with its L2 term) agree
in sign and rescales them by ``n / (k + 1)`` (``n`` elements, ``k`` kept), as
pytorch_optimizer's ``apply_cautious`` (the normalisation optimkit follows everywhere); the
rest is torch.optim.Adam's single-tensor update, written out.
"""

from __future__ import annotations

import math

import torch


class CautiousAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, decoupled=decoupled_weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                grad = p.grad
                if decay:
                    if group["decoupled"]:
                        p.mul_(1 - lr * decay)
                    else:
                        grad = grad + decay * p
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                second = exp_avg_sq
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], exp_avg_sq,
                                  out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                mask = (exp_avg * grad > 0).to(grad.dtype)
                mask.mul_(mask.numel() / (mask.sum() + 1))
                moment = exp_avg * mask
                denom = (second.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
                p.addcdiv_(moment, denom, value=-lr / (1 - beta1**t))
        return loss


def Adam(params, cautious=False, **kwargs):
    if cautious:
        return CautiousAdam(params, **kwargs)
    return torch.optim.Adam(params, **kwargs)


def AdamW(params, cautious=False, **kwargs):
    if cautious:
        return CautiousAdam(params, **{"weight_decay": 1e-2, "decoupled_weight_decay": True,
                                       **kwargs})
    return torch.optim.AdamW(params, **kwargs)
