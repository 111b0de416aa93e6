"""optimkit: deep-learning optimizers built from stats and steppers over tensor lists.

The names below load on first use (PEP 562), so ``import optimkit`` and the ``optimkit``
command start without importing torch; ``optimkit.Adam`` imports what it needs. Every name of
the engine (``core``), the recipes and the wrappers comes from that package's own ``__all__``,
so a new optimizer in ``recipes.py`` needs no change here.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# packages whose whole export list is re-exported here
_PACKAGES = ("core", "recipes", "wrappers")
# the other names: name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "available": "registry",
    "create": "registry",
    "OneCycle": "schedules",
    "SelectiveBackprop": "training",
    "evaluating": "training",
    "lr_find": "training",
    "param_groups": "training",
}
_SUBMODULES = ("schedules", "stats", "steppers")


def _package_exports() -> dict[str, str]:
    """name -> the package of ``_PACKAGES`` exporting it (imports them, and so torch)."""
    return {
        name: package
        for package in _PACKAGES
        for name in importlib.import_module(f".{package}", __name__).__all__
    }


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = sorted({*_package_exports(), *_EXPORTS, *_SUBMODULES}, key=str.lower)
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        value = importlib.import_module(f".{name}", __name__)  # e.g. optimkit.registry
    else:
        package = _package_exports().get(name)
        if package is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{package}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})


if TYPE_CHECKING:  # for type checkers and IDEs; the runtime loads these lazily
    from . import schedules, stats, steppers
    from .core import *  # noqa: F403
    from .recipes import *  # noqa: F403
    from .registry import available, create
    from .schedules import OneCycle
    from .training import SelectiveBackprop, evaluating, lr_find, param_groups
    from .wrappers import *  # noqa: F403
