"""The optimizer that runs a recipe of stats and steppers."""

from __future__ import annotations

import inspect
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from .clipping import check_max_grad_norm
from .executor import TRANSITION_STREAMS, Executor
from .parts import Part
from .policy import POLICY_KEYWORDS, STATE_FORM, BucketPolicy, Layout, Storage, policies
from .recipe import Recipe, check_recipe
from .rules import CONVENTIONS
from .tensorlists import is_dtensor

# The param-group entry that holds the mode of an optimizer with transitions (True: train), as
# schedulefree's optimizers name it.
MODE = "train_mode"
# torch.optim's state names, read as optimkit's when a torch checkpoint is loaded.
TORCH_STATE_NAMES = {
    "exp_avg": "grad_avg",
    "exp_avg_sq": "sqr_avg",
    "max_exp_avg_sq": "max_sqr_avg",
    "square_avg": "sqr_avg",
    "sum": "sqr_sum",
}
# optimkit's state names as each torch.optim class spells them (``Optimizer.torch_state_dict``).
_ADAM_NAMES = {"grad_avg": "exp_avg", "sqr_avg": "exp_avg_sq", "max_sqr_avg": "max_exp_avg_sq"}
TORCH_FORMATS: dict[str, dict[str, str]] = {
    "SGD": {},
    "Adagrad": {"sqr_sum": "sum"},
    "RMSprop": {"sqr_avg": "square_avg"},
    "Adam": _ADAM_NAMES,
    "AdamW": _ADAM_NAMES,
    "RAdam": _ADAM_NAMES,
    "NAdam": _ADAM_NAMES,
    "Adafactor": {},  # the same names (row_var, col_var, variance, step)
}
# torch.optim group settings that choose how torch runs a step, not what it computes: a
# checkpoint that has them loads (they are dropped).
TORCH_SWITCHES = ("foreach", "fused", "capturable")
# torch.optim group settings optimkit does not implement: only these values load.
TORCH_UNSUPPORTED = {"maximize": False, "differentiable": False}

# torch.optim's implementation keywords, taken by the constructor so that code written for
# torch.optim runs unchanged (see Optimizer's docstring): name -> (torch's default, the values
# optimkit accepts, why the others are refused). None of them reaches the param groups.
TORCH_KEYWORDS: dict[str, tuple[Any, tuple[Any, ...], str]] = {
    "foreach": (None, (None, True, False), ""),
    "fused": (None, (None, True, False), ""),
    "capturable": (False, (False,), "optimkit keeps each param's step counter as a CPU tensor "
                   "and reads it on the host, so its step cannot be captured in a CUDA graph"),
    "differentiable": (False, (False,), "optimkit's step runs under torch.no_grad(); "
                       "differentiating through it is not implemented"),
    "maximize": (False, (False,), "optimkit only minimises; minimise the negated objective "
                 "instead"),
}
# The torch keywords a recipe without a torch.optim twin takes: the ones other optimizer
# libraries (torch_optimizer, pytorch_optimizer) use as well.
COMMON_TORCH_KEYWORDS = ("foreach", "maximize")


