"""Reused scratch memory for the eager CPU step over very large params.

An eager step makes its temporaries with out-of-place foreach ops (``torch._foreach_sqrt(v)``,
``torch._foreach_mul(p, ratio)``). On the CPU, glibc's malloc serves every allocation of
32 MiB or more (:data:`MMAP_BYTES`, the ceiling of its dynamic mmap threshold on 64-bit
Linux) with fresh pages from the kernel and gives them back when the tensor dies, so each
such temporary costs a page fault per 4 KiB at its first write, every step: on a 25M-element
float32 param, 55 ms of faults for a 5 ms multiply (one thread). Smaller temporaries come
from malloc's heap and cost nothing of the kind.

:class:`ScratchPool` keeps the buffers of those large temporaries from one step to the next.
While the executor runs a block (``Bucket.blocks``) that holds such a param, a dispatch mode
(:meth:`ScratchPool.reuse`) computes each out-of-place foreach op whose result is that large
into a pooled buffer, per tensor with the op's ``out=`` form (the same kernel as the foreach
op's CPU loop: the same bits). When the block ends every buffer is free again for the next
block. The cost is memory held between steps: the largest block's temporaries, at most the
size of a few of the largest params (``ScratchPool.nbytes``), as a caching allocator holds on
an accelerator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

# glibc mmaps (and so page-faults afresh) every allocation of at least this many bytes: its
# dynamic threshold never rises above 32 MiB on a 64-bit system (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_BYTES = 32 << 20

# The out-of-place foreach ops the parts make temporaries with, by their per-tensor name.
_OPS = frozenset({
    "add", "sub", "mul", "div", "addcmul", "addcdiv", "sqrt", "abs", "neg", "exp", "sigmoid",
    "reciprocal", "maximum", "minimum", "clamp_min", "clamp_max", "lerp", "sign", "pow",
})
# Overloads whose per-tensor arguments are one entry of each list (others run as they are).
_OVERLOADS = frozenset({"default", "Scalar", "List", "ScalarList", "Tensor"})


class ScratchPool:
    """Flat buffers reused for the large temporaries of eager CPU blocks (see the module doc).

    ``nbytes`` is the memory it holds between steps."""

    def __init__(self) -> None:
        self.buffers: list[Tensor] = []
        self._taken: list[int] = []

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers)

    def wanted(self, tensors: list[Tensor]) -> bool:
        """Whether a block of these params makes temporaries the pool should hold."""
        return any(t.numel() * t.element_size() >= MMAP_BYTES for t in tensors)

    @contextlib.contextmanager
    def reuse(self) -> Iterator[None]:
        """Large out-of-place foreach results go to pooled buffers while active; they must
        not outlive it (a block's temporaries do not)."""
        try:
            with _Reuse(self):
                yield
        finally:
            self._taken = []

    def _take(self, like: Tensor) -> Tensor:
        """A free buffer viewed as ``like`` (contiguous), taken until the block ends."""
        numel = like.numel()
        best = None
        for i, buffer in enumerate(self.buffers):
            if (i in self._taken or buffer.dtype != like.dtype or buffer.device != like.device
                    or buffer.numel() < numel):
                continue
            if best is None or buffer.numel() < self.buffers[best].numel():
                best = i
        if best is None:
            # a bigger buffer replaces the free smaller ones: the pool holds what one block needs
            taken = set(self._taken)
            keep = [i for i, b in enumerate(self.buffers)
                    if i in taken or b.dtype != like.dtype or b.device != like.device]
            self._taken = [j for j, i in enumerate(keep) if i in taken]
            self.buffers = [self.buffers[i] for i in keep]
            self.buffers.append(torch.empty(numel, dtype=like.dtype, device=like.device))
            best = len(self.buffers) - 1
        self._taken.append(best)
        return self.buffers[best][:numel].view(like.shape)


class _Reuse(TorchDispatchMode):
    def __init__(self, pool: ScratchPool) -> None:
        super().__init__()
        self.pool = pool

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if (name.startswith("_foreach_") and name[9:] in _OPS
                and func._overloadname in _OVERLOADS and args
                and not (name[9:] in ("addcmul", "addcdiv") and func._overloadname == "Tensor")):
            out = _into_pool(self.pool, name[9:], func, args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def _into_pool(pool: ScratchPool, op: str, func, args, kwargs) -> list[Tensor] | None:
    """The foreach op computed per tensor into pooled buffers, or None where it does not apply
    (small results, mixed dtypes, strided inputs: the op then runs as it is)."""
    first = args[0]
    if not isinstance(first, (list, tuple)) or not first:
        return None
    if not any(t.numel() * t.element_size() >= MMAP_BYTES for t in first):
        return None
    n = len(first)
    schema = func._schema.arguments
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], Tensor):
            if len(value) != n or any(t.dtype != first[0].dtype or not t.is_contiguous()
                                      for t in value):
                return None
    fn = getattr(torch, op)
    outs = []
    for i in range(n):
        positional, named = [], {}
        bound = list(zip(schema, args, strict=False))
        bound += [(a, kwargs[a.name]) for a in schema if a.name in kwargs]
        for arg, value in bound:
            if isinstance(value, (list, tuple)):
                value = value[i]
            if arg.kwarg_only:
                named[arg.name] = value
            elif op in ("addcmul", "addcdiv") and arg.name in ("value", "scalars"):
                named["value"] = value
            else:
                positional.append(value)
        target = first[i]
        if target.numel() * target.element_size() >= MMAP_BYTES:
            out = pool._take(target)
            fn(*positional, **named, out=out)
        else:
            out = fn(*positional, **named)
        outs.append(out)
    return outs
