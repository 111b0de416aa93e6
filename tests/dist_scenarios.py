"""What the distributed tests run on each rank (see ``tests/dist_harness.py`` for the launch).

Every scenario trains the same small float64 model for ``STEPS`` steps, each rank on its own
batch, and reports how far the result is from a run without the distributed wrapper:

* ``ddp`` / ``ddp-flat``: ``DistributedDataParallel``; compared with one process on the
  concatenated batch.
* ``fsdp`` / ``fsdp-flat`` / ``fsdp-compile``: FSDP2 ``fully_shard`` per layer and at the root,
  so params are DTensors sharded on dim 0. The layer widths (5, 3, 1) do not divide by 2: the
  shards are uneven and rank 1 holds an empty shard of the last layer. A speed mode may
  instead be refused when the optimizer is built; the scenario then reports the message.
* ``zero-save`` / ``zero-load``: ``ZeroRedundancyOptimizer(optimizer_class=...)`` under DDP;
  the save run checkpoints at step ``SAVE_AT``, the load run (a separate launch: new
  processes, new process group) builds everything afresh, loads, continues, and compares with
  the uninterrupted run bit for bit.
* ``zero-flat-...``: the same with ``flat=True`` passed through ZeRO; every ZeRO load goes into
  an optimizer that has stepped already (its cached bucket lists and flat buffers exist).
* ``dcp-save`` / ``dcp-load``: the same with FSDP2 and ``torch.distributed.checkpoint``
  (``get_state_dict`` / ``dcp.save`` / ``dcp.load`` / ``set_state_dict``); ``dcp-flat-...``
  with a DDP model (replicated params) and ``flat=True``.
* ``dcp-eval-save`` / ``dcp-eval-load`` (optimizers with transitions, Schedule-Free): FSDP2,
  ``opt.eval()`` before the DCP checkpoint (the model saved at its averaged point, the mode in
  the param groups); the load run resumes in eval mode, ``opt.train()``, continues, and
  ``opt.eval()`` again must give the uninterrupted run's averaged params bit for bit.
* ``fsdp-other-shapes``: the FSDP2 optimizer state of a model of other shapes, handed over in
  memory, is refused at load and changes nothing.
* ``whole-...`` (issue 22): recipes with a part that needs each full tensor, over DTensor
  params sharded on dim 0 and fed the same gradients as one process (so the runs agree bit
  for bit); ``whole-on-shards`` runs the part on shards as main did; ``whole-refused`` shards
  along dim 1. Their cases are :func:`whole_cases`.

The cases are every optimizer of the test database (``tests/optim_db.py``) plus
``optimkit.Lookahead`` around ``torch.optim.Adam``; :func:`cases` is the one place that reads
the database.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

STEPS = 12
SAVE_AT = 5
BATCH = 8
WIDTHS = (4, 5, 3, 1)  # Linear(4, 5), Linear(5, 3), Linear(3, 1): dim 0 of 5, 3, 1


@dataclasses.dataclass(frozen=True)
class Case:
    """One optimizer to run: ``factory(params, **kwargs)`` (also ZeRO's ``optimizer_class``)."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    kwargs: Mapping[str, Any]
    # whether the speed modes (flat/compile) apply: False for a foreign inner optimizer
    speed_modes: bool = True


def lookahead_torch_adam(params, lr=1e-2, **kwargs):
    """``optimkit.Lookahead(torch.optim.Adam(...), k=3)``: the wrapper, around torch's Adam."""
    import optimkit

    return optimkit.Lookahead(torch.optim.Adam(params, lr=lr, **kwargs), k=3, alpha=0.5)


def kwargs_of(info) -> dict[str, Any]:
    """The keywords a test database entry runs with here: its first setting with weight decay
    (so that those paths run too), over its pinned keywords."""
    settings = [s for s in info.settings if s.get("weight_decay")] or list(info.settings)
    return {**info.pinned, **settings[0]}


WRAPPER = "lookahead-torch-adam"


@functools.cache
def cases() -> dict[str, Case]:
    import optim_db

    table = {info.name: Case(info.name, info.factory, kwargs_of(info)) for info in optim_db.DB}
    table[WRAPPER] = Case(WRAPPER, lookahead_torch_adam, {"weight_decay": 0.01}, speed_modes=False)
    import whole_recipes

    for name, (factory, kwargs) in whole_recipes.WHOLE_CASES.items():
        table[name] = Case(name, factory, kwargs)
    return table


def has_whole_part(factory) -> bool:
    """Whether an optimizer class's recipe has a part that needs each full tensor."""
    recipe = getattr(factory, "recipe", None)
    return recipe is not None and any(part.whole for part in recipe.parts)


def whole_cases() -> list[str]:
    """The cases of the whole-tensor tests (issue 22): every test database entry whose recipe
    has a ``whole`` part, and the test-local recipes of ``tests/whole_recipes.py``."""
    import optim_db
    import whole_recipes

    return [info.name for info in optim_db.DB if has_whole_part(info.factory)] + list(
        whole_recipes.WHOLE_CASES)


def build(case: Case, params, **speed) -> torch.optim.Optimizer:
    """The case's optimizer; speed options go to the constructor or through ``accelerate``."""
    import optimkit

    try:
        takes = set(inspect.signature(case.factory).parameters)
    except (TypeError, ValueError):
        takes = set()
    if set(speed) <= takes:
        return case.factory(params, **case.kwargs, **speed)
    return optimkit.accelerate(case.factory(params, **case.kwargs), **speed)


# ---------------------------------------------------------------------------- model and data
def make_model() -> torch.nn.Sequential:
    gen = torch.Generator().manual_seed(0)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(WIDTHS, WIDTHS[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out, dtype=torch.float64), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        model[2].bias.zero_()  # a zero-norm tensor: the trust ratios' special case
    return model


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7919 * step + rank)
    x = torch.randn(BATCH, WIDTHS[0], generator=gen, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True))


