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
  with fp32 state is computed in fp32, never in bf16. Otherwise it is the param's dtype.
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
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from . import quantize as q
from . import rounding

PARAM_UPDATES = ("plain", "stochastic", "kahan")
STATE_DTYPES = (torch.float32, torch.bfloat16)
COMPENSATION = "compensation"
ABSMAX_SUFFIX = "_absmax"


class Storage(enum.Enum):
    """How a state may be stored, declared by the part that creates it."""

    SIGNED = "signed"  # a moment that may be negative (first moment, momentum, previous grad)
    POSITIVE = "positive"  # a moment that is never negative (second moment, step-size memory)
    EXACT = "exact"  # keeps at least the param's precision (a copy of the param)
    SCALAR = "scalar"  # one number per tensor (layer-wise moments)
    COUNTER = "counter"  # the step counter

    @property
    def quantizable(self) -> bool:
        return self in (Storage.SIGNED, Storage.POSITIVE)


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
        if self.state_dtype is not None and self.state_dtype not in STATE_DTYPES:
            raise ValueError(
                f"state_dtype: expected None, torch.float32 or torch.bfloat16, got "
                f"{self.state_dtype!r} (float16 state overflows in squared gradients)"
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
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
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
        ``state_bits=8`` for a recipe without a state that may be quantized.
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
        if "step" not in storages and (
            self.param_update == "stochastic" or self.state_dtype in rounding.LOW_PRECISION
        ):
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
                out[name], out[name + ABSMAX_SUFFIX] = q.quantize(value, storage is Storage.SIGNED)
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
                value = q.dequantize(value, absmax, storage is Storage.SIGNED)
                state[name] = value.to(self.storage_dtype(storage, p.dtype))
                continue
            if self.quantized(name, storage, value.numel()):
                state[name], state[name + ABSMAX_SUFFIX] = q.quantize(
                    value, storage is Storage.SIGNED
                )
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
                offsets: Sequence[int]) -> _Stored:
        """Hand the parts working tensors (see the module doc); returns what ``finalize`` needs.

        ``bucket`` has ``params``, ``grads`` and ``state`` (name -> list) aligned lists;
        ``offsets[i]`` is the element offset of tensor ``i`` in its group's layout (for the
        random bits). Shapes and dtypes decide everything: no tensor value is read.
        """
        param_dtype = bucket.params[0].dtype
        compute = self.compute_dtype(param_dtype)
        stored = _Stored(list(bucket.params), compute, offsets)
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
                    scales = absmax[i] if absmax is not None else None
                    working.append(q.dequantize(t, scales, storage is Storage.SIGNED))
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

    def finalize(self, bucket: Any, stored: _Stored) -> None:
        """Write the working tensors back (see the module doc); the bucket's params and state
        lists are the stored tensors again afterwards."""
        keys = rounding.stream_key(self.seed, bucket.steps) if stored.needs_random(self) else None
        for stream, (name, (storage, converted)) in enumerate(stored.state.items(), start=1):
            working = bucket.state[name]
            restored = list(working)
            for i, t, scales in converted:
                restored[i] = t
                if scales is not None:
                    q.quantize_(working[i], t, scales, storage is Storage.SIGNED)
                elif _narrower(t.dtype, stored.compute):
                    words = _words(working[i], keys[i], stream, stored.offsets[i])
                    t.copy_(rounding.stochastic_round(working[i].float(), t.dtype, words))
                else:
                    t.copy_(working[i])
            bucket.state[name] = restored
        params = stored.params
        if stored.compute != params[0].dtype:
            comp = bucket.state.get(COMPENSATION)
            for i, (p, w) in enumerate(zip(params, bucket.params, strict=True)):
                if comp is not None:
                    rounding.kahan_write_(p, comp[i], w)
                elif self.param_update == "stochastic":
                    words = _words(w, keys[i], 0, stored.offsets[i])
                    p.copy_(rounding.stochastic_round(w.float(), p.dtype, words))
                else:
                    p.copy_(w)
            bucket.params = params


def _narrower(dtype: torch.dtype, than: torch.dtype) -> bool:
    return dtype in rounding.LOW_PRECISION and torch.finfo(dtype).bits < torch.finfo(than).bits


def _words(like: Tensor, key: Tensor, stream: int, offset: int) -> Tensor:
    # one stream per rounded list: the params (0) and each narrowed state (1, 2, ...)
    return rounding.random_words(like.shape, rounding.stream_key(key, stream), offset, like.device)


class _Stored:
    """What ``finalize`` writes back: the params and, per state, the converted tensors."""

    __slots__ = ("params", "compute", "offsets", "state")

    def __init__(self, params: list[Tensor], compute: torch.dtype, offsets: Sequence[int]):
        self.params = params
        self.compute = compute
        self.offsets = offsets
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
