"""optimkit bench end to end: tasks, database, report, tiers from the stored numbers, resume
after SIGKILL, outputs, progress, compare, and bad input."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_helpers import TINY, final_values, outcome_rows, run_tiny
from scipy import stats

import optimkit
from optimkit.bench import commands, fingerprint, lm, mnist1d, ranking, report, suite, tasks
from optimkit.bench.runner import CellSpec, lr_scheduler, run_cell
from optimkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, str]:
    """One tiny run, its stdout captured (not a terminal: progress comes as lines)."""
    out = tmp_path_factory.mktemp("bench") / "report"
    every, commands.PROGRESS_EVERY = commands.PROGRESS_EVERY, 0.0
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = main(["bench", *TINY, "--out", str(out), "--workers", "1"])
    finally:
        commands.PROGRESS_EVERY = every
    assert code == 0, buffer.getvalue()
    return out, buffer.getvalue()


# ------------------------------------------------------------------ tasks
@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_every_task_builds_trains_and_scores(name):
    task = tasks.get(name)
    assert task.metric and task.description and isinstance(task.target, float)
    assert task.tolerance > 0
    instance = task.build(3)
    assert instance.steps_per_epoch == sum(1 for _ in instance.batches())
    inputs, targets = next(iter(instance.batches()))
    loss = instance.loss_fn(instance.model(inputs), targets)
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    assert math.isfinite(instance.evaluate("val")) and math.isfinite(instance.evaluate("test"))
    with pytest.raises(ValueError, match="split"):
        instance.evaluate("train")


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="no-such-task"):
        tasks.get("no-such-task")


def test_batches_are_seeded():
    def first_targets(name, seed):
        return [t.clone() for _, t in tasks.get(name).build(seed).batches()][:3]

    for name in ("digits-mlp", "stdlib-lm"):
        same = first_targets(name, 5), first_targets(name, 5)
        assert all(torch.equal(a, b) for a, b in zip(*same, strict=True))
        other = first_targets(name, 6)
        assert not all(torch.equal(a, b) for a, b in zip(same[0], other, strict=True))


def test_corpora_ship_with_python():
    assert tasks.zen_corpus().startswith("The Zen of Python")
    text = lm.corpus()
    assert len(text["train"]) > 1_000_000 and len(text["val"]) > 50_000
    assert len(text["test"]) > 50_000
    info = lm.corpus_info()
    assert len(info["sha256"]) == 64 and info["python"].count(".") == 2
    # A held-out file is never in training: the split is by file name.
    assert tasks.get("stdlib-lm").meta()["data"] == info


def test_mnist1d_is_generated_deterministically_and_is_hard_for_a_linear_model():
    x, y = mnist1d.generate(500, seed=7)
    again, _ = mnist1d.generate(500, seed=7)
    assert x.shape == (500, mnist1d.LENGTH) and torch.equal(x, again)
    assert torch.bincount(y).tolist() == [50] * 10  # balanced
    assert not torch.equal(x, mnist1d.generate(500, seed=8)[0])
    # Not linearly easy: least squares on one-hot labels stays far from perfect.
    data, labels, (train, _, test) = mnist1d.dataset()
    design = torch.cat([data, torch.ones(len(data), 1)], 1)
    weights = torch.linalg.lstsq(design[train], torch.eye(10)[labels[train]]).solution
    accuracy = (design[test] @ weights).argmax(1).eq(labels[test]).float().mean()
    assert 0.15 < float(accuracy) < 0.6


@pytest.mark.slow
def test_cell_is_deterministic_and_measures_state_memory():
    spec = CellSpec.make("diabetes-mlp", "adam", {"lr": 1e-2}, 1, "final")
    first, second = run_cell(spec), run_cell(spec)
    for key in ("final_metric", "losses", "steps", "steps_to_target"):
        assert first[key] == second[key]
    assert first["state_bytes_per_param"] == pytest.approx(8.0, abs=0.1)  # two fp32 moments
    sgd = run_cell(CellSpec.make("diabetes-mlp", "sgd", {"lr": 0.1}, 1, "final"))
    assert sgd["state_bytes_per_param"] == 0.0  # plain SGD keeps nothing
    assert first["extra"]["cpu_seconds"] > 0


def test_a_cells_seconds_are_its_own_work_not_the_machines_load(monkeypatch):
    """On a CPU a cell counts its thread's CPU seconds: time the machine spends elsewhere (here
    a sleep in every step, as a busy neighbour would take the core) is not the optimizer's."""
    from optimkit.bench import runner

    spec = CellSpec.make("rosenbrock", "sgd", {"lr": 1e-3}, 0, "final", schedule="constant")
    monkeypatch.setattr(runner.registry, "create",
                        lambda name, params, **kw: torch.optim.SGD(params, **kw))
    quiet = run_cell(spec)
    step = torch.optim.SGD.step

    def busy_neighbour(self, *args, **kwargs):
        time.sleep(0.002)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", busy_neighbour)
    start = time.perf_counter()
    busy = run_cell(spec)
    slept = busy["steps"] * 0.002
    assert time.perf_counter() - start >= slept  # the sleeps happened inside the cell
    assert busy["final_metric"] == quiet["final_metric"]
    assert busy["seconds"] < quiet["seconds"] + 0.5 * slept
    assert runner.clock("cuda") is time.perf_counter


