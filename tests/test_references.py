"""The naive references in tests/reference, checked against steps worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from reference.deepmemory import DeepMemory


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _steps(optimizer, param, grads):
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    return param.detach()


def test_deepmemory_two_steps_by_hand():
    # betas (0.5, 0.75), len_memory 2 (beta3 = 0.5), eps 0, version 1 (signed difference).
    p = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    opt = DeepMemory([p], lr=0.1, betas=(0.5, 0.75), len_memory=2, eps=0.0)
    after_one = _steps(opt, p, [[2.0, -2.0]]).clone()
    # t=1: m = 0.5 g = +-1, v = 0.25 g^2 = 1; alpha = 0.1 * sqrt(1 - 0.75) / (1 - 0.5) = 0.1;
    # eta = 0.1 / sqrt(1) = 0.1; memory 0.5 * 0.1 = 0.05; blend (0.1 + 0.05) / 2 = 0.075;
    # friction sigmoid(0 - g) = sigmoid(-2), sigmoid(2).
    expected_one = [1 - 0.075 * 1.0 * sigmoid(-2.0), -1 + 0.075 * 1.0 * sigmoid(2.0)]
    torch.testing.assert_close(after_one, torch.tensor(expected_one, dtype=torch.float64))

    after_two = _steps(opt, p, [[2.0, 1.0]])
    # t=2, first element, g = 2 again: m = 0.5 + 1 = 1.5, v = 0.75 + 1 = 1.75, friction 0.5.
    alpha = 0.1 * math.sqrt(1 - 0.75**2) / (1 - 0.5**2)
    eta = alpha / math.sqrt(1.75)
    memory = 0.5 * 0.05 + 0.5 * eta
    first = expected_one[0] - (eta + memory) / 2 * 1.5 * 0.5
    # second element, g = 1 after -2: m = -0.5 + 0.5 = 0, so it stays put.
    expected_two = torch.tensor([first, expected_one[1]], dtype=torch.float64)
    torch.testing.assert_close(after_two, expected_two)
    assert opt.state[p]["step"] == 2


def test_deepmemory_version0_and_decoupled_weight_decay_by_hand():
    p = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = DeepMemory([p], lr=0.1, betas=(0.5, 0.75), len_memory=2, eps=0.0, version=0,
                     weight_decay=0.5)
    # decay 2 * (1 - 0.5 * 0.1) = 1.9; then as above with friction sigmoid(|0 - (-2)|).
    after = _steps(opt, p, [[-2.0]])
    torch.testing.assert_close(
        after, torch.tensor([1.9 + 0.075 * 1.0 * sigmoid(2.0)], dtype=torch.float64)
    )


def test_deepmemory_keeps_a_copy_of_the_previous_gradient():
    # Gradients written into the same tensor (zero_grad(set_to_none=False)) must give the
    # trajectory of fresh gradient tensors: the original's alias of p.grad would not.
    grads = [[0.5, -1.0], [0.25, 2.0], [-1.0, 0.5]]
    fresh = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    _steps(DeepMemory([fresh]), fresh, grads)
    reused = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    reused.grad = torch.zeros(2, dtype=torch.float64)
    opt = DeepMemory([reused])
    for g in grads:
        reused.grad.copy_(torch.tensor(g, dtype=torch.float64))
        opt.step()
    torch.testing.assert_close(reused.detach(), fresh.detach(), rtol=0, atol=0)


def test_deepmemory_refuses_unknown_versions():
    with pytest.raises(ValueError, match="version"):
        DeepMemory([torch.zeros(1, requires_grad=True)], version=2)
