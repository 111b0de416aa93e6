"""Every optimizer reaches the minimum of Rosenbrock, Beale, an ill-conditioned quadratic and a
least-squares fit with two layers (a matrix and a bias, so layer-wise rules see two tensors).

Each runs with the keywords its test-database entry gives under ``converge`` (an lr, sometimes a
variant) for ``converge_steps`` steps, with a cosine-annealed lr unless ``converge_anneal`` is
False.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SLOW, optims

pytestmark = SLOW  # hundreds of steps per optimizer and problem: about 35 s per optimizer


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def beale(x):
    return (
        (1.5 - x[0] + x[0] * x[1]) ** 2
        + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2
        + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2
    )


def ill_conditioned_quadratic(x):
    return 0.5 * (x[0] ** 2 + 100 * x[1] ** 2)  # condition number 100


PROBLEMS = {
    "rosenbrock": (rosenbrock, (-0.5, 0.5), (1.0, 1.0)),
    "beale": (beale, (1.0, 1.5), (3.0, 0.5)),
    "quadratic": (ill_conditioned_quadratic, (3.0, -2.0), (0.0, 0.0)),
}


def _minimise(info, params, loss):
    steps = info.converge_steps
    opt = info.factory(params, **{**info.pinned, **info.converge})
    anneal = info.converge_anneal
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if anneal else None
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
        if sched is not None:
            sched.step()
    # judged at the optimizer's evaluation point: Schedule-Free's averaged params (a no-op for
    # the optimizers without train/eval modes)
    if callable(getattr(opt, "eval", None)):
        opt.eval()


@pytest.mark.parametrize("problem", list(PROBLEMS))
@optims()
def test_reaches_the_minimum(info, problem):
    fn, start, minimum = PROBLEMS[problem]
    x = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    _minimise(info, [x], lambda: fn(x))
    distance = (x.detach() - torch.tensor(minimum, dtype=torch.float64)).norm().item()
    assert distance < 0.05, f"{info.name} ended {distance:.3g} from the minimum of {problem}"


@optims()
def test_fits_a_two_layer_least_squares_problem(info):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(8, 4, generator=gen, dtype=torch.float64) + 1.0  # an exact fit exists

    def loss():
        return ((x @ w + b - y) ** 2).mean()

    start = loss().item()
    _minimise(info, [w, b], loss)
    assert loss().item() < 1e-3 * start, f"{info.name}: loss {loss().item():.3g} from {start:.3g}"
