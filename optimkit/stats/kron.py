"""PSGD Kron's stats: a Kronecker-factored preconditioner fitted by preconditioned stochastic
gradient descent (Li 2018, "Preconditioner on matrix Lie group for SGD", arXiv:1809.10232;
the Kron form of Li's psgd_torch as E. Walters' kron_torch and pytorch_optimizer's ``Kron``
run it).

Each param of shape ``(d_0, ..., d_{k-1})`` has one factor ``Q_i`` per dim: an upper
triangular ``d_i x d_i`` matrix (dense) or a diagonal, kept as its ``d_i`` numbers. The
preconditioner is ``P = Q^T Q`` with ``Q = Q_0 (x) ... (x) Q_{k-1}``. All factors of one param
live in one state tensor of its own shape (``precond``: each dense factor's ``d_i**2`` numbers
then each diagonal's ``d_i``, in the order of the dims), so that flat mode and the precision
policies keep it per param (:func:`~optimkit.core.parts.own_shape`).

**Probe vectors.** Each preconditioner update draws a Gaussian probe ``V`` shaped like the
param. It does not come from torch's generator: ``V`` is a fixed function of the param's
``probe_key`` (made at its first step from the group's ``probe_seed`` and the param's position
in its group) and its step count, through the counter-based hash of the precision policies'
random bits (:func:`optimkit.precision.rounding.random_words`, then Box-Muller). A run thus
reproduces whatever the execution mode (eager, flat, compiled), the order of the buckets, or
how the params are split into them; :func:`probes` gives the same vectors to a reference.

**Update schedule.** The factors are fitted (:data:`kron_fit`) at the steps that
``precondition_update_probability`` picks, by the references' deterministic counter
(:func:`fit_due`; default :class:`UpdateProbabilitySchedule`); the momentum
(:data:`kron_momentum`) and the direction ``P m^`` (:data:`kron_direction`) run at every
step. ``kron_fit`` is a scheduled part (``due=``, :func:`optimkit.core.parts.stat`): the
executor picks the params it is due on from the CPU step counters, before the step.

**FSDP2.** ``kron_fit`` and ``kron_direction`` need each full tensor (``whole=True``): each
runs on one owner rank per param over the gathered momentum (:mod:`optimkit.core.whole`; the
fit over the gradient instead as ``kron_fit_on_grads``), and neither reads a param value, so
that the weight decay, which does, is a part of its own on the shards (``kron_l2`` before the
momentum, ``kron_decay`` after the direction). ``precond`` and ``probe_key`` are replicated
on every rank, made by ``kron_factors``. ``kron_fit`` overrides ``precond``, which its owner
then sends whole to the others, at the due steps only; ``kron_direction`` only reads it, and
reuses the momentum the fit gathered just before (:func:`optimkit.core.whole.run_whole`), so
the momentum is gathered once a step.
``kron_balance`` reads only ``precond`` and the full shapes, so each rank balances its own
copy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.backends import opt_einsum

from ..core.parts import own_shape, stat, zeros
from ..core.rules import nonnegative, one_of, positive_integer, unit_interval
from ..core.tensorlists import is_zero, scalars
from ..precision import rounding

MEMORY_SAVE_MODES = (None, "one_diag", "smart_one_diag", "all_diag")
PRECONDITION_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# pytorch_optimizer's eps: the smallest normal bfloat16 (= float32's), added to the norms a
# factor's step is divided by
_TINY = torch.finfo(torch.bfloat16).tiny


@functools.lru_cache(maxsize=4096)
def _dense_dims(shape: tuple[int, ...], max_size_triangular: int, min_ndim_triangular: int,
                memory_save_mode: str | None) -> tuple[bool, ...]:
    return tuple(dense_dims(shape, max_size_triangular, min_ndim_triangular, memory_save_mode))


def dense_dims(shape: Sequence[int], max_size_triangular: int, min_ndim_triangular: int,
               memory_save_mode: str | None) -> list[bool]:
    """Which dims of a param of ``shape`` get a dense (triangular) factor; the others get a
    diagonal one. A dim is diagonal when its size is 1 or above ``max_size_triangular``, when
    the param has fewer than ``min_ndim_triangular`` dims, or by ``memory_save_mode``:
    ``"one_diag"`` the largest dim (the last of equal largest ones, as numpy's argsort picks),
    ``"smart_one_diag"`` the largest only if strictly larger than every other, ``"all_diag"``
    every dim."""
    shape = list(shape)
    diag = [False] * len(shape)
    if shape and memory_save_mode == "all_diag":
        diag = [True] * len(shape)
    elif shape and memory_save_mode in ("one_diag", "smart_one_diag"):
        largest = max(shape)
        last = max(i for i, size in enumerate(shape) if size == largest)
        if memory_save_mode == "one_diag" or (
                len(shape) >= 2 and sorted(shape)[-2] < largest):
            diag[last] = True
    return [
        not (d or size == 1 or size > max_size_triangular or len(shape) < min_ndim_triangular)
        for size, d in zip(shape, diag, strict=True)
    ]


def factor_sizes(shape: Sequence[int], dense: Sequence[bool]) -> list[int]:
    """The number of elements each factor of a param of ``shape`` keeps (one for a 0-d
    param)."""
    if not shape:
        return [1]
    return [size * size if d else size for size, d in zip(shape, dense, strict=True)]


def _dense_of(p_shape: Sequence[int], group: Mapping[str, Any]) -> tuple[bool, ...]:
    return _plan(tuple(p_shape), group["max_size_triangular"], group["min_ndim_triangular"],
                 group["memory_save_mode"])[0]


def _plan(shape: tuple[int, ...], max_size_triangular: int, min_ndim_triangular: int,
          memory_save_mode: str | None):
    """``(dense dims, einsum subscripts)`` of a param of ``shape``: cached per shape eagerly
    (a step would rebuild the strings for every param); worked out afresh while compiling,
    where dynamo traces plain Python better than a cache."""
    cached = not torch.compiler.is_compiling()
    dims = _dense_dims if cached else _dense_dims.__wrapped__
    dense = dims(shape, max_size_triangular, min_ndim_triangular, memory_save_mode)
    return dense, (_expressions if cached else _expressions.__wrapped__)(len(shape), dense)


def initial_precond(p: Tensor, group: Mapping[str, Any]) -> Tensor:
    """``precond`` at a param's first step: each dense factor ``s * I``, each diagonal one
    ``s * 1``, ``s = precondition_init_scale ** (1 / ndim)``, in ``precondition_dtype``."""
    dtype, scale = group["precondition_dtype"], group["precondition_init_scale"]
    if p.dim() == 0:
        return torch.full((1,), float(scale), dtype=dtype, device=p.device)
    scale = math.pow(scale, 1.0 / p.dim())
    pieces = []
    for size, d in zip(p.shape, _dense_of(p.shape, group), strict=True):
        one = torch.eye(size, dtype=dtype, device=p.device) if d else torch.ones(
            size, dtype=dtype, device=p.device)
        pieces.append((scale * one).flatten())
    return torch.cat(pieces)


def probe_key(seed: int, index: int) -> Tensor:
    """The ``probe_key`` of the param at ``index`` of a group with ``probe_seed=seed``: an
    int32 0-d CPU tensor."""
    return rounding.stream_key(int(seed), index)


def initial_probe_key(p: Tensor, group: Mapping[str, Any]) -> Tensor:
    """``probe_key`` at a param's first step, from its position in its param group (not from
    the order in which buckets meet it)."""
    index = next(i for i, q in enumerate(group["params"]) if q is p)
    return probe_key(group["probe_seed"], index)


def probes(shape: Sequence[int], key: Tensor, step: Tensor | float, dtype: torch.dtype,
           device: torch.device | str | None = None) -> Tensor:
    """The standard Gaussian probe ``V`` of a param of ``shape`` at its step ``step`` (a
    number or a 0-d tensor), under its ``probe_key``: Box-Muller over 2 x 24 uniform bits of
    :func:`~optimkit.precision.rounding.random_words` per element, computed in ``dtype``."""
    return _gaussian(shape, rounding.stream_key(key, torch.as_tensor(step)), dtype, device)


def _gaussian(shape: Sequence[int], step_key: Tensor, dtype: torch.dtype,
              device: torch.device | str | None) -> Tensor:
    numel = math.prod(shape)
    # one stream: the radius draws of the elements, then their angle draws
    words = rounding.random_words((2, numel), step_key, 0, device)
    # the top 24 bits, plus a half: uniform in (0, 1), never 0
    uniform = (((words >> 8) & 0xFFFFFF).to(dtype) + 0.5) * 2.0**-24
    radius, angle = uniform.unbind(0)
    gauss = torch.sqrt(-2.0 * torch.log(radius)) * torch.cos((2.0 * math.pi) * angle)
    return gauss.view(tuple(shape))


def _factors(packed: Tensor, shape: Sequence[int], dense: Sequence[bool]) -> list[Tensor]:
    """Views of one param's factors in its ``precond`` tensor."""
    if not shape:
        return [packed.view(())]
    sizes = factor_sizes(shape, dense)
    if packed.numel() != sum(sizes):
        raise ValueError(
            f"precond holds {packed.numel()} numbers where a param of shape {tuple(shape)} "
            f"needs {sum(sizes)}: max_size_triangular, min_ndim_triangular and "
            "memory_save_mode cannot change once a param has stepped"
        )
    out, start = [], 0
    for size, n, d in zip(shape, sizes, dense, strict=True):
        piece = packed.narrow(0, start, n)
        out.append(piece.view(size, size) if d else piece)
        start += n
    return out


