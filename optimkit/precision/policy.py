"""Precision and memory policies: one mechanism, applied around the parts of every recipe.

A policy is three optimizer keywords, accepted by every optimizer:

* ``state_dtype``: ``None`` (the param's dtype: today's behaviour, bit for bit),
  ``torch.float32`` or ``torch.bfloat16``. fp32 state for bf16 params is the mixed-precision
  policy; bf16 state for fp32 params halves the state's memory.
* ``state_bits``: ``None``, ``8`` (every state that may be quantized, see :class:`Storage`), or
  a dict ``{state name: 8}`` choosing some of them. Block-wise 8-bit state
  (:mod:`optimkit.precision.quantize`): 1.016 B per element.
* ``param_update``: ``"plain"`` (nearest rounding), ``"stochastic"`` (stochastic rounding of
  the float32 result into bf16/fp16 params) or ``"kahan"`` (a compensation buffer in the param's
  dtype, 2 B/param for bf16), see :mod:`optimkit.precision.rounding`.

**What the parts see.** The parts never know about the policy. Before they run on a bucket,
:meth:`Precision.prepare` hands them *working* tensors in the bucket's compute dtype; after
them, :meth:`Precision.finalize` writes the working tensors back into storage:

* the compute dtype is float32 when the params are bf16/fp16 and the policy changes anything
  for them (wider state, 8-bit state, or a ``param_update`` rule): the update of a bf16 param
  with fp32 state is computed in fp32, never in bf16. Otherwise it is the param's dtype:
  8-bit state of float64 params is decoded into float64 (its values are float32 numbers; a
  value beyond float32's range is stored as inf, see :mod:`.quantize`).
* a state stored in the compute dtype is handed over as it is (updated in place); a narrower
  one (bf16 state, 8-bit codes) is materialised in the compute dtype and written back after
  the parts: 8-bit codes are requantized (nearest), bf16/fp16 state is written with
  stochastic rounding, because nearest rounding freezes moving averages: ``0.999 * v`` rounds
  back to ``v`` in bf16, so a bf16 second moment could never decay.
* params with a lower precision than the compute dtype are upcast (with their Kahan
  compensation added, ``p + c``), updated by the parts, and written back by the
  ``param_update`` rule.

**What may be stored how** is declared per state (:class:`Storage`), never guessed: moments may
be narrowed and quantized; param copies (Lookahead's slow weights) keep at least the param's
precision and are never quantized; step counters are never touched; per-tensor scalars (0-d
state: NovoGrad's layer-wise moment) keep the wider of the param's dtype and ``state_dtype``.

**Random bits** for stochastic rounding come from :func:`rounding.random_words` keyed by the
policy's seed and the params' ``step`` counters (a recipe without one gets one when the policy
needs it), with each tensor's element offset in its (param group, device, dtype) layout: runs
reproduce from the seed, in every execution mode.

**Execution modes.** Eager, flat and compiled steps run the same ``prepare`` -> parts ->
``finalize``. Buckets and flat stores are split by whether a param's state is 8-bit (so a
bucket's lists are alike). Under a policy, a flat store steps per tensor over its views (its
one-tensor step runs on a padded ``[rows, 64]`` layout whose element offsets and 256-element
blocks are not the per-tensor ones): flat and eager steps quantize the same blocks and draw the
same random bits, so they agree bit for bit and the per-param ``state_dict`` entries are the
same in both modes. Eager CPU steps under a policy run the bucket whole (not in cache blocks).

**FSDP2 (DTensor params).** The codes of an 8-bit state are a DTensor laid out like the param;
the block scales (``<name>_absmax``) are the *local* shard's blocks (a DTensor sharded like the
param, padded to the largest shard's block count): a shard is quantized on its own, with no
collective, and blocks restart at each shard's first element.
The result equals the unsharded run's bit for bit in layout when each shard holds whole blocks
(``numel`` of a shard a multiple of 256), and within the quantization error otherwise.
Stochastic rounding draws, per element, the bits of its offset in the full tensor, so sharded
and unsharded runs round alike. A distributed checkpoint (DCP) of 8-bit state resumes exactly
with the same number of ranks (codes and scales are sharded DTensors), and with any other
number where both shardings have the unsharded layout (every shard ``ceil(rows / ranks)``
rows of whole 256-element blocks: the scales are then the unsharded tensor's, and DCP
reshards them like the codes). Under another layout the scales would belong to other
blocks: each saved param group records its params' layouts in its ``state_form``
(``";shards=..."``), and a load under a different one is refused naming both, before
anything changes (or DCP itself refuses a scale tensor of another size). Another policy's state
converts shard by shard when handed over in memory (``set_optimizer_state_dict`` with another
optimizer's ``get_optimizer_state_dict``). DCP cannot convert: it copies a checkpoint into the
template's own tensors and dtypes, so 8-bit codes loaded through a template without 8-bit
state would arrive as numbers 0..255. Each saved param group names its 8-bit states
(``state_form``), and such a load is refused with the route that works: load into an
optimizer with ``state_bits=8``, then hand its state over in memory.

**Checkpoints.** ``state_dict()`` holds the stored form (codes, scales, compensation; the seed
as each group's ``rounding_seed``) and loads back exactly; a checkpoint of another policy (or
of torch.optim) is converted on load (:meth:`Precision.conform`), after every param's state
was checked against the stored forms (:func:`check_loaded_state`): a refused load changes
nothing. ``torch_state_dict()`` converts to torch's form: moments dequantized and cast to the
param's dtype, the policy's entries dropped.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..core.policy import (
    PLAIN,
    STATE_FORM,
    BucketPolicy,
    Layout,
    Storage,
    check_state_shapes,
    use_policies,
)
from . import quantize as q
from . import rounding

PARAM_UPDATES = ("plain", "stochastic", "kahan")
STATE_DTYPES = (torch.float32, torch.bfloat16)
COMPENSATION = "compensation"
ABSMAX_SUFFIX = "_absmax"
# (STATE_FORM, the param-group entry of a state_dict that names the states saved as 8-bit
# codes, is the core's: every optimizer writes it)


# why a kind of state is never quantized, for the error message
_NOT_QUANTIZABLE = {
    Storage.EXACT: "it is a copy of the params and must keep their precision",
    Storage.SCALAR: "it is one number per tensor",
    Storage.COUNTER: "it is a step counter",
}


def _wider(a: torch.dtype, b: torch.dtype | None) -> torch.dtype:
    if b is None or a == b:
        return a
    bits_a, bits_b = torch.finfo(a).bits, torch.finfo(b).bits
    if bits_a != bits_b:
        return a if bits_a > bits_b else b
    return torch.float32  # bfloat16 and float16: neither holds the other


@dataclasses.dataclass(frozen=True)
class Precision:
    """One optimizer's precision and memory policy (see the module doc)."""

    state_dtype: torch.dtype | None = None
    state_bits: int | Mapping[str, int] | None = None
    param_update: str = "plain"
    seed: int = 0

    def __post_init__(self) -> None:
        dtype = self.state_dtype
        if dtype is not None and dtype not in STATE_DTYPES:
            if not isinstance(dtype, torch.dtype):
                why = f"of type {type(dtype).__name__}, not a torch.dtype"
            elif dtype == torch.float16:
                why = "float16 state overflows in squared gradients"
            elif dtype.is_floating_point:
                why = "state is kept in float32 at most; use None for the params' own dtype"
            else:
                why = "optimizer state is floating point; state_bits=8 quantizes it"
            raise ValueError(
                f"state_dtype: expected None, torch.float32 or torch.bfloat16, got {dtype!r} "
                f"({why})"
            )
        bits = self.state_bits
        values = bits.values() if isinstance(bits, Mapping) else [bits]
        for value in values:
            if value is not None and (isinstance(value, bool) or value != 8):
                raise ValueError(f"state_bits: only 8-bit state is implemented, got {value!r}")
        if isinstance(bits, Mapping) and not bits:
            raise ValueError("state_bits: an empty dict quantizes nothing; pass None")
        if self.param_update not in PARAM_UPDATES:
            raise ValueError(
                f"param_update: expected one of {', '.join(map(repr, PARAM_UPDATES))}, "
                f"got {self.param_update!r}"
            )

    @classmethod
    def from_keywords(
        cls, *, state_dtype: torch.dtype | None = None,
        state_bits: int | Mapping[str, int] | None = None, param_update: str = "plain",
        generator: torch.Generator | None = None,
    ) -> Precision:
        """The policy of an optimizer's keywords; its seed is drawn from ``generator`` (or from
        torch's default generator, so ``torch.manual_seed`` reproduces a run)."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator: expected a torch.Generator or None, got {generator!r} (of type "
                f"{type(generator).__name__}); for a fixed seed pass "
                "torch.Generator().manual_seed(seed)"
            )
        device = None if generator is None else generator.device
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator, device=device))
        return cls(state_dtype, state_bits, param_update, seed)

    @property
    def plain(self) -> bool:
        """Whether this policy is today's behaviour (nothing to do)."""
        return self.state_dtype is None and self.state_bits is None and self.param_update == "plain"

    # ------------------------------------------------------------------ checks
    def check(self, storages: Mapping[str, Storage], params: Iterable[Tensor], owner: str) -> None:
        """Refuse what makes no sense for a recipe whose states are ``storages``, on ``params``.

        ``ValueError`` naming the keyword: ``param_update`` without a bf16/fp16 param,
        ``state_bits`` naming a state the recipe lacks or one that must stay exact, or
        ``state_bits=8`` for a recipe without a state that may be quantized (a recipe whose
        quantizable state no param group uses warns instead: :meth:`check_groups`).
        """
        if self.param_update != "plain":
            dtypes = {p.dtype for p in params}
            if not dtypes & set(rounding.LOW_PRECISION):
                found = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
                raise ValueError(
                    f"param_update={self.param_update!r} rounds updates into bfloat16 or "
                    f"float16 params, but {owner}'s params are {found}; use 'plain'"
                )
        bits = self.state_bits
        if isinstance(bits, Mapping):
            for name in bits:
                storage = storages.get(name)
                if storage is None:
                    raise ValueError(
                        f"state_bits: {owner} has no state {name!r}; its states are "
                        f"{', '.join(sorted(storages)) or 'none'}"
                    )
                if not storage.quantizable:
                    raise ValueError(
                        f"state_bits: {owner}'s state {name!r} cannot be quantized: "
                        f"{_NOT_QUANTIZABLE[storage]}"
                    )
        elif bits is not None and not any(s.quantizable for s in storages.values()):
            raise ValueError(f"state_bits: {owner} keeps no state that may be quantized")

    def check_groups(self, storages: Mapping[str, Storage], parts: Sequence[Any],
                     groups: Sequence[Mapping[str, Any]], owner: str,
                     stacklevel: int = 3) -> None:
        """Warn (``UserWarning``) when ``state_bits`` quantizes nothing because the parts that
        keep quantizable state run in no param group (``SGD(momentum=0)``: no momentum
        buffer). A warning, not a refusal: a group's hyper-parameters may change later (a
        group added with momentum, a loaded checkpoint), and then its state is quantized."""
        bits = self.state_bits
        if bits is None:
            return
        idle = []
        for part in parts:
            names = [n for n in part.state if storages[n].quantizable
                     and (not isinstance(bits, Mapping) or n in bits)]
            if not names:
                continue
            if any(part.active(group) for group in groups):
                return
            idle.append(f"{', '.join(names)} (part {part.name})")
        if idle:
            warnings.warn(
                f"state_bits: {owner} quantizes nothing with these hyper-parameters: no param "
                f"group runs the parts that keep {'; '.join(idle)}, so there is no state to "
                "store in 8 bits",
                UserWarning, stacklevel=stacklevel,
            )

    # --------------------------------------------------------------- storage plan
    def quantized(self, name: str, storage: Storage, numel: int) -> bool:
        """Whether state ``name`` of a tensor with ``numel`` elements is kept in 8 bits."""
        bits = self.state_bits
        if bits is None or not storage.quantizable or not q.quantizes(numel):
            return False
        return not isinstance(bits, Mapping) or name in bits

    def storage_dtype(self, storage: Storage, param_dtype: torch.dtype) -> torch.dtype | None:
        """The dtype a state that is not quantized is kept in (None: a counter, left alone)."""
        if storage is Storage.COUNTER:
            return None
        if storage.quantizable:
            return self.state_dtype or param_dtype
        return _wider(param_dtype, self.state_dtype)

    def compute_dtype(self, param_dtype: torch.dtype) -> torch.dtype:
        """The dtype the parts compute in for params of ``param_dtype``."""
        if param_dtype not in rounding.LOW_PRECISION or self.plain:
            return param_dtype
        if self.state_dtype == param_dtype and self.state_bits is None and (
            self.param_update == "plain"
        ):
            return param_dtype
        return torch.float32

    def extra_state(self, storages: Mapping[str, Storage]) -> dict[str, Storage]:
        """State the policy keeps besides the recipe's: ``compensation`` (Kahan) and a ``step``
        counter for the random bits, when the recipe has none."""
        extra = {}
        if self.param_update == "kahan":
            extra[COMPENSATION] = Storage.EXACT
        if "step" not in storages and not self.plain:
            # any policy may round state or params stochastically (bf16 params compute in
            # fp32 and write bf16 state back): the bits need a counter
            extra["step"] = Storage.COUNTER
        return extra

    def create(self, p: Tensor, values: Mapping[str, Tensor], storages: Mapping[str, Storage]
               ) -> dict[str, Tensor]:
        """The stored form of a param's freshly initialised state ``values`` (name -> tensor
        as the recipe's inits make them): quantized codes and their ``<name>_absmax``, or a
        cast copy; plus the policy's own state (zeros for ``compensation``)."""
        out: dict[str, Tensor] = {}
        for name, value in values.items():
            storage = storages[name]
            if self.quantized(name, storage, value.numel()):
                out[name], out[name + ABSMAX_SUFFIX] = _quantize_new(value, storage)
                continue
            dtype = self.storage_dtype(storage, p.dtype)
            out[name] = value if dtype in (None, value.dtype) else value.to(dtype)
        if self.param_update == "kahan" and p.dtype in rounding.LOW_PRECISION:
            out[COMPENSATION] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return out

    def conform(self, p: Tensor, state: dict[str, Any], storages: Mapping[str, Storage]) -> None:
        """Bring a param's state as loaded from a checkpoint (any policy's form, or
        torch.optim's) to this policy's form, in place. A state already in this form is kept
        as it is, so a checkpoint loads back exactly into an optimizer with the same policy."""
        for name, storage in storages.items():
            value = state.get(name)
            if not isinstance(value, Tensor):
                continue
            absmax = state.pop(name + ABSMAX_SUFFIX, None)
            if value.dtype == torch.uint8:
                if absmax is None:
                    raise ValueError(f"state {name!r} holds 8-bit codes without their absmax")
                if self.quantized(name, storage, value.numel()):
                    state[name], state[name + ABSMAX_SUFFIX] = value, absmax
                    continue
                value = _dequantize_stored(value, absmax, storage)
                state[name] = value.to(self.storage_dtype(storage, p.dtype))
                continue
            if self.quantized(name, storage, value.numel()):
                state[name], state[name + ABSMAX_SUFFIX] = _quantize_new(value, storage)
                continue
            dtype = self.storage_dtype(storage, p.dtype)
            if dtype not in (None, value.dtype):
                state[name] = value.to(dtype)
        if self.param_update == "kahan" and p.dtype in rounding.LOW_PRECISION:
            comp = state.get(COMPENSATION)
            if not isinstance(comp, Tensor) or comp.dtype != p.dtype:
                state[COMPENSATION] = torch.zeros_like(p) if comp is None else comp.to(p.dtype)
        else:
            state.pop(COMPENSATION, None)

    # ------------------------------------------------------------------ the step
    def prepare(self, bucket: Any, storages: Mapping[str, Storage],
                offsets: Sequence[int], keys: Tensor | None = None) -> _Stored:
        """Hand the parts working tensors (see the module doc); returns what ``finalize`` needs.

        ``bucket`` has ``params``, ``grads`` and ``state`` (name -> list) aligned lists;
        ``offsets[i]`` is the element offset of tensor ``i`` in its group's layout and
        ``keys[i]`` its random-bit key this step (:func:`step_keys`; default: from the
        bucket's step counts and the policy's seed). Shapes and dtypes decide everything: no
        tensor value is read.
        """
        param_dtype = bucket.params[0].dtype
        compute = self.compute_dtype(param_dtype)
        stored = _Stored(list(bucket.params), compute, offsets, keys)
        if compute != param_dtype:
            comp = bucket.state.get(COMPENSATION)
            if comp is not None:
                bucket.params = [rounding.kahan_value(p, c) for p, c in zip(
                    bucket.params, comp, strict=True)]
            else:
                bucket.params = [p.to(compute) for p in bucket.params]
            bucket.grads = [g.to(compute) for g in bucket.grads]
        for name, storage in storages.items():
            tensors = bucket.state.get(name)
            if tensors is None or storage is Storage.COUNTER:
                continue
            absmax = bucket.state.get(name + ABSMAX_SUFFIX)
            working, converted = [], []
            for i, t in enumerate(tensors):
                if t.dtype == torch.uint8:
                    # (an FSDP2 shard's scales may be longer than its blocks: see _quantize_new)
                    scales = absmax[i][: q.num_blocks(t.numel())] if absmax is not None else None
                    value = _dequantize(t, scales, storage is Storage.SIGNED)
                    # float32 values; float64 params compute in float64 (a no-op otherwise)
                    working.append(value.to(compute))
                    converted.append((i, t, scales))
                elif t.dtype != compute:
                    working.append(t.to(compute))
                    converted.append((i, t, None))
                else:
                    working.append(t)
            if converted:
                stored.state[name] = (storage, converted)
                bucket.state[name] = working
        return stored

    def finalize(self, bucket: Any, stored: _Stored, stream: int = 0) -> None:
        """Write the working tensors back (see the module doc); the bucket's params and state
        lists are the stored tensors again afterwards. The random bits of each list come from
        their own stream: the params' is ``stream``, the states' follow it."""
        keys = stored.keys
        if keys is None and stored.needs_random(self):
            keys = step_keys(self.seed, bucket.steps)
        for index, (name, (storage, converted)) in enumerate(stored.state.items(), start=1):
            working = bucket.state[name]
            restored = list(working)
            for i, t, scales in converted:
                restored[i] = t
                if scales is not None:
                    _quantize(working[i], t, scales, storage is Storage.SIGNED)
                elif _narrower(t.dtype, stored.compute):
                    _round_into(t, working[i], keys[i], stream + index, stored.offsets[i])
                else:
                    t.copy_(working[i])
            bucket.state[name] = restored
        params = stored.params
        if stored.compute != params[0].dtype:
            comp = bucket.state.get(COMPENSATION)
            for i, (p, w) in enumerate(zip(params, bucket.params, strict=True)):
                if comp is not None:
                    _kahan_write(p, comp[i], w)
                elif self.param_update == "stochastic":
                    _round_into(p, w, keys[i], stream, stored.offsets[i])
                else:
                    p.copy_(w)
            bucket.params = params


