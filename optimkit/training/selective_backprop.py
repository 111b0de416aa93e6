"""Selective-Backprop (Jiang et al. 2019, "Accelerating Deep Learning by Focusing on the
Biggest Losers", arXiv:1910.00762).

Every example is forwarded (without autograd) to get its loss; an example is chosen for the
backward pass with probability ``CDF(loss) ** beta``, the CDF taken over a rolling history of
recent losses (the paper's rule; ``beta`` sets the selectivity: in expectation a fraction
``1 / (1 + beta)`` is kept). Chosen examples wait in a buffer until there are ``batch_size``
of them; then one normal forward-backward-step runs on that batch. The simple alternative
``rule="topk"`` keeps the ``keep_fraction`` largest losses of each forwarded batch.

The saving: a backward pass costs about two forward passes, so keeping a fraction ``f``
costs about ``1 + 3 f`` forward-equivalents per example instead of 3 (``f = 1/3``: 33% less).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

RULES = ("cdf", "topk")


def _map(fn: Callable[[torch.Tensor], torch.Tensor], batch: Any) -> Any:
    """Apply ``fn`` to every tensor of a tensor / tuple / list / dict batch."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: _map(fn, v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map(fn, v) for v in batch)
    raise ValueError(f"batches must hold tensors (in tuples, lists or dicts), got {type(batch)}")


def _cat(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: _cat([p[k] for p in parts]) for k in first}
    return type(first)(_cat([p[i] for p in parts]) for i in range(len(first)))


def _length(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch
    return _length(next(iter(values)))


def per_example(losses: Any, n: int) -> torch.Tensor:
    if not isinstance(losses, torch.Tensor) or losses.shape != (n,):
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            f"loss_fn must return one loss per example, shape ({n},), got {shape}; "
            "build it with reduction='none', e.g. nn.CrossEntropyLoss(reduction='none')"
        )
    return losses


