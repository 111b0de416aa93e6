"""Loading a checkpoint that does not fit is refused at load, and a refused load changes nothing.

``load_state_dict`` checks the whole state_dict against the recipe before anything is copied:
the state of another optimizer (a name the recipe does not keep, or part of what it keeps for
every param that has stepped), a group without ``lr``, a state shaped for other params, 8-bit
codes without their scales. Each refusal is a ``ValueError`` naming what is wrong, and the
optimizer afterwards holds exactly what it held before (params, every state tensor bit for bit,
param groups) and steps as if the load had never been tried. Legitimate loads (torch's format,
params that never stepped, state that only some groups use) keep working. ``state_dict()``
works on ``meta`` params, as torch.optim's does.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from helpers import clone_params, make_params, run

import optimkit
from optimkit.core.optimizer import TORCH_FORMATS
from optimkit.precision.policy import ABSMAX_SUFFIX, PrecisionPolicy

# ------------------------------------------------------------------ helpers


def _snapshot(opt, params):
    """Everything a load could change: the params, every state tensor, the param groups."""
    state = {}
    for i, p in enumerate(params):
        state[i] = {k: v.clone() if isinstance(v, torch.Tensor) else v
                    for k, v in opt.state.get(p, {}).items()}
    position = {id(p): i for i, p in enumerate(params)}
    groups = [{k: ([position[id(p)] for p in v] if k == "params" else copy.deepcopy(v))
               for k, v in group.items()} for group in opt.param_groups]
    return [p.detach().clone() for p in params], state, groups


def _identical(a, b):
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
            and a.shape == b.shape and torch.equal(a, b)) or (
        not isinstance(a, torch.Tensor) and a == b)


def _assert_unchanged(opt, params, before):
    after = _snapshot(opt, params)
    for p, q in zip(before[0], after[0], strict=True):
        assert _identical(p, q), "a param changed"
    assert before[1].keys() == after[1].keys()
    for i in before[1]:
        assert before[1][i].keys() == after[1][i].keys(), f"param {i}'s state names changed"
        for name in before[1][i]:
            assert _identical(before[1][i][name], after[1][i][name]), f"param {i} {name!r}"
    assert before[2] == after[2], "the param groups changed"
    assert set(opt.state) <= set(params), "the state holds entries of no param"


def _refused(opt, params, state_dict, match):
    """Load ``state_dict`` into ``opt``: it must raise ``ValueError`` matching ``match``,
    leave everything as it was, and the optimizer must go on stepping exactly like a copy
    that never saw the load."""
    twin_opt, twin_params = copy.deepcopy((opt, params))
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state_dict)
    _assert_unchanged(opt, params, before)
    run(opt, params, 3, start=50)
    run(twin_opt, twin_params, 3, start=50)
    for p, q in zip(params, twin_params, strict=True):
        assert torch.equal(p, q), "after a refused load the optimizer steps differently"


def _trained(factory, n=3, seed=1, params=None):
    params = params if params is not None else clone_params(make_params(torch.float64))
    return run(factory(params), params, n, seed=seed), params


# ------------------------------------------------ S3: another optimizer's state, damaged state


def _torch_adam_without(name):
    def make():
        sd = _trained(lambda ps: torch.optim.Adam(ps, lr=0.1))[0].state_dict()
        del sd["state"][0][name]
        return sd
    return make


def _without_lr():
    sd = _trained(lambda ps: optimkit.Adam(ps, lr=0.1), seed=2)[0].state_dict()
    del sd["param_groups"][0]["lr"]
    return sd


# case -> (the state_dict loaded into optimkit.Adam, what the error names)
FOREIGN = {
    "torch-sgd-momentum": (
        lambda: _trained(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9))[0].state_dict(),
        "Adam keeps no state 'momentum_buffer'"),
    "optimkit-sgd-momentum": (
        lambda: _trained(lambda ps: optimkit.SGD(ps, lr=0.1, momentum=0.9))[0].state_dict(),
        "Adam keeps no state 'momentum_buffer'"),
    "lion": (
        lambda: _trained(lambda ps: optimkit.Lion(ps, lr=0.1))[0].state_dict(),
        "has 'grad_avg' but lacks 'sqr_avg', 'step'"),
    "ranger": (
        lambda: _trained(lambda ps: optimkit.Ranger(ps, lr=0.1))[0].state_dict(),
        "Adam keeps no state 'slow_param'"),
    "torch-adagrad": (
        lambda: _trained(lambda ps: torch.optim.Adagrad(ps, lr=0.1))[0].state_dict(),
        r"Adam keeps no state 'sum' \(read as 'sqr_sum'\)"),
    "exp_avg_sq-missing": (_torch_adam_without("exp_avg_sq"), "lacks 'sqr_avg'"),
    "step-missing": (_torch_adam_without("step"), "lacks 'step'"),
    "group-without-lr": (_without_lr, "param group 0 of the state_dict has no 'lr'"),
}


@pytest.mark.parametrize("flat", [False, True], ids=["eager", "flat"])
@pytest.mark.parametrize("case", list(FOREIGN))
def test_adam_refuses_foreign_or_damaged_state_and_nothing_changes(case, flat):
    make, match = FOREIGN[case]
    opt, params = _trained(lambda ps: optimkit.Adam(ps, lr=1e-3, flat=flat))
    _refused(opt, params, make(), match)


def test_lion_refuses_a_torch_adamw_checkpoint():
    sd = _trained(lambda ps: torch.optim.AdamW(ps, lr=0.1))[0].state_dict()
    opt, params = _trained(lambda ps: optimkit.Lion(ps, lr=1e-3))
    _refused(opt, params, sd, r"Lion keeps no state 'step', 'exp_avg_sq' \(read as 'sqr_avg'\)")


def test_legitimate_loads_keep_working():
    """What the checks must let through: a param that never stepped (no state at all), state
    only one group uses (amsgrad), a switched-on state the param has not stepped with yet
    (amsgrad turned on mid-run: the next step creates it, in the saving run as in the
    resumed one), and torch's names."""
    start = make_params(torch.float64)

    def build(params):
        return optimkit.Adam([{"params": params[:2]}, {"params": params[2:], "amsgrad": True}],
                             lr=1e-2)

    def skip(step, i):
        return i == 4  # the last param never gets a grad: no state entry

    straight = clone_params(start)
    opt = run(build(straight), straight, 4, skip=skip)
    opt.param_groups[0]["amsgrad"] = True
    run(opt, straight, 4, start=4, skip=skip)

    resumed = clone_params(start)
    first = run(build(resumed), resumed, 4, skip=skip)
    first.param_groups[0]["amsgrad"] = True
    sd = first.state_dict()
    assert 4 not in sd["state"] and "max_sqr_avg" not in sd["state"][0]
    assert "max_sqr_avg" in sd["state"][2]
    second = build(clone_params(start))
    second_params = [p for g in second.param_groups for p in g["params"]]
    with torch.no_grad():
        for p, q in zip(second_params, resumed, strict=True):
            p.copy_(q)
    second.load_state_dict(sd)
    run(second, second_params, 4, start=4, skip=skip)
    for p, q in zip(second_params, straight, strict=True):
        assert torch.equal(p, q)

    theirs = _trained(lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True))[0]
    optimkit.AMSGrad(clone_params(start)).load_state_dict(theirs.state_dict())


