"""The public API the reference documents, found at runtime (shared by the docs hooks).

A module's public names are its ``__all__``, or, without one, the public names it defines
itself. ``optimkit``'s own ``__all__`` re-exports these modules' names.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

# (module, page title); each gets a reference page, in this order
MODULES = [
    ("optimkit.registry", "Catalogue: create, available"),
    ("optimkit.core", "Engine: optimkit.core"),
    ("optimkit.stats", "Parts: stats"),
    ("optimkit.steppers", "Parts: steppers"),
    ("optimkit.recipes", "Recipes"),
    ("optimkit.wrappers", "Wrappers: Lookahead"),
    ("optimkit.schedules", "Schedules and 1cycle"),
    ("optimkit.training", "Training: LR finder, Selective-Backprop, param groups, evaluating"),
    ("optimkit.precision", "Precision"),
]
BENCH = "optimkit.bench"


def bench_modules() -> list[str]:
    package = importlib.import_module(BENCH)
    return [f"{BENCH}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]


def all_modules() -> list[str]:
    return [name for name, _ in MODULES] + [BENCH, *bench_modules()]


def public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


def docstring(obj: object) -> str | None:
    """The object's own docstring (a part's is its function's; a class's is not inherited)."""
    fn = getattr(obj, "fn", None)
    if fn is not None and type(obj).__name__ == "Part":
        return fn.__doc__
    if inspect.isclass(obj) or inspect.ismodule(obj):
        return obj.__dict__.get("__doc__")
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return obj.__doc__
    return None  # data (constants, dicts): documented by their module


def needs_docstring(obj: object) -> bool:
    return (
        inspect.isclass(obj) or inspect.ismodule(obj) or inspect.isfunction(obj)
        or type(obj).__name__ == "Part"
    )


def defining_path(obj: object) -> str | None:
    if type(obj).__name__ == "Part":
        obj = obj.fn
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if inspect.ismodule(obj):
        return obj.__name__
    return f"{module}.{qualname}" if module and qualname else None


def methods(cls: type) -> list[tuple[str, object]]:
    """The public methods and properties a class defines itself."""
    found = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            found.append((name, value.fget))
        elif isinstance(value, (staticmethod, classmethod)):
            found.append((name, value.__func__))
        elif inspect.isfunction(value):
            found.append((name, value))
    return found
