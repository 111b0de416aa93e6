"""The ``optimkit`` command line.

Each sub-command lives next to the feature it drives and registers itself here with
``add(name, help)``; ``main`` parses the arguments and runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], Handler]]] = []


def add(name: str, help: str):
    """Register a sub-command: decorate ``configure(parser)`` returning the handler."""

    def wrap(configure: Callable[[argparse.ArgumentParser], Handler]):
        _COMMANDS.append((name, help, configure))
        return configure

    return wrap


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="optimkit", description="Deep-learning optimizers built from stats and steppers."
    )
    parser.add_argument("--version", action="version", version=f"optimkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text, configure in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=configure(p))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        _load_commands()
        args = build_parser().parse_args(argv)
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


def _load_commands() -> None:
    # Importing a module registers its sub-commands.
    from . import listing  # noqa: F401
    from .bench import commands  # noqa: F401
    from .training import lr_find_cli  # noqa: F401


if __name__ == "__main__":
    sys.exit(main())