def test_warmup_then_cosine_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = lr_scheduler(optimizer, "cosine", 100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Linear warm-up over the first 5 % of training (from lr / 5), then a cosine decay to 0.
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(0.1) and peak == 5 and lrs[peak] == pytest.approx(0.5, 1e-3)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lr_scheduler(optimizer, "constant", 100) is None
    with pytest.raises(ValueError, match="schedule"):
        lr_scheduler(optimizer, "linear", 100)


def test_divergence_is_detected():
    result = run_cell(CellSpec.make("rosenbrock", "sgd", {"lr": 1.0}, 0, "tune",
                                    schedule="constant"))
    assert result["diverged"] == 1 and math.isnan(result["final_metric"])
    assert result["steps"] < 20


def test_cost_cell_times_a_10m_parameter_model_against_fused_adam():
    result = run_cell(CellSpec.make("cost", "sgd", {}, 0, "cost", schedule="constant"))
    assert result["error"] is None and result["n_params"] >= 10_000_000
    assert result["extra"]["x_fused_adam"] > 0 and result["state_bytes_per_param"] == 0.0


def test_presets_and_default_optimizers():
    standard = suite.Config.for_preset()
    assert standard.preset == "standard" and "stdlib-lm-8x" in standard.tasks
    assert standard.seeds >= 5 and standard.tuning_seeds >= 2 and standard.per_decade >= 3
    assert suite.Config.for_preset("quick").provisional and not standard.provisional
    quick = suite.Config.for_preset("quick")
    assert set(quick.tasks) == {"digits-mlp", "digits-cnn", "diabetes-mlp", "zen-char-gru"}
    # quick fits 10 minutes on 2 cores: 5 test seeds, 2 tuning seeds, a 3-lr start window and
    # no weight-decay stage nor cost cell (44 cells a pair before any extension), plus the
    # self-tuning track's untuned cells (one per test seed and task for each such optimizer).
    assert quick.seeds >= 5 and quick.tuning_seeds >= 2 and quick.per_decade >= 3
    untuned = len(suite.self_tuning_specs(quick))
    assert untuned <= quick.seeds * len(quick.tasks) * (len(quick.optimizers) + 1)
    assert suite.count_cells(quick) - untuned <= 44 * len(quick.optimizers) and not quick.cost
    rules = standard.rules()
    assert not set(rules.tuning_seeds) & set(rules.test_seeds)
    # The default optimizers: every registered one, the notes' table rows first (20 of 21
    # rows are registered), in the table's order.
    from optimkit import registry
    from optimkit.bench import notes

    assert set(standard.optimizers) == set(registry.available())
    rows = notes.default_optimizers()
    assert len(rows) == 20 and standard.optimizers[:20] == rows
    assert standard.optimizers[:2] == ("sgd", "sgd-momentum")


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_end_to_end_outputs(tiny):
    out, printed = tiny
    for name in ("results.sqlite", "leaderboard.md", "leaderboard.json", "report.html",
                 "results.csv", "runs.csv", "results.json", "critical-difference.png",
                 "lr-sensitivity.png", "task-diabetes-mlp.png", "curves-diabetes-mlp.png"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(list(out.glob("*.png")))
    # Progress lines (stdout is not a terminal here), then the end summary.
    assert "cells (" in printed and "elapsed" in printed
    assert "top tier (" in printed and f"report: {out / 'report.html'}" in printed


@pytest.mark.slow
def test_tiers_in_the_json_follow_from_the_stored_numbers(tiny):
    """Recompute tiers from the database with scipy alone, and compare with leaderboard.json."""
    out, _ = tiny
    board = json.loads((out / "leaderboard.json").read_text())
    values = final_values(out / "results.sqlite")
    names = sorted({o for _, o in values})
    blocks, groups = [], []
    for task in [t["name"] for t in board["tasks"]]:  # the report's task order
        seeds = sorted(values[(task, names[0])])
        groups.append(np.arange(len(blocks), len(blocks) + len(seeds)))
        for seed in seeds:  # R², higher is better; a diverged seed ranks last
            row = [-math.inf if values[(task, o)][seed][1] else values[(task, o)][seed][0]
                   for o in names]
            blocks.append(stats.rankdata([-v for v in row]))
    ranks = np.array(blocks)
    mean_rank = dict(zip(names, ranks.mean(axis=0), strict=True))
    n, k = ranks.shape
    q = stats.studentized_range.ppf(0.95, k, np.inf) / math.sqrt(2)

    def nemenyi(rows):  # Friedman, then tiers from the best mean rank down
        r = ranks[rows]
        chi2 = stats.friedmanchisquare(*r.T).statistic
        with np.errstate(divide="ignore"):  # a replicate whose blocks all agree: F = inf
            f = (n - 1) * chi2 / (n * (k - 1) - chi2)
        p = stats.f.sf(f, k - 1, (k - 1) * (n - 1))
        cd = q * math.sqrt(k * (k + 1) / (6 * n))
        means = r.mean(axis=0)
        tiers, left, tier = [0] * k, sorted(range(k), key=lambda j: means[j]), 0
        while left:
            tier += 1
            lead = means[left[0]]
            for j in [j for j in left if means[j] - lead <= cd + 1e-12 or p >= 0.05]:
                tiers[j] = tier
            left = [j for j in left if not tiers[j]]
        return tiers, p, cd

    _, p, cd = nemenyi(np.arange(n))
    # Bagged (ranking.py): the median tier over BAG resamples of the seeds within each task,
    # drawn from the documented seed, then numbered 1, 2, ...
    rng = np.random.default_rng(ranking.BOOTSTRAP_SEED)
    draws = np.concatenate([g[rng.integers(0, len(g), (ranking.BAG, len(g)))] for g in groups],
                           axis=1)
    median = (np.median([nemenyi(d)[0] for d in draws], axis=0) if p < 0.05
              else np.ones(k))
    dense = {t: i + 1 for i, t in enumerate(sorted(set(median)))}
    tiers = {o: dense[m] for o, m in zip(names, median, strict=True)}
    got = {row["name"]: row for row in board["optimizers"]}
    assert set(got) == set(names)
    for o in names:
        assert got[o]["mean_rank"] == pytest.approx(mean_rank[o])
        assert got[o]["tier"] == tiers[o]
        assert got[o]["stars"] == max(0, min(3, 4 - tiers[o]))
    assert board["statistics"]["critical_difference"] == pytest.approx(cd)
    assert board["statistics"]["p_value"] == pytest.approx(p)
    assert 0.0 <= board["stability"] <= 1.0
    # Per task: the tied set, the tuned lr and weight decay, the lrs tried.
    task = board["tasks"][0]
    assert task["name"] == "diabetes-mlp" and set(task["tied_with_best"]) <= set(names)
    for result in task["results"]:
        assert result["lr"] in task["lr_grid"] and result["weight_decay"] in (0.0, 0.01)
        assert len(result["per_seed"]) == 3


@pytest.mark.slow
def test_csv_and_json_hold_the_per_seed_values(tiny):
    out, _ = tiny
    values = final_values(out / "results.sqlite")
    with open(out / "results.csv") as handle:
        table = {(r["task"], r["optimizer"]): r for r in csv.DictReader(handle)}
    for key, by_seed in values.items():
        stored = [by_seed[s][0] for s in sorted(by_seed)]
        shown = [float(v) for v in table[key]["per_seed"].split(";")]
        assert shown == pytest.approx(stored, rel=1e-5)
        assert float(table[key]["mean"]) == pytest.approx(float(np.mean(stored)), rel=1e-9)
    data = json.loads((out / "results.json").read_text())
    assert {r["optimizer"] for r in data["results"]} == {"adam", "sgd", "adagrad"}
    assert all(len(r["lr_trials"]) >= 4 for r in data["results"])
    with open(out / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == len(outcome_rows(out / "results.sqlite"))


NOTES = """Some notes.

|         | Description | Score |
|:--------|:------------|-------|
| **SGD** | Basic method | |
| **Adam** | Momentum + RMSProp | ⭐ |
| **Ranger** | RAdam + Lookahead | ⭐⭐⭐ |

More text.
"""


@pytest.mark.slow
def test_notes_table_gets_scores_from_the_tiers(tiny, tmp_path):
    out, _ = tiny
    summary = report.load(out)
    filled = report.fill_notes(NOTES, summary).splitlines()
    for name in ("adam", "sgd"):
        row = next(line for line in filled if line.lower().startswith(f"| **{name}**"))
        score = row.split("|")[3].strip()
        assert score.startswith(report.stars_text(summary.stars(name)))
        assert f"tier {summary.tier(name)} of" in score
    ranger = next(line for line in filled if line.startswith("| **Ranger**"))
    assert ranger.split("|")[3].strip() == "–"  # not measured: its unmeasured stars are gone
    assert filled[-1] == "More text."
    with pytest.raises(ValueError, match="Score"):
        report.fill_notes("no table here", summary)
    notes = tmp_path / "notes-in.md"
    notes.write_text(NOTES)
    assert main(["report", "--out", str(out), "--notes", str(notes)]) == 0
    assert (out / "notes.md").read_text() == report.fill_notes(NOTES, summary)


@pytest.mark.slow
def test_report_is_rebuilt_from_the_database_alone(tiny, tmp_path):
    out, _ = tiny
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.sqlite").write_bytes((out / "results.sqlite").read_bytes())
    assert main(["report", "--out", str(copy)]) == 0
    for name in ("leaderboard.md", "leaderboard.json", "results.csv", "results.json"):
        assert (copy / name).read_text() == (out / name).read_text(), name
    assert {p.name for p in copy.glob("*.png")} == {p.name for p in out.glob("*.png")}


def test_the_fingerprint_covers_the_numerics_and_not_the_presentation(tmp_path):
    import shutil

    root = tmp_path / "optimkit"
    shutil.copytree(fingerprint.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    covered = fingerprint.numerics_sources(root)
    assert covered == sorted(covered) and all(not p.startswith("/") for p in covered)
    assert {"recipes.py", "bench/runner.py", "bench/tasks.py", "bench/search.py"} <= set(covered)
    assert not fingerprint.PRESENTATION & set(covered)
    base = fingerprint.fingerprint(root, "2.13.0")
    assert fingerprint.fingerprint(root, "2.13.0") == base  # deterministic
    assert fingerprint.fingerprint(root, "2.14.0") != base  # torch's version counts
    # So do numpy's and Python's (the language-model corpus is Python's standard library).
    here = fingerprint.runtime()
    assert [line.split()[0] for line in here.splitlines()[:3]] == ["torch", "numpy", "python"]
    assert fingerprint.fingerprint(root) == fingerprint.fingerprint(root, here)
    assert fingerprint.fingerprint(root, here.replace("numpy ", "numpy 0")) != \
        fingerprint.fingerprint(root, here)
    assert fingerprint.fingerprint(root, here + " (another build)") != \
        fingerprint.fingerprint(root, here)
    for name in ("bench/report.py", "bench/plots.py", "cli.py", "outputs.py"):
        with open(root / name, "a") as handle:
            handle.write("\n# a presentation change\n")
    assert fingerprint.fingerprint(root, "2.13.0") == base
    step = next(p for p in covered if p.startswith("steppers/"))
    with open(root / step, "a") as handle:
        handle.write("\n# a numerics change\n")
    assert fingerprint.fingerprint(root, "2.13.0") != base
    # The installed code's version: optimkit's, plus 12 hex digits of its fingerprint.
    release, digits = fingerprint.code_version().split("+")
    assert release == optimkit.__version__ and len(digits) == 12
    assert digits == fingerprint.fingerprint()[:12]
    assert suite.Config.for_preset("quick").version == fingerprint.code_version()


@pytest.mark.slow
def test_resume_refuses_a_run_recorded_by_other_code(tiny, tmp_path, capsys, monkeypatch):
    out, _ = tiny
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.sqlite").write_bytes((out / "results.sqlite").read_bytes())
    recorded = report.load(copy).config.version
    assert recorded == fingerprint.code_version()
    monkeypatch.setattr(fingerprint, "code_version", lambda *files: "0.1.0+changedcode0")
    before = outcome_rows(copy / "results.sqlite")
    assert main(["bench", "--out", str(copy), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    for part in (f"recorded by optimkit {recorded}", "this environment is optimkit "
                 "0.1.0+changedcode0", "not be comparable", "--out", "re-install"):
        assert part in err, part
    assert outcome_rows(copy / "results.sqlite") == before  # nothing run
    # The report still rebuilds from the recorded version's cells, and says whose they are.
    assert main(["report", "--out", str(copy)]) == 0
    text = capsys.readouterr().out
    assert f"from the cells of optimkit {recorded} (the installed code is optimkit " \
           "0.1.0+changedcode0)" in text
    for name in ("leaderboard.md", "leaderboard.json", "results.csv", "results.json"):
        assert (copy / name).read_text() == (out / name).read_text(), name


@pytest.mark.slow
def test_rerun_skips_finished_cells(tiny, capsys):
    out, _ = tiny
    before = outcome_rows(out / "results.sqlite")
    assert run_tiny(out) == 0
    assert f"({0} run now, {len(before)} already done)" in capsys.readouterr().out
    assert outcome_rows(out / "results.sqlite") == before


@pytest.mark.slow
def test_compare_shows_which_tiers_changed(tiny, tmp_path, capsys):
    out, _ = tiny
    other = tmp_path / "seeds10"
    assert run_tiny(other, "--seed-start", "10") == 0
    capsys.readouterr()
    folder = tmp_path / "compared"
    assert main(["compare", str(out), str(other), "--out", str(folder)]) == 0
    text = capsys.readouterr().out
    data = json.loads((folder / "compare.json").read_text())
    assert (folder / "compare.md").read_text() == text
    assert "keep their tier" in text and "Why each change" in text
    first, second = report.load(out), report.load(other)
    same = sum(first.tier(o) == second.tier(o) for o in first.ranked) / len(first.ranked)
    assert data["same_tier"] == pytest.approx(same)
    assert len(data["changes"]) == sum(first.tier(o) != second.tier(o) for o in first.ranked)
    assert second.config.rules().tuning_seeds == (10,)


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_database(tiny, tmp_path):
    out_full, _ = tiny
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "optimkit", "bench", *TINY, "--out", str(out),
            "--workers", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    db = out / "results.sqlite"
    _wait_for_cells(proc, db, 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed = outcome_rows(db)
    total = len(outcome_rows(out_full / "results.sqlite"))
    assert 2 <= len(killed) < total  # whole rows only, and not all of them

    # --resume replays the recorded settings, here on a process pool of 2.
    assert main(["bench", "--out", str(out), "--resume", "--workers", "2", "--quiet"]) == 0
    resumed = outcome_rows(db)
    assert resumed == outcome_rows(out_full / "results.sqlite")  # the uninterrupted run
    assert set(killed) <= set(resumed)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _wait_for_cells(proc, db: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    if conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] >= count:
                        return
            except sqlite3.OperationalError:
                pass  # the schema is being created
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before {count} cells: {proc.poll()}")


@pytest.mark.slow
def test_an_optimizer_that_raises_is_recorded_not_fatal(tmp_path, monkeypatch, capsys):
    from optimkit import registry

    class Broken:  # what the bench reads of a registry entry
        name, aliases, paper, year, status = "broken", (), None, None, "stable"
        description = "an optimizer that cannot be built"

    real_get, real_create = registry.get, registry.create

    def create(name, params, **hypers):
        if name == "broken":
            raise TypeError("this optimizer cannot be built")
        return real_create(name, params, **hypers)

    monkeypatch.setattr(registry, "get", lambda n: Broken if n == "broken" else real_get(n))
    monkeypatch.setattr(registry, "create", create)
    out = tmp_path / "report"
    assert main(["bench", "--tasks", "diabetes-mlp", "--optimizers", "sgd,broken", "--seeds",
                 "2", "--tuning-seeds", "1", "--lr-range", "0.1,0.1", "--budget", "1",
                 "--weight-decays", "none", "--no-cost", "--out", str(out), "--workers", "1",
                 "--quiet"]) == 0
    assert "broken on diabetes-mlp failed: TypeError: this optimizer" in capsys.readouterr().err
    board = json.loads((out / "leaderboard.json").read_text())
    assert {o["name"]: o["mean_rank"] for o in board["optimizers"]}["broken"] == 2.0  # last
    results = json.loads((out / "results.json").read_text())
    row = next(r for r in results["results"] if r["optimizer"] == "broken")
    assert row["error"].startswith("TypeError")
    assert "| **broken** |" in (out / "leaderboard.md").read_text()


# ------------------------------------------------------------------ outputs and bad input
@pytest.mark.slow
def test_a_different_run_does_not_silently_replace_a_report(tiny, tmp_path, capsys):
    out, _ = tiny
    board = (out / "leaderboard.md").read_text()
    assert main(["bench", *TINY[:-1], "--seeds", "2", "--no-cost", "--out", str(out),
                 "--quiet"]) == 2
    assert "holds the report of another run" in capsys.readouterr().err
    assert (out / "leaderboard.md").read_text() == board


def test_default_output_folders(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(commands, "_check_same_run", lambda config, out, replace:
                        seen.append(str(out)))
    from optimkit.cli import build_parser

    for argv, folder in ((["bench"], "optimkit-report"),
                         (["bench", "--preset", "quick"], "optimkit-report-quick"),
                         (["bench", "--optimizers", "adam"], "optimkit-report-subset"),
                         (["bench", "--preset", "full", "--tasks", "stdlib-lm"],
                          "optimkit-report-full-subset")):
        commands._bench_config(build_parser(["bench"]).parse_args(argv))
        assert seen[-1] == folder
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "args, message",
    [
        (["--optimizers", "adam,nosuchopt"], "nosuchopt"),
        (["--optimizers", ""], "--optimizers"),
        (["--optimizers", " , "], "--optimizers"),
        (["--tasks", ""], "--tasks"),
        (["--tasks", "digits-mlp,nosuchtask"], "nosuchtask"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"],
         "device"),
        (["--device", "banana"], "banana"),
        (["--lr-range", "0.1,0.1", "--budget", "1", "--tasks", "diabetes-mlp",
          "--optimizers", "sgd", "--resume"], "--resume"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["bench", *args, "--out", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flag", [["--seeds", "1"], ["--workers", "x"], ["--budget", "-1"],
                                  ["--executor", "slurm"], ["--no-such-flag"],
                                  ["--lr-range", "0.1"], ["--lr-range", "1,0.1"],
                                  ["--weight-decays", "x"], ["--preset", "huge"],
                                  ["--seed-start", "-1"], ["--schedule", "linear"]])
def test_bad_flags_are_refused_and_nothing_is_written(tmp_path, capsys, flag):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *flag, "--out", str(out)])
    assert exit_info.value.code == 2
    assert flag[0] in capsys.readouterr().err
    assert not out.exists()


def test_a_budget_smaller_than_the_window_is_refused(tmp_path, capsys):
    assert main(["bench", "--budget", "2", "--out", str(tmp_path / "never")]) == 2
    assert "budget" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("command", ["bench", "report", "plot", "compare"])
def test_every_flag_shows_its_default(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out.split("options:")[1]
    entries: list[str] = []
    for line in text.splitlines():
        if line.startswith("  -"):  # argparse starts each option at column 2
            entries.append(line)
        elif entries:
            entries[-1] += " " + line.strip()
    entries = [e for e in entries if not e.strip().startswith("-h, --help")]
    assert entries
    for entry in entries:
        assert "default" in entry, f"{command}: {entry.split()[0]} has no default in its help"


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


def test_a_database_of_the_old_format_is_refused(tmp_path, capsys):
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        conn.execute("CREATE TABLE cells (task TEXT, optimizer TEXT)")
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "older optimkit bench" in capsys.readouterr().err


# ------------------------------------------------------------------ optimkit plot
@pytest.mark.slow
def test_plot_has_its_own_folder_and_never_writes_into_a_report(tiny, tmp_path, capsys,
                                                              monkeypatch):
    out, _ = tiny
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "beale", "--optimizers", "sgd,adam", "--budget", "2"]) == 0
    picture = tmp_path / commands.PLOT_OUT / "trajectories-beale.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = sorted(p.name for p in out.iterdir())
    assert main(["plot", "beale", "--out", str(out)]) == 2
    assert "holds a bench report" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    assert main(["plot", "rosenbrock", "--optimizers", "sgd,ranger-typo", "--out",
                 str(tmp_path / "no")]) == 2
    assert "ranger-typo" in capsys.readouterr().err
    assert main(["plot", "himmelblau", "--out", str(tmp_path / "no")]) == 2
    assert "himmelblau" in capsys.readouterr().err
    assert main(["plot", "beale", "--optimizers", "", "--out", str(tmp_path / "no")]) == 2
    assert not (tmp_path / "no").exists()