_LETTERS = "abcdefghijklm"  # a param's own dims (13 at most)
_INNER = "nopqrstuvwxyz"  # the dims a factor contracts
_OUTER = "ABCDEFGHIJKLM"  # a second copy of them, for the dense factors' outer products


@functools.lru_cache(maxsize=1024)
def _expressions(ndim: int, dense: tuple[bool, ...]) -> tuple[str, tuple[str, ...], str]:
    """The einsum subscripts of one param: ``Q G`` (each factor applied to its dim of ``G``),
    each factor's statistics of a tensor (``X_i X_i^T`` contracted over the other dims, the
    diagonal of it for a diagonal factor), and ``Q^T Q G``. The operands are in the order
    pytorch_optimizer passes them, which decides the contraction order and so the rounding."""
    if ndim > len(_LETTERS):
        raise ValueError(f"PSGD Kron preconditions params of at most {len(_LETTERS)} dims, "
                         f"not {ndim}")
    own, inner, outer = _LETTERS[:ndim], _INNER[:ndim], _OUTER[:ndim]
    factors = [own[i] + inner[i] if d else own[i] for i, d in enumerate(dense)]
    grad = "".join(inner[i] if d else own[i] for i, d in enumerate(dense))
    apply = ",".join(factors) + f",{grad}->{own}"
    stats: list[str] = []
    for i, d in enumerate(dense):
        left = own[:i] + inner[i] + own[i + 1:]
        right = own[:i] + outer[i] + own[i + 1:] if d else left
        stats.append(f"{left},{right}->{inner[i]}{outer[i] if d else ''}")
    # Q^T Q G: each dense factor as Q[a, b] Q[a, c] against G[..c..]
    left = [own[i] + inner[i] if d else inner[i] for i, d in enumerate(dense)]
    right = [own[i] + outer[i] if d else inner[i] for i, d in enumerate(dense)]
    grad = "".join(outer[i] if d else inner[i] for i, d in enumerate(dense))
    precondition = ",".join(left + right) + f",{grad}->{inner}"
    return apply, tuple(stats), precondition


