"""The command line starts light: ``optimkit --help`` imports no torch; every flag shows its
default; the lazy ``optimkit`` package exports what it declares."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import optimkit
from optimkit import cli

HEAVY = ("torch", "numpy", "matplotlib", "rich", "sklearn")


def _imported_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    probe = f"""
import sys
{code}
print(__import__("json").dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_and_version_import_no_torch():
    # The wall time of `optimkit --help` is torch's import time when this fails (seconds).
    assert _imported_after("import optimkit, optimkit.cli") == []
    code = """
from optimkit.cli import main
for argv in (["--help"], ["--version"], []):
    try:
        main(argv)
    except SystemExit:
        pass
"""
    assert _imported_after(code) == []


def test_a_command_imports_only_its_own_module():
    code = """
import sys
from optimkit.cli import main
try:
    main(["lr-find", "--help"])
except SystemExit:
    pass
print("optimkit.bench.commands" in sys.modules, "optimkit.listing" in sys.modules)
"""
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=Path(__file__).resolve().parents[1])
    assert probe.stdout.strip().splitlines()[-1] == "False False"


def test_every_registered_command_is_in_the_table_with_its_help():
    for module, _ in cli.COMMANDS.values():
        importlib.import_module(module)
    registered = {name: help_text for name, (help_text, _) in cli._COMMANDS.items()}
    # A command missing here would be absent from `optimkit --help`.
    assert set(registered) == set(cli.COMMANDS)
    for name, (_, summary) in cli.COMMANDS.items():
        assert summary == registered[name], name


def test_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["lr-fnd"])
    assert exit_info.value.code == 2 and "invalid choice: 'lr-fnd'" in capsys.readouterr().err


def _options(parser: argparse.ArgumentParser, command: str | None):
    if command is None:
        return parser._actions, parser.format_help()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]._actions, sub.choices[command].format_help()


@pytest.mark.parametrize("command", [None, "list", "lr-find"])
def test_every_flag_with_a_default_shows_it(command):
    parser = cli.build_parser(None if command is None else [command])
    actions, text = _options(parser, command)
    text = " ".join(text.split())  # undo the wrapping
    for action in actions:
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        assert action.help, f"{action.option_strings} has no help"
        shown = f"(default: {action.default})" in text or "default:" in action.help
        assert shown, f"{action.option_strings}: default {action.default!r} not shown"


def test_the_formatter_shows_zero_and_leaves_flags_and_stated_defaults_alone():
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="the seed")
    parser.add_argument("--quiet", action="store_true", help="no output")
    parser.add_argument("--out", default="here", help="folder (default: ./here)")
    text = " ".join(parser.format_help().split())
    assert "the seed (default: 0)" in text
    assert "no output (default" not in text
    assert text.count("default: ./here") == 1 and "(default: here)" not in text


def test_lazy_package_exports_what_it_declares():
    for name in optimkit.__all__:
        assert getattr(optimkit, name) is not None, name
    assert set(optimkit.__all__) <= set(dir(optimkit))
    opt = optimkit.create("adam", [torch.zeros(1, requires_grad=True)])
    assert isinstance(opt, optimkit.Adam) and isinstance(opt, optimkit.Optimizer)
    assert optimkit.registry.available() == optimkit.available()  # a submodule, on demand
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        optimkit.nope  # noqa: B018


def test_type_checking_imports_match_the_lazy_table():
    # Type checkers read the TYPE_CHECKING block, the runtime the lazy table and the
    # packages' own export lists: keep them equal (a star import brings a package's __all__).
    tree = ast.parse(Path(optimkit.__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and getattr(node.test, "id", "") == "TYPE_CHECKING")
    names = set()
    for node in block.body:
        for alias in node.names:
            if alias.name == "*":
                names |= set(importlib.import_module(f"optimkit.{node.module}").__all__)
            else:
                names.add(alias.asname or alias.name)
    assert names == set(optimkit.__all__)
