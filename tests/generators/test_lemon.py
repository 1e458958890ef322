"""LEMON lossless expansion against its published properties, per family, plus the
bert2bert and Net2Net baselines."""
from __future__ import annotations

import pytest
import torch

from generators.expansion import FILL, depth_plan, lemon_stream_map, split
from tests.helpers.models import expandable_model
from zoo import Parent
from zoo.errors import ZooError
from zoo.families import Axis, family_of
from zoo.runner import run_operator

DEPTH_ONLY = dict(hidden_size=None, num_heads=None, intermediate_size=None, num_layers=4)  # 2 -> 4 layers


def expand_and_compare(tmp_path, catalog, family, method="lemon", dtype=torch.float32, eps=None, **override):
    model, target = expandable_model(family, dtype)
    if eps is not None:  # a post-LN model's LayerNorm epsilon (BERT's own is 1e-12)
        model.config.layer_norm_eps = eps
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.eps = eps
    target.update(override)
    model.save_pretrained(tmp_path / family)
    src = catalog.add(tmp_path / family).entry
    out = run_operator(catalog, f"expand.{method}", [Parent(src.id, "source")], target, f"{family}-{method}").entry
    ck = catalog.open(out)
    fam, cfg = family_of(ck)
    big = fam.load(ck).to(dtype)
    x = fam.example_inputs(cfg, 3, torch.Generator().manual_seed(1))
    if dtype == torch.float64 and "pixel_values" in x:
        x["pixel_values"] = x["pixel_values"].double()
    with torch.no_grad():
        small_y, big_y = fam.outputs(model, x), fam.outputs(big, x)
    if big_y.shape != small_y.shape:  # hidden states: the first block of the expanded stream
        big_y = big_y[..., : small_y.shape[-1]]
    return (small_y - big_y).abs().max().item(), ck, out, fam, cfg


@pytest.mark.parametrize("family", ["llama", "gpt2", "vit", "bert"])
def test_lemon_is_lossless_float32(tmp_path, catalog, family):
    diff, ck, entry, fam, cfg = expand_and_compare(tmp_path, catalog, family)
    assert diff < 1e-5
    assert catalog.parents(entry)[0][0].role == "source"
    assert fam.widths(cfg).hidden > 32


@pytest.mark.parametrize("family", ["gpt2", "vit"])  # (transformers' Llama RMSNorm always runs in float32)
def test_lemon_is_lossless_float64(tmp_path, catalog, family):
    diff, *_ = expand_and_compare(tmp_path, catalog, family, dtype=torch.float64)
    assert diff < 1e-10


