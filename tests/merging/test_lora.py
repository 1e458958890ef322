"""LoRA adapters: as merge inputs (model+lora, {model, lora}, --model base+adapter) applied on
the fly, checked against PEFT's merge_and_unload and mergekit; catalogued by `zoo add` and
described by `zoo show`; and extracted from a fine-tune by truncated SVD (`zoo extract-lora`),
loaded back by PEFT."""
from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import yaml

from zoo import Checkpoint, save_tensors

pytestmark = pytest.mark.slow  # runs PEFT and mergekit beside ours

peft = pytest.importorskip("peft")


def make_adapter(base_dir: Path, out: Path, *, seed: int = 0, r: int = 4, alpha: float = 8, rslora: bool = False,
                 targets=("q_proj", "v_proj", "down_proj"), alpha_pattern=None, modules_to_save=None,
                 base_name: str | None = None) -> Path:
    """A PEFT LoRA adapter on the model at `base_dir`, with random (non-zero) A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), use_rslora=rslora,
                     alpha_pattern=alpha_pattern or {}, modules_to_save=modules_to_save, lora_dropout=0.0)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    pm.save_pretrained(out)
    if base_name is not None:
        doc = json.loads((out / "adapter_config.json").read_text())
        doc["base_model_name_or_path"] = base_name
        (out / "adapter_config.json").write_text(json.dumps(doc))
    return out


def noisy_copy(src: Path, dst: Path, seed: int = 1, scale: float = 0.02) -> Path:
    """A 'fine-tune': every tensor plus Gaussian noise."""
    ck = Checkpoint.open(src)
    g = torch.Generator().manual_seed(seed)
    save_tensors(dst, {n: ck.get(n) + scale * torch.randn(ck.get(n).shape, generator=g) for n in ck.names()},
                 config=ck.config)
    return dst


def merged_by_peft(base_dir: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """PEFT's own merge of the adapter into its model (the reference)."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), adapter).merge_and_unload()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _merge(catalog, cfg_path=None, **kw):
    from merging.frontend import merge_command

    args = dict(method=None, base=None, models=[], weights=[], sets=[], dtype=None, out_dtype=None, out="ours",
                device="cpu", seed=0, workers=2, reuse=False, tags=(), progress_factory=lambda *_: nullcontext())
    args.update(kw)
    return merge_command(catalog, str(cfg_path) if cfg_path else None, args.pop("method"), args.pop("base"),
                         args.pop("models"), args.pop("weights"), args.pop("sets"), **args)


@pytest.fixture
def pair(tmp_path, llama_dir):
    """A tiny Llama and a LoRA adapter on it."""
    return llama_dir, make_adapter(llama_dir, tmp_path / "adapter")


# ----- applied on the fly ---------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    {},
    {"rslora": True, "r": 8, "alpha": 4},
    {"alpha_pattern": {"v_proj": 2.0}, "targets": ("q_proj", "v_proj", "embed_tokens")},
    {"modules_to_save": ["lm_head"]},
], ids=["plain", "rslora", "alpha-pattern-embedding", "modules-to-save"])
def test_an_adapter_applied_on_the_fly_equals_peft_merge_and_unload(tmp_path, catalog, llama_dir, kw):
    adapter = make_adapter(llama_dir, tmp_path / "ad", **kw)
    want = merged_by_peft(llama_dir, adapter)
    res = _merge(catalog, method="linear", models=[f"{llama_dir}+{adapter}"])
    got = catalog.open(res.entry)
    assert set(got.names()) == set(want)
    changed = 0
    for name in got.names():
        torch.testing.assert_close(got.get(name), want[name], rtol=1e-6, atol=1e-6, msg=name)
        changed += not torch.equal(want[name], Checkpoint.open(llama_dir).get(name))
    assert changed >= 4  # the adapter did change the model (the test can fail)


@pytest.mark.parametrize("name, shape", [("model.layers.0.mlp.down_proj.weight", (32, 64)),
                                         ("model.embed_tokens.weight", (96, 32))])  # B @ A, and (B @ A).T
def test_the_adapted_reader_streams_any_slice(tmp_path, llama_dir, name, shape):
    from merging.lora import AdaptedCheckpoint, Adapter

    adapter = make_adapter(llama_dir, tmp_path / "ad", targets=("down_proj", "embed_tokens"))
    adapted = AdaptedCheckpoint(Checkpoint.open(llama_dir), Adapter(Checkpoint.open(adapter)))
    want = merged_by_peft(llama_dir, adapter)
    whole = adapted.read(name)
    torch.testing.assert_close(whole.view(shape), want[name], rtol=1e-6, atol=1e-6)
    assert not torch.equal(want[name], Checkpoint.open(llama_dir).get(name))
    for start, count in ((0, 64), (5, 100), (63, 2), (1000, 1048)):  # row-aligned or not
        assert torch.equal(adapted.read(name, start, count), whole[start:start + count])


