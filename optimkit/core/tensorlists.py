"""The bucket a part works on, and the per-tensor numbers the parts compute with.

Every part sees one :class:`Bucket`: the params of one param group that share a device and a
dtype, their grads, their state as aligned lists, and the values the parts of one step hand to
each other (the :data:`FIELDS`). Parts use ``torch._foreach_*`` ops on these lists, so one call
touches every tensor of the bucket.

Some quantities differ per tensor, e.g. Adam's bias correction ``1 - beta1**step`` when params
joined training at different steps. They are held as a 1-D float64 CPU tensor (one entry per
tensor of the bucket), computed with ordinary tensor math, and handed to the foreach ops as a
scalar list. The step counters live on the CPU (torch.optim's format), so this never waits
for an accelerator.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import Tensor

_ONE = torch.tensor(1.0)

# The values parts of one step hand to each other, by name. A part declares the ones it reads
# and provides (``reads=``, ``provides=``); a recipe is checked against them when it is defined.
FIELDS: dict[str, str] = {
    "grads": "the gradient as the parts see it: each param's .grad (never written), or a new "
    "list once a part regularises it (the L2 term, centralisation)",
    "update": "the update direction a stepper applies; it is the gradient (grads) until a part "
    "provides another one (momentum, a normalised or trust-scaled direction)",
    "first_moment": "the first moment a stepper applies (Adam's m): the grad_avg state, or a "
    "copy damped for this step only (DiffGrad's friction)",
    "second_moment": "the second moment a stepper divides by (Adam's v): sqr_avg, its running "
    "max (AMSGrad), Adagrad's sum, a per-layer moment (NovoGrad), a centred variance (RMSprop)",
    "step_size": "per-element step sizes, lr and bias corrections folded in (AdaMod, DiffGrad)",
    "norm_target": "the tensors whose norm a trust ratio compares with ||w||: the update, "
    "unless a part provides other ones (over9000's would-be new weights)",
    "norm_weights": "the tensors a trust ratio measures as w: the params, unless a part "
    "provides other ones (over9000's weights after its decoupled decay)",
    "weight_norms": "||norm_weights|| per tensor, a 1-D tensor on the bucket's device",
    "update_norms": "||norm_target|| per tensor, a 1-D tensor on the bucket's device",
}


class Bucket:
    """The aligned tensor lists of one (param group, device, dtype) bucket, for one step.

    Attributes:
        params: the parameters (updated in place by steppers).
        grads, update, first_moment, second_moment, step_size, norm_target, norm_weights,
            weight_norms, update_norms: the per-step values of :data:`FIELDS`. ``update``
            reads as ``grads``, ``norm_target`` as ``update`` and ``norm_weights`` as
            ``params`` until a part sets them; the others are None until a part provides them.
        state: state name -> list of tensors, aligned with ``params``; writing into these
            tensors updates ``optimizer.state[p]``.
        created: state name -> indices of the tensors whose state was created this step.
    """

    __slots__ = (
        "params", "grads", "state", "created", "_update", "first_moment", "second_moment",
        "step_size", "_norm_target", "_norm_weights", "weight_norms", "update_norms", "_steps",
    )

    def __init__(self, params, grads, state, created):
        self.params: list[Tensor] = params
        self.grads: list[Tensor] = grads
        self.state: dict[str, list[Tensor]] = state
        self.created: dict[str, list[int]] = created
        self._update: list[Tensor] | None = None
        self.first_moment: list[Tensor] | None = None
        self.second_moment: list[Tensor] | None = None
        self.step_size: list[Tensor] | None = None
        self._norm_target: list[Tensor] | None = None
        self._norm_weights: list[Tensor] | None = None
        self.weight_norms: Tensor | None = None
        self.update_norms: Tensor | None = None
        self._steps: Tensor | None = None

    def __len__(self) -> int:
        return len(self.params)

    @property
    def update(self) -> list[Tensor]:
        return self.grads if self._update is None else self._update

    @update.setter
    def update(self, tensors: list[Tensor]) -> None:
        self._update = tensors

    @property
    def norm_target(self) -> list[Tensor]:
        return self.update if self._norm_target is None else self._norm_target

    @norm_target.setter
    def norm_target(self, tensors: list[Tensor]) -> None:
        self._norm_target = tensors

    @property
    def norm_weights(self) -> list[Tensor]:
        return self.params if self._norm_weights is None else self._norm_weights

    @norm_weights.setter
    def norm_weights(self, tensors: list[Tensor]) -> None:
        self._norm_weights = tensors

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    def select(self, indices: Sequence[int]) -> Bucket:
        """A bucket of the tensors at ``indices`` only: params, grads and state (no fields)."""
        pick = lambda tensors: [tensors[i] for i in indices]
        return Bucket(
            pick(self.params), pick(self.grads),
            {name: pick(tensors) for name, tensors in self.state.items()}, {},
        )

    # ------------------------------------------------------------ step counts
    def increment_steps(self) -> None:
        steps = self.state["step"]
        if steps[0].is_cpu:
            # A tensor scalar avoids wrapping ``1`` again for every tensor on the slow CPU path.
            torch._foreach_add_(steps, _ONE, alpha=1.0)
        else:
            torch._foreach_add_(steps, 1)
        self._steps = None

    @property
    def steps(self) -> Tensor:
        """The step count of each tensor, as a 1-D float64 CPU tensor."""
        if self._steps is None:
            self._steps = torch.stack(self.state["step"]).to("cpu", torch.float64)
        return self._steps

    # ------------------------------------------------------ per-tensor reductions
    def norms(self, tensors: Sequence[Tensor]) -> Tensor:
        """The L2 norm of each tensor of ``tensors`` (a list aligned with the bucket, or several
        such lists concatenated), stacked: entry ``i`` broadcasts against ``tensors[i]``.

        Every per-tensor reduction of a part goes through the bucket, so that each execution
        mode computes it its own way: one ``torch._foreach_norm`` call here; a segmented
        reduction over the flat buffer in flat mode (:class:`optimkit.core.flat.FlatBucket`);
        a sharded bucket would sum its partial squares across shards in one collective.
        """
        return torch.stack(torch._foreach_norm(list(tensors)))


def is_zero(value) -> bool:
    """Whether a hyper-parameter is exactly 0, for a part that skips work then.

    Under ``torch.compile`` a number other than 0 and 1 arrives as a 0-d tensor (so that a
    schedule does not recompile, see ``core/compiled.py``): that is never zero here.
    """
    return isinstance(value, (int, float)) and value == 0


def is_one(value) -> bool:
    """Whether a hyper-parameter is exactly 1 (see :func:`is_zero`)."""
    return isinstance(value, (int, float)) and value == 1


def is_dtensor(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (FSDP2's sharded params).

    No DTensor can exist before ``torch.distributed.tensor`` is imported, so this imports nothing.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The L2 norm of each tensor, as a list of 0-d tensors (one ``torch._foreach_norm`` call).

    Parts take per-tensor norms through :meth:`Bucket.norms`, which knows the execution mode.
    """
    return list(torch._foreach_norm(list(tensors)))


def scalars(values: Tensor | float) -> list[float] | float:
    """A per-tensor scalar vector as foreach ops take it (a plain number passes through).

    Under ``torch.compile`` the values stay in the graph (no ``tolist`` sync, no recompile
    when they change).
    """
    if isinstance(values, Tensor) and values.dim() == 1:
        if torch.compiler.is_compiling():
            if values.numel() == 1:
                # one number (a flat bucket): the ops' Scalar overloads, which inductor fuses;
                # it leaves ScalarList ops of traced values as separate, unfused kernels
                return values[0].item()
            return [v.item() for v in values.unbind()]
        return values.tolist()
    return values


def debias(betas, t: Tensor):
    """Adam's bias corrections per tensor: ``(1 - beta1**t, 1 - beta2**t)`` for step counts ``t``.

    A moving average that starts at zero is too small by these factors after ``t`` steps
    (Kingma & Ba 2014, §3); parts divide by them (or their square roots).
    """
    return 1 - betas[0] ** t, 1 - betas[1] ** t
