"""Precision and memory policies, for every registered optimizer (the test database).

Each optimizer takes ``state_dtype``, ``state_bits`` and ``param_update``; these tests run every
one of them under each policy, in eager and flat mode (and a few compiled), and check what the
policies promise: the loss keeps decreasing, state is stored as declared, flat equals eager,
``state_dict`` round trips exactly, nonsense is refused.
"""

from __future__ import annotations

import copy
import io

import optim_db
import pytest
import torch
from conftest import ALL_MODES, SLOW, covering, engine_features, optims

import optimkit
from optimkit.core.compiled import can_compile
from optimkit.core.policy import Layout
from optimkit.precision import quantize as q
from optimkit.precision.policy import ABSMAX_SUFFIX, COMPENSATION, Storage

# name -> (param dtype, keywords)
POLICIES = {
    "8bit": (torch.float32, {"state_bits": 8}),
    "bf16-state": (torch.float32, {"state_dtype": torch.bfloat16}),
    "fp32-state": (torch.bfloat16, {"state_dtype": torch.float32}),
    "stochastic": (torch.bfloat16, {"param_update": "stochastic"}),
    "kahan": (torch.bfloat16, {"param_update": "kahan"}),
}


def _problem(dtype, seed=0):
    """A least-squares fit: a 64x96 weight (6144 elements, so 8-bit state applies), a bias."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 64, generator=gen)
    y = x @ (0.2 * torch.randn(64, 96, generator=gen)) + 0.5
    w = torch.zeros(64, 96).to(dtype).requires_grad_()
    b = torch.zeros(96).to(dtype).requires_grad_()
    return x, y, [w, b]


def _policies(info):
    """The policies that apply to ``info``'s optimizer: 8-bit state only where it keeps a
    state that may be quantized (Schedule-Free SGD keeps none, and refuses state_bits=8)."""
    recipe = getattr(info.factory, "recipe", None)
    quantizable = recipe is None or any(k.quantizable for k in recipe.storage.values())
    return [name for name in POLICIES if name != "8bit" or quantizable]


def _lr(info):
    # the test database's converge lr fits 2-d toy problems; this fit takes a tenth of it
    return 0.1 * info.converge.get("lr", 1e-2)


def _train(info, dtype, steps=20, seed=0, **kwargs):
    x, y, params = _problem(dtype, seed)
    opt = info.factory(params, **{**info.pinned, **info.converge, "lr": _lr(info), **kwargs})
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        w, b = params
        loss = ((x.to(dtype) @ w + b).float() - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, opt, params


def _unquantized(info, name):
    """A skip mark for the 8-bit policy on a recipe with no state it may quantize (Adafactor's
    factors have shapes of their own): ``state_bits`` is refused for it, naming the reason."""
    recipe = info.factory.recipe
    if name != "8bit" or any(kind.quantizable and recipe.layouts.get(state) is not Layout.OWN
                             for state, kind in recipe.storage.items()):
        return []
    return [pytest.mark.skip(reason=f"{info.name} keeps no state that may be quantized")]


def _policy_cases(info):
    return ((name, (name,), _unquantized(info, name)) for name in _policies(info))


def _cases(info):
    for name in _policies(info):
        dtype, kwargs = POLICIES[name]
        for mode in ("eager", "flat"):
            # an eager 8-bit run decodes and encodes block by block: ~10 s per optimizer
            marks = [SLOW] if (name, mode) == ("8bit", "eager") else []
            yield (f"{name}-{mode}", (dtype, {**kwargs, "flat": mode == "flat"}),
                   marks + _unquantized(info, name))


@optims(cases=_cases, argnames="info,dtype,kwargs")
def test_every_optimizer_keeps_decreasing_the_loss_under_each_policy(info, dtype, kwargs):
    losses, opt, (w, _) = _train(info, dtype, **kwargs)
    assert losses[10] < losses[0] and losses[19] < losses[10], losses
    state = opt.state[w]
    storage = type(opt).recipe.storage
    for name, kind in storage.items():
        if name not in state:
            continue
        value = state[name]
        if kwargs.get("state_bits") and kind.quantizable:
            assert value.dtype == torch.uint8 and state[name + ABSMAX_SUFFIX].dtype == torch.float32
        elif kwargs.get("state_dtype") and kind.quantizable:
            assert value.dtype == kwargs["state_dtype"]
        elif kind is not Storage.COUNTER:
            assert value.dtype != torch.uint8
    assert (COMPENSATION in state) == (kwargs.get("param_update") == "kahan")


@optims(cases=_policy_cases, argnames="info,policy")
def test_flat_mode_equals_eager_under_each_policy(info, policy):
    """The same blocks, the same random bits (each tensor's offset in its group's layout):
    flat and eager steps give the same params and state, bit for bit."""
    dtype, kwargs = POLICIES[policy]
    outs = []
    for flat in (False, True):
        torch.manual_seed(0)
        _, opt, params = _train(info, dtype, steps=6, flat=flat, **kwargs)
        outs.append(([p.detach().clone() for p in params],
                     {k: v.clone() for k, v in opt.state[params[0]].items()}))
    (p_eager, s_eager), (p_flat, s_flat) = outs
    for a, b in zip(p_eager, p_flat, strict=True):
        assert torch.equal(a, b), (a.float() - b.float()).abs().max()
    assert s_eager.keys() == s_flat.keys()
    for name, value in s_eager.items():
        assert torch.equal(value, s_flat[name]), name


@optims(cases=_policy_cases, argnames="info,policy")
def test_an_eager_policy_step_over_blocks_equals_the_whole_bucket(info, policy, monkeypatch):
    """Under a policy an eager step runs over blocks of params, each dequantized / widened,
    stepped and written back before the next (the working copies are one block's): the same
    params and state bit for bit as one block, the first step's state creation included."""
    from optimkit.core import tensorlists

    dtype, kwargs = POLICIES[policy]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(32, 64, generator=gen)
    y = torch.randn(32, 64, generator=gen)
    start = [0.1 * torch.randn(64, 96, generator=gen), 0.1 * torch.randn(96, 64, generator=gen),
             torch.zeros(64), 0.1 * torch.randn(64, 64, generator=gen)]
    outs = []
    for limit in (1 << 30, 1024):  # one block; a block per param
        monkeypatch.setattr(tensorlists, "CPU_BLOCK_BYTES", limit)
        params = [t.clone().to(dtype).requires_grad_() for t in start]
        torch.manual_seed(0)  # the rounding seed is drawn at construction
        opt = info.factory(params, **{**info.pinned, **info.converge, "lr": _lr(info), **kwargs})
        for _ in range(4):
            opt.zero_grad()
            w1, w2, b, w3 = params
            ((x.to(dtype) @ w1 @ w2 + b) @ w3).float().sub(y).pow(2).mean().backward()
            opt.step()
        outs.append(([p.detach().clone() for p in params],
                     [{k: v.clone() for k, v in opt.state[p].items()} for p in params]))
    (p_whole, s_whole), (p_blocks, s_blocks) = outs
    for a, b in zip(p_whole, p_blocks, strict=True):
        assert torch.equal(a, b), (a.float() - b.float()).abs().max()
    for whole, blocks in zip(s_whole, s_blocks, strict=True):
        assert whole.keys() == blocks.keys()
        for name, value in whole.items():
            assert torch.equal(value, blocks[name]), name


def test_an_eager_8bit_step_holds_one_block_of_working_state(monkeypatch):
    """The float32 working copies of 8-bit state are made block by block: the temporaries an
    8-bit Adam step keeps alive at once do not grow with the number of params, only with the
    block (whole, the step held 3x the params' size: more than the fp32 state 8-bit
    replaces). (Under the tracker's dispatch mode the fused conversions run unfused, which
    adds a constant of a few param sizes.)"""
    from benchmarks.counting import TemporaryPeak
    from optimkit.core import tensorlists

    n = 8192

    def peak(count, per_block):
        monkeypatch.setattr(tensorlists, "CPU_BLOCK_BYTES", per_block * n * 4)
        params = [torch.randn(n, requires_grad=True) for _ in range(count)]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = optimkit.Adam(params, state_bits=8)
        opt.step()
        opt.step()
        with TemporaryPeak() as tracker:
            opt.step()
        return tracker.peak / (n * 4)  # in param sizes

    assert abs(peak(16, 1) - peak(8, 1)) < 1
    assert peak(16, 16) - peak(8, 8) > 16  # one block: 8 more params, 3 param sizes each


def _roundtrip(sd):
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@optims(cases=_policy_cases, argnames="info,policy")
def test_resume_under_each_policy_is_bit_exact(info, policy):
    """``state_dict()`` holds the stored form (8-bit codes, fp32 or bf16 state, the
    compensation, the seed in the param groups); a fresh optimizer with the same policy loads
    it back exactly and continues like the uninterrupted run."""
    dtype, kwargs = POLICIES[policy]
    x, y, straight = _problem(dtype)
    _, _, resumed = _problem(dtype)
    hypers = {**info.pinned, **info.converge, "lr": _lr(info), **kwargs}

    def steps(opt, params, n):
        for _ in range(n):
            opt.zero_grad()
            w, b = params
            ((x.to(dtype) @ w + b).float() - y).pow(2).mean().backward()
            opt.step()

    torch.manual_seed(1)
    steps(info.factory(straight, **hypers), straight, 10)
    torch.manual_seed(1)
    first = info.factory(resumed, **hypers)
    steps(first, resumed, 5)
    saved = first.state_dict()
    checkpoint = _roundtrip(saved)
    torch.manual_seed(2)  # another seed at construction: the checkpoint's must win
    second = info.factory(resumed, **hypers)
    second.load_state_dict(checkpoint)
    for index, state in second.state_dict()["state"].items():
        for name, value in state.items():
            assert value.dtype == saved["state"][index][name].dtype
            assert torch.equal(value, saved["state"][index][name])
    steps(second, resumed, 5)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_checkpoints_convert_between_policies():
    x, y, params = _problem(torch.float32)
    eight = optimkit.Adam(params, lr=1e-2, state_bits=8)
    for _ in range(3):
        eight.zero_grad()
        ((x @ params[0] + params[1]) - y).pow(2).mean().backward()
        eight.step()
    sd = eight.state_dict()
    assert sd["state"][0]["grad_avg"].dtype == torch.uint8
    plain = optimkit.Adam(params, lr=1e-2)
    plain.load_state_dict(_roundtrip(sd))
    state = plain.state[params[0]]
    assert state["grad_avg"].dtype == torch.float32 and "grad_avg" + ABSMAX_SUFFIX not in state
    expected = q.dequantize(sd["state"][0]["grad_avg"], sd["state"][0]["grad_avg_absmax"], True)
    assert torch.equal(state["grad_avg"], expected)
    again = optimkit.Adam(params, lr=1e-2, state_bits=8)
    again.load_state_dict(_roundtrip(plain.state_dict()))  # fp32 into 8 bits: quantized once
    assert torch.equal(again.state[params[0]]["grad_avg"], sd["state"][0]["grad_avg"])
    bf16 = optimkit.Adam(params, lr=1e-2, state_dtype=torch.bfloat16)
    bf16.load_state_dict(_roundtrip(sd))
    assert bf16.state[params[0]]["sqr_avg"].dtype == torch.bfloat16


def test_codes_copied_into_float_tensors_are_refused():
    """What ``torch.distributed.checkpoint`` hands over when an 8-bit checkpoint is loaded
    into a plain optimizer's template: the codes copied into float tensors, no scales. Each
    saved group's ``state_form`` names the 8-bit states, so the load refuses them."""
    x, y, params = _problem(torch.float32)
    eight = optimkit.Adam(params, lr=1e-2, state_bits=8)
    eight.zero_grad()
    ((x @ params[0] + params[1]) - y).pow(2).mean().backward()
    eight.step()
    sd = _roundtrip(eight.state_dict())
    assert [g["state_form"] for g in sd["param_groups"]] == ["8bit:grad_avg,sqr_avg,max_sqr_avg"]
    plain = optimkit.Adam([p.detach().clone().requires_grad_() for p in params], lr=1e-2)
    assert plain.state_dict()["param_groups"][0]["state_form"] == "plain"
    copied = {**sd, "state": {i: {k: v.float() for k, v in entry.items()
                                  if not k.endswith(ABSMAX_SUFFIX)}
                              for i, entry in sd["state"].items()}}
    with pytest.raises(ValueError, match="'grad_avg' was saved as 8-bit codes.*state_bits=8"):
        plain.load_state_dict(copied)
    plain.load_state_dict(sd)  # the codes with their scales: converted
    assert "state_form" not in plain.param_groups[0]
    assert "state_form" not in plain.torch_state_dict()["param_groups"][0]


def test_fp32_state_survives_loading_into_bf16_params():
    """torch's ``load_state_dict`` casts state to the param's dtype (pytorch#43706); with
    ``state_dtype=torch.float32`` the loaded state stays float32."""
    x, y, params = _problem(torch.bfloat16)
    opt = optimkit.AdamW(params, lr=1e-2, state_dtype=torch.float32)
    opt.zero_grad()
    ((x.bfloat16() @ params[0] + params[1]).float() - y).pow(2).mean().backward()
    opt.step()
    fresh = optimkit.AdamW(params, lr=1e-2, state_dtype=torch.float32)
    fresh.load_state_dict(_roundtrip(opt.state_dict()))
    assert fresh.state[params[0]]["sqr_avg"].dtype == torch.float32
    assert torch.equal(fresh.state[params[0]]["sqr_avg"], opt.state[params[0]]["sqr_avg"])


def test_deepcopy_keeps_the_policy():
    x, y, params = _problem(torch.bfloat16)
    opt = optimkit.Adam(params, lr=1e-2, param_update="stochastic", state_bits=8)
    twin = copy.deepcopy(opt)
    assert twin._executor.policy.precision == opt._executor.policy.precision


def test_nonsense_combinations_are_refused_at_construction():
    fp32 = [torch.zeros(4, requires_grad=True)]
    with pytest.raises(ValueError, match="param_update='kahan'.*float32"):
        optimkit.Adam(fp32, param_update="kahan")
    with pytest.raises(ValueError, match="'slow_param' cannot be quantized"):
        optimkit.Ranger(fp32, state_bits={"slow_param": 8})
    with pytest.raises(ValueError, match="state_bits: SGD has no state 'sqr_avg'"):
        optimkit.SGD(fp32, state_bits={"sqr_avg": 8})
    with pytest.raises(ValueError, match="state_dtype"):
        optimkit.Adam(fp32, state_dtype=torch.float16)
    with pytest.raises(ValueError, match="state_bits"):
        optimkit.LAMB(fp32, state_bits=4)
    with pytest.raises(ValueError, match="param_update"):
        optimkit.RAdam(fp32, param_update="nearest")


def test_every_optimizer_takes_the_keywords_in_its_signature():
    import inspect

    for name in optimkit.available():
        parameters = inspect.signature(optimkit.registry.get(name).factory).parameters
        for keyword in ("state_dtype", "state_bits", "param_update", "generator"):
            assert keyword in parameters, (name, keyword)


def test_stochastic_rounding_reproduces_from_the_generator():
    runs = []
    for seed in (3, 3, 4):
        x, y, params = _problem(torch.bfloat16)
        opt = optimkit.Adam(params, lr=1e-3, param_update="stochastic",
                            generator=torch.Generator().manual_seed(seed))
        for _ in range(4):
            opt.zero_grad()
            ((x.bfloat16() @ params[0] + params[1]).float() - y).pow(2).mean().backward()
            opt.step()
        runs.append(params[0].detach().clone())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_default_keeps_state_in_the_params_dtype_and_adds_nothing():
    x, y, params = _problem(torch.bfloat16)
    opt = optimkit.Adam(params, lr=1e-2)
    opt.zero_grad()
    ((x.bfloat16() @ params[0] + params[1]).float() - y).pow(2).mean().backward()
    opt.step()
    assert set(opt.state[params[0]]) == {"step", "grad_avg", "sqr_avg"}
    assert opt.state[params[0]]["sqr_avg"].dtype == torch.bfloat16
    assert "rounding_seed" not in opt.param_groups[0]


# Compiled under a policy: every policy once (with Adam), every optimizer with 8-bit state
# (the policy that puts the most code in its graph: decode, absmax, encode), and the bf16
# updates with a layer-wise (LAMB) and a Lookahead (Ranger) recipe. One compile per case.
COMPILED = {"adam": set(POLICIES), "lamb": {"stochastic"}, "ranger": {"kahan"}}


def _policy_signature(info):
    """What a compiled step under a policy depends on beyond the parts' math (which
    tests/test_compile.py compiles for every optimizer): how each state may be stored and
    how it lines up with its param, and the engine features that cut the step."""
    recipe = info.factory.recipe
    kinds = {(kind, recipe.layouts.get(name)) for name, kind in recipe.storage.items()}
    return kinds | engine_features(recipe)


# each optimizer runs compiled under its widest policy where it covers a storage kind or an
# engine feature no earlier one did (all of them with OPTIMKIT_TEST_ALL_MODES=1)
COVERING = set(covering(optim_db.DB, _policy_signature))


def _compiled_cases(info):
    if not (ALL_MODES or info.name in COVERING or info.name in COMPILED):
        return
    # a recipe with no state to quantize (Adafactor, Schedule-Free SGD): bf16 state compiled
    quantized = "8bit" in _policies(info) and not _unquantized(info, "8bit")
    widest = "8bit" if quantized else "bf16-state"
    for policy in sorted((COMPILED.get(info.name, set()) | {widest}) & set(_policies(info))):
        yield policy, (policy,)


@pytest.mark.slow
@pytest.mark.skipif(not can_compile(torch.device("cpu")), reason="inductor needs a C++ compiler")
@optims(cases=_compiled_cases, argnames="info,policy")
def test_compiled_steps_follow_eager_under_a_policy(info, policy):
    dtype, kwargs = POLICIES[policy]
    outs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        losses, _, params = _train(info, dtype, steps=8, compile=compiled, **kwargs)
        outs.append((losses, params))
    (l_eager, p_eager), (l_comp, p_comp) = outs
    assert l_comp[-1] < l_comp[0]
    for a, b in zip(p_eager, p_comp, strict=True):
        # inductor contracts multiply-adds: a value may land on the other side of a rounding
        assert torch.allclose(a.float(), b.float(), rtol=2**-6, atol=1e-3)


@pytest.mark.parametrize("policy", ["8bit", "kahan", "fp32-state"])
def test_torch_state_dict_converts_a_policy_to_torch_form(policy):
    """``torch_state_dict()`` under a policy: the moments dequantized and in the param's
    dtype, no policy entries; torch.optim.Adam loads it and continues from the same moments
    (as an optimkit optimizer without the policy, loading the same checkpoint, does)."""
    dtype, kwargs = POLICIES[policy]
    x, y, params = _problem(dtype)
    opt = optimkit.Adam(params, lr=1e-2, **kwargs)
    for _ in range(3):
        opt.zero_grad()
        ((x.to(dtype) @ params[0] + params[1]).float() - y).pow(2).mean().backward()
        opt.step()
    sd = _roundtrip(opt.torch_state_dict())
    assert all("rounding_seed" not in group for group in sd["param_groups"])
    for index, p in enumerate(params):
        entry = sd["state"][index]
        assert set(entry) == {"step", "exp_avg", "exp_avg_sq"}, entry.keys()
        assert entry["exp_avg"].dtype == p.dtype and entry["exp_avg_sq"].dtype == p.dtype
    state = opt.state[params[0]]
    if "grad_avg_absmax" in state:
        expected = q.dequantize(state["grad_avg"], state["grad_avg_absmax"], True)
    else:
        expected = state["grad_avg"].to(dtype)
    assert torch.equal(sd["state"][0]["exp_avg"], expected)
    theirs = torch.optim.Adam([p.detach().clone().requires_grad_() for p in params], lr=1e-2)
    theirs.load_state_dict(sd)
    assert torch.equal(theirs.state[theirs.param_groups[0]["params"][0]]["exp_avg"], expected)


@pytest.mark.slow
@pytest.mark.skipif(not can_compile(torch.device("cpu")), reason="inductor needs a C++ compiler")
@pytest.mark.parametrize("name", ["adam", "lamb"])
def test_compiled_bf16_policy_steps_on_sizes_that_are_not_multiples_of_16(name):
    """Regression: inductor's vectorised kernels corrupted the heap on such sizes when 16-bit
    tensors met bit casts (stochastic rounding) or layer-wise reductions (torch 2.13, CPU)."""
    outs = []
    for compiled in (False, True):
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(s, generator=gen).bfloat16().requires_grad_()
                  for s in ((83, 32), (83,), (5,))]
        opt = optimkit.create(name, params, lr=1e-2, param_update="stochastic", flat=False,
                              compile=compiled, generator=torch.Generator().manual_seed(1))
        for _ in range(4):
            for p in params:
                p.grad = (0.1 * torch.randn(p.shape, generator=gen)).bfloat16()
            opt.step()
        outs.append(params)
    for a, b in zip(*outs, strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=2**-6, atol=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(not can_compile(torch.device("cpu")), reason="inductor needs a C++ compiler")
def test_eager_conversions_compile_once_per_kind_whatever_the_ranks():
    """The eager step's fused conversions (8-bit decode and encode) see 1-d views: params of
    rank 1 to 4 compile one kernel per code (signed, unsigned), not one per rank; before,
    a model's ranks passed dynamo's limit of 8 compiles and the conversions ran unfused."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(shape, generator=gen).requires_grad_()
              for shape in ((4096,), (64, 96), (16, 16, 24), (8, 8, 8, 12))]
    opt = optimkit.Adam(params, lr=1e-2, state_bits=8)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    assert all(opt.state[p]["grad_avg"].dtype == torch.uint8 for p in params)
    # decode and encode, each for the signed and the unsigned code
    assert counters["stats"]["unique_graphs"] <= 4, dict(counters["stats"])
    torch._dynamo.reset()


@pytest.mark.parametrize("policy", ["8bit", "stochastic", "kahan"])
def test_a_non_contiguous_param_steps_like_a_contiguous_one(policy):
    """A transposed param (its state made like it, non-contiguous too) draws the random bits
    and quantizes the blocks of its logical row-major order: the same results as a
    contiguous copy, also where the eager conversions see flattened views."""
    dtype, kwargs = POLICIES[policy]
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(64, 96, generator=gen).to(dtype)
    strided = torch.empty(96, 64, dtype=dtype).t()  # (64, 96), non-contiguous
    strided.copy_(start)
    strided.requires_grad_()
    plain = start.clone().requires_grad_()
    assert not strided.is_contiguous() and torch.equal(strided, plain)
    opts = [optimkit.Adam([p], lr=1e-2, generator=torch.Generator().manual_seed(3), **kwargs)
            for p in (strided, plain)]
    for _ in range(4):
        g = torch.randn(64, 96, generator=gen).to(dtype)
        for p, opt in zip((strided, plain), opts, strict=True):
            p.grad = g.clone()
            opt.step()
    assert torch.equal(strided, plain)


def _ademamix_run(make, steps=120):
    """Params and optimizer after ``steps`` minibatch steps of the least-squares fit (the same
    batches for every optimizer): noisy gradients, as in training."""
    x, y, params = _problem(torch.float32)
    opt = make(params)
    gen = torch.Generator().manual_seed(1)
    w, b = params
    for _ in range(steps):
        opt.zero_grad()
        rows = torch.randint(0, x.shape[0], (32,), generator=gen)
        ((x[rows] @ w + b) - y[rows]).pow(2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in params], opt


def _relative_error(params, reference):
    # the params start at 0: the error relative to the distance the fp32 run travelled
    return (sum((p - r).pow(2).sum() for p, r in zip(params, reference, strict=True)).sqrt()
            / sum(r.pow(2).sum() for r in reference).sqrt()).item()


def test_ademamix_8bit_follows_fp32_at_least_as_closely_as_bitsandbytes_in_as_few_bytes():
    """optimkit's 8-bit AdEMAMix against bitsandbytes' ``AdEMAMix8bit`` (its CPU path), both
    against the fp32 run, with the same hypers (the warm-ups on; decoupled weight decay,
    bitsandbytes' only kind) and the same gradients.

    Measured first (this fit, 10 seeds, 100 and 200 steps, lr 1e-3 to 1e-2, weight decay 0 or
    0.1): optimkit's error over bitsandbytes' was 0.36-1.03 with the warm-ups (optimkit's
    1.9-3.5 %, bitsandbytes' 1.9-9.2 %) and 0.78-1.01 without; here 2.4 % against 5.1 %. The
    margin 1.1 covers the worst seed seen (1.03). The gap is bitsandbytes' signed code: its
    most negative value is -0.993, so a block whose largest element is negative shrinks by
    0.7 % at each requantization; with optimkit's signed code in its place, its error equals
    ours. Both keep 1 byte per element and a float32 scale per 256 elements for each of the
    three moments (the bias, below 4096 elements, keeps fp32 state in both); bitsandbytes'
    state also holds its two 256-entry code tables."""
    bnb = pytest.importorskip("bitsandbytes")
    hypers = dict(lr=1e-2, betas=(0.9, 0.999, 0.9999), alpha=5.0, eps=1e-8, weight_decay=0.1)
    ours = dict(hypers, t_alpha_beta3=100, decoupled_weight_decay=True)
    reference, _ = _ademamix_run(lambda ps: optimkit.AdEMAMix(ps, **ours))
    # flat: the same steps as eager bit for bit under a policy (tested above), and faster
    eight, opt = _ademamix_run(lambda ps: optimkit.AdEMAMix(ps, state_bits=8, flat=True, **ours))
    peer, peer_opt = _ademamix_run(
        lambda ps: bnb.optim.AdEMAMix8bit(ps, t_alpha=100, t_beta3=100, **hypers))
    ours_err, peer_err = _relative_error(eight, reference), _relative_error(peer, reference)
    assert ours_err < 0.05, ours_err
    assert ours_err <= 1.1 * peer_err, (ours_err, peer_err)

    def nbytes(state):
        return {v.data_ptr(): v.numel() * v.element_size() for v in state.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0}

    w = opt.param_groups[0]["params"][0]
    w_peer = peer_opt.param_groups[0]["params"][0]
    mine, theirs = nbytes(opt.state[w]), nbytes(peer_opt.state[w_peer])
    tables = {ptr for ptr in theirs if theirs[ptr] == 256 * 4}  # qmap1, qmap2
    assert opt.state[w]["slow_grad_avg"].dtype == torch.uint8
    assert sum(mine.values()) == 3 * w.numel() + 3 * 4 * q.num_blocks(w.numel())
    assert sum(mine.values()) == sum(v for p, v in theirs.items() if p not in tables)
