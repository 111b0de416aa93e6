"""The naive references of tests/reference/ against steps worked out by hand.

They stand in for GitHub-only code (apex LARC, over9000 Ralamb), so they are checked on their
own before the parity suite trusts them.
"""

from __future__ import annotations

import math

import torch
from reference.larc import LARC
from reference.ralamb import Ralamb
from reference.rangerlars import RangerLars


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


W, G = t(3.0, 4.0), t(0.6, 0.8)  # norms 5 and 1


def _steps(optimizer_cls, w, grads, **kwargs):
    p = w.clone().requires_grad_()
    opt = optimizer_cls([p], **kwargs)
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out, opt


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_larc_clip_binds():
    # local = 0.02 * 5 / (1 + 0.1 * 5) = 1/15; / lr 0.01 = 6.7 -> clipped to 1.
    (p,), _ = _steps(LARC, W, [G], lr=0.01, weight_decay=0.1, eps=0.0)
    close(p, W - 0.01 * (G + 0.1 * W))


def test_larc_clip_free_and_lars():
    # lr = 1: local / lr = 1/15 < 1, same as the scaling mode (clip=False) at lr = 1.
    expected = W - (1 / 15) * (G + 0.1 * W)
    (clipped,), _ = _steps(LARC, W, [G], lr=1.0, weight_decay=0.1, eps=0.0)
    (scaled,), _ = _steps(LARC, W, [G], lr=1.0, weight_decay=0.1, eps=0.0, clip=False)
    close(clipped, expected)
    close(scaled, expected)


def test_lars_momentum_two_steps():
    # Step 1: d = 0.5 g (0.1 * 5 / 1); buf = d; p1 = w - 0.1 d. Step 2: ||p1|| = 4.95.
    (p1, p2), opt = _steps(
        LARC, W, [G, G], lr=0.1, momentum=0.9, trust_coefficient=0.1, clip=False, eps=0.0
    )
    close(p1, W - 0.05 * G)
    buf = 0.9 * 0.5 * G + 0.495 * G
    close(p2, p1 - 0.1 * buf)
    close(opt.state[opt.param_groups[0]["params"][0]]["momentum_buffer"], buf)


def test_larc_zero_norms_skip_decay():
    (p,), _ = _steps(LARC, t(0.0, 0.0), [G], lr=0.1, weight_decay=0.5)
    close(p, -0.1 * G)
    (p,), _ = _steps(LARC, W, [t(0.0, 0.0)], lr=0.1, weight_decay=0.5)
    close(p, W)


def test_larc_restores_weight_decay():
    _, opt = _steps(LARC, W, [G], lr=0.1, weight_decay=0.5)
    assert opt.param_groups[0]["weight_decay"] == 0.5


def test_ralamb_first_step_measures_the_decayed_and_the_new_weights():
    # t = 1 is not rectified: u = lr m / (1 - b1) = 0.1 g; w' = 0.95 w (norm 4.75, as over9000
    # measures float32 params after its in-place decay); ratio = 4.75 / ||w' - u||
    # = 4.75 / ||(2.79, 3.72)|| = 4.75 / 4.65.
    (p,), _ = _steps(Ralamb, W, [G], lr=0.1, weight_decay=0.5)
    close(p, 0.95 * W - (4.75 / 4.65) * 0.1 * G)


def test_ralamb_clamps_weight_norm_at_10():
    w = t(30.0, 40.0)  # norm 50 -> 10; ||w - 0.1 g|| = 50 - 0.1 = 49.9
    (p,), _ = _steps(Ralamb, w, [G], lr=0.1)
    close(p, w - (10 / 49.9) * 0.1 * G)


def test_ralamb_rectified_step():
    # A constant g gives m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2, so with eps = 0 the
    # rectified update is u = lr sqrt(r_t) sign(g); r_t > 0 once rho_t >= 5 (t = 6 for b2 = 0.9).
    b1, b2, lr, steps = 0.5, 0.9, 0.01, 6
    ps, _ = _steps(Ralamb, W, [G] * steps, lr=lr, betas=(b1, b2), eps=0.0)
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * steps * b2**steps / (1 - b2**steps)
    assert rho >= 5
    r = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
    u = lr * math.sqrt(r) * torch.ones(2, dtype=torch.float64)
    before = ps[-2]
    ratio = min(float(before.norm()), 10.0) / float((before - u).norm())
    close(ps[-1], before - ratio * u)


def test_rangerlars_syncs_after_every_kth_step():
    # k = 2, alpha = 0.5: after step 2 the param is w + 0.5 (fast_2 - w); after step 1 untouched.
    grads = [G, G]
    fast, _ = _steps(Ralamb, W, grads, lr=0.1)
    ours, opt = _steps(RangerLars, W, grads, lr=0.1, k=2, alpha=0.5)
    close(ours[0], fast[0])
    close(ours[1], W + 0.5 * (fast[1] - W))
    close(opt.state[opt.param_groups[0]["params"][0]]["slow_buffer"], ours[1])
