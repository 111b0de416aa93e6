"""Writing float32 results into bfloat16 / float16 tensors: stochastic rounding and Kahan.

**Stochastic rounding** (Gupta et al. 2015, arXiv:1502.02551; for bf16 weights Zamirai et al.
2020, arXiv:2010.06192) rounds ``x`` up to the next representable value ``hi`` with probability
``(x - lo) / (hi - lo)`` and down to ``lo`` otherwise, so ``E[round(x)] = x``: updates far below
half a unit in the last place still move the weights on average, where nearest rounding drops
them (a bf16 weight of 1.0 ignores any update below 2**-9).

* bfloat16 is float32 with the low 16 bits cut: adding 16 uniform random bits to the float32
  bit pattern and cutting them rounds up exactly with that probability (magnitudes only, so
  negative values work the same way).
* float16 has its own exponent range: the two neighbours ``lo``, ``hi`` are found from the
  nearest float16 by one step of its bit pattern and one is picked by a uniform draw.

NaN stays NaN. A value beyond the target's range: bf16 may round to inf, as the nearest cast
does; float16 saturates at its largest finite value (65504).

**Random bits** come from a counter-based hash, not from a generator's state: the bits of
element ``i`` at draw ``counter`` under ``seed`` are a fixed function of the three numbers. A run
therefore reproduces from its seed whatever the execution mode (eager, flat or compiled: the
hash is plain integer tensor ops that ``torch.compile`` traces and fuses), and element ``i`` of a
flat buffer gets the same bits as element ``i`` of the same params stepped one tensor at a time
when the caller passes each tensor's offset. The hash is a 32-bit integer finaliser (multiply
by an odd constant, xor-shift) of the element's index times 2**32/phi plus the key, in int32
arithmetic, which vectorises (int64 products do not on AVX2: 8x slower, measured). The key is
the same finaliser of the seed and the counter, so consecutive steps are unrelated.

**Kahan compensation** (Kahan 1965; for bf16 training Zamirai et al. 2020 and torch-optimi)
keeps, per element, the part of the float32 result that the low-precision weight could not
hold, ``c = w - round(w)``, in a buffer of the weight's own dtype (2 B/param for bf16). The
next step starts from ``w = p + c``, so the weights follow the float32 trajectory to about 16
bits of mantissa.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MIX = 0x45D9F3B  # an odd multiplier with good avalanche for 32-bit words
_GOLDEN = 0x9E3779B  # 28 bits of 2**32 / phi: spreads consecutive counters
_PHI32 = -0x61C88647  # 2**32 / phi as an int32 (0x9E3779B9): the Weyl step of the elements

LOW_PRECISION = (torch.bfloat16, torch.float16)


def _mix32(x: Tensor) -> Tensor:
    """A bijective 32-bit finaliser on int32 tensors (products wrap modulo 2**32; the masks
    make the right shifts logical)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _MIX
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _MIX
    return x ^ ((x >> 16) & 0xFFFF)


def _int32(value: int) -> int:
    """A Python int as the int32 with the same low 32 bits."""
    return (value + 2**31) % 2**32 - 2**31


def stream_key(seed: int | Tensor, counter: Tensor | int) -> Tensor:
    """The int32 key of draw ``counter`` of stream ``seed`` (integer-valued tensors or ints;
    a 1-D ``counter`` gives one key per entry)."""
    if isinstance(seed, int):
        seed = torch.tensor(_int32(seed), dtype=torch.int32)
    counter = torch.as_tensor(counter).to(torch.int64).to(torch.int32)
    return _mix32(_mix32(seed.to(torch.int32)) + counter * _GOLDEN)


def random_words(shape: torch.Size | tuple[int, ...], key: Tensor, offset: int = 0,
                 device: torch.device | str | None = None) -> Tensor:
    """Uniform 32-bit words (int32) for the elements ``offset, offset + 1, ...`` under ``key``:
    ``mix(index * phi + key)``, one finaliser round over a Weyl sequence. (Each xor-shift reads
    its input twice, and inductor expands such expressions per read when it fuses them: two
    rounds made a compiled step compile 4x longer, for no visible gain in quality.)"""
    numel = 1
    for size in shape:
        numel *= size
    index = torch.arange(numel, dtype=torch.int32, device=device).view(shape) + _int32(offset)
    return _mix32(index * _PHI32 + key.to(device=device, dtype=torch.int32))


def stochastic_round(x: Tensor, dtype: torch.dtype, words: Tensor) -> Tensor:
    """``x`` (float32) rounded stochastically to ``dtype`` (bfloat16 or float16), with the
    random ``words`` of :func:`random_words` (one per element)."""
    if dtype == torch.bfloat16:
        bits = x.view(torch.int32) + (words & 0xFFFF)
        rounded = (bits & -65536).view(torch.float32)
        return torch.where(x == x, rounded, x).to(torch.bfloat16)
    if dtype == torch.float16:
        return _round_float16(x, words)
    raise ValueError(f"dtype: stochastic rounding writes bfloat16 or float16, not {dtype}")


def _round_float16(x: Tensor, words: Tensor) -> Tensor:
    nearest = x.to(torch.float16)
    bits = nearest.view(torch.int16)
    # one step of the bit pattern changes the magnitude by one unit, whatever the sign
    toward_zero = torch.where(nearest.float().abs() > x.abs(), bits - 1, bits).to(torch.int16)
    lo = toward_zero.view(torch.float16)
    hi = (toward_zero + 1).to(torch.int16).view(torch.float16)
    lo32, hi32 = lo.float(), hi.float()
    up = (x.abs() - lo32.abs()) / (hi32.abs() - lo32.abs())
    uniform = ((words >> 8) & 0xFFFFFF).to(torch.float32) * 2.0**-24
    return torch.where(uniform < up, hi, lo)


def kahan_value(param: Tensor, compensation: Tensor) -> Tensor:
    """The float32 value a compensated low-precision weight stands for: ``p + c``."""
    return param.float() + compensation.float()


def kahan_write_(param: Tensor, compensation: Tensor, value: Tensor) -> None:
    """Store float32 ``value`` as ``param`` (nearest) plus what it lost, in ``compensation``."""
    param.copy_(value)
    compensation.copy_(value - param.float())