def full_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [batch(step, rank) for rank in range(dist.get_world_size())]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def train(model, opt, start: int, stop: int, data: Callable[[int], tuple]) -> None:
    for step in range(start, stop):
        x, y = data(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _rank_data(step: int):
    return batch(step, dist.get_rank())


def _full(p: torch.Tensor) -> torch.Tensor:
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()


def rel_error(got, want) -> float:
    """The largest per-tensor ``||got - want|| / ||want||`` (absolute where ``want`` is 0)."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        scale = float(torch.linalg.vector_norm(w)) or 1.0
        worst = max(worst, float(torch.linalg.vector_norm(g - w)) / scale)
    return worst


def max_abs(got, want) -> float:
    return max(float((g - w).abs().max()) if g.numel() else 0.0 for g, w in zip(got, want))


@functools.cache
def _single_process(name: str) -> tuple[torch.Tensor, ...]:
    """The case run on one process over the concatenated batches (the unsharded reference)."""
    model = make_model()
    opt = build(cases()[name], model.parameters())
    train(model, opt, 0, STEPS, full_batch)
    return tuple(p.detach().clone() for p in model.parameters())


# ---------------------------------------------------------------------------------- scenarios
def _ddp(case: str, group, workdir: Path, **speed) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    model = make_model()
    ddp = DistributedDataParallel(model, process_group=group)
    opt = build(cases()[case], ddp.parameters(), **speed)
    train(ddp, opt, 0, STEPS, _rank_data)
    return {"rel": rel_error([_full(p) for p in model.parameters()], _single_process(case))}


def _sharded_model(group) -> torch.nn.Sequential:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard

    mesh = DeviceMesh.from_group(group, "cpu")
    model = make_model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _fsdp(case: str, group, workdir: Path, **speed) -> dict:
    from torch.distributed.tensor.debug import CommDebugMode

    model = _sharded_model(group)
    try:
        opt = build(cases()[case], model.parameters(), **speed)
    except (ValueError, TypeError) as error:
        if not speed:
            raise
        return {"refused": f"{type(error).__name__}: {error}"}
    train(model, opt, 0, STEPS - 1, _rank_data)
    x, y = _rank_data(STEPS - 1)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    with CommDebugMode() as comm:  # the collectives of one optimizer step
        opt.step()
    executor = getattr(opt, "_executor", None)
    return {
        "rel": rel_error([_full(p) for p in model.parameters()], _single_process(case)),
        "collectives": comm.get_total_counts(),
        # False where a compiled step fell back to eager (it would still match)
        "compiled": executor is not None and executor.compile,
    }


def _zero_run(case: Case, group, steps: tuple[int, int], state: dict | None = None, **speed):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    model = make_model()
    ddp = DistributedDataParallel(model, process_group=group)
    zero = ZeroRedundancyOptimizer(
        ddp.parameters(), optimizer_class=case.factory, process_group=group, **case.kwargs,
        **speed,
    )
    if state is not None:
        # load into an optimizer that has stepped already: its state, cached bucket lists and
        # flat buffers exist
        train(ddp, zero, steps[0], steps[0] + 2, _rank_data)
        model.load_state_dict(state["model"])
        zero.load_state_dict(state["optim"])
    train(ddp, zero, *steps, _rank_data)
    return model, zero


def _zero_save(case: str, group, workdir: Path, **speed) -> dict:
    straight, _ = _zero_run(cases()[case], group, (0, STEPS), **speed)
    model, zero = _zero_run(cases()[case], group, (0, SAVE_AT), **speed)
    zero.consolidate_state_dict(to=0)
    if dist.get_rank() == 0:
        torch.save(
            {
                "model": model.state_dict(),
                "optim": zero.state_dict(),
                "straight": [p.detach() for p in straight.parameters()],
            },
            workdir / f"zero{_suffix(speed)}-{case}.pt",
        )
    return {}


def _suffix(speed) -> str:
    return "".join(f"-{name}" for name, on in sorted(speed.items()) if on)


def _zero_load(case: str, group, workdir: Path, **speed) -> dict:
    cases()  # optimkit imported: its param groups' values (Kron's schedule) load weights_only
    saved = torch.load(workdir / f"zero{_suffix(speed)}-{case}.pt", weights_only=True)
    model, _ = _zero_run(cases()[case], group, (SAVE_AT, STEPS), saved, **speed)
    return {"max_abs": max_abs([p.detach() for p in model.parameters()], saved["straight"])}


def _ddp_model(group) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(make_model(), process_group=group)


def _dcp_save(case: str, group, workdir: Path, wrap=None, **speed) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    wrap = wrap or _sharded_model
    name = f"dcp{_suffix(speed)}-{case}"
    straight = wrap(group)
    train(straight, build(cases()[case], straight.parameters(), **speed), 0, STEPS, _rank_data)
    full = [_full(p) for p in straight.parameters()]
    model = wrap(group)
    opt = build(cases()[case], model.parameters(), **speed)
    train(model, opt, 0, SAVE_AT, _rank_data)
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save(
        {"model": model_sd, "optim": optim_sd},
        checkpoint_id=workdir / name, process_group=group,
    )
    if dist.get_rank() == 0:
        torch.save(full, workdir / f"{name}-straight.pt")
    return {}


def _dcp_load(case: str, group, workdir: Path, wrap=None, **speed) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    wrap = wrap or _sharded_model
    name = f"dcp{_suffix(speed)}-{case}"
    model = wrap(group)
    opt = build(cases()[case], model.parameters(), **speed)
    model_sd, optim_sd = get_state_dict(model, opt)
    loaded = {"model": model_sd, "optim": optim_sd}
    dcp.load(loaded, checkpoint_id=workdir / name, process_group=group)
    set_state_dict(
        model, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"]
    )
    train(model, opt, SAVE_AT, STEPS, _rank_data)
    straight = torch.load(workdir / f"{name}-straight.pt", weights_only=True)
    return {"max_abs": max_abs([_full(p) for p in model.parameters()], straight)}


# ------------------------------------------------------------- precision policies under FSDP2
# A model wide enough for 8-bit state (a weight of >= 4096 elements). "even": Linear(64, 128),
# each rank's shard 64 rows = 4096 elements = 16 whole blocks of 256, so the blocks are the
# unsharded run's; "uneven": Linear(64, 100), 50 rows = 3200 elements per shard, so the blocks
# restart mid-block at rank 1's first element (the documented difference).
POLICY_IN = 64
POLICY_ROWS = {"even": 128, "uneven": 100}
POLICIES = {
    "8bit": (torch.float32, {"state_bits": 8}),
    "stochastic": (torch.bfloat16, {"param_update": "stochastic"}),
}


def _policy_model(rows: int, dtype: torch.dtype) -> torch.nn.Sequential:
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(POLICY_IN, rows), torch.nn.Tanh(), torch.nn.Linear(rows, 1)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model.to(dtype)


def _policy_batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(104729 * step + rank)
    x = torch.randn(BATCH, POLICY_IN, generator=gen)
    return x, torch.sin(x.sum(1, keepdim=True) / 8)


def _policy_train(model, opt, dtype, start: int, stop: int, data) -> None:
    for step in range(start, stop):
        x, y = data(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x.to(dtype)).float(), y).backward()
        opt.step()


def _policy_optimizer(case: str, params, keywords) -> torch.optim.Optimizer:
    # the same seed of the random bits on every rank and in the unsharded run
    return build(cases()[case], params, generator=torch.Generator().manual_seed(5), **keywords)


def _sharded_policy_model(group, rows: int, dtype: torch.dtype) -> torch.nn.Module:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = DeviceMesh.from_group(group, "cpu")
    # gradients reduced in float32, as the single process computes them
    mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    model = _policy_model(rows, dtype)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh, mp_policy=mp)
    return fully_shard(model, mesh=mesh, mp_policy=mp)


def _policy_rank_data():
    rank = dist.get_rank()
    return lambda step: _policy_batch(step, rank)


def _dcp_policy(case: str, group, workdir: Path, policy: str, load: bool) -> dict:
    """DCP of an FSDP2 model under a policy (uneven shards: the scales are padded): saved at
    ``SAVE_AT`` by one launch, loaded by a later one into new processes, and continued; the
    result is compared with the uninterrupted run bit for bit."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    dtype, keywords = POLICIES[policy]
    name = f"dcp-{policy}-{case}"
    rows = POLICY_ROWS["uneven"]
    data = _policy_rank_data()
    model = _sharded_policy_model(group, rows, dtype)
    opt = _policy_optimizer(case, model.parameters(), keywords)
    if not load:
        straight = _sharded_policy_model(group, rows, dtype)
        _policy_train(straight, _policy_optimizer(case, straight.parameters(), keywords), dtype,
                      0, STEPS, data)
        full = [_full(p) for p in straight.parameters()]
        _policy_train(model, opt, dtype, 0, SAVE_AT, data)
        model_sd, optim_sd = get_state_dict(model, opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=workdir / name,
                 process_group=group)
        if dist.get_rank() == 0:
            torch.save(full, workdir / f"{name}-straight.pt")
        return {}
    model_sd, optim_sd = get_state_dict(model, opt)
    loaded = {"model": model_sd, "optim": optim_sd}
    dcp.load(loaded, checkpoint_id=workdir / name, process_group=group)
    set_state_dict(model, opt, model_state_dict=loaded["model"],
                   optim_state_dict=loaded["optim"])
    _policy_train(model, opt, dtype, SAVE_AT, STEPS, data)
    straight = torch.load(workdir / f"{name}-straight.pt", weights_only=True)
    state = opt.state[model[0].weight]
    return {"max_abs": max_abs([_full(p).float() for p in model.parameters()],
                               [p.float() for p in straight]),
            "codes_dtype": str(state["grad_avg"].dtype)}


def _fsdp_policy(case: str, group, workdir: Path, policy: str, layout: str) -> dict:
    """FSDP2 with a precision policy: the shard's state, the collectives of one step, and the
    distance to one process running the same policy on the concatenated batches."""
    from torch.distributed.tensor.debug import CommDebugMode

    dtype, keywords = POLICIES[policy]
    rows = POLICY_ROWS[layout]
    world = dist.get_world_size()

    def full_data(step):
        parts = [_policy_batch(step, r) for r in range(world)]
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

    single = _policy_model(rows, dtype)
    _policy_train(single, _policy_optimizer(case, single.parameters(), keywords), dtype, 0,
                  STEPS, full_data)

    model = _sharded_policy_model(group, rows, dtype)
    opt = _policy_optimizer(case, model.parameters(), keywords)
    rank_data = _policy_rank_data()

    _policy_train(model, opt, dtype, 0, STEPS - 1, rank_data)
    x, y = rank_data(STEPS - 1)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x.to(dtype)).float(), y).backward()
    with CommDebugMode() as comm:  # the collectives of one optimizer step
        opt.step()
    weight = model[0].weight
    state = opt.state[weight]
    codes = state["grad_avg"]
    out = {
        "rel": rel_error([_full(p).float() for p in model.parameters()],
                         [p.detach().float() for p in single.parameters()]),
        "collectives": comm.get_total_counts(),
        "shard_numel": weight.to_local().numel(),
        "codes_dtype": str(codes.dtype),
        "codes_dtensor": type(codes).__name__ == "DTensor",
    }
    if "grad_avg_absmax" in state:
        out["codes_local_numel"] = codes.to_local().numel()
        out["absmax_numel"] = state["grad_avg_absmax"].to_local().numel()
    return out


