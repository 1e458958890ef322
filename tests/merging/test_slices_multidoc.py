"""mergekit's `slices` (frankenmerges, depth up-scaling, a merge method per slice),
multi-document YAML (mergekit-multi), and the semantics that follow mergekit: linear with a
base_model, dtype, mergekit_config.yml, --out-shard-size, model cards. Outputs are
compared with mergekit's own, run in process on the same tiny checkpoints."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import yaml

from zoo import Checkpoint
from zoo.errors import ZooError

from merging.apply import apply
from merging.frontend import merge_command

pytestmark = pytest.mark.slow  # runs mergekit's own code beside ours


def llama4(path: Path, seed: int, layers: int = 4) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """Three 4-layer llamas: a base and two 'fine-tunes' near it, plus an unrelated one."""
    root = tmp_path_factory.mktemp("four")
    base = llama4(root / "base", 0)
    out = {"base": base}
    ck = Checkpoint.open(base)
    from zoo import save_tensors

    for k, seed in (("a", 1), ("b", 2)):
        g = torch.Generator().manual_seed(seed)
        tensors = {n: ck.get(n) + 0.02 * torch.randn(ck.get(n).shape, generator=g) for n in ck.names()}
        save_tensors(root / k, tensors, config=ck.config)
        out[k] = str(root / k)
    out["other"] = llama4(root / "other", 7)
    return out


def run_zoo(catalog, doc_or_path, tmp_path, out="ours", **kw):
    if isinstance(doc_or_path, dict):
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(doc_or_path, sort_keys=False))
    else:
        path = doc_or_path
    args = dict(dtype=None, out_dtype=None, out=out, device="cpu", seed=0, workers=2, reuse=False, tags=(),
                progress_factory=lambda *_: nullcontext())
    args.update(kw)
    return merge_command(catalog, str(path), None, None, [], [], [], **args)


def run_mergekit(doc: dict, out: Path) -> Checkpoint:
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(MergeConfiguration.model_validate(doc), str(out),
              options=MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False))
    return Checkpoint.open(out)


def assert_same(ours: Checkpoint, theirs: Checkpoint, exact: bool = True) -> None:
    assert set(ours.names()) == set(theirs.names())
    for name in theirs.names():
        if exact:
            assert torch.equal(ours.get(name), theirs.get(name)), name
        else:
            torch.testing.assert_close(ours.get(name), theirs.get(name), rtol=1e-5, atol=1e-6, msg=name)


# ----- slices ----------------------------------------------------------------------------------

@pytest.mark.slow  # ~3 s: mergekit's first import, transformers loading the output, a replay
def test_passthrough_frankenmerge_six_layers_from_two_fours(tmp_path, four, catalog):
    """Depth up-scaling as mergekit does it: layers 0-2 of one model then 1-3 of another; the
    output has 6 layers, renumbered, its config says so, it loads and runs, the lineage records
    both sources with their layer ranges, and every tensor equals mergekit's."""
    from transformers import LlamaForCausalLM

    catalog.add(four["a"], name="a")
    catalog.add(four["other"], name="other")
    doc = {"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": "a", "layer_range": [0, 3]}]},
        {"sources": [{"model": "other", "layer_range": [1, 4]}]}]}
    res = run_zoo(catalog, doc, tmp_path, out="frank")
    ours = catalog.open(res.entry)
    mk_doc = {**doc, "slices": [{"sources": [{"model": four["a"], "layer_range": [0, 3]}]},
                                {"sources": [{"model": four["other"], "layer_range": [1, 4]}]}]}
    theirs = run_mergekit(mk_doc, tmp_path / "mk")
    assert_same(ours, theirs)
    assert ours.config["num_hidden_layers"] == theirs.config["num_hidden_layers"] == 6
    a, other = Checkpoint.open(four["a"]), Checkpoint.open(four["other"])
    # renumbered: output layer 3 is layer 1 of `other`, output layer 2 is layer 2 of `a`
    assert torch.equal(ours.get("model.layers.3.self_attn.q_proj.weight"), other.get("model.layers.1.self_attn.q_proj.weight"))
    assert torch.equal(ours.get("model.layers.2.mlp.up_proj.weight"), a.get("model.layers.2.mlp.up_proj.weight"))
    model = LlamaForCausalLM.from_pretrained(ours.root)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 96)
    # lineage: both models as inputs; the run's params and notes hold each source's layer range
    edges = [(m.name, ed.role) for ed, m in catalog.parents(res.entry)]
    assert edges == [("a", "input"), ("other", "input")]
    run = catalog.producing_run(res.entry)
    assert run.operator == "merge.slices"
    assert [[s["input"], s["layer_range"]] for sl in run.params["slices"] for s in sl["sources"]] == [[0, [0, 3]], [1, [1, 4]]]
    notes = (run.timings or {}).get("notes") or {}
    assert [s["sources"][0]["model"] for s in notes["slices"]] == ["a@1", "other@1"]
    assert [s["output_layers"] for s in notes["slices"]] == [[0, 3], [3, 6]]
    # mergekit_config.yml: the merge as mergekit YAML, which runs again to the same entry
    written = ours.root / "mergekit_config.yml"
    again = yaml.safe_load(written.read_text())
    assert again["slices"][1]["sources"][0] == {"model": "other@1", "layer_range": [1, 4]}
    assert run_zoo(catalog, written, tmp_path, out=None, reuse=True).entry.id == res.entry.id
    from zoo.reproduce import reproduce

    (check,) = reproduce(catalog, res.entry.ref)  # the recorded run replays to the same bytes
    assert check.status == "identical" and check.reproduced == res.entry.digest


