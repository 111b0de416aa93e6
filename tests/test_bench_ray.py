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
