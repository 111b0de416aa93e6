"""The Score's honesty rules and time-to-target statistics on synthetic data with known answers
(no training): chance-level failures, clipped intervals, inconclusive ties, interpolated lr
sensitivity, time to target and performance profiles."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from optimkit.bench import profiles, ranking, scoring
from optimkit.bench.search import Rules, sensitivity, walk


# ------------------------------------------------------------------ time to target, profiles
def test_time_to_target_is_the_first_point_that_reaches_it():
    curve = [(10, 0.5, 1.0), (20, 0.8, 2.5), (30, 0.9, 4.0), (40, 0.95, 5.0)]
    assert profiles.time_to_target(curve, 0.9, True) == (30.0, 4.0)
    assert profiles.time_to_target(curve, 0.99, True) == (math.inf, math.inf)
    loss = [(10, 2.0, 1.0), (20, float("nan"), 2.0)]  # diverged: never reached
    assert profiles.time_to_target(loss, 1.0, False) == (math.inf, math.inf)
    assert profiles.time_to_target([(10, 0.5, 1.0)], 0.5, False) == (10.0, 1.0)


def test_median_time_is_inf_when_fewer_than_half_reach():
    assert profiles.median_time([3.0, 5.0, math.inf]) == 5.0
    assert profiles.median_time([3.0, math.inf, math.inf]) == math.inf
    assert profiles.target_of([0.9, float("nan"), 0.8, 0.85]) == pytest.approx(0.85)


def test_profile_score_matches_the_integral_by_hand():
    # Three tasks. a is fastest on t1 and t2, b on t3; c never reaches t3.
    times = {"a": {"t1": 10.0, "t2": 20.0, "t3": 60.0},
             "b": {"t1": 20.0, "t2": 50.0, "t3": 30.0},
             "c": {"t1": 50.0, "t2": 20.0, "t3": math.inf}}
    r, score = profiles.profiles(times)
    assert r["a"] == {"t1": 1.0, "t2": 1.0, "t3": 2.0}
    assert r["b"] == {"t1": 2.0, "t2": 2.5, "t3": 1.0}
    assert r["c"] == {"t1": 5.0, "t2": 1.0, "t3": math.inf}
    # rho_a(tau) = 2/3 on [1, 2), 1 on [2, 4]: integral 2/3 + 2 = 8/3, over 3 -> 8/9.
    assert score["a"] == pytest.approx(8 / 9)
    # rho_b = 1/3 on [1, 2), 2/3 on [2, 2.5), 1 on [2.5, 4]: 1/3 + 1/3 + 1.5 = 13/6 -> 13/18.
    assert score["b"] == pytest.approx(13 / 18)
    # c: only t2 counts (t1 at 5x is past tau = 4; t3 never reached: 0): 3/3 over 3 tasks.
    assert score["c"] == pytest.approx(1 / 3)
    assert profiles.rho(r["b"], 2.0) == pytest.approx(2 / 3)
    # Numerically, the same integral.
    taus = np.linspace(1, 4, 300_001)
    numeric = np.trapezoid([profiles.rho(r["b"], t) for t in taus[::100]], taus[::100]) / 3
    assert numeric == pytest.approx(13 / 18, abs=1e-3)


def test_a_task_no_one_reaches_scores_zero_for_everyone():
    r, score = profiles.profiles({"a": {"t": math.inf}, "b": {"t": math.inf}})
    assert r == {"a": {"t": math.inf}, "b": {"t": math.inf}} and score == {"a": 0.0, "b": 0.0}


# ------------------------------------------------------------------ ties: equivalence rule
def test_a_noisy_tie_is_inconclusive_and_a_tight_one_is_tied():
    rng = np.random.default_rng(0)
    best = 0.40 + rng.normal(0, 0.002, 5)
    tight = best - 0.002 + rng.normal(0, 0.001, 5)  # significantly worse, but by < 0.01
    noisy = best - 0.02 + np.array([0.05, -0.04, 0.03, -0.05, 0.04])  # wide: can't exclude 0.01
    far = best - 0.1  # clearly worse
    scores = {"best": best, "tight": tight, "noisy": noisy, "far": far}
    old = ranking.tied_with_best(scores)
    assert "noisy" in old.tied  # the t-test alone calls the noisy one tied
    test = ranking.tied_with_best(scores, tolerance=0.01)
    assert test.best == "best"
    assert test.verdict == {"tight": "tied", "noisy": "inconclusive", "far": "worse"}
    assert test.tied == ["best", "tight"] and test.inconclusive == ["noisy"]
    low, high = test.difference_ci["tight"]
    assert -0.01 <= low <= high <= 0.01


def test_a_failed_seed_is_never_tied():
    a = np.array([0.90, 0.91, 0.92, 0.90, 0.91])
    test = ranking.tied_with_best({"a": a, "b": a.copy()}, tolerance=0.01,
                                  failed={"a": False, "b": True})
    assert test.best == "a" and test.verdict == {"b": "failed"} and test.tied == ["a"]


# ------------------------------------------------------------------ chance level, clipping
def _pair(optimizer: str, values: list[float], diverged: list[int] | None = None):
    diverged = diverged or [0] * len(values)
    finals = [{"final_metric": v, "diverged": d, "error": None, "steps_to_target": None,
               "evals": []} for v, d in zip(values, diverged, strict=True)]
    return scoring.Pair("t", optimizer, SimpleNamespace(stage="done"), finals)


def test_a_run_worse_than_chance_fails_and_its_interval_is_clipped():
    meta = {"higher_is_better": True, "chance": 0.1, "bounds": [0.0, 1.0], "tolerance": 0.01,
            "metric": "accuracy"}
    good = [0.95, 0.96, 0.94, 0.95, 0.96]
    pairs = {("t", "a"): _pair("a", good),
             ("t", "b"): _pair("b", [0.96, 0.95, 0.95, 0.056, 0.96])}  # one seed collapsed
    scoring._fill("t", meta, list(pairs.values()))
    b = pairs[("t", "b")]
    assert b.failed == [False, False, False, True, False] and b.below_chance == 1
    assert b.failure_rate == pytest.approx(0.2) and b.divergence_rate == 0.0
    low, high = b.interval
    assert b.mean + b.ci > 1.0 and high == 1.0 and b.clipped and low == b.mean - b.ci
    assert not pairs[("t", "a")].clipped
    test = scoring._task_test("t", meta, pairs, SimpleNamespace(optimizers=["a", "b"]))
    assert test.tied == ["a"] and test.verdict["b"] == "failed"
    assert scoring._scores(meta, b, ranks=True)[3] == -math.inf  # ranked last on its seed


def test_clip_interval_for_a_loss():
    assert scoring.clip_interval(0.05, 0.1, (0.0, None)) == ((0.0, pytest.approx(0.15)), True)
    assert scoring.clip_interval(0.5, 0.1, (None, None)) == ((0.4, 0.6), False)
    assert scoring.clip_interval(0.5, 0.1, None) == ((0.4, 0.6), False)


# ------------------------------------------------------------------ lr sensitivity
def test_lr_sensitivity_is_interpolated_between_grid_points():
    # A V in log10(lr), peak at 1e-2, slope 1 per decade: within 0.25 of the best over
    # exactly 0.5 decade. The grid (3 per decade) alone can only say 1/3 or 2/3.
    rules = Rules(lr_range=(1e-4, 1.0), budget=19, weight_decays=())

    def lookup(spec):
        return {"final_metric": -abs(math.log10(spec.lr) + 2.0), "diverged": 0, "error": None}

    state = walk(rules, "t", "o", True, False, lookup)
    assert state.lr == pytest.approx(1e-2)
    width, bounded = sensitivity(state, True, 0.25, 3)
    assert width == pytest.approx(0.5, rel=1e-3) and not bounded
    # A loss (lower is better): the same V upside down, the same width.
    def loss(spec):
        return {"final_metric": abs(math.log10(spec.lr) + 2.0), "diverged": 0, "error": None}

    state = walk(rules, "t", "o", False, False, loss)
    assert sensitivity(state, False, 0.25, 3)[0] == pytest.approx(0.5, rel=1e-3)


# ------------------------------------------------------------------ the notes vs the measurements
NOTES = """| | Description | Paper | Fast.ai 2 | Score |
|:--|:--|:--|:--|:--|
| **Adam** | Momentum + RMSProp. | 2014 | Adam(lr=0.1, wd=0) | ⭐ |
| **AMSGrad** | Worse than Adam in practice. | 2018 | | |
| **Ranger** | RAdam + Lookahead. | 2019 | ranger() | ⭐⭐⭐ |
"""


def _fake_summary(tiers: dict[str, int], ranks: dict[str, float]):
    return SimpleNamespace(config=SimpleNamespace(optimizers=list(tiers)),
                           tier=tiers.get, stars=lambda o: ranking.stars(tiers[o]),
                           mean_rank=ranks.get)


def test_the_notes_claims_are_checked_against_the_measurements():
    from optimkit.bench.report import notes_checks

    summary = _fake_summary({"adam": 2, "amsgrad": 1, "ranger": 1},
                            {"adam": 3.0, "amsgrad": 1.5, "ranger": 1.2})
    checks = {c["name"]: c for c in notes_checks(summary, NOTES)}
    assert checks["adam"]["notes_fastai2"] == "Adam(lr=0.1, wd=0)"  # quoted, not measured
    assert "the notes give 1 star(s), measured 2 (tier 2): contradicts" in checks["adam"]["checks"]
    assert checks["ranger"]["checks"] == ["the notes give 3 star(s), measured 3 (tier 1): agrees"]
    (amsgrad,) = checks["amsgrad"]["checks"]
    assert amsgrad.startswith('"Worse than Adam"') and amsgrad.endswith("contradicts")
    same = _fake_summary({"adam": 1, "amsgrad": 1, "ranger": 1},
                         {"adam": 1.0, "amsgrad": 2.0, "ranger": 3.0})
    (amsgrad,) = {c["name"]: c for c in notes_checks(same, NOTES)}["amsgrad"]["checks"]
    assert amsgrad.endswith("not supported: the same tier (no significant difference)")


def _run(curve: list[tuple[int, float, float]]) -> dict:
    return {"final_metric": curve[-1][1], "diverged": 0, "error": None,
            "steps_to_target": None, "evals": [list(p) for p in curve]}


def test_the_target_is_adamws_final_validation_value_and_times_follow():
    meta = {"higher_is_better": True, "target": 0.5, "illustrative": False}
    adamw = scoring.Pair("t", "adamw", SimpleNamespace(stage="done"), [
        _run([(10, 0.6, 1.0), (20, 0.80, 2.0)]), _run([(10, 0.7, 1.0), (20, 0.90, 2.0)]),
        _run([(10, 0.5, 1.0), (20, 0.85, 2.0)])])
    fast = scoring.Pair("t", "fast", SimpleNamespace(stage="done"), [
        _run([(10, 0.9, 0.5), (20, 0.9, 1.0)])] * 3)
    never = scoring.Pair("t", "never", SimpleNamespace(stage="done"), [
        _run([(10, 0.1, 0.5), (20, None, 1.0)])] * 3)  # stored NaN is None
    pairs = {("t", p.optimizer): p for p in (adamw, fast, never)}
    assert scoring._target("t", meta, pairs) == (pytest.approx(0.85), "adamw")
    assert scoring._target("t", meta, {("t", "fast"): fast}) == (0.5, "declared")
    for pair in pairs.values():
        scoring._time_to_target(pair, 0.85, True)
    assert adamw.target_steps == [math.inf, 20.0, 20.0] and adamw.target_seconds[1] == 2.0
    assert fast.target_steps == [10.0] * 3 and never.target_steps == [math.inf] * 3
    config = SimpleNamespace(tasks=["t"], optimizers=["adamw", "fast", "never"])
    ratios, scores = scoring._profiles(config, {"t": meta}, pairs)
    # adamw: 20 steps in 2 s against fast's 10 steps in 0.5 s.
    assert ratios["seconds"]["adamw"]["t"] == 4.0 and ratios["steps"]["adamw"]["t"] == 2.0
    assert scores["seconds"] == {"adamw": 0.0, "fast": 1.0, "never": 0.0}
    assert scores["steps"] == {"adamw": pytest.approx(2 / 3), "fast": 1.0, "never": 0.0}


# ------------------------------------------------------------------ warnings of a cell
def _warning_task(name: str):
    import dataclasses
    import warnings

    import torch

    from optimkit.bench import tasks

    def build(seed: int, device: str):
        torch.manual_seed(seed)
        model = torch.nn.Linear(2, 1)
        x, y = torch.randn(16, 2), torch.randn(16, 1)

        def loss_fn(out, target):
            warnings.warn("overflow encountered in a test", RuntimeWarning, stacklevel=1)
            return torch.nn.functional.mse_loss(out, target)

        return tasks.Instance(model=model, loss_fn=loss_fn,
                              batches=lambda: iter([(x[:8], y[:8]), (x[8:], y[8:])]),
                              evaluate=lambda split: float(
                                  torch.nn.functional.mse_loss(model(x), y).detach()),
                              steps_per_epoch=2)

    base = tasks.get("mnist1d-autoencoder")
    return dataclasses.replace(base, name=name, builder=build, epochs=2)


def test_a_cells_warnings_are_counted_not_printed(monkeypatch, recwarn):
    from optimkit.bench import tasks
    from optimkit.bench.runner import CellSpec, run_cell

    monkeypatch.setitem(tasks.TASKS, "warns", _warning_task("warns"))
    result = run_cell(CellSpec.make("warns", "sgd", {"lr": 0.1}, 0, "tune"))
    assert result["error"] is None and len(recwarn) == 0  # nothing reached the terminal
    assert result["extra"]["warnings"] == 4  # 2 epochs x 2 steps
    assert result["extra"]["warning_texts"] == ["RuntimeWarning: overflow encountered in a test"]


# ------------------------------------------------------------------ the run's estimate, resume
@pytest.mark.parametrize("preset, measured", [("quick", 1440), ("standard", 1540),
                                              ("full", 9154)])
def test_the_cell_estimate_counts_the_expected_grid_extensions(preset, measured):
    from optimkit.bench import notes, suite

    # The measured runs of docs/guides/bench.md (the notes' 20 optimizers; standard and full
    # on the tasks of their time): the estimate is within 5 % of each, while the count before
    # any extension was up to 39 % short (880 for quick's 1,440).
    tasks = {"standard": ("stdlib-lm", "mnist1d-cnn", "mnist1d-autoencoder")}
    tasks["full"] = tasks["standard"] + suite.QUICK_TASKS + suite.TOYS
    config = suite.Config.for_preset(preset, optimizers=notes.default_optimizers(),
                                     tasks=tasks.get(preset))
    assert abs(suite.expected_cells(config) - measured) <= 0.05 * measured
    assert suite.expected_cells(config) >= suite.count_cells(config)


@pytest.mark.parametrize("preset, minutes", [("quick", 10), ("standard", 75)])
def test_the_presets_fit_their_time_on_an_idle_2_core_machine(preset, minutes):
    from optimkit.bench import suite

    config = suite.Config.for_preset(preset, workers=2)
    # Every registered optimizer, and room for the newer ones (37 in all): the estimate from
    # the measured per-cell times fits the preset's promise.
    assert set(config.tasks) <= set(suite.CELL_SECONDS)
    for count in (len(config.optimizers), 37):
        assert suite.estimated_seconds(config, count) <= minutes * 60
    assert suite.estimated_seconds(config, 74) > suite.estimated_seconds(config, 37)
    assert "stdlib-lm-1x" in suite.PRESETS["standard"].tasks
    assert "stdlib-lm-8x" in suite.PRESETS["standard"].tasks


def test_the_bench_prints_its_time_estimate_before_starting(monkeypatch):
    from optimkit.bench import commands, suite

    config = suite.Config.for_preset("standard", workers=2)
    minutes = suite.estimated_seconds(config) / 60
    text = commands._time_estimate(config)
    assert text.startswith("about ") and "idle machine with 2 free core(s)" in text
    assert commands._clock(minutes * 60) in text
    monkeypatch.delitem(suite.CELL_SECONDS, "digits-convnet")  # as a task module's task
    assert "no estimate" in commands._time_estimate(config)


def test_the_lm_budgets_are_1x_and_8x_the_params_in_tokens():
    from optimkit.bench import lm, tasks

    shape = {k: v for k, v in tasks.LM_WIDE.items() if k != "batch"}
    params = sum(p.numel() for p in lm.TinyGPT(**shape).parameters())
    per_step = tasks.LM_WIDE["batch"] * tasks.LM_WIDE["context"]
    for name, multiple in (("stdlib-lm-1x", 1), ("stdlib-lm-8x", 8)):
        task = tasks.get(name)
        steps = task.epochs * tasks.lm_budget_steps(multiple)
        assert steps * per_step == pytest.approx(multiple * params, rel=0.1)
        assert task.meta()["family"] == "transformer LM"
    conv = tasks.digits_convnet()
    assert any(p.ndim == 4 for p in conv.parameters())  # filters, for Muon-style routing


def test_the_progress_total_converges_to_the_cells_run(tmp_path):
    from optimkit.bench import suite
    from optimkit.bench.runner import CellSpec
    from optimkit.bench.store import Store

    config = suite.Config.for_preset("quick", tasks=("diabetes-mlp",), optimizers=("sgd",),
                                     seeds=2, tuning_seeds=1, workers=1)
    totals = []

    def fake_cell(spec: CellSpec, task_modules=()):
        return {"final_metric": -abs(spec.lr - 0.2), "diverged": 0, "steps": 1,
                "steps_to_target": None, "seconds": 0.0, "seconds_to_target": None,
                "step_time": 0.0, "state_bytes_per_param": 0.0, "n_params": 1, "losses": [],
                "evals": [], "path": None, "extra": {}, "error": None}

    import unittest.mock
    with Store(tmp_path) as store, unittest.mock.patch.object(suite, "run_cell", fake_cell):
        tally = suite.run(config, store, lambda spec, t: totals.append(t.total))
    # The best lr (0.2) lies right of the 1e-2..4.6e-2 window: the grid adds 0.1, 0.22, 0.46.
    assert tally.finished == tally.total == 6 + 2
    assert totals[0] == round(3 + suite.expected_extensions(3, 19) + 2)  # the old count said 5


def test_resume_keeps_the_recorded_workers_unless_given(tmp_path):
    from optimkit.bench import commands, fingerprint, suite, tasks
    from optimkit.bench.store import Store
    from optimkit.cli import build_parser

    config = suite.Config.for_preset("quick", tasks=("diabetes-mlp",), optimizers=("sgd",),
                                     workers=3)
    with Store(tmp_path) as store:
        store.record_run({**config.to_json(), "fingerprint": fingerprint.components()},
                         [tasks.get(t).meta() for t in config.tasks])
    parse = build_parser().parse_args
    resumed, _ = commands._bench_config(parse(["bench", "--resume", "--out", str(tmp_path)]))
    assert resumed.workers == 3
    given, _ = commands._bench_config(parse(["bench", "--resume", "--out", str(tmp_path),
                                             "--workers", "2"]))
    assert given.workers == 2


# ------------------------------------------------------------------ cost: the fastest mode
def test_the_cost_cell_times_the_fastest_mode_against_fused_adam(monkeypatch):
    from optimkit.bench import cost
    from optimkit.bench.runner import CellSpec, run_cell

    monkeypatch.setattr(cost, "DIM", 32)  # a small model: this test checks the bookkeeping
    monkeypatch.setattr(cost, "LAYERS", 1)
    result = run_cell(CellSpec.make("cost", "adam", {}, 0, "cost", schedule="constant"))
    extra = result["extra"]
    assert result["error"] is None and set(extra["step_time_by_mode"]) == {"eager", "flat"}
    fastest = min(extra["step_time_by_mode"], key=extra["step_time_by_mode"].get)
    assert extra["mode"] == fastest and result["step_time"] == extra["step_time_by_mode"][fastest]
    assert extra["x_fused_adam"] == pytest.approx(
        result["step_time"] / extra["fused_adam_step_time"])
    assert extra["x_fused_adam"] == min(extra["x_fused_adam_by_mode"].values())
    # Adam keeps two param-shaped moments and a step: 8 bytes a param and a few scalars.
    assert set(extra["state_layouts"].values()) <= {"param", "scalar", "own"}
    assert 8.0 <= result["state_bytes_per_param"] < 8.1


def test_a_run_worse_than_its_untrained_model_fails():
    meta = {"higher_is_better": False, "chance": None, "bounds": [0.0, None], "tolerance": 0.01,
            "metric": "MSE"}
    pair = _pair("a", [0.2, 0.3, 1.5])
    for run, untrained in zip(pair.finals, [1.0, 1.0, 1.2], strict=True):
        run["extra"] = {"untrained": untrained}
    scoring._fill("t", meta, [pair])
    assert pair.failed == [False, False, True] and pair.below_chance == 1


def test_a_scored_run_records_its_untrained_model_and_trains_the_same(monkeypatch):
    from optimkit.bench import tasks
    from optimkit.bench.runner import CellSpec, run_cell

    monkeypatch.setitem(tasks.TASKS, "warns", _warning_task("warns"))
    final = run_cell(CellSpec.make("warns", "sgd", {"lr": 0.1}, 3, "final"))
    tune = run_cell(CellSpec.make("warns", "sgd", {"lr": 0.1}, 3, "tune"))
    assert math.isfinite(final["extra"]["untrained"]) and "untrained" not in tune["extra"]
    assert final["losses"] == tune["losses"]  # the evaluation left the random state alone


@pytest.mark.parametrize("field, value", [("chance", "low"), ("chance", float("nan")),
                                          ("bounds", (1.0, 0.0)), ("bounds", [0.0, 1.0]),
                                          ("bounds", (0.0,))])
def test_a_tasks_chance_and_bounds_are_checked(field, value):
    import dataclasses

    from optimkit.bench import tasks

    with pytest.raises(ValueError, match=field):
        dataclasses.replace(tasks.get("mnist1d-cnn"), **{field: value})
    meta = tasks.get("mnist1d-cnn").meta()
    assert meta["chance"] == 0.1 and meta["bounds"] == [0.0, 1.0]


# ------------------------------------------------------------------ self-tuning track
def test_versus_has_known_answers():
    base = [0.50, 0.52, 0.51, 0.49, 0.50]
    assert ranking.versus([b + 0.10 + 0.001 * i for i, b in enumerate(base)], base, 0.01) \
        == ranking.BETTER
    assert ranking.versus([b - 0.10 for b in base], base, 0.01) == ranking.WORSE
    assert ranking.versus([b + 0.001 for b in base], base, 0.01) == ranking.TIED
    noisy = [0.50, 0.70, 0.30, 0.62, 0.41]
    assert ranking.versus(noisy, base, 0.01) == ranking.INCONCLUSIVE
    assert ranking.versus(base, base, 0.01, failed=True) == ranking.FAILED


def _final(value: float, seed: int, role: str = "final", optimizer: str = "x",
           task: str = "t", schedule: str = "cosine") -> dict:
    return {"final_metric": value, "diverged": 0, "error": None, "extra": {},
            "steps_to_target": None, "seed": seed, "role": role, "optimizer": optimizer,
            "task": task, "schedule": schedule, "evals": []}


@pytest.fixture
def adam_self_tuning(monkeypatch):
    """Adam marked self-tuning, as a Prodigy or Schedule-Free entry would be."""
    import dataclasses

    from optimkit import registry

    monkeypatch.setitem(registry.REGISTRY, "adam",
                        dataclasses.replace(registry.REGISTRY["adam"], self_tuning=True))


def test_the_self_tuning_track_ranks_defaults_against_the_tuned_field(adam_self_tuning):
    from optimkit.bench import suite

    config = suite.Config.for_preset("quick", optimizers=("adam", "sgd", "adamw"),
                                     tasks=("digits-mlp", "diabetes-mlp"), seeds=4)
    seeds = config.rules().test_seeds
    meta = {t: {"higher_is_better": True, "illustrative": False, "tolerance": 0.01,
                "chance": None, "bounds": [None, None], "target": 0.0}
            for t in config.tasks}
    # Tuned field: sgd best (0.90), adamw 0.80; adam tuned 0.85. Untuned adam: 0.95 on
    # digits-mlp (beats the field), 0.70 on diabetes-mlp; AdamW at its defaults 0.60 on both.
    tuned = {"sgd": 0.90, "adamw": 0.80, "adam": 0.85}
    pairs, rows = {}, []
    for task in config.tasks:
        for name, value in tuned.items():
            finals = [_final(value + 0.001 * i, s) for i, s in enumerate(seeds)]
            pair = scoring.Pair(task, name, SimpleNamespace(stage="done"), finals)
            pairs[(task, name)] = pair
        scoring._fill(task, meta[task], [p for (t, _), p in pairs.items() if t == task])
        untuned = 0.95 if task == "digits-mlp" else 0.70
        rows += [_final(untuned + 0.002 * i, s, "default", "adam", task, "constant")
                 for i, s in enumerate(seeds)]
        rows += [_final(0.60 + 0.001 * i, s, "default", "adamw", task, "cosine")
                 for i, s in enumerate(seeds)]
    track = scoring.self_tuning_track(config, meta, pairs, rows, ["adam", "sgd", "adamw"])
    adam = track["optimizers"]["adam"]
    assert track["baseline"] == "adamw" and adam["schedule"] == "constant"
    digits, diabetes = adam["tasks"]["digits-mlp"], adam["tasks"]["diabetes-mlp"]
    assert digits["vs_tuned_best"] == "best" and digits["rank_in_field"] == 1.0
    assert diabetes["vs_tuned_best"] == "worse" and diabetes["tuned_best"] == "sgd"
    assert diabetes["rank_in_field"] == 4.0 and diabetes["field_size"] == 4
    assert digits["vs_adamw_default"] == diabetes["vs_adamw_default"] == "better"
    assert adam["vs_adamw_default"] == {"better": 2}
    assert adam["mean_rank_in_field"] == pytest.approx(2.5) and adam["field_size"] == 4
    baseline = track["optimizers"]["adamw"]
    assert baseline["mean_rank_in_field"] == 4.0 and "vs_adamw_default" not in baseline
    # Without a self-tuning optimizer there is no track.
    plain = suite.Config.for_preset("quick", optimizers=("sgd", "adamw"),
                                    tasks=config.tasks, seeds=4)
    assert scoring.self_tuning_track(plain, meta, pairs, rows, ["sgd", "adamw"]) == {}
    assert suite.self_tuning_specs(plain) == []
    # Marked, but no run at its defaults (a database recorded before it was marked): no track.
    before = [r for r in rows if r["optimizer"] != "adam"]
    assert scoring.self_tuning_track(config, meta, pairs, before, ["adam", "sgd", "adamw"]) == {}


def test_self_tuning_cells_run_at_the_defaults_without_a_schedule(adam_self_tuning):
    from optimkit.bench import suite

    config = suite.Config.for_preset("quick", optimizers=("adam", "sgd"),
                                     tasks=("digits-mlp",), seeds=2)
    specs = suite.self_tuning_specs(config)
    assert {(s.optimizer, s.hypers, s.role, s.schedule) for s in specs} == {
        ("adam", "{}", "default", "constant"), ("adamw", "{}", "default", "cosine")}
    assert sorted(s.seed for s in specs if s.optimizer == "adam") == \
        list(config.rules().test_seeds)
    assert suite.count_cells(config) == suite.count_cells(
        suite.Config.for_preset("quick", optimizers=("sgd", "adam"), tasks=("digits-mlp",),
                                seeds=2)) and len(specs) == 4


def test_a_bench_with_a_self_tuning_optimizer_reports_the_track(tmp_path, adam_self_tuning):
    import json

    from optimkit.cli import main

    out = tmp_path / "run"
    assert main(["bench", "--tasks", "diabetes-mlp", "--optimizers", "adam,sgd", "--seeds", "2",
                 "--tuning-seeds", "1", "--lr-range", "0.01,0.022", "--budget", "2",
                 "--weight-decays", "none", "--no-cost", "--out", str(out), "--workers", "1",
                 "--quiet"]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    rows = {o["name"]: o for o in board["optimizers"]}
    assert "self_tuning" in rows["adam"] and "self_tuning" not in rows["sgd"]
    assert rows["adam"]["self_tuning"]["tasks"]["diabetes-mlp"]["vs_adamw_default"] in (
        "better", "worse", "tied", "inconclusive")
    assert board["self_tuning_track"]["baseline"] == "adamw"
    assert board["self_tuning_track"]["baseline_results"]["tasks"]["diabetes-mlp"]["per_seed"]
    text = (out / "leaderboard.md").read_text()
    assert text.index("## What to pick") < text.index("## Leaderboard (measured)")
    assert "Self-tuning track" in text and "Best untuned" in text


# ------------------------------------------------------------------ what to pick
def test_what_to_pick_has_the_known_answer():
    def result(name, tied, best):
        return scoring.TaskResult(name, {}, SimpleNamespace(tied=tied, best=best))

    tiers = {"a": 1, "b": 1, "c": 2}
    summary = SimpleNamespace(
        real_tasks=["lm-1x", "lm-8x", "cnn"],
        tasks={"lm-1x": {"family": "transformer LM"}, "lm-8x": {"family": "transformer LM"},
               "cnn": {}},
        task_results={"lm-1x": result("lm-1x", ["a", "b"], "a"),
                      "lm-8x": result("lm-8x", ["b", "c"], "b"),
                      "cnn": result("cnn", ["c"], "c")},
        profile_scores={"seconds": {"a": 0.5, "b": 0.905, "c": 0.91}},
        self_tuning={"baseline": "adamw", "optimizers": {
            "p": {"mean_rank_in_field": 2.5, "tier_in_field": 1, "field_size": 4},
            "adamw": {"mean_rank_in_field": 3.5, "tier_in_field": 2, "field_size": 4}}},
        ranked=["a", "b", "c"], tier=tiers.get)
    answer = scoring.what_to_pick(summary)
    assert answer["families"]["transformer LM"]["tied"] == ["b"]  # on both LM tasks
    assert answer["families"]["cnn"]["tied"] == ["c"]
    assert [o for o, _ in answer["fastest"]] == ["c", "b"]  # within 0.01 of the best B
    assert answer["untuned"]["optimizer"] == "p" and not answer["untuned"]["baseline"]
    assert answer["top_tier"] == ["a", "b"]
    text = "\n".join(scoring.pick_text(answer))
    assert "tied with the best on every task: b" in text and "Scale:" in text
    assert "p at its defaults: mean rank 2.50" in text
    # No one tied on every task of a family: the best of each task instead; no track.
    summary.task_results["lm-8x"] = result("lm-8x", ["c"], "c")
    summary.self_tuning = {}
    summary.profile_scores = {"seconds": {"a": 0.0}}
    answer = scoring.what_to_pick(summary)
    assert answer["families"]["transformer LM"] == {
        "tasks": ["lm-1x", "lm-8x"], "tied": [], "best": {"lm-1x": "a", "lm-8x": "c"}}
    assert answer["fastest"] == [] and answer["untuned"] is None
    assert "no self-tuning optimizer" in "\n".join(scoring.pick_text(answer))


# ------------------------------------------------------------------ lr per param family
class _Switching(__import__("torch").optim.SGD):
    """SGD with Schedule-Free's eval()/train() switch, recording when evaluation happens."""

    calls: list = []

    def eval(self):
        _Switching.calls.append("eval")

    def train(self):
        _Switching.calls.append("train")


