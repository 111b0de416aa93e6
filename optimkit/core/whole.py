"""Whole tensors under FSDP2: a part that needs each full tensor runs on one owner rank.

Most parts are element-wise, or reduce per tensor through the bucket (``b.norms``), and run on
each rank's dim-0 shard (:mod:`optimkit.core.sharded`). A part declared ``whole=True`` (matrix
math per tensor: Newton-Schulz orthogonalization, a Kronecker-factored preconditioner) would
compute another optimizer on a shard, so in a :class:`~optimkit.core.sharded.ShardedBucket` it
runs here instead:

1. **Owners.** Each tensor of the bucket gets one owner rank of the shard group: the tensors
   sorted by size, largest first, dealt round-robin (as Keller Jordan's distributed Muon and
   heavyball do), so the matrix work is spread evenly. Every rank computes the same plan from
   the global shapes; nothing is exchanged to agree on it.
2. **Gather to the owner.** Each rank sends each owner its shards of the inputs the part
   declares: the per-step fields it ``reads`` (``update``, ``grads``, ...) and its
   param-shaped states (``state``, state names in ``reads`` and ``overrides``). One buffer of
   bytes per pair of ranks (point-to-point, batched), so any dtypes travel exactly.
3. **Compute.** The owner runs the part on a bucket of the full tensors it owns (a plain
   :class:`~optimkit.core.tensorlists.Bucket`: its per-tensor reductions are local and
   whole). Per-tensor states of other layouts (a step counter, a per-tensor scalar, a state
   of its own shape such as a ``[n, n]`` factor) are replicated, so the owner uses its own.
4. **Back as shards.** The owner sends each rank its rows of every field the part
   ``provides`` (or ``overrides``) and of every param-shaped state it creates or overrides,
   and the full value of such a state of another layout; each rank copies them into its
   shards of the state (in place: the optimizer's DTensor state) and sets the fields to its
   shards. The parts after it run on the shards again.

**Communication per step**, for a whole part over a bucket of ``N`` elements of params, with
``I`` param-shaped inputs and ``O`` param-shaped outputs, on ``W`` ranks: each rank sends
about ``(I + O) * N / W * (W - 1) / W`` elements and receives as much (the owner of a tensor
receives the ``W - 1`` shards it lacks and sends them back), in 2 rounds of at most ``W - 1``
point-to-point messages each way. That is what an all-gather of the inputs (``I * N * (W - 1)
/ W`` received per rank) would cost divided by ``W``, plus the way back. A Muon-like
orthogonalization of the momentum (``I = O = 1``): twice the params' bytes over all ranks,
once each way. Per-tensor states of other layouts that the part writes are sent whole from
the owner to every other rank.

**Consecutive whole parts** of a step's body (no other part between them, the same bucket:
PSGD Kron's fit, then its direction) share what they gathered: a field read by a later one
whose shards are still the same tensors (no part rebound it) is taken from the owner's full
tensors of the earlier one, not sent again. Every rank runs the same parts, so all agree.
So a whole part must not write a field it reads in place (checked in the test suite).

**Host-gated whole parts** (``every="k"``: SOAP's eigenbases refresh) run here too, after
the step's other parts, on the tensors due this step: the step counters are on the CPU and
the same on every rank, so every rank selects the same sub-bucket (a
:class:`~optimkit.core.sharded.ShardedBucket` of them, with their full shapes) and this runs
on it as on a whole bucket. Such a part writes states it ``reads`` in place; it declares
them in ``overrides``, so that they go back to the shards (its own-shape states as above:
whole, to every rank).

What it refuses, with a ``ValueError`` naming the part, rather than compute on a shard: a
bucket sharded along another dim than 0 (tensor parallelism: ``Shard(1)``), along more than
one mesh dimension, or with ``Partial`` placements; a shard layout other than FSDP2's (rank
``r`` holds rows ``[r * c, (r + 1) * c)`` with ``c = ceil(rows / W)``); a field or state that
is not shaped like its param's shard; a whole part providing the per-tensor norms. A field the
part does not declare is not gathered, and using it raises: a whole part declares every field
it reads, ``update`` and ``grads`` included. The params themselves are not gathered either
(a part reads their shapes; their values only as ``norm_weights``, which it then declares).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from . import contract
from .policy import Layout
from .tensorlists import FIELDS, Bucket

# Per-step fields that hold one number per tensor (a 1-D tensor), not a list of tensors.
_PER_TENSOR = ("weight_norms", "update_norms")


class _Undeclared:
    """Stands in for a field a whole part did not declare: using it raises, naming the part."""

    __slots__ = ("part",)

    def __init__(self, part: str) -> None:
        self.part = part

    def _refuse(self, *args: Any, **kwargs: Any):
        raise ValueError(
            f"part {self.part} is declared whole=True and uses the gradient (grads or update) "
            "without declaring it; under FSDP2 only the fields it declares in reads= are "
            "gathered into full tensors"
        )

    __iter__ = __getitem__ = __len__ = _refuse


class _WholeBucket(Bucket):
    """The owner's bucket of full tensors. Its params stand for their shapes (meta tensors of
    the full shape): their values are never gathered."""

    __slots__ = ("_device",)

    @property
    def device(self) -> torch.device:
        return self._device


def shard_plan(bucket, part_name: str):
    """``(process group, world size, rank, rows of each rank per tensor)`` of a sharded
    bucket, or None where its params are replicated (each local tensor is the full one).
    Raises ``ValueError`` for a sharding a whole part cannot gather."""
    from torch.distributed.tensor import Shard

    first = bucket.dtensors[0]
    placements = tuple(first.placements)
    sharded = [dim for dim, placement in enumerate(placements) if placement.is_shard()]
    odd = [placement for placement in placements
           if not (placement.is_replicate() or type(placement) is Shard and placement.dim == 0)]
    if odd or len(sharded) > 1:
        raise ValueError(
            f"part {part_name} needs each full tensor (whole=True), which optimkit gathers for "
            f"FSDP2's sharding along dim 0 over one mesh dimension; these params are placed "
            f"{placements} (tensor parallelism or another layout): not supported, and a shard "
            "would compute another optimizer"
        )
    if not sharded:
        return None
    group = first.device_mesh.get_group(sharded[0])
    import torch.distributed as dist

    world, rank = dist.get_world_size(group), dist.get_rank(group)
    rows = []
    for p, local in zip(bucket.dtensors, bucket.params, strict=True):
        if p.dim() == 0:
            raise ValueError(f"part {part_name}: a 0-d param cannot be sharded along dim 0")
        n = p.shape[0]
        chunk = -(-n // world)
        mine = [max(0, min(n - r * chunk, chunk)) for r in range(world)]
        if tuple(local.shape) != (mine[rank], *p.shape[1:]):
            raise ValueError(
                f"part {part_name} (whole=True): a shard of shape {tuple(local.shape)} of a "
                f"param of shape {tuple(p.shape)} is not FSDP2's even split along dim 0"
            )
        rows.append(mine)
    return group, world, rank, rows


def owners(sizes: Sequence[int], world: int) -> list[int]:
    """The owner rank of each tensor: sorted by size, largest first (ties in order), dealt
    round-robin over ``world`` ranks."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    owner = [0] * len(sizes)
    for k, i in enumerate(order):
        owner[i] = k % world
    return owner


