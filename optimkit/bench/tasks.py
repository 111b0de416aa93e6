"""The benchmark's tasks.

* ``stdlib-lm-1x`` and ``stdlib-lm-8x``: a small decoder-only transformer trained on the Python
  standard library's own source files (:mod:`.lm`) on about 1x and 8x its parameter count in
  bytes; test bits per byte (``stdlib-lm``: the earlier, wider LM on a fixed 300 steps);
* ``digits-convnet``: a 3-layer 2-D CNN on scikit-learn's digits; test accuracy;
* ``mnist1d-cnn``: a 1-D CNN on a procedurally generated MNIST-1D-style data set
  (:mod:`.mnist1d`, after Greydanus 2020); test accuracy;
* ``mnist1d-autoencoder``: a deep tanh autoencoder of the same signals; test MSE.
* the small tasks of the ``quick`` preset: scikit-learn's digits (MLP, CNN) and diabetes data,
  and a character-level GRU on the Zen of Python;
* three 2-D toys (Rosenbrock, Beale, Rastrigin), ``illustrative``: they draw pictures and never
  rank optimizers.

Every task is local (no download). ``get(name)`` returns a :class:`Task`; ``task.build(seed)``
returns an :class:`Instance` with ``.model``, ``.loss_fn(outputs, targets)``, ``.batches()`` (one
seeded training epoch of ``(inputs, targets)``), ``.steps_per_epoch`` and ``.evaluate(split)``
(the metric on ``"val"`` or ``"test"``). That is all an LR-finder sweep needs too::

    instance = tasks.get("stdlib-lm").build(seed=0)
    lr_find(optimizer, model=instance.model, loss_fn=instance.loss_fn, batches=...)

The data split is fixed (the same for every seed); the seed drives the initial weights, the
batch order and, for the 2-D functions, a small jitter of the starting point. Each task states
its metric, whether higher is better, the value that counts as reached and the tolerance of
its lr-sensitivity measure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import io
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

Batch = tuple[Tensor | None, Tensor | None]

# stdlib-lm: model size, context, batch, and how many windows score the held-out text.
LM_DIM, LM_LAYERS, LM_HEADS, LM_CONTEXT, LM_BATCH = 48, 2, 4, 48, 16
LM_STEPS_PER_EPOCH = 50
LM_EVAL_WINDOWS = (96, 384)  # (validation, test)
MNIST1D_CHANNELS, MNIST1D_BATCH = 24, 64
# stdlib-lm-1x / -8x: one model at two token budgets, about 1x and 8x its parameter count in
# training tokens (Chinchilla-style budgets, far below the 20x compute-optimal point). Sized
# by the standard preset's time budget: a run costs about params x tokens, so 8x the params in
# tokens makes it grow with the square of the model; at d=128, 4 blocks and 4,096 tokens a
# step (0.88M params) one 8x run takes 11 CPU minutes, at this size (43,136 params, 512
# tokens a step) 5 s (docs/guides/bench.md).
LM_WIDE = {"dim": 32, "layers": 2, "heads": 4, "context": 32, "batch": 16}
LM_BUDGETS = {"1x": 1, "8x": 8}  # tokens = multiple x params, spread over 8 epochs (evaluations)
DIGITS_CONV = (16, 32)  # the conv net's channels


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark task: what is trained, how it is scored and what counts as reached.

    The task protocol (what :func:`register` accepts; the built-in tasks follow it too):

    * ``name``: letters, digits, ``.``, ``_``, ``-`` (it names files and report sections);
      ``description``: one line for the report;
    * ``metric`` (e.g. ``"test MSE"``) and ``higher_is_better``: the direction the ranking
      uses (an accuracy: ``True``; a loss or error: ``False``);
    * ``target``: the validation value that counts as reached (the report's "to target");
      ``tolerance``: the absolute margin, in the metric's unit, within which an lr counts as
      as good as the best one (the lr-sensitivity measure; 0.01 by default);
    * ``chance`` (optional): the level of a model that has learnt nothing (guessing, or the
      untrained model), e.g. 0.1 for a 10-class accuracy: a test run that ends worse than it
      counts as failed (ranked last, never tied with the best), like a diverged one;
    * ``bounds`` (optional): the metric's range ``(low, high)``, None for an open side (an
      accuracy: ``(0.0, 1.0)``; a loss: ``(0.0, None)``): intervals are clipped to it;
    * ``epochs``: calls of ``Instance.batches()`` per run; the lr schedule (warm-up + cosine)
      spans ``epochs * Instance.steps_per_epoch`` optimizer steps;
    * ``builder(seed, device) -> Instance``: a fresh model, its data and its scoring. The
      seed must drive everything random about a run (initial weights, batch order): the same
      seed gives the same numbers. The data split must not depend on it, and the test split
      must never be used for training or for ``evaluate("val")``. Tuning runs use seeds
      ``seed_start, seed_start+1`` (validation split), the scored runs the next ``--seeds``
      seeds (test split, read once at the end);
    * ``requires``: modules the builder imports that may be missing (e.g. ``("sklearn",)``):
      checked before a run starts, so a missing package is one error, not failed cells;
    * ``family`` (optional): the kind of workload (``"transformer LM"``, ``"conv net"``); the
      report's "what to pick" groups the tasks of a family (default: the task's own name).

    Cost: every run trains from scratch on one CPU thread; a (task, optimizer) pair takes
    about ``(lrs tried + weight decays) * tuning seeds + seeds`` runs (some 20 to 60 with the
    presets), so keep one run to seconds. A builder that raises stops the whole run (it is
    never an optimizer's failure), and so does an ``ImportError``, ``OSError`` or
    ``MemoryError`` anywhere in a run (a missing package or data file); any other exception
    during training is recorded as that optimizer's failure (ranked last on the task).
    """

    name: str
    description: str
    metric: str
    target: float
    higher_is_better: bool
    epochs: int
    builder: Callable[[int, str], Instance]
    illustrative: bool = False
    # lr sensitivity: an lr counts as "as good" when its validation result is within this
    # (absolute, in the metric's unit) of the best lr's.
    tolerance: float = 0.01
    info: Callable[[], dict] | None = None  # facts about the data that the report records
    requires: tuple[str, ...] = ()  # modules the builder imports, checked before a run starts
    chance: float | None = None  # a test result worse than this has learnt nothing: failed
    bounds: tuple[float | None, float | None] = (None, None)  # the metric's range
    # The kind of workload it stands for ("transformer LM", "conv net"...): the report's "what
    # to pick" summarises the tasks of one family together ("": the task is its own family).
    family: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or \
                self.name == "cost":
            raise ValueError(f"task name must be 1 to 64 letters, digits, '.', '_' or '-' (not "
                             f"'cost'), got {self.name!r}")
        for field in ("description", "metric", "family"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"task {self.name}: {field} must be a str")
        for field in ("higher_is_better", "illustrative"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"task {self.name}: {field} must be True or False")
        for field in ("target", "tolerance"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or (field == "tolerance" and value < 0):
                raise ValueError(f"task {self.name}: {field} must be a finite number"
                                 f"{' >= 0' if field == 'tolerance' else ''}, got {value!r}")
        if self.chance is not None and (isinstance(self.chance, bool) or not isinstance(
                self.chance, (int, float)) or not math.isfinite(self.chance)):
            raise ValueError(f"task {self.name}: chance must be None or a finite number, "
                             f"got {self.chance!r}")
        if not isinstance(self.bounds, tuple) or len(self.bounds) != 2 or any(
                b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))
                                   or not math.isfinite(b)) for b in self.bounds) or (
                None not in self.bounds and self.bounds[0] >= self.bounds[1]):
            raise ValueError(f"task {self.name}: bounds must be (low, high) with None for an "
                             f"open side and low < high, got {self.bounds!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or \
                not 1 <= self.epochs <= 10_000:
            raise ValueError(f"task {self.name}: epochs must be an int from 1 to 10000, "
                             f"got {self.epochs!r}")
        if not callable(self.builder):
            raise ValueError(f"task {self.name}: builder must be callable(seed, device)")
        if isinstance(self.requires, str) or not all(isinstance(m, str) for m in self.requires):
            raise ValueError(f"task {self.name}: requires must be a tuple of module names")

    def build(self, seed: int, device: str = "cpu") -> Instance:
        """A fresh, seeded instance of the task (model, data, loss) on ``device``."""
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        return self.builder(seed, device)

    def reached(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value >= self.target if self.higher_is_better else value <= self.target

    def worse(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly worse than ``b`` (NaN is worse than anything)."""
        if math.isnan(a):
            return not math.isnan(b)
        if math.isnan(b):
            return False
        return a < b if self.higher_is_better else a > b

    def meta(self) -> dict:
        return {
            "name": self.name, "description": self.description, "metric": self.metric,
            "target": self.target, "higher_is_better": self.higher_is_better,
            "epochs": self.epochs, "illustrative": self.illustrative,
            "tolerance": self.tolerance, "chance": self.chance, "bounds": list(self.bounds),
            "family": self.family or self.name,
            **({"data": self.info()} if self.info else {}),
        }


@dataclasses.dataclass
class Instance:
    """A built task: the model to train and everything needed to train and score it.

    * ``model``: an ``nn.Module`` on the requested device; every parameter with
      ``requires_grad`` is handed to the optimizer;
    * ``loss_fn(model(inputs), targets)``: a scalar tensor to minimise;
    * ``batches()``: one training epoch of ``(inputs, targets)``, in a seeded order (each
      call may shuffle anew, from a generator seeded by the run's seed);
    * ``evaluate(split)``: the metric (a float) on ``"val"`` or ``"test"``, without training
      (use ``torch.no_grad()`` and eval mode);
    * ``steps_per_epoch``: how many batches one ``batches()`` call yields.
    """

    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    batches: Callable[[], Iterator[Batch]]
    evaluate: Callable[..., float]
    steps_per_epoch: int = 0  # optimizer steps in one call of ``batches()``


# ------------------------------------------------------------------------- data helpers
def _split(n: int, val: float = 0.15, test: float = 0.15) -> tuple[Tensor, Tensor, Tensor]:
    # Fixed permutation: the split never depends on the run's seed.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(12345))
    n_val, n_test = int(n * val), int(n * test)
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def _standardise(x: Tensor, train: Tensor) -> Tensor:
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    return (x - mean) / std


def _batcher(x: Tensor, y: Tensor, batch_size: int, seed: int):
    """Seeded epochs: each call shuffles with the next draw of the seed's generator."""
    gen = torch.Generator().manual_seed(seed)

    def batches() -> Iterator[Batch]:
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]

    return batches


def _evaluator(model: nn.Module, held_out: dict, score: Callable[[Tensor], float]):
    """``evaluate(split)``: ``score(held_out[split])`` in eval mode, without gradients."""

    @torch.no_grad()
    def evaluate(split_name: str = "test") -> float:
        if split_name not in held_out:
            raise ValueError(f"split must be 'val' or 'test', got {split_name!r}")
        was_training = model.training
        model.eval()
        value = score(held_out[split_name])
        model.train(was_training)
        return value

    return evaluate


def _supervised(model, loss_fn, score, x, y, split, batch_size, seed, device) -> Instance:
    train, val, test = split
    x, y = x.to(device), y.to(device)
    model = model.to(device)
    held_out = {"val": val.to(device), "test": test.to(device)}
    evaluate = _evaluator(model, held_out, lambda idx: float(score(model(x[idx]), y[idx])))

    return Instance(model, loss_fn, _batcher(x[train.to(device)], y[train.to(device)],
                                             batch_size, seed), evaluate,
                    steps_per_epoch=math.ceil(len(train) / batch_size))


def _accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs.argmax(-1) == targets).float().mean()


def _r2(outputs: Tensor, targets: Tensor) -> Tensor:
    residual = ((outputs.squeeze(-1) - targets) ** 2).sum()
    total = ((targets - targets.mean()) ** 2).sum()
    return 1 - residual / total


# ------------------------------------------------------------------------- real tasks
def _digits():
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    return x, y, _split(len(x))


def _digits_mlp(seed: int, device: str) -> Instance:
    x, y, split = _digits()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return _supervised(model, nn.functional.cross_entropy, _accuracy, x, y, split, 64, seed, device)


def _digits_cnn(seed: int, device: str) -> Instance:
    x, y, split = _digits()
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
    )
    return _supervised(model, nn.functional.cross_entropy, _accuracy, x, y, split, 64, seed, device)


def _diabetes_mlp(seed: int, device: str) -> Instance:
    from sklearn.datasets import load_diabetes  # bundled with scikit-learn, no download

    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32)
    split = _split(len(x))
    x = _standardise(x, split[0])
    y = (y - y[split[0]].mean()) / y[split[0]].std()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))
    loss = lambda out, target: nn.functional.mse_loss(out.squeeze(-1), target)
    return _supervised(model, loss, _r2, x, y, split, 32, seed, device)