def _routed_groups(model, options):
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    lr = options.get("lr") or 0.1
    return [{"params": matrices, "family": "matrices", "lr": lr},
            {"params": other, "family": "other", "lr": lr / 10, "adamw_lr": lr / 10}]


def test_a_routed_optimizer_records_the_lr_of_each_family(monkeypatch):
    from optimkit import registry
    from optimkit.bench import report, tasks
    from optimkit.bench.runner import CellSpec, group_lrs, run_cell

    entry = registry.Entry("routed-test", _Switching, registry.Reference("a test"),
                           model_groups=_routed_groups)
    monkeypatch.setitem(registry.REGISTRY, "routed-test", entry)
    monkeypatch.setitem(tasks.TASKS, "warns", _warning_task("warns"))
    _Switching.calls = []
    result = run_cell(CellSpec.make("warns", "routed-test", {"lr": 0.2}, 0, "final"))
    assert result["error"] is None
    assert result["extra"]["groups"] == [
        {"family": "matrices", "params": 2, "lr": 0.2},
        {"family": "other", "params": 1, "lr": pytest.approx(0.02),
         "adamw_lr": pytest.approx(0.02)}]
    # Evaluated with the optimizer's evaluation weights: 2 epochs + the test read.
    assert _Switching.calls == ["eval", "train"] * 3
    text = report.lr_families(result["extra"]["groups"])
    assert text.startswith("matrices lr=0.2, other lr=0.02 (adamw_lr=0.02)")
    import torch
    single = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    assert group_lrs(single) == []  # one group: its lr is the cell's


