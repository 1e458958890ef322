"""Merging real checkpoints through the engine, catalog and CLI: outputs, lineage,
model cards, dtype handling, defined behaviour for awkward inputs, and mergekit parity."""
from __future__ import annotations

import json
import textwrap
from contextlib import nullcontext

import pytest
import torch
import yaml

import merging
from merging.apply import apply
from zoo import Checkpoint, save_tensors
from zoo.card import read_card_recipe
from zoo.cli import main
from zoo.errors import MismatchError, ZooError

from tests.helpers.models import perturbed_copy


@pytest.fixture
def trio(tmp_path, llama_dir):
    """A base and two 'fine-tunes' (noise of different seeds) as HF folders."""
    out = {"base": llama_dir}
    for k, seed in (("a", 1), ("b", 2)):
        ck = Checkpoint.open(llama_dir)
        g = torch.Generator().manual_seed(seed)
        tensors = {n: ck.get(n) + 0.02 * torch.randn(ck.get(n).shape, generator=g) for n in ck.names()}
        save_tensors(tmp_path / k, tensors, config=ck.config)
        out[k] = tmp_path / k
    return out


def test_engine_output_equals_pure_function_per_tensor(catalog, trio):
    ck = merging.merge("ties", base=str(trio["base"]), models=[str(trio["a"]), str(trio["b"])], catalog=catalog,
                       weights=[0.6, 0.4], density=0.5)
    base, a, b = (Checkpoint.open(trio[k]) for k in ("base", "a", "b"))
    for name in base.names():
        expect = apply("ties", base.get(name), [a.get(name), b.get(name)], weight=[0.6, 0.4], density=0.5)
        assert torch.equal(ck.get(name), expect), name


