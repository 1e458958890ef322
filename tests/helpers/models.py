"""Small real models built locally (no Hub): the checkpoints the tests merge, expand,
stitch and serve."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          ViTConfig, ViTForImageClassification)

HUB_TOKEN = "hf_weightzoo_secret_token_123"  # what the local Hub server accepts


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_vit(seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    return ViTForImageClassification(cfg).eval()


def _perturb_norms(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n.lower() or "ln_" in n:
                p.add_(torch.randn_like(p) * 0.2)  # non-trivial gamma/beta
    return model.eval()


def expandable_model(family: str, dtype=torch.float32):
    """A tiny model of `family` with non-trivial norms, and a larger target shape for it."""
    torch.manual_seed(0)
    if family == "llama":
        m = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
        target = dict(hidden_size=56, num_heads=8, intermediate_size=100, num_layers=4)  # 56 = 1x32 + 24
    elif family == "gpt2":
        m = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=16,
                                       bos_token_id=0, eos_token_id=0))
        target = dict(hidden_size=56, num_layers=4)  # 7 heads of 8
    elif family == "vit":
        m = ViTForImageClassification(ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
                                                num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                num_labels=10))
        target = dict(hidden_size=72, intermediate_size=100, num_layers=3)  # 72 = 2x32 + 8
    else:
        m = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 vocab_size=50, max_position_embeddings=16))
        target = dict(hidden_size=64, intermediate_size=100)  # post-LN: multiples only, no depth
    return _perturb_norms(m).to(dtype), target


def perturbed_copy(src: Path, dst: Path, delta: float = 0.01) -> Path:
    """A 'fine-tune' of a checkpoint: same config, every float tensor shifted."""
    from zoo import Checkpoint, save_tensors

    ckpt = Checkpoint.open(src)
    tensors = {n: ckpt.get(n).clone() + delta for n in ckpt.names()}
    save_tensors(dst, tensors, config=ckpt.config)
    return dst