class SelectiveBackprop:
    """Train on the examples with the largest losses (Selective-Backprop).

    ``sb = SelectiveBackprop(model, loss_fn, optimizer, batch_size=64)``, then
    ``sb.step(inputs, targets)`` for each batch of the epoch (and ``sb.flush()`` at the end,
    to train on a partial buffer). Works with any model, optimizer (optimkit's, torch.optim's,
    wrappers) and batch structure (tensors, tuples, dicts). ``loss_fn(outputs, targets)`` must
    return per-example losses (``reduction='none'``).

    Arguments (defaults):

    * ``batch_size``: examples per backward pass; the buffer fills to it.
    * ``rule``: ``"cdf"`` (the paper: keep with probability ``CDF(loss) ** beta``) or
      ``"topk"`` (keep the ``keep_fraction`` largest losses of each forwarded batch).
    * ``beta=1.0``: the paper's selectivity (1 keeps about 50%, 2 about 33%, 3 about 25%).
    * ``keep_fraction=None``: for ``"cdf"``, None draws each example independently (the
      paper); a fraction instead draws exactly ``ceil(keep_fraction * n)`` examples per
      batch, weighted by ``CDF ** beta``. ``"topk"`` uses 0.5 when it is None.
    * ``history=1024``: losses the CDF is taken over (the most recent).
    * ``warmup_batches=0``: the first batches train normally on every example.
    * ``train_step=None``: ``train_step(inputs, targets) -> per-example losses`` replacing the
      default forward, mean loss, backward, ``optimizer.step()``, ``zero_grad()`` (for AMP,
      clipping, ...).
    * ``generator=None``: the ``torch.Generator`` of the random draws.

    Counters: ``examples_forwarded``, ``examples_backpropagated``, ``backward_passes``.

    The selection forward runs under ``torch.no_grad()`` in the model's current mode, so in
    train mode BatchNorm running statistics also see it (as in the paper's implementation).

    Distributed (DDP): each rank selects locally from its own shard, with its own history.
    Every rank must run the same number of backward passes, or DDP's gradient all-reduce
    hangs: use ``rule="topk"`` or ``keep_fraction`` (a fixed count per forwarded batch, so
    with equal batch sizes the buffers of all ranks fill in step and the backward batch size
    is the same on every rank). Independent draws (``rule="cdf"``, ``keep_fraction=None``)
    are refused when a process group with more than one rank is initialised.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        batch_size: int,
        *,
        rule: str = "cdf",
        beta: float = 1.0,
        keep_fraction: float | None = None,
        history: int = 1024,
        warmup_batches: int = 0,
        train_step: Callable[[Any, Any], Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"Invalid rule: {rule!r}; choose from {RULES}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size!r}; it must be an int >= 1")
        if not (isinstance(beta, (int, float)) and beta > 0 and math.isfinite(beta)):
            raise ValueError(f"Invalid beta: {beta!r}; it must be a number > 0")
        if rule == "topk" and keep_fraction is None:
            keep_fraction = 0.5
        if keep_fraction is not None and not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"Invalid keep_fraction: {keep_fraction!r}; it must be in (0, 1]")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"Invalid history: {history!r}; it must be an int >= 1")
        if isinstance(warmup_batches, bool) or not isinstance(warmup_batches, int) \
                or warmup_batches < 0:
            raise ValueError(f"Invalid warmup_batches: {warmup_batches!r}; it must be an int >= 0")
        if keep_fraction is None and _distributed():
            raise ValueError(
                "rule='cdf' with independent draws gives each rank a different number of "
                "backward passes under DDP; pass keep_fraction (a fixed count per batch)"
            )
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.batch_size, self.rule, self.beta = batch_size, rule, float(beta)
        self.keep_fraction = keep_fraction
        self.history_size, self.warmup_batches = history, warmup_batches
        self.train_step = train_step or self._default_train_step
        self.generator = generator
        self._history: torch.Tensor | None = None
        self._history_len = 0
        self._history_next = 0
        self._buffer: list[tuple[Any, Any]] = []
        self._buffered = 0
        self.batches_seen = 0
        self.examples_forwarded = 0
        self.examples_backpropagated = 0
        self.backward_passes = 0

    # ------------------------------------------------------------ public
    @property
    def fraction_backpropagated(self) -> float:
        """Examples back-propagated over examples forwarded so far."""
        return self.examples_backpropagated / max(self.examples_forwarded, 1)

    def step(self, inputs: Any, targets: Any) -> torch.Tensor:
        """Forward one batch, choose examples, and train on each full buffer; return the
        batch's mean loss (detached)."""
        n = _length(inputs)
        self.batches_seen += 1
        self.examples_forwarded += n
        if self.batches_seen <= self.warmup_batches:
            losses = per_example(self._train(inputs, targets, n), n).detach()
            self._remember(losses)
            return losses.mean()
        with torch.no_grad():
            losses = per_example(self.loss_fn(self.model(inputs), targets), n).detach()
        self._remember(losses)
        chosen = self.choose(losses)
        if len(chosen):
            pick = lambda t: t[chosen]
            self._buffer.append((_map(pick, inputs), _map(pick, targets)))
            self._buffered += len(chosen)
        while self._buffered >= self.batch_size:
            self._train_buffer(self.batch_size)
        return losses.mean()

    def flush(self) -> bool:
        """Train on what waits in the buffer (a smaller batch); False if it was empty."""
        if not self._buffered:
            return False
        self._train_buffer(self._buffered)
        return True

    def choose(self, losses: torch.Tensor) -> torch.Tensor:
        """Indices of the examples of a forwarded batch chosen for the backward pass."""
        n = len(losses)
        if self.rule == "topk":
            return torch.topk(losses, self._count(n)).indices.sort().values
        weight = self.cdf(losses) ** self.beta
        if self.keep_fraction is not None:
            picked = torch.multinomial(weight, self._count(n), generator=self.generator)
            return picked.sort().values
        draws = torch.rand(n, generator=self.generator, device=losses.device)
        return torch.nonzero(draws < weight).flatten()

    def cdf(self, losses: torch.Tensor) -> torch.Tensor:
        """The fraction of remembered losses <= each loss (the empirical CDF)."""
        seen = torch.sort(self._history[: self._history_len].to(losses.dtype)).values
        return torch.searchsorted(seen, losses, right=True).to(losses.dtype) / len(seen)

    def state_dict(self) -> dict[str, Any]:
        """Counters and loss history (the buffer is not kept: flush before checkpointing)."""
        return {
            "history": None if self._history is None else self._history.clone(),
            "history_len": self._history_len,
            "history_next": self._history_next,
            "batches_seen": self.batches_seen,
            "examples_forwarded": self.examples_forwarded,
            "examples_backpropagated": self.examples_backpropagated,
            "backward_passes": self.backward_passes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters and loss history saved by ``state_dict``."""
        history = state["history"]
        self._history = None if history is None else history.clone()
        self._history_len, self._history_next = state["history_len"], state["history_next"]
        for key in ("batches_seen", "examples_forwarded", "examples_backpropagated",
                    "backward_passes"):
            setattr(self, key, int(state[key]))

    # ------------------------------------------------------------ internals
    def _count(self, n: int) -> int:
        return max(1, math.ceil(self.keep_fraction * n))

    def _remember(self, losses: torch.Tensor) -> None:
        if self._history is None:
            self._history = torch.empty(self.history_size, dtype=torch.float32,
                                        device=losses.device)
        values = losses.detach().float()[-self.history_size:]
        slots = (self._history_next + torch.arange(len(values))) % self.history_size
        self._history[slots.to(self._history.device)] = values
        self._history_next = (self._history_next + len(values)) % self.history_size
        self._history_len = min(self._history_len + len(values), self.history_size)

    def _train_buffer(self, size: int) -> None:
        inputs = _cat([item[0] for item in self._buffer])
        targets = _cat([item[1] for item in self._buffer])
        head = _map(lambda t: t[:size], inputs), _map(lambda t: t[:size], targets)
        rest = self._buffered - size
        self._buffer = [(_map(lambda t: t[size:], inputs), _map(lambda t: t[size:], targets))]
        self._buffered = rest
        if rest == 0:
            self._buffer = []
        self._train(*head, size)

    def _train(self, inputs: Any, targets: Any, n: int) -> torch.Tensor:
        losses = self.train_step(inputs, targets)
        self.examples_backpropagated += n
        self.backward_passes += 1
        return losses

    def _default_train_step(self, inputs: Any, targets: Any) -> torch.Tensor:
        losses = per_example(self.loss_fn(self.model(inputs), targets), _length(inputs))
        losses.mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return losses.detach()


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
