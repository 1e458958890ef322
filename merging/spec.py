"""A merge, fully described: method, base, models with their per-model settings, shared
settings, precision and placement. Built from mergekit YAML or from flags; the operator's
params are exactly this, serialised."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from zoo.registry import OperatorParams


class MergeParams(OperatorParams):
    """Params of every `merge.*` operator (inputs come separately, as catalog refs)."""

    parameters: dict[str, Any] = Field(default_factory=dict, description="method-wide settings (scalars, gradients, filters)")
    model_parameters: list[dict[str, Any]] = Field(default_factory=list, description="per input model, in input order")
    dtype: str | None = Field(None, description="mergekit's dtype: sets the output dtype unless out_dtype does")
    out_dtype: str | None = Field(None, description="output dtype [default: the inputs' dtype]")
    compute_dtype: str = Field("float32", description="precision of the math")
    seed: int = Field(0, description="seed for random methods (DARE)")
    mismatched_shapes: str = Field("error", description="error, or 'base' to keep the base's tensor")
    max_shard_size: str = Field("5GB", description="output shard size")
