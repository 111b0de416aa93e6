"""How a bucket's state is stored: the kinds of state a part declares (:class:`Storage`) and
the interface the executor calls around the parts (:class:`BucketPolicy`), whose default is
plain storage. A precision or memory policy (:mod:`optimkit.precision`) subclasses it.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
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
        """Whether a state stored this way may be kept in 8 bits."""
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
      ``check_groups(parts, groups, owner)``: the same for the param groups, once they are in
      (a warning where a keyword does nothing); ``group_defaults()``: entries the policy keeps
      in every param group (a random seed);
    * checkpoints: ``saved_entries(params)`` (a param group's entries in ``state_dict()``),
      ``own_entry`` (which saved state names besides the recipe's are the policy's),
      ``check_loaded_entry`` (refuse a param's saved state before anything changes: its
      shapes by the declared layouts, :func:`check_state_shapes`, and the policy's stored
      forms), ``load_stored`` (after torch's ``load_state_dict``: bring the loaded state to
      this policy's form) and ``plain_state_dict`` (a ``state_dict`` in the plain form, for
      ``torch_state_dict``).
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
        """The policy that reads other policies' checkpoints into the plain state of a recipe
        whose states are declared so (the plain policy here: no other policies are loaded)."""
        return PLAIN

    def check(self, params: Sequence[Tensor], owner: str) -> None:
        """``ValueError`` naming a keyword that makes no sense for ``params`` (none here)."""

    def check_groups(self, parts: Sequence[Any], groups: Sequence[Mapping[str, Any]],
                     owner: str) -> None:
        """Check the keywords against the optimizer's param groups, once they are in (a
        precision policy warns where ``state_bits`` quantizes nothing; nothing here)."""

    def group_defaults(self) -> dict[str, Any]:
        """Entries the policy keeps in every param group (none here)."""
        return {}

    # ------------------------------------------------------------ checkpoints
    def saved_entries(self, params: Sequence[Tensor] = ()) -> dict[str, Any]:
        """The entries a saved param group of ``params`` carries besides torch's: its
        :data:`STATE_FORM`."""
        return {STATE_FORM: "plain"}

    def own_entry(self, name: str, known: Collection[str], saved_group: Mapping[str, Any]
                  ) -> bool:
        """Whether a saved state ``name`` that the recipe does not keep (its states:
        ``known``) is the policy's own, in a param group saved as ``saved_group`` (none here)."""
        return False

    def check_loaded_entry(self, where: str, index: Any, position: int, entry: Mapping[str, Any],
                           param: Tensor, saved_group: Mapping[str, Any],
                           storages: Mapping[str, Storage], layouts: Mapping[str, Layout]
                           ) -> None:
        """``ValueError`` naming ``where`` if a param's saved state (``entry``, param ``index``
        at ``position`` of ``saved_group``) does not fit ``param``, before anything changes.
        Here: the shapes of the declared layouts (:func:`check_state_shapes`); a policy adds
        the rules of its stored forms."""
        check_state_shapes(where, entry, storages, layouts, tuple(param.shape))

    def load_stored(self, param_groups: Sequence[Mapping[str, Any]], state: Mapping,
                    saved_groups: Sequence[Mapping[str, Any]],
                    saved_state: Mapping[Any, Mapping[str, Any]]) -> None:
        """After torch's ``load_state_dict``: bring the loaded ``state`` to this policy's form
        (it is in it here)."""

    def plain_state_dict(self, sd: dict[str, Any],
                         param_groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``sd`` (the optimizer's ``state_dict()``) in the plain form, as torch.optim saves
        it: here only the policy's param-group entries left out."""
        groups = [{k: v for k, v in group.items() if k != STATE_FORM}
                  for group in sd["param_groups"]]
        return {**sd, "param_groups": groups}

    # ------------------------------------------------------------ the step

    def key(self, p: Tensor) -> Any:
        """The part of a param's bucket key the policy adds (None: none)."""
        return None

    def one_tensor(self, sizes: Sequence[int]) -> bool:
        """Whether a flat store of tensors of these sizes may step as one tensor."""
        return True

    def stored_names(self, names: Sequence[str], p: Tensor) -> list[str]:
        """The state a bucket of params like ``p`` carries for the recipe's ``names``."""
        return list(names)

    def layouts(self, layouts: Mapping[str, Layout]) -> dict[str, Layout]:
        """The :class:`Layout` of each state a bucket carries, from the recipe's ``layouts``
        (the policy's own state added; none here)."""
        return dict(layouts)

    def arguments(self, group: Mapping[str, Any], bucket: Bucket, flat: bool) -> tuple:
        """Host-side numbers of one bucket's step, handed to ``prepare`` (none here)."""
        return ()

    def collect(
        self, params: list[Tensor], group: Mapping[str, Any], inits: Mapping[str, Init],
        all_state: dict,
    ) -> tuple[dict[str, list[Tensor]], dict[str, list[int]]]:
        """The bucket's state lists by name, creating a param's state at its first step; also which
        tensors were created."""
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
        """Before the parts: hand them working tensors (nothing to do here)."""
        return None

    def finalize(self, bucket: Bucket, group: Mapping[str, Any], prepared: Any,
                 stream: int = 0) -> None:
        """After the parts: write working tensors back (nothing to do here)."""
        pass

    def conform(self, p: Tensor, state: dict[str, Any]) -> None:
        """Bring a param's loaded state to the policy's form (already in it here)."""
        pass

    def compile_options(self, bucket: Bucket) -> dict[str, Any]:
        """inductor options of a compiled step of ``bucket`` (none: inductor's defaults)."""
        return {}


PLAIN = BucketPolicy()


def check_state_shapes(where: str, state: Mapping[str, Any], storages: Mapping[str, Storage],
                       layouts: Mapping[str, Layout], shape: Sequence[int]) -> None:
    """``ValueError`` naming ``where`` (the param), the state and both shapes if a param's
    saved state does not have the shapes its :class:`Layout` declares, so that a load refuses
    it before anything changes (instead of a broadcasting error at the first step):

    * a ``PARAM`` state has the param's ``shape`` (a DTensor's is the global one, like its
      param's), in any dtype;
    * a ``SCALAR`` state is a 0-d tensor; the step counter (:attr:`Storage.COUNTER`) may be a
      Python number, as torch.optim saved it before 1.12;
    * an ``OWN`` state has a shape of its own: not checked here (its policy checks the ones it
      keeps, 8-bit block scales).

    Names without a layout are left to the caller.
    """
    param_shape = tuple(shape)
    for name, value in state.items():
        layout = layouts.get(name)
        if layout is None or layout is Layout.OWN:
            continue
        if storages.get(name) is Storage.COUNTER and isinstance(value, (int, float)) and (
                not isinstance(value, bool)):
            continue
        if not isinstance(value, Tensor):
            raise ValueError(f"{where}: state {name!r} is a {type(value).__name__}, not a tensor")
        scalar = layout is Layout.SCALAR
        if tuple(value.shape) != (() if scalar else param_shape):
            wanted = "a 0-d tensor" if scalar else "shaped like the param"
            raise ValueError(
                f"{where}: state {name!r} has shape {tuple(value.shape)}, but it is {wanted} "
                f"and the param has shape {param_shape}: the state_dict was saved for other "
                "params (a model of other shapes, or its params in another order)"
            )


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
