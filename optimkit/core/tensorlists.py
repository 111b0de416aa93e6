"""Tensor-list helpers: the bucket a part works on, and per-tensor scalars.

Every part sees one :class:`Bucket`: the params of one param group that share a device and a
dtype, their grads, and their state as aligned lists. Parts use ``torch._foreach_*`` ops on
these lists, so one call touches every tensor of the bucket.

Some quantities differ per tensor, e.g. Adam's bias correction ``1 - beta1**step`` when params
joined training at different steps. They are held as a 1-D float64 CPU tensor (one entry per
tensor of the bucket), computed with ordinary tensor math, and handed to the foreach ops as a
scalar list. The step counters live on the CPU (torch.optim's format), so this never waits
for an accelerator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

_ONE = torch.tensor(1.0)

# (total size, per-param lengths as a tensor and as ints) of the flat bucket being stepped, or
# None (see core/flat.py).
FLAT_LAYOUT: tuple[int, Tensor, tuple[int, ...]] | None = None


class Bucket:
    """The aligned tensor lists of one (param group, device, dtype) bucket.

    Attributes:
        params: the parameters (updated in place by steppers).
        grads: the gradients as the parts see them. Initially the params' ``.grad`` tensors,
            which must never be written; a part that changes the gradient (weight decay,
            centralisation) rebinds this to a new list.
        state: state name -> list of tensors, aligned with ``params``; writing into these
            tensors updates ``optimizer.state[p]``.
        created: state name -> indices of the tensors whose state was created this step.
        extras: scratch space shared by the parts of one step (e.g. the update direction).
    """

    __slots__ = ("params", "grads", "state", "created", "extras", "_steps")

    def __init__(self, params, grads, state, created):
        self.params: list[Tensor] = params
        self.grads: list[Tensor] = grads
        self.state: dict[str, list[Tensor]] = state
        self.created: dict[str, list[int]] = created
        self.extras: dict[str, object] = {}
        self._steps: Tensor | None = None

    def __len__(self) -> int:
        return len(self.params)

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    def increment_steps(self) -> None:
        steps = self.state["step"]
        if steps[0].is_cpu:
            # A tensor scalar avoids wrapping ``1`` again for every tensor on the slow CPU path.
            torch._foreach_add_(steps, _ONE, alpha=1.0)
        else:
            torch._foreach_add_(steps, 1)
        self._steps = None

    @property
    def steps(self) -> Tensor:
        """The step count of each tensor, as a 1-D float64 CPU tensor."""
        if self._steps is None:
            self._steps = torch.stack(self.state["step"]).to("cpu", torch.float64)
        return self._steps


def scalars(values: Tensor | float) -> list[float] | float:
    """A per-tensor scalar vector as foreach ops take it (a plain number passes through).

    Under ``torch.compile`` the values stay in the graph (no ``tolist`` sync, no recompile
    when they change).
    """
    if isinstance(values, Tensor) and values.dim() == 1:
        if torch.compiler.is_compiling():
            if values.numel() == 1:
                # one number (a flat bucket): the ops' Scalar overloads, which inductor fuses;
                # it leaves ScalarList ops of traced values as separate, unfused kernels
                return values[0].item()
            return [v.item() for v in values.unbind()]
        return values.tolist()
    return values


def norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The L2 norm of each tensor, as a list of 0-d tensors on the tensors' device.

    Every per-tensor norm in optimkit goes through here, so that a sharded tensor can later
    sum its partial squares across shards in one place.

    In flat mode (``core/flat.py``) a bucket is one flat tensor holding every param; there a
    tensor of the flat size gets a segmented reduction, one norm per param, spread back over
    that param's elements, so the elementwise math of the parts that follow is per param.
    """
    layout = FLAT_LAYOUT
    if layout is not None and tensors and all(t.numel() == layout[0] for t in tensors):
        return [_segment_norms(t, layout[1], layout[2]) for t in tensors]
    return list(torch._foreach_norm(tensors))


def _segment_norms(flat: Tensor, lengths: Tensor, sizes: tuple[int, ...]) -> Tensor:
    # One norm per param over its slice of the buffer, spread back over the slice's elements.
    device_lengths = lengths.to(flat.device)
    if torch.compiler.is_compiling():
        # one reduction op: splitting would unroll the graph over every param
        squares = torch.segment_reduce(flat * flat, "sum", lengths=device_lengths)
        per_param = squares.sqrt()
    else:
        # views of the buffer, no squared copy
        per_param = torch.stack(torch._foreach_norm(list(flat.split(sizes))))
    return per_param.repeat_interleave(device_lengths, output_size=flat.numel())
