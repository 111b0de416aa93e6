"""What an installed optimkit carries: every file its strings cite is in the package.

The wheel ships the ``optimkit`` package only (pyproject's ``[tool.hatch.build.targets.wheel]``),
so a docstring, a message or a packaged document that cites ``benchmarks/...``, ``tests/...``,
``examples/...`` or the README points an installed user at a file they do not have: such a
citation is a URL (``https://github.com/optimkit/optimkit/...``) or a file of the package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "optimkit"
# what the checkout holds besides the package; docs/ and .ci/ even where absent
OUTSIDE = {p.name for p in ROOT.iterdir() if p.name not in {"optimkit", ".git"}}
OUTSIDE |= {"benchmarks", "docs", "examples", "tests", ".ci"}
URL = re.compile(r"\w+://\S+")
PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)+")
TEXT_DATA = {".md", ".txt", ".json", ".csv"}


def _strings(text: str, python: bool):
    """``(line, string)`` for every string literal of a module's source (docstrings and the
    pieces of f-strings included), or the whole of a document."""
    if not python:
        yield 1, text
        return
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def uncarried_citations(text: str, python: bool = True) -> list[str]:
    """``"line: path"`` for each citation in ``text`` of a file the installed package lacks."""
    found = []
    for line, string in _strings(text, python):
        string = URL.sub("", string)
        paths = [m.rstrip(".") for m in PATH.findall(string)]  # a sentence's full stop
        cited = [m for m in paths if m.split("/")[0] in OUTSIDE]
        cited += [m for m in paths if m.split("/")[0] == "optimkit" and not (ROOT / m).exists()]
        words = [w.rstrip(".") for w in re.findall(r"[\w.-]+", string)]
        cited += [w for w in words
                  if (w in OUTSIDE and (ROOT / w).is_file()) or w in ("README", "CONTRIBUTING")]
        found += [f"{line}: {c}" for c in cited]
    return found


def _package_files():
    for path in sorted(PACKAGE.rglob("*")):
        if "__pycache__" not in path.parts and (path.suffix == ".py" or path.suffix in TEXT_DATA):
            yield path


def test_no_string_in_the_package_cites_a_file_the_wheel_does_not_carry():
    found = [f"{path.relative_to(ROOT)}:{c}" for path in _package_files()
             for c in uncarried_citations(path.read_text(encoding="utf-8"), path.suffix == ".py")]
    assert not found, "cite a URL or a packaged file instead:\n" + "\n".join(found)


@pytest.mark.parametrize("text, cited", [
    ('"""Measured by benchmarks/step_time.py."""', "benchmarks/step_time.py"),
    ('x = f"see {n} in tests/reference/lion.py"', "tests/reference/lion.py"),
    ('"""The README\'s section on modes."""', "README"),
    ('"""See CONTRIBUTING.md."""', "CONTRIBUTING.md"),
    ('"""Shipped as optimkit/no_such_file.md."""', "optimkit/no_such_file.md"),
])
def test_the_check_finds_a_citation_of_a_file_outside_the_package(text, cited):
    assert uncarried_citations(text) == [f"1: {cited}"]


def test_the_check_reads_documents_whole_and_only_the_strings_of_modules():
    assert uncarried_citations("Made by `benchmarks/lr_rules.py`.", python=False) == [
        "1: benchmarks/lr_rules.py"]
    assert uncarried_citations("# measured by benchmarks/step_time.py\nx = 1\n") == []


@pytest.mark.parametrize("text", [
    '"""https://github.com/optimkit/optimkit/blob/main/tests/reference/lion.py"""',
    '"""The tables ship as optimkit/training/lr_rules.md; bench/commands.py; torch/optim."""',
    '"""The tests hold a naive copy."""',
])
def test_the_check_accepts_urls_packaged_files_and_package_relative_paths(text):
    assert uncarried_citations(text) == []


def test_the_wheel_ships_the_package_and_its_type_marker():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^packages = \["optimkit"\]$', pyproject, re.M)
    assert (PACKAGE / "py.typed").is_file() and (ROOT / "LICENSE").is_file()
