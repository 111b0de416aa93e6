"""Compiled mode: every optimizer matches its eager self; schedules never recompile."""

from __future__ import annotations

import optim_db
import pytest
import torch
from conftest import ALL_MODES, SLOW, covering, engine_features, optims
from helpers import build_fast, clone_params, make_params, run
from torch._dynamo.utils import counters

import optimkit
from optimkit.core import compiled, stepper

pytestmark = SLOW  # nearly every test compiles a step: seconds to tens of seconds each

needs_compiler = pytest.mark.skipif(
    not compiled.has_cxx_compiler(), reason="inductor needs a C++ compiler on the CPU"
)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _part_signature(info):
    recipe = info.factory.recipe
    return {part.name for part in recipe.parts} | engine_features(recipe)


# Inductor compiles each part's math in at least one recipe here (24 of 36 optimizers cover
# every part and engine feature); every optimizer's whole graph is held bit for bit to its
# eager step by test_traced_per_tensor_step_is_the_eager_step_bit_for_bit below, and
# OPTIMKIT_TEST_ALL_MODES=1 (CI) compiles them all.
PART_COVER = set(covering(optim_db.DB, _part_signature))


@needs_compiler
@optims(where=lambda info: ALL_MODES or info.name in PART_COVER)
def test_compiled_matches_eager(info):
    # flat=True: one tensor per list, so each recipe compiles in seconds
    start = make_params(torch.float32)
    eager_params, compiled_params = clone_params(start), clone_params(start)
    kwargs = {**info.pinned, **info.converge}
    eager = build_fast(info, eager_params, flat=True, **kwargs)
    fast = build_fast(info, compiled_params, flat=True, compile=True, **kwargs)
    # as many steps as the parity tests, which hold the flat eager steps to the references
    run(eager, eager_params, 120)
    run(fast, compiled_params, 120)
    assert _graphs() >= 1, "the step never went through torch.compile"
    for i, (p, q) in enumerate(zip(eager_params, compiled_params, strict=True)):
        rtol = info.compiled_rtol
        torch.testing.assert_close(q, p, rtol=rtol, atol=1e-6,
                                   msg=lambda m, i=i: f"param {i}: {m}")
        for name, value in eager.state[p].items():
            torch.testing.assert_close(fast.state[q][name], value, rtol=rtol, atol=1e-6,
                                       msg=lambda m, name=name: f"{name}: {m}")


