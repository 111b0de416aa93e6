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
from optimkit import Optimizer, stat, stats, steppers
from optimkit.core import contract
from optimkit.core import policy as core_policy
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
