"""Reading mergekit's YAML: the subset weightzoo runs, and a clear refusal for the rest."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.yaml_input import load_all_file

from .modules import lift_modules
from .tokenizer import forms as tokenizer_forms
from .tokenizer.chat import template_problem

SUPPORTED = {"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype", "name",
             "tokenizer", "tokenizer_source", "chat_template"}
UNSUPPORTED: dict[str, str] = {}


@dataclass
class MergekitConfig:
    method: str
    base: str | None
    models: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    name: str | None = None
    slices: list[SliceDef] | None = None  # mergekit's `slices:` (then `models` is empty)
    tokenizer: dict[str, Any] | None = None  # tokenizer_source / tokenizer: as one block (merging.tokenizer.forms)
    chat_template: str | None = None

    def refs(self) -> list[str]:
        """Every model the document names (base, models, slice sources and slice bases, and
        the models its tokenizer settings take rows from)."""
        out = [self.base] if self.base else []
        out += [ref for ref, _ in self.models]
        for s in self.slices or ():
            out += [src.ref for src in s.sources] + ([s.base] if s.base else [])
        return out + tokenizer_forms.refs(self.tokenizer)

    def run_settings(self) -> dict[str, Any]:
        """The document's settings of the merge run beyond method and models (for run_merge)."""
        return {k: v for k, v in (("tokenizer", self.tokenizer), ("chat_template", self.chat_template)) if v}

    def renamed(self, mapping: dict[str, str]) -> "MergekitConfig":
        """The same config with model references replaced through `mapping` (names of
        earlier documents of a multi-document file -> the entries they made)."""
        from dataclasses import replace

        def r(ref: str | None) -> str | None:
            return mapping.get(ref, ref) if ref is not None else None

        slices = None if self.slices is None else [
            SliceDef([SliceSource(r(src.ref), src.layer_range, src.parameters) for src in s.sources], r(s.base),
                     s.parameters) for s in self.slices]
        return replace(self, base=r(self.base), models=[(r(m), p) for m, p in self.models], slices=slices,
                       tokenizer=tokenizer_forms.renamed(self.tokenizer, r))


@dataclass
class SliceSource:
    """One source of an output slice: layers [a, b) of a model, with its own parameters."""

    ref: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class SliceDef:
    """One output slice (mergekit's OutputSliceDefinition): its sources, each the same
    number of layers, merged with the document's merge_method; its own base_model and
    parameters override the document's."""

    sources: list[SliceSource]
    base: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def load(path: str | Path) -> MergekitConfig:
    """A one-document merge config (a file with several documents: `load_documents`)."""
    docs = load_documents(path)
    if len(docs) != 1:
        raise ZooError(f"{path}: holds {len(docs)} merge documents; expected one")
    return docs[0]


