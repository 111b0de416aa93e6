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

**Barriers** (``core/parts.py``: Prodigy's and D-Adaptation's ``d``, ``max_grad_norm``): a
recipe with a barrier, or any optimizer with ``max_grad_norm``, steps through
:meth:`Executor._step_phased`: each phase runs over every bucket of every group with the
per-bucket machinery above (eager blocks, flat stores, one compiled graph per phase), what its
parts contribute is added up (:meth:`Executor._totals`: one all-reduce per sharded mesh, one
read on the host), and the barrier sets the values the next phase reads. Every other
optimizer takes the code path it always took.

**Tied params.** Params that share storage (weight tying done as ``b.data = a.data``, a view
``b.data = a.data[0]``, or one Parameter listed twice in a group, which torch.optim warns
about and steps twice) step one after the other, each as a bucket of its own, in the order
of the groups: each sees the update of the ones before it, as in torch.optim's per-param
(``foreach=False``) loop, and the tie holds. Every mode does this: flat mode keeps them out
of its buffers (copying one into a buffer would untie it; see ``core/flat.py``), and a
compiled step never gets two inputs that alias. Their own state stays per param, as in
torch.optim. Tensors of no elements, and DTensors (FSDP2 owns their storage), are never tied.

**Transitions** (``Optimizer.train()`` / ``eval()``, :meth:`Executor.transition`) run one part
outside the step, eagerly, over every bucket of the params that have the state it reads, in
every mode: flat stores hand it their per-param views (writes land in the buffers), DTensor
buckets their local shards, and a precision policy's ``prepare`` / ``finalize`` wrap it as
they wrap a step (Kahan-compensated params are read as ``p + c`` and written back with their
compensation; stochastic rounding draws bits of its own stream).

**Routing by tensor.** A part routed with ``part.where(predicate)`` (``core/parts.py``) runs
only on the params for which the predicate holds: each param's outcome of every route of the
recipe is computed once, on the host (cached per param), and joins the bucket key, so a bucket
(and a flat store) holds params of one outcome and runs the parts routed to them (Muon's
matrices and its AdamW params in one param group). A part declared ``batch="shape"`` adds
the param's shape to the key of the params it applies to: its bucket holds one shape, which
it stacks into one batched call, and a compiled step compiles once per shape. A recipe
without routes or batches buckets exactly as before.

A part declared with ``every="k"`` (Lookahead's sync, SOAP's eigenbases) runs after the
others, on the tensors whose step count is a multiple of ``group["k"]`` (or, with
``start=s``, is ``s``, ``s + k``, ``s + 2k``...): decided on the host from the CPU step
counters, and outside the compiled graph, so the compiled step neither recompiles nor breaks
on it and the sync costs nothing on the other steps.