def test_lineage_run_params_and_card(catalog, trio):
    for k in ("base", "a", "b"):
        catalog.add(trio[k], name=k)
    ck = merging.merge("task_arithmetic", base="base", models=["a", "b"], catalog=catalog, weights=[1.0, 0.5],
                       out="ta", **{"lambda": 0.8})
    e = ck.entry
    edges = [(m.name, ed.role, ed.weight) for ed, m in catalog.parents(e)]
    assert edges == [("base", "base", None), ("a", "input", 1.0), ("b", "input", 0.5)]
    run = catalog.producing_run(e)
    assert run.operator == "merge.task_arithmetic" and run.params["parameters"] == {"lambda": 0.8}
    card = (ck.root / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == ["base", "a", "b"] and front["base_model_relation"] == "merge"
    assert read_card_recipe(card)["operator"] == "merge.task_arithmetic"
    assert json.loads(ck.metadata["weightzoo"])["operator"] == "merge.task_arithmetic"
    # the output loads in transformers and runs
    from transformers import LlamaForCausalLM

    LlamaForCausalLM.from_pretrained(ck.root)(torch.randint(0, 96, (1, 5)))


def test_same_merge_is_reused_not_redone(catalog, trio):
    kw = dict(base=str(trio["base"]), models=[str(trio["a"])], catalog=catalog, t=0.5)
    first = merging.merge("slerp", **kw)
    again = merging.merge("slerp", **kw)
    assert again.reused and again.entry.id == first.entry.id
    assert not merging.merge("slerp", reuse=False, **kw).reused


def test_dtype_handling(catalog, tmp_path, trio):
    bf = {}
    for k in ("base", "a", "b"):
        ck = Checkpoint.open(trio[k])
        save_tensors(tmp_path / f"{k}16", {n: ck.get(n).to(torch.bfloat16) for n in ck.names()}, config=ck.config)
        bf[k] = str(tmp_path / f"{k}16")
    out = merging.merge("linear", models=[bf["a"], bf["b"]], catalog=catalog)
    assert out.dtype == "bfloat16"  # inputs' dtype by default
    up = merging.merge("linear", models=[bf["a"], bf["b"]], catalog=catalog, out_dtype="float32")
    assert up.dtype == "float32" and up.config.get("torch_dtype", up.config.get("dtype")) in ("float32", None)
    # math runs in float32: the bf16 output is the float32 result rounded once
    torch.testing.assert_close(out.get("model.norm.weight"), up.get("model.norm.weight").to(torch.bfloat16), rtol=0, atol=0)


def test_sharded_inputs_and_outputs(catalog, tmp_path, llama_sharded_dir):
    other = perturbed_copy(llama_sharded_dir, tmp_path / "ft")
    ck = merging.merge("linear", models=[str(llama_sharded_dir), str(other)], catalog=catalog, max_shard_size="20KB")
    assert len(ck.weight_files) > 1 and (ck.root / "model.safetensors.index.json").exists()
    src = Checkpoint.open(llama_sharded_dir)
    for n in src.names():
        torch.testing.assert_close(ck.get(n), src.get(n) + 0.005)


def test_non_float_and_missing_tensors_have_defined_behaviour(catalog, tmp_path):
    base = {"w": torch.zeros(4), "steps": torch.tensor([7]), "only_base": torch.ones(2)}
    a = {"w": torch.ones(4), "steps": torch.tensor([9]), "extra": torch.ones(3)}
    b = {"w": 3 * torch.ones(4), "steps": torch.tensor([11]), "only_base": torch.zeros(2)}
    for k, t in (("base", base), ("a", a), ("b", b)):
        save_tensors(tmp_path / k, t)
    args = dict(base=str(tmp_path / "base"), models=[str(tmp_path / "a"), str(tmp_path / "b")], catalog=catalog,
                weights=[0.5, 0.5])
    with pytest.raises(MismatchError, match="tensor only_base is in the base but not in model 1 .*copy_unmatched"):
        merging.merge("task_arithmetic", **args)  # inputs that do not share every tensor: only if asked
    assert catalog.count() == 0
    ck = merging.merge("task_arithmetic", copy_unmatched=True, **args)
    assert torch.equal(ck.get("w"), torch.full((4,), 2.0))
    assert ck.get("steps").item() == 7  # non-float: the base's value, unchanged
    assert torch.equal(ck.get("only_base"), torch.full((2,), 0.5))  # merged over the models that have it
    assert "extra" not in ck.names()  # the output has the base's layout
    notes = catalog.producing_run(ck.entry).timings["notes"]
    assert notes["partial"] == {"only_base": 1} and notes["dropped"] == ["extra"] and "steps" in notes["copied_from_reference"]


def test_shape_mismatch_is_an_error_unless_asked(catalog, tmp_path):
    save_tensors(tmp_path / "base", {"emb": torch.zeros(10, 4), "w": torch.zeros(3)})
    save_tensors(tmp_path / "big", {"emb": torch.ones(12, 4), "w": torch.ones(3)})
    args = dict(base=str(tmp_path / "base"), models=[str(tmp_path / "big")], catalog=catalog)
    with pytest.raises(MismatchError, match="resized vocabulary"):
        merging.merge("task_arithmetic", **args)
    assert not any(p.name.startswith(".incoming") for p in catalog.store.iterdir())  # nothing half-written
    ck = merging.merge("task_arithmetic", mismatched_shapes="base", **args)
    assert torch.equal(ck.get("emb"), torch.zeros(10, 4)) and torch.equal(ck.get("w"), torch.ones(3))


def test_method_contracts(catalog, trio):
    with pytest.raises(ZooError, match="needs a base"):
        merging.merge("ties", models=[str(trio["a"])], catalog=catalog)
    with pytest.raises(ZooError, match=r"merge.slerp takes exactly 1 model\(s\) with role 'input', got 2"):
        merging.merge("slerp", base=str(trio["base"]), models=[str(trio["a"]), str(trio["b"])], catalog=catalog, t=0.5)
    with pytest.raises(ZooError, match="'t' is required"):
        merging.merge("slerp", base=str(trio["base"]), models=[str(trio["a"])], catalog=catalog)


def test_cli_flags_and_yaml_with_gradients(tmp_path, trio, capsys, monkeypatch):
    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))
    assert main(["merge", "--method", "ties", "--base", str(trio["base"]), "--model", str(trio["a"]), "--model",
                 str(trio["b"]), "-w", "0.5", "-w", "0.5", "--set", "density=0.5", "--out", "flags", "--json"]) == 0
    flags = json.loads(capsys.readouterr().out)
    assert flags["ref"] == "flags@1" and flags["run"]["operator"] == "merge.ties"
    cfg = tmp_path / "m.yaml"
    cfg.write_text(textwrap.dedent(f"""
        merge_method: ties
        base_model: {trio['base']}
        models:
          - model: {trio['a']}
            parameters: {{weight: 0.5, density: [0.2, 1.0]}}
          - model: {trio['b']}
            parameters:
              weight: 0.5
              density: [{{filter: mlp, value: 0.9}}, {{value: 0.5}}]
        dtype: float32
    """))
    assert main(["merge", str(cfg), "--out", "yaml"]) == 0
    from zoo import Catalog

    ck = Catalog(tmp_path / "c.db").open("yaml")
    base, a, b = (Checkpoint.open(trio[k]) for k in ("base", "a", "b"))
    # layer 1 of 2 sits at t=1 -> density 1.0 for model a; mlp tensors get 0.9 for model b
    name = "model.layers.1.mlp.up_proj.weight"
    expect = apply("ties", base.get(name), [a.get(name), b.get(name)], weight=0.5, density=[1.0, 0.9])
    assert torch.equal(ck.get(name), expect)
    name = "model.layers.0.self_attn.q_proj.weight"  # t=0 -> 0.2 for a; 0.5 for b
    expect = apply("ties", base.get(name), [a.get(name), b.get(name)], weight=0.5, density=[0.2, 0.5])
    assert torch.equal(ck.get(name), expect)