def _local_state(opt, param) -> dict[str, torch.Tensor]:
    return {name: value.to_local().clone() for name, value in opt.state[param].items()
            if name != "step"}


def _dequantized(state: Mapping[str, torch.Tensor], name: str, signed: bool) -> torch.Tensor:
    from optimkit.precision import quantize as q

    codes = state[name]
    return q.dequantize(codes, state[name + "_absmax"][: q.num_blocks(codes.numel())], signed)


def _policy_conversion(case: str, group, workdir: Path) -> dict:
    """FSDP2 state handed between policies in memory (``set_optimizer_state_dict`` of another
    policy's ``get_optimizer_state_dict``; uneven shards): 8-bit -> plain is each shard's
    dequantization, plain -> 8-bit gives the same codes and scales back, and the run continued
    from there equals the uninterrupted 8-bit run."""
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    dtype, keywords = POLICIES["8bit"]
    rows = POLICY_ROWS["uneven"]
    data = _policy_rank_data()
    straight = _sharded_policy_model(group, rows, dtype)
    _policy_train(straight, _policy_optimizer(case, straight.parameters(), keywords), dtype, 0,
                  STEPS, data)
    model = _sharded_policy_model(group, rows, dtype)
    weight = model[0].weight
    eight = _policy_optimizer(case, model.parameters(), keywords)
    _policy_train(model, eight, dtype, 0, SAVE_AT, data)
    model.zero_grad(set_to_none=True)
    saved = _local_state(eight, weight)
    plain = _policy_optimizer(case, model.parameters(), {})
    set_optimizer_state_dict(model, plain, get_optimizer_state_dict(model, eight))
    converted = _local_state(plain, weight)
    back = _policy_optimizer(case, model.parameters(), keywords)
    set_optimizer_state_dict(model, back, get_optimizer_state_dict(model, plain))
    again = _local_state(back, weight)
    _policy_train(model, back, dtype, SAVE_AT, STEPS, data)
    return {
        "plain_dtype": str(converted["grad_avg"].dtype),
        "dequantized_max_abs": max(
            (converted[name] - _dequantized(saved, name, name == "grad_avg")).abs().max().item()
            for name in ("grad_avg", "sqr_avg")),
        "codes_back": sorted(again) == sorted(saved)
        and all(torch.equal(again[name], saved[name]) for name in saved),
        "max_abs": max_abs([_full(p) for p in model.parameters()], [_full(p) for p in
                                                                   straight.parameters()]),
    }


