"""MkDocs hook: writes the API reference pages at build time, from the code itself.

* ``reference/index.md``: every name of ``optimkit.__all__``, linked to where it is documented;
* ``reference/optimizers/<name>.md``: one page per optimizer of the catalogue (the registry):
  its docstring (update rule, paper, reference, variants) and, read from the class, its
  defaults (``Cls.hypers``), variant flags, state (``Cls.recipe.state_inits``) and parts
  (``Cls.parts``). A new optimizer gets its page, and its place in the navigation, by being
  registered;
* ``reference/api/<module>.md``: each public module, its public names rendered by mkdocstrings.

The navigation's ``Reference`` section is filled here too (``on_config``).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))
import public_api  # noqa: E402

_PAGES: dict[str, str] = {}


def _optimkit():
    import optimkit
    from optimkit import registry

    return optimkit, registry


def _slug(module: str) -> str:
    return module.replace("optimkit.", "").replace(".", "-") or "optimkit"


def _code(value) -> str:
    return f"`{value!r}`"


def _first_line(obj) -> str:
    doc = public_api.docstring(obj) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _part_anchor(part) -> str | None:
    import optimkit.stats
    import optimkit.steppers

    for module in (optimkit.stats, optimkit.steppers):
        for name in module.__all__:
            exported = getattr(module, name)
            if exported is part or getattr(exported, "fn", None) is part.fn:
                return public_api.defining_path(exported)
    return None


def _part_link(part) -> str:
    anchor = _part_anchor(part)
    return f"[`{part.name}`][{anchor}]" if anchor else f"`{part.name}`"


def _gate(part) -> str | None:
    """The hyper-parameter that switches a part on (``only_if``), from its label."""
    label = part.label
    return label[label.index("[") + 1 : -1] if "[" in label else None


def _optimizer_page(entry) -> str:
    cls = entry.factory
    lines = [
        f"# {cls.__name__} (`{entry.name}`)",
        "",
        "| | |",
        "|---|---|",
        f"| create | `optimkit.create(\"{entry.name}\", params, ...)` or "
        f"`optimkit.{cls.__name__}(params, ...)` |",
    ]
    if entry.aliases:
        lines.append(f"| aliases | {', '.join(f'`{a}`' for a in entry.aliases)} |")
    lines += [
        f"| reproduces | {entry.reference.description} |",
        f"| paper | [{entry.year or 'link'}]({entry.paper}) |" if entry.paper else "| paper | |",
        f"| status | {entry.status} |",
        f"| signature | `{cls.__name__}{inspect.signature(cls)}` |",
        "",
        "## Update rule, reference and variants",
        "",
        f"::: optimkit.recipes.{cls.__name__}",
        "    options:",
        "      show_root_heading: false",
        "      show_bases: false",
        "      members: false",
        "",
        "## Defaults",
        "",
        "Read from `hypers` of the class; every one is a per-group hyper-parameter "
        "(schedulers reach it).",
        "",
        "| hyper-parameter | default | used by |",
        "|---|---|---|",
    ]
    for name, default in cls.hypers.items():
        users = [p for p in cls.parts if name in p.hypers and name not in p.fixed]
        lines.append(f"| `{name}` | {_code(default)} | {', '.join(_part_link(p) for p in users)} |")
    flags = [n for n, v in cls.hypers.items() if isinstance(v, bool)]
    gated = [p for p in cls.parts if p.when is not None and _gate(p)]
    lines += ["", "## Variant flags", ""]
    if flags or gated:
        lines += ["| flag | default | what it switches |", "|---|---|---|"]
        for name in flags:
            parts = [p for p in gated if _gate(p) == name]
            what = (
                "runs " + ", ".join(_part_link(p) for p in parts)
                if parts
                else "changes " + ", ".join(_part_link(p) for p in cls.parts if name in p.hypers)
            )
            lines.append(f"| `{name}` | {_code(cls.hypers[name])} | {what} |")
        for part in gated:
            if _gate(part) not in flags:
                gate = _gate(part)
                lines.append(f"| `{gate}` | {_code(cls.hypers.get(gate))} | runs "
                             f"{_part_link(part)} when set (e.g. > 0) |")
    else:
        lines.append("None: every part always runs.")
    fixed = [(p, k, v) for p in cls.parts for k, v in p.fixed.items()]
    if fixed:
        lines += ["", "Pinned by the recipe (not hyper-parameters): "
                  + ", ".join(f"{_part_link(p)} `{k}={v!r}`" for p, k, v in fixed) + "."]
    lines += [
        "",
        "## State",
        "",
        "Per param, in `opt.state[p]` and `state_dict()` under these names, created at the "
        "param's first step.",
        "",
        "| state | created by | initial value | precision policy may store it as |",
        "|---|---|---|---|",
    ]
    for name, init in cls.recipe.state_inits.items():
        owner = next((p for p in cls.parts if name in p.state), None)
        storage = owner.storage.get(name) if owner else None
        how = {"signed": "8-bit signed or bf16", "positive": "8-bit unsigned or bf16",
               "exact": "the param's dtype or wider (never 8-bit)"}.get(
            getattr(storage, "value", None), "never quantized")
        lines.append(
            f"| `{name}` | {_part_link(owner) if owner else ''} | `{init.__name__}` | {how} |"
        )
    lines += [
        "",
        "## Parts",
        "",
        "Run in this order on each (param group, device, dtype) bucket.",
        "",
        "| # | part | kind | hyper-parameters | reads | provides | when |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, part in enumerate(cls.parts, 1):
        hypers = ", ".join(f"`{k}`" for k in part.hypers if k not in part.fixed)
        reads = ", ".join(f"`{r}`" for r in part.reads)
        provides = ", ".join(f"`{r}`" for r in part.provides)
        if part.every:
            when = f"every `{part.every}` steps" + (
                f" from step {part.start}" if part.start else "")
        elif part.when is not None:
            when = f"when `{_gate(part)}`" if _gate(part) else "when its condition holds"
        else:
            when = "always"
        lines.append(f"| {i} | {_part_link(part)} | {part.kind} | {hypers} | {reads} | "
                     f"{provides} | {when} |")
    return "\n".join(lines) + "\n"


def _optimizers_index(registry) -> str:
    lines = [
        "# Optimizers",
        "",
        "Every optimizer of the catalogue (`optimkit/registry.py`), generated from the registry "
        "and the recipes. `optimkit.available()` lists the names, `optimkit.create(name, "
        "params, **hypers)` builds one.",
        "",
        "| name | class | reproduces | paper | status | parts |",
        "|---|---|---|---|---|---|",
    ]
    for entry in registry.entries():
        cls = entry.factory
        name = f"[`{entry.name}`]({entry.name}.md)"
        if entry.aliases:
            name += " (" + ", ".join(f"`{a}`" for a in entry.aliases) + ")"
        paper = f"[{entry.year}]({entry.paper})" if entry.paper else ""
        parts = ", ".join(f"`{p}`" for p in entry.parts)
        lines.append(f"| {name} | `{cls.__name__}` | {entry.reference.description} | {paper} | "
                     f"{entry.status} | {parts} |")
    return "\n".join(lines) + "\n"


def directive_path(module_name: str, name: str, obj) -> str:
    """The path mkdocstrings renders ``module.name`` from, which is also its anchor: the public
    path, except for parts (exported by a dynamic ``__all__`` that static analysis cannot read)
    and names that a submodule of the same name shadows (``optimkit.training.param_groups``)."""
    import importlib.util

    package = importlib.import_module(module_name)
    shadowed = (
        hasattr(package, "__path__") and not inspect.ismodule(obj)
        and importlib.util.find_spec(f"{module_name}.{name}") is not None
    )
    if type(obj).__name__ == "Part" or shadowed:
        return public_api.defining_path(obj)
    return f"{module_name}.{name}"


def _module_page(module_name: str, title: str, registered: set[str]) -> str:
    import importlib

    module = importlib.import_module(module_name)
    names = public_api.public_names(module)
    lines = [f"# {title}", "", f"::: {module_name}", "    options:", "      members: false", ""]
    if module_name == "optimkit.recipes":
        lines += [
            "The registered optimizers have a page each ([Optimizers](../optimizers/index.md)); "
            "the recipes below are exported without a catalogue entry.",
            "",
        ]
        names = [n for n in names if n not in registered]
    if names:
        lines += [f"Import them as `{module_name}.<name>`.", ""]
    for name in names:
        obj = getattr(module, name)
        lines += [f"::: {directive_path(module_name, name, obj)}", "    options:",
                  "      show_root_full_path: false", "      heading_level: 2"]
        if inspect.ismodule(obj):
            lines.append("      members: false")
        lines.append("")
        if type(obj).__name__ == "Part":
            lines += _part_declarations(obj)
    return "\n".join(lines) + "\n"


def _part_declarations(part) -> list[str]:
    """What a part declares (read from the part), as a small table under its docstring."""
    def names(items):
        return ", ".join(f"`{n}`" for n in items) or "none"

    state = ", ".join(
        f"`{n}` ({init.__name__}{', ' + part.storage[n].value if n in part.storage else ''})"
        for n, init in part.state.items()
    ) or "none"
    hypers = ", ".join(f"`{k}={v!r}`" for k, v in part.hypers.items()) or "none"
    rows = [("kind", part.kind), ("state (init, storage)", state), ("reads", names(part.reads)),
            ("provides", names(part.provides)), ("hyper-parameters (defaults)", hypers)]
    if part.every:
        start = f" from step {part.start}" if part.start else ""
        rows.append(("runs", f"every `{part.every}` steps{start}, outside the compiled step"))
    return ["| declares | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def _anchor_of(name: str, obj, registered_classes: dict) -> str:
    """Where the reference renders an ``optimkit.<name>``."""
    import importlib

    if isinstance(obj, type) and obj in registered_classes:
        return f"optimkit.recipes.{obj.__name__}"
    if inspect.ismodule(obj):
        return obj.__name__
    for module_name, _ in public_api.MODULES:
        module = importlib.import_module(module_name)
        if name in public_api.public_names(module) and getattr(module, name) is obj:
            return directive_path(module_name, name, obj)
    raise LookupError(f"optimkit.{name} is in optimkit.__all__ but on no reference page")


def _index(optimkit, registered_classes) -> str:
    lines = [
        "# API reference",
        "",
        "Every name of `optimkit.__all__` (what `import optimkit` gives), with where it is "
        "documented. The pages are generated from the docstrings at build time; the optimizer "
        "pages also read each recipe's defaults, state and parts.",
        "",
        "| name | what it is |",
        "|---|---|",
    ]
    for name in optimkit.__all__:
        obj = getattr(optimkit, name)
        anchor = _anchor_of(name, obj, registered_classes)
        lines.append(f"| [`optimkit.{name}`][{anchor}] | {_first_line(obj)} |")
    return "\n".join(lines) + "\n"


def _generate() -> dict[str, str]:
    optimkit, registry = _optimkit()
    entries = registry.entries()
    registered_classes = {e.factory: e for e in entries if isinstance(e.factory, type)}
    pages = {"reference/index.md": _index(optimkit, registered_classes)}
    pages["reference/optimizers/index.md"] = _optimizers_index(registry)
    for entry in entries:
        pages[f"reference/optimizers/{entry.name}.md"] = _optimizer_page(entry)
    names = {cls.__name__ for cls in registered_classes}
    for module_name, title in public_api.MODULES:
        pages[f"reference/api/{_slug(module_name)}.md"] = _module_page(module_name, title, names)
    for module_name in [public_api.BENCH, *public_api.bench_modules()]:
        pages[f"reference/bench/{_slug(module_name)}.md"] = _module_page(
            module_name, f"`{module_name}`", names)
    pages["index.md"] = _home()
    pages["changelog.md"] = _root_page("CHANGELOG.md", "Changelog")
    pages["contributing.md"] = _root_page("CONTRIBUTING.md", "Contributing")
    return pages


def on_config(config, **kwargs):
    _PAGES.clear()
    _PAGES.update(_generate())
    _, registry = _optimkit()
    section = [
        {"Index": "reference/index.md"},
        {"Optimizers": [{"All optimizers": "reference/optimizers/index.md"}]
         + [{e.factory.__name__: f"reference/optimizers/{e.name}.md"} for e in registry.entries()]},
        {"API": [{title: f"reference/api/{_slug(m)}.md"} for m, title in public_api.MODULES]},
        {"optimkit bench": [f"reference/bench/{_slug(m)}.md"
                            for m in [public_api.BENCH, *public_api.bench_modules()]]},
    ]
    for item in config["nav"] or []:
        if isinstance(item, dict) and "Reference" in item:
            item["Reference"] = section
    return config


def on_files(files, config, **kwargs):
    for path, content in _PAGES.items():
        files.append(File.generated(config, path, content=content))
    return files


def _root_page(name: str, title: str) -> str:
    """A page made from a file at the repository's root (README.md, CHANGELOG.md,
    CONTRIBUTING.md), its links moved from the root to ``docs/``."""
    path = Path(__file__).resolve().parents[2] / name
    if not path.exists():
        return f"# {title}\n\n`{name}` is not written yet.\n"
    text = path.read_text(encoding="utf-8").replace("](docs/", "](")
    for root, page in (("README.md", "index.md"), ("CHANGELOG.md", "changelog.md"),
                       ("CONTRIBUTING.md", "contributing.md")):
        text = text.replace(f"]({root})", f"]({page})").replace(f"]({root}#", f"]({page}#")
    return text


def _home() -> str:
    """The home page is the README."""
    return _root_page("README.md", "optimkit")
