"""The optimizer that runs a recipe of stats and steppers."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..precision.policy import ABSMAX_SUFFIX, COMPENSATION, Precision, PrecisionPolicy
from .executor import Executor
from .parts import Part
from .recipe import Recipe, check_recipe
from .rules import CONVENTIONS

# torch.optim's state names, read as optimkit's when a torch checkpoint is loaded.
TORCH_STATE_NAMES = {
    "exp_avg": "grad_avg",
    "exp_avg_sq": "sqr_avg",
    "max_exp_avg_sq": "max_sqr_avg",
    "square_avg": "sqr_avg",
    "sum": "sqr_sum",
}


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


def _tensors_of(params: list) -> list[Tensor]:
    """The tensors of a params argument (tensors, or param-group dicts)."""
    out = []
    for item in params:
        if isinstance(item, Mapping):
            group = item["params"]
            out += [group] if isinstance(group, Tensor) else list(group)
        else:
            out.append(item)
    return out


# The keywords every optimizer takes besides its hyper-parameters: the speed modes and the
# precision and memory policy (see optimkit.precision), with their defaults.
MODE_KEYWORDS: dict[str, Any] = {
    "compile": False, "flat": None, "state_dtype": None, "state_bits": None,
    "param_update": "plain", "generator": None,
}


class Optimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose update is a recipe of stats and steppers.

    Subclasses (the recipes) set three class attributes:

    * ``parts``: the stats and steppers, run in order on every bucket of every param group;
    * ``hypers``: the default hyper-parameters (they override the parts' own defaults);
    * ``reference``: the implementation or paper the recipe reproduces.

    The recipe is checked when the class is created (:func:`optimkit.core.recipe.check_recipe`):
    every read has an earlier provider, no two parts write one state, every hyper-parameter a
    part takes is declared. The parts' rules check the hyper-parameters of every param group.

    Hyper-parameters live in ``param_groups``, so ``torch.optim.lr_scheduler`` works unchanged.
    State lives in ``self.state[p]`` under the names the parts declare, with a tensor ``step``,
    created at a param's first step; ``state_dict()`` is torch's format. A param whose grad is
    None is skipped entirely (not decayed, its state untouched), and ``p.grad`` is never
    modified.

    NaN or inf gradients do not raise: like torch.optim, the step propagates them into the
    params and the state. Use ``torch.amp.GradScaler`` (which skips such steps) or clip the
    gradients. ``state_dict()`` warns when the state it returns holds NaN or inf.

    Two opt-in speed modes, for every recipe (they run the same parts; see
    ``core/executor.py``):

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

    A precision and memory policy, for every recipe and mode (see :mod:`optimkit.precision`):

    * ``state_dtype``: ``None`` (the param's dtype), ``torch.float32`` (fp32 state for bf16
      params: the update is computed in fp32) or ``torch.bfloat16`` (half the state memory);
    * ``state_bits=8``: block-wise 8-bit state for every moment the recipe declares may be
      quantized (tensors of 4096 elements and more; ``{name: 8}`` picks some);
    * ``param_update``: ``"plain"``, ``"stochastic"`` (stochastic rounding into bf16/fp16
      params) or ``"kahan"`` (a compensation buffer in the param's dtype);
    * ``generator``: the ``torch.Generator`` the seed of stochastic rounding is drawn from
      (default: torch's, so ``torch.manual_seed`` reproduces a run).

    ``state_dict()`` holds the state as it is stored (8-bit codes and their ``<name>_absmax``);
    ``load_state_dict`` brings a checkpoint of any policy (or torch.optim's) to this one.
    """

    parts: ClassVar[tuple[Part, ...]] = ()
    hypers: ClassVar[dict[str, Any]] = {}
    reference: ClassVar[str] = ""
    recipe: ClassVar[Recipe | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("hypers")
        if "parts" not in cls.__dict__:
            if own is None or not cls.parts:
                return
            own = {**cls.recipe.hypers, **own}  # new defaults for an inherited recipe
        cls.recipe = check_recipe(cls.__name__, cls.parts, own or {})
        cls.hypers = dict(cls.recipe.hypers)
        cls.state_inits = dict(cls.recipe.state_inits)
        cls.__signature__ = inspect.Signature(
            [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [
                inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                for k, v in cls.hypers.items()
            ]
            + [
                inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                for k, v in MODE_KEYWORDS.items()
            ]
        )

    def __init__(self, params: Any, *, compile: bool = False, flat: bool | None = None,
                 state_dtype: torch.dtype | None = None,
                 state_bits: int | Mapping[str, int] | None = None, param_update: str = "plain",
                 generator: torch.Generator | None = None, **hypers: Any) -> None:
        cls = type(self)
        if cls.recipe is None:
            raise TypeError("optimkit.Optimizer is abstract: use a recipe such as optimkit.Adam")
        for name in hypers:
            if name not in cls.hypers:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        defaults = {**cls.hypers, **hypers}
        cls.recipe.validate(defaults)
        precision = Precision.from_keywords(
            state_dtype=state_dtype, state_bits=state_bits, param_update=param_update,
            generator=generator,
        )
        if not precision.plain:
            # the seed of the random bits is run state: it travels in the param groups, so a
            # resumed run draws what the uninterrupted one would have
            defaults["rounding_seed"] = precision.seed
        # compile=True implies flat unless flat=False: a compiled step over separate tensors
        # unrolls per tensor (160 tensors: two minutes to compile, and no faster than eager)
        self._executor = Executor(
            cls.recipe, cls.__name__, flat=bool(compile) if flat is None else bool(flat),
            compile=bool(compile),
        )
        if not precision.plain:
            self._executor.policy = PrecisionPolicy(precision, cls.recipe.storage)
        params = _as_param_list(params)
        if not precision.plain:  # before flat mode moves the params into its buffers
            precision.check(cls.recipe.storage, _tensors_of(params), cls.__name__)
        super().__init__(params, defaults)

    # Pickling and deepcopy: torch.optim keeps only defaults, state and param_groups; the speed
    # modes (and flat mode's buffers, which the params are views of) travel in the executor.
    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_executor": self._executor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # torch's load_state_dict calls this on the live optimizer with only state and
        # param_groups: the executor, and so the speed modes, stay as they are
        executor = state.pop("_executor", None) or self.__dict__.get("_executor")
        super().__setstate__(state)
        if executor is None:  # unpickling a checkpoint made before the executor existed
            executor = Executor(type(self).recipe, type(self).__name__, flat=False,
                                compile=False)
        executor.recipe = type(self).recipe
        self._executor = executor

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            type(self).recipe.validate(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise
        self._executor.add_group(self.param_groups[-1])

    def set_speed(self, *, compile: bool | None = None, flat: bool | None = None) -> None:
        """Switch the speed modes after construction (``None`` leaves a mode as it is).

        Flat mode, once on, stays on: its params already live in the flat buffers.
        ``compile=True`` with ``flat=None`` turns flat mode on too, as in the constructor.
        """
        self._executor.set_speed(self.param_groups, self.state, compile=compile, flat=flat)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Run the recipe once; ``closure`` (if given) is evaluated once, with grad enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._executor.step(self.param_groups, self.state)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the grads; in flat mode the grad buffer is zeroed and the views kept."""
        if not self._executor.flat:
            return super().zero_grad(set_to_none)
        self._executor.zero_grad()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        if self._executor.flat:  # per-param copies, not views that would carry the whole buffer
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
        policy = self._executor.policy
        stored_forms = any(_policy_entry(name) for state in renamed.values() for name in state)
        if not policy.plain or stored_forms:
            self._keep_stored_forms(state_dict["param_groups"], renamed)
        self._executor.state_loaded(self.state)

    def _keep_stored_forms(self, saved_groups: list, saved_state: Mapping) -> None:
        """torch's ``load_state_dict`` casts every state tensor but ``step`` to its param's
        dtype: put back each loaded tensor in its own dtype (8-bit codes, their scales, fp32
        state of bf16 params), then bring it to this optimizer's policy."""
        policy = self._executor.policy
        if policy.plain:  # a policy's checkpoint into a plain optimizer: back to plain state
            policy = PrecisionPolicy(Precision(), type(self).recipe.storage)
        ids = [i for group in saved_groups for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for saved_id, p in zip(ids, params, strict=True):
            saved = saved_state.get(saved_id)
            if saved is None:
                continue
            state = self.state[p]
            for name, value in saved.items():
                if isinstance(value, Tensor) and name != "step":
                    state[name] = value.to(device=p.device)
            policy.conform(p, state)

    def __repr__(self) -> str:
        head = super().__repr__()
        recipe = " -> ".join(part.name for part in type(self).parts)
        return f"{head}\nRecipe: {recipe}"


def _policy_entry(name: str) -> bool:
    """Whether a state name is a precision policy's own (8-bit scales, Kahan compensation)."""
    return name.endswith(ABSMAX_SUFFIX) or name == COMPENSATION


# Attributes under which wrappers (Lookahead and the like) keep the optimizer they wrap.
INNER_OPTIMIZER_ATTRS = ("optimizer", "base_optimizer", "inner", "_optimizer")


def optimkit_optimizers(optimizer: Any) -> list[Optimizer]:
    """``optimizer`` itself if it is an optimkit optimizer, else the optimkit optimizers a
    wrapper holds (under the attributes ``INNER_OPTIMIZER_ATTRS``, through nested wrappers)."""
    found: list[Optimizer] = []
    pending, seen = [optimizer], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, Optimizer):
            found.append(current)
            continue
        for attr in INNER_OPTIMIZER_ATTRS:
            inner = getattr(current, attr, None)
            if isinstance(inner, torch.optim.Optimizer):
                pending.append(inner)
    return found


def accelerate(optimizer: Any, *, compile: bool | None = None, flat: bool | None = None) -> Any:
    """Turn on ``compile`` / ``flat`` for an optimkit optimizer or the one a wrapper holds.

    ``optimkit.accelerate(Lookahead(torch_or_optimkit_optimizer), compile=True)`` reaches the
    inner optimizer through the wrapper's ``optimizer`` attribute (see
    ``INNER_OPTIMIZER_ATTRS``); the wrapper's own work (Lookahead's interpolation every k steps)
    stays eager. Returns ``optimizer``.
    """
    found = optimkit_optimizers(optimizer)
    if not found:
        raise ValueError(
            f"optimizer: no optimkit optimizer found in {type(optimizer).__name__} "
            f"(looked under {', '.join(INNER_OPTIMIZER_ATTRS)})"
        )
    for inner in found:
        inner.set_speed(compile=compile, flat=flat)
    return optimizer


def rules_for(optimizer: Any) -> Mapping[str, tuple]:
    """The hyper-parameter rules of ``optimizer`` (name -> rules): its recipe's, reached through
    wrappers as :func:`accelerate` does, or torch.optim's conventions (``lr``, ``eps``,
    ``weight_decay``, ``momentum`` >= 0, ``betas`` in [0, 1)) for any other optimizer."""
    found = optimkit_optimizers(optimizer)
    return type(found[0]).recipe.rules if found else CONVENTIONS