@needs_compiler
def test_per_tensor_compiled_step_matches_eager():
    start = make_params(torch.float32)
    eager_params, compiled_params = clone_params(start), clone_params(start)
    eager = optimkit.RAdam(eager_params, lr=1e-2, weight_decay=0.1)
    fast = optimkit.RAdam(compiled_params, lr=1e-2, weight_decay=0.1, compile=True, flat=False)
    assert not fast._executor.stores
    skip = lambda step, i: i == 1 and step % 4 == 2
    run(eager, eager_params, 8, skip=skip)
    run(fast, compiled_params, 8, skip=skip)
    for p, q in zip(eager_params, compiled_params, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


# Recipes whose traced step rounds otherwise than eager mode, by design: a per-tensor norm or
# dot summed in the graph (dynamo cannot trace torch._foreach_powsum: LARS, LARC, MARS,
# D-Adaptation, Adafactor), or another exact form of the same step (Schedule-Free SGD: eager
# mode takes the alpha form when every param is at the same step, the graph the per-tensor
# form), or a 0-d param left 0-d because the recipe's parts read shapes (SOAP: a float64
# hyper promotes its arithmetic, where eager mode computes in fp32). Equal to fp32 rounding
# there, not bit for bit.
_ROUNDS_OTHERWISE = {"lars", "larc", "mars", "dadapt-adam", "adafactor", "schedulefree-sgd",
                     "soap"}


@optims()
def test_traced_per_tensor_step_is_the_eager_step_bit_for_bit(info, monkeypatch):
    """The compiled per-tensor step (``flat=False``, FSDP2's compiled mode) as dynamo traces it,
    run by the ``eager`` backend (the graph's aten ops as eager kernels: nothing fused, no
    inductor codegen), equals the eager step bit for bit, params and state. This holds the
    optimkit side of compiled mode to eager mode: the hypers reach the graph as 0-d float64
    tensors, which round as eager mode's Python numbers except against 0-d tensors (a scalar
    param: once promoted the arithmetic to float64, AdamW 2.7e-6 off after 100 steps) and the
    per-tensor addcdiv takes the CPU kernel's order. What inductor's fused code adds on top
    (no FMA where eager kernels use one, a correctly rounded sqrt where eager AVX-512's is not)
    is ulp noise, which test_compiled_matches_eager bounds."""
    traced = torch.compile(compiled._traced_step, backend="eager", dynamic=False,
                           fullgraph=True, recompile_limit=compiled.RECOMPILE_LIMIT)
    monkeypatch.setattr(compiled, "_compiled_step", lambda: traced)
    monkeypatch.setattr(compiled, "can_compile", lambda device: True)  # no C++ compiler needed
    start = make_params(torch.float32)  # with a 0-d param
    eager_params, compiled_params = clone_params(start), clone_params(start)
    kwargs = {**info.pinned, **info.settings[0]}
    eager = build_fast(info, eager_params, flat=False, **kwargs)
    fast = build_fast(info, compiled_params, flat=False, compile=True, **kwargs)
    run(eager, eager_params, 4)  # the first step makes the state (eager), then 3 compiled
    run(fast, compiled_params, 4)
    assert _graphs() >= 1, "the step never went through torch.compile"
    exact = info.name not in _ROUNDS_OTHERWISE
    tolerance = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-6)
    for i, (p, q) in enumerate(zip(eager_params, compiled_params, strict=True)):
        torch.testing.assert_close(q, p, **tolerance, msg=lambda m, i=i: f"param {i}: {m}")
        for name, value in eager.state[p].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(fast.state[q][name], value, **tolerance,
                                           msg=lambda m, i=i, n=name: f"{n} of {i}: {m}")


def test_kron_update_schedule_compiles_with_and_without_the_fit(monkeypatch):
    # Kron's factor fit is a scheduled part (due=): the compiled step runs the body with it on
    # the due params and without it on the others, each as a graph of its own (traced here by
    # dynamo's eager backend: no C++ compiler, seconds), equal to the eager step bit for bit;
    # param 1 sits out some steps, so some steps split the bucket by the param's count
    import warnings

    from optimkit.stats.kron import UpdateProbabilitySchedule

    traced = torch.compile(compiled._traced_step, backend="eager", dynamic=False,
                           fullgraph=True, recompile_limit=compiled.RECOMPILE_LIMIT)
    monkeypatch.setattr(compiled, "_compiled_step", lambda: traced)
    monkeypatch.setattr(compiled, "can_compile", lambda device: True)
    schedule = UpdateProbabilitySchedule(min_prob=0.3, decay=0.5, flat_start=3)
    start = make_params(torch.float32)[:3]
    eager_params, compiled_params = clone_params(start), clone_params(start)
    kwargs = dict(lr=1e-2, precondition_update_probability=schedule)
    eager = optimkit.Kron(eager_params, **kwargs)
    fast = optimkit.Kron(compiled_params, flat=False, compile=True, **kwargs)

    def skip(step, i):
        return i == 1 and step in (4, 5)

    run(eager, eager_params, 12, skip=skip)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no eager fallback
        run(fast, compiled_params, 12, skip=skip)
    assert _graphs() >= 2, "the steps with and without the fit did not both compile"
    for i, (p, q) in enumerate(zip(eager_params, compiled_params, strict=True)):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=lambda m, i=i: f"param {i}: {m}")
        for name, value in eager.state[p].items():
            torch.testing.assert_close(fast.state[q][name], value, rtol=0, atol=0,
                                       msg=lambda m, i=i, n=name: f"{n} of {i}: {m}")


