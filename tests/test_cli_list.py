"""``optimkit list``: every registered optimizer with its year, paper, reference and parts."""

from __future__ import annotations

import json

import pytest

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


def test_list_is_readable_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # only a URL too long to break may overflow
    assert all(len(line) <= 80 for line in lines if "://" not in line)
    # the 6-column table took about 170 lines for 21; the matrix and lr-free recipes have
    # more parts and defaults (a block of 6.5 lines on average for 36)
    assert len(lines) < 7 * len(available())
    starts = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert starts == available()  # one block per optimizer, in registry order
    text = "\n".join(lines)
    assert "radam_step -> lookahead(k=6," in " ".join(text.split())  # parts stay whole


def test_list_uses_the_full_table_on_a_wide_terminal(capsys, monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert any(all(h in line for h in ("name", "reproduces", "built from", "status"))
               for line in out.splitlines())  # one header row with every column
    assert f"optimkit: {len(available())} optimizers" in out


def test_list_runs_as_python_m_optimkit_cli():
    # run as a script, cli.py is `__main__`, a second copy of optimkit.cli: the commands
    # registered with optimkit.cli must still be found (it raised AttributeError: handler)
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "optimkit.cli", "list", "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in json.loads(done.stdout)] == available()
