"""Barriers (issue 22): reductions over every bucket of every param group between two phases
of a recipe, optimizer-level values in the param groups, and ``max_grad_norm=`` (the built-in
barrier) for every recipe. Prodigy and D-Adaptation Adam, the recipes built on a barrier, get
the registry suites through ``tests/optim_db.py``; the distributed ones (one all-reduce per
step under FSDP2, DCP resume) in ``tests/test_distributed.py``.
"""

from __future__ import annotations

import copy as copy_module
import math

import pytest
import torch
from helpers import clone_params, fake_grads, make_params, run

import optimkit
from optimkit import Optimizer
from optimkit.core import compiled
from optimkit.core.parts import barrier, stat, stepper
from optimkit.stats import step_stat


# A toy recipe: SGD whose step is divided by the global gradient norm of the step before, a
# number over all the groups that lives in the param groups (``last_norm``).
@stat(contributes=("sqr_sum",))
def _sqr_sum(b):
    return (torch.stack(torch._foreach_norm(b.grads)).square(),)


@barrier(sums=("sqr_sum",), values={"last_norm": lambda group: 1.0})
def _global_norm(totals, groups):
    for group in groups:
        group["last_norm"] = math.sqrt(totals["sqr_sum"])


@stepper(group_values=("last_norm",), lr=0.1)
def _normalized_step(b, lr, last_norm):
    torch._foreach_add_(b.params, b.grads, alpha=-lr / last_norm)


class _NormalizedSGD(Optimizer):
    parts = (_sqr_sum, _global_norm, step_stat, _normalized_step)
    hypers = dict(lr=0.1)


def _naive_normalized_sgd(groups_of_params, grads_per_step, lr=0.1):
    for grads in grads_per_step:
        norm = math.sqrt(sum(float(g.square().sum()) for g in grads))
        with torch.no_grad():
            for p, g in zip(groups_of_params, grads, strict=True):
                p -= lr / norm * g


def _two_groups(params):
    return [{"params": params[:2]}, {"params": params[2:]}]


@pytest.mark.parametrize("mode", [{}, {"flat": True}])
def test_a_barrier_sums_over_every_bucket_of_every_group(mode):
    # two groups, and float32 with float64 params (two buckets in one group): one norm of all
    start = make_params()
    ours = clone_params(start)
    ours[1] = ours[1].detach().float().requires_grad_()
    opt = _NormalizedSGD(_two_groups(ours), **mode)
    naive = [p.detach().clone() for p in ours]
    steps = 6
    grads = [[g.to(p.dtype) for g, p in zip(fake_grads(ours, s), ours)] for s in range(steps)]
    for step in range(steps):
        for p, g in zip(ours, grads[step]):
            p.grad = g.clone()
        opt.step()
    _naive_normalized_sgd(naive, grads)
    for p, q in zip(ours, naive):
        torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-7)
    last = math.sqrt(sum(float(g.double().square().sum()) for g in grads[-1]))
    assert all(group["last_norm"] == pytest.approx(last, rel=1e-6) for group in opt.param_groups)
    assert opt.state_dict()["param_groups"][0]["last_norm"] == opt.param_groups[0]["last_norm"]


def test_optimizer_level_values_round_trip_exactly():
    params = clone_params(make_params())
    opt = optimkit.Prodigy(_two_groups(params))
    run(opt, params, 7)
    saved = copy_module.deepcopy(opt.state_dict())  # (torch's load may keep the same tensors)
    copy = clone_params([p.detach() for p in params])
    resumed = optimkit.Prodigy(_two_groups(copy))
    resumed.load_state_dict(saved)
    for name in ("d", "d_max", "d_numerator", "d_denom", "d_hat", "k"):
        assert resumed.param_groups[1][name] == opt.param_groups[1][name], name
    run(opt, params, 5, start=7)
    run(resumed, copy, 5, start=7)
    for p, q in zip(params, copy):
        assert torch.equal(p, q)
    assert resumed.param_groups[0]["d"] == opt.param_groups[0]["d"]


