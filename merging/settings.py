"""Parameter settings as mergekit writes them, resolved per tensor.

A setting is a scalar; a list of numbers (a gradient, interpolated over the layer stack:
layer i of N sits at t = i/(N-1), tensors outside the layer stack at t = 0); a list of
non-numbers (picked by t); or `{value, filter}` conditions (a list of them), where the first
whose filter is a substring of the tensor name (or is missing or '*') applies.
"""
from __future__ import annotations

from typing import Any

from zoo.errors import ZooError
from zoo.families import Family, layer_index


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
    out = {}
    for key, default in defaults.items():
        value = evaluate(settings[key], tensor_name, t) if key in settings else None
        if value is None:
            value = default
        if value is REQUIRED:
            raise ZooError(f"{where}: parameter {key!r} is required for tensor {tensor_name}")
        out[key] = value
    return out


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
