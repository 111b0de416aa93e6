"""Compiled mode: the whole composed step of a bucket under ``torch.compile``.

``Optimizer(params, compile=True)`` runs the recipe's parts, unchanged, inside one compiled
function per bucket. Every numeric hyper-parameter is an input of the graph: they travel packed
in one float64 tensor and reach the parts as 0-d tensors computed in the graph (a tuple such as
``betas`` element by element), usable wherever foreach ops take a number (``alpha=-lr``,
``value=1 - beta2``, a lerp weight); the per-tensor step counts are tensors too. So a schedule
of ``lr``, ``betas``, ``momentum``, ``weight_decay``, ``eps`` or any other number never
recompiles, and each step uses the value of the moment. (A raw graph input handed to an op as
a Python number would be read once, at trace time: hence the unbind.)

The exceptions are the values 0 and 1, which stay Python numbers (except for
:data:`SCHEDULED_HYPERS`, always tensors): a part may skip work for them (``if
is_zero(weight_decay)``, ``if not is_one(nu)``, see ``core/tensorlists.py``), so a hyper that
crosses 0 or 1 recompiles once. Flags, integers and strings are constants the parts may branch
on. A part must not branch in Python on any other number (``if momentum > 0`` belongs in
``only_if``, evaluated outside the graph).

A step that creates state (a param's first step) runs eagerly, so the compiled graph never
sees ``bucket.created``; the first compiled step is the second step. A part that runs only
every k-th step (``every=``, Lookahead's sync) is left out of the graph: the executor runs it
afterwards, eagerly, on the steps it is due, so the graph is the same at every step. A
scheduled part (``due=``, Kron's factor fit) stays in the graph: the executor runs the step
with it on the tensors it is due on and without it on the others, two graphs, each compiled
once.

The step compiles as ONE graph (``fullgraph=True``). A graph break would let dynamo compile the
parts frame by frame instead, and mark ``_traced_step`` as skipped for the whole process: every
optimizer stepping after it, of any recipe, would then run frame by frame too (that is how a
NovoGrad step once changed a later DeepMemory's 8-bit results). A recipe whose step does not
trace (a user's part calling an untraceable op) warns once and runs eagerly; nothing of the
failed trace has run.

A sharded (FSDP2) bucket whose recipe has a part that needs each full tensor (``whole``) is
stepped in segments: each run of other parts is one compiled graph (``carry=True``: the
per-step fields go in and come out), and the whole part runs eagerly between them, since it
exchanges shards point-to-point (``core/whole.py``).

Without a C++ compiler (needed by inductor on the CPU) the optimizer warns and runs eagerly.
Under a user's TorchDispatchMode (``CommDebugMode``, ``FlopCounterMode``) dynamo compiles
nothing, so those steps run eagerly, as torch.compile itself would run them, and later steps
compile again.
Over a list of N tensors (``flat=False``) dynamo unrolls the step per tensor and compile time
grows with N (per-tensor numbers reach the ops as 0-d tensors: see ``tensorlists.scalars``); so
``compile=True`` turns flat mode on by default, where the bucket is one tensor and the step
compiles once, in seconds.
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
from .parts import layout_of
from .policy import Layout
from .sharded import ShardedBucket
from .tensorlists import Bucket

# Hyper-parameters passed to the compiled step as tensors whatever their value; every other
# number is a tensor too unless it is 0 or 1 (see the module doc).
SCHEDULED_HYPERS = frozenset({"lr", "betas", "momentum"})
# Hyper-parameters that shape the computation rather than scale it, baked into the compiled
# step as constants (a change recompiles): Muon's Newton-Schulz coefficients, which torch's
# fused matrix products (addmm's beta and alpha) take as Python numbers only.
CONSTANT_HYPERS = frozenset({"ns_coefficients"})


@functools.cache
def has_cxx_compiler() -> bool:
    candidates = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(name and shutil.which(name) for name in candidates)


def can_compile(device: torch.device) -> bool:
    """Whether a step on ``device`` can be compiled here (inductor needs a C++ compiler on CPU)."""
    return device.type != "cpu" or has_cxx_compiler()


def under_dispatch_mode() -> bool:
    """Whether dynamo would skip every frame now: a non-infra TorchDispatchMode is active (with
    ``fullgraph=True`` it raises, after running the step, that nothing was compiled)."""
    from torch.utils import _python_dispatch as dispatch

    if getattr(torch._dynamo.config, "inline_torch_dispatch_torch_compile", False):
        return dispatch.any_torch_dispatch_mode_on_stack()
    return dispatch.is_in_any_mode_without_ignore_compile_internals()


def _is_number(value: Any, always: bool) -> bool:
    if isinstance(value, Tensor):
        return value.numel() == 1
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # 0 and 1 stay Python numbers that parts may branch on; ints are counts and sizes
    return isinstance(value, float) and (always or value not in (0.0, 1.0))


def graph_inputs(group: Mapping[str, Any], names: Sequence[str]):
    """The hyper-parameters ``names`` of ``group`` as the compiled step takes them.

    Returns ``(numbers, layout, constants)``: every number (tuple elements included) packed in
    ONE 1-D float64 CPU tensor, the constant ``layout`` that says where each came from
    (``(name, None)`` for a number, ``(name, (is_number, ...))`` for a tuple), and the other
    values (flags, ints, strings, 0 and 1).
    """
    numbers: list[float] = []
    layout = []
    constants = {}
    for name in names:
        value, always = group[name], name in SCHEDULED_HYPERS
        if name in CONSTANT_HYPERS:
            constants[name] = tuple(value) if isinstance(value, list) else value
            continue
        if isinstance(value, (tuple, list)) and any(_is_number(v, always) for v in value):
            mask = tuple(_is_number(v, always) for v in value)
            numbers += [float(v) for v, m in zip(value, mask, strict=True) if m]
            constants[name] = tuple(None if m else v for v, m in zip(value, mask, strict=True))
            layout.append((name, mask))
        elif _is_number(value, always):
            numbers.append(float(value))
            layout.append((name, None))
        else:
            constants[name] = value
    return torch.tensor(numbers, dtype=torch.float64), tuple(layout), constants


def _zero_d_as_vectors(parts, policy, params, grads, state):
    # A hyper reaches the graph as a 0-d float64 tensor, where eager mode passes a Python
    # number. Against a tensor of one dimension or more the two round alike (the op computes
    # in the tensor's dtype), but against a 0-d fp32 tensor (a scalar param such as a logit
    # scale, its grad and moments) the 0-d float64 operand wins the type promotion: the op
    # would compute in float64 and round once, eager in fp32 -- a compiled step an ulp or so
    # off its eager self at every step. Viewed as [1] (views: in-place ops write the
    # originals), those tensors compute in fp32 as in eager mode. A state of one number per
    # param (a step counter, a layer-wise moment: SCALAR) keeps its shape, as parts stack it.
    declared = {name: layout_of(init) for part in parts
                for name, init in getattr(part, "state", {}).items()}
    layouts = policy.layouts(declared)
    zero_d = [p.dim() == 0 for p in params]

    def vector(tensors):
        return [t.view(1) if z and t.dim() == 0 else t
                for t, z in zip(tensors, zero_d, strict=True)]

    # the recipe's states of the param's shape or their own, the policy's of the param's
    # (not its block scales or its step counter)
    viewed = {name for name, layout in layouts.items()
              if layout is Layout.PARAM or (layout is Layout.OWN and name in declared)}
    state = {name: vector(tensors) if name in viewed else tensors
             for name, tensors in state.items()}
    return vector(params), vector(grads), state


def _traced_step(parts, policy, arguments, layout, params, grads, state, numbers, where,
                 constants, fields=None):
    # Each number becomes a 0-d tensor computed in the graph (unbind), so that ops taking a
    # Python number (alpha=, value=) read it at run time: never burnt into the graph.
    values = iter(numbers.unbind())
    group = dict(constants)
    for name, mask in where:
        if mask is None:
            group[name] = next(values)
        else:
            group[name] = tuple(next(values) if m else v
                                for v, m in zip(constants[name], mask, strict=True))
    if layout is None:
        # (not for a recipe whose parts read shapes: Kron's factors of a 0-d param are 0-d)
        if any(p.dim() == 0 for p in params) and not any(
                getattr(part, "shaped", False) for part in parts):
            params, grads, state = _zero_d_as_vectors(parts, policy, params, grads,
                                                         state)
        bucket = Bucket(params, grads, state, {})
    elif layout[0] == "sharded":
        bucket = ShardedBucket(params, grads, state, {}, layout[1], shapes=layout[2])
    else:
        bucket = FlatBucket(params, grads, state, {}, layout[1])
    if fields is not None:  # a segment of a step (core/whole.py): fields in and out
        bucket.carry(fields)
    prepared = policy.prepare(bucket, group, arguments)
    contributed = []
    for part in parts:
        out = part(bucket, group)
        if part.contributes:  # a phase before a barrier: its sums leave the graph
            contributed.append(out)
    policy.finalize(bucket, group, prepared)
    # a segment hands its per-step fields on (core/whole.py); a phase its sums (a barrier's)
    return (bucket.carried() if fields is not None else None), contributed


# Inductor realises a pointwise value read by several consumers into a buffer of its own once it
# reads more than `realize_reads_threshold` (4) inputs. An optimizer step's values (LAMB's
# direction m / (sqrt(v) + eps) + wd p: m, v, p and the hypers) pass that easily, and a
# param-sized buffer allocated fresh every step costs page faults on the CPU: LAMB's compiled
# step ran 3x slower with it (benchmarks/flat_steps.py). Recomputed in each pass instead, it
# costs only arithmetic.
INDUCTOR_OPTIONS = {"realize_reads_threshold": 64}
# Compiled steps kept per process (dynamo's cache entries of _traced_step).
RECOMPILE_LIMIT = 256


@functools.cache
def register_inductor_prims() -> None:
    # FlatBucket.expand marks per-param numbers with inductor's force_stride_order prim
    import torch._inductor.inductor_prims  # noqa: F401


@functools.cache
def _compiled_step():
    # Made at the first compiled step: torch.compile imports torch._dynamo, seconds that an
    # ``import optimkit`` without compile=True need not pay.
    register_inductor_prims()
    # one cache entry per bucket shape and recipe: many optimizers in one process must not
    # fall back to eager at dynamo's default limit of 8
    return torch.compile(_traced_step, dynamic=False, fullgraph=True, options=INDUCTOR_OPTIONS,
                         recompile_limit=RECOMPILE_LIMIT)


def run_compiled(bucket: Bucket, group: Mapping[str, Any], parts: Sequence, policy,
                 arguments: tuple = (), carry: bool = False,
                 sink: list | None = None) -> str | None:
    """Run ``parts`` on ``bucket`` through the compiled step, between the ``policy``'s
    ``prepare`` and ``finalize`` (see core/executor.py); ``arguments`` are the policy's
    host-side numbers for this bucket (random-bit keys, a graph input; offsets, constants).
    With ``carry``, ``parts`` are one segment of a step: the graph starts from ``bucket``'s
    per-step fields and sets them to its own at the end (``core/whole.py``).
    Returns None, or, where the step does not trace as one graph, why (then nothing ran).
    What the parts contribute for a barrier (``contributes``) is appended to ``sink`` as
    ``(names, values)``."""
    names = list(dict.fromkeys(name for part in parts for name in part.passed))
    layout = None
    if isinstance(bucket, FlatBucket):
        layout = ("flat", bucket.layout)
    elif isinstance(bucket, ShardedBucket):
        layout = ("sharded", bucket.groups, bucket.full_shapes)
    options = policy.compile_options(bucket)
    if any(part.batch for part in parts):
        # batched matrix math may run in a narrower dtype (Muon's bf16 Newton-Schulz): round
        # every intermediate as eager mode does, so the compiled step is the eager one
        options = {**options, "emulate_precision_casts": True}
    import torch._inductor.config as inductor_config

    with torch._dynamo.config.patch(capture_scalar_outputs=True), inductor_config.patch(options):
        try:
            if carry:
                fields = bucket.carried()
                carried, contributed = _compiled_step()(
                    tuple(parts), policy, arguments, layout, bucket.params, fields[0],
                    bucket.state, *graph_inputs(group, names), fields,
                )
                bucket.carry(carried)
            else:
                _, contributed = _compiled_step()(
                    tuple(parts), policy, arguments, layout, bucket.params, bucket.grads,
                    bucket.state, *graph_inputs(group, names),
                )
        except torch._dynamo.exc.Unsupported as error:
            return str(error).strip().splitlines()[0]
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            # fullgraph turns dynamo's eager fallback at the limit into this error
            return (f"the process holds {RECOMPILE_LIMIT} compiled steps already (one per "
                    "bucket shape, recipe and policy)")
    if sink is not None and contributed:
        sink.extend(zip((part.contributes for part in parts if part.contributes), contributed,
                        strict=True))
    return None


def warn_eager(reason: str) -> None:
    warnings.warn(f"compile=True: {reason}; running the step eagerly", RuntimeWarning, stacklevel=3)
