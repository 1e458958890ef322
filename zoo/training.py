"""Making real small zoos: `init.random` (a new model of a family and size),
`train.finetune` (brief training on a task, under accelerate), and evaluation that stores
its metrics on the catalog entry."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
from pydantic import Field

from .catalog import Catalog, Parent
from .checkpoint import WEIGHT_INDEXES
from .determinism import reproducible
from .errors import ZooError
from .families import family_of, get_family, preset
from .registry import InputSpec, Operator, OperatorParams, register
from .runner import OperatorCall, OperatorOutput, RunResult, run_operator
from .tasks import get_task
from .tasks.base import device_of


class InitParams(OperatorParams):
    family: str = Field(..., min_length=1, description="vit, gpt2, llama or bert")
    config: dict[str, Any] = Field(default_factory=dict, description="transformers config fields")
    seed: int = 0


def _init(call: OperatorCall) -> OperatorOutput:
    p: InitParams = call.params
    fam = get_family(p.family)
    torch.manual_seed(p.seed)
    model = fam.build({**p.config, "architectures": [fam.architectures[0]]})
    return OperatorOutput(write_model(call, model, fam.architectures[0]))


def write_model(call: OperatorCall, model, architecture: str, side_from=None) -> Any:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (k.endswith("lm_head.weight") and model.config.tie_word_embeddings)}
    config = {**model.config.to_dict(), "architectures": [architecture]}
    config.pop("_name_or_path", None)  # where transformers loaded it from: a local path, not a fact about the model
    side = {}
    if side_from is not None:
        side = {rel: side_from.root / rel for rel in side_from.side_files
                if rel not in WEIGHT_INDEXES | {"config.json", "README.md"}}
    return call.write_tensors(state, config=config, side_files=side)


class TrainParams(OperatorParams):
    task: str = Field(..., min_length=1, description="digits, digits:0-4, pytext, ...")
    steps: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: str = Field("constant", min_length=1, description="constant, cosine or lemon")
    warmup_steps: int = Field(0, ge=0)
    seed: int = 0


def lr_schedule(p: TrainParams) -> Callable[[int], float]:
    from .schedules import get_schedule

    return get_schedule(p.schedule, p.steps, p.lr, p.warmup_steps)


def train_model(model, task, config: dict, p: TrainParams, progress=None,
                log: Callable[[int, float, Any], None] | None = None, *, partial_graph: bool = False):
    """The training loop, under accelerate (CPU, one GPU, many GPUs, or several CPU processes
    under torchrun, with no code change). Each process draws its own batches (seeded by its
    rank); gradients are averaged across processes. `partial_graph`: the model uses only
    part of its parameters per step (stitched networks), which data-parallel runs must know.
    `log(step, loss, model)` is called after every step (e.g. to evaluate now and then), with
    the model on the training device; the trained model is returned on the device it came
    from (the caller's module is moved back too), so code around training never sees a GPU.
    A tiny model trains on one intra-op thread (`zoo.determinism`), so a seed gives the same
    weights whatever the machine's thread count."""
    with reproducible(model, cpu=not torch.cuda.is_available()):  # where the Accelerator below puts it
        return _loop(model, task, config, p, progress, log, partial_graph)


def _loop(model, task, config: dict, p: TrainParams, progress, log, partial_graph: bool):
    from accelerate import Accelerator, DistributedDataParallelKwargs

    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if partial_graph else []
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=handlers)
    origin = device_of(model)  # prepare() moves the caller's module in place; it goes back after
    torch.manual_seed(p.seed)
    params = [t for t in model.parameters() if t.requires_grad]
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
    model, opt = accelerator.prepare(model, opt)
    schedule = lr_schedule(p)
    data_seed = p.seed + 1_000_003 * accelerator.process_index
    batches = task.train_batches(config, p.batch_size, torch.Generator().manual_seed(data_seed))
    model.train()
    losses = []
    for step in range(p.steps):
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        batch = {k: v.to(accelerator.device) for k, v in next(batches).items()}
        loss = task.loss(model, batch)
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log is not None:
            log(step, losses[-1], model)
        if progress is not None:
            progress(1)
    model = accelerator.unwrap_model(model).to(origin).eval()
    return model, losses


def for_task(ckpt, task_spec: str):
    """(family, config, task) for running a checkpoint on a task; one line if they do not fit."""
    fam, config = family_of(ckpt)
    task = get_task(task_spec)
    task.check(fam, config)
    return fam, config, task


def _train(call: OperatorCall) -> OperatorOutput:
    p: TrainParams = call.params
    ckpt = call.checkpoint(0)
    fam, config, task = for_task(ckpt, p.task)
    model = fam.load(ckpt).float()
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(p.steps)
    t0 = time.perf_counter()
    model, losses = train_model(model, task, config, p, call.progress)
    tail = losses[-10:]
    metrics = {task.metric_key("train_loss"): sum(tail) / len(tail)}
    metrics.update({task.metric_key(k): v for k, v in task.evaluate(model, config).items()})
    metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
    dtype = getattr(torch, ckpt.dtype or "float32")
    model = model.to(dtype)
    arch = (config.get("architectures") or [fam.architectures[0]])[0]
    return OperatorOutput(write_model(call, model, arch, side_from=ckpt), metrics=metrics)


register(Operator("init.random", "1", InitParams, _init, "a new, randomly initialised model of a family",
                  inputs=()))
register(Operator("train.finetune", "1", TrainParams, _train, "brief training on a task (AdamW, under accelerate)",
                  relation="finetune", default_role="base", deterministic=False,
                  inputs=(InputSpec("base"),)))


def new_model(catalog: Catalog, preset_or_family: str, name: str | None = None, seed: int = 0,
              **overrides: Any) -> RunResult:
    """A random-init model from a family's preset (vit-ti, gpt2-tiny, ...) or a family + config fields."""
    cfg = preset(preset_or_family)
    if cfg is not None:
        family = cfg.pop("family")
    else:
        family, cfg = preset_or_family, {}
        get_family(family)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return run_operator(catalog, "init.random", [], {"family": family, "config": cfg, "seed": seed},
                        name or f"{preset_or_family}-s{seed}")


def train(catalog: Catalog, ref: str | int, task: str, out: str | None = None, progress=None, **params: Any) -> RunResult:
    return run_operator(catalog, "train.finetune", [Parent(ref, "base")], {"task": task, **params}, out,
                        progress=progress)


def evaluate(catalog: Catalog, ref: str | int, task_spec: str, split: str = "test") -> dict[str, float]:
    """Run a task's evaluation and store the metrics on the entry (as 'task/metric')."""
    ckpt = catalog.open(ref)
    fam, config, task = for_task(ckpt, task_spec)
    model = fam.load(ckpt).float()
    metrics = split_metrics(task, split, task.evaluate(model, config, split))
    catalog.set_metrics(ref, metrics)
    return metrics


def split_metrics(task, split: str, metrics: dict[str, float]) -> dict[str, float]:
    """Catalog metric names: 'task/metric' on test, 'task/split_metric' on other splits."""
    return {task.metric_key(k if split == "test" else f"{split}_{k}"): v for k, v in metrics.items()}
