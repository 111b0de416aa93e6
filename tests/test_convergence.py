"""Every optimizer reaches the minimum of Rosenbrock, Beale and an ill-conditioned quadratic.

Each runs with the keywords its registry entry gives under ``converge`` (an lr, sometimes a
variant), a cosine-annealed lr unless the entry says ``anneal: False``, and a fixed budget.
"""

from __future__ import annotations

import pytest
import torch

from optimkit import registry


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
ENTRIES = registry.entries()


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_reaches_the_minimum(entry, problem):
    fn, start, minimum = PROBLEMS[problem]
    settings = dict(entry.converge)
    steps = settings.pop("steps", 3000)
    anneal = settings.pop("anneal", True)
    x = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = entry.factory([x], **{**entry.pinned, **settings})
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if anneal else None
    for _ in range(steps):
        opt.zero_grad()
        fn(x).backward()
        opt.step()
        if sched is not None:
            sched.step()
    distance = (x.detach() - torch.tensor(minimum, dtype=torch.float64)).norm().item()
    assert distance < 0.05, f"{entry.name} ended {distance:.3g} from the minimum of {problem}"
