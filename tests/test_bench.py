"""optimkit bench: tasks, protocol, database, report, resume after SIGKILL, and bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bench_helpers import TINY, final_means, outcome_rows, run_tiny

from optimkit.bench import report, scoring, suite, tasks
from optimkit.bench.runner import CellSpec, run_cell
from optimkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "report"
    assert run_tiny(out) == 0
    return out


# ------------------------------------------------------------------ tasks
def test_task_interface_and_unknown_name():
    with pytest.raises(ValueError, match="no-such-task"):
        tasks.get("no-such-task")
    for name in ("digits-mlp", "digits-cnn", "diabetes-mlp", "zen-char-gru",
                 "rosenbrock", "beale", "rastrigin"):
        task = tasks.TASKS[name]
        assert task.illustrative == (name in ("rosenbrock", "beale", "rastrigin"))
        assert task.metric and task.description and isinstance(task.target, float)
        instance = task.build(3)
        inputs, targets = next(iter(instance.batches()))
        loss = instance.loss_fn(instance.model(inputs), targets)
        assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
        assert math.isfinite(instance.evaluate())


def test_batches_are_seeded():
    def first_targets(seed):
        return [t.clone() for _, t in tasks.get("digits-mlp").build(seed).batches()][:3]

    same = first_targets(5), first_targets(5)
    assert all(torch.equal(a, b) for a, b in zip(*same, strict=True))
    other = first_targets(6)
    assert not all(torch.equal(a, b) for a, b in zip(same[0], other, strict=True))


def test_zen_corpus_ships_with_python():
    text = tasks.zen_corpus()
    assert text.startswith("The Zen of Python") and len(text) > 10_000


def test_cell_is_deterministic_and_measures_state_memory():
    spec = CellSpec.make("diabetes-mlp", "adam", {"lr": 1e-2}, 1, "final")
    first, second = run_cell(spec), run_cell(spec)
    for key in ("final_metric", "losses", "steps", "steps_to_target"):
        assert first[key] == second[key]
    assert first["state_bytes_per_param"] == pytest.approx(8.0, abs=0.1)  # two fp32 moments
    sgd = run_cell(CellSpec.make("diabetes-mlp", "sgd", {"lr": 0.1}, 1, "final"))
    assert sgd["state_bytes_per_param"] == 0.0  # plain SGD keeps nothing


def test_divergence_is_detected():
    result = run_cell(CellSpec.make("rosenbrock", "sgd", {"lr": 1.0}, 0, "tune"))
    assert result["diverged"] == 1 and math.isnan(result["final_metric"])
    assert result["steps"] < 20


# ------------------------------------------------------------------ scoring
def test_ranks_share_ties_and_nan_is_last():
    ranks = scoring.average_ranks({"a": 0.9, "b": 0.9, "c": 0.5, "d": float("nan")}, True)
    assert ranks == {"a": 1.5, "b": 1.5, "c": 3.0, "d": 4.0}
    assert scoring.average_ranks({"a": 2.0, "b": 1.0}, False) == {"b": 1.0, "a": 2.0}
    # Equal values: more divergence ranks lower.
    ranks = scoring.average_ranks({"a": 0.5, "b": 0.5}, True, {"a": 0.5, "b": 0.0})
    assert ranks == {"b": 1.0, "a": 2.0}


def test_star_formula():
    assert [scoring.stars(r, 5) for r in (1, 2, 3, 4, 5)] == [3, 3, 2, 1, 0]
    assert scoring.stars(1.0, 1) == 3 and scoring.stars(float("nan"), 4) == 0


def test_mean_ci_is_student_t():
    mean, half = scoring.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(scoring.mean_ci([1.0])[1])


def test_lr_grid_is_the_same_for_everyone():
    assert suite.lr_grid(5) == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    rows = [{"lr": 1e-3, "final_metric": 0.5, "diverged": 0},
            {"lr": 1e-2, "final_metric": 0.9, "diverged": 0},
            {"lr": 1e-1, "final_metric": float("nan"), "diverged": 1}]
    assert suite.best_lr("digits-mlp", rows) == 1e-2


# ------------------------------------------------------------------ end to end
def test_end_to_end_outputs_match_the_database(tiny):
    for name in ("results.sqlite", "leaderboard.md", "report.html", "results.csv",
                 "results.json", "lr-tuning.png", "cost.png", "loss-diabetes-mlp.png"):
        assert (tiny / name).stat().st_size > 0, name
    db = tiny / "results.sqlite"
    conn = sqlite3.connect(db)
    roles = dict(conn.execute("SELECT role, COUNT(*) FROM cells GROUP BY role").fetchall())
    conn.close()
    assert roles == {"tune": 2 * 3, "final": 2 * 2}

    expected = final_means(db)
    with open(tiny / "results.csv") as handle:
        table = {(r["task"], r["optimizer"]): r for r in csv.DictReader(handle)}
    leaderboard = (tiny / "leaderboard.md").read_text()
    page = (tiny / "report.html").read_text()
    for key, (lr, mean) in expected.items():
        assert float(table[key]["lr"]) == lr
        assert float(table[key]["mean"]) == pytest.approx(mean, rel=1e-12)
        shown = f"{report.fmt(mean)}"
        assert f"{shown} ± " in leaderboard and f"(lr {lr:g})" in leaderboard
        assert shown in page
    data = json.loads((tiny / "results.json").read_text())
    assert data["protocol"]["lr_grid"] == [1e-4, 1e-2, 1.0]
    assert set(data["scores"]) == {"adam", "sgd"}
    stars = {o: s["stars"] for o, s in data["scores"].items()}
    assert sorted(stars.values()) == [0, 3]  # two optimizers: one first, one last
    assert scoring.STAR_FORMULA in leaderboard
    assert page.count('src="data:image/png;base64,') == len(list(tiny.glob("*.png")))


NOTES = """Some notes.