def _one_cycle(opt):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=60, cycle_momentum=True)


def _lambda(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (1 + step))


@needs_compiler
@pytest.mark.parametrize(
    "factory,schedule",
    [
        (lambda p: optimkit.Adam(p, flat=True, compile=True), _one_cycle),  # lr and betas[0]
        (lambda p: optimkit.SGD(p, momentum=0.9, flat=True, compile=True), _one_cycle),
        (lambda p: optimkit.Adam(p, compile=True, flat=False), _lambda),  # per-tensor steps
        # the layer-wise family: per-param norms and ratios inside the graph
        (lambda p: optimkit.LAMB(p, weight_decay=0.01, compile=True), _one_cycle),
        (lambda p: optimkit.LARS(p, weight_decay=1e-4, compile=True), _one_cycle),
        (lambda p: optimkit.NovoGrad(p, compile=True), _one_cycle),
        (lambda p: optimkit.DiffGrad(p, compile=True), _one_cycle),
    ],
    ids=["adam-onecycle", "sgd-onecycle-momentum", "adam-lambda-per-tensor", "lamb-onecycle",
         "lars-onecycle-momentum", "novograd-onecycle", "diffgrad-onecycle"],
)
def test_a_schedule_compiles_once(factory, schedule):
    params = clone_params(make_params(torch.float32))
    opt = factory(params)
    scheduler = schedule(opt)
    seen = set()
    for step in range(50):
        run(opt, params, 1, start=step)
        scheduler.step()
        group = opt.param_groups[0]
        seen.add((group["lr"], group.get("momentum"), group.get("betas")))
    assert len(seen) > 40, "the schedule did not change the hypers"
    assert _graphs() == 1
    assert counters["stats"]["calls_captured"] > 0


def test_without_a_compiler_it_warns_and_runs_eagerly(monkeypatch):
    monkeypatch.setattr(compiled, "can_compile", lambda device: False)
    start = make_params(torch.float64)
    a, b = clone_params(start), clone_params(start)
    eager, fast = optimkit.Adam(a), optimkit.Adam(b, compile=True)
    run(eager, a, 1)
    run(fast, b, 1)  # the first step creates state: eager anyway, no warning yet
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        run(fast, b, 1, start=1)
    run(eager, a, 1, start=1)
    run(fast, b, 2, start=2)
    run(eager, a, 2, start=2)
    assert _graphs() == 0
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q)


def test_options_are_in_the_signature():
    import inspect

    sig = inspect.signature(optimkit.Adam)
    assert sig.parameters["compile"].default is False
    assert sig.parameters["flat"].default is None  # None: on with compile, else off
    params = clone_params(make_params(torch.float32))
    assert len(optimkit.Adam(params, compile=True)._executor.stores) == 1
    assert not optimkit.Adam(clone_params(make_params(torch.float32)))._executor.stores


@stepper(lr=1e-3, eps=1e-8)
def _trust_ratio_sgd(b, lr, eps):
    """A layer-wise step as the trust-ratio optimizers write it: per-tensor norms, torch.where."""
    w_norms, g_norms = b.norms(b.params, b.grads)
    ratios = torch.where((w_norms > 0) & (g_norms > 0), w_norms / (g_norms + eps), 1.0)
    torch._foreach_add_(b.params, torch._foreach_mul(b.grads, b.expand(ratios)), alpha=-lr)


class _TrustSGD(optimkit.Optimizer):
    parts = (_trust_ratio_sgd,)
    hypers = dict(lr=0.05, eps=1e-8)
    reference = "a layer-wise test recipe"


