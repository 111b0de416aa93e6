"""The trust-ratio optimizers and the Lookahead compositions minimise a least-squares fit (a
matrix and a bias: two layers) with the registry's ``converge`` settings."""

from __future__ import annotations

import pytest
import torch

from optimkit import registry

NAMES = ["lars", "larc", "lamb", "ralamb", "ranger", "rangerlars"]


@pytest.fixture(autouse=True)
def one_thread():
    # The problem is tiny: more threads only contend (seconds per test on a loaded machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _least_squares():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(8, 4, generator=gen, dtype=torch.float64) + 1.0
    return [w, b], lambda: ((x @ w + b - y) ** 2).mean()


def _minimise(name, params, loss, steps):
    entry = registry.get(name)
    opt = entry.factory(params, **entry.converge)

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    for _ in range(steps):
        opt.step(closure)
    return float(loss().detach())


@pytest.mark.parametrize("name", NAMES)
def test_least_squares(name):
    params, loss = _least_squares()
    start = float(loss().detach())
    assert _minimise(name, params, loss, 150) < 0.05 * start