def zen_corpus() -> str:
    """The Zen of Python (stdlib ``this``), then the docstrings of builtin types and their methods.

    Both ship with every CPython; builtin docstrings live in C, so ``python -OO`` keeps them.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # importing ``this`` prints the Zen
        import this
    zen = "".join(this.d.get(c, c) for c in this.s)
    docs = []
    for kind in (str, list, dict, set, tuple, int, float, bytes):
        docs.append(kind.__doc__ or "")
        docs += [m.__doc__ or "" for n, m in sorted(vars(kind).items()) if not n.startswith("_")]
    return "\n\n".join([zen, *docs])


class CharGRU(nn.Module):
    """Embedding -> one GRU layer -> linear read-out of the next character."""

    def __init__(self, vocab: int, embed: int = 16, hidden: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        out, _ = self.gru(self.embed(tokens))
        return self.head(out)


def _zen_char(seed: int, device: str, length: int = 16) -> Instance:
    text = zen_corpus()
    vocab = sorted(set(text))
    codes = torch.tensor([vocab.index(c) for c in text], dtype=torch.long)
    windows = codes[: len(codes) // (length + 1) * (length + 1)].view(-1, length + 1)
    x, y = windows[:, :-1], windows[:, 1:]
    n = len(windows)
    # Contiguous blocks: the held-out text was never seen, not even as a neighbour window.
    n_val = n_test = max(1, n // 10)
    split = (torch.arange(0, n - n_val - n_test), torch.arange(n - n_val - n_test, n - n_test),
             torch.arange(n - n_test, n))
    torch.manual_seed(seed)
    model = CharGRU(len(vocab))

    def loss(out: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))

    bits = lambda out, target: loss(out, target) / math.log(2)
    return _supervised(model, loss, bits, x, y, split, 64, seed, device)


# ------------------------------------------------------------------------- standard tasks
def mnist1d_cnn(channels: int = MNIST1D_CHANNELS) -> nn.Module:
    """Three 1-D convolutions (the second and third with stride 2), then a linear read-out."""
    return nn.Sequential(
        nn.Unflatten(1, (1, -1)),
        nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(channels * 10, 10),
    )


def mnist1d_autoencoder() -> nn.Module:
    """A deep tanh autoencoder 40-64-32-8-32-64-40 (the classic hard case for plain SGD)."""
    sizes = (40, 64, 32, 8, 32, 64, 40)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _mnist1d_cnn(seed: int, device: str) -> Instance:
    from . import mnist1d

    x, y, split = mnist1d.dataset()
    torch.manual_seed(seed)
    return _supervised(mnist1d_cnn(), nn.functional.cross_entropy, _accuracy, x, y, split,
                       MNIST1D_BATCH, seed, device)


def _mnist1d_autoencoder(seed: int, device: str) -> Instance:
    from . import mnist1d

    x, _, split = mnist1d.dataset()
    torch.manual_seed(seed)
    mse = nn.functional.mse_loss
    return _supervised(mnist1d_autoencoder(), mse, mse, x, x, split, MNIST1D_BATCH, seed, device)


def _lm_info() -> dict:
    from . import lm

    return lm.corpus_info()


def _lm_instance(seed: int, device: str, dim: int, layers: int, heads: int, context: int,
                 batch: int, steps_per_epoch: int) -> Instance:
    """A seeded TinyGPT on the stdlib corpus: random training windows, fixed held-out ones."""
    from . import lm

    text = lm.corpus()
    train = text["train"].to(device)
    held_out = {name: lm.eval_windows(text[name], count, context).to(device)
                for name, count in (("val", LM_EVAL_WINDOWS[0]), ("test", LM_EVAL_WINDOWS[1]))}
    torch.manual_seed(seed)
    model = lm.TinyGPT(dim, layers, heads, context).to(device)
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(context + 1, device=device)

    def batches() -> Iterator[Batch]:
        for _ in range(steps_per_epoch):
            starts = torch.randint(0, len(train) - context - 1, (batch, 1), generator=gen)
            window = train[starts.to(device) + offsets]
            yield window[:, :-1], window[:, 1:]

    def bits(windows: Tensor) -> float:
        total = 0.0
        for chunk in windows.split(64):
            total += float(lm.lm_loss(model(chunk[:, :-1]), chunk[:, 1:])) * len(chunk)
        return total / len(windows) / math.log(2)

    evaluate = _evaluator(model, held_out, bits)

    return Instance(model, lm.lm_loss, batches, evaluate, steps_per_epoch=steps_per_epoch)


def _stdlib_lm(seed: int, device: str) -> Instance:
    return _lm_instance(seed, device, LM_DIM, LM_LAYERS, LM_HEADS, LM_CONTEXT, LM_BATCH,
                        LM_STEPS_PER_EPOCH)


def lm_budget_steps(multiple: float, epochs: int = 8) -> int:
    """Steps per epoch of ``stdlib-lm-<multiple>x``: ``epochs`` epochs of ``batch x context``
    tokens hold about ``multiple`` x the LM_WIDE model's parameter count (43,136) in tokens."""
    from . import lm

    shape = {k: v for k, v in LM_WIDE.items() if k != "batch"}
    params = sum(p.numel() for p in lm.TinyGPT(**shape).parameters())
    return max(1, round(multiple * params / (LM_WIDE["batch"] * LM_WIDE["context"] * epochs)))


