"""The notes' table (shipped as ``notes_table.md``): which optimizers the bench scores by default.

The bench scores every registered optimizer by default (:func:`bench_optimizers`): the table's
rows first, in the table's order, then the others; the Score column is filled for the rows.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import registry

NOTES_TABLE = Path(__file__).with_name("notes_table.md")


def key(name: str) -> str:
    """A name as lower-case letters and digits ("SGD with Momentum" -> "sgdwithmomentum")."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def row_names(text: str | None = None) -> list[str]:
    """The bold first-column names of the table's rows, in order."""
    text = NOTES_TABLE.read_text(encoding="utf-8") if text is None else text
    return [m.group(1) for m in re.finditer(r"^\|\s*\*\*(.+?)\*\*", text, flags=re.M)]


def rows(text: str | None = None) -> list[dict[str, str]]:
    """The table's rows as ``{header: cell}`` (the name, unbolded, under ``"name"``)."""
    text = NOTES_TABLE.read_text(encoding="utf-8") if text is None else text
    head: list[str] | None = None
    out = []
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if head is None:
            head = ["name", *cells[1:]]
            continue
        match = re.fullmatch(r"\*\*(.+?)\*\*", cells[0])
        if match:
            out.append({"name": match.group(1), **dict(zip(head[1:], cells[1:], strict=False))})
    return out


def aliases(name: str) -> tuple[str, ...]:
    try:
        return tuple(registry.get(name).aliases)
    except ValueError:  # a database from a build that registered other names
        return ()


def by_key(names: list[str]) -> dict[str, str]:
    """``key(name or alias) -> name`` for the given registered names."""
    out = {key(n): n for n in names}
    out.update({key(a): n for n in names for a in aliases(n)})
    return out


def default_optimizers() -> tuple[str, ...]:
    """The registered optimizers that are rows of the notes' table, in the table's order."""
    known = by_key(list(registry.available()))
    picked = [known[key(row)] for row in row_names() if key(row) in known]
    return tuple(dict.fromkeys(picked))


def bench_optimizers() -> tuple[str, ...]:
    """What ``optimkit bench`` scores by default: every registered optimizer, the notes' rows
    first (in the table's order), then the others in the order they were registered."""
    rows_first = default_optimizers()
    return rows_first + tuple(n for n in registry.available() if n not in rows_first)


__all__ = ["NOTES_TABLE", "bench_optimizers", "by_key", "default_optimizers", "key", "row_names",
           "rows"]