def _dcp_8bit_into_plain(case: str, group, workdir: Path) -> dict:
    """The 8-bit DCP checkpoint of ``dcp-8bit-save`` loaded into a plain optimizer: DCP copies
    the codes into the plain template's float tensors (the optimizer's own: they are lost), so
    ``set_state_dict`` must refuse them; the route the message gives (load into an 8-bit
    optimizer, hand its state over in memory) gives each shard's dequantized state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        get_state_dict,
        set_optimizer_state_dict,
        set_state_dict,
    )

    dtype, keywords = POLICIES["8bit"]
    checkpoint = workdir / f"dcp-8bit-{case}"
    model = _sharded_policy_model(group, POLICY_ROWS["uneven"], dtype)
    weight = model[0].weight
    plain = _policy_optimizer(case, model.parameters(), {})
    model_sd, optim_sd = get_state_dict(model, plain)
    loaded = {"model": model_sd, "optim": optim_sd}
    dcp.load(loaded, checkpoint_id=checkpoint, process_group=group)
    refusal = ""
    try:
        set_state_dict(model, plain, model_state_dict=loaded["model"],
                       optim_state_dict=loaded["optim"])
    except ValueError as refused:
        refusal = str(refused)
    eight = _policy_optimizer(case, model.parameters(), keywords)
    model_sd, optim_sd = get_state_dict(model, eight)
    loaded = {"model": model_sd, "optim": optim_sd}
    dcp.load(loaded, checkpoint_id=checkpoint, process_group=group)
    set_state_dict(model, eight, model_state_dict=loaded["model"],
                   optim_state_dict=loaded["optim"])
    set_optimizer_state_dict(model, plain, get_optimizer_state_dict(model, eight))
    saved, converted = _local_state(eight, weight), _local_state(plain, weight)
    return {
        "refusal": refusal,
        "saved_dtype": str(saved["grad_avg"].dtype),
        "dequantized_max_abs": max(
            (converted[name] - _dequantized(saved, name, name == "grad_avg")).abs().max().item()
            for name in ("grad_avg", "sqr_avg")),
    }


def _other_shapes(case: str, group, workdir: Path) -> dict:
    """FSDP2 state of a model of other shapes handed over in memory
    (``set_optimizer_state_dict``): refused at load, naming the param by its FQN and both
    global shapes (the state's DTensors and the params are compared by their global shapes,
    not by their shards'), and nothing changes."""
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    dtype, data = torch.float32, _policy_rank_data()
    other = _sharded_policy_model(group, POLICY_ROWS["even"], dtype)
    other_opt = _policy_optimizer(case, other.parameters(), {})
    _policy_train(other, other_opt, dtype, 0, 2, data)
    model = _sharded_policy_model(group, POLICY_ROWS["uneven"], dtype)
    opt = _policy_optimizer(case, model.parameters(), {})
    _policy_train(model, opt, dtype, 0, 2, data)
    before = [_local_state(opt, p) for p in model.parameters()]
    refusal = ""
    try:
        set_optimizer_state_dict(model, opt, get_optimizer_state_dict(other, other_opt))
    except ValueError as refused:
        refusal = str(refused)
    after = [_local_state(opt, p) for p in model.parameters()]
    return {
        "refusal": refusal,
        "unchanged": all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
                         for a, b in zip(before, after, strict=True)),
    }


