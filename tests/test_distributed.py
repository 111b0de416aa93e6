"""Every optimizer under torch.distributed: DDP, FSDP2 (DTensor), ZeRO and DCP checkpoints.

2 gloo ranks on 127.0.0.1, CPU only. The ranks are started once for the whole session (twice
when a checkpoint is loaded: into new processes), and run every selected case there (see
``tests/dist_harness.py``); each test below asserts one case's result. The cases are the test
database's optimizers (``conftest.optims``) and ``optimkit.Lookahead`` around torch's Adam;
the whole-tensor tests (issue 22) run every recipe with a ``whole`` part
(``dist_scenarios.whole_cases``).
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import SLOW, optims
from dist_harness import WORLD_SIZE, launch, missing_reason
from dist_scenarios import SAVED_BY, WRAPPER, whole_cases

import optimkit.core.compiled as compiled

pytestmark = SLOW  # the ranks start as new processes; all cases run in about a minute or more

# compile=True under FSDP2: a layer-wise recipe, so the graph holds the norms' all-reduce too
# (compiling takes seconds to tens of seconds with a cold inductor cache).
COMPILED = ("lamb",)
# DCP with a DDP model and flat=True: an element-wise, a layer-wise and a Lookahead recipe.
DCP_FLAT = ("adam", "lamb", "ranger")


def _in(*scenarios):
    """``optims`` cases: one per scenario, named ``<optimizer>-<scenario>``."""
    return lambda info: [(scenario, (scenario,)) for scenario in scenarios]


def _requested(session) -> list[tuple[str, str]]:
    """The (scenario, case) pairs of this module's collected tests."""
    pairs = []
    for item in session.items:
        spec = getattr(item, "callspec", None)
        if item.module.__name__ != __name__ or spec is None or "scenario" not in spec.params:
            continue
        info = spec.params.get("info")
        case = spec.params.get("case", WRAPPER if info is None else getattr(info, "name", None))
        pairs.append((spec.params["scenario"], case))
    return list(dict.fromkeys(pairs))


@pytest.fixture(scope="session")
def dist_results(request, tmp_path_factory):
    """Every requested pair's results (one per rank), computed once per session.

    Under pytest-xdist each worker collects every test, so both ask for the same pairs: the
    first to get the lock launches the ranks, the other reads its results.
    """
    from filelock import FileLock

    pairs = _requested(request.session)
    later = [p for p in pairs if p[0] in SAVED_BY]
    first = list(dict.fromkeys(
        [p for p in pairs if p[0] not in SAVED_BY] + [(SAVED_BY[s], c) for s, c in later]
    ))
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's directory, shared by its workers
    shared = root / "optimkit-distributed"
    shared.mkdir(exist_ok=True)
    done = shared / "results.json"
    with FileLock(str(shared / "lock")):
        if not done.exists():
            results = launch(first, shared, "first") if first else {}
            if later:
                results.update(launch(later, shared, "resume", timeout=300.0))
            done.write_text(json.dumps([[list(k), v] for k, v in results.items()]))
        return {tuple(k): v for k, v in json.loads(done.read_text())}


def _rows(results, scenario, case) -> list[dict]:
    rows = results.get((scenario, case), [])
    assert len(rows) == WORLD_SIZE, missing_reason(results, (scenario, case))
    for row in rows:
        assert row["error"] is None, f"rank {row['rank']} failed:\n{row['error']}"
    return rows


def _matches_one_process(results, scenario, case):
    for row in _rows(results, scenario, case):
        assert row["rel"] <= 1e-12, row


def _matches_the_unsharded_run(results, scenario, case):
    # uneven shards, an empty shard and a zero-norm tensor included (see dist_scenarios)
    for row in _rows(results, scenario, case):
        assert row["rel"] <= 1e-6, row


def _resumes_exactly(results, scenario, case):
    for row in _rows(results, scenario, case):
        assert row["max_abs"] == 0.0, row


@optims(cases=_in("ddp", "ddp-flat"), argnames="info,scenario")
def test_ddp_matches_one_process(dist_results, info, scenario):
    _matches_one_process(dist_results, scenario, info.name)


@optims(cases=_in("fsdp"), argnames="info,scenario")
def test_fsdp2_matches_the_unsharded_run(dist_results, info, scenario):
    _matches_the_unsharded_run(dist_results, scenario, info.name)
    for row in _rows(dist_results, scenario, info.name):
        # the per-tensor norms of a step: local squares, ONE all-reduce for all params
        assert row["collectives"] <= 1, row


