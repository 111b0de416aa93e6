"""Flat mode: every registered optimizer gives the same trajectory with ``flat=True``."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from conftest import optims
from helpers import build_fast, clone_params, make_params, run

import optimkit
from optimkit.core import compiled, scratch, tensorlists
from optimkit.core import flat as flat_module
from optimkit.core.flat import FlatBucket, FlatStore

needs_compiler = pytest.mark.skipif(
    not compiled.has_cxx_compiler(), reason="inductor needs a C++ compiler on the CPU"
)


def _flat_pair(info, **kwargs):
    start = make_params(torch.float64)
    plain, flat = clone_params(start), clone_params(start)
    kwargs = {**info.pinned, **info.converge, **kwargs}
    return plain, info.factory(plain, **kwargs), flat, build_fast(info, flat, flat=True, **kwargs)


def _assert_same(info, ours, theirs, opt_a, opt_b):
    for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(
            p, q, rtol=1e-9, atol=1e-12, msg=lambda m, i=i: f"param {i}: {m}"
        )
        for name, value in opt_a.state[p].items():
            torch.testing.assert_close(opt_b.state[q][name], value, rtol=1e-9, atol=1e-12)


@optims()
def test_flat_matches_per_tensor(info):
    plain, opt_plain, flat, opt_flat = _flat_pair(info)
    run(opt_plain, plain, 30)
    run(opt_flat, flat, 30)
    _assert_same(info, plain, flat, opt_plain, opt_flat)


@optims()
def test_flat_matches_with_skipped_grads(info):
    # Param 1 sits out some steps: the flat step falls back to per tensor, then returns.
    skip = lambda step, i: i == 1 and step % 5 == 2
    plain, opt_plain, flat, opt_flat = _flat_pair(info)
    run(opt_plain, plain, 20, skip=skip)
    run(opt_flat, flat, 20, skip=skip)
    _assert_same(info, plain, flat, opt_plain, opt_flat)


def test_params_and_grads_are_views_of_one_buffer():
    params = clone_params(make_params(torch.float32))
    opt = optimkit.Adam(params, flat=True)
    run(opt, params, 2)
    (store,) = opt._executor.stores[0]
    base = store.param.untyped_storage().data_ptr()
    assert all(p.untyped_storage().data_ptr() == base for p in params)
    grad_base = store.grad.untyped_storage().data_ptr()
    assert all(p.grad.untyped_storage().data_ptr() == grad_base for p in params)
    for name in ("grad_avg", "sqr_avg", "step"):
        flat_ptr = store.state[name].untyped_storage().data_ptr()
        assert all(opt.state[p][name].untyped_storage().data_ptr() == flat_ptr for p in params)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_has_torchs_semantics_and_the_step_uses_the_views(set_to_none):
    # set_to_none=True: grads become None, backward makes fresh ones, the step copies them in;
    # set_to_none=False: the views stay and backward accumulates into them (no copy).
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    opt = optimkit.SGD(model.parameters(), lr=0.1, flat=True)
    (store,) = opt._executor.stores[0]
    views = lambda: all(p.grad is v for p, v in zip(model.parameters(), store.grad_views,
                                                      strict=True))
    for step in range(3):
        opt.zero_grad(set_to_none=set_to_none)
        if set_to_none or step == 0:  # (no grad yet: nothing to zero, as in torch)
            assert all(p.grad is None for p in model.parameters())
        else:
            assert views() and not store.grad.any()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        assert views() == (not set_to_none and step > 0)
        expected = [p.detach() - 0.1 * p.grad for p in model.parameters()]
        opt.step()
        assert views()
        for p, e in zip(model.parameters(), expected, strict=True):
            torch.testing.assert_close(p.detach(), e)


def test_grad_set_to_none_elsewhere_skips_that_param():
    params = clone_params(make_params(torch.float64))
    opt = optimkit.Adam(params, lr=0.1, flat=True)
    run(opt, params, 2)
    before = params[0].detach().clone()
    for p in params:
        p.grad = None if p is params[0] else torch.ones_like(p)
    opt.step()
    torch.testing.assert_close(params[0].detach(), before)
    assert float(opt.state[params[0]]["step"]) == 2 and float(opt.state[params[1]]["step"]) == 3


@pytest.mark.parametrize("direction", ["flat_to_plain", "plain_to_flat"])
def test_checkpoints_interchange(direction):
    start = make_params(torch.float64)
    src_params, dst_params, ref_params = (clone_params(start) for _ in range(3))
    src_flat = direction == "flat_to_plain"
    src = optimkit.Adam(src_params, lr=0.1, flat=src_flat)
    ref = optimkit.Adam(ref_params, lr=0.1)
    run(src, src_params, 5)
    run(ref, ref_params, 5)
    buffer = io.BytesIO()
    torch.save(src.state_dict(), buffer)
    sd = torch.load(io.BytesIO(buffer.getvalue()))
    assert set(sd["state"][0]) == {"step", "grad_avg", "sqr_avg"}
    assert sd["state"][0]["grad_avg"].shape == start[0].shape
    with torch.no_grad():
        for d, s in zip(dst_params, src_params, strict=True):
            d.copy_(s)
    dst = optimkit.Adam(dst_params, lr=0.1, flat=not src_flat)
    dst.load_state_dict(sd)
    run(dst, dst_params, 5, start=5)
    run(ref, ref_params, 5, start=5)
    for p, q in zip(dst_params, ref_params, strict=True):
        torch.testing.assert_close(p, q)


def _flat_and_plain(shapes, dtype=torch.float64, views=False):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    others = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    plain = optimkit.Bucket(params, others, {}, {})
    store = FlatStore([p.clone() for p in params])
    other = store._flat_copy(others, dtype)
    # the padding may hold anything (a NaN where a param-sized value divided 0 by 0): no
    # reduction may see it
    for buffer in (store.param, other):
        pad = torch.ones(store.total, dtype=torch.bool)
        for start, n in zip(store.starts, store.sizes, strict=True):
            pad[start:start + n] = False
        buffer[pad] = float("nan")
    rows = store.rows_view
    flat = FlatBucket([rows(store.param)], [rows(other)], {}, {}, store.layout,
                      gaps=store.gaps if views else None)
    return plain, flat


# sizes around the row length, a 0-d and an empty param
SHAPES = [(3,), (2, 70), (), (0,), (flat_module.CHUNK,), (5, 1, 2 * flat_module.CHUNK + 1)]


def _reductions(b):
    return (b.sum_squares(b.params, b.grads), b.norms(b.params),
            b.dots((b.params, b.grads), (b.grads, b.grads)))


@pytest.mark.parametrize(
    "mode", ["rows", "views", pytest.param("compile", marks=[needs_compiler, pytest.mark.slow])])
def test_per_param_reductions_on_the_flat_layout(mode):
    # eager: row sums (many params) or views of each param (few); compiled: masked row sums
    plain, flat = _flat_and_plain(SHAPES, views=mode == "views")
    expected = _reductions(plain)
    if mode == "compile":
        compiled.register_inductor_prims()
        run_flat = torch.compile(lambda p, g, layout: _reductions(
            FlatBucket([p], [g], {}, {}, layout)), dynamic=False)
        got = run_flat(flat.params[0], flat.grads[0], flat.layout)
    else:
        got = _reductions(flat)
    for want, have in zip(expected, got, strict=True):
        assert have.shape == want.shape
        torch.testing.assert_close(have, want)


@optims()
def test_cache_blocks_step_as_the_whole_bucket(info, monkeypatch):
    # On the CPU an eager or flat step runs its parts over blocks of params (Bucket.blocks):
    # with blocks of a few elements every param is a block of its own (eager), or the flat
    # buffers are cut between params; the steps must not change.
    start = make_params(torch.float64)
    plain, blocked, flat = clone_params(start), clone_params(start), clone_params(start)
    kwargs = {**info.pinned, **info.converge}
    opt_plain = info.factory(plain, **kwargs)
    run(opt_plain, plain, 6)
    monkeypatch.setattr(tensorlists, "CPU_BLOCK_BYTES", 64)
    monkeypatch.setattr(flat_module, "CPU_BLOCK_BYTES", 64)
    blocks = []
    real = tensorlists.Bucket.blocks
    monkeypatch.setattr(tensorlists.Bucket, "blocks",
                        lambda b, *a: blocks.append(len(real(b, *a))) or real(b, *a))
    real_flat = FlatBucket.blocks
    monkeypatch.setattr(FlatBucket, "blocks", lambda b, *a: blocks.append(len(real_flat(b)))
                        or real_flat(b))
    opt_blocked = info.factory(blocked, **kwargs)
    opt_flat = build_fast(info, flat, flat=True, **kwargs)
    run(opt_blocked, blocked, 6)
    run(opt_flat, flat, 6)
    # every param its own block once state exists; a recipe with a part that reads shapes (and
    # runs in these groups: Ranger's gc is switched by use_gc) steps per tensor in flat mode
    # too, so its blocks are Bucket's (8 float64s at most)
    groups = opt_flat.param_groups
    shaped = any(part.shaped and all(part.active(g) for g in groups)
                 for part in info.factory.parts)
    want = len(tensorlists.block_ranges([p.numel() for p in start], 8)) if shaped else len(start)
    assert max(blocks) == want, blocks
    for p, q, r in zip(plain, blocked, flat, strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
        torch.testing.assert_close(r, p, rtol=1e-9, atol=1e-12)
        for name, value in opt_plain.state[p].items():
            torch.testing.assert_close(opt_blocked.state[q][name], value, rtol=0, atol=0)
            torch.testing.assert_close(opt_flat.state[r][name], value, rtol=1e-9, atol=1e-12)


def test_cache_blocks_hold_the_working_set(monkeypatch):
    # An eager CPU block holds at most BLOCK_WORKING_SET bytes over its param-sized lists:
    # Prodigy's six (p, g, m, v, s, p0) cut half the blocks' size of CPU_BLOCK_BYTES; Adam's
    # bias corrections read the step counts, so its blocks keep CPU_BLOCK_BYTES per list.
    from optimkit.core import executor

    monkeypatch.setattr(tensorlists, "CPU_BLOCK_BYTES", 64 * 4)
    monkeypatch.setattr(executor, "BLOCK_WORKING_SET", 3 * 64 * 4)
    limits = []
    real = tensorlists.Bucket.blocks
    monkeypatch.setattr(tensorlists.Bucket, "blocks",
                        lambda b, limit=None: limits.append(limit) or real(b, limit))
    for factory, want in ((optimkit.Prodigy, 3 * 64 * 4 // 6), (optimkit.Adam, 64 * 4)):
        params = [torch.nn.Parameter(torch.ones(16)) for _ in range(8)]
        opt = factory(params)
        for _ in range(2):
            for p in params:
                p.grad = torch.full_like(p, 0.5)
            opt.step()
        assert limits and set(limits) == {want}, (factory, limits)
        limits.clear()


@optims()
def test_pooled_scratch_steps_as_fresh_temporaries(info, monkeypatch):
    # Blocks of params of 32 MiB or more compute their out-of-place foreach results into
    # buffers kept between steps (core/scratch.py); with the threshold at 0 every block does,
    # eager and flat, and the steps keep every bit.
    start = make_params(torch.float64)
    kwargs = {**info.pinned, **info.converge}
    plain, flat = clone_params(start), clone_params(start)
    opt_plain, opt_flat = info.factory(plain, **kwargs), build_fast(info, flat, flat=True, **kwargs)
    run(opt_plain, plain, 6)
    run(opt_flat, flat, 6)
    monkeypatch.setattr(scratch, "MMAP_BYTES", 0)
    pooled, pooled_flat = clone_params(start), clone_params(start)
    opt_pooled = info.factory(pooled, **kwargs)
    opt_pooled_flat = build_fast(info, pooled_flat, flat=True, **kwargs)
    run(opt_pooled, pooled, 6)
    run(opt_pooled_flat, pooled_flat, 6)
    for want, have, opt_want, opt_have in ((plain, pooled, opt_plain, opt_pooled),
                                           (flat, pooled_flat, opt_flat, opt_pooled_flat)):
        for p, q in zip(want, have, strict=True):
            torch.testing.assert_close(q, p, rtol=0, atol=0)
            for name, value in opt_want.state[p].items():
                torch.testing.assert_close(opt_have.state[q][name], value, rtol=0, atol=0)


def test_scratch_buffers_are_reused_and_bounded_by_one_block(monkeypatch):
    # LAMB's direction (one param-sized list) goes to one pooled buffer per block, the same
    # one every step and for every block: the pool holds the largest block's temporaries
    monkeypatch.setattr(scratch, "MMAP_BYTES", 0)
    monkeypatch.setattr(tensorlists, "CPU_BLOCK_BYTES", 64)
    params = [torch.randn(n, requires_grad=True) for n in (300, 100, 200)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = optimkit.LAMB(params, weight_decay=0.01)
    opt.step()  # creates the state: one bucket, fresh temporaries
    opt.step()
    pool = opt._executor.scratch
    held = [b.data_ptr() for b in pool.buffers]
    assert pool.nbytes == 300 * 4, pool.nbytes
    opt.step()
    assert [b.data_ptr() for b in pool.buffers] == held


def test_a_cache_block_frees_its_temporaries_before_the_next(monkeypatch):
    # LAMB's eager step makes one param-sized list (its direction) per block: the step's peak
    # is one block's, not the bucket's (the blocks are stepped one after the other)
    from benchmarks.counting import TemporaryPeak

    block = 4096
    monkeypatch.setattr(tensorlists, "CPU_BLOCK_BYTES", block * 4)
    params = [torch.randn(block, requires_grad=True) for _ in range(8)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = optimkit.LAMB(params, weight_decay=0.01)
    opt.step()  # creates the state, as one bucket
    with TemporaryPeak() as tracker:
        opt.step()
    assert block * 4 <= tracker.peak < 2 * block * 4, tracker.peak


def test_per_param_numbers_broadcast_over_each_param():
    plain, flat = _flat_and_plain(SHAPES)
    values = torch.arange(1.0, len(SHAPES) + 1, dtype=torch.float64)
    scaled = torch._foreach_mul(flat.grads, flat.expand(values))[0].reshape(-1)
    expected = torch._foreach_mul(plain.grads, plain.expand(values))
    store_views = [scaled[s:s + t.numel()] for s, t in zip(
        [int(flat.bounds[i]) * flat_module.CHUNK for i in range(len(SHAPES))], expected,
        strict=True)]
    for have, want in zip(store_views, expected, strict=True):
        torch.testing.assert_close(have, want.reshape(-1))
    assert flat.ndims.tolist() == plain.ndims.tolist() == [len(s) for s in SHAPES]
    assert flat.count == plain.count == len(SHAPES)


def test_flat_refuses_complex_params():
    with pytest.raises(ValueError, match="flat=True"):
        optimkit.Adam([torch.zeros(2, dtype=torch.complex64, requires_grad=True)], flat=True)


def test_eager_reuses_bucket_lists_only_while_valid():
    # The eager step caches its bucket lists; load_state_dict and grad changes must refresh them.
    start = make_params(torch.float64)
    params, ref_params = clone_params(start), clone_params(start)
    opt = optimkit.Adam(params, lr=0.1)
    ref = optimkit.Adam(ref_params, lr=0.1)
    run(opt, params, 3)
    run(ref, ref_params, 3)
    saved = copy.deepcopy(opt.state_dict())  # torch returns live tensors
    saved_params = [p.detach().clone() for p in params]
    run(opt, params, 3, start=3)  # moves on, with cached lists
    opt.load_state_dict(saved)  # replaces every state tensor
    with torch.no_grad():
        for p, s in zip(params, saved_params, strict=True):
            p.copy_(s)
    skip = lambda step, i: i == 2 and step == 4
    run(opt, params, 3, start=3, skip=skip)
    run(ref, ref_params, 3, start=3, skip=skip)
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p, q)


def test_accelerate_reaches_the_optimizer_inside_a_wrapper():
    class Wrapper:  # the shape of Lookahead: the inner optimizer under .optimizer
        def __init__(self, optimizer):
            self.optimizer = optimizer

    start = make_params(torch.float64)
    plain, flat = clone_params(start), clone_params(start)
    reference = optimkit.RAdam(plain, lr=0.1)
    run(reference, plain, 3)
    inner = optimkit.RAdam(flat, lr=0.1)
    run(inner, flat, 3)  # turned on mid-training: the existing state moves into the buffers
    assert optimkit.accelerate(Wrapper(inner), flat=True).optimizer is inner
    run(reference, plain, 4, start=3)
    run(inner, flat, 4, start=3)
    (store,) = inner._executor.stores[0]
    assert set(store.state) == {"step", "grad_avg", "sqr_avg"}
    for p, q in zip(plain, flat, strict=True):
        torch.testing.assert_close(p, q)
    with pytest.raises(ValueError, match="optimizer"):
        optimkit.accelerate(Wrapper(torch.optim.SGD(plain)), flat=True)
    with pytest.raises(ValueError, match="flat"):
        inner.set_speed(flat=False)


@optims()
def test_flat_mode_steps_as_one_tensor(info, monkeypatch):
    from optimkit.core.executor import Executor

    sizes = []
    real = Executor.run
    monkeypatch.setattr(
        Executor,
        "run",
        lambda self, bucket, *a, **k: sizes.append(len(bucket)) or real(self, bucket, *a, **k),
    )
    _, _, flat, opt = _flat_pair(info)
    run(opt, flat, 3)
    assert sizes, "the flat step never ran"
    # the first step creates the state per tensor; every later one is one flat tensor, the
    # layer-wise recipes' included (their norms are row reductions over the buffer)
    assert sizes[0] == len(flat) and all(n == 1 for n in sizes[1:]), sizes


def test_load_state_dict_keeps_flat_mode():
    # torch's load_state_dict resets the optimizer's __dict__ through __setstate__; the
    # executor, which holds the mode and the buffers, survives it.
    start = make_params(torch.float64)
    params, ref_params = clone_params(start), clone_params(start)
    opt, ref = optimkit.Adam(params, lr=0.1, flat=True), optimkit.Adam(ref_params, lr=0.1)
    run(opt, params, 3)
    run(ref, ref_params, 3)
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt._executor.flat
    (store,) = opt._executor.stores[0]
    run(opt, params, 3, start=3)
    run(ref, ref_params, 3, start=3)
    flat_ptr = store.state["sqr_avg"].untyped_storage().data_ptr()
    assert all(opt.state[p]["sqr_avg"].untyped_storage().data_ptr() == flat_ptr for p in params)
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p, q)
