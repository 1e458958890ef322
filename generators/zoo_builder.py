"""Populations: hundreds of small models trained at once, the training data of weight
generators (D2NWG learns to generate a model's weights from a sample of its dataset).

`build_population` trains one `zoo_mlp` per (task, seed) pair, all in one vectorised loop:
the parameters of every model are stacked along a leading axis, the forward pass runs
through `torch.func.vmap(functional_call(...))` on a stacked batch (each model its own
task's examples), one backward pass on the summed losses gives every model its own
gradients (the models share nothing), and a hand-written Adam updates the stacked tensors.
Every model starts from the same weights (`torch.manual_seed(init_seed)`); models differ by
task and by data order: model (task, seed) sees exactly the batches
`get_task(task).train_batches(config, batch_size, data_generator(task, seed))` yields.

Each model is then evaluated on its task's test split and written as one output of the
operator `generate.population`: the runner registers them all with one run (cache key,
card and provenance metadata on each; the (task, seed) of each in the run's outputs),
tags `[prefix, "task=<task>"]`, metrics `<task>/accuracy` and `<task>/loss`;
`population(catalog, tag)` lists a population back with each task.
"""
from __future__ import annotations

import hashlib
import re
import time
from typing import TYPE_CHECKING, Annotated, Callable, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from zoo.catalog import Catalog
from zoo.catalog.catalog import NAME_OK
from zoo.errors import ZooError
from zoo.param_types import NonEmpty
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput, run_operator
from zoo.tasks import get_task
from zoo.tasks.digits import Digits

from .wgen.family import DEFAULT_LAYER_SIZES, MLPFamily, mlp_config

if TYPE_CHECKING:
    from torch import nn

    from zoo.catalog import ModelEntry

OPERATOR, VERSION = "generate.population", "1"
DEFAULT_LR = 1e-2
BETAS, EPS = (0.9, 0.999), 1e-8


# ----- the pieces (each usable on its own: tests train one model with them) -------------
def digits_task(spec: str) -> Digits:
    """The task for a spec, which must be a digits task (populations are digits MLPs)."""
    task = get_task(spec)
    if not isinstance(task, Digits):
        raise ZooError(f"population: task {spec!r} is not a digits task (populations are MLPs on digits: "
                       f"digits, digits:0-4, digits:1,3,7, digits:permN)")
    return task


def data_seed(task: str, seed: int) -> int:
    """The data-order seed of model (task, seed): stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(f"{task}|{seed}".encode()).digest()[:8], "little") >> 1


def data_generator(task: str, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(data_seed(task, seed))


def initial_model(layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES, init_seed: int = 0) -> "nn.Module":
    """The ZooMLP every model of a population starts from (torch's global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return MLPFamily().build(mlp_config(layer_sizes))


def batch_indices(task: Digits, seed: int, steps: int, batch_size: int) -> torch.Tensor:
    """[steps, batch_size] rows of `task.split("train")`: the same rows, in the same order,
    as `task.train_batches(..., data_generator(task.name, seed))` draws step by step."""
    n = task.train_examples()
    return torch.randint(0, n, (steps, batch_size), generator=data_generator(task.name, seed))


@torch.no_grad()
def adam_update(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, lr: float,
                betas: tuple[float, float] = BETAS, eps: float = EPS) -> None:
    """One Adam step in place (`step` counts from 1), elementwise, so the same call updates
    one model's tensor or a population's stacked tensors."""
    b1, b2 = betas
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    param.addcdiv_(m, (v / (1 - b2 ** step)).sqrt_().add_(eps), value=-lr / (1 - b1 ** step))


def train_stacked(model: "nn.Module", init: dict[str, torch.Tensor], n_models: int,
                  batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]], steps: int, lr: float,
                  progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Train `n_models` copies of `model`, all starting from `init` (name -> tensor), at once.

    `batches(step)` gives the stacked batch (x [n_models, B, ...], labels [n_models, B]);
    returns name -> [n_models, *shape] trained parameters. All parameters live in one flat
    [n_models, P] buffer, so the optimiser step is a handful of tensor ops whatever the depth."""
    from torch.func import functional_call, vmap

    names = list(init)
    shapes = [tuple(init[n].shape) for n in names]
    sizes = [init[n].numel() for n in names]
    flat = torch.cat([init[n].detach().reshape(-1).float() for n in names]).repeat(n_models, 1)
    m, v = torch.zeros_like(flat), torch.zeros_like(flat)

    def unflatten(buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(n_models, *s) for n, t, s in zip(names, buffer.split(sizes, dim=1), shapes)}

    def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (), {"pixel_values": x}).logits, y)

    losses = vmap(loss)
    for step in range(1, steps + 1):
        x, y = batches(step - 1)
        flat.requires_grad_(True)
        (grad,) = torch.autograd.grad(losses(unflatten(flat), x, y).sum(), [flat])
        flat = flat.detach()
        adam_update(flat, grad, m, v, step, lr)
        if progress is not None:
            progress(1)
    return {n: t.contiguous() for n, t in unflatten(flat).items()}


def safe_task(task: str) -> str:
    """A task spec as part of a model name: digits:1,4,7 -> digits-1_4_7."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", task.replace(":", "-"))


