"""The weight-generation operators.

- `generate.d2nwg.train`: zoo models (role `zoo`, each tagged `task=...`) -> a
  dataset-conditioned generator (Soro et al., ICLR 2025).
- `generate.pdiff.train`: one trained model (role `base`) -> checkpoints of a parameter
  subset collected by continued training -> an unconditional generator (Wang et al. 2024).
- `generate.sample`: a generator (role `generator`) -> one sampled model (`index` of a
  seeded batch of `n`), evaluated, optionally fine-tuned.
- `generate.population` (registered by `generators.zoo_builder`, imported here): the zoos
  these generators learn from, one run with one output per model.

Generators are catalog entries: their networks and statistics as safetensors, their
layout and the target model's config in config.json."""
from __future__ import annotations

import hashlib
import time
from functools import lru_cache

import torch
from pydantic import Field

from zoo.checkpoint import Checkpoint
from zoo.errors import ZooError
from zoo.param_types import NonEmpty
from zoo.families import detect, family_of
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput
from zoo.tasks import get_task
from zoo.training import TrainParams, for_task, train_model

from .. import zoo_builder as _population  # noqa: F401  (registers generate.population, the zoos learnt here)
from .generator import WeightGenerator
from .layout import WeightLayout

MODEL_TYPE = "weight_generator"


def task_summary(task_spec: str, k: int, seed: int) -> torch.Tensor:
    """A task as the generator sees it: per class, the mean of k training inputs and a
    presence flag -> [classes, inputs + 1]."""
    task = get_task(task_spec)
    if not hasattr(task, "support"):
        raise ZooError(f"task {task_spec} cannot describe itself by examples (no support set); D2NWG needs one")
    digest = hashlib.sha256(f"{seed}:{task_spec}".encode()).digest()
    sample = task.support(k, torch.Generator().manual_seed(int.from_bytes(digest[:7], "little")))
    x, y = sample["pixel_values"].flatten(1), sample["labels"]
    classes = 10
    out = torch.zeros(classes, x.shape[1] + 1)
    for c in range(classes):
        mask = y == c
        if mask.any():
            out[c, :-1] = x[mask].mean(0)
            out[c, -1] = 1.0
    return out


def entry_task(call: OperatorCall, i: int) -> str:
    tags = call.catalog.show(call.inputs[i][1].id).get("tags") or []
    for tag in tags:
        if tag.startswith("task="):
            return tag[len("task="):]
    raise ZooError(f"{call.inputs[i][1].ref} has no task=... tag: D2NWG needs to know each zoo model's task "
                   f"(models from `zoo population` have one)")


def read_vectors(ckpts: list[Checkpoint], layout: WeightLayout) -> torch.Tensor:
    return torch.stack([layout.flatten({n: c.get(n) for n in layout.names}) for c in ckpts])


def generator_output(call: OperatorCall, gen: WeightGenerator, kind: str, target: dict, extra: dict,
                     tensors: dict | None = None, metrics: dict | None = None) -> OperatorOutput:
    state = {k: v.detach().contiguous() for k, v in gen.state_dict().items()}
    state.update(tensors or {})
    config = {"model_type": MODEL_TYPE, "architectures": ["WeightGenerator"], "kind": kind,
              "generator": gen.describe(), "target": target, **extra}
    return OperatorOutput(call.write_tensors(state, config=config), metrics=metrics)


@torch.no_grad()
def accuracy_of(family, config: dict, state: dict, task) -> float:
    model = family.build(config)
    model.load_state_dict(state, strict=False)
    return task.evaluate(model.float().eval(), config)["accuracy"]


# --- D2NWG -------------------------------------------------------------------------------------

