"""`zoo moe` (merge.moe, mergekit-moe): a Mixtral-style mixture of experts from dense tiny
Llamas that share a base. Checked against mergekit-moe itself on the same YAML (every tensor,
every gate mode), by loading the result in transformers' MixtralForCausalLM (no missing or
unexpected keys; routed to one expert it computes that expert's dense Llama, in float64),
for lineage and cache reuse, and for bad input (one line, nothing recorded)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.moe import mergekit_moe, tiny_tokenizer
from tests.helpers.one_line import nothing_registered, one_line_error
from zoo import Checkpoint

from merging.moe.config import parse
from merging.moe.operator import build_moe

PROMPTS = {  # different lengths, so the left padding matters
    "ft_a": {"positive_prompts": ["def decode(self, s, _w=WHITESPACE.match):", "return obj, end"],
             "negative_prompts": ["import re"]},
    "ft_b": {"positive_prompts": ["class JSONDecoder(object):"],
             "negative_prompts": ["raise JSONDecodeError(msg, s, end)", "pass"]},
    "base": {"positive_prompts": ["nextchar = s[end:end + 1]", "if nextchar == '}':", "values = []"]},
}


def moe_doc(models: dict, mode: str, experts=("ft_a", "ft_b", "base"), **extra) -> dict:
    return {"base_model": models["base"], "gate_mode": mode, **extra,
            "experts": [{"source_model": models[e], **PROMPTS[e]} for e in experts]}


def build(catalog, doc: dict, seed: int = 0, **kw):
    result = build_moe(catalog, parse(doc), seed=seed, **kw)
    return catalog.open(result.entry).root


def tensors(path: Path) -> dict[str, torch.Tensor]:
    ck = Checkpoint.open(path)
    return {n: ck.get(n).clone() for n in ck.names()}


def in_mergekit_layout(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our Hub-style Mixtral tensors in the layout mergekit 0.1.5 writes (transformers 5's:
    each layer's experts fused, w1 above w3 in gate_up_proj; the router under mlp.gate)."""
    out = {n: t for n, t in ours.items() if ".block_sparse_moe." not in n}
    layers = {int(m.group(1)) for n in ours if (m := re.match(r"model\.layers\.(\d+)\.block_sparse_moe", n))}
    for i in sorted(layers):
        p = f"model.layers.{i}.block_sparse_moe"
        n = len({n for n in ours if n.startswith(f"{p}.experts.") and n.endswith(".w1.weight")})
        w = {k: [ours[f"{p}.experts.{e}.{k}.weight"] for e in range(n)] for k in ("w1", "w2", "w3")}
        out[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([a, b]) for a, b in zip(w["w1"], w["w3"])])
        out[f"model.layers.{i}.mlp.experts.down_proj"] = torch.stack(w["w2"])
        out[f"model.layers.{i}.mlp.gate.weight"] = ours[f"{p}.gate.weight"]
    return out


def load_mixtral(path: Path, dtype=torch.float32):
    from transformers import MixtralForCausalLM

    model, info = MixtralForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True,
                                                     experts_implementation="eager")  # float64 too
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


# --- (a) against mergekit-moe ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode,dtype", [("random", None), ("uniform_random", "float16"), ("hidden", None),
                                        ("hidden_avg", "bfloat16"), ("cheap_embed", None)])
