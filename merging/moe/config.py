"""mergekit-moe's YAML (`mergekit/moe/config.py: MoEMergeConfig`), read with mergekit's
meaning: `base_model`, `experts` (`source_model`, `positive_prompts`, `negative_prompts`,
`noise_scale`, `residual_scale`), `gate_mode`, `dtype`, `experts_per_token`, and the output
`architecture`. What weightzoo does not build (shared experts, non-Mixtral outputs) is
refused as one line naming the key."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.yaml_input import load_file

from .params import GATE_MODES

KEYS = ("base_model", "experts", "gate_mode", "dtype", "experts_per_token", "shared_experts", "architecture")
EXPERT_KEYS = ("source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale")
DTYPES = ("float32", "float16", "bfloat16", "float64")


@dataclass(frozen=True)
class ExpertDef:
    ref: str
    positive_prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    noise_scale: float | None = None
    residual_scale: float | None = None


@dataclass
class MoeConfig:
    base: str
    experts: list[ExpertDef]
    gate_mode: str = "hidden"  # mergekit's default
    dtype: str | None = None
    experts_per_token: int = 2  # mergekit's default


def load(path: str | Path) -> MoeConfig:
    """A mergekit-moe YAML file (size- and alias-limited, like every YAML we read)."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"no such MoE config: {path}")
    return parse(load_file(path, "MoE config"), str(path))


def parse(doc: Any, where: str = "config") -> MoeConfig:
    if not isinstance(doc, dict):
        raise ZooError(f"{where}: expected a mapping with base_model, gate_mode and experts (mergekit-moe's format)")
    unknown = [k for k in doc if k not in KEYS]
    if unknown:
        raise ZooError(f"{where}: unknown key {unknown[0]!r} (mergekit-moe's keys: {', '.join(KEYS)})")
    if doc.get("shared_experts"):
        raise ZooError(f"{where}: shared_experts are only supported by mergekit's Qwen2-MoE output; zoo moe builds "
                       "Mixtral, which has none: remove shared_experts")
    arch = doc.get("architecture")
    if arch is not None and not (isinstance(arch, str) and "mixtral".startswith(arch.lower())):
        raise ZooError(f"{where}: architecture {arch!r} is not supported: zoo moe builds Mixtral only "
                       "(remove architecture, or write mixtral)")
    if doc.get("base_model") is None:
        raise ZooError(f"{where}: base_model is required (the model the attention, norms and embeddings come from)")
    base = _ref(doc["base_model"], f"{where}: base_model")
    mode = doc.get("gate_mode", "hidden")
    if mode not in GATE_MODES:
        raise ZooError(f"{where}: gate_mode {mode!r} is not one of {', '.join(GATE_MODES)}")
    per_token = doc.get("experts_per_token", 2)
    if isinstance(per_token, bool) or not isinstance(per_token, int) or per_token < 1:
        raise ZooError(f"{where}: experts_per_token must be a whole number >= 1, not {per_token!r}")
    dtype = doc.get("dtype")
    if isinstance(dtype, str):
        dtype = dtype.removeprefix("torch.")
    if dtype is not None and dtype not in DTYPES:
        raise ZooError(f"{where}: dtype {doc['dtype']!r} is not one of {', '.join(DTYPES)}")
    experts = doc.get("experts")
    if not isinstance(experts, list) or not experts:
        raise ZooError(f"{where}: experts must be a non-empty list of {{source_model, positive_prompts, "
                       "negative_prompts}}")
    return MoeConfig(base, [_expert(e, f"{where}: experts[{i}]") for i, e in enumerate(experts)], mode, dtype,
                     per_token)


def _expert(doc: Any, where: str) -> ExpertDef:
    if not isinstance(doc, dict) or doc.get("source_model") is None:
        raise ZooError(f"{where} needs source_model (the dense model whose MLPs become this expert)")
    unknown = [k for k in doc if k not in EXPERT_KEYS]
    if unknown:
        raise ZooError(f"{where}: unknown key {unknown[0]!r} (an expert's keys: {', '.join(EXPERT_KEYS)})")
    scales = {k: _number(doc.get(k), f"{where}.{k}") for k in ("noise_scale", "residual_scale")}
    return ExpertDef(_ref(doc["source_model"], f"{where}.source_model"),
                     _prompts(doc.get("positive_prompts"), f"{where}.positive_prompts"),
                     _prompts(doc.get("negative_prompts"), f"{where}.negative_prompts"), **scales)


def _ref(value: Any, where: str) -> str:
    """A model reference: a catalog ref or path, or mergekit's {path: ...}."""
    from ..lora import mergekit_ref

    return mergekit_ref(value, where)


def _prompts(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ZooError(f"{where} must be a list of strings, not {value!r}")
    return list(value)


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ZooError(f"{where} must be a number, not {value!r}")
    return float(value)
