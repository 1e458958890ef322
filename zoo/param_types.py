"""What every operator's params share: numbers are finite and never booleans, ranges are
declared on the fields (so they appear in `model_json_schema()`), and a refused value
becomes one line naming the parameter, the value and what is allowed.

Numbers written as strings (`1e-3` is a string to YAML 1.1, so to `--set` and pipeline
files) are still read as numbers: refusing them would refuse ordinary YAML.
"""
from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Sequence, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

CUSTOM = "parameter"  # the error type whose message is already one whole line


def _arms(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (Optional included), or the annotation itself."""
    if get_origin(annotation) is Annotated:
        return _arms(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for arm in get_args(annotation) for a in _arms(arm))
    return (annotation,)


def _admits_bool(annotation: Any) -> bool:
    return any(a in (bool, Any, object) or (get_origin(a) is Literal and any(isinstance(v, bool) for v in get_args(a)))
               for a in _arms(annotation))


def _wants_number(annotation: Any) -> bool:
    return any(a in (int, float) for a in _arms(annotation))


def bool_for_number(value: Any, annotation: Any) -> bool:
    """True when `value` holds a boolean where `annotation` wants a number (lists looked into)."""
    if isinstance(value, bool):
        return _wants_number(annotation) and not _admits_bool(annotation)
    if isinstance(value, (list, tuple)):
        for arm in _arms(annotation):
            if get_origin(arm) in (list, tuple, Sequence) and get_args(arm):
                item = get_args(arm)[0]
                return any(bool_for_number(v, item) for v in value)
    return False


def refuse_bool(value: Any) -> Any:
    """A BeforeValidator for a number: pydantic would read true as 1."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_for_number", "a boolean is not a number")
    return value


def number(**bounds: float) -> Any:
    """A finite number, never a boolean, within `bounds` (gt=, ge=, lt=, le=). The bounds
    sit on the float itself, so they appear in the JSON schema as minimum/maximum."""
    return Annotated[float, Field(allow_inf_nan=False, **bounds), BeforeValidator(refuse_bool)]


Number = number()
NonEmpty = Annotated[str, Field(min_length=1)]


class CheckedParams(BaseModel):
    """Floats must be finite and no field that wants a number takes a boolean."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and bool_for_number(value, field.annotation):
            raise PydanticCustomError("bool_for_number", "a boolean is not a number")
        return value


# --- one line per refused value ------------------------------------------------------------
def constraints(annotation: Any, metadata: Sequence[Any] = ()) -> list[Any]:
    """The annotated-types constraints (Gt, Ge, Lt, Le, MinLen, ...) of a type, flattened."""
    out: list[Any] = []
    for m in metadata:
        out.extend(constraints(Any, getattr(m, "metadata", ())) if hasattr(m, "metadata") else [m])
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        out.extend(constraints(inner, extra))
    return out


def allowed_range(cons: Sequence[Any]) -> str:
    """'> 0 and <= 1' for the numeric bounds among `cons` ('' if none)."""
    ops = ((Gt, ">", "gt"), (Ge, ">=", "ge"), (Lt, "<", "lt"), (Le, "<=", "le"))
    return " and ".join(f"{op} {getattr(c, attr)}" for c in cons for kind, op, attr in ops if isinstance(c, kind))


def show(value: Any) -> str:
    """A value as the user wrote it, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_constraints(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[Any]:
    """Constraints of the field (or list item) an error's location points at."""
    if model is None or not loc or loc[0] not in model.model_fields:
        return []
    field = model.model_fields[loc[0]]
    if len(loc) == 1:
        return constraints(field.annotation, field.metadata)
    if isinstance(loc[1], int):
        for arm in _arms(field.annotation):
            if get_origin(arm) in (list, tuple, Sequence) and get_args(arm):
                return constraints(get_args(arm)[0])
    return []


def describe(err: dict, name: str, cons: Sequence[Any] = (), context: str = "") -> str:
    """One pydantic error about parameter `name` -> 'parameter NAME = VALUE is ...'."""
    kind, value = err["type"], err.get("input")
    if kind == CUSTOM:
        return err["msg"]
    subject = f"parameter {name!r}{context}"
    if kind == "missing":
        return f"{subject} is required"
    rng = allowed_range(cons)
    head = f"{subject} = {show(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{head} is out of range: must be {rng or _ctx_range(err)}"
    if kind == "finite_number":
        return f"{head} is not a finite number" + (f" (must be {rng})" if rng else "")
    if kind == "bool_for_number":
        return f"{head} is a boolean, not a number" + (f" (must be {rng})" if rng else "")
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_from_float"):
        whole = kind.startswith("int")
        return f"{head} is not {'a whole number' if whole else 'a number'}" + (f" (must be {rng})" if rng else "")
    if kind == "string_too_short" and not value:
        return f"{head} is not allowed: give a non-empty value"
    return f"{head} is not allowed: {err['msg'][0].lower()}{err['msg'][1:]}"


def _ctx_range(err: dict) -> str:
    ctx = err.get("ctx") or {}
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{ops[k]} {v}" for k, v in ctx.items() if k in ops)


def explain(err: dict, model: type[BaseModel] | None = None) -> str:
    """One error of a params model's validation as one line (no operator name)."""
    loc = err.get("loc") or ()
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
    return describe(err, where or "params", _field_constraints(model, loc))


def custom(text: str) -> PydanticCustomError:
    """An error whose message is already the whole line (`explain` passes it through)."""
    return PydanticCustomError(CUSTOM, "{text}", {"text": text})


__all__ = ["CUSTOM", "CheckedParams", "NonEmpty", "Number", "allowed_range", "number",
           "bool_for_number", "constraints", "custom", "describe", "explain", "refuse_bool", "show"]
