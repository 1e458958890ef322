"""bert2BERT (Chen et al., ACL 2022) against the paper's rules: FPI's random new-unit map
(one hidden map for the whole model, copies that sum to the original), AKI's added units
taken from the next layer, and depth growth by stacking (Algorithm 1). The maps are read
back from the written weights, not from the implementation."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from tests.helpers.models import expandable_model
from zoo import Checkpoint, Parent
from zoo.runner import run_operator


def grow(tmp_path, catalog, model, method: str, name: str = "src", **params):
    """(source checkpoint, expanded checkpoint)."""
    model.save_pretrained(tmp_path / name)
    src = catalog.add(tmp_path / name).entry
    out = run_operator(catalog, f"expand.{method}", [Parent(src.id, "source")], params, f"{name}-{method}").entry
    return Checkpoint.open(tmp_path / name), catalog.open(out)


def match(rows: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """For each row, the index of the original it equals (to float64 rounding)."""
    d = torch.cdist(rows.flatten(1), originals.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
    assert d.min(1).values.max() < 1e-12, "a row copies no original"
    return d.argmin(1)


def heads(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[heads x head_dim, ...] -> [heads, head_dim x ...]"""
    return t.unflatten(0, (-1, head_dim)).flatten(1)


def elements(unit_map: torch.Tensor, group: int) -> torch.Tensor:
    return (unit_map[:, None] * group + torch.arange(group)).flatten()


def sum_copies(t: torch.Tensor, axis: int, unit_map: torch.Tensor, n: int) -> torch.Tensor:
    """Along `axis`, the sum of the copies of each original position."""
    shape = list(t.shape)
    shape[axis] = n
    return torch.zeros(shape, dtype=t.dtype).index_add_(axis, unit_map, t)


def tiny_bert(layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
                                vocab_size=50, max_position_embeddings=16)).double()


# ----- FPI ---------------------------------------------------------------------------------
def fpi_maps(src: Checkpoint, out: Checkpoint):
    """The hidden map (from the word embeddings' columns), the MLP unit map and the head map
    (from the top layer's producers), as the written weights show them."""
    g_h = match(out.get("embeddings.word_embeddings.weight").T, src.get("embeddings.word_embeddings.weight").T)
    top = "encoder.layer.1."
    fc1 = sum_copies(out.get(top + "intermediate.dense.weight"), 1, g_h, 32)
    g_u = match(fc1, src.get(top + "intermediate.dense.weight"))
    q = sum_copies(out.get(top + "attention.self.query.weight"), 1, g_h, 32)
    g_heads = match(heads(q, 8), heads(src.get(top + "attention.self.query.weight"), 8))
    return g_h, g_u, g_heads


def test_fpi_random_map_shared_by_every_layer_and_copies_sum_to_the_original(tmp_path, catalog):
    model, _ = expandable_model("bert", torch.float64)
    src, out = grow(tmp_path, catalog, model, "bert2bert", hidden_size=48, intermediate_size=100)
    g_h, g_u, g_heads = fpi_maps(src, out)
    for g, n_old, n_new in ((g_h, 32, 48), (g_u, 64, 100), (g_heads, 4, 6)):
        assert g[:n_old].tolist() == list(range(n_old))  # g(i) = i for the original units
        assert len(g) == n_new and int(g.max()) < n_old
    assert g_u[64:].tolist() != (torch.arange(64, 100) % 64).tolist()  # random, not circular
    assert g_h[32:].tolist() != (torch.arange(32, 48) % 32).tolist()
    e_heads = elements(g_heads, 8)
    for layer in range(2):
        p = f"encoder.layer.{layer}."
        w, u = (lambda n: src.get(p + n)), (lambda n: out.get(p + n))
        # consumers: the copies of a source unit share its fan-in, so they sum to the original
        checks = [(u("intermediate.dense.weight"), g_h, 32, w("intermediate.dense.weight")[g_u]),
                  (u("output.dense.weight"), g_u, 64, w("output.dense.weight")[g_h]),
                  (u("attention.self.query.weight"), g_h, 32, w("attention.self.query.weight")[e_heads]),
                  (u("attention.output.dense.weight"), e_heads, 32, w("attention.output.dense.weight")[g_h])]
        for t, g, n, expected in checks:
            torch.testing.assert_close(sum_copies(t, 1, g, n), expected, rtol=0, atol=1e-14)
        # producers: a new unit's row is an exact copy of its source unit's row
        fc1 = u("intermediate.dense.weight")
        assert torch.equal(fc1, fc1[g_u])
        assert torch.equal(u("intermediate.dense.bias"), w("intermediate.dense.bias")[g_u])
        for norm in ("attention.output.LayerNorm.weight", "output.LayerNorm.bias"):  # the same hidden map
            assert torch.equal(u(norm), w(norm)[g_h])


