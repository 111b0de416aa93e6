"""SOAP's stats (Vyas et al. 2024, arXiv:2409.11321): Adam run in the eigenbasis of
Shampoo's Kronecker-factored preconditioner.

Per param, each preconditioned dimension ``i`` (size ``d_i``) has a factor ``L_i``, the running
average of ``G_(i) G_(i)^T`` (``G_(i)``: the gradient unfolded along dimension ``i``), and an
eigenbasis ``Q_i`` of it. A dimension is preconditioned when ``d_i <= max_precondition_dim``; a
1-D param only with ``precondition_1d=True``; a 0-d param never. A param with none is stepped by
plain Adam in the unrotated space.

**State layout.** The factors of one param are packed into ONE 1-D state, ``factors``: the
row-major ``[d_i, d_i]`` matrices of its preconditioned dimensions, in dimension order, one
after the other (``sum d_i**2`` numbers; none for a param with no preconditioned dimension);
``eigenbases`` holds the ``Q_i`` the same way. Both are of their own shape
(:func:`~optimkit.core.parts.own_shape`): flat mode keeps them per param, the precision
policies keep them exact (never narrowed, never quantized: an eigenbasis must stay orthogonal),
and they are float32 for bf16/fp16 params (``torch.linalg.eigh``/``qr`` need float32). Which
dimensions are preconditioned is decided from ``max_precondition_dim`` and ``precondition_1d``
when the state is made; changing them afterwards is refused.

**FSDP2.** The factors need each param's whole matrix: ``soap_direction`` and the
host-gated ``soap_eigenbases`` are whole-tensor parts (``whole=True``), run on one owner rank
per param over the gathered full tensors (:mod:`optimkit.core.whole`); ``factors`` and
``eigenbases``, of their own shape, are replicated on every rank, and their owner sends them
whole to the others where it writes them (the factors at every step, the eigenbases at each
refresh). ``soap_bases`` creates the eigenbases, so that ``soap_direction`` only reads them.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..core.parts import own_shape, stat, zeros
from ..core.rules import betas as betas_rule
from ..core.rules import nonnegative, positive_integer, unit_interval
from ..core.tensorlists import debias, lerp_, scalars

# ------------------------------------------------------------------ the layout


def preconditioned_sizes(shape: Sequence[int], max_precondition_dim: int,
                         precondition_1d: bool) -> list[int | None]:
    """Per dimension of a param of ``shape``: its size where it is preconditioned, else None."""
    if len(shape) == 1 and not precondition_1d:
        return [None]
    return [d if d <= max_precondition_dim else None for d in shape]


def factor_dtype(p: Tensor) -> torch.dtype:
    """The dtype of a param's factors and eigenbases: its own, float32 for narrower floats."""
    return p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32


def _packed(p: Tensor, group: Mapping[str, Any]) -> Tensor:
    sizes = preconditioned_sizes(p.shape, group["max_precondition_dim"],
                                 group["precondition_1d"])
    n = sum(d * d for d in sizes if d is not None)
    return torch.zeros(n, dtype=factor_dtype(p), device=p.device)


# zeros until the param's first step fills them (eigenbases: by soap_eigenbases)
packed_factors = own_shape(_packed)
packed_factors.__name__ = "packed_factors"
packed_factors.__doc__ = (
    "State init: a param's SOAP factors (or eigenbases), packed into one 1-D tensor of zeros "
    "(see the module doc), of its own shape (``own_shape``).")


def unpack(packed: Tensor, sizes: Sequence[int | None]) -> list[Tensor | None]:
    """The ``[d, d]`` views of one param's packed factors (or eigenbases), per dimension
    (None where not preconditioned). ``ValueError`` if the packed size does not fit."""
    views: list[Tensor | None] = []
    offset = 0
    for d in sizes:
        if d is None:
            views.append(None)
            continue
        views.append(packed[offset:offset + d * d].view(d, d))
        offset += d * d
    if offset != packed.numel():
        raise ValueError(
            f"SOAP: a param's packed preconditioner holds {packed.numel()} numbers, but its "
            f"preconditioned dimensions {list(sizes)} need {offset}: max_precondition_dim or "
            "precondition_1d changed after the state was made (or the state is another "
            "param's)"
        )
    return views


