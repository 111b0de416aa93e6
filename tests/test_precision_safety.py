"""Precision policies at the edges (issue 21): gradients whose square overflows float32,
float64 params with 8-bit state, bad keywords, and ``state_bits=8`` where no state is kept.

The 8-bit checkpoints across world sizes are tested with the distributed scenarios
(``tests/dist_scenarios.py``: ``dcp-8bit-reshard-load``).
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

import optimkit
from optimkit.core.compiled import can_compile
from optimkit.precision import quantize as q
from optimkit.precision.policy import scale_layout

FLOAT32_MAX = torch.finfo(torch.float32).max
needs_inductor = pytest.mark.skipif(not can_compile(torch.device("cpu")),
                                    reason="inductor needs a C++ compiler")


def _grads(n: int, steps: int, dtype=torch.float32, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen).to(dtype) for _ in range(steps)]


def _run(opt, param, grads):
    for g in grads:
        param.grad = g.clone()
        opt.step()


# ------------------------------------------------------------ W1: gradients beyond float32
def test_values_beyond_float32_read_back_as_inf_in_an_otherwise_finite_block():
    """Documented in ``quantize``: inf (and a float64 value above 3.4e38) is stored at the top
    code of a block scaled by the largest float32, and reads back as inf with its sign; the
    block's other values stay finite. NaN still makes its own block (only) NaN."""
    x = torch.randn(4 * q.BLOCK_SIZE, dtype=torch.float64)
    x[3] = math.inf
    x[q.BLOCK_SIZE + 7] = -math.inf
    x[2 * q.BLOCK_SIZE + 1] = 1e300
    x[3 * q.BLOCK_SIZE + 2] = math.nan
    for signed in (True, False):
        values = x if signed else x.abs()
        codes, absmax = q.quantize(values, signed)
        back = q.dequantize(codes, absmax, signed)
        assert torch.equal(absmax[:3], torch.full((3,), FLOAT32_MAX))
        top = torch.tensor([3, q.BLOCK_SIZE + 7, 2 * q.BLOCK_SIZE + 1])
        assert torch.equal(back[top], values[top].sign().float() * math.inf)
        rest = torch.ones(3 * q.BLOCK_SIZE, dtype=torch.bool)
        rest[top] = False
        assert back[: 3 * q.BLOCK_SIZE][rest].isfinite().all()
        assert back[3 * q.BLOCK_SIZE:].isnan().all()


def test_every_finite_scale_encodes_its_largest_value_exactly():
    """The block's largest value reads back as itself for any finite scale: subnormal ones
    (whose inverse overflows float32) and those >= 2**126 (where ``x * (1 / x)`` exceeds 1)."""
    # (the largest float32 itself marks a saturated block, and reads back as inf)
    scales = torch.tensor([1e-45, 3e-42, 1e-39, 2.0**-127, 1e-30, 1.0, 2.0**126 * 1.37,
                           3e38, 3.4e38])
    blocks = torch.linspace(0.01, 1.0, q.BLOCK_SIZE)[None, :] * scales[:, None]
    blocks[:, -1] = scales  # the absmax, exactly
    for signed in (True, False):
        codes, absmax = q.quantize(blocks, signed)
        back = q.dequantize(codes, absmax, signed)
        assert torch.equal(absmax, scales)
        assert torch.equal(back[:, -1], scales), back[:, -1]


def _adam_with_outlier(big: float, **speed):
    """8-bit Adam and torch's float32 Adam, 3 steps, the first gradient holding ``big`` at
    element 300 (block 1); and the 8-bit run without it."""
    start = torch.randn(4096, generator=torch.Generator().manual_seed(1))
    grads = _grads(4096, 3)
    spiked = [g.clone() for g in grads]
    spiked[0][300] = big
    runs = []
    for gs, factory in ((spiked, lambda p: optimkit.Adam([p], lr=1e-2, state_bits=8, **speed)),
                        (spiked, lambda p: torch.optim.Adam([p], lr=1e-2)),
                        (grads, lambda p: optimkit.Adam([p], lr=1e-2, state_bits=8, **speed))):
        p = torch.nn.Parameter(start.clone())
        opt = factory(p)
        _run(opt, p, gs)
        runs.append((p.detach(), opt))
    return runs


