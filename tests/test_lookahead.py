"""Lookahead: the wrapper around any torch.optim.Optimizer, and the part of Ranger, RangerLars
and LookaheadSGD (their slow weights are ordinary per-param state)."""

from __future__ import annotations

import copy
import io
from functools import partial

import pytest
import torch
from helpers import clone_params, make_params, run

import optimkit

INNERS = {
    "torch-sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "torch-adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "optimkit-adam": lambda ps: optimkit.Adam(ps, lr=1e-2),
    "optimkit-lamb": lambda ps: optimkit.LAMB(ps, lr=1e-2, weight_decay=0.01),
}


def _wrapped(inner, params):
    return optimkit.Lookahead(inner(params), k=3)


WRAPPERS = {f"lookahead-{name}": partial(_wrapped, inner) for name, inner in INNERS.items()}
RECIPES = {
    "ranger": lambda ps: optimkit.Ranger(ps, lr=1e-2, weight_decay=0.01),
    "rangerlars": lambda ps: optimkit.RangerLars(ps, lr=1e-2),
    "lookahead-sgd": lambda ps: optimkit.LookaheadSGD(ps, lr=0.05, k=3),
}
BOTH = {**WRAPPERS, **RECIPES}


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_sync_timing_by_hand():
    # Plain SGD, lr 0.1, constant g, k = 2, alpha = 0.5. Fast weights: w - 0.1 g after step 1;
    # w - 0.2 g after step 2, then slow = w + 0.5 (-0.2 g) = w - 0.1 g and fast = slow;
    # step 3: w - 0.2 g; step 4: fast w - 0.3 g, slow = w - 0.1 g + 0.5 (-0.2 g) = w - 0.2 g.
    w, g = t(1.0, -2.0), t(1.0, 1.0)
    p = w.clone().requires_grad_()
    opt = optimkit.Lookahead(torch.optim.SGD([p], lr=0.1), k=2, alpha=0.5)
    expected = [w - 0.1 * g, w - 0.1 * g, w - 0.2 * g, w - 0.2 * g]
    for want in expected:
        p.grad = g.clone()
        opt.step()
        torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.state[p]["slow_param"], w - 0.2 * g, rtol=0, atol=1e-15)


def test_no_sync_at_first_step():
    """torch_optimizer.Lookahead syncs at step 1 (off by one); the paper does not."""
    w = t(1.0)
    p = w.clone().requires_grad_()
    opt = optimkit.Lookahead(torch.optim.SGD([p], lr=1.0), k=5, alpha=0.5)
    p.grad = t(1.0)
    opt.step()
    assert float(p) == 0.0 and float(opt.state[p]["slow_param"]) == 1.0


@pytest.mark.parametrize("inner", ["adam", "sgd"])
def test_wrapping_torch_or_optimkit_gives_the_same_run(inner):
    make = {
        "adam": (lambda ps: torch.optim.Adam(ps, lr=1e-2), lambda ps: optimkit.Adam(ps, lr=1e-2)),
        "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                lambda ps: optimkit.SGD(ps, lr=0.05, momentum=0.9)),
    }[inner]
    start = make_params()
    a, b = clone_params(start), clone_params(start)
    run(optimkit.Lookahead(make[0](a), k=4), a, 30)
    run(optimkit.Lookahead(make[1](b), k=4), b, 30)
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(BOTH))
def test_closure_evaluated_once_and_loss_returned(name):
    params = clone_params(make_params())
    opt = BOTH[name](params)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = sum((p**2).sum() for p in params)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [True]
    assert isinstance(loss, torch.Tensor) and loss.requires_grad


@pytest.mark.parametrize("name", list(BOTH))
def test_state_dict_round_trip_into_fresh_wrapper(name):
    start = make_params()
    straight, resumed = clone_params(start), clone_params(start)
    run(BOTH[name](straight), straight, 25)

    first = BOTH[name](resumed)
    run(first, resumed, 11)  # stops between two syncs
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    fresh = BOTH[name](resumed)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    run(fresh, resumed, 14, start=11)
    for p, q in zip(straight, resumed, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_inner_state_has_no_lookahead_keys(name):
    params = clone_params(make_params())
    opt = WRAPPERS[name](params)
    run(opt, params, 7)
    groups = {k for g in opt.optimizer.param_groups for k in g}
    for p in params:
        inner = set(opt.optimizer.state[p])
        assert not inner & {"slow_param", "lookahead_step", "slow_buffer"}
        assert set(opt.state[p]) == inner | {"slow_param", "lookahead_step"}
    assert not groups & {"k", "alpha", "slow_param", "lookahead_step"}
    assert {"lookahead_k", "lookahead_alpha"} <= groups
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}  # torch's format: what ZeRO and DCP keep
    assert all({"slow_param", "lookahead_step"} <= set(sd["state"][i]) for i in range(5))


