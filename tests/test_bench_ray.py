"""``optimkit bench --executor ray``: the same cells on a local Ray instance, same results."""

from __future__ import annotations

import pytest
from bench_helpers import TINY, outcome_rows, run_tiny

from optimkit.cli import main

ray = pytest.importorskip("ray", reason="Ray is the optional extra `ray`: pip install ray")


@pytest.fixture
def local_ray():
    # Started by the test, on this machine only; the bench joins it instead of starting its own.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": _root()}})
    yield
    ray.shutdown()


def _root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1])


def test_ray_executor_matches_the_local_run(tmp_path, local_ray):
    on_ray = tmp_path / "ray"
    assert main(["bench", *TINY, "--out", str(on_ray), "--executor", "ray", "--workers", "2",
                 "--quiet"]) == 0
    inline = tmp_path / "inline"
    assert run_tiny(inline) == 0
    rows = outcome_rows(on_ray / "results.sqlite")
    assert len(rows) == 10
    assert rows == outcome_rows(inline / "results.sqlite")
    assert (on_ray / "report.html").exists()