def test_lineage_records_the_model_and_its_adapter(catalog, pair):
    base_dir, adapter = pair
    b = catalog.add(base_dir, "llama").entry
    a = catalog.add(adapter, "my-lora").entry
    res = _merge(catalog, method="task_arithmetic", base="llama", models=["llama+my-lora"], weights=[0.5])
    roles = {(p["parent"], p["role"]) for p in catalog.show(res.entry)["parents"]}
    assert roles == {(b.ref, "base"), (b.ref, "input"), (a.ref, "adapter")}
    run = catalog.producing_run(res.entry)
    assert [i["role"] for i in run.inputs] == ["base", "input", "adapter"]
    # task arithmetic at 0.5 of (base+lora - base): half the LoRA delta
    want, base = merged_by_peft(base_dir, adapter), Checkpoint.open(base_dir)
    got = catalog.open(res.entry)
    name = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(got.get(name), base.get(name) + 0.5 * (want[name] - base.get(name)),
                               rtol=1e-5, atol=1e-6)
    # the base itself adapted (base_model: llama+my-lora): the task vector is taken from base+lora
    res = _merge(catalog, method="task_arithmetic", base="llama+my-lora", models=["llama"], weights=[1.0], out="back")
    run = catalog.producing_run(res.entry)
    assert [i["role"] for i in run.inputs] == ["base", "adapter", "input"]
    torch.testing.assert_close(catalog.open(res.entry).get(name), base.get(name), rtol=1e-5, atol=1e-6)


def test_mergekit_yaml_lora_forms(tmp_path, catalog, pair):
    base_dir, adapter = pair
    want = merged_by_peft(base_dir, adapter)
    forms = [f"{base_dir}+{adapter}", {"model": str(base_dir), "lora": str(adapter)},
             {"model": {"path": str(base_dir)}, "lora": {"path": str(adapter)}}]
    for i, form in enumerate(forms):
        cfg = tmp_path / f"cfg{i}.yaml"
        cfg.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32",
                                       "models": [{"model": form, "parameters": {"weight": 1.0}}]}))
        got = catalog.open(_merge(catalog, cfg, out=f"form{i}").entry)
        name = "model.layers.0.self_attn.v_proj.weight"
        torch.testing.assert_close(got.get(name), want[name], rtol=1e-6, atol=1e-6)


def test_equal_to_mergekit_with_a_lora_input(tmp_path, catalog, llama_dir, pair):
    """mergekit merges the adapter into a cached copy with PEFT, then merges; the same result here."""
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    _, adapter = pair
    other = noisy_copy(llama_dir, tmp_path / "other")  # random deltas: no magnitude ties for TIES to break
    doc = {"merge_method": "ties", "base_model": str(llama_dir), "dtype": "float32",
           "parameters": {"density": 0.6},
           "models": [{"model": f"{llama_dir}+{adapter}", "parameters": {"weight": 0.7}},
                      {"model": str(other), "parameters": {"weight": 0.4}}]}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    run_merge(MergeConfiguration.model_validate(doc), str(tmp_path / "mk"),
              options=MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False,
                                   lora_merge_cache=str(tmp_path / "cache"), lora_merge_dtype="float32"))
    ours, theirs = catalog.open(_merge(catalog, cfg).entry), Checkpoint.open(tmp_path / "mk")
    assert set(ours.names()) == set(theirs.names())
    for name in theirs.names():
        torch.testing.assert_close(ours.get(name), theirs.get(name), rtol=1e-5, atol=1e-6, msg=name)


def test_lora_input_mistakes_are_one_line_and_register_nothing(tmp_path, catalog, pair, run):
    base_dir, adapter = pair
    other = tmp_path / "other-arch"
    save_tensors(other, {"w": torch.ones(2, 2)})
    code, _, err = run("merge", "--method", "linear", "--model", f"{base_dir}+{adapter}+x")
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1 and "MODEL+ADAPTER" in err
    code, _, err = run("merge", "--method", "linear", "--model", str(adapter))
    assert code != 0 and "is a LoRA adapter, not a model" in err and err.count("\n") == 1
    code, _, err = run("merge", "--method", "linear", "--model", f"{other}+{adapter}")
    assert code != 0 and "does not have" in err and err.count("\n") == 1
    code, _, err = run("merge", "--method", "linear", "--model", f"{base_dir}+{base_dir}")
    assert code != 0 and "not a PEFT adapter" in err and err.count("\n") == 1
    code, out, _ = run("ls", "--json")
    assert json.loads(out) == []


