"""A recipe checked as a whole: its parts in order, their state, hyper-parameters and rules.

:func:`check_recipe` runs when an :class:`optimkit.Optimizer` subclass is created, so a miswired
recipe fails at import time with a ``TypeError`` naming the part, not at its first ``step()``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from .parts import NO_DEFAULT, Barrier, Init, Part, implied_storage, layout_of
from .policy import Layout, Storage
from .rules import GroupCheck, Rule, like_default
from .tensorlists import FIELDS, INITIAL_FIELDS


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a checked recipe hands to the optimizer and its executor."""

    parts: tuple[Part, ...]
    state_inits: Mapping[str, Init]
    hypers: Mapping[str, Any]
    rules: Mapping[str, tuple[Rule, ...]]
    checks: tuple[GroupCheck, ...]
    # state name -> how a precision policy may store it (declared by the parts)
    storage: Mapping[str, Storage] = dataclasses.field(default_factory=dict)
    # state name -> how it lines up with its param (declared by its init)
    layouts: Mapping[str, Layout] = dataclasses.field(default_factory=dict)
    # the parts between barriers (one phase: a recipe without a barrier) and the barriers
    phases: tuple[tuple[Part, ...], ...] = ()
    barriers: tuple[Barrier, ...] = ()

    def initial_values(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The optimizer-level values the barriers keep in every param group, as they start
        (from the group's hyper-parameters ``defaults``)."""
        return {name: init(defaults) for barrier in self.barriers
                for name, init in barrier.values.items()}
    # "train" / "eval" -> the transition ``optimizer.train()`` / ``eval()`` runs (none: no-ops)
    transitions: Mapping[str, Part] = dataclasses.field(default_factory=dict)

    def validate(self, group: Mapping[str, Any]) -> None:
        """Check a param group (``ValueError`` naming the hyper-parameter on a bad value): each
        hyper-parameter's type and arity against the recipe's default (:func:`like_default`),
        then every part's rules and checks. Keys that are not hyper-parameters (``params``,
        ``param_names``, ``initial_lr``, ...) are left alone."""
        for name, value in group.items():
            if name in self.hypers:
                like_default(name, value, self.hypers[name])
        for name, value in group.items():
            for rule in self.rules.get(name, ()):
                rule(name, value)
        for check in self.checks:
            check(group)


def check_recipe(owner: str, parts: Iterable[Any], own_hypers: Mapping[str, Any],
                 transitions: Mapping[str, Any] | None = None) -> Recipe:
    """Check ``parts`` in order; return the recipe's state, defaults and rules.

    Raises ``TypeError`` naming the part for: a read of a state name or field that no earlier
    part provides; two parts creating one state, or providing one field, unless the later one
    declares it in ``overrides``; a part regularising ``grads`` after the update was provided
    (the change would not reach it); a hyper-parameter a part's function takes but does not
    declare; a host-gated (``every``) part that is not last; a recipe default read by no part;
    ``transitions`` that are not both ``"train"`` and ``"eval"`` transitions (:func:`transition
    <optimkit.core.parts.transition>`), or one that reads a state no part creates or a
    hyper-parameter no part declares.
    """
    everything = tuple(parts)
    phases: list[tuple[Part, ...]] = [()]
    barriers: list[Barrier] = []
    for part in everything:
        if isinstance(part, Barrier):
            if not phases[-1]:
                raise TypeError(f"{owner}: barrier {part.name} has no part before it")
            barriers.append(part)
            phases.append(())
            continue
        if not isinstance(part, Part):
            raise TypeError(f"{owner}: parts must be stats, steppers and barriers, got {part!r}")
        for problem in part.signature_problems():
            raise TypeError(f"{owner}: part {part.name} {problem}")
        phases[-1] += (part,)
    if barriers and not phases[-1]:
        raise TypeError(f"{owner}: barrier {barriers[-1].name} has no part after it")
    _check_barriers(owner, phases, barriers)
    parts = tuple(part for phase in phases for part in phase)
    state_inits = _check_order(owner, everything)
    hypers = _collect_hypers(owner, everything, own_hypers)
    rules: dict[str, tuple[Rule, ...]] = {}
    checks: list[GroupCheck] = []
    for part in everything:
        for name, rule in part.rules.items():
            if rule not in rules.get(name, ()):
                rules[name] = (*rules.get(name, ()), rule)
        checks += [check for check in part.checks if check not in checks]
    storage: dict[str, Storage] = {}
    for part in parts:
        for name, kind in part.storage.items():
            if storage.setdefault(name, kind) is not kind:
                raise TypeError(
                    f"{owner}: parts disagree on how state {name!r} may be stored "
                    f"({storage[name].value} vs {kind.value} in {part.name})"
                )
    for name, init in state_inits.items():
        storage.setdefault(name, implied_storage(init))
    layouts = {name: layout_of(init) for name, init in state_inits.items()}
    moves = _check_transitions(owner, transitions or {}, state_inits, hypers)
    return Recipe(parts, state_inits, hypers, rules, tuple(checks), storage, layouts,
                  tuple(phases), tuple(barriers), moves)


def _check_barriers(owner: str, phases: list[tuple[Part, ...]], barriers: list[Barrier]) -> None:
    """Every sum a barrier takes is contributed by a part of the phase before it, every
    contribution is taken, and every group value a part reads is one a barrier keeps."""
    kept = {name for b in barriers for name in (*b.values, *b.derived)}
    for index, phase in enumerate(phases):
        given = {name for part in phase for name in part.contributes}
        taken = set(barriers[index].sums) if index < len(barriers) else set()
        if given - taken:
            raise TypeError(f"{owner}: parts contribute {sorted(given - taken)}, which no "
                            "barrier right after them takes")
        if taken - given:
            raise TypeError(f"{owner}: barrier {barriers[index].name} takes sums "
                            f"{sorted(taken - given)}, which no part before it contributes")
        for part in phase:
            unknown = set(part.group_values) - kept
            if unknown:
                raise TypeError(f"{owner}: part {part.name} reads group values "
                                f"{sorted(unknown)}, which no barrier of the recipe keeps")



def _check_transitions(owner: str, transitions: Mapping[str, Any], state_inits: Mapping,
                       hypers: Mapping[str, Any]) -> dict[str, Part]:
    if not transitions:
        return {}
    if set(transitions) != {"train", "eval"}:
        raise TypeError(f"{owner}: transitions must name 'train' and 'eval', got "
                        f"{sorted(transitions)}")
    for mode, part in transitions.items():
        if not isinstance(part, Part) or part.kind != "transition":
            raise TypeError(f"{owner}: transition {mode!r} must be declared with "
                            f"@transition, got {part!r}")
        for problem in part.signature_problems():
            raise TypeError(f"{owner}: transition {part.name} {problem}")
        for name in part.reads:
            if name not in state_inits:
                raise TypeError(f"{owner}: transition {part.name} reads state {name!r}, which "
                                "no part of the recipe creates")
        for name in part.hypers:
            if name not in hypers:
                raise TypeError(f"{owner}: transition {part.name} reads hyper-parameter "
                                f"{name!r}, which no part of the recipe declares")
    return dict(transitions)


def _disjoint(a: Part, b: Part) -> bool:
    """Whether two parts never run on one param: routed by one label with opposite outcomes."""
    mine = {route.label: route.holds for route in a.routes}
    return any(mine.get(route.label, route.holds) != route.holds for route in b.routes)


def _covered(reader: Part, writers: list[Part], labels: tuple[str, ...]) -> bool:
    """Whether, on every branch ``reader`` runs on (each outcome of the recipe's routes that
    its own routes allow), some part of ``writers`` runs too. Without routes: any writer."""
    if not writers:
        return False
    if not labels:
        return True
    for outcome in itertools.product((False, True), repeat=len(labels)):
        branch = dict(zip(labels, outcome, strict=True))
        if reader.applies(branch) and not any(w.applies(branch) for w in writers):
            return False
    return True


def _check_order(owner: str, parts: tuple[Part, ...]) -> dict[str, Init]:
    inits: dict[str, Init] = {}
    # state name / field -> the parts writing it so far ("" entries: the bucket itself)
    bucket = Part(fn=_bucket_fields, kind="stat", state={}, hypers={}, label="")
    state_by: dict[str, list[Part]] = {}
    field_by: dict[str, list[Part]] = {name: [bucket] for name in INITIAL_FIELDS}
    tests: dict[str, Any] = {}
    for part in parts:
        for route in getattr(part, "routes", ()):  # (a barrier has none)
            if tests.setdefault(route.label, route.test) is not route.test:
                raise TypeError(f"{owner}: two routes are labelled {route.label!r} "
                                f"(in {part.name}); give each test its own label")
    labels = tuple(tests)
    host_gated = None
    for part in parts:
        if isinstance(part, Barrier):
            # per-step fields do not cross a barrier: phase 2 starts from the gradient again
            field_by = {name: [bucket] for name in INITIAL_FIELDS}
            continue
        if host_gated is not None and part.every is None:
            raise TypeError(
                f"{owner}: part {host_gated} runs every k-th step outside the compiled step, "
                f"so it must come last; {part.name} follows it"
            )
        if part.every is not None:
            host_gated = part.name
            fields = [name for name in part.reads if name in FIELDS]
            if fields:
                raise TypeError(f"{owner}: part {part.name} runs every k-th step and may read "
                                f"state only, not the per-step fields {fields}")
        for name in part.reads:
            writers = state_by.get(name, []) + field_by.get(name, [])
            if not _covered(part, writers, labels):
                hint = (f"a per-step field: {FIELDS[name]}" if name in FIELDS
                        else "a state name no earlier part declares")
                branch = " on every branch it runs on" if writers else ""
                raise TypeError(
                    f"{owner}: part {part.name} reads {name!r}, which no earlier part provides"
                    f"{branch} ({hint})"
                )
        for name, init in part.state.items():
            clash = [w for w in state_by.get(name, []) if not _disjoint(w, part)]
            if clash and name not in part.overrides:
                raise TypeError(
                    f"{owner}: parts {clash[-1].name} and {part.name} both write state "
                    f"{name!r}; declare overrides=({name!r},) on {part.name} if it replaces it"
                )
            if name in inits and inits[name] is not init:
                raise TypeError(
                    f"{owner}: parts disagree on how state {name!r} starts "
                    f"({inits[name].__name__} vs {init.__name__})"
                )
            inits[name] = init
            state_by.setdefault(name, []).append(part)
        for name in part.provides:
            updates = [w for w in field_by.get("update", [])
                       if w is not bucket and not _disjoint(w, part)]
            if name == "grads" and updates:
                raise TypeError(
                    f"{owner}: part {part.name} changes the gradient after "
                    f"{updates[-1].name} provided the update, which it would not reach; "
                    "use a part that changes the update"
                )
            earlier = [w for w in field_by.get(name, [])
                       if w is not bucket and not _disjoint(w, part)]
            if earlier and name != "grads" and name not in part.reads and (
                name not in part.overrides
            ):
                raise TypeError(
                    f"{owner}: parts {earlier[-1].name} and {part.name} both provide {name!r}; "
                    f"declare overrides=({name!r},) on {part.name} if it replaces it"
                )
            field_by.setdefault(name, []).append(part)
    return inits


def _bucket_fields(b) -> None:
    """Stands for the bucket, which provides the initial fields on every branch."""


def _collect_hypers(owner: str, parts: tuple[Part, ...], own: Mapping[str, Any]) -> dict:
    read: dict[str, Any] = {}
    for part in parts:
        for name, default in part.hypers.items():
            if read.get(name, NO_DEFAULT) is NO_DEFAULT:
                read[name] = default
    unused = set(own) - set(read)
    if unused:
        raise TypeError(f"{owner}: hypers {sorted(unused)} are read by no part")
    hypers = {**own, **{k: v for k, v in read.items() if k not in own}}
    missing = [k for k, v in hypers.items() if v is NO_DEFAULT]
    if missing:
        raise TypeError(
            f"{owner}: hyper-parameters {missing} switch parts on or off but have no default; "
            "give one in the recipe's hypers"
        )
    return hypers