def _bytes(t: Tensor, device: torch.device) -> Tensor:
    return t.detach().to(device).contiguous().reshape(-1).view(torch.uint8)


def _exchange(group, rank: int, world: int, sends: Mapping[int, list[Tensor]],
              sizes: Mapping[int, int], device: torch.device) -> dict[int, Tensor]:
    """Send each peer its tensors as one byte buffer and receive ``sizes[peer]`` bytes from each
    peer: one batch of point-to-point messages (none of zero bytes: both ends know the sizes)."""
    import torch.distributed as dist

    ops, received = [], {}
    for peer in range(world):
        if peer == rank:
            continue
        parts = [_bytes(t, device) for t in sends.get(peer, ())]
        if parts:
            buffer = torch.cat(parts) if len(parts) > 1 else parts[0]
            if buffer.numel():
                ops.append(dist.P2POp(dist.isend, buffer, group=group, group_peer=peer))
        if sizes.get(peer, 0):
            received[peer] = torch.empty(sizes[peer], dtype=torch.uint8, device=device)
            ops.append(dist.P2POp(dist.irecv, received[peer], group=group, group_peer=peer))
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()
    return received


class _Reader:
    """Reads consecutive tensors out of one received byte buffer."""

    def __init__(self, buffer: Tensor | None, device: torch.device) -> None:
        self.buffer, self.device, self.at = buffer, device, 0

    def take(self, shape: Sequence[int], dtype: torch.dtype) -> Tensor:
        count = 1
        for n in shape:
            count *= n
        size = count * dtype.itemsize
        if size == 0:
            return torch.empty(tuple(shape), dtype=dtype, device=self.device)
        piece = self.buffer[self.at: self.at + size].clone()  # aligned for the dtype's view
        self.at += size
        return piece.view(dtype).reshape(tuple(shape))


