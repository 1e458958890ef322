"""mergekit's `modules:` key, read with mergekit's meaning for the architectures weightzoo has.

mergekit splits an architecture into modules, each with its own weight prefix, and a merge
file may give each module its own `models:` or `slices:` and `parameters:`. Every family
weightzoo knows (Llama, Mistral, Qwen2, GPT-2, BERT, ViT, ...) is, in mergekit's terms, a
single module named `default` (mergekit's multi-module architectures are vision-language
models, which are not weightzoo families). So a `modules:` document is the one-module
document it stands for: the module's `models:`/`slices:` become the document's, and its
parameters sit between the slices' and the document's, as in mergekit's precedence
(source > slice > module > document), a conditional list falling through to the next level
when no filter matches.
"""
from __future__ import annotations

from typing import Any

from zoo.errors import ZooError

MODULE = "default"  # mergekit's name for the one module of a single-module architecture
MODULE_KEYS = {"models", "slices", "parameters"}


def lift_modules(doc: dict, where: str) -> dict:
    """`doc` with its `modules:` replaced by the equivalent `models:`/`slices:` and
    `parameters:`; a document without `modules:` is returned unchanged."""
    if "modules" not in doc:
        return doc
    modules = doc["modules"]
    if doc.get("models") is not None or doc.get("slices") is not None:
        raise ZooError(f"{where}: give exactly one of models:, slices: or modules: (as mergekit)")
    if not isinstance(modules, dict) or not modules:
        raise ZooError(f"{where}: modules must map a module name to {{models: ...}} or {{slices: ...}}, "
                       f"e.g. modules: {{{MODULE}: {{models: [...]}}}}")
    unknown = [str(name) for name in modules if name != MODULE]
    if unknown:
        raise ZooError(f"{where}: modules: unknown module {unknown[0]!r}: weightzoo's families are single-module "
                       f"architectures, whose one module mergekit calls {MODULE!r}")
    module = modules[MODULE]
    at = f"{where}: modules.{MODULE}"
    if not isinstance(module, dict):
        raise ZooError(f"{at} must be a mapping with models: or slices:, not {module!r}")
    extra = set(module) - MODULE_KEYS
    if extra:
        raise ZooError(f"{at}: unknown key(s) {', '.join(sorted(map(str, extra)))} (a module takes "
                       f"{', '.join(sorted(MODULE_KEYS))})")
    if (module.get("models") is None) == (module.get("slices") is None):
        raise ZooError(f"{at}: give either models: or slices: (exactly one)")
    lifted = {k: v for k, v in doc.items() if k != "modules"}
    for key in ("models", "slices"):
        if module.get(key) is not None:
            lifted[key] = module[key]
    lifted["parameters"] = layered(module.get("parameters"), doc.get("parameters"), at)
    return lifted


def layered(module: Any, document: Any, where: str) -> dict:
    """The module's parameters over the document's, each name resolved as mergekit does:
    the module's setting wins, except that a conditional list (`[{filter, value}, ...]`)
    with no matching entry falls through to the document's setting."""
    module, document = _mapping(module, f"{where}.parameters"), _mapping(document, f"{where} (document parameters)")
    out = dict(document)
    for name, setting in module.items():
        if name in document and _conditional(setting):
            below = document[name]
            out[name] = [*setting, *(below if _conditional(below) else [{"value": below}])]
        else:
            out[name] = setting
    return out


def _conditional(setting: Any) -> bool:
    return isinstance(setting, list) and bool(setting) and all(isinstance(e, dict) for e in setting)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ZooError(f"{where} must be a mapping of parameter names to values, not {value!r}")
    return value
