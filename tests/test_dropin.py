"""Drop-in for torch.optim and timm-style code: torch's implementation keywords, hyper-parameter
types checked at construction, ``create`` from a model, ``available`` patterns and the defaults
``optimkit list`` prints."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from conftest import optims
from helpers import clone_params, make_params, run
from torch import nn

import optimkit
from optimkit.cli import main

# ------------------------------------------------------------------ torch.optim's keywords

# The documented meaning of torch.optim's implementation keywords: the values optimkit takes
# (foreach and fused: any, no effect; the others: torch's default False only).
TORCH_KEYWORDS = {
    "foreach": (None, True, False), "fused": (None, True, False), "capturable": (False,),
    "differentiable": (False,), "maximize": (False,),
}


def _twin(info):
    return getattr(info.factory, "torch_class", None) is not None


def _torch_keywords(info):
    """The implementation keywords of the torch.optim class the recipe reproduces."""
    theirs = inspect.signature(getattr(torch.optim, info.factory.torch_class)).parameters
    return {k: theirs[k].default for k in TORCH_KEYWORDS if k in theirs}


def _accepted_values(info):
    for name in _torch_keywords(info):
        for value in TORCH_KEYWORDS[name]:
            yield f"{name}={value}", (name, value)


def _refused_values(info):
    for name in _torch_keywords(info):
        if True not in TORCH_KEYWORDS[name]:
            yield f"{name}=True", (name, True)


@optims(where=_twin)
def test_signature_has_the_torch_twins_keywords_with_torchs_defaults(info):
    ours = inspect.signature(info.factory).parameters
    theirs = _torch_keywords(info)
    assert theirs  # every twin takes some (foreach at least)
    assert {k: ours[k].default for k in theirs if k in ours} == theirs


@optims(_accepted_values, where=_twin, argnames="info,name,value")
def test_torch_keyword_has_no_effect_on_the_step_or_the_checkpoint(info, name, value):
    """foreach and fused are no-ops (optimkit always runs foreach ops; fused does not switch
    compile on), torch's defaults of the others are accepted: the run is bit-identical and the
    keyword reaches neither the param groups nor the state_dict."""
    plain_params, params = clone_params(make_params()), clone_params(make_params())
    plain = run(info.factory(plain_params, **info.pinned), plain_params, 3)
    opt = run(info.factory(params, **info.pinned, **{name: value}), params, 3)
    for p, q in zip(plain_params, params, strict=True):
        assert torch.equal(p, q)
    assert name not in opt.param_groups[0] and name not in opt.defaults
    sd, expected = opt.state_dict(), plain.state_dict()
    assert sd["param_groups"] == expected["param_groups"]
    for index, state in expected["state"].items():
        assert sd["state"][index].keys() == state.keys()
        assert all(torch.equal(sd["state"][index][k], v) for k, v in state.items())


@optims(_refused_values, where=_twin, argnames="info,name,value")
def test_unimplemented_torch_keyword_is_refused_naming_it(info, name, value):
    with pytest.raises(ValueError, match=f"{name}=True"):
        info.factory(clone_params(make_params()), **info.pinned, **{name: value})
    params = clone_params(make_params())
    opt = info.factory(params[:2], **info.pinned)
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": params[2:], name: value})
    assert len(opt.param_groups) == 1


@optims()
def test_every_recipe_takes_foreach_and_maximize(info):
    params = clone_params(make_params())
    opt = info.factory(params, **info.pinned, foreach=True, maximize=False)
    assert "foreach" not in opt.param_groups[0] and "maximize" not in opt.param_groups[0]
    with pytest.raises(ValueError, match="maximize"):
        info.factory(params, **info.pinned, maximize=True)
    with pytest.raises(ValueError, match="foreach"):
        info.factory(params, **info.pinned, foreach="yes")
    if not _twin(info):  # torch's fused kernels belong to torch's classes
        with pytest.raises(TypeError, match="fused"):
            info.factory(params, **info.pinned, fused=True)


def test_a_group_dict_may_carry_torch_keywords():
    params = clone_params(make_params())
    opt = optimkit.Adam([{"params": params[:2], "foreach": False, "fused": True},
                         {"params": params[2:], "capturable": False}], lr=0.1)
    assert all(k not in g for g in opt.param_groups for k in TORCH_KEYWORDS)
    with pytest.raises(ValueError, match="capturable"):
        optimkit.Adam([{"params": params, "capturable": True}])


# ------------------------------------------------------- hyper-parameter types and arity


def _wrong_types(default):
    """Values of the wrong type or arity for a hyper-parameter whose default is ``default``."""
    if isinstance(default, bool):
        return [str(default), None, 1.0]
    if isinstance(default, int):
        return [str(default), float(default) + 0.5, True, None]
    if isinstance(default, float):
        return [str(default), None, [default], True, torch.full((2,), default)]
    if isinstance(default, tuple):
        return [default[0], default[:-1], (*default, default[-1]), (*default[:-1], "0.9")]
    if default is None:  # an optional number (AdEMAMix's t_alpha_beta3)
        return ["10", True, [10.0]]
    if isinstance(default, torch.dtype):  # a compute dtype (Muon's ns_dtype)
        return ["bfloat16", None, torch.int64]
    if isinstance(default, str):  # a choice among names (MARS's mars_type)
        return [1, None, "Adamw"]
    if isinstance(default, torch.dtype):  # a dtype (Kron's precondition_dtype)
        return ["float32", None, 32]
    raise AssertionError(f"no wrong values for a default of type {type(default).__name__}")


def _hypers(info):
    for name, default in info.factory.hypers.items():
        for value in _wrong_types(default):
            yield name, value


@optims()
def test_wrong_type_or_arity_is_refused_at_construction_naming_the_keyword(info):
    """Generic from the recipe's defaults: a float default takes a number, an int default an
    integer, a bool default True or False, a tuple default a tuple of its length; refused with
    a ValueError naming the hyper-parameter, in the constructor, a group dict and
    add_param_group (which then adds nothing)."""
    params = clone_params(make_params())
    opt = info.factory(params[:2], **info.pinned)
    for name, value in _hypers(info):
        case = f"{info.name}({name}={value!r})"
        kwargs = {**info.pinned, name: value}
        with pytest.raises(ValueError, match=name):
            info.factory(params, **kwargs)
            pytest.fail(f"{case} was accepted")
        with pytest.raises(ValueError, match=name):
            info.factory([{"params": params, name: value}], **info.pinned)
            pytest.fail(f"{case} was accepted in a group dict")
        with pytest.raises(ValueError, match=name):
            opt.add_param_group({"params": params[2:], name: value})
            pytest.fail(f"{case} was accepted by add_param_group")
        assert len(opt.param_groups) == 1, case


@optims()
def test_values_torch_accepts_stay_accepted(info):
    """An int for a float, a list for a tuple, and (as torch.optim) a 0-d tensor lr."""
    params = clone_params(make_params())
    hypers = info.factory.hypers
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in hypers.items()}
    kwargs.update({k: int(v) for k, v in hypers.items()
                   if type(v) is float and math.isfinite(v) and v == int(v)})
    kwargs["lr"] = torch.tensor(float(hypers["lr"]))
    run(info.factory(params, **kwargs), params, 2)


def test_the_messages_say_what_is_expected():
    params = clone_params(make_params())
    with pytest.raises(ValueError, match=r"lr: '1e-3'; lr must be a number"):
        optimkit.Adam(params, lr="1e-3")
    with pytest.raises(ValueError, match=r"betas must be a tuple of 2 values"):
        optimkit.Adam(params, betas=(0.9,))
    with pytest.raises(ValueError, match=r"amsgrad: 'False'; amsgrad must be True or False"):
        optimkit.Adam(params, amsgrad="False")


# ---------------------------------------------------------------------------- the factory


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm((2, 4))  # a 2-D norm weight: excluded as a norm layer
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.norm(x))


class _ViT(nn.Module):
    """Embeddings, three numbered blocks, a final norm and a head, as a ViT names them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pos_embed = nn.Parameter(torch.randn(2, 4))
        self.embed = nn.Embedding(5, 4)
        self.blocks = nn.ModuleList([_Block() for _ in range(3)])
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 3)

    def no_weight_decay(self):  # timm's convention
        return {"pos_embed"}

    def forward(self, idx):
        x = self.embed(idx) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def _names(opt):
    return [g["param_names"] for g in opt.param_groups]


