"""A recipe is checked when its class is created: each bad recipe fails with a TypeError that
names the part, before any optimizer is built."""

from __future__ import annotations

import pytest
import torch

import optimkit
from optimkit import Optimizer, stat, stats, stepper, steppers, zeros
from optimkit.core.rules import nonnegative


def _define(*parts, **hypers):
    return type("Recipe", (Optimizer,), {"parts": parts, "hypers": hypers})


def test_a_read_that_no_earlier_part_provides():
    # per_element_step applies step sizes that adam_step_sizes would provide
    with pytest.raises(TypeError, match="per_element_step reads 'step_size'"):
        _define(stats.step_stat, stats.average_grad, steppers.per_element_step)


def test_a_read_provided_only_by_a_later_part():
    with pytest.raises(TypeError, match="adam_step reads 'second_moment'"):
        _define(stats.step_stat, stats.average_grad, steppers.adam_step, stats.average_sqr_grad)


def test_two_writers_of_one_state():
    @stat(state={"sqr_avg": zeros}, provides=("second_moment",), betas=(0.9, 0.999))
    def my_sqr_avg(b, betas):
        b.second_moment = b.state["sqr_avg"]

    with pytest.raises(TypeError, match="average_sqr_grad and my_sqr_avg both write state"):
        _define(stats.average_sqr_grad, my_sqr_avg)


def test_a_declared_override_is_allowed():
    @stat(state={"sqr_avg": zeros}, provides=("second_moment",),
          overrides=("sqr_avg", "second_moment"))
    def reset_sqr_avg(b):
        torch._foreach_zero_(b.state["sqr_avg"])
        b.second_moment = b.state["sqr_avg"]

    _define(stats.step_stat, stats.average_grad, stats.average_sqr_grad, reset_sqr_avg,
            steppers.adam_step)


def test_two_providers_of_one_field():
    @stat(provides=("second_moment",))
    def ones(b):
        b.second_moment = [torch.ones_like(p) for p in b.params]

    with pytest.raises(TypeError, match="average_sqr_grad and ones both provide 'second_moment'"):
        _define(stats.average_sqr_grad, ones)


def test_a_part_reading_an_undeclared_hyper():
    @stat()
    def scaled(b, scale):
        b.update = torch._foreach_mul(b.update, scale)

    with pytest.raises(TypeError, match="scaled reads hyper-parameter 'scale'"):
        _define(scaled, steppers.sgd_step)


def test_a_declared_hyper_the_function_does_not_take():
    @stat(scale=2.0)
    def forgetful(b):
        pass

    with pytest.raises(TypeError, match="forgetful declares hyper-parameter 'scale'"):
        _define(forgetful, steppers.sgd_step)


def test_changing_the_gradient_after_the_update_was_provided():
    with pytest.raises(TypeError, match="weight_decay changes the gradient after momentum"):
        _define(stats.momentum, stats.weight_decay, steppers.sgd_step)


def test_a_part_run_every_k_steps_comes_last():
    with pytest.raises(TypeError, match="lookahead .* must come last"):
        _define(stats.step_stat, steppers.lookahead, steppers.sgd_step)


def test_a_gate_needs_a_default():
    with pytest.raises(TypeError, match="amsgrad"):
        _define(stats.step_stat, stats.average_grad, stats.average_sqr_grad,
                stats.max_sqr_avg.only_if("amsgrad"), steppers.adam_step)
    _define(stats.step_stat, stats.average_grad, stats.average_sqr_grad,
            stats.max_sqr_avg.only_if("amsgrad"), steppers.adam_step, amsgrad=False)


def test_providing_something_that_is_not_a_field():
    with pytest.raises(ValueError, match="not per-step fields"):
        stat(provides=("grad_avg",))(lambda b: None)


def test_the_parts_rules_check_every_param_group():
    @stepper(reads=("update",), rules=dict(lr=nonnegative, scale=nonnegative), lr=0.1, scale=1.0)
    def scaled_step(b, lr, scale):
        torch._foreach_add_(b.params, b.update, alpha=-lr * scale)

    recipe = _define(scaled_step)
    with pytest.raises(ValueError, match="scale"):
        recipe([torch.zeros(2, requires_grad=True)], scale=-1.0)
    opt = recipe([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="scale"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "scale": -2.0})


def test_a_second_moment_under_its_own_name_reuses_adam_step():
    # AdaBelief (Zhuang et al. 2020): s = beta2 s + (1 - beta2) (g - m)**2, Adam's step with s.
    @stat(state={"belief": zeros}, reads=("first_moment",), provides=("second_moment",),
          betas=(0.9, 0.999))
    def belief(b, betas):
        surprise = torch._foreach_sub(b.grads, b.first_moment)
        torch._foreach_mul_(b.state["belief"], betas[1])
        torch._foreach_addcmul_(b.state["belief"], surprise, surprise, value=1 - betas[1])
        b.second_moment = b.state["belief"]

    AdaBelief = _define(stats.step_stat, stats.average_grad, belief, steppers.adam_step)
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([2.0], dtype=torch.float64)
    opt = AdaBelief([p], lr=0.1, eps=0.0)
    opt.step()
    # m = 0.2, s = 0.001 * (2 - 0.2)**2; p = 1 - 0.1 * (m / 0.1) / sqrt(s / 0.001) = 1 - 0.2 / 1.8
    torch.testing.assert_close(p.detach(), torch.tensor([1 - 0.2 / 1.8], dtype=torch.float64))
    assert set(opt.state[p]) == {"step", "grad_avg", "belief"}


def test_every_recipe_is_checked():
    for name in optimkit.available():
        assert optimkit.create(name, [torch.zeros(1, requires_grad=True)]).recipe is not None


def test_a_subclass_with_new_defaults_keeps_the_recipe():
    class WarmAdam(optimkit.Adam):
        hypers = dict(lr=3e-2)

    assert WarmAdam.hypers == {**optimkit.Adam.hypers, "lr": 3e-2}
    assert WarmAdam.recipe.parts == optimkit.Adam.recipe.parts
    opt = WarmAdam([torch.zeros(2, requires_grad=True)])
    assert opt.param_groups[0]["lr"] == 3e-2 and opt.param_groups[0]["eps"] == 1e-8


def test_a_scheduled_part_provides_no_field_and_names_its_hyper():
    # a part that runs on the due tensors only (due=, Kron's fit) cannot provide a field the
    # later parts would then miss on the others, and its schedule is a declared hyper
    def every_other(value, t):
        return t % 2 == 0

    with pytest.raises(ValueError, match="due= is for a part .* that provides no field"):
        @stat(provides=("update",), due=("often", every_other), often=1)
        def my_fit(b):
            b.update = b.grads

    with pytest.raises(ValueError, match="due='often' names no declared hyper"):
        @stat(due=("often", every_other))
        def my_other_fit(b):
            pass
