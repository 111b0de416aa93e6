"""Speed modes never change what is optimized, under any precision policy.

Eager, ``flat=True``, ``compile=True`` (flat) and ``compile=True, flat=False`` run the same
recipe over the same params: the modes may round differently (inductor contracts
multiply-adds), never step differently. These tests hold every mode x policy to the exact
behaviour where an earlier bug hid inside the suite's tolerances (issue 21):

* Lookahead (Ranger, RangerLars, LookaheadSGD): the slow weights sync right after steps k, 2k,
  never one step late (compiled steps under a policy synced at k+1, 2k+1);
* tied params (sharing storage, ``b.data = a.data``): they stay tied and step as in eager mode,
  which steps them one after the other as torch.optim does (flat and compiled untied them).

Eager and flat mode run every recipe x policy. A compiled case costs seconds of compile on
two cores, so by default the compiled modes run a covering set (every policy and recipe at
least once, both compiled layouts); ``OPTIMKIT_TEST_ALL_MODES=1`` runs the whole matrix (74
compiled cases: 39 minutes on 2 cores shared with other jobs).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import ALL_MODES

import optimkit
from optimkit.core.compiled import can_compile

MODES = {
    "eager": {},
    "flat": {"flat": True},
    "compiled": {"compile": True},
    "compiled-per-tensor": {"compile": True, "flat": False},
}
COMPILED = {name for name, kwargs in MODES.items() if kwargs.get("compile")}

# name -> (param dtype, keywords), as tests/test_policies.py, plus no policy at all
POLICIES = {
    "plain": (torch.float32, {}),
    "8bit": (torch.float32, {"state_bits": 8}),
    "bf16-state": (torch.float32, {"state_dtype": torch.bfloat16}),
    "fp32-state": (torch.bfloat16, {"state_dtype": torch.float32}),
    "stochastic": (torch.bfloat16, {"param_update": "stochastic"}),
    "kahan": (torch.bfloat16, {"param_update": "kahan"}),
}
# policies that round params to nearest: a synced param is its slow weights bit for bit
NEAREST = {"plain", "8bit", "bf16-state", "fp32-state"}


def _matrix(recipes, compiled, modes=tuple(MODES)):
    """``(recipe, policy, mode)`` cases: every recipe x policy x mode, the compiled modes only
    for the ``compiled`` ``(recipe, policy, mode)`` unless ``OPTIMKIT_TEST_ALL_MODES=1``."""
    return [
        pytest.param(name, policy, mode, id=f"{name}-{policy}-{mode}")
        for name in recipes for policy in POLICIES for mode in modes
        if mode not in COMPILED or ALL_MODES or (name, policy, mode) in compiled
    ]


def _mode(mode):
    if mode in COMPILED and not can_compile(torch.device("cpu")):
        pytest.skip("inductor needs a C++ compiler")
    return MODES[mode]


@pytest.fixture(scope="module", autouse=True)
def _fresh_dynamo():
    # this module's compiled steps leave no graphs behind (the 8-bit conversions that earlier
    # modules compiled stay: compiling them again costs more than all the eager cases)
    yield
    torch._dynamo.reset()


# ------------------------------------------------------------------ Lookahead's timing


# the compiled cases run by default: each policy (the bug needed one), recipe and layout
LOOKAHEAD_COMPILED = {
    ("LookaheadSGD", "8bit", "compiled"), ("Ranger", "bf16-state", "compiled-per-tensor"),
    ("RangerLars", "fp32-state", "compiled"), ("LookaheadSGD", "stochastic",
                                                "compiled-per-tensor"),
    ("Ranger", "kahan", "compiled"),
}


@pytest.mark.parametrize(("name", "policy", "mode"),
                         _matrix(["Ranger", "RangerLars", "LookaheadSGD"], LOOKAHEAD_COMPILED))
def test_lookahead_syncs_right_after_steps_k_and_2k(name, policy, mode):
    """The slow weights move only at steps k and 2k, and the params then are the slow weights
    (bit for bit where params round to nearest); right after steps k-1 and k+1 they are not.
    A 64x64 weight (4096 elements: the policies quantize from there) and a bias."""
    dtype, kwargs = POLICIES[policy]
    k = 2
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(64, 64, generator=gen).to(dtype).requires_grad_(),
              torch.randn(8, generator=gen).to(dtype).requires_grad_()]
    opt = getattr(optimkit, name)(params, lr=0.05, k=k, **kwargs, **_mode(mode))
    before = None
    for step in range(1, 2 * k + 2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        opt.step()
        slow = [opt.state[p]["slow_param"].clone() for p in params]
        due = step % k == 0
        if before is not None:
            moved = [not torch.equal(s, t) for s, t in zip(before, slow, strict=True)]
            assert moved == [due] * len(params), f"step {step}: slow weights moved {moved}"
        for p, s in zip(params, slow, strict=True):
            same = torch.equal(p, s.to(p.dtype))
            if not due:
                assert not same, f"step {step}: the params are the slow weights"
            elif policy in NEAREST:
                assert same, f"step {step}: the params are not the slow weights"
        before = slow


# ------------------------------------------------------------------ tied params

# recipe -> hypers: Adam with its (coupled, L2) weight decay, which reads the param, so the
# order of the two tied steps matters; momentum SGD; a layer-wise recipe (trust ratios)
TIED = {
    "Adam": dict(lr=0.05, weight_decay=0.1),
    "SGD": dict(lr=0.05, momentum=0.9, weight_decay=0.1),
    "LAMB": dict(lr=0.05, weight_decay=0.1),
}


def _tied_params(dtype, listed_twice=False):
    """``a`` (64x64: 8-bit state applies), ``d`` on its own, ``b`` tied to ``a``
    (``b.data = a.data``, the old weight-tying idiom) and ``c`` a view of ``a``'s first row;
    or, ``listed_twice``, ``[a, d, a]``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(64, 64, generator=gen).to(dtype))
    d = torch.nn.Parameter(torch.randn(64, generator=gen).to(dtype))  # c's graph, compiled
    if listed_twice:
        return [a, d, a]
    b = torch.nn.Parameter(torch.zeros(64, 64, dtype=dtype))
    c = torch.nn.Parameter(torch.zeros(64, dtype=dtype))
    b.data = a.data
    c.data = a.data[0]
    return [a, d, b, c]


