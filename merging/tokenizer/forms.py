"""mergekit's YAML forms of the tokenizer settings, and the way they become a run's record.

A document's `tokenizer_source: union | base | MODEL` is the short form of
`tokenizer: {source: ...}`; both are read here into one `tokenizer:` block (mergekit's form,
models by reference, checked), then bound to the merge's models (each reference -> its
position, `settings.TokenizerSettings`) once the inputs are known, and written back in
mergekit's form into the output's `mergekit_config.yml`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from zoo.errors import NotFoundError, ZooError

SOURCES = ("union", "base")
KINDS = ("zero", "model_token")
Ref = Callable[[Any, str], str]  # a YAML model reference -> its text ('MODEL' or 'MODEL+ADAPTER')


def read(tokenizer_source: Any, tokenizer: Any, where: str, ref: Ref) -> dict | None:
    """The document's tokenizer settings as one `tokenizer:` block (None: it sets none)."""
    if tokenizer_source is not None and tokenizer is not None:
        raise ZooError(f"{where}: give tokenizer_source or a tokenizer: block, not both")
    if tokenizer_source is not None:
        return {"source": _source(tokenizer_source, f"{where}: tokenizer_source", ref), "tokens": {}}
    if tokenizer is None:
        return None
    if not isinstance(tokenizer, dict):
        raise ZooError(f"{where}: tokenizer must be a mapping (source, tokens, pad_to_multiple_of), "
                       f"not {tokenizer!r}")
    extra = set(tokenizer) - {"source", "tokens", "pad_to_multiple_of"}
    if extra:
        raise ZooError(f"{where}: tokenizer has unknown key(s) {', '.join(sorted(map(str, extra)))} "
                       "(known: source, tokens, pad_to_multiple_of)")
    out: dict[str, Any] = {"source": _source(tokenizer.get("source", "union"), f"{where}: tokenizer.source", ref)}
    tokens = tokenizer.get("tokens") or {}
    if not isinstance(tokens, dict) or not all(isinstance(k, str) and k for k in tokens):
        raise ZooError(f"{where}: tokenizer.tokens must map each token (text) to {{source, force}}, not {tokens!r}")
    out["tokens"] = {tok: _token(cfg, f"{where}: tokenizer.tokens[{tok!r}]", ref) for tok, cfg in tokens.items()}
    pad = tokenizer.get("pad_to_multiple_of")
    if pad is not None:
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 1:
            raise ZooError(f"{where}: tokenizer.pad_to_multiple_of must be a whole number >= 1, not {pad!r}")
        out["pad_to_multiple_of"] = pad
    return out


def _source(value: Any, where: str, ref: Ref) -> str:
    return value if value in SOURCES else ref(value, where)


def _token(cfg: Any, where: str, ref: Ref) -> dict:
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict) or set(cfg) - {"source", "force"}:
        raise ZooError(f"{where} must be a mapping with source and force, not {cfg!r}")
    force = cfg.get("force", False)
    if not isinstance(force, bool):
        raise ZooError(f"{where}.force must be true or false, not {force!r}")
    src = cfg.get("source")
    if src is None:
        if force:
            raise ZooError(f"{where}: force: true needs a source (a model, {{kind: zero}} or {{kind: model_token}})")
        return {"force": False}
    if isinstance(src, dict) and "kind" in src:
        kind = src["kind"]
        if kind == "zero":
            if set(src) != {"kind"}:
                raise ZooError(f"{where}.source: {{kind: zero}} takes nothing else")
            return {"source": {"kind": "zero"}, "force": force}
        if kind != "model_token":
            raise ZooError(f"{where}.source: unknown kind {kind!r} (known: {', '.join(KINDS)}, or a model reference)")
        extra = set(src) - {"kind", "model", "token", "token_id"}
        if extra or "model" not in src or (src.get("token") is None) == (src.get("token_id") is None):
            raise ZooError(f"{where}.source: {{kind: model_token}} takes model and exactly one of token and token_id")
        out = {"kind": "model_token", "model": ref(src["model"], f"{where}.source.model")}
        if src.get("token") is not None:
            if not isinstance(src["token"], str):
                raise ZooError(f"{where}.source.token must be text, not {src['token']!r}")
            out["token"] = src["token"]
        else:
            tid = src["token_id"]
            if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
                raise ZooError(f"{where}.source.token_id must be a whole number >= 0, not {tid!r}")
            out["token_id"] = tid
        return {"source": out, "force": force}
    return {"source": ref(src, f"{where}.source"), "force": force}


def refs(block: dict | None) -> list[str]:
    """Every model the block names."""
    if not block:
        return []
    out = [] if block["source"] in SOURCES else [block["source"]]
    for cfg in block["tokens"].values():
        src = cfg.get("source")
        if isinstance(src, str):
            out.append(src)
        elif isinstance(src, dict) and "model" in src:
            out.append(src["model"])
    return out


