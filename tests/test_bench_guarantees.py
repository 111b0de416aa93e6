"""Nothing silently wrong: a missing dependency, an absurd number, a tampered or damaged
database and a changed interpreter each end in one clear line, never in wrong results."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from bench_helpers import TINY, outcome_rows

from optimkit.bench import fingerprint, suite, tasks
from optimkit.bench import store as store_module
from optimkit.cli import build_parser, main

# Two optimizers, one lr, one tuning seed, two test seeds: 6 cells.
SMALL = ["--optimizers", "sgd,adam", "--seeds", "2", "--tuning-seeds", "1", "--lr-range",
         "0.1,0.1", "--budget", "1", "--weight-decays", "none", "--no-cost", "--workers", "1",
         "--quiet"]
RUN = ["--tasks", "diabetes-mlp", *SMALL]


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory) -> Path:
    """The database of one tiny run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("guarantees") / "report"
    assert main(["bench", *RUN, "--out", str(out)]) == 0
    return out / "results.sqlite"


def _copy(db: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db, folder / "results.sqlite")
    return folder


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------ C3: bounded numbers
@pytest.mark.parametrize("flag, value", [
    ("--seeds", "1000000000"), ("--tuning-seeds", "1000000000"), ("--budget", "1000000000"),
    ("--workers", "1000000"), ("--seed-start", "1000000000000"),
    ("--lr-range", "1e-3,inf"), ("--lr-range", "1e-30,1e-3"), ("--lr-range", "nan,1"),
    ("--weight-decays", "inf"), ("--weight-decays", ",".join(["0.1"] * 50)),
])
def test_absurd_numbers_are_refused_with_their_bound_before_any_work(tmp_path, capsys, flag,
                                                                      value):
    parser = build_parser(["bench"])
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["bench", flag, value, "--out", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and ("between" in err or "at most" in err or "<=" in err)
    assert not (tmp_path / "never").exists()


def test_a_recorded_run_with_absurd_numbers_is_refused_before_allocating():
    # The run of `--resume` comes from the database, not from the flags: the same bounds.
    with pytest.raises(ValueError, match="seeds must be an int between 2 and 1000"):
        suite.Config.for_preset("quick", seeds=10**9)
    with pytest.raises(ValueError, match="workers"):
        suite.Config.for_preset("quick", workers=10**6)


def test_plot_refuses_an_infinite_lr(tmp_path, capsys):
    assert main(["plot", "beale", "--lr", "inf", "--out", str(tmp_path / "no")]) == 2
    assert "--lr" in _one_line(capsys)
    assert not (tmp_path / "no").exists()


# ------------------------------------------------------------------ U1: damaged databases
def _damage(kind: str, db: Path, folder: Path, monkeypatch) -> Path:
    if kind == "garbage":
        folder.mkdir()
        (folder / "results.sqlite").write_bytes(b"not a database, just bytes\n" * 200)
    elif kind == "truncated":
        _copy(db, folder)
        data = (folder / "results.sqlite").read_bytes()
        (folder / "results.sqlite").write_bytes(data[: len(data) // 3])
    else:  # read-only: what sqlite says when the file cannot be written (even as root)
        _copy(db, folder)
        monkeypatch.setattr(store_module, "_connect", lambda path: sqlite3.connect(
            f"file:{path}?mode=ro", uri=True))
    return folder


@pytest.mark.parametrize("kind", ["garbage", "truncated", "read-only"])
def test_a_damaged_database_is_one_line_naming_the_file_exit_2(tiny_db, tmp_path, capsys,
                                                               monkeypatch, kind):
    folder = _damage(kind, tiny_db, tmp_path / "damaged", monkeypatch)
    db = folder / "results.sqlite"
    before = db.read_bytes()
    assert main(["bench", *RUN, "--out", str(folder)]) == 2
    err = _one_line(capsys)
    assert str(db) in err
    assert ("read-only" if kind == "read-only" else "damaged") in err
    assert db.read_bytes() == before
    if kind == "read-only":  # reading needs no write access: the report still builds
        assert main(["report", "--out", str(folder)]) == 0
        return
    assert main(["report", "--out", str(folder)]) == 2
    assert str(db) in _one_line(capsys)
    assert main(["bench", "--resume", "--out", str(folder), "--quiet"]) == 2
    assert str(db) in _one_line(capsys)


# ------------------------------------------------------------------ X1: stored text is inert
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def test_stored_text_is_escaped_in_the_html_and_inert_in_the_markdown(tiny_db, tmp_path):
    import json

    folder = _copy(tiny_db, tmp_path / "tampered")
    with sqlite3.connect(folder / "results.sqlite") as conn:
        meta = json.loads(conn.execute("SELECT meta FROM tasks WHERE name='diabetes-mlp'")
                          .fetchone()[0])
        meta.update(description=IMG, metric=f"R2 | col\n## injected {SCRIPT}", epochs=SCRIPT)
        conn.execute("UPDATE tasks SET meta=? WHERE name='diabetes-mlp'", (json.dumps(meta),))
        run_id, config = conn.execute("SELECT id, config FROM runs ORDER BY id DESC").fetchone()
        config = json.loads(config)
        version = config["version"] + IMG
        conn.execute("UPDATE runs SET config=? WHERE id=?",
                     (json.dumps({**config, "version": version}), run_id))
        conn.execute("UPDATE cells SET version=?", (version,))
    assert main(["report", "--out", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    for raw in (SCRIPT, "<img src=x", "<script>"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # rendered, as text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    board = (folder / "leaderboard.md").read_text()
    assert "<script>" not in board and "<img" not in board
    lines = board.splitlines()
    assert not any(line.startswith("## injected") for line in lines)
    heading = next(line for line in lines if line.startswith("## diabetes-mlp: "))
    assert "R2 \\| col ## injected &lt;script&gt;" in heading


def test_a_stored_task_name_never_becomes_a_path(tiny_db, tmp_path, capsys):
    import json

    folder = _copy(tiny_db, tmp_path / "tampered")
    with sqlite3.connect(folder / "results.sqlite") as conn:
        run_id, config = conn.execute("SELECT id, config FROM runs ORDER BY id DESC").fetchone()
        config = {**json.loads(config), "tasks": ["../../escaped"]}
        conn.execute("UPDATE runs SET config=? WHERE id=?", (json.dumps(config), run_id))
    assert main(["report", "--out", str(folder)]) == 2
    assert "not a task name" in _one_line(capsys)
    assert not list(tmp_path.glob("**/*escaped*"))


def test_a_stored_number_of_the_wrong_type_is_refused_not_a_traceback(tiny_db, tmp_path,
                                                                    capsys):
    import json

    folder = _copy(tiny_db, tmp_path / "tampered")
    with sqlite3.connect(folder / "results.sqlite") as conn:
        meta = json.loads(conn.execute("SELECT meta FROM tasks").fetchone()[0])
        conn.execute("UPDATE tasks SET meta=?", (json.dumps({**meta, "tolerance": IMG}),))
    assert main(["report", "--out", str(folder)]) == 2
    assert str(folder / "results.sqlite") in _one_line(capsys)


# ------------------------------------------------------------------ S5: environment failures


@pytest.mark.parametrize("module, args, needed_by", [
    ("sklearn", ["--preset", "quick"], "task digits-mlp"),
    ("sklearn", TINY, "task diabetes-mlp"),
    ("scipy", ["--tasks", "mnist1d-cnn", *SMALL], "statistics"),
    ("matplotlib", ["--tasks", "mnist1d-cnn", *SMALL], "plots"),
])
def test_a_missing_extra_is_named_before_any_work(tmp_path, capsys, monkeypatch, module, args,
                                                  needed_by):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails, as if absent
    out = tmp_path / "never"
    assert main(["bench", *args, "--out", str(out), "--quiet"]) == 2
    err = _one_line(capsys)
    for part in (f"module {module}", needed_by, "pip install 'optimkit[bench]'"):
        assert part in err, part
    assert not out.exists()  # nothing written, no store


def _register(monkeypatch, name: str, error: BaseException) -> None:
    base = tasks.get("mnist1d-cnn")  # a task that declares no requirement

    def build(seed: int, device: str):
        if isinstance(error, ImportError):
            import optimkit_no_such_module_for_a_test  # noqa: F401
        raise error

    monkeypatch.setitem(tasks.TASKS, name, dataclasses.replace(base, name=name, builder=build))


@pytest.mark.parametrize("error", [ImportError(), FileNotFoundError(2, "No such file",
                                                                    "/data/train.npy")])
def test_an_environment_error_in_a_cell_stops_the_run_and_is_never_stored(
        tmp_path, capsys, monkeypatch, error):
    _register(monkeypatch, "needs-env", error)
    out = tmp_path / "report"
    assert main(["bench", "--tasks", "needs-env", *SMALL, "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert "environment error" in err and "needs-env" in err
    assert ("optimkit_no_such_module_for_a_test" if isinstance(error, ImportError)
            else "/data/train.npy") in err
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 0
    assert not (out / "report.html").exists()


def test_an_environment_error_in_a_pool_worker_stops_the_run(tmp_path, capsys):
    module = tmp_path / "needs_data.py"
    module.write_text(
        "from optimkit.bench import tasks\n"
        "def build(seed, device):\n"
        "    open('/no/such/folder/data.npy', 'rb')\n"
        "tasks.register(tasks.Task('needs-data', 'reads a missing file', 'test MSE', 0.1,\n"
        "                          False, 1, build))\n")
    out = tmp_path / "report"
    assert main(["bench", "--task-module", str(module), *SMALL, "--workers", "2",
                 "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert "environment error" in err and "/no/such/folder/data.npy" in err
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 0


def test_environment_failures_stored_by_an_old_version_are_run_again(tiny_db, tmp_path,
                                                                     capsys):
    folder = _copy(tiny_db, tmp_path / "old")
    db = folder / "results.sqlite"
    with sqlite3.connect(db) as conn:
        broken = conn.execute(
            "UPDATE cells SET error=?, final_metric=NULL, diverged=1, steps=0 WHERE "
            "optimizer='sgd'", ("ModuleNotFoundError: No module named 'sklearn'",)).rowcount
    assert broken > 0
    # Not trusted by the report...
    assert main(["report", "--out", str(folder)]) == 2
    err = _one_line(capsys)
    assert f"{broken} cells" in err and "environment" in err and str(db) in err
    # ...and run again by the bench, which then gives the database of a clean run.
    assert main(["bench", *RUN, "--out", str(folder)]) == 0
    assert f"({broken} run now, " in capsys.readouterr().out
    assert outcome_rows(db) == outcome_rows(tiny_db)


# ------------------------------------------------------------------ U5: what differs
def _forget_version() -> None:
    """Drop the cached version of the installed code (computed once per process)."""
    fingerprint._installed.cache_clear()


def test_resume_after_only_the_interpreter_changed_says_so(tiny_db, tmp_path, capsys,
                                                           monkeypatch):
    folder = _copy(tiny_db, tmp_path / "interpreter")
    here = fingerprint.runtime()
    other = here.replace("python ", "python 3.99.0 (another interpreter) was ", 1)
    monkeypatch.setattr(fingerprint, "runtime", lambda: other)
    _forget_version()
    try:
        assert main(["bench", "--resume", "--out", str(folder), "--quiet"]) == 2
    finally:
        monkeypatch.undo()
        _forget_version()
    err = _one_line(capsys)
    assert "the Python interpreter was " in err and "is now 3.99.0 (another interpreter)" in err
    assert "optimkit's code" not in err and "torch" not in err.split("what differs")[1]


def test_resume_after_a_code_change_names_the_files(tiny_db, tmp_path, capsys, monkeypatch):
    folder = _copy(tiny_db, tmp_path / "code")
    copy = tmp_path / "optimkit"
    shutil.copytree(fingerprint.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "bench" / "search.py", "a") as handle:
        handle.write("\n# a numerics change\n")
    monkeypatch.setattr(fingerprint, "PACKAGE", copy)
    _forget_version()
    try:
        assert main(["bench", "--resume", "--out", str(folder), "--quiet"]) == 2
    finally:
        monkeypatch.undo()
        _forget_version()
    err = _one_line(capsys)
    assert "optimkit's code: optimkit/bench/search.py." in err
    assert "interpreter" not in err


# ------------------------------------------------------------------ bench your own model
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bench_my_model.py"
OWN = ["--optimizers", "sgd,adam", "--seeds", "2", "--tuning-seeds", "1", "--lr-range",
       "0.03,0.03", "--budget", "1", "--weight-decays", "none", "--no-cost", "--workers", "1",
       "--quiet"]


def test_bench_your_own_model_end_to_end(tmp_path, capsys):
    import json

    module = tmp_path / "my_tasks.py"
    shutil.copyfile(EXAMPLE, module)
    out = tmp_path / "report"
    # Two workers: the pool's processes must load the task module themselves.
    assert main(["bench", "--task-module", str(module), *OWN, "--workers", "2",
                 "--out", str(out)]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    assert [t["name"] for t in board["tasks"]] == ["my-mlp-regression"]  # the preset's replaced
    assert {o["name"] for o in board["optimizers"]} == {"sgd", "adam"}
    assert all(o["tier"] is not None for o in board["optimizers"])
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM cells WHERE error IS NOT NULL").fetchone() \
            == (0,)
    assert "## my-mlp-regression: test MSE (ranked)" in (out / "leaderboard.md").read_text()
    assert 'id="task-my-mlp-regression"' in (out / "report.html").read_text()
    capsys.readouterr()
    # The report needs the database alone, not the task module.
    module.rename(tmp_path / "moved.py")
    assert main(["report", "--out", str(out)]) == 0
    # An edited task module is part of the version: never silently resumed.
    (tmp_path / "moved.py").rename(module)
    with open(module, "a") as handle:
        handle.write("\n# the model changed\n")
    capsys.readouterr()
    assert main(["bench", "--resume", "--out", str(out), "--quiet"]) == 2
    err = _one_line(capsys)
    assert f"the task module {module.resolve()} changed" in err and "optimkit's code" not in err


def test_task_module_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad task file')\n")
    for spec, message in ((str(tmp_path / "absent.py"), "no such file"),
                          ("no_such_module_anywhere", "no such module"),
                          (str(empty), "registers no task"),
                          (str(broken), "RuntimeError: bad task file")):
        assert main(["bench", "--task-module", spec, *OWN, "--out", str(tmp_path / "n")]) == 2
        err = _one_line(capsys)
        assert "--task-module" in err and message in err, err
    assert not (tmp_path / "n").exists()


def test_a_task_whose_builder_raises_stops_the_run_and_fails_no_optimizer(tmp_path, capsys):
    module = tmp_path / "buggy.py"
    module.write_text(
        "from optimkit.bench import tasks\n"
        "def build(seed, device):\n"
        "    raise IndexError('bug in my task')\n"
        "tasks.register(tasks.Task('buggy', 'a builder with a bug', 'test MSE', 0.1, False, 1,\n"
        "                          build))\n")
    out = tmp_path / "report"
    assert main(["bench", "--task-module", str(module), *SMALL, "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert "task buggy failed to build" in err and "IndexError: bug in my task" in err
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 0


@pytest.mark.parametrize("change, message", [
    (dict(name="a|b"), "task name"), (dict(name="cost"), "task name"),
    (dict(higher_is_better="yes"), "higher_is_better"), (dict(epochs=0), "epochs"),
    (dict(target=float("nan")), "target"), (dict(requires="sklearn"), "requires"),
])
def test_a_malformed_task_is_refused_at_registration(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(tasks.get("mnist1d-cnn"), **change)
