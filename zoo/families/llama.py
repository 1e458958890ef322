"""Llama (LlamaForCausalLM, LlamaModel): RMSNorm, grouped-query attention, gated MLP."""
from __future__ import annotations

import re

from .base import Axis, Family, TensorRole, Widths

A = Axis


class LlamaFamily(Family):
    name = "llama"
    norm = "rms"
    eps_key = "rms_norm_eps"
    eps_default = 1e-6
    config_class = "LlamaConfig"
    architectures = ("LlamaForCausalLM", "LlamaModel")
    headless = ("LlamaModel",)
    library = "transformers"
    free_head_dim = True
    token_embeddings = ("embed_tokens",)
    tied_head_names = {"lm_head.weight": ("model.embed_tokens.weight",)}
    presets = {"llama-tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=256, max_position_embeddings=128,
                                  tie_word_embeddings=False)}
    _layer_re = re.compile(r"layers\.(\d+)\.")

    _ROLES = {
        "self_attn.q_proj.weight": TensorRole((A.Q_HEADS, A.RES_IN)),
        "self_attn.k_proj.weight": TensorRole((A.KV_HEADS, A.RES_IN)),
        "self_attn.v_proj.weight": TensorRole((A.KV_HEADS, A.RES_IN)),
        "self_attn.q_proj.bias": TensorRole((A.Q_HEADS,)),
        "self_attn.k_proj.bias": TensorRole((A.KV_HEADS,)),
        "self_attn.v_proj.bias": TensorRole((A.KV_HEADS,)),
        "self_attn.o_proj.weight": TensorRole((A.RES_OUT, A.HEADS_IN), block_output=True),
        "self_attn.o_proj.bias": TensorRole((A.RES_OUT,), block_output=True),
        "mlp.gate_proj.weight": TensorRole((A.UNITS, A.RES_IN)),
        "mlp.up_proj.weight": TensorRole((A.UNITS, A.RES_IN)),
        "mlp.down_proj.weight": TensorRole((A.RES_OUT, A.UNITS_IN), block_output=True),
        "input_layernorm.weight": TensorRole((A.NORM,), kind="norm"),
        "post_attention_layernorm.weight": TensorRole((A.NORM,), kind="norm"),
    }

    def widths(self, config: dict) -> Widths:
        heads = config["num_attention_heads"]
        return Widths(hidden=config["hidden_size"], heads=heads, kv_heads=config.get("num_key_value_heads") or heads,
                      head_dim=config.get("head_dim") or config["hidden_size"] // heads,
                      intermediate=config["intermediate_size"], layers=config["num_hidden_layers"])

    def role(self, name: str, config: dict) -> TensorRole | None:
        if self.layer_of(name) is not None:
            return self.layer_role(name, self._ROLES)
        if name.endswith("embed_tokens.weight"):
            return TensorRole((A.KEEP, A.RES_OUT), kind="embed_tokens")
        if name.endswith("norm.weight"):
            return TensorRole((A.NORM,), kind="norm")
        if name == "lm_head.weight":
            return TensorRole((A.KEEP, A.RES_IN), kind="lm_head")
        return None

    def resized_config(self, config: dict, w: Widths, eps_scale: float = 1.0) -> dict:
        out = dict(config)
        out.update(hidden_size=w.hidden, num_attention_heads=w.heads, num_key_value_heads=w.kv_heads,
                   head_dim=w.head_dim, intermediate_size=w.intermediate, num_hidden_layers=w.layers)
        out[self.eps_key] = self.eps(config) * eps_scale
        out.pop("layer_types", None)
        return out

    def embed(self, model, inputs):
        return model.model.embed_tokens(inputs["input_ids"])

    def block_context(self, model, hidden, inputs):
        ctx = self.causal_context(model.model, hidden)
        ctx["rotary"] = model.model.rotary_emb(hidden, position_ids=ctx["position_ids"])
        return ctx

    def blocks(self, model):
        return model.model.layers

    def run_block(self, block, hidden, ctx):
        return block(hidden, attention_mask=ctx["mask"], position_embeddings=ctx["rotary"],
                     position_ids=ctx["position_ids"])

    def head(self, model, hidden, ctx):
        return model.lm_head(model.model.norm(hidden))

    def example_inputs(self, config: dict, batch: int, generator):
        import torch

        return {"input_ids": torch.randint(0, config["vocab_size"], (batch, 12), generator=generator)}
