"""The code version a bench cell is recorded under: ``optimkit.__version__`` plus a fingerprint.

Every cell in the database is keyed by this version, and ``--resume`` refuses to continue a run
recorded under another one, so a code change between the start and the resume of a run never
mixes cells computed by two different codes into one ranking. The fingerprint is a sha256 over
``torch.__version__`` and the source of every ``.py`` file of the package that can change a
cell's numbers (sorted relative paths, so it is the same on every machine); the modules of
:data:`PRESENTATION` are left out, since they only read stored cells or present them (a report
is always rebuilt by the installed code, from the recorded version's cells).
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path

from .. import __version__

PACKAGE = Path(__file__).resolve().parents[1]

# Package-relative paths of the modules that never change a stored cell's numbers.
PRESENTATION = frozenset({
    "__main__.py", "cli.py", "listing.py", "outputs.py",
    "bench/commands.py", "bench/report.py", "bench/plots.py",
    "bench/scoring.py", "bench/ranking.py", "bench/notes.py", "bench/fingerprint.py",
})


def numerics_sources(root: Path = PACKAGE) -> list[str]:
    """Sorted package-relative paths of the sources that the fingerprint covers."""
    paths = (p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    return sorted(p for p in paths if p not in PRESENTATION)


def runtime() -> str:
    """The versions that can change a cell's numbers besides optimkit's own code."""
    import numpy
    import torch

    return f"torch {torch.__version__}\nnumpy {numpy.__version__}\npython {sys.version}"


def fingerprint(root: Path = PACKAGE, runtime_versions: str | None = None) -> str:
    """sha256 (hex) of ``runtime_versions`` (default :func:`runtime`) and the covered sources."""
    if runtime_versions is None:
        runtime_versions = runtime()
    digest = hashlib.sha256(f"{runtime_versions}\n".encode())
    for name in numerics_sources(root):
        source = (root / name).read_bytes()
        # Name and length first, so moving bytes from one file to the next changes the digest.
        digest.update(f"{name}\n{len(source)}\n".encode())
        digest.update(source)
    return digest.hexdigest()


@functools.cache
def code_version() -> str:
    """``"<__version__>+<first 12 hex digits of the fingerprint>"``, computed once."""
    return f"{__version__}+{fingerprint()[:12]}"
