"""Run test cases on 2 gloo ranks (CPU, 127.0.0.1), once per test session, many cases per run.

A process group costs seconds to start (two Python processes importing torch), so the suite
never starts one per test. Instead the tests ask for ``(scenario, case)`` pairs; one *launch*
starts the ranks once, they run every requested pair inside one process group and write one
JSON line per pair and rank; each test then asserts its own pair's result. A scenario is a
function in ``tests/dist_scenarios.py``: ``scenario(case, group, workdir) -> dict`` run on
every rank.

The parent owns the rendezvous: it opens a ``TCPStore`` on a free port chosen by the OS (no
race between picking a port and binding it) and the ranks join it as clients. Each pair runs
in its own process group (``dist.new_group``), so a case that fails on one rank only leaves
that group behind: the other rank's collective times out after ``CASE_TIMEOUT`` and both
carry on with the next pair. The results are written as they come, so a launch killed by
its overall timeout still reports every pair it finished and names the one it was running.

Run as a script, this module is the worker (one process per rank).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

WORLD_SIZE = 2
CASE_TIMEOUT = datetime.timedelta(seconds=45)


def launch(
    pairs: Sequence[tuple[str, str]], workdir: Path, name: str = "launch", timeout: float = 540.0
) -> dict[tuple[str, str], list[dict]]:
    """Run ``pairs`` on ``WORLD_SIZE`` fresh ranks; return each pair's results, one per rank.

    Scenarios share ``workdir`` (a later launch reads the checkpoints of an earlier one); the
    launch's own files are prefixed with ``name``. A pair with no result (the launch died or
    timed out first) maps to ``[]``; the reason is in ``results[("launch", name)]``.
    """
    import torch.distributed as dist

    workdir.mkdir(parents=True, exist_ok=True)
    plan = workdir / f"{name}-pairs.json"
    plan.write_text(json.dumps([list(p) for p in pairs]))
    store = dist.TCPStore("127.0.0.1", 0, WORLD_SIZE + 1, is_master=True, wait_for_workers=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs, logs = [], []
    for rank in range(WORLD_SIZE):
        log = open(workdir / f"{name}-rank{rank}.log", "w")  # noqa: SIM115 (closed below)
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--rank", str(rank), "--port", str(store.port),
             "--workdir", str(workdir), "--name", name],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parent,
        ))
    deadline = time.monotonic() + timeout
    status = []
    for proc in procs:
        try:
            status.append(proc.wait(timeout=max(deadline - time.monotonic(), 1.0)))
        except subprocess.TimeoutExpired:
            status.append("timed out")
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()
    del store

    results: dict[tuple[str, str], list[dict]] = {tuple(p): [] for p in pairs}
    for rank in range(WORLD_SIZE):
        path = workdir / f"{name}-rank{rank}.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                results.setdefault((row["scenario"], row["case"]), []).append(row)
    tails = [
        f"rank {rank} exit {code}:\n{_tail(workdir / f'{name}-rank{rank}.log')}"
        for rank, code in enumerate(status)
        if code != 0
    ]
    results[("launch", name)] = [{"log": "\n".join(tails)}]
    return results


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def missing_reason(results: dict, pair: tuple[str, str]) -> str:
    """Why ``pair`` has fewer than WORLD_SIZE results: the launches' log tails."""
    logs = "\n".join(rows[0]["log"] for key, rows in results.items() if key[0] == "launch")
    return f"{pair} has no result from every rank; the launches said:\n{logs or '(nothing)'}"


# ------------------------------------------------------------------------------- worker side
def _worker(rank: int, port: int, workdir: Path, name: str) -> None:
    import dist_scenarios
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, WORLD_SIZE + 1, is_master=False)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD_SIZE)
    pairs: Iterable[list[str]] = json.loads((workdir / f"{name}-pairs.json").read_text())
    out = open(workdir / f"{name}-rank{rank}.jsonl", "w")  # noqa: SIM115 (closed below)
    try:
        for scenario, case in pairs:
            print(f"start {scenario} {case}", flush=True)
            started = time.perf_counter()
            group = dist.new_group(list(range(WORLD_SIZE)), timeout=CASE_TIMEOUT)
            try:
                row = dist_scenarios.SCENARIOS[scenario](case, group, workdir)
                row["error"] = None
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # reported to the test that owns the pair (DCP raises
                # CheckpointException, a BaseException)
                row = {"error": traceback.format_exc(limit=12)}
            row.update(scenario=scenario, case=case, rank=rank,
                       seconds=round(time.perf_counter() - started, 3))
            out.write(json.dumps(row) + "\n")
            out.flush()
            dist.barrier()
    finally:
        out.close()
        dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    _worker(args.rank, args.port, args.workdir, args.name)