def _einsum(equation: str, *operands: Tensor) -> Tensor:
    """``torch.einsum(equation, *operands)``, with the contraction order opt_einsum picks (as
    torch.einsum does) worked out once per equation and shapes, not at every call: that
    search costs more than the small contractions themselves (~1 ms a call on the CPU)."""
    if (len(operands) <= 2 or torch.compiler.is_compiling() or not opt_einsum.enabled
            or not opt_einsum.is_available()):
        return torch.einsum(equation, *operands)
    path = _einsum_path(equation, tuple(tuple(t.shape) for t in operands),
                        opt_einsum.strategy)
    return torch._VF.einsum(equation, operands, path=path)  # what torch.einsum calls


@functools.lru_cache(maxsize=4096)
def _einsum_path(equation: str, shapes: tuple[tuple[int, ...], ...], strategy: str
                 ) -> list[int]:
    steps = opt_einsum.get_opt_einsum().contract_path(
        equation, *shapes, shapes=True, optimize=strategy)[0]
    return [i for pair in steps for i in pair]


def _solve_right(x: Tensor, q: Tensor) -> Tensor:
    """``x @ inv(q)`` over x's last dim (q upper triangular), solved in float32 whatever the
    dtypes, as pytorch_optimizer does, then cast back to x's dtype."""
    solved = torch.linalg.solve_triangular(
        q.float(), x.float().reshape(-1, x.size(-1)), upper=True, left=False)
    return solved.reshape(x.shape).to(x.dtype)


