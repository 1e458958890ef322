"""What each stitched configuration costs and scores: parameters it runs, FLOPs of one
example (counted by torch's FLOP counter, 2 per multiply-add), task metrics; the
accuracy/FLOPs Pareto front."""
from __future__ import annotations

from typing import Callable

import torch

from zoo.cost import flop_counter
from .format import StitchConfig


def part_params(family, model, config: dict) -> dict[str, object]:
    """An anchor's parameters split into 'embed', 'head' and per-block counts."""
    embed = head = 0
    blocks: dict[int, int] = {}
    for name, p in model.named_parameters():
        role = family.role(name, config)
        layer = family.layer_of(name)
        if layer is not None:
            blocks[layer] = blocks.get(layer, 0) + p.numel()
        elif role is not None and role.kind.startswith("embed"):
            embed += p.numel()
        else:
            head += p.numel()
    return {"embed": embed, "head": head, "blocks": blocks}


def config_params(cfg: StitchConfig, parts: list[dict], stitch_sizes: dict[str, int]) -> int:
    """Parameters a configuration runs: the first anchor's embeddings, its blocks, its
    stitching layers, the last anchor's head."""
    total = parts[cfg.route[0].anchor]["embed"] + parts[cfg.route[-1].anchor]["head"]
    for seg in cfg.route:
        total += sum(parts[seg.anchor]["blocks"].get(b, 0) for b in range(seg.start, seg.stop))
    return total + sum(stitch_sizes[k] for k in cfg.stitches)


@torch.no_grad()
def config_flops(net, cfg: StitchConfig, example: dict) -> int:
    counter = flop_counter()  # counts attention on the CPU too
    with counter:
        net.run(cfg, example)
    return int(counter.get_total_flops())


def measure(net, family, anchor_configs: list[dict], task, task_config: dict, example: dict,
            splits: tuple[str, ...] = ("val", "test"), progress: Callable[[int], None] | None = None) -> None:
    """Fill each configuration's stats: params, flops, and `split/metric` for each split."""
    parts = [part_params(family, a, c) for a, c in zip(net.anchors, anchor_configs)]
    sizes = {k: sum(p.numel() for p in (s.weight, s.bias)) for k, s in net.stitches.items()}
    was = net.selected
    net.eval()
    for cfg in net.configs.values():
        cfg.stats["params"] = config_params(cfg, parts, sizes)
        cfg.stats["flops"] = config_flops(net, cfg, example)
        net.select(cfg.id)
        for split in splits:
            for k, v in task.evaluate(net, task_config, split).items():
                cfg.stats[f"{split}/{k}"] = round(float(v), 6)
        if progress is not None:
            progress(1)
    net.select(was)


def pareto_front(points: list[tuple[int, float, float]]) -> list[int]:
    """Ids of the points (id, cost, score) that no other point beats on both (lower cost,
    higher score), in order of cost."""
    front, best = [], float("-inf")
    for pid, _, score in sorted(points, key=lambda p: (p[1], -p[2])):
        if score > best:
            front.append(pid)
            best = score
    return front


def flag_pareto(configs: list[StitchConfig], metric: str, higher_is_better: bool = True) -> list[int]:
    """Mark each configuration's `pareto` stat from `metric` (a validation metric: the
    front is a selection, so it must not see the test split) and return the front's ids."""
    sign = 1 if higher_is_better else -1
    front = pareto_front([(c.id, c.stats["flops"], sign * c.stats.get(metric, float("-inf") * sign)) for c in configs])
    for c in configs:
        c.stats["pareto"] = c.id in front
    return front


def best_config(configs: list[StitchConfig], metric: str, higher_is_better: bool = True) -> StitchConfig:
    """The configuration with the best `metric` (validation), ties to the cheaper one."""
    sign = 1 if higher_is_better else -1
    return max(configs, key=lambda c: (sign * c.stats.get(metric, float("-inf") * sign), -c.stats.get("flops", 0)))


def near_interpolation(points: list[tuple[int, int, float]], anchors: list[tuple[int, float]], tol: float = 0.01) -> tuple[int, int]:
    """(how many, out of how many) stitched points (id, flops, score) between two
    neighbouring anchors (flops, score) score within `tol` of the straight line joining them."""
    anchors = sorted(anchors)
    hits = total = 0
    for _, f, s in points:
        for (f0, s0), (f1, s1) in zip(anchors, anchors[1:]):
            if f0 <= f <= f1 and f1 > f0:
                total += 1
                hits += s >= s0 + (s1 - s0) * (f - f0) / (f1 - f0) - tol
                break
    return hits, total