A part declared with ``due=("h", due_at)`` (PSGD Kron's factor fit) is a scheduled part of
the body: before the body runs, the executor works out on the host, from the CPU step
counters, on which tensors of the bucket it is due (``due_at(group["h"], t)``, ``t`` the
count the step gives each tensor), and runs the body on those with it and on the others
without it (:meth:`Executor._due_sets`; one run when all agree, as when every param steps
together). Compiled, each of the two bodies is one graph, compiled once: a schedule never
recompiles, and the steps without the part pay nothing for it. A scheduled part may be
``whole`` (under FSDP2): the tensors are split before the body, so each set is a
:class:`~optimkit.core.sharded.ShardedBucket` of its own (``select`` keeps the DTensors and
full shapes), its whole parts gathered to their owners within it and, compiled, the other
parts compiled around them (:meth:`Executor._run_segments`) as for any whole part.

Extension points, for what comes next:

* **Sharded params (DTensor, FSDP2).** :meth:`Executor._bucket` hands the parts the local
  shards of a bucket of DTensors (:class:`~optimkit.core.sharded.ShardedBucket`), eagerly or
  compiled. Flat mode refuses DTensor params: FSDP2 owns their storage. A part declared
  ``whole`` runs instead on one owner rank per tensor, on the full tensors
  (``core/whole.py``; a host-gated one on the due tensors, after the step); compiled, the
  other parts run as compiled segments around it, on the shards, and it runs eagerly
  between them (under a precision policy such a step is eager).
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
import copy
import warnings
import weakref
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from . import compiled, tensorlists
from .flat import FlatBucket, FlatStore
from .parts import Barrier, Init, Part
from .policy import PLAIN, BucketPolicy, Layout
from .recipe import Recipe
from .scratch import ScratchPool
from .sharded import ShardedBucket, shard_key
from .tensorlists import Bucket, is_dtensor
from .whole import run_whole, shard_plan

# Flat mode's per-tensor fallback is compiled (with compile=True) up to this many tensors:
# compiling a per-tensor step unrolls over the tensors (~0.25 s of compile each).
PER_TENSOR_COMPILE_MAX = 32
# Above this many tensors in a per-tensor compiled bucket, compiling takes minutes: say so.
MANY_TENSORS = 256
# The random-bit stream of a policy's second write-back in one step (a host-gated part's).
HOST_GATED_STREAM = 1000
# The random-bit streams of the transitions' write-backs (a step's are 0, 1, ... and 1000).
TRANSITION_STREAMS = {"eval": 2000, "train": 3000}
# The param-sized lists of an eager CPU block hold at most this many bytes together (see
# Executor._block_bytes): three lists of tensorlists.CPU_BLOCK_BYTES. (Prodigy on 52 tensors
# of 0.25-1 MiB, one thread, 2 x 25 rounds: 16 MiB 10.0/11.0 ms, 12 MiB 9.9/10.4, 8 MiB
# 9.8/10.4; prodigyopt 9.9/10.0 in the same runs.)
BLOCK_WORKING_SET = 12 << 20
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
        # during a phase of a recipe with barriers: what its parts contribute, per bucket, and
        # the parts of every phase, whose state the buckets of each phase carry
        self._sink: list | None = None
        self._holding: list[Part] | None = None
        self._set_routes()

    def _set_routes(self) -> None:
        """The recipe's routes by label, and each param's outcome of them (computed once)."""
        routes = {} if self.recipe is None else {
            route.label: route for part in self.recipe.parts for route in part.routes}
        self._routes = tuple(routes.values())
        # id(param) -> (a weak reference to it, its outcomes): tensors compare by value
        self._outcomes: dict[int, tuple[weakref.ref, tuple[bool, ...]]] = {}

    # The recipe is the class's (it holds functions, which do not pickle): the optimizer puts it
    # back after unpickling. The eager bucket cache is rebuilt on the next step.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "recipe": None, "_layout": {}, "scratch": ScratchPool(),
                "_outcomes": None, "_routes": ()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._routes = ()  # the optimizer puts the recipe back, then its routes
        self._outcomes = {}
        self.__dict__.setdefault("scratch", ScratchPool())  # pickled before it existed
        self.__dict__.setdefault("_warned_eager_store", False)
        self.__dict__["_sink"] = None
        self.__dict__["_holding"] = None

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
                key = (p.device, p.dtype, self.policy.key(p))
                if self._routes:  # a store per route outcome (and shape, for batched parts)
                    key += self._route_key(p, group)
                by_kind.setdefault(key, []).append(p)
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
        if self.recipe.barriers or groups[0].get("max_grad_norm") is not None:
            self._step_phased(groups, state)
            return
        active = [self._active_parts(group) for group in groups]
        grads = [[p.grad for p in group["params"]] for group in groups]
        for group_grads in grads:
            self._check_sparse(group_grads)
        if self.flat:
            for group, parts, stores, loose in zip(
                groups, active, self.stores, self.loose, strict=True
            ):
                for store in stores:
                    self._step_store(store, group, self.routed(parts, store.params), state)
                for params in self._split(loose, group):
                    routed = self.routed(parts, params)
                    self.run(self._bucket(params, group, routed, state), group, routed)
            return
        # which params each bucket holds (complex params refused here), then the buckets
        plans = [
            self._plan(index, group, parts, group_grads)
            for index, (group, parts, group_grads) in enumerate(zip(groups, active, grads,
                                                                    strict=True))
        ]
        work = [
            (group, self._group_buckets(index, group, parts, state, plan))
            for index, (group, parts, plan) in enumerate(zip(groups, active, plans, strict=True))
        ]
        for group, buckets in work:
            for bucket, routed in buckets:
                self.run(bucket, group, routed)

    # ------------------------------------------------ phases between barriers
    def _phases(self, clip: bool) -> tuple[tuple[tuple[Part, ...], ...], tuple[Barrier, ...]]:
        """The recipe's phases and barriers; with ``max_grad_norm`` a first phase that sums the
        squares of the grads and a barrier that turns them into the clip coefficient, and every
        phase then starts by scaling ``grads`` with it (see core/clipping.py)."""
        phases, barriers = self.recipe.phases, self.recipe.barriers
        if not clip:
            return phases, barriers
        from .clipping import clip_barrier, grad_sqr_sum, scale_grads

        return (((grad_sqr_sum,), *((scale_grads, *phase) for phase in phases)),
                (clip_barrier, *barriers))

    def _step_phased(self, groups: Sequence[Mapping[str, Any]], state: dict) -> None:
        """A step of a recipe with barriers (or of any recipe with ``max_grad_norm``): each
        phase over every bucket of every group, then its barrier over all of them."""
        max_norm = groups[0].get("max_grad_norm")
        if any(group.get("max_grad_norm") != max_norm for group in groups):
            raise ValueError(
                "max_grad_norm: every param group must have the same value (one norm over all "
                f"the params); got {[group.get('max_grad_norm') for group in groups]}"
            )
        phases, barriers = self._phases(max_norm is not None)
        for group_grads in ([p.grad for p in group["params"]] for group in groups):
            self._check_sparse(group_grads)
        derived: dict[str, Any] = {}
        for barrier in barriers:
            if barrier.start is not None:
                derived.update(barrier.start(groups))
        work = None
        if not self.flat:
            everything = [part for phase in phases for part in phase]
            active = [[part for part in everything if part.active(group)] for group in groups]
            grads = [[p.grad for p in group["params"]] for group in groups]
            plans = [self._plan(index, group, parts, group_grads)
                     for index, (group, parts, group_grads) in enumerate(zip(groups, active, grads,
                                                                             strict=True))]
            work = [self._group_buckets(index, group, parts, state, plan)
                    for index, (group, parts, plan) in enumerate(zip(groups, active, plans,
                                                                     strict=True))]
        for number, phase in enumerate(phases):
            views = [{**group, **derived} for group in groups]
            sink: list = []
            self._sink = sink
            try:
                self._run_phase(number, phase, groups, views, work, state)
            finally:
                self._sink = None
            if number == len(barriers):
                break
            result = barriers[number].fn(self._totals(sink, barriers[number].sums), groups)
            if result is False:
                return
            if result:  # values for the phases after it, never saved (the clip coefficient)
                derived.update(result)

    def _run_phase(self, number: int, phase: Sequence[Part], groups, views, work, state) -> None:
        for index, view in enumerate(views):
            parts = [part for part in phase if part.active(view)]
            if not parts:
                continue
            if self.flat:
                holding = [part for phase in self._phases(
                    view.get("max_grad_norm") is not None)[0] for part in phase
                    if part.active(view)]
                try:
                    for store in self.stores[index]:
                        # the state of every phase's parts routed to this store
                        self._holding = self.routed(holding, store.params)
                        self._step_store(store, view, self.routed(parts, store.params), state)
                    for params in self._split(self.loose[index], view):
                        self._holding = self.routed(holding, params)
                        routed = self.routed(parts, params)
                        self.run(self._bucket(params, view, routed, state), view, routed)
                finally:
                    self._holding = None
                continue
            for bucket, routed in work[index]:
                ids = {id(part) for part in routed}
                here = [part for part in parts if id(part) in ids]
                if here:
                    # a fresh bucket over the same tensors: per-step fields do not cross a
                    # barrier
                    self.run(bucket if number == 0 else _fresh(bucket), view, here)

    def _totals(self, sink: list, names: Sequence[str]) -> dict[str, float]:
        """The phase's contributions added up over every bucket: float64, the shards of each
        sharded mesh added up in one all-reduce, read on the host once."""
        if not sink:
            return dict.fromkeys(names, 0.0)
        where = {name: i for i, name in enumerate(names)}
        by_key: dict[Any, list] = {}
        for key, part_names, values in sink:
            rows = by_key.setdefault(key, [])
            row = [None] * len(names)
            for name, value in zip(part_names, values, strict=True):
                row[where[name]] = value
            rows.append(row)
        totals = []
        for key, rows in by_key.items():
            device = next(v for row in rows for v in row if v is not None).device
            zero = torch.zeros((), dtype=torch.float64, device=device)
            # each sum over every tensor's share, in the params' order (whatever the blocks)
            vector = torch.stack([
                torch.cat([zero.reshape(1)] + [row[i].reshape(-1).to(torch.float64)
                                               for row in rows if row[i] is not None]).sum()
                for i in range(len(names))
            ])
            if key is not None:
                from torch.distributed import _functional_collectives as funcol

                for group in key:
                    vector = funcol.all_reduce(vector, "sum", group)
                vector = funcol.wait_tensor(vector)
            totals.append(vector.cpu())
        return dict(zip(names, torch.stack(totals).sum(0).tolist(), strict=True))

    def _active_parts(self, group: Mapping[str, Any]) -> list[Part]:
        return [part for part in self.recipe.parts if part.active(group)]

    def outcome(self, p: Tensor, group: Mapping[str, Any] | None = None) -> dict[str, bool]:
        """Which of the recipe's routes hold for ``p`` (label -> bool): computed on the host at
        the param's first step, from the param and its name in ``group["param_names"]``, and
        kept. A param group's ``routes`` (label -> bool) pins the outcome for its params
        (``optimkit.create("muon", model)`` sends the embeddings and the head to AdamW so)."""
        cached = self._outcomes.get(id(p))
        if cached is not None and cached[0]() is p:
            values = cached[1]
        else:
            group = group or {}
            pinned = group.get("routes") or {}
            name = ""
            if "param_names" in group:
                name = next((n for q, n in zip(group["params"], group["param_names"],
                                               strict=False) if q is p), "")
            values = tuple(bool(pinned[route.label]) if route.label in pinned
                           else bool(route.test(p, name)) for route in self._routes)
            self._outcomes[id(p)] = (weakref.ref(p), values)
        return dict(zip((route.label for route in self._routes), values, strict=True))

    def routed(self, parts: list[Part], params: Sequence[Tensor]) -> list[Part]:
        """The ``parts`` that run on a bucket of ``params`` (all of one route outcome)."""
        if not self._routes or not params:
            return parts
        outcome = self.outcome(params[0])
        return [part for part in parts if part.applies(outcome)]

    def _route_key(self, p: Tensor, group: Mapping[str, Any]) -> tuple:
        """The bucket key's share of the routes: the param's outcome, and its shape where a
        ``batch="shape"`` part applies to it."""
        outcome = self.outcome(p, group)
        batched = any(part.batch == "shape" and part.applies(outcome)
                      for part in self.recipe.parts)
        return (tuple(outcome.values()), tuple(p.shape) if batched else None)

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
        return (mask, names, self._split(params, group))

    def _group_buckets(
        self, index: int, group: Mapping[str, Any], parts: list[Part], state: dict, plan
    ) -> list[Bucket]:
        if isinstance(plan, _Layout):
            return [
                (Bucket(b.params, [p.grad for p in b.params], dict(b.state), {}), routed)
                for b, routed in zip(plan.buckets, plan.parts, strict=True)
            ]
        mask, names, split = plan
        routes = [self.routed(parts, ps) for ps in split]
        buckets = [self._bucket(ps, group, routed, state)
                   for ps, routed in zip(split, routes, strict=True)]
        # (a sharded bucket holds local shards, which have no .grad to read again next step)
        if not any(created for b in buckets for created in b.created.values()) and not any(
            isinstance(b, ShardedBucket) for b in buckets
        ):
            self._layout[index] = _Layout(group["params"], mask, names, buckets, routes)
        else:
            self._layout.pop(index, None)
        return list(zip(buckets, routes, strict=True))

    def _split(self, params: Sequence[Tensor],
               group: Mapping[str, Any] | None = None) -> list[list[Tensor]]:
        """The params with a grad, by (device, dtype, mesh and placements for DTensors, the
        precision policy's key, and the outcome of the recipe's routes); a param that shares
        its storage with another of ``params`` (a tied weight, see the module doc) in a bucket
        of its own, in the order of ``params``."""
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
            key = (p.device, p.dtype, shard_key(p), self.policy.key(p))
            if self._routes:
                key += self._route_key(p, group or {})
            buckets.setdefault(key, []).append(p)
        return list(buckets.values())

    def _bucket(
        self, params: list[Tensor], group: Mapping[str, Any], parts: list[Part], all_state: dict
    ) -> Bucket:
        """A bucket of ``params``, creating the state they lack (a param's first step)."""
        inits: dict[str, Init] = {}
        for part in self._holding or parts:  # (a phase: all the step's state)
            inits.update(part.state)
        lists, created = self.policy.collect(params, group, inits, all_state)
        bucket = Bucket(params, [p.grad for p in params], lists, created)
        # DTensor params (FSDP2): the parts run on the local shards
        return ShardedBucket.of(bucket) if is_dtensor(params[0]) else bucket

    def _step_store(
        self, store: FlatStore, group: Mapping[str, Any], parts: list[Part], state: dict
    ) -> None:
        names = list({name: None for part in self._holding or parts for name in part.state})
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
            # a store of batched parts (one shape, stacked) compiles its matrix math once,
            # whatever the number of tensors: only the element-wise parts unroll
            batched = any(part.shaped for part in parts) and all(
                part.batch for part in parts if part.shaped)
            compile = len(params) <= (MANY_TENSORS if batched else PER_TENSOR_COMPILE_MAX)
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
        host-gated parts (``every``) last, eagerly. A scheduled part (``due``) runs in the
        body on the tensors it is due on only: the body runs once per set of due parts, each
        time on the tensors of that set (see :meth:`_due_sets`)."""
        body = [part for part in parts if part.every is None]
        arguments = self.policy.arguments(group, bucket, isinstance(bucket, FlatBucket))
        if any(part.due is not None for part in body):
            for chosen, due in self._due_sets(bucket, group, body):
                target, target_arguments = bucket, arguments
                if chosen is not None:
                    target = _subset(bucket, chosen)
                    target_arguments = _arguments_of(arguments, chosen)
                kept = [part for part in body if part.due is None or any(part is d for d in due)]
                self._run_body(target, group, kept, compile, target_arguments)
        else:
            self._run_body(bucket, group, body, compile, arguments)
        self._run_host_gated(bucket, group, parts, arguments)

    @staticmethod
    def _due_sets(bucket: Bucket, group: Mapping[str, Any], body: Sequence[Part]
                  ) -> list[tuple[list[int] | None, tuple[Part, ...]]]:
        """The tensors of ``bucket`` grouped by which scheduled parts are due on them at this
        step (``part.due_at(group[part.due], t)``, ``t`` each tensor's count before the step
        plus one, read from the CPU counters: no sync), in the order of their first tensor:
        ``[(indices, or None for all of them, due parts), ...]``."""
        scheduled = [part for part in body if part.due is not None]
        steps = [int(t) + 1 for t in bucket.steps.tolist()]
        bucket.forget_steps()  # the body counts this step; whoever reads next reads afresh
        sets: dict[tuple[int, ...], list[int]] = {}  # (Parts hold dicts: keyed by position)
        for i, t in enumerate(steps):
            due = tuple(k for k, part in enumerate(scheduled)
                        if part.due_at(group[part.due], t))
            sets.setdefault(due, []).append(i)
        chosen = [(indices, tuple(scheduled[k] for k in due)) for due, indices in sets.items()]
        if len(chosen) == 1:
            return [(None, chosen[0][1])]
        return chosen

    def _run_body(self, bucket: Bucket, group: Mapping[str, Any], body: Sequence[Part],
                  compile: bool, arguments: tuple) -> None:
        """The body of :meth:`run` (every part but the host-gated ones) on one bucket."""
        # a part needing each full tensor, over shards (FSDP2): it runs on owner ranks
        whole = isinstance(bucket, ShardedBucket) and any(part.whole for part in body)
        if whole:  # refuse a sharding it cannot gather before any part ran
            shard_plan(bucket, next(part.name for part in body if part.whole))
        sink = self._sink
        if sink is not None:  # a phase of a recipe with barriers: keep what the parts hand back
            key = bucket.groups if isinstance(bucket, ShardedBucket) and bucket.groups else None
            outs: list | None = []
        else:
            outs = None
        if (compile and self.compile and not any(bucket.created.values())
                and not compiled.under_dispatch_mode()
                and not (whole and not self.policy.plain)):
            if compiled.can_compile(bucket.device):
                self._warn_if_many(bucket)
                if whole:
                    broken = self._run_segments(bucket, group, body, outs)
                else:
                    broken = compiled.run_compiled(bucket, group, body, self.policy, arguments,
                                                   sink=outs)
                if broken is None:
                    self._keep(outs, key if sink is not None else None)
                    return
                compiled.warn_eager(f"the step does not compile as one graph ({broken})")
            else:
                compiled.warn_eager("no C++ compiler found for inductor")
            self.compile = False
        blocks = self._blocks(bucket, arguments, body)
        while blocks:
            # popped, so that a block's temporaries (its fields) are freed before the next
            # block makes its own: the step's peak is one block's, not the bucket's
            block, block_arguments = blocks.pop(0)
            # a block of params of 32 MiB or more: its temporaries in buffers kept from the
            # last step (core/scratch.py: fresh ones that large page-fault at every step)
            reuse = self.scratch.reuse() if self._pooled(block) else contextlib.nullcontext()
            with reuse:
                prepared = self.policy.prepare(block, group, block_arguments)
                gathered: dict = {}  # fields gathered by the whole parts run since the last other
                for part in body:
                    if whole and part.whole:
                        run_whole(block, part, group, self.layouts(), gathered)
                        continue
                    gathered.clear()
                    out = part(block, group)
                    if outs is not None and part.contributes:
                        outs.append((part.contributes, out))
                self.policy.finalize(block, group, prepared)
                del block, prepared
        if outs is not None:
            self._keep(outs, key)

    def _run_segments(
        self, bucket: ShardedBucket, group: Mapping[str, Any], body: Sequence[Part],
        outs: list | None = None,
    ) -> str | None:
        """A compiled step of a sharded bucket with whole parts (plain policy): the runs of
        other parts compiled, each as one graph on the local shards, and each whole part
        eagerly between them (its point-to-point messages stay out of the graphs); the per-step
        fields pass from one to the next. Returns None, or why a segment does not compile
        (then only the segments before it ran: the caller must not run the step again)."""
        segments: list[list[Part]] = []
        for part in body:
            if part.whole or not segments or segments[-1][0].whole:
                segments.append([part])
            else:
                segments[-1].append(part)
        gathered: dict = {}  # fields gathered by consecutive whole parts (see run_whole)
        for index, segment in enumerate(segments):
            if segment[0].whole:
                run_whole(bucket, segment[0], group, self.layouts(), gathered)
                continue
            gathered.clear()
            broken = compiled.run_compiled(bucket, group, segment, self.policy, (),
                                           carry=True, sink=outs)
            if broken is not None and index == 0:
                return broken  # nothing ran: the caller runs the step eagerly
            if broken is not None:
                raise RuntimeError(
                    f"compile=True: a step of {self.owner} over FSDP2 shards with a whole part "
                    f"does not compile ({broken}); pass compile=False"
                )
        return None

    def _keep(self, outs: list | None, key: Any) -> None:
        """Hand the contributions of one bucket's parts to the phase's sink."""
        if outs:
            self._sink.extend((key, names, values) for names, values in outs)

    def _blocks(self, bucket: Bucket, arguments: tuple,
                parts: Sequence[Part] = ()) -> list[tuple[Bucket, tuple]]:
        """The blocks of params an eager step runs over, one after the other, each with its
        share of the policy's per-tensor ``arguments``.

        * Plain, on the CPU: cache-sized blocks (``Bucket.blocks``, :meth:`_block_bytes`); a
          bucket that creates state runs whole.
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
        return [(block, arguments) for block in bucket.blocks(self._block_bytes(bucket, parts))]

    def _block_bytes(self, bucket: Bucket, parts: Sequence[Part]) -> int:
        """Bytes per list of an eager CPU block of ``bucket`` (``Bucket.blocks``): what keeps
        the block's param-sized lists (params, grads, each param-shaped state) within
        :data:`BLOCK_WORKING_SET` together, at most ``CPU_BLOCK_BYTES`` per list. Prodigy's
        six lists (p, g, m, v, s, p0) in 4 MiB blocks spilled the cache between its passes
        (~10 % of its eager step).

        Where a part reads the step counts, blocks keep ``CPU_BLOCK_BYTES``: it computes
        per-tensor numbers from them (``beta ** t``), and torch's vectorised ``pow`` over 16
        or more entries rounds some of them an ulp off its scalar loop, so another cut of
        the blocks would move float64 results by an ulp at some steps."""
        limit = tensorlists.CPU_BLOCK_BYTES
        if any("step" in part.reads or "step" in part.overrides for part in parts):
            return limit
        layouts = self.layouts()
        lists = 2 + sum(layouts.get(name) is Layout.PARAM for name in bucket.state)
        return min(limit, BLOCK_WORKING_SET // lists)

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
            if part.whole and isinstance(target, ShardedBucket):
                # every rank counts the same steps, so all agree on the due tensors: each is
                # gathered to its owner, as in the step's body
                run_whole(target, part, group, self.layouts())
            else:
                part(target, group)
            self.policy.finalize(target, group, prepared, stream=HOST_GATED_STREAM)

    # ------------------------------------------------------------ transitions
    def transition(self, groups: Sequence[Mapping[str, Any]], state: Mapping[Tensor, dict],
                   part: Part, stream: int = 0) -> None:
        """Run the transition ``part`` (``optimizer.train()`` / ``eval()``) once on every param
        of ``groups`` that has every state it reads (one that never stepped has none and is
        left as it is), bucket by bucket, whatever the mode.

        The buckets are the step's (device, dtype, DTensor mesh and placements, the policy's
        key; a tied param alone), built from the params, their state tensors (flat mode's views
        of its buffers) and no grads; it runs eagerly, between the policy's ``prepare`` (of the
        states it reads, the params upcast with their Kahan compensation) and ``finalize``
        (``stream`` keeps its random bits apart from the steps').
        """
        if getattr(state, "replaced", 0) != self._replaced:
            self.state_loaded(state)
        reads = tuple(part.reads)
        for group in groups:
            params = [p for p in group["params"]
                      if all(name in state.get(p, ()) for name in reads)]
            for bucket_params in self._transition_split(params):
                bucket = self._state_bucket(bucket_params, state)
                arguments = self.policy.arguments(group, bucket, False)
                prepared = self.policy.prepare(bucket, group, arguments, names=reads)
                part(bucket, group)
                self.policy.finalize(bucket, group, prepared, stream=stream)

    def _transition_split(self, params: Sequence[Tensor]) -> list[list[Tensor]]:
        """``params`` by (device, dtype, mesh and placements, the policy's key), a param tied to
        another (sharing its storage) alone, as :meth:`_split` does for those with a grad."""
        buckets: dict[Any, list[Tensor]] = {}
        tied = tied_storages(params)
        for index, p in enumerate(params):
            if tied and storage_of(p) in tied:
                buckets[index] = [p]
            else:
                key = (p.device, p.dtype, shard_key(p), self.policy.key(p))
                buckets.setdefault(key, []).append(p)
        return list(buckets.values())

    def _state_bucket(self, params: list[Tensor], state: Mapping[Tensor, dict]) -> Bucket:
        """A bucket of ``params`` and the state every one of them has (none is created), with
        no grads; the local shards of DTensor params."""
        names = self.policy.stored_names(list(self.recipe.state_inits), params[0])
        entries = [state[p] for p in params]
        lists = {name: [entry[name] for entry in entries] for name in names
                 if all(name in entry for entry in entries)}
        bucket = Bucket(params, [], lists, {})
        return ShardedBucket.of(bucket) if is_dtensor(params[0]) else bucket

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


# the slots of a bucket that hold its tensors; every other slot is a per-step field or cache
_TENSOR_SLOTS = ("params", "grads", "state", "created")


def _fresh(bucket: Bucket) -> Bucket:
    """``bucket`` over the same tensors (and layout) without the fields its parts set."""
    out = copy.copy(bucket)
    for cls in type(bucket).__mro__:
        if cls is Bucket:
            for slot in cls.__slots__:
                if slot not in _TENSOR_SLOTS:
                    setattr(out, slot, None)
    out.state = dict(bucket.state)
    return out


def _subset(bucket: Bucket, indices: Sequence[int]) -> Bucket:
    """The tensors at ``indices`` of ``bucket``, as a bucket of its kind (a sharded bucket
    keeps its mesh, DTensors and full shapes: a whole part gathers the due tensors by them)."""
    if isinstance(bucket, FlatBucket):
        raise TypeError("a flat bucket of one tensor per list cannot be split by tensor")
    return bucket.select(indices)


def _arguments_of(arguments: tuple, indices: Sequence[int]) -> tuple:
    """A policy's per-tensor ``arguments`` (``(keys, offset of each tensor)``, or ``()``) for
    the tensors at ``indices`` of their bucket."""
    if len(arguments) <= 1:
        return arguments
    keys, *offsets = arguments
    return (keys[list(indices)], *(offsets[i] for i in indices))


class _Layout:
    """The buckets of one param group at one step, with what they depend on."""

    __slots__ = ("params", "mask", "names", "buckets", "parts")

    def __init__(self, params: list, mask: list[bool], names: tuple, buckets: list[Bucket],
                 parts: list[list[Part]]):
        self.params = params
        self.parts = parts  # the parts each bucket runs (its routes')
        self.mask = mask
        self.names = names
        # copies of the lists: a part may rebind bucket.state[name] during its step
        self.buckets = [Bucket(b.params, b.grads, dict(b.state), {}) for b in buckets]

    def matches(self, params: list, mask: list[bool], names: tuple) -> bool:
        return params is self.params and names == self.names and mask == self.mask
