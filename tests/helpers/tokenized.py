"""Tiny Llama checkpoints that each carry a real, different tokenizer: byte-level BPE
tokenizers trained with the `tokenizers` library on a few Python standard-library files,
saved as transformers' fast tokenizers, with extra (special) tokens on some. For the
tokenizer-merge tests."""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

STDLIB = Path(inspect.__file__).parent
# the three tokenizers: (training files, BPE vocabulary size, extra special tokens, chat template)
KINDS = {
    "a": (["inspect.py"], 400, [], "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"),
    "b": (["textwrap.py", "string.py"], 380, ["<|im_start|>", "<|im_end|>"], None),
    "c": (["json/decoder.py", "csv.py"], 360, ["<|im_start|>", "<tool>"], None),
}


def train_tokenizer(kind: str):
    """A PreTrainedTokenizerFast over a byte-level BPE trained on standard-library files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    files, size, extra, template = KINDS[kind]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(STDLIB / f) for f in files], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    if extra:
        fast.add_special_tokens({"additional_special_tokens": extra})
    if template:
        fast.chat_template = template
    return fast


def tokenized_llama(path: Path, kind: str, seed: int, spare_rows: int = 0) -> Path:
    """A 2-layer Llama whose vocabulary is tokenizer `kind`'s (plus `spare_rows` unused rows,
    as real models pad their embeddings), saved with that tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(kind)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok) + spare_rows, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0,
                      eos_token_id=1, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