# Layouts of the world-size scenarios: "even" (Linear(64, 128): shards of 16 whole blocks, the
# unsharded layout) and "odd" (Linear(64, 102): 51 rows = 3264 elements per shard, a block cut
# at rank 1's first element, yet 26 scales in all as unsharded, so DCP sees equal sizes).
RESHARD_ROWS = {"even": 128, "odd": 102}


def _dcp_8bit_reshard_save(case: str, group, workdir: Path) -> dict:
    """2-rank DCP checkpoints of 8-bit state in both layouts, with the weight's full codes
    and scales (``full_tensor``) for the one-rank load to compare with."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    dtype, keywords = POLICIES["8bit"]
    for layout, rows in RESHARD_ROWS.items():
        model = _sharded_policy_model(group, rows, dtype)
        opt = _policy_optimizer(case, model.parameters(), keywords)
        _policy_train(model, opt, dtype, 0, SAVE_AT, _policy_rank_data())
        model_sd, optim_sd = get_state_dict(model, opt)
        name = workdir / f"dcp-8bit-reshard-{layout}-{case}"
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=name,
                 process_group=group)
        state = opt.state[model[0].weight]
        full = {k: v.full_tensor() for k, v in state.items() if k != "step"}
        if dist.get_rank() == 0:
            torch.save(full, workdir / f"dcp-8bit-reshard-{layout}-{case}-full.pt")
    return {}


def _dcp_8bit_reshard_load(case: str, group, workdir: Path) -> dict:
    """Those checkpoints loaded by one process into an unsharded model (each rank on its own,
    without the process group). "even": the codes and scales are the saved ones, exactly.
    "odd": the scales would land on other blocks (issue 21: the moments came back off by 20 %
    and 37 % of their max, silently), so ``set_state_dict`` refuses."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    dtype, keywords = POLICIES["8bit"]
    out = {}
    for layout, rows in RESHARD_ROWS.items():
        model = _policy_model(rows, dtype)
        opt = _policy_optimizer(case, model.parameters(), keywords)
        _policy_train(model, opt, dtype, 0, 1, lambda step: _policy_batch(step, 0))
        model_sd, optim_sd = get_state_dict(model, opt)
        loaded = {"model": model_sd, "optim": optim_sd}
        name = workdir / f"dcp-8bit-reshard-{layout}-{case}"
        dcp.load(loaded, checkpoint_id=name, no_dist=True)
        groups = [dict(g) for g in opt.param_groups]
        refusal = ""
        try:
            set_state_dict(model, opt, model_state_dict=loaded["model"],
                           optim_state_dict=loaded["optim"])
        except ValueError as refused:
            refusal = str(refused)
        full = torch.load(f"{name}-full.pt", weights_only=True)
        state = opt.state[model[0].weight]
        out[layout] = {
            "refusal": refusal,
            "groups_kept": [dict(g) for g in opt.param_groups] == groups,
            "saved_form": loaded["optim"]["param_groups"][0].get("state_form", ""),
            "exact": all(torch.equal(state[k], v) for k, v in full.items()),
        }
    return out


