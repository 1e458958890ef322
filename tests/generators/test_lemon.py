"""LEMON lossless expansion against its published properties, per family, plus the
bert2bert and Net2Net baselines."""
from __future__ import annotations

import pytest
import torch

from generators.expansion import FILL, depth_plan, lemon_stream_map, split
from tests.helpers.models import expandable_model
from zoo import Parent
from zoo.errors import ZooError
from zoo.families import family_of
from zoo.runner import run_operator


def expand_and_compare(tmp_path, catalog, family, method="lemon", dtype=torch.float32, **override):
    model, target = expandable_model(family, dtype)
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
    model = fam.load(ck)
    block = model.transformer.h[new_layer]
    small = torch.randn(2, 5, 32)  # a residual stream of the source, average-expanded as LEMON keeps it
    x = torch.cat([small, small.mean(-1, keepdim=True).expand(2, 5, cfg["n_embd"] - 32)], dim=-1)
    with torch.no_grad():
        out = block(x)[0] if isinstance(block(x), tuple) else block(x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


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
    with pytest.raises(ZooError, match="post-LN"):
        expand_and_compare(tmp_path / "b", catalog, "bert", num_layers=3)
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