@pytest.mark.parametrize("case", ["slerp_per_slice_base", "ties_layered_params", "linear_filters"])
def test_slices_with_a_merge_method_equal_mergekit(tmp_path, four, catalog, case):
    """A merge method over each slice, with mergekit's precedence (source > slice > document),
    gradients over each slice's layers, a slice's own base_model, and filters on the source's
    tensor names."""
    base, a, b = four["base"], four["a"], four["b"]
    if case == "slerp_per_slice_base":
        doc = {"merge_method": "slerp", "base_model": base, "dtype": "float32",
               "parameters": {"t": 0.5},
               "slices": [{"sources": [{"model": base, "layer_range": [0, 2]}, {"model": a, "layer_range": [1, 3]}],
                           "parameters": {"t": [0.1, 0.9]}},
                          {"sources": [{"model": a, "layer_range": [2, 4]}, {"model": b, "layer_range": [2, 4]}],
                           "base_model": a}]}
    elif case == "ties_layered_params":
        doc = {"merge_method": "ties", "base_model": base, "dtype": "float32",
               "parameters": {"density": 0.5, "weight": 0.5, "normalize": True},
               "slices": [{"sources": [{"model": base, "layer_range": [0, 3]},
                                       {"model": a, "layer_range": [0, 3], "parameters": {"weight": [0.2, 1.0]}},
                                       {"model": b, "layer_range": [1, 4], "parameters": {"density": 0.8}}],
                           "parameters": {"density": 0.3}},
                          {"sources": [{"model": base, "layer_range": [3, 4]},  # one layer: t = 1
                                       {"model": b, "layer_range": [3, 4], "parameters": {"weight": [0.1, 0.7]}}],
                           "parameters": {"normalize": False}}]}
    else:
        doc = {"merge_method": "linear", "dtype": "float32",
               "slices": [{"sources": [{"model": a, "layer_range": [0, 4],
                                        "parameters": {"weight": [{"filter": "self_attn", "value": 0.9},
                                                                  {"value": 0.3}]}},
                                       {"model": b, "layer_range": [0, 4], "parameters": {"weight": 0.5}}]},
                          {"sources": [{"model": a, "layer_range": [3, 4], "parameters": {"weight": 1.0}},
                                       {"model": b, "layer_range": [1, 2], "parameters": {"weight": 2.0}}]}]}
    ours = catalog.open(run_zoo(catalog, doc, tmp_path).entry)
    theirs = run_mergekit(doc, tmp_path / "mk")
    assert_same(ours, theirs, exact=False)
    assert ours.config["num_hidden_layers"] == theirs.config["num_hidden_layers"]
    if case == "linear_filters":  # a check of our own: layer 4 is layer 3 of a and layer 1 of b, 1:2
        A, B = Checkpoint.open(a), Checkpoint.open(b)
        n = "model.layers.{}.mlp.down_proj.weight"
        expect = (A.get(n.format(3)) + 2 * B.get(n.format(1))) / 3
        torch.testing.assert_close(ours.get(n.format(4)), expect)