def _dcp_eval_save(case: str, group, workdir: Path) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    name = f"dcp-eval-{case}"
    straight = _sharded_model(group)
    opt = build(cases()[case], straight.parameters())
    train(straight, opt, 0, SAVE_AT, _rank_data)
    opt.eval()
    opt.train()  # the switches of the checkpointed run, so the rounding is the same
    train(straight, opt, SAVE_AT, STEPS, _rank_data)
    opt.eval()
    full = [_full(p) for p in straight.parameters()]
    model = _sharded_model(group)
    opt = build(cases()[case], model.parameters())
    train(model, opt, 0, SAVE_AT, _rank_data)
    opt.eval()
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=workdir / name,
             process_group=group)
    if dist.get_rank() == 0:
        torch.save(full, workdir / f"{name}-straight.pt")
    return {}


def _dcp_eval_load(case: str, group, workdir: Path) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    name = f"dcp-eval-{case}"
    model = _sharded_model(group)
    opt = build(cases()[case], model.parameters())
    model_sd, optim_sd = get_state_dict(model, opt)
    loaded = {"model": model_sd, "optim": optim_sd}
    dcp.load(loaded, checkpoint_id=workdir / name, process_group=group)
    set_state_dict(model, opt, model_state_dict=loaded["model"],
                   optim_state_dict=loaded["optim"])
    resumed_in_eval = not opt.training
    try:
        opt.step()
        refused = ""
    except RuntimeError as error:
        refused = str(error)
    opt.train()
    train(model, opt, SAVE_AT, STEPS, _rank_data)
    opt.eval()
    straight = torch.load(workdir / f"{name}-straight.pt", weights_only=True)
    return {"max_abs": max_abs([_full(p) for p in model.parameters()], straight),
            "resumed_in_eval": resumed_in_eval, "refused": refused}


