"""The bench's protocol and statistics on synthetic results with known answers (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from optimkit.bench import ranking
from optimkit.bench.search import Rules, sensitivity, walk


# ------------------------------------------------------------------ the search protocol
def _fake(metric, diverge_above: float = math.inf):
    """A lookup that 'runs' every cell at once: metric(lr, weight_decay, seed)."""
    ran: list = []

    def lookup(spec):
        hypers = spec.hypers
        ran.append(spec)
        lr = spec.lr
        wd = spec.weight_decay or 0.0
        if lr > diverge_above:
            return {"final_metric": float("nan"), "diverged": 1, "error": None, "hypers": hypers}
        return {"final_metric": metric(lr, wd, spec.seed), "diverged": 0, "error": None}

    return lookup, ran


def _walk(rules: Rules, lookup, higher=True, wd=True):
    return walk(rules, "t", "o", higher, wd, lookup)


def _peak(at: float, width: float = 1.0):
    return lambda lr, wd, seed: -((math.log10(lr) - math.log10(at)) / width) ** 2


def test_grid_extends_past_the_edge_until_the_best_is_inside():
    rules = Rules(lr_range=(1e-3, 1e-1), budget=19, weight_decays=())
    assert [rules.lr(i) for i in rules.initial()] == [
        0.001, 0.002154, 0.004642, 0.01, 0.02154, 0.04642, 0.1]  # 3 per decade
    lookup, _ = _fake(_peak(1.0))
    state = _walk(rules, lookup)
    assert state.lr == 1.0 and not state.on_edge
    assert state.lr_grid[-1] == pytest.approx(2.154)  # one point at a time, until inside
    assert len(state.lr_trials) == 11 and state.stage == "done"
    # Downwards too, by the same rule.
    lookup, _ = _fake(_peak(1e-4))
    state = _walk(rules, lookup)
    assert state.lr == 1e-4 and not state.on_edge and len(state.lr_trials) == 11
    # Three points per round: the same answer, a coarser overshoot.
    lookup, _ = _fake(_peak(1.0))
    state = _walk(Rules(lr_range=(1e-3, 1e-1), extend=3, weight_decays=()), lookup)
    assert state.lr == 1.0 and len(state.lr_trials) == 13


def test_a_plateau_reaching_an_edge_extends_the_grid_like_an_edge_best():
    # Chance level (0.1, with seed noise of +-0.01) for every lr below 0.3, then a real peak
    # at 10: the best of the initial window is interior by noise alone.
    def metric(lr, wd, seed):
        if lr < 0.3:
            return 0.1 + 0.01 * math.sin(7 * math.log10(lr) + seed)
        return 0.1 + 0.8 * math.exp(-(math.log10(lr) - 1.0) ** 2)
    rules = Rules(lr_range=(1e-3, 1e-1), budget=19, weight_decays=())
    lookup, _ = _fake(metric)
    stuck = _walk(rules, lookup)  # without a tolerance: an interior lr on the plateau
    assert stuck.lr < 0.1 and len(stuck.lr_trials) == 7
    state = walk(rules, "t", "o", True, True, lookup, tolerance=0.05)
    assert state.lr == 10.0 and not state.on_edge
    assert state.lr_grid[-1] > 10.0 and len(state.lr_grid) <= rules.budget
    # A peak well inside the window: both edges are far from the best, nothing is added.
    lookup, _ = _fake(_peak(0.01, width=0.3))
    assert len(walk(rules, "t", "o", True, True, lookup, tolerance=0.05).lr_trials) == 7


def test_an_optimizer_that_cannot_run_is_not_extended():
    # Every cell raised: no edge (or plateau) grows the grid, whatever the tolerance, even a
    # one-lr window whose only lr is both edges.
    def lookup(spec):
        return {"final_metric": float("nan"), "diverged": 0, "error": "ValueError: no"}

    rules = Rules(lr_range=(1e-2, 1e-2), budget=19, weight_decays=())
    for tolerance in (0.0, 1.0):
        state = walk(rules, "t", "o", True, True, lookup, tolerance=tolerance)
        assert len(state.lr_grid) == len(rules.initial()) and not state.on_edge


def test_the_budget_counts_every_extension_and_an_edge_is_flagged():
    rules = Rules(lr_range=(1e-3, 1e-1), budget=9, weight_decays=())
    lookup, _ = _fake(_peak(100.0))
    state = _walk(rules, lookup)
    assert len(state.lr_trials) == 9 and state.lr == pytest.approx(0.4642)
    assert state.on_edge


def test_diverged_lrs_lose_and_ties_take_the_middle():
    rules = Rules(lr_range=(1e-2, 1.0), budget=7, weight_decays=())
    lookup, _ = _fake(lambda lr, wd, seed: 1.0, diverge_above=0.5)
    state = _walk(rules, lookup)
    # 0.01 .. 0.4642 all score 1.0 (a plateau), 1.0 diverged: the middle of the plateau wins.
    assert state.lr == pytest.approx(0.04642) and not state.on_edge


def test_weight_decay_is_tuned_at_the_best_lr_with_the_same_values_for_all():
    rules = Rules(lr_range=(1e-2, 1e-1), budget=7, weight_decays=(1e-3, 1e-2, 1e-1))
    lookup, ran = _fake(lambda lr, wd, seed: _peak(0.0464)(lr, 0, seed) - abs(wd - 1e-2))
    state = _walk(rules, lookup)
    assert state.weight_decay == 1e-2 and state.hypers == {"lr": 0.04642, "weight_decay": 1e-2}
    wds = {s.weight_decay for s in ran if s.role == "tune"}
    assert wds == {0.0, 1e-3, 1e-2, 1e-1}
    # No gain from weight decay: ties keep 0.
    lookup, _ = _fake(_peak(0.0464))
    assert _walk(rules, lookup).weight_decay == 0.0
    # An optimizer without a weight decay skips the stage and never gets one.
    lookup, ran = _fake(_peak(0.0464))
    state = _walk(rules, lookup, wd=False)
    assert state.weight_decay is None and all(s.weight_decay is None for s in ran)


def test_test_seeds_are_never_seen_in_tuning():
    rules = Rules(lr_range=(1e-2, 1e-1), tuning_seeds=(100, 101), test_seeds=(102, 103, 104))
    lookup, ran = _fake(lambda lr, wd, seed: _peak(0.0464)(lr, wd, seed) + 0.01 * seed)
    state = _walk(rules, lookup)
    assert state.stage == "done"
    tune = {s.seed for s in ran if s.role == "tune"}
    final = {s.seed for s in ran if s.role == "final"}
    assert tune == {100, 101} and final == {102, 103, 104}
    assert {s.hypers for s in ran if s.role == "final"} == {'{"lr":0.04642,"weight_decay":0.0}'}


def test_the_search_asks_only_for_what_it_needs_next():
    rules = Rules(lr_range=(1e-2, 1e-1), budget=10, weight_decays=(1e-2,), test_seeds=(2, 3))
    known: dict = {}
    state = walk(rules, "t", "o", True, True, known.get)
    assert state.stage == "lr" and len(state.needed) == 4 * 2  # 4 lrs x 2 tuning seeds
    for spec in state.needed:
        known[spec] = {"final_metric": -abs(spec.lr - 0.05), "diverged": 0, "error": None}
    state = walk(rules, "t", "o", True, True, known.get)
    assert state.stage == "weight_decay" and {s.weight_decay for s in state.needed} == {1e-2}


def test_lr_sensitivity_is_the_width_within_the_tolerance():
    rules = Rules(lr_range=(1e-3, 1.0), budget=10, weight_decays=())
    # Within 0.1 of the best over 1e-2 .. 1e-1 (1 decade), and the metric, interpolated in
    # log-lr, falls from 0 to -1 over the next grid step (1/3 decade) on each side: it crosses
    # -0.1 a tenth of the way, so the width is 1 + 2 * 0.1 / 3 decades.
    lookup, _ = _fake(lambda lr, wd, seed: 0.0 if 1e-2 <= lr <= 0.11 else -1.0)
    state = _walk(rules, lookup)
    width, bounded = sensitivity(state, True, 0.1, 3)
    assert width == pytest.approx(1 + 0.2 / 3, rel=1e-4) and not bounded  # lrs: 4 digits


# ------------------------------------------------------------------ statistics
def test_holm_matches_the_textbook_example():
    adjusted = ranking.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_friedman_matches_scipy_and_the_critical_difference_matches_demsar():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(12, 5)) + np.arange(5) * 0.3
    ranks = np.stack([ranking.block_ranks(row) for row in scores])
    chi2, f, p = ranking.friedman(ranks, np.zeros(len(ranks)))
    assert chi2 == pytest.approx(stats.friedmanchisquare(*(-scores.T)).statistic)
    n, k = scores.shape
    assert f == pytest.approx((n - 1) * chi2 / (n * (k - 1) - chi2))
    # Demsar (2006), table 5: q_0.05 = 3.164 for k = 10, so CD = 3.164 * sqrt(10 * 11 / 6N).
    assert ranking.critical_difference(10, 14) == pytest.approx(3.164 * math.sqrt(110 / 84),
                                                                rel=1e-3)


def _tasks(shift: np.ndarray, seed: int, tasks: int = 3, seeds: int = 6) -> list:
    rng = np.random.default_rng(seed)
    return [ranking.TaskBlocks(f"t{i}", rng.normal(size=(seeds, len(shift))) + shift)
            for i in range(tasks)]


def test_identical_optimizers_share_one_tier():
    names = [f"o{i}" for i in range(8)]
    for seed in range(5):
        result, _ = ranking.analyse(names, _tasks(np.zeros(8), seed), bootstrap=20)
        assert set(result.tiers.values()) == {1}, (seed, result)
        assert set(result.stars.values()) == {3}


def test_clearly_separated_optimizers_get_several_tiers_in_order():
    names = [f"o{i}" for i in range(9)]
    shift = np.repeat([10.0, 0.0, -10.0], 3)  # three groups, far apart
    result, stability = ranking.analyse(names, _tasks(shift, 0, tasks=4, seeds=8), bootstrap=50)
    assert result.p < 1e-6
    assert [result.tiers[n] for n in names] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [result.stars[n] for n in names] == [3, 3, 3, 2, 2, 2, 1, 1, 1]
    assert stability["seeds"] == 1.0 and stability["tasks"] == 1.0


def test_bagged_tiers_report_how_often_the_replicates_agree():
    names = [f"o{i}" for i in range(9)]
    shift = np.repeat([10.0, 0.0, -10.0], 3)
    result, _ = ranking.analyse(names, _tasks(shift, 0, tasks=4, seeds=8), bootstrap=0)
    assert all(result.tier_share[n] == 1.0 for n in names)  # far apart: every replicate agrees
    # An optimizer halfway between two groups: its tier is a vote, and the vote is shown.
    names = [f"o{i}" for i in range(7)]
    shift = np.array([3.0, 3.0, 3.0, 1.5, 0.0, 0.0, 0.0])
    result, _ = ranking.analyse(names, _tasks(shift, 1, tasks=3, seeds=6), bootstrap=0)
    assert result.p < ranking.ALPHA
    middle = "o3"
    assert 0.0 < result.tier_share[middle] < 1.0
    for n in names:
        total = result.tier_share[n] + result.tier_above[n] + result.tier_below[n]
        assert total == pytest.approx(1.0)
    # Tiers are numbered 1, 2, ... without gaps, in the order of the mean ranks.
    tiers = sorted(set(result.tiers.values()))
    assert tiers == list(range(1, len(tiers) + 1))
    by_rank = sorted(names, key=lambda n: result.mean_rank[n])
    assert [result.tiers[n] for n in by_rank] == sorted(result.tiers[n] for n in by_rank)


def test_tied_with_best_uses_paired_seeds_and_holm():
    # b differs from a by a constant tiny amount on every seed: paired, that is significant;
    # c is noise around a's level: tied.
    a = np.array([0.90, 0.95, 0.85, 0.92, 0.88])
    test = ranking.tied_with_best({"a": a, "b": a - 0.001, "c": a + [0.02, -0.03, 0.01, -0.02,
                                                                      0.01]})
    assert test.best in ("a", "c") and "b" not in test.tied
    assert set(test.tied) == {"a", "c"}
    same = ranking.tied_with_best({"x": [1.0, 1.0], "y": [1.0, 1.0]})
    assert same.tied == ["x", "y"]


def test_mean_ci_is_student_t():
    mean, half = ranking.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)
    assert math.isnan(ranking.mean_ci([1.0])[1])
