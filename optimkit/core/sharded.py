"""Sharded params (DTensor, as FSDP2's ``fully_shard`` makes them): the parts run on local shards.

A bucket of DTensor params that share a device mesh and placements is handed to the parts as
a :class:`ShardedBucket`: its params, grads and state are the local shards (``to_local()``,
the same storage, so in-place updates reach the DTensors), and every part runs unchanged,
eagerly or compiled, with no DTensor dispatch per foreach op. Element-wise math is local by
nature. The one thing that is not is a per-tensor reduction. Parts take those through the
bucket's one reduction service (``Bucket.sum_squares`` / ``norms`` / ``dots``, see
``core/tensorlists.py``): the local sums of every list of a call come as one ``[k, count]``
tensor, and :meth:`ShardedBucket._total` adds them up across the shards in ONE all-reduce per
sharded mesh dimension (FSDP2: one), so that a layer-wise recipe (LARS, LAMB, NovoGrad's
per-layer moment, ...) sees the sums of the full tensors, whatever the number of params and
however uneven the shards (an empty shard adds 0).

Other reductions inside a tensor assume what FSDP2 does, sharding along dim 0 only: gradient
centralization (Ranger's ``use_gc``) averages each row over the other dims, and rows are
whole on every shard. A param sharded along another dim (tensor parallelism) would need
those parts to reduce across shards too. A part that needs each full tensor (matrix math:
``whole=True``) does not run on the shards at all: the executor hands it to
:func:`optimkit.core.whole.run_whole`, which runs it on one owner rank per tensor and refuses
any sharding but FSDP2's.

The state stays DTensors in ``optimizer.state`` (it is created from the DTensor params), so
``state_dict()`` and ``torch.distributed.checkpoint`` see sharded state; a per-tensor scalar
state (NovoGrad's ``layer_sqr_avg``) is computed from full-tensor norms and is the same on
every rank, a plain (replicated) tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .tensorlists import Bucket, is_dtensor


def shard_key(p: Tensor) -> tuple[Any, ...] | None:
    """What params must share to be stepped together: the mesh and placements of a DTensor."""
    if not is_dtensor(p):
        return None
    return (p.device_mesh, tuple(p.placements))


def _local(tensors: Sequence[Tensor]) -> list[Tensor]:
    # Under no_grad, to_local() is the DTensor's own local tensor: writes go through.
    return [t.to_local() if is_dtensor(t) else t for t in tensors]


def shard_offset(p: Tensor) -> int:
    """The element offset of a DTensor's local shard in the full tensor (row-major), for
    sharding along dim 0 (FSDP2's); 0 for a plain tensor."""
    if not is_dtensor(p) or p.to_local().numel() == 0:
        return 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return sum(o * s for o, s in zip(offset, p.stride(), strict=True))


def shard_groups(p: Tensor) -> tuple[str, ...]:
    """The process groups (by name) of the mesh dimensions ``p`` is sharded along."""
    mesh = p.device_mesh
    return tuple(
        mesh.get_group(dim).group_name
        for dim, placement in enumerate(p.placements)
        if placement.is_shard()
    )


class ShardedBucket(Bucket):
    """A bucket of local shards; its per-tensor sums and norms are those of the full tensors."""

    __slots__ = ("groups", "dtensors", "full_shapes")

    def __init__(self, params, grads, state, created, groups: tuple[str, ...],
                 dtensors: Sequence[Tensor] = (), shapes: Sequence[tuple[int, ...]] = ()):
        super().__init__(params, grads, state, created)
        self.groups = groups
        # the DTensor params whose local shards ``params`` are (outside a compiled graph): a
        # precision policy reads their global layout (offsets of the random bits)
        self.dtensors = tuple(dtensors)
        # the full tensors' shapes (static: a compiled step gets them with its layout)
        self.full_shapes = tuple(shapes) or tuple(tuple(p.shape) for p in dtensors)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the full tensors, not of the local shards (Muon's lr ratio)."""
        return list(self.full_shapes) if self.full_shapes else super().shapes

    @classmethod
    def of(cls, bucket: Bucket) -> ShardedBucket:
        """The local-shard view of a bucket of DTensor params (one mesh and placements)."""
        return cls(
            _local(bucket.params), _local(bucket.grads),
            {name: _local(tensors) for name, tensors in bucket.state.items()},
            bucket.created, shard_groups(bucket.params[0]), bucket.params,
        )

    def select(self, indices: Sequence[int]) -> ShardedBucket:
        """The shards at ``indices`` only, still a sharded bucket: its full shapes, DTensors
        and groups picked alike (a host-gated part's due tensors, gathered by a whole part)."""
        picked = super().select(indices)
        return ShardedBucket(
            picked.params, picked.grads, picked.state, picked.created, self.groups,
            [self.dtensors[i] for i in indices] if self.dtensors else (),
            [self.full_shapes[i] for i in indices] if self.full_shapes else (),
        )

    def _total(self, sums: Tensor) -> Tensor:
        """The per-tensor sums of the full tensors: the local partial sums of every list of a
        ``sum_squares`` / ``norms`` / ``dots`` call, added up across the shards in one
        all-reduce (per sharded mesh dimension)."""
        if self.groups:
            from torch.distributed import _functional_collectives as funcol

            for group in self.groups:
                sums = funcol.all_reduce(sums, "sum", group)
        return sums

    def blocks(self, limit_bytes: int | None = None) -> list[Bucket]:
        # whole: every block would be a collective of its own, and ranks whose shards differ
        # in size would cut different blocks (a hang)
        return [self]
