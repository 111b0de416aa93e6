"""Compiled mode: the whole composed step of a bucket under ``torch.compile``.

``Optimizer(params, compile=True)`` runs the recipe's parts, unchanged, inside one compiled
function per bucket. The continuous hyper-parameters that schedulers change
(:data:`SCHEDULED_HYPERS`: ``lr``, ``betas``, ``momentum``) reach the parts as 0-d float64
tensors (``betas`` as a tuple of them); dynamo accepts them where foreach ops take a number
(``alpha=-lr``, ``value=1 - beta2``, a lerp weight), and the per-tensor step counts are tensors
too, so an LR or momentum schedule never recompiles. A part must therefore not branch in
Python on these three (``if momentum == 0`` belongs in ``only_if``, which is evaluated outside
the graph). Every other hyper (``weight_decay``, ``eps``, flags) is a Python constant the parts
may branch on: changing it recompiles.

A step that creates state (a param's first step) runs eagerly, so the compiled graph never
sees ``bucket.created``; the first compiled step is the second step. A part that runs only
every k-th step (``every=``, Lookahead's sync) is left out of the graph: the executor runs it
afterwards, eagerly, on the steps it is due, so the graph is the same at every step.

Without a C++ compiler (needed by inductor on the CPU) the optimizer warns and runs eagerly.
Over a list of N tensors (``flat=False``) dynamo unrolls the step per tensor, compile time grows
with N and per-tensor scalars become unfused ScalarList ops; so ``compile=True`` turns flat mode
on by default, where the bucket is one tensor and the step compiles once, in seconds.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .flat import FlatBucket
from .tensorlists import Bucket

# Hyper-parameters passed to the compiled step as tensors (schedulable without recompiling).
SCHEDULED_HYPERS = frozenset({"lr", "betas", "momentum"})


@functools.cache
def has_cxx_compiler() -> bool:
    candidates = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(name and shutil.which(name) for name in candidates)


def can_compile(device: torch.device) -> bool:
    """Whether a step on ``device`` can be compiled here (inductor needs a C++ compiler on CPU)."""
    return device.type != "cpu" or has_cxx_compiler()


def hyper_tensors(group: Mapping[str, Any], names: Sequence[str]) -> dict[str, Tensor]:
    """The scheduled hypers of ``group`` as float64 CPU tensors (tuples as 1-D tensors)."""
    out = {}
    for name in names:
        if name not in SCHEDULED_HYPERS:
            continue
        value = group[name]
        if isinstance(value, (tuple, list)):
            out[name] = torch.tensor([float(v) for v in value], dtype=torch.float64)
        else:
            out[name] = torch.as_tensor(value, dtype=torch.float64).detach().cpu().reshape(())
    return out


def _traced_step(parts, policy, arguments, layout, params, grads, state, tensors, constants):
    group = dict(constants)
    for name, value in tensors.items():
        group[name] = tuple(value.unbind()) if value.dim() else value
    if layout is None:
        bucket = Bucket(params, grads, state, {})
    else:
        bucket = FlatBucket(params, grads, state, {}, *layout)
    prepared = policy.prepare(bucket, group, arguments)
    for part in parts:
        part(bucket, group)
    policy.finalize(bucket, group, prepared)


_compiled_step = torch.compile(_traced_step, dynamic=False)


def run_compiled(bucket: Bucket, group: Mapping[str, Any], parts: Sequence, policy,
                 arguments: tuple = ()) -> None:
    """Run ``parts`` on ``bucket`` through the compiled step, between the ``policy``'s
    ``prepare`` and ``finalize`` (see core/executor.py); ``arguments`` are the policy's
    host-side numbers for this bucket, constants of the graph."""
    names = [name for part in parts for name in part.passed]
    tensors = hyper_tensors(group, names)
    constants = {name: group[name] for name in names if name not in tensors}
    layout = (bucket.lengths, bucket.sizes) if isinstance(bucket, FlatBucket) else None
    # one cache entry per bucket shape and recipe: many optimizers in one process must not
    # fall back to eager silently at dynamo's default limit of 8
    options = {} if policy.plain else policy.compile_options
    import torch._inductor.config as inductor_config

    with torch._dynamo.config.patch(capture_scalar_outputs=True, recompile_limit=256), \
            inductor_config.patch(options):
        _compiled_step(
            tuple(parts), policy, arguments, layout, bucket.params, bucket.grads, bucket.state,
            tensors, constants,
        )


def warn_eager(reason: str) -> None:
    warnings.warn(f"compile=True: {reason}; running the step eagerly", RuntimeWarning, stacklevel=3)