# max_grad_norm (issue 22): the clip's norm is a barrier, one all-reduce; Prodigy's d another
CLIPPED = ("adam", "lamb", "prodigy")


@optims(cases=_in("fsdp-clip"), argnames="info,scenario", where=lambda i: i.name in CLIPPED)
def test_fsdp2_max_grad_norm_clips_by_the_norm_of_the_full_grads(dist_results, info, scenario):
    _matches_the_unsharded_run(dist_results, scenario, info.name)
    barriers = len(info.factory.recipe.barriers)
    for row in _rows(dist_results, scenario, info.name):
        # the clip's norm, the recipe's own barriers, LAMB's per-tensor norms: one each
        assert row["collectives"] <= 1 + barriers + (info.name == "lamb"), row


@optims(cases=_in("fsdp-flat"), argnames="info,scenario")
def test_fsdp2_flat_mode_is_refused_naming_dtensor(dist_results, info, scenario):
    # FSDP2 owns each sharded param's storage: no flat buffer can hold it
    for row in _rows(dist_results, scenario, info.name):
        assert "DTensor" in row.get("refused", ""), row


@optims(cases=_in("fsdp-compile"), argnames="info,scenario", where=lambda i: i.name in COMPILED)
def test_fsdp2_compiled_step_runs_on_the_local_shards(dist_results, info, scenario):
    if not compiled.has_cxx_compiler():
        pytest.skip("inductor needs a C++ compiler on the CPU")
    _matches_the_unsharded_run(dist_results, scenario, info.name)
    for row in _rows(dist_results, scenario, info.name):
        assert row["compiled"], "the compiled step fell back to eager"


# Precision policies under FSDP2 (issue 12): an element-wise and a layer-wise recipe.
POLICY_CASES = ("adam", "lamb")


@optims(cases=_in("fsdp-8bit", "fsdp-8bit-uneven"), argnames="info,scenario",
        where=lambda i: i.name in POLICY_CASES)
