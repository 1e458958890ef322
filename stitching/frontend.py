"""Front-end helpers of the stitching package (`zoo stitch ...`, `zoo learngene ...`):
resolve references, turn epochs into steps, pick configurations, read the table."""
from __future__ import annotations

import math
from typing import Any

from zoo.catalog import Catalog, Parent
from zoo.errors import ZooError
from zoo.runner import RunResult, run_operator
from zoo.tasks import get_task

from .export import pick_config
from .format import StitchConfig, parse_configs
from .sws import expand_learngene, sws  # noqa: F401  (the `zoo learngene sws/expand` front ends)


def steps_for(task_spec: str, epochs: float | None, steps: int | None, batch_size: int) -> int | None:
    """Steps from --epochs (passes over the task's training split) or --steps."""
    if epochs is None:
        return steps
    if steps is not None:
        raise ZooError("give --epochs or --steps, not both")
    n = get_task(task_spec).train_examples()
    if n is None:
        raise ZooError(f"task {task_spec} is a stream with no epochs; use --steps")
    return max(1, math.ceil(epochs * n / batch_size))


def build(catalog: Catalog, anchors: list[str], task: str, out: str | None = None, *, teacher: str | None = None,
          reuse: bool = True, progress=None, tags=(), **params: Any) -> RunResult:
    """Stitch anchors (catalog refs) into one network (`stitch.snnet`)."""
    if len(anchors) < 2:  # the operator's contract says so too; this names the option
        raise ZooError(f"stitching needs at least two anchors (give --anchor/-a twice or more; got {len(anchors)})")
    inputs = [Parent(catalog.get(a).id, "anchor") for a in anchors]
    if teacher:
        inputs.append(Parent(catalog.get(teacher).id, "teacher"))
    params = {k: v for k, v in params.items() if v is not None}
    return run_operator(catalog, "stitch.snnet", inputs, {"task": task, **params}, out, reuse=reuse,
                        progress=progress, tags=tags)


def network(catalog: Catalog, ref: str) -> tuple[dict, list[StitchConfig]]:
    """(config, configurations) of a stitched network entry."""
    ckpt = catalog.open(ref)
    config = ckpt.config or {}
    if config.get("model_type") != "stitched":
        raise ZooError(f"{ref} is not a stitched network (build one with `zoo stitch build`)")
    return config, parse_configs(config)


def export(catalog: Catalog, ref: str, config_id: int | None = None, budget_flops: float | None = None,
           out: str | None = None, reuse: bool = True, tags=()) -> RunResult:
    """Export one configuration, by id or as the best within a FLOPs budget (`stitch.export`)."""
    config, configs = network(catalog, ref)
    chosen = pick_config(configs, config_id, budget_flops)
    entry = catalog.get(ref)
    parents = [Parent(entry.id, "source")]
    used = {s.anchor for s in chosen.route}
    refs = config["stitched"].get("anchor_refs") or []
    parents += [Parent(catalog.get(r).id, "anchor") for i, r in enumerate(refs) if i in used]
    return run_operator(catalog, "stitch.export", parents, {"config": chosen.id},
                        out or f"{entry.name}-c{chosen.id}", reuse=reuse, tags=tags)
