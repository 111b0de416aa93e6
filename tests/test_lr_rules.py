"""benchmarks/lr_rules.py: reads the tuned lrs from any bench output, scores the LR-finder
rules with known answers, and runs end to end on a small bench folder."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from benchmarks import lr_rules

GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def test_tuned_lrs_come_from_leaderboard_json_in_any_record_layout(tmp_path):
    board = {"protocol": {"lr_grid": GRID},
             "tasks": {"t1": {"rows": [{"task": "t1", "optimizer": "adam", "tuned_lr": 0.01},
                                       {"task": "t1", "optimizer": "sgd",
                                        "hypers": {"lr": 0.1, "weight_decay": 1e-4}}]}},
             "other": [{"task": "new-task", "optimizer": "lamb", "best": {"lr": 0.003}}]}
    (tmp_path / "leaderboard.json").write_text(json.dumps(board))
    (tmp_path / "results.json").write_text(json.dumps({"results": []}))
    tuned, grid, source = lr_rules.load_tuned(tmp_path)
    assert source == "leaderboard.json" and grid == GRID
    assert tuned == {("t1", "adam"): 0.01, ("t1", "sgd"): 0.1, ("new-task", "lamb"): 0.003}


def test_tuned_lrs_and_metrics_come_from_the_database_without_json(tmp_path):
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    conn.execute("CREATE TABLE cells (task, optimizer, lr, role, version, final_metric, "
                 "diverged)")
    rows = [("digits-mlp", "adam", lr, "tune", "0.1", m, d)
            for lr, m, d in ((1e-3, 0.9, 0), (1e-2, 0.97, 0), (1e-1, None, 1))]
    rows += [("digits-mlp", "adam", 1e-2, "final", "0.1", 0.96, 0)]
    conn.executemany("INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    tuned, grid, source = lr_rules.load_tuned(tmp_path)
    assert (tuned, grid, source) == ({("digits-mlp", "adam"): 1e-2}, [1e-3, 1e-2, 1e-1],
                                     "results.sqlite")
    metrics = lr_rules.load_metrics(tmp_path)
    assert metrics == {("digits-mlp", "adam"): {1e-3: [0.9], 1e-2: [0.97], 1e-1: [None]}}


def test_a_folder_without_results_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no tuned lrs"):
        lr_rules.load_tuned(tmp_path)


def test_distance_is_in_decades_and_censored_past_a_grid_end():
    assert lr_rules.distance(1e-3, 1e-2, GRID) == (pytest.approx(1.0), False)
    assert lr_rules.distance(3.0, 1.0, GRID) == (0.0, True)     # beyond the top: unknowable
    assert lr_rules.distance(0.1, 1.0, GRID)[0] == pytest.approx(1.0)
    assert lr_rules.distance(1e-5, 1e-4, GRID) == (0.0, True)
    assert lr_rules.picks_tuned(2e-2, 1e-2, GRID) and not lr_rules.picks_tuned(5e-2, 1e-2, GRID)


def test_regret_is_the_share_of_the_spread_lost():
    metrics = {1e-3: [0.5], 1e-2: [0.9, 0.7], 1e-1: [None]}  # best over other hypers: 0.9
    assert lr_rules.regret(1.2e-2, metrics, higher=True) == 0.0
    assert lr_rules.regret(1e-3, metrics, higher=True) == pytest.approx(1.0)
    assert lr_rules.regret(0.2, metrics, higher=True) == 1.0  # nearest run diverged
    bits = {1e-3: [3.0], 1e-2: [2.0], 1e-1: [2.5]}  # lower is better
    assert lr_rules.regret(0.1, bits, higher=False) == pytest.approx(0.5)
    assert lr_rules.regret(0.1, {1e-2: [1.0]}, higher=True) is None


def test_score_counts_the_closest_rule_and_shares_ties():
    def case(a, b):
        return {"tuned": 1.0, "suggestions": {"a": 10 ** -a, "b": 10 ** -b},
                "distance": {"a": a, "b": b}, "picks": {"a": a < 0.5, "b": b < 0.5},
                "regret": {"a": None, "b": 0.6}}

    scores = lr_rules.score([case(0.1, 1.0), case(0.2, 0.2), case(2.0, 0.3)], ["a", "b"])
    assert scores["a"]["closest"] == pytest.approx(1.5)
    assert scores["b"]["closest"] == pytest.approx(1.5)
    assert scores["a"]["picks"] == 2 and scores["b"]["picks"] == 2
    assert scores["a"]["median"] == pytest.approx(0.2)
    assert scores["b"]["poor"] == 3 and math.isnan(scores["a"]["regret"])
    assert lr_rules.winner(scores) == "a"  # tie on closest: the smaller median


def test_end_to_end_on_a_small_bench_folder_with_an_unknown_task(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    results = {"protocol": {"lr_grid": GRID}, "results": [
        {"task": "diabetes-mlp", "optimizer": "adam", "lr": 0.01},
        {"task": "a-task-from-a-newer-bench", "optimizer": "adam", "lr": 0.01},
        {"task": "rosenbrock", "optimizer": "adam", "lr": 0.1},
    ]}
    (bench / "results.json").write_text(json.dumps(results))
    out = tmp_path / "tables" / "rules.md"
    assert lr_rules.main(["--bench-dir", str(bench), "--seeds", "2", "--steps", "40",
                          "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "task a-task-from-a-newer-bench" in printed and "task rosenbrock" in printed
    text = out.read_text()
    assert "Closest most often: **`" in text and "| diabetes-mlp | adam | 0.01 |" in text
    cases = json.loads(out.with_suffix(".json").read_text())["cases"]
    assert len(cases) == 2 and {c["seed"] for c in cases} == {0, 1}
    assert set(cases[0]["suggestions"]) >= {"steepest", "valley", "minimum/10", "minimum/3"}


def test_the_packaged_tables_keep_their_cases_in_benchmarks(tmp_path):
    # the tables ship with the package (``optimkit lr-find`` cites them); the cases do not
    for name in ("lr_rules", "lr_rules_quick"):
        assert lr_rules.cases_path(lr_rules.TABLES / f"{name}.md") == lr_rules.HERE / f"{name}.json"
        assert (lr_rules.TABLES / f"{name}.md").is_file()
        assert (lr_rules.HERE / f"{name}.json").is_file()
    assert lr_rules.cases_path(tmp_path / "rules.md") == tmp_path / "rules.json"
