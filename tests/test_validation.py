"""Bad input is refused, with the argument named, before anything changes."""

from __future__ import annotations

import inspect

import pytest
import torch
from helpers import clone_params, make_params

from optimkit import registry

ENTRIES = registry.entries()
IDS = [e.name for e in ENTRIES]


def _accepts(entry, name):
    return name in inspect.signature(entry.factory).parameters


def _bad_values(entry):
    cases = [("lr", -1e-3)]
    if _accepts(entry, "eps"):
        cases.append(("eps", -1e-8))
    if _accepts(entry, "weight_decay"):
        cases.append(("weight_decay", -0.1))
    if _accepts(entry, "betas"):
        cases += [("betas", (1.0, 0.999)), ("betas", (0.9, 1.0)), ("betas", (-0.1, 0.999))]
    if _accepts(entry, "momentum"):
        cases.append(("momentum", -0.5))
    return cases


CASES = [(e, name, value) for e in ENTRIES for name, value in _bad_values(e)]


@pytest.mark.parametrize("entry,name,value", CASES, ids=[f"{e.name}-{n}={v}" for e, n, v in CASES])
def test_bad_hyper_parameter_raises_value_error_naming_it(entry, name, value):
    with pytest.raises(ValueError, match=name):
        entry.factory(clone_params(make_params()), **{**entry.pinned, name: value})


@pytest.mark.parametrize("entry,name,value", CASES, ids=[f"{e.name}-{n}={v}" for e, n, v in CASES])
def test_bad_param_group_is_refused_and_not_added(entry, name, value):
    params = clone_params(make_params())
    opt = entry.factory(params[:2], **entry.pinned)
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": params[2:], name: value})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_empty_param_list_raises_value_error(entry):
    with pytest.raises(ValueError, match="params"):
        entry.factory([], **entry.pinned)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@pytest.mark.parametrize("params", [5, None, torch.zeros(3)], ids=["int", "None", "tensor"])
def test_non_iterable_params_raise_type_error(entry, params):
    with pytest.raises(TypeError, match="params"):
        entry.factory(params, **entry.pinned)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_unknown_keyword_raises_type_error(entry):
    with pytest.raises(TypeError, match="no_such_option"):
        entry.factory(clone_params(make_params()), no_such_option=1)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_sparse_gradient_is_refused_with_params_untouched(entry):
    params = clone_params(make_params())
    opt = entry.factory(params, **entry.pinned)
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    params[1].grad = torch.ones_like(params[1]).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    for p, q in zip(params, before):
        assert torch.equal(p, q)