# ------------------------------------------------------------ whole tensors under FSDP2 (#22)
# Params of every awkward shape: dim 0 odd (5, 7), smaller than the world size (1), a wide and
# a tall matrix, vectors; each a DTensor sharded on dim 0 as FSDP2 shards it.
WHOLE_SHAPES = ((5, 4), (3, 5), (1, 3), (7, 6), (5,), (1,))
WHOLE_STEPS = 24


def _whole_full_params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [0.5 * torch.randn(shape, generator=gen, dtype=torch.float64)
            for shape in WHOLE_SHAPES]


def _whole_grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1009 * step + 17)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in WHOLE_SHAPES]


def _count_p2p():
    """Patch ``batch_isend_irecv`` to count the bytes this rank sends and its batches."""
    counts = {"bytes": 0, "batches": 0}
    original = dist.batch_isend_irecv

    def counted(ops):
        counts["batches"] += 1
        counts["bytes"] += sum(op.tensor.numel() * op.tensor.element_size() for op in ops
                               if op.op is dist.isend)
        return original(ops)

    return counts, original, counted


def _whole_exact(case: str, group, workdir: Path, on_shards: bool = False,
                 policy: Mapping[str, Any] | None = None, **speed) -> dict:
    """The case over DTensor params sharded on dim 0 (``WHOLE_SHAPES``) against one process
    over the plain tensors, with the same gradients on every rank (so no reduce-scatter
    rounding): params and every state after ``WHOLE_STEPS`` steps, bit for bit. Also the bytes
    one step sends, and the warnings. ``on_shards``: the test-local recipe with its whole part
    NOT marked whole (what main computed: each shard on its own). ``policy``: keywords of a
    precision policy, given to both runs (bf16 state rounds element by element, so the shards
    round as the full tensors do)."""
    import warnings

    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import Shard, distribute_tensor

    factory, kwargs = cases()[case].factory, {**cases()[case].kwargs, **(policy or {})}
    if on_shards:
        import whole_recipes

        factory = whole_recipes.ShardOrthoSGD
    mesh = DeviceMesh.from_group(group, "cpu")
    single = [torch.nn.Parameter(t.clone()) for t in _whole_full_params()]
    sharded = [torch.nn.Parameter(distribute_tensor(t.clone(), mesh, [Shard(0)]))
               for t in _whole_full_params()]
    # a policy's random bits (stochastic rounding of bf16 state): the same seed in both runs
    seed = (lambda: {"generator": torch.Generator().manual_seed(5)}) if policy else dict
    one = factory(single, **kwargs, **seed())
    many = factory(sharded, **kwargs, **seed(), **speed)
    counts, original, counted = _count_p2p()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(WHOLE_STEPS):
            for p, q, g in zip(single, sharded, _whole_grads(step), strict=True):
                p.grad = g.clone()
                q.grad = distribute_tensor(g.clone(), mesh, [Shard(0)])
            one.step()
            if step == WHOLE_STEPS - 1:
                dist.batch_isend_irecv = counted
            try:
                many.step()
            finally:
                dist.batch_isend_irecv = original
    state_gap = 0.0
    names_match = True
    for p, q in zip(single, sharded, strict=True):
        want, got = one.state[p], many.state[q]
        names_match &= sorted(want) == sorted(got)
        for name in want:
            state_gap = max(state_gap, max_abs([_full(got[name])], [want[name]]))
    executor = getattr(many, "_executor", None)
    return {
        "max_abs": max_abs([_full(q) for q in sharded], [p.detach() for p in single]),
        "rel": rel_error([_full(q) for q in sharded], [p.detach() for p in single]),
        "state_max_abs": state_gap,
        "names_match": names_match,
        # the param-shaped states stay sharded (Muon's vectors hold AdamW's state instead)
        "state_dtensor": [type(many.state[q]["momentum_buffer"]).__name__ for q in sharded
                          if "momentum_buffer" in many.state[q]],
        # the dtypes the param-shaped states are stored in, in both runs
        "state_dtypes": sorted({str(t.dtype) for opt in (one, many)
                                for state in opt.state.values() for t in state.values()
                                if t.dim() > 0}),
        "sent_bytes": counts["bytes"],
        "p2p_batches": counts["batches"],
        "param_bytes": sum(t.numel() * 8 for t in _whole_full_params()),
        # optimkit's own (a compiled step falling back to eager), not torch's deprecations
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        "compiled": executor is not None and executor.compile,
    }


