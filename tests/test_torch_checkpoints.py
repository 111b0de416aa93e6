"""torch.optim checkpoints, both ways, for the optimizers that reproduce a torch.optim class.

torch -> optimkit: ``optimkit_opt.load_state_dict(torch_opt.state_dict())``; the groups torch
saved get optimkit's own hyper-parameters from the defaults, and a torch setting that
optimkit does not implement (``maximize``, ``differentiable``) is refused by name, while the
ones that do not change the update (``foreach``, ``fused``, ``capturable``) are accepted.
optimkit -> torch: ``torch_opt.load_state_dict(optimkit_opt.torch_state_dict())``.
Either way, continuing equals continuing in the other library.
"""

from __future__ import annotations

import io

import pytest
import torch
from helpers import clone_params, make_params, run

import optimkit

# name -> (torch class, optimkit class, keywords both take)
PAIRS = {
    "sgd": (torch.optim.SGD, optimkit.SGD,
            dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd-nesterov": (torch.optim.SGD, optimkit.SGD,
                     dict(lr=0.05, momentum=0.9, nesterov=True)),
    "rmsprop": (torch.optim.RMSprop, optimkit.RMSprop,
                dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=0.1)),
    "adagrad": (torch.optim.Adagrad, optimkit.Adagrad,
                dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1)),
    "adam": (torch.optim.Adam, optimkit.Adam, dict(lr=1e-2, weight_decay=0.1)),
    "adamw": (torch.optim.AdamW, optimkit.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "amsgrad": (torch.optim.Adam, optimkit.AMSGrad, dict(lr=1e-2, amsgrad=True)),
    "radam": (torch.optim.RAdam, optimkit.RAdam, dict(lr=1e-2, weight_decay=0.1)),
    "radam-decoupled": (torch.optim.RAdam, optimkit.RAdam,
                        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    # mu_product: torch's load casts it to the param's dtype, optimkit keeps it float32 on the CPU
    "nadamw": (torch.optim.NAdam, optimkit.NAdamW,
               dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    "nadam": (torch.optim.NAdam, optimkit.NAdam, dict(lr=1e-2, weight_decay=0.1)),
    # torch keeps row_var/col_var or variance per param; optimkit all three, the unused empty
    "adafactor": (torch.optim.Adafactor, optimkit.Adafactor,
                  dict(lr=0.05, weight_decay=0.1, d=2.0, beta2_decay=-0.5)),
}
# torch.optim.NAdam's load_state_dict casts mu_product to the param's dtype (float64 here)
# while a fresh NAdam keeps it in float32: after any load, torch's own included, it rounds the
# product differently from then on (relative 1e-11 after 10 steps).
LOADED_BY_TORCH_TOLERANCE = {"nadamw": (1e-9, 1e-11), "nadam": (1e-9, 1e-11)}

def _roundtrip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _same_values(dst, src):
    with torch.no_grad():
        for d, s in zip(dst, src, strict=True):
            d.copy_(s)


def _assert_close(xs, ys, rtol=1e-12, atol=1e-14):
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m, i=i: f"{i}: {m}")


@pytest.mark.parametrize("name", list(PAIRS))
def test_a_torch_checkpoint_continues_in_optimkit_as_in_torch(name):
    torch_cls, ours_cls, kwargs = PAIRS[name]
    start = make_params(torch.float64)
    theirs_params, ours_params = clone_params(start), clone_params(start)
    theirs = torch_cls(theirs_params, foreach=True, **kwargs)  # foreach: accepted, same math
    run(theirs, theirs_params, 5)
    _same_values(ours_params, theirs_params)
    ours = ours_cls(ours_params)  # built with defaults: everything comes from the checkpoint
    ours.load_state_dict(_roundtrip(theirs.state_dict()))
    run(theirs, theirs_params, 10, start=5)
    run(ours, ours_params, 10, start=5)
    _assert_close(ours_params, theirs_params)


@pytest.mark.parametrize("name", list(PAIRS))
def test_an_optimkit_checkpoint_continues_in_torch_as_in_optimkit(name):
    torch_cls, ours_cls, kwargs = PAIRS[name]
    start = make_params(torch.float64)
    theirs_params, ours_params = clone_params(start), clone_params(start)
    ours = ours_cls(ours_params, **kwargs)
    run(ours, ours_params, 5)
    _same_values(theirs_params, ours_params)
    theirs = torch_cls(theirs_params)
    theirs.load_state_dict(_roundtrip(ours.torch_state_dict()))
    run(theirs, theirs_params, 10, start=5)
    run(ours, ours_params, 10, start=5)
    _assert_close(ours_params, theirs_params, *LOADED_BY_TORCH_TOLERANCE.get(name, ()))
    native_params = clone_params(start)
    native = run(torch_cls(native_params, **kwargs), native_params, 15)
    for p, q in zip(native_params, theirs_params, strict=True):
        assert set(theirs.state[q]) == set(native.state[p]), "torch's state names expected"


@pytest.mark.parametrize("name", list(PAIRS))
def test_torch_maximize_is_refused_by_name(name):
    torch_cls, ours_cls, kwargs = PAIRS[name]
    params = clone_params(make_params(torch.float64))
    theirs = torch_cls(params, maximize=True, **kwargs)
    run(theirs, params, 2)
    ours = ours_cls(clone_params(params))
    with pytest.raises(ValueError, match="maximize"):
        ours.load_state_dict(theirs.state_dict())


def test_torch_differentiable_is_refused_by_name():
    params = clone_params(make_params(torch.float64))
    sd = torch.optim.Adam(params).state_dict()
    sd["param_groups"][0]["differentiable"] = True
    with pytest.raises(ValueError, match="differentiable"):
        optimkit.Adam(clone_params(params)).load_state_dict(sd)


def test_torch_settings_that_keep_the_math_are_accepted():
    # fused and capturable change how torch runs the step, not what it computes
    start = make_params(torch.float64)
    theirs_params, ours_params = clone_params(start), clone_params(start)
    theirs = torch.optim.Adam(theirs_params, lr=1e-2)
    run(theirs, theirs_params, 3)
    _same_values(ours_params, theirs_params)
    sd = _roundtrip(theirs.state_dict())
    sd["param_groups"][0].update(fused=True, capturable=True)
    ours = optimkit.Adam(ours_params)
    ours.load_state_dict(sd)
    run(theirs, theirs_params, 5, start=3)
    run(ours, ours_params, 5, start=3)
    _assert_close(ours_params, theirs_params)
    assert all(ours.state[p]["step"].device.type == "cpu" for p in ours_params)
