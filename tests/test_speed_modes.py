"""The speed modes never change what is optimized, for every registered optimizer.

``flat=True`` and ``compile=True`` skip the params eager mode skips (no grad, frozen), refuse
what it refuses (sparse grads) before anything moves, survive deepcopy, pickling and
``torch.save`` of ``(model, optimizer)``, stay on across ``load_state_dict`` and
``optimkit.lr_find``, and a numeric hyper-parameter that follows a schedule never recompiles.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from conftest import optims
from helpers import build_fast
from torch._dynamo.utils import counters

import optimkit
from optimkit.core import compiled

needs_compiler = pytest.mark.skipif(
    not compiled.has_cxx_compiler(), reason="inductor needs a C++ compiler on the CPU"
)


def _modes(opt) -> tuple[bool, bool]:
    """(flat, compile) as the optimizer runs them now."""
    return opt._executor.flat, opt._executor.compile


def _model(seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ).double()


def _batch(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(6, 3, generator=gen, dtype=torch.float64)


def _train(model, opt, steps, start=0, forward=None):
    for step in range(start, start + steps):
        opt.zero_grad()
        (forward or model)(_batch(step)).pow(2).mean().backward()
        opt.step()


def _kwargs(info):
    return {**info.pinned, **info.converge}


def _values(model):
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------ row 1: params without grads
@optims()
def test_flat_mode_skips_frozen_params_and_params_outside_the_loss(info):
    # Lightning calls opt.zero_grad(); a frozen bias and a layer the loss never reaches get no
    # gradient, so eager mode (and torch.optim) leaves them and their state alone.
    models = []
    for flat in (False, True):
        model = torch.nn.ModuleDict({"used": _model(), "unused": torch.nn.Linear(2, 2).double()})
        model["used"][0].bias.requires_grad_(False)
        opt = build_fast(info, model.parameters(), flat=flat, **_kwargs(info))
        start = _values(model)
        _train(model, opt, 6, forward=model["used"])
        models.append((model, opt, start))
    (eager, _, _), (flat_model, flat_opt, start) = models
    skipped = [flat_model["used"][0].bias, *flat_model["unused"].parameters()]
    for p in skipped:
        before = start[[q is p for q in flat_model.parameters()].index(True)]
        assert torch.equal(p.detach(), before), "flat mode moved a param eager mode skips"
        assert not flat_opt.state[p], "flat mode gave state to a param without grads"
    for p, q in zip(eager.parameters(), flat_model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------------------- row 2: sparse grads
@optims()
def test_flat_mode_refuses_sparse_grads_before_anything_moves(info):
    torch.manual_seed(0)
    dense, embedding = torch.nn.Linear(3, 1).double(), torch.nn.Embedding(10, 3, sparse=True)
    embedding.double()
    # the sparse param in the second group: a late check would have stepped the first one
    groups = [{"params": list(dense.parameters())}, {"params": list(embedding.parameters())}]
    opt = build_fast(info, groups, flat=True, **_kwargs(info))
    before = [p.detach().clone() for g in groups for p in g["params"]]
    opt.zero_grad()
    dense(embedding(torch.tensor([1, 2, 2]))).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    after = [p.detach() for g in groups for p in g["params"]]
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


# ------------------------------------------------------------ row 3: copies of (model, optimizer)
def _deepcopy(pair):
    return copy.deepcopy(pair)


def _pickle(pair):
    return pickle.loads(pickle.dumps(pair))


def _torch_save(pair):
    buffer = io.BytesIO()
    torch.save(pair, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


COPIES = {"deepcopy": _deepcopy, "pickle": _pickle, "torch.save": _torch_save}


@optims(cases=lambda info: [(how, (how,)) for how in COPIES], argnames="info,how")
def test_a_copy_of_model_and_flat_optimizer_trains_like_the_original(info, how):
    model = _model()
    opt = build_fast(info, model.parameters(), flat=True, **_kwargs(info))
    _train(model, opt, 3)
    twin, twin_opt = COPIES[how]((model, opt))
    _train(twin, twin_opt, 4, start=3)
    assert _modes(twin_opt) == (True, False)
    moved = _values(twin)
    _train(model, opt, 4, start=3)  # the original, unaffected by the copy's steps
    for p, q in zip(_values(model), moved, strict=True):
        assert torch.equal(p, q)


# ------------------------------------------------------------------- row 4: modes across resume
def _roundtrip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _move_state_entries(opt):
    # What Lightning's strategy does after loading (optimizer_to_device): each param's entry
    # replaced by a new dict of moved tensors (copies here, as a move to another device makes).
    for p in list(opt.state):
        opt.state[p] = {k: v.clone() if isinstance(v, torch.Tensor) else v
                        for k, v in opt.state[p].items()}


@optims(cases=lambda info: [("hf", (False,)), ("lightning", (True,))], argnames="info,move")
def test_load_state_dict_keeps_flat_mode_and_resumes_bit_exactly(info, move):
    # What every resume does: build, load, continue (HF Trainer); Lightning also moves the
    # state entries to the device afterwards.
    straight = _model()
    uninterrupted = build_fast(info, straight.parameters(), flat=True, **_kwargs(info))
    _train(straight, uninterrupted, 10)
    model = _model()
    first = build_fast(info, model.parameters(), flat=True, **_kwargs(info))
    _train(model, first, 5)
    checkpoint = _roundtrip(first.state_dict())
    resumed = _model()
    second = build_fast(info, resumed.parameters(), flat=True, **_kwargs(info))
    _train(resumed, second, 2, start=20)  # a used optimizer: its flat buffers exist
    resumed.load_state_dict(model.state_dict())
    second.load_state_dict(checkpoint)
    if move:
        _move_state_entries(second)
    assert _modes(second) == (True, False)
    _train(resumed, second, 5, start=5)
    assert _modes(second) == (True, False)
    for p, q in zip(_values(resumed), _values(straight), strict=True):
        assert torch.equal(p, q)
    ours, theirs = second.state_dict()["state"], uninterrupted.state_dict()["state"]
    for index, entry in theirs.items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(ours[index][name]), torch.as_tensor(value)), name


@pytest.mark.slow
@needs_compiler
def test_load_state_dict_keeps_the_compiled_step():
    model = _model()
    opt = optimkit.Adam(model.parameters(), lr=1e-2, compile=True)
    _train(model, opt, 3)
    fresh = optimkit.Adam(model.parameters(), lr=1e-2, compile=True)
    fresh.load_state_dict(_roundtrip(opt.state_dict()))
    torch._dynamo.reset()
    counters.clear()
    _train(model, fresh, 2, start=3)
    assert _modes(fresh) == (True, True)
    assert counters["stats"]["unique_graphs"] >= 1, "the compiled step no longer runs"


def test_lr_find_keeps_the_speed_modes():
    model = _model()
    opt = optimkit.Adam(model.parameters(), lr=1e-2, flat=True)
    _train(model, opt, 2)
    data = [(_batch(i), torch.zeros(6, 2, dtype=torch.float64)) for i in range(4)]
    optimkit.lr_find(
        opt, model=model, loss_fn=torch.nn.functional.mse_loss, batches=data, num_steps=6
    )
    assert _modes(opt) == (True, False)


# ------------------------------------------------------- row 10: numeric hypers under compile
@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize(
    ("factory", "hyper", "values"),
    [
        (lambda p, **kw: optimkit.Adam(p, lr=1e-2, weight_decay=0.1, **kw),
         "weight_decay", (0.2, 0.05, 0.3)),
        (lambda p, **kw: optimkit.Adam(p, lr=1e-2, **kw), "eps", (1e-6, 1e-3, 1e-4)),
        (lambda p, **kw: optimkit.SGD(p, lr=1e-2, momentum=0.9, dampening=0.1, **kw),
         "dampening", (0.3, 0.05, 0.5)),
    ],
    ids=["adam-weight_decay", "adam-eps", "sgd-dampening"],
)
def test_a_numeric_hyper_schedule_never_recompiles_and_is_honoured(factory, hyper, values):
    torch._dynamo.reset()
    counters.clear()
    fast_model, eager_model = _model(), _model()
    fast = factory(fast_model.parameters(), compile=True)
    eager = factory(eager_model.parameters(), flat=True)
    _train(fast_model, fast, 2)  # the first step creates state, eagerly; the second compiles
    _train(eager_model, eager, 2)
    compiled_once = counters["stats"]["unique_graphs"]
    assert compiled_once >= 1
    for i, value in enumerate(values):
        for opt in (fast, eager):
            opt.param_groups[0][hyper] = value
        _train(fast_model, fast, 1, start=2 + i)
        _train(eager_model, eager, 1, start=2 + i)
    assert counters["stats"]["unique_graphs"] == compiled_once, f"a new {hyper} recompiled"
    for p, q in zip(_values(fast_model), _values(eager_model), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9)
    torch._dynamo.reset()
