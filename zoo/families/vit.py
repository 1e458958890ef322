"""ViT (ViTForImageClassification, ViTModel) in both transformers namings, and timm
ViT/DeiT checkpoints (read by tensor names and run as the equivalent transformers ViT)."""
from __future__ import annotations

import math
import re

from ..errors import ZooError
from .base import Axis, Family, TensorRole

A = Axis

_HF_LAYER = {  # suffix inside a layer -> role; both transformers namings
    "attention.q_proj.weight": TensorRole((A.Q_HEADS, A.RES_IN)),
    "attention.k_proj.weight": TensorRole((A.KV_HEADS, A.RES_IN)),
    "attention.v_proj.weight": TensorRole((A.KV_HEADS, A.RES_IN)),
    "attention.q_proj.bias": TensorRole((A.Q_HEADS,)),
    "attention.k_proj.bias": TensorRole((A.KV_HEADS,)),
    "attention.v_proj.bias": TensorRole((A.KV_HEADS,)),
    "attention.o_proj.weight": TensorRole((A.RES_OUT, A.HEADS_IN), block_output=True),
    "attention.o_proj.bias": TensorRole((A.RES_OUT,), block_output=True),
    "attention.attention.query.weight": TensorRole((A.Q_HEADS, A.RES_IN)),
    "attention.attention.key.weight": TensorRole((A.KV_HEADS, A.RES_IN)),
    "attention.attention.value.weight": TensorRole((A.KV_HEADS, A.RES_IN)),
    "attention.attention.query.bias": TensorRole((A.Q_HEADS,)),
    "attention.attention.key.bias": TensorRole((A.KV_HEADS,)),
    "attention.attention.value.bias": TensorRole((A.KV_HEADS,)),
    "attention.output.dense.weight": TensorRole((A.RES_OUT, A.HEADS_IN), block_output=True),
    "attention.output.dense.bias": TensorRole((A.RES_OUT,), block_output=True),
    "mlp.fc1.weight": TensorRole((A.UNITS, A.RES_IN)),
    "mlp.fc1.bias": TensorRole((A.UNITS,)),
    "intermediate.dense.weight": TensorRole((A.UNITS, A.RES_IN)),
    "intermediate.dense.bias": TensorRole((A.UNITS,)),
    "mlp.fc2.weight": TensorRole((A.RES_OUT, A.UNITS_IN), block_output=True),
    "mlp.fc2.bias": TensorRole((A.RES_OUT,), block_output=True),
    "output.dense.weight": TensorRole((A.RES_OUT, A.UNITS_IN), block_output=True),
    "output.dense.bias": TensorRole((A.RES_OUT,), block_output=True),
    "layernorm_before.weight": TensorRole((A.NORM,), kind="norm"),
    "layernorm_before.bias": TensorRole((A.NORM,), kind="norm"),
    "layernorm_after.weight": TensorRole((A.NORM,), kind="norm"),
    "layernorm_after.bias": TensorRole((A.NORM,), kind="norm"),
}


def _embedding_role(name: str) -> TensorRole | None:
    if name.endswith(("cls_token", "distillation_token")):
        return TensorRole((A.KEEP, A.KEEP, A.RES_OUT), kind="embed_positions")
    if name.endswith(("position_embeddings", "pos_embed")):
        return TensorRole((A.KEEP, A.KEEP, A.RES_OUT), kind="embed_positions")
    if name.endswith(("projection.weight", "patch_embed.proj.weight")):
        return TensorRole((A.RES_OUT, A.KEEP, A.KEEP, A.KEEP), kind="embed_tokens")
    if name.endswith(("projection.bias", "patch_embed.proj.bias")):
        return TensorRole((A.RES_OUT,), kind="embed_tokens")
    return None


class ViTFamily(Family):
    name = "vit"
    norm = "pre_ln"
    modality = "vision"
    eps_key = "layer_norm_eps"
    eps_default = 1e-12
    config_class = "ViTConfig"
    architectures = ("ViTForImageClassification", "ViTModel")
    library = "transformers"
    # ViT-Ti/S/B proportions (3/6/12 heads of 8) on 8x8 single-channel digits
    presets = {name: dict(hidden_size=8 * heads, num_hidden_layers=4, num_attention_heads=heads,
                          intermediate_size=32 * heads, image_size=8, patch_size=2, num_channels=1, num_labels=10)
               for name, heads in (("vit-ti", 3), ("vit-s", 6), ("vit-b", 12))}
    _layer_re = re.compile(r"(?:layers|layer)\.(\d+)\.")

    def role(self, name: str, config: dict) -> TensorRole | None:
        if self.layer_of(name) is not None:
            return self.layer_role(name, _HF_LAYER)
        r = _embedding_role(name)
        if r:
            return r
        if name.endswith(("layernorm.weight", "layernorm.bias")):
            return TensorRole((A.NORM,), kind="norm")
        if name.endswith("pooler.dense.weight"):
            return TensorRole((A.RES_OUT, A.RES_IN), kind="pooler")
        if name.endswith("pooler.dense.bias"):
            return TensorRole((A.RES_OUT,), kind="pooler")
        if name == "classifier.weight":
            return TensorRole((A.KEEP, A.RES_IN), kind="head")
        if name == "classifier.bias":
            return TensorRole((A.KEEP,), kind="head")
        return None

    def embed(self, model, inputs):
        vit = model.vit
        return vit.embeddings(inputs["pixel_values"].to(vit.embeddings.patch_embeddings.projection.weight.dtype))

    def blocks(self, model):
        return model.vit.layers

    def head(self, model, hidden, ctx):
        return model.classifier(model.vit.layernorm(hidden)[:, 0, :])

    def example_inputs(self, config: dict, batch: int, generator):
        import torch

        size, ch = config.get("image_size", 224), config.get("num_channels", 3)
        return {"pixel_values": torch.randn(batch, ch, size, size, generator=generator)}


