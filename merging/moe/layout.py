"""The Mixtral checkpoint mergekit-moe writes, planned before any tensor is read: which
tensor of which input becomes which output tensor, and the config.

Names are Mixtral's checkpoint names, as on the Hub (transformers 4.x loads them as they are;
5.x fuses each layer's experts into `mlp.experts.gate_up_proj` / `down_proj` while loading):
`model.layers.N.block_sparse_moe.experts.E.{w1,w2,w3}.weight` from expert E's
`mlp.{gate_proj,down_proj,up_proj}.weight`, `block_sparse_moe.gate.weight` the router, and
attention, norms, embeddings and head from the base. The inputs must be Llama or Mistral
models of one architecture and of the base's shape; anything else is one line naming it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoo.errors import MismatchError, ZooError
from zoo.writer import TensorSpec

if TYPE_CHECKING:
    from zoo.checkpoint import Checkpoint

SOURCE_TYPES = ("llama", "mistral")
# (dense name, expert name), in mergekit's order: expert noise is drawn in this order
EXPERT_WEIGHTS = (("gate_proj", "w1"), ("down_proj", "w2"), ("up_proj", "w3"))
RESIDUAL = "down_proj"  # the projection residual_scale multiplies
_FROM_BASE = re.compile(r"model\.(embed_tokens|norm)\.weight|lm_head\.weight|model\.layers\.\d+\."
                        r"(input_layernorm|post_attention_layernorm|self_attn\.[qkvo]_proj)\.weight")
_BUFFER = re.compile(r".*\.rotary_emb\.inv_freq")  # old checkpoints' rotary buffers: recomputed, not weights


def dense_name(layer: int, proj: str) -> str:
    return f"model.layers.{layer}.mlp.{proj}.weight"


def expert_name(layer: int, expert: int, w: str) -> str:
    return f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{w}.weight"


def router_name(layer: int) -> str:
    return f"model.layers.{layer}.block_sparse_moe.gate.weight"


@dataclass(frozen=True)
class Planned:
    """One output tensor: read from `source` (checkpoint, tensor name), or the router of
    `layer` (computed); `expert`/`proj` say which expert's MLP weight it is."""

    spec: TensorSpec
    source: tuple["Checkpoint", str] | None = None
    expert: int | None = None
    proj: str | None = None
    layer: int | None = None


def check_models(base: "Checkpoint", experts: list["Checkpoint"], labels: list[str]) -> int:
    """Refuse what mergekit's Mixtral output cannot hold (its `supports_config`, and shapes
    checked before writing); return the number of layers."""
    base_type = _model_type(base, labels[0])
    cfg = base.config or {}
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ZooError(f"{labels[0]} has {key}: true; a Mixtral has no biases, so zoo moe cannot hold it")
    layers = cfg.get("num_hidden_layers")
    if not isinstance(layers, int) or layers < 1:
        raise ZooError(f"{labels[0]}: config.json has no num_hidden_layers")
    for ck, label in zip(experts, labels[1:]):
        kind = _model_type(ck, label)
        if kind != base_type:
            raise ZooError(f"{label} is a {kind} model but the base is {base_type}: the experts and the base must "
                           "be of one architecture")
        extra = [n for n in ck.names() if ".mlp." in n and not any(n.endswith(f".mlp.{p}.weight")
                                                                  for p, _ in EXPERT_WEIGHTS)]
        if extra:
            raise ZooError(f"{label} has MLP tensor {extra[0]} (a bias?), which a Mixtral expert has no place for")
        for layer in range(layers):
            for proj, _ in EXPERT_WEIGHTS:
                name = dense_name(layer, proj)
                if name not in ck.tensors:
                    raise MismatchError(f"{label} has no tensor {name}: every expert needs the base's "
                                        f"{layers} layers of {proj}")
                want = base.info(name).shape if name in base.tensors else None
                got = ck.info(name).shape
                if want is not None and got != want:
                    raise MismatchError(f"{label}: {name} has shape {list(got)} but the base's is {list(want)}; "
                                        "every expert must have the base's shape (hidden_size, intermediate_size)")
    return layers


def _model_type(ck: "Checkpoint", label: str) -> str:
    cfg = ck.config
    if not cfg:
        raise ZooError(f"{label} has no config.json: zoo moe takes Hugging Face Llama or Mistral folders")
    kind = cfg.get("model_type")
    if kind not in SOURCE_TYPES:
        raise ZooError(f"{label} is a {kind or 'model of unknown type'} model: zoo moe builds a Mixtral from Llama "
                       "or Mistral models only")
    return kind


def plan(base: "Checkpoint", experts: list["Checkpoint"], layers: int, out_dtype: str | None,
         router_dtype: str) -> list[Planned]:
    """Every output tensor, in writing order: the base's (not its MLPs), then layer by layer
    each expert's w1, w2, w3 (mergekit's order), then the routers."""
    out: list[Planned] = []
    for name in base.names():
        if ".mlp." in name or _BUFFER.fullmatch(name):
            continue
        if not _FROM_BASE.fullmatch(name):
            raise ZooError(f"the base has tensor {name}, which a Mixtral has no place for")
        info = base.info(name)
        out.append(Planned(TensorSpec(name, info.shape, _dtype(out_dtype, info)), (base, name)))
    for layer in range(layers):
        for e, ck in enumerate(experts):
            for proj, w in EXPERT_WEIGHTS:
                info = ck.info(dense_name(layer, proj))
                out.append(Planned(TensorSpec(expert_name(layer, e, w), info.shape, _dtype(out_dtype, info)),
                                   (ck, info.name), expert=e, proj=proj))
    hidden = (base.config or {}).get("hidden_size")
    for layer in range(layers):
        out.append(Planned(TensorSpec(router_name(layer), (len(experts), hidden), out_dtype or router_dtype),
                           layer=layer))
    return out


def _dtype(out_dtype: str | None, info) -> str:
    return out_dtype if (out_dtype and info.is_float) else info.dtype


def output_dtype(requested: str | None, base_config: dict) -> str | None:
    """mergekit's `select_dtype`: the config's dtype, else the base's config dtype, else
    none (each tensor keeps its own)."""
    name = requested or base_config.get("dtype") or base_config.get("torch_dtype")
    return name.removeprefix("torch.") if isinstance(name, str) else None


def mixtral_config(base: "Checkpoint", experts: int, per_token: int, out_dtype: str | None) -> dict:
    """The output's config.json, made as mergekit's `MixtralMoE._generate_config` does: the
    base's config read as a Mistral config (no sliding window), then as a Mixtral one with
    the number of experts and experts per token."""
    import transformers

    base_cfg = transformers.AutoConfig.from_pretrained(base.root, local_files_only=True)
    if not isinstance(base_cfg, transformers.MistralConfig):
        mistral = transformers.MistralConfig(**base_cfg.to_dict())
        mistral.sliding_window = None
        mistral.max_position_embeddings = base_cfg.max_position_embeddings
        base_cfg = mistral
    out = transformers.MixtralConfig(**base_cfg.to_dict())
    out.architectures = ["MixtralForCausalLM"]
    out.num_local_experts = experts
    out.num_experts_per_tok = per_token
    out.sliding_window = None
    doc = out.to_diff_dict()
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    doc[key] = out_dtype
    return doc