def test_fpi_map_depends_on_the_seed(tmp_path, catalog):
    maps = []
    for seed in (0, 1):
        model, _ = expandable_model("bert", torch.float64)
        src, out = grow(tmp_path / str(seed), catalog, model, "bert2bert", name=f"s{seed}", hidden_size=48,
                        intermediate_size=100, seed=seed)
        maps.append(fpi_maps(src, out)[1])
    assert not torch.equal(maps[0], maps[1])


# ----- AKI ---------------------------------------------------------------------------------
def tiny_llama(layers: int = 3):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64)).double()


def test_aki_new_units_are_the_next_layers_units(tmp_path, catalog):
    """Llama, hidden unchanged (no fan-in split): for layer l < L-1 the units and heads added
    by width growth equal layer l+1's source units at the same map, weight by weight; the
    source's own units and all consumers are FPI's; the top layer is FPI."""
    target = dict(num_heads=8, intermediate_size=100)
    src, aki = grow(tmp_path, catalog, tiny_llama(), "bert2bert_aki", **target)
    _, fpi = grow(tmp_path / "f", catalog, tiny_llama(), "bert2bert", **target)
    top = "model.layers.2."
    g_u = match(fpi.get(top + "mlp.gate_proj.weight"), src.get(top + "mlp.gate_proj.weight"))
    g_kv = match(heads(fpi.get(top + "self_attn.k_proj.weight"), 8), heads(src.get(top + "self_attn.k_proj.weight"), 8))
    g_q = match(heads(fpi.get(top + "self_attn.q_proj.weight"), 8), heads(src.get(top + "self_attn.q_proj.weight"), 8))
    assert g_u[64:].tolist() != (torch.arange(64, 100) % 64).tolist()
    producers = {"mlp.gate_proj.weight": (g_u, 64, 1), "mlp.up_proj.weight": (g_u, 64, 1),
                 "self_attn.q_proj.weight": (g_q, 4, 8), "self_attn.k_proj.weight": (g_kv, 2, 8),
                 "self_attn.v_proj.weight": (g_kv, 2, 8)}
    for layer in range(3):
        p = f"model.layers.{layer}."
        for name in src.names():
            if not name.startswith(p):
                continue
            suffix = name[len(p):]
            if suffix not in producers or layer == 2:  # consumers, norms and the top layer: FPI's
                assert torch.equal(aki.get(name), fpi.get(name)), name
                continue
            g, n_old, group = producers[suffix]
            nxt = src.get(f"model.layers.{layer + 1}.{suffix}")
            got, own, nxt = (heads(t, group) for t in (aki.get(name), src.get(name), nxt))
            assert torch.equal(got[:n_old], own), name  # the source's own units
            assert torch.equal(got[n_old:], nxt[g[n_old:]]), name  # added units: layer l+1's
            assert not torch.equal(got[n_old:], own[g[n_old:]]), name  # (which differ from FPI's)
    down = aki.get("model.layers.0.mlp.down_proj.weight")  # added units' fan-out: own layer, split
    counts = torch.bincount(g_u, minlength=64).double()
    own = src.get("model.layers.0.mlp.down_proj.weight")
    torch.testing.assert_close(down, own[:, g_u] / counts[g_u], rtol=0, atol=0)


def test_aki_with_hidden_growth_reads_the_next_layer_after_its_split(tmp_path, catalog):
    """BERT, hidden 32 -> 48: layer 0's added MLP units equal layer 1's units at g(j) after
    layer 1's own fan-in split (EXPN_in of W^{l+1}), biases included."""
    model, _ = expandable_model("bert", torch.float64)
    src, out = grow(tmp_path, catalog, model, "bert2bert_aki", hidden_size=48, intermediate_size=100)
    g_h = match(out.get("embeddings.word_embeddings.weight").T, src.get("embeddings.word_embeddings.weight").T)
    top = out.get("encoder.layer.1.intermediate.dense.weight")
    g_u = match(sum_copies(top, 1, g_h, 32), src.get("encoder.layer.1.intermediate.dense.weight"))
    for suffix in ("intermediate.dense.weight", "intermediate.dense.bias"):
        layer0, layer1 = out.get(f"encoder.layer.0.{suffix}"), out.get(f"encoder.layer.1.{suffix}")
        assert torch.equal(layer0[64:], layer1[g_u[64:]])
        if suffix.endswith("weight"):
            torch.testing.assert_close(sum_copies(layer0[:64], 1, g_h, 32),
                                       src.get(f"encoder.layer.0.{suffix}"), rtol=0, atol=1e-14)


