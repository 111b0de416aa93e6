"""Training helpers: the LR range test, Selective-Backprop, exact snapshots, param groups,
evaluating with train/eval-mode optimizers (Schedule-Free) and BatchNorm statistics."""

from .evaluation import evaluating, recompute_bn_stats
from .lr_finder import LRFindResult, lr_find, suggest, sweep_lrs
from .param_groups import is_bias_or_norm, param_groups
from .selective_backprop import SelectiveBackprop
from .snapshot import RNGState, Snapshot

__all__ = [
    "LRFindResult",
    "RNGState",
    "SelectiveBackprop",
    "Snapshot",
    "evaluating",
    "is_bias_or_norm",
    "lr_find",
    "param_groups",
    "recompute_bn_stats",
    "suggest",
    "sweep_lrs",
]