def load_documents(path: str | Path) -> list[MergekitConfig]:
    """Every document of a merge config file (mergekit-multi: documents separated by
    `---`, each with a `name:`; at most one without, the final result). Checked whole
    before anything runs: names unique and valid, at most one unnamed document."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"no such merge config: {path}")
    docs = [d for d in load_all_file(path, "merge config") if d is not None]  # size- and alias-limited
    if not docs:
        raise ZooError(f"{path}: no merge document in the file")
    if len(docs) == 1:
        return [parse(docs[0], str(path))]
    configs = [parse(d, f"{path}: document {i + 1}") for i, d in enumerate(docs)]
    seen: dict[str | None, int] = {}
    for i, cfg in enumerate(configs):
        if cfg.name in seen:
            what = f"two documents named {cfg.name!r}" if cfg.name else "two documents without a name"
            raise ZooError(f"{path}: {what} (documents {seen[cfg.name] + 1} and {i + 1}); each document of a "
                           "multi-document config needs its own name:, and at most one (the final result) has none")
        seen[cfg.name] = i
    return configs


def _ref(value: Any, where: str) -> str:
    """A model reference; a LoRA-modified one ('model+lora', {model: ..., lora: ...}) as 'MODEL+ADAPTER'."""
    from .lora import mergekit_ref

    return mergekit_ref(value, where)


def parse(doc: Any, where: str = "config") -> MergekitConfig:
    if not isinstance(doc, dict):
        raise ZooError(f"{where}: expected a mapping with merge_method, models, ...")
    doc = lift_modules(doc, where)
    for key in doc:
        if key in UNSUPPORTED:
            raise ZooError(f"{where}: '{key}' is not supported: {UNSUPPORTED[key]}")
        if key not in SUPPORTED:
            raise ZooError(f"{where}: unknown key {key!r} (supported: {', '.join(sorted(SUPPORTED))})")
    method = doc.get("merge_method")
    if not isinstance(method, str):
        raise ZooError(f"{where}: merge_method is required (e.g. ties, task_arithmetic, linear)")
    base = _ref(doc["base_model"], f"{where}: base_model") if doc.get("base_model") is not None else None
    if doc.get("slices") is not None and doc.get("models") is not None:
        raise ZooError(f"{where}: give either models: or slices:, not both")
    slices = _slices(doc["slices"], where) if doc.get("slices") is not None else None
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
    tokenizer = tokenizer_forms.read(doc.get("tokenizer_source"), doc.get("tokenizer"), where, _ref)
    chat_template = _text(doc.get("chat_template"), f"{where}: chat_template")
    if chat_template and template_problem(chat_template):
        raise ZooError(f"{where}: {template_problem(chat_template)}")
    if slices is not None and (tokenizer or chat_template):
        raise ZooError(f"{where}: {'tokenizer settings' if tokenizer else 'chat_template'} with slices: are not "
                       "supported yet; merge the slices in one document, then set them in a second document over it")
    return MergekitConfig(method, base, models, params, dtype, out_dtype, name, slices, tokenizer, chat_template)


def _slices(value: Any, where: str) -> list[SliceDef]:
    """mergekit's `slices:`: a list of {sources: [{model, layer_range: [a, b], parameters}],
    base_model, parameters}; every source of a slice spans the same number of layers."""
    if not isinstance(value, list) or not value:
        raise ZooError(f"{where}: slices must be a non-empty list of {{sources: [{{model, layer_range: [a, b]}}]}}, "
                       f"not {value!r}" if not isinstance(value, list) else f"{where}: slices is empty")
    out = []
    for i, s in enumerate(value):
        at = f"{where}: slices[{i}]"
        if not isinstance(s, dict) or not isinstance(s.get("sources"), list) or not s["sources"]:
            raise ZooError(f"{at} needs sources: a non-empty list of {{model, layer_range: [a, b]}}")
        extra = set(s) - {"sources", "base_model", "parameters", "residual_weight"}
        if extra:
            raise ZooError(f"{at} has unknown key(s) {', '.join(sorted(extra))} "
                           "(known: sources, base_model, parameters)")
        rw = s.get("residual_weight")  # accepted and unused, as in mergekit 0.1.5
        if rw is not None and (isinstance(rw, bool) or not isinstance(rw, (int, float))):
            raise ZooError(f"{at}: residual_weight must be a number, not {rw!r}")
        sources = []
        for j, src in enumerate(s["sources"]):
            sat = f"{at}.sources[{j}]"
            if not isinstance(src, dict) or "model" not in src or "layer_range" not in src:
                raise ZooError(f"{sat} needs model and layer_range: [a, b]")
            extra = set(src) - {"model", "layer_range", "parameters"}
            if extra:
                raise ZooError(f"{sat} has unknown key(s) {', '.join(sorted(extra))}")
            lr = src["layer_range"]
            if (not isinstance(lr, list) or len(lr) != 2 or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                    for x in lr) or not 0 <= lr[0] < lr[1]):
                raise ZooError(f"{sat}: layer_range must be [a, b] with 0 <= a < b (layers a to b-1), not {lr!r}")
            sources.append(SliceSource(_ref(src["model"], sat), (lr[0], lr[1]),
                                       _mapping(src.get("parameters"), f"{sat}.parameters")))
        lengths = {src.layer_range[1] - src.layer_range[0] for src in sources}
        if len(lengths) > 1:
            raise ZooError(f"{at}: its sources span {' and '.join(map(str, sorted(lengths)))} layers; all inputs to a "
                           "slice must contain the same number of layers")
        base = _ref(s["base_model"], f"{at}.base_model") if s.get("base_model") is not None else None
        out.append(SliceDef(sources, base, _mapping(s.get("parameters"), f"{at}.parameters")))
    return out


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