def test_zoo_merge_model_plus_adapter_on_the_command_line(tmp_path, pair, run):
    base_dir, adapter = pair
    assert run("add", str(base_dir), "--name", "llama")[0] == 0
    code, out, err = run("merge", "--method", "linear", "--model", f"llama+{adapter}", "--out", "merged")
    assert code == 0, err
    code, out, _ = run("show", "merged", "--json")
    roles = sorted(p["role"] for p in json.loads(out)["parents"])
    assert roles == ["adapter", "input"]
    code, out, err = run("reproduce", "merged", "--json")  # the recipe replays with its adapter, bit for bit
    assert code == 0, err
    assert [r["status"] for r in json.loads(out)] == ["identical"], out


# ----- catalogued ---------------------------------------------------------------------------

def test_zoo_add_recognises_an_adapter_and_records_its_base(tmp_path, llama_dir, run):
    ad = make_adapter(llama_dir, tmp_path / "ad", base_name="llama", r=4, alpha=8)
    assert run("add", str(llama_dir), "--name", "llama")[0] == 0
    code, out, err = run("add", str(ad), "--name", "my-lora")
    assert code == 0, err
    assert "LoRA adapter of llama@1 (rank 4, alpha 8" in out
    code, out, _ = run("show", "my-lora", "--json")
    info = json.loads(out)
    assert info["family"] == "lora" and info["adapter"]["base_ref"] == "llama@1"
    assert info["adapter"]["rank"] == 4 and info["adapter"]["targets"] == ["down_proj", "q_proj", "v_proj"]
    assert [(p["parent"], p["role"]) for p in info["parents"]] == [("llama@1", "base")]
    code, out, _ = run("show", "my-lora")
    assert "LoRA adapter of llama@1 (rank 4, alpha 8, targets down_proj, q_proj, v_proj)" in " ".join(out.split())
    # a base that is not catalogued stays as text
    ad2 = make_adapter(llama_dir, tmp_path / "ad2", base_name="org/some-model", rslora=True)
    assert run("add", str(ad2), "--name", "other-lora")[0] == 0
    code, out, _ = run("show", "other-lora")
    assert "LoRA adapter of org/some-model (not in the catalog)" in out and "rsLoRA" in out
    info = json.loads(run("show", "other-lora", "--json")[1])
    assert info["parents"] == [] and info["adapter"]["base"] == "org/some-model"


def test_an_adapter_base_matched_by_path(catalog, tmp_path, llama_dir):
    ad = make_adapter(llama_dir, tmp_path / "ad", base_name=str(llama_dir))
    base = catalog.add(llama_dir, "the-base").entry
    entry = catalog.add(ad, "lora").entry
    assert [(m.ref, e.role) for e, m in catalog.parents(entry)] == [(base.ref, "base")]
    assert entry.family == "lora" and entry.config["peft_type"] == "LORA"


# ----- extracted ------------------------------------------------------------------------------

def low_rank_finetune(src: Path, dst: Path, rank: int = 3, noise: float = 0.002, seed: int = 5) -> Path:
    """A 'fine-tune' whose 2-D deltas are mostly rank `rank` plus a little full-rank noise
    (as real fine-tunes are); norms and embeddings change too."""
    ck = Checkpoint.open(src)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in ck.names():
        t = ck.get(n)
        d = noise * torch.randn(t.shape, generator=g)
        if t.ndim == 2:
            d += 0.05 * torch.randn(t.shape[0], rank, generator=g) @ torch.randn(rank, t.shape[1], generator=g)
        out[n] = t + d
    save_tensors(dst, out, config=ck.config)
    return dst


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


def _load(path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path).eval()


@pytest.fixture
def finetune(tmp_path, llama_dir):
    return llama_dir, low_rank_finetune(llama_dir, tmp_path / "ft")


