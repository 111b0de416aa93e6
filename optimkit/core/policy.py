"""How a bucket's state is stored: the kinds of state a part declares (:class:`Storage`) and
the interface the executor calls around the parts (:class:`BucketPolicy`), whose default is
plain storage. A precision or memory policy (:mod:`optimkit.precision`) subclasses it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .tensorlists import Bucket

if TYPE_CHECKING:
    from .parts import Init


class Storage(enum.Enum):
    """How a state may be stored, declared by the part that creates it."""

    SIGNED = "signed"  # a moment that may be negative (first moment, momentum, previous grad)
    POSITIVE = "positive"  # a moment that is never negative (second moment, step-size memory)
    EXACT = "exact"  # keeps at least the param's precision (a copy of the param)
    SCALAR = "scalar"  # one number per tensor (layer-wise moments)
    COUNTER = "counter"  # the step counter

    @property
    def quantizable(self) -> bool:
        return self in (Storage.SIGNED, Storage.POSITIVE)



class BucketPolicy:
    """How a bucket's tensors are stored, handed to the parts and kept afterwards.

    This default is today's behaviour: state in the param's dtype, created by the parts' inits,
    params written as the steppers write them. A precision or memory policy
    (:class:`optimkit.precision.policy.PrecisionPolicy`) overrides every method:

    * ``key(p)``: params of one group are bucketed (and flat-stored) by device, dtype and this;
    * ``collect``: the bucket's state lists, creating a param's state at its first step;
    * ``arguments(group, bucket, flat)``: host-side numbers of one bucket's step, handed to
      ``prepare`` (Python constants of the compiled graph);
    * ``prepare`` (before the parts: e.g. replace ``bucket.state`` lists by working copies)
      and ``finalize`` (after them: write the working copies back, round the params). Both run
      inside the compiled graph in compiled mode, so they must not read tensor values on the
      host. ``names`` limits ``prepare`` to some state (a host-gated part runs on its own);
    * ``one_tensor(sizes)``: whether a flat store may run as one tensor, and
      ``stored_names(names, p)``: the state a bucket of params like ``p`` carries for the
      recipe's ``names`` (the policy may keep more: 8-bit scales, a compensation);
    * ``conform(p, state)``: bring a param's loaded state to the policy's form.
    """

    plain = True

    def key(self, p: Tensor) -> Any:
        return None

    def one_tensor(self, sizes: Sequence[int]) -> bool:
        return True

    def stored_names(self, names: Sequence[str], p: Tensor) -> list[str]:
        return list(names)

    def arguments(self, group: Mapping[str, Any], bucket: Bucket, flat: bool) -> tuple:
        return ()

    def collect(
        self, params: list[Tensor], group: Mapping[str, Any], inits: Mapping[str, Init],
        all_state: dict,
    ) -> tuple[dict[str, list[Tensor]], dict[str, list[int]]]:
        lists: dict[str, list[Tensor]] = {name: [] for name in inits}
        created: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            state = all_state[p]
            for name, init in inits.items():
                tensor = state.get(name)
                if tensor is None:
                    tensor = state[name] = init(p, group)
                    created.setdefault(name, []).append(i)
                lists[name].append(tensor)
        return lists, created

    def prepare(self, bucket: Bucket, group: Mapping[str, Any], arguments: tuple,
                names: Sequence[str] | None = None) -> Any:
        return None

    def finalize(self, bucket: Bucket, group: Mapping[str, Any], prepared: Any,
                 stream: int = 0) -> None:
        pass

    def conform(self, p: Tensor, state: dict[str, Any]) -> None:
        pass


PLAIN = BucketPolicy()
