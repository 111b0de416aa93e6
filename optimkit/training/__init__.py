"""Training helpers: the LR range test, Selective-Backprop and exact snapshots."""

from .lr_finder import LRFindResult, lr_find, suggest, sweep_lrs
from .selective_backprop import SelectiveBackprop
from .snapshot import RNGState, Snapshot

__all__ = [
    "LRFindResult",
    "RNGState",
    "SelectiveBackprop",
    "Snapshot",
    "lr_find",
    "suggest",
    "sweep_lrs",
]
