"""Precision and memory policies: the keywords ``state_dtype``, ``state_bits`` and
``param_update``, applied by one mechanism around the parts of every recipe.

* :mod:`.quantize`: block-wise 8-bit state (Dettmers et al. 2022's dynamic tree code, blocks of
  256, tensors of 4096 elements and more);
* :mod:`.rounding`: stochastic rounding into bf16/fp16 with counter-based random bits, and
  Kahan-compensated updates;
* :mod:`.policy`: :class:`Precision`, which checks the keywords against a recipe's declared
  state (:class:`Storage`), creates state in its stored form and hands the parts working
  tensors in the compute dtype before writing them back.
"""

from . import quantize, rounding
from .policy import Precision, Storage, state_bytes
from .quantize import BLOCK_SIZE, MIN_NUMEL

__all__ = ["BLOCK_SIZE", "MIN_NUMEL", "Precision", "Storage", "quantize", "rounding", "state_bytes"]
