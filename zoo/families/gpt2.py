"""GPT-2 (GPT2LMHeadModel, GPT2Model): pre-LN, fused qkv, Conv1D weights stored [in, out]."""
from __future__ import annotations

import re

from .base import Axis, Family, TensorRole, Widths

A = Axis


class GPT2Family(Family):
    name = "gpt2"
    norm = "pre_ln"
    eps_key = "layer_norm_epsilon"
    config_class = "GPT2Config"
    architectures = ("GPT2LMHeadModel", "GPT2Model")
    headless = ("GPT2Model",)
    linear_in_out = True  # Conv1D
    library = "transformers"
    token_embeddings = ("wte.",)
    tied_head_names = {"lm_head.weight": ("transformer.wte.weight",)}
    presets = {"gpt2-tiny": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=128, bos_token_id=0,
                                 eos_token_id=0)}
    _layer_re = re.compile(r"(?:^|\.)h\.(\d+)\.")

    _ROLES = {
        "ln_1.weight": TensorRole((A.NORM,), kind="norm"), "ln_1.bias": TensorRole((A.NORM,), kind="norm"),
        "ln_2.weight": TensorRole((A.NORM,), kind="norm"), "ln_2.bias": TensorRole((A.NORM,), kind="norm"),
        "attn.c_attn.weight": TensorRole((A.RES_IN, A.QKV)),
        "attn.c_attn.bias": TensorRole((A.QKV,)),
        "attn.c_proj.weight": TensorRole((A.HEADS_IN, A.RES_OUT), block_output=True),
        "attn.c_proj.bias": TensorRole((A.RES_OUT,), block_output=True),
        "mlp.c_fc.weight": TensorRole((A.RES_IN, A.UNITS)),
        "mlp.c_fc.bias": TensorRole((A.UNITS,)),
        "mlp.c_proj.weight": TensorRole((A.UNITS_IN, A.RES_OUT), block_output=True),
        "mlp.c_proj.bias": TensorRole((A.RES_OUT,), block_output=True),
    }

    def widths(self, config: dict) -> Widths:
        hidden, heads = config["n_embd"], config["n_head"]
        return Widths(hidden, heads, heads, hidden // heads, config.get("n_inner") or 4 * hidden, config["n_layer"])

    def role(self, name: str, config: dict) -> TensorRole | None:
        layer = self.layer_of(name)
        if layer is not None:
            if name.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers of old checkpoints
                return TensorRole((A.KEEP,) * 4, layer, kind="causal_mask")
            return self.layer_role(name, self._ROLES)
        if name.endswith("wte.weight"):
            return TensorRole((A.KEEP, A.RES_OUT), kind="embed_tokens")
        if name.endswith("wpe.weight"):
            return TensorRole((A.KEEP, A.RES_OUT), kind="embed_positions")
        if name.endswith(("ln_f.weight", "ln_f.bias")):
            return TensorRole((A.NORM,), kind="norm")
        if name == "lm_head.weight":
            return TensorRole((A.KEEP, A.RES_IN), kind="lm_head")
        return None

    def resized_config(self, config: dict, w: Widths, eps_scale: float = 1.0) -> dict:
        out = dict(config)
        out.update(n_embd=w.hidden, n_head=w.heads, n_layer=w.layers,
                   n_inner=None if w.intermediate == 4 * w.hidden else w.intermediate)
        out[self.eps_key] = self.eps(config) * eps_scale
        return out

    def embed(self, model, inputs):
        import torch

        core = model.transformer
        ids = inputs["input_ids"]
        positions = core.wpe(torch.arange(ids.shape[1], device=ids.device))
        return core.drop(core.wte(ids) + positions)

    def block_context(self, model, hidden, inputs):
        return self.causal_context(model.transformer, hidden)

    def blocks(self, model):
        return model.transformer.h

    def run_block(self, block, hidden, ctx):
        return block(hidden, None, ctx["mask"], position_ids=ctx["position_ids"])

    def head(self, model, hidden, ctx):
        return model.lm_head(model.transformer.ln_f(hidden))

    def example_inputs(self, config: dict, batch: int, generator):
        import torch

        return {"input_ids": torch.randint(0, config["vocab_size"], (batch, 12), generator=generator)}