def _step_tied(opt, params, steps=4):
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=gen).to(p.dtype) for p in params]
             for _ in range(steps)]
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g  # one object listed twice keeps the last: torch sees the same
        opt.step()


def _assert_tied(params, listed_twice):
    a = params[0]
    for p in params[2:]:
        assert p.untyped_storage().data_ptr() == a.untyped_storage().data_ptr(), "untied"
    if not listed_twice:
        _, _, b, c = params
        assert torch.equal(b, a) and torch.equal(c, a[0])


def _tied_run(name, policy, mode, listed_twice=False):
    dtype, kwargs = POLICIES[policy]
    params = _tied_params(dtype, listed_twice)
    torch.manual_seed(0)  # the policy's rounding seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's warning on a duplicate param
        opt = getattr(optimkit, name)(params, **TIED[name], **kwargs, **_mode(mode))
    _step_tied(opt, params)
    _assert_tied(params, listed_twice)
    return params


# (each fails without the fix; under a policy that widens bf16 params, compiled per tensor
# wrote back the last tied param's copy as the eager step of that time did: flat only)
TIED_COMPILED = {
    ("Adam", "plain", "compiled"), ("Adam", "plain", "compiled-per-tensor"),
    ("SGD", "8bit", "compiled"), ("SGD", "bf16-state", "compiled-per-tensor"),
    ("Adam", "fp32-state", "compiled"), ("LAMB", "stochastic", "compiled"),
}


@pytest.mark.parametrize(("name", "policy", "mode"),
                         _matrix(TIED, TIED_COMPILED, [m for m in MODES if m != "eager"]))
def test_tied_params_stay_tied_and_step_as_in_eager_mode(name, policy, mode):
    eager = _tied_run(name, policy, "eager")
    fast = _tied_run(name, policy, mode)
    for i, (p, q) in enumerate(zip(eager, fast, strict=True)):
        if mode not in COMPILED:
            assert torch.equal(q, p), f"param {i}"  # the same ops in the same order
        elif p.dtype == torch.float32:
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=f"param {i}")
        else:  # inductor's contracted multiply-adds may round a bf16 value the other way
            torch.testing.assert_close(q.float(), p.float(), rtol=2**-7, atol=1e-3,
                                       msg=f"param {i}")


@pytest.mark.parametrize("mode", MODES)
def test_one_param_listed_twice_steps_twice_in_every_mode(mode):
    """torch.optim warns about a param listed twice in a group and steps it twice (refusing
    it only across groups): so does every mode, as eager mode does."""
    eager = _tied_run("Adam", "plain", "eager", listed_twice=True)
    fast = _tied_run("Adam", "plain", mode, listed_twice=True)
    for p, q in zip(eager, fast, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5 if mode in COMPILED else 0,
                                   atol=1e-6 if mode in COMPILED else 0)
    start = _tied_params(torch.float32, listed_twice=True)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        torch.optim.Adam(start, **TIED["Adam"], foreach=False)


@pytest.mark.parametrize(("name", "listed_twice"), [("Adam", False), ("SGD", False),
                                                    ("Adam", True)])
def test_eager_steps_tied_params_as_torch_optim(name, listed_twice):
    """torch.optim steps params one after the other (its ``foreach=False`` loop): each tied
    param's step reads the param as the one before left it (weight decay reads it). (A param
    listed twice: not with SGD, whose first step gives each listing a momentum buffer of its
    own, the second replacing the first.)"""
    ours = _tied_run(name, "plain", "eager", listed_twice)
    params = _tied_params(torch.float32, listed_twice)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = getattr(torch.optim, name)(params, **TIED[name], foreach=False)
    _step_tied(reference, params)
    for p, q in zip(params, ours, strict=True):
        torch.testing.assert_close(q, p)


@pytest.mark.parametrize("policy", ["plain", "8bit", "fp32-state"])
@pytest.mark.parametrize("name", TIED)
def test_each_tied_param_applies_its_own_update(name, policy):
    """Under every policy each tied param's update lands, in order, as if each param were a
    param group of its own (groups step one after the other). Under a policy that widens
    bf16 params, a step over both at once would write back two widened copies, the last
    one winning. (The policies without random bits: a group of its own draws other ones.)"""
    ours = _tied_run(name, policy, "eager")
    dtype, kwargs = POLICIES[policy]
    params = _tied_params(dtype)
    torch.manual_seed(0)
    opt = getattr(optimkit, name)([{"params": [p]} for p in params], **TIED[name], **kwargs)
    _step_tied(opt, params)
    for p, q in zip(params, ours, strict=True):
        assert torch.equal(q, p)
