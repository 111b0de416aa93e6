"""The executor: runs a recipe's parts over an optimizer's param groups, in one of three modes.

An :class:`optimkit.Optimizer` holds the recipe, its state and the torch API; its
:class:`Executor` decides how one ``step()`` runs:

* **eager**: each param group is split into buckets of params sharing a device and a dtype
  (those with a grad this step); the parts run in order over each bucket's tensor lists. The
  bucket lists are cached while the same params have grads and the same state is in use.
* **flat** (``flat=True``): each bucket lives in one contiguous buffer (``core/flat.py``);
  when every param has its grad, the parts run once over a bucket of one tensor per list,
  layer-wise recipes included (their per-param reductions are row reductions there). Recipes
  with a part that reads each param's shape (``shaped``), or steps where some grad is missing,
  run per tensor over the views.
* **compiled** (``compile=True``): the parts of a bucket run inside one ``torch.compile``d
  function (``core/compiled.py``); a step that creates state runs eagerly.

Whatever the mode, one step first validates every gradient of every group (sparse gradients
and complex params are refused) before any param changes, then runs the groups.

**Tied params.** Params that share storage (weight tying done as ``b.data = a.data``, a view
``b.data = a.data[0]``, or one Parameter listed twice in a group, which torch.optim warns
about and steps twice) step one after the other, each as a bucket of its own, in the order
of the groups: each sees the update of the ones before it, as in torch.optim's per-param
(``foreach=False``) loop, and the tie holds. Every mode does this: flat mode keeps them out
of its buffers (copying one into a buffer would untie it; see ``core/flat.py``), and a
compiled step never gets two inputs that alias. Their own state stays per param, as in
torch.optim. Tensors of no elements, and DTensors (FSDP2 owns their storage), are never tied.

A part declared with ``every="k"`` (Lookahead's sync, SOAP's eigenbases) runs after the
others, on the tensors whose step count is a multiple of ``group["k"]`` (or, with
``start=s``, is ``s``, ``s + k``, ``s + 2k``...): decided on the host from the CPU step
counters, and outside the compiled graph, so the compiled step neither recompiles nor breaks
on it and the sync costs nothing on the other steps.

Extension points, for what comes next:

* **Sharded params (DTensor, FSDP2).** :meth:`Executor._bucket` hands the parts the local
  shards of a bucket of DTensors (:class:`~optimkit.core.sharded.ShardedBucket`), eagerly or
  compiled. Flat mode refuses DTensor params: FSDP2 owns their storage.
* **Per-tensor reductions.** Parts ask the bucket: :meth:`Bucket.sum_squares`,
  :meth:`Bucket.norms`, :meth:`Bucket.dots` (eager: one foreach call for all the lists; flat:
  row reductions over the buffer and a small per-param sum; compiled: the same inside the
  graph, fused into the pass that computes the operand), and :meth:`Bucket.expand` to multiply
  each param by its own number. A sharded bucket overrides ``Bucket._total`` to add its
  shards' partial sums in one all-reduce.
* **Precision and memory policies.** :class:`BucketPolicy` is called around the parts of
  every bucket, eagerly and inside the compiled graph: ``prepare`` may materialise state kept
  in another dtype or quantised, ``finalize`` writes it back and applies a param update rule
  (stochastic rounding, Kahan compensation). Set one as ``executor.policy``.
* **Scratch memory.** An eager CPU block holding a param of 32 MiB or more computes its
  out-of-place foreach results into buffers kept between steps (``Executor.scratch``,
  ``core/scratch.py``): fresh ones that large page-fault at every step.
* **Numbers as graph inputs.** ``compiled.SCHEDULED_HYPERS`` lists the hyper-parameters
  passed to the compiled step as tensors (schedules then never recompile).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from torch import Tensor

from . import compiled
from .flat import FlatBucket, FlatStore
from .parts import Init, Part
from .policy import PLAIN, BucketPolicy, Layout
from .recipe import Recipe
from .scratch import ScratchPool
from .sharded import ShardedBucket, shard_key
from .tensorlists import Bucket, is_dtensor

# Flat mode's per-tensor fallback is compiled (with compile=True) up to this many tensors:
# compiling a per-tensor step unrolls over the tensors (~0.25 s of compile each).
PER_TENSOR_COMPILE_MAX = 32
# Above this many tensors in a per-tensor compiled bucket, compiling takes minutes: say so.
MANY_TENSORS = 256
# The random-bit stream of a policy's second write-back in one step (a host-gated part's).
HOST_GATED_STREAM = 1000
# An eager step under a precision policy, off the CPU, runs over blocks of at most this many
# bytes of params (per list): its working copies of the state are one block's (see _blocks).
POLICY_BLOCK_BYTES = 256 << 20


class Executor:
    """Runs one optimizer's recipe over its param groups (see the module doc)."""

    def __init__(self, recipe: Recipe, owner: str, *, flat: bool, compile: bool) -> None:
        self.recipe = recipe
        self.owner = owner
        self.flat = flat
        self.compile = compile
        self.policy: BucketPolicy = PLAIN
        # flat mode: per param group, one store per (device, dtype), and the params kept out
        # of the stores (frozen when flat mode started), stepped per tensor when they get grads
        self.stores: list[list[FlatStore]] = []
        self.loose: list[list[Tensor]] = []
        # eager: param group index -> the last step's buckets, reused while nothing changed
        self._layout: dict[int, _Layout] = {}
        self._warned_many = False
        self._warned_eager_store = False
        # the optimizer state's replacement count when its tensors were last taken in
        self._replaced = 0
        # eager CPU blocks of very large params: their temporaries' buffers, kept between steps
        self.scratch = ScratchPool()

    # The recipe is the class's (it holds functions, which do not pickle): the optimizer puts it
    # back after unpickling. The eager bucket cache is rebuilt on the next step.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "recipe": None, "_layout": {}, "scratch": ScratchPool()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("scratch", ScratchPool())  # pickled before it existed
        self.__dict__.setdefault("_warned_eager_store", False)

    # ------------------------------------------------------------ configuration
    def add_group(self, group: Mapping[str, Any]) -> None:
        """Take in a param group added after construction (flat mode makes its stores)."""
        if self.flat:
            # the storages of the earlier groups: a new param tied to one of theirs stays out
            taken = {storage_of(store.param) for stores in self.stores for store in stores}
            taken.update(storage_of(p) for loose in self.loose for p in loose)
            taken.discard(None)
            self._add_stores(group, tied_storages(group["params"], taken))
        self._layout.clear()

    def set_speed(
        self, groups: Sequence[Mapping[str, Any]], state: Mapping[Tensor, dict],
        compile: bool | None, flat: bool | None,
    ) -> None:
        """Switch flat and compiled modes (``None`` keeps a mode as it is); flat mode cannot be
        turned off once on."""
        if compile and flat is None:
            flat = not any(is_dtensor(p) for group in groups for p in group["params"])
        if flat is not None and bool(flat) != self.flat:
            if not flat:
                raise ValueError("flat: flat mode cannot be turned off once it is on")
            for group in groups:
                self._check_flat(group)
            self.flat = True
            self.stores, self.loose = [], []
            # over all the groups at once: a param tied to one of a later group stays out too
            tied = tied_storages([p for group in groups for p in group["params"]])
            for group in groups:
                self._add_stores(group, tied)
            for stores in self.stores:
                for store in stores:
                    names = list(self.recipe.state_inits)
                    store.absorb(state, self.policy.stored_names(names, store.params[0]),
                                 self.layouts())
        if compile is not None:
            self.compile = bool(compile)
        self._layout.clear()

    def layouts(self) -> dict[str, Layout]:
        """How each state a bucket carries (the recipe's and the policy's) lines up with its
        param, as declared: what flat mode's stores read."""
        return self.policy.layouts(self.recipe.layouts)

    def _check_flat(self, group: Mapping[str, Any]) -> None:
        for p in group["params"]:
            if is_dtensor(p):
                raise ValueError(
                    "flat=True cannot hold DTensor params (FSDP2's fully_shard): FSDP2 owns "
                    "each sharded param's storage, so no flat buffer can replace it. Use "
                    "flat=False; compile=True then compiles the step on the local shards"
                )
            if p.is_complex() or p.is_sparse:
                raise ValueError("flat=True needs dense real params; got a complex or sparse one")

    def _add_stores(self, group: Mapping[str, Any], tied: set[int]) -> None:
        """One store per (device, dtype, policy key) of the group's params; frozen params stay
        out, so a fine-tuning run keeps the one-tensor step, and so do params on a ``tied``
        storage (shared with another param: moved into a buffer, one would be untied)."""
        self._check_flat(group)
        by_kind: dict[tuple, list[Tensor]] = {}
        loose = []
        for p in group["params"]:
            if p.requires_grad and storage_of(p) not in tied:
                by_kind.setdefault((p.device, p.dtype, self.policy.key(p)), []).append(p)
            else:
                loose.append(p)
        self.stores.append([FlatStore(params) for params in by_kind.values()])
        self.loose.append(loose)

    def state_loaded(self, state: Mapping[Tensor, dict]) -> None:
        """After ``load_state_dict`` (or code outside the optimizer) replaced state tensors:
        forget the cached bucket lists, copy the new tensors into the flat buffers."""
        self._layout.clear()
        self._replaced = getattr(state, "replaced", 0)
        for stores in self.stores:
            for store in stores:
                store.readopt(state, self.layouts())

    # ------------------------------------------------------------------ the step
    def step(self, groups: Sequence[Mapping[str, Any]], state: dict[Tensor, dict]) -> None:
        """Run the recipe once over every group.

        Every grad of every group is checked first, and no state is created before that: a
        bad gradient leaves the params and the state as they were.
        """
        if getattr(state, "replaced", 0) != self._replaced:
            self.state_loaded(state)
        active = [self._active_parts(group) for group in groups]
        grads = [[p.grad for p in group["params"]] for group in groups]
        for group_grads in grads:
            self._check_sparse(group_grads)
        if self.flat:
            for group, parts, stores, loose in zip(
                groups, active, self.stores, self.loose, strict=True
            ):
                for store in stores:
                    self._step_store(store, group, parts, state)
                for params in self._split(loose):
                    self.run(self._bucket(params, group, parts, state), group, parts)
            return
        # which params each bucket holds (complex params refused here), then the buckets
        plans = [
            self._plan(index, group, parts, group_grads)
            for index, (group, parts, group_grads) in enumerate(zip(groups, active, grads,
                                                                    strict=True))
        ]
        work = [
            (group, parts, self._group_buckets(index, group, parts, state, plan))
            for index, (group, parts, plan) in enumerate(zip(groups, active, plans, strict=True))
        ]
        for group, parts, buckets in work:
            for bucket in buckets:
                self.run(bucket, group, parts)

    def _active_parts(self, group: Mapping[str, Any]) -> list[Part]:
        return [part for part in self.recipe.parts if part.active(group)]

    def _check_sparse(self, grads: Sequence[Tensor | None]) -> None:
        if any(g is not None and g.is_sparse for g in grads):
            raise RuntimeError(
                f"{self.owner} does not support sparse gradients; no parameter was changed"
            )

    def _plan(self, index: int, group: Mapping[str, Any], parts: list[Part], grads: list):
        """Last step's buckets of ``group`` when the same params have grads and the same state
        is in use (saves the per-tensor Python work), else its params split into buckets."""
        params = group["params"]
        mask = [g is not None for g in grads]
        names = tuple({name: None for part in parts for name in part.state})
        layout = self._layout.get(index)
        if layout is not None and layout.matches(params, mask, names):
            return layout
        return (mask, names, self._split(params))

    def _group_buckets(
        self, index: int, group: Mapping[str, Any], parts: list[Part], state: dict, plan
    ) -> list[Bucket]:
        if isinstance(plan, _Layout):
            return [
                Bucket(b.params, [p.grad for p in b.params], dict(b.state), {})
                for b in plan.buckets
            ]
        mask, names, split = plan
        buckets = [self._bucket(ps, group, parts, state) for ps in split]
        # (a sharded bucket holds local shards, which have no .grad to read again next step)
        if not any(created for b in buckets for created in b.created.values()) and not any(
            isinstance(b, ShardedBucket) for b in buckets
        ):
            self._layout[index] = _Layout(group["params"], mask, names, buckets)
        else:
            self._layout.pop(index, None)
        return buckets

    def _split(self, params: Sequence[Tensor]) -> list[list[Tensor]]:
        """The params with a grad, by (device, dtype, mesh and placements for DTensors, and the
        precision policy's key); a param that shares its storage with another of ``params`` (a
        tied weight, see the module doc) in a bucket of its own, in the order of ``params``."""
        buckets: dict[Any, list[Tensor]] = {}
        # among the params that step (flat mode's loose ones are mostly frozen, with no grad)
        tied = tied_storages([p for p in params if p.grad is not None])
        for index, p in enumerate(params):
            if p.grad is None:
                continue
            if p.is_complex():
                raise RuntimeError(
                    f"{self.owner} does not support complex parameters; "
                    "optimise torch.view_as_real(p) instead"
                )
            if tied and storage_of(p) in tied:
                buckets[index] = [p]
                continue
            buckets.setdefault((p.device, p.dtype, shard_key(p), self.policy.key(p)), []).append(p)
        return list(buckets.values())

    def _bucket(
        self, params: list[Tensor], group: Mapping[str, Any], parts: list[Part], all_state: dict
    ) -> Bucket:
        """A bucket of ``params``, creating the state they lack (a param's first step)."""
        inits: dict[str, Init] = {}
        for part in parts:
            inits.update(part.state)
        lists, created = self.policy.collect(params, group, inits, all_state)
        bucket = Bucket(params, [p.grad for p in params], lists, created)
        # DTensor params (FSDP2): the parts run on the local shards
        return ShardedBucket.of(bucket) if is_dtensor(params[0]) else bucket

    def _step_store(
        self, store: FlatStore, group: Mapping[str, Any], parts: list[Part], state: dict
    ) -> None:
        names = list({name: None for part in parts for name in part.state})
        in_place = store.grads_in_place()
        # what makes the store step per tensor over its views, whatever its grads
        per_tensor = (
            "a part that reads each param's shape" if any(part.shaped for part in parts)
            else None if self.policy.one_tensor(store.sizes) else "a precision policy"
        )
        one_tensor = in_place and per_tensor is None
        names = self.policy.stored_names(names, store.params[0])
        flat = store.bucket(names) if one_tensor else None
        if flat is not None:
            self.run(flat, group, parts)
            return
        params = [p for p in store.params if p.grad is not None]
        if params:
            compile = len(params) <= PER_TENSOR_COMPILE_MAX
            if not compile and self.compile and per_tensor and not self._warned_eager_store:
                self._warned_eager_store = True
                warnings.warn(
                    f"compile=True, flat=True: with {per_tensor} a flat store steps per tensor, "
                    f"and over {len(params)} tensors (more than {PER_TENSOR_COMPILE_MAX}) those "
                    "steps run eagerly; flat=False compiles them per tensor (compile time "
                    "grows with the number of tensors)", RuntimeWarning, stacklevel=4,
                )
            self.run(self._bucket(params, group, parts, state), group, parts, compile=compile)
            store.absorb(state, names, self.layouts())

    def run(
        self, bucket: Bucket, group: Mapping[str, Any], parts: Sequence[Part], compile: bool = True
    ) -> None:
        """Run ``parts`` on one bucket, between the policy's ``prepare`` and ``finalize``:
        compiled when the mode says so and no state was created this step, else eagerly; the
        host-gated parts (``every``) last, eagerly."""
        body = [part for part in parts if part.every is None]
        arguments = self.policy.arguments(group, bucket, isinstance(bucket, FlatBucket))
        if (compile and self.compile and not any(bucket.created.values())
                and not compiled.under_dispatch_mode()):
            if compiled.can_compile(bucket.device):
                self._warn_if_many(bucket)
                broken = compiled.run_compiled(bucket, group, body, self.policy, arguments)
                if broken is None:
                    self._run_host_gated(bucket, group, parts, arguments)
                    return
                compiled.warn_eager(f"the step does not compile as one graph ({broken})")
            else:
                compiled.warn_eager("no C++ compiler found for inductor")
            self.compile = False
        blocks = self._blocks(bucket, arguments)
        while blocks:
            # popped, so that a block's temporaries (its fields) are freed before the next
            # block makes its own: the step's peak is one block's, not the bucket's
            block, block_arguments = blocks.pop(0)
            # a block of params of 32 MiB or more: its temporaries in buffers kept from the
            # last step (core/scratch.py: fresh ones that large page-fault at every step)
            reuse = self.scratch.reuse() if self._pooled(block) else contextlib.nullcontext()
            with reuse:
                prepared = self.policy.prepare(block, group, block_arguments)
                for part in body:
                    part(block, group)
                self.policy.finalize(block, group, prepared)
                del block, prepared
        self._run_host_gated(bucket, group, parts, arguments)

    def _blocks(self, bucket: Bucket, arguments: tuple) -> list[tuple[Bucket, tuple]]:
        """The blocks of params an eager step runs over, one after the other, each with its
        share of the policy's per-tensor ``arguments``.

        * Plain, on the CPU: cache-sized blocks (``Bucket.blocks``); a bucket that creates
          state runs whole.
        * Under a precision policy, on every device: blocks of at most
          :data:`POLICY_BLOCK_BYTES` of params (the CPU's cache-sized ones there), so that the
          working copies of the state (8-bit codes widened to float32, bf16 state to the
          compute dtype) and the parts' temporaries are one block's, not the whole bucket's:
          whole, an 8-bit Adam step held 3x the params' size more than an fp32 one. Each
          tensor keeps its random-bit key and element offset, so the result is the same bit
          for bit. A sharded (FSDP2) bucket runs whole: its norms are collectives, which every
          rank must issue for the same blocks.
        """
        if not self.policy.plain:
            if type(bucket) is not Bucket:
                return [(bucket, arguments)]
            cpu = bucket.device.type == "cpu"
            spans = bucket.spans(None if cpu else POLICY_BLOCK_BYTES)
            if len(spans) == 1:
                return [(bucket, arguments)]
            return [(bucket.select(range(i, j)), _arguments_of(arguments, range(i, j)))
                    for i, j in spans]
        if bucket.device.type != "cpu" or any(bucket.created.values()):
            return [(bucket, arguments)]
        return [(block, arguments) for block in bucket.blocks()]

    def _pooled(self, block: Bucket) -> bool:
        return (block.device.type == "cpu" and self.policy.plain
                and not any(block.created.values()) and self.scratch.wanted(block.params))

    def _run_host_gated(
        self, bucket: Bucket, group: Mapping[str, Any], parts: Sequence[Part], arguments: tuple
    ) -> None:
        """Run the ``every`` parts on the tensors whose step count, after this step's body, is
        a multiple of theirs (Lookahead syncs right after steps k, 2k, ...).

        Every path gets here (eager blocks, the compiled graph, flat per-tensor steps, sharded
        buckets) and in none of them did ``bucket`` count the step itself: the blocks, or the
        compiled graph's own bucket, did. So the counts ``bucket`` cached before the body (a
        policy's ``arguments`` read them for the random bits) are the previous step's: read
        them again here, whatever the path."""
        if not any(part.every is not None for part in parts):
            return
        bucket.forget_steps()
        for part in parts:
            if part.every is None:
                continue
            # CPU step counters: deciding here never waits for an accelerator
            steps = bucket.steps
            if part.start:
                due = ((steps >= part.start)
                       & ((steps - part.start) % group[part.every] == 0)).tolist()
            else:
                due = (steps % group[part.every] == 0).tolist()
            if not any(due):
                continue
            target = bucket
            if not all(due):
                chosen = [i for i, d in enumerate(due) if d]
                target = bucket.select(chosen)
                arguments = _arguments_of(arguments, chosen)
            # its own write-back: the part's state, the states it reads (it may write them in
            # place: SOAP reorders its second moment) and the params, with fresh random bits
            names = tuple({name: None for name in (*part.state, *part.reads)})
            prepared = self.policy.prepare(target, group, arguments, names=names)
            part(target, group)
            self.policy.finalize(target, group, prepared, stream=HOST_GATED_STREAM)

    def _warn_if_many(self, bucket: Bucket) -> None:
        if len(bucket) > MANY_TENSORS and not self._warned_many:
            self._warned_many = True
            warnings.warn(
                f"compile=True over {len(bucket)} separate tensors unrolls the step per tensor "
                "and takes minutes to compile; pass flat=True as well to compile one flat step",
                RuntimeWarning, stacklevel=5,
            )