def test_full_rank_extraction_loads_in_peft_and_equals_the_finetune(finetune, run):
    from peft import PeftModel

    base_dir, ft_dir = finetune
    code, out, err = run("extract-lora", str(ft_dir), "--base", str(base_dir), "--rank", "64", "--out", "ft-lora")
    assert code == 0, err
    info = json.loads(run("show", "ft-lora", "--json")[1])
    assert info["family"] == "lora" and info["adapter"]["rank"] == 32  # min(64, 32 x 32 / 64 x 32 matrices)
    assert sorted(p["role"] for p in info["parents"]) == ["base", "source"]
    assert info["adapter"]["base_ref"] == "llama-tiny@1" or info["adapter"]["base"] == "llama-tiny"
    path = Path(info["path"])
    assert sorted(f["path"] for f in info["files"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    code, out, err = run("reproduce", "ft-lora", "--json")  # deterministic: the replay writes the same bytes
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["identical"], out + err
    card = (path / "README.md").read_text()
    assert "library_name: peft" in card and "base_model_relation: adapter" in card
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    peft_model = PeftModel.from_pretrained(_load(base_dir), path).eval()
    want = logits(_load(ft_dir), ids)
    got = logits(peft_model, ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (logits(_load(base_dir), ids) - want).abs().max() > 1e-2  # the fine-tune differs (the test can fail)


def test_low_rank_extraction_is_closer_than_the_base_and_its_error_is_the_discarded_spectrum(catalog, finetune):
    """With rank 3 of a mostly rank-3 change: PEFT's output is far nearer the fine-tune than the
    base's is (measured: 0.054 of the base's distance in logits; rank 1: 0.99, 2: 0.61, 8: 0.026,
    full: 8e-7), and per module ||delta - B A||_F^2 equals the sum of the discarded s_i^2 from an
    independent float64 SVD (numpy)."""
    import numpy as np
    from peft import PeftModel

    from zoo.catalog import Parent
    from zoo.runner import run_operator

    base_dir, ft_dir = finetune
    res = run_operator(catalog, "merge.extract_lora", [Parent(str(base_dir), "base"), Parent(str(ft_dir), "source")],
                       {"rank": 3}, "lora-r3")
    path = Path(res.entry.path)
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    want = logits(_load(ft_dir), ids)
    err_lora = (logits(PeftModel.from_pretrained(_load(base_dir), path).eval(), ids) - want).norm()
    err_base = (logits(_load(base_dir), ids) - want).norm()
    assert err_lora < 0.1 * err_base, (float(err_lora), float(err_base))
    ad, base, ft = Checkpoint.open(path), Checkpoint.open(base_dir), Checkpoint.open(ft_dir)
    modules = sorted(n[len("base_model.model."):-len(".lora_A.weight")] for n in ad.names() if n.endswith("lora_A.weight"))
    assert len(modules) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    for m in modules:
        a = ad.get(f"base_model.model.{m}.lora_A.weight").double().numpy()
        b = ad.get(f"base_model.model.{m}.lora_B.weight").double().numpy()
        assert a.shape[0] == 3
        delta = ft.get(f"{m}.weight").double().numpy() - base.get(f"{m}.weight").double().numpy()
        s = np.linalg.svd(delta, compute_uv=False)
        err2 = float(((delta - b @ a) ** 2).sum())
        assert abs(err2 - float((s[3:] ** 2).sum())) <= 1e-4 * float((s ** 2).sum()), m
    cfg = json.loads((path / "adapter_config.json").read_text())
    assert cfg["r"] == 3 and cfg["lora_alpha"] == 3 and cfg["peft_type"] == "LORA"
    assert set(cfg["modules_to_save"]) == {"embed_tokens", "lm_head", "input_layernorm", "post_attention_layernorm",
                                           "norm"}


def test_an_extracted_adapter_merges_back_as_base_plus_adapter(catalog, finetune):
    base_dir, ft_dir = finetune
    from zoo.catalog import Parent
    from zoo.runner import run_operator

    b = catalog.add(base_dir, "llama").entry
    run_operator(catalog, "merge.extract_lora", [Parent("llama", "base"), Parent(str(ft_dir), "source")],
                 {"rank": 64}, "ft-lora")
    got = catalog.open(_merge(catalog, method="linear", models=["llama+ft-lora"]).entry)
    ft = Checkpoint.open(ft_dir)
    for name in ft.names():
        torch.testing.assert_close(got.get(name), ft.get(name), rtol=1e-5, atol=1e-5, msg=name)
    assert b.ref in {p["parent"] for p in catalog.show("ft-lora")["parents"]}


def test_equal_to_mergekit_extract_lora(tmp_path, catalog, finetune):
    """mergekit-extract-lora on the same pair writes the same tensors (bit for bit) and settings."""
    pytest.importorskip("mergekit")
    from click.testing import CliRunner
    from mergekit.scripts.extract_lora import main as mk_extract

    from zoo.catalog import Parent
    from zoo.runner import run_operator

    base_dir, ft_dir = finetune
    r = CliRunner().invoke(mk_extract, ["--model", str(ft_dir), "--base-model", str(base_dir), "--out-path",
                                        str(tmp_path / "mk"), "--max-rank", "4"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = run_operator(catalog, "merge.extract_lora", [Parent(str(base_dir), "base"), Parent(str(ft_dir), "source")],
                       {"rank": 4}, "ours")
    ours, theirs = Checkpoint.open(res.entry.path), Checkpoint.open(tmp_path / "mk")
    assert set(ours.names()) == set(theirs.names())
    for name in theirs.names():  # the same float32 SVD of the same delta: bit for bit
        assert torch.equal(ours.get(name), theirs.get(name)), name
    mine = json.loads((Path(res.entry.path) / "adapter_config.json").read_text())
    mk = json.loads((tmp_path / "mk" / "adapter_config.json").read_text())
    for key in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "peft_type"):
        assert mine[key] == mk[key], key
    assert set(mine["target_modules"]) == set(mk["target_modules"])
    assert set(mine["modules_to_save"]) == set(mk["modules_to_save"])


def test_extract_lora_mistakes_are_one_line_and_register_nothing(tmp_path, llama_dir, run):
    other = tmp_path / "other-arch"
    save_tensors(other, {"w": torch.ones(2, 2)})
    cases = [
        (["extract-lora", str(llama_dir), "--base", str(llama_dir), "--rank", "0"], "rank"),
        (["extract-lora", str(other), "--base", str(llama_dir), "--rank", "4"], "not in the base"),
        (["extract-lora", str(llama_dir), "--base", str(llama_dir), "--rank", "4", "-e", "("], "regex"),
        (["extract-lora", "nope", "--base", str(llama_dir), "--rank", "4"], "no model 'nope'"),
        (["extract-lora", str(llama_dir), "--base", str(llama_dir), "--rank", "4", "-i", "nothing-matches",
          "--save-module", "embed_tokens"], "no module to decompose"),
    ]
    for args, says in cases:
        code, _, err = run(*args)
        assert code != 0 and err.startswith("error: ") and err.count("\n") == 1 and says in err, (args, err)
    assert json.loads(run("ls", "--json")[1]) == []


def test_a_pickled_adapter_is_converted_and_stays_an_adapter(tmp_path, catalog, pair):
    from safetensors.torch import load_file

    base_dir, adapter = pair
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(load_file(adapter / "adapter_model.safetensors"), legacy / "adapter_model.bin")
    (legacy / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    entry = catalog.add(legacy, "old-lora").entry
    assert entry.family == "lora" and (Path(entry.path) / "adapter_model.safetensors").is_file()
    got = catalog.open(_merge(catalog, method="linear", models=[f"{base_dir}+old-lora"]).entry)
    want = merged_by_peft(base_dir, adapter)
    name = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(got.get(name), want[name], rtol=1e-6, atol=1e-6)


def test_a_lora_source_in_slices_is_applied_on_the_fly(tmp_path, catalog, pair):
    """slices: a passthrough frankenmerge whose second slice comes from base+adapter: those
    layers equal PEFT's merged model, the first slice the bare base; lineage has the adapter."""
    base_dir, adapter = pair
    want, base = merged_by_peft(base_dir, adapter), Checkpoint.open(base_dir)
    a = catalog.add(adapter, "my-lora").entry
    cfg = tmp_path / "slices.yaml"
    cfg.write_text(yaml.safe_dump({"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": str(base_dir), "layer_range": [0, 1]}]},
        {"sources": [{"model": {"model": str(base_dir), "lora": "my-lora"}, "layer_range": [1, 2]}]},
    ]}))
    res = _merge(catalog, cfg, out="franken")
    got = catalog.open(res.entry)
    for name in ("self_attn.q_proj.weight", "self_attn.v_proj.weight"):
        assert torch.equal(got.get(f"model.layers.0.{name}"), base.get(f"model.layers.0.{name}"))
        torch.testing.assert_close(got.get(f"model.layers.1.{name}"), want[f"model.layers.1.{name}"],
                                   rtol=1e-6, atol=1e-6)
    assert not torch.equal(want["model.layers.1.self_attn.q_proj.weight"],
                           base.get("model.layers.1.self_attn.q_proj.weight"))  # the adapter changes it
    run = catalog.producing_run(res.entry)
    assert [i["role"] for i in run.inputs] == ["input", "input", "adapter"]  # the bare model, then model+adapter
    assert {p["parent"] for p in catalog.show(res.entry)["parents"]} >= {a.ref}
    sources = [src["model"] for s in run.timings["notes"]["slices"] for src in s["sources"]]
    assert sources[1] == "llama-tiny@1+my-lora@1"
