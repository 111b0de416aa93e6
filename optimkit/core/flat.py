"""Flat mode: each (param group, device, dtype) bucket held in one contiguous buffer.

With ``flat=True`` an optimizer copies the params of a bucket into one flat buffer and makes
every ``p.data`` a view into it; the grads (``p.grad``) and every param-sized state tensor
are views into flat buffers of their own, and per-param 0-d state (the ``step`` counters,
NovoGrad's layer-wise moment) into one 1-D buffer. ``optimizer.state[p]`` holds these views,
so the ordinary per-tensor path, ``state_dict`` and everything else see per-param tensors as
usual.

Gradients keep torch's semantics, so flat mode steps exactly the params eager mode steps: a
param whose ``p.grad`` is None is skipped. ``zero_grad()`` (``set_to_none=True``) sets every
grad to None; the next backward creates fresh grads and the step copies them into the grad
buffer (one copy per param) and points ``p.grad`` at its view again. With
``zero_grad(set_to_none=False)`` the views stay, backward accumulates into them in place and
no copy is needed; as in eager mode, a param that then gets no gradient steps with a zero one.

Each param starts at a multiple of :data:`CHUNK` elements (the gap is zero padding), so the
buffers can be viewed as ``[rows, CHUNK]`` with every row inside one param. When every param
of the bucket has its grad and all step counters agree, the recipe runs once over a bucket of
ONE such ``[rows, CHUNK]`` tensor per list: a handful of kernels whatever the number of params
(like DDP's ``gradient_as_bucket_view`` and apex's contiguous buffers). Per-param reductions
(:meth:`FlatBucket.sum_squares`: LARS, LAMB, NovoGrad) are then row reductions plus a small
sum of each param's rows, and a per-param number reaches the elements as a ``[rows, 1]``
column that broadcasts (:meth:`FlatBucket.expand`): no per-element segment ids, no
temporaries (the repository's benchmark of the alternatives:
https://github.com/optimkit/optimkit/blob/main/benchmarks/segmented.py). Otherwise (a grad
is None, a param joined late, a part that reads each param's shape) the step falls back to the
per-tensor path over the views, which gives the same result.

Params frozen when flat mode starts, and tied params, stay out of the buffers and step per
tensor when they get a grad. Tied means sharing storage with another param of the optimizer
(any group): weight tying done as ``b.data = a.data``, a view ``b.data = a.data[0]``, one
Parameter listed twice. Copying one of them into a buffer would untie it (``p.data`` then
points at the buffer, its twin at the old storage): kept out, they step one after the other,
each seeing the other's update, and stay tied, as in eager mode (``core/executor.py``). A tie
made after flat mode started (``b.data = a.data`` on params already in the buffers) is not
seen.

A copy of the store (``copy.deepcopy`` or pickling of the model and the optimizer together)
points its params and grads at its own buffers again (:meth:`FlatStore.__setstate__`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .policy import Layout
from .tensorlists import CPU_BLOCK_BYTES, Bucket, block_ranges

# Row length of the flat layout, in elements. Short rows waste little padding (half a row per
# param on average: 1 % of a bucket of 2,000 params of 1-5k elements) and keep the row sums
# accurate; longer rows mean fewer row sums to add up per param.
CHUNK = 64


class FlatBucket(Bucket):
    """A bucket of one ``[rows, CHUNK]`` tensor per list, holding all its params, each from the
    start of a row; all its params share one step count.

    ``layout`` (tensors on the bucket's device): ``row_param`` (the param of each row),
    ``row_valid`` (the elements of each row that belong to it: ``CHUNK`` except in a param's
    last row), ``bounds`` (param ``i`` owns rows ``bounds[i]:bounds[i + 1]``), ``ndims`` (of
    each param) and ``partial`` (the rows that end in padding).
    """

    __slots__ = ("layout", "row_param", "row_valid", "bounds", "_ndims", "partial", "_blocks",
                 "_gaps", "_at_most_1d")

    def __init__(self, params, grads, state, created, layout: tuple[Tensor, ...],
                 blocks: tuple = (), gaps: tuple[int, ...] | None = None,
                 at_most_1d: bool = False):
        super().__init__(params, grads, state, created)
        # every param of the bucket has ndim <= 1 (False where unknown: inside a compiled step)
        self._at_most_1d = at_most_1d
        self.layout = layout
        self.row_param, self.row_valid, self.bounds, self._ndims, self.partial = layout
        # ((first param, end param, first row, end row, layout, gaps), ...): the eager CPU blocks
        self._blocks = blocks
        # eager, a bucket of few params: (size, padding, size, padding, ...) of each flat tensor
        self._gaps = gaps

    def blocks(self, limit_bytes: int | None = None) -> list[Bucket]:
        """Row ranges holding whole params, at most :data:`CPU_BLOCK_BYTES` per list (as
        ``Bucket.blocks``): views of the buffers, with their own layouts, cut when the store
        was made (``limit_bytes`` is not read)."""
        if len(self._blocks) < 2:
            return [self]
        out = []
        for p0, p1, r0, r1, layout, gaps, at_most_1d in self._blocks:
            cut = lambda t, p0=p0, p1=p1, r0=r0, r1=r1: t[p0:p1] if t.dim() == 1 else t[r0:r1]
            out.append(FlatBucket(
                [cut(t) for t in self.params], [cut(t) for t in self.grads],
                {name: [cut(t) for t in tensors] for name, tensors in self.state.items()}, {},
                layout, gaps=gaps, at_most_1d=at_most_1d,
            ))
        return out

    @property
    def steps(self) -> Tensor:
        if self._steps is None:
            self._steps = self.state["step"][0][:1].to("cpu", torch.float64)
        return self._steps

    @property
    def count(self) -> int:
        return self.bounds.shape[0] - 1

    @property
    def ndims(self) -> Tensor:
        return self._ndims

    @property
    def at_most_1d(self) -> bool:
        return self._at_most_1d

    # The reductions: sums over each row (one pass over the buffer, fused by inductor into the
    # pass that computes the operand), then each param's rows added up.
    def _local_sum_squares(self, *lists) -> Tensor:
        if self._gaps is not None and not torch.compiler.is_compiling():
            return self._powsums(*(self._views(tensors) for tensors in lists))
        rows = [self._row_sums(t, t) for tensors in lists for t in tensors]
        return self._per_param(rows)

    def dots(self, *pairs) -> Tensor:
        if self._gaps is not None and not torch.compiler.is_compiling():
            views: dict[int, list[Tensor]] = {}  # a list paired with itself stays one list

            def view(tensors):
                if id(tensors) not in views:
                    views[id(tensors)] = self._views(tensors)
                return views[id(tensors)]

            return super().dots(*((view(a), view(b)) for a, b in pairs))
        rows = [self._row_sums(a, b) for left, right in pairs
                for a, b in zip(left, right, strict=True)]
        return self._total(self._per_param(rows))

    def _local_sizes(self) -> Tensor:
        # each param's valid elements: its rows' row_valid added up (no padding)
        return self._per_param([self.row_valid.to(self.dtype)])[0]

    def _views(self, tensors) -> list[Tensor]:
        """Each param's elements of each flat tensor, as 1-D views (few params: eager only)."""
        return [view for t in tensors
                for view in torch.split_with_sizes(t.view(-1), self._gaps)[::2]]

    def _row_sums(self, a: Tensor, b: Tensor) -> Tensor:
        """``sum(a * b)`` over the valid elements of each row (the padding may hold anything)."""
        if torch.compiler.is_compiling():
            columns = torch.arange(a.shape[1], device=a.device)
            return torch.where(columns < self.row_valid[:, None], a * b, 0).sum(1)
        if a is b:  # no squared copy
            sums = torch.linalg.vector_norm(a, dim=1).square_()
        else:
            sums = torch.linalg.vecdot(a, b, dim=1)
        # the rows that end in padding, again, masked (one per param at most: a small gather)
        partial = self.partial
        columns = torch.arange(a.shape[1], device=a.device)
        mask = columns < self.row_valid[partial, None]
        sums[partial] = torch.where(mask, a[partial] * b[partial], 0).sum(1)
        return sums

    def _per_param(self, rows: list[Tensor]) -> Tensor:
        """``[k, count]``: each param's row sums added up, in float64 (the small params keep
        their digits). Compiled, a param's rows being consecutive, as the difference of the
        running sum at its two bounds: 3x faster than ``index_add_`` over the rows, whose
        atomic adds inductor emits on the CPU. Eager, ``index_add_`` is the fewer kernels."""
        stacked = torch.stack(rows)
        if stacked.device.type == "mps":  # no float64 there
            out = stacked.new_zeros(stacked.shape[0], self.count)
            return out.index_add_(1, self.row_param, stacked)
        if not torch.compiler.is_compiling():
            out = torch.zeros(stacked.shape[0], self.count, dtype=torch.float64,
                              device=stacked.device)
            return out.index_add_(1, self.row_param, stacked.double()).to(stacked.dtype)
        running = F.pad(stacked.double().cumsum(1), (1, 0))
        return (running[:, self.bounds[1:]] - running[:, self.bounds[:-1]]).to(stacked.dtype)

    def expand(self, values: Tensor) -> list[Tensor]:
        """Per-param numbers as a ``[rows, 1]`` column, which broadcasts over the rows."""
        if not torch.compiler.is_compiling():
            return [values[self.row_param].unsqueeze(1)]
        # Buffers of their own, the numbers and then one per row: inductor would otherwise
        # inline the math that made the numbers (square roots, divisions) and the gather with
        # its bounds check into the elementwise loop, once per vector of 8.
        realize = torch.ops.prims.inductor_force_stride_order
        values = realize(values, values.stride())
        column = values[self.row_param].unsqueeze(1)
        return [realize(column, column.stride())]

    def stack(self, scalars) -> Tensor:
        (flat,) = scalars  # the 1-D buffer of one number per param
        return flat

    def unstack(self, values: Tensor) -> list[Tensor]:
        return [values]


class FlatStore:
    """The flat buffers of one bucket: params, grads and state, with per-param views."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.sizes = [p.numel() for p in params]
        rows = [-(-n // CHUNK) for n in self.sizes]  # ceil: each param from a row's start
        self.rows = sum(rows)
        self.total = self.rows * CHUNK
        self.starts = [CHUNK * r for r in _running_sum(rows)[:-1]]
        first = params[0]
        device = first.device
        row_param = torch.repeat_interleave(torch.arange(len(params)), torch.tensor(rows))
        row_valid = torch.full((self.rows,), CHUNK, dtype=torch.long)
        bounds = torch.tensor(_running_sum(rows))
        for i, n in enumerate(self.sizes):
            if n:
                row_valid[bounds[i + 1] - 1] = n - (rows[i] - 1) * CHUNK
        ndims = torch.tensor([p.dim() for p in params])
        self.at_most_1d = bool((ndims <= 1).all())
        self.layout = _layout(row_param, row_valid, bounds, ndims, device)
        self.gaps = _gaps(self.sizes, rows)
        # eager CPU steps run over blocks of whole params (see Bucket.blocks)
        self.blocks: tuple = ()
        if device.type == "cpu":
            limit = CPU_BLOCK_BYTES // first.element_size()
            ranges = block_ranges([r * CHUNK for r in rows], limit)
            if len(ranges) > 1:
                self.blocks = tuple(
                    (p0, p1, int(bounds[p0]), int(bounds[p1]), _layout(
                        row_param[bounds[p0]:bounds[p1]] - p0, row_valid[bounds[p0]:bounds[p1]],
                        bounds[p0:p1 + 1] - bounds[p0], ndims[p0:p1], device),
                     _gaps(self.sizes[p0:p1], rows[p0:p1]), bool((ndims[p0:p1] <= 1).all()))
                    for p0, p1 in ranges
                )
        with torch.no_grad():
            self.param = self._flat_copy([p.detach() for p in params], first.dtype)
            self.grad = torch.zeros(self.total, dtype=first.dtype, device=device)
            for p, view in zip(params, self._views(self.param), strict=True):
                p.data = view
            self.grad_views = self._views(self.grad)
            self.grads_in_place()
        # state name -> flat buffer (param-sized, or one entry per param for 0-d state).
        self.state: dict[str, Tensor] = {}
        # names of the state that is one 0-d tensor per param (the step counters)
        self.scalar_state: set[str] = set()

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [flat[start:start + n].view_as(p)
                for start, n, p in zip(self.starts, self.sizes, self.params, strict=True)]

    def _flat_copy(self, per_param: list[Tensor], dtype: torch.dtype) -> Tensor:
        """A zero-padded flat buffer holding ``per_param`` at the params' places."""
        flat = torch.zeros(self.total, dtype=dtype, device=self.params[0].device)
        torch._foreach_copy_(self._views(flat), per_param)
        return flat

    def rows_view(self, flat: Tensor) -> Tensor:
        return flat.view(self.rows, CHUNK)

    # A deepcopy or an unpickled copy gives each param storage of its own (``Parameter``'s
    # deepcopy clones, plain pickling copies every storage): point them back at the buffer.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "grad_views"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "at_most_1d" not in state:  # pickled before the stores knew it
            self.at_most_1d = False
            self.blocks = tuple((*block, False) for block in self.blocks)
        with torch.no_grad():
            for p, view in zip(self.params, self._views(self.param), strict=True):
                if not _is_view_of(p, self.param):
                    p.data = view  # equal values: they were views when copied
            self.grad_views = self._views(self.grad)
            self.grads_in_place()

    # ------------------------------------------------------------------ state
    def adopt(self, name: str, per_param: list[Tensor], layout: Layout | None) -> list[Tensor]:
        """Move per-param state tensors into one flat buffer, as their declared ``layout``
        says; return the views to store. A state of its own shape (a factor, the block scales
        of 8-bit state), or of no known layout, stays per param: the flat layout is the
        params'. A param-shaped state whose tensors are not their params' shape stays too:
        nothing is re-viewed from an element count."""
        first = per_param[0]
        if layout is Layout.SCALAR:
            if not all(t.dim() == 0 for t in per_param):
                return list(per_param)
        elif layout is not Layout.PARAM or any(
            t.shape != p.shape for t, p in zip(per_param, self.params, strict=True)
        ):
            return list(per_param)
        if layout is Layout.SCALAR:
            flat = torch.stack([t.detach() for t in per_param])
            views = list(flat.unbind())
            self.scalar_state.add(name)
        else:
            flat = self._flat_copy([t.detach() for t in per_param], first.dtype)
            views = self._views(flat)
            self.scalar_state.discard(name)
        self.state[name] = flat
        return views

    def absorb(self, all_state: Mapping[Tensor, dict[str, Any]], names: list[str],
               layouts: Mapping[str, Layout]) -> None:
        """Move the state named ``names`` into flat buffers once every param of the bucket has it.

        Runs after a per-tensor step, so state created there (with its first-step values)
        becomes flat; a state that some param still lacks stays per tensor until it has it.
        ``layouts`` declares how each state lines up with its param (see :meth:`adopt`).
        """
        for name in names:
            layout = layouts.get(name)
            if layout not in (Layout.PARAM, Layout.SCALAR):
                continue  # stays per param
            states = [all_state.get(p, {}) for p in self.params]
            tensors = [s.get(name) for s in states]
            if any(t is None for t in tensors):
                continue
            flat = self.state.get(name)
            if flat is not None and all(_is_view_of(t, flat) for t in tensors):
                continue
            for s, view in zip(states, self.adopt(name, tensors, layout), strict=True):
                s[name] = view

    def readopt(self, all_state: Mapping[Tensor, dict[str, Any]],
                layouts: Mapping[str, Layout]) -> None:
        """After ``load_state_dict`` replaced the state tensors: copy them back into buffers
        (``layouts`` as in :meth:`absorb`)."""
        self.state = {}
        self.scalar_state = set()
        names = set().union(*(all_state[p].keys() for p in self.params if p in all_state))
        for name in names:
            states = [all_state.get(p, {}) for p in self.params]
            if not all(isinstance(s.get(name), Tensor) for s in states):
                continue  # some params lack it: those keep their loaded tensors
            per_param = [s[name] for s in states]
            for s, view in zip(states, self.adopt(name, per_param, layouts.get(name)),
                               strict=True):
                s[name] = view

    # ------------------------------------------------------------------ step
    def grads_in_place(self) -> bool:
        """Copy fresh grads into their views and point ``p.grad`` there; False if some param
        has no grad this step. (Sparse grads are refused before any store steps.)"""
        ok = True
        fresh, views = [], []
        for p, view in zip(self.params, self.grad_views, strict=True):
            grad = p.grad
            if grad is view:
                continue
            if grad is None or grad.is_sparse:
                ok = False
                continue
            fresh.append(grad)
            views.append(view)
            p.grad = view
        if fresh:
            torch._foreach_copy_(views, fresh)
        return ok

    def bucket(self, names: list[str]) -> FlatBucket | None:
        """The one-tensor bucket, or None when the flat step would not match per-tensor steps."""
        state = {}
        for name in names:
            flat = self.state.get(name)
            if flat is None:
                return None
            if name in self.scalar_state:
                if name == "step" and len(self.params) > 1 and not bool((flat == flat[0]).all()):
                    return None  # params joined at different steps
                state[name] = [flat]
            else:
                state[name] = [self.rows_view(flat)]
        return FlatBucket(
            [self.rows_view(self.param)], [self.rows_view(self.grad)], state, {}, self.layout,
            self.blocks, self.gaps, self.at_most_1d,
        )


def _is_view_of(t: Tensor, flat: Tensor) -> bool:
    return t.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()


# Up to this many params, an eager flat bucket takes its per-param sums over views of each
# param's elements (one foreach call: no row sums, no masking); beyond, the per-tensor cost of
# foreach ops outweighs the row reduction's (a 4 MiB block: 12 params 180 us vs 400 us, 330
# params 1250 us vs 490 us, one thread).
FEW_PARAMS = 64


def _gaps(sizes: list[int], rows: list[int]) -> tuple[int, ...] | None:
    if len(sizes) > FEW_PARAMS:
        return None
    return tuple(n for size, r in zip(sizes, rows, strict=True) for n in (size, r * CHUNK - size))


def _layout(row_param, row_valid, bounds, ndims, device) -> tuple[Tensor, ...]:
    partial = (row_valid < CHUNK).nonzero().squeeze(1)  # the rows that end in padding
    return tuple(t.to(device) for t in (row_param, row_valid, bounds, ndims, partial))


def _running_sum(counts: list[int]) -> list[int]:
    out = [0]
    for n in counts:
        out.append(out[-1] + n)
    return out
