"""Closed-form checks of every stat and stepper, one or two steps on a hand-built Bucket.

The cases live in the test database (``tests/optim_db.py``, ``PART_CASES``): each runs one
part on tiny float64 tensors and compares the result with numbers worked out by hand. A part
exported from ``optimkit.stats`` or ``optimkit.steppers`` without a case fails
``test_every_part_has_a_closed_form_case``: adding a part means adding one ``Case`` there.
"""

from __future__ import annotations

import pytest
import torch
from optim_db import EPS, PART_CASES, Case, sigmoid

from optimkit import stats, steppers
from optimkit.core import Bucket, Part
from optimkit.stats import adam_step_sizes, grad_friction
from optimkit.steppers import adam_step, per_element_step

CASES = PART_CASES


def _tensor(value):
    return torch.tensor(value, dtype=torch.float64)


def _state_tensor(name, value):
    # torch.optim's step format: a float32 0-d tensor.
    return torch.tensor(float(value)) if name == "step" else _tensor(value)


def run_case(case: Case) -> Bucket:
    params = [_tensor(v) for v in case.params]
    state = {name: [_state_tensor(name, v) for v in values] for name, values in case.state.items()}
    for call, grads in enumerate(case.grads):
        grads = [_tensor(g) for g in grads]
        before = [g.clone() for g in grads]
        bucket = Bucket(params, grads, state, dict(case.fresh) if call == 0 else {})
        for name, values in case.fields.items():
            if isinstance(values, str):  # "state:NAME": that state's own tensors
                setattr(bucket, name, state[values.partition(":")[2]])
            else:
                setattr(bucket, name, [_tensor(v) for v in values])
        case.part(bucket, {**case.part.hypers, **case.hypers})
        for g, g0 in zip(grads, before, strict=True):
            assert torch.equal(g, g0), f"{case.part.name} wrote into the user's gradient"
    return bucket


def _actual(bucket: Bucket, key: str):
    where, _, name = key.partition(":")
    return {"params": lambda: bucket.params, "grads": lambda: bucket.grads,
            "state": lambda: bucket.state[name], "field": lambda: getattr(bucket, name)}[where]()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_closed_form(case):
    bucket = run_case(case)
    for key, expected in case.expect.items():
        actual = _actual(bucket, key)
        assert len(actual) == len(expected), key
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            torch.testing.assert_close(
                a.double(), _tensor(e), rtol=1e-12, atol=1e-14,
                msg=lambda m, i=i, key=key: f"{key}[{i}]: {m}",
            )


def _exported_parts():
    for module in (stats, steppers):
        for name in module.__all__:
            part = getattr(module, name)
            if isinstance(part, Part):
                yield name, part


def test_every_part_has_a_closed_form_case():
    import test_trust_parts  # the trust-ratio table: cases that run a short chain of parts

    covered = {case.part.fn for case in CASES}
    covered |= {part.fn for case in test_trust_parts.CASES for part in case.parts}
    missing = [name for name, part in _exported_parts() if part.fn not in covered]
    assert not missing, f"parts without a closed-form case (tests/optim_db.py): {missing}"
    assert len(list(_exported_parts())) >= 20


def test_friction_keeps_a_copy_of_the_gradient():
    # zero_grad(set_to_none=False) + backward writes the next gradient into the same tensor:
    # an alias of it as prev_grad would make the change 0 and the friction a constant 0.5.
    grad = _tensor([1.0])
    state = {"prev_grad": [_tensor([0.0])]}
    bucket = Bucket([_tensor([0.0])], [grad], state, {})
    bucket.step_size = [_tensor([2.0])]
    grad_friction(bucket, {"version": 0})
    grad.copy_(_tensor([4.0]))
    bucket = Bucket([_tensor([0.0])], [grad], state, {})
    bucket.step_size = [_tensor([2.0])]
    grad_friction(bucket, {"version": 0})
    torch.testing.assert_close(bucket.step_size[0], _tensor([2 * sigmoid(3.0)]))


