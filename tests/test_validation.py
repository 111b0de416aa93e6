"""Bad input is refused, with the argument named, before anything changes."""

from __future__ import annotations

import inspect

import pytest
import torch
from conftest import optims
from helpers import clone_params, make_params

import optimkit


def _accepts(info, name):
    return name in inspect.signature(info.factory).parameters


def _bad_values(info):
    cases = [("lr", -1e-3)]
    if _accepts(info, "eps"):
        cases.append(("eps", -1e-8))
    if _accepts(info, "weight_decay"):
        cases.append(("weight_decay", -0.1))
    if _accepts(info, "betas"):
        cases += [("betas", (1.0, 0.999)), ("betas", (0.9, 1.0)), ("betas", (-0.1, 0.999))]
    if _accepts(info, "momentum"):
        cases.append(("momentum", -0.5))
    return [(f"{name}={value}", (name, value)) for name, value in cases]


@optims(_bad_values, argnames="info,name,value")
def test_bad_hyper_parameter_raises_value_error_naming_it(info, name, value):
    with pytest.raises(ValueError, match=name):
        info.factory(clone_params(make_params()), **{**info.pinned, name: value})


@optims(_bad_values, argnames="info,name,value")
def test_bad_param_group_is_refused_and_not_added(info, name, value):
    params = clone_params(make_params())
    opt = info.factory(params[:2], **info.pinned)
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": params[2:], name: value})
    assert len(opt.param_groups) == 1


@optims()
def test_empty_param_list_raises_value_error(info):
    with pytest.raises(ValueError, match="params"):
        info.factory([], **info.pinned)


@pytest.mark.parametrize("params", [5, None, torch.zeros(3)], ids=["int", "None", "tensor"])
@optims()
def test_non_iterable_params_raise_type_error(info, params):
    with pytest.raises(TypeError, match="params"):
        info.factory(params, **info.pinned)


@optims()
def test_unknown_keyword_raises_type_error(info):
    with pytest.raises(TypeError, match="no_such_option"):
        info.factory(clone_params(make_params()), no_such_option=1)


def assert_sparse_grad_refused(opt, params, sparse):
    """Dense grads everywhere but ``params[sparse]``: the step raises and moves no param."""
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    params[sparse].grad = torch.ones_like(params[sparse]).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    for p, q in zip(params, before):
        assert torch.equal(p, q)


@optims()
def test_sparse_gradient_is_refused_with_params_untouched(info):
    params = clone_params(make_params())
    assert_sparse_grad_refused(info.factory(params, **info.pinned), params, sparse=1)


@pytest.mark.parametrize("options", [{}, {"flat": True}], ids=["eager", "flat"])
def test_a_bad_gradient_in_a_later_group_is_refused_before_any_group_steps(options):
    params = clone_params(make_params())
    opt = optimkit.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.1, **options)
    assert_sparse_grad_refused(opt, params, sparse=3)
    assert not opt.state  # no state was created either
