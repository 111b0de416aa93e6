"""Transitions: ``optimizer.train()`` / ``eval()`` of the recipes that define them
(Schedule-Free), in every mode, and the helpers around them (``optimkit.evaluating``,
``recompute_bn_stats``, ``lr_find``).

The parity through the switches runs every optimizer of the test database with transitions
against its reference (the reference's own ``train()`` / ``eval()``): steps, eval, a checkpoint
taken in eval mode and loaded into a fresh optimizer, train, more steps (>= 100 in all), eval.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from conftest import SLOW, optims
from helpers import as_tensor, build_fast, clone_params, make_params, run

import optimkit
from optimkit.core import compiled

needs_compiler = pytest.mark.skipif(
    not compiled.has_cxx_compiler(), reason="inductor needs a C++ compiler on the CPU"
)


def _has_transitions(info) -> bool:
    recipe = getattr(info.factory, "recipe", None)
    return recipe is not None and bool(recipe.transitions)


def _skip_some(step, i):
    return i == 1 and step % 7 == 3


def _compare(info, ours, ours_params, ref, ref_params, rtol, what):
    atol = rtol * 1e-2
    for i, (p, q) in enumerate(zip(ours_params, ref_params, strict=True)):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=rtol, atol=atol,
                                   msg=lambda m, i=i: f"{what}: param {i}: {m}")
        mine, theirs = ours.state[p], ref.state[q]
        for our_name, ref_name in info.reference.state.items():
            if our_name not in mine:
                continue
            value = as_tensor(mine[our_name], p)
            torch.testing.assert_close(
                value, as_tensor(theirs[ref_name], value), rtol=rtol, atol=atol,
                msg=lambda m, i=i, name=our_name: f"{what}: param {i} state {name}: {m}")


def _roundtrip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("mode", ["eager", "flat"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@optims(lambda info: [(str(i), (dict(s),), [SLOW] if i else [])
                      for i, s in enumerate(info.settings)],
        argnames="info,setting", where=_has_transitions)
def test_matches_reference_through_eval_train_and_an_eval_mode_checkpoint(
        info, setting, dtype, mode):
    kwargs = {**info.pinned, **setting}
    start = make_params(dtype)
    ours_params, ref_params = clone_params(start), clone_params(start)
    flat = {"flat": True} if mode == "flat" else {}
    skip = None if flat else _skip_some
    ours = build_fast(info, ours_params, **flat, **kwargs)
    ref = info.reference.build(ref_params, **kwargs)
    rtol = info.rtol[dtype]

    run(ours, ours_params, 40, skip=skip)
    run(ref, ref_params, 40, skip=skip)
    ours.eval()
    ref.eval()
    _compare(info, ours, ours_params, ref, ref_params, rtol, "eval after 40 steps")
    ours.train()
    ref.train()
    run(ours, ours_params, 20, start=40, skip=skip)
    run(ref, ref_params, 20, start=40, skip=skip)
    ours.eval()
    ref.eval()
    # a checkpoint in eval mode: the model's weights (x) and the optimizer's state, into a
    # fresh model and optimizer
    saved = _roundtrip(ours.state_dict())
    assert [g["train_mode"] for g in saved["param_groups"]] == [False]
    weights = [p.detach().clone() for p in ours_params]
    resumed_params = clone_params(weights)
    resumed = build_fast(info, resumed_params, **flat, **kwargs)
    resumed.load_state_dict(saved)
    assert not resumed.training
    with pytest.raises(RuntimeError, match="eval mode"):
        resumed.step()
    resumed.train()
    ref.train()
    run(resumed, resumed_params, 50, start=60, skip=skip)
    run(ref, ref_params, 50, start=60, skip=skip)
    _compare(info, resumed, resumed_params, ref, ref_params, rtol, "train after 110 steps")
    resumed.eval()
    ref.eval()
    _compare(info, resumed, resumed_params, ref, ref_params, rtol, "eval after 110 steps")


@optims(where=_has_transitions)
def test_step_in_eval_mode_raises_and_changes_nothing(info):
    params = clone_params(make_params())
    opt = info.factory(params, **info.converge)
    run(opt, params, 3)
    opt.eval()
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    calls = []
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
        opt.step(lambda: calls.append(1))
    assert not calls  # refused before the closure
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)
    after = opt.state_dict()
    for index, entry in state["state"].items():
        for name, value in entry.items():
            assert torch.equal(after["state"][index][name], value)
    # train() then eval() again is a round trip (to the rounding of two lerps)
    opt.train()
    opt.eval()
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b, rtol=1e-12, atol=1e-14)


@optims(where=_has_transitions)
def test_the_mode_round_trips_in_the_state_dict_and_torch_format_loads_in_train_mode(info):
    # float32 params: torch's load casts 0-d state to the param's dtype, which the float64
    # lr_max and weight_sum must not go through
    params = clone_params(make_params(torch.float32))
    opt = info.factory(params, **info.converge)
    assert opt.training and opt.param_groups[0]["train_mode"] is True
    run(opt, params, 2)
    opt.eval()
    opt.eval()  # a no-op in eval mode: the params move once
    sd = opt.state_dict()
    other = info.factory(clone_params(params), **info.converge)
    other.load_state_dict(_roundtrip(sd))
    assert not other.training
    again = other.state_dict()
    assert again["param_groups"] == sd["param_groups"]
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            assert torch.equal(again["state"][index][name], value), name
            assert again["state"][index][name].dtype == value.dtype, name
    # a checkpoint without the mode (an older optimkit's, or written by hand in torch's
    # format): train mode
    legacy = _roundtrip(sd)
    for group in legacy["param_groups"]:
        del group["train_mode"]
    third = info.factory(clone_params(params), **info.converge)
    third.eval()
    third.load_state_dict(legacy)
    assert third.training


@optims(where=_has_transitions)
def test_a_param_group_added_in_eval_mode_joins_in_eval_mode(info):
    params = clone_params(make_params())
    opt = info.factory(params[:3], **info.converge)
    run(opt, params[:3], 2)
    opt.eval()
    opt.add_param_group({"params": params[3:]})
    assert [g["train_mode"] for g in opt.param_groups] == [False, False]
    opt.train()
    assert opt.training
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()


# The transitions run eagerly in every mode; compiled, what matters is that they see the
# tensors the compiled step writes (flat buffers): one recipe, one compiled flat graph. (A
# compiled per-tensor step, compile=True with flat=False as under FSDP2, drifts from the eager
# one by ~1e-4 for every recipe with per-param scalar state updated in the graph, NAdamW
# included: a pre-existing engine issue, not a transition's, so it is not run here.)
_MODES = [
    ("flat", {"flat": True}, []),
    ("compiled", {"compile": True}, [SLOW, needs_compiler]),
]


def _mode_cases(info):
    for name, options, marks in _MODES:
        if name != "compiled" or info.name == "schedulefree-sgd":
            yield name, (options,), marks


@optims(cases=_mode_cases, argnames="info,options", where=_has_transitions)
def test_transitions_agree_in_every_mode(info, options):
    start = make_params()
    eager_params, fast_params = clone_params(start), clone_params(start)
    eager = info.factory(eager_params, **info.converge)
    fast = build_fast(info, fast_params, **options, **info.converge)
    # (skipped grads only uncompiled: compiled, they would compile per-tensor steps too)
    skip = None if options.get("compile") else _skip_some
    for opt, params in ((eager, eager_params), (fast, fast_params)):
        run(opt, params, 6, skip=skip)
        opt.eval()
    # (a compiled step of fp64 Adam itself differs from the eager one by ~1e-9)
    rtol, atol = (1e-6, 1e-8) if options.get("compile") else (1e-9, 1e-12)
    for p, q in zip(eager_params, fast_params, strict=True):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=rtol, atol=atol)
    for opt, params in ((eager, eager_params), (fast, fast_params)):
        opt.train()
        run(opt, params, 3, start=6)
    for p, q in zip(eager_params, fast_params, strict=True):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("policy", ["kahan", "stochastic", "fp32-state"])
@pytest.mark.parametrize("flat", [False, True], ids=["eager", "flat"])
def test_transitions_under_precision_policies_follow_fp32(policy, flat):
    """bf16 params: eval() gives the fp32 run's averaged point to bf16 precision, and with
    Kahan compensation train() after eval() gives back the gradient point to fp32 precision."""
    keywords = {"kahan": {"param_update": "kahan"}, "stochastic": {"param_update": "stochastic"},
                "fp32-state": {"state_dtype": torch.float32}}[policy]
    start = [p.float() for p in make_params(torch.float64)[:4]]
    exact_params = clone_params(start)
    low_params = [p.to(torch.bfloat16).float().to(torch.bfloat16).requires_grad_()
                  for p in start]
    exact = optimkit.ScheduleFreeAdamW(exact_params, lr=1e-2)
    low = optimkit.ScheduleFreeAdamW(low_params, lr=1e-2, flat=flat,
                                     generator=torch.Generator().manual_seed(0), **keywords)
    for opt, params in ((exact, exact_params), (low, low_params)):
        run(opt, params, 20)
    state = low.state[low_params[0]]
    if policy == "kahan":
        before = [p.float() + low.state[p]["compensation"].float() for p in low_params]
    low.eval()
    exact.eval()
    for p, q in zip(low_params, exact_params, strict=True):
        assert p.dtype == torch.bfloat16
        torch.testing.assert_close(p.float(), q.detach(), rtol=0.05, atol=0.02)
    low.train()
    if policy == "kahan":
        after = [p.float() + low.state[p]["compensation"].float() for p in low_params]
        for a, b in zip(after, before, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert "compensation" in state
    for p in low_params:
        assert torch.isfinite(p).all()


def test_recipes_without_transitions_have_no_mode():
    params = clone_params(make_params())
    opt = optimkit.Adam(params)
    run(opt, params, 2)
    before = [p.detach().clone() for p in params]
    opt.eval()
    assert opt.training
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)
    opt.step()  # no mode, so no refusal
    opt.train()
    assert "train_mode" not in opt.state_dict()["param_groups"][0]
    assert optimkit.Adam.recipe.transitions == {}


def test_a_recipe_with_bad_transitions_is_refused():
    from optimkit import Optimizer
    from optimkit.core.parts import transition
    from optimkit.steppers.schedule_free import schedule_free_sgd_eval, schedule_free_sgd_train

    with pytest.raises(TypeError, match="must name 'train' and 'eval'"):
        type("OnlyEval", (Optimizer,), {"parts": optimkit.SGD.parts,
                                        "transitions": {"eval": schedule_free_sgd_eval}})
    with pytest.raises(TypeError, match="reads state 'z', which no part"):
        type("NoZ", (Optimizer,), {"parts": optimkit.SGD.parts,
                                   "transitions": {"eval": schedule_free_sgd_eval,
                                                   "train": schedule_free_sgd_train}})

    @transition(reads=("momentum_buffer",), gamma=0.5)
    def odd(b, gamma):
        """Reads a hyper-parameter no part declares."""

    with pytest.raises(TypeError, match="hyper-parameter 'gamma'"):
        type("Odd", (Optimizer,), {"parts": optimkit.SGD.parts,
                                   "transitions": {"eval": odd, "train": odd}})
    with pytest.raises(ValueError, match="state only"):
        transition(reads=("update",))


def test_evaluating_switches_every_kind_of_optimizer_and_restores_it():
    import schedulefree

    params = clone_params(make_params())
    opt = optimkit.ScheduleFreeAdamW(params, lr=1e-2)
    run(opt, params, 3)
    y = [p.detach().clone() for p in params]
    with optimkit.evaluating(opt):
        assert not opt.training
        x = [p.detach().clone() for p in params]
    assert opt.training
    assert any(not torch.equal(a, b) for a, b in zip(x, y, strict=True))
    opt.eval()
    with optimkit.evaluating(opt):  # already in eval mode: stays so
        pass
    assert not opt.training
    # through a wrapper; a torch optimizer without modes; schedulefree's own
    inner = optimkit.ScheduleFreeSGD(clone_params(params))
    with optimkit.evaluating(optimkit.Lookahead(inner)):
        assert not inner.training
    assert inner.training
    with optimkit.evaluating(torch.optim.SGD(clone_params(params), lr=0.1)):
        pass
    with optimkit.evaluating(None):
        pass
    theirs = schedulefree.AdamWScheduleFree(clone_params(params))
    theirs.train()
    with optimkit.evaluating(theirs):
        assert not theirs.param_groups[0]["train_mode"]
    assert theirs.param_groups[0]["train_mode"]


def _bn_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3),
                               torch.nn.Dropout(0.5), torch.nn.Linear(3, 1))


def test_recompute_bn_stats_averages_the_batches_at_the_evaluation_point():
    from optimkit.training import recompute_bn_stats

    model = _bn_model()
    opt = optimkit.ScheduleFreeAdamW(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=gen), torch.randn(8, 1, generator=gen))
            for _ in range(6)]
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    bn = model[1]
    model.train()
    with optimkit.evaluating(opt):
        used = recompute_bn_stats(model, data, num_batches=4)
        with torch.no_grad():
            outs = [model[0](x) for x, _ in data[:4]]
    assert used == 4
    torch.testing.assert_close(bn.running_mean, torch.stack([o.mean(0) for o in outs]).mean(0))
    torch.testing.assert_close(bn.running_var,
                               torch.stack([o.var(0, unbiased=True) for o in outs]).mean(0))
    assert int(bn.num_batches_tracked) == 4
    assert model.training and bn.training and bn.momentum == 0.1  # put back
    assert all(p.grad is None or p.grad.abs().sum() >= 0 for p in model.parameters())
    # a model without BatchNorm is left alone; an empty iterable changes nothing
    assert recompute_bn_stats(torch.nn.Linear(4, 1), data) == 0
    mean = bn.running_mean.clone()
    with pytest.raises(ValueError, match="no batch"):
        recompute_bn_stats(model, [])
    assert torch.equal(bn.running_mean, mean)
    with pytest.raises(ValueError, match="num_batches"):
        recompute_bn_stats(model, data, num_batches=0)


def test_lr_find_trains_a_schedule_free_optimizer_left_in_eval_mode_and_restores_it():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = optimkit.ScheduleFreeAdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 4, generator=gen), torch.randn(8, 1, generator=gen))
            for _ in range(30)]
    for x, y in data[:3]:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    opt.eval()
    before = [p.detach().clone() for p in model.parameters()]
    result = optimkit.lr_find(opt, model=model, loss_fn=torch.nn.functional.mse_loss,
                              batches=data, num_steps=20)
    assert len(result.lrs) > 5
    assert not opt.training
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)


def test_the_bench_runner_evaluates_at_the_averaged_point(monkeypatch):
    from optimkit.bench import runner

    seen = []
    real = runner.evaluating

    def spy(optimizer):
        seen.append(type(optimizer).__name__)
        return real(optimizer)

    monkeypatch.setattr(runner, "evaluating", spy)
    modes = []
    original = optimkit.ScheduleFreeSGD.eval

    def eval_spy(self):
        modes.append("eval")
        original(self)

    monkeypatch.setattr(optimkit.ScheduleFreeSGD, "eval", eval_spy)
    spec = runner.CellSpec.make("rosenbrock", "schedulefree-sgd", {"lr": 1e-3}, 0, "final")
    out = runner.run_cell(spec)
    assert out["error"] is None, out["error"]
    assert seen and set(seen) == {"ScheduleFreeSGD"}
    assert modes


@pytest.mark.parametrize("kwargs", [{}, {"lr": 1e-2, "weight_decay": 0.1, "warmup_steps": 10}],
                         ids=["defaults", "decay-warm-up"])
def test_schedule_free_adamw_matches_the_fast_schedulefree_implementation(kwargs):
    """The same fast form as ``schedulefree.AdamWScheduleFree`` (only z kept, x recovered at
    eval): with every param stepping every time (its counters are per param group), the
    params in both modes and the state agree over 100 steps."""
    import schedulefree

    start = make_params()
    ours_params, their_params = clone_params(start), clone_params(start)
    ours = optimkit.ScheduleFreeAdamW(ours_params, **kwargs)
    theirs = schedulefree.AdamWScheduleFree(their_params, **kwargs)
    theirs.train()
    run(ours, ours_params, 100)
    run(theirs, their_params, 100)  # (it divides p.grad in place: run() gives fresh grads)
    for p, q in zip(ours_params, their_params, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-7, atol=1e-9)
        for name, their_name in (("z", "z"), ("sqr_avg", "exp_avg_sq")):
            torch.testing.assert_close(ours.state[p][name], theirs.state[q][their_name],
                                       rtol=1e-7, atol=1e-9)
    ours.eval()
    theirs.eval()
    for p, q in zip(ours_params, their_params, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-7, atol=1e-9)
