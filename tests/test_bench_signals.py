"""Ctrl-C during ``optimkit bench``, with real signals: one line, exit 130, no traceback, no
hang however many signals arrive and whoever gets them, and no worker left behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                 reason="reads the process tree from /proc (Linux)"),
              pytest.mark.slow]  # bench runs stopped by signals: 25-55 s each


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            alive.add(pid)
    return alive


def _start(out: Path, workers: int = 2, ignore_sigint: bool = False,
           seeds: int = 6) -> subprocess.Popen:
    args = [sys.executable, "-m", "optimkit", "bench", *TINY, "--seeds", str(seeds),
            "--out", str(out),
            "--workers", str(workers), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def background() -> None:  # what a non-interactive shell does to `cmd &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=background if ignore_sigint else None)


def _cells(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait_busy(proc: subprocess.Popen, db: Path, children: int = 3) -> set[int]:
    """Wait until cells are being saved and ``children`` descendants (the forkserver and two
    pool workers by default) run; return the descendants."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and _cells(db) >= 2 and len(_children(proc.pid)) >= children:
            return _children(proc.pid)  # the forkserver and its two workers (at least)
        time.sleep(0.05)
    raise AssertionError(f"the bench ended or stalled first: {proc.poll()}")


@pytest.mark.parametrize("target", ["main process, three times", "process group, twice"])
def test_ctrl_c_saves_prints_one_line_and_exits_130(tmp_path, target):
    out = tmp_path / "run"
    proc = _start(out)
    workers = _wait_busy(proc, out / "results.sqlite")
    if target.startswith("main"):
        for _ in range(3):
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(0.05)
    else:
        for _ in range(2):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.05)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the bench hung after Ctrl-C") from None
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    saved = _cells(out / "results.sqlite")
    assert lines[0] == (f"interrupted: {saved} cells saved; finish with "
                        f"`optimkit bench --resume --out {out}`")
    deadline = time.monotonic() + 10
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers), "pool workers outlived the bench"
    assert stdout == ""


def _errors(db: Path) -> list[str]:
    with sqlite3.connect(db, timeout=5) as conn:
        return [r[0] for r in conn.execute("SELECT error FROM cells WHERE error IS NOT NULL")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_one_worker_background_job_stops_on_signal(tmp_path, signum):
    """`optimkit bench --workers 1 &` from a script: the cells run in the bench process itself
    and SIGINT was inherited as ignored. SIGTERM (143) and kill -INT (130) still stop it at
    once, and the cell it was running is dropped, not saved as a failure."""
    out = tmp_path / "run"
    db = out / "results.sqlite"
    proc = _start(out, workers=1, ignore_sigint=True, seeds=100)  # minutes of cells in all
    _wait_busy(proc, db, children=0)
    os.kill(proc.pid, signum)
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the bench kept running after {signum.name}") from None
    assert proc.returncode == 128 + signum, stderr
    saved = _cells(db)
    assert stderr.strip() == (f"interrupted: {saved} cells saved; finish with "
                              f"`optimkit bench --resume --out {out}`")
    assert saved >= 2 and stdout == ""
    assert _errors(db) == [], "the interrupted cell was recorded as a failed cell"