def _norm_lower_bound(a: Tensor) -> Tensor:
    """A cheap lower bound of the spectral norm of the square matrix ``a`` (``a`` is scaled
    in place): one power-iteration step from its largest column and from its largest row,
    the larger of their sums of squares chosen."""
    max_abs = a.abs().max()
    a.div_(torch.where(max_abs > 0, max_abs, 1.0))
    squares = a * a
    column, i = squares.sum(dim=0).max(0)
    row, j = squares.sum(dim=1).max(0)
    tiny = torch.finfo(a.dtype).tiny
    x = a.index_select(1, i.reshape(1)).flatten() @ a
    by_column = torch.linalg.vector_norm((x / torch.linalg.vector_norm(x).clamp_min(tiny)) @ a.T)
    y = a @ a.index_select(0, j.reshape(1)).flatten()
    by_row = torch.linalg.vector_norm(a.T @ (y / torch.linalg.vector_norm(y).clamp_min(tiny)))
    return max_abs * torch.where(column > row, by_column, by_row)


def _update_factors(factors: list[Tensor], dense: Sequence[bool], exprs, g: Tensor,
                    v: Tensor, lr) -> None:
    """One PSGD step of every factor of one param on the pair (probe ``v``, ``g``):
    ``A = Q g``, ``B^T = V Q^{-1}`` (each factor inverted on its dim), then per factor
    ``Q_i -= lr * triu(A_i A_i^T - B_i B_i^T) / ||A_i A_i^T + B_i B_i^T|| Q_i``, with a cheap
    lower bound of the spectral norm (diagonal factors: elementwise, over the largest
    entry)."""
    apply, stats, _ = exprs
    if g.dim() == 0:
        q = factors[0]
        a, conj_b = q * g, v / q
        terms = [(a * a, conj_b * conj_b)]
    else:
        a = _einsum(apply, *factors, g)
        conj_b = v
        for i, (q, d) in enumerate(zip(factors, dense, strict=True)):
            moved = conj_b.movedim(i, -1)
            moved = _solve_right(moved, q) if d else moved / q
            conj_b = moved.movedim(-1, i)
        terms = [(torch.einsum(expr, a, a), torch.einsum(expr, conj_b, conj_b))
                 for expr in stats]
    for q, d, (term1, term2) in zip(factors, [bool(x) for x in dense] or [False], terms,
                                    strict=True):
        step = (term1 - term2) * lr
        if d:
            step = torch.triu(step)
            step = step / (_norm_lower_bound(term1 + term2) + _TINY)
            step = step @ q
        else:
            step = step * q
            step = step / (torch.linalg.vector_norm(term1 + term2, float("inf")) + _TINY)
        q.sub_(step)