def check_torch_keyword(owner: str, name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is one optimkit accepts (see
    ``TORCH_KEYWORDS``): ``True``, ``False`` or ``None`` where those are no-ops, ``False``
    (torch's default) where the feature is not implemented."""
    _, accepted, why = TORCH_KEYWORDS[name]
    if any(value is ok for ok in accepted):
        return
    if why and isinstance(value, bool):
        raise ValueError(f"{owner}: {name}={value!r} is not supported: {why}")
    said = " or ".join(repr(ok) for ok in accepted)
    raise ValueError(f"Invalid {name}: {value!r}; {name} must be {said}")


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


class OptimizerState(defaultdict):
    """``optimizer.state``: torch's default dict of per-param state, counting the entries that
    code outside the optimizer replaces or deletes.

    ``ZeroRedundancyOptimizer.load_state_dict`` writes ``optimizer.state[p] = {...}`` itself,
    and Lightning moves state to a device the same way. The executor's cached bucket lists and
    flat buffers would then hold the old tensors: it compares ``replaced`` before every step and
    takes the new tensors in when it changed.
    """

    def __init__(self, entries: Mapping[Tensor, dict] = ()) -> None:
        super().__init__(dict, entries)
        self.replaced = 0

    def __setitem__(self, param: Tensor, entry: dict) -> None:
        if param in self:
            self.replaced += 1
        super().__setitem__(param, entry)

    def __delitem__(self, param: Tensor) -> None:
        self.replaced += 1
        super().__delitem__(param)

    def __reduce__(self):
        return type(self), (), None, None, iter(self.items())


def _has_dtensor(params: list) -> bool:
    for item in params:
        tensors = item.get("params", ()) if isinstance(item, Mapping) else (item,)
        if isinstance(tensors, Tensor):
            tensors = (tensors,)
        if any(is_dtensor(t) for t in tensors):
            return True
    return False

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
MODE_KEYWORDS: dict[str, Any] = {"compile": False, "flat": None, **POLICY_KEYWORDS,
                                  "max_grad_norm": None}



class Optimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose update is a recipe of stats and steppers.

    Subclasses (the recipes) set three class attributes:

    * ``parts``: the stats and steppers, run in order on every bucket of every param group;
    * ``hypers``: the default hyper-parameters (they override the parts' own defaults);
    * ``reference``: the implementation or paper the recipe reproduces.

    and may set ``transitions = {"train": part, "eval": part}`` (parts declared with
    :func:`optimkit.core.parts.transition`): what :meth:`train` and :meth:`eval` do to the
    params (Schedule-Free's switch between the gradient point and the averaged point). Such an
    optimizer has a mode, kept in every param group as ``train_mode`` (so ``state_dict()``
    saves it and ``load_state_dict`` restores it; a checkpoint without it, torch's or an older
    one, loads in train mode); it starts in train mode, and ``step()`` in eval mode raises
    ``RuntimeError``. Without transitions, ``train()`` and ``eval()`` do nothing and there is
    no mode.

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
      every numeric hyper-parameter is a graph input, so schedules (of ``lr``, ``betas``,
      ``weight_decay``, ...) do not recompile (see ``core/compiled.py``). Without a C++
      compiler it warns and runs eagerly. It turns flat mode on unless ``flat=False`` is given
      or the params are DTensors: over separate tensors the compiled step unrolls per tensor,
      compiles for minutes and runs no faster than eager.
    * ``flat=True``: each (device, dtype) bucket of params, grads and state lives in one
      contiguous buffer, ``p.data`` and ``p.grad`` being views into it; a step is then a few
      kernels over one tensor whatever the number of params (see ``core/flat.py``). Params
      become contiguous; params frozen (``requires_grad=False``) when flat mode starts stay
      out of the buffers, and so do tied params (sharing storage, ``b.data = a.data``): they
      step per tensor, one after the other, and stay tied, as in every mode. Grads keep
      torch's semantics, so flat mode steps exactly the params eager mode steps:
      ``zero_grad()`` sets them to None and the step copies the fresh ones into the buffer;
      ``zero_grad(set_to_none=False)`` keeps the views and saves that copy.
      ``state_dict()`` holds per-param copies in torch's format, so flat and non-flat
      checkpoints interchange. DTensor params (FSDP2) are refused: FSDP2 owns their storage.

    The modes belong to the optimizer, not to its state: ``load_state_dict`` (any format),
    deepcopy, pickling and ``torch.save`` of the optimizer keep them. DTensor params step on
    their local shards (``core/sharded.py``).

    A precision and memory policy, for every recipe and mode (see :mod:`optimkit.precision`):

    * ``state_dtype``: ``None`` (the param's dtype), ``torch.float32`` (fp32 state for bf16
      params: the update is computed in fp32) or ``torch.bfloat16`` (half the state memory);
    * ``state_bits=8``: block-wise 8-bit state for every moment the recipe declares may be
      quantized (tensors of 4096 elements and more; ``{name: 8}`` picks some; float64 params
      included). A ``UserWarning`` when no param group runs a part with such state
      (``SGD(momentum=0)``);
    * ``param_update``: ``"plain"``, ``"stochastic"`` (stochastic rounding into bf16/fp16
      params) or ``"kahan"`` (a compensation buffer in the param's dtype);
    * ``generator``: the ``torch.Generator`` the seed of stochastic rounding is drawn from
      (default: torch's, so ``torch.manual_seed`` reproduces a run).

    ``state_dict()`` holds the state as it is stored (8-bit codes and their ``<name>_absmax``);
    ``load_state_dict`` brings a checkpoint of any policy (or torch.optim's) to this one.

    ``max_grad_norm`` (every recipe; default None, off): the gradients the recipe sees are
    scaled as ``torch.nn.utils.clip_grad_norm_(all params, max_grad_norm)`` would scale them
    before the step, one norm over every param of every group (and of every FSDP2 shard);
    ``p.grad`` is never written (see ``core/clipping.py``). It lives in the param groups, so
    ``state_dict()`` saves it; every group must have the same value.

    torch.optim's implementation keywords are accepted, so that code written for torch.optim
    runs unchanged. A recipe with a torch.optim twin (``torch_class``: SGD, Adagrad, RMSprop,
    Adam, AdamW, RAdam) takes exactly those of its twin's signature; every other recipe takes
    ``foreach`` and ``maximize``. They are consumed by the constructor (and dropped from dicts
    given to ``add_param_group``): they never reach ``param_groups`` or ``state_dict()``.

    * ``foreach`` (``None``, ``True``, ``False``): no effect. optimkit always runs ``_foreach``
      ops over tensor lists; ``foreach=False`` does not select a per-param loop.
    * ``fused`` (``None``, ``True``, ``False``): no effect; the step is the same eager step,
      bit for bit. torch's ``fused=True`` is one hand-written kernel; optimkit's nearest
      modes are ``flat=True`` (a few kernels over one buffer) and ``compile=True``. Neither is
      switched on by ``fused``: flat mode turns the params into views of one buffer, and
      compiling costs seconds to minutes at the first step and needs a C++ toolchain, which
      a one-line port from torch.optim does not expect. Ask for them by name.
    * ``capturable``: only ``False``. The step counters are CPU tensors, read on the host
      (bias corrections, every-k-th-step parts), so the step cannot be captured in a CUDA
      graph.
    * ``differentiable``: only ``False`` (the step runs under ``torch.no_grad()``).
    * ``maximize``: only ``False`` (not implemented; negate the loss).

    A refused value raises ``ValueError`` naming the keyword. Hyper-parameters of the wrong
    type or arity (``lr="1e-3"``, ``betas=0.9``, ``betas=(0.9,)``, ``amsgrad="False"``) raise
    ``ValueError`` naming them at construction (:func:`optimkit.core.rules.like_default`).
    """

    parts: ClassVar[tuple[Part, ...]] = ()
    hypers: ClassVar[dict[str, Any]] = {}
    reference: ClassVar[str] = ""
    # "train" / "eval" -> the transition Optimizer.train() / eval() runs; none: they are no-ops
    transitions: ClassVar[dict[str, Part]] = {}
    recipe: ClassVar[Recipe | None] = None
    # The torch.optim class (by name) whose checkpoints this recipe reads and writes exactly.
    torch_class: ClassVar[str | None] = None
    # The torch.optim keywords the constructor takes (name -> torch's default): those of
    # ``torch_class``'s signature, else COMMON_TORCH_KEYWORDS.
    torch_keywords: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("hypers")
        if "parts" not in cls.__dict__:
            if own is None or not cls.parts:
                return
            own = {**cls.recipe.hypers, **own}  # new defaults for an inherited recipe
        cls.recipe = check_recipe(cls.__name__, cls.parts, own or {}, cls.transitions)
        cls.hypers = dict(cls.recipe.hypers)
        cls.state_inits = dict(cls.recipe.state_inits)
        if cls.torch_class is not None:
            theirs = inspect.signature(getattr(torch.optim, cls.torch_class)).parameters
            names = [k for k in TORCH_KEYWORDS if k in theirs]
        else:
            names = list(COMMON_TORCH_KEYWORDS)
        cls.torch_keywords = {k: TORCH_KEYWORDS[k][0] for k in names if k not in cls.hypers}
        cls.__signature__ = inspect.Signature(
            [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [
                inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                for k, v in {**cls.hypers, **cls.torch_keywords}.items()
            ]
            + [
                inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                for k, v in MODE_KEYWORDS.items()
            ]
        )

    def __init__(self, params: Any, *, compile: bool = False, flat: bool | None = None,
                 state_dtype: torch.dtype | None = None,
                 state_bits: int | Mapping[str, int] | None = None, param_update: str = "plain",
                 generator: torch.Generator | None = None, max_grad_norm: float | None = None,
                 **hypers: Any) -> None:
        cls = type(self)
        if cls.recipe is None:
            raise TypeError("optimkit.Optimizer is abstract: use a recipe such as optimkit.Adam")
        for name in [k for k in hypers if k in cls.torch_keywords]:
            check_torch_keyword(cls.__name__, name, hypers.pop(name))  # never a hyper
        for name in hypers:
            if name not in cls.hypers:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        defaults = {**cls.hypers, **hypers}
        cls.recipe.validate(defaults)
        check_max_grad_norm(max_grad_norm)
        # global clipping and the barriers' optimizer-level values live in every param group,
        # so that state_dict() saves them (see core/parts.py)
        defaults["max_grad_norm"] = max_grad_norm
        defaults.update(cls.recipe.initial_values(defaults))
        policy = policies().from_keywords(
            cls.recipe.storage, cls.recipe.layouts, state_dtype=state_dtype, state_bits=state_bits,
            param_update=param_update, generator=generator,
        )
        defaults.update(policy.group_defaults())
        if cls.recipe.transitions:
            defaults[MODE] = True  # training until eval(): the params are the gradient point
        params = _as_param_list(params)
        if flat is None:
            # compile=True implies flat: a compiled step over separate tensors unrolls per
            # tensor (160 tensors: two minutes to compile, and no faster than eager). Not for
            # DTensor params (FSDP2), which flat mode cannot hold: those compile per tensor.
            flat = bool(compile) and not _has_dtensor(params)
        # flat mode starts once every group is in: its buffers must know which params are
        # tied (share storage) across the groups, and a refused group then moves no param
        self._executor = Executor(cls.recipe, cls.__name__, flat=False, compile=bool(compile))
        self._executor.policy = policy
        # before flat mode moves the params into its buffers
        policy.check(_tensors_of(params), cls.__name__)
        super().__init__(params, defaults)
        self.state = OptimizerState(self.state)
        policy.check_groups(cls.recipe.parts, self.param_groups, cls.__name__)
        if flat:
            self._executor.set_speed(self.param_groups, self.state, compile=None, flat=True)

    # Pickling and deepcopy: torch.optim keeps only defaults, state and param_groups; the speed
    # modes (and flat mode's buffers, which the params are views of) travel in the executor.
    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_executor": self._executor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # torch's load_state_dict calls this on the live optimizer with only state and
        # param_groups: the executor, and so the speed modes, stay as they are. Unpickling and
        # deepcopy bring one; its flat buffers then take the state tensors back.
        copied = state.pop("_executor", None)
        executor = copied or self.__dict__.get("_executor")
        super().__setstate__(state)
        if not isinstance(self.state, OptimizerState):
            self.state = OptimizerState(self.state)
        if executor is None:  # unpickling a checkpoint made before the executor existed
            executor = Executor(type(self).recipe, type(self).__name__, flat=False,
                                compile=False)
        executor.recipe = type(self).recipe
        executor._set_routes()  # its route tests are the recipe's (functions: not pickled)
        self._executor = executor
        if copied is not None:
            executor.state_loaded(self.state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, then the recipe's checks (``ValueError`` naming the
        hyper-parameter; the group is then not added). torch's implementation keywords in the
        group (``{"params": ..., "foreach": True}``) are checked as the constructor checks them
        and left out of the group."""
        cls = type(self)
        if isinstance(param_group, Mapping):
            torch_keys = [k for k in param_group if k in TORCH_KEYWORDS and k not in cls.hypers]
            for name in torch_keys:
                check_torch_keyword(cls.__name__, name, param_group[name])
            if torch_keys:
                param_group = {k: v for k, v in param_group.items() if k not in torch_keys}
        if type(self).recipe.transitions and getattr(self, "param_groups", None):
            # a group joins in the optimizer's mode (its params have no state to move yet)
            param_group = {**param_group, MODE: self.param_groups[0].get(MODE, True)}
        super().add_param_group(param_group)
        try:
            type(self).recipe.validate(self.param_groups[-1])
            check_max_grad_norm(self.param_groups[-1].get("max_grad_norm"))
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
        """Run the recipe once; ``closure`` (if given) is evaluated once, with grad enabled.

        ``RuntimeError``, before the closure runs and with nothing changed, for an optimizer
        with transitions in eval mode (see :meth:`eval`)."""
        if type(self).recipe.transitions and not all(g.get(MODE, True)
                                                     for g in self.param_groups):
            raise RuntimeError(
                f"{type(self).__name__}.step() was called in eval mode: the params are the "
                "averaged point, not the one the gradients are taken at. Call "
                "optimizer.train() before training (and optimizer.eval() before evaluating or "
                "checkpointing); nothing was changed"
            )
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._executor.step(self.param_groups, self.state)
        return loss


    # ------------------------------------------------------------ train / eval
    @property
    def training(self) -> bool:
        """Whether the optimizer is in train mode (always True without transitions)."""
        return all(g.get(MODE, True) for g in self.param_groups)

    @torch.no_grad()
    def train(self) -> None:
        """Switch to train mode: run the recipe's ``"train"`` transition over the params of the
        param groups in eval mode (Schedule-Free: the params become the gradient point ``y``).
        A no-op in train mode, and for a recipe without transitions. Call it before training
        steps, after :meth:`eval`."""
        self._switch("train", True)

    @torch.no_grad()
    def eval(self) -> None:
        """Switch to eval mode: run the recipe's ``"eval"`` transition over the params of the
        param groups in train mode (Schedule-Free: the params become the averaged point
        ``x``, the one to evaluate and to save). A no-op in eval mode, and for a recipe without
        transitions. ``step()`` raises until :meth:`train` is called."""
        self._switch("eval", False)

    def _switch(self, mode: str, training: bool) -> None:
        part = type(self).recipe.transitions.get(mode)
        if part is None:
            return
        groups = [g for g in self.param_groups if g.get(MODE, True) != training]
        if groups:
            self._executor.transition(groups, self.state, part, TRANSITION_STREAMS[mode])
        for group in groups:
            group[MODE] = training

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        if self._executor.flat:  # per-param copies, not views that would carry the whole buffer
            sd["state"] = {
                index: {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
                for index, state in sd["state"].items()
            }
        policy = self._executor.policy
        for group, saved in zip(self.param_groups, sd["param_groups"], strict=True):
            saved.update(policy.saved_entries(group["params"]))
        bad = [
            (index, name)
            for index, state in sd["state"].items()
            for name, value in state.items()
            # (a meta tensor has no values: torch.optim saves it as it is)
            if isinstance(value, Tensor) and value.is_floating_point() and not value.is_meta
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
        """Load optimkit's format or torch.optim's; a state_dict that is refused changes
        nothing (params, state and param groups stay as they were).

        From torch: the state names are translated (``exp_avg`` -> ``grad_avg``, ...), the
        hyper-parameters torch's groups lack (``decoupled_weight_decay``, ``n_sma_threshold``,
        ...) come from this optimizer's defaults, the switches that only choose how torch runs
        (``foreach``, ``fused``, ``capturable``) are dropped. A checkpoint of any precision
        policy is brought to this optimizer's. The speed modes stay as they are.

        The whole state_dict is checked against the recipe before anything is copied;
        ``ValueError``, naming the param group or the param (its index or name in the
        state_dict, group and position, and its ``param_names`` entry where there is one), for:

        * another number of param groups or of params in a group; a group without ``params``
          or ``lr`` (every optimkit and torch.optim group saves them); a hyper-parameter
          value the recipe's rules refuse; a torch.optim setting optimkit does not implement
          (``maximize=True``, ``differentiable=True``);
        * a state name the recipe does not keep (after torch's names are translated; the
          precision policies' ``<name>_absmax``, ``compensation`` and, under a policy, their
          ``step`` are known): the state of another optimizer;
        * a param whose state lacks some of what the recipe keeps for every param that has
          stepped (``step``, ``exp_avg_sq``, ...). A param with no state at all is fine (it
          has not stepped yet), and so is a state that only some param groups use
          (``max_exp_avg_sq`` of ``amsgrad=True``, a momentum buffer) missing: the step
          creates it, as it would have in the run that saved the checkpoint;
        * a state whose shape does not fit its param (see
          :func:`optimkit.core.policy.check_state_shapes`, which reads the states' declared
          layouts): a checkpoint of a model of other shapes; 8-bit codes without their
          scales, or saved as codes and arriving as numbers
          (:func:`optimkit.precision.policy.check_saved_form`).
        """
        groups, state = self._checked_state_dict(state_dict)
        previous = self.state, self.param_groups
        try:
            super().load_state_dict({**state_dict, "state": state, "param_groups": groups})
            # torch keeps a capturable or fused step on its device, and casts other 0-d state
            # (NAdam's mu_product) to the param's dtype and device: counters live on the CPU,
            # in float32, where the parts read them on the host
            counters = {"step", *(name for name, kind in type(self).recipe.storage.items()
                                  if kind is Storage.COUNTER)}
            # (in float32, unless the counter's init declares another dtype: Schedule-Free's
            # float64 sums of weights, taken from the state_dict itself, as torch's cast to a
            # float32 param's dtype would drop their digits)
            inits = type(self).recipe.state_inits
            dtypes = {name: torch.float32 if name == "step" else
                      getattr(inits.get(name), "dtype", torch.float32) for name in counters}
            for entry in self.state.values():
                for name in counters:
                    value = entry.get(name)
                    if isinstance(value, Tensor) and (not value.is_cpu or (
                            name != "step" and value.dtype != dtypes[name])):
                        entry[name] = value.to("cpu", dtypes[name])
            declared = [name for name in counters if dtypes[name] != torch.float32]
            if declared:
                ids = [i for group in state_dict["param_groups"] for i in group["params"]]
                params = [p for group in self.param_groups for p in group["params"]]
                for index, p in zip(ids, params, strict=True):
                    saved, entry = state.get(index), self.state.get(p)
                    for name in declared if saved is not None and entry is not None else ():
                        if isinstance(saved.get(name), Tensor):
                            entry[name] = saved[name].to("cpu", dtypes[name], copy=True)
            self._keep_saved_dtypes(groups, state)
            self._stored_forms().load_stored(self.param_groups, self.state,
                                             state_dict["param_groups"], state)
            self._executor.state_loaded(self.state)
        except BaseException:
            # (checked above, so not expected: a conversion that fails still changes nothing)
            self.state, self.param_groups = previous
            self._executor.state_loaded(self.state)
            raise

    def _keep_saved_dtypes(self, groups: list, saved: Mapping[Any, Any]) -> None:
        """Give the recipe's states of their own shape (:func:`~optimkit.core.parts.own_shape`:
        Kron's factors in ``precondition_dtype``, its int32 probe keys) their saved values in
        their saved dtype: torch's ``load_state_dict`` casts every state of a floating-point
        param to the param's dtype, which rounds an int32 key held in float32 or bfloat16.
        A copy of the saved tensor, on the device torch chose."""
        own = [name for name, layout in type(self).recipe.layouts.items()
               if layout is Layout.OWN]
        if not own:
            return
        for saved_group, group in zip(groups, self.param_groups, strict=True):
            for index, p in zip(saved_group["params"], group["params"], strict=True):
                before, entry = saved.get(index), self.state.get(p)
                if not before or not entry:
                    continue
                for name in own:
                    value, loaded = before.get(name), entry.get(name)
                    if (isinstance(value, Tensor) and isinstance(loaded, Tensor)
                            and loaded.dtype != value.dtype):
                        entry[name] = value.detach().to(loaded.device, copy=True)

    def _checked_state_dict(self, state_dict: Mapping[str, Any]) -> tuple[list, dict]:
        """The param groups and the per-param state (torch's names translated) that
        ``load_state_dict`` hands to torch's, after checking all of it (see there)."""
        cls = type(self)
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(
                state_dict):
            raise ValueError(
                "state_dict: expected an optimizer's state_dict, a dict with 'state' and "
                f"'param_groups'; got {_describe(state_dict)}"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param group(s), {cls.__name__} has "
                f"{len(self.param_groups)}; nothing was loaded"
            )
        groups = []
        for index, (saved, own) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            for name in ("params", "lr"):
                if name not in saved and (name == "params" or name in cls.hypers):
                    raise ValueError(
                        f"param group {index} of the state_dict has no {name!r}, which every "
                        f"optimkit and torch.optim param group saves: not an optimizer's "
                        "state_dict, or a damaged one; nothing was loaded"
                    )
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"param group {index} of the state_dict has {len(saved['params'])} params, "
                    f"{cls.__name__}'s has {len(own['params'])}; nothing was loaded"
                )
            for name, supported in TORCH_UNSUPPORTED.items():
                if name not in cls.hypers and name in saved and bool(saved[name]) != supported:
                    raise ValueError(
                        f"param group {index} of the state_dict has {name}={saved[name]!r}, a "
                        f"torch.optim setting {cls.__name__} does not implement; nothing was "
                        "loaded"
                    )
            dropped = (*TORCH_SWITCHES, *TORCH_UNSUPPORTED, STATE_FORM)
            group = {k: v for k, v in saved.items() if k in cls.hypers or k not in dropped}
            groups.append({**self.defaults, **group})
        for group in groups:
            cls.recipe.validate(group)
            check_max_grad_norm(group.get("max_grad_norm"))

        known = set(cls.state_inits)
        # the state every param that has stepped keeps: that of the parts no hyper switches
        # off (a switched part's state may be missing: switched on after the param's last
        # step, it is created at the next one, in the run that saved it too)
        # (a routed part's only on its branch: the state of the branches a param's state
        # shows it was on, see Part.where)
        always = {name for part in cls.recipe.parts if part.when is None and not part.routes
                  for name in part.state}
        branches: dict[tuple, set[str]] = {}
        for part in cls.recipe.parts:
            if part.when is None and part.routes:
                branches.setdefault(part.routes, set()).update(part.state)
        # the policy that reads the stored forms (a plain optimizer's: the converter) checks
        # its own entries; the declared layouts say which shape each state has
        policy = self._stored_forms()
        layouts = policy.layouts(cls.recipe.layouts)
        renamed: dict[Any, dict] = {}
        for g, (saved, own) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            names = saved.get("param_names") or own.get("param_names")
            for position, (index, p) in enumerate(zip(saved["params"], own["params"],
                                                      strict=True)):
                entry = state_dict["state"].get(index)
                if entry is None:
                    continue
                name = f", {names[position]!r}" if names and position < len(names) else ""
                where = f"param {index!r} (group {g}, position {position}{name})"
                if not isinstance(entry, Mapping):
                    raise ValueError(f"{where}: its state is {_describe(entry)}, not a dict")
                entry = self._renamed(where, entry, known, policy, saved)
                present = {k for k in entry if k in known}
                needed = always.union(*(names for names in branches.values()
                                        if names & present))
                missing = sorted(needed - present)
                # a state of its own shape this param does not use (its init makes no
                # elements: Adafactor's variance of a matrix) may be absent, as torch saves it
                unused = {n: init(p, own) for n in missing if layouts.get(n) is Layout.OWN
                          for init in (cls.state_inits[n],)}
                unused = {n: t for n, t in unused.items() if t.numel() == 0}
                if present and unused:
                    entry = {**entry, **unused}
                    missing = [n for n in missing if n not in unused]
                if present and missing:
                    raise ValueError(
                        f"{where}: its state has {_names(sorted(present))} but lacks "
                        f"{_names(missing)}, which {cls.__name__} keeps for every param that "
                        "has stepped: the state_dict of another optimizer, or a damaged one; "
                        "nothing was loaded"
                    )
                policy.check_loaded_entry(where, index, position, entry, p, saved,
                                          cls.recipe.storage, layouts)
                renamed[index] = entry
        # entries of no listed param: torch keeps them as they are
        for index, entry in state_dict["state"].items():
            if index not in renamed and entry is not None:
                renamed.setdefault(index, entry)
        return groups, renamed

    def _renamed(self, where: str, entry: Mapping[str, Any], known: set[str],
                 policy: BucketPolicy, saved: Mapping[str, Any]) -> dict[str, Any]:
        """A param's saved state with torch's names translated; ``ValueError`` for a name
        neither the recipe nor a precision policy keeps (``policy.own_entry``)."""
        cls = type(self)
        out: dict[str, Any] = {}
        foreign = []
        for saved_name, value in entry.items():
            if value is None:  # (torch.optim once saved an unused momentum buffer as None)
                continue
            name = saved_name if saved_name in known else TORCH_STATE_NAMES.get(
                saved_name, saved_name)
            own = name in known or policy.own_entry(name, known, saved)
            if not own:
                foreign.append(repr(saved_name) + (f" (read as {name!r})" if name != saved_name
                                                   else ""))
            elif name in out:
                raise ValueError(
                    f"{where}: its state has both {name!r} and torch.optim's name for it; "
                    "nothing was loaded"
                )
            out[name] = value
        if foreign:
            raise ValueError(
                f"{where}: {cls.__name__} keeps no state {', '.join(foreign)} (its states: "
                f"{_names(sorted(known)) or 'none'}): the state_dict of another optimizer; "
                "nothing was loaded"
            )
        return out

    def _stored_forms(self) -> BucketPolicy:
        """The policy that reads and writes this optimizer's checkpoints: its own, or for a
        plain optimizer the one that converts other policies' stored forms to plain state."""
        policy = self._executor.policy
        recipe = type(self).recipe
        return policies().converter(recipe.storage, recipe.layouts) if policy.plain else policy

    def state_layouts(self) -> dict[str, Layout]:
        """How each state this optimizer keeps lines up with its param (:class:`Layout`:
        ``PARAM``, ``SCALAR`` or ``OWN``), as declared by the recipe and the policy (8-bit
        block scales, a compensation): what flat mode and a count of state bytes read."""
        return self._executor.layouts()

    def torch_state_dict(self) -> dict[str, Any]:
        """This optimizer's ``state_dict`` as ``torch.optim.<torch_class>`` saves it, so that
        ``torch_optimizer.load_state_dict(opt.torch_state_dict())`` continues exactly.

        The state is renamed (``grad_avg`` -> ``exp_avg``, ...) and the hyper-parameters
        torch's class does not have are left out; ``ValueError`` if one of them is not at its
        default (``RAdam(n_sma_threshold=4)``, ``SGD(decoupled_weight_decay=True)``: torch would
        run another update), or if the recipe reproduces no torch.optim class.

        Under a precision policy the state is converted to torch's form: 8-bit state is
        dequantized and every moment cast to its param's dtype (as torch's own
        ``load_state_dict`` would), the Kahan compensation, the policy's own step counter and
        ``rounding_seed`` are left out. torch continues from there with plain updates; the
        optimizer's own ``state_dict()`` keeps the exact stored form.
        """
        cls = type(self)
        if cls.torch_class is None:
            raise ValueError(f"{cls.__name__} reproduces no torch.optim class: no torch format")
        names = TORCH_FORMATS[cls.torch_class]
        theirs = set(inspect.signature(getattr(torch.optim, cls.torch_class)).parameters)
        sd = self._stored_forms().plain_state_dict(self.state_dict(), self.param_groups)
        groups = []
        for index, group in enumerate(sd["param_groups"]):
            for name, value in group.items():
                if name in cls.hypers and name not in theirs and value != cls.hypers[name]:
                    raise ValueError(
                        f"param group {index} has {name}={value!r}; torch.optim."
                        f"{cls.torch_class} has no such setting, so it would run another update"
                    )
            # torch's settings optimkit keeps at torch's defaults (maximize=False): written out,
            # since not every torch class fills them in when it loads (Adafactor does not)
            fixed = {k: v for k, v in TORCH_UNSUPPORTED.items() if k in theirs}
            groups.append({**fixed, **{k: v for k, v in group.items()
                                       if k not in cls.hypers or k in theirs}})
        # a state of its own shape with no elements is one this param does not use (Adafactor's
        # variance of a matrix): torch keeps no such entry
        unused = {name for name, kind in self.state_layouts().items() if kind is Layout.OWN}
        state = {
            index: {names.get(k, k): v for k, v in entry.items()
                    if not (k in unused and isinstance(v, Tensor) and v.numel() == 0)}
            for index, entry in sd["state"].items()
        }
        return {**sd, "state": state, "param_groups": groups}

    def __repr__(self) -> str:
        head = super().__repr__()
        recipe = " -> ".join(part.name for part in type(self).parts)
        return f"{head}\nRecipe: {recipe}"


def _names(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _describe(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


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
