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


class Layout(enum.Enum):
    """How a state tensor is laid out against its param, declared by its init (see
    :func:`optimkit.core.parts.layout_of`); never guessed from an element count."""

    PARAM = "param"  # the param's shape, element for element (moments, copies of the param)
    SCALAR = "scalar"  # one 0-d number per param (step counters, layer-wise moments)
    OWN = "own"  # a shape of its own (a factor, block scales): not aligned with the param's


# The param-group entry of a state_dict that says in which form its state is saved.
STATE_FORM = "state_form"
# The optimizer keywords that choose a policy, with their defaults (the plain policy's).
POLICY_KEYWORDS: dict[str, Any] = {
    "state_dtype": None, "state_bits": None, "param_update": "plain", "generator": None,
}


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
      ``compile_options(bucket)``: inductor options of a compiled step;
    * ``one_tensor(sizes)``: whether a flat store may run as one tensor, and
      ``stored_names(names, p)``: the state a bucket of params like ``p`` carries for the
      recipe's ``names`` (the policy may keep more: 8-bit scales, a compensation), and
      ``layouts(layouts)``: the :class:`Layout` of each of those, from the recipe's;
    * ``conform(p, state)``: bring a param's loaded state to the policy's form.

    And around the optimizer (``core/optimizer.py``), which never looks inside a policy:

    * ``from_keywords(storages, layouts, **keywords)`` (a class method): the policy of an
      optimizer's :data:`POLICY_KEYWORDS` for a recipe whose states are declared so;
      ``converter(storages, layouts)``: the policy that reads other policies' checkpoints into plain
      state. The class that provides them is :func:`policies` (set by :func:`use_policies`);
    * ``check(params, owner)``: refuse keywords that make no sense for these params;
      ``group_defaults()``: entries the policy keeps in every param group (a random seed);
    * checkpoints: ``saved_entries()`` (param-group entries of ``state_dict()``),
      ``check_loaded`` (refuse a checkpoint before anything changes), ``load_stored`` (after
      torch's ``load_state_dict``: bring the loaded state to this policy's form) and
      ``plain_state_dict`` (a ``state_dict`` in the plain form, for ``torch_state_dict``).
    """

    # whether the policy changes nothing (the executor then runs its cache-blocked CPU steps)
    plain = True

    # ------------------------------------------------------------ construction
    @classmethod
    def from_keywords(cls, storages: Mapping[str, Storage], layouts: Mapping[str, Layout],
                      **keywords: Any) -> BucketPolicy:
        """The plain policy; ``ValueError`` naming a keyword that asks for another one (no
        precision policies are loaded: ``optimkit.precision`` provides them)."""
        for name, value in keywords.items():
            if value is not POLICY_KEYWORDS[name] and value != POLICY_KEYWORDS[name]:
                raise ValueError(
                    f"{name}: no precision policy is loaded; import optimkit.precision"
                )
        return PLAIN

    @classmethod
    def converter(cls, storages: Mapping[str, Storage], layouts: Mapping[str, Layout]
                  ) -> BucketPolicy:
        return PLAIN

    def check(self, params: Sequence[Tensor], owner: str) -> None:
        pass

    def group_defaults(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------ checkpoints
    def saved_entries(self) -> dict[str, Any]:
        return {STATE_FORM: "plain"}

    def check_loaded(self, saved_groups: Sequence[Mapping[str, Any]],
                     saved_state: Mapping[Any, Mapping[str, Any]]) -> None:
        pass

    def load_stored(self, param_groups: Sequence[Mapping[str, Any]], state: Mapping,
                    saved_groups: Sequence[Mapping[str, Any]],
                    saved_state: Mapping[Any, Mapping[str, Any]]) -> None:
        pass

    def plain_state_dict(self, sd: dict[str, Any],
                         param_groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        groups = [{k: v for k, v in group.items() if k != STATE_FORM}
                  for group in sd["param_groups"]]
        return {**sd, "param_groups": groups}

    # ------------------------------------------------------------ the step

    def key(self, p: Tensor) -> Any:
        return None

    def one_tensor(self, sizes: Sequence[int]) -> bool:
        return True

    def stored_names(self, names: Sequence[str], p: Tensor) -> list[str]:
        return list(names)

    def layouts(self, layouts: Mapping[str, Layout]) -> dict[str, Layout]:
        return dict(layouts)

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

    def compile_options(self, bucket: Bucket) -> dict[str, Any]:
        """inductor options of a compiled step of ``bucket`` (none: inductor's defaults)."""
        return {}


PLAIN = BucketPolicy()


_policies: type[BucketPolicy] = BucketPolicy


def use_policies(cls: type[BucketPolicy]) -> None:
    """Make ``cls`` the provider of the optimizers' policies (``cls.from_keywords`` and
    ``cls.converter``). ``optimkit.precision`` calls it when imported: the core never imports
    it, and ``optimkit.recipes`` imports it."""
    global _policies
    _policies = cls


def policies() -> type[BucketPolicy]:
    """The class that provides the optimizers' policies (see :func:`use_policies`)."""
    return _policies
