"""Guess a checkpoint's family and architecture from its config.json or tensor names.

The detailed per-architecture adapters live in `zoo.families`; this is the cheap
catalog-level label (`llama`, `vit`, `timm_vit`, ...) shown by `zoo ls`.
"""
from __future__ import annotations


def detect_family(config: dict | None, tensor_names: list[str]) -> tuple[str | None, str | None]:
    """(family, architecture) for the catalog row; (None, None) when nothing is known."""
    if config:
        family = config.get("model_type")
        archs = config.get("architectures") or []
        arch = archs[0] if archs else None
        if family or arch:
            return family, arch
    names = set(tensor_names)
    if "patch_embed.proj.weight" in names and any(n.startswith("blocks.0.attn.qkv") for n in names):
        return "timm_vit", "VisionTransformer"
    return None, None