@pytest.mark.parametrize("slices,needle", [
    ([{"sources": [{"model": "A", "layer_range": [0, 2]}, {"model": "B", "layer_range": [0, 3]}]}],
     "same number of layers"),
    ([{"sources": [{"model": "A", "layer_range": [2, 6]}]}], "goes past the 4 layers"),
    ([{"sources": [{"model": "A", "layer_range": [3, 1]}]}], "0 <= a < b"),
    ([{"sources": [{"model": "A", "layer_range": [0, 2]}, {"model": "B", "layer_range": [0, 2]}]}],
     "at most 1 model"),
    ([{"sources": [{"model": "A", "layer_range": [0, 2]}], "extra": 1}], "unknown key"),
    ([], "slices is empty"),
])
def test_slice_mistakes_are_one_line_and_register_nothing(tmp_path, four, run, slices, needle):
    refs = {"A": four["a"], "B": four["b"]}
    for s in slices:
        for src in s.get("sources", []):
            src["model"] = refs[src["model"]]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "passthrough", "slices": slices}))
    code, _, err = run("merge", str(path))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert run("ls", "--json")[1].strip() in ("[]", "")


def test_slice_base_must_be_among_its_sources(tmp_path, four, catalog):
    doc = {"merge_method": "ties", "base_model": four["base"], "parameters": {"density": 0.5, "weight": 1.0},
           "slices": [{"sources": [{"model": four["a"], "layer_range": [0, 4]},
                                   {"model": four["b"], "layer_range": [0, 4]}]}]}
    with pytest.raises(ZooError, match="base model is not among its sources"):
        run_zoo(catalog, doc, tmp_path)
    doc["models"] = [{"model": four["a"]}]
    with pytest.raises(ZooError, match="either models: or slices:"):
        run_zoo(catalog, doc, tmp_path)
    assert catalog.ls() == []


# ----- multi-document YAML ------------------------------------------------------------------

MULTI = """\
name: mid
merge_method: linear
models:
  - model: {a}
    parameters: {{weight: 0.25}}
  - model: {b}
    parameters: {{weight: 0.75}}
dtype: float32
---
merge_method: task_arithmetic
base_model: {base}
models:
  - model: mid
    parameters: {{weight: 0.8}}
  - model: {a}
    parameters: {{weight: 0.3}}
dtype: float32
---
name: deep
merge_method: passthrough
slices:
  - sources: [{{model: mid, layer_range: [0, 4]}}]
  - sources: [{{model: {b}, layer_range: [2, 4]}}]
"""


def test_multi_document_config_runs_as_a_pipeline(tmp_path, four, catalog, capsys):
    """mergekit-multi: each document a catalog entry, a later one using an earlier one's name
    (whatever order they are written in), the unnamed one the final result under --out;
    the same tensors as mergekit running the documents one by one."""
    path = tmp_path / "multi.yaml"
    path.write_text(MULTI.format(**four))
    res = run_zoo(catalog, path, tmp_path, out="final")
    assert [name for name, _ in res.steps] == ["mid", None, "deep"]
    assert {"mid", "final", "deep"} <= {row["name"] for row in catalog.ls()}
    final, mid = catalog.get("final"), catalog.get("mid")
    assert [(m.name, ed.role) for ed, m in catalog.parents(final)] == [("base", "base"), ("mid", "input"), ("a", "input")]
    assert mid.id in [m.id for _, m in catalog.parents(catalog.get("deep"))]
    assert catalog.open(catalog.get("deep")).config["num_hidden_layers"] == 6
    # mergekit, one document at a time, the intermediate by path
    docs = list(yaml.safe_load_all(MULTI.format(**four)))
    docs[0].pop("name")
    run_mergekit(docs[0], tmp_path / "mk_mid")
    docs[1]["models"][0]["model"] = str(tmp_path / "mk_mid")
    assert_same(catalog.open(final), run_mergekit(docs[1], tmp_path / "mk_final"), exact=False)
    assert_same(catalog.open(mid), Checkpoint.open(tmp_path / "mk_mid"), exact=False)
    from zoo.reproduce import reproduce

    chain = reproduce(catalog, catalog.get("deep").ref, recursive=True)  # the pipeline's lineage replays
    assert [c.operator for c in chain if c.operator] == ["merge.linear", "merge.slices"] and all(c.ok for c in chain)


def test_multi_document_config_from_the_cli(tmp_path, four, run):
    path = tmp_path / "multi.yaml"
    path.write_text(MULTI.format(**four))
    code, out, err = run("merge", str(path), "--out", "final")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("mid: mid@1") and lines[1].startswith("(final): final@1")
    code, out, _ = run("merge", str(path), "--out", "final")  # again: every document reused
    assert code == 0 and out.count("reused") == 3
    code, _, err = run("merge", str(path))
    assert code == 0, err