@pytest.mark.parametrize("options", [
    dict(flat=True),
    pytest.param(dict(flat=True, compile=True), marks=needs_compiler),
], ids=["flat", "flat+compile"])
def test_layerwise_norms_work_on_the_flat_layout(options):
    start = make_params(torch.float32, zero_last=False)
    plain, fast = clone_params(start), clone_params(start)
    reference, opt = _TrustSGD(plain), _TrustSGD(fast, **options)
    run(reference, plain, 5)
    run(opt, fast, 5)
    for p, q in zip(plain, fast, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


@needs_compiler
def test_lookahead_syncs_outside_the_graph_without_recompiling():
    # Ranger's sync runs on the host every k-th step: one graph for all steps, the sync steps
    # included, and the trajectory of the eager optimizer.
    start = make_params(torch.float32)
    eager_params, compiled_params = clone_params(start), clone_params(start)
    eager = optimkit.Ranger(eager_params, lr=1e-2, k=3, flat=True)
    fast = optimkit.Ranger(compiled_params, lr=1e-2, k=3, compile=True)
    run(eager, eager_params, 10)
    run(fast, compiled_params, 10)
    assert _graphs() == 1
    assert counters["stats"]["calls_captured"] > 0 and not counters["graph_break"]
    for p, q in zip(eager_params, compiled_params, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast.state[q]["slow_param"], eager.state[p]["slow_param"],
                                   rtol=1e-5, atol=1e-6)


@stepper(lr=1e-2)
def _untraceable_sgd(b, lr):
    torch._dynamo.graph_break()  # stands for a user's part calling an op dynamo cannot trace
    torch._foreach_add_(b.params, b.grads, alpha=-lr)


class _UntraceableSGD(optimkit.Optimizer):
    parts = (_untraceable_sgd,)
    hypers = dict(lr=1e-2)
    reference = "a test recipe that breaks the graph"


@needs_compiler
@pytest.mark.filterwarnings("default:compile=True. the step does not compile")
def test_a_graph_break_warns_runs_eagerly_and_leaves_other_optimizers_compiled():
    """Compiled steps are one graph or none: a step that breaks the graph runs eagerly (with a
    warning) instead of frame by frame, and never makes dynamo skip the compiled step of
    every optimizer after it in the process (before fullgraph, a NovoGrad step had turned a
    later DeepMemory's compiled 8-bit step into a frame-by-frame one, 1.7 % off)."""
    start = make_params(torch.float32)
    plain, broken = clone_params(start), clone_params(start)
    reference = _UntraceableSGD(plain)
    opt = _UntraceableSGD(broken, compile=True)
    with pytest.warns(RuntimeWarning, match="does not compile as one graph"):
        run(opt, broken, 1)  # no state to create: the first step is a compiled one
    run(opt, broken, 2, start=1)
    run(reference, plain, 3)
    assert not opt._executor.compile
    for p, q in zip(plain, broken, strict=True):
        assert torch.equal(p, q)
    counters.clear()
    eager_params, compiled_params = clone_params(start), clone_params(start)
    eager = optimkit.Adam(eager_params, lr=1e-2, flat=True)
    fast = optimkit.Adam(compiled_params, lr=1e-2, compile=True)
    run(eager, eager_params, 4)
    run(fast, compiled_params, 4)
    assert _graphs() == 1 and not counters["graph_break"]
    for p, q in zip(eager_params, compiled_params, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


@needs_compiler
def test_a_step_under_a_dispatch_mode_runs_eagerly_once():
    """dynamo compiles nothing under a user's TorchDispatchMode (FlopCounterMode here): that
    step runs eagerly, exactly once, with no warning; the next step compiles."""
    from torch.utils.flop_counter import FlopCounterMode

    start = make_params(torch.float32)
    eager_params, compiled_params = clone_params(start), clone_params(start)
    eager = optimkit.LAMB(eager_params, lr=1e-2, flat=True)
    fast = optimkit.LAMB(compiled_params, lr=1e-2, compile=True)
    run(eager, eager_params, 4)
    run(fast, compiled_params, 2)
    with FlopCounterMode(display=False):
        run(fast, compiled_params, 1, start=2)
    run(fast, compiled_params, 1, start=3)
    assert fast._executor.compile and _graphs() == 1
    for p, q in zip(eager_params, compiled_params, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_a_policy_flat_store_too_large_to_compile_per_tensor_says_so():
    """Under a policy a flat store steps per tensor; above PER_TENSOR_COMPILE_MAX tensors those
    steps run eagerly: compile=True must say so once, and the steps equal eager ones."""
    from optimkit.core.executor import PER_TENSOR_COMPILE_MAX

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(3, generator=gen) for _ in range(PER_TENSOR_COMPILE_MAX + 1)]
    eager_params, fast_params = clone_params(start), clone_params(start)
    policy = dict(state_dtype=torch.bfloat16)  # same seed of the random bits for both
    eager = optimkit.Adam(eager_params, lr=1e-2, **policy,
                          generator=torch.Generator().manual_seed(1))
    fast = optimkit.Adam(fast_params, lr=1e-2, **policy, compile=True,
                         generator=torch.Generator().manual_seed(1))
    run(eager, eager_params, 3)
    with pytest.warns(RuntimeWarning, match="precision policy.*run eagerly; flat=False"):
        run(fast, fast_params, 1)
    run(fast, fast_params, 2, start=1)  # once (pytest turns a second one into an error)
    for p, q in zip(eager_params, fast_params, strict=True):
        assert torch.equal(p, q)


@needs_compiler
@pytest.mark.filterwarnings("default:compile=True. the step does not compile")
def test_past_the_recompile_limit_the_step_runs_eagerly(monkeypatch, request):
    """Each bucket shape compiles a graph of its own; past RECOMPILE_LIMIT of them in one
    process (fullgraph turns dynamo's fallback into an error) the optimizer warns and steps
    eagerly instead of raising."""
    monkeypatch.setattr(compiled, "RECOMPILE_LIMIT", 1)
    compiled._compiled_step.cache_clear()  # made with the limit it reads
    request.addfinalizer(compiled._compiled_step.cache_clear)
    first = clone_params(make_params(torch.float32))
    run(optimkit.Adam(first, lr=1e-2, compile=True), first, 2)
    start = [torch.ones(7), torch.zeros(3, 2)]
    plain, other = clone_params(start), clone_params(start)
    opt = optimkit.Adam(other, lr=1e-2, compile=True)
    run(opt, other, 1)
    with pytest.warns(RuntimeWarning, match="holds 1 compiled steps already"):
        run(opt, other, 1, start=1)
    run(opt, other, 1, start=2)
    run(optimkit.Adam(plain, lr=1e-2, flat=True), plain, 3)
    assert not opt._executor.compile
    for p, q in zip(plain, other, strict=True):
        assert torch.equal(p, q)


@needs_compiler
@pytest.mark.parametrize("name", ["Adam", "Adagrad", "RAdam", "QHAdam", "LAMB", "AdaMod"])
def test_a_per_tensor_compiled_step_runs_fused_and_in_place(name):
    # Per-tensor numbers (bias corrections, step sizes) reach the ops as 0-d tensors, not as
    # traced Python numbers: inductor ran those ScalarList ops as separate aten kernels, out
    # of place, holding three param-sized buffers per tensor (Adam) and inlining beta ** t into
    # every loop once fused (benchmarks/step_memory.py)
    from benchmarks.counting import analyse, generated_code

    n = 8192
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(n, generator=gen).requires_grad_() for _ in range(3)]
    for p in params:
        p.grad = torch.randn(n, generator=gen)
    opt = getattr(optimkit, name)(params, compile=True, flat=False)
    opt.step()  # creates the state, eagerly
    with generated_code() as codes:
        opt.step()
    assert codes
    text = "\n".join(codes)
    assert "ScalarList" not in text
    assert "std::pow" not in text  # the per-tensor numbers are computed once, not per vector
    assert analyse(codes, n).temporaries == 0