@dataclasses.dataclass(frozen=True)
class UpdateProbabilitySchedule:
    """The reference's default schedule of PSGD Kron's preconditioner update probability, a
    function of ``n``, the number of steps taken before the current one:
    ``clamp(max_prob * exp(-decay * (n - flat_start)), min_prob, max_prob)``, computed in
    float32 (a 0-d tensor) as ``pytorch_optimizer.optimizer.psgd.precondition_update_prob_schedule``
    and ``kron_torch.precond_update_prob_schedule`` compute it: 1 for the first 500 steps,
    then annealed to 0.03 (reached after step ~4000). A frozen dataclass, so that a param
    group holding it pickles (``state_dict()``) and compares equal after loading; importing
    optimkit allows it in ``torch.load(..., weights_only=True)`` (torch's default)."""

    max_prob: float = 1.0
    min_prob: float = 0.03
    decay: float = 0.001
    flat_start: int = 500

    def __call__(self, n: int) -> Tensor:
        """The update probability of the step taken after ``n`` steps."""
        prob = self.max_prob * torch.exp(
            -self.decay * (torch.tensor(n, dtype=torch.float32) - self.flat_start))
        return prob.clamp_(min=self.min_prob, max=self.max_prob)

    def floor_from(self, n: int, prob: Tensor) -> bool:
        """Whether ``prob`` (the probability after ``n`` steps) is ``min_prob`` for good."""
        if self.decay <= 0 or n < self.flat_start:
            return False
        raw = self.max_prob * math.exp(-self.decay * (n - self.flat_start))
        return raw <= self.min_prob and prob.item() == torch.tensor(
            self.min_prob, dtype=torch.float32).item()


def _probability_error(value: Any) -> str:
    return (f"Invalid precondition_update_probability: {value!r}; it must be a probability in "
            "(0, 1], a callable of the step count returning one, or None (the default "
            "schedule, UpdateProbabilitySchedule())")


def update_probability(name: str, value: Any) -> None:
    """The rule of ``precondition_update_probability``: ``None``, a callable, or a number in
    ``(0, 1]`` (``ValueError`` naming ``name`` otherwise)."""
    if value is None or callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Tensor)):
        raise ValueError(_probability_error(value).replace(
            "precondition_update_probability", name))
    try:
        prob = float(value)
    except (TypeError, ValueError, RuntimeError):
        prob = float("nan")
    if not 0.0 < prob <= 1.0:
        raise ValueError(_probability_error(value).replace(
            "precondition_update_probability", name))


def _period(prob: Any) -> int:
    """The counter value that triggers an update at probability ``prob`` (the references'
    ``counter >= 1 / prob``, in ``prob``'s own precision: float32 for a tensor)."""
    if isinstance(prob, Tensor):
        inverse = float(1 / prob)
    else:
        inverse = 1.0 / float(prob) if float(prob) != 0 else float("inf")
    if not 1.0 <= inverse < float("inf"):
        raise ValueError(_probability_error(prob) + " (returned by the schedule)")
    return math.ceil(inverse)


class _DueTable:
    """Which steps update the factors under one schedule, extended as steps come: the
    references' counter (``counter += 1``; update when ``counter >= 1 / p(t - 1)``, then
    ``counter = 0``) run once from step 1 and kept, since it is a pure function of the
    schedule. Once an :class:`UpdateProbabilitySchedule` stays at ``min_prob`` the updates
    are periodic, and the table stops growing."""

    __slots__ = ("schedule", "flags", "counter", "settled")

    def __init__(self, schedule: Any):
        self.schedule = schedule
        self.flags = bytearray(1)  # flags[t]: whether step t updates (t >= 1)
        self.counter = 0
        self.settled: tuple[int, int, int] | None = None  # (first step, counter before, period)

    def __call__(self, t: int) -> bool:
        while self.settled is None and len(self.flags) <= t:
            step = len(self.flags)
            prob = self.schedule(step - 1)
            period = _period(prob)
            floor = getattr(self.schedule, "floor_from", None)
            if floor is not None and floor(step - 1, prob):
                self.settled = (step, self.counter, period)
                break
            self.counter += 1
            due = self.counter >= period
            if due:
                self.counter = 0
            self.flags.append(due)
        if t < len(self.flags):
            return bool(self.flags[t])
        first, before, period = self.settled
        return (before + t - first + 1) % period == 0


