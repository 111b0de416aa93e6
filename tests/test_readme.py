"""The code in the README and the guides (docs/guides) runs as written.

A page's ```python blocks run in order in one namespace, as one script; a block that starts
with ``# needs:`` (a process group, a GPU) is a fragment and is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def _run(path: Path) -> dict:
    scope: dict = {"__name__": f"page_{path.stem}"}
    for block in _blocks(path):
        if not block.startswith("# needs:"):
            exec(compile(block, str(path), "exec"), scope)
    return scope


def _block(path: Path, marker: str) -> str:
    (block,) = [b for b in _blocks(path) if marker in b]
    return block


def test_readme_keeps_the_two_commands_that_ci_runs():
    lines = README.read_text(encoding="utf-8").splitlines()
    # at the very top: .ci/run greps the line after the second marker and runs it
    assert lines[3].startswith("# 1. set up and run the main job")
    assert lines[4].endswith('pip install -e ".[bench]" && optimkit bench')
    assert lines[5] == "# 2. run the tests"
    assert lines[6].endswith("python -m pytest -q -n 2")


def test_readme_quick_start_is_a_complete_script_that_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = _run(README)
    assert scope["loss"].item() < 1.5  # from ~2.3 (10 classes) at the start
    assert (tmp_path / "opt.pt").exists()


@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_code_runs_as_written(guide, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(guide)


def test_friction_adam_recipe_from_the_guide_trains_and_checkpoints():
    scope = {}
    exec(_block(ROOT / "docs/guides/build-your-own.md", "class FrictionAdam"), scope)
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = scope["FrictionAdam"]([w], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert w.abs().max() < 0.05
    assert set(opt.state[w]) == {"step", "grad_avg", "sqr_avg", "prev_grad"}


def test_part_example_from_the_guide_is_a_working_stat():
    from optimkit.core import Bucket

    scope = {}
    exec(_block(ROOT / "docs/guides/build-your-own.md", "@stat("), scope)
    part = scope["average_grad"]
    b = Bucket([torch.zeros(2)], [torch.tensor([1.0, 2.0])], {"grad_avg": [torch.zeros(2)]}, {})
    part(b, {"betas": (0.9, 0.999)})
    torch.testing.assert_close(b.state["grad_avg"][0], torch.tensor([0.1, 0.2]))
