"""Selective-Backprop: the paper's selection rule, buffering, counters and digits accuracy."""

from __future__ import annotations

import pytest
import torch

import optimkit
import optimkit.registry as registry
from optimkit import SelectiveBackprop


def _toy(n=64):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(n, 4), torch.randint(0, 3, (n,))
    return model, x, y


LOSS = torch.nn.CrossEntropyLoss(reduction="none")


def test_cdf_is_the_fraction_of_remembered_losses_at_or_below():
    model, _, _ = _toy()
    sb = SelectiveBackprop(model, LOSS, torch.optim.SGD(model.parameters(), lr=0.1), 8)
    sb._remember(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert sb.cdf(torch.tensor([0.5, 2.0, 3.5, 9.0])).tolist() == [0.0, 0.5, 0.75, 1.0]


def test_history_is_a_rolling_window():
    model, _, _ = _toy()
    sb = SelectiveBackprop(model, LOSS, torch.optim.SGD(model.parameters(), lr=0.1), 8,
                           history=4)
    sb._remember(torch.tensor([10.0, 20.0, 30.0]))
    sb._remember(torch.tensor([1.0, 2.0, 3.0]))  # pushes out 10 and 20
    assert sorted(sb._history[: sb._history_len].tolist()) == [1.0, 2.0, 3.0, 30.0]


def test_selection_probability_is_cdf_to_the_beta():
    model, _, _ = _toy()
    gen = torch.Generator().manual_seed(0)
    sb = SelectiveBackprop(model, LOSS, torch.optim.SGD(model.parameters(), lr=0.1), 8,
                           beta=2.0, history=1000, generator=gen)
    sb._remember(torch.arange(1000, dtype=torch.float32))
    losses = torch.tensor([99.0, 499.0, 899.0]).repeat(4000)  # CDF 0.1, 0.5, 0.9
    chosen = torch.zeros(len(losses))
    chosen[sb.choose(losses)] = 1
    rates = chosen.view(4000, 3).mean(0)
    assert rates.tolist() == pytest.approx([0.01, 0.25, 0.81], abs=0.025)


def test_topk_keeps_the_largest_losses():
    model, _, _ = _toy()
    sb = SelectiveBackprop(model, LOSS, torch.optim.SGD(model.parameters(), lr=0.1), 8,
                           rule="topk", keep_fraction=0.25)
    sb._remember(torch.ones(3))
    losses = torch.tensor([0.1, 5.0, 0.3, 0.2, 4.0, 0.0, 0.5, 0.4])
    assert sb.choose(losses).tolist() == [1, 4]


def test_buffer_fills_whole_backward_batches_and_counts():
    model, x, y = _toy(n=40)
    seen = []

    def train_step(inputs, targets):
        seen.append(len(inputs))
        losses = LOSS(model(inputs), targets)
        losses.mean().backward()
        return losses

    sb = SelectiveBackprop(model, LOSS, torch.optim.SGD(model.parameters(), lr=0.1), 6,
                           rule="topk", keep_fraction=0.5, train_step=train_step)
    for i in range(0, 40, 10):
        sb.step(x[i:i + 10], y[i:i + 10])  # 5 chosen per batch
    assert seen == [6, 6, 6]
    assert sb.examples_forwarded == 40 and sb.examples_backpropagated == 18
    assert sb.flush() and seen[-1] == 2 and not sb.flush()
    assert sb.examples_backpropagated == 20 and sb.backward_passes == 4
    assert sb.fraction_backpropagated == 0.5


def test_dict_batches_and_warmup():
    torch.manual_seed(0)

    class DictModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)

        def forward(self, batch):
            return self.a(batch["left"]) + self.b(batch["right"])

    model = DictModel()
    opt = optimkit.SGD(model.parameters(), lr=0.1)
    sb = SelectiveBackprop(model, LOSS, opt, 4, rule="topk", warmup_batches=1)
    batch = {"left": torch.randn(8, 2), "right": torch.randn(8, 2)}
    y = torch.randint(0, 3, (8,))
    sb.step(batch, y)  # warmup: a normal step on all 8
    assert sb.examples_backpropagated == 8 and sb.backward_passes == 1
    before = model.a.weight.detach().clone()
    sb.step(batch, y)  # 4 chosen: one backward pass
    assert sb.examples_backpropagated == 12 and not torch.equal(before, model.a.weight)


def test_mean_loss_function_is_refused_with_a_clear_message():
    model, x, y = _toy()
    sb = SelectiveBackprop(model, torch.nn.CrossEntropyLoss(),
                           torch.optim.SGD(model.parameters(), lr=0.1), 8)
    with pytest.raises(ValueError, match="reduction='none'"):
        sb.step(x, y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rule": "random"}, "rule"),
        ({"batch_size": 0}, "batch_size"),
        ({"beta": 0.0}, "beta"),
        ({"keep_fraction": 1.5}, "keep_fraction"),
        ({"history": 0}, "history"),
        ({"warmup_batches": -1}, "warmup_batches"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    model, _, _ = _toy()
    args = {"batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        SelectiveBackprop(model, LOSS, torch.optim.SGD(model.parameters(), lr=0.1), **args)


def test_state_dict_round_trip():
    model, x, y = _toy()
    sb = SelectiveBackprop(model, LOSS, torch.optim.SGD(model.parameters(), lr=0.1), 8)
    sb.step(x, y)
    other = SelectiveBackprop(model, LOSS, torch.optim.SGD(model.parameters(), lr=0.1), 8)
    other.load_state_dict(sb.state_dict())
    probe = torch.linspace(0, 3, 7)
    assert torch.equal(other.cdf(probe), sb.cdf(probe))
    assert other.examples_forwarded == sb.examples_forwarded == 64


# ---------------------------------------------------------------- digits
def _digits():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]


def _fit(selective, epochs=12, batch=64):
    x, y, x_test, y_test = _digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = optimkit.Adam(model.parameters(), lr=3e-3)
    sb = SelectiveBackprop(model, LOSS, opt, batch, beta=1.0,
                           generator=torch.Generator().manual_seed(1))
    order = torch.Generator().manual_seed(2)
    backpropagated = 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            if selective:
                sb.step(x[idx], y[idx])
            else:
                LOSS(model(x[idx]), y[idx]).mean().backward()
                opt.step()
                opt.zero_grad()
                backpropagated += len(idx)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return accuracy, (sb.examples_backpropagated if selective else backpropagated)


def test_digits_same_accuracy_with_clearly_fewer_backpropagated_examples():
    standard_accuracy, standard_count = _fit(selective=False)
    selective_accuracy, selective_count = _fit(selective=True)
    assert standard_accuracy > 0.93  # the task is learnt
    assert selective_accuracy >= standard_accuracy - 0.015
    assert selective_count <= 0.6 * standard_count


@pytest.mark.parametrize(
    "make",
    [lambda p, n=name: registry.create(n, p) for name in registry.available()]
    + [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.Adam(p)],
    ids=registry.available() + ["torch-sgd", "torch-adam"],
)
def test_works_with_every_optimizer(make):
    model, x, y = _toy(n=96)
    before = [p.detach().clone() for p in model.parameters()]
    sb = SelectiveBackprop(model, LOSS, make(model.parameters()), 16, beta=1.0)
    for i in range(0, 96, 32):
        sb.step(x[i:i + 32], y[i:i + 32])
    sb.flush()
    assert sb.backward_passes >= 1 and 0 < sb.examples_backpropagated < 96
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