def rotate(x: Tensor, bases: Sequence[Tensor | None], back: bool = False) -> Tensor:
    """``x`` in the eigenbases (``Q_0^T x Q_1`` for a matrix), or back from them (``back``:
    ``Q_0 x Q_1^T``); a dimension without a basis is left as it is. Computed in the bases'
    dtype, returned in ``x``'s. Returns ``x`` itself when no dimension has a basis."""
    if all(q is None for q in bases):
        return x
    dtype = next(q for q in bases if q is not None).dtype
    y = x.to(dtype)
    if x.dim() == 2:  # two matmuls, no permuted copies
        left, right = bases
        if left is not None:
            y = (left if back else left.T) @ y
        if right is not None:
            y = y @ (right.T if back else right)
    elif x.dim() == 1:
        (q,) = bases
        y = (q if back else q.T) @ y
    else:
        # contract dimension 0 with Q_0, which moves the result's new axis last: after all
        # dimensions the order is the original one
        for q in bases:
            if q is None:
                y = y.movedim(0, -1)
            else:
                y = torch.tensordot(y, q, dims=([0], [1 if back else 0]))
    return y.to(x.dtype)


def _along(matrix: Tensor, x: Tensor, dim: int) -> Tensor:
    """``matrix`` applied to ``x`` along dimension ``dim`` (``matrix @ x`` for ``dim=0``)."""
    return torch.tensordot(matrix, x, dims=([1], [dim])).movedim(0, dim)


def _gram(g: Tensor, dim: int) -> Tensor:
    """``G_(dim) G_(dim)^T``: the gradient unfolded along ``dim`` times its transpose."""
    if g.dim() == 1:
        return torch.outer(g, g)
    if g.dim() == 2:
        return g @ g.T if dim == 0 else g.T @ g
    unfolded = g.movedim(dim, 0).reshape(g.shape[dim], -1)
    return unfolded @ unfolded.T


def _shampoo_weight(betas, shampoo_beta):
    return 1 - (betas[1] if shampoo_beta is None else shampoo_beta)


