"""The LR range test: exact restore, step counting, divergence, suggestions, plot and CLI."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import optimkit
import optimkit.registry as registry
from optimkit import lr_find
from optimkit.training import LRFindResult, sweep_lrs
from optimkit.training import lr_finder as lr_finder_module


def _data(n=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = (x @ torch.randn(8, 1, generator=gen)).squeeze(1).gt(0).long()
    return [(x[i:i + 32], y[i:i + 32]) for i in range(0, n, 32)]


def _model():
    # Dropout draws from the RNG, BatchNorm has buffers: both must come back exactly.
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
        torch.nn.Dropout(0.2), torch.nn.Linear(16, 2),
    )


def _train(model, optimizer, batches, steps):
    loss_fn = torch.nn.functional.cross_entropy
    for i in range(steps):
        inputs, targets = batches[i % len(batches)]
        optimizer.zero_grad()
        loss_fn(model(inputs), targets).backward()
        optimizer.step()


def _run(make_optimizer, with_finder):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model = _model()
    optimizer = make_optimizer(model.parameters())
    batches = _data()
    _train(model, optimizer, batches, 3)  # the optimizer has state before the test
    if with_finder:
        result = lr_find(
            optimizer, model=model, loss_fn=torch.nn.functional.cross_entropy,
            batches=batches, start_lr=1e-5, end_lr=1.0, num_steps=12,
        )
        assert len(result.lrs) > 0
    _train(model, optimizer, batches, 5)
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    return model, optimizer, draws


RESTORE_CASES = [(name, lambda p, n=name: registry.create(n, p)) for name in registry.available()]
RESTORE_CASES += [
    ("torch-sgd", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("torch-adam", lambda p: torch.optim.Adam(p, lr=1e-3)),
]


@pytest.mark.parametrize("make", [c[1] for c in RESTORE_CASES], ids=[c[0] for c in RESTORE_CASES])
def test_training_after_lr_find_equals_training_without_it_bit_for_bit(make):
    model_a, opt_a, draws_a = _run(make, with_finder=False)
    model_b, opt_b, draws_b = _run(make, with_finder=True)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    state_a, state_b = opt_a.state_dict(), opt_b.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for index, values in state_a["state"].items():
        for key, value in values.items():
            other = state_b["state"][index][key]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), key
    assert draws_a == draws_b


def test_restore_brings_back_grads_and_leaves_step_unpatched():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(2, 3)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    batches = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(3)]
    lr_find(optimizer, model=model, loss_fn=torch.nn.functional.mse_loss, batches=batches,
            num_steps=5)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert "step" not in optimizer.__dict__
    assert not optimizer._optimizer_step_post_hooks  # the counting hook is removed


def test_steps_are_counted_even_through_a_step_bound_before_the_sweep():
    # A train_step holding ``optimizer.step`` from before the sweep (a wrapper, a compiled
    # step) bypasses any patch of the attribute; torch's step hook still sees it.
    optimizer, _ = _quadratic()
    step = optimizer.step
    w = optimizer.param_groups[0]["params"][0]

    def train_step():
        optimizer.zero_grad()
        loss = (w - 3.0) ** 2
        loss.backward()
        step()
        return loss

    result = lr_find(optimizer, train_step, start_lr=1e-4, end_lr=1e-2, num_steps=15)
    assert len(result.lrs) == 15 and result.stop_reason == "reached end_lr"


# ---------------------------------------------------------------- the sweep
def _quadratic(offset=0.0):
    """A train_step on ``(w - 3)^2 + offset``: well-behaved at small lr, diverging at lr > 1."""
    w = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([w], lr=0.1)

    def train_step():
        optimizer.zero_grad()
        loss = (w - 3.0) ** 2 + offset
        loss.backward()
        optimizer.step()
        return loss

    return optimizer, train_step


@pytest.mark.parametrize("mode", ["exponential", "linear"])
def test_sweep_follows_the_schedule_and_restores_the_lr(mode):
    optimizer, train_step = _quadratic()
    result = lr_find(optimizer, train_step, start_lr=1e-4, end_lr=1e-2, num_steps=20, mode=mode)
    assert result.lrs == pytest.approx(sweep_lrs(1e-4, 1e-2, 20, mode))
    assert result.stop_reason == "reached end_lr"
    if mode == "exponential":
        ratios = np.diff(np.log(result.lrs))
        assert ratios == pytest.approx(np.full(19, math.log(100) / 19))
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_divergence_stop_works_with_negative_losses():
    optimizer, train_step = _quadratic(offset=-100.0)
    result = lr_find(optimizer, train_step, start_lr=1e-3, end_lr=100.0, num_steps=60)
    assert all(loss < 0 for loss in result.losses[:20])
    # A ratio test (smoothed > 4 * best) would stop at the second step on negative losses.
    assert len(result.lrs) > 30
    assert result.stop_reason.startswith(("diverged", "loss is not finite"))
    assert result.lrs[-1] > 1.0  # the quadratic diverges only for lr > 1


def test_non_finite_loss_stops_the_sweep():
    calls = []
    w = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([w], lr=0.1)

    def train_step():
        calls.append(1)
        optimizer.step()
        return float("nan") if len(calls) == 7 else 1.0

    result = lr_find(optimizer, train_step, num_steps=50)
    assert len(result.lrs) == 7 and result.stop_reason == "loss is not finite"


def test_relative_lrs_of_param_groups_are_kept():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.01}, {"params": [b], "lr": 0.1}])
    seen = []

    def train_step():
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        return 1.0

    result = lr_find(optimizer, train_step, start_lr=1e-3, end_lr=1.0, num_steps=10)
    assert result.ratios == pytest.approx([0.1, 1.0])
    for (lr_a, lr_b), lr in zip(seen, result.lrs, strict=True):
        assert lr_b == pytest.approx(lr) and lr_a == pytest.approx(lr / 10)
    result.apply(optimizer, "valley")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(result.suggestions["valley"] / 10)


def test_gradient_accumulation_counts_optimizer_steps_not_micro_batches():
    model = torch.nn.Linear(8, 2)
    optimizer = optimkit.Adam(model.parameters())
    used = []

    class Batches:
        def __iter__(self):
            for batch in _data():
                used.append(1)
                yield batch

    result = lr_find(optimizer, model=model, loss_fn=torch.nn.functional.cross_entropy,
                     batches=Batches(), accum_steps=4, num_steps=10, end_lr=1e-2)
    assert len(result.lrs) == 10 and len(used) == 40  # the batches are iterated again


def test_steps_that_grad_scaler_skips_are_not_counted():
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    calls = []

    def train_step():
        calls.append(1)
        optimizer.zero_grad()
        loss = (w**2).sum()
        scaler.scale(loss).backward()
        if len(calls) % 3 == 0:
            w.grad.fill_(float("inf"))  # an fp16 overflow: GradScaler skips this step
        scaler.step(optimizer)
        scaler.update()
        return loss

    result = lr_find(optimizer, train_step, num_steps=10, end_lr=1e-2, extra_state=[scaler])
    assert len(result.lrs) == 10
    assert len(calls) == 14  # 10 steps + 4 skipped (calls 3, 6, 9, 12)
    assert scaler.get_scale() == 2.0**4  # the scaler, an extra, is restored too


def test_train_step_that_never_steps_is_reported(monkeypatch):
    monkeypatch.setattr(lr_finder_module, "MAX_CALLS_WITHOUT_STEP", 20)
    optimizer, _ = _quadratic()
    with pytest.raises(ValueError, match="without calling optimizer.step"):
        lr_find(optimizer, lambda: 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start_lr": 0.0}, "start_lr"),
        ({"end_lr": 1e-9}, "end_lr"),
        ({"num_steps": 1}, "num_steps"),
        ({"mode": "cosine"}, "mode"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"diverge": 0.0}, "diverge"),
        ({"accum_steps": 0}, "accum_steps"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    optimizer, train_step = _quadratic()
    with pytest.raises(ValueError, match=match):
        lr_find(optimizer, train_step, **kwargs)


def test_bad_batches_and_losses_get_clear_errors():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="model, loss_fn and batches"):
        lr_find(optimizer, model=model)
    with pytest.raises(ValueError, match="train_step"):
        lr_find(optimizer, model=model, loss_fn=torch.nn.functional.mse_loss,
                batches=[torch.randn(4, 3)])
    with pytest.raises(ValueError, match="returned None"):
        lr_find(optimizer, lambda: None)


# ---------------------------------------------------------------- suggestions
def _designed_curve(steepest_at=1e-3, minimum_at=1e-1):
    """A train_step whose loss is a known function of the current lr (log10 scale)."""
    w = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([w], lr=1.0)
    mid = math.log10(steepest_at)

    def train_step():
        x = math.log10(optimizer.param_groups[0]["lr"])
        optimizer.step()
        # Falls fastest at ``mid``, bottoms out at ``minimum_at``, then climbs steeply.
        return -math.tanh(x - mid) + 8 * max(0.0, x - math.log10(minimum_at)) ** 2

    return optimizer, train_step


def test_suggestions_find_the_steepest_descent_and_the_minimum():
    optimizer, train_step = _designed_curve()
    result = lr_find(optimizer, train_step, start_lr=1e-6, end_lr=10.0, num_steps=141,
                     smoothing=0.0)
    assert math.log10(result.suggestions["steepest"]) == pytest.approx(-3, abs=0.15)
    # The centred average (15 points here, 0.75 decades) drags the minimum towards the flat side.
    assert math.log10(result.suggestions["minimum/10"]) == pytest.approx(-2, abs=0.25)
    assert -4 < math.log10(result.suggestion) < -1  # valley: inside the falling stretch
    values = list(result.suggestions.values())
    assert result.agreement == pytest.approx(math.log10(max(values) / min(values)))
    assert "steepest" in result.summary()


def test_the_default_suggestion_is_the_measured_rule_and_is_marked():
    optimizer, train_step = _designed_curve()
    result = lr_find(optimizer, train_step, start_lr=1e-6, end_lr=10.0, num_steps=141,
                     smoothing=0.0)
    assert lr_finder_module.DEFAULT_RULE in lr_finder_module.RULES
    assert result.suggestion == result.suggestions[lr_finder_module.DEFAULT_RULE]
    assert result.suggestion == result.suggestions["minimum/3"]  # optimkit/training/lr_rules.md
    assert result.apply(optimizer) == result.suggestion
    assert optimizer.param_groups[0]["lr"] == result.suggestion
    marked = [line for line in result.summary().splitlines() if "recommended" in line]
    assert len(marked) == 1 and marked[0].split()[0] == lr_finder_module.DEFAULT_RULE
    with pytest.raises(ValueError, match="method"):
        result.apply(optimizer, "nope")


def test_smoothing_is_a_bias_corrected_running_average():
    losses = [3.0, 1.0, 2.0, 5.0]
    result = LRFindResult([1e-3, 1e-2, 1e-1, 1.0], losses, [], [1.0], "test")
    assert result.suggestions == {}  # too few points
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=1.0)
    it = iter(losses)

    def train_step():
        optimizer.step()
        return next(it)

    out = lr_find(optimizer, train_step, num_steps=4, smoothing=0.5, diverge=100.0)
    avg, expected = 0.0, []
    for i, loss in enumerate(losses, start=1):
        avg = 0.5 * avg + 0.5 * loss
        expected.append(avg / (1 - 0.5**i))
    assert out.smoothed == pytest.approx(expected)
    assert out.losses == losses


def test_suggestions_on_a_real_model_are_sensible():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(optimizer, model=model, loss_fn=torch.nn.functional.cross_entropy,
                     batches=_data(), start_lr=1e-5, end_lr=100.0, num_steps=80)
    assert result.stop_reason.startswith(("diverged", "loss is not finite"))
    for name, lr in result.suggestions.items():
        assert 1e-4 < lr < 10.0, name


# ---------------------------------------------------------------- plot and CLI
def test_plot_writes_a_png_headless(tmp_path):
    optimizer, train_step = _designed_curve()
    result = lr_find(optimizer, train_step, start_lr=1e-6, end_lr=10.0, num_steps=60)
    path = tmp_path / "lr_find.png"
    fig = result.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    marked = sum(label.startswith(tuple(result.suggestions)) for label in labels)
    assert marked == len(lr_finder_module.RULES)
    (recommended,) = [label for label in labels if "recommended" in label]
    assert recommended.startswith(lr_finder_module.DEFAULT_RULE)


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    result = LRFindResult([1.0] * 3, [1.0] * 3, [1.0] * 3, [1.0], "test")
    with pytest.raises(ImportError, match="optimkit\\[plot\\]"):
        result.plot()


def test_cli_lr_find_recommends_a_suggestion_says_why_and_writes_under_the_output_folder(
        tmp_path, monkeypatch, capsys):
    from optimkit.cli import main
    from optimkit.outputs import DEFAULT_OUT

    monkeypatch.chdir(tmp_path)
    code = main(["lr-find", "--optimizer", "adam", "--task", "digits-mlp", "--steps", "60"])
    out = capsys.readouterr().out
    assert code == 0
    rule = lr_finder_module.DEFAULT_RULE
    (marked,) = [line for line in out.splitlines() if "<- recommended" in line]
    assert marked.split()[0] == rule
    (line,) = [line for line in out.splitlines() if line.startswith("recommended: lr = ")]
    assert repr(rule) in line
    assert "why: " + lr_finder_module.DEFAULT_RULE_EVIDENCE in out
    # the evidence it cites is installed with the package, and says what it says
    (cited,) = [line for line in out.splitlines() if line.startswith("  the measurements: ")]
    tables = cited.removeprefix("  the measurements: ").split(" and ")
    assert tables == [str(path) for path in lr_finder_module.rule_tables()]
    for table in tables:
        text = Path(table).read_text(encoding="utf-8")
        assert f"The library's default (`result.suggestion`, `apply()`): `{rule}`." in text
    # nothing in the current folder but the output folder, which holds the figure
    assert [p.name for p in tmp_path.iterdir()] == [DEFAULT_OUT]
    (figure,) = (tmp_path / DEFAULT_OUT).iterdir()
    assert figure.name == "lr-find-adam-digits-mlp.png" and f"written to {DEFAULT_OUT}" in out


def test_cli_lr_find_without_a_plot_writes_nothing(tmp_path, monkeypatch, capsys):
    from optimkit.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["lr-find", "--optimizer", "sgd", "--task", "diabetes-mlp", "--steps", "20",
                 "--plot", ""]) == 0
    assert "recommended" in capsys.readouterr().out and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, match", [
    ("blocker/lr.png", "not a folder"),   # a file where a folder must be
    ("lr.txt", "must end in"),            # not an image format
    (".", "is a folder"),
])
def test_cli_lr_find_checks_the_plot_path_before_the_sweep(tmp_path, monkeypatch, capsys,
                                                           bad, match):
    from optimkit.cli import main
    from optimkit.training import lr_find_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file")
    monkeypatch.setattr(lr_find_cli, "sweep", lambda *a, **k: pytest.fail("swept first"))
    code = main(["lr-find", "--optimizer", "adam", "--task", "digits-mlp", "--plot", bad])
    assert code == 2 and match in capsys.readouterr().err


def test_cli_reports_an_unknown_optimizer(capsys):
    from optimkit.cli import main

    code = main(["lr-find", "--optimizer", "nope", "--task", "digits-mlp", "--plot", ""])
    assert code == 2 and "unknown optimizer" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_restore_is_exact_on_cuda_including_the_cuda_rng():
    def run(with_finder):
        torch.manual_seed(0)
        model = _model().cuda()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = [(x.cuda(), y.cuda()) for x, y in _data()]
        if with_finder:
            lr_find(optimizer, model=model, loss_fn=torch.nn.functional.cross_entropy,
                    batches=batches, num_steps=8)
        _train(model, optimizer, batches, 4)  # dropout draws from the CUDA generator
        return [p.detach().cpu() for p in model.parameters()], torch.cuda.get_rng_state()

    (a, rng_a), (b, rng_b) = run(False), run(True)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(rng_a, rng_b)
