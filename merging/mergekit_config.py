"""Reading mergekit's YAML: the subset weightzoo runs, and a clear refusal for the rest."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.yaml_input import load_file

SUPPORTED = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "name"}
UNSUPPORTED = {
    "slices": "layer slicing (passthrough/frankenmerges) is not supported; merge whole models",
    "tokenizer": "tokenizer merging is not supported; the output keeps the base's tokenizer files",
    "tokenizer_source": "tokenizer merging is not supported; the output keeps the base's tokenizer files",
    "chat_template": "chat templates are not rewritten; the output keeps the base's files",
    "modules": "per-module definitions are not supported",
}


@dataclass
class MergekitConfig:
    method: str
    base: str | None
    models: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    name: str | None = None


def load(path: str | Path) -> MergekitConfig:
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"no such merge config: {path}")
    doc = load_file(path, "merge config")  # size- and alias-limited: user input
    return parse(doc, str(path))


def _ref(value: Any, where: str) -> str:
    if isinstance(value, dict) and "model" in value:  # mergekit's long form {model: ..., lora: ...}
        if value.get("lora"):
            raise ZooError(f"{where}: LoRA-modified inputs are not supported; merge the adapter into its base first")
        value = value["model"]
    if not isinstance(value, str) or not value:
        raise ZooError(f"{where}: model reference must be a name, name@N, id or path, not {value!r}")
    if "+" in value and not Path(value).exists():
        raise ZooError(f"{where}: 'model+lora' references are not supported ({value})")
    return value


def parse(doc: Any, where: str = "config") -> MergekitConfig:
    if not isinstance(doc, dict):
        raise ZooError(f"{where}: expected a mapping with merge_method, models, ...")
    for key in doc:
        if key in UNSUPPORTED:
            raise ZooError(f"{where}: '{key}' is not supported: {UNSUPPORTED[key]}")
        if key not in SUPPORTED:
            raise ZooError(f"{where}: unknown key {key!r} (supported: {', '.join(sorted(SUPPORTED))})")
    method = doc.get("merge_method")
    if not isinstance(method, str):
        raise ZooError(f"{where}: merge_method is required (e.g. ties, task_arithmetic, linear)")
    base = _ref(doc["base_model"], f"{where}: base_model") if doc.get("base_model") is not None else None
    entries = doc.get("models") or []
    if not isinstance(entries, list):
        raise ZooError(f"{where}: models must be a list of entries (- model: REF, with optional parameters:), "
                       f"not a {_kind(entries)}")
    models = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ZooError(f"{where}: models[{i}] needs a 'model' key")
        extra = set(entry) - {"model", "parameters"}
        if extra:
            raise ZooError(f"{where}: models[{i}] has unknown key(s) {', '.join(sorted(extra))}")
        ref = _ref(entry["model"], f"{where}: models[{i}]")
        models.append((ref, _mapping(entry.get("parameters"), f"{where}: models[{i}].parameters")))
    params = _mapping(doc.get("parameters"), f"{where}: parameters")
    dtype, out_dtype, name = (_text(doc.get(k), f"{where}: {k}") for k in ("dtype", "out_dtype", "name"))
    return MergekitConfig(method, base, models, params, dtype, out_dtype, name)


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    """A parameters block: a mapping of setting names (an empty block is none)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ZooError(f"{where} must be a mapping of parameter names to values (e.g. density: 0.5), "
                       f"not a {_kind(value)}")
    return dict(value)


def _text(value: Any, where: str) -> str | None:
    """dtype, out_dtype, name: absent, or non-empty text."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ZooError(f"{where} must be non-empty text, not {value!r}")
    return value
