"""Model cards (README.md with YAML front matter) that carry a model's provenance, in the
form the Hugging Face Hub reads (`base_model`, `base_model_relation`, tags)."""
from __future__ import annotations

import json
from typing import Sequence

import yaml


def hub_id(location: str, fallback: str) -> str:
    """`hub:org/name@rev` -> `org/name`; anything else -> the catalog name."""
    if location.startswith("hub:"):
        return location[4:].split("@", 1)[0]
    return fallback


def default_relation(relation: str | None, n_parents: int) -> str | None:
    """The Hub's base_model_relation of an operator's output: the operator's own, else
    `finetune` for a model made from one model (an expansion, an export) and `merge` for
    one made from several; none for a model made from nothing."""
    return relation or ("finetune" if n_parents == 1 else "merge" if n_parents > 1 else None)


def model_card(name: str, operator: str, params: dict, parents: Sequence[dict], relation: str | None,
               library: str | None = "transformers", summary: str = "") -> str:
    """`parents`: [{ref, name, location, digest, role, weight}] as recorded for the run.
    `base_model` lists a parent's Hub id when it came from the Hub (`hub:` location), else
    its catalog name, and the card says which are catalog names."""
    front: dict = {}
    relation = default_relation(relation, len(parents))
    local = [p["name"] for p in parents if not str(p.get("location") or "").startswith("hub:")]
    if parents:
        front["base_model"] = [hub_id(p.get("location") or "", p["name"]) for p in parents]
    if relation:
        front["base_model_relation"] = relation
    if library:
        front["library_name"] = library
    front["tags"] = ["weightzoo", operator, *([relation] if relation else [])]
    recipe = {
        "operator": operator,
        "params": params,
        "inputs": [{k: p.get(k) for k in ("ref", "digest", "role", "weight")} for p in parents],
    }
    front["weightzoo"] = recipe
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", ""]
    lines.append(summary or f"Made with weightzoo's `{operator}` operator.")
    if local:
        lines += ["", "`base_model` names Hub models by their Hub id; these inputs did not come from the Hub and are "
                  "named as in the weightzoo catalog they were made in: " + ", ".join(f"`{n}`" for n in dict.fromkeys(local))
                  + "."]
    if parents:
        lines += ["", "## Inputs", ""]
        lines += [f"- `{p['ref']}` ({p.get('role')}"
                  + (f", weight {p['weight']:g}" if p.get("weight") is not None else "") + ")" for p in parents]
    lines += ["", "## Recipe", "", "```json", json.dumps(recipe, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def front_matter(text: str) -> dict:
    """A card's YAML front matter as a mapping; {} when absent, not YAML, or over the
    input limits (cards come from the Hub: an alias bomb there must not hang a pull)."""
    from .errors import ZooError
    from .yaml_input import load_text

    if not text.startswith("---"):
        return {}
    try:
        front = load_text(text.split("---", 2)[1], "model card")
    except ZooError:
        return {}
    return front if isinstance(front, dict) else {}


def read_card_recipe(text: str) -> dict | None:
    """The `weightzoo` recipe from a card's front matter, if present."""
    recipe = front_matter(text).get("weightzoo")
    return recipe if isinstance(recipe, dict) else None
