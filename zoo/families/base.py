"""What a family adapter knows about one architecture: which tensor plays which role
(axis by axis), the layer a tensor belongs to, its widths and depth, its embeddings and tied
heads, its norm placement, presets, how to rewrite its config for new sizes, and how to build
the model for a forward pass.

Operators talk to these adapters, never to raw tensor names. The base class's defaults are
the generic conventions, so `GENERIC` (a bare `Family`) answers the name-level questions
(layer index, depth, token embeddings) for architectures that have no family.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ZooError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..checkpoint import Checkpoint


# The layer stack in the usual namings: model.layers.3., encoder.layer.3., transformer.h.3.,
# blocks.3. (timm), ...; group 1 is the layer index.
LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
# Token-embedding matrices (rows are tokens) in the usual namings, gpt-neox and Meta's included.
TOKEN_EMBEDDINGS = ("embed_tokens", "wte.", "word_embeddings", "tok_embeddings", "embed_in")
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


class Axis(str, Enum):
    """The meaning of one tensor axis, for operators that resize models."""

    RES_OUT = "res_out"  # writes into the residual stream (embeddings, attention/MLP output rows)
    RES_IN = "res_in"  # reads the (normalised) residual stream (q/k/v, MLP input, heads)
    NORM = "norm"  # a norm's per-feature parameters over the hidden axis
    Q_HEADS = "q_heads"  # query heads x head_dim
    KV_HEADS = "kv_heads"  # key/value heads x head_dim (grouped-query attention)
    QKV = "qkv"  # fused [q | k | v], each heads x head_dim
    HEADS_IN = "heads_in"  # attention output projection's input, heads x head_dim
    UNITS = "units"  # MLP hidden units (output side of the first MLP layer)
    UNITS_IN = "units_in"  # MLP hidden units (input side of the second MLP layer)
    KEEP = "keep"  # vocabulary, labels, positions, channels: never resized


@dataclass(frozen=True)
class TensorRole:
    """A tensor's role: its axes, its layer (None outside the stack), and whether it is an
    output projection writing a block's result into the stream (attention out, MLP out)."""

    axes: tuple[Axis, ...]
    layer: int | None = None
    block_output: bool = False
    kind: str = ""  # e.g. "embed_tokens", "norm", "lm_head" (for messages and special cases)


@dataclass(frozen=True)
class Widths:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    layers: int

    def with_(self, **changes: Any) -> "Widths":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