def test_new_layers_have_weights_yet_zero_output(tmp_path, catalog):
    _, ck, _, fam, cfg = expand_and_compare(tmp_path, catalog, "gpt2")
    new_layer = next(i for i, (_, is_new) in enumerate(depth_plan(2, 4)) if is_new)
    prefix = f"transformer.h.{new_layer}."
    assert ck.get(prefix + "attn.c_attn.weight").abs().sum() > 0
    assert ck.get(prefix + "attn.c_proj.weight").abs().sum() > 0  # non-zero, yet the copies cancel
    for name, per_unit in fan_outs(ck, fam, cfg, new_layer).items():  # 7 heads from 4: none left at zero
        assert (per_unit.abs().sum(1) > 0).all(), name
    model = fam.load(ck)
    block = model.transformer.h[new_layer]
    small = torch.randn(2, 5, 32)  # a residual stream of the source, average-expanded as LEMON keeps it
    x = torch.cat([small, small.mean(-1, keepdim=True).expand(2, 5, cfg["n_embd"] - 32)], dim=-1)
    with torch.no_grad():
        out = block(x)[0] if isinstance(block(x), tuple) else block(x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def new_layers(layers_old: int, layers_new: int) -> list[int]:
    return [i for i, (_, is_new) in enumerate(depth_plan(layers_old, layers_new)) if is_new]


def fan_outs(ck, fam, cfg, layer: int) -> dict[str, torch.Tensor]:
    """Each output projection of `layer` as [unit or head, its fan-out weights], read from
    the family's roles (heads are head_dim columns wide)."""
    names = [n for n in ck.names() if fam.layer_of(n) == layer]
    head_dim = fam.widths(cfg).head_dim
    out = {}
    for n, role in fam.roles(names, cfg).items():
        for axis, kind in enumerate(role.axes):
            if kind in (Axis.HEADS_IN, Axis.UNITS_IN):
                group = head_dim if kind == Axis.HEADS_IN else 1
                out[n] = ck.get(n).double().movedim(axis, 0).unflatten(0, (-1, group)).flatten(1)
    return out


@pytest.mark.parametrize("family", ["gpt2", "llama", "vit"])
def test_depth_growth_at_unchanged_width_has_cancelling_nonzero_weights(tmp_path, catalog, family):
    """LEMON's new layers are symmetry-breaking: non-zero output projections whose copies
    cancel. At unchanged width every unit has one copy, so the units are paired inside the
    new layer; every head's and every unit's fan-out is non-zero and the model is unchanged."""
    diff, ck, _, fam, cfg = expand_and_compare(tmp_path, catalog, family, dtype=torch.float64, **DEPTH_ONLY)
    assert diff < 1e-10
    assert fam.widths(cfg).hidden == 32 and fam.widths(cfg).layers == 4
    for layer in new_layers(2, 4):
        projections = fan_outs(ck, fam, cfg, layer)
        assert len(projections) == 2  # attention output and MLP output
        for name, per_unit in projections.items():
            assert (per_unit.abs().sum(1) > 0).all(), name


def test_depth_init_zero_is_the_reference_rule(tmp_path, catalog):
    """depth_init='zero' keeps the reference code's rule: at unchanged width every unit has
    one copy, so the new layers' output projections are exactly zero."""
    diff, ck, _, fam, cfg = expand_and_compare(tmp_path, catalog, "gpt2", dtype=torch.float64, depth_init="zero",
                                               **DEPTH_ONLY)
    assert diff < 1e-10
    for layer in new_layers(2, 4):
        for name, per_unit in fan_outs(ck, fam, cfg, layer).items():
            assert per_unit.abs().max() == 0, name
    with pytest.raises(ZooError, match="depth_init"):
        expand_and_compare(tmp_path / "bad", catalog, "gpt2", depth_init="ones", **DEPTH_ONLY)


def test_new_block_is_the_identity_on_any_stream(tmp_path, catalog):
    """Each sub-layer of a new block outputs zero for any input, not just the source's
    streams: its paired units have identical fan-in and opposite fan-out."""
    _, ck, _, fam, cfg = expand_and_compare(tmp_path, catalog, "gpt2", dtype=torch.float64, **DEPTH_ONLY)
    block = fam.load(ck).double().transformer.h[new_layers(2, 4)[0]]
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    with torch.no_grad():
        attention = block.attn(block.ln_1(x))[0]
        mlp = block.mlp(block.ln_2(x))
    assert attention.abs().max() < 1e-12 and mlp.abs().max() < 1e-12
    assert block.mlp.c_proj.weight.abs().max() > 0.01


def test_one_sgd_step_makes_paired_units_diverge(tmp_path, catalog):
    """Symmetry breaking: the new layer's first MLP matrix gets a gradient at the first step
    (with zero output projections it gets exactly none), and paired units j, j + 64 move apart."""
    _, ck, _, fam, cfg = expand_and_compare(tmp_path, catalog, "gpt2", dtype=torch.float64, **DEPTH_ONLY)
    model = fam.load(ck).double()
    fc = model.transformer.h[new_layers(2, 4)[0]].mlp.c_fc  # Conv1D: [in, units], 128 units
    assert torch.equal(fc.weight[:, :64], fc.weight[:, 64:])  # paired: identical fan-in
    x = fam.example_inputs(cfg, 4, torch.Generator().manual_seed(2))
    _one_sgd_step(model, x)
    assert fc.weight.grad.abs().sum() > 0
    assert (fc.weight[:, :64] - fc.weight[:, 64:]).abs().sum(0).min() > 0  # every pair now differs


@pytest.mark.parametrize("heads,kv_heads,units", [(4, 4, 64), (7, 7, 101), (8, 2, 64), (4, 1, 10), (6, 3, 12)])
def test_new_layer_maps_pair_every_unit_and_keep_query_groups(heads, kv_heads, units):
    """In a new layer every head and unit kept has >= 2 copies (so its zero-sum fan-out can
    be non-zero), and each query head still reads the key/value head of its own group."""
    from generators.expansion import Maps, _heads_of, circular, new_layer_maps

    group = heads // kv_heads
    kv = circular(max(1, kv_heads // 2), kv_heads)
    maps = Maps(stream=torch.arange(8), heads=_heads_of(kv, group), kv_heads=kv, units=circular(units // 2, units),
                head_dim=4)
    new = new_layer_maps(maps)
    for index in (new.heads, new.kv_heads if kv_heads > 1 else new.heads, new.units):
        assert torch.bincount(index)[index.unique()].min() >= 2
    assert (new.heads // group).tolist() == new.kv_heads[torch.arange(heads) // group].tolist()


def test_placement_follows_the_reference_interpolation():
    """New layers follow each of the last L_new - L_old source layers (reference code:
    no_inflation_depth = 2 L_S - L_T)."""
    assert depth_plan(4, 6) == [(0, False), (1, False), (2, False), (2, True), (3, False), (3, True)]
    assert depth_plan(2, 4) == [(0, False), (0, True), (1, False), (1, True)]
    assert depth_plan(3, 4) == [(0, False), (1, False), (2, False), (2, True)]


@pytest.mark.parametrize("hidden", [None, 64])  # unchanged, and 2x (post-LN: multiples only)
def test_post_ln_depth_is_lossless_up_to_the_layernorm_eps(tmp_path, catalog, hidden):
    """Post-LN BERT (eps 1e-12) 2 -> 4 layers: the copy of layer i ends in an identity LN,
    the new layer after it has cancelling output projections, an identity attention LN and
    layer i's own output LN; outputs agree to ~eps in float64."""
    diff, ck, _, fam, cfg = expand_and_compare(tmp_path, catalog, "bert", dtype=torch.float64, hidden_size=hidden,
                                               intermediate_size=None, num_layers=4)
    assert diff < 1e-9
    from zoo import Checkpoint

    src = Checkpoint.open(tmp_path / "bert")
    k = (hidden or 32) // 32
    for layer in new_layers(2, 4):
        out = f"encoder.layer.{layer}."
        before, source = f"encoder.layer.{layer - 1}.", f"encoder.layer.{depth_plan(2, 4)[layer][0]}."
        for p, value in (("weight", 1.0), ("bias", 0.0)):
            for ln in (before + f"output.LayerNorm.{p}", out + f"attention.output.LayerNorm.{p}"):
                assert torch.equal(ck.get(ln), torch.full_like(ck.get(ln), value)), ln
            torch.testing.assert_close(ck.get(out + f"output.LayerNorm.{p}"),
                                       src.get(source + f"output.LayerNorm.{p}").repeat(k), rtol=0, atol=0)
        for name, per_unit in fan_outs(ck, fam, cfg, layer).items():
            assert (per_unit.abs().sum(1) > 0).all(), name


def test_post_ln_depth_gap_is_of_the_order_of_eps(tmp_path, catalog):
    """Not exactly lossless: a post-LN block's output always passes through a LayerNorm, so
    the new block computes LN(LN(z)) where the source computed LN(z): a gap of O(eps/var)."""
    gaps = {eps: expand_and_compare(tmp_path / str(eps), catalog, "bert", dtype=torch.float64, eps=eps,
                                    hidden_size=None, intermediate_size=None, num_layers=4)[0]
            for eps in (1e-12, 1e-5)}
    assert gaps[1e-12] < 1e-9
    assert 1e-8 < gaps[1e-5] < 1e-4  # measured 3.0e-6
    assert gaps[1e-5] > 1e4 * gaps[1e-12]


def _one_sgd_step(model, x, lr=0.1):
    model.train()
    out = model(**x)
    loss = (out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state).pow(2).mean()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    return model


@pytest.mark.parametrize("method,diverge", [("lemon", True), ("net2net", False)])
def test_duplicated_neurons_after_one_step(tmp_path, catalog, method, diverge):
    """LEMON's asymmetric splits break symmetry; Net2Net's equal splits do not."""
    model, _ = expandable_model("vit")
    model.save_pretrained(tmp_path / "vit")
    src = catalog.add(tmp_path / "vit").entry
    out = run_operator(catalog, f"expand.{method}", [Parent(src.id, "source")], {"intermediate_size": 128},
                       f"vit-{method}").entry
    ck = catalog.open(out)
    fam, cfg = family_of(ck)
    big = _one_sgd_step(fam.load(ck), fam.example_inputs(cfg, 4, torch.Generator().manual_seed(2)))
    fc1 = big.vit.layers[0].mlp.fc1.weight if hasattr(big.vit, "layers") else big.vit.encoder.layer[0].intermediate.dense.weight
    if method == "net2net":  # find a unit and its copy from the recorded random map
        rows = fc1.detach()
        pairs = [(i, j) for i in range(64) for j in range(64, 128) if torch.allclose(rows[i], rows[j])]
        assert pairs or not diverge  # copies stay identical under Net2Net
        assert len(pairs) >= 1
    else:
        assert not torch.allclose(fc1[:64], fc1[64:128], atol=1e-7)  # circular copies i and i+64 now differ


def test_bert2bert_fpi_is_not_lossless_at_indivisible_width(tmp_path, catalog):
    diff, *_ = expand_and_compare(tmp_path, catalog, "vit", method="bert2bert")
    assert diff > 1e-3
    lemon, *_ = expand_and_compare(tmp_path / "l", catalog, "vit", method="lemon")
    assert lemon < 1e-5


def test_refusals_say_what_is_lossless(tmp_path, catalog):
    with pytest.raises(ZooError, match="post-LN"):
        expand_and_compare(tmp_path, catalog, "bert", hidden_size=48)
    with pytest.raises(ZooError, match="at most double"):
        expand_and_compare(tmp_path / "c", catalog, "gpt2", num_layers=5)
    with pytest.raises(ZooError, match="multiple of 8"):
        expand_and_compare(tmp_path / "d", catalog, "gpt2", hidden_size=60)
    with pytest.raises(ZooError, match="smaller"):
        expand_and_compare(tmp_path / "e", catalog, "vit", hidden_size=16, num_layers=2)


def test_stream_map_and_split_identities():
    idx = lemon_stream_map(4, 11)  # k=2, r=3
    assert idx.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, FILL, FILL, FILL]
    w = torch.randn(5, 4)
    out = split(w, 1, idx, 1, "random", torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, :4] + out[:, 4:8], w)  # copies sum to the original
    assert not torch.allclose(out[:, :4], out[:, 4:8])  # asymmetric
    zero = split(w, 1, idx, 1, "random", torch.Generator().manual_seed(0), zero_sum=True)
    torch.testing.assert_close(zero[:, :4] + zero[:, 4:8], torch.zeros(5, 4), rtol=0, atol=1e-6)


def test_lemon_schedule_same_peak_faster_decay():
    from generators.lemon import schedule

    lr = schedule(1000, 1e-3, warmup_steps=10, decay_fraction=0.5, final_ratio=0.1)
    assert max(lr(s) for s in range(1000)) == pytest.approx(1e-3)
    assert lr(500) == pytest.approx(1e-4) and lr(999) == pytest.approx(1e-4)
    assert lr(10) > lr(250) > lr(499)


def test_expand_cli(tmp_path, capsys, monkeypatch):
    from zoo.cli import main

    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))
    model, _ = expandable_model("gpt2")
    model.save_pretrained(tmp_path / "g")
    assert main(["add", str(tmp_path / "g"), "--name", "g"]) == 0
    assert main(["expand", "g", "--method", "lemon", "--hidden-size", "64", "--num-layers", "3", "--out", "g-big"]) == 0
    capsys.readouterr()
    assert main(["show", "g-big", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["config"]["n_embd"] == 64 and info["config"]["n_layer"] == 3
    assert info["parents"][0]["role"] == "source" and info["run"]["operator"] == "expand.lemon"
    assert main(["expand", "g", "--hidden-size", "20"]) == 1
    assert "smaller" in capsys.readouterr().err
    assert main(["expand", "g", "--num-layers", "4", "--depth-init", "zero", "--out", "g-zero"]) == 0
    assert main(["expand", "g", "--num-layers", "4", "--depth-init", "ones"]) == 1
    assert "depth_init" in capsys.readouterr().err
    assert main(["expand", "g", "--method", "net2net", "--num-layers", "4", "--depth-init", "zero"]) == 1
    assert "depth_init" in capsys.readouterr().err
