"""Parameter settings as mergekit writes them, resolved per tensor.

A setting is a scalar; a list of numbers (a gradient, interpolated over the layer stack:
layer i of N sits at t = i/(N-1), tensors outside the layer stack at t = 0); a list of
non-numbers (picked by t); or `{value, filter}` conditions (a list of them), where the first
whose filter is a substring of the tensor name (or is missing or '*') applies.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import StrictBool, TypeAdapter, ValidationError

from zoo.errors import ZooError
from zoo.families import Family, layer_index
from zoo.param_types import constraints, custom, describe, number, show

# --- what each setting may be: every method's parameters have a type with its range -------
SCALE_BOUND = 10**6  # |weight|, |lambda|: far beyond any useful merge, well short of overflow
Weight = number(ge=-SCALE_BOUND, le=SCALE_BOUND)
Density = number(gt=0, le=1)  # the fraction of a task vector kept
UnitInterval = number(ge=0, le=1)
Fraction = number(ge=0, lt=1)
NonNegative = number(ge=0)
Rescale = Literal["inverse", "l1", "none"] | StrictBool

# the parameters several methods share; a method declares its own in MergeMethod.types
COMMON_TYPES: dict[str, Any] = {"weight": Weight, "density": Density, "lambda": Weight, "normalize": StrictBool}


def layer_position(tensor_name: str, num_layers: int, family: Family | None = None) -> float:
    """mergekit's t for a tensor: i/(N-1) inside the layer stack, 0 outside it (the layer
    by the family's naming, or the generic one for architectures without a family)."""
    i = layer_index(tensor_name, family)
    if i is None:
        return 0.0
    return i / (num_layers - 1) if num_layers > 1 else 1.0


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def evaluate(setting: Any, tensor_name: str, t: float) -> Any:
    """The value of one setting for one tensor (None when no condition matches)."""
    if isinstance(setting, dict):
        setting = [setting]
    if setting is None or isinstance(setting, (bool, int, float, str)):
        return setting
    if not isinstance(setting, list):
        raise ZooError(f"cannot read parameter setting {setting!r}")
    if not setting:
        return None
    if all(not isinstance(e, (dict, list)) for e in setting):
        if not all(_is_number(e) for e in setting):
            return setting[int(t * (len(setting) - 1))]
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    for cond in setting:
        if not isinstance(cond, dict) or "value" not in cond:
            raise ZooError(f"cannot read parameter condition {cond!r} (expected {{value, filter}})")
        flt = cond.get("filter")
        if flt is None or flt == "*" or flt in tensor_name:
            return evaluate(cond["value"], tensor_name, t)
    return None


def resolve(settings: dict[str, Any], defaults: dict[str, Any], tensor_name: str, t: float,
            where: str) -> dict[str, Any]:
    """All of a method's parameters for one tensor: settings over defaults; a parameter
    with no default and no value is an error naming it."""
    return resolve_scoped([settings], defaults, tensor_name, t, where)


def resolve_scoped(scopes: list[dict], defaults: dict[str, Any], tensor_name: str, t: float, where: str) -> dict:
    """mergekit's parameter resolution: the first scope holding the setting whose value
    resolves for this tensor (filters, gradients) wins; else the method's default."""
    out = {}
    for key, default in defaults.items():
        value = None
        for scope in scopes:
            if scope and key in scope:
                value = evaluate(scope[key], tensor_name, t)
                if value is not None:
                    break
        if value is None:
            value = default
        if value is REQUIRED:
            raise ZooError(f"{where}: parameter {key!r} is required for tensor {tensor_name}")
        out[key] = value
    return out


def setting_types(method: Any) -> dict[str, Any]:
    """Each parameter of a merge method -> its type (the method's own over the common ones)."""
    known = {**COMMON_TYPES, **method.types}
    names = [*method.shared_params, *method.model_params]
    untyped = [n for n in names if n not in known]
    if untyped:  # a method module's mistake, not a user's
        raise ValueError(f"merge method {method.name}: no type for parameter(s) {', '.join(untyped)} (MergeMethod.types)")
    return {n: known[n] for n in names}