@pytest.mark.parametrize("method,lossless", [("bert2bert", True), ("net2net", True), ("bert2bert_aki", False)])
def test_function_kept_at_unchanged_hidden_width(tmp_path, catalog, method, lossless):
    """Hidden width unchanged, heads 4 -> 8 with grouped-query attention (2 -> 4 key/value
    heads), MLP 64 -> 100: FPI's copies and equal splits keep the function exactly, which
    needs each added query head to copy a query of the key/value head it is grouped with.
    AKI is not function preserving by design (its added units come from another layer)."""
    from zoo.families import family_of

    model = tiny_llama(2)
    _, out = grow(tmp_path, catalog, model, method, num_heads=8, intermediate_size=100)
    fam, cfg = family_of(out)
    x = fam.example_inputs(cfg, 3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        gap = (fam.outputs(model, x) - fam.outputs(fam.load(out).double(), x)).abs().max().item()
    assert gap < 1e-10 if lossless else gap > 1e-3


# ----- depth: stacking ---------------------------------------------------------------------
@pytest.mark.parametrize("layers,order", [(6, [0, 1, 2, 3, 2, 3]), (8, [0, 1, 2, 3, 0, 1, 2, 3]),
                                          (12, [0, 1, 2, 3] * 3)])
def test_depth_grows_by_stacking(tmp_path, catalog, layers, order):
    """Algorithm 1: the (widened) model stacked floor(Lt/Ls) times, then its top Lt mod Ls
    layers; not limited to doubling."""
    src, out = grow(tmp_path, catalog, tiny_bert(4), "bert2bert", num_layers=layers)
    assert out.config["num_hidden_layers"] == layers
    for position, source in enumerate(order):
        for name in src.names():
            if f"encoder.layer.{source}." in name:
                new = name.replace(f"encoder.layer.{source}.", f"encoder.layer.{position}.")
                assert torch.equal(out.get(new), src.get(name)), new


def test_aki_stacks_the_widened_model(tmp_path, catalog):
    src, out = grow(tmp_path, catalog, tiny_bert(4), "bert2bert_aki", num_layers=6, intermediate_size=100)
    for position, source in ((4, 2), (5, 3)):
        for name in out.names():
            if f"encoder.layer.{source}." in name:
                assert torch.equal(out.get(name.replace(f"layer.{source}.", f"layer.{position}.")), out.get(name))
    fc1 = out.get("encoder.layer.4.intermediate.dense.weight")  # layer 2's copy: added units from layer 3
    assert torch.equal(fc1[:64], src.get("encoder.layer.2.intermediate.dense.weight"))
    assert match(fc1[64:], src.get("encoder.layer.3.intermediate.dense.weight")).numel() == 36


# ----- registration and CLI -----------------------------------------------------------------
def test_registered_with_its_contract_and_listed_by_the_cli(tmp_path, capsys, monkeypatch):
    from zoo.cli import main
    from zoo.registry import get_operator

    op = get_operator("expand.bert2bert_aki")
    assert [s.describe() for s in op.inputs] == ["exactly 1 'source'"]
    assert op.params.model_fields.keys() == get_operator("expand.bert2bert").params.model_fields.keys()
    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))
    monkeypatch.setenv("COLUMNS", "200")
    main(["expand", "--help"])
    assert "bert2bert_aki" in capsys.readouterr().out
    tiny_bert().save_pretrained(tmp_path / "b")
    assert main(["add", str(tmp_path / "b"), "--name", "b"]) == 0
    assert main(["expand", "b", "--method", "bert2bert_aki", "--intermediate-size", "100", "--num-layers", "5",
                 "--out", "b-aki"]) == 0
    capsys.readouterr()
    assert main(["show", "b-aki", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["run"]["operator"] == "expand.bert2bert_aki" and info["config"]["num_hidden_layers"] == 5
