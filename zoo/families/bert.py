"""BERT (BertModel and its heads): post-LN, separate q/k/v, pooler."""
from __future__ import annotations

import re

from .base import Axis, Family, TensorRole

A = Axis


class BertFamily(Family):
    name = "bert"
    norm = "post_ln"
    eps_key = "layer_norm_eps"
    eps_default = 1e-12
    config_class = "BertConfig"
    architectures = ("BertModel", "BertForSequenceClassification", "BertForMaskedLM")
    headless = ("BertModel", "BertForSequenceClassification")
    library = "transformers"
    masked_encoder = True
    token_embeddings = ("word_embeddings",)
    tied_head_names = {"cls.predictions.decoder.weight": ("bert.embeddings.word_embeddings.weight",)}
    presets = {"bert-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                 vocab_size=256, max_position_embeddings=128)}
    _layer_re = re.compile(r"layer\.(\d+)\.")

    _ROLES = {
        "attention.self.query.weight": TensorRole((A.Q_HEADS, A.RES_IN)),
        "attention.self.key.weight": TensorRole((A.KV_HEADS, A.RES_IN)),
        "attention.self.value.weight": TensorRole((A.KV_HEADS, A.RES_IN)),
        "attention.self.query.bias": TensorRole((A.Q_HEADS,)),
        "attention.self.key.bias": TensorRole((A.KV_HEADS,)),
        "attention.self.value.bias": TensorRole((A.KV_HEADS,)),
        "attention.output.dense.weight": TensorRole((A.RES_OUT, A.HEADS_IN), block_output=True),
        "attention.output.dense.bias": TensorRole((A.RES_OUT,), block_output=True),
        # post-LN: the attention sub-layer's and the block's output norms (depth growth sets them apart)
        "attention.output.LayerNorm.weight": TensorRole((A.NORM,), kind="attention_out_norm"),
        "attention.output.LayerNorm.bias": TensorRole((A.NORM,), kind="attention_out_norm"),
        "intermediate.dense.weight": TensorRole((A.UNITS, A.RES_IN)),
        "intermediate.dense.bias": TensorRole((A.UNITS,)),
        "output.dense.weight": TensorRole((A.RES_OUT, A.UNITS_IN), block_output=True),
        "output.dense.bias": TensorRole((A.RES_OUT,), block_output=True),
        "output.LayerNorm.weight": TensorRole((A.NORM,), kind="block_out_norm"),
        "output.LayerNorm.bias": TensorRole((A.NORM,), kind="block_out_norm"),
    }

    def role(self, name: str, config: dict) -> TensorRole | None:
        if self.layer_of(name) is not None:
            return self.layer_role(name, self._ROLES)
        if name.endswith(("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")):
            return TensorRole((A.KEEP, A.RES_OUT), kind="embed_tokens" if "word" in name else "embed_positions")
        if name.endswith(("embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias",
                          "transform.LayerNorm.weight", "transform.LayerNorm.bias")):
            return TensorRole((A.NORM,), kind="norm")
        if name.endswith("position_ids"):
            return TensorRole((A.KEEP, A.KEEP), kind="buffer")
        if name.endswith(("pooler.dense.weight", "transform.dense.weight")):
            return TensorRole((A.RES_OUT, A.RES_IN), kind="pooler")
        if name.endswith(("pooler.dense.bias", "transform.dense.bias")):
            return TensorRole((A.RES_OUT,), kind="pooler")
        if name.endswith(("classifier.weight", "predictions.decoder.weight")):
            return TensorRole((A.KEEP, A.RES_IN), kind="lm_head" if "decoder" in name else "head")
        if name.endswith(("classifier.bias", "predictions.bias", "predictions.decoder.bias")):
            return TensorRole((A.KEEP,), kind="head")
        return None

    def example_inputs(self, config: dict, batch: int, generator):
        import torch

        ids = torch.randint(0, config["vocab_size"], (batch, 10), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