@pytest.mark.parametrize("text,needle", [
    ("merge_method: ties\nslices: []\n", "slices is empty"),
    ("merge_method: ties\ntokenizer_source: base\ntokenizer: {source: union}\n", "not both"),
    ("merge_method: ties\nbogus: 1\n", "unknown key 'bogus'"),
    ("models: []\n", "merge_method is required"),
    ("merge_method: [unclosed\n", "not valid YAML"),
])
def test_cli_yaml_errors_are_one_line(tmp_path, capsys, monkeypatch, text, needle):
    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["merge", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "c.db").exists()  # refused before the catalog opened: nothing created


@pytest.mark.parametrize("method,model_params,params", [
    ("linear", [{"weight": 0.3}, {"weight": 0.7}], {}),
    ("task_arithmetic", [{"weight": 0.6}, {"weight": -0.3}], {"lambda": 0.9}),
    ("ties", [{"weight": 0.7, "density": 0.5}, {"weight": 0.3, "density": [0.3, 0.9]}], {"normalize": True}),
    ("breadcrumbs", [{"weight": 0.5, "density": 0.8, "gamma": 0.05}, {"weight": 0.5, "density": 0.7, "gamma": 0.02}], {}),
    ("slerp", None, {"t": [0.2, 0.7]}),
    ("model_stock", None, {}),
])
def test_equal_to_mergekit(tmp_path, trio, catalog, method, model_params, params):
    """Deterministic methods match mergekit's own output on the same checkpoints and YAML."""
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    models = [str(trio["a"])] if method == "slerp" else [str(trio["a"]), str(trio["b"])]
    if method == "model_stock":
        extra = perturbed_copy(trio["a"], tmp_path / "c", 0.003)
        models.append(str(extra))
    doc = {"merge_method": method, "dtype": "float32",
           "models": [{"model": m, **({"parameters": model_params[i]} if model_params else {})} for i, m in enumerate(models)]}
    if method != "linear":
        doc["base_model"] = str(trio["base"])
    if params:
        doc["parameters"] = params
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    run_merge(MergeConfiguration.model_validate(doc), str(tmp_path / "mk"), options=MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False))
    from merging.frontend import merge_command

    res = merge_command(catalog, str(cfg), None, None, [], [], [], dtype=None, out_dtype=None, out="ours", device="cpu",
                        seed=0, workers=2, reuse=False, tags=(), progress_factory=lambda *_: nullcontext())
    ours, theirs = catalog.open(res.entry), Checkpoint.open(tmp_path / "mk")
    assert set(ours.names()) == set(theirs.names())
    for name in theirs.names():
        torch.testing.assert_close(ours.get(name), theirs.get(name), rtol=1e-5, atol=1e-6, msg=name)


def test_cuda_without_a_gpu_is_a_clear_error(catalog, trio):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ZooError, match="no CUDA GPU"):
        merging.merge("linear", models=[str(trio["a"]), str(trio["b"])], catalog=catalog, device="cuda")
