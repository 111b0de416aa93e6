"""Closed-form checks of every stat and stepper, one or two steps on a hand-built Bucket.

Each entry of ``CASES`` runs one part on tiny float64 tensors and compares the result with
numbers worked out by hand (the formula is written out in the entry). A part exported from
``optimkit.stats`` or ``optimkit.steppers`` without an entry here fails
``test_every_part_has_a_closed_form_case``: adding a part means adding one ``Case`` below.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from optimkit import stats, steppers
from optimkit.core import Bucket, Part
from optimkit.stats import (
    accumulate_grad,
    adam_step_sizes,
    average_grad,
    average_sqr_grad,
    average_sqr_grad_alpha,
    blended_step_sizes,
    bounded_step_sizes,
    centered_grad_avg,
    grad_friction,
    layer_normalize,
    layer_sqr_avg,
    max_layer_sqr_avg,
    max_sqr_avg,
    momentum,
    rms_normalize,
    step_stat,
    sum_sqr_grad,
    weight_decay,
)
from optimkit.steppers import (
    adagrad_step,
    adam_step,
    per_element_step,
    qhadam_step,
    radam_step,
    sgd_step,
)

EPS = 1e-8


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


@dataclasses.dataclass
class Case:
    """One closed-form check. Values are per tensor of the bucket (nested lists or numbers).

    ``grads`` holds the gradients of each call (one list per call, so two entries = two steps).
    ``expect`` maps ``"params"``, ``"grads"`` (the direction the part leaves), ``"state:NAME"``
    or ``"extras:KEY"`` to the values after the last call. ``fresh`` lists, per state name, the
    tensors whose state is new on the first call; ``extras`` is set before every call.
    """

    id: str
    part: Part
    hypers: dict
    params: list
    grads: list
    expect: dict
    state: dict = dataclasses.field(default_factory=dict)
    fresh: dict = dataclasses.field(default_factory=dict)
    extras: dict = dataclasses.field(default_factory=dict)


def _tensor(value):
    return torch.tensor(value, dtype=torch.float64)


def _state_tensor(name, value):
    # torch.optim's step format: a float32 0-d tensor.
    return torch.tensor(float(value)) if name == "step" else _tensor(value)


# Adam-family numbers at step 2 with betas (0.9, 0.99): 1 - 0.9**2 = 0.19, 1 - 0.99**2 = 0.0199.
CASES = [
    # ---- stats: moments
    Case("step_stat-two-steps", step_stat, {}, params=[[1.0], [2.0]], grads=[[[0.0], [0.0]]] * 2,
         state={"step": [0, 3]}, expect={"state:step": [2.0, 5.0]}),
    Case("average_grad-two-steps", average_grad, {"betas": (0.9, 0.99)}, params=[[0.0, 0.0]],
         grads=[[[3.0, 0.5]], [[-1.0, 0.0]]], state={"grad_avg": [[1.0, -2.0]]},
         # 0.9 * 1 + 0.1 * 3 = 1.2, then 0.9 * 1.2 - 0.1 = 0.98; 0.9 * -2 + 0.05 = -1.75, * 0.9
         expect={"state:grad_avg": [[0.98, -1.575]]}),
    Case("average_sqr_grad", average_sqr_grad, {"betas": (0.9, 0.99)}, params=[[0.0, 0.0]],
         grads=[[[2.0, -1.0]]], state={"sqr_avg": [[0.5, 2.0]]},
         expect={"state:sqr_avg": [[0.99 * 0.5 + 0.01 * 4, 0.99 * 2 + 0.01 * 1]]}),
    Case("average_sqr_grad_alpha", average_sqr_grad_alpha, {"alpha": 0.9}, params=[[0.0]],
         grads=[[[3.0]]], state={"sqr_avg": [[1.0]]}, expect={"state:sqr_avg": [[1.8]]}),
    Case("centered_grad_avg", centered_grad_avg, {"alpha": 0.8, "centered": True},
         params=[[0.0]], grads=[[[-1.5]]], state={"grad_avg": [[0.5]]},
         expect={"state:grad_avg": [[0.8 * 0.5 - 0.2 * 1.5]]}),
    Case("max_sqr_avg", max_sqr_avg, {"amsgrad": True}, params=[[0.0, 0.0]], grads=[[[0.0, 0.0]]],
         state={"sqr_avg": [[1.0, 4.0]], "max_sqr_avg": [[2.0, 3.0]]},
         expect={"state:max_sqr_avg": [[2.0, 4.0]], "state:sqr_avg": [[1.0, 4.0]]}),
    Case("sum_sqr_grad-two-steps", sum_sqr_grad, {}, params=[[0.0, 0.0]],
         grads=[[[2.0, -3.0]], [[1.0, 1.0]]], state={"sqr_sum": [[0.1, 0.0]]},
         expect={"state:sqr_sum": [[0.1 + 4 + 1, 9 + 1]]}),
    # ---- stats: the direction
    Case("weight_decay-l2", weight_decay, {"weight_decay": 0.1}, params=[[2.0, -4.0]],
         grads=[[[1.0, 1.0]]], expect={"grads": [[1.2, 0.6]], "params": [[2.0, -4.0]]}),
    Case("weight_decay-decoupled", weight_decay,
         {"weight_decay": 0.1, "decoupled_weight_decay": True, "lr": 0.5}, params=[[2.0, -4.0]],
         grads=[[[1.0, 1.0]]], expect={"params": [[1.9, -3.8]], "grads": [[1.0, 1.0]]}),
    Case("momentum-two-steps", momentum, {"momentum": 0.9}, params=[[0.0]],
         grads=[[[1.0]], [[2.0]]], state={"momentum_buffer": [[0.0]]},
         fresh={"momentum_buffer": [0]},  # starts as the first grad, then 0.9 * 1 + 2
         expect={"state:momentum_buffer": [[2.9]], "grads": [[2.9]]}),
    Case("momentum-one-fresh-one-old", momentum, {"momentum": 0.9}, params=[[0.0], [0.0]],
         grads=[[[2.0], [3.0]]], state={"momentum_buffer": [[0.0], [1.0]]},
         fresh={"momentum_buffer": [0]},
         expect={"state:momentum_buffer": [[2.0], [0.9 + 3.0]]}),
    Case("momentum-dampening", momentum, {"momentum": 0.9, "dampening": 0.5}, params=[[0.0]],
         grads=[[[4.0]]], state={"momentum_buffer": [[2.0]]},
         expect={"state:momentum_buffer": [[1.8 + 2.0]], "grads": [[3.8]]}),
    Case("momentum-nesterov", momentum, {"momentum": 0.9, "nesterov": True}, params=[[0.0]],
         grads=[[[1.0]]], state={"momentum_buffer": [[2.0]]},
         expect={"state:momentum_buffer": [[2.8]], "grads": [[1.0 + 0.9 * 2.8]]}),
    Case("rms_normalize", rms_normalize, {"eps": EPS}, params=[[0.0, 0.0]],
         grads=[[[1.0, -1.0]]], state={"sqr_avg": [[4.0, 0.25]]},
         expect={"grads": [[1 / (2 + EPS), -1 / (0.5 + EPS)]]}),
    Case("rms_normalize-centered", rms_normalize, {"eps": EPS, "centered": True}, params=[[0.0]],
         grads=[[[2.0]]], state={"sqr_avg": [[5.0]], "grad_avg": [[1.0]]},
         expect={"grads": [[2 / (math.sqrt(5 - 1) + EPS)]]}),
    Case("accumulate_grad", accumulate_grad, {"betas": (0.9, 0.5)}, params=[[0.0]],
         grads=[[[2.0]]], state={"grad_avg": [[1.0]]},
         expect={"state:grad_avg": [[0.9 + 2.0]], "grads": [[2.9]]}),
    Case("accumulate_grad-averaging", accumulate_grad,
         {"betas": (0.9, 0.5), "grad_averaging": True}, params=[[0.0]], grads=[[[2.0]]],
         state={"grad_avg": [[1.0]]},
         expect={"state:grad_avg": [[0.9 + 0.1 * 2.0]], "grads": [[1.1]]}),
    # ---- stats: layer-wise (NovoGrad), one 0-d value per tensor
    Case("layer_sqr_avg-two-steps", layer_sqr_avg, {"betas": (0.9, 0.5)}, params=[[0.0, 0.0]] * 2,
         grads=[[[3.0, 4.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]],
         state={"layer_sqr_avg": [0.0, 4.0]},
         # first: 0 -> ||g||^2 = 25 and 0.5 * 4 + 0.5 * 2 = 3; then 0.5 * 25 + 0.5 * 1, 0.5 * 3 + 1
         expect={"state:layer_sqr_avg": [13.0, 2.5]}),
    Case("max_layer_sqr_avg", max_layer_sqr_avg, {"amsgrad": True}, params=[[0.0], [0.0]],
         grads=[[[0.0], [0.0]]],
         state={"layer_sqr_avg": [3.0, 1.0], "max_layer_sqr_avg": [2.0, 5.0]},
         expect={"state:max_layer_sqr_avg": [3.0, 5.0]}),
    Case("layer_normalize", layer_normalize, {"eps": EPS}, params=[[0.0, 0.0]],
         grads=[[[1.0, -2.0]]], state={"layer_sqr_avg": [4.0]},
         expect={"grads": [[1 / (2 + EPS), -2 / (2 + EPS)]]}),
    Case("layer_normalize-amsgrad", layer_normalize, {"eps": EPS}, params=[[0.0]],
         grads=[[[1.0]]], state={"layer_sqr_avg": [4.0], "max_layer_sqr_avg": [16.0]},
         expect={"grads": [[1 / (4 + EPS)]]}),
    # ---- stats: DiffGrad's friction
    Case("grad_friction", grad_friction, {"version": 0}, params=[[0.0, 0.0]],
         grads=[[[0.0, 0.0]]], state={"prev_grad": [[1.0, 0.0]], "grad_avg": [[2.0, 3.0]]},
         expect={"extras:grad_avg": [[2 * sigmoid(1.0), 3 * 0.5]], "state:prev_grad": [[0.0, 0.0]],
                 "state:grad_avg": [[2.0, 3.0]]}),
    Case("grad_friction-two-steps", grad_friction, {"version": 0}, params=[[0.0]],
         grads=[[[1.0]], [[1.0]]], state={"prev_grad": [[0.0]], "grad_avg": [[2.0]]},
         # step 1: sigmoid(|0 - 1|); step 2: the gradient did not change, sigmoid(0) = 0.5
         expect={"extras:grad_avg": [[1.0]], "state:prev_grad": [[1.0]]}),
    Case("grad_friction-signed", grad_friction, {"version": 1}, params=[[0.0]],
         grads=[[[3.0]]], state={"prev_grad": [[1.0]], "grad_avg": [[2.0]]},
         expect={"extras:grad_avg": [[2 / (1 + math.exp(2.0))]], "state:prev_grad": [[3.0]]}),
    # ---- stats: per-element step sizes
    Case("adam_step_sizes", adam_step_sizes, {"lr": 0.1, "betas": (0.9, 0.99), "eps": 0.01},
         params=[[0.0, 0.0]], grads=[[[0.0, 0.0]]], state={"step": [1], "sqr_avg": [[0.04, 0.0]]},
         # alpha = 0.1 * sqrt(1 - 0.99) / (1 - 0.9) = 0.1; eps on the uncorrected root
         expect={"extras:step_size": [[0.1 / (0.2 + 0.01), 0.1 / 0.01]]}),
    Case("bounded_step_sizes", bounded_step_sizes, {"beta3": 0.9}, params=[[0.0, 0.0]],
         grads=[[[0.0, 0.0]]], state={"step_size_avg": [[0.5, 0.0]]},
         extras={"step_size": [[1.0, 2.0]]},  # memory 0.45 + 0.1, 0 + 0.2; then the min
         expect={"state:step_size_avg": [[0.55, 0.2]], "extras:step_size": [[0.55, 0.2]]}),
    Case("blended_step_sizes", blended_step_sizes, {"len_memory": 4}, params=[[0.0]],
         grads=[[[0.0]]], state={"step_size_avg": [[0.4]]}, extras={"step_size": [[2.0]]},
         # beta3 = 1 - 1/4: memory 0.75 * 0.4 + 0.25 * 2 = 0.8; blend (2 + 0.8) / 2
         expect={"state:step_size_avg": [[0.8]], "extras:step_size": [[1.4]]}),
    # ---- steppers
    Case("sgd_step", sgd_step, {"lr": 0.1}, params=[[1.0, 2.0]], grads=[[[0.5, -1.0]]],
         expect={"params": [[0.95, 2.1]]}),
    Case("adam_step", adam_step, {"lr": 0.1, "betas": (0.9, 0.99), "eps": EPS},
         params=[[1.0, -2.0]], grads=[[[0.0, 0.0]]],
         state={"step": [2], "grad_avg": [[0.3, -0.1]], "sqr_avg": [[0.04, 0.09]]},
         expect={"params": [[1 - 0.1 / 0.19 * 0.3 / (math.sqrt(0.04 / 0.0199) + EPS),
                             -2 + 0.1 / 0.19 * 0.1 / (math.sqrt(0.09 / 0.0199) + EPS)]]}),
    Case("adam_step-amsgrad", adam_step, {"lr": 0.1, "betas": (0.9, 0.99), "eps": EPS},
         params=[[1.0]], grads=[[[0.0]]],
         state={"step": [2], "grad_avg": [[0.3]], "sqr_avg": [[0.04]], "max_sqr_avg": [[0.16]]},
         expect={"params": [[1 - 0.1 / 0.19 * 0.3 / (math.sqrt(0.16 / 0.0199) + EPS)]]}),
    Case("adam_step-damped-first-moment", adam_step, {"lr": 0.1, "betas": (0.9, 0.99), "eps": EPS},
         params=[[1.0]], grads=[[[0.0]]], extras={"grad_avg": [[0.15]]},
         state={"step": [2], "grad_avg": [[0.3]], "sqr_avg": [[0.04]]},
         expect={"params": [[1 - 0.1 / 0.19 * 0.15 / (math.sqrt(0.04 / 0.0199) + EPS)]]}),
    Case("adagrad_step", adagrad_step, {"lr": 0.1, "lr_decay": 0.5, "eps": 1e-10},
         params=[[1.0]], grads=[[[1.0]]], state={"step": [3], "sqr_sum": [[4.0]]},
         # lr_t = 0.1 / (1 + (3 - 1) * 0.5) = 0.05
         expect={"params": [[1 - 0.05 * 1 / (2 + 1e-10)]]}),
    Case("radam_step-sgd-below-threshold", radam_step, {"lr": 0.1, "betas": (0.9, 0.999)},
         params=[[1.0]], grads=[[[0.0]]],
         # rho_1 = 1999 - 2 * 0.999 / 0.001 = 1 <= 5: p - lr / (1 - 0.9) * m
         state={"step": [1], "grad_avg": [[0.02]], "sqr_avg": [[1.0]]},
         expect={"params": [[1 - 0.1 / 0.1 * 0.02]]}),
    Case("radam_step-no-sgd-below-threshold", radam_step,
         {"lr": 0.1, "betas": (0.9, 0.999), "degenerated_to_sgd": False}, params=[[1.0]],
         grads=[[[0.0]]], state={"step": [1], "grad_avg": [[0.02]], "sqr_avg": [[1.0]]},
         expect={"params": [[1.0]]}),
    Case("radam_step-rectified", radam_step, {"lr": 0.1, "betas": (0.9, 0.9), "eps": EPS},
         params=[[1.0]], grads=[[[0.0]]],
         state={"step": [10], "grad_avg": [[0.5]], "sqr_avg": [[0.25]]},
         expect={"params": [[1 - 0.1 * (lambda rho_inf, rho: math.sqrt(
             (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)))(
             19.0, 19 - 2 * 10 * 0.9**10 / (1 - 0.9**10))  # rho_10 = 8.29 > 5
             / (1 - 0.9**10) * 0.5 * math.sqrt(1 - 0.9**10) / (math.sqrt(0.25) + EPS)]]}),
    # (torch.optim.RAdam adds eps to the uncorrected root, as above)
    Case("qhadam_step", qhadam_step,
         {"lr": 0.1, "betas": (0.9, 0.99), "nus": (0.7, 0.5), "eps": EPS}, params=[[1.0]],
         grads=[[[2.0]]], state={"step": [1], "grad_avg": [[0.2]], "sqr_avg": [[0.0009]]},
         # (0.7 * 0.2 / 0.1 + 0.3 * 2) / (sqrt(0.5 * 0.0009 / 0.01 + 0.5 * 4) + eps)
         expect={"params": [[1 - 0.1 * 2.0 / (math.sqrt(0.045 + 2.0) + EPS)]]}),
    Case("per_element_step", per_element_step, {}, params=[[1.0, 1.0]], grads=[[[0.0, 0.0]]],
         state={"grad_avg": [[1.0, -3.0]]}, extras={"step_size": [[0.1, 0.2]]},
         expect={"params": [[0.9, 1.6]]}),
]


def run_case(case: Case) -> Bucket:
    params = [_tensor(v) for v in case.params]
    state = {name: [_state_tensor(name, v) for v in values] for name, values in case.state.items()}
    for call, grads in enumerate(case.grads):
        grads = [_tensor(g) for g in grads]
        before = [g.clone() for g in grads]
        bucket = Bucket(params, grads, state, dict(case.fresh) if call == 0 else {})
        bucket.extras.update({k: [_tensor(v) for v in vs] for k, vs in case.extras.items()})
        case.part(bucket, {**case.part.hypers, **case.hypers})
        for g, g0 in zip(grads, before, strict=True):
            assert torch.equal(g, g0), f"{case.part.name} wrote into the user's gradient"
    return bucket


def _actual(bucket: Bucket, key: str):
    where, _, name = key.partition(":")
    return {"params": lambda: bucket.params, "grads": lambda: bucket.grads,
            "state": lambda: bucket.state[name], "extras": lambda: bucket.extras[name]}[where]()


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
    assert not missing, f"parts without a closed-form case (tests/test_parts.py): {missing}"
    assert len(list(_exported_parts())) >= 20


def test_friction_keeps_a_copy_of_the_gradient():
    # zero_grad(set_to_none=False) + backward writes the next gradient into the same tensor:
    # an alias of it as prev_grad would make the change 0 and the friction a constant 0.5.
    grad = _tensor([1.0])
    state = {"prev_grad": [_tensor([0.0])], "grad_avg": [_tensor([2.0])]}
    grad_friction(Bucket([_tensor([0.0])], [grad], state, {}), {"version": 0})
    grad.copy_(_tensor([4.0]))
    bucket = Bucket([_tensor([0.0])], [grad], state, {})
    grad_friction(bucket, {"version": 0})
    torch.testing.assert_close(bucket.extras["grad_avg"][0], _tensor([2 * sigmoid(3.0)]))


def test_adam_with_friction_is_a_recipe_of_a_few_lines():
    from optimkit import Adam, Optimizer

    class FrictionAdam(Optimizer):
        parts = (*Adam.parts[:-1], grad_friction, adam_step)

    p = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([2.0, -0.5], dtype=torch.float64)
    FrictionAdam([p], lr=0.1).step()
    # step 1: m_hat = g, sqrt(v_hat) = |g|; the friction against prev_grad = 0 is sigmoid(|g|)
    expected = [
        1 - 0.1 * sigmoid(2.0) * 2.0 / (2.0 + EPS), -1 + 0.1 * sigmoid(0.5) * 0.5 / (0.5 + EPS)
    ]
    torch.testing.assert_close(p.detach(), _tensor(expected))


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