def test_whole_entries_written_into_state_are_split():
    # ZeroRedundancyOptimizer.load_state_dict writes state[p] = {...} for each param itself.
    start = make_params()
    straight, resumed = clone_params(start), clone_params(start)
    run(WRAPPERS["lookahead-torch-adam"](straight), straight, 10)
    first = WRAPPERS["lookahead-torch-adam"](resumed)
    run(first, resumed, 4)
    saved = copy.deepcopy(first.state_dict())
    fresh = WRAPPERS["lookahead-torch-adam"](resumed)
    for index, p in enumerate(resumed):
        fresh.state[p] = saved["state"][index]
    assert set(fresh.optimizer.state[resumed[0]]) == {"step", "exp_avg", "exp_avg_sq"}
    assert set(fresh._own[resumed[0]]) == {"slow_param", "lookahead_step"}
    run(fresh, resumed, 6, start=4)
    for p, q in zip(straight, resumed, strict=True):
        assert torch.equal(p, q)


def _previous_format(sd):
    """A wrapper state dict as the wrapper saved it before it kept torch's format."""
    own = ("slow_param", "lookahead_step")
    return {
        "state": {i: {k: v for k, v in s.items() if k not in own} for i, s in sd["state"].items()},
        "param_groups": [{k: v for k, v in g.items() if not k.startswith("lookahead_")}
                         for g in sd["param_groups"]],
        "lookahead": {
            "k": sd["param_groups"][0]["lookahead_k"],
            "alpha": sd["param_groups"][0]["lookahead_alpha"],
            "slow_param": {i: s["slow_param"] for i, s in sd["state"].items()},
            "lookahead_step": {i: s["lookahead_step"] for i, s in sd["state"].items()},
        },
    }


def test_checkpoints_of_the_previous_format_still_load():
    start = make_params()
    straight, resumed = clone_params(start), clone_params(start)
    run(optimkit.Lookahead(torch.optim.SGD(straight, lr=0.1, momentum=0.9), k=3), straight, 8)
    first = optimkit.Lookahead(torch.optim.SGD(resumed, lr=0.1, momentum=0.9), k=3)
    run(first, resumed, 4)
    fresh = optimkit.Lookahead(torch.optim.SGD(resumed, lr=0.1, momentum=0.9), k=7)
    fresh.load_state_dict(_previous_format(first.state_dict()))
    assert fresh.k == 3
    run(fresh, resumed, 4, start=4)
    for p, q in zip(straight, resumed, strict=True):
        assert torch.equal(p, q)


def test_params_without_grads_get_no_slow_weights():
    params = clone_params(make_params())
    params[3].requires_grad_(False)
    opt = optimkit.Lookahead(torch.optim.SGD(params, lr=0.1), k=2)
    run(opt, params, 4, skip=lambda step, i: i in (3, 4))
    assert len(opt.state[params[3]]) == 0 and len(opt.state[params[4]]) == 0
    assert params[3] not in opt.state and params[4] not in opt.state
    assert set(opt.state_dict()["state"]) == {0, 1, 2}


def test_k_and_alpha_live_in_the_param_groups():
    params = clone_params(make_params())
    opt = optimkit.Lookahead(torch.optim.SGD(params[:3], lr=0.1), k=2, alpha=0.3)
    opt.add_param_group({"params": params[3:], "lookahead_k": 4})
    assert [g["lookahead_k"] for g in opt.param_groups] == [2, 4]
    assert [g["lookahead_alpha"] for g in opt.param_groups] == [0.3, 0.3]
    run(opt, params, 2)
    torch.testing.assert_close(opt.state[params[0]]["slow_param"], params[0].detach())
    assert not torch.equal(opt.state[params[4]]["slow_param"], params[4].detach())
    opt.k = 5
    assert [g["lookahead_k"] for g in opt.param_groups] == [5, 5]
    with pytest.raises(ValueError, match="k"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lookahead_k": 0})


def test_refuses_to_wrap_an_optimizer_with_slow_weights():
    params = clone_params(make_params())
    with pytest.raises(ValueError, match="slow weights"):
        optimkit.Lookahead(optimkit.Ranger(params))


def test_counts_only_params_that_were_updated():
    params = clone_params(make_params())
    opt = optimkit.Lookahead(torch.optim.SGD(params, lr=0.1), k=3)
    run(opt, params, 6, skip=lambda step, i: i == 0 and step < 2)
    assert opt.state[params[0]]["lookahead_step"] == 4
    assert opt.state[params[1]]["lookahead_step"] == 6


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_param_groups_are_live_for_one_cycle(inner):
    params = clone_params(make_params())
    base = (torch.optim.SGD(params, lr=0.1, momentum=0.9) if inner == "sgd"
            else torch.optim.Adam(params, lr=0.1))
    opt = optimkit.Lookahead(base)
    assert opt.param_groups is base.param_groups and opt.defaults is base.defaults
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=20,
                                                cycle_momentum=True)
    key = "momentum" if inner == "sgd" else "betas"
    before = (base.param_groups[0]["lr"], base.param_groups[0][key])
    run(opt, params, 5)
    for _ in range(5):
        sched.step()
    after = (base.param_groups[0]["lr"], base.param_groups[0][key])
    assert after[0] != before[0] and after[1] != before[1]