class D2NWGParams(OperatorParams):
    chunk: int = Field(256, ge=8, description="weights per chunk the VAE encodes")
    latent: int = Field(16, ge=1, description="latent size per chunk")
    hidden: int = Field(256, ge=16)
    vae_steps: int = Field(1500, ge=1)
    diffusion_steps: int = Field(4000, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    support: int = Field(5, ge=1, description="examples per class that describe a task")
    seed: int = 0


def _d2nwg_train(call: OperatorCall) -> OperatorOutput:
    p: D2NWGParams = call.params
    zoo = [i for i, (parent, _) in enumerate(call.inputs) if parent.role == "zoo"]  # two or more: the contract
    ckpts = [call.checkpoint(i) for i in zoo]
    family, target = family_of(ckpts[0])
    names = ckpts[0].names()
    layout = WeightLayout(names, [ckpts[0].info(n).shape for n in names], p.chunk)
    for i, c in zip(zoo, ckpts):
        if [(n, c.info(n).shape) for n in c.names()] != list(zip(names, layout.shapes)):
            raise ZooError(f"zoo models must share one architecture: {call.inputs[i][1].ref} differs from "
                           f"{call.inputs[zoo[0]][1].ref}")
    tasks = [entry_task(call, i) for i in zoo]
    summaries = torch.stack([task_summary(t, p.support, p.seed) for t in tasks])
    vectors = read_vectors(ckpts, layout)
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(p.vae_steps + p.diffusion_steps)
    t0 = time.perf_counter()
    torch.manual_seed(p.seed)
    gen = WeightGenerator(layout, p.latent, summaries.shape[1], summaries.shape[2] - 1, p.hidden)
    vae_losses = gen.fit_vae(vectors, p.vae_steps, p.lr, p.batch_size, seed=p.seed, progress=call.progress)
    diff_losses = gen.fit_diffusion(vectors, summaries, p.diffusion_steps, p.lr, p.batch_size, p.seed, call.progress)
    seconds = time.perf_counter() - t0
    check = min(8, len(zoo))  # stage-1 check: decoded weights still work
    recon = gen.decode(gen.encode(vectors[:check]))
    drops = []
    for j in range(check):
        task = get_task(tasks[j])
        before = accuracy_of(family, target, layout.unflatten(vectors[j]), task)
        drops.append(before - accuracy_of(family, target, layout.unflatten(recon[j]), task))
    metrics = {"vae/loss": sum(vae_losses[-20:]) / 20, "diffusion/loss": sum(diff_losses[-50:]) / 50,
               "vae/accuracy_drop": sum(drops) / len(drops), "zoo_models": len(zoo), "train_seconds": round(seconds, 2)}
    return generator_output(call, gen, "d2nwg", target, {"zoo_tasks": sorted(set(tasks)), "support": p.support,
                                                         "support_seed": p.seed}, metrics=metrics)


# --- p-diff ----------------------------------------------------------------------------------

class PDiffParams(OperatorParams):
    task: str = Field(..., min_length=1, description="the task the base model was trained on")
    subset: list[NonEmpty] = Field(default_factory=list, description="tensor names to generate [default: the last layer]")
    checkpoints: int = Field(200, ge=2, description="checkpoints collected by continued training of the subset")
    collect_lr: float = Field(1e-3, gt=0)
    chunk: int = Field(256, ge=8)
    latent: int = Field(16, ge=1)
    hidden: int = Field(256, ge=16)
    vae_steps: int = Field(2000, ge=1)
    diffusion_steps: int = Field(4000, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    input_noise: float = Field(0.001, ge=0.0, le=1.0, description="noise mixed into the autoencoder's input while it "
                               "trains, (1-f)x + f*eps on per-tensor standardised weights [p-diff: 0.001; 0 = off]")
    latent_noise: float = Field(0.5, ge=0.0, le=1.0, description="noise mixed into its tanh-bounded latent while it "
                                "trains [p-diff's end-to-end config: 0.5; 0 = off]")
    seed: int = 0


def last_layer(names: list[str]) -> list[str]:
    """The last weight matrix and its bias (the usual p-diff subset)."""
    weights = [n for n in names if n.endswith(".weight")]
    if not weights:
        raise ZooError("no weight tensors to generate")
    prefix = weights[-1][: -len("weight")]
    return [n for n in names if n.startswith(prefix)]


def collect_checkpoints(model, task, config: dict, subset: list[str], p: PDiffParams, progress=None) -> torch.Tensor:
    """Keep training only `subset`, recording its values after every step: [K, numel]."""
    params = dict(model.named_parameters())
    for name, prm in params.items():
        prm.requires_grad_(name in subset)
    seen: list[torch.Tensor] = []
    tp = TrainParams(task=p.task, steps=p.checkpoints, lr=p.collect_lr, batch_size=p.batch_size, seed=p.seed)
    train_model(model, task, config, tp, progress,
                log=lambda step, loss, m: seen.append(torch.cat([dict(getattr(m, "module", m).named_parameters())[n]
                                                                 .detach().reshape(-1).cpu() for n in subset])))
    for prm in params.values():
        prm.requires_grad_(True)
    return torch.stack(seen)


def _pdiff_train(call: OperatorCall) -> OperatorOutput:
    p: PDiffParams = call.params
    ckpt = call.checkpoint(0)
    family, target, task = for_task(ckpt, p.task)
    names = ckpt.names()
    subset = p.subset or last_layer(names)
    unknown = [n for n in subset if n not in names]
    if unknown:
        raise ZooError(f"subset tensor {unknown[0]!r} is not in {call.inputs[0][1].ref}")
    model = family.load(ckpt).float()
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(p.checkpoints + p.vae_steps + p.diffusion_steps)
    t0 = time.perf_counter()
    collected = collect_checkpoints(model, task, target, subset, p, call.progress)
    layout = WeightLayout(subset, [ckpt.info(n).shape for n in subset], p.chunk)
    torch.manual_seed(p.seed)
    gen = WeightGenerator(layout, p.latent, hidden=p.hidden, squash=True)
    gen.fit_vae(collected, p.vae_steps, p.lr, p.batch_size, seed=p.seed, progress=call.progress,
                input_noise=p.input_noise, latent_noise=p.latent_noise)
    gen.fit_diffusion(collected, None, p.diffusion_steps, p.lr, p.batch_size, p.seed, call.progress)
    base = {f"base.{k}": v.detach().contiguous() for k, v in model.state_dict().items() if k not in subset}
    picks = collected[torch.linspace(0, len(collected) - 1, 10).long()]
    accs = [accuracy_of(family, target, {**{k[5:]: v for k, v in base.items()}, **layout.unflatten(v)}, task)
            for v in picks]
    metrics = {"pdiff/checkpoint_accuracy": sum(accs) / len(accs), "checkpoints": len(collected),
               "train_seconds": round(time.perf_counter() - t0, 2)}
    return generator_output(call, gen, "pdiff", target, {"task": task.name},
                            tensors={**base, "collected": collected.contiguous()}, metrics=metrics)


# --- sampling --------------------------------------------------------------------------------

class SampleParams(OperatorParams):
    task: str | None = Field(None, min_length=1, description="task to generate for (D2NWG) / to evaluate on")
    n: int = Field(1, ge=1, description="size of the seeded batch this sample comes from")
    index: int = Field(0, ge=0, description="which sample of the batch")
    seed: int = 0
    steps: int = Field(50, ge=1, description="DDIM sampling steps")
    guidance: float = Field(2.0, ge=0.0, description="classifier-free guidance scale (conditional generators)")
    finetune_steps: int = Field(0, ge=0, description="training steps on the task after sampling")
    lr: float = Field(1e-3, gt=0)


def load_generator(ckpt: Checkpoint) -> WeightGenerator:
    config = ckpt.config or {}
    if config.get("model_type") != MODEL_TYPE:
        raise ZooError(f"{ckpt.path} is not a weight generator (make one with `zoo generate d2nwg train`)")
    gen = WeightGenerator.from_description(config["generator"])
    own = gen.state_dict()
    gen.load_state_dict({k: ckpt.get(k) for k in own})
    return gen.eval()


@lru_cache(maxsize=8)
def sampled_batch(root: str, digest: str, task: str | None, n: int, seed: int, steps: int,
                  guidance: float) -> torch.Tensor:
    """One seeded batch per (generator, task, n, seed, steps), shared by the n sample runs."""
    ckpt = Checkpoint.open(root)
    gen = load_generator(ckpt)
    summary = None
    if gen.set_encoder is not None:
        if task is None:
            raise ZooError("this generator is conditioned on a dataset: give --task")
        summary = task_summary(task, ckpt.config["support"], ckpt.config["support_seed"]).unsqueeze(0)
    return gen.sample(n, summary, seed, steps, guidance)


def _sample(call: OperatorCall) -> OperatorOutput:
    p: SampleParams = call.params
    ckpt = call.checkpoint(0)
    config = ckpt.config or {}
    if config.get("model_type") != MODEL_TYPE:
        raise ZooError(f"{call.inputs[0][1].ref} is not a weight generator")
    if p.index >= p.n:
        raise ZooError(f"index {p.index} is outside a batch of {p.n}")
    task_spec = p.task or config.get("task")
    if task_spec is None:
        raise ZooError("give the task to generate for")
    vectors = sampled_batch(str(ckpt.root), call.inputs[0][1].digest, p.task if config["kind"] == "d2nwg" else None,
                            p.n, p.seed, p.steps, p.guidance)
    layout = WeightLayout.from_json(config["generator"]["layout"])
    state = layout.unflatten(vectors[p.index])
    if config["kind"] == "pdiff":
        state.update({n[len("base."):]: ckpt.get(n) for n in ckpt.names() if n.startswith("base.")})
    target = config["target"]
    family = family_of_config(target)
    task = get_task(task_spec)
    model = family.build(target).float()
    model.load_state_dict(state, strict=True)
    metrics = {task.metric_key(f"generated_{k}"): v for k, v in task.evaluate(model.eval(), target).items()}
    if p.finetune_steps:
        tp = TrainParams(task=task_spec, steps=p.finetune_steps, lr=p.lr, seed=p.seed)
        model, _ = train_model(model, task, target, tp)
    metrics.update({task.metric_key(k): v for k, v in task.evaluate(model.eval(), target).items()})
    out = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return OperatorOutput(call.write_tensors(out, config=target), metrics=metrics)


def family_of_config(config: dict):
    fam = detect(config, [])
    if fam is None:
        raise ZooError(f"the generator's target architecture {config.get('model_type')!r} is not supported")
    return fam


register(Operator("generate.d2nwg.train", "1", D2NWGParams, _d2nwg_train,
                  "learn a zoo's weights as dataset-conditioned latent diffusion (D2NWG)", default_role="zoo",
                  deterministic=False,
                  inputs=(InputSpec("zoo", 2, None),)))
register(Operator("generate.pdiff.train", "2", PDiffParams, _pdiff_train,
                  "learn one training run's parameter subset as latent diffusion (p-diff)", default_role="base",
                  deterministic=False,
                  inputs=(InputSpec("base"),)))
register(Operator("generate.sample", "1", SampleParams, _sample, "sample a model from a weight generator",
                  default_role="generator", deterministic=False,
                  inputs=(InputSpec("generator"),)))
