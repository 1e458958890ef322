"""Family adapters (detection, roles, widths, building) and the built-in tasks, `zoo new`,
`zoo train` and `zoo eval`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from zoo import Checkpoint
from zoo.cli import main
from zoo.errors import ZooError
from zoo.families import FAMILIES, Axis, family_of
from zoo.tasks import get_task
from zoo.tasks.digits import load_digits, read_digits
from zoo.training import evaluate, new_model, train

from tests.helpers.models import tiny_llama, tiny_vit


def _saved(tmp_path, name, model):
    model.eval().save_pretrained(tmp_path / name)
    return Checkpoint.open(tmp_path / name)


@pytest.fixture
def zoo_models(tmp_path):
    """name -> (in-memory model, its saved checkpoint)."""
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=16,
                                      bos_token_id=0, eos_token_id=0))
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                vocab_size=50, max_position_embeddings=16))
    models = {"llama": tiny_llama(), "vit": tiny_vit(), "gpt2": gpt2, "bert": bert}
    return {name: (m, _saved(tmp_path, name, m)) for name, m in models.items()}


@pytest.mark.parametrize("name,norm,heads,kv,outputs", [("llama", "rms", 4, 2, 2), ("vit", "pre_ln", 4, 4, 4),
                                                        ("gpt2", "pre_ln", 4, 4, 4), ("bert", "post_ln", 4, 4, 4)])
def test_family_detection_widths_roles_and_reload(zoo_models, name, norm, heads, kv, outputs):
    _, ckpt = zoo_models[name]
    fam, config = family_of(ckpt)
    assert fam.name == name and fam.norm == norm
    w = fam.widths(config)
    assert (w.hidden, w.heads, w.kv_heads, w.head_dim, w.layers) == (32, heads, kv, 8, 2)
    roles = fam.roles(ckpt.names(), config)
    assert set(roles) == set(ckpt.names())
    # attention out and MLP out (and their biases where the family has them)
    assert sum(r.block_output for r in roles.values() if r.layer == 0) == outputs
    assert any(Axis.RES_IN in r.axes for r in roles.values())
    model = fam.load(ckpt)  # builds the transformers model and runs it
    x = fam.example_inputs(config, 2, torch.Generator().manual_seed(0))
    assert torch.isfinite(fam.outputs(model, x)).all()


def test_timm_vit_by_tensor_names(tmp_path, zoo_models):
    """A timm-style state dict (no config.json) is detected and runs as the same function."""
    hf, _ = zoo_models["vit"]
    sd = hf.state_dict()
    p = "vit.layers." if any(k.startswith("vit.layers.") for k in sd) else None
    assert p, "expects transformers 5 ViT naming in memory"
    timm = {"cls_token": sd["vit.embeddings.cls_token"], "pos_embed": sd["vit.embeddings.position_embeddings"],
            "patch_embed.proj.weight": sd["vit.embeddings.patch_embeddings.projection.weight"],
            "patch_embed.proj.bias": sd["vit.embeddings.patch_embeddings.projection.bias"],
            "norm.weight": sd["vit.layernorm.weight"], "norm.bias": sd["vit.layernorm.bias"],
            "head.weight": sd["classifier.weight"], "head.bias": sd["classifier.bias"]}
    for i in range(2):
        q = f"{p}{i}."
        timm[f"blocks.{i}.attn.qkv.weight"] = torch.cat([sd[q + f"attention.{x}_proj.weight"] for x in "qkv"])
        timm[f"blocks.{i}.attn.qkv.bias"] = torch.cat([sd[q + f"attention.{x}_proj.bias"] for x in "qkv"])
        for a, b in (("attn.proj", "attention.o_proj"), ("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                     ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            timm[f"blocks.{i}.{a}.weight"] = sd[q + b + ".weight"]
            timm[f"blocks.{i}.{a}.bias"] = sd[q + b + ".bias"]
    save_file({k: v.contiguous() for k, v in timm.items()}, tmp_path / "deit.safetensors")
    ckpt = Checkpoint.open(tmp_path / "deit.safetensors")
    fam, config = family_of(ckpt)
    assert fam.name == "timm_vit" and config["image_size"] == 8 and config["num_labels"] == 10
    config["num_attention_heads"] = 4  # timm stores no head count; the default guess is hidden/64
    config["layer_norm_eps"] = hf.config.layer_norm_eps  # timm's own default is 1e-6; this model used HF's
    model = fam.build(config)
    model.load_state_dict(fam.to_module_names({n: ckpt.get(n) for n in ckpt.names()}, config))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).logits, hf.eval()(pixel_values=x).logits)


def test_unknown_architecture_names_the_supported(tmp_path):
    save_file({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    with pytest.raises(ZooError, match="not supported; supported families: llama"):
        family_of(Checkpoint.open(tmp_path / "w.safetensors"))
    assert set(FAMILIES) == {"llama", "gpt2", "bert", "vit", "timm_vit", "stitched", "zoo_mlp"}


def test_a_family_is_one_registration(monkeypatch):
    """A third-party family: registered once, every lookup (detection, presets, catalog
    labels, layer naming) sees it; architectures without a family get generic answers."""
    from zoo.families import (Family, PRESETS, catalog_label, detect, get_family, layer_index, num_layers,
                              register_family, registry)

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))

    class Toy(Family):
        name = "toy"
        architectures = ("ToyModel",)
        presets = {"toy-tiny": {"width": 4}}

        @classmethod
        def matches(cls, config, names):
            return "toy.cell.0.w" in names

    register_family(Toy())
    assert get_family("toy").name == "toy" and detect(None, ["toy.cell.0.w"]).name == "toy"
    assert catalog_label(None, ["toy.cell.0.w"]) == ("toy", "ToyModel")
    assert catalog_label({"model_type": "mistral"}, ["toy.cell.0.w"]) == ("mistral", None)
    assert PRESETS["toy-tiny"] == {"family": "toy", "width": 4}
    assert layer_index("model.layers.7.mlp.w") == 7 and layer_index("lm_head.weight") is None
    assert num_layers({"n_layer": 3}, []) == 3 and num_layers(None, ["blocks.4.x", "h.1.y"]) == 5


def test_digits_task_splits_and_subsets():
    full, low = get_task("digits"), get_task("digits:0-4")
    xtr, ytr = full.split("train")
    xte, yte = full.split("test")
    assert xtr.shape[1:] == (1, 8, 8) and len(ytr) + len(yte) + len(full.split("val")[1]) == 1797
    assert set(low.split("test")[1].tolist()) == {0, 1, 2, 3, 4}
    assert set(get_task("digits:1,7").split("train")[1].tolist()) == {1, 7}
    with pytest.raises(ZooError, match="within 0-9"):
        get_task("digits:3-12")
    with pytest.raises(ZooError, match="unknown task"):
        get_task("imagenet")


def test_digits_are_scikit_learns_digits_read_without_importing_it():
    """The task reads sklearn's bundled file itself (importing sklearn costs ~1.6 s a
    process); the rows must be exactly what `sklearn.datasets.load_digits` returns."""
    code = ("import sys; from zoo.tasks.digits import load_digits; load_digits(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    pixels, labels = read_digits()
    assert np.array_equal(pixels, reference.data) and np.array_equal(labels, reference.target)
    images, shuffled_labels = load_digits()
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))  # the task's fixed shuffle
    assert torch.equal(images.flatten(1), torch.tensor(reference.data, dtype=torch.float32)[order] / 8.0 - 1.0)
    assert torch.equal(shuffled_labels, torch.tensor(reference.target)[order])


def test_digits_without_scikit_learn_say_what_to_install(monkeypatch):
    import zoo.tasks.digits as digits

    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ZooError, match="pip install scikit-learn"):
        digits.digits_file()


@pytest.mark.slow
def test_new_train_eval_real_learning(catalog):
    """A tiny ViT learns digits, a tiny GPT-2 learns Python text: metrics improve and are stored."""
    vit = new_model(catalog, "vit-ti", "vit", seed=0).entry
    before = evaluate(catalog, vit.id, "digits")["digits/accuracy"]
    trained = train(catalog, vit.id, "digits", "vit-trained", steps=300, lr=3e-3, batch_size=64).entry
    assert trained.metrics["digits/accuracy"] > max(0.6, before + 0.3)
    assert catalog.parents(trained)[0][0].role == "base"
    gpt = new_model(catalog, "gpt2-tiny", "gpt", seed=0).entry
    start = evaluate(catalog, gpt.id, "pytext")["pytext/loss"]
    done = train(catalog, gpt.id, "pytext", "gpt-trained", steps=60, lr=3e-3).entry
    assert done.metrics["pytext/loss"] < start - 1.5  # from ~ln(256) toward byte-level structure
    assert catalog.get(gpt.id).metrics["pytext/loss"] == pytest.approx(start)  # eval stored on the entry


def test_task_family_mismatch_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))
    assert main(["new", "vit-ti", "--out", "v"]) == 0
    assert main(["eval", "v", "--task", "pytext"]) == 1
    assert "for language models" in capsys.readouterr().err
    assert main(["new", "gpt2-tiny", "--set", "vocab_size=100", "--out", "g"]) == 0
    assert main(["eval", "g", "--task", "pytext"]) == 1
    assert "vocab_size >= 256" in capsys.readouterr().err
    assert main(["eval", "v", "--task", "digits", "--json"]) == 0
    assert "digits/accuracy" in json.loads(capsys.readouterr().out)


def test_users_register_their_own_task(catalog):
    """A custom task plugs into eval through the Python API."""
    from zoo.tasks import Task, register_task

    class Constant(Task):
        modality, primary, name = "vision", "score", "constant"

        def __init__(self, variant=None):
            self.value = float(variant or 1)

        def evaluate(self, model, config, split="test"):
            return {"score": self.value}

    register_task("constant", Constant)
    vit = new_model(catalog, "vit-ti", "v").entry
    assert evaluate(catalog, vit.id, "constant:0.25") == {"constant/score": 0.25}
    assert catalog.get(vit.id).metrics == {"constant/score": 0.25}
