"""``optimkit list``: the table of optimizers, from the registry."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from typing import Any

from . import registry
from .cli import add


def format_value(value: Any) -> str:
    """A default compactly: ``0.001``, ``1e-08``, ``0`` for ``0.0``, ``(0.9, 0.999)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, tuple)):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    return f"{value:g}"


def format_defaults(defaults: dict[str, Any]) -> str:
    """``lr=0.001, betas=(0.9, 0.999), ...``: every default hyper-parameter, in order."""
    return ", ".join(f"{name}={format_value(value)}" for name, value in defaults.items())


def rows() -> list[dict[str, str]]:
    out = []
    for entry in registry.entries():
        out.append(
            {
                "name": entry.name,
                "year": str(entry.year or ""),
                "paper": entry.paper or "",
                "reproduces": entry.reference.description,
                "built from": " -> ".join(entry.parts) or "(wrapper)",
                "status": entry.status,
                "defaults": format_defaults(entry.defaults),
            }
        )
    return out


def markdown_table(table: list[dict[str, str]]) -> str:
    head = list(table[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row[h] for h in head) + " |" for row in table]
    return "\n".join(lines)


@add("list", "List every optimizer: year, paper, reference, parts, status and defaults.")
def _configure(parser: argparse.ArgumentParser):
    parser.add_argument(
        "--format", choices=["table", "markdown", "json"], default="table",
        help="table (one block per optimizer on a narrow terminal or without rich), "
             "markdown or json",
    )

    def run(args: argparse.Namespace) -> int:
        table = rows()
        if args.format == "json":
            print(json.dumps(table, indent=2))
        elif args.format == "markdown":
            print(markdown_table(table))
        else:
            _print_table(table)
        return 0

    return run


WIDE = 150  # columns the full table needs to read well; narrower terminals get records


def records(table: list[dict[str, str]], width: int) -> str:
    """One block per optimizer, wrapped to ``width`` columns: readable in any terminal.

    A block starts with the optimizer's name, year and status at the left margin, followed
    there by what it reproduces and its paper where they fit (else on their own labelled
    lines); its other lines are indented: the parts it is built from and its defaults.
    """
    label = max(len(key) for key in ("reproduces", "built from", "defaults", "paper")) + 2
    out = []
    for row in table:
        head = f"{row['name']}  ({row['year']}, {row['status']})"
        own = []
        for key in ("reproduces", "paper"):
            if row[key] and len(head) + 2 + len(row[key]) <= width:
                head += f"  {row[key]}"
            else:
                own.append(key)
        out.append(head)
        for key in ("reproduces", "built from", "defaults", "paper"):
            if key in ("reproduces", "paper") and key not in own:
                continue
            if key == "built from":  # a chain of parts wraps before an arrow, not in a name
                text = row[key].replace(" -> ", " ->\u00a0")
            elif key == "defaults":  # wraps between two defaults, not inside a tuple
                text = " ".join(item.replace(" ", "\u00a0") for item in _split_defaults(row[key]))
            else:
                text = row[key]
            lines = textwrap.wrap(text, max(20, width - label - 2), break_long_words=False,
                                  break_on_hyphens=False)
            for i, line in enumerate(lines or [""]):
                head = key if i == 0 else ""
                out.append(f"  {head:<{label}}{line.replace(chr(0xa0), ' ')}")
    return "\n".join(out)


def _split_defaults(text: str) -> list[str]:
    """``"a=1, b=(2, 3)"`` -> ``["a=1", "b=(2, 3)"]``: split at the commas between defaults."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    return [*items, text[start:].strip()] if text else []


def _print_table(table: list[dict[str, str]]) -> None:
    width = shutil.get_terminal_size((80, 24)).columns
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:  # rich is the optional `cli` extra
        print(records(table, width))
        return
    if width < WIDE:
        print(records(table, width))
        return
    view = Table(title=f"optimkit: {len(table)} optimizers")
    for column in table[0]:
        view.add_column(column, overflow="fold")
    for row in table:
        view.add_row(*(escape(value) for value in row.values()))  # "[amsgrad]" is no markup
    Console().print(view)