def run_whole(bucket, part, group: Mapping[str, Any], layouts: Mapping[str, Layout],
              gathered: dict[str, tuple[list, list]] | None = None) -> None:
    """Run the whole part ``part`` on the full tensors of the sharded ``bucket``: gathered to
    one owner per tensor, computed there, handed back as shards (see the module doc).

    ``gathered`` (kept by the caller over a run of whole parts with no other part between
    them, on the same bucket) holds the full fields an earlier one gathered: ``{name: (the
    local shards it gathered, the owner's full tensors)}``. A field whose shards are still the
    same tensors is not sent again (Kron's direction reads the momentum its fit gathered).
    Every rank runs the same parts in the same order, so all agree on what is reused."""
    plan = shard_plan(bucket, part.name)
    if plan is None:  # replicated params: each local tensor is the full one
        part(bucket, group)
        return
    pg, world, rank, rows = plan
    bad = [name for name in (*part.provides, *part.overrides) if name in _PER_TENSOR]
    if bad:
        raise ValueError(f"part {part.name} (whole=True) provides {bad}: per-tensor numbers of "
                         "a sharded bucket come from its reductions (b.norms), not a whole part")
    device = bucket.device
    shapes = [tuple(p.shape) for p in bucket.dtensors]
    sizes = [p.numel() for p in bucket.dtensors]
    owner = owners(sizes, world)
    mine = [i for i in range(len(bucket)) if owner[i] == rank]

    def layout(name: str) -> Layout:
        return layouts.get(name, Layout.PARAM)

    # the inputs: declared fields, and every declared state (param-shaped ones are gathered)
    field_names = [name for name in dict.fromkeys(part.reads) if name in FIELDS]
    state_names = list(dict.fromkeys(
        name for name in (*part.state, *part.reads, *part.overrides) if name not in FIELDS
    ))
    missing = [name for name in state_names if name not in bucket.state]
    if missing:
        raise ValueError(f"part {part.name}: state {missing} is not in the bucket")
    inputs: list[tuple[str, list]] = []  # (name, local tensors) of what is gathered
    reused: dict[str, list[Tensor]] = {}  # the owner's full tensors of fields gathered before
    for name in field_names:
        value = getattr(bucket, name)
        if value is None:
            raise ValueError(f"part {part.name} reads {name!r}, which no earlier part provided")
        if name in _PER_TENSOR:
            continue
        earlier = gathered.get(name) if gathered is not None else None
        if earlier is not None and len(earlier[0]) == len(value) and all(
                a is b for a, b in zip(earlier[0], value, strict=True)):
            reused[name] = earlier[1]
            continue
        inputs.append((name, list(value)))
    sharded_states = [name for name in state_names if layout(name) is Layout.PARAM]
    inputs += [(name, list(bucket.state[name])) for name in sharded_states]
    for name, tensors in inputs:
        for i, t in enumerate(tensors):
            if tuple(t.shape) != (rows[i][rank], *shapes[i][1:]):
                raise ValueError(
                    f"part {part.name} (whole=True): {name!r} of a param of shape {shapes[i]} "
                    f"has a shard of shape {tuple(t.shape)}, not the param's shard: it cannot "
                    "be gathered"
                )

    # 1. each rank sends each owner its shards of the owner's tensors
    sends = {peer: [tensors[i] for i in range(len(bucket)) if owner[i] == peer
                    for _, tensors in inputs] for peer in range(world) if peer != rank}

    def shard_bytes(i: int, peer: int, tensors: list) -> int:
        t = tensors[i]
        per_row = t.element_size()
        for n in shapes[i][1:]:
            per_row *= n
        return rows[i][peer] * per_row

    expect = {peer: sum(shard_bytes(i, peer, tensors) for i in mine for _, tensors in inputs)
              for peer in range(world) if peer != rank}
    received = _exchange(pg, rank, world, sends, expect, device)
    readers = {peer: _Reader(received.get(peer), device) for peer in range(world)}
    full: dict[str, list[Tensor]] = {name: [] for name, _ in inputs}
    for i in mine:
        for name, tensors in inputs:
            pieces = [
                tensors[i] if peer == rank else readers[peer].take(
                    (rows[i][peer], *shapes[i][1:]), tensors[i].dtype)
                for peer in range(world)
            ]
            full[name].append(torch.cat(pieces) if world > 1 else pieces[0])
    if gathered is not None:
        for name, tensors in inputs:
            if name in FIELDS:
                gathered[name] = (tensors, full[name])
    full.update(reused)

    # 2. the owner runs the part on its full tensors
    provided = [name for name in dict.fromkeys((*part.provides, *part.overrides))
                if name in FIELDS]
    written = [name for name in dict.fromkeys((*part.state, *part.overrides))
               if name not in FIELDS]
    results: dict[str, list[Tensor]] = {}
    if mine:
        whole = _WholeBucket(
            [torch.empty(shapes[i], dtype=bucket.dtype, device="meta") for i in mine],
            _Undeclared(part.name), {}, {},
        )
        whole._device = device
        position = {i: k for k, i in enumerate(mine)}
        whole.created = {name: [position[i] for i in made if i in position]
                         for name, made in bucket.created.items()}
        whole.created = {name: made for name, made in whole.created.items() if made}
        for name in state_names:
            whole.state[name] = (full[name] if name in full
                                 else [bucket.state[name][i] for i in mine])
        for name in field_names:
            value = getattr(bucket, name)
            setattr(whole, name, full[name] if name in full else value[mine])
        read_only = [name for name in state_names if name not in written]
        if contract.ENFORCED and read_only:  # the test suite: a write to them would be lost
            before = {name: [t.clone() for t in whole.state[name]] for name in read_only}
        kept = [name for name in full if name in FIELDS] if gathered is not None else []
        if contract.ENFORCED and kept:  # a later whole part may read them again
            kept_before = {name: [t.clone() for t in full[name]] for name in kept}
        part(whole, group)
        if contract.ENFORCED and kept:
            for name in kept:
                if not all(torch.equal(a, b) for a, b in zip(kept_before[name], full[name],
                                                              strict=True)):
                    raise contract.ContractViolation(
                        f"part {part.name} (whole=True) wrote the gathered field {name!r} in "
                        "place: a whole part after it would read the changed values"
                    )
        if contract.ENFORCED and read_only:
            for name in read_only:
                if not all(torch.equal(a, b) for a, b in zip(before[name], whole.state[name],
                                                              strict=True)):
                    raise contract.ContractViolation(
                        f"part {part.name} (whole=True) wrote state {name!r}, which it only "
                        "reads: under FSDP2 only the states it creates or overrides go back "
                        "to the shards"
                    )
        for name in provided:
            value = getattr(whole, name)
            if isinstance(value, _Undeclared) or value is None:
                raise ValueError(f"part {part.name} declares it provides {name!r} but did not")
            results[name] = list(value)
        for name in written:
            results[name] = list(whole.state[name])
        for name in provided:
            for k, i in enumerate(mine):
                if tuple(results[name][k].shape) != shapes[i]:
                    raise ValueError(
                        f"part {part.name} (whole=True) provides {name!r} of shape "
                        f"{tuple(results[name][k].shape)} for a param of shape {shapes[i]}"
                    )

    # the dtype each provided field comes back in: the field's own where the part read it,
    # else the params'
    def field_dtype(name: str, i: int) -> torch.dtype:
        if name in field_names:
            return getattr(bucket, name)[i].dtype
        return bucket.dtype

    def outgoing(name: str, k: int, i: int, peer: int) -> Tensor:
        value = results[name][k]
        if name in provided:
            value = value.to(field_dtype(name, i))
        elif layout(name) is not Layout.PARAM:
            return value.to(bucket.state[name][i].dtype)
        else:
            value = value.to(bucket.state[name][i].dtype)
        start = sum(rows[i][:peer])
        return value[start: start + rows[i][peer]]

    outputs = [*provided, *written]

    # 3. each owner sends each rank its rows of the results (states of other layouts whole)
    sends = {peer: [outgoing(name, k, i, peer) for k, i in enumerate(mine) for name in outputs]
             for peer in range(world) if peer != rank}

    def out_shape(name: str, i: int, peer: int) -> tuple[tuple[int, ...], torch.dtype]:
        if name in provided:
            return (rows[i][peer], *shapes[i][1:]), field_dtype(name, i)
        local = bucket.state[name][i]
        if layout(name) is not Layout.PARAM:
            return tuple(local.shape), local.dtype
        return (rows[i][peer], *shapes[i][1:]), local.dtype

    def nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
        count = 1
        for n in shape:
            count *= n
        return count * dtype.itemsize

    expect = {peer: sum(nbytes(*out_shape(name, i, rank)) for i in range(len(bucket))
                        if owner[i] == peer for name in outputs)
              for peer in range(world) if peer != rank}
    received = _exchange(pg, rank, world, sends, expect, device)
    readers = {peer: _Reader(received.get(peer), device) for peer in range(world)}
    new_fields: dict[str, list] = {name: [None] * len(bucket) for name in provided}
    position = {i: k for k, i in enumerate(mine)}
    for i in range(len(bucket)):
        for name in outputs:
            if owner[i] == rank:
                value = outgoing(name, position[i], i, rank)
            else:
                value = readers[owner[i]].take(*out_shape(name, i, rank))
            if name in provided:
                new_fields[name][i] = value
            else:
                local = bucket.state[name][i]
                if value is not local:
                    local.copy_(value)
    for name in provided:
        setattr(bucket, name, new_fields[name])
        if gathered is not None:
            gathered.pop(name, None)

