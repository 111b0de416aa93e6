"""Naive per-parameter Ralamb, written from mgrankin/over9000 ``ralamb.py`` (latest version).

Per param, with ``t`` its own step count:

* ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2`` (no weight decay in the gradient);
* ``rho_inf = 2 / (1 - b2) - 1``, ``rho_t = rho_inf - 2 t b2**t / (1 - b2**t)``;
  when ``rho_t >= 5`` the step factor is ``sqrt((1 - b2**t) r_t) / (1 - b1**t)`` with
  ``r_t = (rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)``
  and the update ``u = lr * factor * m / (sqrt(v) + eps)``; otherwise ``u = lr * m / (1 - b1**t)``;
* decoupled decay ``w' = w - wd * lr * w``;
* ``ratio = clamp(||w'||, 0, 10) / ||w' - u||`` (the norm of the would-be new weights), or 1 when
  either norm is 0;
* ``w = w' - ratio * u``.

``||w'||``, after the decay, is what over9000 computes on float32 params: its
``p.data.float()`` is ``p.data`` itself there, so the decay has been applied in place when it
measures the weights. (On float64 params the copy leaves ``p.data`` alone and it measures
``||w||``; this reference follows the float32 behaviour for every dtype.)
"""

from __future__ import annotations

import math

import torch


class Ralamb(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, p, group):
        """Apply one Ralamb step to ``p`` (with a grad) and return nothing."""
        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g = p.grad
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        state["step"] += 1
        t = state["step"]

        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho_t >= 5:
            rect = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            factor = math.sqrt((1 - beta2**t) * rect) / (1 - beta1**t)
            update = lr * factor * m / (v.sqrt() + eps)
        else:
            update = lr * m / (1 - beta1**t)

        decayed = p - decay * lr * p
        w_norm = torch.linalg.vector_norm(decayed).clamp(0, 10)
        new_norm = torch.linalg.vector_norm(decayed - update)
        ratio = 1.0 if (w_norm == 0 or new_norm == 0) else w_norm / new_norm
        p.copy_(decayed - ratio * update)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss
