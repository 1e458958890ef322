"""`mergekit_config.yml` in every merge's output folder, as mergekit writes it: the merge
as a mergekit YAML document, made from the run's params and inputs (so it is the same
whether the merge came from a YAML file, flags or the Python API, and the same when
`zoo reproduce` replays it). Models are named as `zoo merge` finds them again: the Hub id
for an entry pulled from the Hub, else the catalog ref (name@version)."""
from __future__ import annotations

from typing import Any

import yaml

from zoo.card import hub_id

from .tokenizer.forms import to_yaml as tokenizer_yaml

FILE = "mergekit_config.yml"
_RUN_DEFAULTS = {"compute_dtype": None, "mismatched_shapes": "error", "copy_unmatched": False, "seed": 0}


def _name(entry) -> str:
    return hub_id(entry.location or "", entry.ref)


def _run_settings(params: dict) -> dict:
    """weightzoo's own run settings that differ from the defaults (read back from
    `parameters:` by `zoo merge`)."""
    return {k: params.get(k) for k, default in _RUN_DEFAULTS.items() if k in params and params.get(k) != default}


def mergekit_document(operator: str, params: dict, inputs: list[tuple[str, Any]]) -> dict:
    """`inputs`: (role, catalog entry) in the run's order; `params`: the run's params (JSON)."""
    names = [_name(e) for _, e in inputs]
    roles = [r for r, _ in inputs]
    doc: dict[str, Any] = {}
    if operator == "merge.slices":
        doc["merge_method"] = params["method"]
        if "base" in roles:
            doc["base_model"] = names[roles.index("base")]
        slices = []
        for s in params["slices"]:
            out: dict[str, Any] = {"sources": [
                {"model": names[src["input"]], "layer_range": list(src["layer_range"]),
                 **({"parameters": src["parameters"]} if src.get("parameters") else {})} for src in s["sources"]]}
            if s.get("base") is not None:
                out["base_model"] = names[s["base"]]
            if s.get("parameters"):
                out["parameters"] = s["parameters"]
            slices.append(out)
        doc["slices"] = slices
    else:
        doc["merge_method"] = operator.split(".", 1)[1]
        if "base" in roles:
            doc["base_model"] = names[roles.index("base")]
        models: list[dict] = []
        per_model = params.get("model_parameters") or []
        for role, name in zip(roles, names):
            if role == "base":
                continue
            if role == "adapter" and models:  # a LoRA adapter applies to the model listed before it
                models[-1]["model"] = f"{models[-1]['model']}+{name}"
                continue
            models.append({"model": name})
        for m, p in zip(models, per_model):
            if p:
                m["parameters"] = p
        doc["models"] = models
    parameters = {**(params.get("parameters") or {}), **_run_settings(params)}
    if parameters:
        doc["parameters"] = parameters
    for key in ("dtype", "out_dtype"):
        if params.get(key):
            doc[key] = params[key]
    if operator != "merge.slices":  # tokenizer settings name the models by position, the base first
        members = ([doc["base_model"]] if "base_model" in doc else []) + [m["model"] for m in doc["models"]]
        doc.update(tokenizer_yaml(params, members, "base_model" in doc))
    return doc


class _Dumper(yaml.SafeDumper):
    """Lists of numbers (layer ranges, gradients) in flow style, as mergekit writes them."""


def _list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list)


def mergekit_yaml(call) -> str:
    """The text of `mergekit_config.yml` for an operator call of `merge.*`."""
    params = call.params.model_dump(mode="json")
    doc = mergekit_document(call.operator.name, params, [(p.role, e) for p, e in call.inputs])
    head = ("# The merge as a mergekit YAML (written by weightzoo): models are catalog refs (name@version)\n"
            "# or Hub ids; `zoo merge` runs it again.\n")
    return head + yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


def extra_files(call) -> dict[str, str]:
    return {FILE: mergekit_yaml(call)}
