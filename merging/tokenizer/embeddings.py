"""The rows of one token-indexed tensor (embeddings, LM head), laid out in the output
vocabulary for each model before the merge method combines them, as mergekit 0.1.5's
PermutedVocabulary does (mergekit/tokenizer/embed.py):

- a model that has a token gives its own row for it (unless the token's setting forces a
  source);
- a token a model lacks gets, for that model, a row by rule: the token's own setting
  (`tokens:`) if given; else the row of the one model that has it; else zero when no model
  has it; else the base's row when the base has it; else the mean of the rows of the models
  that have it;
- rows past the tokens (`pad_to_multiple_of`) are the mean of the model's token rows.

The arithmetic is mergekit's, operation for operation (a mean is a running sum from zero in
the models' order, divided by the count), vectorised over tokens.
"""
from __future__ import annotations

import torch

from zoo.errors import ZooError

from .build import Vocabulary
from .settings import ModelRow, ModelTokenRow, TokenizerSettings, ZeroRow


def align(vocab: Vocabulary, settings: TokenizerSettings, tensors: dict[int, torch.Tensor], base: int | None,
          labels: list[str], axis: int = 0) -> dict[int, torch.Tensor]:
    """`tensors`: model position -> its tensor (token rows along `axis`), in the order the
    rules visit the models; returns each one laid out in the output vocabulary."""
    keys = list(tensors)
    views = {k: t.movedim(axis, 0) for k, t in tensors.items()}
    shapes = {tuple(v.shape[1:]) for v in views.values()}
    if len(shapes) > 1:
        raise ZooError(f"token-indexed tensors differ beyond the vocabulary axis: {sorted(shapes)}")
    dtype = views[keys[0]].dtype
    for v in views.values():
        dtype = torch.promote_types(dtype, v.dtype)
    token_shape = views[keys[0]].shape[1:]
    n = len(vocab.tokens)
    maps = {k: torch.tensor(vocab.maps[k], dtype=torch.long) for k in keys}
    for k in keys:
        if n and int(maps[k].max()) >= views[k].shape[0]:
            raise ZooError(f"{labels[k]}: its tokenizer maps a token to row {int(maps[k].max())}, but the tensor has "
                           f"{views[k].shape[0]} rows")
    present = torch.stack([maps[k] >= 0 for k in keys])  # models x tokens
    count = present.sum(0)

    forced = torch.zeros(n, dtype=torch.bool)
    configured: dict[int, object] = {}
    for tok, cfg in settings.tokens.items():
        if cfg.source is not None:
            configured[vocab.tokens[tok]] = cfg.source
            forced[vocab.tokens[tok]] = cfg.force
    need = forced | (count < len(keys))  # tokens that get a default row
    defaults = torch.zeros((n, *token_shape), dtype=dtype)

    auto = need.clone()
    if configured:
        auto[list(configured)] = False
    ids = auto.nonzero().flatten()
    one = ids[count[ids] == 1]
    if len(one):  # the one model that has it
        donor = present[:, one].float().argmax(0)
        for j, k in enumerate(keys):
            sel = one[donor == j]
            defaults[sel] = views[k][maps[k][sel]].to(dtype)
    # no model has it: zero (already)
    several = ids[count[ids] > 1]
    if base is not None and base in keys and len(several):
        from_base = several[maps[base][several] >= 0]
        defaults[from_base] = views[base][maps[base][from_base]].to(dtype)
        several = several[maps[base][several] < 0]
    for c in count[several].unique().tolist():  # a mean: a running sum from zero, then / count
        sel = several[count[several] == c]
        acc = torch.zeros((len(sel), *token_shape), dtype=dtype)
        for j, k in enumerate(keys):
            has = present[j, sel]
            acc[has] = acc[has] + views[k][maps[k][sel[has]]]
        acc /= c
        defaults[sel] = acc
    for t, src in configured.items():
        if need[t]:
            defaults[t] = _configured(src, t, vocab, views, maps, labels).to(dtype)

    out = {}
    for j, k in enumerate(keys):
        rows = torch.zeros((vocab.rows, *token_shape), dtype=dtype)
        own = present[j] & ~forced
        rows[:n][own] = views[k][maps[k][own]].to(dtype)
        rows[:n][~own & need] = defaults[~own & need]
        if vocab.rows > n:  # padding rows: the mean of the token rows
            rows[n:] = torch.mean(rows[:n], dim=0)
        out[k] = rows.movedim(0, axis)
    return out


def _configured(src: object, t: int, vocab: Vocabulary, views: dict, maps: dict, labels: list[str]) -> torch.Tensor:
    """The row a token's own setting names."""
    token = next(s for s, i in vocab.tokens.items() if i == t)
    if isinstance(src, ZeroRow):
        return torch.zeros(next(iter(views.values())).shape[1:])
    k = src.model
    if k not in views:
        raise ZooError(f"token {token!r}: its source {labels[k]} has no such tensor")
    if isinstance(src, ModelRow):
        row = int(maps[k][t])
        if row < 0:
            raise ZooError(f"token {token!r}: its source {labels[k]} does not have that token; name a model that has "
                           "it, or {kind: model_token, model, token} for another token's row")
        return views[k][row]
    assert isinstance(src, ModelTokenRow)
    row = src.token_id if src.token_id is not None else vocab.originals[k].get(src.token, -1)
    if row < 0:
        raise ZooError(f"token {token!r}: {labels[k]} has no token {src.token!r}")
    if row >= views[k].shape[0]:
        raise ZooError(f"token {token!r}: token_id {row} is out of range for {labels[k]} ({views[k].shape[0]} rows)")
    return views[k][row]
