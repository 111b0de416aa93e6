"""Shared helpers of the test suite: deterministic params, gradients and runs."""

from __future__ import annotations

import torch

# A matrix, a vector, a 0-d scalar, a 3-d tensor and a zero-initialised bias.
SHAPES = [(5, 3), (4,), (), (2, 3, 2), (3,)]


def make_params(dtype=torch.float64, seed=0, zero_last=True):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=gen, dtype=dtype) for shape in SHAPES]
    if zero_last:
        params[-1].zero_()
    return params


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


def fake_grads(params, step, seed=1):
    """Deterministic gradients for ``step``: random, with a slowly drifting mean."""
    gen = torch.Generator().manual_seed(seed * 100_003 + step)
    return [
        (torch.randn(p.shape, generator=gen, dtype=torch.float64) + 0.3 * p.detach().double()).to(
            p.dtype
        )
        for p in params
    ]


def run(optimizer, params, steps, start=0, seed=1, skip=None):
    """Step ``optimizer`` ``steps`` times on fake gradients; ``skip(step, i)`` sets grad None."""
    for step in range(start, start + steps):
        grads = fake_grads(params, step, seed)
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if skip is not None and skip(step, i) else g
        optimizer.step()
    return optimizer


def as_tensor(value, like):
    if isinstance(value, torch.Tensor):
        return value.detach().to(like.dtype) if value.is_floating_point() else value.to(like.dtype)
    return torch.tensor(float(value), dtype=like.dtype)


def build_fast(info, params, **options):
    """Build ``info``'s optimizer with speed options (``compile``, ``flat``) and ``kwargs``.

    A factory that does not take the options (a wrapper such as Lookahead) gets them through
    ``optimkit.accelerate``, which reaches the optimkit optimizer inside.
    """
    import inspect

    import optimkit

    kwargs = {k: v for k, v in options.items() if k not in ("compile", "flat")}
    speed = {k: v for k, v in options.items() if k in ("compile", "flat")}
    try:
        takes = set(inspect.signature(info.factory).parameters)
    except (TypeError, ValueError):
        takes = set()
    if set(speed) <= takes:
        return info.factory(params, **kwargs, **speed)
    return optimkit.accelerate(info.factory(params, **kwargs), **speed)
