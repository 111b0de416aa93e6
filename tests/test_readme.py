"""The README's code for building an optimizer from parts runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def _block(marker):
    (block,) = [b for b in BLOCKS if marker in b]
    return block


def test_friction_adam_recipe_from_the_readme_trains_and_checkpoints():
    scope = {}
    exec(_block("class FrictionAdam"), scope)
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = scope["FrictionAdam"]([w], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert w.abs().max() < 0.05
    assert set(opt.state[w]) == {"step", "grad_avg", "sqr_avg", "prev_grad"}


def test_part_example_from_the_readme_is_a_working_stat():
    from optimkit.core import Bucket

    scope = {}
    exec(_block("@stat("), scope)
    part = scope["average_grad"]
    b = Bucket([torch.zeros(2)], [torch.tensor([1.0, 2.0])], {"grad_avg": [torch.zeros(2)]}, {})
    part(b, {"betas": (0.9, 0.999)})
    torch.testing.assert_close(b.state["grad_avg"][0], torch.tensor([0.1, 0.2]))