@pytest.mark.parametrize("flat", [False, True], ids=["eager", "flat"])
def test_a_gradient_whose_square_overflows_keeps_8bit_adam_finite(flat):
    """A gradient of 1e25: ``g**2`` is inf in float32. torch's float32 Adam keeps ``inf`` as
    that element's second moment (its step is then 0) and finite params; 8-bit Adam keeps the
    inf too, in a block whose scale is the largest float32, and its params stay finite (before:
    the block's scale was NaN and its 256 params turned NaN at the next step). The spiked
    element moves as in float32 Adam (not at all); every other block is the run without the
    spike, bit for bit."""
    (eight, opt), (fp32, torch_opt), (clean, _) = _adam_with_outlier(1e25, flat=flat)
    theirs = torch_opt.state[next(iter(torch_opt.state))]
    assert theirs["exp_avg_sq"][300] == math.inf and fp32.isfinite().all()
    assert eight.isfinite().all()
    state = opt.state[opt.param_groups[0]["params"][0]]
    first = q.dequantize(state["grad_avg"], state["grad_avg_absmax"], True)
    second = q.dequantize(state["sqr_avg"], state["sqr_avg_absmax"], False)
    assert first.isfinite().all()
    assert second[300] == math.inf and second.isinf().sum() == 1
    assert state["sqr_avg_absmax"][1] == FLOAT32_MAX
    assert eight[300] == fp32[300]
    block = slice(256, 512)
    outside = torch.ones(4096, dtype=torch.bool)
    outside[block] = False
    assert torch.equal(eight[outside], clean[outside])


@needs_inductor
def test_a_gradient_whose_square_overflows_keeps_compiled_8bit_adam_finite():
    """The same, compiled (one tensor of 4096: a tiny graph)."""
    (eight, opt), (fp32, _), (clean, _) = _adam_with_outlier(1e25, compile=True)
    assert fp32.isfinite().all() and eight.isfinite().all()
    state = opt.state[opt.param_groups[0]["params"][0]]
    second = q.dequantize(state["sqr_avg"], state["sqr_avg_absmax"], False)
    assert second[300] == math.inf and second.isinf().sum() == 1 and not second.isnan().any()
    assert eight[300] == fp32[300]
    outside = torch.ones(4096, dtype=torch.bool)
    outside[256:512] = False
    assert torch.equal(eight[outside], clean[outside])


# ------------------------------------------------------------- C1: float64 params, 8 bits
def _fp64_and_fp32_runs(**speed):
    start = torch.randn(4096, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = _grads(8192, 4, torch.float64)
    out = []
    for dtype in (torch.float64, torch.float32):
        p = torch.nn.Parameter(start.to(dtype).clone())
        opt = optimkit.Adam([p], lr=1e-2, state_bits=8, **speed)
        _run(opt, p, [g.view(4096, 2).to(dtype) for g in grads])
        out.append((p, opt))
    return out


@pytest.mark.parametrize("flat", [False, True], ids=["eager", "flat"])
def test_float64_params_take_8bit_state(flat):
    """float64 params with ``state_bits=8`` (before: every step failed with a dtype error):
    the state is 8-bit codes, decoded into float64 for the update; the params stay float64
    and follow the float32 params' 8-bit run to float32 precision. The state_dict loads back
    exactly and torch's format holds float64 moments."""
    (p64, opt), (p32, _) = _fp64_and_fp32_runs(flat=flat)
    assert p64.dtype == torch.float64
    state = opt.state[p64]
    assert state["grad_avg"].dtype == torch.uint8 and state["sqr_avg"].dtype == torch.uint8
    assert (p64 - p32.double()).abs().max() < 1e-6
    sd = opt.state_dict()
    again = optimkit.Adam([torch.nn.Parameter(p64.detach().clone())], lr=1e-2, state_bits=8,
                          flat=flat)
    again.load_state_dict(sd)
    for name, value in sd["state"][0].items():
        assert torch.equal(again.state_dict()["state"][0][name], value), name
    theirs = opt.torch_state_dict()["state"][0]
    assert theirs["exp_avg"].dtype == theirs["exp_avg_sq"].dtype == torch.float64


@needs_inductor
def test_float64_params_take_8bit_state_compiled():
    (p64, opt), (p32, _) = _fp64_and_fp32_runs(compile=True)
    assert p64.dtype == torch.float64 and opt.state[p64]["grad_avg"].dtype == torch.uint8
    assert (p64 - p32.double()).abs().max() < 1e-6


# ---------------------------------------------------------------------- U3: bad keywords
@pytest.mark.parametrize("value,said", [
    ("float8", "got 'float8' (of type str, not a torch.dtype)"),
    (torch.float64, "got torch.float64 (state is kept in float32 at most"),
    (torch.int8, "got torch.int8 (optimizer state is floating point"),
    (torch.float16, "got torch.float16 (float16 state overflows in squared gradients)"),
])
def test_a_bad_state_dtype_is_refused_for_what_it_is(value, said):
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="state_dtype") as refused:
        optimkit.Adam([p], state_dtype=value)
    assert said in str(refused.value)
    if value is not torch.float16:
        assert "overflows" not in str(refused.value)


