"""The one place where the merge engine (merging.engine) meets tokenizers: what a merge with
`tokenizer`/`tokenizer_source` or `chat_template` does differently, decided before any
tensor is read.

- token-indexed tensors (the family's token embeddings and LM head) get one row per output
  token; each model's copy is laid out in the output vocabulary (`embeddings.align`)
  before the merge method combines them, tensor by tensor like every other tensor;
- the output config's `vocab_size` is the number of rows;
- the output's tokenizer files are the new tokenizer's (with its chat template in
  `tokenizer_config.json`), not the reference model's.

Every problem a user can cause (a model without tokenizer files, a token source that lacks
the token, a bad template) is found here, before the output folder exists.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

from . import chat
from .build import TOKENIZER_FILES, Member, Vocabulary, build, has_tokenizer, load
from .settings import ModelTokenRow, TokenizerSettings


@dataclass
class TokenizerPlan:
    settings: TokenizerSettings | None
    vocab: Vocabulary | None
    vocab_tensors: frozenset[str]
    labels: list[str]
    base: int  # the model the vocabulary starts from (position)
    order: list[int]  # the models' positions in the order the row rules visit them (mergekit's)
    files: dict[str, bytes] = field(default_factory=dict)  # the output's tokenizer files
    notes: dict = field(default_factory=dict)

    def covers(self, name: str) -> bool:
        """Whether the tensor is token-indexed (its rows are laid out anew)."""
        return self.vocab is not None and name in self.vocab_tensors

    def shape(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.vocab.rows, *shape[1:]) if self.covers(name) else shape

    def fits(self, name: str, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
        """Whether two models' shapes of a tensor can be merged (token rows may differ in number)."""
        return a[1:] == b[1:] if self.covers(name) else a == b

    def aligned(self, name: str, tensors: dict[int, Any]) -> dict[int, Any]:
        """Each model's tensor (by position) laid out in the output vocabulary."""
        from .embeddings import align

        order = {k: tensors[k] for k in self.order if k in tensors}
        return align(self.vocab, self.settings, order, self.base, self.labels)

    def config(self, config: dict) -> dict:
        return {**config, "vocab_size": self.vocab.rows} if self.vocab is not None and config else config

    def side_files(self, side: dict[str, Path]) -> dict[str, Path]:
        """The reference's side files less its tokenizer, when the merge writes its own."""
        return {rel: p for rel, p in side.items() if rel not in TOKENIZER_FILES} if self.files else side


def vocabulary_tensors(family: Any, config: dict, names: list[str], shapes: dict[str, tuple[int, ...]]) -> frozenset:
    """The token-indexed tensors of a model: its family's token embeddings and LM head (a
    tied head included), and head tensors with one row per token (BERT's output bias)."""
    vocab_size = (config or {}).get("vocab_size")
    out = set()
    for n in names:
        role = family.role(n, config) if config else None
        kind = role.kind if role is not None else ""
        if family.is_token_embedding(n) or n in family.tied_head_names or kind in ("embed_tokens", "lm_head") or (
                kind == "head" and shapes[n] and shapes[n][0] == vocab_size):
            out.add(n)
    return frozenset(out)


def member(ckpt: Any, label: str) -> Member:
    size = (ckpt.config or {}).get("vocab_size")
    return Member(label, Path(ckpt.root), list(ckpt.side_files), size if isinstance(size, int) else None)