@pytest.mark.parametrize("text,needle", [
    ("name: x\nmerge_method: linear\nmodels: [{a}]\n---\nname: x\nmerge_method: linear\nmodels: [{b}]\n",
     "two documents named 'x'"),
    ("merge_method: linear\nmodels: [{a}]\n---\nmerge_method: linear\nmodels: [{b}]\n", "two documents without a name"),
    ("name: x\nmerge_method: linear\nmodels: [y]\n---\nname: y\nmerge_method: linear\nmodels: [x]\n", "cycle"),
    ("name: x\nmerge_method: linear\nmodels: [{a}]\n---\nname: y\nmerge_method: nonesuch\nmodels: [x]\n",
     "unknown merge method"),
    ("name: x\nmerge_method: linear\nmodels: [{a}]\n---\nname: y\nmerge_method: linear\nmodels: [x]\nslices: 3\n",
     "not both"),
])
def test_multi_document_mistakes_run_nothing(tmp_path, four, catalog, text, needle):
    path = tmp_path / "multi.yaml"
    path.write_text(text.format(**four))
    with pytest.raises(ZooError, match=needle):
        run_zoo(catalog, path, tmp_path, out=None)
    assert catalog.ls() == []


def test_multi_document_yaml_is_size_and_alias_limited(tmp_path):
    from zoo.yaml_input import YamlLimitError, load_all_text

    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" \
           "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    with pytest.raises(YamlLimitError, match="alias"):
        load_all_text("x: 1\n---\n" + bomb, "multi")
    assert load_all_text("x: 1\n---\ny: 2\n", "multi") == [{"x": 1}, {"y": 2}]


# ----- semantics that follow mergekit -------------------------------------------------------