def _whole_refused(case: str, group, workdir: Path) -> dict:
    """A param sharded along dim 1 (tensor parallelism): a whole part refuses it, naming the
    part, and no param changes."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = DeviceMesh.from_group(group, "cpu")
    full = _whole_full_params()[3]
    p = torch.nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(1)]))
    opt = cases()[case].factory([p], **cases()[case].kwargs)
    refusal = ""
    for step in range(2):  # the first step creates the state (eagerly), the second is plain
        p.grad = distribute_tensor(_whole_grads(step)[3], mesh, [Shard(1)])
        try:
            opt.step()
        except ValueError as refused:
            refusal = str(refused)
            break
    return {"refusal": refusal, "unchanged": bool(torch.equal(_full(p), full))}

# max_grad_norm under FSDP2: small enough to clip at every step of these problems
CLIP = 0.05


@functools.cache
def _single_process_clipped(name: str) -> tuple[torch.Tensor, ...]:
    """The unsharded run with ``max_grad_norm``: torch's clip_grad_norm_, then the step."""
    model = make_model()
    opt = build(cases()[name], model.parameters())
    for step in range(STEPS):
        x, y = full_batch(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
    return tuple(p.detach().clone() for p in model.parameters())


def _fsdp_clip(case: str, group, workdir: Path) -> dict:
    """``max_grad_norm`` over sharded params: the norm of the full grads (one all-reduce)."""
    from torch.distributed.tensor.debug import CommDebugMode

    model = _sharded_model(group)
    opt = build(cases()[case], model.parameters(), max_grad_norm=CLIP)
    train(model, opt, 0, STEPS - 1, _rank_data)
    x, y = _rank_data(STEPS - 1)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    with CommDebugMode() as comm:
        opt.step()
    return {"rel": rel_error([_full(p) for p in model.parameters()],
                             _single_process_clipped(case)),
            "collectives": comm.get_total_counts()}


SCENARIOS: dict[str, Callable[[str, Any, Path], dict]] = {
    "fsdp-clip": _fsdp_clip,
    "ddp": _ddp,
    "ddp-flat": functools.partial(_ddp, flat=True),
    "fsdp": _fsdp,
    "fsdp-flat": functools.partial(_fsdp, flat=True),
    "fsdp-compile": functools.partial(_fsdp, compile=True),
    "zero-save": _zero_save,
    "zero-load": _zero_load,
    "zero-flat-save": functools.partial(_zero_save, flat=True),
    "zero-flat-load": functools.partial(_zero_load, flat=True),
    "dcp-save": _dcp_save,
    "dcp-load": _dcp_load,
    # DCP with a DDP model (replicated params) and flat mode
    "dcp-flat-save": functools.partial(_dcp_save, wrap=_ddp_model, flat=True),
    "dcp-flat-load": functools.partial(_dcp_load, wrap=_ddp_model, flat=True),
    "fsdp-8bit": functools.partial(_fsdp_policy, policy="8bit", layout="even"),
    "fsdp-8bit-uneven": functools.partial(_fsdp_policy, policy="8bit", layout="uneven"),
    "fsdp-stochastic": functools.partial(_fsdp_policy, policy="stochastic", layout="even"),
    "dcp-8bit-save": functools.partial(_dcp_policy, policy="8bit", load=False),
    "dcp-8bit-load": functools.partial(_dcp_policy, policy="8bit", load=True),
    "fsdp-8bit-convert": _policy_conversion,
    "dcp-8bit-reshard-save": _dcp_8bit_reshard_save,
    "dcp-8bit-reshard-load": _dcp_8bit_reshard_load,
    "dcp-8bit-into-plain-load": _dcp_8bit_into_plain,
    "fsdp-other-shapes": _other_shapes,
    "dcp-eval-save": _dcp_eval_save,
    "dcp-eval-load": _dcp_eval_load,
    "whole-exact": _whole_exact,
    "whole-exact-compile": functools.partial(_whole_exact, compile=True),
    "whole-on-shards": functools.partial(_whole_exact, on_shards=True),
    "whole-exact-bf16-state": functools.partial(
        _whole_exact, policy={"state_dtype": torch.bfloat16}),
    "whole-refused": _whole_refused,
}
# A "-load" scenario reads what its "-save" scenario wrote, in a later launch.
SAVED_BY = {name: name.replace("-load", "-save") for name in SCENARIOS if name.endswith("-load")}
SAVED_BY["dcp-8bit-into-plain-load"] = "dcp-8bit-save"