def test_create_from_a_model_puts_1d_norm_and_listed_params_in_a_no_decay_group():
    model = _ViT()
    opt = optimkit.create("adamw", model, weight_decay=0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    decayed = ["embed.weight", *[f"blocks.{i}.fc.weight" for i in range(3)], "head.weight"]
    assert _names(opt)[0] == decayed
    assert set(_names(opt)[1]) == {n for n, _ in model.named_parameters()} - set(decayed)
    assert "pos_embed" in _names(opt)[1] and "blocks.0.norm.weight" in _names(opt)[1]


def test_create_decay_switches_and_hooks():
    model = _ViT()
    everything = [[n for n, _ in model.named_parameters()]]
    opt = optimkit.create("adamw", model, weight_decay=0.05, weight_decay_exclude_1d=False)
    assert _names(opt) == everything and opt.param_groups[0]["weight_decay"] == 0.05
    opt = optimkit.create("adamw", model, weight_decay=0.05, weight_decay_exclude_1d=False,
                          no_decay=["*.bias", "head.*"])
    assert _names(opt)[1] == [*[f"blocks.{i}.{m}.bias" for i in range(3) for m in ("norm", "fc")],
                              "norm.bias", "head.weight", "head.bias"]
    opt = optimkit.create("adamw", model, weight_decay=0.05,
                          no_decay=lambda name, p: name.startswith("embed"))
    assert "embed.weight" in _names(opt)[1]
    # no weight decay at all (Adam's default): one group, the optimizer's default decay
    assert _names(optimkit.create("adam", model)) == everything
    with pytest.raises(ValueError, match="no_decay"):
        optimkit.create("adamw", model, no_decay=[1, 2])


def test_create_from_a_model_steps_as_the_manual_construction():
    models = [_ViT(), _ViT()]
    made = optimkit.create("adamw", models[0], lr=0.1, weight_decay=0.05)
    manual = optimkit.AdamW(optimkit.param_groups(models[1], weight_decay=0.05,
                                                  no_decay=lambda n, p: p.ndim <= 1
                                                  or "norm" in n or n == "pos_embed"),
                            lr=0.1, weight_decay=0.05)
    idx = torch.tensor([[1, 2], [3, 4]])
    for _ in range(3):
        for model, opt in zip(models, (made, manual)):
            opt.zero_grad()
            model(idx).square().sum().backward()
            opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(p, q)
    assert made.state_dict()["param_groups"] == manual.state_dict()["param_groups"]


def test_layer_decay_scales_lr_by_block_depth():
    model = _ViT()
    opt = optimkit.create("adamw", model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    lrs = {n: g["lr"] for g in opt.param_groups for n in g["param_names"]}
    # depth 0: before the first block; 1..3: the blocks; 4: the final norm and the head
    assert lrs["pos_embed"] == lrs["embed.weight"] == 0.5 ** 4
    for i in range(3):
        assert lrs[f"blocks.{i}.fc.weight"] == lrs[f"blocks.{i}.norm.bias"] == 0.5 ** (3 - i)
    assert lrs["norm.weight"] == lrs["head.weight"] == 1.0
    # decayed and non-decayed params of one depth are separate groups
    depth1 = [g for g in opt.param_groups if g["lr"] == 0.5 ** 3]
    assert sorted(g["weight_decay"] for g in depth1) == [0.0, 0.05]
    # a plain Sequential: each numbered child is a block, the last keeps the lr
    seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = optimkit.create("sgd", seq, lr=1.0, layer_decay=0.1)
    assert [(g["param_names"], g["lr"]) for g in opt.param_groups] == [
        (["0.weight", "0.bias"], pytest.approx(0.1)), (["2.weight", "2.bias"], 1.0)]


def test_layer_decay_without_numbered_blocks_counts_top_level_children():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.body, self.head = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1)

    opt = optimkit.create("sgd", Net(), lr=1.0, layer_decay=0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.5, 1.0]


def test_lookahead_prefix_wraps_in_lookahead():
    models = [_ViT(), _ViT()]
    made = optimkit.create("lookahead_adamw", models[0], lr=0.1, weight_decay=0.05, k=2,
                           alpha=0.3)
    assert isinstance(made, optimkit.Lookahead) and isinstance(made.optimizer, optimkit.AdamW)
    assert (made.k, made.alpha) == (2, 0.3)
    manual = optimkit.Lookahead(optimkit.create("adamw", models[1], lr=0.1, weight_decay=0.05),
                                k=2, alpha=0.3)
    idx = torch.tensor([[1, 2]])
    for _ in range(5):
        for model, opt in zip(models, (made, manual)):
            opt.zero_grad()
            model(idx).sum().backward()
            opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(p, q)
    # alpha is RMSprop's own keyword: it stays RMSprop's; lookahead_alpha is the wrapper's
    opt = optimkit.create("lookahead_rmsprop", _ViT(), alpha=0.9, lookahead_alpha=0.2)
    assert opt.param_groups[0]["alpha"] == 0.9 and opt.alpha == 0.2
    with pytest.raises(ValueError, match="unknown optimizer 'nothing'"):
        optimkit.create("lookahead_nothing", _ViT())


def test_create_still_takes_params_and_refuses_grouping_keywords_with_them():
    params = clone_params(make_params())
    opt = optimkit.create("adam", [{"params": params[:2], "lr": 0.5}, {"params": params[2:]}])
    assert [g["lr"] for g in opt.param_groups] == [0.5, 1e-3]
    for keyword, value in (("layer_decay", 0.5), ("no_decay", "*.bias"),
                           ("weight_decay_exclude_1d", False)):
        with pytest.raises(ValueError, match=keyword):
            optimkit.create("adam", params, **{keyword: value})
    for bad in (0.0, 1.5, "0.5"):
        with pytest.raises(ValueError, match="layer_decay"):
            optimkit.create("adam", _ViT(), layer_decay=bad)


def test_available_filters_with_patterns():
    assert optimkit.available("adam*") == ["adam", "adamw", "adamod"]
    assert optimkit.available("*LARS*") == ["lars", "rangerlars"]
    assert optimkit.available("over9000") == ["rangerlars"]  # an alias names its optimizer
    assert optimkit.available("no-such-*") == []
    assert optimkit.available() == optimkit.available("*")


# ---------------------------------------------------------------------- optimkit list


def test_list_shows_the_defaults_of_every_optimizer(capsys, monkeypatch):
    assert main(["list", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["adam"]["defaults"] == ("lr=0.001, betas=(0.9, 0.999), eps=1e-08, "
                                        "weight_decay=0, amsgrad=False, "
                                        "decoupled_weight_decay=False, cautious=False")
    for name in optimkit.available():
        for hyper in optimkit.registry.get(name).factory.hypers:
            assert f"{hyper}=" in rows[name]["defaults"], (name, hyper)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert text.count("\n  defaults    lr=") == len(optimkit.available())
    assert "betas=(0.9, 0.999)" in text  # a tuple is never cut by the wrap


def test_list_wide_table_has_the_defaults_and_keeps_part_flags(capsys, monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert any("defaults" in line and "built from" in line for line in out.splitlines())
    assert "momentum[momentum]" in out  # a part's switch, not rich markup