def renamed(block: dict | None, rename: Callable[[str], str]) -> dict | None:
    """The block with every model reference passed through `rename`."""
    if not block:
        return block
    tokens = {}
    for tok, cfg in block["tokens"].items():
        src = cfg.get("source")
        if isinstance(src, str):
            cfg = {**cfg, "source": rename(src)}
        elif isinstance(src, dict) and "model" in src:
            cfg = {**cfg, "source": {**src, "model": rename(src["model"])}}
        tokens[tok] = cfg
    source = block["source"] if block["source"] in SOURCES else rename(block["source"])
    return {**block, "source": source, "tokens": tokens}


# ----- bound to the merge's models ---------------------------------------------------------------

def members(parents: Sequence[Any]) -> list[tuple[Any, Any]]:
    """The merge's models as (input, adapter or None), the base first: the positions the run
    records (`settings`) and the engine reads (`[base, *models]`)."""
    from ..lora import ADAPTER_ROLE as adapter_role

    out = []
    for i, p in enumerate(parents):
        if p.role == adapter_role:
            continue
        nxt = parents[i + 1] if i + 1 < len(parents) else None
        out.append((p.role, (p.ref, nxt.ref if nxt is not None and nxt.role == adapter_role else None)))
    return [m for role, m in out if role == "base"] + [m for role, m in out if role != "base"]


def bind(block: Any, parents: Sequence[Any], base: Any, refs: Sequence[tuple[Any, Any]],
         resolve: Callable[[Any], Any]) -> dict:
    """`block` (mergekit's form, or a `tokenizer:` mapping given to the Python API) with each
    model reference replaced by its position among the run's models (`members(parents)`);
    `base`: the merge's base_model reference (None: none), whose position the vocabulary
    starts from; `refs`: the merge's models as given, (reference, settings), for messages.
    A reference to a model that is not in the merge is one line naming the merge's models."""
    from ..lora import mergekit_ref

    if isinstance(block, dict) and isinstance(block.get("tokens"), dict) and "base" in block:
        return block  # already bound (a recorded run's params)
    block = block if _is_read(block) else read(None, block, "tokenizer", mergekit_ref)
    models = members(parents)
    named = [str(r) for r in ([base] if base is not None else []) + [r for r, _ in refs]]

    def at(r: str, where: str) -> int:
        try:
            key = resolve(r)
        except NotFoundError:
            key = None
        if key in models:
            return models.index(key)
        raise ZooError(f"{where}: {r!r} is not one of the merge's models ({', '.join(dict.fromkeys(named))}); "
                       "the tokenizer settings can only name the base_model or a model under models:")

    out: dict[str, Any] = {"source": block["source"] if block["source"] in SOURCES else
                           {"model": at(block["source"], "tokenizer source")}}
    tokens = {}
    for tok, cfg in block["tokens"].items():
        src, where = cfg.get("source"), f"tokenizer.tokens[{tok!r}].source"
        if isinstance(src, str):
            src = {"kind": "model", "model": at(src, where)}
        elif isinstance(src, dict) and "model" in src:
            src = {**src, "model": at(src["model"], where)}
        tokens[tok] = {"source": src, "force": cfg.get("force", False)}
    out["tokens"] = tokens
    if block.get("pad_to_multiple_of") is not None:
        out["pad_to_multiple_of"] = block["pad_to_multiple_of"]
    out["base"] = at(base, "base_model") if base is not None else None
    return out


def _is_read(block: Any) -> bool:
    return isinstance(block, dict) and isinstance(block.get("tokens"), dict) and all(
        isinstance(c, dict) and set(c) <= {"source", "force"} and "force" in c for c in block["tokens"].values())


# ----- back to mergekit's form (mergekit_config.yml) ----------------------------------------------

def to_yaml(params: dict, names: Sequence[str], has_base: bool) -> dict:
    """The run's tokenizer settings as mergekit YAML keys (`names`: the merge's models by
    position, the base first). A method without a base still names the model the
    vocabulary starts from as base_model (mergekit's meaning; it is among the models)."""
    doc: dict[str, Any] = {}
    block = params.get("tokenizer")
    if block:
        if block.get("base") is not None and not has_base:
            doc["base_model"] = names[block["base"]]
        source = block["source"] if block["source"] in SOURCES else names[block["source"]["model"]]
        tokens = {}
        for tok, cfg in block.get("tokens", {}).items():
            src = cfg.get("source")
            entry: dict[str, Any] = {}
            if src is not None:
                if src["kind"] == "model":
                    entry["source"] = names[src["model"]]
                elif src["kind"] == "zero":
                    entry["source"] = {"kind": "zero"}
                else:
                    entry["source"] = {"kind": "model_token", "model": names[src["model"]],
                                       **{k: src[k] for k in ("token", "token_id") if src.get(k) is not None}}
            if cfg.get("force"):
                entry["force"] = True
            tokens[tok] = entry
        if tokens or block.get("pad_to_multiple_of"):
            doc["tokenizer"] = {"source": source, **({"tokens": tokens} if tokens else {}),
                                **({"pad_to_multiple_of": block["pad_to_multiple_of"]}
                                   if block.get("pad_to_multiple_of") else {})}
        else:
            doc["tokenizer_source"] = source
    if params.get("chat_template"):
        doc["chat_template"] = params["chat_template"]
    return doc