# torch.load's default (weights_only=True) loads a state_dict holding a schedule: a frozen
# dataclass of four numbers, whose unpickling runs no code of its own
torch.serialization.add_safe_globals([UpdateProbabilitySchedule])

_TABLES: dict[int, _DueTable] = {}
_DEFAULT_SCHEDULE = UpdateProbabilitySchedule()


def fit_due(probability: Any, t: int) -> bool:
    """Whether the factors are fitted at a param's step ``t`` (1 at its first step) under
    ``precondition_update_probability``: a number ``p`` fits them at every ``ceil(1 / p)``-th
    step; a schedule (a callable of the steps taken before, ``None`` for
    :class:`UpdateProbabilitySchedule`) by the references' counter, run from step 1 (see
    :class:`_DueTable`). A pure function of the step count: nothing to checkpoint."""
    if probability is None:
        probability = _DEFAULT_SCHEDULE
    if not callable(probability):
        return t % _period(probability) == 0
    table = _TABLES.get(id(probability))
    if table is None or table.schedule is not probability:
        if len(_TABLES) >= 64:  # schedules made afresh again and again: keep a few
            _TABLES.clear()
        table = _TABLES[id(probability)] = _DueTable(probability)
    return table(t)


def _plus_matrix_decay(values, params, weight_decay):
    """``values`` with ``weight_decay * p`` added where the param has 2 dims or more (Kron
    decays matrices only), as new tensors: the caller's (the user's grads) are left alone."""
    return [torch.add(v, p, alpha=weight_decay) if p.dim() >= 2 else v
            for v, p in zip(values, params, strict=True)]


@stat(provides=("grads",), rules=dict(weight_decay=nonnegative), weight_decay=0.0)
def kron_l2(b, weight_decay):
    """PSGD Kron's L2 weight decay (``decoupled_weight_decay=False``), on params of 2 dims or
    more only: ``g = g + weight_decay * p``, before the momentum. Element-wise: under FSDP2 it
    runs on each rank's shards."""
    if is_zero(weight_decay):
        return
    b.grads = _plus_matrix_decay(b.grads, b.params, weight_decay)


@stat(state={"momentum_buffer": zeros}, storage={"momentum_buffer": "signed"},
      provides=("update",), rules=dict(momentum=unit_interval), momentum=0.9)
def kron_momentum(b, momentum):
    """PSGD Kron's momentum: ``m = momentum * m + (1 - momentum) * g``; the update is ``m``
    (its bias correction is ``kron_direction``'s). Element-wise: under FSDP2 it runs on the
    shards, and only ``m`` is gathered for the preconditioner."""
    buffers = b.state["momentum_buffer"]
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, b.grads, alpha=1 - momentum)
    b.update = buffers


@stat(state={"precond": own_shape(initial_precond), "probe_key": own_shape(initial_probe_key)},
      rules=dict(precondition_init_scale=nonnegative), precondition_init_scale=1.0,
      probe_seed=0)
def kron_factors(b, precondition_init_scale, probe_seed):
    """Creates PSGD Kron's ``precond`` (from ``precondition_init_scale``, see
    :func:`initial_precond`) and ``probe_key`` (from ``probe_seed``) at a param's first step;
    nothing to do at a step. A part of its own, not ``kron_fit``'s state: under FSDP2 a whole
    part's owner sends each state of its own shape that it creates or overrides whole to every
    rank (``kron_fit`` would then send ``probe_key`` too), and ``kron_fit`` runs at the due
    steps only, which a param's first step need not be."""