def _shard_count(p: Tensor) -> int:
    """How many shards along dim 0 a param's 8-bit state is quantized in (1: not a DTensor)."""
    from ..core.tensorlists import is_dtensor

    if not is_dtensor(p):
        return 1
    return math.prod(p.device_mesh.size(dim) for dim, placement in enumerate(p.placements)
                     if placement.is_shard())


def scale_layout(shape: Sequence[int], shards: int) -> int:
    """Which block each scale of an 8-bit state of ``shape`` quantized in ``shards`` shards
    along dim 0 (:func:`_quantize_new`) belongs to, as a number: 1 where the blocks and the
    scales' global layout are the unsharded tensor's (every shard ``ceil(rows / shards)`` rows
    of whole 256-element blocks), else ``shards``. Two states with the same number move
    between their shardings exactly (``torch.distributed.checkpoint`` reshards codes and scales
    alike); others would put block scales on other blocks."""
    if shards == 1 or not shape:
        return 1
    rows, cols = shape[0], math.prod(shape[1:])
    chunk = -(-rows // shards)
    return 1 if chunk * shards == rows and chunk * cols % q.BLOCK_SIZE == 0 else shards


def _quantize_new(value: Tensor, storage: Storage) -> tuple[Tensor, Tensor]:
    """Codes and block scales of a fresh state tensor.

    A DTensor (FSDP2, sharded along dim 0) is quantized shard by shard, with no collective:
    blocks restart at each shard's first element. The codes are a DTensor laid out like the
    param. The scales are a DTensor sharded like it too, each rank holding the block count of
    the largest shard (the first: ``ceil(rows / ranks)`` rows), the unused tail of a smaller
    shard's scales zero: evenly sharded, so ``torch.distributed.checkpoint`` saves and
    reshards them like any sharded state.
    """
    from ..core.tensorlists import is_dtensor

    if not is_dtensor(value):
        return q.quantize(value, storage is Storage.SIGNED)
    from torch.distributed.tensor import DTensor

    mesh, placements = value.device_mesh, value.placements
    rows, shards = value.shape[0], 1  # (8-bit state: >= 4096 elements, so at least 1-d)
    for dim, placement in enumerate(placements):
        if placement.is_shard():
            if placement.dim != 0:
                raise ValueError(
                    f"state_bits=8: a param sharded along dim {placement.dim} (tensor "
                    "parallelism) is not supported; FSDP2 shards along dim 0"
                )
            rows = -(-rows // mesh.size(dim))
            shards *= mesh.size(dim)
    largest = q.num_blocks(rows * math.prod(value.shape[1:]))
    local = value.to_local()
    codes = torch.empty(local.shape, dtype=torch.uint8, device=local.device)
    absmax = torch.zeros(largest, dtype=torch.float32, device=local.device)
    q.quantize_(local, codes, absmax[: q.num_blocks(local.numel())], storage is Storage.SIGNED)
    codes = DTensor.from_local(codes, mesh, placements, run_check=False, shape=value.shape,
                               stride=value.stride())
    absmax = DTensor.from_local(absmax, mesh, placements, run_check=False,
                                shape=(largest * shards,), stride=(1,))
    return codes, absmax


def _dequantize_stored(codes: Tensor, absmax: Tensor, storage: Storage) -> Tensor:
    """The float32 values of stored codes: the inverse of :func:`_quantize_new`, a DTensor's
    shard by shard (its scales are the local blocks, padded to the largest shard's count)."""
    from ..core.tensorlists import is_dtensor

    signed = storage is Storage.SIGNED
    if not is_dtensor(codes):
        return q.dequantize(codes, absmax, signed)
    from torch.distributed.tensor import DTensor

    local = codes.to_local()
    values = q.dequantize(local, absmax.to_local()[: q.num_blocks(local.numel())], signed)
    return DTensor.from_local(values, codes.device_mesh, codes.placements, run_check=False,
                              shape=codes.shape, stride=codes.stride())


def _narrower(dtype: torch.dtype, than: torch.dtype) -> bool:
    return dtype in rounding.LOW_PRECISION and torch.finfo(dtype).bits < torch.finfo(than).bits


def step_keys(seed: int, steps: Tensor) -> Tensor:
    """The random-bit key of each tensor of a bucket this step (an int32 CPU vector), from the
    seed and the tensors' step counts before the step. Computed on the host: inside a compiled
    step inductor would redo this scalar hashing for every element."""
    return rounding.stream_key(seed, steps)


# inductor keeps a value cast to bf16 and back in fp32 inside a fused kernel unless told to
# emulate the cast: Kahan's ``w - round(w)`` would then be 0. Its vectorised loop tails
# crash (heap corruption, torch 2.13 CPU) in kernels that mix 16- and 32-bit lanes with bit
# casts, as stochastic rounding into bf16 does, on tensors whose size is not a multiple of
# 16: the tails run scalar. Every compiled step of a policy uses these options
# (core/compiled.py).
COMPILE_OPTIONS = {"emulate_precision_casts": True, "cpp.enable_loop_tail_vec": False}


def _fused(fn):
    """``fn`` compiled once (dynamic shapes) when called eagerly, so that an eager step's
    conversions are one fused kernel each instead of ~30 elementwise ops with temporaries
    (8-bit Adam, 2**20 elements, one thread: 95 ms eager, 10 ms fused); inside a compiled step,
    or without a C++ compiler for inductor, the plain function."""
    compiled = None

    def call(*args: Any) -> Any:
        nonlocal compiled
        if torch.compiler.is_compiling() or not _can_fuse(args[0].device):
            return fn(*args)
        if compiled is None:
            # (a limit of the call, not a config patch: one costs ~20 us, per tensor and step)
            compiled = torch.compile(fn, dynamic=True, options=COMPILE_OPTIONS,
                                     recompile_limit=64)
        # dynamo guards on each tensor's rank and requires_grad: a model's 1-, 2- and 4-d
        # params and their states passed the default limit of 8 compiles, past which these
        # ran as the ~30 unfused ops. Contiguous tensors go in as detached 1-d views
        # (row-major, so element offsets and random bits are the same).
        # (all or none: a non-contiguous tensor keeps its shape, and so must its partners)
        line = all(a.is_contiguous() for a in args if isinstance(a, Tensor))
        out = compiled(*(_as_line(a, line) for a in args))
        return out.view(args[0].shape) if isinstance(out, Tensor) else out

    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call


def _as_line(value: Any, line: bool) -> Any:
    if not isinstance(value, Tensor):
        return value
    value = value.detach()
    return value.view(-1) if line and value.dim() > 1 else value


def _can_fuse(device: torch.device) -> bool:
    from ..core.compiled import can_compile  # core imports this module

    return can_compile(device)


@_fused
def _dequantize(codes: Tensor, absmax: Tensor, signed: bool) -> Tensor:
    return q.dequantize(codes, absmax, signed)


@_fused
def _quantize(x: Tensor, codes: Tensor, absmax: Tensor, signed: bool) -> None:
    q.quantize_(x, codes, absmax, signed)


@_fused
def _round_into(target: Tensor, value: Tensor, key: Tensor, stream: int, offset: int) -> None:
    # one stream per rounded list: the params (0) and each narrowed state (1, 2, ...); the
    # stream only shifts the key (a single add in the fused loop)
    words = rounding.random_words(value.shape, key + stream * _STREAM_STEP, offset, value.device)
    target.copy_(rounding.stochastic_round(value.float(), target.dtype, words))


@_fused
def _kahan_write(param: Tensor, compensation: Tensor, value: Tensor) -> None:
    rounding.kahan_write_(param, compensation, value)


_STREAM_STEP = 0x3C6EF37  # odd, 26 bits: separates the streams of one key


class _Stored:
    """What ``finalize`` writes back: the params and, per state, the converted tensors."""

    __slots__ = ("params", "compute", "offsets", "keys", "state")

    def __init__(self, params: list[Tensor], compute: torch.dtype, offsets: Sequence[int],
                 keys: Tensor | None):
        self.params = params
        self.compute = compute
        self.offsets = offsets
        self.keys = keys
        self.state: dict[str, tuple[Storage, list]] = {}

    def needs_random(self, policy: Precision) -> bool:
        if policy.param_update == "stochastic" and self.params[0].dtype != self.compute:
            return True
        return any(
            scales is None and _narrower(t.dtype, self.compute)
            for _, converted in self.state.values() for _, t, scales in converted
        )


def state_bytes(state: Mapping[str, Any]) -> int:
    """The bytes a param's state tensors take (codes, scales, compensation included)."""
    return sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, Tensor))


