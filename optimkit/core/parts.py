"""Stats and steppers: the two kinds of parts an optimizer is built from.

A part is a small function ``fn(bucket, **hypers)`` over the aligned tensor lists of one
(param group, device, dtype) bucket. It declares everything it shares with the other parts:

* ``state``: the per-parameter state it creates (name and how to initialise it), which the
  optimizer allocates lazily, at a param's first step, and hands in as ``bucket.state[name]``.
  The init declares the state's layout (:class:`~optimkit.core.policy.Layout`): the param's
  shape (``zeros``, ``copy_of_param``, ``full``), one number (``step_counter``,
  ``zero_scalar``) or a shape of its own (:func:`own_shape`), which flat mode and the
  precision policies read; nothing is guessed from an element count;
* ``reads``: the state names and per-step fields (:data:`~optimkit.core.tensorlists.FIELDS`:
  ``first_moment``, ``second_moment``, ``step_size``...) it needs from earlier parts;
* ``provides``: the per-step fields it sets (``update``, ``second_moment``...); a part that
  reads a field and provides it again transforms it (momentum turns the update into its
  running average); a part that replaces a field some earlier part provided without reading it
  (AMSGrad's running max of the second moment) declares it in ``overrides``;
* its hyper-parameters with their defaults, and ``rules`` that check their values (see
  :mod:`optimkit.core.rules`). They are read from the live ``param_groups`` on every step, so
  schedulers act on them at once;
* ``storage``: how each state it creates may be stored by a precision policy
  (:class:`~optimkit.core.policy.Storage`: ``"signed"`` and ``"positive"`` moments may be kept in
  bf16 or 8 bits; a copy of the params stays ``"exact"``). A state the part does not declare is
  a counter (``step_counter``), a per-tensor scalar (``zero_scalar``) or else ``"exact"``: never
  quantized, so a new part is never quantized by accident;
* ``whole``: that it needs each full tensor (matrix math per tensor: Newton-Schulz
  orthogonalization, a Kronecker-factored preconditioner). It implies ``shaped``. Under FSDP2,
  where the other parts run on each rank's dim-0 shard, each tensor then gets one owner rank:
  the owner gathers the full tensors of the fields and states the part declares (``reads``,
  ``state``, ``overrides``), runs the part on them, and sends each rank its shard of what the
  part provides and the states it creates or overrides (see :mod:`optimkit.core.whole`). A
  ``whole`` part declares every field it reads, even ``update`` or ``grads``, and never writes
  a state it only ``reads``. A host-gated part (``every``) may be whole: it runs so on the
  tensors due at that step, and declares in ``overrides`` the states it writes in place.

A recipe (:class:`optimkit.Optimizer` subclass) is checked against these declarations when
its class is created: a read that no earlier part provides, two parts creating one state, a
hyper-parameter the function takes but does not declare all raise ``TypeError`` naming the part.
What a part touches when it runs is checked in the test suite (:mod:`optimkit.core.contract`):
a state or field it does not declare raises ``ContractViolation`` naming the part.

A *stat* updates state (``grad_avg``, ``sqr_avg``, ``step``...), a *stepper* writes the params.
Neither may modify ``p.grad``: a part that changes the gradient provides ``grads`` as a new list.

**Barriers: reductions over the whole optimizer.** A third kind of part, the *barrier*
(:func:`barrier`), splits a recipe into phases. The parts before it (phase 1) run over every
bucket of every param group, in every mode (eagerly, per CPU block, flat, compiled: one
compiled graph per phase and bucket); a phase-1 part hands back numbers to add up over the
whole optimizer by declaring ``contributes=("name", ...)`` and returning one tensor per name,
its bucket's local share, best one number per tensor (Prodigy's ``sum(|s|)`` of each: added
up in the params' order, an eager step over CPU blocks then sums exactly as the whole
bucket). The executor adds them up over all the buckets (for DTensor params, FSDP2, with ONE
all-reduce over the shards; DDP replicas hold the averaged grads already and need none),
reads them on the host once (one sync per step, where the reference packages sync per
param), and calls the barrier: ``fn(totals, groups)`` with the totals as Python floats and
the live param groups; it may return a dict of values for the phases after it that are never
saved (the clip coefficient). What it computes is *optimizer-level state*: numbers it keeps
in every param group (declared as ``values``, each with its initial value: Prodigy's
``d``, ``d_max``, ``d_numerator``, ``k``), so that ``state_dict()`` saves them and
``load_state_dict`` restores them exactly, as the reference packages lay them out.
The parts after the barrier (phase 2) read them, and ``start(groups)`` values (Prodigy's
``dlr``: computed before phase 1 from the values, never saved), as ``group_values=(...)``:
passed like hyper-parameters (graph inputs when compiled, so a new ``d`` never recompiles),
but not keywords of the recipe. A barrier that returns ``False`` ends the step there (the
references' early return when every gradient is zero).

Per-step fields do not cross a barrier (phase 2 starts from ``grads`` again, and a CPU cache
block never spans one); state does. A recipe without a barrier runs exactly as before. The
optimizer's ``max_grad_norm=`` (every recipe) is a built-in barrier before phase 1: the global
gradient norm, and the parts of every phase see ``grads`` scaled as
``torch.nn.utils.clip_grad_norm_`` would scale ``p.grad`` (which stays untouched).

A *transition* (:func:`transition`) runs outside ``step()``: a recipe's class attribute
``transitions = {"train": part, "eval": part}`` says what ``optimizer.train()`` and
``optimizer.eval()`` do to the params (Schedule-Free swaps the params between the point the
gradient is taken at, ``y``, and the averaged point to evaluate, ``x``). A transition reads
state only (``reads=``: states the recipe's parts create), creates none, takes hyper-parameters
the parts declare, and runs on the params that have that state, bucket by bucket, in every
mode (see :meth:`optimkit.core.executor.Executor.transition`). It never sees a gradient.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import contract
from .policy import Layout, Storage
from .rules import GroupCheck, Rule
from .tensorlists import FIELDS

# How a state tensor starts. Each is called as init(param, group) and returns a new tensor;
# its ``layout`` attribute (:class:`Layout`) says how that tensor lines up with the param.
Init = Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]


def layout_of(init: Init) -> Layout:
    """How the state ``init`` makes lines up with its param: declared by the init (``zeros``,
    ``copy_of_param``, ``full``: the param's shape; ``step_counter``, ``zero_scalar``: one
    number; :func:`own_shape`: a shape of its own). An init that declares nothing makes a
    param-shaped state."""
    return getattr(init, "layout", Layout.PARAM)


def _laid_out(layout: Layout):
    def mark(init: Init) -> Init:
        init.layout = layout  # type: ignore[attr-defined]
        return init

    return mark


@_laid_out(Layout.PARAM)
def zeros(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    """State init: zeros shaped like the param (moments, buffers)."""
    return torch.zeros_like(p, memory_format=torch.preserve_format)


@_laid_out(Layout.PARAM)
def copy_of_param(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    """State init: a detached copy of the param (Lookahead's slow weights)."""
    return p.detach().clone(memory_format=torch.preserve_format)


def own_shape(make: Init) -> Init:
    """A state of its own shape, made by ``make(param, group)`` (e.g. a ``[n, n]`` factor of a
    ``[n, ...]`` param). Flat mode keeps it per param (never re-viewed as the param), the
    precision policies never quantize it and narrow it only where a part declares its storage
    ``"signed"`` or ``"positive"``; a part using it reads the param's shape (``shaped=True``)."""

    def init(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
        return make(p, group)

    init.__name__ = f"own_shape({getattr(make, '__name__', 'init')})"
    init.layout = Layout.OWN  # type: ignore[attr-defined]
    return init


def full(hyper: str) -> Init:
    """Initialise to the value of hyper-parameter ``hyper`` (e.g. Adagrad's accumulator)."""

    def init(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
        return torch.full_like(p, group[hyper], memory_format=torch.preserve_format)

    init.__name__ = f"full({hyper})"
    init.layout = Layout.PARAM  # type: ignore[attr-defined]
    return init


@_laid_out(Layout.SCALAR)
def step_counter(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    """State init: torch.optim's step counter, a float32 0-d CPU tensor at 0."""
    # torch.optim's format: a float32 0-d tensor on the CPU, so reading it never waits for a device.
    return torch.tensor(0.0, dtype=torch.float32)


@_laid_out(Layout.SCALAR)
def zero_scalar(p: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
    """A 0-d zero with the param's dtype and device: one number per tensor (a layer-wise stat)."""
    return torch.zeros((), dtype=p.dtype, device=p.device)


@dataclasses.dataclass(frozen=True)
class Route:
    """Which tensors a part applies to: ``test(param, name) -> bool``, a host predicate of the
    param (its shape, dtype, ndim) and of its name (``""`` where the param group carries no
    ``param_names``), evaluated once per param, never on tensor values.

    ``~route`` is the complement (same ``label``, the opposite outcome): the recipe check treats
    two parts routed by one label with opposite outcomes as branches (both may provide the
    same field), and the executor buckets params by the outcome of every route of the recipe.
    """

    label: str
    test: Callable[[torch.Tensor, str], bool]
    holds: bool = True

    def __invert__(self) -> Route:
        return dataclasses.replace(self, holds=not self.holds)

    def __call__(self, p: torch.Tensor, name: str = "") -> bool:
        return bool(self.test(p, name)) == self.holds

    def __str__(self) -> str:
        return self.label if self.holds else f"not {self.label}"


def is_matrix(p: torch.Tensor, name: str = "") -> bool:
    """A param of two or more dimensions (a linear weight; a conv filter, seen as a matrix of
    ``shape[0]`` rows): Muon's default route."""
    return p.ndim >= 2


MATRIX = Route("matrix", is_matrix)


# The default of a gate hyper-parameter that the recipe must give (see ``Part.only_if``).
NO_DEFAULT: Any = type("NoDefault", (), {"__repr__": lambda self: "<no default>"})()


@dataclasses.dataclass(frozen=True)
class Part:
    """A stat or a stepper, with what it reads, provides and checks (see the module doc)."""

    fn: Callable[..., None]
    kind: str
    state: Mapping[str, Init]
    hypers: Mapping[str, Any]
    reads: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    rules: Mapping[str, Rule] = dataclasses.field(default_factory=dict)
    checks: tuple[GroupCheck, ...] = ()
    when: Callable[[Mapping[str, Any]], bool] | None = None
    label: str = ""
    # Hyper-parameters pinned by the recipe: passed as these constants, not read from the group.
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Hyper-parameters that only decide whether (or on which tensors) the part runs; they are
    # declared, so they are in the recipe's signature, but never passed to ``fn``.
    gates: tuple[str, ...] = ()
    # Reads each param's shape (gradient centralization's mean over a kernel's output units):
    # flat mode runs the recipe per tensor over the views, where the shapes are there.
    shaped: bool = False
    # The hyper-parameter ``k`` of a part that runs on a tensor only after every k-th step of
    # that tensor (Lookahead's sync). The executor decides on the host, from the CPU step
    # counters, and runs the part on those tensors outside any compiled graph; such a part
    # comes last in a recipe and reads state only. ``start`` shifts the schedule: the part
    # runs after steps ``start``, ``start + k``, ``start + 2k``... (0: after k, 2k...; SOAP's
    # eigenbases: 1, so that a param's first step initialises them).
    every: str | None = None
    start: int = 0
    # The hyper-parameter of a part that runs on a tensor at some of its steps only, as
    # ``due_at(group[due], t)`` says for the step ``t`` the tensor takes (PSGD Kron's factor
    # fit, on a schedule of update probabilities). Unlike ``every``, the part stays in the body
    # of the step, in order: the executor decides on the host, from the CPU step counters,
    # which tensors of a bucket it is due on before running the body, and runs the body with
    # the part on those and without it on the others (a compiled step: two graphs, each
    # compiled once). Such a part writes only state (it provides no field) and implies
    # ``shaped`` (its tensors are picked one by one); it may be ``whole`` (Kron's fit).
    due: str | None = None
    due_at: Callable[[Any, int], bool] | None = None
    # state name -> how a precision policy may store it, where declared (see the module doc)
    storage: Mapping[str, Storage] = dataclasses.field(default_factory=dict)
    # Needs each full tensor, not a shard (see the module doc); implies ``shaped``.
    whole: bool = False
    # the optimizer-wide sums this part returns (one 0-d tensor each, its bucket's local sum),
    # added up over every bucket for the barrier that follows (see the module doc)
    contributes: tuple[str, ...] = ()
    # optimizer-level values a barrier keeps in the param groups (or computes at the start of
    # the step), passed to ``fn`` like hyper-parameters but not keywords of the recipe
    group_values: tuple[str, ...] = ()
    # The tensors the part applies to (see :meth:`where`): every route must hold for a param.
    # The executor buckets params by the routes' outcomes, so a bucket runs only its parts.
    routes: tuple[Route, ...] = ()
    # ``"shape"``: the part runs on buckets whose params all have one shape (the executor adds
    # the shape to the bucket key), so its matrix math is one batched call per shape
    # (``torch.stack`` + ``bmm``) and a compiled step compiles once per shape. Implies
    # ``shaped``.
    batch: str | None = None
    # group key -> the function's keyword it is handed as (see :meth:`renamed`)
    renames: Mapping[str, str] = dataclasses.field(default_factory=dict)
    passed: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _args: tuple[tuple[str, str], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [name for name in self.provides if name not in FIELDS]
        if unknown:
            raise ValueError(
                f"{self.name} provides {unknown}, which are not per-step fields "
                f"({', '.join(FIELDS)}); per-parameter state is declared with state="
            )
        clash = [name for name in self.state if name in FIELDS]
        if clash:
            raise ValueError(f"{self.name}: state {clash} would shadow per-step fields")
        stray = [name for name in self.storage if name not in self.state]
        if stray:
            raise ValueError(f"{self.name}: storage declared for {stray}, which it does not create")
        object.__setattr__(self, "storage", {k: Storage(v) for k, v in self.storage.items()})
        if self.whole:
            if self.kind != "stat":
                raise ValueError(f"{self.name}: whole=True is for stats (a stepper writes "
                                 "each rank's own shard of the params)")
            object.__setattr__(self, "shaped", True)  # a full tensor has a shape to read
        if self.due is not None:
            if self.every is not None or self.provides or self.contributes or self.due_at is None:
                raise ValueError(f"{self.name}: due= is for a part of the step's body that "
                                 "provides no field, with a due_at test")
            object.__setattr__(self, "shaped", True)  # its tensors are picked one by one
        # the hyper-parameters handed to ``fn`` from the group, computed once
        object.__setattr__(self, "passed", tuple(k for k in self.hypers if k not in self.gates)
                           + tuple(self.group_values))
        object.__setattr__(self, "_args", tuple((self.renames.get(k, k), k) for k in self.passed))
        if self.batch not in (None, "shape"):
            raise ValueError(f"{self.name}: batch={self.batch!r}; the only batching is 'shape'")
        if self.batch is not None and not self.shaped:
            object.__setattr__(self, "shaped", True)

    @property
    def name(self) -> str:
        """The part's name in messages and listings: its label (``max_sqr_avg[amsgrad]``) or its
        function's name."""
        return self.label or self.fn.__name__

    def active(self, group: Mapping[str, Any]) -> bool:
        """Whether the part runs for this param group (always, unless switched by ``only_if``)."""
        return self.when is None or bool(self.when(group))

    def only_if(
        self, hyper: str, test: Callable[[Any], bool] = bool, default: Any = NO_DEFAULT
    ) -> Part:
        """The same part, run only for param groups where ``test(group[hyper])`` holds.

        This is how a recipe switches on a variant (``amsgrad``, ``centered``, ``momentum > 0``)
        without a flag inside the update math: the part and its state exist only when used.
        A ``hyper`` the part does not read itself (AMSGrad's ``amsgrad``) becomes a gate: it is
        declared, with ``default`` or the recipe's own default, but not passed to the part.
        """
        gates, hypers = self.gates, self.hypers
        if hyper not in hypers:
            hypers, gates = {**hypers, hyper: default}, (*gates, hyper)
        elif default is not NO_DEFAULT:
            hypers = {**hypers, hyper: default}
        previous = self.when

        def when(group: Mapping[str, Any]) -> bool:
            return (previous is None or previous(group)) and test(group[hyper])

        return dataclasses.replace(
            self, when=when, label=f"{self.name}[{hyper}]", hypers=hypers, gates=gates
        )

    def where(self, predicate: Route | Callable[[torch.Tensor, str], bool],
              label: str | None = None) -> Part:
        """The same part, run only on the params for which ``predicate(param, name)`` holds.

        ``predicate`` is a :class:`Route` (``MATRIX``, ``~MATRIX``) or a function of the param
        and its name (``label`` names it; default: the function's name). It is evaluated on the
        host, once per param, and its outcome joins the bucket key: a bucket holds params with
        the same outcome of every route of the recipe and runs the parts routed to them. Two
        parts routed by one label with opposite outcomes are branches: both may create or
        provide the same state or field (``muon_step.where(MATRIX)`` and
        ``adam_step.where(~MATRIX)``). A recipe without routes buckets as before.
        """
        route = predicate if isinstance(predicate, Route) else Route(
            label or getattr(predicate, "__name__", "where"), predicate)
        return dataclasses.replace(self, routes=(*self.routes, route),
                                   label=f"{self.name}[{route}]")

    def applies(self, outcome: Mapping[str, bool]) -> bool:
        """Whether the part runs on params whose routes came out as ``outcome`` (label ->
        whether the route's test held)."""
        return all(outcome[route.label] == route.holds for route in self.routes)

    def renamed(self, **keys: str) -> Part:
        """The same part reading its hyper-parameters under other names in the group:
        ``adam_step.renamed(lr="adam_lr")`` hands ``group["adam_lr"]`` to the function as
        ``lr``. A recipe uses it to run one part twice with separate hypers (Muon's AdamW
        branch). Rules and defaults follow the new names."""
        unknown = set(keys) - set(self.passed)
        if unknown:
            raise ValueError(f"{self.name} does not read hyper-parameters {sorted(unknown)}")
        hypers = {keys.get(k, k): v for k, v in self.hypers.items()}
        rules = {keys.get(k, k): v for k, v in self.rules.items()}
        renames = {keys.get(k, k): self.renames.get(k, k) for k in self.hypers}
        renames = {k: v for k, v in renames.items() if k != v}
        return dataclasses.replace(self, hypers=hypers, rules=rules, renames=renames)

    def with_fixed(self, **values: Any) -> Part:
        """The same part with some hyper-parameters pinned to constants.

        A recipe uses it where a shared part must not read a group hyper of the same name,
        e.g. LAMB's trust ratio takes ``eps=0`` while the group's ``eps`` belongs to Adam's
        direction. Pinned names leave the part's ``hypers`` (and so the recipe's signature).
        """
        unknown = set(values) - set(self.passed)
        if unknown:
            raise ValueError(f"{self.name} does not read hyper-parameters {sorted(unknown)}")
        kept = {k: v for k, v in self.hypers.items() if k not in values}
        rules = {k: v for k, v in self.rules.items() if k not in values}
        return dataclasses.replace(self, hypers=kept, rules=rules, fixed={**self.fixed, **values})

    def signature_problems(self) -> list[str]:
        """How ``fn``'s keyword parameters disagree with the declared hyper-parameters."""
        try:
            params = list(inspect.signature(self.fn).parameters.values())[1:]
        except (TypeError, ValueError):
            return []
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return []
        taken = {p.name for p in params}
        given = {arg for arg, _ in self._args} | set(self.fixed)
        problems = [f"reads hyper-parameter {name!r}, which it does not declare"
                    for name in sorted(taken - given)]
        problems += [f"declares hyper-parameter {name!r}, which its function does not take"
                     for name in sorted(given - taken)]
        problems += [f"has a rule for {name!r}, which it does not declare"
                     for name in sorted(set(self.rules) - set(self.hypers))]
        return problems

    def __call__(self, bucket, group: Mapping[str, Any]) -> Any:
        if contract.ENFORCED and not torch.compiler.is_compiling():
            bucket = contract.guard(bucket, self)  # the test suite's run-time check
            out = self.fn(bucket, **self.fixed, **{arg: group[key] for arg, key in self._args})
            if self.contributes and (not isinstance(out, tuple)
                                     or len(out) != len(self.contributes)):
                raise contract.ContractViolation(
                    f"part {self.name} contributes {self.contributes}: it must return a tuple "
                    f"of one tensor for each, got {type(out).__name__}")
            return out
        return self.fn(bucket, **self.fixed, **{arg: group[key] for arg, key in self._args})

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


def implied_storage(init: Init) -> Storage:
    """How a state no part declares a storage for may be stored: a counter, a per-tensor
    scalar, or else exact (never narrowed, never quantized)."""
    if init is step_counter:
        return Storage.COUNTER
    if init is zero_scalar:
        return Storage.SCALAR
    return Storage.EXACT


def _declare(kind: str, state, reads, provides, overrides, rules, checks, shaped, every,
             hypers, storage=None, contributes=(), group_values=(), whole=False,
             batch=None, start=0, due=None):
    def wrap(fn: Callable[..., None]) -> Part:
        gates = ()
        if every is not None:
            if every not in hypers:
                raise ValueError(f"{fn.__name__}: every={every!r} names no declared hyper")
            gates = (every,)
        due_name, due_at = due if due is not None else (None, None)
        if due_name is not None:
            if due_name not in hypers:
                raise ValueError(f"{fn.__name__}: due={due_name!r} names no declared hyper")
            gates = (*gates, due_name)
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"{fn.__name__}: start={start!r} is not an integer >= 0")
        if start and every is None:
            raise ValueError(f"{fn.__name__}: start={start!r} needs every=")
        return Part(
            fn=fn, kind=kind, state=dict(state or {}), hypers=dict(hypers),
            reads=tuple(reads), provides=tuple(provides), overrides=tuple(overrides),
            rules=dict(rules or {}), checks=tuple(checks), shaped=shaped, every=every,
            gates=gates, storage=dict(storage or {}), contributes=tuple(contributes),
            group_values=tuple(group_values), whole=whole, batch=batch, start=start,
            due=due_name, due_at=due_at,
        )

    return wrap


def stat(
    state: Mapping[str, Init] | None = None, *, reads=(), provides=(), overrides=(),
    rules: Mapping[str, Rule] | None = None, checks=(), shaped: bool = False,
    every: str | None = None, start: int = 0, storage: Mapping[str, str] | None = None,
    contributes=(), group_values=(), whole: bool = False, batch: str | None = None,
    due: tuple[str, Callable[[Any, int], bool]] | None = None, **hypers: Any,
):
    """Declare a stat: ``@stat(state={"grad_avg": zeros}, storage={"grad_avg": "signed"},
    provides=("first_moment",), rules=dict(betas=betas), betas=(0.9, 0.999))``.

    ``shaped=True`` marks a stat that reads each param's shape (not just its elements), so
    that flat mode, whose buffers hold every param in ``[rows, CHUNK]`` rows, runs it per
    tensor. Per-param reductions (norms, dot products) go through the bucket
    (``b.norms``, ``b.sum_squares``, ``b.dots``, ``b.expand``) and need no flag.

    ``whole=True`` (implies ``shaped``) marks a stat that needs each full tensor: under FSDP2 it
    runs on one owner rank per tensor, on the gathered tensors of the fields and states it
    declares, instead of on each rank's shard (see the module doc); host-gated (``every``)
    too, on the due tensors.

    ``batch="shape"`` marks a stat whose math is per matrix (Muon's Newton-Schulz): the
    executor hands it buckets of params of one shape, so it stacks them into one
    ``[n, rows, cols]`` tensor and runs one batched call (``torch.bmm``) per shape, and a
    compiled step compiles once per shape, not unrolled per tensor (:func:`same_shapes`
    groups a list that may still mix shapes).

    ``every="k"`` (a hyper-parameter's name) makes a host-gated part: it runs after the
    recipe's other parts, eagerly and outside any compiled graph, on the tensors whose step
    count ``t`` (after this step) satisfies ``t >= start`` and ``(t - start) % k == 0``
    (``start=0``: after steps k, 2k...). It comes last in the recipe and reads state only
    (``reads=`` may name states of earlier parts, which it may write in place: a precision
    policy hands it working copies of them, as of its own ``state``).

    ``due=("h", due_at)`` makes a scheduled part of the body: it runs, in its place among the
    parts, on the tensors for which ``due_at(group["h"], t)`` holds, ``t`` the step count the
    tensor takes at this step (its count before the step plus one; the recipe counts its steps
    with ``step_stat``). The executor decides on the host, from the CPU step counters, before
    the body runs; compiled, the body with the part and the body without it are two graphs.
    ``due_at`` must be a pure function of the hyper's value and ``t`` (no state of its own),
    so that a checkpoint resumes on the same schedule. Such a part provides no field.
    """
    return _declare("stat", state, reads, provides, overrides, rules, checks, shaped, every,
                    hypers, storage, contributes, group_values, whole, batch, start, due)


def same_shapes(tensors) -> list[tuple[tuple[int, ...], list[int]]]:
    """The indices of ``tensors`` grouped by shape, in first-seen order: ``[(shape, [i, ...]),
    ...]``. A ``batch="shape"`` part gets one shape per bucket from the executor; this keeps
    it right where a caller hands it a mixed list (the closed-form tests, a user's bucket).
    Shapes are static, so under ``torch.compile`` this runs at trace time only."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):  # a tensor, or a shape (``Bucket.shapes``)
        groups.setdefault(tuple(t) if isinstance(t, tuple) else tuple(t.shape), []).append(i)
    return list(groups.items())


def stepper(
    state: Mapping[str, Init] | None = None, *, reads=(), provides=(), overrides=(),
    rules: Mapping[str, Rule] | None = None, checks=(), every: str | None = None,
    start: int = 0, storage: Mapping[str, str] | None = None, contributes=(),
    group_values=(), **hypers: Any,
):
    """Declare a stepper: a part that writes the params (same keywords as :func:`stat`)."""
    return _declare("stepper", state, reads, provides, overrides, rules, checks, False, every,
                    hypers, storage, contributes, group_values, start=start)


@dataclasses.dataclass(frozen=True)
class Barrier:
    """A reduction over the whole optimizer between two phases of a recipe (see the module
    doc): ``fn(totals, groups)`` gets the ``sums`` the phase-1 parts contributed, added up
    over every bucket (Python floats), and writes the optimizer-level ``values`` into every
    param group; returning ``False`` ends the step before phase 2."""

    fn: Callable[..., Any]
    sums: tuple[str, ...]
    # name -> its initial value, made from the group's hyper-parameters (``d`` from ``d0``)
    values: Mapping[str, Callable[[Mapping[str, Any]], Any]]
    hypers: Mapping[str, Any]
    # values computed from the param groups before phase 1, never saved (Prodigy's ``dlr``)
    start: Callable[[Sequence[Mapping[str, Any]]], Mapping[str, Any]] | None = None
    derived: tuple[str, ...] = ()
    rules: Mapping[str, Rule] = dataclasses.field(default_factory=dict)
    checks: tuple[GroupCheck, ...] = ()
    kind: str = "barrier"
    label: str = ""
    # what a Part carries, so that recipe-wide code may treat a barrier as one
    state: Mapping[str, Init] = dataclasses.field(default_factory=dict)
    reads: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    storage: Mapping[str, Storage] = dataclasses.field(default_factory=dict)
    gates: tuple[str, ...] = ()
    every: str | None = None
    due: str | None = None
    shaped: bool = False
    start: int = 0
    when: Callable[[Mapping[str, Any]], bool] | None = None
    contributes: tuple[str, ...] = ()
    group_values: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """The barrier's name in messages and listings."""
        return self.label or self.fn.__name__

    @property
    def passed(self) -> tuple[str, ...]:
        """None: the barrier reads what it needs from the param groups themselves."""
        return ()

    def active(self, group: Mapping[str, Any]) -> bool:
        """Always: a barrier ends every phase, for every group."""
        return True

    def signature_problems(self) -> list[str]:
        """None: a barrier reads its hyper-parameters from the groups it is given."""
        return []

    def __repr__(self) -> str:
        return f"<barrier {self.name}>"


def barrier(*, sums: Sequence[str], values: Mapping[str, Callable[[Mapping[str, Any]], Any]],
            start: Callable[[Sequence[Mapping[str, Any]]], Mapping[str, Any]] | None = None,
            derived: Sequence[str] = (), rules: Mapping[str, Rule] | None = None, checks=(),
            **hypers: Any):
    """Declare a barrier: ``@barrier(sums=("d_denom",), values={"d": lambda g: g["d0"]},
    start=prodigy_start, derived=("dlr",), d0=1e-6)`` over ``fn(totals, groups)`` (see the
    module doc). ``hypers`` are its keywords with their defaults, read from the groups."""

    def wrap(fn: Callable[..., Any]) -> Barrier:
        return Barrier(fn=fn, sums=tuple(sums), values=dict(values), hypers=dict(hypers),
                       start=start, derived=tuple(derived), rules=dict(rules or {}),
                       checks=tuple(checks))

    return wrap


def transition(*, reads=(), rules: Mapping[str, Rule] | None = None, **hypers: Any):
    """Declare a transition: what ``optimizer.train()`` or ``optimizer.eval()`` does to the params
    of a bucket, e.g. ``@transition(reads=("z",), betas=(0.9, 0.999))``.

    It reads state only (``reads``: names the recipe's parts create, checked by the recipe) and
    writes the params; its hyper-parameters are read from the param group, as a part's. It runs
    eagerly on buckets of the params that have that state (a param that never stepped is left
    as it is), between the precision policy's ``prepare`` and ``finalize``, so a Kahan
    compensation or stochastic rounding applies to what it writes. ``bucket.grads`` is empty.
    """
    fields = [name for name in reads if name in FIELDS]
    if fields:
        raise ValueError(f"a transition reads state only, not the per-step fields {fields}")
    return _declare("transition", None, reads, (), (), rules, (), False, None, hypers)


def parts_of(package: str, path: list[str]) -> dict[str, Part]:
    """Every part defined in the modules of ``package``, by name, modules in alphabetical
    order: what ``optimkit.stats`` and ``optimkit.steppers`` export, so that a new part needs
    no export list."""
    import importlib
    import pkgutil

    found: dict[str, Part] = {}
    for info in sorted(pkgutil.iter_modules(path), key=lambda info: info.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, Part) and value.fn.__module__ == module.__name__:
                found.setdefault(name, value)
    return found