# ------------------------------------------------------- U2: a checkpoint of other shapes


def test_a_checkpoint_of_other_shapes_is_refused_naming_the_param_and_both_shapes():
    small = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    large = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5))
    saved = _trained(lambda ps: optimkit.Adam(small.named_parameters(), lr=0.1),
                     params=list(small.parameters()))[0].state_dict()
    params = list(large.parameters())
    opt, _ = _trained(lambda ps: optimkit.Adam(large.named_parameters(), lr=1e-3),
                      params=params)
    _refused(opt, params, saved,
             r"param 2 \(group 0, position 2, '1.weight'\): state 'grad_avg' has shape "
             r"\(2, 4\).*the param has shape \(5, 4\)")


def test_eight_bit_codes_of_other_shapes_are_refused():
    # same number of elements, other shape: codes and scales alone would load
    saved = _trained(lambda ps: optimkit.Adam(ps, lr=0.1, state_bits=8),
                     params=[torch.zeros(64, 96, requires_grad=True)])[0].state_dict()
    assert saved["state"][0]["grad_avg"].dtype == torch.uint8
    params = [torch.zeros(96, 64, requires_grad=True)]
    opt, _ = _trained(lambda ps: optimkit.Adam(ps, lr=1e-3, state_bits=8), params=params)
    _refused(opt, params, saved, r"'grad_avg' has shape \(64, 96\).*\(96, 64\)")


def test_a_per_tensor_scalar_must_be_0_d():
    # NovoGrad's layer-wise second moment is one number per param
    opt, params = _trained(lambda ps: optimkit.NovoGrad(ps, lr=1e-3))
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["layer_sqr_avg"] = sd["state"][0]["layer_sqr_avg"].reshape(1)
    _refused(opt, params, sd, r"'layer_sqr_avg' has shape \(1,\), but it is a 0-d tensor")