def test_adam_with_friction_is_a_recipe_of_a_few_lines():
    from optimkit import Adam, Optimizer

    class FrictionAdam(Optimizer):
        parts = (*Adam.parts[:-1], adam_step_sizes, grad_friction, per_element_step)

    p = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([2.0, -0.5], dtype=torch.float64)
    FrictionAdam([p], lr=0.1).step()
    # step 1: m = 0.1 g, sqrt(v) = sqrt(0.001) |g|, step size 0.1 sqrt(0.001) / 0.1 / (sqrt(v) +
    # eps) (eps on the uncorrected root); the friction against prev_grad = 0 is sigmoid(|g|)
    root = 0.001**0.5
    expected = [1 - 0.1 * root * sigmoid(2.0) * 2.0 / (root * 2.0 + EPS),
                -1 + 0.1 * root * sigmoid(0.5) * 0.5 / (root * 0.5 + EPS)]
    torch.testing.assert_close(p.detach(), _tensor(expected))
    # the friction damps step sizes: without a part that makes them, the recipe is refused
    with pytest.raises(TypeError, match="grad_friction reads 'step_size'"):
        type("Frictionless", (Optimizer,), {"parts": (*Adam.parts[:-1], grad_friction, adam_step)})


@pytest.mark.parametrize("recipe,kwargs,name", [
    ("QHAdam", {"nus": (0.7, 1.5)}, "nus"),
    ("QHAdam", {"nus": (-0.1, 1.0)}, "nus"),
    ("AdaMod", {"beta3": 1.0}, "beta3"),
    ("DeepMemory", {"len_memory": 0.5}, "len_memory"),
    ("DeepMemory", {"version": 2}, "version"),
    ("DiffGrad", {"version": -1}, "version"),
    ("NovoGrad", {"betas": (0.95, 1.0)}, "betas"),
])
def test_hyper_rules_of_the_new_parts(recipe, kwargs, name):
    import optimkit

    with pytest.raises(ValueError, match=name):
        getattr(optimkit, recipe)([torch.zeros(1, requires_grad=True)], **kwargs)


# ------------------------------------------------------------ whole tensors (issue 22)
def test_whole_implies_shaped_and_is_for_stats_only():
    import dataclasses

    from optimkit.core.parts import stat, stepper

    @stat(reads=("update",), provides=("update",), whole=True)
    def whole_stat(b):
        pass

    assert whole_stat.whole and whole_stat.shaped  # flat mode steps it per tensor
    plain = stepper()(lambda b: None)
    with pytest.raises(ValueError, match="whole=True is for stats"):
        dataclasses.replace(plain, whole=True)


def test_owners_deal_tensors_round_robin_largest_first():
    from optimkit.core.whole import owners

    # sizes 12, 30, 5, 30, 1: by size 30 (1), 30 (3), 12 (0), 5 (2), 1 (4)
    assert owners([12, 30, 5, 30, 1], 2) == [0, 0, 1, 1, 0]
    assert owners([12, 30, 5, 30, 1], 3) == [2, 0, 0, 1, 1]
    assert owners([7], 4) == [0]


def test_whole_part_on_plain_tensors_runs_on_the_tensors_themselves():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from whole_recipes import OrthoSGD, newton_schulz

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    v = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    w0, v0 = w.detach().clone(), v.detach().clone()
    opt = OrthoSGD([w, v], lr=0.1)
    gw, gv = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    w.grad, v.grad = gw, gv
    opt.step()
    assert torch.equal(w.detach(), w0.add(newton_schulz(gw, 5), alpha=-0.1))
    assert torch.equal(v.detach(), v0.add(gv / (gv.norm() + 1e-7), alpha=-0.1))
    assert float(opt.state[w]["input_norm"]) == float(gw.norm())