def test_the_report_says_which_lr_each_family_got(tmp_path, monkeypatch):
    import json

    from optimkit import registry
    from optimkit.bench import tasks
    from optimkit.cli import main

    entry = registry.Entry("routed-test", _Switching, registry.Reference("a test"),
                           model_groups=_routed_groups)
    monkeypatch.setitem(registry.REGISTRY, "routed-test", entry)
    monkeypatch.setitem(tasks.TASKS, "warns", _warning_task("warns"))
    out = tmp_path / "run"
    assert main(["bench", "--tasks", "warns", "--optimizers", "routed-test,sgd", "--seeds", "2",
                 "--tuning-seeds", "1", "--lr-range", "0.01,0.022", "--budget", "2",
                 "--weight-decays", "none", "--no-cost", "--out", str(out), "--workers", "1",
                 "--quiet"]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    results = {r["optimizer"]: r for r in board["tasks"][0]["results"]}
    lr = results["routed-test"]["lr"]
    assert [(g["family"], g["lr"]) for g in results["routed-test"]["lr_by_family"]] == [
        ("matrices", lr), ("other", pytest.approx(lr / 10))]
    assert results["sgd"]["lr_by_family"] == []
    assert f"matrices lr={lr:g}, other lr=" in (out / "leaderboard.md").read_text()
    assert (out / "results.csv").read_text().count("\n") == 3  # header + 2 rows


# ------------------------------------------------------------------ --device cuda
def test_device_cuda_without_a_gpu_is_one_clear_error(tmp_path, capsys):
    import torch

    from optimkit.bench import cost
    from optimkit.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the error path needs a machine without one")
    code = main(["bench", "--tasks", "diabetes-mlp", "--optimizers", "adam", "--device",
                 "cuda", "--out", str(tmp_path / "gpu"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cuda" in err and "CUDA is not available" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "gpu").exists()
    assert "compiled" in cost.modes("cuda") and "compiled" not in cost.modes("cpu")