def test_linear_with_a_base_model_does_what_mergekit_does(tmp_path, four, catalog):
    """mergekit adds a base_model not among the models as one more input with only the
    merge-wide parameters: without a merge-wide weight it refuses; with one it is merged at
    that weight; listed among the models it is that model (not counted twice)."""
    a, b, base = four["a"], four["b"], four["base"]
    doc = {"merge_method": "linear", "base_model": base, "dtype": "float32",
           "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}]}
    with pytest.raises(Exception, match="weight"):
        run_mergekit(doc, tmp_path / "mk0")
    with pytest.raises(ZooError, match="base_model .* not among the models"):
        run_zoo(catalog, doc, tmp_path)
    assert catalog.ls() == []
    with_global = {**doc, "parameters": {"weight": 0.25}}
    assert_same(catalog.open(run_zoo(catalog, with_global, tmp_path, out="g").entry),
                run_mergekit(with_global, tmp_path / "mk1"), exact=False)
    listed = {**doc, "models": [{"model": base, "parameters": {"weight": 0.2}}, {"model": a, "parameters": {"weight": 0.8}}]}
    ours = catalog.open(run_zoo(catalog, listed, tmp_path, out="l").entry)
    assert_same(ours, run_mergekit(listed, tmp_path / "mk2"), exact=False)
    assert len(catalog.parents(catalog.get("l"))) == 2


def test_dtype_is_mergekits_compute_dtype_and_float32_math_is_an_option(tmp_path, four, catalog):
    """dtype: bfloat16 loads the inputs in bfloat16 and runs the math in it (exactly the pure
    function on rounded inputs, in bfloat16); compute_dtype: float32 runs float32 math on the
    inputs as loaded; out_dtype alone keeps float32 math on the inputs as stored. All three
    write bfloat16, and differ."""
    base, a, b = four["base"], four["a"], four["b"]
    doc = {"merge_method": "task_arithmetic", "base_model": base, "dtype": "bfloat16",
           "models": [{"model": a, "parameters": {"weight": 0.7}}, {"model": b, "parameters": {"weight": 0.6}}]}
    low = catalog.open(run_zoo(catalog, doc, tmp_path, out="low").entry)
    f32 = catalog.open(run_zoo(catalog, {**doc, "parameters": {"compute_dtype": "float32"}}, tmp_path, out="f32").entry)
    stored = {k: v for k, v in doc.items() if k != "dtype"}
    old = catalog.open(run_zoo(catalog, {**stored, "out_dtype": "bfloat16"}, tmp_path, out="old").entry)
    B, A, Bm = (Checkpoint.open(p) for p in (base, a, b))
    differ = {"low-f32": 0, "f32-old": 0}
    for name in B.names():
        args = [A.get(name), Bm.get(name)]
        rounded = [t.bfloat16() for t in args]
        exp_low = apply("task_arithmetic", B.get(name).bfloat16(), rounded, weight=[0.7, 0.6], dtype=torch.bfloat16)
        exp_f32 = apply("task_arithmetic", B.get(name).bfloat16(), rounded, weight=[0.7, 0.6]).bfloat16()
        exp_old = apply("task_arithmetic", B.get(name), args, weight=[0.7, 0.6]).bfloat16()
        assert low.get(name).dtype == f32.get(name).dtype == old.get(name).dtype == torch.bfloat16
        assert torch.equal(low.get(name), exp_low), name
        assert torch.equal(f32.get(name), exp_f32), name
        assert torch.equal(old.get(name), exp_old), name
        differ["low-f32"] += int(not torch.equal(low.get(name), f32.get(name)))
        differ["f32-old"] += int(not torch.equal(f32.get(name), old.get(name)))
    assert all(differ.values()), differ
    assert low.config.get("torch_dtype", low.config.get("dtype")) == "bfloat16"


def test_dtype_with_float32_math_matches_mergekits_float32_kernels(tmp_path, four, catalog):
    """mergekit's linear loads the inputs in dtype and adds them up in float32: with
    compute_dtype: float32 ours is the same, bit for bit (without it, the math runs in float16
    and differs)."""
    doc = {"merge_method": "linear", "dtype": "float16",
           "models": [{"model": four["a"], "parameters": {"weight": 0.3}},
                      {"model": four["b"], "parameters": {"weight": 0.45}}]}
    ours = catalog.open(run_zoo(catalog, {**doc, "parameters": {"compute_dtype": "float32"}}, tmp_path).entry)
    low = catalog.open(run_zoo(catalog, doc, tmp_path, out="low").entry)
    theirs = run_mergekit(doc, tmp_path / "mk")
    assert_same(ours, theirs)
    assert any(not torch.equal(low.get(n), theirs.get(n)) for n in theirs.names())


@pytest.mark.parametrize("size", ["20K", "20KB"])
def test_out_shard_size_flag_and_mergekit_config_for_flags(tmp_path, four, run, size):
    """--out-shard-size in mergekit's form (bytes, K/M/B) or ours; mergekit_config.yml is
    written for a merge made from flags too."""
    from zoo import Catalog

    code, _, err = run("merge", "--method", "linear", "--model", four["a"], "--model", four["b"], "--out", "sharded",
                       "--out-shard-size", size)
    assert code == 0, err
    root = Catalog(tmp_path / "cli.db", store=tmp_path / "store").open("sharded").root
    shards = list(root.glob("*.safetensors"))
    assert len(shards) > 1 and (root / "model.safetensors.index.json").exists()
    assert all(p.stat().st_size < 20_000 + 40_000 for p in shards)  # a shard over the limit holds one big tensor
    written = yaml.safe_load((root / "mergekit_config.yml").read_text())
    assert written["merge_method"] == "linear" and len(written["models"]) == 2
    for bad in ("lots", "0"):
        code, _, err = run("merge", "--method", "linear", "--model", four["a"], "--out-shard-size", bad)
        assert code != 0 and err.strip().startswith("error:") and "--out-shard-size" in err
        assert len(err.strip().splitlines()) == 1


def test_cards_name_hub_ids_or_catalog_names_and_carry_relation(tmp_path, four, catalog):
    """base_model: Hub ids for Hub entries, catalog names otherwise (the card says so); tags
    include `merge`; every operator's card has a base_model_relation (one parent: finetune)."""
    from zoo.card import front_matter, model_card

    parents = [{"ref": "x@1", "name": "x", "location": "hub:org/x@main", "digest": "d", "role": "base"},
               {"ref": "y@1", "name": "y", "location": "/data/y", "digest": "e", "role": "input"}]
    card = model_card("m", "merge.ties", {}, parents, "merge")
    front = front_matter(card)
    assert front["base_model"] == ["org/x", "y"] and "merge" in front["tags"]
    assert "`y`" in card and "weightzoo catalog" in card
    expand = front_matter(model_card("e", "expand.lemon", {}, parents[1:], None))
    assert expand["base_model_relation"] == "finetune"
    assert front_matter(model_card("n", "init.random", {}, [], None)).get("base_model_relation") is None
    doc = {"merge_method": "linear", "models": [{"model": four["a"]}, {"model": four["b"]}]}
    ck = catalog.open(run_zoo(catalog, doc, tmp_path).entry)
    front = front_matter((ck.root / "README.md").read_text())
    assert front["base_model_relation"] == "merge" and "merge" in front["tags"]