def test_fsdp2_8bit_state_stays_per_shard(dist_results, info, scenario):
    """8-bit state of a DTensor param: codes laid out like the param (a DTensor, this rank's
    shard), block scales of the local shard only, and no collective but the layer-wise norms'.
    Shards of whole 256-element blocks give the unsharded run's blocks: equal up to float
    summation order; a shard boundary inside a block gives other blocks: equal within the
    quantization error."""
    for row in _rows(dist_results, scenario, info.name):
        assert row["codes_dtensor"] and row["codes_dtype"] == "torch.uint8", row
        assert row["codes_local_numel"] == row["shard_numel"], row
        # the local shard's blocks (the largest shard's count: both shards are equal here)
        assert row["absmax_numel"] == -(-row["shard_numel"] // 256), row
        # LAMB: one all-reduce of norms per bucket (params with 8-bit state, and the others)
        assert row["collectives"] <= (2 if info.name == "lamb" else 0), row
        assert row["rel"] <= (1e-5 if scenario == "fsdp-8bit" else 2e-2), row


@optims(cases=_in("fsdp-stochastic"), argnames="info,scenario",
        where=lambda i: i.name in POLICY_CASES)
def test_fsdp2_stochastic_rounding_draws_the_unsharded_bits(dist_results, info, scenario):
    """bf16 params with stochastic rounding: each shard draws the random bits its elements draw
    in one process (offsets in the full tensor), so the sharded run follows the unsharded one;
    bf16 forward passes differ in summation order only."""
    for row in _rows(dist_results, scenario, info.name):
        assert row["codes_dtype"] == "torch.bfloat16" and row["codes_dtensor"], row
        assert row["collectives"] <= (1 if info.name == "lamb" else 0), row
        assert row["rel"] <= 1e-2, row


@optims(cases=_in("dcp-8bit-load"), argnames="info,scenario",
        where=lambda i: i.name in POLICY_CASES)
def test_fsdp2_dcp_of_8bit_state_resumes_exactly(dist_results, info, scenario):
    for row in _rows(dist_results, scenario, info.name):
        assert row["codes_dtype"] == "torch.uint8", row
    _resumes_exactly(dist_results, scenario, info.name)


@optims(cases=_in("fsdp-8bit-convert"), argnames="info,scenario",
        where=lambda i: i.name in POLICY_CASES)
def test_fsdp2_state_converts_between_policies_in_memory(dist_results, info, scenario):
    for row in _rows(dist_results, scenario, info.name):
        assert row["plain_dtype"] == "torch.float32", row
        assert row["dequantized_max_abs"] == 0.0 and row["codes_back"], row
    _resumes_exactly(dist_results, scenario, info.name)


@optims(cases=_in("dcp-8bit-into-plain-load"), argnames="info,scenario",
        where=lambda i: i.name in POLICY_CASES)
def test_fsdp2_dcp_of_8bit_state_into_a_plain_optimizer_is_refused(dist_results, info, scenario):
    """DCP loads into the template's dtypes: the codes arrive as floats 0..255. The saved
    groups' state_form says they were codes, so loading refuses them (before, the optimizer
    trained on them); the route the message gives converts exactly."""
    for row in _rows(dist_results, scenario, info.name):
        assert "saved as 8-bit codes" in row["refusal"] and "state_bits=8" in row["refusal"], row
        assert row["saved_dtype"] == "torch.uint8", row
        assert row["dequantized_max_abs"] == 0.0, row


@optims(cases=_in("fsdp-other-shapes"), argnames="info,scenario",
        where=lambda i: i.name in POLICY_CASES)
def test_fsdp2_state_of_other_shapes_is_refused_naming_the_param(dist_results, info, scenario):
    """An FSDP2 optimizer state of a model of other shapes, handed over with
    ``set_optimizer_state_dict``: the global shapes are compared (each rank's shards would
    not show the difference the same way), the param is named by its FQN, nothing changes."""
    for row in _rows(dist_results, scenario, info.name):
        assert "'0.weight'" in row["refusal"], row
        assert "(128, 64)" in row["refusal"] and "(100, 64)" in row["refusal"], row
        assert row["unchanged"], row


@optims(cases=_in("dcp-8bit-reshard-load"), argnames="info,scenario",
        where=lambda i: i.name in POLICY_CASES)
def test_fsdp2_dcp_of_8bit_state_onto_another_world_size(dist_results, info, scenario):
    """2-rank checkpoints of 8-bit state loaded by one process. Shards of whole 256-element
    blocks have the unsharded layout: the load gives the saved codes and scales exactly.
    Shards cut inside a block: the saved groups' state_form records the layout and the load is
    refused naming both (before: it loaded, its moments off by 20-37 % of their max)."""
    for row in _rows(dist_results, scenario, info.name):
        even, odd = row["even"], row["odd"]
        assert even["refusal"] == "" and even["exact"], even
        assert even["saved_form"].startswith("8bit:") and ";shards" not in even["saved_form"]
        assert odd["saved_form"].endswith(";shards=2,1,1,1"), odd
        assert "saved quantized in 2 shards along dim 0" in odd["refusal"], odd
        assert "holds it unsharded" in odd["refusal"], odd
        assert "nothing was loaded" in odd["refusal"] and odd["groups_kept"], odd


def _checkpoints(info):
    # ZeRO (eager and flat; not where ``skips`` names "zero") and DCP under FSDP2 for every
    # optimizer; DCP of a flat optimizer under DDP for a few
    names = ["dcp-load"] if "zero" in info.skips else ["zero-load", "zero-flat-load", "dcp-load"]
    return _in(*names, *(["dcp-flat-load"] if info.name in DCP_FLAT else []))(info)


@optims(cases=_checkpoints, argnames="info,scenario")
def test_checkpoint_resumes_exactly_in_a_new_process_group(dist_results, info, scenario):
    _resumes_exactly(dist_results, scenario, info.name)


@optims(cases=_in("dcp-eval-load"), argnames="info,scenario",
        where=lambda i: bool(getattr(getattr(i.factory, "recipe", None), "transitions", None)))
def test_fsdp2_dcp_checkpoint_in_eval_mode_resumes_exactly(dist_results, info, scenario):
    """Schedule-Free under FSDP2: eval() on the local shards, a DCP checkpoint in eval mode,
    resumed in a new process group in eval mode (step refused), train(), continued: eval()
    gives the uninterrupted run's averaged params bit for bit."""
    for row in _rows(dist_results, scenario, info.name):
        assert row["resumed_in_eval"] and "eval mode" in row["refused"], row
    _resumes_exactly(dist_results, scenario, info.name)


WRAPPER_CHECKS = {
    "ddp": _matches_one_process,
    "fsdp": _matches_the_unsharded_run,
    "zero-load": _resumes_exactly,
    "dcp-load": _resumes_exactly,
}


@pytest.mark.parametrize("scenario", list(WRAPPER_CHECKS))
def test_lookahead_wrapper_around_torch_adam(dist_results, scenario):
    WRAPPER_CHECKS[scenario](dist_results, scenario, WRAPPER)


# ------------------------------------------------------------ whole tensors under FSDP2 (#22)
# Every recipe with a part that needs each full tensor (``whole=True``): the test database's
# (found by their parts: a new one is tested here without a line) and tests/whole_recipes.py's.
WHOLE = whole_cases()


def whole_tensor_parity(case: str, scenario: str, results) -> None:
    """What every whole-tensor case must show in ``scenario`` (see ``test_whole_tensor_*``)."""
    rows = _rows(results, scenario, case)
    if scenario in ("whole-exact", "whole-exact-bf16-state"):
        # the same gradients on every rank: params and every state bit for bit, over
        # WHOLE_STEPS steps, with odd and smaller-than-the-world dim-0 sizes
        for row in rows:
            assert row["max_abs"] == 0.0 and row["state_max_abs"] == 0.0, row
            assert row["names_match"] and set(row["state_dtensor"]) <= {"DTensor"}, row
            assert row["p2p_batches"] >= 1 and not row["warnings"], row
            if case.startswith("kron"):
                # at a step that fits, kron_fit gathers the momentum and sends the factors
                # back, and kron_direction reuses that momentum and sends only u back: 3
                # rounds (4 if it gathered the momentum again, as it must after a fit on the
                # gradient); else the direction's 2
                from dist_scenarios import WHOLE_STEPS, cases

                from optimkit.stats.kron import fit_due

                kwargs = cases()[case].kwargs
                fits = fit_due(kwargs.get("precondition_update_probability"), WHOLE_STEPS)
                on_grads = not kwargs.get("momentum_into_precondition_update", True)
                assert row["p2p_batches"] == 2 + fits * (1 + on_grads), row
            if scenario == "whole-exact-bf16-state":  # the policy's working copies gathered
                assert "torch.bfloat16" in row["state_dtypes"], row
    elif scenario == "fsdp":
        _skip_if_apart(case)
        _matches_the_unsharded_run(results, scenario, case)
    elif scenario == "fsdp-compile":
        if not compiled.has_cxx_compiler():
            pytest.skip("inductor needs a C++ compiler on the CPU")
        # the parts around the whole one compiled (inductor fuses p - lr * u: not the eager
        # bits), the whole part eagerly between them; no fallback
        for row in rows:
            assert row["compiled"], "the compiled step fell back to eager"
        _skip_if_apart(case)
        _matches_the_unsharded_run(results, scenario, case)
    elif scenario == "dcp-load":
        _resumes_exactly(results, scenario, case)
    elif scenario == "whole-refused":
        for row in rows:
            assert "whole=True" in row["refusal"] and "Shard(dim=1)" in row["refusal"], row
            assert row["unchanged"], row
    else:
        raise AssertionError(scenario)


def _skip_if_apart(case: str) -> None:
    """Skip the comparison with one process where the test database says why a sharded run
    of the case parts from it (SOAP: see its entry); the case ran without error."""
    import optim_db

    info = next((info for info in optim_db.DB if info.name == case), None)
    reason = info and info.skips.get("test_fsdp2_matches_the_unsharded_run")
    if reason:
        pytest.skip(reason)


WHOLE_SCENARIOS = ("whole-exact", "whole-exact-bf16-state", "fsdp", "fsdp-compile", "dcp-load",
                   "whole-refused")


@pytest.mark.parametrize("scenario", WHOLE_SCENARIOS)
@pytest.mark.parametrize("case", WHOLE)
def test_whole_tensor_part_under_fsdp2(dist_results, case, scenario):
    whole_tensor_parity(case, scenario, dist_results)


@pytest.mark.parametrize("scenario", ["whole-on-shards"])
@pytest.mark.parametrize("case", ["whole-ortho-sgd"])
def test_whole_part_on_shards_is_another_optimizer(dist_results, case, scenario):
    """What main computed: the orthogonalization without ``whole`` runs on each rank's dim-0
    shard, silently; the run then ends far from the unsharded one (issue 22). With
    ``whole=True`` the same recipe matches it bit for bit (``whole-exact``)."""
    for row in _rows(dist_results, scenario, case):
        assert row["rel"] > 1e-2 and row["p2p_batches"] == 0, row
