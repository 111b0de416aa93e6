"""Schedules, HyperScheduler and OneCycle: values, hyper names, resume, overrun, torch parity."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import optims

import optimkit
from optimkit.schedules import (
    HyperScheduler,
    OneCycle,
    constant,
    cosine,
    exponential,
    linear,
    phases,
    polynomial,
)


def _params(n=3):
    return [torch.nn.Parameter(torch.randn(4, dtype=torch.float64)) for _ in range(n)]


def _train(optimizer, scheduler, steps, record=("lr",)):
    """Step on fake gradients; return the hyper values the optimizer used at each step."""
    seen = []
    params = [p for g in optimizer.param_groups for p in g["params"]]
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        seen.append([_momentum_or(g, name) for g in optimizer.param_groups for name in record])
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        optimizer.step()
        scheduler.step()
    return seen


def _momentum_or(group, name):
    if name == "momentum" and "momentum" not in group:
        return group["betas"][0]
    return group[name]


# ---------------------------------------------------------------- curves
def test_curves_hit_their_ends_and_middles():
    assert linear(1.0, 3.0)(0.5) == 2.0
    assert cosine(1.0, 0.0)(0.5) == pytest.approx(0.5)
    assert cosine(1.0, 0.0)(0.25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert exponential(1e-4, 1e-2)(0.5) == pytest.approx(1e-3)
    assert polynomial(1.0, 0.0, power=2)(0.5) == pytest.approx(0.25)
    curves = (linear(2.0, 5.0), cosine(2.0, 5.0), exponential(2.0, 5.0), polynomial(2.0, 5.0, 3))
    for curve in curves:
        assert curve(0.0) == pytest.approx(2.0) and curve(1.0) == pytest.approx(5.0)
        assert curve(-1.0) == curve(0.0) and curve(7.0) == curve(1.0)  # held past the ends
        assert curve.bounds == (2.0, 5.0)


def test_phases_join_schedules_over_shares_of_training():
    lr = phases((0.25, linear(1e-4, 1e-2)), (0.75, cosine(1e-2, 1e-6)))
    assert lr(0.0) == pytest.approx(1e-4)
    assert lr(0.25) == pytest.approx(1e-2)
    assert lr(0.125) == pytest.approx((1e-4 + 1e-2) / 2)
    assert lr(1.0) == pytest.approx(1e-6)
    assert lr(0.25 + 0.75 / 2) == pytest.approx((1e-2 + 1e-6) / 2)
    assert lr.bounds == (1e-6, 1e-2)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: phases((0.5, linear(0, 1)), (0.4, constant(1))), "add up to 1"),
        (lambda: phases((-0.1, linear(0, 1)), (1.1, constant(1))), "share of phase 0"),
        (lambda: exponential(0.0, 1.0), "same sign"),
        (lambda: polynomial(1.0, 0.0, power=0), "power"),
        (lambda: linear(float("nan"), 1.0), "start"),
    ],
)
def test_bad_schedules_are_refused_by_name(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# ---------------------------------------------------------------- HyperScheduler
def test_scheduler_drives_lr_weight_decay_and_momentum_of_sgd():
    opt = torch.optim.SGD(_params(), lr=0.1, momentum=0.5, weight_decay=0.0)
    sched = HyperScheduler(
        opt, 5, lr=linear(0.4, 0.0), momentum=linear(0.9, 0.5), weight_decay=constant(1e-3)
    )
    seen = _train(opt, sched, 5, record=("lr", "momentum", "weight_decay"))
    assert [s[0] for s in seen] == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0])
    assert [s[1] for s in seen] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert all(s[2] == 1e-3 for s in seen)
    assert sched.get_last_lr() == [0.0]  # held after the end


@pytest.mark.parametrize("make", [torch.optim.Adam, optimkit.Adam, optimkit.AdamW])
def test_momentum_means_beta1_for_adam_family_and_keeps_beta2(make):
    opt = make(_params(), lr=1e-3, betas=(0.9, 0.97))
    sched = HyperScheduler(opt, 3, momentum=linear(0.95, 0.85))
    seen = []
    for _ in range(3):
        seen.append(opt.param_groups[0]["betas"])
        opt.step()
        sched.step()
    assert [b[0] for b in seen] == pytest.approx([0.95, 0.9, 0.85])
    assert all(b[1] == 0.97 and isinstance(b, tuple) for b in seen)


def test_betas_by_index_and_beta_at_or_above_one_is_refused():
    opt = optimkit.Adam(_params(), lr=1e-3)
    HyperScheduler(opt, 4, {"betas[1]": linear(0.99, 0.999)})
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    with pytest.raises(ValueError, match="momentum"):
        HyperScheduler(opt, 4, momentum=linear(0.9, 1.0))
    with pytest.raises(ValueError, match="betas\\[0\\]"):
        HyperScheduler(opt, 4, {"betas[0]": lambda progress: 1.0})  # caught when written
    with pytest.raises(ValueError, match="no 'momentum'"):
        HyperScheduler(torch.optim.Adagrad(_params()), 4, momentum=0.9)
    with pytest.raises(ValueError, match="lr"):
        HyperScheduler(opt, 4, lr=linear(1e-3, -1e-3))


def test_tensor_lr_is_filled_in_place():
    opt = torch.optim.Adam(_params(), lr=torch.tensor(0.01))
    lr_tensor = opt.param_groups[0]["lr"]
    sched = HyperScheduler(opt, 3, lr=linear(0.03, 0.01))
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr_tensor
    assert float(lr_tensor) == pytest.approx(0.02)


def test_per_group_schedules_and_none_leaves_a_group_alone():
    params = _params(2)
    opt = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=0.1)
    HyperScheduler(opt, 3, lr=[linear(1.0, 0.0), None])
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.5]
    with pytest.raises(ValueError, match="2 param groups"):
        HyperScheduler(opt, 3, lr=[linear(1.0, 0.0)] * 3)


def test_overrun_holds_by_default_and_raises_on_request():
    opt = torch.optim.SGD(_params(), lr=0.1)
    sched = HyperScheduler(opt, 3, lr=linear(0.3, 0.1))
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    strict = HyperScheduler(torch.optim.SGD(_params(), lr=0.1), 3, lr=linear(0.3, 0.1),
                            on_overrun="raise")
    for _ in range(3):  # the call after the last optimizer step is allowed
        strict.optimizer.step()
        strict.step()
    with pytest.raises(ValueError, match="total_steps is 3"):
        strict.step()


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_total_steps_is_validated(value):
    with pytest.raises(ValueError, match="total_steps"):
        HyperScheduler(torch.optim.SGD(_params(), lr=0.1), value, lr=0.1)


# ---------------------------------------------------------------- OneCycle
@pytest.mark.parametrize("total_steps", [1, 2, 7, 100])
@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=1e-3),
        lambda p: optimkit.SGD(p, lr=0.1, momentum=0.9),
        lambda p: optimkit.Adam(p, lr=1e-3),
    ],
    ids=["torch-sgd", "torch-adam", "optimkit-sgd", "optimkit-adam"],
)
def test_torch_preset_equals_onecyclelr_value_by_value(make, total_steps):
    p_ref, p_ours = _params(2), _params(2)
    groups = lambda p: [{"params": p[:1]}, {"params": p[1:]}]
    ref_opt, our_opt = make(groups(p_ref)), make(groups(p_ours))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.optim.lr_scheduler.OneCycleLR(
            ref_opt, max_lr=[0.5, 0.05], total_steps=total_steps
        )
    ours = OneCycle(our_opt, [0.5, 0.05], total_steps, preset="torch")
    expected = _train(ref_opt, ref, total_steps, record=("lr", "momentum"))
    assert _train(our_opt, ours, total_steps, record=("lr", "momentum")) == expected  # exact


def test_fastai_preset_shape():
    opt = optimkit.Adam(_params(), lr=1e-3)
    T = 101
    sched = OneCycle(opt, 1e-2, T, preset="fastai")
    seen = _train(opt, sched, T, record=("lr", "momentum"))
    lrs, moms = [s[0] for s in seen], [s[1] for s in seen]
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert max(lrs) == pytest.approx(1e-2) and lrs.index(max(lrs)) == 25
    assert lrs[-1] == pytest.approx(1e-2 / 1e5)
    assert moms[0] == pytest.approx(0.95) and moms[25] == pytest.approx(0.85)
    assert moms[-1] == pytest.approx(0.95)
    assert opt.param_groups[0]["betas"][1] == 0.999


def test_paper_preset_is_three_linear_phases():
    opt = torch.optim.SGD(_params(), lr=0.1, momentum=0.9)
    T = 201
    seen = _train(opt, OneCycle(opt, 1.0, T, preset="paper"), T, record=("lr", "momentum"))
    lrs, moms = [s[0] for s in seen], [s[1] for s in seen]
    peak = lrs.index(max(lrs))
    assert peak == 90  # 0.45 * (T - 1)
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0)
    # Linear: equal steps on the way up.
    ups = [b - a for a, b in zip(lrs[1:peak - 1], lrs[2:peak], strict=True)]
    assert max(ups) == pytest.approx(min(ups), rel=1e-6)
    assert lrs[2 * peak] == pytest.approx(0.1, rel=0.05)  # back to the start lr
    assert lrs[-1] == pytest.approx(1e-3)  # 1/100 of the start lr
    assert min(moms) == pytest.approx(0.85) and moms[-1] == pytest.approx(0.95)


def test_onecycle_counts_optimizer_steps_with_accumulation():
    sched = OneCycle(torch.optim.SGD(_params(), lr=0.1), 1.0, epochs=3, steps_per_epoch=10,
                     accum_steps=4)
    assert sched.total_steps == 3 * 3  # ceil(10 / 4) optimizer steps per epoch


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "smith"}, "preset"),
        ({"pct_start": 1.5}, "pct_start"),
        ({"div": 0}, "div"),
        ({"anneal": "step"}, "anneal"),
        ({"max_lr": -1.0}, "max_lr"),
        ({"max_lr": [0.1, 0.2]}, "max_lr"),
        ({"moms": (0.95, 1.0, 0.95)}, "momentum"),
        ({"total_steps": None}, "steps_per_epoch"),
    ],
)
def test_onecycle_refuses_bad_arguments_by_name(kwargs, match):
    args = {"max_lr": 0.1, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        OneCycle(torch.optim.Adam(_params(), lr=0.1), **args)


@optims()
def test_onecycle_and_resume_work_with_every_registered_optimizer(info):
    """Every optimizer: the lr follows the cycle, momentum cycles where the optimizer has one,
    and a scheduler resumed from state_dict continues exactly."""
    T, cut = 12, 5

    def build(params):
        opt = info.factory(params)
        return opt, OneCycle(opt, 0.01, T)

    opt, sched = build(_params())
    full = _train(opt, sched, T, record=("lr",))
    assert full[0][0] == pytest.approx(0.01 / 25) and max(s[0] for s in full) <= 0.01
    group = opt.param_groups[0]
    if "momentum" in group or "betas" in group:
        assert _momentum_or(group, "momentum") == pytest.approx(0.95)

    opt_a, sched_a = build(_params())
    _train(opt_a, sched_a, cut)
    opt_b, sched_b = build(_params())
    opt_b.load_state_dict(opt_a.state_dict())
    sched_b.load_state_dict(sched_a.state_dict())
    rest = _train(opt_b, sched_b, T - cut, record=("lr",))
    assert rest == full[cut:]