class Family:
    """Base class; one subclass per architecture family."""

    name: str = ""
    norm: str = "pre_ln"  # "pre_ln", "post_ln" or "rms"
    modality: str = "language"  # "language" or "vision": which built-in tasks fit
    eps_key: str = "layer_norm_eps"
    eps_default: float = 1e-5
    config_class: str = ""  # the transformers config class
    architectures: tuple[str, ...] = ()  # the first is the default
    headless: tuple[str, ...] = ()  # architectures without a head (base models, classifiers with their own)
    library: str | None = None  # the library that loads it as stored (the Hub card's `library_name`)
    free_head_dim: bool = False  # head_dim is its own config field (hidden need not be heads x head_dim)
    linear_in_out: bool = False  # linear weights stored [in, out] (GPT-2's Conv1D), not torch's [out, in]
    masked_encoder: bool = False  # a masked-language encoder: no next-token prediction
    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # small named configs (`zoo new vit-ti`)
    tied_head_names: ClassVar[dict[str, tuple[str, ...]]] = {}  # head tensor -> embeddings it may be tied to
    token_embeddings: tuple[str, ...] = TOKEN_EMBEDDINGS  # substrings naming token-embedding matrices
    depth_keys: tuple[str, ...] = DEPTH_KEYS  # config fields holding the depth, first found wins
    _layer_re: re.Pattern = LAYER_RE

    # --- detection and facts -------------------------------------------------------------
    @classmethod
    def matches(cls, config: dict | None, names: list[str]) -> bool:
        return bool(config) and config.get("model_type") == cls.name

    def widths(self, config: dict) -> Widths:
        """From transformers' usual config keys (families with other keys override)."""
        hidden, heads = config["hidden_size"], config["num_attention_heads"]
        return Widths(hidden, heads, heads, hidden // heads, config["intermediate_size"], config["num_hidden_layers"])

    def role(self, name: str, config: dict) -> TensorRole | None:
        """The role of a tensor, or None if this family does not know it."""
        raise NotImplementedError

    def roles(self, names: list[str], config: dict) -> dict[str, TensorRole]:
        out, unknown = {}, []
        for n in names:
            r = self.role(n, config)
            (unknown.append(n) if r is None else out.__setitem__(n, r))
        if unknown:
            raise ZooError(f"{self.name}: tensor {unknown[0]!r} has no known role "
                           f"({len(unknown)} unknown); this checkpoint has parts the {self.name} adapter does not cover")
        return out

    def layer_role(self, name: str, table: dict[str, TensorRole]) -> TensorRole | None:
        """The role of a tensor inside the layer stack, from a table keyed by the name's
        suffix after the layer index (None outside the stack or for unknown suffixes)."""
        m = self._layer_re.search(name)
        if not m:
            return None
        r = table.get(name[m.end():])
        return TensorRole(r.axes, int(m.group(1)), r.block_output, r.kind or name[m.end():]) if r else None

    def layer_of(self, name: str) -> int | None:
        """The index of the layer a tensor belongs to, None outside the layer stack."""
        m = self._layer_re.search(name)
        return int(m.group(1)) if m else None

    def num_layers(self, config: dict | None, names: list[str]) -> int:
        """Depth of the layer stack: the config's depth field, else one more than the highest
        layer index among the tensor names (1 when there is none)."""
        for key in self.depth_keys:
            if config and isinstance(config.get(key), int):
                return config[key]
        found = [i for i in map(self.layer_of, names) if i is not None]
        return max(found) + 1 if found else 1

    def is_token_embedding(self, name: str) -> bool:
        """Whether a tensor is a token-embedding matrix (one row per token)."""
        return any(key in name for key in self.token_embeddings)

    def tied_heads(self, config: dict, names: list[str]) -> dict[str, str]:
        """The head tensors this model ties to an embedding and the file leaves out:
        head -> the embedding it copies (empty for headless architectures or untied configs)."""
        arch = (config.get("architectures") or [""])[0]
        if arch in self.headless or not config.get("tie_word_embeddings", True):
            return {}
        present = set(names)
        out = {}
        for head, embeds in self.tied_head_names.items():
            emb = next((e for e in embeds if e in present), None)
            if head not in present and emb:
                out[head] = emb
        return out

    def rename_layer(self, name: str, index: int) -> str:
        m = self._layer_re.search(name)
        if not m:
            return name
        return name[: m.start(1)] + str(index) + name[m.end(1):]

    # --- configs -------------------------------------------------------------------------
    def checkpoint_config(self, ckpt: "Checkpoint") -> dict:
        """The config a checkpoint runs with: its config.json (families whose files carry
        none, like timm's, synthesise one)."""
        return ckpt.config or {}

    def resized_config(self, config: dict, w: Widths, eps_scale: float = 1.0) -> dict:
        """The config for new sizes (transformers' usual key names; families differ override)."""
        out = dict(config)
        out.update(hidden_size=w.hidden, num_attention_heads=w.heads, intermediate_size=w.intermediate,
                   num_hidden_layers=w.layers)
        out[self.eps_key] = self.eps(config) * eps_scale
        return out

    def eps(self, config: dict) -> float:
        return float(config.get(self.eps_key, self.eps_default))

    # --- running ---------------------------------------------------------------------------
    def build(self, config: dict) -> "nn.Module":
        """A randomly initialised model for this config (eval mode), of the config's
        architecture when the family knows it, else the family's first."""
        import transformers

        arch = (config.get("architectures") or [self.architectures[0]])[0]
        cls = getattr(transformers, arch if arch in self.architectures else self.architectures[0])
        fields = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
        try:  # the config is user input (e.g. `zoo new --set`): a bad value is one line
            return cls(getattr(transformers, self.config_class)(**fields)).eval()
        except (TypeError, ValueError, RuntimeError, *_config_errors()) as e:
            detail = " ".join(str(e.__cause__ or e).split()) or type(e).__name__
            raise ZooError(f"{self.name} config: {detail}") from None

    def load(self, ckpt: "Checkpoint") -> "nn.Module":
        """The model with the checkpoint's weights, in eval mode. Hugging Face folders load
        through transformers (which knows older tensor namings and tied weights)."""
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our commands draw their own progress
        config = ckpt.config or {}
        arch = (config.get("architectures") or [self.architectures[0]])[0]
        cls = getattr(transformers, arch if arch in self.architectures else self.architectures[0])
        return cls.from_pretrained(ckpt.root, local_files_only=True).eval()

    def example_inputs(self, config: dict, batch: int, generator: "torch.Generator") -> dict:
        raise NotImplementedError

    # --- running block by block (stitching, distillation) ---------------------------------
    # A model = embed -> blocks (each hidden -> hidden, same width) -> head. Stitching runs
    # blocks of different models in one chain, so each step is exposed on its own.
    def modality_for(self, config: dict) -> str:
        return self.modality

    def embed(self, model: "nn.Module", inputs: dict) -> "torch.Tensor":
        """The hidden states entering block 0."""
        raise ZooError(f"{self.name}: running block by block is not supported for this family")

    def block_context(self, model: "nn.Module", hidden: "torch.Tensor", inputs: dict) -> dict:
        """What every block of `model` needs besides the hidden states (masks, rotary tables)."""
        return {}

    def blocks(self, model: "nn.Module") -> "nn.ModuleList":
        raise ZooError(f"{self.name}: running block by block is not supported for this family")

    def run_block(self, block: "nn.Module", hidden: "torch.Tensor", ctx: dict) -> "torch.Tensor":
        return block(hidden)

    def head(self, model: "nn.Module", hidden: "torch.Tensor", ctx: dict) -> "torch.Tensor":
        """Final norm and head on the last block's output: the logits."""
        raise ZooError(f"{self.name}: running block by block is not supported for this family")

    @staticmethod
    def causal_context(core: "nn.Module", hidden: "torch.Tensor") -> dict:
        """Position ids and the causal mask a decoder's blocks expect (as the model builds them)."""
        import torch
        from transformers.masking_utils import create_causal_mask

        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(config=core.config, inputs_embeds=hidden, attention_mask=None,
                                  past_key_values=None, position_ids=positions)
        return {"position_ids": positions, "mask": mask}

    def outputs(self, model: "nn.Module", inputs: dict) -> "torch.Tensor":
        """The tensor that defines the model's function (logits, or last hidden state)."""
        out = model(**inputs)
        return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


GENERIC = Family()  # the generic conventions, for architectures without a family


def _config_errors() -> tuple[type[Exception], ...]:
    """What transformers' typed configs raise for a value of the wrong type or range
    (huggingface_hub's strict dataclasses, in recent versions)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # older huggingface_hub: plain TypeError/ValueError
        return ()
    return (StrictDataclassError,)
