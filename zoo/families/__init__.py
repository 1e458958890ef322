"""Architecture families: every fact about an architecture lives on its `Family`, found
through one registry (`registry.py`) that operator packages extend.

Adding a family is one file: a `Family` subclass, registered with `register_family(...)` -
by the line below for the core's own, at import for an operator package's (from a module its
plugin lists under `families`: stitched networks in `stitching`, the population MLP in
`generators`).

Importing this package is light (no torch, no transformers): the catalog and the CLI's
read-only commands use it. `family_of(ckpt)` is the entry point for operators.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ZooError
from .base import GENERIC, Axis, Family, TensorRole, Widths
from .bert import BertFamily
from .gpt2 import GPT2Family
from .llama import LlamaFamily
from .registry import FAMILIES, PRESETS, detect, families, get_family, preset, presets, register_family, supported
from .vit import TimmViTFamily, ViTFamily

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

for _family in (LlamaFamily(), GPT2Family(), BertFamily(), ViTFamily(), TimmViTFamily()):  # in detection order
    register_family(_family)


def family_of(ckpt: "Checkpoint") -> tuple[Family, dict]:
    """(adapter, config) for a checkpoint; families whose files carry no config (timm)
    synthesise one. Unknown architectures: one line naming what is supported."""
    fam = detect(ckpt.config, ckpt.names())
    if fam is None:
        kind = (ckpt.config or {}).get("model_type") or "unknown (no config.json)"
        raise ZooError(f"{ckpt.path}: architecture {kind} is not supported; supported families: {supported()}")
    return fam, fam.checkpoint_config(ckpt)


def catalog_label(config: dict | None, names: list[str]) -> tuple[str | None, str | None]:
    """(family, architecture) for a catalog row, cheaply: the config's model_type and first
    architecture as they are (known family or not), else the family that recognises the
    tensor names (timm files carry no config); (None, None) when nothing is known."""
    if config:
        archs = config.get("architectures") or []
        family, arch = config.get("model_type"), (archs[0] if archs else None)
        if family or arch:
            return family, arch
    fam = detect(None, names)
    return (fam.name, fam.architectures[0]) if fam else (None, None)


def hub_library(family: str | None) -> str | None:
    """The library that loads a family's checkpoints as stored (a Hub card's `library_name`)."""
    fam = FAMILIES.get(family) if family else None
    return fam.library if fam else None


def widths_summary(config: dict | None) -> dict | None:
    """The family adapter's view of a config's shape (as `zoo show` prints it), None if unknown."""
    fam = detect(config, []) if config else None
    if fam is None:
        return None
    try:
        w = fam.widths(config)
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return {**vars(w), "family": fam.name, "norm": fam.norm}


# The config fields that tell a model's size, in display order; the TUI's details show the
# ones marked detail-only too.
SUMMARY_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                "vocab_size", "n_embd", "n_layer", "n_head", "image_size", "patch_size", "num_labels")
DETAIL_ONLY_KEYS = frozenset({"num_key_value_heads", "num_labels"})


def config_summary(config: dict | None, detailed: bool = False) -> dict:
    """The size fields of a config present in it: `zoo show`'s, or with `detailed` the TUI's."""
    cfg = config or {}
    return {k: cfg[k] for k in SUMMARY_KEYS if k in cfg and (detailed or k not in DETAIL_ONLY_KEYS)}


def layer_index(name: str, family: Family | None = None) -> int | None:
    """The layer a tensor belongs to, by its family's naming or the generic one."""
    return (family or GENERIC).layer_of(name)


def num_layers(config: dict | None, names: list[str], family: Family | None = None) -> int:
    """Depth of the layer stack (config field, else layer indices in the names, else 1)."""
    return (family or GENERIC).num_layers(config, names)


def is_token_embedding(name: str, family: Family | None = None) -> bool:
    """Whether a tensor is a token-embedding matrix, by its family's naming or the generic one."""
    return (family or GENERIC).is_token_embedding(name)


__all__ = ["Axis", "FAMILIES", "GENERIC", "PRESETS", "SUMMARY_KEYS", "Family", "TensorRole", "Widths", "catalog_label",
           "config_summary", "detect", "families", "family_of", "get_family", "hub_library", "is_token_embedding",
           "layer_index", "num_layers", "preset", "presets", "register_family", "supported", "widths_summary"]
