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
from optimkit import Optimizer
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
