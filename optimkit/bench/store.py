"""The results database: one SQLite file (stdlib ``sqlite3``) in the output folder.

Each finished cell is written in one transaction, keyed by (task, optimizer, hypers, seed,
role, device, schedule, version); a process killed at any moment leaves whole rows or none
(SQLite's journal rolls back a half-written transaction on the next open). The run's
configuration and the tasks' descriptions are stored too, so ``optimkit report`` needs nothing
but this file.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .runner import CellSpec, is_environment_error

DB_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    task TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    hypers TEXT NOT NULL,
    seed INTEGER NOT NULL,
    role TEXT NOT NULL,
    device TEXT NOT NULL,
    schedule TEXT NOT NULL,
    version TEXT NOT NULL,
    lr REAL NOT NULL,
    final_metric REAL,
    diverged INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    steps_to_target INTEGER,
    seconds REAL NOT NULL,
    seconds_to_target REAL,
    step_time REAL NOT NULL,
    state_bytes_per_param REAL NOT NULL,
    n_params INTEGER NOT NULL,
    losses TEXT NOT NULL,
    evals TEXT NOT NULL,
    path TEXT,
    extra TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (task, optimizer, hypers, seed, role, device, schedule, version)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT PRIMARY KEY,
    meta TEXT NOT NULL
);
"""

# Columns that are measurements of the clock, not outcomes of the (deterministic) training.
TIMING_COLUMNS = ("seconds", "seconds_to_target", "step_time")


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=30)


class StoreError(ValueError):
    """The database file cannot be used (damaged, not a database, read-only, disk full): a
    ValueError, so the command line prints it as one line naming the file, exit status 2."""


def _explain(path: Path, err: sqlite3.Error) -> StoreError:
    text = str(err)
    if "readonly" in text or "read-only" in text:
        what = "is read-only"
    elif "not a database" in text or "malformed" in text or "corrupt" in text:
        what = "is damaged or not a results database"
    elif "full" in text:
        what = "cannot grow (the disk is full)"
    elif "unable to open" in text:
        what = "cannot be opened"
    else:
        what = "cannot be used"
    return StoreError(f"the results database {path} {what} (sqlite: {text}); move it away or "
                      "choose another --out")


