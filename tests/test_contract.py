"""The torch.optim contract, for every registered optimizer.

Resuming, param groups, mixed dtypes, None/zero grads, zero_grad modes, gradient hygiene,
closures, schedulers, GradScaler and NaN handling. Parametrized over the test database
(tests/optim_db.py): adding an optimizer adds its cases.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from conftest import optims
from helpers import clone_params, fake_grads, make_params, run

import optimkit


def _build(info, params, **kw):
    return info.factory(params, **{**info.pinned, **kw})


def _assert_same(xs, ys):
    for x, y in zip(xs, ys):
        assert torch.equal(x, y), (x - y).abs().max()


def _roundtrip(sd):
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@optims()
def test_resume_from_state_dict_is_bit_exact(info):
    start = make_params()
    straight = clone_params(start)
    run(_build(info, straight), straight, 40)

    resumed = clone_params(start)
    first = _build(info, resumed)
    run(first, resumed, 20)
    checkpoint = _roundtrip(first.state_dict())
    second = _build(info, resumed)
    second.load_state_dict(checkpoint)
    run(second, resumed, 20, start=20)
    _assert_same(resumed, straight)


def test_torch_adam_checkpoint_continues_exactly_as_torch():
    start = make_params(torch.float32)
    theirs, ours_params = clone_params(start), clone_params(start)
    torch_adam = torch.optim.Adam(theirs, lr=1e-2, weight_decay=0.1, amsgrad=True)
    run(torch_adam, theirs, 15)
    with torch.no_grad():
        for p, q in zip(ours_params, theirs):
            p.copy_(q)
    ours = optimkit.Adam(ours_params)
    ours.load_state_dict(_roundtrip(torch_adam.state_dict()))
    assert ours.param_groups[0]["amsgrad"] and ours.param_groups[0]["lr"] == 1e-2
    run(torch_adam, theirs, 15, start=15)
    run(ours, ours_params, 15, start=15)
    _assert_same(ours_params, theirs)
    assert torch.equal(
        ours.state[ours_params[0]]["grad_avg"], torch_adam.state[theirs[0]]["exp_avg"]
    )


@optims()
def test_param_groups_with_different_hypers_equal_separate_optimizers(info):
    start = make_params()
    lr = info.converge.get("lr", 1e-2)
    groups = [dict(lr=lr), dict(lr=lr * 0.3, weight_decay=0.05)]
    together = clone_params(start)
    opt = _build(
        info, [dict(params=together[:2], **groups[0]), dict(params=together[2:], **groups[1])]
    )
    run(opt, together, 25)

    apart = clone_params(start)
    opts = [_build(info, apart[:2], **groups[0]), _build(info, apart[2:], **groups[1])]
    for step in range(25):
        for p, g in zip(apart, fake_grads(apart, step)):
            p.grad = g
        for o in opts:
            o.step()
    _assert_same(together, apart)


@optims()
def test_mixed_float32_and_float64_params(info):
    start = make_params()
    mixed = clone_params(start)
    mixed[0] = mixed[0].detach().float().requires_grad_()
    opt = _build(info, mixed)
    run(opt, mixed, 30)
    assert mixed[0].dtype == torch.float32 and mixed[1].dtype == torch.float64
    alone = clone_params([start[0].float()])
    run(_build(info, alone), alone, 30)
    torch.testing.assert_close(mixed[0], alone[0], rtol=0, atol=0)
    assert all(torch.isfinite(p).all() for p in mixed)


@optims()
def test_param_without_grad_is_skipped_and_never_decayed(info):
    params = clone_params(make_params())
    frozen_before = params[0].detach().clone()
    opt = _build(info, params, weight_decay=0.1)
    run(opt, params, 12, skip=lambda step, i: i == 0)
    assert torch.equal(params[0], frozen_before)
    assert all(not torch.equal(p, q) for p, q in zip(params[1:-1], make_params()[1:-1]))


@optims()
def test_requires_grad_false_param_is_left_alone(info):
    params = clone_params(make_params())
    params[2].requires_grad_(False)
    before = params[2].detach().clone()
    model_params = [p for p in params]
    opt = _build(info, model_params)
    for step in range(5):
        loss = sum(
            (p * g).sum() for p, g in zip(params, fake_grads(params, step)) if p.requires_grad
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(params[2], before)


@optims()
def test_zero_grads_keep_everything_finite(info):
    params = clone_params(make_params())
    opt = _build(info, params)
    for _ in range(5):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.state_dict()


@optims()
def test_zero_grad_modes_give_identical_results(info):
    start = make_params()
    results = []
    for set_to_none in (True, False):
        params = clone_params(start)
        opt = _build(info, params)
        for step in range(15):
            opt.zero_grad(set_to_none=set_to_none)
            loss = sum((p * g).sum() for p, g in zip(params, fake_grads(params, step)))
            loss.backward()
            opt.step()
        results.append(params)
    _assert_same(*results)


@optims()
def test_step_never_modifies_the_gradient(info):
    params = clone_params(make_params())
    opt = _build(info, params, weight_decay=0.1)
    for step in range(4):
        grads = fake_grads(params, step)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for p, g in zip(params, grads):
            assert torch.equal(p.grad, g)


@optims()
def test_closure_runs_once_with_grad_enabled_and_its_loss_is_returned(info):
    params = clone_params(make_params())
    opt = _build(info, params)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = sum((p**2).sum() for p in params)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert calls == [True]
    assert isinstance(loss, torch.Tensor) and loss.item() > 0


@optims()
def test_lr_scheduler_drives_the_live_param_groups(info):
    params = clone_params(make_params())
    opt = _build(info, params, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    run(opt, params, 1)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    # lr = 0 freezes every param (decoupled decay scales with lr too).
    for group in opt.param_groups:
        group["lr"] = 0.0
    before = [p.detach().clone() for p in params]
    run(opt, params, 3, start=1)
    for p, q in zip(params, before):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@optims(where=lambda info: info.reference.target.startswith("torch.optim:"))
def test_one_cycle_with_momentum_cycling_matches_torch(info):
    """OneCycleLR cycles lr and momentum (or betas[0]) identically on both optimizers."""
    kwargs = {"momentum": 0.9} if "momentum" in info.factory.hypers else {}
    start = make_params()
    results = []
    for build in (info.factory, info.reference.build):
        params = clone_params(start)
        opt = build(params, **kwargs)
        cycle = "momentum" in opt.defaults or "betas" in opt.defaults
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=0.05, total_steps=30, cycle_momentum=cycle
        )
        for step in range(30):
            for p, g in zip(params, fake_grads(params, step)):
                p.grad = g
            opt.step()
            sched.step()
        results.append((params, opt.param_groups[0]))
    (ours, our_group), (theirs, their_group) = results
    for key in ("lr", "momentum", "betas"):
        if key in their_group:
            assert our_group[key] == their_group[key]
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


@optims()
def test_grad_scaler_skips_steps_with_inf_and_applies_the_others(info):
    params = clone_params(make_params(torch.float32))
    opt = _build(info, params)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    before = [p.detach().clone() for p in params]
    opt.zero_grad()
    scaler.scale(sum((p * float("inf")).sum() for p in params[:1])).backward()
    scaler.step(opt)
    scaler.update()
    _assert_same(params, before)
    opt.zero_grad()
    scaler.scale(sum((p**2).sum() for p in params)).backward()
    scaler.step(opt)
    scaler.update()
    assert any(not torch.equal(p, q) for p, q in zip(params, before))
    assert all(torch.isfinite(p).all() for p in params)


@optims()
def test_nan_gradients_do_not_crash_and_the_checkpoint_warns(info):
    params = clone_params(make_params())
    opt = _build(info, params)
    run(opt, params, 2)
    for p in params:
        p.grad = torch.full_like(p, float("nan"))
    opt.step()  # must not raise
    assert not torch.isfinite(params[0]).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd = opt.state_dict()
    holds_state = any(
        isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0
        for state in sd["state"].values()
        for v in state.values()
    )
    warned = [
        w
        for w in caught
        if issubclass(w.category, RuntimeWarning) and "NaN or inf" in str(w.message)
    ]
    assert len(warned) == (1 if holds_state else 0)


@pytest.mark.parametrize("flat", [False, True], ids=["eager", "flat"])
@optims()
def test_deepcopy_continues_like_the_original(info, flat):
    import copy

    params = clone_params(make_params())
    opt = optimkit.accelerate(_build(info, params), flat=True) if flat else _build(info, params)
    run(opt, params, 5)
    twin_params_and_opt = copy.deepcopy((params, opt))
    twin_params, twin = twin_params_and_opt
    run(opt, params, 5, start=5)
    run(twin, twin_params, 5, start=5)
    _assert_same(twin_params, params)
