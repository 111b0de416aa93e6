"""Muon's references, joined the way optimkit routes params: ``torch.optim.Muon`` for the
params of two or more dimensions, the muon-optimizer package's ``SingleDeviceMuonWithAuxAdam``
(Keller Jordan's ``muon.py``) AdamW branch for the others.

torch.optim.Muon takes 2-D params only: a param of more dimensions is handed to it as a 2-D
view ``[shape[0], rest]`` of the same storage (optimkit's convention for conv filters), with
its grad viewed the same way. Keller's Adam steps every param of its group, grad or not: the
group is narrowed to the params with a grad for each step. Its Muon branch writes ``p.grad``
(the Nesterov lerp), so the naive Newton-Schulz below and :class:`KellerMuon` clone the grads.

``naive_newton_schulz`` is the iteration written out per matrix, in any dtype, to check
optimkit's fp32 / fp64 ``ns_dtype`` option.
"""

from __future__ import annotations

import math

import muon as keller
import torch


class MuonWithAuxAdam:
    """torch.optim.Muon (matrices) + SingleDeviceMuonWithAuxAdam's Adam (the rest), under
    optimkit's keyword names."""

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
                 adjust_lr_fn=None, adam_lr=3e-4, adam_betas=(0.9, 0.95), adam_eps=1e-10,
                 adam_weight_decay=0.0):
        params = list(params)
        self.matrices = [p for p in params if p.ndim >= 2]
        self.others = [p for p in params if p.ndim < 2]
        self.views = [p.detach().view(p.shape[0], -1).requires_grad_() for p in self.matrices]
        self.muon = torch.optim.Muon(
            self.views, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
            ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        ) if self.matrices else None
        self.adam = keller.SingleDeviceMuonWithAuxAdam([dict(
            params=self.others, lr=adam_lr, betas=adam_betas, eps=adam_eps,
            weight_decay=adam_weight_decay, use_muon=False)]) if self.others else None
        self.param_groups = [dict(params=params, lr=lr, weight_decay=weight_decay,
                                  momentum=momentum, adam_lr=adam_lr, adam_betas=adam_betas)]

    @torch.no_grad()
    def step(self):
        for p, view in zip(self.matrices, self.views, strict=True):
            view.grad = None if p.grad is None else p.grad.view(view.shape)
        if self.muon is not None:
            self.muon.step()
        if self.adam is not None:
            group = self.adam.param_groups[0]
            group["params"] = [p for p in self.others if p.grad is not None]
            self.adam.step()
            group["params"] = self.others

    @property
    def state(self):
        out = {}
        for p, view in zip(self.matrices, self.views, strict=True):
            theirs = self.muon.state.get(view, {})
            out[p] = {k: v.view(p.shape) for k, v in theirs.items()}
        for p in self.others:
            out[p] = dict(self.adam.state.get(p, {}))
        return out


class KellerMuon(keller.SingleDeviceMuonWithAuxAdam):
    """``SingleDeviceMuonWithAuxAdam`` over all params, matrices (ndim >= 2) on its Muon
    branch, with the grads cloned before each step (its Nesterov lerp writes ``p.grad``)."""

    def __init__(self, params, lr=0.02, momentum=0.95, weight_decay=0.0, adam_lr=3e-4,
                 adam_betas=(0.9, 0.95), adam_eps=1e-10, adam_weight_decay=0.0):
        params = list(params)
        super().__init__([
            dict(params=[p for p in params if p.ndim >= 2], lr=lr, momentum=momentum,
                 weight_decay=weight_decay, use_muon=True),
            dict(params=[p for p in params if p.ndim < 2], lr=adam_lr, betas=adam_betas,
                 eps=adam_eps, weight_decay=adam_weight_decay, use_muon=False),
        ])

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = p.grad.clone()
        return super().step()


def naive_newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                        coefficients=(3.4445, -4.775, 2.0315)) -> torch.Tensor:
    """The quintic Newton-Schulz iteration on one matrix, in ``g``'s dtype, written out:
    ``X = G / max(||G||, eps)`` (on the wide orientation), ``X = a X + (b A + c A^2) X`` with
    ``A = X X^T``."""
    a, b, c = coefficients
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / max(float(torch.linalg.matrix_norm(x)), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def naive_lr_ratio(rows: int, cols: int, adjust_lr_fn=None) -> float:
    """torch.optim.Muon's lr adjustment, written out."""
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))
