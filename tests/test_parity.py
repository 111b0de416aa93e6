"""Parity of every registered optimizer with the implementation it reproduces.

Params *and* state are compared after >= 100 steps, in fp64 and fp32, for every setting that
the test database lists: eagerly with one param skipping some steps (grad None), and in flat
mode (the whole bucket one tensor, per-param norms as row reductions) with none skipping.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SLOW, optims
from helpers import as_tensor, build_fast, clone_params, make_params, run

STEPS = 120


def _skip_some(step, i):
    # Param 1 sits out every 7th step: its step count and state fall behind the others.
    return i == 1 and step % 7 == 3


@pytest.mark.parametrize("mode", ["eager", "flat"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@optims(lambda info: [(str(i), (dict(s),), [SLOW] if i else [])  # the fast subset: defaults
                      for i, s in enumerate(info.settings)], argnames="info,setting")
def test_matches_reference(info, setting, dtype, mode):
    # Flat mode steps the whole bucket as one tensor only while every param has its grad and
    # all step counts agree: there no param skips a step, so that all 120 steps run that way
    # (the eager run covers the skipped steps; test_flat.py the flat fallback).
    kwargs = {**info.pinned, **setting}
    start = make_params(dtype)
    ours_params, ref_params = clone_params(start), clone_params(start)
    if mode == "flat":
        ours = build_fast(info, ours_params, flat=True, **kwargs)
        skip = None
    else:
        ours = info.factory(ours_params, **kwargs)
        skip = _skip_some
    ref = info.reference.build(ref_params, **kwargs)
    run(ours, ours_params, STEPS, skip=skip)
    run(ref, ref_params, STEPS, skip=skip)

    rtol = info.rtol[dtype]
    atol = rtol * 1e-2
    for i, (p, q) in enumerate(zip(ours_params, ref_params)):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=lambda m, i=i: f"param {i}: {m}")
    # the optimizer-level state a barrier keeps in the param groups (Prodigy's d estimate)
    values = [name for barrier in type(ours).recipe.barriers for name in barrier.values]
    for index, (mine, theirs) in enumerate(zip(ours.param_groups, ref.param_groups)):
        for name in values:
            torch.testing.assert_close(
                torch.tensor(float(mine[name]), dtype=torch.float64),
                torch.tensor(float(theirs[name]), dtype=torch.float64), rtol=rtol, atol=0.0,
                msg=lambda m, index=index, name=name: f"group {index} {name}: {m}")
    names = info.reference.state
    for i, (p, q) in enumerate(zip(ours_params, ref_params)):
        mine, theirs = ours.state[p], ref.state[q]
        unmapped = set(mine) - set(names)
        assert not unmapped, f"{info.name}: state {unmapped} has no counterpart in optim_db"
        group = next(g for g in ref.param_groups if any(x is q for x in g["params"]))
        for our_name, ref_name in names.items():
            if our_name not in mine:
                if not callable(ref_name):
                    assert theirs.get(ref_name) is None, f"param {i}: reference has {ref_name}"
                continue
            mine_value = as_tensor(mine[our_name], p)
            value = ref_name(theirs, group) if callable(ref_name) else theirs[ref_name]
            torch.testing.assert_close(
                mine_value, as_tensor(value, mine_value), rtol=rtol, atol=atol,
                msg=lambda m, i=i, name=our_name: f"param {i} state {name}: {m}",
            )
