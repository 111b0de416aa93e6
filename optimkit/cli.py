"""The ``optimkit`` command line.

Each sub-command lives next to the feature it drives and registers itself here with
``add(name, help)``; ``main`` parses the arguments and runs it. ``COMMANDS`` names the module
of each, so that only the module of the command run is imported: ``optimkit --help`` starts
without torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
from collections.abc import Callable, Iterable, Sequence

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Handler]]] = {}

# command -> (the module that registers it, its one-line help for `optimkit --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("optimkit.bench.commands", "Score every optimizer of the notes' table on the "
              "benchmark suite; write the report."),
    "report": ("optimkit.bench.commands",
               "Rebuild the report (markdown, HTML, CSV, JSON, plots) from a bench database."),
    "plot": ("optimkit.bench.commands",
             "Draw optimizer paths on a 2-D test function (rosenbrock, beale, rastrigin)."),
    "compare": ("optimkit.bench.commands",
                "Compare the tiers of two bench runs (e.g. --seed-start 0 and 100)."),
    "list": ("optimkit.listing",
             "List every optimizer: year, paper, reference, parts, status and defaults."),
    "lr-find": ("optimkit.training.lr_find_cli",
                "Run the LR range test for an optimizer on a built-in task; print suggestions."),
}


def add(name: str, help: str):
    """Register a sub-command: decorate ``configure(parser)`` returning the handler."""

    def wrap(configure: Callable[[argparse.ArgumentParser], Handler]):
        _COMMANDS[name] = (help, configure)
        return configure

    return wrap


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to the help of every option whose help does not state it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        unset = default is None or default is False or default in ("", argparse.SUPPRESS)
        if not action.option_strings or "default" in text or unset:
            return text
        return f"{text} (default: %(default)s)".lstrip()


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the options of ``commands`` only (of every command when None): a
    command's module is imported only when its options are needed."""
    from . import __version__

    wanted = set(COMMANDS) if commands is None else set(commands)
    for name in wanted & set(COMMANDS):
        importlib.import_module(COMMANDS[name][0])  # registers the command
    parser = argparse.ArgumentParser(
        prog="optimkit", description="Deep-learning optimizers built from stats and steppers.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"optimkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in {**COMMANDS, **_COMMANDS}:
        summary = COMMANDS[name][1] if name in COMMANDS else _COMMANDS[name][0]
        description = _COMMANDS[name][0] if name in _COMMANDS else summary
        p = sub.add_parser(name, help=summary, description=description,
                           formatter_class=HelpFormatter)
        if name in wanted and name in _COMMANDS:
            p.set_defaults(handler=_COMMANDS[name][1](p))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    word = next((a for a in argv if not a.startswith("-")), None)  # the sub-command
    if word is None:
        commands = ()  # --help, --version or a usage error: no command's module is needed
    elif word in COMMANDS:
        commands = (word,)
    else:
        commands = None  # load them all: it may be registered outside COMMANDS, or a typo
    try:
        args = build_parser(commands).parse_args(argv)
        try:
            return int(args.handler(args) or 0)
        except (ValueError, OSError) as err:
            print(f"optimkit {args.command}: error: {err}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        # Ctrl-C before a command handles it (while importing, say): one line, no traceback,
        # and no second one from a later Ctrl-C while the interpreter shuts down.
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("optimkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # run as `python -m optimkit.cli`: the commands register with the module `optimkit.cli`,
    # which is not this `__main__` copy of it, so its main must run
    from optimkit.cli import main as _main

    sys.exit(_main())