class TimmViTFamily(ViTFamily):
    """timm VisionTransformer / DeiT state dicts (blocks.N.attn.qkv, ...). The catalog
    synthesises a transformers ViT config from the shapes; forward runs in transformers."""

    name = "timm_vit"
    architectures = ("VisionTransformer",)
    library = "timm"
    presets = {}
    _layer_re = re.compile(r"blocks\.(\d+)\.")
    _LAYER = {
        "norm1.weight": TensorRole((A.NORM,), kind="norm"), "norm1.bias": TensorRole((A.NORM,), kind="norm"),
        "norm2.weight": TensorRole((A.NORM,), kind="norm"), "norm2.bias": TensorRole((A.NORM,), kind="norm"),
        "attn.qkv.weight": TensorRole((A.QKV, A.RES_IN)),
        "attn.qkv.bias": TensorRole((A.QKV,)),
        "attn.proj.weight": TensorRole((A.RES_OUT, A.HEADS_IN), block_output=True),
        "attn.proj.bias": TensorRole((A.RES_OUT,), block_output=True),
        "mlp.fc1.weight": TensorRole((A.UNITS, A.RES_IN)),
        "mlp.fc1.bias": TensorRole((A.UNITS,)),
        "mlp.fc2.weight": TensorRole((A.RES_OUT, A.UNITS_IN), block_output=True),
        "mlp.fc2.bias": TensorRole((A.RES_OUT,), block_output=True),
    }

    @classmethod
    def matches(cls, config, names):
        if config and config.get("model_type") not in (None, "timm_vit"):
            return False
        s = set(names)
        return "patch_embed.proj.weight" in s and any(n.startswith("blocks.0.attn.qkv") for n in s)

    def role(self, name: str, config: dict) -> TensorRole | None:
        if self.layer_of(name) is not None:
            return self.layer_role(name, self._LAYER)
        r = _embedding_role(name)
        if r:
            return r
        if name in ("norm.weight", "norm.bias"):
            return TensorRole((A.NORM,), kind="norm")
        if name == "head.weight":
            return TensorRole((A.KEEP, A.RES_IN), kind="head")
        if name == "head.bias":
            return TensorRole((A.KEEP,), kind="head")
        return None

    @staticmethod
    def config_from_shapes(shapes: dict[str, tuple[int, ...]], heads: int | None = None) -> dict:
        """A transformers ViT config equivalent to a timm state dict's shapes (timm does not
        store one). Heads default to hidden/64, timm's convention for ViT-S/B/L (Ti: 3)."""
        hidden, channels, patch, _ = shapes["patch_embed.proj.weight"]
        tokens = shapes["pos_embed"][1] - (1 if "cls_token" in shapes else 0)
        side = int(math.isqrt(tokens))
        layers = 1 + max(int(n.split(".")[1]) for n in shapes if n.startswith("blocks."))
        return {
            "model_type": "timm_vit", "architectures": ["VisionTransformer"], "hidden_size": hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads or max(1, hidden // 64),
            "intermediate_size": shapes["blocks.0.mlp.fc1.weight"][0], "image_size": side * patch,
            "patch_size": patch, "num_channels": channels, "layer_norm_eps": 1e-6, "hidden_act": "gelu",
            "qkv_bias": "blocks.0.attn.qkv.bias" in shapes, "num_labels": shapes.get("head.weight", (0,))[0],
        }

    def checkpoint_config(self, ckpt):
        """timm files carry no config.json: a transformers ViT config from the shapes."""
        if ckpt.config and ckpt.config.get("model_type"):
            return ckpt.config
        return self.config_from_shapes({n: ckpt.info(n).shape for n in ckpt.names()})

    def build(self, config: dict):
        hf = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
        return ViTFamily().build({**hf, "architectures": ["ViTForImageClassification"]})

    def load(self, ckpt):
        """timm weights renamed (and qkv split) into the equivalent transformers ViT."""
        config = self.checkpoint_config(ckpt)
        model = self.build(config)
        model.load_state_dict(self.to_module_names({n: ckpt.get(n) for n in ckpt.names()}, config), strict=True)
        return model.eval()

    def to_module_names(self, state: dict, config: dict) -> dict:
        """timm names -> transformers ViTForImageClassification names (qkv split)."""
        out = {}
        for name, t in state.items():
            layer = self.layer_of(name)
            if layer is not None:
                p, s = f"vit.layers.{layer}.", name[self._layer_re.search(name).end():]
                if s.startswith("attn.qkv."):
                    for part, chunk in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                        out[f"{p}attention.{part}.{s.split('.')[-1]}"] = chunk
                    continue
                s = (s.replace("norm1.", "layernorm_before.").replace("norm2.", "layernorm_after.")
                     .replace("attn.proj.", "attention.o_proj."))
                out[p + s] = t
                continue
            mapped = {"cls_token": "vit.embeddings.cls_token", "pos_embed": "vit.embeddings.position_embeddings",
                      "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
                      "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
                      "norm.weight": "vit.layernorm.weight", "norm.bias": "vit.layernorm.bias",
                      "head.weight": "classifier.weight", "head.bias": "classifier.bias"}.get(name)
            if mapped is None:
                raise ZooError(f"timm_vit: tensor {name!r} has no transformers equivalent")
            out[mapped] = t
        return out
