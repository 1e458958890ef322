"""The output vocabulary of a merge and, per model, where each output token's row comes
from, built with transformers' tokenizers the way mergekit 0.1.5 builds them
(mergekit/tokenizer/build.py):

- each model's vocabulary is its tokenizer's, less the tokens at ids >= the config's
  `vocab_size` (rows the model does not have); the base's tokenizer is stripped of them
  (a BPE tokenizer: vocabulary, added tokens and merges);
- `base`: the base's (stripped) tokenizer; a model: that model's tokenizer as it is;
  `union`: the base's, plus every other model's ordinary tokens it lacks (as added
  tokens), then every model's added tokens (special ones stay special), models in order,
  each model's tokens in the order of their ids;
- tokens of the `tokens:` settings not in the vocabulary are added last;
- per model, output id -> the model's row of the same token, or -1 where it lacks it.

mergekit's union numbers the tokens it adds in an order that changes from run to run: it
walks each tokenizer's `get_vocab()` (a Rust hash map, in a different order in every
process) and the models other than the base as a Python set. weightzoo walks each
vocabulary by id and the models in the merge's order, so the same merge gives the same ids
every time. Against mergekit, a union therefore has the same tokens with the same rows,
at ids that may differ among the added ones.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

from .settings import TokenizerSettings

# files a tokenizer may be made of; replaced as a whole when a merge writes its own
TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "merges.txt", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
    "chat_template.json"})
_LOADABLE = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


@dataclass
class Member:
    """One model of the merge, as its tokenizer is concerned."""

    label: str  # how messages name it
    root: Path  # its folder
    files: list[str]  # its side files
    vocab_size: int | None  # its config's vocab_size: the rows it has


@dataclass
class Vocabulary:
    tokenizer: Any  # the output tokenizer (transformers)
    tokens: dict[str, int]  # the output vocabulary: token -> id (ids 0..n-1)
    rows: int  # rows of every token-indexed tensor: the tokens, padded to pad_to_multiple_of
    maps: list[list[int]]  # per model: output id -> the model's row for that token, -1 where it lacks it
    originals: list[dict[str, int]]  # per model: its own vocabulary (token -> row)


def has_tokenizer(m: Member) -> bool:
    return any(f in m.files for f in _LOADABLE)


def load(m: Member) -> Any:
    """The model's tokenizer (a fast one), or one line saying why there is none."""
    if not has_tokenizer(m):
        raise ZooError(f"{m.label} has no tokenizer files ({', '.join(_LOADABLE[:2])}, ...), and the merge's "
                       "tokenizer settings read it; copy the tokenizer it was trained with into its folder")
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(str(m.root), use_fast=True)
    except Exception as e:  # transformers raises many kinds; the message is what the user needs
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ZooError(f"cannot load the tokenizer of {m.label}: {why}") from None


def stripped(tok: Any, m: Member) -> Any:
    """`tok` less the tokens at ids >= the model's vocab_size (mergekit's get_stripped_tokenizer)."""
    import tokenizers

    size = m.vocab_size or len(tok.get_vocab())
    unused = {t for t, i in tok.get_vocab().items() if i >= size}
    if not unused:
        return tok
    doc = json.loads(tok._tokenizer.to_str())
    if not tok.is_fast or doc["model"]["type"] != "BPE":
        raise ZooError(f"{m.label}: its tokenizer has {len(unused)} tokens beyond the model's vocab_size {size}, and "
                       f"only a BPE tokenizer can be stripped of them (this one: {doc['model']['type']})")
    doc["added_tokens"] = [e for e in doc["added_tokens"] if e["id"] < size]
    for t in unused:
        doc["model"]["vocab"].pop(t, None)

    def keep(merge: Any) -> bool:
        pair = merge.split(" ") if isinstance(merge, str) else merge
        return not any(t in unused for t in pair)

    doc["model"]["merges"] = [mg for mg in doc["model"]["merges"] if keep(mg)]
    tok._tokenizer = tokenizers.Tokenizer.from_str(json.dumps(doc))
    return tok


def _copy(tok: Any) -> Any:
    """A separate tokenizer equal to `tok` (saved and loaded again, as mergekit does)."""
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp, legacy_format=False)
        return transformers.AutoTokenizer.from_pretrained(tmp, use_fast=True)


def union(base_tok: Any, toks: list[tuple[Any, int | None]]) -> Any:
    """mergekit's build_union_tokenizer: `toks` are (tokenizer, vocab_size), the base first."""
    plain: dict[str, None] = {}  # ordered set
    added: dict[str, Any] = {}
    for tok, size in toks:
        size = size or tok.vocab_size
        for t, i in sorted(tok.get_vocab().items(), key=lambda item: item[1]):  # by id: see the module's notes
            if i < size:
                plain.setdefault(t)
        for i, info in sorted(tok.added_tokens_decoder.items()):
            if i < size:
                added.setdefault(info.content, info)  # several settings for one token: the first
    out = _copy(base_tok)
    known = base_tok.get_vocab()
    for t in plain:
        if t not in added and t not in known:
            out.add_tokens(t)
    for info in added.values():
        out.add_tokens(info)
    return out


def build(settings: TokenizerSettings, members: list[Member], base: int) -> Vocabulary:
    """The output vocabulary and each model's map into it; `base`: the position of the model
    the vocabulary starts from."""
    toks = [load(m) for m in members]
    toks[base] = stripped(toks[base], members[base])
    if settings.source == "base":
        out = toks[base]
    elif settings.source == "union":
        order = [base] + [i for i in range(len(members)) if i != base]
        out = union(toks[base], [(toks[i], members[i].vocab_size) for i in order])
    else:
        out = load(members[settings.source.model])
    originals = [t.get_vocab() for t in toks]  # before tokens are added to the output (it may be the base's)
    known = set(out.get_vocab())
    for t in settings.tokens:
        if t not in known:
            out.add_tokens(t)
            known.add(t)
    tokens = out.get_vocab()
    if sorted(tokens.values()) != list(range(len(tokens))):
        raise ZooError("the output tokenizer's ids are not 0..n-1 (holes in its vocabulary); a tokenizer merge "
                       "needs one row per token")
    maps = []
    for m, own in zip(members, originals):
        size = m.vocab_size or len(own)
        row = [-1] * len(tokens)
        for t, i in tokens.items():
            j = own.get(t, -1)
            row[i] = j if j < size else -1  # a token beyond the model's rows: it lacks it
        maps.append(row)
    rows = len(tokens)
    if settings.pad_to_multiple_of and rows % settings.pad_to_multiple_of:
        rows += settings.pad_to_multiple_of - rows % settings.pad_to_multiple_of
    return Vocabulary(out, tokens, rows, maps, originals)