def model_name(prefix: str, task: str, seed: int) -> str:
    return f"{prefix}-{safe_task(task)}-s{seed}"


# ----- the population: one operator run, one output per model ------------------------------
class PopulationParams(OperatorParams):
    """A population: one model per (task, seed) pair, all from the same initial weights."""

    tasks: list[NonEmpty] = Field(..., min_length=1, description="digits tasks: digits, digits:0-4, digits:1,3,7, digits:permN")
    seeds: list[int] = Field(..., min_length=1, description="data-order seeds")
    steps: int = Field(300, ge=1)
    lr: float = Field(DEFAULT_LR, gt=0)
    batch_size: int = Field(64, ge=1)
    layer_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: list(DEFAULT_LAYER_SIZES), min_length=2)
    init_seed: int = 0
    prefix: str = Field("pop", description="name prefix and tag of every model")


def checked(p: PopulationParams) -> tuple[dict, dict[str, Digits]]:
    """(MLP config, task objects) of a population; a one-line ZooError before any work
    (counts and ranges are the params model's)."""
    if not NAME_OK.match(p.prefix) or "@" in p.prefix or ".." in p.prefix:
        raise ZooError(f"population: invalid prefix {p.prefix!r} (letters, digits, '.', '_', '-')")
    config = mlp_config(p.layer_sizes)
    if config["num_labels"] != 10:
        raise ZooError(f"population: the last layer size must be 10 (the digit labels), not {config['num_labels']}")
    return config, {t: digits_task(t) for t in p.tasks}  # every bad spec fails here