def check_saved_form(form: str, index: Any, state: Mapping[str, Any]) -> None:
    """``ValueError`` if param ``index``'s ``state``, saved under ``form``, has lost its
    8-bit codes (see :meth:`PrecisionPolicy.state_form`)."""
    if not form.startswith("8bit:"):
        return
    for name in _form_parts(form)[0]:
        value = state.get(name)
        if (isinstance(value, Tensor) and value.dtype != torch.uint8
                and q.quantizes(value.numel()) and name + ABSMAX_SUFFIX not in state):
            raise ValueError(
                f"param {index}'s state {name!r} was saved as 8-bit codes (the state_dict's "
                f"{STATE_FORM} is {form!r}) but arrives as {value.dtype} without its scales: "
                "a loader copied the codes into tensors of another form, and their values are "
                "lost. torch.distributed.checkpoint does this when its template comes from an "
                "optimizer without state_bits=8 (and it writes into that optimizer's own state "
                "tensors: load a good state before stepping). To convert, load the checkpoint "
                "into an optimizer built with state_bits=8, then hand its state_dict() to the "
                "other one's load_state_dict (exact)"
            )


def check_loaded_state(where: str, state: Mapping[str, Any], storages: Mapping[str, Storage],
                       layouts: Mapping[str, Layout], shape: Sequence[int]) -> None:
    """``ValueError`` naming ``where`` (the param), the state and both shapes if a param's state
    as loaded does not fit a param of ``shape`` in any stored form, so that a load refuses it
    before anything changes (instead of a broadcasting error at the first step):

    * each state has the shape its declared :class:`~optimkit.core.policy.Layout` says
      (:func:`optimkit.core.policy.check_state_shapes`): moments, copies of the param and the
      Kahan compensation are shaped like the param (a DTensor's shape is the global one, like
      its param's), in any float dtype or as 8-bit codes (uint8, shaped like the param);
      per-tensor scalars and the step counter are 0-d tensors (the counter may be a Python
      number, as torch.optim saved it before 1.12); a state of its own shape is not checked;
    * 8-bit codes come with their ``<name>_absmax`` scales: a 1-d tensor of at least one scale
      per 256-element block (an FSDP2 shard's are padded to the largest shard's count), and only
      for a state that may be quantized.

    ``storages`` and ``layouts`` say how each state name may be stored and how it lines up
    with its param (the policy's own names included); names they lack and the scales
    themselves are checked by the caller, not here.
    """
    check_state_shapes(where, state, storages, layouts, shape)
    for name, value in state.items():
        storage = storages.get(name)
        if storage is None or not isinstance(value, Tensor):
            continue
        if value.dtype != torch.uint8:
            continue
        if not storage.quantizable:
            raise ValueError(
                f"{where}: state {name!r} is uint8 (8-bit codes), but it is never quantized: "
                f"{_NOT_QUANTIZABLE[storage]}"
            )
        scales = state.get(name + ABSMAX_SUFFIX)
        if not isinstance(scales, Tensor):
            raise ValueError(
                f"{where}: state {name!r} holds 8-bit codes without their scales "
                f"{name + ABSMAX_SUFFIX!r}, so its values are lost; save and load the whole "
                "state (codes and scales)"
            )
        blocks = q.num_blocks(value.numel())
        if scales.dim() != 1 or scales.numel() < blocks:
            raise ValueError(
                f"{where}: state {name + ABSMAX_SUFFIX!r} has shape {tuple(scales.shape)}; the "
                f"8-bit codes of {name!r} (shape {tuple(value.shape)}) need a 1-d tensor of at "
                f"least {blocks} block scales"
            )