def plan(params: Any, models: list[Any], has_base: bool, family: Any, names: list[str]) -> TokenizerPlan:
    """The plan for a merge of `models` (the base first when `has_base`); one that changes
    nothing when the merge sets neither a tokenizer nor a chat template."""
    settings, template = params.tokenizer, params.chat_template
    if settings is None and not template:
        return TokenizerPlan(None, None, frozenset(), [], 0, [])
    labels = [f"{'base_model' if has_base and i == 0 else 'model'} {_name(Path(m.path))}" for i, m in enumerate(models)]
    members = [member(m, label) for m, label in zip(models, labels)]
    for k in _named(settings):
        if k >= len(members):
            raise ZooError(f"tokenizer settings name model position {k}, but the merge has {len(members)} models")
    base = settings.base if settings is not None and settings.base is not None else 0
    order = [i for i in range(len(members)) if i != 0 or not has_base] + ([0] if has_base else [])
    result = TokenizerPlan(settings, None, frozenset(), labels, base, order)
    ref = models[0]
    if settings is not None:
        if family is None:
            raise ZooError(f"{ref.path.name}: a tokenizer merge needs the model's family to know its token "
                           "embeddings, and this architecture has none")
        result.vocab = build(settings, members, base)
        shapes = {n: tuple(ref.info(n).shape) for n in names}
        result.vocab_tensors = vocabulary_tensors(family, ref.config or {}, names, shapes)
        _check_sources(result, models)
        result.notes["vocabulary"] = {"source": settings.source if isinstance(settings.source, str) else
                                     labels[settings.source.model], "tokens": len(result.vocab.tokens),
                                     "rows": result.vocab.rows, "tensors": sorted(result.vocab_tensors)}
    if template or result.vocab is not None:
        _output_files(result, template, members)
    return result


def _name(path: Path) -> str:
    """A model's name for messages: its folder, or NAME@VERSION for a catalog store folder."""
    return f"{path.parent.name}@{path.name[1:]}" if re.fullmatch(r"v\d+", path.name) else path.name


def _named(settings: TokenizerSettings | None) -> list[int]:
    if settings is None:
        return []
    out = [] if isinstance(settings.source, str) else [settings.source.model]
    out += [c.source.model for c in settings.tokens.values() if c.source is not None and hasattr(c.source, "model")]
    return out + ([settings.base] if settings.base is not None else [])


def _check_sources(p: TokenizerPlan, models: list[Any]) -> None:
    """Token sources that name a row before any tensor is read: the token exists, the row
    is in range."""
    for tok, cfg in p.settings.tokens.items():
        src = cfg.source
        if isinstance(src, ModelTokenRow):
            k = src.model
            row = src.token_id if src.token_id is not None else p.vocab.originals[k].get(src.token, -1)
            if row < 0:
                raise ZooError(f"tokenizer.tokens[{tok!r}]: {p.labels[k]} has no token {src.token!r}")
            for n in p.vocab_tensors:
                if n in models[k].tensors and row >= models[k].info(n).shape[0]:
                    raise ZooError(f"tokenizer.tokens[{tok!r}]: row {row} is out of range for {p.labels[k]} "
                                   f"({n} has {models[k].info(n).shape[0]} rows)")
        elif src is not None and getattr(src, "kind", "") == "model":
            if p.vocab.maps[src.model][p.vocab.tokens[tok]] < 0:
                raise ZooError(f"tokenizer.tokens[{tok!r}]: its source {p.labels[src.model]} does not have that "
                               "token; name a model that has it, or {kind: model_token, model, token} for another "
                               "token's row")


def _output_files(p: TokenizerPlan, template: str | None, members: list[Member]) -> None:
    """The output tokenizer's files: the merged tokenizer, or the reference model's with the
    chat template set (mergekit re-saves the reference's tokenizer then)."""
    tok = p.vocab.tokenizer if p.vocab is not None else load(members[0])
    if template:
        own = []
        if template == chat.AUTO:
            for m in members:
                if has_tokenizer(m):
                    try:
                        own.append(load(m).chat_template)
                    except ZooError:
                        continue  # as mergekit: a model whose tokenizer does not load has no say
        text, origin = chat.resolve(template, own)
        p.notes["chat_template"] = origin
        if text is None and p.vocab is None:
            return  # nothing changes: the reference's files are copied as they are
        if text is not None:
            tok.chat_template = text
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp, save_jinja_files=False)  # the template into tokenizer_config.json
        p.files = {f.name: f.read_bytes() for f in sorted(Path(tmp).iterdir()) if f.is_file()}