def _debiased(b, momentum, precondition_dtype) -> list[Tensor]:
    """``m^ = m / (1 - momentum**t)`` of each tensor, from the momentum in ``update``, cast to
    ``precondition_dtype``."""
    corrections = scalars(1 - momentum**b.steps)
    if not isinstance(corrections, list):
        corrections = [corrections] * len(b.params)
    return [(m / c).to(precondition_dtype)
            for m, c in zip(b.update, corrections, strict=True)]


# whole=True: under FSDP2 each param's full momentum is gathered to its owner rank, and the
# factors it overrides go back whole to every rank (at the due steps only); due=: the executor
# runs it only on the params the schedule picks (see the module doc)
@stat(reads=("step", "update", "precond", "probe_key"), overrides=("precond",), whole=True,
      due=("precondition_update_probability", fit_due),
      rules=dict(momentum=unit_interval, max_size_triangular=positive_integer,
                 min_ndim_triangular=nonnegative,
                 memory_save_mode=one_of(*MEMORY_SAVE_MODES),
                 precondition_lr=nonnegative,
                 precondition_dtype=one_of(*PRECONDITION_DTYPES),
                 precondition_update_probability=update_probability),
      momentum=0.9, max_size_triangular=8192, min_ndim_triangular=2, memory_save_mode=None,
      momentum_into_precondition_update=True, precondition_lr=0.1,
      precondition_dtype=torch.float32, precondition_update_probability=None)
def kron_fit(b, momentum, max_size_triangular, min_ndim_triangular, memory_save_mode,
             momentum_into_precondition_update, precondition_lr, precondition_dtype):
    """One PSGD step of each param's factors (``precond``, see the module doc) on the pair
    (probe ``V``, ``m^``), ``m^ = m / (1 - momentum**t)`` from the momentum in ``update``
    (``kron_momentum``) in ``precondition_dtype``; on (``V``, ``g``) with
    ``momentum_into_precondition_update=False`` (``g`` cast to ``precondition_dtype``, with
    ``kron_l2``'s term where it runs: then as ``kron_fit_on_grads``, which declares ``grads``
    instead of ``update``). At the steps ``precondition_update_probability`` schedules
    (:func:`fit_due`; ``due=``: the executor picks the due params on the host). The dims'
    kinds are read at a param's first step.

    ``whole=True``: under FSDP2 each param's owner rank gets the full ``m`` (or ``g``) and
    fits the factors, which it sends whole to every other rank (the params stand for their
    shapes there: their values are never read here).
    """
    steps = b.steps
    if momentum_into_precondition_update:
        fits = _debiased(b, momentum, precondition_dtype)
    else:  # the grads read only here: only kron_fit_on_grads gathers them
        fits = [g.to(precondition_dtype) for g in b.grads]
    # every tensor's key of this step, in one go on the host (the keys live on the CPU)
    keys = b.state["probe_key"]
    if all(k.is_cpu for k in keys) and steps.is_cpu:
        step_keys = list(rounding.stream_key(torch.stack(keys), steps).unbind())
    else:
        step_keys = [rounding.stream_key(k, t) for k, t in zip(keys, steps.unbind(), strict=True)]
    for i, p in enumerate(b.params):
        dense, exprs = _plan(tuple(p.shape), max_size_triangular, min_ndim_triangular,
                             memory_save_mode)
        factors = _factors(b.state["precond"][i], p.shape, dense)
        v = _gaussian(p.shape, step_keys[i], precondition_dtype, fits[i].device)
        _update_factors(factors, dense, exprs, fits[i], v, precondition_lr)


# momentum_into_precondition_update=False: the factors fitted on the gradient, which this one
# declares instead of the momentum (so that under FSDP2 each fit gathers one of them only)
kron_fit_on_grads = dataclasses.replace(
    kron_fit, reads=("step", "grads", "precond", "probe_key"), label="kron_fit_on_grads")


