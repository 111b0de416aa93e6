"""The bucket a part works on, and the per-tensor numbers the parts compute with.

Every part sees one :class:`Bucket`: the params of one param group that share a device and a
dtype, their grads, their state as aligned lists, and the values the parts of one step hand to
each other (the :data:`FIELDS`). Parts use ``torch._foreach_*`` ops on these lists, so one call
touches every tensor of the bucket.

Some quantities differ per tensor, e.g. Adam's bias correction ``1 - beta1**step`` when params
joined training at different steps. They are held as a 1-D float64 CPU tensor (one entry per
tensor of the bucket), computed with ordinary tensor math, and handed to the foreach ops as a
scalar list. The step counters live on the CPU (torch.optim's format), so this never waits
for an accelerator.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import Tensor

_ONE = torch.tensor(1.0)

# The values parts of one step hand to each other, by name. A part declares the ones it reads
# and provides (``reads=``, ``provides=``); a recipe is checked against them when it is defined.
FIELDS: dict[str, str] = {
    "grads": "the gradient as the parts see it: each param's .grad (never written), or a new "
    "list once a part regularises it (the L2 term, centralisation)",
    "update": "the update direction a stepper applies; it is the gradient (grads) until a part "
    "provides another one (momentum, a normalised or trust-scaled direction)",
    "first_moment": "the first moment a stepper applies (Adam's m): the grad_avg state, or a "
    "copy damped for this step only (DiffGrad's friction)",
    "second_moment": "the second moment a stepper divides by (Adam's v): sqr_avg, its running "
    "max (AMSGrad), Adagrad's sum, a per-layer moment (NovoGrad), a centred variance (RMSprop)",
    "step_size": "per-element step sizes, lr and bias corrections folded in (AdaMod, DiffGrad)",
    "norm_target": "the tensors whose norm a trust ratio compares with ||w||: the update, "
    "unless a part provides other ones",
    "norm_weights": "the tensors a trust ratio measures as w: the params, unless a part "
    "provides other ones",
    "weight_norms": "||norm_weights|| per tensor, a 1-D tensor on the bucket's device",
    "update_norms": "||norm_target|| per tensor, a 1-D tensor on the bucket's device",
}


# Fields every bucket starts with: the gradient, which is also the update (and what a trust
# ratio measures) until a part provides another, and the params a trust ratio weighs it with.
INITIAL_FIELDS = ("grads", "update", "norm_target", "norm_weights")


# An eager step on the CPU runs its parts over blocks of params of at most this many bytes per
# list (see Bucket.blocks): a block's params, grads, state and temporaries then stay in the
# last-level cache across the ~10 passes of a recipe, where a pass over the whole bucket streams
# them from memory each time. Measured on a 32 MiB-L3 CPU, W1 (11.7M params): LARS 72 -> 48 ms,
# Adam 85 -> 55 ms per step with 1M-element blocks, as fast as a per-param loop. A recipe with
# more param-sized lists cuts smaller blocks (the executor's BLOCK_WORKING_SET over its lists).
CPU_BLOCK_BYTES = 4 << 20


def block_ranges(sizes: Sequence[int], limit: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of consecutive ``sizes`` adding up to at most ``limit`` each (an
    entry bigger than ``limit`` alone)."""
    ranges, start, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > start and total + n > limit:
            ranges.append((start, i))
            start, total = i, 0
        total += n
    ranges.append((start, len(sizes)))
    return ranges