def _form_parts(form: str) -> tuple[list[str], list[int] | None]:
    """The 8-bit state names of a saved ``form`` and its per-param layout numbers (None: every
    param's is 1, the unsharded layout)."""
    names, _, shards = form[len("8bit:"):].partition(";shards=")
    return names.split(","), [int(n) for n in shards.split(",")] if shards else None


def check_saved_layout(form: str, position: int, index: Any, state: Mapping[str, Any],
                       param: Tensor) -> None:
    """``ValueError`` if param ``index``'s 8-bit ``state`` (at ``position`` in its saved
    group, saved under ``form``) was quantized in another shard layout than ``param``'s: its
    block scales would belong to other blocks (see :func:`scale_layout`)."""
    if not form.startswith("8bit:") or not any(
            isinstance(state.get(name), Tensor) and name + ABSMAX_SUFFIX in state
            for name in _form_parts(form)[0]):
        return
    layouts = _form_parts(form)[1]
    saved = layouts[position] if layouts is not None and position < len(layouts) else 1
    here = scale_layout(tuple(param.shape), _shard_count(param))
    if saved != here:
        def said(n: int) -> str:
            return "unsharded" if n == 1 else f"quantized in {n} shards along dim 0"

        raise ValueError(
            f"param {index}'s 8-bit state was saved {said(saved)} (the state_dict's "
            f"{STATE_FORM} is {form!r}), and this optimizer holds it {said(here)}: 8-bit "
            "blocks of 256 restart at each shard's first element, so its block scales would "
            "land on other blocks; nothing was loaded. Load it with the sharding it was saved "
            "with. To move it to another number of ranks, convert it there: load it into an "
            "optimizer with state_bits=8, hand that optimizer's state to one without "
            "state_bits (set_optimizer_state_dict / load_state_dict: each shard dequantized "
            "exactly), and checkpoint that one; its plain state reshards, and handing it to an "
            "optimizer with state_bits=8 requantizes it"
        )


