"""Tokenizers and chat templates in `zoo merge`: mergekit's `tokenizer_source`, `tokenizer:`
block and `chat_template`, on tiny Llamas that each carry a different real tokenizer (BPE
trained on standard-library files; one with added tokens such as <|im_start|>).

Each merge runs through `zoo merge` and through mergekit 0.1.5 in process on the same YAML;
every tensor is compared token by token (mergekit's union numbers the tokens it adds in a
different order in every process, see merging/tokenizer/build.py), and the output tokenizer
is loaded with transformers' AutoTokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.one_line import nothing_registered, one_line_error
from tests.helpers.tokenized import tokenized_llama
from zoo import Catalog, Checkpoint

VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
CHATML = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"  # ChatML, by hand


@pytest.fixture(scope="module")
def zoo_models(tmp_path_factory) -> dict[str, str]:
    """base and a share tokenizer "a" (with a chat template of its own); b has tokenizer "b"
    (added <|im_start|>, <|im_end|>; 4 spare embedding rows); c has tokenizer "c" (added
    <|im_start|>, <tool>)."""
    root = tmp_path_factory.mktemp("tokenized")
    made = {name: tokenized_llama(root / name, kind, seed, spare)
            for name, kind, seed, spare in (("base", "a", 0, 0), ("a", "a", 1, 0), ("b", "b", 2, 4), ("c", "c", 3, 0))}
    return {k: str(v) for k, v in made.items()}


def _doc(m: dict, method: str, models: list[str], base: str | None = "base", weights: list[float] | None = None,
         **keys) -> dict:
    doc = {"merge_method": method,
           "models": [{"model": m[k], **({"parameters": {"weight": w}} if weights else {})}
                      for k, w in zip(models, weights or [None] * len(models))]}
    if base:
        doc["base_model"] = m[base]
    return {**doc, **keys}


def _zoo(run, tmp_path: Path, doc: dict, out: str = "ours") -> Checkpoint:
    cfg = tmp_path / f"{out}.yaml"
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, _, err = run("merge", str(cfg), "--out", out)
    assert code == 0, err
    return Catalog(tmp_path / "cli.db", store=tmp_path / "store").open(out)


def _ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference in float32 ulps of the larger tensor's largest magnitude."""
    scale = float(torch.finfo(torch.float32).eps) * max(float(b.abs().max()), 1e-30)
    return float((a.double() - b.double()).abs().max()) / scale


def _vocab(path: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path).get_vocab()


def _assert_matches_mergekit(ours: Checkpoint, theirs: Checkpoint, ulps: float) -> tuple[dict, dict]:
    """Same tensors and config vocab_size; token-indexed rows equal token by token (padding
    rows too); every tensor within `ulps` (0: bitwise). Returns both vocabularies."""
    vo, vt = _vocab(ours.root), _vocab(theirs.root)
    assert set(vo) == set(vt)
    assert ours.config["vocab_size"] == theirs.config["vocab_size"]
    assert set(ours.names()) == set(theirs.names())
    tokens = list(vt)
    for name in theirs.names():
        a, b = ours.get(name), theirs.get(name)
        assert a.shape == b.shape, name
        if name in VOCAB_TENSORS:
            assert a.shape[0] == ours.config["vocab_size"]
            a = torch.cat([a[[vo[t] for t in tokens]], a[len(vo):]])
            b = torch.cat([b[[vt[t] for t in tokens]], b[len(vt):]])
        assert (torch.equal(a, b) if ulps == 0 else _ulps(a, b) <= ulps), name
    return vo, vt


def _row(path: str, token: str, tensor: str = "model.embed_tokens.weight") -> torch.Tensor:
    """A model's own row for `token` (by its own tokenizer)."""
    return Checkpoint.open(path).get(tensor)[_vocab(Path(path))[token]]


# ----- against mergekit --------------------------------------------------------------------------

