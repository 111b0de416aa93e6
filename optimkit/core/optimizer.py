"""The optimizer that runs a recipe of stats and steppers."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import compiled, tensorlists
from .flat import FlatStore
from .parts import Init, Part
from .tensorlists import Bucket

# torch.optim's state names, read as optimkit's when a torch checkpoint is loaded.
TORCH_STATE_NAMES = {
    "exp_avg": "grad_avg",
    "exp_avg_sq": "sqr_avg",
    "max_exp_avg_sq": "max_sqr_avg",
    "square_avg": "sqr_avg",
    "sum": "sqr_sum",
}


def _number(value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError("a tensor hyper-parameter must hold exactly one value")
        return float(value.detach().cpu())
    return float(value)


def _nonnegative(name: str, value: Any) -> None:
    if not _number(value) >= 0.0:  # also refuses NaN
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be >= 0")


def _unit_interval(name: str, value: Any) -> None:
    if not 0.0 <= _number(value) < 1.0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be in [0, 1)")


def _betas(name: str, value: Any) -> None:
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"Invalid {name}: {value!r}; expected a tuple of betas") from None
    for i, beta in enumerate(items):
        _unit_interval(f"{name}[{i}]", beta)


def _nus(name: str, value: Any) -> None:
    # QHAdam's immediate discount factors may be 1 (nu = 1 is plain Adam).
    for i, nu in enumerate(value):
        if not 0.0 <= _number(nu) <= 1.0:
            raise ValueError(f"Invalid {name}[{i}]: {nu!r}; {name} must be in [0, 1]")


def _memory_length(name: str, value: Any) -> None:
    # DeepMemory's beta3 = 1 - 1 / len_memory must lie in [0, 1).
    if not _number(value) >= 1.0:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be >= 1")


# One rule per hyper-parameter name, shared by every optimizer.
HYPER_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "lr": _nonnegative,
    "eps": _nonnegative,
    "weight_decay": _nonnegative,
    "momentum": _nonnegative,
    "lr_decay": _nonnegative,
    "initial_accumulator_value": _nonnegative,
    "alpha": _nonnegative,
    "betas": _betas,
    "beta3": _unit_interval,
    "nus": _nus,
    "len_memory": _memory_length,
    "trust_coefficient": _nonnegative,
    "clamp_value": _nonnegative,
}


def validate_hypers(group: Mapping[str, Any], checks: Iterable[Callable[[Mapping], None]] = ()):
    for name, value in group.items():
        check = HYPER_CHECKS.get(name)
        if check is not None:
            check(name, value)
    for extra in checks:
        extra(group)


def _as_param_list(params: Any) -> list:
    if isinstance(params, Tensor):
        raise TypeError(
            "params must be an iterable of Tensors or dicts, got a single "
            f"{torch.typename(params)}; pass [tensor] instead"
        )
    try:
        params = list(params)
    except TypeError:
        raise TypeError(
            f"params must be an iterable of Tensors or dicts, got {type(params).__name__}"
        ) from None
    if not params:
        raise ValueError("params is empty: the optimizer got an empty parameter list")
    return params


# Flat mode's per-tensor fallback is compiled (with compile=True) up to this many tensors.
PER_TENSOR_COMPILE_MAX = 32


class Optimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose update is a recipe of stats and steppers.

    Subclasses (the recipes) set three class attributes:

    * ``parts``: the stats and steppers, run in order on every bucket of every param group;
    * ``hypers``: the default hyper-parameters (they override the parts' own defaults);
    * ``reference``: the implementation or paper the recipe reproduces.

    Hyper-parameters live in ``param_groups``, so ``torch.optim.lr_scheduler`` works unchanged.
    State lives in ``self.state[p]`` under the names the parts declare, with a tensor ``step``;
    ``state_dict()`` is torch's format. A param whose grad is None is skipped entirely (not
    decayed, its state untouched), and ``p.grad`` is never modified.

    NaN or inf gradients do not raise: like torch.optim, the step propagates them into the
    params and the state. Use ``torch.amp.GradScaler`` (which skips such steps) or clip the
    gradients. ``state_dict()`` warns when the state it returns holds NaN or inf.

    Two opt-in speed modes, for every recipe (they run the same parts):

    * ``compile=True``: the composed step of each bucket runs under ``torch.compile``;
      ``lr``, ``betas`` and ``momentum`` are graph inputs, so schedules do not recompile
      (see ``core/compiled.py``). Without a C++ compiler it warns and runs eagerly. It turns
      flat mode on unless ``flat=False`` is given: over separate tensors the compiled step
      unrolls per tensor, compiles for minutes and runs no faster than eager.
    * ``flat=True``: each (device, dtype) bucket of params, grads and state lives in one
      contiguous buffer, ``p.data`` and ``p.grad`` being views into it; a step is then a few
      kernels over one tensor whatever the number of params (see ``core/flat.py``). Params
      become contiguous. ``zero_grad()`` zeroes the grad buffer and keeps the views (it never
      sets grads to None), so a param that got no gradient steps with a zero grad; a param
      whose grad was set to None otherwise (``model.zero_grad()``) is skipped, as usual, by a
      slower per-tensor step. ``state_dict()`` holds per-param copies in torch's format, so
      flat and non-flat checkpoints interchange.
    """

    parts: ClassVar[tuple[Part, ...]] = ()
    hypers: ClassVar[dict[str, Any]] = {}
    reference: ClassVar[str] = ""
    checks: ClassVar[tuple[Callable[[Mapping[str, Any]], None], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "parts" not in cls.__dict__:
            return
        cls.state_inits = _collect_state(cls.parts, cls.__name__)
        read = _collect_hypers(cls.parts, cls.__name__)
        unused = set(cls.__dict__.get("hypers", {})) - set(read)
        if unused:
            raise TypeError(f"{cls.__name__}: hypers {sorted(unused)} are read by no part")
        own = cls.__dict__.get("hypers", {})
        cls.hypers = {**own, **{k: v for k, v in read.items() if k not in own}}
        cls.__signature__ = inspect.Signature(
            [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [
                inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                for k, v in cls.hypers.items()
            ]
            + [
                inspect.Parameter("compile", inspect.Parameter.KEYWORD_ONLY, default=False),
                inspect.Parameter("flat", inspect.Parameter.KEYWORD_ONLY, default=None),
            ]
        )

    def __init__(self, params: Any, *, compile: bool = False, flat: bool | None = None,
                 **hypers: Any) -> None:
        cls = type(self)
        if not cls.parts:
            raise TypeError("optimkit.Optimizer is abstract: use a recipe such as optimkit.Adam")
        for name in hypers:
            if name not in cls.hypers:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        defaults = {**cls.hypers, **hypers}
        validate_hypers(defaults, cls.checks)
        # compile=True implies flat unless flat=False: a compiled step over separate tensors
        # unrolls per tensor (W1 Adam: 2 minutes to compile, and no faster than eager)
        self._flat = bool(compile) if flat is None else bool(flat)
        self._stores: list[list[FlatStore]] = []
        self._compile = bool(compile)
        # param group index -> the last step's buckets, reused while nothing changed
        self._layout: dict[int, _Layout] = {}
        super().__init__(_as_param_list(params), defaults)

    # Pickling and deepcopy: torch.optim keeps only defaults, state and param_groups; the speed
    # modes (and flat mode's buffers, which the params are views of) must travel too. The
    # eager bucket cache is rebuilt on the next step.
    _PICKLED = ("_flat", "_compile", "_stores")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({name: self.__dict__[name] for name in self._PICKLED if name in self.__dict__})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({"_flat": False, "_compile": False, "_stores": [], **state})
        self._layout = {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            validate_hypers(self.param_groups[-1], type(self).checks)
        except ValueError:
            self.param_groups.pop()
            raise
        if self._flat:
            self._stores.append(self._make_stores(self.param_groups[-1]))
        self._layout.clear()

    def set_speed(self, *, compile: bool | None = None, flat: bool | None = None) -> None:
        """Switch the speed modes after construction (``None`` leaves a mode as it is).

        Flat mode, once on, stays on: its params already live in the flat buffers.
        ``compile=True`` with ``flat=None`` turns flat mode on too, as in the constructor.
        """
        if compile and flat is None:
            flat = True
        if flat is not None and bool(flat) != self._flat:
            if not flat:
                raise ValueError("flat: flat mode cannot be turned off once it is on")
            self._flat = True
            self._stores = [self._make_stores(group) for group in self.param_groups]
            for stores in self._stores:
                for store in stores:
                    store.absorb(self.state, list(type(self).state_inits))
        if compile is not None:
            self._compile = bool(compile)
        self._layout.clear()

    def _make_stores(self, group: Mapping[str, Any]) -> list[FlatStore]:
        by_kind: dict[tuple, list[Tensor]] = {}
        for p in group["params"]:
            if p.is_complex() or p.is_sparse:
                raise ValueError("flat=True needs dense real params; got a complex or sparse one")
            by_kind.setdefault((p.device, p.dtype), []).append(p)
        return [FlatStore(params) for params in by_kind.values()]

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Run the recipe once; ``closure`` (if given) is evaluated once, with grad enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Collect first so that a bad gradient is refused before any param changes.
        if self._flat:
            for group, stores in zip(self.param_groups, self._stores, strict=True):
                parts = self._active_parts(group)
                for store in stores:
                    self._step_store(store, group, parts)
            return loss
        work = []
        for index, group in enumerate(self.param_groups):
            parts = self._active_parts(group)
            work.append((group, parts, self._group_buckets(index, group, parts)))
        for group, parts, buckets in work:
            for bucket in buckets:
                self._run(bucket, group, parts)
        return loss

    def _active_parts(self, group: Mapping[str, Any]) -> list[Part]:
        return [part for part in type(self).parts if part.active(group)]

    def _group_buckets(self, index: int, group: Mapping[str, Any], parts: list[Part]) -> list:
        """This step's buckets of ``group``; last step's lists are reused when the same params
        have grads and the same state is in use (saves the per-tensor Python work)."""
        params = group["params"]
        grads = [p.grad for p in params]
        mask = [g is not None for g in grads]
        names = tuple({name: None for part in parts for name in part.state})
        layout = self._layout.get(index)
        if layout is not None and layout.matches(params, mask, names):
            if any(g.is_sparse for g in grads if g is not None):
                self._buckets(group)  # raises the usual error
            return [
                Bucket(b.params, [p.grad for p in b.params], dict(b.state), {})
                for b in layout.buckets
            ]
        buckets = [self._bucket(ps, group, parts) for ps in self._buckets(group).values()]
        if not any(created for b in buckets for created in b.created.values()):
            self._layout[index] = _Layout(params, mask, names, buckets)
        else:
            self._layout.pop(index, None)
        return buckets

    def _step_store(self, store: FlatStore, group: Mapping[str, Any], parts: list[Part]) -> None:
        names = list({name: None for part in parts for name in part.state})
        # Layer-wise parts would see each per-tensor norm spread over its tensor's elements:
        # several extra passes over the buffer, measured slower than stepping per tensor over
        # the views on W1-W3 (W3 LARS: 2.1 s vs 90 ms). So they never get the one-tensor step.
        one_tensor = store.grads_in_place() and not any(part.layerwise for part in parts)
        flat = store.bucket(names) if one_tensor else None
        if flat is not None:
            tensorlists.FLAT_LAYOUT = (store.total, store.lengths, tuple(store.sizes))
            try:
                self._run(flat, group, parts)
            finally:
                tensorlists.FLAT_LAYOUT = None
            return
        params = [p for p in store.params if p.grad is not None]
        if params:
            # Compiling a per-tensor step unrolls over the tensors (~0.25 s of compile each):
            # worth it for a few big ones, not for thousands.
            self._run(
                self._bucket(params, group, parts), group, parts,
                compile=len(params) <= PER_TENSOR_COMPILE_MAX,
            )
            store.absorb(self.state, names)

    def _run(
        self, bucket: Bucket, group: Mapping[str, Any], parts: list[Part], compile: bool = True
    ) -> None:
        if compile and self._compile and not any(bucket.created.values()):
            if compiled.can_compile(bucket.device):
                compiled.run_compiled(bucket, group, parts)
                return
            compiled.warn_eager("no C++ compiler found for inductor")
            self._compile = False
        for part in parts:
            part(bucket, group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the grads; in flat mode the grad buffer is zeroed and the views kept."""
        if not self._flat:
            return super().zero_grad(set_to_none)
        for stores in self._stores:
            for store in stores:
                store.zero_grad()

    def _buckets(self, group: Mapping[str, Any]) -> dict[tuple, list[Tensor]]:
        buckets: dict[tuple, list[Tensor]] = {}
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients; "
                    "no parameter was changed"
                )
            if p.is_complex():
                raise RuntimeError(
                    f"{type(self).__name__} does not support complex parameters; "
                    "optimise torch.view_as_real(p) instead"
                )
            buckets.setdefault((p.device, p.dtype), []).append(p)
        return buckets

    def _bucket(self, params: list[Tensor], group: Mapping[str, Any], parts: list[Part]) -> Bucket:
        inits: dict[str, Init] = {}
        for part in parts:
            inits.update(part.state)
        names = list(inits)
        lists: dict[str, list[Tensor]] = {name: [] for name in names}
        created: dict[str, list[int]] = {}
        all_state = self.state
        for i, p in enumerate(params):
            state = all_state[p]
            for name in names:
                tensor = state.get(name)
                if tensor is None:
                    tensor = state[name] = inits[name](p, group)
                    created.setdefault(name, []).append(i)
                lists[name].append(tensor)
        return Bucket(params, [p.grad for p in params], lists, created)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        if self._flat:  # per-param copies, not views that would carry the whole flat buffer
            sd["state"] = {
                index: {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
                for index, state in sd["state"].items()
            }
        bad = [
            (index, name)
            for index, state in sd["state"].items()
            for name, value in state.items()
            if isinstance(value, Tensor) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ]
        if bad:
            warnings.warn(
                f"{type(self).__name__} state holds NaN or inf in {len(bad)} tensor(s), "
                f"e.g. param {bad[0][0]} {bad[0][1]!r}; the checkpoint carries them",
                RuntimeWarning,
                stacklevel=2,
            )
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load optimkit's or torch.optim's format (torch's state names are translated)."""
        known = set(type(self).state_inits)
        renamed = {}
        for index, state in state_dict["state"].items():
            renamed[index] = {
                (TORCH_STATE_NAMES.get(k, k) if k not in known else k): v for k, v in state.items()
            }
        super().load_state_dict({**state_dict, "state": renamed})
        self._layout.clear()
        for stores in self._stores:
            for store in stores:
                store.readopt(self.state)

    def __repr__(self) -> str:
        head = super().__repr__()
        recipe = " -> ".join(part.name for part in type(self).parts)
        return f"{head}\nRecipe: {recipe}"


class _Layout:
    """The buckets of one param group at one step, with what they depend on."""

    __slots__ = ("params", "mask", "names", "buckets")

    def __init__(self, params: list, mask: list[bool], names: tuple, buckets: list[Bucket]):
        self.params = params
        self.mask = mask
        self.names = names
        # copies of the lists: a part may rebind bucket.state[name] during its step
        self.buckets = [Bucket(b.params, b.grads, dict(b.state), {}) for b in buckets]

    def matches(self, params: list, mask: list[bool], names: tuple) -> bool:
        return params is self.params and names == self.names and mask == self.mask


def _collect_state(parts: Iterable[Part], owner: str) -> dict[str, Init]:
    inits: dict[str, Init] = {}
    for part in parts:
        for name, init in part.state.items():
            if name in inits and inits[name] is not init:
                raise TypeError(
                    f"{owner}: parts disagree on how state {name!r} starts "
                    f"({inits[name].__name__} vs {init.__name__})"
                )
            inits[name] = init
    return inits


def _collect_hypers(parts: Iterable[Part], owner: str) -> dict[str, Any]:
    hypers: dict[str, Any] = {}
    for part in parts:
        for name, default in part.hypers.items():
            hypers.setdefault(name, default)
    return hypers

# Attributes under which wrappers (Lookahead and the like) keep the optimizer they wrap.
INNER_OPTIMIZER_ATTRS = ("optimizer", "base_optimizer", "inner", "_optimizer")


def accelerate(optimizer: Any, *, compile: bool | None = None, flat: bool | None = None) -> Any:
    """Turn on ``compile`` / ``flat`` for an optimkit optimizer or the one a wrapper holds.

    ``optimkit.accelerate(Lookahead(RAdam(params)), compile=True, flat=True)`` reaches the
    inner RAdam through the wrapper's ``optimizer`` attribute (see ``INNER_OPTIMIZER_ATTRS``);
    the wrapper's own work (Lookahead's interpolation every k steps) stays eager.
    Returns ``optimizer``.
    """
    found = []
    pending, seen = [optimizer], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, Optimizer):
            current.set_speed(compile=compile, flat=flat)
            found.append(current)
            continue
        for attr in INNER_OPTIMIZER_ATTRS:
            inner = getattr(current, attr, None)
            if isinstance(inner, torch.optim.Optimizer):
                pending.append(inner)
    if not found:
        raise ValueError(
            f"optimizer: no optimkit optimizer found in {type(optimizer).__name__} "
            f"(looked under {', '.join(INNER_OPTIMIZER_ATTRS)})"
        )
    return optimizer
