"""Naive per-parameter LARC/LARS, written from NVIDIA apex ``apex/parallel/LARC.py``.

apex's LARC wraps an optimizer (here torch.optim.SGD). Before the inner step it takes the
weight decay away from the group, and for every param whose weight and gradient norms are both
non-zero it replaces the gradient with ``local * (g + wd * w)``, where
``local = trust_coefficient * ||w|| / (||g|| + wd * ||w|| + eps)``, clipped to
``min(local / lr, 1)`` when ``clip`` is set. A param with a zero norm keeps its raw gradient and
gets no weight decay. The weight decay goes back into the group after the inner step.

This copy replaces ``p.grad`` by a new tensor instead of writing into it.
"""

from __future__ import annotations

import torch


class LARC:
    """``LARC(params, trust_coefficient, clip, eps, **sgd_kwargs)``: apex LARC around SGD."""

    def __init__(self, params, trust_coefficient=0.02, clip=True, eps=1e-8, **sgd_kwargs):
        self.inner = torch.optim.SGD(params, **sgd_kwargs)
        self.trust_coefficient = trust_coefficient
        self.clip = clip
        self.eps = eps

    @property
    def state(self):
        return self.inner.state

    @property
    def param_groups(self):
        return self.inner.param_groups

    def step(self):
        saved_decay = []
        with torch.no_grad():
            for group in self.inner.param_groups:
                decay = group.get("weight_decay", 0.0)
                saved_decay.append(decay)
                group["weight_decay"] = 0.0
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(p.grad)
                    if w_norm == 0 or g_norm == 0:
                        continue
                    local = self.trust_coefficient * w_norm / (g_norm + decay * w_norm + self.eps)
                    if self.clip:
                        local = torch.clamp(local / group["lr"], max=1.0)
                    p.grad = (p.grad + decay * p) * local
        self.inner.step()
        for group, decay in zip(self.inner.param_groups, saved_decay, strict=True):
            group["weight_decay"] = decay
