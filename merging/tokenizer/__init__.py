"""Tokenizers and chat templates of a merge (mergekit's `tokenizer_source`, `tokenizer:` and
`chat_template`, with mergekit 0.1.5's meaning).

- `settings`: the settings as a run records them (models by position), and the check of a
  chat template;
- `forms`: mergekit's YAML forms: read, bound to the merge's models, written back;
- `chat`: built-in chat templates and `auto`;
- `build`: the output tokenizer and, per model, where each output token's row comes from;
- `embeddings`: the rows of a token-indexed tensor, permuted and filled per model;
- `plan`: what the merge engine does differently when a merge sets any of them.

Light to import (no torch, no transformers): the CLI reads the settings at start-up.
"""
