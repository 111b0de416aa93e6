"""MkDocs hook (and script): every public name has a docstring and a place in the reference.

mkdocstrings renders a name without a docstring silently, so this check fails the build on:

* a public name (a module's ``__all__``, or the public names it defines) of the documented
  modules (``public_api.py``) that is a class, function, part or module without a docstring;
* a public method or property of such a class (outside ``optimkit.bench``) without one (its
  own or inherited);
* a public name with no anchor in the built site (``on_post_build``).

``python docs/hooks/check_public.py`` runs the docstring checks alone.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import public_api  # noqa: E402


def _inherited_doc(cls: type, name: str) -> bool:
    return any(
        (getattr(getattr(base, name, None), "__doc__", None) or "").strip()
        for base in cls.__mro__[1:]
        if base is not object and name in vars(base)
    )


def missing_docstrings() -> list[str]:
    problems = []
    import optimkit

    modules = [(m, importlib.import_module(m)) for m in public_api.all_modules()]
    for name in optimkit.__all__:
        obj = getattr(optimkit, name)
        if public_api.needs_docstring(obj) and not (public_api.docstring(obj) or "").strip():
            problems.append(f"optimkit.{name}: no docstring")
    for module_name, module in modules:
        if not (module.__doc__ or "").strip():
            problems.append(f"{module_name}: module without a docstring")
        for name in public_api.public_names(module):
            obj = getattr(module, name)
            path = f"{module_name}.{name}"
            if public_api.needs_docstring(obj) and not (public_api.docstring(obj) or "").strip():
                problems.append(f"{path}: no docstring")
            if inspect.isclass(obj) and not module_name.startswith(public_api.BENCH):
                for method, fn in public_api.methods(obj):
                    if not (getattr(fn, "__doc__", None) or "").strip() \
                            and not _inherited_doc(obj, method):
                        problems.append(f"{path}.{method}: no docstring")
    return sorted(set(problems))


def missing_anchors(site_dir: Path) -> list[str]:
    anchors = set()
    for page in site_dir.rglob("*.html"):
        anchors.update(re.findall(r'id="([A-Za-z_][\w.]*)"', page.read_text(encoding="utf-8")))
    problems = []
    import optimkit

    scopes = [("optimkit", optimkit, optimkit.__all__)] + [
        (m, mod, public_api.public_names(mod))
        for m in public_api.all_modules()
        for mod in [importlib.import_module(m)]
    ]
    for module_name, module, names in scopes:
        for name in names:
            obj = getattr(module, name)
            candidates = {f"{module_name}.{name}", public_api.defining_path(obj)}
            candidates |= {
                f"{m}.{name}"
                for m in public_api.all_modules()
                if getattr(importlib.import_module(m), name, None) is obj
            }
            if inspect.isclass(obj) and obj.__module__ == "optimkit.recipes":
                candidates.add(f"optimkit.recipes.{name}")
            if not candidates & anchors:
                problems.append(f"{module_name}.{name}: not on any reference page")
    return sorted(set(problems))


def _fail(problems: list[str], what: str) -> None:
    from mkdocs.exceptions import PluginError

    raise PluginError(f"{len(problems)} {what}:\n  " + "\n  ".join(problems))


def on_pre_build(config, **kwargs):
    problems = missing_docstrings()
    if problems:
        _fail(problems, "public names without a docstring")


def on_post_build(config, **kwargs):
    problems = missing_anchors(Path(config["site_dir"]))
    if problems:
        _fail(problems, "public names missing from the reference")


if __name__ == "__main__":
    found = missing_docstrings()
    print("\n".join(found) or "every public name has a docstring")
    sys.exit(1 if found else 0)
