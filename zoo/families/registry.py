"""The one registry of families. The core registers its own (llama, gpt2, bert, vit,
timm_vit); operator packages register theirs from the modules their plugin lists under
`families`, which are imported before the first lookup - so every lookup sees them all."""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ZooError
from .base import Family

_FAMILIES: dict[str, Family] = {}
_plugins_loaded = False
_lock = threading.RLock()


def register_family(family: Family) -> Family:
    """Add a family (a later one of the same name replaces it); returns it."""
    if not family.name:
        raise ValueError(f"{type(family).__name__} has no name")
    _FAMILIES[family.name] = family
    return family


def _load_plugins() -> None:
    """Import the plugins' family modules, once (they register themselves)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True  # before importing: a family module that looks a family up must not recurse
        from .. import plugins

        try:
            plugins.load_families()
        except BaseException:
            _plugins_loaded = False
            raise


def families() -> tuple[Family, ...]:
    """Every family, in detection order (the core's first, then the plugins')."""
    _load_plugins()
    return tuple(_FAMILIES.values())


class _Families(Mapping):
    """`FAMILIES`: a read-only name -> family view that loads plugin families on first use."""

    def __getitem__(self, name: str) -> Family:
        _load_plugins()
        return _FAMILIES[name]

    def __iter__(self) -> Iterator[str]:
        _load_plugins()
        return iter(list(_FAMILIES))

    def __len__(self) -> int:
        _load_plugins()
        return len(_FAMILIES)

    def __repr__(self) -> str:
        return f"FAMILIES({', '.join(self)})"


FAMILIES: Mapping[str, Family] = _Families()


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ZooError(f"unknown family {name!r}; supported: {supported()}") from None


def supported() -> str:
    return ", ".join(f"{f.name} ({', '.join(f.architectures)})" for f in families())


def detect(config: dict | None, names: list[str]) -> Family | None:
    """The family a checkpoint belongs to (by its config, or tensor names), None if unknown."""
    return next((f for f in families() if f.matches(config, names)), None)


def presets() -> dict[str, dict[str, Any]]:
    """Every family's presets: name -> config fields, with `family` first."""
    out: dict[str, dict[str, Any]] = {}
    for fam in families():
        for name, config in fam.presets.items():
            out.setdefault(name, {"family": fam.name, **config})
    return out


def preset(name: str) -> dict[str, Any] | None:
    """One preset's config fields (with `family`), None if no family has it."""
    found = presets().get(name)
    return dict(found) if found is not None else None


class _Presets(Mapping):
    """`PRESETS`: a read-only name -> preset view over the families (loaded on first use)."""

    def __getitem__(self, name: str) -> dict[str, Any]:
        return presets()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(presets())

    def __len__(self) -> int:
        return len(presets())


PRESETS: Mapping[str, dict[str, Any]] = _Presets()