def test_same_tensors_as_mergekit_moe(moe_models, catalog, tmp_path, mode, dtype):
    """Every tensor as mergekit-moe writes it, the routers included (random ones from the same
    seed: mergekit draws from torch's global generator, seeded by --random-seed), and the same
    config.json. Expert noise and residual scaling are drawn and applied in mergekit's order."""
    extra = {"dtype": dtype} if dtype else {}
    doc = moe_doc(moe_models, mode, experts_per_token=2, **extra)
    if mode == "random":
        doc["experts"][0]["noise_scale"] = 0.01
        doc["experts"][1]["residual_scale"] = 0.5
    ours = build(catalog, doc, seed=7)
    theirs = mergekit_moe(doc, tmp_path / "mergekit", seed=7)
    got, want = in_mergekit_layout(tensors(ours)), tensors(theirs)
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype, name
        if name.endswith("mlp.gate.weight"):
            torch.testing.assert_close(got[name], t, rtol=0, atol=1e-6, msg=name)
        else:
            assert torch.equal(got[name], t), name
    assert json.loads((ours / "config.json").read_text()) == json.loads((theirs / "config.json").read_text())
    # and transformers makes one and the same model of both folders
    a, b = load_mixtral(ours).state_dict(), load_mixtral(theirs).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hidden_router_rows_follow_mergekit_recipe(moe_models, catalog):
    """Without mergekit: each router row is the base's (bfloat16) hidden state entering the
    layer at the last token of the expert's prompt (BOS prepended), minus the same for its
    negative prompt, normalised; computed here with plain transformers calls. One prompt
    each, so no padding is involved."""
    from transformers import AutoModelForCausalLM

    prompts = {"ft_a": ("def decode(self, s):", "import re"), "ft_b": ("class JSONDecoder(object):", "pass")}
    doc = moe_doc(moe_models, "hidden", experts=("ft_a", "ft_b"))
    for e, (pos, neg) in zip(doc["experts"], prompts.values()):
        e["positive_prompts"], e["negative_prompts"] = [pos], [neg]
    ours = tensors(build(catalog, doc))
    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(moe_models["base"], dtype=torch.bfloat16).eval()

    def state(prompt: str) -> torch.Tensor:  # (layers, hidden)
        ids = torch.tensor([[tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        assert len(hs) == 3  # the embeddings and each layer's output: the first two enter layers 0 and 1
        return torch.stack([h[0, -1].float() for h in hs[:2]])

    for e, (pos, neg) in enumerate(prompts.values()):
        want = state(pos) - state(neg)
        want = want / want.norm(dim=-1, keepdim=True)
        for layer in range(2):
            got = ours[f"model.layers.{layer}.block_sparse_moe.gate.weight"][e]
            torch.testing.assert_close(got, want[layer], rtol=0, atol=0.01)  # bfloat16 arithmetic, as mergekit


# --- (b) loads in transformers; routed to one expert it is that expert ------------------------
def test_mixtral_routed_to_one_expert_is_that_dense_llama(moe_models, catalog):
    from transformers import LlamaForCausalLM

    out = build(catalog, moe_doc(moe_models, "random", experts_per_token=1))
    moe = load_mixtral(out, torch.float64)
    ck = tensors(out)
    expert_models = ("ft_a", "ft_b", "base")
    for e, name in enumerate(expert_models):  # the loaded experts are the experts' own MLP weights
        dense = Checkpoint.open(moe_models[name])
        for layer in range(2):
            exp = moe.model.layers[layer].mlp.experts
            mlp = lambda p: dense.get(f"model.layers.{layer}.mlp.{p}.weight").double()  # noqa: E731
            assert torch.equal(exp.gate_up_proj[e], torch.cat([mlp("gate_proj"), mlp("up_proj")]))
            assert torch.equal(exp.down_proj[e], mlp("down_proj"))
            assert torch.equal(moe.model.layers[layer].mlp.gate.weight,
                               ck[f"model.layers.{layer}.block_sparse_moe.gate.weight"].double())
    ids = torch.tensor([tiny_tokenizer()("def scan_once(string, idx):")["input_ids"]])
    logits = []
    for e, name in enumerate(expert_models):
        _route_everything_to(moe, e)
        with torch.no_grad():
            got = moe(input_ids=ids).logits
        ref = LlamaForCausalLM.from_pretrained(moe_models["base"], dtype=torch.float64).eval()
        expert = Checkpoint.open(moe_models[name])
        with torch.no_grad():  # the base's attention, norms and embeddings; the expert's MLP
            for layer, block in enumerate(ref.model.layers):
                for p in ("gate_proj", "up_proj", "down_proj"):
                    getattr(block.mlp, p).weight.copy_(expert.get(f"model.layers.{layer}.mlp.{p}.weight"))
            want = ref(input_ids=ids).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        logits.append(got)
    assert (logits[0] - logits[1]).abs().max() > 1e-3 and (logits[1] - logits[2]).abs().max() > 1e-3


def _route_everything_to(model, expert: int) -> None:
    """Replace each layer's router by one that sends every token to `expert` with weight 1."""
    for layer in model.model.layers:
        gate = layer.mlp.gate

        def forward(hidden, gate=gate):
            n = hidden.reshape(-1, gate.hidden_dim).shape[0]
            logits = torch.full((n, gate.num_experts), -1e9, dtype=hidden.dtype)
            logits[:, expert] = 0
            return logits, torch.ones(n, gate.top_k, dtype=hidden.dtype), torch.full((n, gate.top_k), expert)

        gate.forward = forward


# --- (c) lineage, params, cache -------------------------------------------------------------
def test_lineage_params_and_cache(moe_models, run, tmp_path):
    cfg = tmp_path / "moe.yaml"
    doc = moe_doc(moe_models, "hidden", experts=("ft_a", "ft_b"))
    cfg.write_text(yaml.safe_dump(doc))
    code, out, err = run("moe", str(cfg), "--out", "my-moe", "--json")
    assert code == 0, err
    entry = json.loads(out)
    assert entry["reused"] is False and entry["architecture"] == "MixtralForCausalLM"
    assert [p["role"] for p in entry["parents"]] == ["base", "expert", "expert"], entry["parents"]
    params = entry["run"]["params"]
    assert entry["run"]["operator"] == "merge.moe" and params["gate_mode"] == "hidden"
    assert [e["positive_prompts"] for e in params["experts"]] == [PROMPTS["ft_a"]["positive_prompts"],
                                                                  PROMPTS["ft_b"]["positive_prompts"]]
    assert params["experts"][1]["negative_prompts"] == PROMPTS["ft_b"]["negative_prompts"]
    inputs = entry["run"]["inputs"]
    assert [inputs[e["input"]]["role"] for e in params["experts"]] == ["expert", "expert"]
    assert [p["parent"] for p in entry["parents"]] == ["base@1", "ft_a@1", "ft_b@1"]
    cfgjson = entry["config"]
    assert (cfgjson["num_local_experts"], cfgjson["num_experts_per_tok"], cfgjson["model_type"]) == (2, 2, "mixtral")
    # the same config again: reused; other prompts: a new version
    code, out, _ = run("moe", str(cfg), "--out", "my-moe")
    assert code == 0 and out.startswith("reused my-moe@1")
    # the mergekit_moe_config.yml written with it names the catalog entries and runs to the same entry
    written = Path(entry["path"]) / "mergekit_moe_config.yml"
    code, out, _ = run("moe", str(written), "--out", "my-moe")
    assert code == 0 and out.startswith("reused my-moe@1"), out
    doc["experts"][0]["positive_prompts"] = ["for key, value in pairs:"]
    cfg.write_text(yaml.safe_dump(doc))
    code, out, err = run("moe", str(cfg), "--out", "my-moe")
    assert code == 0 and "built my-moe@2" in out, (out, err)


# --- (d) bad input --------------------------------------------------------------------------
BAD = [
    ("unknown gate mode", {"gate_mode": "magic"}, "gate_mode 'magic' is not one of"),
    ("shared experts", {"shared_experts": [{"source_model": "base"}]}, "shared_experts"),
    ("unknown key", {"expert_count": 2}, "unknown key 'expert_count'"),
    ("no prompts", {"drop_prompts": True}, "experts[0] has no positive_prompts"),
    ("too few experts", {"experts_per_token": 3}, "experts_per_token is 3 but there are only 2"),
    ("other shape", {"expert": "wide"}, "has shape [96, 32] but the base's is [64, 32]"),
    ("not a llama", {"expert": "gpt2"}, "is a gpt2 model"),
    ("no tokenizer", {"base_model": "no_tokenizer"}, "has no tokenizer"),
    ("all the same", {"same": True}, "every expert is the same model"),
]


@pytest.mark.parametrize("what,change,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_records_nothing(moe_models, run, tmp_path, what, change, needle):
    doc = moe_doc(moe_models, "hidden", experts=("ft_a", "ft_b"))
    change = dict(change)
    if change.pop("drop_prompts", False):
        doc["experts"][0].pop("positive_prompts")
    if "expert" in change:
        doc["experts"][1]["source_model"] = moe_models[change.pop("expert")]
    if "base_model" in change:
        doc["base_model"] = moe_models[change.pop("base_model")]
    if change.pop("same", False):
        doc["experts"][1]["source_model"] = doc["experts"][0]["source_model"]
    doc.update(change)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    code, _, err = run("moe", str(cfg), "--out", "bad")
    one_line_error(code, err, needle)
    nothing_registered(run, tmp_path / "store")


def test_all_the_same_model_with_the_flag(moe_models, run, tmp_path):
    """mergekit's escape hatch: the same model for every expert, built when asked for."""
    doc = moe_doc(moe_models, "hidden", experts=("ft_a", "ft_b"))
    doc["experts"][1]["source_model"] = doc["experts"][0]["source_model"]
    cfg = tmp_path / "same.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    code, out, err = run("moe", str(cfg), "--i-understand-this-is-not-useful-without-training", "--json")
    assert code == 0, err
    assert [p["role"] for p in json.loads(out)["parents"]] == ["base", "expert"]