def _population(call: OperatorCall) -> list[OperatorOutput]:
    """Train every model at once, evaluate each on its task's test split, write each as one
    output of the run. `call.timings` gets the seconds of "data", "train" and "evaluate"."""
    p: PopulationParams = call.params
    config, task_objs = checked(p)
    models = [(t, s) for t in p.tasks for s in p.seeds]
    t0 = time.perf_counter()

    # the training examples of every task, one pool; each model's batch rows point into it
    pool_x, pool_y, offsets, start = [], [], {}, 0
    for t, task in task_objs.items():
        x, y = task.split("train")
        pool_x.append(task.fit(x, config))
        pool_y.append(y)
        offsets[t], start = start, start + len(y)
    pool_x, pool_y = torch.cat(pool_x), torch.cat(pool_y)
    rows = torch.stack([batch_indices(task_objs[t], s, p.steps, p.batch_size) + offsets[t] for t, s in models], dim=1)

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = rows[step]  # [models, batch]
        return pool_x[r], pool_y[r]

    call.timings["data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = initial_model(config["layer_sizes"], p.init_seed)
    init = {n: w.detach() for n, w in model.named_parameters()}
    trained = train_stacked(model, init, len(models), batches, p.steps, p.lr, call.progress)
    call.timings["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = []
    params = dict(model.named_parameters())
    with torch.no_grad():
        for i, (t, _) in enumerate(models):
            for n, w in params.items():
                w.copy_(trained[n][i])
            results.append(task_objs[t].evaluate(model, config))
    call.timings["evaluate"] = time.perf_counter() - t0
    return write_models(call, models, trained, results, config)


def write_models(call: OperatorCall, models: list[tuple[str, int]], trained: dict[str, torch.Tensor],
                 results: list[dict], config: dict) -> list[OperatorOutput]:
    """Each model as one output of the run (`{prefix}-{task}-s{seed}`, tagged prefix and
    task=...), with its card and provenance metadata; `progress(1)` per model written."""
    prefix = call.params.prefix
    outputs = []
    for i, ((t, s), metrics) in enumerate(zip(models, results)):
        target = call.new_output(
            model_name(prefix, t, s), detail={"task": t, "seed": s}, library=None,
            summary=f"A `zoo_mlp` of the population `{prefix}`, trained on `{t}` with data seed {s}.")
        written = target.write_tensors({n: trained[n][i].clone() for n in trained}, config=config)
        outputs.append(OperatorOutput(written, name=target.name, tags=[prefix, f"task={t}"],
                                      metrics={f"{t}/accuracy": metrics["accuracy"], f"{t}/loss": metrics["loss"]}))
        if call.progress is not None:
            call.progress(1)
    return outputs


register(Operator(OPERATOR, VERSION, PopulationParams, _population,
                  "train a population of digits MLPs at once, one output per (task, seed)", deterministic=False,
                  inputs=(), outputs=lambda p: len(p.tasks) * len(p.seeds)))


def build_population(catalog: Catalog, tasks: list[str], seeds: list[int], *, steps: int = 300,
                     lr: float = DEFAULT_LR, batch_size: int = 64,
                     layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES, init_seed: int = 0, prefix: str = "pop",
                     progress: Callable[[int], None] | None = None, timings: dict | None = None,
                     reuse: bool = True) -> list["ModelEntry"]:
    """Train len(tasks) x len(seeds) MLPs at once (one `generate.population` run), evaluate
    each on its task's test split and register each as a catalog entry `{prefix}-{task}-s{seed}`;
    returns the entries in (task, seed) order (the same call again: the same entries, reused).
    `progress(1)` is called per training step and per model written (steps + models in all);
    `timings`, if given, receives the seconds spent preparing the data, training, evaluating
    and writing plus registering ("data", "train", "evaluate", "register"); all 0 when reused."""
    params = {"tasks": list(dict.fromkeys(tasks)), "seeds": list(dict.fromkeys(int(s) for s in seeds)),
              "steps": steps, "lr": lr, "batch_size": batch_size, "layer_sizes": list(layer_sizes),
              "init_seed": init_seed, "prefix": prefix}
    t0 = time.perf_counter()
    result = run_operator(catalog, OPERATOR, [], params, reuse=reuse, progress=progress)
    if timings is not None:
        clock = {k: result.timings.get(k, 0.0) for k in ("data", "train", "evaluate")}
        spent = 0.0 if result.reused else time.perf_counter() - t0 - sum(clock.values())
        timings.update(clock, register=spent)
    return result.entries


def population(catalog: Catalog, tag: str) -> list[tuple["ModelEntry", str]]:
    """The models tagged `tag`, in the order they were registered, each with its task (from
    its `task=` tag). No such models, or one without a task tag: one-line ZooError."""
    rows = sorted(catalog.ls(tag=tag), key=lambda r: r["id"])
    if not rows:
        raise ZooError(f"no models tagged {tag!r} in catalog {catalog.where} (build a population with `zoo population`)")
    out = []
    for r in rows:
        task = next((t[len("task="):] for t in r["tags"] if t.startswith("task=")), None)
        if task is None:
            raise ZooError(f"{r['ref']} is tagged {tag!r} but has no task=... tag; it is not a population model")
        out.append((catalog.get(r["id"]), task))
    return out


__all__ = ["OPERATOR", "VERSION", "PopulationParams", "adam_update", "batch_indices", "build_population", "checked",
           "data_generator", "data_seed", "digits_task", "initial_model", "model_name", "population", "safe_task",
           "train_stacked", "write_models"]
