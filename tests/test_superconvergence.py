"""examples/superconvergence.py, shortened: a fair 1cycle-vs-constant comparison that says
what it measured (same lr grid and seeds for both, picked on validation, scored on test)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "superconvergence.py"


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("superconvergence", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_both_schedules_are_tuned_alike_and_the_report_follows_the_numbers(
        example, tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    grid = [3e-3, 3e-2]
    out = example.main(["--epochs", "2,1", "--grid", "3e-2,3e-3", "--seeds", "3",
                        "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert out["runs_per_schedule"] == len(grid) * 3
    for epochs in (1, 2):
        tuning = {t["schedule"]: t["val_by_lr"] for t in out["tuning"] if t["epochs"] == epochs}
        assert set(tuning) == {"constant", "1cycle"}
        assert all(sorted(means) == grid for means in tuning.values())  # the same budget
        for row in (r for r in out["rows"] if r["epochs"] == epochs):
            means = tuning[row["schedule"]]
            assert row["lr"] == max(means, key=lambda lr: (means[lr], -lr))  # on validation
            assert row["val"] == means[row["lr"]] and len(row["test"]) == 3
        one, const = ([r["test"] for r in out["rows"]
                       if r["epochs"] == epochs and r["schedule"] == s] for s in ("1cycle",
                                                                                   "constant"))
        said, _, _ = example.verdict(one[0], const[0])
        assert any(line.strip().startswith(f"{epochs} epochs: {said}")
                   for line in printed.splitlines())
    assert "picked on validation, scored on test" in printed
    assert len(out["finder"]["rows"]) == 2 and out["finder"]["max_lr"] > 0
    # the figure goes to --out; nothing lands in the current folder
    assert (tmp_path / "out" / "superconvergence.png").read_bytes()[:4] == b"\x89PNG"
    assert list(cwd.iterdir()) == []


def test_tuning_reads_validation_only(example):
    Run = example.Run
    runs = [Run("constant", 0.01, 0, [0.90], [0.99]), Run("constant", 0.1, 0, [0.95], [0.50]),
            Run("constant", 0.01, 1, [0.90], [0.99]), Run("constant", 0.1, 1, [0.93], [0.50])]
    lr, means = example.tuned(runs)
    assert lr == 0.1 and means == pytest.approx({0.01: 0.90, 0.1: 0.94})
    # a tie goes to the smaller lr
    assert example.tuned([Run("x", 0.1, 0, [0.9], [0.0]), Run("x", 0.01, 0, [0.9], [0.0])])[0] \
        == 0.01


@pytest.mark.parametrize("onecycle, constant, said", [
    ([0.95, 0.96, 0.97], [0.93, 0.94, 0.95], "1cycle better"),   # +2 points on every seed
    ([0.90, 0.91, 0.92], [0.93, 0.935, 0.95], "1cycle worse"),
    ([0.95, 0.90, 0.97], [0.93, 0.94, 0.95], "tie"),             # mixed signs
    ([0.99], [0.90], "tie"),                                     # one seed proves nothing
])
def test_the_verdict_needs_an_interval_that_excludes_zero(example, onecycle, constant, said):
    assert example.verdict(onecycle, constant)[0] == said


def test_a_bad_output_folder_is_refused_before_any_training(example, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(example, "study", lambda *a, **k: pytest.fail("trained first"))
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--out", str(tmp_path / "file")])
    assert exit_info.value.code == 2