@pytest.mark.parametrize("value", [42, "seed", torch.tensor(3)])
def test_a_generator_that_is_not_one_is_refused_naming_it(value):
    with pytest.raises(ValueError, match=r"generator: expected a torch\.Generator or None, got"):
        optimkit.Adam([torch.nn.Parameter(torch.zeros(3))], param_update="stochastic",
                      state_bits=8, generator=value)


# ------------------------------------------------------- U4: state_bits=8 with no state
def test_state_bits_where_no_param_group_keeps_state_warns():
    """``SGD(momentum=0, state_bits=8)`` keeps no momentum buffer, so nothing is quantized:
    a warning names the state and its part (a warning: a group with momentum may come later).
    The policy's own step counter stays out of torch's format."""
    p = torch.nn.Parameter(torch.randn(4096))
    with pytest.warns(UserWarning, match=r"state_bits: SGD quantizes nothing.*momentum_buffer "
                                         r"\(part momentum\[momentum\]\)"):
        opt = optimkit.SGD([p], lr=0.1, momentum=0.0, state_bits=8)
    _run(opt, p, _grads(4096, 2))
    assert not any(v.dtype == torch.uint8 for v in opt.state[p].values())
    assert "step" not in opt.torch_state_dict()["state"].get(0, {})
    with pytest.warns(UserWarning, match="state_bits: SGD quantizes nothing"):
        optimkit.SGD([p], momentum=0.0, state_bits={"momentum_buffer": 8})


def test_state_bits_with_state_in_some_param_group_does_not_warn():
    a, b = torch.nn.Parameter(torch.randn(4096)), torch.nn.Parameter(torch.randn(4096))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = optimkit.SGD([{"params": [a]}, {"params": [b], "momentum": 0.9}], lr=0.1,
                           state_bits=8)
        optimkit.Adam([a], state_bits=8)
    a.grad, b.grad = torch.randn(4096), torch.randn(4096)
    opt.step()
    assert opt.state[b]["momentum_buffer"].dtype == torch.uint8


# ------------------------------------------ S2: 8-bit checkpoints across shard layouts
def test_scale_layouts_that_move_between_shardings_exactly():
    """Shards of whole 256-element blocks, all of ``ceil(rows / shards)`` rows, have the
    unsharded layout (1); any other sharding has its own (its shard count)."""
    assert scale_layout((128, 64), 2) == 1  # 64 rows of 64: 16 blocks per shard
    assert scale_layout((100, 64), 2) == 2  # 50 rows of 64 = 3200: a block cut at rank 1
    assert scale_layout((12, 512), 8) == 8  # 2 rows per shard, the last two shards empty
    assert scale_layout((12, 512), 4) == 1
    assert scale_layout((100, 64), 1) == 1


def test_8bit_state_saved_in_another_shard_layout_is_refused_and_nothing_changes():
    """A state_dict whose group says its 8-bit state was quantized in 2 shards (an FSDP2
    checkpoint), loaded into an unsharded optimizer: refused, naming both layouts, before
    anything changes (the DCP scenario ``dcp-8bit-reshard-load`` does this end to end)."""
    p = torch.nn.Parameter(torch.randn(100, 64))
    opt = optimkit.Adam([p], lr=1e-2, state_bits=8)
    _run(opt, p, [g.view(100, 64) for g in _grads(6400, 2)])
    sd = opt.state_dict()
    assert sd["param_groups"][0]["state_form"] == "8bit:grad_avg,sqr_avg,max_sqr_avg"
    before = {k: v.clone() for k, v in opt.state[p].items()}
    sharded = copy.deepcopy(sd)
    sharded["param_groups"][0]["state_form"] += ";shards=2"
    sharded["param_groups"][0]["lr"] = 0.5
    sharded["state"][0]["grad_avg_absmax"] = torch.zeros(26)  # 2 shards of 13 blocks
    with pytest.raises(ValueError, match=r"param 0's 8-bit state was saved quantized in 2 "
                                         r"shards along dim 0 .* holds it unsharded"):
        opt.load_state_dict(sharded)
    assert opt.param_groups[0]["lr"] == 1e-2
    assert all(torch.equal(opt.state[p][k], v) for k, v in before.items())
    opt.load_state_dict(sd)  # its own layout loads