def test_grad_scaler_steps_the_wrapper_and_skips_inf():
    params = clone_params(make_params(torch.float32))
    opt = optimkit.Lookahead(torch.optim.SGD(params, lr=0.1), k=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)

    def backward(poison=False):
        opt.zero_grad()
        scaler.scale(sum((p * p).sum() for p in params)).backward()
        if poison:
            params[0].grad[0, 0] = float("inf")

    before = [p.detach().clone() for p in params]
    backward()
    scaler.step(opt)
    scaler.update()
    assert all(opt.state[p]["lookahead_step"] == 1 for p in params)
    # SGD on the unscaled gradient 2p: p = p - 0.1 * 2p.
    torch.testing.assert_close(params[0].detach(), 0.8 * before[0])
    # An inf gradient: the step is skipped, nothing moves and the counters stay.
    now = [p.detach().clone() for p in params]
    backward(poison=True)
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(params, now, strict=True))
    assert all(opt.state[p]["lookahead_step"] == 1 for p in params)


def test_add_param_group_gets_slow_weights():
    params = clone_params(make_params())
    opt = optimkit.Lookahead(optimkit.Adam(params[:3], lr=0.1), k=2)
    opt.add_param_group({"params": params[3:], "lr": 0.01})
    assert len(opt.optimizer.param_groups) == 2
    run(opt, params, 2)
    for p in params:
        torch.testing.assert_close(opt.state[p]["slow_param"], p.detach())  # synced at step 2
    assert opt.state[params[4]]["lookahead_step"] == 2


def test_params_added_to_the_inner_optimizer_are_tracked():
    params = clone_params(make_params())
    inner = torch.optim.SGD(params[:2], lr=0.1)
    opt = optimkit.Lookahead(inner, k=2)
    inner.add_param_group({"params": params[2:]})
    start = params[4].detach().clone()
    run(opt, params, 1)
    torch.testing.assert_close(opt.state[params[4]]["slow_param"], start)


def test_deepcopy_keeps_the_wrapper_working():
    params = clone_params(make_params())
    opt = optimkit.Lookahead(optimkit.Ralamb(params, lr=0.1), k=6)
    run(opt, params, 3)
    twin = copy.deepcopy(opt)
    steps = [s["lookahead_step"] for s in opt.state_dict()["state"].values()]
    assert [s["lookahead_step"] for s in twin.state_dict()["state"].values()] == steps
    twin.step()


def test_is_an_optimizer_for_schedulers():
    opt = optimkit.Lookahead(optimkit.RAdam(clone_params(make_params())), k=6)
    assert isinstance(opt, torch.optim.Optimizer)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "build,word",
    [
        (lambda ps: optimkit.Lookahead(torch.optim.SGD(ps), k=0), "k"),
        (lambda ps: optimkit.Lookahead(torch.optim.SGD(ps), k=2.5), "k"),
        (lambda ps: optimkit.Lookahead(torch.optim.SGD(ps), alpha=1.5), "alpha"),
        (lambda ps: optimkit.Ranger(ps, k=0), "k"),
        (lambda ps: optimkit.Ranger(ps, lr=-1.0), "lr"),
        (lambda ps: optimkit.RangerLars(ps, alpha=-0.1), "alpha"),
        (lambda ps: optimkit.RangerLars(ps, betas=(0.9, 1.0)), "betas"),
        (lambda ps: optimkit.LookaheadSGD(ps, k=True), "k"),
        (lambda ps: optimkit.LookaheadSGD([{"params": ps, "alpha": 2.0}]), "alpha"),
    ],
)
def test_bad_input_names_the_argument(build, word):
    with pytest.raises(ValueError, match=word):
        build(clone_params(make_params()))