def test_lookahead_wrapper_refuses_slow_weights_of_other_shapes_before_the_inner_load():
    params = clone_params(make_params(torch.float64))
    opt = run(optimkit.Lookahead(optimkit.SGD(params, lr=0.1, momentum=0.9), k=2), params, 3)
    other = _trained(lambda ps: optimkit.Lookahead(optimkit.SGD(ps, lr=0.1, momentum=0.9), k=2),
                     seed=7)[0].state_dict()
    other["state"][0]["slow_param"] = torch.zeros(2, 2, dtype=torch.float64)
    _refused(opt, params, other, r"slow weights of param 0 have shape \(2, 2\)")


# ------------------------------------------------ C2: 8-bit codes that lost their scales


def _eight_bit(seed):
    params = [torch.zeros(64, 96, requires_grad=True), torch.zeros(96, requires_grad=True)]
    with torch.no_grad():
        params[0].normal_(generator=torch.Generator().manual_seed(seed))
    return _trained(lambda ps: optimkit.Adam(ps, lr=1e-3, state_bits=8), params=params, seed=seed)


@pytest.mark.parametrize("into", ["8bit", "plain"])
def test_eight_bit_codes_without_their_scales_are_refused_and_nothing_changes(into):
    saved = _eight_bit(seed=3)[0].state_dict()
    del saved["state"][0]["sqr_avg" + ABSMAX_SUFFIX]
    opt, params = _eight_bit(seed=4)
    if into == "plain":
        fresh = optimkit.Adam(params, lr=1e-3)
        fresh.load_state_dict(opt.state_dict())
        opt = fresh
    _refused(opt, params, saved, "'sqr_avg' holds 8-bit codes without their")


def test_too_few_block_scales_are_refused():
    saved = _eight_bit(seed=3)[0].state_dict()
    saved["state"][0]["grad_avg" + ABSMAX_SUFFIX] = saved["state"][0]["grad_avg_absmax"][:-1]
    opt, params = _eight_bit(seed=4)
    _refused(opt, params, saved, r"'grad_avg_absmax' has shape \(23,\).*at least 24")


@pytest.mark.parametrize("flat", [False, True], ids=["eager", "flat"])
def test_a_conversion_that_fails_after_the_copy_changes_nothing(flat, monkeypatch):
    """Should bringing a checkpoint to this optimizer's policy fail after torch's load copied
    it, the optimizer is put back as it was."""
    saved = _eight_bit(seed=3)[0].state_dict()
    params = _eight_bit(seed=4)[1]
    opt = run(optimkit.Adam(params, lr=1e-3, state_dtype=torch.bfloat16, flat=flat), params, 2)

    def broken(self, p, state):
        raise ValueError("conversion failed")

    with monkeypatch.context() as patch:
        patch.setattr(PrecisionPolicy, "conform", broken)
        before = _snapshot(opt, params)
        with pytest.raises(ValueError, match="conversion failed"):
            opt.load_state_dict(saved)
        _assert_unchanged(opt, params, before)
    twin_opt, twin_params = copy.deepcopy((opt, params))
    run(opt, params, 2, start=50)
    run(twin_opt, twin_params, 2, start=50)
    for p, q in zip(params, twin_params, strict=True):
        assert torch.equal(p, q)


# ------------------------------------------------------------------ C4: meta params


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_state_dict_of_meta_params_works_as_in_torch(name):
    model = torch.nn.Linear(3, 2, device="meta")
    kwargs = {"lr": 0.1, **({"momentum": 0.9} if name == "SGD" else {})}
    ours = getattr(optimkit, name)(model.parameters(), **kwargs)
    theirs = getattr(torch.optim, name)(model.parameters(), **kwargs)
    for p in model.parameters():
        p.grad = torch.empty_like(p)
    ours.step()
    theirs.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning of NaN in tensors without values
        sd = ours.state_dict()
    names = TORCH_FORMATS[name]
    expected = theirs.state_dict()["state"]
    assert sd["state"].keys() == expected.keys()
    for index, entry in expected.items():
        got = {names.get(k, k): v for k, v in sd["state"][index].items()}
        assert got.keys() == entry.keys()
        for key, value in entry.items():
            assert got[key].shape == value.shape and got[key].device == value.device
    getattr(optimkit, name)(model.parameters(), **kwargs).load_state_dict(sd)
