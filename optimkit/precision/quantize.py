"""Block-wise 8-bit quantization of optimizer state (Dettmers et al. 2022, arXiv:2110.02861).

A state tensor is cut into blocks of :data:`BLOCK_SIZE` consecutive elements (row-major, the
last block may be shorter). Each block keeps its absolute maximum (``absmax``, float32) and one
byte per element: the index of the nearest value of a 256-entry *code* in ``[-1, 1]`` (or
``[0, 1]``) once the block is divided by its absmax. Memory: 1 byte per element plus 4 bytes per
block, i.e. ``1 + 4 / 256 = 1.016`` bytes per element; Adam's two moments take 2.03 B/param.

The code is the *dynamic tree* of Dettmers et al. 2022 (§2.2), built here from its definition:
after the sign bit (signed code only), the number ``e`` of leading zero bits is a decimal
exponent, the first one bit marks where the exponent ends and the remaining bits are a linear
fraction. Level ``e`` holds ``n_e = 2 ** (m - 1 - e)`` values ``10**-e * (0.1 + 0.9 * k / n_e)``,
``k = 1..n_e``, where ``m`` is the number of magnitude bits (7 signed, 8 unsigned). The code is
therefore fine near the block's absmax (steps of 0.7 %) and reaches down to ``1e-6`` (signed) or
``1e-7`` (unsigned) of it.

* ``SIGNED`` (first moments, momentum buffers, previous gradients): 255 values, symmetric, with
  an exact 0 and exact +-1; byte 127 is zero, byte 255 is never written (it decodes to NaN).
* ``UNSIGNED`` (second moments and other non-negative state): 255 positive values plus, at byte
  0, ``1e-8`` instead of 0. A second moment is divided by: rounding a small one to 0 would turn
  its step into ``m / eps``. Li et al. 2023 (arXiv:2309.01507, §4.1, the "zero-point problem")
  drop zero from the second moment's code for this reason; we keep Dettmers' tree and only move
  its zero. An all-zero block still reads back as exact zeros (its absmax is 0).

Encoding is nearest rounding, computed in closed form from the level (found by comparisons)
and the fraction, with no search, table or transcendental function, so that ``torch.compile``
fuses it, cheaply, with the update that produced the state. Decoding is closed form too: the
byte's magnitude ``u`` gives the level by comparisons and the value is the integer
``9u - 8n + 9`` times a per-level constant split in two float32 parts (the integer times the
first is exact), so that the float32 result equals the table :func:`code` (built from the
definition) bit for bit, with no float64 arithmetic (slow on most GPUs, absent on MPS).
The single exception to
"nearest": between 0 and the smallest signed value (``1e-6``) the cut is at ``0.55e-6``, not
``0.5e-6``, of the absmax.

Speed (inductor's CPU code, torch 2.13): a table lookup compiles to a scalar gather (8 loads
and index checks per vector), a bit cast to a scalar loop, and a ``uint8`` load fused into a
long kernel to a partial-vector load that made the whole kernel ~10x slower than the same
arithmetic on float input. So no table, no bit cast, and, inside a compiled CPU graph, the
bytes are widened to float by one ATen kernel (:func:`widen`, an opaque custom op) before the
fused arithmetic.

Choices, with their reasons:

* :data:`BLOCK_SIZE` = 256, torchao's default for its 8-bit optimizers (the paper uses 2048):
  an outlier then coarsens 255 neighbours instead of 2047, for 0.016 B/element of scales.
* :data:`MIN_NUMEL` = 4096: smaller tensors stay unquantized, as bitsandbytes does
  (``min_8bit_size``); their state is a negligible share of the memory and biases, norms and
  small heads are the tensors where a coarse state hurts most.
* Values beyond float32's range (a moment that overflowed to inf, as Adam's ``g**2`` does for
  ``|g| > 1.8e19``; a float64 state above ``3.4e38``) are stored at the top code of a block
  whose scale is the largest float32 value, and read back as inf with their sign; the rest of
  the block stays finite. So an element whose float32 moment is inf keeps it, as in a float32
  optimizer (Adam's step for it is then ``m / inf = 0``, and the param stays finite). A
  block-wise code with one float32 absmax per block (ours, bitsandbytes') cannot scale by an
  absmax of inf: ``x / inf = 0`` and ``inf / inf = NaN``, so the block was lost (it read
  back as NaN here before issue 21). Like any outlier, such a value coarsens its
  block: the other 255 values keep their ratio to ``3.4e38`` down to the code's floor
  (``1e-6`` signed, ``1e-7`` unsigned, below which they read as 0 or as ``1e-8`` of it), so a
  second moment there reads at least ``3.4e30`` and those 255 params barely move while the
  inf stays in their block: finite, but not the float32 run.
* NaN: a block holding a NaN stores NaN as its absmax and reads back as NaN throughout; the
  NaN stays in its block (256 values) and nothing raises. A zero block reads back as zeros. Any
  finite nonzero absmax, subnormal included, is a valid scale. Negative values given to the
  unsigned code are stored as its smallest value.

All functions are plain tensor ops on the tensors' device with no host synchronisation and no
branch on values, so they run the same eagerly and inside a compiled step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

BLOCK_SIZE = 256
MIN_NUMEL = 4096

_SIGNED_BITS = 7  # magnitude bits after the sign bit
_UNSIGNED_BITS = 8
_ZERO_BYTE = 127  # the signed code's zero
_UNSIGNED_FLOOR = 1e-8  # the unsigned code's value at byte 0, in place of zero
_FLOAT32_MAX = torch.finfo(torch.float32).max
_TINY = 2.0**-64  # block scales below this are lifted before their inverse is taken
_LIFT = 2.0**64


def _magnitudes(bits: int) -> Tensor:
    """The ``2**bits - 1`` positive values of the tree with ``bits`` magnitude bits, ascending."""
    levels = []
    for e in reversed(range(bits)):
        n = 2 ** (bits - 1 - e)
        k = torch.arange(1, n + 1, dtype=torch.float64)
        levels.append(10.0**-e * (0.1 + 0.9 * k / n))
    return torch.cat(levels)


def _table(signed: bool) -> Tensor:
    if signed:
        pos = _magnitudes(_SIGNED_BITS)
        values = torch.cat([-pos.flip(0), torch.zeros(1, dtype=torch.float64), pos,
                            torch.full((1,), math.nan, dtype=torch.float64)])
    else:
        values = torch.cat([torch.full((1,), _UNSIGNED_FLOOR, dtype=torch.float64),
                            _magnitudes(_UNSIGNED_BITS)])
    return values.to(torch.float32)


# The values, from the definition, for reference: decoding computes them (``_decode``).
_TABLES = {signed: _table(signed) for signed in (True, False)}


def code(signed: bool, device: torch.device | str = "cpu") -> Tensor:
    """The 256 values a byte decodes to (times the block's absmax), as float32 on ``device``."""
    return _TABLES[signed].to(device)


def num_blocks(numel: int) -> int:
    """How many absmax scales a tensor of ``numel`` elements keeps."""
    return -(-numel // BLOCK_SIZE)


def quantizes(numel: int) -> bool:
    """Whether a state tensor of ``numel`` elements is kept in 8 bits (see :data:`MIN_NUMEL`)."""
    return numel >= MIN_NUMEL


def _encode(a: Tensor, bits: int) -> Tensor:
    """Nearest tree index ``j`` in ``[-1, 2**bits - 2]`` of magnitudes ``a`` in ``[0, 1]`` (as
    float); ``j = -1`` is the value below the smallest level (0, or the unsigned floor)."""
    # The level e (a in (10**-(e+1), 10**-e]) by comparisons: a log10 and a pow would cost
    # several times more than the whole update. The thresholds fall with i, so a chain of
    # selects over them leaves level e's constants: 10**e, n_e = 2**(bits-1-e) and n_e / 0.9
    # (in float32, the value the division gives). No bit casts: inductor's CPU code casts
    # bits one element at a time. At a level boundary either neighbouring level gives the same
    # value (the fraction k = 0 of level e is the top of level e + 1), so float32's inexact
    # 10**-i is harmless.
    tens, n, step = _LEVELS[bits][0]
    for i, (tens_i, n_i, step_i) in enumerate(_LEVELS[bits][1:], start=1):
        below = a < 10.0**-i
        tens = torch.where(below, tens_i, tens)
        n = torch.where(below, n_i, n)
        step = torch.where(below, step_i, step)
    k = torch.round((a * tens - 0.1) * step)
    k = torch.minimum(k.clamp(min=0), n)
    return n - 2 + k


def _levels(bits: int) -> list[tuple[float, float, float]]:
    """Per level e: ``(10**e, n_e, n_e / 0.9)``, each the float32 value, as Python floats."""
    out = []
    for e in range(bits):
        n = torch.tensor(2.0 ** (bits - 1 - e), dtype=torch.float32)
        out.append((10.0**e, float(n), float(n / torch.tensor(0.9, dtype=torch.float32))))
    return out


_LEVELS = {bits: _levels(bits) for bits in (_SIGNED_BITS, _UNSIGNED_BITS)}


def _block_scales(blocks: Tensor) -> Tensor:
    absmax = blocks.abs().amax(dim=-1, keepdim=True)
    # NaN anywhere in a block (inf was clamped before): the whole block reads back as NaN
    return torch.where(absmax < math.inf, absmax, math.nan)


def _quantize_blocks(blocks: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    """Codes (same shape, uint8) and absmax (``[..., 1]``) of ``blocks`` (``[..., n]``)."""
    # beyond float32's range (an overflowed moment, a float64 state): the largest float32,
    # so the block keeps a finite scale (NaN stays NaN)
    blocks = blocks.float().clamp(-_FLOAT32_MAX, _FLOAT32_MAX)
    absmax = _block_scales(blocks)
    # 1 / absmax overflows below 2**-128: such a block is lifted by 2**64 first (exact); a
    # factor 1 elsewhere leaves every other block's arithmetic as it was
    lift = torch.where(absmax < _TINY, _LIFT, 1.0)
    inverse = torch.where(absmax > 0, 1.0 / (absmax * lift), 0.0)  # NaN absmax gives NaN here
    y = (blocks * lift) * inverse
    # x * (1 / absmax) exceeds 1 by an ulp for some absmax >= 2**126: the top value, not 0
    # (NaN, from a non-finite block, fails ``y == y`` and becomes 0: any byte decodes to NaN
    # there)
    if signed:
        a = y.abs()
        a = torch.where(a == a, a.clamp(max=1.0), 0.0)
        j = _encode(a, _SIGNED_BITS) + 1
        byte = _ZERO_BYTE + torch.where(y < 0, -j, j)
    else:
        a = torch.where(y == y, y.clamp(0.0, 1.0), 0.0)
        byte = _encode(a, _UNSIGNED_BITS) + 1
    return byte.to(torch.uint8), absmax


def quantize_(x: Tensor, codes: Tensor, absmax: Tensor, signed: bool) -> None:
    """Quantize ``x`` into ``codes`` (uint8, ``x.numel()`` elements, any shape) and ``absmax``
    (float32, ``num_blocks(x.numel())``), in place. ``x`` may be any float dtype."""
    flat = x.reshape(-1)
    out = codes.view(-1)
    n = flat.numel()
    full = n // BLOCK_SIZE * BLOCK_SIZE
    if full:
        c, s = _quantize_blocks(flat[:full].view(-1, BLOCK_SIZE), signed)
        out[:full].copy_(c.view(-1))
        absmax[: full // BLOCK_SIZE].copy_(s.view(-1))
    if full < n:
        c, s = _quantize_blocks(flat[full:], signed)
        out[full:].copy_(c)
        absmax[-1:].copy_(s)


def quantize(x: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    """``(codes, absmax)`` of ``x``: codes shaped like ``x``."""
    codes = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    absmax = torch.empty(num_blocks(x.numel()), dtype=torch.float32, device=x.device)
    quantize_(x, codes, absmax, signed)
    return codes, absmax


@torch.library.custom_op("optimkit::widen", mutates_args=())
def widen(codes: Tensor) -> Tensor:
    """The bytes as float32 values 0..255: one ATen kernel, opaque to inductor (see the module
    doc: a ``uint8`` load inside a long fused CPU kernel is what made decoding slow)."""
    return codes.float()


@widen.register_fake
def _(codes: Tensor) -> Tensor:
    return torch.empty(codes.shape, dtype=torch.float32, device=codes.device)


def _decode(codes: Tensor, signed: bool) -> Tensor:
    """``code(signed)[codes]`` (float32) by arithmetic: the tree's value of each byte."""
    bits = _SIGNED_BITS if signed else _UNSIGNED_BITS
    if codes.device.type == "cpu" and torch.compiler.is_compiling():
        byte = widen(codes)
    else:
        byte = codes.float()
    u = (byte - _ZERO_BYTE).abs() if signed else byte  # the magnitude's rank, 0..2**bits - 1
    # level L = floor(log2 u) holds n = 2**L values, k = u - n + 1 = 1..n, at the decimal
    # exponent e = bits - 1 - L: value 10**-e * (0.1 + 0.9 k / n) = (9u - 8n + 9) * c_L, with
    # c_L = hi + lo, hi of 12 significant bits (so that the integer times hi is exact in
    # float32) and lo the rest: one rounding, of the sum, gives the table's float32 value for
    # every byte, also where the sum is contracted into a fused multiply-add (checked for all
    # 256 bytes of both codes by the tests).
    n = torch.ones_like(u)
    hi, lo = _DECODE[bits][0]
    hi = torch.full_like(u, hi)
    lo = torch.full_like(u, lo)
    for level in range(1, bits):
        above = u >= 2.0**level
        n = torch.where(above, 2.0**level, n)
        hi = torch.where(above, _DECODE[bits][level][0], hi)
        lo = torch.where(above, _DECODE[bits][level][1], lo)
    k = 9 * u - 8 * n + 9
    value = k * hi + k * lo
    if signed:
        value = torch.where(byte < _ZERO_BYTE, -value, value)
        value = torch.where(u == 0, 0.0, value)
        return torch.where(byte > 2 * _ZERO_BYTE, math.nan, value)  # byte 255
    return torch.where(u == 0, _UNSIGNED_FLOOR, value)


def _decode_constants(bits: int) -> list[tuple[float, float]]:
    """Per level L: ``(hi, lo)`` of ``c_L = 10**(L - bits) / 2**L`` (see :func:`_decode`), each
    a float32 value as a Python float."""
    out = []
    for level in range(bits):
        c = 10.0 ** (level - bits) / 2**level
        mantissa, exponent = math.frexp(c)
        hi = float(torch.tensor(math.ldexp(round(mantissa * 2**12) / 2**12, exponent),
                                dtype=torch.float32))
        lo = float(torch.tensor(c - hi, dtype=torch.float32))
        out.append((hi, lo))
    return out


_DECODE = {bits: _decode_constants(bits) for bits in (_SIGNED_BITS, _UNSIGNED_BITS)}


def _beyond(values: Tensor) -> Tensor:
    """Decoded values with the largest float32 magnitude (a top code in a block saturated by a
    value beyond float32's range, see the module doc) as inf, with their sign."""
    return torch.where(values.abs() == _FLOAT32_MAX, values * 2.0, values)


def dequantize(codes: Tensor, absmax: Tensor, signed: bool, out: Tensor | None = None) -> Tensor:
    """The float32 values of ``codes`` (shaped like ``codes``), or written into ``out``."""
    flat = codes.reshape(-1)
    n = flat.numel()
    full = n // BLOCK_SIZE * BLOCK_SIZE
    pieces = []
    if full:
        values = _decode(flat[:full].view(-1, BLOCK_SIZE), signed)
        pieces.append(_beyond(values * absmax[: full // BLOCK_SIZE, None]).view(-1))
    if full < n:
        pieces.append(_beyond(_decode(flat[full:], signed) * absmax[-1]))
    if not pieces:  # an empty tensor (an FSDP2 rank's empty shard)
        pieces.append(torch.zeros(0, dtype=torch.float32, device=codes.device))
    values = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    if out is not None:
        out.view(-1).copy_(values)
        return out
    return values.view(codes.shape)


def quantize_list_(xs: Sequence[Tensor], codes: Sequence[Tensor], absmax: Sequence[Tensor],
                   signed: bool) -> None:
    for x, c, s in zip(xs, codes, absmax, strict=True):
        quantize_(x, c, s, signed)


def dequantize_list(codes: Sequence[Tensor], absmax: Sequence[Tensor], signed: bool
                    ) -> list[Tensor]:
    return [dequantize(c, s, signed) for c, s in zip(codes, absmax, strict=True)]
