"""optimkit.param_groups: decayed and non-decayed groups, and LARS/LAMB's exclude_1d."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optimkit


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))


def test_biases_and_norms_get_no_decay():
    groups = optimkit.param_groups(_model(), weight_decay=0.1)
    assert [g["param_names"] for g in groups] == [
        ["0.weight", "2.weight"], ["0.bias", "1.weight", "1.bias"],
    ]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def test_custom_rule_frozen_params_and_empty_groups():
    model = _model()
    model[1].weight.requires_grad_(False)
    groups = optimkit.param_groups(model, weight_decay=0.1, no_decay=lambda name, p: False)
    assert len(groups) == 1 and "1.weight" not in groups[0]["param_names"]


def test_bad_input():
    with pytest.raises(ValueError, match="weight_decay"):
        optimkit.param_groups(_model(), weight_decay=-1.0)
    with pytest.raises(TypeError, match="model"):
        optimkit.param_groups([torch.zeros(2)], weight_decay=0.1)


@pytest.mark.parametrize("recipe", [optimkit.LARS, optimkit.LARC, optimkit.LAMB])
def test_groups_feed_the_optimizer(recipe):
    model = _model()
    opt = recipe(optimkit.param_groups(model, weight_decay=0.01), lr=0.1)
    model(torch.ones(5, 3)).sum().backward()
    opt.step()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]


@pytest.mark.parametrize("recipe", [optimkit.LARS, optimkit.LAMB])
def test_exclude_1d_turns_the_trust_ratio_off_for_biases(recipe):
    """With exclude_1d the bias moves as with ratio 1; the matrix is unaffected by the flag."""
    runs = {}
    for flag in (False, True):
        model = _model()
        opt = recipe(model.parameters(), lr=0.1, exclude_1d=flag)
        model(torch.ones(5, 3)).sum().backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        runs[flag] = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    assert torch.equal(runs[False]["0.weight"], runs[True]["0.weight"])
    assert not torch.allclose(runs[False]["0.bias"], runs[True]["0.bias"])


@pytest.mark.parametrize("flat", [False, True])
def test_exclude_1d_on_a_group_of_vectors_is_plain_momentum_sgd(flat):
    """A group of 1-D params only (param_groups' no-decay group) skips the norms altogether
    (decided from the shapes): LARS with exclude_1d is then torch's momentum SGD, its weight
    decay unused, in eager and flat mode, bit for bit."""
    torch.manual_seed(0)
    start = [torch.randn(n, dtype=torch.float64) for n in (5, 70, 3)]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    opt = optimkit.LARS(ours, lr=0.1, momentum=0.9, weight_decay=0.1, exclude_1d=True,
                        flat=flat)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, foreach=True)
    for step in range(5):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.full_like(a, 0.1 * step + 0.5).sin_().mul_(a.detach())
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.detach(), b.detach())
