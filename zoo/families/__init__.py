"""Architecture families: detection from config.json (or timm tensor names) and the
adapter that knows each family's layout. `family_of(ckpt)` is the entry point."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ZooError
from .base import Axis, Family, TensorRole, Widths
from .bert import BertFamily
from .gpt2 import GPT2Family
from .llama import LlamaFamily
from .mlp import MLPFamily
from .stitched import StitchedFamily
from .vit import TimmViTFamily, ViTFamily

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

FAMILIES: dict[str, Family] = {f.name: f for f in (LlamaFamily(), GPT2Family(), BertFamily(), ViTFamily(), TimmViTFamily(),
                                                    StitchedFamily(), MLPFamily())}


def supported() -> str:
    return ", ".join(f"{name} ({', '.join(f.architectures)})" for name, f in FAMILIES.items())


def detect(config: dict | None, names: list[str]) -> Family | None:
    for fam in FAMILIES.values():
        if fam.matches(config, names):
            return fam
    return None


def family_of(ckpt: "Checkpoint") -> tuple[Family, dict]:
    """(adapter, config) for a checkpoint; timm checkpoints get a synthesised config.
    Unknown architectures: one line naming what is supported."""
    config = ckpt.config
    fam = detect(config, ckpt.names())
    if fam is None:
        kind = (config or {}).get("model_type") or "unknown (no config.json)"
        raise ZooError(f"{ckpt.path}: architecture {kind} is not supported; supported families: {supported()}")
    if config is None or config.get("model_type") is None:
        config = TimmViTFamily.config_from_shapes({n: ckpt.info(n).shape for n in ckpt.names()})
    return fam, config


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


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ZooError(f"unknown family {name!r}; supported: {supported()}") from None


__all__ = ["Axis", "FAMILIES", "Family", "TensorRole", "Widths", "detect", "family_of", "get_family", "supported",
           "widths_summary"]
