"""Flat mode: each (param group, device, dtype) bucket held in one contiguous buffer.

With ``flat=True`` an optimizer copies the params of a bucket into one flat buffer and makes
every ``p.data`` a view into it; the grads (``p.grad``) and every param-sized state tensor
are views into flat buffers of their own, and per-param 0-d state (the ``step`` counters) into
one 1-D buffer. ``optimizer.state[p]`` holds these views, so the ordinary per-tensor path,
``state_dict`` and everything else see per-param tensors as usual.

Gradients keep torch's semantics, so flat mode steps exactly the params eager mode steps: a
param whose ``p.grad`` is None is skipped. ``zero_grad()`` (``set_to_none=True``) sets every
grad to None; the next backward creates fresh grads and the step copies them into the grad
buffer (one copy per param) and points ``p.grad`` at its view again. With
``zero_grad(set_to_none=False)`` the views stay, backward accumulates into them in place and
no copy is needed; as in eager mode, a param that then gets no gradient steps with a zero one.

When every param of the bucket has its grad and all step counters agree, the recipe
runs once over a bucket of ONE tensor per list: a handful of kernels whatever the number of
params (like DDP's ``gradient_as_bucket_view`` and apex's contiguous buffers). Per-tensor norms
become segmented reductions (:meth:`FlatBucket.norms`). Otherwise (a grad is None, a param
joined late, a part keeps other per-param state) the step falls back to the per-tensor path
over the views, which gives the same result.

A copy of the store (``copy.deepcopy`` or pickling of the model and the optimizer together)
points its params and grads at its own buffers again (:meth:`FlatStore.__setstate__`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .tensorlists import Bucket


class FlatBucket(Bucket):
    """A bucket of one flat tensor per list, holding the params of ``sizes`` (numels) back to
    back; all its params share one step count."""

    __slots__ = ("lengths", "sizes")

    def __init__(self, params, grads, state, created, lengths: Tensor, sizes: tuple[int, ...]):
        super().__init__(params, grads, state, created)
        self.lengths = lengths  # the sizes as a CPU int64 tensor
        self.sizes = sizes

    @property
    def steps(self) -> Tensor:
        if self._steps is None:
            self._steps = self.state["step"][0][:1].to("cpu", torch.float64)
        return self._steps

    def norms(self, tensors) -> Tensor:
        """One norm per param over its slice of each flat tensor, spread back over the slice's
        elements, so that the elementwise math of the parts that follow is per param."""
        return torch.stack([self._segment_norms(t) for t in tensors])

    def _segment_norms(self, flat: Tensor) -> Tensor:
        device_lengths = self.lengths.to(flat.device)
        if torch.compiler.is_compiling():
            # one reduction op: splitting would unroll the graph over every param
            squares = torch.segment_reduce(flat * flat, "sum", lengths=device_lengths)
            per_param = squares.sqrt()
        else:
            # views of the buffer, no squared copy
            per_param = torch.stack(torch._foreach_norm(list(flat.split(self.sizes))))
        return per_param.repeat_interleave(device_lengths, output_size=flat.numel())


class FlatStore:
    """The flat buffers of one bucket: params, grads and state, with per-param views."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.sizes = [p.numel() for p in params]
        self.total = sum(self.sizes)
        self.lengths = torch.tensor(self.sizes, dtype=torch.long)
        first = params[0]
        with torch.no_grad():
            self.param = torch.cat([p.detach().reshape(-1) for p in params])
            self.grad = torch.zeros(self.total, dtype=first.dtype, device=first.device)
            for p, view in zip(params, self._views(self.param), strict=True):
                p.data = view
            self.grad_views = self._views(self.grad)
            self.grads_in_place()
        # state name -> flat buffer (param-sized, or one entry per param for 0-d state).
        self.state: dict[str, Tensor] = {}
        # names of the state that is one 0-d tensor per param (the step counters)
        self.scalar_state: set[str] = set()

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [v.view_as(p) for v, p in zip(flat.split(self.sizes), self.params, strict=True)]

    # A deepcopy or an unpickled copy gives each param storage of its own (``Parameter``'s
    # deepcopy clones, plain pickling copies every storage): point them back at the buffer.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "grad_views"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        with torch.no_grad():
            for p, view in zip(self.params, self._views(self.param), strict=True):
                if not _is_view_of(p, self.param):
                    p.data = view  # equal values: they were views when copied
            self.grad_views = self._views(self.grad)
            self.grads_in_place()

    # ------------------------------------------------------------------ state
    def adopt(self, name: str, per_param: list[Tensor]) -> list[Tensor]:
        """Move per-param state tensors into one flat buffer; return the views to store."""
        first = per_param[0]
        if all(t.dim() == 0 for t in per_param):
            flat = torch.stack([t.detach() for t in per_param])
            views = list(flat.unbind())
            self.scalar_state.add(name)
        else:
            flat = torch.cat([t.detach().reshape(-1) for t in per_param]).to(first.dtype)
            # each view takes its own tensor's shape: param-sized state, or state with its own
            # size per param (a precision policy's per-block scales of 8-bit state)
            sizes = [t.numel() for t in per_param]
            views = [v.view(t.shape) for v, t in zip(flat.split(sizes), per_param, strict=True)]
            self.scalar_state.discard(name)
        self.state[name] = flat
        return views

    def absorb(self, all_state: Mapping[Tensor, dict[str, Any]], names: list[str]) -> None:
        """Move the state named ``names`` into flat buffers once every param of the bucket has it.

        Runs after a per-tensor step, so state created there (with its first-step values)
        becomes flat; a state that some param still lacks stays per tensor until it has it.
        """
        for name in names:
            states = [all_state.get(p, {}) for p in self.params]
            tensors = [s.get(name) for s in states]
            if any(t is None for t in tensors):
                continue
            flat = self.state.get(name)
            if flat is not None and all(_is_view_of(t, flat) for t in tensors):
                continue
            for s, view in zip(states, self.adopt(name, tensors), strict=True):
                s[name] = view

    def readopt(self, all_state: Mapping[Tensor, dict[str, Any]]) -> None:
        """After ``load_state_dict`` replaced the state tensors: copy them back into buffers."""
        self.state = {}
        self.scalar_state = set()
        names = set().union(*(all_state[p].keys() for p in self.params if p in all_state))
        for name in names:
            states = [all_state.get(p, {}) for p in self.params]
            if not all(isinstance(s.get(name), Tensor) for s in states):
                continue  # some params lack it: those keep their loaded tensors
            for s, view in zip(states, self.adopt(name, [s[name] for s in states]), strict=True):
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
                if name != "step":
                    return None  # other per-param scalars: run per tensor
                if len(self.params) > 1 and not bool((flat == flat[0]).all()):
                    return None  # params joined at different steps
            state[name] = [flat]
        return FlatBucket([self.param], [self.grad], state, {}, self.lengths, tuple(self.sizes))


def _is_view_of(t: Tensor, flat: Tensor) -> bool:
    return t.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