@stat(reads=("step", "update", "precond"), provides=("update",), whole=True,
      rules=dict(momentum=unit_interval, max_size_triangular=positive_integer,
                 min_ndim_triangular=nonnegative,
                 memory_save_mode=one_of(*MEMORY_SAVE_MODES),
                 precondition_dtype=one_of(*PRECONDITION_DTYPES)),
      momentum=0.9, max_size_triangular=8192, min_ndim_triangular=2, memory_save_mode=None,
      precondition_dtype=torch.float32)
def kron_direction(b, momentum, max_size_triangular, min_ndim_triangular, memory_save_mode,
                   precondition_dtype):
    """PSGD Kron's direction, per param, from the momentum ``m`` in ``update``
    (``kron_momentum``) and the factors as ``kron_fit`` left them: ``m^ = m / (1 -
    momentum**t)`` (in ``precondition_dtype``); ``u = Q^T Q m^``, cast to the param's dtype
    and scaled to an RMS of at most 1.1: ``u = u * min(1.1 / (rms(u) + 1e-6), 1)``. Weight
    decay is ``kron_l2``'s (before the momentum) or ``kron_decay``'s (after this).

    ``whole=True``: under FSDP2 each param's owner rank gets the full ``m`` and sends each
    rank its shard of ``u``; it only reads ``precond`` (the same on every rank), so nothing of
    the factors is sent.
    """
    params = b.params
    debiased = _debiased(b, momentum, precondition_dtype)
    update = []
    for i, p in enumerate(params):
        dense, exprs = _plan(tuple(p.shape), max_size_triangular, min_ndim_triangular,
                             memory_save_mode)
        factors = _factors(b.state["precond"][i], p.shape, dense)
        if p.dim() == 0:
            u = factors[0] * factors[0] * debiased[i]
        else:
            u = _einsum(exprs[2], *factors, *factors, debiased[i])
        u = u.to(p.dtype)
        u = u * torch.clamp(1.1 / (u.square().mean().sqrt() + 1e-6), max=1.0)
        update.append(u)
    b.update = update


@stat(reads=("update",), provides=("update",), rules=dict(weight_decay=nonnegative),
      weight_decay=0.0)
def kron_decay(b, weight_decay):
    """PSGD Kron's decoupled weight decay (the default), on params of 2 dims or more only:
    ``u = u + weight_decay * p``, after the RMS clip. Element-wise: under FSDP2 it runs on
    each rank's shards."""
    if is_zero(weight_decay):
        return
    b.update = _plus_matrix_decay(b.update, b.params, weight_decay)


@stat(reads=("precond",), every="balance_every", rules=dict(balance_every=positive_integer),
      balance_every=100, max_size_triangular=8192, min_ndim_triangular=2,
      memory_save_mode=None)
def kron_balance(b, max_size_triangular, min_ndim_triangular, memory_save_mode):
    """Rescale the factors of each param of 2 dims or more to equal largest entries (their
    geometric mean), after every ``balance_every``-th step of the param: ``Q`` and so the
    preconditioner are unchanged, and so is the next PSGD step of the factors (each moves
    relative to itself), so this only keeps the factors' scales from drifting apart into
    under- or overflow. The executor picks the due params on the host, from the CPU step
    counters, and runs this part outside the compiled step. It reads only ``precond``: under
    FSDP2, where ``precond`` is the same on every rank, each rank balances its own copy, with
    the full tensors' shapes (``b.shapes``), and nothing is sent."""
    for i, shape in enumerate(b.shapes):
        if len(shape) < 2:
            continue
        dense = _dense_dims(tuple(shape), max_size_triangular, min_ndim_triangular,
                            memory_save_mode)
        factors = _factors(b.state["precond"][i], shape, dense)
        norms = torch.stack([torch.linalg.vector_norm(q, float("inf")) for q in factors])
        mean = norms.prod() ** (1 / len(factors))
        scales = mean / norms
        for k, q in enumerate(factors):
            q.mul_(scales[k])