def test_soap_eigh_failing_in_float32_retries_in_float64_and_says_so_once(monkeypatch):
    import warnings

    from optimkit.stats import preconditioned

    real = torch.linalg.eigh

    def eigh(a):
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")
        return real(a)

    monkeypatch.setattr(torch.linalg, "eigh", eigh)
    monkeypatch.setattr(preconditioned, "_warned_fp64", False)
    factors = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    with pytest.warns(RuntimeWarning, match="retrying in float64"):
        vectors = preconditioned._eigenvectors(factors)
    # by descending eigenvalue, in the factors' dtype
    assert vectors.dtype == torch.float32
    torch.testing.assert_close(vectors, torch.eye(2)[None])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preconditioned._eigenvectors(factors)  # said once


def test_a_sharded_bucket_selected_keeps_the_full_shapes():
    # a host-gated part's due tensors of an FSDP2 bucket: a whole part gathers them by their
    # full shapes, and kron_balance reads its factors by them
    from optimkit.core.sharded import ShardedBucket
    from optimkit.stats.kron import kron_balance

    shards = [torch.zeros(2, 2), torch.zeros(1, 2)]  # rank 0's rows of (3, 2) and (2, 2)
    precond = torch.tensor([4.0, 0.0, 0.0, 4.0, 1.0, 0.0, 0.0, 1.0])
    bucket = ShardedBucket(shards, [torch.zeros(2, 2), torch.zeros(1, 2)],
                           {"precond": [torch.zeros(13), precond]}, {}, ("fake-group",),
                           shapes=[(3, 2), (2, 2)])
    picked = bucket.select([1])
    assert isinstance(picked, ShardedBucket) and picked.groups == ("fake-group",)
    assert picked.shapes == [(2, 2)] and picked.params[0] is shards[1]
    kron_balance.fn(picked, **{k: v for k, v in kron_balance.hypers.items()
                               if k in kron_balance.passed})
    torch.testing.assert_close(precond, torch.tensor([2.0, 0.0, 0.0, 2.0] * 2))


def test_kron_fits_on_the_gradient_through_the_part_that_declares_it():
    # momentum_into_precondition_update=False runs kron_fit_on_grads (the one that declares
    # grads instead of the momentum: under FSDP2 each fit gathers one of them). With momentum 0 the
    # debiased momentum is the gradient, so both fits are the same; with momentum they differ.
    import optimkit

    def run(**kwargs):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
        opt = optimkit.Kron([w], lr=0.1, precondition_dtype=torch.float64, **kwargs)
        for _ in range(3):
            w.grad = torch.randn(3, 2, dtype=torch.float64)
            opt.step()
        return w.detach(), opt.state[w]["precond"]

    names = [part.name for part in optimkit.Kron.recipe.parts
             if part.active({**optimkit.Kron.recipe.hypers,
                             "momentum_into_precondition_update": False})]
    assert "kron_fit_on_grads[momentum_into_precondition_update]" in names
    assert "kron_fit[momentum_into_precondition_update]" not in names
    for momentum, same in ((0.0, True), (0.5, False)):
        on_m = run(momentum=momentum)
        on_g = run(momentum=momentum, momentum_into_precondition_update=False)
        assert all(torch.equal(a, b) for a, b in zip(on_m, on_g)) is same, momentum


# ---- PSGD Kron's preconditioner update schedule (precondition_update_probability)

def _counter_schedule(probability, steps):
    """The references' update counter (pytorch_optimizer.Kron.step, kron_torch), run naively:
    at step t, counter += 1; update when counter >= 1 / p(t - 1), then counter = 0."""
    counter, due = 0, []
    for n in range(steps):
        p = probability(n) if callable(probability) else probability
        counter += 1
        due.append(bool(p > 0 and counter >= 1 / p))
        if due[-1]:
            counter = 0
    return due