def _stdlib_lm_budget(multiple: int):
    """The builder of the LM_WIDE model trained on ``multiple`` x its params in tokens: 8
    epochs (evaluations) whose length sets the budget."""
    def build(seed: int, device: str) -> Instance:
        return _lm_instance(seed, device, **LM_WIDE, steps_per_epoch=lm_budget_steps(multiple))

    return build


def digits_convnet(channels: tuple[int, int] = DIGITS_CONV) -> nn.Module:
    """Three 3x3 convolutions (4-D filters, e.g. what Muon orthogonalises), two max-pools,
    then a linear read-out, for 8x8 images."""
    a, b = channels
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, a, 3, padding=1), nn.ReLU(),
        nn.Conv2d(a, a, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(b * 2 * 2, 10),
    )


def _digits_convnet(seed: int, device: str) -> Instance:
    x, y, split = _digits()
    torch.manual_seed(seed)
    return _supervised(digits_convnet(), nn.functional.cross_entropy, _accuracy, x, y, split,
                       64, seed, device)


# ------------------------------------------------------------------------- 2-D functions
def rosenbrock(xy: Tensor) -> Tensor:
    """Rosenbrock's function, minimum 0 at (1, 1)."""
    x, y = xy[0], xy[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(xy: Tensor) -> Tensor:
    """Beale's function, minimum 0 at (3, 0.5)."""
    x, y = xy[0], xy[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def rastrigin(xy: Tensor) -> Tensor:
    """Rastrigin's function in 2-D, minimum 0 at the origin, many local minima."""
    return 20 + (xy**2 - 10 * torch.cos(2 * math.pi * xy)).sum(0)


class Point(nn.Module):
    """A 2-D point; its 'forward' is the function's value there."""

    def __init__(self, fn: Callable[[Tensor], Tensor], start: Tensor):
        super().__init__()
        self.fn = fn
        self.xy = nn.Parameter(start.clone())

    def forward(self, _inputs: object = None) -> Tensor:
        return self.fn(self.xy)


@dataclasses.dataclass(frozen=True)
class Surface:
    """A 2-D test function with its start, minimum and the window the pictures show."""

    fn: Callable[[Tensor], Tensor]
    start: tuple[float, float]
    minimum: tuple[float, float]
    window: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax


SURFACES = {
    "rosenbrock": Surface(rosenbrock, (-1.5, 2.0), (1.0, 1.0), (-2.0, 2.0, -1.0, 3.0)),
    "beale": Surface(beale, (1.0, 1.5), (3.0, 0.5), (-1.0, 4.0, -1.5, 2.0)),
    "rastrigin": Surface(rastrigin, (-2.2, 2.4), (0.0, 0.0), (-3.0, 3.0, -3.0, 3.0)),
}
STEPS_PER_EPOCH_2D = 25


def _surface_builder(name: str):
    surface = SURFACES[name]

    def build(seed: int, device: str) -> Instance:
        # Seed 0 starts exactly at the classic point; other seeds jitter it by up to 0.1.
        jitter = torch.rand(2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        start = torch.tensor(surface.start, dtype=torch.float64) + (0.2 * jitter - 0.1) * (seed > 0)
        model = Point(surface.fn, start).to(device)

        def batches() -> Iterator[Batch]:
            for _ in range(STEPS_PER_EPOCH_2D):
                yield None, None

        @torch.no_grad()
        def evaluate(split_name: str = "test") -> float:
            if split_name not in ("val", "test"):
                raise ValueError(f"split must be 'val' or 'test', got {split_name!r}")
            return float(model())

        return Instance(model, lambda outputs, _targets: outputs, batches, evaluate,
                        steps_per_epoch=STEPS_PER_EPOCH_2D)

    return build


# ------------------------------------------------------------------------- the suite
TASKS: dict[str, Task] = {}


_loading: list[list[str]] = []  # the names registered by the task modules being loaded


def register(task: Task) -> Task:
    """Add ``task`` (a :class:`Task`, see its protocol) to the tasks ``optimkit bench`` knows.

    Call it at import time of a task module, then run ``optimkit bench --task-module
    my_tasks.py`` (a file, or an importable module name): the module's tasks are benched with
    the same protocol, statistics and report as the built-in ones. A name may be registered
    once; loading the same task module again replaces its own tasks. Returns ``task``.
    """
    if not isinstance(task, Task):
        raise ValueError(f"register() takes a Task, got {type(task).__name__}")
    known = TASKS.get(task.name)
    if known is not None and not (_loading and _same_module(known, task)):
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    if _loading:
        _loading[-1].append(task.name)
    return task


def _same_module(a: Task, b: Task) -> bool:
    module = getattr(a.builder, "__module__", None)
    return module is not None and module == getattr(b.builder, "__module__", None)


_MODULES: dict[tuple[str, str], tuple[str, ...]] = {}  # (spec, content hash) -> task names


def module_file(spec: str) -> Path:
    """The source file of a task module: ``spec`` is a path to a ``.py`` file or a module
    name; ValueError naming it when there is none."""
    if spec.endswith(".py") or "/" in spec or "\\" in spec or Path(spec).is_file():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"--task-module {spec!r}: no such file")
        return path.resolve()
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError) as err:
        raise ValueError(f"--task-module {spec!r}: {err}") from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise ValueError(f"--task-module {spec!r}: no such module (nor a .py file)")
    return Path(found.origin).resolve()


def load_module(spec: str) -> tuple[str, ...]:
    """Import the task module ``spec`` (a ``.py`` path or a module name) and return the names
    of the tasks it registers. Loading the same content again is free; an edited file is run
    again (its tasks are replaced). ValueError naming ``spec`` on any failure."""
    path = module_file(spec)
    source = path.read_bytes()
    key = (spec, hashlib.sha256(source).hexdigest())
    if key in _MODULES:
        return _MODULES[key]
    is_file = spec.endswith(".py") or Path(spec).is_file()
    name = f"optimkit_task_module_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}" \
        if is_file else spec
    _loading.append([])
    try:
        if is_file:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        elif name in sys.modules:
            importlib.reload(sys.modules[name])
        else:
            importlib.import_module(name)
    except Exception as err:  # noqa: BLE001  (the user's code: report it in one line)
        if is_file:
            sys.modules.pop(name, None)
        raise ValueError(f"--task-module {spec!r} failed to load: {type(err).__name__}: "
                         f"{err}") from None
    finally:
        names = tuple(dict.fromkeys(_loading.pop()))
    if not names:
        raise ValueError(f"--task-module {spec!r} registers no task (call "
                         "optimkit.bench.tasks.register(Task(...)) in it)")
    _MODULES[key] = names
    return names


def get(name: str) -> Task:
    """The task called ``name``; ValueError naming it (and the known ones) if unknown."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name]


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (found without importing)."""
    missing = []
    for name in dict.fromkeys(modules):
        if name in sys.modules:
            gone = sys.modules[name] is None  # how Python marks a module blocked from import
        else:
            try:
                gone = importlib.util.find_spec(name) is None
            except (ImportError, ValueError):  # a parent package is missing or broken
                gone = True
        if gone:
            missing.append(name)
    return missing


def names(illustrative: bool | None = None) -> list[str]:
    """Task names in registration order; ``illustrative`` picks the toy (True) or the ranked (False)
    ones."""
    wanted = lambda t: illustrative is None or t.illustrative == illustrative
    return [t.name for t in TASKS.values() if wanted(t)]


register(Task(
    "digits-mlp", "MLP 64-64-10 on scikit-learn's 8x8 digits (1,797 images)",
    "test accuracy", 0.95, True, 8, _digits_mlp, requires=("sklearn",), chance=0.1,
    bounds=(0.0, 1.0), family="MLP",
))
register(Task(
    "digits-cnn", "2-layer CNN on scikit-learn's 8x8 digits",
    "test accuracy", 0.90, True, 6, _digits_cnn, requires=("sklearn",), chance=0.1,
    bounds=(0.0, 1.0), family="conv net",
))
register(Task(
    "diabetes-mlp", "MLP 10-32-1 regression on scikit-learn's diabetes data (442 patients)",
    "test R²", 0.40, True, 20, _diabetes_mlp, requires=("sklearn",),
    chance=0.0, bounds=(None, 1.0), family="MLP",  # R² 0: predicting the mean
))
register(Task(
    "zen-char-gru", "character-level GRU on the Zen of Python and builtin docstrings",
    "test bits/char", 3.3, False, 5, _zen_char, bounds=(0.0, None), family="RNN",
))
register(Task(
    "stdlib-lm", "decoder-only transformer (2 blocks, width 48, context 48 bytes) on the "
    "standard library's own .py files",
    "test bits/byte", 3.2, False, 6, _stdlib_lm, tolerance=0.02,
    chance=8.0, bounds=(0.0, None),  # 8 bits/byte: a uniform guess over the bytes
    info=_lm_info, family="transformer LM",
))
register(Task(
    "mnist1d-cnn", "3-layer 1-D CNN on MNIST-1D-style data (4,000 train examples generated "
    "here, after Greydanus 2020)",
    "test accuracy", 0.85, True, 8, _mnist1d_cnn, tolerance=0.01, chance=0.1,
    bounds=(0.0, 1.0), family="conv net",
))
register(Task(
    "mnist1d-autoencoder", "deep tanh autoencoder 40-64-32-8-32-64-40 on the MNIST-1D-style "
    "signals", "test MSE", 0.2, False, 8, _mnist1d_autoencoder, tolerance=0.01,
    bounds=(0.0, None), family="autoencoder",
))
for _budget, _multiple in LM_BUDGETS.items():
    register(Task(
        f"stdlib-lm-{_budget}", f"decoder-only transformer ({LM_WIDE['layers']} blocks, width "
        f"{LM_WIDE['dim']}, context {LM_WIDE['context']} bytes, {LM_WIDE['batch']} windows a "
        f"step) on the standard library's .py files, trained on about {_multiple}x its "
        "parameter count in bytes",
        "test bits/byte", 4.3 if _multiple == 1 else 3.4, False, 8, _stdlib_lm_budget(_multiple),
        tolerance=0.02, chance=8.0, bounds=(0.0, None), info=_lm_info, family="transformer LM",
    ))
register(Task(
    "digits-convnet", "3-layer 2-D CNN (3x3 filters, 16-16-32 channels) on scikit-learn's 8x8 "
    "digits", "test accuracy", 0.95, True, 5, _digits_convnet, requires=("sklearn",),
    chance=0.1, bounds=(0.0, 1.0), family="conv net",
))
for _name, _target in (("rosenbrock", 1e-2), ("beale", 1e-2), ("rastrigin", 1e-2)):
    register(Task(
        _name, f"{_name.capitalize()} function in 2-D, from {SURFACES[_name].start} "
        "(illustrative: one point, no data)",
        "f(x, y)", _target, False, 16, _surface_builder(_name), illustrative=True,
        bounds=(0.0, None),
    ))
