"""Closed-form checks of the trust-ratio parts, one case per variant.

Each case runs a few parts on a hand-made bucket and compares the update they leave in
``b.update`` (or the params, for whole recipes) with values worked out by hand in the comment.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import optimkit
from optimkit.core.tensorlists import Bucket
from optimkit.stats import (
    adam_direction,
    debias_direction,
    layer_norms,
    new_weights_norm,
    radam_direction,
    trust_ratio,
)
from optimkit.stats.centralize import centralize_gradient


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


@dataclasses.dataclass
class Case:
    id: str
    parts: tuple
    params: list
    grads: list
    hypers: dict
    expected: list
    state: dict = dataclasses.field(default_factory=dict)


# w = (3, 4) has norm 5 and g = (0.6, 0.8) norm 1 throughout.
W, G = t(3.0, 4.0), t(0.6, 0.8)
LARS = (layer_norms, trust_ratio)

CASES = [
    # ratio = 0.1 * 5 / 1 = 0.5
    Case("lars", LARS, [W], [G], dict(trust_coefficient=0.1), [t(0.3, 0.4)]),
    # ratio = 0.1 * 5 / (1 + 0.1 * 5) = 1/3; d = (g + 0.1 w) / 3 = (0.9, 1.2) / 3
    Case("lars-wd", LARS, [W], [G], dict(trust_coefficient=0.1, weight_decay=0.1), [t(0.3, 0.4)]),
    # eps in the denominator: 0.1 * 5 / (1 + 1) = 0.25
    Case("lars-eps", LARS, [W], [G], dict(trust_coefficient=0.1, eps=1.0), [t(0.15, 0.2)]),
    # LARC: 0.02 * 5 / 1.5 / lr(0.01) = 6.7 clipped to 1: d = g + 0.1 w
    Case("larc-clipped", LARS, [W], [G],
         dict(trust_coefficient=0.02, weight_decay=0.1, clip=True, lr=0.01), [t(0.9, 1.2)]),
    # LARC unclipped: 0.02 * 5 / 1.5 / 1 = 1/15
    Case("larc-unclipped", LARS, [W], [G],
         dict(trust_coefficient=0.02, weight_decay=0.1, clip=True, lr=1.0), [t(0.06, 0.08)]),
    # A zero weight norm: ratio 1 and no weight decay; a zero gradient likewise.
    Case("zero-weight", LARS, [t(0.0, 0.0)], [G],
         dict(trust_coefficient=0.1, weight_decay=0.1), [G]),
    Case("zero-grad", LARS, [W], [t(0.0, 0.0)],
         dict(trust_coefficient=0.1, weight_decay=0.1), [t(0.0, 0.0)]),
    # Per tensor in one bucket: the zero tensor passes, the other is scaled by 0.5.
    Case("zero-and-not", LARS, [t(0.0, 0.0), W], [G, G],
         dict(trust_coefficient=0.1), [G, t(0.3, 0.4)]),
    # LAMB's clamp: ||w|| = 50 clamped to 10; ||d|| = 10: ratio 1. Without clamp ratio 5.
    Case("clamp", LARS, [t(30.0, 40.0)], [t(6.0, 8.0)], dict(clamp_value=10.0), [t(6.0, 8.0)]),
    Case("no-clamp", LARS, [t(30.0, 40.0)], [t(6.0, 8.0)], dict(), [t(30.0, 40.0)]),
    # exclude_1d: the vector keeps its direction, the matrix is scaled by 0.1 * 5 / 1.
    Case("exclude-1d", LARS, [W, W.reshape(1, 2)], [G, G.reshape(1, 2)],
         dict(trust_coefficient=0.1, exclude_1d=True), [G, t(0.3, 0.4).reshape(1, 2)]),
    # over9000 (float32): ||w|| is that of w' = w (1 - lr wd) = 0.95 w, norm 4.75; ||u|| that of
    # w' - lr d = (3, 4) * 0.95 - 0.1 * (0.6, 0.8) = (2.79, 3.72), norm 4.65: ratio 4.75 / 4.65.
    Case("new-weights", (new_weights_norm, trust_ratio.with_fixed(weight_decay=0.0)),
         [W], [G],
         dict(lr=0.1, weight_decay=0.5), [G * (4.75 / 4.65)]),
    # Adam's direction: m / (sqrt(v) + eps) = 0.1 / (0.2 + 0.05)
    Case("adam-direction", (adam_direction,), [t(1.0)], [t(9.0)], dict(eps=0.05), [t(0.4)],
         state={"grad_avg": [t(0.1)], "sqr_avg": [t(0.04)]}),
    # Paper v5 at t = 2: m_hat = 0.1 / 0.19, sqrt(v_hat) = sqrt(0.04 / 0.0199); eps = 0.
    Case("adam-direction-debiased", (adam_direction,), [t(1.0)], [t(9.0)],
         dict(eps=0.0, betas=(0.9, 0.99), debias_moments=True),
         [t((0.1 / 0.19) / math.sqrt(0.04 / (1 - 0.99**2)))],
         state={"grad_avg": [t(0.1)], "sqr_avg": [t(0.04)], "step": [torch.tensor(2.0)]}),
    # At t = 1: sqrt(1 - 0.999) / (1 - 0.9)
    Case("debias", (debias_direction,), [t(1.0)], [t(2.0)], dict(betas=(0.9, 0.999)),
         [t(2.0 * math.sqrt(0.001) / 0.1)], state={"step": [torch.tensor(1.0)]}),
    # Gradient centralization: rows of [[1, 3], [2, 6]] have means 2 and 4; a vector passes,
    # and with gc_conv_only (ndim > 3) so does the matrix.
    Case("centralize", (centralize_gradient,), [t(0.0), W],
         [t(1.0, 3.0, 2.0, 6.0).reshape(2, 2), G], dict(use_gc=True),
         [t(-1.0, 1.0, -2.0, 2.0).reshape(2, 2), G]),
    Case("centralize-conv-only", (centralize_gradient,), [t(0.0)], [W.reshape(1, 2)],
         dict(use_gc=True, gc_conv_only=True), [W.reshape(1, 2)]),
    # RAdam at t = 1 (rho_1 = 1, not rectified): d = m / (1 - beta1) = 0.05 / 0.1
    Case("radam-direction-sgd", (radam_direction,), [t(1.0)], [t(9.0)], dict(),
         [t(0.5)], state={"grad_avg": [t(0.05)], "sqr_avg": [t(1.0)], "step": [torch.tensor(1.0)]}),
]


def _run(case: Case):
    params = [p.clone() for p in case.params]
    state = {k: [v.clone() for v in vs] for k, vs in case.state.items()}
    b = Bucket(params, list(case.grads), state, {})
    # Adam's moments, as average_grad and average_sqr_grad provide them
    b.first_moment, b.second_moment = state.get("grad_avg"), state.get("sqr_avg")
    for part in case.parts:
        group = {**part.hypers, **{k: v for k, v in case.hypers.items() if k in part.hypers}}
        part(b, group)
    return b


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_part_closed_form(case):
    given = [g.clone() for g in case.grads]
    b = _run(case)
    assert len(b.update) == len(case.expected)
    for got, want in zip(b.update, case.expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for before, grad in zip(given, case.grads, strict=True):
        assert torch.equal(before, grad), "a part wrote into the gradient it was handed"


def test_norms_come_from_one_call(monkeypatch):
    """Weights and updates go through the bucket's norms together (one future reduction)."""
    calls = []
    real = Bucket.sum_squares
    monkeypatch.setattr(
        Bucket, "sum_squares",
        lambda b, *lists: calls.append([len(ts) for ts in lists]) or real(b, *lists),
    )
    _run(Case("x", LARS, [W, W], [G, G], dict(trust_coefficient=0.1), []))
    assert calls == [[2, 2]]


