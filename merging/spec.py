"""A merge, fully described: method, base, models with their per-model settings, shared
settings, precision and placement. Built from mergekit YAML or from flags; the operator's
params are exactly this, serialised.

Each streaming method's operator takes `params_for(method)`: the same fields, with every
setting checked against the method's parameter types (merging.settings) at validation, so a
bad value is refused before any input is read, and the ranges appear in the JSON schema."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter, WithJsonSchema, create_model

from zoo.registry import OperatorParams

from .tokenizer.settings import ChatTemplate, TokenizerSettings

if TYPE_CHECKING:
    from .methods import MergeMethod

PARAMETERS_HELP = "method-wide settings (scalars, gradients, filters)"
MODEL_PARAMETERS_HELP = "per input model, in input order"
FloatDtype = Literal["float64", "float32", "float16", "bfloat16"]


class MergeParams(OperatorParams):
    """Params of every `merge.*` operator (inputs come separately, as catalog refs)."""

    parameters: dict[str, Any] = Field(default_factory=dict, description=PARAMETERS_HELP)
    model_parameters: list[dict[str, Any]] = Field(default_factory=list, description=MODEL_PARAMETERS_HELP)
    dtype: FloatDtype | None = Field(None, description="mergekit's dtype: the inputs are loaded and the math runs in "
                                     "it (unless compute_dtype); the output is in it unless out_dtype")
    out_dtype: FloatDtype | None = Field(None, description="output dtype [default: dtype, else the inputs' dtype]")
    compute_dtype: FloatDtype | None = Field(None, description="precision of the math, on the inputs as loaded (e.g. "
                                             "float32 with dtype: bfloat16) [default: dtype, else float32]")
    seed: int = Field(0, description="seed for random methods (DARE)")
    mismatched_shapes: Literal["error", "base"] = Field("error", description="error, or 'base' to keep the base's tensor")
    copy_unmatched: bool = Field(False, description="tensors not in every input: an error, or (true) merged over the "
                                 "inputs that have them, copied from the base when only it has them")
    max_shard_size: str = Field("5GB", min_length=1, description="output shard size")
    tokenizer: TokenizerSettings | None = Field(None, description="mergekit's tokenizer_source / tokenizer: the "
                                                "output vocabulary, and how each model's token rows fill it")
    chat_template: ChatTemplate | None = Field(None, description="a built-in template name, auto, or a Jinja template, "
                                               "written into the output's tokenizer_config.json")


_BY_METHOD: dict[str, type[MergeParams]] = {}


def params_for(method: MergeMethod) -> type[MergeParams]:
    """MergeParams whose settings are checked against `method`'s parameter types (one class
    per method, so `isinstance` holds for params validated before)."""
    if method.name not in _BY_METHOD:
        _BY_METHOD[method.name] = _build(method)
    return _BY_METHOD[method.name]


def _build(method: MergeMethod) -> type[MergeParams]:
    from .settings import setting_schema, settings_check

    check = settings_check(method)
    leaf = {n: setting_schema(TypeAdapter(t).json_schema()) for n, t in check.types.items()}
    shared_schema = {"type": "object", "properties": leaf, "additionalProperties": False}
    model_schema = {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                               "properties": {n: leaf[n] for n in method.model_params}}}
    camel = "".join(part.title() for part in method.name.split("_"))
    return create_model(
        f"{camel}MergeParams", __base__=MergeParams, __module__=__name__,
        parameters=(Annotated[dict[str, Any], AfterValidator(check.shared), WithJsonSchema(shared_schema)],
                    Field(default_factory=dict, description=PARAMETERS_HELP)),
        model_parameters=(Annotated[list[dict[str, Any]], AfterValidator(check.per_model), WithJsonSchema(model_schema)],
                          Field(default_factory=list, description=MODEL_PARAMETERS_HELP)),
    )