class PrecisionPolicy(BucketPolicy):
    """A :class:`Precision` bound to one recipe's declared state: what the executor calls.

    The executor (``optimkit/core/executor.py``) asks it

    * ``key(p)``: buckets and flat stores are split by it (8-bit state or not), so the lists of a
      bucket are alike;
    * ``collect(...)``: each param's state, created in its stored form at the param's first step;
    * ``arguments(group, bucket)``: the host-side numbers of one bucket's step (the seed and each
      tensor's element offset), Python constants of the compiled graph;
    * ``prepare`` / ``finalize`` around the parts, eagerly or inside the compiled graph;
    * ``one_tensor(sizes)``: whether a flat store may step as one tensor (its params' 256-element
      blocks must not straddle params);
    * ``conform(p, state)``: a loaded param's state in this policy's form.
    """

    plain = False

    def compile_options(self, bucket: Any) -> dict[str, Any]:
        """inductor options of a compiled step of ``bucket`` under this policy (see
        COMPILE_OPTIONS). Where 16-bit tensors meet a size that is not a multiple of 16,
        inductor's vectorised kernels crash in torch 2.13 (layer-wise recipes' reductions
        included, with the tails already scalar): those buckets compile scalar kernels."""
        tensors = [*bucket.params, *(t for ts in bucket.state.values() for t in ts)]
        narrow = any(t.dtype in rounding.LOW_PRECISION for t in tensors)
        if narrow and any(t.numel() % 16 for t in tensors if t.dim()):
            return {**COMPILE_OPTIONS, "cpp.simdlen": 0}
        return COMPILE_OPTIONS

    def __init__(self, precision: Precision, storages: Mapping[str, Storage],
                 layouts: Mapping[str, Layout] | None = None) -> None:
        # states of their own shape: 8-bit blocks follow the param's elements, so they are
        # never quantized (state_bits=8 means the param-shaped ones; naming one is refused)
        self.unaligned = frozenset(n for n, kind in (layouts or {}).items()
                                   if kind is Layout.OWN)
        aligned = [n for n, kind in storages.items() if kind.quantizable
                   and n not in self.unaligned]
        if self.unaligned and aligned and precision.state_bits is not None and not isinstance(
                precision.state_bits, Mapping):
            precision = dataclasses.replace(precision, state_bits=dict.fromkeys(aligned, 8))
        self.precision = precision
        self.declared = dict(storages)  # the recipe's, without the policy's own state
        self.storages = {**storages, **precision.extra_state(storages)}
        # states of their own shape that no part declares "signed" or "positive" (Kron's
        # factors in their precondition_dtype, an int32 key) stay as their init made them:
        # never cast, narrowed or handed to the parts in another dtype. Precision's methods
        # see them as they see a step counter, which they leave alone.
        kept = {n for n in self.unaligned if n in storages and not storages[n].quantizable}
        self._handled = {n: Storage.COUNTER if n in kept else kind
                         for n, kind in self.storages.items()}
        # a step counter the recipe lacks, kept for the random bits: the policy counts it
        self.own_step = "step" in self.storages and "step" not in storages
        self._offsets: dict[int, tuple[list, dict[tuple, dict[int, int]]]] = {}

    @classmethod
    def from_keywords(cls, storages: Mapping[str, Storage], layouts: Mapping[str, Layout],
                      **keywords: Any) -> BucketPolicy:
        """The policy of an optimizer's keywords (``state_dtype``, ``state_bits``,
        ``param_update``, ``generator``), ``ValueError`` naming a bad one; the plain policy
        when they change nothing. The seed is drawn in every case (see
        :meth:`Precision.from_keywords`)."""
        precision = Precision.from_keywords(**keywords)
        return PLAIN if precision.plain else cls(precision, storages, layouts)

    @classmethod
    def converter(cls, storages: Mapping[str, Storage], layouts: Mapping[str, Layout]
                  ) -> PrecisionPolicy:
        """The plain policy that reads any policy's checkpoint into plain state."""
        return cls(Precision(), storages, layouts)

    def check(self, params: Sequence[Tensor], owner: str) -> None:
        bits = self.precision.state_bits
        for name in bits if isinstance(bits, Mapping) else ():
            if name in self.unaligned:
                raise ValueError(
                    f"state_bits: {owner}'s state {name!r} cannot be quantized: it has a shape "
                    "of its own, and 8-bit blocks follow the param's elements"
                )
        self.precision.check(self._checked_storages(), params, owner)

    def _checked_storages(self) -> dict[str, Storage]:
        # (a state of its own shape counts as exact: "keeps no state that may be quantized")
        return {n: Storage.EXACT if n in self.unaligned else kind
                for n, kind in self.declared.items()}

    def group_defaults(self) -> dict[str, Any]:
        # the seed of the random bits is run state: it travels in the param groups, so a
        # resumed run draws what the uninterrupted one would have
        return {} if self.precision.plain else {"rounding_seed": self.precision.seed}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_offsets": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_handled", dict(self.storages))  # pickled before it existed

    def __repr__(self) -> str:
        return f"PrecisionPolicy({self.precision!r})"

    # ------------------------------------------------------------------ layout
    def key(self, p: Tensor) -> bool:
        """Whether ``p``'s quantizable state is kept in 8 bits."""
        return self.precision.state_bits is not None and q.quantizes(p.numel())

    def one_tensor(self, sizes: Sequence[int]) -> bool:
        # Not yet: flat mode's one-tensor step runs on the padded [rows, CHUNK] layout (issue
        # 11), whose element offsets and 256-element blocks are not the per-tensor ones; a
        # flat store under a policy steps per tensor over its views, equal to eager bit for
        # bit.
        return False

    def state_form(self, params: Sequence[Tensor] = ()) -> str:
        """What a saved param group of ``params`` says of its state (:data:`STATE_FORM`): the
        states kept as 8-bit codes where a tensor is large enough (``"8bit:grad_avg,sqr_avg"``),
        or ``"plain"``. A loader that copies a checkpoint into this optimizer's own tensors
        (``torch.distributed.checkpoint`` loads into the template's dtypes) would turn codes
        into numbers 0..255; with this entry, loaded along with the state, the optimizer
        refuses such a state instead of training on it.

        Where a param's 8-bit state is quantized per shard in a layout that is not the
        unsharded one (:func:`scale_layout`), the form adds each param's layout number,
        ``";shards=1,2"``, so that a load under another sharding is refused."""
        names = [n for n, kind in self.storages.items()
                 if self.precision.quantized(n, kind, q.MIN_NUMEL)]
        if not names:
            return "plain"
        layouts = [self.layout(p) for p in params]
        shards = f";shards={','.join(map(str, layouts))}" if any(n != 1 for n in layouts) else ""
        return "8bit:" + ",".join(names) + shards

    def layout(self, p: Tensor) -> int:
        """:func:`scale_layout` of ``p``'s 8-bit state (1 where it has none)."""
        if not self.key(p):
            return 1
        return scale_layout(tuple(p.shape), _shard_count(p))

    def stored_names(self, names: Sequence[str], p: Tensor) -> list[str]:
        """The state a bucket of params like ``p`` carries for the recipe's ``names``: with
        each 8-bit state its scales, the compensation, the policy's step counter."""
        out: list[str] = []
        for name in (*names, "step") if self.own_step and "step" not in names else names:
            out.append(name)
            if self.precision.quantized(name, self.storages[name], p.numel()):
                out.append(name + ABSMAX_SUFFIX)
        if COMPENSATION in self.storages and p.dtype in rounding.LOW_PRECISION:
            out.append(COMPENSATION)
        return out

    def layouts(self, layouts: Mapping[str, Layout]) -> dict[str, Layout]:
        """The recipe's ``layouts`` and the policy's own state's: 8-bit block scales have their
        own shape, the compensation is the param's, the policy's step counter one number."""
        out = dict(layouts)
        for name, kind in self.storages.items():
            if kind.quantizable:
                out[name + ABSMAX_SUFFIX] = Layout.OWN
        if COMPENSATION in self.storages:
            out[COMPENSATION] = Layout.PARAM
        if self.own_step:
            out["step"] = Layout.SCALAR
        return out

    def offsets(self, group: Mapping[str, Any], params: Sequence[Tensor]) -> tuple[int, ...]:
        """Each param's element offset among the params of ``group`` that share its device,
        dtype and key: the same numbers a flat store of those params has."""
        members = group["params"]
        cached = self._offsets.get(id(group))
        if cached is None or cached[0] is not members or sum(
                len(v) for v in cached[1].values()) != len(members):
            by_kind: dict[tuple, dict[int, int]] = {}
            totals: dict[tuple, int] = {}
            # trainable params first, as flat mode lays them out (frozen ones stay out of its
            # buffers): a frozen param that gets a grad later draws bits of its own
            ordered = [p for p in members if p.requires_grad]
            ordered += [p for p in members if not p.requires_grad]
            for p in ordered:
                kind = (p.device, p.dtype, self.key(p))
                by_kind.setdefault(kind, {})[id(p)] = totals.get(kind, 0)
                totals[kind] = totals.get(kind, 0) + p.numel()
            cached = self._offsets[id(group)] = (members, by_kind)
        by_kind = cached[1]
        return tuple(by_kind[(p.device, p.dtype, self.key(p))][id(p)] for p in params)

    def arguments(self, group: Mapping[str, Any], bucket: Any, flat: bool) -> tuple:
        """``(keys, offset of tensor 0, offset of tensor 1, ...)`` for one bucket's step: the
        tensors' random-bit keys (from the group's ``rounding_seed`` and their step counts
        before this step) and their element offsets in the group's layout."""
        seed = int(group.get("rounding_seed", self.precision.seed))
        steps = bucket.steps if "step" in bucket.state else torch.zeros(len(bucket.params))
        keys = step_keys(seed, steps)
        if flat:
            return (keys, 0)
        dtensors = getattr(bucket, "dtensors", ())
        if not dtensors:
            return (keys, *self.offsets(group, bucket.params))
        # FSDP2: each local shard draws the bits its elements draw in the unsharded run
        from ..core.sharded import shard_offset

        offsets = self.offsets(group, dtensors)
        return (keys, *(o + shard_offset(p) for o, p in zip(offsets, dtensors, strict=True)))

    # ------------------------------------------------------------------ state
    def collect(self, params: Sequence[Tensor], group: Mapping[str, Any],
                inits: Mapping[str, Any], all_state: Mapping[Tensor, dict]
                ) -> tuple[dict[str, list[Tensor]], dict[str, list[int]]]:
        """The bucket's state lists (stored forms: codes and ``<name>_absmax``, compensation,
        the policy's step counter), creating what a param lacks (its first step)."""
        wanted = {**inits}
        if self.own_step and "step" not in wanted:
            wanted["step"] = _step_counter
        names = self.stored_names(list(wanted), params[0])
        lists: dict[str, list[Tensor]] = {name: [] for name in names}
        created: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            state = all_state[p]
            missing = {name: init for name, init in wanted.items() if name not in state}
            if missing or (COMPENSATION in lists and COMPENSATION not in state):
                values = {name: init(p, group) for name, init in missing.items()}
                stored = self.precision.create(p, values, self._handled)
                if COMPENSATION in state:
                    stored.pop(COMPENSATION, None)
                state.update(stored)
                for name in missing:
                    created.setdefault(name, []).append(i)
            for name in names:
                lists[name].append(state[name])
        return lists, created

    def conform(self, p: Tensor, state: dict[str, Any]) -> None:
        self.precision.conform(p, state, self._handled)

    # ------------------------------------------------------------------ checkpoints
    def saved_entries(self, params: Sequence[Tensor] = ()) -> dict[str, Any]:
        """A saved param group's :data:`STATE_FORM` (see :meth:`state_form`)."""
        return {STATE_FORM: "plain" if self.precision.plain else self.state_form(params)}

    def own_entry(self, name: str, known: Collection[str], saved_group: Mapping[str, Any]
                  ) -> bool:
        """Whether a saved state ``name`` the recipe does not keep is a policy's: 8-bit scales
        of a recipe's state, the Kahan compensation, or a step counter of a group saved under a
        policy (one with a ``rounding_seed``)."""
        return (name == COMPENSATION or (name == "step" and "rounding_seed" in saved_group)
                or (name.endswith(ABSMAX_SUFFIX) and name[:-len(ABSMAX_SUFFIX)] in known))

    def check_loaded_entry(self, where: str, index: Any, position: int, entry: Mapping[str, Any],
                           param: Tensor, saved_group: Mapping[str, Any],
                           storages: Mapping[str, Storage], layouts: Mapping[str, Layout]
                           ) -> None:
        """``ValueError`` before anything changes if a param's saved state lost its 8-bit codes
        (:func:`check_saved_form`), was quantized in another shard layout
        (:func:`check_saved_layout`), or does not fit the param (:func:`check_loaded_state`:
        the declared layouts' shapes, 8-bit codes with their scales). Any policy's own state
        is checked, whichever this one keeps: a policy's step counter, the compensation."""
        form = saved_group.get(STATE_FORM, "plain")
        check_saved_form(form, index, entry)
        check_saved_layout(form, position, index, entry, param)
        storages = {"step": Storage.COUNTER, COMPENSATION: Storage.EXACT, **storages}
        layouts = {"step": Layout.SCALAR, COMPENSATION: Layout.PARAM, **layouts}
        check_loaded_state(where, entry, storages, layouts, tuple(param.shape))

    def check_groups(self, parts: Sequence[Any], groups: Sequence[Mapping[str, Any]],
                     owner: str) -> None:
        """Warn where ``state_bits`` quantizes nothing (see :meth:`Precision.check_groups`)."""
        self.precision.check_groups(self._checked_storages(), parts, groups, owner,
                                    stacklevel=4)

    def load_stored(self, param_groups: Sequence[Mapping[str, Any]], state: Mapping,
                    saved_groups: Sequence[Mapping[str, Any]],
                    saved_state: Mapping[Any, Mapping[str, Any]]) -> None:
        """torch's ``load_state_dict`` casts every state tensor but ``step`` to its param's
        dtype: put back each loaded tensor in its own dtype (8-bit codes, their scales, fp32
        state of bf16 params), then bring it to this optimizer's policy. (A plain policy, the
        :meth:`converter`, does so only for a checkpoint holding a policy's own entries.)"""
        if self.precision.plain and not any(
            _policy_entry(name) for entry in saved_state.values() for name in entry
        ):
            return
        ids = [i for group in saved_groups for i in group["params"]]
        params = [p for group in param_groups for p in group["params"]]
        for saved_id, p in zip(ids, params, strict=True):
            saved = saved_state.get(saved_id)
            if saved is None:
                continue
            entry = state[p]
            for name, value in saved.items():
                if isinstance(value, Tensor) and name != "step":
                    entry[name] = value.to(device=p.device)
            self.conform(p, entry)

    def plain_state_dict(self, sd: dict[str, Any],
                         param_groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``sd`` (the optimizer's ``state_dict()``) with its state in the plain form: 8-bit
        state dequantized, every moment cast to its param's dtype, the compensation, the
        policy's own step counter and ``rounding_seed`` left out."""
        groups = [{k: v for k, v in group.items() if k not in ("rounding_seed", STATE_FORM)}
                  for group in sd["param_groups"]]
        if self.precision.plain:
            return {**sd, "param_groups": groups}
        plain = Precision()
        params = [p for group in param_groups for p in group["params"]]
        ids = [i for group in sd["param_groups"] for i in group["params"]]
        state = {}
        for index, entry in sd["state"].items():
            entry = dict(entry)
            plain.conform(params[ids.index(index)], entry, self._handled)
            if self.own_step:
                entry.pop("step", None)
            state[index] = entry
        return {**sd, "state": state, "param_groups": groups}

    # ------------------------------------------------------------------ the step
    def prepare(self, bucket: Any, group: Mapping[str, Any], arguments: tuple[int, ...],
                names: Sequence[str] | None = None) -> _Stored:
        """Working tensors for the parts: every state of the recipe, or only ``names`` (for a
        part run on its own, Lookahead's sync). Counts the policy's own steps."""
        if names is None:
            storages = self._handled
            if self.own_step:
                bucket.increment_steps()
        else:
            storages = {name: self._handled[name] for name in names if name in self._handled}
        return self.precision.prepare(bucket, storages, arguments[1:], keys=arguments[0])

    def finalize(self, bucket: Any, group: Mapping[str, Any], stored: _Stored,
                 stream: int = 0) -> None:
        """Write the working tensors back; ``stream`` separates the random bits of a second
        write-back in the same step (the host-gated parts')."""
        self.precision.finalize(bucket, stored, stream=stream)


def _policy_entry(name: str) -> bool:
    """Whether a state name is a precision policy's own (8-bit scales, Kahan compensation)."""
    return name.endswith(ABSMAX_SUFFIX) or name == COMPENSATION


def _step_counter(p: Tensor, group: Mapping[str, Any]) -> Tensor:
    # torch.optim's format (as optimkit.core.parts.step_counter): a float32 0-d CPU tensor
    return torch.tensor(0.0, dtype=torch.float32)


use_policies(PrecisionPolicy)
