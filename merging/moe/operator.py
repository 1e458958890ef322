"""The operator `merge.moe` (mergekit-moe): a Mixtral from a base and dense experts, written
tensor by tensor, and `build_moe`, which turns a mergekit-moe config into a run.

The run's inputs are the base (role `base`) and each distinct expert model (role `expert`,
also when it is the base itself); its params are the whole config, prompts included, with
each expert naming its model by position, so the same config on the same models reuses the
recorded result."""
from __future__ import annotations

import sys
from typing import Any, Sequence

import yaml

from zoo.card import hub_id
from zoo.checkpoint import WEIGHT_INDEXES
from zoo.errors import ZooError
from zoo.registry import InputSpec, Operator, register
from zoo.runner import OperatorCall, OperatorOutput, RunResult

from .layout import RESIDUAL, check_models, mixtral_config, output_dtype, plan
from .params import MoeParams
from .router import degenerate_layers, gate_vectors, passes

OPERATOR = "merge.moe"
CONFIG_FILE = "mergekit_moe_config.yml"  # as mergekit-moe names it
_NOT_SIDE_FILES = WEIGHT_INDEXES | {"config.json", "README.md", "mergekit_config.yml", CONFIG_FILE}


def run_moe(call: OperatorCall) -> OperatorOutput:
    import torch

    from zoo.devices import resolve_device

    p: MoeParams = call.params
    roles = [parent.role for parent, _ in call.inputs]
    for i, e in enumerate(p.experts):
        if e.input >= len(roles) or roles[e.input] != "expert":
            raise ZooError(f"{OPERATOR}: experts[{i}] names input {e.input}, which is not an input with role 'expert'")
    b = roles.index("base")
    base = call.checkpoint(b)
    experts = [call.checkpoint(e.input) for e in p.experts]
    labels = [f"the base ({call.inputs[b][1].ref})"] + [f"expert {i} ({call.inputs[e.input][1].ref})"
                                                        for i, e in enumerate(p.experts)]
    layers = check_models(base, experts, labels)
    out_dtype = output_dtype(p.dtype, base.config or {})
    generator = torch.Generator().manual_seed(p.seed)  # random gates first, then expert noise: mergekit's order
    router_dtype = "bfloat16" if p.gate_mode.startswith("hidden") else "float32"
    tensors = plan(base, experts, layers, out_dtype, router_dtype)
    config = mixtral_config(base, len(experts), p.experts_per_token, out_dtype)
    progress = call.progress
    if progress is not None and hasattr(progress, "set_total"):
        progress.set_total(passes(p.gate_mode, p.experts) + len(tensors))
    device = resolve_device(call.options.get("device", "cpu"))
    gates = gate_vectors(p.gate_mode, base, p.experts, generator, device=device, label=labels[0], progress=progress)
    side = {rel: base.root / rel for rel in base.side_files if rel not in _NOT_SIDE_FILES}
    writer = call.writer([t.spec for t in tensors], config=config, side_files=side, max_shard_size=p.max_shard_size,
                         extra_files={CONFIG_FILE: moe_yaml(call)})
    with writer:
        for t in tensors:
            if t.layer is not None:
                value = gates[t.layer]
            else:
                ck, name = t.source
                value = ck.get(name)
                if t.expert is not None:
                    value = _noised(value, p.experts[t.expert], t.proj == RESIDUAL, generator)
            writer.write(t.spec.name, value)
            if progress is not None:
                progress(1)
    notes: dict[str, Any] = {"experts": len(experts), "layers": layers, "gate_mode": p.gate_mode}
    weak = degenerate_layers(gates) if len(experts) > 1 else []
    if weak:
        notes["degenerate_router_layers"] = weak
        print(f"warning: {OPERATOR}: the router rows of layer(s) {', '.join(map(str, weak))} are nearly dependent "
              "(your prompts may be too similar): some experts will rarely be chosen there", file=sys.stderr)
    return OperatorOutput(writer.result, notes={"moe": notes})


