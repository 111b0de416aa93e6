"""Where the commands and examples write, checked before any work starts.

Nothing lands in the current directory unless asked: the default is the ``optimkit-output``
folder (git-ignored), and every path is checked (writable, of the right kind) before a sweep
or a training run, so a typo costs a one-line error, not minutes of work thrown away.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_OUT = "optimkit-output"


def _creatable(path: Path, what: str) -> None:
    """ValueError unless ``path`` (absent) could be created: its nearest existing ancestor is
    a writable folder."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {str(path)!r}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r}: cannot create it inside {parent} (not writable)")


def check_folder(path: str | Path, what: str = "--out") -> Path:
    """The output folder ``path``, or ValueError (naming ``what``) if it cannot be written.
    Creates nothing."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{what} {str(path)!r} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{what} {str(path)!r} is not writable")
    else:
        _creatable(path, what)
    return path


def check_file(path: str | Path, what: str, suffixes: set[str] | None = None) -> Path:
    """The output file ``path``, or ValueError (naming ``what``) if it cannot be written or
    its suffix is not one of ``suffixes`` (without the dot). Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give a file name")
    if suffixes is not None and path.suffix.lower().lstrip(".") not in suffixes:
        raise ValueError(f"{what} {str(path)!r}: the file name must end in one of "
                         + ", ".join(f".{s}" for s in sorted(suffixes)))
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ValueError(f"{what} {str(path)!r} is not writable")
    else:
        _creatable(path, what)
    return path


def image_formats() -> set[str]:
    """The file suffixes matplotlib can save; ValueError naming the extra when it is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("plots need matplotlib: pip install 'optimkit[plot]'") from None
    return set(FigureCanvasAgg(Figure()).get_supported_filetypes())


__all__ = ["DEFAULT_OUT", "check_file", "check_folder", "image_formats"]
