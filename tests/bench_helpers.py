"""Shared helpers of the benchmark tests: a tiny suite and the database read back directly."""

from __future__ import annotations

import sqlite3
import statistics
from pathlib import Path

from optimkit.cli import main

# One real task, two optimizers, two seeds, a 3-lr budget: 10 cells, a few seconds.
TINY = ["--tasks", "diabetes-mlp", "--optimizers", "adam,sgd", "--seeds", "2", "--budget", "3"]
OUTCOME_COLUMNS = ("task", "optimizer", "hypers", "seed", "role", "device", "version", "lr",
                   "final_metric", "diverged", "steps", "steps_to_target",
                   "state_bytes_per_param", "n_params", "losses", "evals_no_time", "path")


def run_tiny(out: Path, *extra: str) -> int:
    return main(["bench", *TINY, "--out", str(out), "--workers", "1", "--quiet", *extra])


def outcome_rows(db: Path) -> list[tuple]:
    """Every cell's outcome columns (the clock readings left out), sorted by key."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = []
    import json

    for row in conn.execute("SELECT * FROM cells ORDER BY task, optimizer, hypers, seed, role"):
        item = dict(row)
        item["evals_no_time"] = json.dumps([e[:2] for e in json.loads(item["evals"])])
        rows.append(tuple(item[c] for c in OUTCOME_COLUMNS))
    conn.close()
    return rows


def final_means(db: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(task, optimizer) -> (tuned lr, mean final test metric), computed from SQL alone."""
    conn = sqlite3.connect(db)
    out = {}
    pairs = conn.execute("SELECT DISTINCT task, optimizer FROM cells").fetchall()
    for task, optimizer in pairs:
        finals = conn.execute(
            "SELECT lr, final_metric FROM cells WHERE task=? AND optimizer=? AND role='final'",
            (task, optimizer)).fetchall()
        lrs = {lr for lr, _ in finals}
        assert len(lrs) == 1, f"{task}/{optimizer}: final runs at several lrs {lrs}"
        out[(task, optimizer)] = (lrs.pop(), statistics.fmean(m for _, m in finals))
    conn.close()
    return out
