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
  quantized, so a new part is never quantized by accident.

A recipe (:class:`optimkit.Optimizer` subclass) is checked against these declarations when
its class is created: a read that no earlier part provides, two parts creating one state, a
hyper-parameter the function takes but does not declare all raise ``TypeError`` naming the part.
What a part touches when it runs is checked in the test suite (:mod:`optimkit.core.contract`):
a state or field it does not declare raises ``ContractViolation`` naming the part.

A *stat* updates state (``grad_avg``, ``sqr_avg``, ``step``...), a *stepper* writes the params.
Neither may modify ``p.grad``: a part that changes the gradient provides ``grads`` as a new list.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
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
    # state name -> how a precision policy may store it, where declared (see the module doc)
    storage: Mapping[str, Storage] = dataclasses.field(default_factory=dict)
    passed: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)

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
        # the hyper-parameters handed to ``fn`` from the group, computed once
        object.__setattr__(self, "passed", tuple(k for k in self.hypers if k not in self.gates))

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
        given = set(self.passed) | set(self.fixed)
        problems = [f"reads hyper-parameter {name!r}, which it does not declare"
                    for name in sorted(taken - given)]
        problems += [f"declares hyper-parameter {name!r}, which its function does not take"
                     for name in sorted(given - taken)]
        problems += [f"has a rule for {name!r}, which it does not declare"
                     for name in sorted(set(self.rules) - set(self.hypers))]
        return problems

    def __call__(self, bucket, group: Mapping[str, Any]) -> None:
        if contract.ENFORCED and not torch.compiler.is_compiling():
            bucket = contract.guard(bucket, self)  # the test suite's run-time check
        self.fn(bucket, **self.fixed, **{k: group[k] for k in self.passed})

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
             hypers, storage=None, start=0):
    def wrap(fn: Callable[..., None]) -> Part:
        gates = ()
        if every is not None:
            if every not in hypers:
                raise ValueError(f"{fn.__name__}: every={every!r} names no declared hyper")
            gates = (every,)
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"{fn.__name__}: start={start!r} is not an integer >= 0")
        if start and every is None:
            raise ValueError(f"{fn.__name__}: start={start!r} needs every=")
        return Part(
            fn=fn, kind=kind, state=dict(state or {}), hypers=dict(hypers),
            reads=tuple(reads), provides=tuple(provides), overrides=tuple(overrides),
            rules=dict(rules or {}), checks=tuple(checks), shaped=shaped, every=every,
            gates=gates, storage=dict(storage or {}), start=start,
        )

    return wrap


def stat(
    state: Mapping[str, Init] | None = None, *, reads=(), provides=(), overrides=(),
    rules: Mapping[str, Rule] | None = None, checks=(), shaped: bool = False,
    every: str | None = None, start: int = 0, storage: Mapping[str, str] | None = None,
    **hypers: Any,
):
    """Declare a stat: ``@stat(state={"grad_avg": zeros}, storage={"grad_avg": "signed"},
    provides=("first_moment",), rules=dict(betas=betas), betas=(0.9, 0.999))``.

    ``shaped=True`` marks a stat that reads each param's shape (not just its elements), so
    that flat mode, whose buffers hold every param in ``[rows, CHUNK]`` rows, runs it per
    tensor. Per-param reductions (norms, dot products) go through the bucket
    (``b.norms``, ``b.sum_squares``, ``b.dots``, ``b.expand``) and need no flag.

    ``every="k"`` (a hyper-parameter's name) makes a host-gated part: it runs after the
    recipe's other parts, eagerly and outside any compiled graph, on the tensors whose step
    count ``t`` (after this step) satisfies ``t >= start`` and ``(t - start) % k == 0``
    (``start=0``: after steps k, 2k...). It comes last in the recipe and reads state only
    (``reads=`` may name states of earlier parts, which it may write in place: a precision
    policy hands it working copies of them, as of its own ``state``).
    """
    return _declare("stat", state, reads, provides, overrides, rules, checks, shaped, every,
                    hypers, storage, start)


def stepper(
    state: Mapping[str, Init] | None = None, *, reads=(), provides=(), overrides=(),
    rules: Mapping[str, Rule] | None = None, checks=(), every: str | None = None,
    start: int = 0, storage: Mapping[str, str] | None = None, **hypers: Any,
):
    """Declare a stepper: a part that writes the params (same keywords as :func:`stat`)."""
    return _declare("stepper", state, reads, provides, overrides, rules, checks, False, every,
                    hypers, storage, start)


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
