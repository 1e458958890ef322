"""`merge.extract_lora`: a LoRA adapter from a fine-tune and its base, by truncated SVD of
each weight's delta (as mergekit-extract-lora does), written as a PEFT adapter folder
(adapter_config.json + adapter_model.safetensors) that `PeftModel.from_pretrained` loads.

Per tensor of the fine-tune, as mergekit decides per module:
- a 2-D linear weight: delta = FT - BASE = U S Vh; keep the top `rank` singular values
  (fewer when `sv_epsilon` drops small ones); A = sqrt(S) Vh, B = U sqrt(S) (or A = S Vh,
  B = U without `distribute_scale`); alpha = rank, so PEFT's scaling is 1 and B @ A is the
  truncated delta, off by exactly the discarded singular values (||delta - B A||_F^2 = their
  sum of squares);
- token embeddings and the output head: saved whole (PEFT's modules_to_save), or with
  `embed_lora` decomposed too (an embedding as lora_embedding_A/B, of the transposed delta);
- other weights (norms: no low-rank form): saved whole, or left out with `skip_undecomposable`;
- a decomposed module's bias: its delta as lora_B.bias (PEFT's lora_bias);
- `modules_to_save` names (or last name parts) are saved whole; `include`/`exclude` regexes
  choose the modules to decompose.
Streaming: one tensor (and its SVD) in memory at a time."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pydantic import Field

from zoo.errors import MismatchError, ZooError
from zoo.families import detect
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput
from zoo.writer import TensorSpec

from .lora import PREFIX

VERSION = "1"


class ExtractLoraParams(OperatorParams):
    rank: int = Field(128, ge=1, le=1_000_000, description="maximum rank per module (mergekit's --max-rank)")
    distribute_scale: bool = Field(True, description="sqrt(S) into both A and B (else S into A)")
    embed_lora: bool = Field(False, description="decompose embeddings and the head too (else saved whole)")
    modules_to_save: list[str] = Field(default_factory=list, description="modules saved whole (names or last parts)")
    include: list[str] = Field(default_factory=list, description="regexes: only modules matching one are decomposed")
    exclude: list[str] = Field(default_factory=list, description="regexes: modules matching one are not decomposed")
    sv_epsilon: float = Field(0.0, ge=0, description="singular values at or below this are dropped too")
    skip_undecomposable: bool = Field(False, description="leave out weights with no low-rank form (else saved whole)")


@dataclass
class Plan:
    """What goes into the adapter: per fine-tune tensor, its fate."""

    lora: dict[str, bool] = field(default_factory=dict)  # weight -> transposed (an embedding)
    full: list[str] = field(default_factory=list)  # tensors saved whole
    bias: list[str] = field(default_factory=list)  # biases of decomposed modules: their delta as lora_B.bias
    save_keys: list[str] = field(default_factory=list)  # modules_to_save, as mergekit lists them
    skipped: list[str] = field(default_factory=list)


def plan(base, ft, p: ExtractLoraParams) -> Plan:
    """Decide every tensor's fate before any math (mismatches fail here)."""
    try:
        inc, exc = [re.compile(r) for r in p.include], [re.compile(r) for r in p.exclude]
    except re.error as e:
        raise ZooError(f"merge.extract_lora: bad include/exclude regex ({e})") from None
    fam = detect(ft.config, ft.names())
    if fam is not None and fam.linear_in_out:
        raise ZooError(f"merge.extract_lora: {fam.name} stores its linear weights [in, out] (Conv1D); extraction "
                       "supports [out, in] linear weights (Llama, Mistral, BERT, ViT, ...)")
    heads = set(fam.tied_head_names) if fam is not None else {"lm_head.weight"}
    out, keys = Plan(), list(p.modules_to_save)
    names = ft.names()
    for name in names:
        if name not in base.tensors:
            raise MismatchError(f"tensor {name} is in the fine-tune but not in the base: extract from a fine-tune of "
                                "that base")
        info = ft.info(name)
        if not info.is_float or not name.endswith(".weight"):
            continue
        module = name[: -len(".weight")]
        key = module.split(".")[-1]
        embedding = (fam.is_token_embedding(name) if fam is not None else False) or "embed" in key
        resized = base.info(name).shape != info.shape
        if resized and not (embedding or name in heads):
            raise MismatchError(f"tensor {name} has shape {list(info.shape)} in the fine-tune but "
                                f"{list(base.info(name).shape)} in the base: extract from a fine-tune of that base")
        if (embedding or name in heads) and (resized or not p.embed_lora) and not any(r.search(module) for r in exc):
            keys.append(key) if key not in keys else None  # mergekit: embeddings saved whole unless embed_lora
        if module in keys or key in keys:
            out.full.append(name)
        elif (inc and not any(r.search(module) for r in inc)) or any(r.search(module) for r in exc):
            out.skipped.append(name)
        elif len(info.shape) == 2:
            out.lora[name] = embedding
        elif p.skip_undecomposable:
            out.skipped.append(name)
        else:
            keys.append(key) if key not in keys else None
            out.full.append(name)
    decomposed = {n[: -len(".weight")] for n in out.lora}
    saved = {n[: -len(".weight")] for n in out.full}
    for name in names:
        if not ft.info(name).is_float or name.endswith(".weight"):
            continue
        module = name.rsplit(".", 1)[0]
        if name.endswith(".bias") and module in saved:
            out.full.append(name)
        elif name.endswith(".bias") and module in decomposed and not out.lora[f"{module}.weight"]:
            out.bias.append(name)
        else:
            out.skipped.append(name)  # not a module weight PEFT restores (buffers, bare parameters)
    if out.bias and len(out.bias) != len(decomposed):
        raise ZooError("merge.extract_lora: some decomposed modules have a bias and some do not (PEFT's lora_bias is "
                       "all or none); save the modules with a bias whole with modules_to_save")
    out.save_keys = keys
    if not out.lora:
        raise ZooError("merge.extract_lora: no module to decompose (include/exclude/modules_to_save left none)")
    return out