def test_prodigy_ends_a_step_whose_gradients_are_all_zero_as_the_reference():
    prodigyopt = pytest.importorskip("prodigyopt")
    start = make_params()
    ours, theirs = clone_params(start), clone_params(start)
    opt, ref = optimkit.Prodigy(ours), prodigyopt.Prodigy(theirs)
    for params, o in ((ours, opt), (theirs, ref)):
        for p in params:  # s stays 0: sum(|s|) = 0 ends the step before the params move
            p.grad = torch.zeros_like(p)
        o.step()
        assert all(torch.equal(p, q) for p, q in zip(params, start))
        run(o, params, 3)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    assert opt.param_groups[0]["k"] == ref.param_groups[0]["k"] == 3


def test_recipe_checks_of_barriers():
    with pytest.raises(TypeError, match="no part before it"):
        type("Bad", (Optimizer,), {"parts": (_global_norm, _normalized_step)})
    with pytest.raises(TypeError, match="no part after it"):
        type("Bad", (Optimizer,), {"parts": (_sqr_sum, _global_norm)})
    with pytest.raises(TypeError, match="no barrier right after them takes"):
        type("Bad", (Optimizer,), {"parts": (_sqr_sum, step_stat)})
    with pytest.raises(TypeError, match="which no barrier of the recipe keeps"):
        type("Bad", (Optimizer,), {"parts": (step_stat, _normalized_step)})


# ------------------------------------------------------------------ max_grad_norm
CLIPPED = ("adam", "sgd-momentum", "lamb", "prodigy")


@pytest.mark.parametrize("mode", ["eager", "flat"])
@pytest.mark.parametrize("name", CLIPPED)
def test_max_grad_norm_equals_clip_grad_norm_then_the_unclipped_step(name, mode):
    factory = optimkit.registry.get(name).factory
    start = make_params()
    ours, theirs = clone_params(start), clone_params(start)
    speed = {"flat": True} if mode == "flat" else {}
    opt = factory(_two_groups(ours), max_grad_norm=0.5, **speed)
    ref = factory(_two_groups(theirs))
    for step in range(12):
        grads = fake_grads(ours, step)
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        before = [p.grad.clone() for p in ours]
        opt.step()
        assert all(torch.equal(p.grad, g) for p, g in zip(ours, before)), "p.grad was written"
        torch.nn.utils.clip_grad_norm_(theirs, 0.5)
        ref.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_max_grad_norm_that_does_not_bind_changes_nothing():
    start = make_params()
    ours, theirs = clone_params(start), clone_params(start)
    run(optimkit.Adam(ours, lr=1e-2, max_grad_norm=1e6), ours, 5)
    run(optimkit.Adam(theirs, lr=1e-2), theirs, 5)
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, "1.0", True])
def test_bad_max_grad_norm_is_refused_naming_it(value):
    with pytest.raises(ValueError, match="max_grad_norm"):
        optimkit.Adam(clone_params(make_params()), max_grad_norm=value)


def test_max_grad_norm_is_one_value_for_all_groups_and_saved():
    params = clone_params(make_params())
    opt = optimkit.Adam(params[:2], max_grad_norm=1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        opt.add_param_group({"params": params[2:], "max_grad_norm": -2.0})
    opt.add_param_group({"params": params[2:], "max_grad_norm": 2.0})
    with pytest.raises(ValueError, match="max_grad_norm: every param group"):
        run(opt, params, 1)
    opt.param_groups[1]["max_grad_norm"] = 1.0
    run(opt, params, 1)
    assert opt.state_dict()["param_groups"][0]["max_grad_norm"] == 1.0
    assert optimkit.Adam(params).param_groups[0]["max_grad_norm"] is None


@pytest.mark.slow
@pytest.mark.skipif(not compiled.has_cxx_compiler(), reason="inductor needs a C++ compiler")
def test_barrier_recipes_and_clipping_compiled_match_eager():
    start = make_params()
    for name, kwargs in (("prodigy", {"max_grad_norm": 0.5}), ("dadapt-adam", {})):
        factory = optimkit.registry.get(name).factory
        eager, fast = clone_params(start), clone_params(start)
        run(factory(eager, **kwargs), eager, 8)
        run(factory(fast, compile=True, **kwargs), fast, 8)
        # (compiled, the sums add up in another order; d amplifies the last bits)
        for p, q in zip(eager, fast):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9)
