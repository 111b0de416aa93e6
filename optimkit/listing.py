"""``optimkit list``: the table of optimizers, from the registry."""

from __future__ import annotations

import argparse
import json

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
        help="table (rich, when installed), markdown or json",
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


def _print_table(table: list[dict[str, str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is the optional `cli` extra
        print(markdown_table(table))
        return
    view = Table(title=f"optimkit: {len(table)} optimizers")
    for column in table[0]:
        view.add_column(column, overflow="fold")
    for row in table:
        view.add_row(*row.values())
    Console().print(view)