# task_arithmetic and linear round some elements of every tensor differently from mergekit, with
# or without tokenizers (measured: at most 2.03 ulps of a tensor's largest magnitude, on layer
# tensors the tokenizer does not touch as on the embeddings; a row out of place would be off by
# about 10^6 ulps); nearswap is bitwise.
@pytest.mark.slow  # runs mergekit beside us
@pytest.mark.parametrize("case", ["union", "base", "model", "union-linear", "tokens-block"])
def test_tokenizer_merge_matches_mergekit(tmp_path, run, zoo_models, case):
    from tests.helpers.mergekit_run import mergekit_merge

    m = zoo_models
    if case == "union":  # base + a (same tokenizer) + b (another one, with added tokens)
        doc = _doc(m, "task_arithmetic", ["a", "b"], weights=[0.5, 0.7], tokenizer_source="union")
    elif case == "base":
        doc = _doc(m, "nearswap", ["b"], parameters={"t": 0.01}, tokenizer_source="base")
    elif case == "model":  # b's tokenizer, without b's spare rows
        doc = _doc(m, "linear", ["base", "a", "b"], weights=[0.2, 0.3, 0.5], tokenizer_source=m["b"])
    elif case == "union-linear":  # linear's base_model (a, listed second) gives b the rows of the tokens b
        # lacks and both base and a have (not their mean)
        doc = _doc(m, "linear", ["base", "a", "b"], base="a", weights=[0.2, 0.3, 0.5], tokenizer_source="union")
    else:  # three different tokenizers, per-token sources, padding
        doc = _doc(m, "task_arithmetic", ["b", "c"], weights=[0.6, 0.3], tokenizer={
            "source": "union", "pad_to_multiple_of": 32, "tokens": {
                "<s>": {"source": m["b"], "force": True},
                "<new>": {"source": {"kind": "zero"}},
                "<|im_end|>": {"source": {"kind": "model_token", "model": m["c"], "token": "</s>"}},
                "<tool>": {"source": {"kind": "model_token", "model": m["base"], "token_id": 5}, "force": True}}})
    ours = _zoo(run, tmp_path, doc)
    theirs = mergekit_merge(doc, tmp_path / "mk")
    vo, _ = _assert_matches_mergekit(ours, theirs, ulps=0 if case == "base" else 3)

    emb = ours.get("model.embed_tokens.weight")
    if case == "union":  # <|im_start|> is b's alone: its row, wherever the union put the token
        from transformers import AutoTokenizer

        (tid,) = AutoTokenizer.from_pretrained(ours.root).encode("<|im_start|>", add_special_tokens=False)
        assert _ulps(emb[tid], _row(m["b"], "<|im_start|>")) <= 2  # b + w(b - b) + w(b - b), rounded
        assert len(vo) == len(set(_vocab(Path(m["base"]))) | set(_vocab(Path(m["b"]))))
    elif case == "base":
        assert vo == _vocab(Path(m["base"])) and emb.shape[0] == len(vo)
    elif case == "union-linear":
        assert len(vo) == len(set(_vocab(Path(m["base"]))) | set(_vocab(Path(m["b"]))))
    elif case == "model":
        assert vo == _vocab(Path(m["b"])) and emb.shape[0] == len(vo) < Checkpoint.open(m["b"]).config["vocab_size"]
    else:
        assert emb.shape[0] == ours.config["vocab_size"] and emb.shape[0] % 32 == 0 and emb.shape[0] > len(vo)
        assert torch.equal(emb[vo["<new>"]], torch.zeros(32))  # no model has it: zero
        # rows every model has alike come out as that row (task arithmetic rounds x + w (x - x) by an ulp)
        assert _ulps(emb[vo["<s>"]], _row(m["b"], "<s>")) <= 2  # forced from b, in every model
        # b has <|im_end|> and keeps its row; the base and c, which lack it, take c's </s> row
        c_row, b_row = _row(m["c"], "</s>"), _row(m["b"], "<|im_end|>")
        assert _ulps(emb[vo["<|im_end|>"]], c_row + 0.6 * (b_row - c_row)) <= 2
        # b and c have <|im_start|>, the base not: the base takes the mean of their rows
        b_row, c_row = _row(m["b"], "<|im_start|>"), _row(m["c"], "<|im_start|>")
        mean = (b_row + c_row) / 2
        assert _ulps(emb[vo["<|im_start|>"]], mean + 0.6 * (b_row - mean) + 0.3 * (c_row - mean)) <= 2
        assert _ulps(emb[vo["<tool>"]], Checkpoint.open(m["base"]).get("model.embed_tokens.weight")[5]) <= 2
        pad = emb[len(vo):]  # padding rows: each model's mean row, merged
        assert torch.equal(pad, pad[:1].expand_as(pad)) and pad.abs().sum() > 0