def _guarded(method: Callable) -> Callable:
    """Turn any sqlite3 error of ``method`` into a StoreError naming the file."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as err:
            raise _explain(self.path, err) from err
        except (json.JSONDecodeError, KeyError, TypeError) as err:  # a hand-edited row
            raise StoreError(f"the results database {self.path} holds a row this version cannot "
                             f"read ({type(err).__name__}: {err}); move it away or choose "
                             "another --out") from err

    return wrapper


class Store:
    """A thin wrapper over the SQLite file; every write is its own transaction.

    Any SQLite failure (a damaged, truncated or foreign file, a read-only file, a full disk)
    is raised as :class:`StoreError`, a one-line ValueError naming the file."""

    def __init__(self, folder: Path | str, create: bool = True):
        self.path = Path(folder) / DB_NAME
        if not create and not self.path.exists():
            raise ValueError(f"no results database at {self.path}")
        self.conn = None
        try:
            self._open()
        except BaseException:
            if self.conn is not None:
                self.conn.close()
            raise

    @_guarded
    def _open(self) -> None:
        self.conn = _connect(self.path)
        self.conn.row_factory = sqlite3.Row
        columns = {r["name"] for r in self.conn.execute("PRAGMA table_info(cells)")}
        if columns and "schedule" not in columns:
            raise ValueError(f"{self.path} was written by an older optimkit bench (before lr "
                             "schedules and weight-decay tuning); use a new --out folder")
        if not columns or not self._has_tables():
            with self.conn:
                self.conn.executescript(_SCHEMA)

    def _has_tables(self) -> bool:
        names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type='table'")}
        return {"cells", "runs", "tasks"} <= names

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    @_guarded
    def record_run(self, config: dict[str, Any], task_meta: Iterable[dict[str, Any]]) -> None:
        with self.conn:
            self.conn.execute("INSERT INTO runs (config) VALUES (?)", (json.dumps(config),))
            for meta in task_meta:
                self.conn.execute(
                    "INSERT OR REPLACE INTO tasks (name, meta) VALUES (?, ?)",
                    (meta["name"], json.dumps(meta)),
                )

    @_guarded
    def save(self, spec: CellSpec, version: str, result: dict[str, Any]) -> None:
        row = {
            "task": spec.task, "optimizer": spec.optimizer, "hypers": spec.hypers,
            "seed": spec.seed, "role": spec.role, "device": spec.device,
            "schedule": spec.schedule, "version": version, "lr": spec.lr,
            **{k: _nan_to_none(result[k]) for k in (
                "final_metric", "diverged", "steps", "steps_to_target", "seconds",
                "seconds_to_target", "step_time", "state_bytes_per_param", "n_params")},
            "losses": json.dumps(result["losses"]),
            "evals": json.dumps([[s, _nan_to_none(m), t] for s, m, t in result["evals"]]),
            "path": None if result["path"] is None else json.dumps(result["path"]),
            "extra": json.dumps(result.get("extra") or {}),
            "error": result.get("error"),
        }
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.conn:  # one transaction per cell
            self.conn.execute(f"INSERT OR REPLACE INTO cells ({names}) VALUES ({marks})",
                              tuple(row.values()))

    # ------------------------------------------------------------------ reads
    @_guarded
    def outcomes(self, version: str, device: str) -> list[dict[str, Any]]:
        """Key and outcome of every cell of ``version`` on ``device`` (what the search reads).

        A cell recorded as failed for the environment (a missing module or file: see
        :func:`.runner.is_environment_error`, stored so by older versions) is left out, so the
        search runs it again."""
        rows = self.conn.execute(
            "SELECT task, optimizer, hypers, seed, role, device, schedule, final_metric, diverged,"
            " error FROM cells WHERE version=? AND device=?", (version, device))
        return [{**dict(r), "final_metric": _none_to_nan(r["final_metric"])} for r in rows
                if not is_environment_error(r["error"])]

    @_guarded
    def environment_failures(self, version: str) -> list[tuple[str, str, str]]:
        """(task, optimizer, error) of the cells of ``version`` recorded as failed for the
        environment, not the optimizer (older versions stored them as results)."""
        rows = self.conn.execute("SELECT task, optimizer, error FROM cells WHERE version=? AND "
                                 "error IS NOT NULL ORDER BY task, optimizer", (version,))
        return [tuple(r) for r in rows if is_environment_error(r["error"])]

    @_guarded
    def cells(self, version: str | None = None, device: str | None = None) -> list[dict]:
        query, args = "SELECT * FROM cells WHERE 1=1", []
        if version is not None:
            query, args = query + " AND version=?", [*args, version]
        if device is not None:
            query, args = query + " AND device=?", [*args, device]
        rows = self.conn.execute(query + " ORDER BY task, optimizer, role, lr, seed", args)
        out = []
        for row in rows:
            item = dict(row)
            item["final_metric"] = _none_to_nan(item["final_metric"])
            item["losses"] = json.loads(item["losses"])
            item["evals"] = json.loads(item["evals"])
            item["path"] = None if item["path"] is None else json.loads(item["path"])
            item["extra"] = json.loads(item["extra"])
            out.append(item)
        return out

    @_guarded
    def errors(self, version: str) -> list[tuple[str, str, str]]:
        rows = self.conn.execute("SELECT task, optimizer, error FROM cells WHERE version=? AND "
                                 "error IS NOT NULL ORDER BY task, optimizer", (version,))
        return [tuple(r) for r in rows]

    @_guarded
    def last_config(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT config FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else json.loads(row["config"])

    @_guarded
    def task_meta(self) -> dict[str, dict[str, Any]]:
        """Each task's description; the fields the statistics read must have their types (the
        text fields are free: the report escapes them)."""
        rows = self.conn.execute("SELECT name, meta FROM tasks")
        metas = {row["name"]: json.loads(row["meta"]) for row in rows}
        for name, meta in metas.items():
            for field, kinds in (("higher_is_better", bool), ("illustrative", bool),
                                 ("target", (int, float)), ("tolerance", (int, float))):
                value = meta.get(field, False if kinds is bool else 0.0)
                if not isinstance(value, kinds) or (kinds is not bool and isinstance(value, bool)):
                    raise TypeError(f"task {name!r}: {field} is {value!r}")
        return metas


def _none_to_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)
