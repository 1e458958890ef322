"""SWS learngenes (Xia et al., IJCAI 2024, "Exploring Learngene via Stage-wise Weight
Sharing for Initializing Variable-sized Models").

An auxiliary ViT of S stages, whose layers inside a stage share one set of weights, is
distilled from a teacher. Its S shared layers (plus embeddings, final norm and head) are the
*learngene*: a small checkpoint from which ViTs of any depth are initialised by repeating
each stage's layer as often as wanted, with no further training of the gene.

- `learngene.sws`: teacher -> learngene (a standard ViT checkpoint with one layer per stage
  and `sws_stage_lengths` in its config, the stage lengths it was trained with).
- `learngene.expand`: learngene + depths per stage -> a standard ViT of depth sum(depths).
  Depths equal to the training stage lengths give exactly the auxiliary model's function.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch
from pydantic import Field

from zoo.catalog import Catalog, Parent
from zoo.checkpoint import WEIGHT_INDEXES, Checkpoint
from zoo.errors import ZooError
from zoo.families import Widths, family_of, get_family
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput, RunResult, run_operator
from zoo.tasks import get_task
from zoo.training import TrainParams, train_model, write_model
from zoo.writer import TensorSpec

from .distill import DistilledTask

ARCHITECTURE = "ViTForImageClassification"
STAGES_KEY = "sws_stage_lengths"  # config field that marks a learngene and records its training stages


class SWSParams(OperatorParams):
    task: str = Field(..., min_length=1, description="the task to distil on (digits, digits:0-4, ...)")
    stages: int = Field(3, ge=1, description="number of stages = layers in the learngene")
    stage_length: int = Field(2, ge=1, description="layers per stage while training the auxiliary model")
    hidden_size: int | None = Field(None, ge=1, description="auxiliary width [default: the teacher's]")
    num_heads: int | None = Field(None, ge=1, description="attention heads [default: keep the teacher's head size]")
    intermediate_size: int | None = Field(None, ge=1, description="MLP width [default: scaled with hidden]")
    steps: int = Field(200, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft KL to the teacher (1 - alpha: task loss)")
    temperature: float = Field(1.0, gt=0)
    seed: int = 0


class ExpandGeneParams(OperatorParams):
    depths: list[Annotated[int, Field(ge=1)]] = Field(..., min_length=1,
                                                      description="layers per stage of the new model")


# ----- the auxiliary model: layers tied within a stage ------------------------------------
def stage_starts(lengths: Sequence[int]) -> list[int]:
    """Index of each stage's first layer in the unrolled stack."""
    return [sum(lengths[:s]) for s in range(len(lengths))]


def share_stages(model: torch.nn.Module, lengths: Sequence[int]) -> torch.nn.Module:
    """Tie every layer of a stage to the stage's first layer (the same module object), in
    place: gradients from all repeats then accumulate into one parameter set per stage."""
    layers = model.vit.layers
    if len(layers) != sum(lengths):
        raise ZooError(f"model has {len(layers)} layers, stage lengths {list(lengths)} need {sum(lengths)}")
    for start, n in zip(stage_starts(lengths), lengths):
        for i in range(start + 1, start + n):
            layers[i] = layers[start]
    return model


def fold_stages(model: torch.nn.Module, lengths: Sequence[int]) -> torch.nn.Module:
    """A stage-shared model -> the learngene: one layer per stage, in place, with the stage
    lengths recorded in the config (so `from_pretrained` gives the gene, not the unrolled net)."""
    model.vit.layers = torch.nn.ModuleList(model.vit.layers[i] for i in stage_starts(lengths))
    model.config.num_hidden_layers = len(lengths)
    setattr(model.config, STAGES_KEY, list(lengths))
    return model


