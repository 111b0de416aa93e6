"""``optimkit bench --executor ray``: the same cells on a local Ray instance, same results."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from optimkit.bench.runner import CellSpec, run_cell
from optimkit.cli import main

if os.environ.get("CI"):
    import ray  # CI installs the dev extras, Ray included: a missing Ray must fail there
else:
    ray = pytest.importorskip("ray", reason="Ray is the optional extra `ray`: pip install ray")
ROOT = str(Path(__file__).resolve().parents[1])
pytestmark = pytest.mark.slow  # starts a Ray cluster and runs a bench through it
SUITE = ["--tasks", "diabetes-mlp", "--optimizers", "adam", "--seeds", "2", "--tuning-seeds",
         "1", "--lr-range", "0.01,0.1", "--budget", "4", "--weight-decays", "none", "--no-cost"]


@pytest.fixture
def local_ray(monkeypatch):
    # Started by the test, on this machine only; its workers inherit PYTHONPATH to find
    # optimkit, and the bench joins this instance instead of starting its own.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, *sys.path]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_matches_the_inline_cells(tmp_path, local_ray):
    out = tmp_path / "ray"
    assert main(["bench", *SUITE, "--out", str(out), "--executor", "ray", "--workers", "2",
                 "--quiet"]) == 0
    with sqlite3.connect(out / "results.sqlite") as conn:
        rows = conn.execute("SELECT task, optimizer, hypers, seed, role, schedule, final_metric,"
                            " losses FROM cells ORDER BY role, hypers").fetchall()
    roles = sorted((r[4], r[3]) for r in rows)
    assert roles[:2] == [("final", 1), ("final", 2)] and set(roles[2:]) == {("tune", 0)}
    for task, optimizer, hypers, seed, role, schedule, metric, losses in rows:
        inline = run_cell(CellSpec(task, optimizer, hypers, seed, role, "cpu", schedule))
        assert metric == inline["final_metric"]
        assert json.loads(losses) == [list(p) for p in inline["losses"]]
    assert (out / "report.html").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_pids(marker: str) -> list[int]:
    """The processes of the cluster this test started: their command line names its own
    temporary folder (no other Ray on the machine is touched)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def started_cluster(monkeypatch):
    """A Ray cluster started as a user would: ``ray start --head`` plus a worker node, on
    127.0.0.1, one CPU each; the bench joins it through RAY_ADDRESS."""
    import signal
    import subprocess
    import tempfile
    import time

    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to find the cluster's processes again")
    temp = tempfile.mkdtemp(prefix="okray", dir="/tmp")  # short: Ray's socket paths
    # No token: a token file in ~/.ray is shared by every Ray of this user on the machine.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, *sys.path]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    port = _free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([*ray_cli, "start", "--head", f"--port={port}", f"--temp-dir={temp}",
                        "--include-dashboard=false", *common], env=env, check=True,
                       capture_output=True, timeout=240)
        subprocess.run([*ray_cli, "start", f"--address=127.0.0.1:{port}", *common], env=env,
                       check=True, capture_output=True, timeout=240)
        monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        yield port
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for sig in (signal.SIGTERM, signal.SIGKILL):  # never `ray stop`: it ends every Ray
            for pid in _cluster_pids(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)


def test_a_started_cluster_gives_the_process_pools_results(tmp_path, started_cluster):
    assert main(["bench", *SUITE, "--out", str(tmp_path / "ray"), "--executor", "ray",
                 "--workers", "2", "--quiet"]) == 0
    assert len(ray.nodes()) == 2 and all(n["Alive"] for n in ray.nodes())
    assert ray.cluster_resources().get("CPU") == 2.0  # the cluster's, not a local Ray's
    ray.shutdown()
    assert main(["bench", *SUITE, "--out", str(tmp_path / "pool"), "--workers", "2",
                 "--quiet"]) == 0
    query = ("SELECT task, optimizer, hypers, seed, role, schedule, final_metric, losses, "
             "evals FROM cells ORDER BY task, optimizer, hypers, seed, role")
    rows = {}
    for name in ("ray", "pool"):
        with sqlite3.connect(tmp_path / name / "results.sqlite") as conn:
            rows[name] = [(*r[:8], [e[:2] for e in json.loads(r[8])])
                          for r in conn.execute(query).fetchall()]
    assert rows["ray"] == rows["pool"] and len(rows["ray"]) >= 4
