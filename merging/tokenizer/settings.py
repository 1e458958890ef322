"""The tokenizer settings of a merge as its run records them. Models are named by their
position among the merge's models (the base first, then the others in input order), so the
record, and the cache key made from it, do not depend on how a model was named; `forms`
turns mergekit's YAML (models by reference) into these and back."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, model_validator

from zoo.param_types import CheckedParams, custom

from .chat import template_problem


class _Settings(CheckedParams):
    model_config = {"extra": "forbid", "frozen": True}


class ModelAt(_Settings):
    """A model of the merge, by position (the base first, then the other models in order)."""

    model: int = Field(ge=0, description="position among the merge's models (base first)")


class ZeroRow(_Settings):
    """The token's row is zero (mergekit's {kind: zero})."""

    kind: Literal["zero"]


class ModelRow(_Settings):
    """The row the model has for the same token (mergekit: a bare model reference)."""

    kind: Literal["model"]
    model: int = Field(ge=0, description="position among the merge's models (base first)")


class ModelTokenRow(_Settings):
    """The row of another token, or of a row number, of one model (mergekit's
    {kind: model_token, model, token | token_id})."""

    kind: Literal["model_token"]
    model: int = Field(ge=0, description="position among the merge's models (base first)")
    token: str | None = Field(None, description="a token of that model's own tokenizer")
    token_id: int | None = Field(None, ge=0, description="a row of that model's embedding")

    @model_validator(mode="after")
    def _one(self) -> "ModelTokenRow":
        if (self.token is None) == (self.token_id is None):
            raise custom("a model_token source takes exactly one of token and token_id")
        return self


RowSource = Union[ZeroRow, ModelRow, ModelTokenRow]  # told apart by `kind`


class TokenSetting(_Settings):
    """Where one token's row comes from (mergekit's TokenEmbeddingConfig). Without a source
    the token gets mergekit's default rule (see `embeddings`); `force` uses the source for
    every model, even those that have the token."""

    source: RowSource | None = None
    force: bool = False

    @model_validator(mode="after")
    def _force_needs_source(self) -> "TokenSetting":
        if self.force and self.source is None:
            raise custom("force: true needs a source for the token (a model, {kind: zero} or {kind: model_token})")
        return self


class TokenizerSettings(_Settings):
    """mergekit's `tokenizer_source` / `tokenizer:` block: which vocabulary the output has
    and how each model's token-indexed rows (embeddings, LM head) are laid out in it before
    the merge method combines them."""

    source: Literal["union", "base"] | ModelAt = Field(
        "union", description="union (every model's tokens), base, or one model's tokenizer")
    tokens: dict[str, TokenSetting] = Field(default_factory=dict, description="per token: where its row comes from "
                                            "(a token not in the vocabulary is added)")
    pad_to_multiple_of: int | None = Field(None, ge=1, description="rows padded to a multiple of this (extra rows: "
                                           "the mean of the token rows)")
    base: int | None = Field(None, ge=0, description="the model whose tokenizer the vocabulary starts from and whose "
                             "rows win for shared tokens (mergekit's base_model) [default: the base, else the first "
                             "model]")


def _check_template(value: str) -> str:
    problem = template_problem(value)
    if problem:
        raise custom(problem)
    return value


ChatTemplate = Annotated[str, AfterValidator(_check_template)]
