"""Evaluating with an optimizer that has train and eval modes (Schedule-Free), and BatchNorm
statistics recomputed at the evaluation point.

A Schedule-Free optimizer (``optimkit.ScheduleFreeAdamW``, ``ScheduleFreeSGD``, or
``schedulefree``'s own) holds the model's params at the point the gradients are taken (``y``)
while training, and at the averaged point (``x``) after ``optimizer.eval()``: evaluate and save
in eval mode, train in train mode. :func:`evaluating` does the switch around an evaluation, for
any optimizer (a no-op for those without modes), so that generic loops (``optimkit bench``,
``lr_find``, the examples) need not know which kind they hold.

BatchNorm's running statistics are averaged over the training steps, at the ``y`` points; at
``x`` they are off. The fix the schedule_free maintainers give (facebookresearch/schedule_free
issue #60): with the params at ``x``, run a few training batches through the model with
BatchNorm in train mode and no gradients. :func:`recompute_bn_stats` does that.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..core.optimizer import optimkit_optimizers


def _switchable(optimizer: Any) -> list[Any]:
    """The optimizers inside ``optimizer`` that have train and eval modes: optimkit optimizers
    with transitions (reached through wrappers), or ``optimizer`` itself when it is another
    library's with ``train()`` and ``eval()`` methods (schedulefree's)."""
    if optimizer is None:
        return []
    found = [o for o in optimkit_optimizers(optimizer) if type(o).recipe.transitions]
    if found or optimkit_optimizers(optimizer):
        return found
    if callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None)):
        return [optimizer]
    return []


def _training(optimizer: Any) -> bool:
    training = getattr(optimizer, "training", None)
    if isinstance(training, bool):
        return training
    groups = getattr(optimizer, "param_groups", ())
    return all(group.get("train_mode", True) for group in groups)


@contextlib.contextmanager
def evaluating(optimizer: Any) -> Iterator[None]:
    """``optimizer.eval()`` on entry and ``optimizer.train()`` on exit, for an optimizer with
    train and eval modes (``with optimkit.evaluating(opt): evaluate(model)``).

    Reaches optimkit optimizers through wrappers (``Lookahead``), and takes any other
    optimizer with ``train()`` and ``eval()`` methods (``schedulefree.AdamWScheduleFree``).
    An optimizer without modes (``optimkit.Adam``, ``torch.optim.SGD``) or ``None``: nothing is
    done. One already in eval mode stays in it on exit (and a schedulefree optimizer whose
    ``train_mode`` is False, as at its construction, is left so).
    """
    switched = [o for o in _switchable(optimizer) if _training(o)]
    for inner in switched:
        inner.eval()
    try:
        yield
    finally:
        for inner in switched:
            inner.train()


_NONE = object()


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _inputs(batch: Any) -> Any:
    # (inputs, targets) pairs, as DataLoaders yield them; a tensor is the inputs itself
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Any], *,
                       num_batches: int | None = 50,
                       forward: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Recompute the running statistics of ``model``'s BatchNorm layers at the current params,
    and return the number of batches used.

    Call it with the params at the evaluation point, i.e. inside ``optimkit.evaluating(opt)``
    or after ``opt.eval()`` for a Schedule-Free optimizer, then evaluate::

        with optimkit.evaluating(opt):
            recompute_bn_stats(model, train_loader, num_batches=50)
            evaluate(model)

    Each BatchNorm layer (with ``track_running_stats``) is reset and fed the first
    ``num_batches`` batches of ``batches`` (all of them with ``None``) in train mode, with
    ``momentum=None``: its running mean and variance become the average of those batches'
    statistics. The other modules run in eval mode (no dropout), no gradient is computed, and
    every module's mode and every BatchNorm's momentum are put back afterwards. A batch is the
    model's input, or an ``(inputs, targets, ...)`` tuple whose first entry is; ``forward(model,
    batch)`` replaces ``model(inputs)`` for other formats. A model without BatchNorm is left
    alone (0 is returned).
    """
    if num_batches is not None and (isinstance(num_batches, bool) or
                                    not isinstance(num_batches, int) or num_batches < 1):
        raise ValueError(f"num_batches must be an integer >= 1 or None, got {num_batches!r}")
    norms = _batch_norms(model)
    if not norms:
        return 0
    iterator = iter(batches)
    first = next(iterator, _NONE)
    if first is _NONE:  # refused before any statistic is reset
        raise ValueError("batches: no batch to recompute the BatchNorm statistics from")
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    used = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
            m.train()
        for batch in itertools.chain([first], iterator):
            if num_batches is not None and used >= num_batches:
                break
            if forward is None:
                model(_inputs(batch))
            else:
                forward(model, batch)
            used += 1
    finally:
        for m, training in modes.items():
            m.training = training
        for m, momentum in momenta.items():
            m.momentum = momentum
    return used
