"""Reading mergekit's YAML: the subset weightzoo runs, and a clear refusal for the rest."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError

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
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
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
    models = []
    for i, entry in enumerate(doc.get("models") or []):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ZooError(f"{where}: models[{i}] needs a 'model' key")
        extra = set(entry) - {"model", "parameters"}
        if extra:
            raise ZooError(f"{where}: models[{i}] has unknown key(s) {', '.join(sorted(extra))}")
        ref = _ref(entry["model"], f"{where}: models[{i}]")
        models.append((ref, dict(entry.get("parameters") or {})))
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ZooError(f"{where}: parameters must be a mapping")
    return MergekitConfig(method, base, models, dict(params), doc.get("dtype"), doc.get("out_dtype"), doc.get("name"))