class SettingsCheck:
    """Validates a merge's settings for every value they can take (scalars, gradient items,
    condition values) before any work, and returns them with numbers as numbers; a refusal
    is one line naming the parameter, where it sits, the value and the allowed range."""

    def __init__(self, method: Any):
        self.method = method.name
        self.types = setting_types(method)
        self.model_names = set(method.model_params)
        self._adapters = {n: TypeAdapter(t) for n, t in self.types.items()}

    def shared(self, values: dict[str, Any]) -> dict[str, Any]:
        return self._mapping(values, set(self.types), "", "parameter")

    def per_model(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, values in enumerate(items):
            if not isinstance(values, dict):
                raise custom(f"parameters of model {i + 1} must be a mapping (e.g. {{weight: 0.5}}), not {show(values)}")
            out.append(self._mapping(values, self.model_names, f" (model {i + 1})", "per-model parameter"))
        return out

    def _mapping(self, values: dict[str, Any], allowed: set[str], where: str, what: str) -> dict[str, Any]:
        for key in values:
            if key not in allowed:
                raise custom(f"unknown {what} {show(key)}{where} (known: {', '.join(sorted(allowed)) or 'none'})")
        return {key: self._setting(key, value, where) for key, value in values.items()}

    def _setting(self, name: str, setting: Any, where: str) -> Any:
        if setting is None:
            return None
        if isinstance(setting, dict):
            return self._condition(name, setting, where)
        if isinstance(setting, list):
            if all(not isinstance(e, (dict, list)) for e in setting):
                return [self._leaf(name, e, _join(where, f"gradient item {i + 1}")) for i, e in enumerate(setting)]
            return [self._condition(name, c, _join(where, f"condition {i + 1}")) for i, c in enumerate(setting)]
        return self._leaf(name, setting, where)

    def _condition(self, name: str, cond: Any, where: str) -> dict[str, Any]:
        if not isinstance(cond, dict) or "value" not in cond or set(cond) - {"value", "filter"}:
            raise custom(f"parameter {name!r}{where}: {show(cond)} is not a setting (a number, a list of numbers, "
                         "or {value, filter} conditions)")
        flt = cond.get("filter")
        if flt is not None and not isinstance(flt, str):
            raise custom(f"parameter {name!r}{where}: filter {show(flt)} must be text (part of a tensor name, or *)")
        value = cond["value"]
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(e, (dict, list)) for e in value)):
            raise custom(f"parameter {name!r}{where}: a condition's value is a number or a list of numbers, "
                         f"not {show(value)}")
        return {**cond, "value": self._setting(name, value, _join(where, f"filter {flt!r}") if flt else where)}

    def _leaf(self, name: str, value: Any, where: str) -> Any:
        try:
            return self._adapters[name].validate_python(value)
        except ValidationError as e:
            raise custom(describe(e.errors()[0], name, constraints(self.types[name]), where)) from None


_CHECKS: dict[str, SettingsCheck] = {}


def settings_check(method: Any) -> SettingsCheck:
    """The (cached) check of one method's settings."""
    if method.name not in _CHECKS:
        _CHECKS[method.name] = SettingsCheck(method)
    return _CHECKS[method.name]


def _join(where: str, part: str) -> str:
    """' (model 2)' + 'gradient item 3' -> ' (model 2, gradient item 3)'."""
    return f"{where[:-1]}, {part})" if where else f" ({part})"


def setting_schema(leaf: dict) -> dict:
    """JSON schema of one setting whose values follow `leaf`: a value, a gradient, or conditions."""
    cond = {"type": "object", "required": ["value"], "additionalProperties": False,
            "properties": {"filter": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                           "value": {"anyOf": [leaf, {"type": "array", "items": leaf}]}}}
    return {"anyOf": [leaf, {"type": "array", "items": leaf}, cond, {"type": "array", "items": cond}]}


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