def test_kron_update_schedule_is_the_references():
    from pytorch_optimizer.optimizer.psgd import precondition_update_prob_schedule

    from optimkit.stats.kron import UpdateProbabilitySchedule, fit_due

    ours, theirs = UpdateProbabilitySchedule(), precondition_update_prob_schedule()
    for n in [0, 1, 499, 500, 501, 1234, 4007, 4008, 10**6]:
        assert torch.equal(ours(n), theirs(n)), n
    # the default (None) past the point where the table turns periodic (~step 4000)
    due = _counter_schedule(theirs, 6000)
    assert [fit_due(None, t) for t in range(1, 6001)] == due
    assert due[:500] == [True] * 500 and sum(due[-1000:]) in (29, 30)  # ~min_prob
    quick = UpdateProbabilitySchedule(min_prob=0.25, decay=0.3, flat_start=3)
    assert [fit_due(quick, t) for t in range(1, 60)] == _counter_schedule(quick, 59)
    assert [fit_due(0.4, t) for t in range(1, 13)] == _counter_schedule(0.4, 12)
    assert [t for t in range(1, 13) if fit_due(0.4, t)] == [3, 6, 9, 12]


@pytest.mark.parametrize("value", [0, 0.0, 1.5, -0.1, float("nan"), True, "often"])
def test_kron_update_probability_out_of_range_is_refused(value):
    import optimkit

    with pytest.raises(ValueError, match="precondition_update_probability"):
        optimkit.Kron([torch.zeros(2, 2, requires_grad=True)],
                      precondition_update_probability=value)


def test_kron_update_schedule_returning_a_bad_probability_is_refused():
    import optimkit

    p = torch.zeros(2, 2, requires_grad=True)
    opt = optimkit.Kron([p], precondition_update_probability=lambda n: 1.0 if n < 2 else 0.0)
    p.grad = torch.ones(2, 2)
    opt.step()
    opt.step()
    with pytest.raises(ValueError, match="precondition_update_probability"):
        opt.step()


def _kron_run(opt, params, steps, start):
    from helpers import fake_grads

    for step in range(start, start + steps):
        for i, (p, g) in enumerate(zip(params, fake_grads(params, step))):
            p.grad = None if i == 1 and step % 5 == 2 else g  # param 1's count lags
        opt.step()


def test_kron_resumes_mid_schedule_bit_exactly(tmp_path):
    # a checkpoint taken while the schedule anneals (no RNG, no counter to save: the fits are
    # a function of each param's step count) goes on exactly as the run that never stopped
    from helpers import clone_params, make_params

    import optimkit
    from optimkit.stats.kron import UpdateProbabilitySchedule

    schedule = UpdateProbabilitySchedule(min_prob=0.2, decay=0.3, flat_start=4)
    start = make_params(torch.float32)
    whole_params, part_params = clone_params(start), clone_params(start)
    kwargs = dict(lr=1e-2, precondition_update_probability=schedule, balance_every=3)
    whole = optimkit.Kron(whole_params, **kwargs)
    _kron_run(whole, whole_params, 20, 0)
    first = optimkit.Kron(part_params, **kwargs)
    _kron_run(first, part_params, 9, 0)
    torch.save(first.state_dict(), tmp_path / "kron.pt")
    resumed = optimkit.Kron(part_params, **kwargs)
    resumed.load_state_dict(torch.load(tmp_path / "kron.pt", weights_only=False))
    assert resumed.param_groups[0]["precondition_update_probability"] == schedule
    _kron_run(resumed, part_params, 11, 9)
    for p, q in zip(whole_params, part_params):
        assert torch.equal(p, q)
    for p, q in zip(whole_params, part_params):
        for name, value in whole.state[p].items():
            assert torch.equal(value, resumed.state[q][name]), name


def test_kron_fits_only_at_the_scheduled_steps(monkeypatch):
    # the executor runs kron_fit on the due params only (param 1 lags, so some steps split
    # the bucket), and the direction reads the factors as the last fit left them
    from helpers import clone_params, make_params

    import optimkit
    from optimkit.stats import kron

    fits = []
    real = kron._update_factors

    def counted(*args):
        fits.append(None)
        return real(*args)

    monkeypatch.setattr(kron, "_update_factors", counted)
    params = clone_params(make_params(torch.float32))
    opt = optimkit.Kron(params, precondition_update_probability=0.5)
    _kron_run(opt, params, 12, 0)
    counts = [int(opt.state[p]["step"]) for p in params]
    assert len(fits) == sum(t // 2 for t in counts)