def _noised(value, expert, residual: bool, generator):
    """mergekit's `noise_and_scale`: N(0, noise_scale^2) added (drawn in the tensor's dtype),
    then the down projection scaled by residual_scale."""
    import torch

    if expert.noise_scale is not None:
        value = value + torch.randn(value.shape, dtype=value.dtype, generator=generator) * expert.noise_scale
    if residual and expert.residual_scale is not None:
        value = value * expert.residual_scale
    return value


def moe_yaml(call: OperatorCall) -> str:
    """The run as mergekit-moe YAML (models named as `zoo moe` finds them again)."""
    params = call.params.model_dump(mode="json")
    names = [hub_id(e.location or "", e.ref) for _, e in call.inputs]
    base = names[[parent.role for parent, _ in call.inputs].index("base")]
    doc: dict[str, Any] = {"base_model": base, "gate_mode": params["gate_mode"]}
    if params.get("dtype"):
        doc["dtype"] = params["dtype"]
    doc["experts_per_token"] = params["experts_per_token"]
    doc["experts"] = []
    for e in params["experts"]:
        item: dict[str, Any] = {"source_model": names[e["input"]]}
        for key in ("positive_prompts", "negative_prompts", "noise_scale", "residual_scale"):
            if e.get(key):
                item[key] = e[key]
        doc["experts"].append(item)
    head = ("# The mixture of experts as a mergekit-moe YAML (written by weightzoo): models are catalog refs\n"
            f"# (name@version) or Hub ids; `zoo moe` runs it again (seed {params['seed']}: mergekit-moe's "
            "--random-seed).\n")
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


OPERATOR_DEF = Operator(
    OPERATOR, "1", MoeParams, run_moe,
    "mergekit-moe: a Mixtral-style mixture of experts from dense Llama/Mistral experts sharing a base "
    "(routers from prompts' hidden states, token embeddings, or random)", relation="merge",
    inputs=(InputSpec("base"), InputSpec("expert", 1, None)), default_role="expert",
)
register(OPERATOR_DEF)


def build_moe(catalog, cfg, *, seed: int = 0, allow_all_same: bool = False, out: str | None = None,
              tags: Sequence[str] = (), reuse: bool = True, device: str = "cpu", progress=None,
              max_shard_size: str | None = None) -> RunResult:
    """Run `merge.moe` on a `config.MoeConfig`: the base first (role `base`), then each
    distinct expert model (role `expert`), the experts naming theirs by position."""
    from zoo.catalog import Parent
    from zoo.runner import run_operator

    from ..api import resolve_input
    from ..lora import split_ref

    parents: list[Parent] = []

    def position(ref: str, role: str, where: str) -> int:
        if split_ref(catalog, ref)[1] is not None:
            raise ZooError(f"{where}: {ref!r} applies a LoRA adapter, which zoo moe does not do: merge it first "
                           "(zoo merge --method linear --model MODEL+ADAPTER) and name the result")
        rid = resolve_input(catalog, ref)
        for i, parent in enumerate(parents):
            if parent.ref == rid and parent.role == role:
                return i
        parents.append(Parent(rid, role))
        return len(parents) - 1

    position(cfg.base, "base", "base_model")
    experts = [{"input": position(e.ref, "expert", f"experts[{i}].source_model"),
                "positive_prompts": e.positive_prompts, "negative_prompts": e.negative_prompts,
                "noise_scale": e.noise_scale, "residual_scale": e.residual_scale}
               for i, e in enumerate(cfg.experts)]
    params = {"experts": experts, "gate_mode": cfg.gate_mode, "experts_per_token": cfg.experts_per_token,
              "dtype": cfg.dtype, "seed": seed, "allow_all_same": allow_all_same,
              **({"max_shard_size": max_shard_size} if max_shard_size else {})}
    return run_operator(catalog, OPERATOR, parents, params, out, tags=tags, reuse=reuse, progress=progress,
                        options={"device": device})


__all__ = ["OPERATOR", "OPERATOR_DEF", "build_moe", "run_moe"]