def _optional_decay(name: str, value: Any) -> None:
    """None (use ``beta2``) or a decay rate in [0, 1) (a number, not a bool)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be None or a number in [0, 1)")
    unit_interval(name, value)


_LAYOUT_RULES = dict(max_precondition_dim=positive_integer)

# ------------------------------------------------------------------ the parts


@stat(state={"eigenbases": packed_factors})
def soap_bases(b):
    """Creates SOAP's ``eigenbases`` (zeros, packed: see the module doc), which
    ``soap_eigenbases`` computes after a param's first step and refreshes; nothing to do at a
    step. A part of its own so that ``soap_direction``, which only reads them, does not
    create them: under FSDP2 a whole part's owner sends the states of their own shape it
    creates whole to every rank at each step, and the bases change only at a refresh."""


# whole=True: under FSDP2 each param's full matrix is gathered to its owner rank
@stat(state={"grad_avg": zeros, "sqr_avg": zeros, "factors": packed_factors},
      storage={"grad_avg": "signed", "sqr_avg": "positive"},
      reads=("step", "grads", "eigenbases"),
      provides=("update",), whole=True,
      rules=dict(betas=betas_rule, eps=nonnegative, shampoo_beta=_optional_decay,
                 **_LAYOUT_RULES),
      betas=(0.95, 0.95), eps=1e-8, shampoo_beta=None, max_precondition_dim=10000,
      precondition_1d=False)
def soap_direction(b, betas, eps, shampoo_beta, max_precondition_dim, precondition_1d):
    """SOAP's direction (Vyas et al. 2024, Alg. 3), as the authors' ``soap.py``: with ``R(x)``
    the rotation into the eigenbases (``Q_L^T x Q_R`` for a matrix) and ``R^-1`` back,

    ``m = beta1 m + (1 - beta1) g``; ``v = beta2 v + (1 - beta2) R(g)**2``; the update is
    ``R^-1(R(m) / (sqrt(v) + eps)) * sqrt(1 - beta2**s) / (1 - beta1**s)`` with ``s = t - 1``;
    then each factor ``L_i = beta_s L_i + (1 - beta_s) G_(i) G_(i)^T`` (``beta_s``:
    ``shampoo_beta``, ``beta2`` when None).

    A param's first step (``t = 1``: its state made this step) only accumulates the factors:
    ``m`` and ``v`` stay 0, its update is 0 and the stepper leaves the param alone; the
    eigenbases are computed right after it (``soap_eigenbases``). So ``s`` counts the steps
    that moved the param.

    Both moments are kept in the eigenbases: ``grad_avg`` holds ``R(m)`` (updated with
    ``R(g)``, which ``v`` needs anyway), so a step rotates twice, not three times as the
    reference, which keeps ``m`` unrotated and rotates it at every step (the same numbers up to
    rounding; ~25 % fewer matmuls in a step that refreshes nothing). ``soap_eigenbases`` turns
    ``R(m)`` into each new basis.
    """
    beta1, beta2 = betas
    fresh = set(b.created.get("factors", ()))
    old = [i for i in range(len(b.params)) if i not in fresh]
    layouts = [preconditioned_sizes(p.shape, max_precondition_dim, precondition_1d)
               for p in b.params]
    grads = b.grads
    update: list[Tensor | None] = [None] * len(b.params)
    if old:
        pick = lambda tensors: [tensors[i] for i in old]
        bases = [unpack(b.state["eigenbases"][i], layouts[i]) for i in old]
        avgs, sqrs = pick(b.state["grad_avg"]), pick(b.state["sqr_avg"])
        old_grads = pick(grads)
        rotated = [rotate(g, q) for g, q in zip(old_grads, bases, strict=True)]
        # m is kept rotated: R(m) = beta1 R(m) + (1 - beta1) R(g), R being linear, so a step
        # rotates twice (g in, the ratio back), not three times as the reference (which
        # rotates its unrotated m at every step); soap_eigenbases turns m into each new basis
        lerp_(avgs, rotated, 1 - beta1)
        lerp_(sqrs, torch._foreach_mul(rotated, rotated), 1 - beta2)
        del rotated
        denom = torch._foreach_sqrt(sqrs)
        torch._foreach_add_(denom, eps)
        ratios = torch._foreach_div(avgs, denom)
        del denom
        directions = [rotate(r, q, back=True) for r, q in zip(ratios, bases, strict=True)]
        steps = b.steps if len(old) == len(b.params) else b.steps[old]
        corrected1, corrected2 = debias(betas, steps - 1)
        torch._foreach_mul_(directions, scalars(corrected2.sqrt() / corrected1))
        for i, d in zip(old, directions, strict=True):
            update[i] = d
    for i in fresh:  # (under FSDP2 the owner's params stand for their shapes: no storage)
        update[i] = torch.zeros(b.params[i].shape, dtype=b.params[i].dtype,
                                device=grads[i].device)
    b.update = update
    # the factors, every step (the first included), from this step's gradient: one lerp of
    # each param's whole packed state (written through its views, a compiled step would copy
    # and scatter every factor)
    packs, grams = [], []
    for g, packed, sizes in zip(grads, b.state["factors"], layouts, strict=True):
        if packed.numel():
            g = g.to(packed.dtype)
            grams.append(torch.cat([_gram(g, dim).reshape(-1)
                                    for dim, d in enumerate(sizes) if d is not None]))
            packs.append(packed)
    if packs:
        lerp_(packs, grams, _shampoo_weight(betas, shampoo_beta))


_warned_fp64 = False


def _eigenvectors(factors: Tensor) -> Tensor:
    """The eigenvectors of a batch of symmetric ``[n, d, d]`` factors, by descending
    eigenvalue, as the reference computes them (``factor + 1e-30 I``, ``torch.linalg.eigh``,
    columns flipped). An eigendecomposition that fails in float32 is retried in float64 (and
    said once, with a warning)."""
    eye = torch.eye(factors.shape[-1], dtype=factors.dtype, device=factors.device)
    try:
        _, vectors = torch.linalg.eigh(factors + 1e-30 * eye)
    except RuntimeError as error:  # torch.linalg.LinAlgError: no convergence
        if factors.dtype == torch.float64:
            raise
        global _warned_fp64
        if not _warned_fp64:
            _warned_fp64 = True
            warnings.warn(
                f"SOAP: torch.linalg.eigh failed in {factors.dtype} ({error}); retrying in "
                "float64 (said once)", RuntimeWarning, stacklevel=4,
            )
        wide = factors.to(torch.float64)
        _, vectors = torch.linalg.eigh(wide + 1e-30 * eye.to(torch.float64))
        vectors = vectors.to(factors.dtype)
    return vectors.flip(-1)


@stat(reads=("step", "grad_avg", "sqr_avg", "factors", "eigenbases"),
      overrides=("grad_avg", "sqr_avg", "eigenbases"), whole=True,
      every="precondition_frequency",
      start=1, rules=dict(precondition_frequency=positive_integer, **_LAYOUT_RULES),
      precondition_frequency=10, max_precondition_dim=10000, precondition_1d=False)
def soap_eigenbases(b, max_precondition_dim, precondition_1d):
    """SOAP's eigenbases, on the host's schedule: after a param's first step (``t = 1``) the
    eigenvectors of each factor (``torch.linalg.eigh``, by descending eigenvalue); after steps
    ``t = 1 + k * precondition_frequency`` one step of power iteration with a QR
    decomposition, as the authors' ``soap.py``:

    ``P = L Q``; ``e = diag(Q^T P)`` (the eigenvalue estimates); the columns of ``P`` sorted
    by descending ``e``, and the second moment ``v`` reordered the same way along that
    dimension (its coordinates follow the basis vectors); ``Q = qr(P).Q``, computed in float32
    (as the reference, whatever the param's dtype). The first moment, kept rotated
    (``grad_avg`` = ``R(m)``, see ``soap_direction``), is turned into the new basis:
    ``R(m) <- Q_new^T Q_old^-T R(m)`` along that dimension (``Q_old^-T = Q_old`` to the
    float32 QR's ~1e-7; for float64 params one Newton step makes it ~1e-14).

    Host-gated (``every="precondition_frequency"``, ``start=1``): the executor picks the due
    params from the CPU step counters and runs this eagerly, outside the compiled step.
    Each factor goes through ``eigh``/``qr`` on its own, not batched with the other factors
    of its size: LAPACK's batched calls round each matrix by where it sits in the batch, so a
    param's eigenbases would depend on which other params share its bucket (under FSDP2, an
    owner rank's bucket holds another set of params than one process's).

    ``whole=True``: under FSDP2 the due params' ``grad_avg`` and ``sqr_avg`` are gathered to
    their owner ranks, which send back their shards and the new ``eigenbases`` (to every
    rank: a state of its own shape is replicated).
    """
    steps = b.steps.tolist()
    fresh: list[tuple[Tensor, Tensor]] = []  # (factor, basis)
    due: list[tuple[Tensor, Tensor, int, int]] = []  # + (tensor, dimension)
    for i, (p, factors, bases) in enumerate(zip(b.params, b.state["factors"],
                                                b.state["eigenbases"], strict=True)):
        sizes = preconditioned_sizes(p.shape, max_precondition_dim, precondition_1d)
        for dim, (factor, basis) in enumerate(zip(unpack(factors, sizes),
                                                  unpack(bases, sizes), strict=True)):
            if factor is None:
                continue
            if steps[i] == 1:
                fresh.append((factor, basis))
            else:
                due.append((factor, basis, i, dim))
    for factor, basis in fresh:  # (a batch of one, see above)
        basis.copy_(_eigenvectors(torch.stack([factor]))[0])
    avgs, sqrs = b.state["grad_avg"], b.state["sqr_avg"]
    for entries in ([entry] for entry in due):
        factors = torch.stack([e[0] for e in entries])
        bases = torch.stack([e[1] for e in entries])
        products = factors @ bases
        estimates = (bases * products).sum(dim=-2)
        order = torch.argsort(estimates, dim=-1, descending=True)
        products = products.gather(-1, order[:, None, :].expand_as(products))
        # torch.linalg.qr's Q, bit for bit, without forming R
        q = torch.linalg.householder_product(*torch.geqrf(products.to(torch.float32)))
        q = q.to(bases.dtype)
        # R(m) = Q_old^T m into Q_new^T m: C = Q_new^T Q_old^-T. A float32 QR's basis is
        # orthogonal to ~1e-7, where Q^-T = Q: in float64 one Newton step,
        # Q^-T = Q (2 I - Q^T Q) + O(1e-14), keeps fp64 runs on the reference's numbers
        # (3 matmuls; an LU solve took as long as the QR)
        old = bases
        if bases.dtype == torch.float64:
            eye = torch.eye(bases.shape[-1], dtype=bases.dtype, device=bases.device)
            old = bases @ (2 * eye - bases.transpose(-1, -2) @ bases)
        for (_, _, i, dim), idx, back, new in zip(entries, order.unbind(), old.unbind(),
                                                  q.unbind(), strict=True):
            sqrs[i].copy_(sqrs[i].index_select(dim, idx))
            # back out of the old basis, into the new one: two [d, d] x [d, n] products,
            # cheaper than forming Q_new^T Q_old (a [d, d] x [d, d] one) when n <= d
            avg = avgs[i]
            unrotated = _along(back.to(avg.dtype), avg, dim)
            avg.copy_(_along(new.T.to(avg.dtype), unrotated, dim))
        torch._foreach_copy_([e[1] for e in entries], list(q.unbind()))
