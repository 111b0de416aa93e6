"""The precision and memory policies' building blocks: the 8-bit block quantizer, stochastic
rounding, Kahan compensation, and the policy that applies them around a recipe's parts."""

from __future__ import annotations

import io
import math

import pytest
import torch

from optimkit.core.compiled import can_compile
from optimkit.core.parts import step_counter, zeros
from optimkit.core.tensorlists import Bucket
from optimkit.precision import quantize as q
from optimkit.precision import rounding
from optimkit.precision.policy import ABSMAX_SUFFIX, COMPENSATION, Precision, Storage, state_bytes
from optimkit.stats import average_grad, average_sqr_grad, step_stat
from optimkit.steppers import adam_step


def heavy_tailed(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * torch.exp(2 * torch.randn(n, generator=g))


def _absmax_per_element(x: torch.Tensor) -> torch.Tensor:
    n = x.numel()
    padded = torch.zeros(q.num_blocks(n) * q.BLOCK_SIZE)
    padded[:n] = x.reshape(-1).abs()
    return padded.view(-1, q.BLOCK_SIZE).amax(1).repeat_interleave(q.BLOCK_SIZE)[:n]


# ----------------------------------------------------------------------------- the codes
@pytest.mark.parametrize("signed", [True, False])
def test_codes_are_the_dynamic_tree(signed):
    table = q.code(signed)
    assert table.shape == (256,) and table.dtype == torch.float32
    used = table[:255] if signed else table
    assert torch.all(used[1:] > used[:-1])
    assert used[-1] == 1.0
    if signed:
        assert torch.equal(used, -used.flip(0))  # symmetric, with an exact zero at byte 127
        assert table[127] == 0 and math.isnan(table[255])
        assert used[128] == pytest.approx(1e-6)  # the tree reaches 1e-6 of the absmax
    else:
        assert table[0] == pytest.approx(1e-8)  # no zero: a second moment is divided by
        assert table[1] == pytest.approx(1e-7)
    # the top decade holds half of the magnitudes: 0.7 % steps below the absmax
    top = used[used > 0.1]
    assert len(top) == (64 if signed else 128)
    assert (top[1:] - top[:-1]).max() == pytest.approx(0.9 / len(top), rel=1e-5)


@pytest.mark.parametrize("signed", [True, False])
def test_decoding_computes_the_table_bit_for_bit(signed):
    """Decoding is arithmetic (no lookup: see the module doc); eagerly and inside a compiled
    graph (where the bytes are widened by the ``optimkit::widen`` op) it gives exactly the
    table's values, NaN byte and unsigned floor included."""
    table = q.code(signed)
    codes = torch.arange(256, dtype=torch.uint8).repeat(2).view(2, 256)
    absmax = torch.tensor([1.0, 0.375])
    expected = torch.stack([table, table * 0.375]).nan_to_num(7.0)
    assert torch.equal(q.dequantize(codes, absmax, signed).nan_to_num(7.0), expected)
    if can_compile(torch.device("cpu")):
        # the 8-bit steps of earlier tests in this process may have used up dequantize's
        # recompile limit, and then a fullgraph compile is refused without being attempted
        torch._dynamo.reset()
        compiled = torch.compile(q.dequantize, fullgraph=True)(codes, absmax, signed)
        assert torch.equal(compiled.nan_to_num(7.0), expected)


@pytest.mark.parametrize("signed", [True, False])
def test_decoding_is_exact_whichever_way_the_sum_is_rounded(signed):
    """The decode ``k * hi + k * lo`` (``k`` an integer, ``k * hi`` exact) gives the table's
    value for every byte both with two roundings and contracted into a fused multiply-add
    (one rounding of the exact sum), as a compiler may emit it."""
    bits = 7 if signed else 8
    table = q.code(signed).double()
    for u in range(1, 2**bits):
        level = u.bit_length() - 1
        k = 9 * u - 8 * 2**level + 9
        hi, lo = q._DECODE[bits][level]
        assert float(torch.tensor(k * hi, dtype=torch.float32)) == k * hi  # exact
        want = float(table[127 + u] if signed else table[u])
        two = torch.tensor(k * hi, dtype=torch.float32) + torch.tensor(k * lo,
                                                                         dtype=torch.float32)
        fused = torch.tensor(k * hi + k * lo, dtype=torch.float64).float()
        assert float(two) == want and float(fused) == want, u


# ----------------------------------------------------------------------- round trips
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", [7, 256, 300, 4096, 5000])
def test_round_trip_is_nearest_code_and_within_the_bound(signed, n):
    x = heavy_tailed(n, seed=n)
    if not signed:
        x = x.abs()
    codes, absmax = q.quantize(x, signed)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert absmax.dtype == torch.float32 and absmax.shape == (q.num_blocks(n),)
    back = q.dequantize(codes, absmax, signed)
    scale = _absmax_per_element(x)
    table = q.code(signed)[:255] if signed else q.code(signed)
    y = x / scale
    nearest = table[(y[:, None] - table).abs().argmin(1)]
    # nearest rounding, except for the documented cut between 0 and the smallest signed code
    ok = ((back / scale - nearest).abs() <= 1e-6) | ((y.abs() > 0.5e-6) & (y.abs() < 0.56e-6))
    assert ok.all()
    # the error bound: half the gap between the codes around the value (0.7 % of the absmax
    # at most, in the top decade), 0.55 of it next to zero
    hi = torch.searchsorted(table, y.contiguous()).clamp(1, len(table) - 1)
    gap = table[hi] - table[hi - 1]
    assert torch.all((back - x).abs() <= (0.55 * gap + 1e-6) * scale)
    assert (back - x).abs().max() <= 0.0036 * scale.max() * (1 if not signed else 2)
    # a value equal to the block's absmax is exact
    block = x[: min(n, q.BLOCK_SIZE)]
    i = block.abs().argmax()
    assert back[i] == x[i]


@pytest.mark.parametrize("signed", [True, False])
def test_quantizing_decoded_values_is_the_identity(signed):
    """Requantizing what was read back gives the same bytes: state that does not change is
    not worn down by repeated steps, and a checkpoint loads back exactly."""
    x = heavy_tailed(4096 + 77, seed=3)
    x = x if signed else x.abs()
    codes, absmax = q.quantize(x, signed)
    again_codes, again_absmax = q.quantize(q.dequantize(codes, absmax, signed), signed)
    assert torch.equal(codes, again_codes)
    assert torch.equal(absmax, again_absmax)


def test_zero_inf_and_nan_blocks():
    """Documented: a zero block reads back as zeros; NaN anywhere in a block makes that block
    (only) read back as NaN; inf reads back as inf, its block scaled by the largest float32
    and otherwise finite (issue 21: it was NaN); nothing raises."""
    x = torch.randn(4 * q.BLOCK_SIZE + 10)
    x[: q.BLOCK_SIZE] = 0
    x[q.BLOCK_SIZE + 3] = math.inf
    x[2 * q.BLOCK_SIZE + 5] = math.nan
    x[-2] = -math.inf  # in the short last block
    for signed in (True, False):
        values = x if signed else x.abs()
        codes, absmax = q.quantize(values, signed)
        back = q.dequantize(codes, absmax, signed)
        assert torch.equal(back[: q.BLOCK_SIZE], torch.zeros(q.BLOCK_SIZE))
        assert back[2 * q.BLOCK_SIZE:3 * q.BLOCK_SIZE].isnan().all()
        assert absmax[2].isnan()
        for block, where in ((1, q.BLOCK_SIZE + 3), (4, x.numel() - 2)):
            assert absmax[block] == torch.finfo(torch.float32).max
            assert back[where] == values[where]  # +-inf
            rest = back[block * q.BLOCK_SIZE:(block + 1) * q.BLOCK_SIZE]
            assert rest.isinf().sum() == 1 and not rest.isnan().any()
        finite = back[3 * q.BLOCK_SIZE:4 * q.BLOCK_SIZE]
        expected = values[3 * q.BLOCK_SIZE:4 * q.BLOCK_SIZE]
        assert torch.allclose(finite, expected, atol=0.008 * expected.abs().max())


def test_empty_tensors_quantize_and_dequantize():
    # an FSDP2 rank may hold an empty shard of a quantized param
    for signed in (True, False):
        codes, absmax = q.quantize(torch.zeros(0, 16), signed)
        assert codes.shape == (0, 16) and absmax.numel() == 0
        assert q.dequantize(codes, absmax, signed).shape == (0, 16)


def test_unsigned_code_has_no_zero_and_stores_negatives_at_its_floor():
    x = torch.zeros(q.BLOCK_SIZE)
    x[0] = 1.0
    x[1] = -0.5  # not a valid second moment: stored at the code's floor
    codes, absmax = q.quantize(x, signed=False)
    back = q.dequantize(codes, absmax, signed=False)
    assert back[0] == 1.0
    assert torch.allclose(back[1:], torch.full((q.BLOCK_SIZE - 1,), 1e-8))


def test_quantized_state_round_trips_through_torch_save():
    x = heavy_tailed(5000)
    codes, absmax = q.quantize(x, True)
    buffer = io.BytesIO()
    torch.save({"grad_avg": codes, "grad_avg" + ABSMAX_SUFFIX: absmax}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    assert torch.equal(loaded["grad_avg"], codes)
    assert torch.equal(loaded["grad_avg" + ABSMAX_SUFFIX], absmax)


def test_list_versions_match_single_tensor_calls():
    xs = [heavy_tailed(300, 1), heavy_tailed(5000, 2).view(50, 100)]
    codes = [torch.empty(x.shape, dtype=torch.uint8) for x in xs]
    scales = [torch.empty(q.num_blocks(x.numel())) for x in xs]
    q.quantize_list_(xs, codes, scales, signed=True)
    for x, c, s, back in zip(xs, codes, scales, q.dequantize_list(codes, scales, True)):
        ref_codes, ref_scales = q.quantize(x, True)
        assert torch.equal(c, ref_codes) and torch.equal(s, ref_scales)
        assert back.shape == x.shape


# ----------------------------------------------------------------- stochastic rounding
VALUES = torch.tensor([1.0 + 1e-3, -3.14159, 1e-6, -2.5e-7, 0.1, 1e-30, 0.0, 1.0, 300.7])


MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10}


def _spacing(x: float, dtype: torch.dtype) -> float:
    """The gap between the two values of ``dtype`` around ``x`` (float16: subnormals below
    2**-14 are 2**-24 apart)."""
    if x == 0:
        return 0.0
    exponent = math.floor(math.log2(abs(x)))
    if dtype == torch.float16:
        exponent = max(exponent, -14)
    return 2.0 ** (exponent - MANTISSA_BITS[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_is_unbiased(dtype):
    """The mean of many draws converges to x: each draw is one of the two neighbours lo, hi of
    x, hi with probability p = (x - lo) / (hi - lo), so the mean of n draws has standard
    deviation (hi - lo) sqrt(p (1 - p) / n). A fixed seed; 5 sigma."""
    x = VALUES.clone()
    draws = 4000
    total = torch.zeros_like(x, dtype=torch.float64)
    for t in range(draws):
        words = rounding.random_words(x.shape, rounding.stream_key(2024, t))
        out = rounding.stochastic_round(x, dtype, words)
        assert out.dtype == dtype
        total += out.double()
    mean = total / draws
    for value, got in zip(x.tolist(), mean.tolist()):
        gap = _spacing(value, dtype)
        if gap == 0:
            assert got == 0
            continue
        lo = math.floor(value / gap) * gap
        p = (value - lo) / gap
        sigma = gap * math.sqrt(p * (1 - p) / draws)
        assert abs(got - value) <= 5 * sigma + 1e-9 * abs(value), (value, got, sigma)
    # nearest rounding fails the same criterion on 1 + 1e-3: the test can tell the difference
    gap = _spacing(1.001, dtype)
    p = (1.001 - math.floor(1.001 / gap) * gap) / gap
    sigma = gap * math.sqrt(p * (1 - p) / draws)
    assert abs(float(torch.tensor(1.001).to(dtype)) - 1.001) > 5 * sigma


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_keeps_special_values(dtype):
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 2.0])
    words = rounding.random_words(x.shape, rounding.stream_key(1, 1))
    out = rounding.stochastic_round(x, dtype, words).float()
    assert out[0].isnan() and out[1] == math.inf and out[2] == -math.inf
    assert out[3] == 0 and out[4] == 0 and out[5] == 2.0
    big = rounding.stochastic_round(torch.tensor([1e6]), dtype, words[:1]).float()
    assert big.item() in (65504.0, math.inf) if dtype == torch.float16 else big.isfinite()


def test_random_words_reproduce_and_differ_by_key_and_offset():
    key = rounding.stream_key(7, 3)
    a = rounding.random_words((1000,), key)
    assert torch.equal(a, rounding.random_words((1000,), rounding.stream_key(7, 3)))
    assert not torch.equal(a, rounding.random_words((1000,), rounding.stream_key(7, 4)))
    assert not torch.equal(a, rounding.random_words((1000,), rounding.stream_key(8, 3)))
    # an offset addresses the same stream further on: a flat buffer and its slices agree
    assert torch.equal(a[300:], rounding.random_words((700,), key, offset=300))
    assert a.dtype == torch.int32
    # uniform: every bit is set half of the time, within 5 sigma of a fair coin
    words = rounding.random_words((1 << 16,), key)
    for bit in (0, 7, 15, 16, 31):
        share = ((words >> bit) & 1).double().mean().item()
        assert abs(share - 0.5) < 5 * 0.5 / math.sqrt(1 << 16)


def test_stochastic_rounding_refuses_other_dtypes():
    with pytest.raises(ValueError, match="dtype"):
        rounding.stochastic_round(torch.ones(2), torch.float32, torch.zeros(2, dtype=torch.int64))


# ------------------------------------------------------------------------------ Kahan
@pytest.mark.slow
def test_kahan_and_stochastic_rounding_beat_plain_bf16_on_a_long_sum():
    """Adding 1e-4 to 1.0 ten thousand times: plain bf16 never moves (1e-4 is below half its
    unit, 2**-8), Kahan compensation and stochastic rounding reach 2.0."""
    steps, increment = 10_000, 1e-4
    plain = torch.ones(64, dtype=torch.bfloat16)
    kahan = torch.ones(64, dtype=torch.bfloat16)
    comp = torch.zeros(64, dtype=torch.bfloat16)
    stochastic = torch.ones(64, dtype=torch.bfloat16)
    for t in range(steps):
        plain.copy_(plain.float() + increment)
        rounding.kahan_write_(kahan, comp, rounding.kahan_value(kahan, comp) + increment)
        words = rounding.random_words(stochastic.shape, rounding.stream_key(0, t))
        stochastic.copy_(rounding.stochastic_round(stochastic.float() + increment,
                                                   torch.bfloat16, words))
    exact = 1.0 + steps * increment
    assert torch.all(plain == 1.0)
    # the bf16 compensation holds ~8 more bits: a bias of ~1e-6 per step remains
    assert torch.allclose(rounding.kahan_value(kahan, comp), torch.full((64,), exact), rtol=0.03)
    # each element ends 0.09 from 2 (sd); the mean of 64 has sd 0.011
    assert abs(stochastic.float().mean().item() - exact) < 0.05


# ----------------------------------------------------------------------------- policy
ADAM = (step_stat, average_grad, average_sqr_grad, adam_step)
ADAM_STORAGE = {"step": Storage.COUNTER, "grad_avg": Storage.SIGNED, "sqr_avg": Storage.POSITIVE}
INITS = {"step": step_counter, "grad_avg": zeros, "sqr_avg": zeros}


def run_adam(params, policy, steps=30, lr=1e-2):
    """Adam's parts over one bucket per policy class (8-bit or not), as an executor runs them."""
    group = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator().manual_seed(0)
    storages = {**ADAM_STORAGE, **(policy.extra_state(ADAM_STORAGE) if policy else {})}
    state, offsets, total = {}, {}, 0
    for p in params:
        offsets[p], total = total, total + p.numel()
    for _ in range(steps):
        for p in params:
            noise = torch.randn(p.shape, generator=gen)
            p.grad = (0.1 * noise + 0.05 * p.float()).to(p.dtype)
            if p not in state:
                values = {name: INITS.get(name, step_counter)(p, group) for name in storages}
                state[p] = policy.create(p, values, storages) if policy else values
        for ps in ([p for p in params if q.quantizes(p.numel())],
                   [p for p in params if not q.quantizes(p.numel())]):
            if not ps:
                continue
            lists = {name: [state[p][name] for p in ps] for name in state[ps[0]]}
            bucket = Bucket(list(ps), [p.grad for p in ps], lists, {})
            stored = policy.prepare(bucket, storages, [offsets[p] for p in ps]) if policy else None
            for part in ADAM:
                part(bucket, group)
            if policy:
                policy.finalize(bucket, stored)
                assert bucket.params == ps  # the stored tensors again
    return state


def _params(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.randn(64, 128).to(dtype), torch.randn(300).to(dtype)]


def _distance(params, reference, start):
    return max(((p.double() - r.double()).norm() / (r.double() - s.double()).norm()).item()
               for p, r, s in zip(params, reference, start))


def test_plain_policy_changes_nothing():
    start = _params()
    ref, out = [p.clone() for p in start], [p.clone() for p in start]
    run_adam(ref, None)
    state = run_adam(out, Precision())
    assert all(torch.equal(a, b) for a, b in zip(ref, out))
    assert set(state[out[0]]) == {"step", "grad_avg", "sqr_avg"}


@pytest.mark.slow
def test_eight_bit_state_follows_fp32_adam_in_two_bytes_per_param():
    start = _params()
    ref, out = [p.clone() for p in start], [p.clone() for p in start]
    run_adam(ref, None)
    state = run_adam(out, Precision(state_bits=8))
    big = state[out[0]]
    assert big["grad_avg"].dtype == torch.uint8 and big["sqr_avg"].dtype == torch.uint8
    assert state_bytes(big) - 4 <= 2.1 * out[0].numel()  # the 4 bytes are the step counter
    assert state[out[1]]["grad_avg"].dtype == torch.float32  # small: not quantized
    assert _distance(out, ref, start) < 0.05
    assert torch.equal(out[1], ref[1])  # the small tensor's state is fp32: the same Adam


def test_bf16_state_for_fp32_params_halves_memory_and_follows_fp32():
    start = _params()
    ref, out = [p.clone() for p in start], [p.clone() for p in start]
    run_adam(ref, None)
    state = run_adam(out, Precision(state_dtype=torch.bfloat16, seed=1))
    assert state[out[0]]["sqr_avg"].dtype == torch.bfloat16
    assert state_bytes(state[out[0]]) - 4 == 4 * out[0].numel()
    assert _distance(out, ref, start) < 0.02


def test_bf16_params_with_fp32_state_compute_in_fp32():
    """bf16 params, fp32 state: a step is fp32 math on the bf16 values, rounded once into the
    params. Adam's first step moves each param by lr (m / sqrt(v) = sign(g)), so it is the fp32
    step from the same values, rounded to bf16."""
    start = _params(torch.bfloat16)
    out = [p.clone() for p in start]
    state = run_adam(out, Precision(state_dtype=torch.float32), steps=1)
    assert state[out[0]]["grad_avg"].dtype == torch.float32
    twin = [p.float() for p in start]
    run_adam(twin, None, steps=1)
    for p, t in zip(out, twin):
        assert (p == t.bfloat16()).float().mean() > 0.999


@pytest.mark.parametrize("update", ["stochastic", "kahan"])
def test_bf16_param_updates_get_closer_to_fp32_than_plain_bf16(update):
    start = _params(torch.bfloat16)
    reference = [p.float() for p in start]
    run_adam(reference, None, steps=60, lr=1e-3)
    plain = [p.clone() for p in start]
    run_adam(plain, None, steps=60, lr=1e-3)
    better = [p.clone() for p in start]
    state = run_adam(better, Precision(param_update=update, state_dtype=torch.float32, seed=3),
                     steps=60, lr=1e-3)
    if update == "kahan":
        assert state[better[0]][COMPENSATION].dtype == torch.bfloat16
        better = [rounding.kahan_value(p, state[p][COMPENSATION]) for p in better]
    base = [s.float() for s in start]
    assert _distance(better, reference, base) < 0.5 * _distance(plain, reference, base)


def test_stochastic_policy_reproduces_from_its_seed():
    runs = []
    for seed in (5, 5, 6):
        out = [p.clone() for p in _params(torch.bfloat16)]
        run_adam(out, Precision(param_update="stochastic", seed=seed), steps=5)
        runs.append(out)
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_from_keywords_draws_the_seed_from_the_generator():
    a = Precision.from_keywords(param_update="stochastic",
                                generator=torch.Generator().manual_seed(1))
    b = Precision.from_keywords(param_update="stochastic",
                                generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    c = Precision.from_keywords(param_update="stochastic")
    torch.manual_seed(0)
    d = Precision.from_keywords(param_update="stochastic")
    assert a.seed == b.seed and c.seed == d.seed


# ------------------------------------------------------------------------------ checks
def test_bad_keywords_are_refused_naming_them():
    with pytest.raises(ValueError, match="state_dtype"):
        Precision(state_dtype=torch.float16)
    with pytest.raises(ValueError, match="state_bits"):
        Precision(state_bits=4)
    with pytest.raises(ValueError, match="state_bits"):
        Precision(state_bits=True)
    with pytest.raises(ValueError, match="param_update"):
        Precision(param_update="round")


def test_nonsense_combinations_are_refused():
    fp32 = [torch.zeros(3)]
    with pytest.raises(ValueError, match="param_update='stochastic'.*float32"):
        Precision(param_update="stochastic").check(ADAM_STORAGE, fp32, "Adam")
    Precision(param_update="kahan").check(ADAM_STORAGE, [*fp32, torch.zeros(2).bfloat16()], "A")
    lookahead = {**ADAM_STORAGE, "slow_param": Storage.EXACT}
    with pytest.raises(ValueError, match="'slow_param' cannot be quantized: it is a copy"):
        Precision(state_bits={"slow_param": 8}).check(lookahead, fp32, "Ranger")
    with pytest.raises(ValueError, match="no state 'momentum_buffer'"):
        Precision(state_bits={"momentum_buffer": 8}).check(ADAM_STORAGE, fp32, "Adam")
    with pytest.raises(ValueError, match="no state that may be quantized"):
        Precision(state_bits=8).check({"layer_sqr_avg": Storage.SCALAR}, fp32, "X")
    Precision(state_bits=8).check(lookahead, fp32, "Ranger")  # the moments are quantized


def test_exact_and_scalar_state_keep_the_wider_dtype():
    policy = Precision(state_dtype=torch.bfloat16, state_bits=8)
    p = torch.zeros(10_000)
    values = {"slow_param": p.clone(), "layer_sqr_avg": torch.zeros(()),
              "step": step_counter(p, {}), "grad_avg": torch.zeros_like(p)}
    storages = {"slow_param": Storage.EXACT, "layer_sqr_avg": Storage.SCALAR,
                "step": Storage.COUNTER, "grad_avg": Storage.SIGNED}
    out = policy.create(p, values, storages)
    assert out["slow_param"].dtype == torch.float32
    assert out["layer_sqr_avg"].dtype == torch.float32
    assert out["step"] is values["step"]
    assert out["grad_avg"].dtype == torch.uint8
    small = policy.create(torch.zeros(10), {"grad_avg": torch.zeros(10)}, storages)
    assert small["grad_avg"].dtype == torch.bfloat16  # below MIN_NUMEL: state_dtype
    bf16 = Precision(state_dtype=torch.float32).create(
        p.bfloat16(), {"slow_param": p.bfloat16()}, storages)
    assert bf16["slow_param"].dtype == torch.float32


def test_conform_converts_between_policies_and_keeps_its_own_form_exactly():
    p = torch.zeros(5000)
    storages = {"grad_avg": Storage.SIGNED, "sqr_avg": Storage.POSITIVE, "step": Storage.COUNTER}
    fp32 = {"grad_avg": heavy_tailed(5000), "sqr_avg": heavy_tailed(5000, 1).abs(),
            "step": torch.tensor(3.0)}
    eight = Precision(state_bits=8)
    state = dict(fp32)
    eight.conform(p, state, storages)
    assert state["grad_avg"].dtype == torch.uint8 and "sqr_avg" + ABSMAX_SUFFIX in state
    saved = {k: v.clone() for k, v in state.items()}
    eight.conform(p, state, storages)  # already in form: untouched, bit for bit
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    back = dict(saved)
    Precision().conform(p, back, storages)  # into a plain optimizer: dequantized
    assert back["grad_avg"].dtype == torch.float32 and "grad_avg" + ABSMAX_SUFFIX not in back
    assert torch.allclose(back["grad_avg"], fp32["grad_avg"],
                          atol=0.008 * fp32["grad_avg"].abs().max())
    assert torch.equal(back["step"], fp32["step"])
    with pytest.raises(ValueError, match="without their absmax"):
        Precision().conform(p, {"grad_avg": saved["grad_avg"]}, storages)
