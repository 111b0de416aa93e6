"""``optimkit list``: the table of optimizers, from the registry."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap

from . import registry
from .cli import add


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
            }
        )
    return out


def markdown_table(table: list[dict[str, str]]) -> str:
    head = list(table[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row[h] for h in head) + " |" for row in table]
    return "\n".join(lines)


@add("list", "List every optimizer: year, paper, reference, parts and status.")
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
    """One block per optimizer, wrapped to ``width`` columns: readable in any terminal."""
    label = max(len(key) for key in table[0]) + 2
    out = []
    for row in table:
        out.append(f"{row['name']}  ({row['year']}, {row['status']})")
        for key in ("reproduces", "built from", "paper"):
            # a chain of parts wraps before an arrow, never inside a part's name
            text = row[key].replace(" -> ", " ->\u00a0") if key == "built from" else row[key]
            lines = textwrap.wrap(text, max(20, width - label - 2), break_long_words=False,
                                  break_on_hyphens=False)
            for i, line in enumerate(lines or [""]):
                head = key if i == 0 else ""
                out.append(f"  {head:<{label}}{line.replace(chr(0xa0), ' ')}")
        out.append("")
    return "\n".join(out).rstrip()


def _print_table(table: list[dict[str, str]]) -> None:
    width = shutil.get_terminal_size((80, 24)).columns
    try:
        from rich.console import Console
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
        view.add_row(*row.values())
    Console().print(view)
