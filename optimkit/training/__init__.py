"""Training helpers: the LR range test, Selective-Backprop and exact snapshots."""

from .lr_finder import LRFindResult, lr_find, suggest, sweep_lrs
from .snapshot import RNGState, Snapshot

__all__ = ["LRFindResult", "RNGState", "Snapshot", "lr_find", "suggest", "sweep_lrs"]
