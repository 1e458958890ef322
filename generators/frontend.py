"""Command-line front ends of the generators package (`zoo expand`, `zoo population`)."""
from __future__ import annotations

from dataclasses import dataclass

from zoo.catalog import Catalog, Parent
from zoo.runner import RunResult, run_operator


def expand_command(catalog: Catalog, ref: str, method: str, *, hidden_size: int | None, num_layers: int | None,
                   num_heads: int | None, intermediate_size: int | None, seed: int, out: str | None,
                   tags, reuse: bool, progress_factory, device: str = "cpu", depth_init: str | None = None) -> RunResult:
    params = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
              "intermediate_size": intermediate_size, "seed": seed}
    if depth_init is not None:  # (a LEMON parameter: other methods refuse it by name)
        params["depth_init"] = depth_init
    source = catalog.get(ref)
    with progress_factory("expanding") as advance:
        return run_operator(catalog, f"expand.{method}", [Parent(source.id, "source")], params, out, tags=tags,
                            reuse=reuse, progress=advance, options={"device": device})


def d2nwg_train(catalog: Catalog, zoo_tag: str, out: str | None = None, progress=None, reuse: bool = True,
                **params) -> RunResult:
    """Train a D2NWG generator on every model tagged `zoo_tag` (the zoo is a catalog query)."""
    from zoo.errors import ZooError

    rows = catalog.ls(tag=zoo_tag)
    if not rows:
        raise ZooError(f"no models tagged {zoo_tag!r} (build a zoo with `zoo population`)")
    inputs = [Parent(r["id"], "zoo") for r in rows]
    return run_operator(catalog, "generate.d2nwg.train", inputs, {k: v for k, v in params.items() if v is not None},
                        out, progress=progress, reuse=reuse)


def pdiff_train(catalog: Catalog, ref: str, task: str, out: str | None = None, progress=None, reuse: bool = True,
                **params) -> RunResult:
    """Collect a parameter subset's checkpoints from continued training of `ref`, learn them (p-diff)."""
    return run_operator(catalog, "generate.pdiff.train", [Parent(catalog.get(ref).id, "base")],
                        {"task": task, **{k: v for k, v in params.items() if v is not None}}, out, progress=progress,
                        reuse=reuse)


def sample(catalog: Catalog, generator: str, task: str | None, n: int, seed: int = 0, steps: int = 50,
           finetune_steps: int = 0, progress=None) -> list[RunResult]:
    """n models from one seeded batch of the generator, each registered with lineage
    (role `generator`) and evaluated on the task."""
    gen = catalog.get(generator)
    label = (task or "model").replace(":", "-").replace(",", "_")
    results = []
    for i in range(n):
        params = {"task": task, "n": n, "index": i, "seed": seed, "steps": steps, "finetune_steps": finetune_steps}
        results.append(run_operator(catalog, "generate.sample", [Parent(gen.id, "generator")], params,
                                    f"{gen.name}-{label}-s{seed}-{i}"))
        if progress is not None:
            progress(1)
    return results


# ----- `zoo population` ---------------------------------------------------------------------
def parse_int_list(text: str, what: str, unique: bool = True) -> list[int]:
    """'0,1,2' or '0-4' (or a mix) -> [ints] (repeats dropped if `unique`); one-line
    ZooError otherwise."""
    from zoo.errors import ZooError

    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ZooError(f"{what} {text!r}: expected numbers like 0,1,2 or 0-4") from None
    if not out:
        raise ZooError(f"{what} {text!r}: expected at least one number")
    return list(dict.fromkeys(out)) if unique else out


def population_tasks(tasks, subsets: int = 0, perms: int = 0, task_seed: int = 0) -> list[str]:
    """The tasks of a population: `tasks` as given, then `subsets` distinct random class
    subsets of 3 to 7 digits (e.g. digits:1,4,7; the same for the same `task_seed`), then
    digits:perm0 .. digits:perm{perms-1}; duplicates dropped."""
    import random

    from zoo.errors import ZooError

    if subsets < 0 or perms < 0:
        raise ZooError("population: --subsets and --perms must be 0 or more")
    if subsets > 912:  # subsets of 3 to 7 of 10 digits: 120 + 210 + 252 + 210 + 120
        raise ZooError(f"population: there are only 912 class subsets of 3 to 7 digits, not {subsets}")
    rng, drawn = random.Random(task_seed), []
    while len(drawn) < subsets:
        spec = "digits:" + ",".join(str(c) for c in sorted(rng.sample(range(10), rng.randint(3, 7))))
        if spec not in drawn:
            drawn.append(spec)
    out = list(dict.fromkeys([*tasks, *drawn, *(f"digits:perm{i}" for i in range(perms))]))
    if not out:
        raise ZooError("population: no tasks; give --task T, --subsets N or --perms N")
    return out


@dataclass
class PopulationRun:
    entries: list
    tasks: list[str]
    seeds: list[int]
    seconds: float
    timings: dict

    @property
    def accuracies(self) -> list[float]:
        return [next(v for k, v in (e.metrics or {}).items() if k.endswith("/accuracy")) for e in self.entries]


def population_command(catalog: Catalog, *, tasks, subsets: int, perms: int, task_seed: int, seeds: str, steps: int,
                       lr: float, batch_size: int, hidden: str, init_seed: int, prefix: str,
                       progress_factory) -> PopulationRun:
    """`zoo population`: build the task list, train and register the population (one
    `generate.population` run; the same command again reuses it)."""
    import time

    from .zoo_builder import build_population

    all_tasks = population_tasks(tasks, subsets, perms, task_seed)
    seed_list = parse_int_list(seeds, "--seeds")
    sizes = (64, *parse_int_list(hidden, "--hidden", unique=False), 10) if hidden.strip() else (64, 10)
    timings: dict = {}
    t0 = time.perf_counter()
    with progress_factory("training population", total=steps + len(all_tasks) * len(seed_list)) as advance:
        entries = build_population(catalog, all_tasks, seed_list, steps=steps, lr=lr, batch_size=batch_size,
                                   layer_sizes=sizes, init_seed=init_seed, prefix=prefix, progress=advance,
                                   timings=timings)
    return PopulationRun(entries, all_tasks, seed_list, time.perf_counter() - t0, timings)