class Bucket:
    """The aligned tensor lists of one (param group, device, dtype) bucket, for one step.

    Attributes:
        params: the parameters (updated in place by steppers).
        grads, update, first_moment, second_moment, step_size, norm_target, norm_weights,
            weight_norms, update_norms: the per-step values of :data:`FIELDS`. ``update``
            reads as ``grads``, ``norm_target`` as ``update`` and ``norm_weights`` as
            ``params`` until a part sets them; the others are None until a part provides them.
        state: state name -> list of tensors, aligned with ``params``; writing into these
            tensors updates ``optimizer.state[p]``.
        created: state name -> indices of the tensors whose state was created this step.
    """

    __slots__ = (
        "params", "grads", "state", "created", "_update", "first_moment", "second_moment",
        "step_size", "_norm_target", "_norm_weights", "weight_norms", "update_norms", "_steps",
    )

    def __init__(self, params, grads, state, created):
        self.params: list[Tensor] = params
        self.grads: list[Tensor] = grads
        self.state: dict[str, list[Tensor]] = state
        self.created: dict[str, list[int]] = created
        self._update: list[Tensor] | None = None
        self.first_moment: list[Tensor] | None = None
        self.second_moment: list[Tensor] | None = None
        self.step_size: list[Tensor] | None = None
        self._norm_target: list[Tensor] | None = None
        self._norm_weights: list[Tensor] | None = None
        self.weight_norms: Tensor | None = None
        self.update_norms: Tensor | None = None
        self._steps: Tensor | None = None

    def __len__(self) -> int:
        return len(self.params)

    @property
    def update(self) -> list[Tensor]:
        """The direction a stepper applies: the gradient until a part provides another."""
        return self.grads if self._update is None else self._update

    @update.setter
    def update(self, tensors: list[Tensor]) -> None:
        self._update = tensors

    @property
    def norm_target(self) -> list[Tensor]:
        """The tensors a layer-wise norm is taken of: ``update`` unless a part sets another."""
        return self.update if self._norm_target is None else self._norm_target

    @norm_target.setter
    def norm_target(self, tensors: list[Tensor]) -> None:
        self._norm_target = tensors

    @property
    def norm_weights(self) -> list[Tensor]:
        """The weights a trust ratio compares with: the params unless a part sets others."""
        return self.params if self._norm_weights is None else self._norm_weights

    @norm_weights.setter
    def norm_weights(self, tensors: list[Tensor]) -> None:
        self._norm_weights = tensors

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Each param's shape: of the full tensor where the bucket holds shards (FSDP2), so a
        part whose numbers depend on a param's shape (Muon's lr ratio) reads it here."""
        return [tuple(p.shape) for p in self.params]

    @property
    def device(self) -> torch.device:
        """The device of the bucket's params (one per bucket)."""
        return self.params[0].device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the bucket's params (one per bucket)."""
        return self.params[0].dtype

    def blocks(self, limit_bytes: int | None = None) -> list[Bucket]:
        """The bucket cut into blocks of consecutive params, each holding at most
        ``limit_bytes`` (default :data:`CPU_BLOCK_BYTES`) per list (a bigger param is a block
        of its own), for an eager step on the CPU: the executor runs all the parts over one
        block before the next, so that the block's params, grads, state and temporaries stay
        in the cache from one part's pass to the next. Every part treats each param on its
        own, so the result is the same."""
        spans = self.spans(limit_bytes)
        return [self] if len(spans) == 1 else [self.slice(i, j) for i, j in spans]

    def spans(self, limit_bytes: int | None = None) -> list[tuple[int, int]]:
        """``(start, stop)`` of consecutive params holding at most ``limit_bytes`` per list (a
        bigger param alone; default :data:`CPU_BLOCK_BYTES`)."""
        limit_bytes = CPU_BLOCK_BYTES if limit_bytes is None else limit_bytes
        limit = limit_bytes // self.params[0].element_size()
        return block_ranges([p.numel() for p in self.params], limit)

    def select(self, indices: Sequence[int]) -> Bucket:
        """A bucket of the tensors at ``indices`` only: params, grads, state and which of them
        created state (no fields)."""
        pick = lambda tensors: [tensors[i] for i in indices]
        position = {old: new for new, old in enumerate(indices)}
        created = {name: [position[k] for k in made if k in position]
                   for name, made in self.created.items()}
        return Bucket(
            pick(self.params), pick(self.grads),
            {name: pick(tensors) for name, tensors in self.state.items()},
            {name: made for name, made in created.items() if made},
        )

    def slice(self, start: int, stop: int) -> Bucket:
        """:meth:`select` of the consecutive tensors ``start:stop`` (list slices: the cache
        blocks of every eager CPU step are cut so)."""
        created = self.created
        if any(created.values()):
            return self.select(range(start, stop))
        return Bucket(self.params[start:stop], self.grads[start:stop],
                      {name: tensors[start:stop] for name, tensors in self.state.items()}, {})

    # The per-step fields as set (not as read: ``update`` unset reads as ``grads``), in the
    # order :meth:`carried` gives them and :meth:`carry` takes them.
    _CARRIED = ("grads", "_update", "first_moment", "second_moment", "step_size",
                "_norm_target", "_norm_weights", "weight_norms", "update_norms")

    def carried(self) -> tuple:
        """The per-step fields as set, for another bucket over the same tensors to go on from
        (a compiled segment hands them to the next part, see ``core/whole.py``)."""
        return tuple(getattr(self, name) for name in self._CARRIED)

    def carry(self, fields: tuple) -> None:
        """Set the per-step fields from another bucket's :meth:`carried`."""
        for name, value in zip(self._CARRIED, fields, strict=True):
            setattr(self, name, value)

    # ------------------------------------------------------------ step counts
    def increment_steps(self) -> None:
        """Add 1 to every tensor's ``step`` state, in one foreach op."""
        steps = self.state["step"]
        if steps[0].is_cpu:
            # A tensor scalar avoids wrapping ``1`` again for every tensor on the slow CPU path.
            torch._foreach_add_(steps, _ONE, alpha=1.0)
        else:
            torch._foreach_add_(steps, 1)
        self._steps = None

    def forget_steps(self) -> None:
        """Read the step counts again at the next ``steps`` (another bucket over the same
        tensors, a block, counted them)."""
        self._steps = None

    @property
    def steps(self) -> Tensor:
        """The step count of each tensor, as a 1-D float64 CPU tensor."""
        if self._steps is None:
            self._steps = torch.stack(self.state["step"]).to("cpu", torch.float64)
        return self._steps

    # ------------------------------------------------------ per-tensor reductions
    # Every per-tensor reduction of a part goes through these, so that each execution mode
    # computes it its own way: here one foreach call over all the lists; over a flat buffer a
    # row reduction (:class:`optimkit.core.flat.FlatBucket`), inside the compiled graph when
    # compiling. A sharded bucket overrides :meth:`_total` to add up its shards' partial sums
    # (one collective for all the lists of a call).

    @property
    def count(self) -> int:
        """The number of params in the bucket (one per list entry here; a flat bucket holds
        them all in one entry)."""
        return len(self.params)

    def sum_squares(self, *lists: Sequence[Tensor]) -> Tensor:
        """``sum(x**2)`` of each param's tensor in each list, as a ``[len(lists), count]``
        tensor on the bucket's device (each list aligned with the bucket)."""
        return self._total(self._local_sum_squares(*lists))

    def _local_sum_squares(self, *lists: Sequence[Tensor]) -> Tensor:
        return self._powsums(*lists)

    def sum_squares_and_sizes(self, *lists: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """:meth:`sum_squares` of ``lists`` and :meth:`sizes`, in one reduction (one
        collective when sharded): with a 0/1 mask, how many elements of each tensor it keeps
        and of how many (the cautious mask)."""
        sums = self._local_sum_squares(*lists)
        local = torch.cat([sums, self._local_sizes()[None].to(sums.dtype)])
        total = self._total(local)
        return total[:-1], total[-1]

    def norms(self, *lists: Sequence[Tensor]) -> Tensor:
        """The L2 norm of each param's tensor in each list, ``[len(lists), count]``: row ``i``
        holds the norms of ``lists[i]``. One reduction (one collective when sharded) for all."""
        return self.sum_squares(*lists).sqrt()

    def dots(self, *pairs: tuple[Sequence[Tensor], Sequence[Tensor]]) -> Tensor:
        """``sum(a * b)`` of each param's tensors in each pair of lists, ``[len(pairs), count]``.
        No temporaries: a pair of one list with itself is a ``torch._foreach_powsum`` (all of
        them in one call), another pair a ``torch.dot`` per tensor. (``torch._foreach_mm`` of
        ``[1, n] x [n, 1]`` views, the batched form, took 3x as long on the CPU: 16 ms
        against 5 ms on W1 and W2, one thread.)"""
        squares = [left for left, right in pairs if left is right]
        powsums = iter(self._powsums(*squares).unbind()) if squares else None
        rows = [
            next(powsums) if left is right else torch.stack(
                [torch.dot(a.reshape(-1), b.reshape(-1)) for a, b in zip(left, right,
                                                                          strict=True)])
            for left, right in pairs
        ]
        return self._total(torch.stack(rows))

    def sizes(self) -> Tensor:
        """The number of elements of each param's full tensor, ``[count]`` in the bucket's
        dtype on its device (sharded: the shards' sizes added up, through :meth:`_total`;
        :meth:`sum_squares_and_sizes` takes them with other sums in one reduction)."""
        return self._total(self._local_sizes()[None])[0]

    def _local_sizes(self) -> Tensor:
        return torch.tensor([float(p.numel()) for p in self.params], dtype=self.dtype,
                            device=self.device)

    def _powsums(self, *lists: Sequence[Tensor]) -> Tensor:
        flat = [t for tensors in lists for t in tensors]
        if not flat:
            sums = self.params[0].new_zeros(0)
        elif torch.compiler.is_compiling():
            # dynamo cannot trace _foreach_powsum (torch 2.13); inductor fuses these reductions
            sums = torch.stack([t.square().sum() for t in flat])
        else:
            sums = torch.stack(torch._foreach_powsum(flat, 2))
        return sums.view(len(lists), -1)

    def _total(self, sums: Tensor) -> Tensor:
        """The per-param sums of this bucket's tensors: the local ones, unless sharded."""
        return sums

    def expand(self, values: Tensor) -> list[Tensor]:
        """Per-param numbers (a ``[count]`` tensor, e.g. trust ratios) as operands of foreach ops
        over the bucket's lists: entry ``i`` broadcasts over param ``i``'s tensor
        (``torch._foreach_mul(b.update, b.expand(ratio))``). Here the 0-d entries; no host
        sync."""
        return list(values.unbind())

    def stack(self, scalars: Sequence[Tensor]) -> Tensor:
        """Per-param 0-d state (NovoGrad's layer-wise moment) as one ``[count]`` tensor."""
        return torch.stack(list(scalars))

    def unstack(self, values: Tensor) -> list[Tensor]:
        """The inverse of :meth:`stack`: what ``torch._foreach_copy_`` writes into that state."""
        return list(values.unbind())

    def is_scratch(self, tensors: Sequence[Tensor]) -> bool:
        """Whether ``tensors`` were made by this step's parts, so a part may write them in
        place: not the params, the grads (``p.grad`` itself) or a state list."""
        first = tensors[0]
        return all(first is not other[0] for other in (self.params, self.grads,
                                                      *self.state.values()) if len(other))

    @property
    def ndims(self) -> Tensor:
        """Each param's number of dimensions, a ``[count]`` CPU int64 tensor."""
        return torch.tensor([p.dim() for p in self.params])

    @property
    def at_most_1d(self) -> bool:
        """Whether every param has ndim <= 1 (biases, norm weights), known on the host: a part
        may skip work that ``exclude_1d`` would discard for every tensor."""
        return all(p.dim() <= 1 for p in self.params)


def is_zero(value) -> bool:
    """Whether a hyper-parameter is exactly 0, for a part that skips work then.

    Under ``torch.compile`` a number other than 0 and 1 arrives as a 0-d tensor (so that a
    schedule does not recompile, see ``core/compiled.py``): that is never zero here.
    """
    return isinstance(value, (int, float)) and value == 0


def is_one(value) -> bool:
    """Whether a hyper-parameter is exactly 1 (see :func:`is_zero`)."""
    return isinstance(value, (int, float)) and value == 1


def is_dtensor(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (FSDP2's sharded params).

    No DTensor can exist before ``torch.distributed.tensor`` is imported, so this imports nothing.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The L2 norm of each tensor, as a list of 0-d tensors (one ``torch._foreach_norm`` call).

    Parts take per-tensor norms through :meth:`Bucket.norms`, which knows the execution mode.
    """
    return list(torch._foreach_norm(list(tensors)))


def scalars(values: Tensor | float) -> list[float] | float:
    """A per-tensor scalar vector as foreach ops take it (a plain number passes through).

    Under ``torch.compile`` the values stay in the graph (no ``tolist`` sync, no recompile
    when they change).
    """
    if isinstance(values, Tensor) and values.dim() == 1:
        if torch.compiler.is_compiling():
            if values.numel() == 1:
                # one number (a flat bucket): the ops' Scalar overloads, which inductor fuses
                return values[0].item()
            # 0-d tensors, which inductor fuses into the loops; ScalarList ops of traced
            # values it runs as separate, out-of-place kernels (three param-sized buffers per
            # tensor for Adam, benchmarks/step_memory.py). See addcdiv_ for the one op
            # without a tensor-list form. Realized first: else inductor inlines the math that
            # made them (beta ** t: a double pow per vector of 8) into every elementwise loop.
            realize = torch.ops.prims.inductor_force_stride_order
            return list(realize(values, values.stride()).unbind())
        return values.tolist()
    return values


def addcdiv_(target: Sequence[Tensor], numerators: Sequence[Tensor],
             denominators: Sequence[Tensor], values: list | float) -> None:
    """``torch._foreach_addcdiv_(target, numerators, denominators, values)`` where ``values``
    (from :func:`scalars`) may also be 0-d tensors, as inside a compiled per-tensor step:
    then ``target += values * (numerators / denominators)``, addcdiv's own order, which
    inductor fuses into one loop with no buffer."""
    if isinstance(values, list) and values and isinstance(values[0], Tensor):
        if target[0].is_cpu:
            quotients = torch._foreach_mul(numerators, values)
            torch._foreach_div_(quotients, denominators)
        else:
            quotients = torch._foreach_div(numerators, denominators)
            torch._foreach_mul_(quotients, values)
        torch._foreach_add_(target, quotients)
    else:
        torch._foreach_addcdiv_(target, numerators, denominators, values)


def sigmoid_(tensors: Sequence[Tensor]) -> None:
    """``torch._foreach_sigmoid_``; inside a compiled graph, each tensor's own ``sigmoid_``:
    inductor has no lowering for the foreach form and would run it as a separate aten kernel
    (a pass over memory and a temporary of its own)."""
    if torch.compiler.is_compiling():
        for t in tensors:
            t.sigmoid_()
    else:
        torch._foreach_sigmoid_(list(tensors))


def debias(betas, t: Tensor):
    """Adam's bias corrections per tensor: ``(1 - beta1**t, 1 - beta2**t)`` for step counts ``t``.

    A moving average that starts at zero is too small by these factors after ``t`` steps
    (Kingma & Ba 2014, §3); parts divide by them (or their square roots).
    """
    return 1 - betas[0] ** t, 1 - betas[1] ** t


def _lerp_one(start: Tensor, end: Tensor, weight) -> Tensor:
    # start + w * (end - start) as one multiply-add (addcmul), which eager
    # kernels fuse as the lerp kernel does for |w| < 0.5: under inductor the same arithmetic
    # as a product then a sum, but where a graph runs aten kernels (the eager backend) it
    # rounds as eager mode (a product then a sum was an ulp off in 1 element of 10: AdEMAMix's
    # slow average, Muon's momentum). Weights of 0.5 or more (lerp's other form) may still
    # differ by an ulp: emulating that form costs a select per element.
    diff = end - start
    if isinstance(weight, Tensor):
        return start.addcmul(weight, diff)
    return start + weight * diff


def lerp(start, end, weights):
    """``torch._foreach_lerp(start, end, weights)``; inside a compiled graph,
    ``start + w * (end - start)`` per tensor: inductor has no lowering for the foreach form
    with a weight per tensor (0-d tensors, a flat bucket's column) and would run it as
    separate aten kernels (5x the step time of MARS on the CPU), and dynamo cannot trace it
    with a traced number (``scalars`` of a flat bucket)."""
    if torch.compiler.is_compiling():
        weights = weights if isinstance(weights, list) else [weights] * len(start)
        return [_lerp_one(s, e, w) for s, e, w in zip(start, end, weights, strict=True)]
    return torch._foreach_lerp(start, end, weights)


def lerp_(target, end, weights) -> None:
    """In-place :func:`lerp`: ``target += w * (end - target)``."""
    if torch.compiler.is_compiling():
        weights = weights if isinstance(weights, list) else [weights] * len(target)
        for t, e, w in zip(target, end, weights, strict=True):
            if isinstance(w, Tensor):  # the in-place forms of _lerp_one's
                t.addcmul_(w, e - t)
            else:
                t.add_(w * (e - t))
    else:
        torch._foreach_lerp_(target, end, weights)


def per_tensor(b, values):
    """Per-param numbers (``[count]``) as operands of foreach ops over the bucket's lists: for
    a bucket of one tensor per param with the numbers on the CPU, a scalar list (floats, the
    fast ``ScalarList`` ops; 0-d tensors when compiled); else ``b.expand``'s tensors (a flat
    bucket's column)."""
    if values.device.type == "cpu" and len(b.params) == b.count:
        return scalars(values)
    return b.expand(values.to(device=b.device, dtype=b.dtype))
