"""Tiny dense models for mixtures of experts, built locally: a base Llama with a BPE
tokenizer trained on a standard-library source file, two fine-tunes of it, and the wrong
inputs (a wider Llama, a GPT-2, a Llama without a tokenizer). Also mergekit-moe run in
process, as the tests compare against it."""
from __future__ import annotations

import inspect
import json.decoder
from pathlib import Path

import torch

VOCAB = 300


def tiny_tokenizer():
    """A byte-level BPE tokenizer with <s> and </s>, trained on json/decoder.py."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([inspect.getsourcefile(json.decoder)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def llama(seed: int, intermediate: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=intermediate, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1,
                      eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def fine_tune(model, seed: int, scale: float = 0.05):
    """Every weight of `model` moved by N(0, scale^2) noise (attention too, so that a tensor
    taken from the wrong model shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def build_moe_models(root: Path) -> dict[str, str]:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer()
    paths = {}

    def save(name: str, model, with_tokenizer: bool = True) -> None:
        model.save_pretrained(root / name)
        if with_tokenizer:
            tok.save_pretrained(root / name)
        paths[name] = str(root / name)

    save("base", llama(0))
    save("ft_a", fine_tune(llama(0), 1))
    save("ft_b", fine_tune(llama(0), 2))
    save("wide", fine_tune(llama(0, intermediate=96), 3))
    save("no_tokenizer", llama(0), with_tokenizer=False)
    torch.manual_seed(4)
    save("gpt2", GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64)))
    return paths


def mergekit_moe(doc: dict, out: Path, seed: int | None = None) -> Path:
    """mergekit-moe's build on `doc` (a parsed YAML) into `out`, on the CPU; with `seed`, the
    global torch generator seeded first (mergekit-moe's --random-seed)."""
    from mergekit.merge import MergeOptions
    from mergekit.moe.config import MoEMergeConfig
    from mergekit.scripts.moe import build

    if seed is not None:
        torch.manual_seed(seed)
    build(MoEMergeConfig.model_validate(doc), str(out), MergeOptions(quiet=True, write_model_card=False),
          device="cpu")
    return out