@pytest.mark.slow  # runs mergekit beside us
def test_chat_template_and_dtype_match_mergekit(tmp_path, run, zoo_models):
    """A union in bfloat16 (inputs rounded first, as mergekit loads them) with a built-in
    chat template: the same tensors as mergekit, and both tokenizers render the template."""
    from transformers import AutoTokenizer

    from tests.helpers.mergekit_run import mergekit_merge

    doc = _doc(zoo_models, "nearswap", ["c"], parameters={"t": 0.02}, tokenizer_source="union",
               chat_template="chatml", dtype="bfloat16")
    ours = _zoo(run, tmp_path, doc)
    theirs = mergekit_merge(doc, tmp_path / "mk")
    _assert_matches_mergekit(ours, theirs, ulps=0)
    assert ours.get("lm_head.weight").dtype == torch.bfloat16
    msgs = [{"role": "user", "content": "hi"}]
    for path in (ours.root, theirs.root):
        assert AutoTokenizer.from_pretrained(path).apply_chat_template(msgs, tokenize=False,
                                                                       add_generation_prompt=True) == CHATML
    assert "chat_template" in json.loads((ours.root / "tokenizer_config.json").read_text())


# ----- chat templates (ours alone) ---------------------------------------------------------------

def test_chat_template_name_auto_and_text(tmp_path, run, zoo_models):
    from transformers import AutoTokenizer

    m = zoo_models
    msgs = [{"role": "user", "content": "hi"}]

    def rendered(out: str, template: str, models=("a",), **keys) -> str:
        ours = _zoo(run, tmp_path, _doc(m, "task_arithmetic", list(models), chat_template=template, **keys), out)
        return AutoTokenizer.from_pretrained(ours.root).apply_chat_template(msgs, tokenize=False,
                                                                            add_generation_prompt=True)

    assert rendered("named", "chatml") == CHATML
    # auto: base and a carry tokenizer "a"'s template, b none: a's wins (on a merged tokenizer)
    assert rendered("auto", "auto", ("a", "b"), tokenizer_source="union") == "[user] hi\n"
    literal = "{% for m in messages %}<<{{ m['content'] | upper }}>>{% endfor %}"
    assert rendered("literal", literal) == "<<HI>>"
    # no tokenizer merge: the vocabulary stays the base's
    assert _vocab(Catalog(tmp_path / "cli.db", store=tmp_path / "store").open("named").root) == \
        _vocab(Path(m["base"]))


def test_builtin_templates_render_as_mergekits():
    """weightzoo's own chatml and alpaca (used without mergekit) render what mergekit's do."""
    pytest.importorskip("mergekit")
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from merging.tokenizer import chat

    convs = [[{"role": "user", "content": "hi"}],
             [{"role": "system", "content": " be brief "}, {"role": "user", "content": " 2+2? "},
              {"role": "assistant", "content": "4 "}, {"role": "user", "content": "and 3+3?"}],
             [{"role": "user", "content": "a"}, {"role": "user_context", "content": "ctx"},
              {"role": "system", "content": "late"}]]
    for name in ("chatml", "alpaca"):
        theirs, origin = chat.builtin(name)
        assert origin.startswith("mergekit's")
        for conv in convs:
            for prompt in (False, True):
                expect = _compile_jinja_template(theirs).render(messages=conv, add_generation_prompt=prompt)
                got = _compile_jinja_template(chat.OWN[name]).render(messages=conv, add_generation_prompt=prompt)
                assert got == expect, (name, conv, prompt)


# ----- the record ----------------------------------------------------------------------------------

