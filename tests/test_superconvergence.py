"""examples/superconvergence.py, shortened: the finder's max_lr + 1cycle beat a constant lr."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "superconvergence.py"


def test_onecycle_reaches_the_target_in_fewer_epochs_than_a_constant_lr(tmp_path, capsys):
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("superconvergence", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    plot = tmp_path / "curves.png"
    out = example.main(["--epochs", "5", "--finder-steps", "50", "--target", "0.9",
                        "--plot", str(plot)])
    assert out["max_lr"] > 1e-3  # the finder allows a larger lr than Adam's default
    assert out["onecycle_epochs"] is not None
    assert out["constant_epochs"] is None or out["onecycle_epochs"] < out["constant_epochs"]
    printed = capsys.readouterr().out
    assert "1cycle" in printed and "constant lr 1e-3" in printed
    assert plot.read_bytes()[:4] == b"\x89PNG"