def storage_of(p: Tensor) -> int | None:
    """The address of ``p``'s storage, by which tied params are found; None for a tensor that
    cannot be tied (no elements, a DTensor, the meta device)."""
    if p.numel() == 0 or is_dtensor(p) or p.device.type == "meta":
        return None
    return p.untyped_storage().data_ptr()


def tied_storages(params: Sequence[Tensor], taken: Collection[int] = ()) -> set[int]:
    """The storages (:func:`storage_of`) that more than one of ``params`` hold, or that one of
    them shares with ``taken``: the params on those are tied (one Parameter listed twice too)."""
    seen, tied = set(taken), set()
    for p in params:
        storage = storage_of(p)
        if storage is not None:
            if storage in seen:
                tied.add(storage)
            seen.add(storage)
    return tied


def _arguments_of(arguments: tuple, indices: Sequence[int]) -> tuple:
    """A policy's per-tensor ``arguments`` (``(keys, offset of each tensor)``, or ``()``) for
    the tensors at ``indices`` of their bucket."""
    if len(arguments) <= 1:
        return arguments
    keys, *offsets = arguments
    return (keys[list(indices)], *(offsets[i] for i in indices))


class _Layout:
    """The buckets of one param group at one step, with what they depend on."""

    __slots__ = ("params", "mask", "names", "buckets")

    def __init__(self, params: list, mask: list[bool], names: tuple, buckets: list[Bucket]):
        self.params = params
        self.mask = mask
        self.names = names
        # copies of the lists: a part may rebind bucket.state[name] during its step
        self.buckets = [Bucket(b.params, b.grads, dict(b.state), {}) for b in buckets]

    def matches(self, params: list, mask: list[bool], names: tuple) -> bool:
        return params is self.params and names == self.names and mask == self.mask
