"""Smoke test of an installed optimkit: the API and the command line, from outside the checkout.

.ci/run builds the wheel, installs it (with torch and no extra) into a clean venv and runs this
script with that venv's python from an empty folder, so ``import optimkit`` can only find the
installed package. It checks what a user gets: the optimizers build and train, a checkpoint
round-trips exactly, the LR finder runs, the ``optimkit`` command answers, and the files the
package carries besides its modules (py.typed, the tables it cites) are installed.
"""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

START = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - START:5.1f} s] {text}", flush=True)


import optimkit  # noqa: E402

where = Path(optimkit.__file__).resolve().parent
site = Path(sysconfig.get_paths()["purelib"]).resolve()
assert where == site / "optimkit", f"optimkit imported from {where}, not from {site}"
say(f"optimkit {optimkit.__version__} from {where}")

import torch  # noqa: E402  (after the check that the installed optimkit is the one imported)

say(f"torch {torch.__version__}")


def model_and_data(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model, torch.randn(64, 8), torch.randn(64, 1)


def step(model, opt, x, y) -> float:
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


# every registered optimizer builds through the catalogue and takes a step
names = optimkit.available()
assert len(names) >= 20, names
for name in names:
    model, x, y = model_and_data()
    before = [p.detach().clone() for p in model.parameters()]
    opt = optimkit.create(name, model.parameters())
    for _ in range(2):  # (ADOPT's first step only records the second moment)
        step(model, opt, x, y)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters())), name
say(f"{len(names)} optimizers built by optimkit.create and stepped twice")

# a few steps train, flat mode included
for flat in (False, True):
    model, x, y = model_and_data()
    opt = optimkit.create("adamw", model.parameters(), lr=1e-2, flat=flat)
    losses = [step(model, opt, x, y) for _ in range(30)]
    assert losses[-1] < 0.8 * losses[0], (flat, losses)
    say(f"adamw flat={flat}: loss {losses[0]:.4f} -> {losses[-1]:.4f} in 30 steps")

# state_dict round trip through torch.save: the loaded copy continues exactly like the original
model, x, y = model_and_data()
opt = optimkit.create("ranger", model.parameters(), lr=1e-2)  # Lookahead's slow weights too
for _ in range(7):
    step(model, opt, x, y)
buffer = io.BytesIO()
torch.save(opt.state_dict(), buffer)
twin = copy.deepcopy(model)
twin_opt = optimkit.create("ranger", twin.parameters(), lr=1e-2)
buffer.seek(0)
twin_opt.load_state_dict(torch.load(buffer))
for _ in range(5):
    step(model, opt, x, y)
    step(twin, twin_opt, x, y)
assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
say("ranger: state_dict round trip through torch.save, 5 more steps bit-identical")

# the LR finder restores what it touched and suggests an lr
model, x, y = model_and_data()
opt = optimkit.Adam(model.parameters(), lr=1e-3)
before = copy.deepcopy(model.state_dict())
result = optimkit.lr_find(opt, model=model, loss_fn=torch.nn.functional.mse_loss,
                          batches=[(x, y)] * 60, num_steps=60)
assert result.suggestion is not None and result.suggestion > 0
assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
assert opt.param_groups[0]["lr"] == 1e-3
say(f"lr_find: {len(result.lrs)} steps, suggestion {result.suggestion:.3g}, model restored")

# the files the package carries besides its modules
from optimkit.training.lr_finder import DEFAULT_RULE, rule_tables  # noqa: E402

assert (where / "py.typed").is_file(), "py.typed is not installed"
assert (where / "bench" / "notes_table.md").is_file()
for table in rule_tables():
    assert table.is_file() and table.is_relative_to(where), table
    assert f"The library's default (`result.suggestion`, `apply()`): `{DEFAULT_RULE}`." in (
        table.read_text(encoding="utf-8"))
say("installed: py.typed, bench/notes_table.md, " + ", ".join(p.name for p in rule_tables()))

# the command line: the console script and python -m optimkit
script = shutil.which("optimkit", path=str(Path(sys.executable).parent))
assert script, "the optimkit console script is not installed next to python"
outputs = {}
for argv in ([script, "--help"], [script, "list"], [script, "lr-find", "--help"],
             [sys.executable, "-m", "optimkit", "--help"]):
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (argv, run.stdout, run.stderr)
    assert run.stdout.strip(), argv
    shown = " ".join([Path(argv[0]).name, *argv[1:]])
    outputs[shown] = run.stdout
    say(f"$ {shown}: exit 0, {len(run.stdout.splitlines())} lines")
missing = [name for name in names if name not in outputs["optimkit list"]]
assert not missing, f"optimkit list lacks {missing}"
assert "lr-find" in outputs["optimkit --help"] and "--optimizer" in outputs[
    "optimkit lr-find --help"]
say("wheel smoke test passed")
