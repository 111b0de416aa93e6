"""The engine's contract with parts and policies (issue 22): the core owns the policy interface
and never imports the precision package; parts touch only what they declare (enforced in the
test suite); a state of its own shape is never re-viewed as the param's; tuple hypers keep the
arity of their defaults."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest
import torch

import optimkit
from optimkit import (
    Layout,
    Optimizer,
    own_shape,
    stat,
    stats,
    step_counter,
    steppers,
    zero_scalar,
    zeros,
)
from optimkit.core import compiled, contract
from optimkit.core import policy as core_policy
from optimkit.core.rules import betas as betas_rule
from optimkit.precision import policy as precision_policy

CORE = pathlib.Path(optimkit.__file__).parent / "core"


# ----------------------------------------------------------------- core <-> precision (row 8)
def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code, relative imports resolved."""
    package = "optimkit.core"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def test_the_core_never_imports_the_precision_package():
    offenders = {
        path.name: sorted(m for m in _imported_modules(path) if m.startswith("optimkit.precision"))
        for path in sorted(CORE.glob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_importing_the_core_loads_no_precision_module():
    code = ("import sys, optimkit.core; "
            "print(sorted(m for m in sys.modules if m.startswith('optimkit.precision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_precision_policy_is_a_bucket_policy_and_storage_lives_in_the_core():
    assert issubclass(precision_policy.PrecisionPolicy, core_policy.BucketPolicy)
    # the public names still work
    assert optimkit.precision.Storage is core_policy.Storage is precision_policy.Storage
    assert core_policy.policies() is precision_policy.PrecisionPolicy
    opt = optimkit.Adam([torch.zeros(4096, requires_grad=True)], state_bits=8)
    assert isinstance(opt._executor.policy, precision_policy.PrecisionPolicy)
    assert optimkit.Adam([torch.zeros(3, requires_grad=True)])._executor.policy is core_policy.PLAIN


# ------------------------------------------------------- the contract at run time (row 6)
@pytest.fixture
def enforced():
    previous = contract.enforce(True)
    yield
    contract.enforce(previous)


def _recipe(*parts, **hypers):
    return type("Recipe", (Optimizer,), {"parts": parts, "hypers": hypers})


def _two_steps(opt, params):
    for step in range(2):
        for i, p in enumerate(params):
            p.grad = torch.full_like(p, 0.1 * (i + step + 1))
        opt.step()


@stat()
def peek_second_moment(b):
    """Reads sqr_avg without declaring it, before the part that writes it."""
    b.update = torch._foreach_div(b.grads, torch._foreach_add(b.state["sqr_avg"], 1.0))


def test_the_suite_runs_with_the_contract_enforced():
    assert contract.ENFORCED


@pytest.mark.parametrize("flat", [False, True])
def test_an_undeclared_state_read_before_its_writer_raises_naming_the_part(enforced, flat):
    # check_recipe accepts it: the read is not declared, so there is nothing to check
    Peeking = _recipe(peek_second_moment, stats.average_sqr_grad, steppers.sgd_step)
    params = [torch.ones(3, requires_grad=True), torch.ones(2, 2, requires_grad=True)]
    opt = Peeking(params, flat=flat)
    with pytest.raises(contract.ContractViolation, match="peek_second_moment uses state 'sqr_avg'"):
        _two_steps(opt, params)


def test_undeclared_fields_raise_naming_the_part(enforced):
    @stat(reads=("first_moment",))
    def reads_second_moment(b):
        b.update = b.second_moment

    @stat()
    def sets_update(b):
        b.update = torch._foreach_mul(b.grads, 2.0)

    params = [torch.ones(3, requires_grad=True)]
    reader = _recipe(stats.step_stat, stats.average_grad, stats.average_sqr_grad,
                     reads_second_moment, steppers.sgd_step)(params)
    with pytest.raises(contract.ContractViolation,
                       match="reads_second_moment reads the field 'second_moment'"):
        _two_steps(reader, params)
    setter = _recipe(sets_update, steppers.sgd_step)(params)
    with pytest.raises(contract.ContractViolation, match="sets_update sets the field 'update'"):
        _two_steps(setter, params)


def test_the_step_counts_are_the_step_state(enforced):
    @stat()
    def uses_steps(b):
        b.update = torch._foreach_div(b.grads, b.steps.tolist())

    params = [torch.ones(3, requires_grad=True)]
    opt = _recipe(stats.step_stat, uses_steps, steppers.sgd_step)(params)
    with pytest.raises(contract.ContractViolation, match="uses_steps uses state 'step'"):
        _two_steps(opt, params)


def test_declared_access_runs_and_enforcement_off_checks_nothing(enforced):
    @stat(reads=("sqr_avg",), provides=("update",))
    def declared(b):
        b.update = torch._foreach_div(b.grads, torch._foreach_add(b.state["sqr_avg"], 1.0))

    params = [torch.ones(3, requires_grad=True)]
    _two_steps(_recipe(stats.average_sqr_grad, declared, steppers.sgd_step)(params), params)
    contract.enforce(False)
    Peeking = _recipe(peek_second_moment, stats.average_sqr_grad, steppers.sgd_step)
    _two_steps(Peeking(params), params)  # unchecked: last step's values, silently


# ------------------------------------------------------------- state layouts (row 3)
def _factor(p, group):
    return p.new_zeros(p.shape[0], p.shape[0])


def _line(p, group):
    return p.new_zeros(p.numel())


@stat(state={"factor": own_shape(_factor)}, storage={"factor": "signed"}, provides=("update",),
      shaped=True, beta=0.5)
def factor_direction(b, beta):
    """A left factor F = beta F + G G^T of each param's gradient seen as [rows, rest], and the
    update F G / (1 + trace F): a state of its own shape ([rows, rows])."""
    updates = []
    for g, factor in zip(b.grads, b.state["factor"], strict=True):
        rows = g.reshape(g.shape[0], -1)
        factor.mul_(beta).addmm_(rows, rows.T)
        updates.append((factor @ rows).reshape(g.shape) / (1 + factor.diagonal().sum()))
    b.update = updates


@stat(state={"line_avg": own_shape(_line)}, reads=("update",), provides=("update",),
      shaped=True)
def line_momentum(b):
    """Adds a running average of each gradient kept as a line (numel,): same element count as
    the param, another shape."""
    for g, line in zip(b.grads, b.state["line_avg"], strict=True):
        line.lerp_(g.reshape(-1), 0.5)
    b.update = [u + line.view(u.shape) for u, line in zip(b.update, b.state["line_avg"],
                                                           strict=True)]


Factored = _recipe(factor_direction, line_momentum, steppers.sgd_step, lr=0.125)


def test_states_declare_their_layout():
    from optimkit.core.parts import layout_of

    assert {init: layout_of(init) for init in (zeros, step_counter, zero_scalar)} == {
        zeros: Layout.PARAM, step_counter: Layout.SCALAR, zero_scalar: Layout.SCALAR}
    assert layout_of(optimkit.full("lr")) is Layout.PARAM
    assert Factored.recipe.layouts == {"factor": Layout.OWN, "line_avg": Layout.OWN}
    opt = optimkit.Adam([torch.zeros(4096, requires_grad=True)], state_bits=8)
    assert opt.state_layouts().items() >= {
        "step": Layout.SCALAR, "grad_avg": Layout.PARAM, "sqr_avg": Layout.PARAM,
        "grad_avg_absmax": Layout.OWN, "sqr_avg_absmax": Layout.OWN}.items()


def _factored_run(**modes):
    gen = torch.Generator().manual_seed(0)
    # the factor of the (4, 2, 2) param is 4x4, the line of the (4, 4) param (16,): both have
    # the param's element count, neither its shape
    params = [torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
              for shape in [(4, 2, 2), (4, 4), (3,)]]
    opt = Factored(params, **modes)
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()
        if step == 1:
            opt.load_state_dict(opt.state_dict())  # flat mode takes the state in again
    return opt, params


@pytest.mark.parametrize("modes", [dict(flat=True), dict(compile=True)], ids=["flat", "compiled"])
def test_a_state_of_its_own_shape_is_never_reviewed_as_the_param(modes):
    if modes.get("compile") and not compiled.has_cxx_compiler():
        pytest.skip("inductor needs a C++ compiler on the CPU")
    eager, expected = _factored_run(flat=False)
    opt, params = _factored_run(**modes)
    assert opt._executor.flat
    # bit for bit (lr and beta are powers of 2: a compiled step rounds other float64 hypers
    # differently, for every recipe)
    for p, q in zip(params, expected, strict=True):
        assert torch.equal(p, q)
        for name, value in eager.state[q].items():
            assert opt.state[p][name].shape == value.shape, name
            assert torch.equal(opt.state[p][name], value), name
    assert eager.state[expected[0]]["factor"].shape == (4, 4)
    assert eager.state[expected[1]]["line_avg"].shape == (16,)


def test_precision_policies_never_quantize_a_state_of_its_own_shape():
    Mixed = _recipe(stats.average_sqr_grad, factor_direction, line_momentum, steppers.sgd_step)
    params = [torch.randn(64, 64, requires_grad=True)]
    opt = Mixed(params, state_bits=8)
    _two_steps(opt, params)
    state = opt.state[params[0]]
    assert state["sqr_avg"].dtype == torch.uint8  # the param-shaped moment is quantized
    assert state["factor"].dtype == state["line_avg"].dtype == torch.float32
    assert state["factor"].shape == (64, 64) and "factor_absmax" not in state
    with pytest.raises(ValueError, match="state_bits: .*'factor' cannot be quantized"):
        Mixed(params, state_bits={"factor": 8})
    with pytest.raises(ValueError, match="state_bits: .* keeps no state that may be quantized"):
        _recipe(factor_direction, steppers.sgd_step)(params, state_bits=8)
    # narrowed where its part declares a storage; exact (fp32) where not
    opt = Mixed(params, state_dtype=torch.bfloat16)
    _two_steps(opt, params)
    state = opt.state[params[0]]
    assert (state["factor"].dtype, state["line_avg"].dtype) == (torch.bfloat16, torch.float32)


# ------------------------------------------------------------ tuple hypers (row 7)
@stat(state={"grad_avg": zeros, "diff_avg": zeros, "sqr_avg": zeros}, provides=("update",),
      rules=dict(betas=betas_rule), betas=(0.9, 0.92, 0.99))
def three_beta_direction(b, betas):
    """Adan-like: three running averages, one beta each (unpacked: a 2-tuple fails here)."""
    beta1, beta2, beta3 = betas
    torch._foreach_lerp_(b.state["grad_avg"], b.grads, 1 - beta1)
    torch._foreach_lerp_(b.state["diff_avg"], b.grads, 1 - beta2)
    torch._foreach_mul_(b.state["sqr_avg"], beta3)
    torch._foreach_addcmul_(b.state["sqr_avg"], b.grads, b.grads, value=1 - beta3)
    denominators = torch._foreach_add(torch._foreach_sqrt(b.state["sqr_avg"]), 1e-8)
    b.update = torch._foreach_div(b.state["grad_avg"], denominators)


ThreeBetas = _recipe(three_beta_direction, steppers.sgd_step)


def test_a_tuple_hyper_keeps_the_arity_of_its_default():
    params = [torch.ones(3, requires_grad=True)]
    _two_steps(ThreeBetas(params, betas=(0.9, 0.92, 0.99)), params)
    # refused when built, naming the keyword: not "not enough values to unpack" at step 1
    with pytest.raises(ValueError, match="betas"):
        ThreeBetas(params, betas=(0.9, 0.99))


def test_param_shaped_state_of_0d_params_is_not_taken_for_a_scalar_state():
    # a flat store of 0-d params only: their moments are 0-d like a step counter, but declared
    # param-shaped, so they live in a buffer laid out as the params' (the element-count guess
    # stacked them as scalars, and the second step failed on [rows, CHUNK] vs [count])
    runs = []
    for flat in (False, True):
        params = [torch.tensor(1.0, requires_grad=True), torch.tensor(2.0, requires_grad=True)]
        _two_steps(optimkit.Adam(params, flat=flat), params)
        runs.append(params)
    assert all(torch.equal(p, q) for p, q in zip(*runs, strict=True))


# ------------------------------------------- routing by tensor, same-shape batches (issue 22)
def _spy_recipe(seen):
    """A recipe whose matrices go through a ``batch="shape"`` part that records the shapes it
    is handed, and whose other params take a plain SGD step."""
    from optimkit.core import MATRIX

    @stat(provides=("update",), batch="shape")
    def record_shapes(b):
        seen.append(sorted({tuple(t.shape) for t in b.grads}) + [len(b.grads)])
        b.update = [g * 2 for g in b.grads]

    class Routed(Optimizer):
        parts = (record_shapes.where(MATRIX), steppers.sgd_step)
        hypers = dict(lr=0.1)

    return Routed


@pytest.mark.parametrize("flat", [False, True], ids=["eager", "flat"])
def test_a_batched_part_gets_one_shape_per_bucket_and_only_its_route(flat):
    seen: list = []
    shapes = [(3, 2), (4,), (3, 2), (2, 5), (3, 2), (2, 5)]
    params = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    start = [p.detach().clone() for p in params]
    opt = _spy_recipe(seen)(params, flat=flat)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    # one call per shape, holding every tensor of that shape; the vector never reaches it
    assert sorted(map(tuple, seen)) == [((2, 5), 2), ((3, 2), 3)]
    for p, p0, s in zip(params, start, shapes, strict=True):
        moved = 0.2 if len(s) >= 2 else 0.1  # the matrices' update doubled, the vector's not
        torch.testing.assert_close(p.detach(), p0 - moved)


def test_complementary_routes_are_branches_and_a_real_clash_still_raises():
    from optimkit.core import MATRIX
    from optimkit.stats import average_grad, lion_direction, momentum

    # both provide the update, on disjoint branches; the stepper reads it on both
    class Branches(Optimizer):
        parts = (momentum.where(MATRIX), lion_direction.where(~MATRIX), steppers.sgd_step)
        hypers = dict(lr=0.1, momentum=0.9)

    assert Branches.recipe.parts[0].routes == (MATRIX,)
    # the same two parts unrouted: a clash
    with pytest.raises(TypeError, match="both provide 'update'"):
        class Clash(Optimizer):
            parts = (momentum, lion_direction, steppers.sgd_step)
            hypers = dict(lr=0.1, momentum=0.9)
    # routed the same way: still a clash
    with pytest.raises(TypeError, match="both provide 'update'"):
        class SameBranch(Optimizer):
            parts = (momentum.where(MATRIX), lion_direction.where(MATRIX), steppers.sgd_step)
            hypers = dict(lr=0.1, momentum=0.9)
    # a read that one branch never provides
    with pytest.raises(TypeError, match="reads 'first_moment'.*every branch"):
        class HalfRead(Optimizer):
            parts = (average_grad.where(MATRIX), steppers.adam_step)
            hypers = dict(lr=0.1)
    # two routes under one label are refused
    with pytest.raises(TypeError, match="labelled 'matrix'"):
        class TwoTests(Optimizer):
            parts = (momentum.where(MATRIX),
                     average_grad.where(lambda p, n: p.ndim > 2, "matrix"), steppers.sgd_step)
            hypers = dict(lr=0.1, momentum=0.9)


def test_a_group_pins_a_route_and_routes_see_param_names():
    ps = [torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True),
          torch.randn(3, requires_grad=True)]
    opt = optimkit.Muon([{"params": ps[:1]},
                         {"params": ps[1:], "routes": {"matrix": False}}], lr=0.01)
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()
    assert set(opt.state[ps[0]]) == {"momentum_buffer"}
    assert set(opt.state[ps[1]]) == set(opt.state[ps[2]]) == {"step", "grad_avg", "sqr_avg"}


def test_create_muon_sends_embeddings_and_the_head_to_adamw():
    model = torch.nn.ModuleDict({
        "embed": torch.nn.Embedding(10, 4), "block": torch.nn.Linear(4, 4),
        "norm": torch.nn.LayerNorm(4), "lm_head": torch.nn.Linear(4, 10, bias=False),
    })
    opt = optimkit.create("muon", model)
    x = model["lm_head"](model["norm"](model["block"](model["embed"](torch.tensor([1, 2])))))
    x.sum().backward()
    opt.step()
    kinds = {name: sorted(opt.state[p]) for name, p in model.named_parameters()}
    muon, adam = ["momentum_buffer"], ["grad_avg", "sqr_avg", "step"]
    assert kinds == {"embed.weight": adam, "block.weight": muon, "block.bias": adam,
                     "norm.weight": adam, "norm.bias": adam, "lm_head.weight": adam}
    # the user's own names instead of the default patterns: the head goes to Muon
    opt = optimkit.create("muon", model, adam_params=["nothing*"])
    model.zero_grad()
    model["lm_head"](model["embed"](torch.tensor([1]))).sum().backward()
    opt.step()
    assert sorted(opt.state[model["lm_head"].weight]) == muon
    assert sorted(opt.state[model["embed"].weight]) == adam  # by module type


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_muon_newton_schulz_in_fp32_and_fp64_matches_a_naive_loop(dtype):
    import math

    from reference.muon import naive_lr_ratio, naive_newton_schulz

    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 4), (6, 4), (3, 7), (4, 2, 3)]
    params = [torch.randn(s, generator=gen, dtype=dtype, requires_grad=True) for s in shapes]
    naive = [p.detach().clone() for p in params]
    bufs = [torch.zeros_like(p) for p in naive]
    opt = optimkit.Muon(params, lr=0.02, weight_decay=0.1, ns_dtype=dtype)
    for _ in range(10):
        grads = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        for p, buf, g in zip(naive, bufs, grads, strict=True):
            buf.lerp_(g, 1 - 0.95)
            u = naive_newton_schulz(g.lerp(buf, 0.95).reshape(p.shape[0], -1))
            rows, cols = p.shape[0], math.prod(p.shape[1:])
            p.mul_(1 - 0.02 * 0.1).sub_(u.reshape(p.shape), alpha=0.02 * naive_lr_ratio(rows, cols))
    tol = 1e-10 if dtype is torch.float64 else 1e-5
    for p, q in zip(params, naive, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=tol, atol=tol)


def test_cautious_muon_masks_the_orthogonalized_update():
    from reference.muon import naive_newton_schulz

    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    g = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    p = p0.clone().requires_grad_()
    opt = optimkit.Muon([p], lr=0.1, weight_decay=0.0, cautious=True, ns_dtype=torch.float64)
    p.grad = g
    opt.step()
    # first step from a zero buffer: buf = 0.05 g, Nesterov u = g + 0.95 (buf - g)
    u = naive_newton_schulz(g.lerp(0.05 * g, 0.95))
    mask = (u * g > 0).double()
    u = u * mask * (u.numel() / (mask.sum() + 1))
    torch.testing.assert_close(p.detach(), p0 - 0.1 * (5 / 3) ** 0.5 * u, rtol=1e-10, atol=1e-12)
