"""The router rows (gate vectors), made exactly as mergekit's `moe/router.py` does, so the
same config gives the same router:

- `random`: N(0, 1) (`torch.randn`), `uniform_random`: U(-1/sqrt(h), 1/sqrt(h)) (nn.Linear's
  init), drawn from the run's seeded generator: the same numbers as mergekit-moe after
  `--random-seed SEED`;
- `hidden` / `hidden_last`: the base (loaded in bfloat16, as mergekit loads it) reads each
  prompt (the tokenizer's BOS prepended, left-padded with BOS); at every layer the hidden
  state entering it at the last token is averaged over the prompts; `hidden_avg` averages
  over all tokens first (padding included, as mergekit does);
- `cheap_embed`: the sum of the prompts' token embeddings (padding masked out), normalised,
  the same for every layer;
then per expert: positive minus negative, normalised to unit length per layer."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from zoo.errors import ZooError

if TYPE_CHECKING:
    import torch

    from zoo.checkpoint import Checkpoint

    from .params import ExpertParams

HIDDEN_MODES = ("hidden", "hidden_avg", "hidden_last")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def passes(mode: str, experts: Sequence["ExpertParams"]) -> int:
    """How many batches of prompts the base reads (for a progress bar)."""
    if mode not in (*HIDDEN_MODES, "cheap_embed"):
        return 0
    return sum(1 + bool(e.negative_prompts) for e in experts)


def gate_vectors(mode: str, base: "Checkpoint", experts: Sequence["ExpertParams"], generator: "torch.Generator",
                 *, device: "torch.device | str" = "cpu", label: str = "the base",
                 progress: Callable[[int], None] | None = None) -> "torch.Tensor":
    """(layers, experts, hidden) router rows."""
    import torch

    cfg = base.config or {}
    layers, hidden = cfg["num_hidden_layers"], cfg["hidden_size"]
    shape = (layers, len(experts), hidden)
    if mode == "random":
        return torch.randn(shape, generator=generator)
    if mode == "uniform_random":
        scale = math.sqrt(1.0 / hidden)
        return torch.rand(shape, generator=generator) * 2 * scale - scale
    tokenizer = load_tokenizer(base.root, label, mode)
    if mode == "cheap_embed":
        embed = base.get("model.embed_tokens.weight")

        def states(batch) -> torch.Tensor:
            return cheap_embedding(embed, batch, layers, cfg["vocab_size"])
    else:
        model = _load_model(base.root, device)

        def states(batch) -> torch.Tensor:
            return hidden_states(model, batch, average=mode == "hidden_avg")

    rows = []
    for e in experts:
        h = states(tokenize(e.positive_prompts, tokenizer))
        _tick(progress)
        if e.negative_prompts:
            h -= states(tokenize(e.negative_prompts, tokenizer))
            _tick(progress)
        h /= h.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-8)
        rows.append(h)
    return torch.stack(rows, dim=0).permute(1, 0, 2)  # (experts, layers, hidden) -> (layers, experts, hidden)


def _tick(progress: Callable[[int], None] | None) -> None:
    if progress is not None:
        progress(1)


def load_tokenizer(root: Path, label: str, mode: str):
    """The base's tokenizer, set up as mergekit-moe sets it: left padding with BOS (EOS when
    there is no BOS)."""
    import transformers

    if not any((Path(root) / name).is_file() for name in TOKENIZER_FILES):
        raise ZooError(f"{label} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): gate_mode {mode} reads the "
                       "prompts with the base's tokenizer; add its tokenizer files, or use gate_mode: random")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ZooError(f"{label} has no tokenizer that loads ({first[:160]}): gate_mode {mode} reads the prompts "
                       "with the base's tokenizer; add its tokenizer files, or use gate_mode: random") from None
    tok.padding_side = "left"
    tok.pad_token_id = tok.bos_token_id
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.pad_token_id is None:
        raise ZooError(f"{label}'s tokenizer has neither a BOS nor an EOS token to pad the prompts with")
    return tok


def tokenize(prompts: Sequence[str], tokenizer):
    """mergekit's `tokenize_prompts`: BOS prepended as text, no other special tokens."""
    return tokenizer([(tokenizer.bos_token or "") + p for p in prompts], return_tensors="pt", padding=True,
                     add_special_tokens=False)


def _load_model(root: Path, device):
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our commands draw their own progress
    model = transformers.AutoModelForCausalLM.from_pretrained(str(root), dtype=torch.bfloat16, local_files_only=True)
    return model.to(device).eval()


def hidden_states(model, batch, average: bool) -> "torch.Tensor":
    """(layers, hidden): the hidden state entering each layer, at the last token (or the mean
    over tokens), averaged over the prompts."""
    import torch

    with torch.no_grad():
        output = model(**batch.to(model.device), output_hidden_states=True, return_dict=True)
    states = torch.stack(output.hidden_states[:-1])  # (layers, prompts, tokens, hidden)
    states = states.sum(dim=2) / states.shape[2] if average else states[:, :, -1, :]
    return (states.sum(dim=1) / states.shape[1]).cpu()


def cheap_embedding(embed: "torch.Tensor", batch, layers: int, vocab_size: int) -> "torch.Tensor":
    """The prompts' token embeddings summed (padding masked out) and normalised, for every layer."""
    import torch

    ids = batch["input_ids"]
    if int(ids.max()) >= vocab_size:
        raise ZooError(f"the tokenizer gives token id {int(ids.max())}, past the base's vocab_size {vocab_size}")
    onehot = torch.nn.functional.one_hot(ids, num_classes=vocab_size)
    h = onehot.float() @ embed.float()
    summed = (h * batch["attention_mask"].unsqueeze(-1)).sum(dim=1).sum(dim=0, keepdim=True)
    return (summed / summed.norm(dim=-1, keepdim=True).clamp(min=1e-8)).repeat(layers, 1)


def degenerate_layers(gates: "torch.Tensor", threshold: float = 5.0) -> list[int]:
    """Layers whose router rows are nearly dependent (condition number above `threshold`,
    mergekit's warning): some experts would rarely be chosen there."""
    import torch

    return [i for i in range(gates.shape[0]) if float(torch.linalg.cond(gates[i].float())) > threshold]
