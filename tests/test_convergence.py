"""Every optimizer reaches the minimum of Rosenbrock, Beale, an ill-conditioned quadratic and a
least-squares fit with two layers (a matrix and a bias, so layer-wise rules see two tensors).

Each runs with the keywords its test-database entry gives under ``converge`` (an lr, sometimes a
variant) for ``converge_steps`` steps, with a cosine-annealed lr unless ``converge_anneal`` is
False.
"""

from __future__ import annotations

import dataclasses

import torch
from conftest import SLOW, optims

pytestmark = SLOW  # hundreds of steps per optimizer and problem: one optimizer over four problems


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


def _least_squares():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(8, 4, generator=gen, dtype=torch.float64) + 1.0  # an exact fit exists

    def loss():
        return ((x @ w + b - y) ** 2).mean()

    return [w, b], loss


def _coupled(info) -> bool:
    """Whether one param's step depends on the others' (a barrier: Prodigy's and D-Adaptation's
    estimate of d sums over every param)."""
    probe = info.factory([torch.zeros(2, requires_grad=True)], **{**info.pinned, **info.converge})
    recipe = getattr(type(probe), "recipe", None)
    return bool(recipe is not None and recipe.barriers)


def _problems(names):
    """The params, the summed loss, the points of ``names`` (of PROBLEMS) and the least-squares
    fit (its params and loss) where "least-squares" is among them."""
    points = {name: torch.tensor(PROBLEMS[name][1], dtype=torch.float64, requires_grad=True)
              for name in names if name in PROBLEMS}
    fit = _least_squares() if "least-squares" in names else None

    def total():
        terms = [PROBLEMS[name][0](x) for name, x in points.items()]
        return sum(terms + ([fit[1]()] if fit is not None else []))

    params = [*points.values(), *(fit[0] if fit is not None else ())]
    return params, total, points, fit


def _failures(info, names) -> list[str]:
    """Minimise ``names`` (of PROBLEMS, and "least-squares"); the ones missed, said.

    The problems are independent params, so for an optimizer whose steps are per param (or per
    tensor) one optimizer over all of them takes the same steps as one optimizer per problem,
    at a quarter of the per-step cost; a coupled optimizer runs one per problem."""
    params, total, points, fit = _problems(names)
    start = fit[1]().item() if fit is not None else None
    _minimise(info, params, total)
    missed = []
    for name, x in points.items():
        distance = (x.detach() - torch.tensor(PROBLEMS[name][2], dtype=torch.float64)).norm()
        if distance.item() >= 0.05:
            missed.append(f"ended {distance.item():.3g} from the minimum of {name}")
    if fit is not None and fit[1]().item() >= 1e-3 * start:
        missed.append(f"least squares: loss {fit[1]().item():.3g} from {start:.3g}")
    return missed


@optims()
def test_reaches_every_minimum(info):
    """Rosenbrock, Beale and the quadratic reached (within 0.05), and the two-layer least-squares
    loss cut 1000-fold."""
    problems = [*PROBLEMS, "least-squares"]
    if _coupled(info):
        missed = [m for name in problems for m in _failures(info, [name])]
    else:
        missed = _failures(info, problems)
    assert not missed, f"{info.name}: " + "; ".join(missed)


def test_one_optimizer_over_the_problems_steps_as_one_per_problem():
    """The premise of the shared run: for a per-param optimizer (Adam here), one optimizer over
    the four problems ends where the four single-problem runs end, bit for bit."""
    import optim_db

    info = next(i for i in optim_db.DB if i.name == "adam")
    info = dataclasses.replace(info, converge_steps=50)
    runs = {}
    for names in ([*PROBLEMS, "least-squares"], *([name] for name in PROBLEMS)):
        params, total, points, _ = _problems(names)
        _minimise(info, params, total)
        runs[tuple(names)] = {name: x.detach() for name, x in points.items()}
    shared = runs[(*PROBLEMS, "least-squares")]
    for name in PROBLEMS:
        assert torch.equal(shared[name], runs[(name,)][name]), name