def decompose(delta, rank: int, distribute_scale: bool = True, sv_epsilon: float = 0.0):
    """(A, B) of the rank-`rank` truncated SVD of a 2-D delta (float32 math, as mergekit),
    with B @ A the truncation; fewer columns where singular values are <= sv_epsilon."""
    import torch

    u, s, vh = torch.linalg.svd(delta.to(torch.float32), full_matrices=False)
    keep = min(rank, s.shape[0])
    if sv_epsilon > 0:
        keep = max(1, min(int((s > sv_epsilon).sum()), keep))
    if distribute_scale:
        root = torch.sqrt(s[:keep])
        return root[:, None] * vh[:keep], u[:, :keep] * root[None, :]
    return s[:keep, None] * vh[:keep], u[:, :keep].clone()


def kept_rank(delta, rank: int, sv_epsilon: float) -> int:
    """The rank `decompose` keeps, from the singular values alone."""
    import torch

    keep = min(rank, min(delta.shape))
    if sv_epsilon > 0:
        s = torch.linalg.svdvals(delta.to(torch.float32))
        keep = max(1, min(int((s > sv_epsilon).sum()), keep))
    return keep


def _extract(call: OperatorCall) -> OperatorOutput:
    import torch

    p: ExtractLoraParams = call.params
    roles = [parent.role for parent, _ in call.inputs]
    base, ft = call.checkpoint(roles.index("base")), call.checkpoint(roles.index("source"))
    base_entry = call.inputs[roles.index("base")][1]
    for ck, what in ((base, "base"), (ft, "fine-tune")):
        if ck.adapter_config is not None:
            raise ZooError(f"merge.extract_lora: the {what} is a LoRA adapter; give a full model")
    pl = plan(base, ft, p)

    def delta(name):
        d = ft.get(name).to(torch.float32) - base.get(name).to(torch.float32)
        return d.T if pl.lora[name] else d

    ranks = {n: kept_rank(delta(n), p.rank, p.sv_epsilon) for n in pl.lora} if p.sv_epsilon > 0 else \
        {n: min(p.rank, *ft.info(n).shape) for n in pl.lora}
    specs: list[TensorSpec] = []
    for name in ft.names():
        info = ft.info(name)
        module = name.rsplit(".", 1)[0]
        if name in pl.lora:
            (rows, cols), kind = ((info.shape[1], info.shape[0]) if pl.lora[name] else info.shape), \
                ("lora_embedding" if pl.lora[name] else "lora")
            tail = "" if pl.lora[name] else ".weight"
            specs += [TensorSpec(f"{PREFIX}{module}.{kind}_A{tail}", (ranks[name], cols), info.dtype),
                      TensorSpec(f"{PREFIX}{module}.{kind}_B{tail}", (rows, ranks[name]), info.dtype)]
        elif name in pl.bias:
            specs.append(TensorSpec(f"{PREFIX}{module}.lora_B.bias", info.shape, info.dtype))
        elif name in pl.full:
            specs.append(TensorSpec(f"{PREFIX}{name}", info.shape, info.dtype))
    top = max(ranks.values())
    module_ranks = {n[: -len(".weight")]: r for n, r in ranks.items()}
    odd = {m: r for m, r in module_ranks.items() if r != top}
    config = {
        "base_model_name_or_path": _base_name(base_entry), "peft_type": "LORA", "task_type": _task_type(ft.config),
        "r": top, "lora_alpha": top, "rank_pattern": odd, "alpha_pattern": odd, "use_rslora": False,
        "target_modules": sorted({m.split(".")[-1] for m in module_ranks}), "modules_to_save": pl.save_keys or None,
        "lora_dropout": 0.0, "fan_in_fan_out": False, "inference_mode": True, "bias": "none",
        "lora_bias": bool(pl.bias), "init_lora_weights": True,
    }
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(len(specs))
    target = call.output()
    target.library = "peft"  # the card's library_name: PEFT loads it, on top of its base
    with target.writer(specs, stem="adapter_model", max_shard_size="1000TB",
                     extra_files={"adapter_config.json": json.dumps(config, indent=2, sort_keys=True) + "\n"}) as w:
        for name in ft.names():
            module = name.rsplit(".", 1)[0]
            if name in pl.lora:
                a, b = decompose(delta(name), ranks[name], p.distribute_scale, 0.0)
                kind, tail = ("lora_embedding", "") if pl.lora[name] else ("lora", ".weight")
                w.write(f"{PREFIX}{module}.{kind}_A{tail}", a)
                w.write(f"{PREFIX}{module}.{kind}_B{tail}", b)
            elif name in pl.bias:
                w.write(f"{PREFIX}{module}.lora_B.bias", ft.get(name).to(torch.float32) - base.get(name).to(torch.float32))
            elif name in pl.full:
                w.write(f"{PREFIX}{name}", ft.get(name))
            else:
                continue
            if call.progress is not None:
                call.progress(1)
    notes = {"lora_ranks": module_ranks, "saved_whole": pl.full}
    if pl.skipped:
        notes["left_out"] = pl.skipped
    return OperatorOutput(w.result, notes={"extract_lora": notes})


def _base_name(entry) -> str:
    """What the adapter names as its base: the Hub id for a pulled entry, else its catalog name."""
    loc = entry.location or ""
    return loc[4:].split("@", 1)[0] if loc.startswith("hub:") else entry.name


def _task_type(config: dict | None) -> str:
    arch = ((config or {}).get("architectures") or [""])[0]
    return "CAUSAL_LM" if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel") else "FEATURE_EXTRACTION"


register(Operator("merge.extract_lora", VERSION, ExtractLoraParams, _extract,
                  "LoRA adapter of a fine-tune: truncated SVD of each weight's delta from its base (PEFT format)",
                  relation="adapter", inputs=(InputSpec("base"), InputSpec("source")), default_role="source"))
