"""Test-local recipes with a part that needs each full tensor (``whole=True``, issue 22).

``OrthoSGD`` is SGD on the orthogonalized momentum, Muon's shape without Muon's details: heavy-
ball momentum (element-wise, runs on shards), then a whole stat that replaces each matrix's
update by a few Newton-Schulz iterations of it (each vector's by itself over its full norm),
keeps the orthogonalized update as a param-shaped state and the input's Frobenius norm as a
per-tensor scalar state, then an element-wise SGD step. On a dim-0 shard the iterations, and
the norms, give another matrix: the distributed tests prove the shard is never used.

:data:`WHOLE_CASES` are the cases the distributed whole-tensor tests run besides the registry
entries that have a whole part (``tests/dist_scenarios.py``: ``whole_cases``).
"""

from __future__ import annotations

import torch

import optimkit
from optimkit.core.parts import stat, zero_scalar, zeros
from optimkit.stats.gradient import momentum
from optimkit.steppers.basic import sgd_step

# The quintic Newton-Schulz coefficients of Keller Jordan's Muon.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(m: torch.Tensor, steps: int) -> torch.Tensor:
    """An approximately orthogonal matrix of ``m``'s row and column spaces (``U V^T`` of its
    SVD, roughly), in ``m``'s dtype."""
    a, b, c = NS_COEFFICIENTS
    x = m / (torch.linalg.matrix_norm(m) + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


@stat(state={"ortho": zeros, "input_norm": zero_scalar}, storage={"ortho": "signed"},
      reads=("update",), provides=("update",), whole=True, ns_steps=5)
def orthogonalize(b, ns_steps):
    """Each matrix's update orthogonalized by ``ns_steps`` Newton-Schulz iterations, each other
    tensor's divided by its norm; kept in ``ortho``, the input's norm in ``input_norm``."""
    out = []
    for u, kept, norm in zip(b.update, b.state["ortho"], b.state["input_norm"], strict=True):
        norm.copy_(torch.linalg.vector_norm(u))
        o = newton_schulz(u, ns_steps) if u.dim() == 2 else u / (norm + 1e-7)
        kept.copy_(o)
        out.append(o)
    b.update = out


class OrthoSGD(optimkit.Optimizer):
    """SGD on the orthogonalized momentum (test-local; see the module doc)."""

    parts = (momentum, orthogonalize, sgd_step)
    hypers = dict(lr=0.02, momentum=0.9, ns_steps=5)


# The same recipe with the part on shards, as before whole=True existed: what main computed.
class ShardOrthoSGD(optimkit.Optimizer):
    """OrthoSGD with its orthogonalization not marked whole (each shard on its own)."""

    import dataclasses as _dc

    parts = (momentum, _dc.replace(orthogonalize, whole=False, shaped=True), sgd_step)
    hypers = dict(lr=0.02, momentum=0.9, ns_steps=5)


# name -> (factory, keywords) of the test-local cases
WHOLE_CASES = {
    "whole-ortho-sgd": (OrthoSGD, {"lr": 0.02}),
    # Kron fitting its factors at every 3rd step only (kron_fit, due=): the steps between
    # run its whole direction alone, and the sharded run still equals the unsharded one
    "kron-every-3rd": (optimkit.Kron, {"lr": 1e-2, "weight_decay": 0.1,
                                       "precondition_update_probability": 0.4}),
    # its variants: the fit on the gradient (kron_fit_on_grads), L2 decay on the shards
    "kron-on-grads-l2": (optimkit.Kron, {"lr": 1e-2, "weight_decay": 0.1,
                                         "decoupled_weight_decay": False,
                                         "momentum_into_precondition_update": False,
                                         "precondition_update_probability": 0.5}),
}
