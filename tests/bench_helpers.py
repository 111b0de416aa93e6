"""Shared helpers of the benchmark tests: a tiny suite and the database read back directly."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from optimkit.cli import main

# One real task, three optimizers, three test seeds, one tuning seed, a 4-lr window with room
# for one extension, one weight decay: about 27 cells, a few seconds.
TINY = ["--tasks", "diabetes-mlp", "--optimizers", "adam,sgd,adagrad", "--seeds", "3",
        "--tuning-seeds", "1", "--lr-range", "0.01,0.1", "--budget", "5",
        "--weight-decays", "0.01", "--no-cost"]
OUTCOME_COLUMNS = ("task", "optimizer", "hypers", "seed", "role", "device", "schedule",
                   "version", "lr", "final_metric", "diverged", "steps", "steps_to_target",
                   "state_bytes_per_param", "n_params", "losses", "evals_no_time", "path")


def run_tiny(out: Path, *extra: str) -> int:
    return main(["bench", *TINY, "--out", str(out), "--workers", "1", "--quiet", *extra])


def outcome_rows(db: Path) -> list[tuple]:
    """Every cell's outcome columns (the clock readings left out), sorted by key."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = []
    for row in conn.execute("SELECT * FROM cells ORDER BY task, optimizer, hypers, seed, role"):
        item = dict(row)
        item["evals_no_time"] = json.dumps([e[:2] for e in json.loads(item["evals"])])
        rows.append(tuple(item[c] for c in OUTCOME_COLUMNS))
    conn.close()
    return rows


def final_values(db: Path) -> dict[tuple[str, str], dict[int, tuple[float | None, int]]]:
    """(task, optimizer) -> {test seed: (final metric, diverged)}, from SQL alone."""
    conn = sqlite3.connect(db)
    out: dict = {}
    for task, optimizer, hypers, seed, metric, diverged in conn.execute(
            "SELECT task, optimizer, hypers, seed, final_metric, diverged FROM cells "
            "WHERE role='final'"):
        out.setdefault((task, optimizer), {}).setdefault(hypers, {})[seed] = (metric, diverged)
    conn.close()
    for key, by_hypers in out.items():
        assert len(by_hypers) == 1, f"{key}: final runs at several hypers {list(by_hypers)}"
        out[key] = next(iter(by_hypers.values()))
    return out
