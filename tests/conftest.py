from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

# Every part runs on a guarded bucket that raises when it touches a state or field it does not
# declare (optimkit/core/contract.py); set before optimkit loads, so subprocesses inherit it.
os.environ.setdefault("OPTIMKIT_CHECK_CONTRACT", "1")
# Inductor compiles in this process, not in a pool of subprocesses per pytest worker (each
# importing torch): on two cores the pool only adds processes (measured: 5 % less CPU).
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import optim_db  # noqa: E402
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The suite runs one pytest worker per core (-n 2) on tiny tensors: more intra-op threads
    # only contend. Restored afterwards, so a test that changes it cannot leak the change.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The heavy tests (compiling, distributed ranks, end-to-end bench runs, many steps per case),
# left out of the fast subset for development: python -m pytest -q -n 2 -m "not slow".
SLOW = pytest.mark.slow

# Slow by what they do, wherever they are: a case run in a compiled mode (its first step
# compiles, cold in a fresh checkout), and these tests by name (measured at 2-8 s each).
_SLOW_TESTS = (
    "test_bench_your_own_model_end_to_end",  # runs the bench end to end
    "test_eight_bit_codes_of_other_shapes_are_refused",  # 8-bit codecs compiled fresh
    "test_a_gradient_whose_square_overflows_keeps",  # the 8-bit codec, compiled
    "test_precision_policies_never_quantize_a_state_of_its_own_shape",
    "test_an_eager_8bit_step_holds_one_block_of_working_state",
)


# The compiled modes run a covering set by default (each compile costs seconds of CPU); this
# runs every optimizer in every compiled combination (CI runs it after the suite).
ALL_MODES = os.environ.get("OPTIMKIT_TEST_ALL_MODES") == "1"


def engine_features(recipe) -> set[str]:
    """What decides how the engine cuts and runs a recipe's step: barriers, whole-tensor,
    host-gated (``every``/``due``), routed and batched parts, train/eval transitions."""
    features = {"barrier"} if recipe.barriers else set()
    for part in recipe.parts:
        features |= {name for name in ("whole", "every", "due", "routes", "batch")
                     if getattr(part, name, None)}
    if recipe.transitions:
        features.add("transitions")
    return features


def covering(infos: Iterable[optim_db.OptimizerInfo],
             signature: Callable[[optim_db.OptimizerInfo], set]) -> list[str]:
    """The names of a few optimizers whose signatures together hold every element any of them
    holds: greedily, the one adding the most, ties in the database's order. A new optimizer
    that brings a new element (a storage kind, an engine feature) joins the set by itself."""
    infos = list(infos)
    signatures = {info.name: set(signature(info)) for info in infos}
    every = set().union(*signatures.values()) if signatures else set()
    covered: set = set()
    picked: list[str] = []
    while covered != every:
        best = max(signatures, key=lambda name: len(signatures[name] - covered))
        picked.append(best)
        covered |= signatures[best]
    return picked


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        compiled = "compiled" in item.name or item.name.endswith("_compiled")
        if compiled or item.name.startswith(_SLOW_TESTS):
            item.add_marker(SLOW)
    # Longest first, so that under -n 2 no worker is left with a long test while the other
    # idles at the end: the distributed launch (minutes, on 2 rank processes), then the
    # slow tests, then the rest, each in collection order.
    def rank(item: pytest.Item) -> int:
        if item.module.__name__ == "test_distributed":
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)


def optims(
    cases: Callable[[optim_db.OptimizerInfo], Iterable[tuple[str, tuple]]] | None = None,
    *, where: Callable[[optim_db.OptimizerInfo], bool] | None = None, argnames: str = "info",
):
    """Parametrize a test over the test database (``tests/optim_db.py``), one case per
    optimizer, and skip the optimizers whose ``skips`` name the test (or one of its cases:
    ``"test_name[case_id]"``).

    ``where(info)`` keeps some optimizers only. ``cases(info)`` yields ``(id, values)`` for
    tests that take more than the info: ``values`` fill ``argnames`` after ``info``, and the
    case is named ``"<optimizer>-<id>"``; ``(id, values, marks)`` also marks the case (``SLOW``).
    A skip keyed ``"<test>[<id>]"`` skips that one case.
    """

    def decorate(test: Callable[..., Any]):
        params = []
        for info in optim_db.DB:
            if where is not None and not where(info):
                continue
            marks = []
            if test.__name__ in info.skips:
                marks.append(pytest.mark.skip(reason=f"{info.name}: {info.skips[test.__name__]}"))
            if cases is None:
                params.append(pytest.param(info, id=info.name, marks=marks))
            else:
                for case_id, values, *extra in cases(info):
                    # one case only: a skip named "<test>[<case id>]"
                    one = info.skips.get(f"{test.__name__}[{case_id}]")
                    case_marks = [pytest.mark.skip(reason=f"{info.name}: {one}")] if one else []
                    params.append(pytest.param(info, *values, id=f"{info.name}-{case_id}",
                                               marks=marks + case_marks
                                               + list(extra[0] if extra else ())))
        return pytest.mark.parametrize(argnames, params)(test)

    return decorate