|         | Description | Score |
|:--------|:------------|-------|
| **SGD** | Basic method | |
| **Adam** | Momentum + RMSProp | ⭐ |
| **Ranger** | RAdam + Lookahead | ⭐⭐⭐ |

More text.
"""


def test_notes_table_gets_measured_scores(tiny, tmp_path):
    summary = report.load(tiny)
    filled = report.fill_notes(NOTES, summary).splitlines()
    for name in ("adam", "sgd"):
        row = next(line for line in filled if line.lower().startswith(f"| **{name}**"))
        score = row.split("|")[3].strip()
        assert score.startswith(report._stars(summary.stars[name]))
        assert f"rank {report.fmt(summary.mean_rank[name], 2)}/2" in score
    ranger = next(line for line in filled if line.startswith("| **Ranger**"))
    assert ranger.split("|")[3].strip() == "–"  # not measured: its unmeasured stars are gone
    assert any(scoring.STAR_FORMULA in line for line in filled)
    assert filled[-1] == "More text."
    with pytest.raises(ValueError, match="Score"):
        report.fill_notes("no table here", summary)
    notes = tmp_path / "notes-in.md"
    notes.write_text(NOTES)
    assert main(["report", "--out", str(tiny), "--notes", str(notes)]) == 0
    assert (tiny / "notes.md").read_text() == report.fill_notes(NOTES, summary)


def test_report_is_rebuilt_from_the_database_alone(tiny, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.sqlite").write_bytes((tiny / "results.sqlite").read_bytes())
    assert main(["report", "--out", str(copy)]) == 0
    for name in ("leaderboard.md", "results.csv", "results.json"):
        assert (copy / name).read_text() == (tiny / name).read_text(), name
    assert {p.name for p in copy.glob("*.png")} == {p.name for p in tiny.glob("*.png")}


def test_rerun_skips_finished_cells(tiny, capsys):
    before = outcome_rows(tiny / "results.sqlite")
    assert run_tiny(tiny) == 0
    assert "0 cells run, 10 already done" in capsys.readouterr().out
    assert outcome_rows(tiny / "results.sqlite") == before


def test_kill_9_then_resume_gives_the_uninterrupted_database(tiny, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "optimkit", "bench", *TINY, "--out", str(out),
            "--workers", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    db = out / "results.sqlite"
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    done = conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0  # the schema is being created
            if done >= 2:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed = outcome_rows(db)
    assert 2 <= len(killed) < 10  # whole rows only, and not all of them

    # --resume replays the recorded settings, here on a process pool of 2.
    assert main(["bench", "--out", str(out), "--resume", "--workers", "2", "--quiet"]) == 0
    resumed = outcome_rows(db)
    assert len(resumed) == 10
    assert resumed == outcome_rows(tiny / "results.sqlite")  # the uninterrupted run
    assert set(killed) <= set(resumed)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_optimizer_that_raises_is_recorded_not_fatal(tmp_path, monkeypatch, capsys):
    from optimkit import registry

    def broken(params, lr):
        raise TypeError("this optimizer cannot be built")

    entry = registry.Entry("broken", broken, registry.get("sgd").reference)
    monkeypatch.setitem(registry.REGISTRY, "broken", entry)
    out = tmp_path / "report"
    assert main(["bench", "--tasks", "diabetes-mlp", "--optimizers", "sgd,broken", "--seeds",
                 "1", "--budget", "1", "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert "broken on diabetes-mlp failed: TypeError: this optimizer" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["scores"]["broken"]["mean_rank"] == 2.0
    row = next(r for r in results["results"] if r["optimizer"] == "broken")
    assert row["error"].startswith("TypeError") and row["mean"] is None
    assert "| **broken** |" in (out / "leaderboard.md").read_text()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "args, message",
    [
        (["--optimizers", "adam,nosuchopt"], "nosuchopt"),
        (["--tasks", "digits-mlp,nosuchtask"], "nosuchtask"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"],
         "device"),
        (["--device", "banana"], "banana"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["bench", *args, "--out", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flag", [["--seeds", "0"], ["--workers", "x"], ["--budget", "-1"],
                                  ["--executor", "slurm"], ["--no-such-flag"]])
def test_bad_flags_are_refused_and_nothing_is_written(tmp_path, capsys, flag):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *flag, "--out", str(out)])
    assert exit_info.value.code == 2
    assert flag[0] in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_output_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["bench", *TINY, "--out", str(blocker), "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["bench", *TINY, "--out", str(blocker / "below"), "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_resume_without_a_database_is_refused(tmp_path, capsys):
    assert main(["bench", "--resume", "--out", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "no results database" in capsys.readouterr().err


def test_report_without_a_database_is_refused(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "no results database" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ optimkit plot
def test_plot_draws_trajectories_and_refuses_unknown_names(tmp_path, capsys):
    out = tmp_path / "pictures"
    assert main(["plot", "beale", "--optimizers", "sgd,adam", "--out", str(out),
                 "--budget", "2"]) == 0
    picture = out / "trajectories-beale.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", "rosenbrock", "--optimizers", "sgd,ranger-typo", "--out",
                 str(tmp_path / "no")]) == 2
    assert "ranger-typo" in capsys.readouterr().err
    assert main(["plot", "himmelblau", "--out", str(tmp_path / "no")]) == 2
    assert "himmelblau" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
