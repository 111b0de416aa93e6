"""The code version a bench cell is recorded under: ``optimkit.__version__`` plus a fingerprint.

Every cell in the database is keyed by this version, and ``--resume`` refuses to continue a run
recorded under another one, so a code change between the start and the resume of a run never
mixes cells computed by two different codes into one ranking. The fingerprint is a sha256 over
``torch.__version__`` (with numpy's and Python's) and the source of every ``.py`` file of the
package that can change a cell's numbers (sorted relative paths, so it is the same on every
machine), and the source of any task module the run loads (``--task-module``); the modules of
:data:`PRESENTATION` are left out, since they only read stored cells or present them (a report
is always rebuilt by the installed code, from the recorded version's cells).

:func:`components` lists the same parts one by one (versions, a hash per file); a run records
them, so that a refused ``--resume`` says what differs: the interpreter, torch, numpy, which
code files or which task module.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__

PACKAGE = Path(__file__).resolve().parents[1]

# Package-relative paths of the modules that never change a stored cell's numbers.
PRESENTATION = frozenset({
    "__main__.py", "cli.py", "listing.py", "outputs.py",
    "bench/commands.py", "bench/report.py", "bench/plots.py",
    "bench/scoring.py", "bench/ranking.py", "bench/notes.py", "bench/fingerprint.py",
    "bench/profiles.py",
})


def numerics_sources(root: Path | None = None) -> list[str]:
    """Sorted package-relative paths of the sources that the fingerprint covers."""
    root = PACKAGE if root is None else root
    paths = (p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    return sorted(p for p in paths if p not in PRESENTATION)


def runtime() -> str:
    """The versions that can change a cell's numbers besides optimkit's own code."""
    import numpy
    import torch

    return f"torch {torch.__version__}\nnumpy {numpy.__version__}\npython {sys.version}"


def _package_digest(root: Path, runtime_versions: str):
    digest = hashlib.sha256(f"{runtime_versions}\n".encode())
    for name in numerics_sources(root):
        source = (root / name).read_bytes()
        # Name and length first, so moving bytes from one file to the next changes the digest.
        digest.update(f"{name}\n{len(source)}\n".encode())
        digest.update(source)
    return digest


def fingerprint(root: Path | None = None, runtime_versions: str | None = None,
                task_files: Sequence[str | Path] = ()) -> str:
    """sha256 (hex) of ``runtime_versions`` (default :func:`runtime`), the covered sources and
    the ``task_files`` (their content, not their paths); without task files it is the
    package's fingerprint alone."""
    root = PACKAGE if root is None else root
    runtime_versions = runtime() if runtime_versions is None else runtime_versions
    digest = _package_digest(root, runtime_versions)
    for path in task_files:
        source = Path(path).read_bytes()
        digest.update(f"task module\n{len(source)}\n".encode())
        digest.update(source)
    return digest.hexdigest()


@functools.cache
def _installed() -> str:
    return f"{__version__}+{fingerprint()[:12]}"


def code_version(task_files: Sequence[str | Path] = ()) -> str:
    """``"<__version__>+<first 12 hex digits of the fingerprint>"``; the package's part is
    computed once, the task files (small) are read at every call, so an edited one counts."""
    if not task_files:
        return _installed()
    return f"{__version__}+{fingerprint(task_files=task_files)[:12]}"


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def components(root: Path | None = None, runtime_versions: str | None = None,
               task_files: Sequence[str | Path] = ()) -> dict[str, Any]:
    """What the version is made of, part by part: the runtime versions, a hash of each covered
    file and of each task file (recorded with a run, read by :func:`differences`)."""
    root = PACKAGE if root is None else root
    runtime_versions = runtime() if runtime_versions is None else runtime_versions
    versions: dict[str, str] = {}
    key = None
    for line in runtime_versions.splitlines():  # sys.version may span several lines
        head, _, rest = line.partition(" ")
        if head in ("torch", "numpy", "python") or key is None:
            key, versions[head] = head, rest
        else:
            versions[key] += " " + line.strip()
    return {"runtime": versions,
            "files": {name: _short((root / name).read_bytes())
                      for name in numerics_sources(root)},
            "task_modules": {str(path): _short(Path(path).read_bytes()) for path in task_files}}


def differences(recorded: dict[str, Any] | None, installed: dict[str, Any]) -> str:
    """What differs between two :func:`components`, in words (most telling first)."""
    if not recorded:
        return ("the database predates the record of what makes up a version, so whether "
                "optimkit's code, a task module, torch, numpy or Python changed cannot be told")
    said = []
    names = {"python": "the Python interpreter", "torch": "torch", "numpy": "numpy"}
    old_rt, new_rt = recorded.get("runtime", {}), installed["runtime"]
    for key in ("python", "torch", "numpy", *sorted((set(old_rt) | set(new_rt)) - set(names))):
        old, new = old_rt.get(key), new_rt.get(key)
        if old != new:
            if key == "python" and old and new and old.split()[0] == new.split()[0]:
                old, new = old, f"{new} (another build of the same version)"
            said.append(f"{names.get(key, key)} was {old or 'none'} and is now {new or 'none'}")
    old_tm, new_tm = recorded.get("task_modules", {}), installed.get("task_modules", {})
    for path in sorted(set(old_tm) | set(new_tm)):
        if old_tm.get(path) != new_tm.get(path):
            said.append(f"the task module {path} changed")
    old_f, new_f = recorded.get("files", {}), installed["files"]
    changed = [f for f in sorted(set(old_f) | set(new_f)) if old_f.get(f) != new_f.get(f)]
    if changed:
        shown = ", ".join(f"optimkit/{f}" + ("" if f in new_f else " (removed)")
                          + ("" if f in old_f else " (added)") for f in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        said.append(f"optimkit's code: {shown}{more}")
    return "; ".join(said) or "none of the recorded parts differs (the version was edited?)"