# ------------------------------------------------------------------ whole recipes, two steps
def _two_steps(factory, w, grads, **kwargs):
    p = w.clone().requires_grad_()
    opt = factory([p], **kwargs)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def test_lars_two_steps_with_momentum():
    # Step 1: ratio = 0.1 * 5 / 1 = 0.5, buf = (0.3, 0.4), p = (3, 4) - 0.1 * buf.
    # Step 2 (g again): ||p|| = 5 * 0.99 = 4.95, ratio = 0.495, buf = 0.9 buf + 0.495 g.
    got = _two_steps(optimkit.LARS, W, [G, G], lr=0.1, momentum=0.9, trust_coefficient=0.1,
                     eps=0.0)
    p1 = W - 0.1 * t(0.3, 0.4)
    buf = 0.9 * t(0.3, 0.4) + 0.495 * G
    torch.testing.assert_close(got, p1 - 0.1 * buf, rtol=1e-12, atol=1e-12)


def test_lamb_one_step():
    # m = 0.1 g, v = 0.001 g**2: d = 0.1 g / (sqrt(0.001) |g| + eps) per element; eps tiny.
    # ratio = ||w|| / ||d|| = 5 / ||d||, so the step is lr * 5 * d / ||d||.
    got = _two_steps(optimkit.LAMB, W, [G], lr=0.01, eps=0.0)
    d = 0.1 * G / (math.sqrt(0.001) * G.abs())
    torch.testing.assert_close(got, W - 0.01 * 5 * d / d.norm(), rtol=1e-12, atol=1e-12)


def test_ralamb_one_step():
    # t = 1 is not rectified: d = m / (1 - beta1) = g; w' = 0.95 w;
    # ratio = ||w'|| / ||w' - 0.1 g|| = 4.75 / 4.65 (the norm after the decay, as over9000 on fp32).
    got = _two_steps(optimkit.Ralamb, W, [G], lr=0.1, weight_decay=0.5)
    torch.testing.assert_close(got, 0.95 * W - 0.1 * (4.75 / 4.65) * G, rtol=1e-12, atol=1e-12)


def test_ralamb_textbook_ratio():
    # over9000_trust_ratio=False: ratio = ||w|| / ||d|| = 5 / 1.
    got = _two_steps(optimkit.Ralamb, W, [G], lr=0.1, over9000_trust_ratio=False)
    torch.testing.assert_close(got, W - 0.1 * 5 * G, rtol=1e-12, atol=1e-12)


def test_trust_ratio_never_reads_a_tensor_value():
    """No host sync: the step runs with the norms still lazy (meta tensors have no values)."""
    p = torch.empty(3, 2, device="meta")
    b = Bucket([p], [torch.empty(3, 2, device="meta")], {}, {})
    layer_norms(b, layer_norms.hypers)
    trust_ratio(b, {**trust_ratio.hypers, "weight_decay": 0.1, "clip": True})
    assert b.update[0].device.type == "meta"


@pytest.mark.parametrize(
    "recipe,kwargs,word",
    [
        (optimkit.LARS, {"trust_coefficient": -0.1}, "trust_coefficient"),
        (optimkit.LARC, {"eps": -1.0}, "eps"),
        (optimkit.LARS, {"nesterov": True, "momentum": 0.0}, "nesterov"),
        (optimkit.LAMB, {"clamp_value": -1.0}, "clamp_value"),
        (optimkit.LAMB, {"betas": (0.9, 1.5)}, "betas"),
        (optimkit.Ralamb, {"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_bad_hypers_name_the_argument(recipe, kwargs, word):
    with pytest.raises(ValueError, match=word):
        recipe([torch.zeros(2, requires_grad=True)], **kwargs)
