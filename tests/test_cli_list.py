"""``optimkit list``: every registered optimizer with its year, paper, reference and parts."""

from __future__ import annotations

import json

from optimkit import available
from optimkit.cli import main


def test_list_shows_every_optimizer_with_its_parts(capsys):
    assert main(["list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == available()
    by_name = {r["name"]: r for r in rows}
    assert by_name["adam"]["reproduces"] == "torch.optim.Adam"
    assert "adam_step" in by_name["adam"]["built from"]
    # a Lookahead composition lists the inner recipe's parts, then the wrapper
    assert by_name["ranger"]["built from"].endswith("radam_step -> lookahead(k=6, alpha=0.5)")
    assert all(r["year"] and r["paper"] and r["status"] for r in rows)


def test_list_markdown_is_a_table_with_one_row_per_optimizer(capsys):
    assert main(["list", "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| name | year | paper |") and len(lines) == 2 + len(available())
