"""The catalogue: every optimizer by lower-case name, with its paper, year and status.

``optimkit.create``, ``optimkit.available``, ``optimkit list`` and ``optimkit bench`` read it.
How the tests check each optimizer (its reference implementation, settings, tolerances) lives
in the test database (one entry per optimizer here),
https://github.com/optimkit/optimkit/blob/main/tests/optim_db.py.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from . import recipes


@dataclasses.dataclass(frozen=True)
class Reference:
    """What an optimizer reproduces, in words (the implementation or the paper's algorithm)."""

    description: str


@dataclasses.dataclass(frozen=True)
class Entry:
    """One optimizer of the catalogue."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    reference: Reference
    year: int | None = None
    paper: str | None = None
    status: str = "stable"
    aliases: tuple[str, ...] = ()
    # How ``create`` splits a model's params into param groups for this optimizer:
    # ``model_groups(model, options)`` -> param groups, ``options`` being create's grouping
    # keywords (see ``default_model_groups``). None: ``default_model_groups``. The extension
    # point for optimizers that route some params elsewhere (Muon-style optimizers send the
    # embeddings and the head to an auxiliary optimizer).
    model_groups: Callable[[nn.Module, Mapping[str, Any]], list[dict[str, Any]]] | None = None
    # Learning-rate-free or schedule-free (Prodigy, D-Adaptation, Schedule-Free): its published
    # defaults are meant to work untuned. ``optimkit bench`` then also runs it at its defaults,
    # with no tuning and no external lr schedule (AlgoPerf's self-tuning track).
    self_tuning: bool = False
    # ``create``'s keywords that go to ``model_groups`` (in ``options``), not to the optimizer
    # (Muon's ``adam_params``).
    group_keywords: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The first line of the optimizer's docstring."""
        doc = (getattr(self.factory, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def defaults(self) -> dict[str, Any]:
        """The optimizer's default hyper-parameters (a recipe's ``hypers``; for another
        factory, its signature's keyword defaults other than the speed and precision modes)."""
        cls = self.factory if isinstance(self.factory, type) else None
        if cls is not None and getattr(cls, "recipe", None) is not None:
            return dict(cls.hypers)
        try:
            parameters = inspect.signature(self.factory).parameters.values()
        except (TypeError, ValueError):
            return {}
        return {p.name: p.default for p in parameters
                if p.default is not inspect.Parameter.empty}

    @property
    def parts(self) -> tuple[str, ...]:
        """The names of the parts it runs, in order; a part that runs every k-th step shows
        its period and weight (``lookahead(k=6, alpha=0.5)``)."""
        cls = self.factory if isinstance(self.factory, type) else None
        names = []
        for part in getattr(cls, "parts", ()):
            if part.every is None:
                names.append(part.name)
            else:
                shown = ", ".join(f"{k}={cls.hypers[k]}" for k in part.hypers)
                names.append(f"{part.name}({shown})")
        return tuple(names)


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Add an optimizer to the catalogue; a name or alias registered twice raises ``ValueError``."""
    for name in (entry.name, *entry.aliases):
        if name in REGISTRY:
            raise ValueError(f"optimizer {name!r} is registered twice")
        REGISTRY[name] = entry
    return entry


def available(pattern: str | None = None) -> list[str]:
    """The names ``create`` accepts (aliases left out), in the order they were registered.

    ``pattern`` keeps the optimizers whose name or an alias matches it, as ``fnmatch`` does
    (case-insensitive): ``available("adam*")``, ``available("*lars*")``.
    """
    seen: list[str] = []
    for entry in REGISTRY.values():
        if entry.name in seen:
            continue
        if pattern is None or any(fnmatch.fnmatchcase(name, pattern.lower())
                                  for name in (entry.name, *entry.aliases)):
            seen.append(entry.name)
    return seen


def entries() -> list[Entry]:
    """The catalogue's entries, one per optimizer, in the order they were registered."""
    return [REGISTRY[name] for name in available()]


def get(name: str) -> Entry:
    """The entry of an optimizer name or alias (any case); an unknown name raises ``ValueError``."""
    key = name.lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    return REGISTRY[key]


# The prefix of ``create``'s names that wraps the optimizer in ``optimkit.Lookahead``.
LOOKAHEAD_PREFIX = "lookahead_"
# Modules whose params get no weight decay by default (their weights are often not 1-D:
# LayerNorm((h, w)), GroupNorm over conv channels stay 1-D, but the rule is by kind).
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def create(name: str, model_or_params: nn.Module | Iterable[Any], *,
           weight_decay_exclude_1d: bool | None = None,
           no_decay: Callable[[str, torch.Tensor], bool] | Iterable[str] | str | None = None,
           layer_decay: float | None = None, **kwargs: Any) -> torch.optim.Optimizer:
    """Build an optimizer by its lower-case name (``available()`` lists them), from a model or
    from params.

    ``create("adamw", model, lr=1e-3, weight_decay=0.05)``: given an ``nn.Module``, its
    trainable params are grouped (``default_model_groups``):

    * ``weight_decay_exclude_1d=True`` (the default for a model): params with ``ndim <= 1``
      (biases, norm weights), the params of normalisation layers (``NORM_LAYERS``) and the
      names the model's ``no_weight_decay()`` returns (timm's convention), if it has one, get
      ``weight_decay=0``; the others get ``weight_decay`` (the keyword, else the optimizer's
      default). With a zero ``weight_decay`` nothing is split. Each group carries
      ``param_names``.
    * ``no_decay``: more params without weight decay, as ``fnmatch`` patterns of their names
      (``"*.bias"``, ``["pos_embed", "*.gamma"]``) or a function ``(name, param) -> bool``.
    * ``layer_decay`` (in (0, 1]): layer-wise lr decay as in BEiT / timm. Each param's group
      gets ``lr * layer_decay ** (top - depth)``: depth 0 for the params before the first
      block (embeddings, stem), the block's ordinal (1, 2, ...) for the params of a block,
      and the top depth for the params after the last block (final norm, head). A block is
      the name up to its first numbered component (``blocks.3``, ``encoder.layer.11``,
      ``layer2.0``), in the order of ``named_parameters()``; a model without numbered
      components counts its top-level children instead. The deepest params keep ``lr``;
      the groups' lrs are then where torch's schedulers start from.

    The name ``"lookahead_<name>"`` wraps the optimizer in :class:`optimkit.Lookahead`:
    ``lookahead_k`` / ``lookahead_alpha`` are the wrapper's ``k`` and ``alpha``, and so are
    ``k`` / ``alpha`` unless the inner optimizer takes a keyword of that name
    (``create("lookahead_rmsprop", ..., alpha=0.9)`` is RMSprop's alpha, as without the
    prefix).

    Params (an iterable of tensors or of param-group dicts) go to the optimizer as they are;
    the grouping keywords then raise ``ValueError``. Every other keyword goes to the
    optimizer. The registry entry's ``model_groups`` may replace the default grouping.
    """
    wrapper: dict[str, Any] | None = None
    if name.lower() not in REGISTRY and name.lower().startswith(LOOKAHEAD_PREFIX):
        name = name[len(LOOKAHEAD_PREFIX):]
        wrapper = {}
    entry = get(name)
    if wrapper is not None:
        takes = _keywords(entry.factory)
        for key in ("k", "alpha"):
            if LOOKAHEAD_PREFIX + key in kwargs:
                wrapper[key] = kwargs.pop(LOOKAHEAD_PREFIX + key)
            elif key in kwargs and key not in takes:
                wrapper[key] = kwargs.pop(key)
    options = {"weight_decay_exclude_1d": weight_decay_exclude_1d, "no_decay": no_decay,
               "layer_decay": layer_decay,
               **{key: kwargs.pop(key) for key in entry.group_keywords if key in kwargs}}
    if isinstance(model_or_params, nn.Module):
        defaults = getattr(entry.factory, "hypers", {})
        options = {
            **options,
            "weight_decay": kwargs.get("weight_decay", defaults.get("weight_decay", 0.0)),
            "lr": kwargs.get("lr", defaults.get("lr")),
        }
        if "weight_decay" not in defaults and "weight_decay" not in kwargs:
            options["weight_decay"] = None  # the optimizer takes none: no decay groups
        params: Any = (entry.model_groups or default_model_groups)(model_or_params, options)
    else:
        given = [k for k, v in options.items() if v is not None]
        if given:
            raise ValueError(
                f"{given[0]}: the grouping keywords need a model (an nn.Module), got "
                f"{type(model_or_params).__name__}; pass the model, or build the param groups"
            )
        params = model_or_params
    optimizer = entry.factory(params, **kwargs)
    if wrapper is not None:
        from .wrappers import Lookahead

        optimizer = Lookahead(optimizer, **wrapper)
    return optimizer


def _keywords(factory: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def default_model_groups(model: nn.Module, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``create``'s param groups for a model (see ``create``): the decay / no-decay split of
    :func:`optimkit.param_groups`, each group split further by depth under ``layer_decay``.

    ``options``: ``weight_decay`` (None: the optimizer takes none, nothing is split),
    ``lr`` (the base lr ``layer_decay`` scales), ``weight_decay_exclude_1d`` (None: True),
    ``no_decay`` and ``layer_decay``.
    """
    from .training import param_groups

    weight_decay = options.get("weight_decay")
    layer_decay = options.get("layer_decay")
    if layer_decay is not None and (isinstance(layer_decay, bool)
                                    or not isinstance(layer_decay, (int, float))
                                    or not 0.0 < layer_decay <= 1.0):
        raise ValueError(f"Invalid layer_decay: {layer_decay!r}; layer_decay must be in (0, 1]")
    exclude = options.get("weight_decay_exclude_1d")
    exclude = True if exclude is None else exclude
    if not isinstance(exclude, bool):
        raise ValueError(f"Invalid weight_decay_exclude_1d: {exclude!r}; must be True or False")
    rule = _no_decay_rule(model, exclude, options.get("no_decay"))
    if weight_decay is None or (not isinstance(weight_decay, torch.Tensor)
                                and weight_decay == 0):
        groups = param_groups(model, 0.0, no_decay=lambda name, p: False)
        for group in groups:
            del group["weight_decay"]  # the optimizer's own default (or none)
    else:
        groups = param_groups(model, weight_decay, no_decay=rule)
    if layer_decay is None:
        return groups
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    depths = layer_depths(names)
    top = max(depths.values(), default=0)
    lr = options.get("lr")
    if lr is None:
        raise ValueError("layer_decay: the optimizer has no lr to scale")
    split: dict[tuple[int, int], dict[str, Any]] = {}
    for index, group in enumerate(groups):
        for name, p in zip(group["param_names"], group["params"], strict=True):
            depth = depths[name]
            out = split.setdefault((depth, index), {
                **{k: v for k, v in group.items() if k not in ("params", "param_names")},
                "params": [], "param_names": [], "lr": lr * layer_decay ** (top - depth),
            })
            out["params"].append(p)
            out["param_names"].append(name)
    return [split[key] for key in sorted(split)]


def _no_decay_rule(model: nn.Module, exclude_1d: bool,
                   no_decay: Any) -> Callable[[str, torch.Tensor], bool]:
    """The ``(name, param) -> bool`` rule of the params that get no weight decay."""
    hook = None
    patterns: list[str] = []
    if callable(no_decay):
        hook = no_decay
    elif isinstance(no_decay, str):
        patterns = [no_decay]
    elif no_decay is not None:
        try:
            patterns = list(no_decay)
        except TypeError:
            patterns = [None]  # refused below
        if not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"Invalid no_decay: {no_decay!r}; no_decay must be name patterns "
                             "or a function (name, param) -> bool")
    norms: set[int] = set()
    if exclude_1d:
        norms = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS)
                 for p in m.parameters(recurse=False)}
        listed = getattr(model, "no_weight_decay", None)
        if callable(listed):
            patterns += [str(n) for n in listed()]

    def rule(name: str, param: torch.Tensor) -> bool:
        if exclude_1d and (param.ndim <= 1 or id(param) in norms):
            return True
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return True
        return bool(hook(name, param)) if hook is not None else False

    return rule


def layer_depths(names: Iterable[str]) -> dict[str, int]:
    """Each param name's depth for layer-wise lr decay (see ``create``): 0 before the first
    block, the block's ordinal inside one, the top (number of blocks + 1) after the last."""
    names = list(names)
    blocks: dict[str, int] = {}
    depth: dict[str, int] = {}
    after: list[str] = []
    for name in names:
        parts = name.split(".")
        numbered = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if numbered is None:
            if blocks:
                after.append(name)
            else:
                depth[name] = 0
            continue
        block = ".".join(parts[:numbered + 1])
        depth[name] = blocks.setdefault(block, len(blocks) + 1)
    if not blocks:  # no numbered blocks: the top-level children, in order
        children: dict[str, int] = {}
        return {name: children.setdefault(name.split(".")[0], len(children)) for name in names}
    for name in after:
        depth[name] = len(blocks) + 1
    return depth


# The params Muon sends to its AdamW branch besides those of fewer than 2 dimensions: the
# embeddings (by module type) and these names (the output head), as ``fnmatch`` patterns.
MUON_ADAM_MODULES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
MUON_ADAM_NAMES = ("lm_head.*", "*.lm_head.*", "head.*", "*.head.*", "output.*",
                   "classifier.*", "*.classifier.*", "fc.*", "*embed*")


def muon_model_groups(model: nn.Module, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``create("muon", model)``'s param groups: ``default_model_groups``', each split in two,
    the params Muon orthogonalizes and those it steps with AdamW, the latter in a group with
    ``routes={"matrix": False}`` (their matrices too; ``Part.where``). AdamW gets the
    embeddings (``MUON_ADAM_MODULES``: ``nn.Embedding``, ``nn.EmbeddingBag``) and the params
    named like an output head or an embedding (``MUON_ADAM_NAMES``); create's keyword
    ``adam_params`` replaces those names: ``fnmatch`` patterns, or a function
    ``(name, param) -> bool``. The params of fewer than 2 dimensions go to AdamW whatever
    their group (the ``matrix`` route)."""
    chosen = options.get("adam_params", MUON_ADAM_NAMES)
    if isinstance(chosen, str):
        chosen = (chosen,)
    if not callable(chosen):
        patterns = tuple(chosen)
        if not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"Invalid adam_params: {chosen!r}; adam_params must be name "
                             "patterns or a function (name, param) -> bool")
        chosen = lambda name, p: any(fnmatch.fnmatchcase(name, pat)  # noqa: E731
                                     for pat in patterns)
    embeddings = {id(p) for m in model.modules() if isinstance(m, MUON_ADAM_MODULES)
                  for p in m.parameters(recurse=False)}
    groups = []
    for group in default_model_groups(model, options):
        names = group.get("param_names") or [""] * len(group["params"])
        split: dict[bool, dict[str, Any]] = {}
        for name, p in zip(names, group["params"], strict=True):
            aux = id(p) in embeddings or bool(chosen(name, p))
            out = split.setdefault(aux, {**{k: v for k, v in group.items()
                                            if k not in ("params", "param_names")},
                                         "params": [], "param_names": []})
            out["params"].append(p)
            out["param_names"].append(name)
        for aux in sorted(split):
            if aux:
                split[aux]["routes"] = {"matrix": False}
            groups.append(split[aux])
    return groups


def _add(name, factory, reproduces, year, paper, **more):
    register(Entry(name, factory, Reference(reproduces), year, paper, **more))


_add("sgd", recipes.SGD, "torch.optim.SGD", 1951, "https://doi.org/10.1214/aoms/1177729586")
_add("sgd-momentum", recipes.MomentumSGD, "torch.optim.SGD(momentum=0.9)", 1964,
     "https://doi.org/10.1016/0041-5553(64)90137-5", aliases=("sgd-with-momentum",))
_add("adagrad", recipes.Adagrad, "torch.optim.Adagrad", 2011,
     "https://jmlr.org/papers/v12/duchi11a.html")
_add("rmsprop", recipes.RMSprop, "torch.optim.RMSprop", 2012,
     "https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf")
_add("adam", recipes.Adam, "torch.optim.Adam", 2014, "https://arxiv.org/abs/1412.6980")
_add("adamw", recipes.AdamW, "torch.optim.AdamW", 2017, "https://arxiv.org/abs/1711.05101")
_add("amsgrad", recipes.AMSGrad, "torch.optim.Adam(amsgrad=True)", 2018,
     "https://arxiv.org/abs/1904.09237")
_add("radam", recipes.RAdam, "torch.optim.RAdam", 2019, "https://arxiv.org/abs/1908.03265")
_add("qhadam", recipes.QHAdam, "torch_optimizer.QHAdam", 2018,
     "https://arxiv.org/abs/1810.06801")
_add("novograd", recipes.NovoGrad, "torch_optimizer.NovoGrad", 2019,
     "https://arxiv.org/abs/1905.11286")
_add("diffgrad", recipes.DiffGrad, "torch_optimizer.DiffGrad", 2019,
     "https://arxiv.org/abs/1909.11015")
_add("adamod", recipes.AdaMod, "torch_optimizer.AdaMod", 2019, "https://arxiv.org/abs/1910.12249")
_add("deepmemory", recipes.DeepMemory,
     "DeepMemory/deepmemory.py (lessw2020/Best-Deep-Learning-Optimizers), g_prev copied", 2020,
     "https://github.com/lessw2020/Best-Deep-Learning-Optimizers/tree/master/DeepMemory",
     status="experimental")
_add("lars", recipes.LARS, "apex LARC(torch.optim.SGD, clip=False) = LARS paper Alg. 1", 2017,
     "https://arxiv.org/abs/1708.03888")
_add("larc", recipes.LARC, "apex LARC(torch.optim.SGD, clip=True)", 2017,
     "https://arxiv.org/abs/1708.03888")
_add("lamb", recipes.LAMB, "torch_optimizer.Lamb", 2019, "https://arxiv.org/abs/1904.00962")
_add("ralamb", recipes.Ralamb, "mgrankin/over9000 ralamb.py", 2019,
     "https://github.com/mgrankin/over9000")
_add("ranger", recipes.Ranger, "pytorch_ranger.Ranger (RAdam + Lookahead)", 2019,
     "https://github.com/lessw2020/Ranger-Deep-Learning-Optimizer")
_add("rangerlars", recipes.RangerLars, "Lookahead(over9000 Ralamb, k=6, alpha=0.5)", 2019,
     "https://github.com/mgrankin/over9000", aliases=("over9000",))
_add("lookahead", recipes.LookaheadSGD, "Lookahead paper Alg. 1 around torch.optim.SGD", 2019,
     "https://arxiv.org/abs/1907.08610")
_add("lion", recipes.Lion, "Lion paper Alg. 2 (lion_pytorch)", 2023,
     "https://arxiv.org/abs/2302.06675")
# ---- the 2023-25 element-wise optimizers
_add("nadamw", recipes.NAdamW, "torch.optim.NAdam(decoupled_weight_decay=True)", 2016,
     "https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ")
_add("nadam", recipes.NAdam, "torch.optim.NAdam", 2016,
     "https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ")
_add("adopt", recipes.ADOPT, "pytorch_optimizer.ADOPT (clip step**0.25)", 2024,
     "https://arxiv.org/abs/2411.02853")
_add("laprop", recipes.LaProp, "pytorch_optimizer.LaProp", 2020,
     "https://arxiv.org/abs/2002.04839")

# 2023-25: optimizers that mix averages (issue 23)
_add("adan", recipes.Adan, "pytorch_optimizer.Adan (sail-sg/Adan)", 2022,
     "https://arxiv.org/abs/2208.06677")
_add("ademamix", recipes.AdEMAMix, "pytorch_optimizer.AdEMAMix", 2024,
     "https://arxiv.org/abs/2409.03137")
_add("mars", recipes.MARS, "pytorch_optimizer.MARS (MARS-AdamW)", 2024,
     "https://arxiv.org/abs/2411.10438")

# 2023-24: learning-rate-free, one estimate of d over every param (issue 22: barriers)
_add("prodigy", recipes.Prodigy, "prodigyopt.Prodigy", 2023,
     "https://arxiv.org/abs/2306.06101", self_tuning=True)
_add("dadapt-adam", recipes.DAdaptAdam, "dadaptation.DAdaptAdam", 2023,
     "https://arxiv.org/abs/2301.07733", self_tuning=True)
_add("adafactor", recipes.Adafactor, "torch.optim.Adafactor", 2018,
     "https://arxiv.org/abs/1804.04235")
# Schedule-Free: train()/eval() transitions (issue 22)
_add("schedulefree-adamw", recipes.ScheduleFreeAdamW, "schedulefree.AdamWScheduleFreeReference",
     2024, "https://arxiv.org/abs/2405.15682", self_tuning=True)
_add("schedulefree-sgd", recipes.ScheduleFreeSGD, "schedulefree.SGDScheduleFreeReference", 2024,
     "https://arxiv.org/abs/2405.15682", self_tuning=True)
_add("muon", recipes.Muon,
     "torch.optim.Muon (matrices) + muon-optimizer SingleDeviceMuonWithAuxAdam (AdamW branch)",
     2024, "https://kellerjordan.github.io/posts/muon/", model_groups=muon_model_groups,
     group_keywords=("adam_params",))
# 2018/2024: a Kronecker-factored preconditioner (issue 23)
_add("kron", recipes.Kron,
     "pytorch_optimizer.Kron, preconditioner updated every step (probability 1)", 2018,
     "https://arxiv.org/abs/1809.10232", aliases=("psgd-kron",))
# 2024-25: matrix-preconditioned optimizers (issue 23)
_add("soap", recipes.SOAP, "pytorch_optimizer.SOAP (the authors' soap.py)", 2024,
     "https://arxiv.org/abs/2409.11321")