def test_settings_are_recorded_cached_and_written_back(tmp_path, run, zoo_models):
    """The run's params hold the tokenizer settings (models by position), so changing them
    changes the cache key; mergekit_config.yml carries them, and running it again reuses
    the recorded result."""
    m = zoo_models
    doc = _doc(m, "task_arithmetic", ["a", "b"], tokenizer={
        "source": m["b"], "tokens": {"<x>": {"source": {"kind": "model_token", "model": m["a"], "token": "<s>"}}}},
        chat_template="chatml")
    first = _zoo(run, tmp_path, doc, "tok")
    code, out, _ = run("show", "tok", "--json")
    params = json.loads(out)["run"]["params"]
    assert params["tokenizer"] == {"source": {"model": 2}, "pad_to_multiple_of": None, "base": 0, "tokens": {
        "<x>": {"source": {"kind": "model_token", "model": 1, "token": "<s>", "token_id": None}, "force": False}}}
    assert params["chat_template"] == "chatml"

    written = yaml.safe_load((first.root / "mergekit_config.yml").read_text())
    assert written["tokenizer"] == {"source": "b@1", "tokens": {"<x>": {"source": {
        "kind": "model_token", "model": "a@1", "token": "<s>"}}}} and written["chat_template"] == "chatml"
    code, out, err = run("merge", str(first.root / "mergekit_config.yml"), "--json")
    assert code == 0 and json.loads(out)["reused"] is True and json.loads(out)["ref"] == "tok@1", (out, err)

    cfg = tmp_path / "alpaca.yaml"  # another setting: another run, not the cached one
    cfg.write_text(yaml.safe_dump({**doc, "chat_template": "alpaca"}))
    code, out, err = run("merge", str(cfg), "--json")
    assert code == 0 and json.loads(out)["reused"] is False and json.loads(out)["ref"] != "tok@1", (out, err)
    template = json.loads((Path(json.loads(out)["path"]) / "tokenizer_config.json").read_text())["chat_template"]
    assert "### Instruction" in template


# ----- mistakes: one line, nothing written, nothing recorded ------------------------------------------

@pytest.mark.parametrize("keys,needle", [
    ({"tokenizer_source": "NOWHERE"}, "'NOWHERE' is not one of the merge's models"),
    ({"tokenizer_source": "C"}, "is not one of the merge's models"),
    ({"tokenizer": {"tokens": {"<x>": {"source": {"kind": "model_token", "model": "C", "token": "a"}}}}},
     "tokenizer.tokens['<x>'].source"),
    ({"tokenizer": {"tokens": {"<x>": {"source": {"kind": "nearest"}}}}}, "unknown kind 'nearest'"),
    ({"tokenizer": {"tokens": {"<x>": {"force": True}}}}, "force: true needs a source"),
    ({"tokenizer_source": "union", "tokenizer": {"source": "base"}}, "not both"),
    ({"chat_template": "chatmlx"}, "is not a built-in template"),
    ({"chat_template": "{% for m in messages %}{{ m }}"}, "does not parse"),
    ({"tokenizer": {"tokens": {"<|im_start|>": {"source": "BASE"}}}}, "does not have that token"),
    ({"tokenizer": {"tokens": {"<y>": {"source": {"kind": "model_token", "model": "BASE", "token": "<nope>"}}}}},
     "has no token '<nope>'"),
    ({"tokenizer_source": "union", "models+": "bare"}, "has no tokenizer files"),
])
def test_tokenizer_mistakes_are_one_line_and_record_nothing(tmp_path, run, zoo_models, keys, needle):
    """Every mistake is refused before the output folder exists: one line, non-zero exit,
    no catalog entry, no folder in the store."""
    m = dict(zoo_models)
    models = ["a", "b"]
    keys = dict(keys)
    if keys.pop("models+", None):  # a model saved without its tokenizer files
        bare = tmp_path / "bare"
        bare.mkdir()
        for f in ("config.json", "model.safetensors"):
            (bare / f).write_bytes((Path(m["a"]) / f).read_bytes())
        m["bare"] = str(bare)
        models = ["a", "bare"]
    text = yaml.safe_dump({**_doc(m, "task_arithmetic", models), **keys}, sort_keys=False)
    text = text.replace("NOWHERE", str(tmp_path / "nowhere")).replace(": C\n", f": {m['c']}\n")
    text = text.replace("model: C\n", f"model: {m['c']}\n").replace("BASE", m["base"])
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    code, _, err = run("merge", str(cfg), "--out", "bad")
    one_line_error(code, err, needle.replace("NOWHERE", str(tmp_path / "nowhere")))
    nothing_registered(run, tmp_path / "store")


def test_tokenizer_with_slices_is_refused(tmp_path, run, zoo_models):
    doc = {"merge_method": "passthrough", "tokenizer_source": "base",
           "slices": [{"sources": [{"model": zoo_models["a"], "layer_range": [0, 2]}]}]}
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    one_line_error(*run("merge", str(cfg))[::2], "with slices: are not supported yet")
    nothing_registered(run, tmp_path / "store")