def test_refuses_non_optimizer_and_foreign_state_dict():
    with pytest.raises(TypeError, match="optimizer"):
        optimkit.Lookahead([torch.zeros(2)])
    params = clone_params(make_params())
    inner = torch.optim.SGD(params, lr=0.1)
    opt = optimkit.Lookahead(copy.deepcopy(inner))
    with pytest.raises(ValueError, match="lookahead"):
        opt.load_state_dict(inner.state_dict())


def test_over9000_is_rangerlars():
    assert optimkit.Over9000 is optimkit.RangerLars
    from optimkit import registry

    assert registry.get("over9000") is registry.get("rangerlars")


# ------------------------------------------------------------------ Lookahead as a part
@pytest.mark.parametrize("k", [1, 3])
def test_the_part_steps_as_the_wrapper_bit_for_bit(k):
    start = make_params()
    ours, theirs = clone_params(start), clone_params(start)
    skip = lambda step, i: i == 1 and step % 4 == 2  # param 1 falls behind: its own counter
    run(optimkit.Ranger(ours, lr=1e-2, k=k, alpha=0.3), ours, 20, skip=skip)
    inner = optimkit.CentralizedRAdam(theirs, lr=1e-2)
    run(optimkit.Lookahead(inner, k=k, alpha=0.3), theirs, 20, skip=skip)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", list(RECIPES))
def test_slow_weights_are_ordinary_state(name):
    params = clone_params(make_params())
    opt = RECIPES[name](params)
    run(opt, params, 7)
    sd = opt.state_dict()
    assert "lookahead" not in sd and {"k", "alpha"} <= set(sd["param_groups"][0])
    assert all("slow_param" in sd["state"][i] and "step" in sd["state"][i]
               for i in range(len(params)))


def test_slow_weights_start_from_weights_loaded_after_building_the_optimizer():
    # The wrapper copied the params when built; the part copies them at their first step,
    # so loading a checkpoint into the model after building the optimizer is safe.
    start, loaded = make_params(seed=0), make_params(seed=5)
    late = clone_params(start)
    opt = optimkit.Ranger(late, lr=1e-2)
    with torch.no_grad():
        for p, value in zip(late, loaded, strict=True):
            p.copy_(value)
    run(opt, late, 12)
    early = clone_params(loaded)
    run(optimkit.Ranger(early, lr=1e-2), early, 12)
    for p, q in zip(late, early, strict=True):
        assert torch.equal(p, q)


def test_k_and_alpha_are_per_param_group():
    params = clone_params(make_params())
    opt = optimkit.LookaheadSGD([{"params": params[:2], "k": 2, "alpha": 1.0},
                                 {"params": params[2:]}], lr=0.1, k=100)
    run(opt, params, 2)
    # alpha = 1 after two steps: the slow weights took the fast ones; k = 100: not synced yet
    assert all(torch.equal(opt.state[p]["slow_param"], p.detach()) for p in params[:2])
    assert not torch.equal(opt.state[params[2]]["slow_param"], params[2].detach())


@pytest.mark.parametrize("format", [lambda sd: sd, _previous_format], ids=["torch", "previous"])
@pytest.mark.parametrize("name,inner", [
    ("ranger", lambda ps: optimkit.CentralizedRAdam(ps, lr=1e-2)),
    ("lookahead-sgd", lambda ps: optimkit.SGD(ps, lr=0.05, momentum=0.9)),
])
def test_a_checkpoint_of_the_wrapper_era_loads_into_the_recipe(name, inner, format):
    # Ranger and LookaheadSGD were Lookahead(inner, k, alpha); their checkpoints still load.
    k = {"ranger": 6, "lookahead-sgd": 3}[name]
    start = make_params()
    old, new = clone_params(start), clone_params(start)
    wrapper = optimkit.Lookahead(inner(old), k=k)
    run(wrapper, old, 8)
    with torch.no_grad():
        for p, q in zip(new, old, strict=True):
            p.copy_(q)
    recipe = RECIPES[name](new)
    recipe.load_state_dict(copy.deepcopy(format(wrapper.state_dict())))  # as torch.save would
    run(wrapper, old, 8, start=8)
    run(recipe, new, 8, start=8)
    for p, q in zip(old, new, strict=True):
        assert torch.equal(p, q)