def unfold_stages(gene: torch.nn.Module, depths: Sequence[int]) -> torch.nn.Module:
    """A learngene -> a stage-shared model repeating stage s `depths[s]` times, in place and
    without copies (the in-memory counterpart of `learngene.expand`)."""
    if len(depths) != len(gene.vit.layers):
        raise ZooError(f"{len(depths)} depths for a learngene of {len(gene.vit.layers)} stages")
    gene.vit.layers = torch.nn.ModuleList(layer for layer, n in zip(gene.vit.layers, depths) for _ in range(n))
    gene.config.num_hidden_layers = sum(depths)
    return gene


def auxiliary_config(teacher_config: dict, p: SWSParams) -> dict:
    """The auxiliary ViT's config: the teacher's inputs and labels, the asked widths, and
    stages x stage_length layers."""
    fam = get_family("vit")
    src = fam.widths(teacher_config)
    hidden = p.hidden_size or src.hidden
    heads = p.num_heads or (hidden // src.head_dim if hidden % src.head_dim == 0 else src.heads)
    if hidden % heads:
        raise ZooError(f"learngene.sws: hidden_size {hidden} is not divisible by num_heads {heads}")
    intermediate = p.intermediate_size or max(1, src.intermediate * hidden // src.hidden)
    widths = Widths(hidden, heads, heads, hidden // heads, intermediate, p.stages * p.stage_length)
    return {**fam.resized_config(teacher_config, widths), "architectures": [ARCHITECTURE]}


def build_auxiliary(config: dict, lengths: Sequence[int]) -> torch.nn.Module:
    """A randomly initialised ViT of sum(lengths) layers, tied stage by stage."""
    model = get_family("vit").build({**config, "num_hidden_layers": sum(lengths), "architectures": [ARCHITECTURE]})
    return share_stages(model, lengths)


def load_auxiliary(ckpt: Checkpoint, depths: Sequence[int] | None = None) -> torch.nn.Module:
    """A learngene checkpoint as a stage-shared model (default: its training stage lengths)."""
    lengths = gene_stage_lengths(ckpt)
    return unfold_stages(get_family("vit").load(ckpt).float(), lengths if depths is None else depths)


def gene_stage_lengths(ckpt: Checkpoint) -> list[int]:
    """The training stage lengths a learngene records; a clear error for other checkpoints."""
    config = ckpt.config or {}
    lengths = config.get(STAGES_KEY)
    if config.get("model_type") != "vit" or not lengths or len(lengths) != config.get("num_hidden_layers"):
        raise ZooError(f"{ckpt.path}: not an SWS learngene (a ViT with {STAGES_KEY} in its config); "
                       f"make one with learngene.sws")
    return list(lengths)


# ----- learngene.sws ------------------------------------------------------------------------
def _load_teacher(ckpt: Checkpoint) -> tuple[torch.nn.Module, dict]:
    """The teacher as a float32 transformers ViT classifier (timm ViT/DeiT run as one too)."""
    fam, _ = family_of(ckpt)
    if fam.name in ("vit", "timm_vit"):
        teacher = fam.load(ckpt).float()
        if type(teacher).__name__ == ARCHITECTURE:
            return teacher, teacher.config.to_dict()
    raise ZooError(f"learngene.sws: the teacher must be a ViT image classifier ({ARCHITECTURE}); "
                   f"{ckpt.path} is a {fam.name} model")


def _sws(call: OperatorCall) -> OperatorOutput:
    p: SWSParams = call.params
    ckpt = call.checkpoint(0)
    teacher, teacher_config = _load_teacher(ckpt)
    task = get_task(p.task)
    task.check(get_family("vit"), teacher_config)
    config = auxiliary_config(teacher_config, p)
    lengths = [p.stage_length] * p.stages
    torch.manual_seed(p.seed)
    model = build_auxiliary(config, lengths)
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(p.steps)
    t0 = time.perf_counter()
    train = TrainParams(task=p.task, steps=p.steps, lr=p.lr, batch_size=p.batch_size, seed=p.seed)
    model, losses = train_model(model, DistilledTask(task, teacher, p.alpha, p.temperature), config, train,
                                call.progress)
    tail = losses[-10:]
    metrics = {task.metric_key("train_loss"): sum(tail) / len(tail)}
    metrics.update({task.metric_key(k): v for k, v in task.evaluate(model, config).items()})
    metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
    gene = fold_stages(model, lengths).to(getattr(torch, ckpt.dtype or "float32"))
    notes = {"stage_lengths": lengths, "gene_params": sum(t.numel() for t in gene.parameters())}
    return OperatorOutput(write_model(call, gene, ARCHITECTURE, side_from=ckpt), metrics=metrics, notes=notes)


# ----- learngene.expand ---------------------------------------------------------------------
def expansion_plan(ckpt: Checkpoint, depths: Sequence[int]) -> dict[str, list[str]]:
    """Gene tensor -> the output tensors it becomes (stage s's layer at each of its
    `depths[s]` positions; everything outside the stack once). Output order: gene order,
    layers by position."""
    lengths = gene_stage_lengths(ckpt)
    if len(depths) != len(lengths):
        raise ZooError(f"learngene.expand: {len(depths)} depths {list(depths)} for a learngene of {len(lengths)} "
                       f"stages; give one depth per stage (e.g. {lengths}, the training lengths)")
    fam = get_family("vit")
    starts = stage_starts(depths)
    plan: dict[str, list[str]] = {}
    for name in ckpt.names():
        stage = fam.layer_of(name)
        plan[name] = [name] if stage is None else \
            [fam.rename_layer(name, starts[stage] + k) for k in range(depths[stage])]
    return plan


def _expand(call: OperatorCall) -> OperatorOutput:
    depths = call.params.depths
    ckpt = call.checkpoint(0)
    plan = expansion_plan(ckpt, depths)
    specs = [TensorSpec(out, ckpt.info(src).shape, ckpt.info(src).dtype) for src, outs in plan.items() for out in outs]
    config = {k: v for k, v in ckpt.config.items() if k != STAGES_KEY}
    config["num_hidden_layers"] = sum(depths)
    side = {rel: ckpt.root / rel for rel in ckpt.side_files if rel not in WEIGHT_INDEXES | {"config.json", "README.md"}}
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(len(plan))
    with call.writer(specs, config=config, side_files=side) as w:
        for src, outs in plan.items():  # each gene tensor read once, written to every copy
            t = ckpt.get(src)
            for out in outs:
                w.write(out, t)
            if call.progress is not None:
                call.progress(1)
    return OperatorOutput(w.result, notes={"depths": list(depths), "stage_lengths": gene_stage_lengths(ckpt)})


register(Operator("learngene.sws", "1", SWSParams, _sws,
                  "distil a stage-wise weight-shared ViT from a teacher; keep one layer per stage (SWS learngene)",
                  default_role="teacher", deterministic=False,
                  inputs=(InputSpec("teacher"),)))
register(Operator("learngene.expand", "1", ExpandGeneParams, _expand,
                  "initialise a ViT of any depth by repeating each learngene stage's layer (SWS)",
                  default_role="learngene",
                  inputs=(InputSpec("learngene"),)))


# ----- Python API ---------------------------------------------------------------------------
def sws(catalog: Catalog, teacher_ref: str | int, task: str, out: str | None = None,
        progress: Callable[[int], None] | None = None, **params: Any) -> RunResult:
    """Distil a learngene from a catalogued ViT teacher (params: see `SWSParams`)."""
    return run_operator(catalog, "learngene.sws", [Parent(teacher_ref, "teacher")], {"task": task, **params}, out,
                        progress=progress)


def expand_learngene(catalog: Catalog, gene_ref: str | int, depths: Sequence[int], out: str | None = None) -> RunResult:
    """A ViT with `depths[s]` copies of learngene stage s's layer."""
    return run_operator(catalog, "learngene.expand", [Parent(gene_ref, "learngene")], {"depths": list(depths)}, out)
