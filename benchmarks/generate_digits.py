"""Weight generation on digits, end to end: a zoo of 200 MLPs on 100 class-subset tasks
(`zoo population`), a D2NWG generator trained on it, models generated with zero training
steps for 10 held-out tasks no zoo model saw, compared with zoo models trained on those
tasks and with random init; conditioning (samples for A vs for B, scored on A);
fine-tuning from generated weights vs random init; p-diff on one training run with its
memorisation check. Writes bench-out/generate/results.json and docs/generate_digits.png.

    OMP_NUM_THREADS=1 python benchmarks/generate_digits.py     # everything; p-diff runs twice (noise on/off)
    OMP_NUM_THREADS=1 python benchmarks/generate_digits.py --pdiff-only [checkpoints=50 ...]
        # p-diff alone, with and without its noise augmentation (other p-diff params as name=value)
"""
from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from generators import frontend
from generators.wgen.memorization import nearest_agreement, nearest_distance, wrong_iou
from generators.wgen.operators import load_generator, task_summary
from generators.zoo_builder import build_population
from zoo.catalog import Catalog
from zoo.families import family_of, get_family
from zoo.tasks import get_task
from zoo.training import TrainParams, train_model

OUT = Path(__file__).resolve().parent.parent / "bench-out" / "generate"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def subset_tasks(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < n:
        seen.add(tuple(sorted(rng.sample(range(10), rng.randint(3, 7)))))
    tasks = ["digits:" + ",".join(map(str, s)) for s in sorted(seen)]
    rng.shuffle(tasks)
    return tasks


def load(cat: Catalog, ref: str):
    ckpt = cat.open(ref)
    fam, config = family_of(ckpt)
    return fam.load(ckpt).float(), config


def steps_to(model, task, config: dict, target: float, max_steps: int = 300, every: int = 5) -> int | None:
    """Training steps (Adam, the zoo's recipe) until test accuracy first reaches `target`."""
    if task.evaluate(model, config)["accuracy"] >= target:
        return 0
    hit: list[int] = []

    def log(step: int, loss: float, m) -> None:
        if not hit and (step + 1) % every == 0 and task.evaluate(getattr(m, "module", m).eval(), config)["accuracy"] >= target:
            hit.append(step + 1)
        getattr(m, "module", m).train()

    train_model(model, task, config, TrainParams(task=task.name, steps=max_steps, lr=1e-2, batch_size=64), log=log)
    return hit[0] if hit else None


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    cat = Catalog(OUT / "catalog.db", store=OUT / "store")
    if "--pdiff-only" in sys.argv[1:]:  # then p-diff params as name=value, e.g. checkpoints=50 collect_lr=0.01
        settings = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[1:] if "=" in a)}
        (OUT / "pdiff.json").write_text(json.dumps(pdiff_with_and_without_noise(cat, **settings), indent=2))
        return
    tasks = subset_tasks(110)
    train_tasks, held = tasks[:100], tasks[100:]
    t0 = time.perf_counter()
    build_population(cat, train_tasks, [0, 1], steps=300, prefix="zoo")
    zoo_seconds = time.perf_counter() - t0
    build_population(cat, held, [0, 1], steps=300, prefix="heldout")  # references only, never shown to the generator
    t0 = time.perf_counter()
    gen_run = frontend.d2nwg_train(cat, "zoo", "d2nwg")
    train_seconds = time.perf_counter() - t0
    gen = load_generator(cat.open("d2nwg"))
    cfg = cat.open("d2nwg").config
    t0 = time.perf_counter()
    gen.sample(100, task_summary(held[0], cfg["support"], cfg["support_seed"]).unsqueeze(0), seed=0)
    sample_100 = time.perf_counter() - t0

    heldout_rows = {r["name"]: r for r in cat.ls(tag="heldout")}
    rows = []
    for task_spec in held:
        task = get_task(task_spec)
        key = f"{task_spec}/accuracy"
        zoo_acc = statistics.mean(r["metrics"][key] for r in heldout_rows.values() if key in (r["metrics"] or {}))
        generated = frontend.sample(cat, "d2nwg", task_spec, 20, seed=0)
        gen_acc = statistics.mean(g.entry.metrics[key] for g in generated)
        other = held[(held.index(task_spec) + 1) % len(held)]
        model, mcfg = load(cat, frontend.sample(cat, "d2nwg", other, 20, seed=0)[0].entry.ref)
        cross = task.evaluate(model, mcfg)["accuracy"]
        torch.manual_seed(1)
        fresh = get_family("zoo_mlp").build(mcfg)
        rand_acc = task.evaluate(fresh, mcfg)["accuracy"]
        target = 0.95 * zoo_acc
        ft_gen = steps_to(load(cat, generated[0].entry.ref)[0], task, mcfg, target)
        ft_rand = steps_to(fresh, task, mcfg, target)
        rows.append({"task": task_spec, "zoo_accuracy": round(zoo_acc, 4), "generated_accuracy": round(gen_acc, 4),
                     "ratio": round(gen_acc / zoo_acc, 3), "samples_for_other_task": round(cross, 4),
                     "random_init": round(rand_acc, 4), "steps_to_95pct_generated": ft_gen,
                     "steps_to_95pct_random": ft_rand})
        print(json.dumps(rows[-1]))
    d2 = {"zoo_models": 200, "zoo_build_seconds": round(zoo_seconds, 1), "train_seconds": round(train_seconds, 1),
          "generator_metrics": gen_run.entry.metrics, "sample_100_models_seconds": round(sample_100, 2),
          "mean_zoo_accuracy": round(statistics.mean(r["zoo_accuracy"] for r in rows), 4),
          "mean_generated_accuracy": round(statistics.mean(r["generated_accuracy"] for r in rows), 4),
          "mean_ratio": round(statistics.mean(r["generated_accuracy"] for r in rows)
                              / statistics.mean(r["zoo_accuracy"] for r in rows), 3),
          "mean_random_init": round(statistics.mean(r["random_init"] for r in rows), 4),
          "mean_other_task_samples": round(statistics.mean(r["samples_for_other_task"] for r in rows), 4)}
    print(json.dumps(d2))
    pdiff = pdiff_with_and_without_noise(cat)
    plot(rows, DOCS / "generate_digits.png")
    (OUT / "results.json").write_text(json.dumps({"d2nwg": d2, "heldout": rows, "pdiff": pdiff}, indent=2))


def run_pdiff(cat: Catalog, name: str = "pdiff", **params) -> dict:
    """p-diff on one run: generated vs collected-checkpoint accuracy, and how close generated
    models are to their nearest checkpoint compared with checkpoints to each other (weights:
    L2; predictions: agreement, and p-diff's own IoU of wrongly classified test examples).
    A moment-matched noise "generator" (each tensor N(mean, std) of the checkpoints) is the
    floor generated models must clear. `params`: p-diff's (e.g. input_noise=0, latent_noise=0)."""
    from generators.wgen.layout import Normaliser, WeightLayout

    base = build_population(cat, ["digits"], [0], steps=300, prefix="pdiff-base")[0]
    t0 = time.perf_counter()
    run = frontend.pdiff_train(cat, base.ref, "digits", name, **params)
    seconds = time.perf_counter() - t0
    generated = frontend.sample(cat, name, None, 20, seed=0)
    task = get_task("digits")
    x, labels = task.split("test")
    collected = cat.open(name).get("collected")
    layout = WeightLayout.from_json(cat.open(name).config["generator"]["layout"])
    model, cfg = load(cat, generated[0].entry.ref)

    def predictions(vector: torch.Tensor) -> torch.Tensor:
        model.load_state_dict(layout.unflatten(vector), strict=False)
        with torch.no_grad():
            return model(pixel_values=x).logits.argmax(-1)

    def subset_vector(ref: str) -> torch.Tensor:
        ckpt = cat.open(ref)
        return torch.cat([ckpt.get(n).reshape(-1).float() for n in layout.names])

    norm = Normaliser.fit(layout, collected)
    noise = norm.inverse(torch.randn(20, layout.numel, generator=torch.Generator().manual_seed(0)))
    gen_vecs = torch.stack([subset_vector(g.entry.ref) for g in generated])
    ckpt_preds = torch.stack([predictions(v) for v in collected])
    gen_preds = torch.stack([predictions(v) for v in gen_vecs])
    noise_accs = [(predictions(v) == labels).float().mean().item() for v in noise]
    gen_accs = [g.entry.metrics["digits/accuracy"] for g in generated]
    return {"params": params, "train_seconds": round(seconds, 1),
            "checkpoint_accuracy": run.entry.metrics["pdiff/checkpoint_accuracy"],
            "generated_accuracy_mean": round(statistics.mean(gen_accs), 4),
            "generated_accuracy_range": [min(gen_accs), max(gen_accs)],
            "noise_accuracy_mean": round(statistics.mean(noise_accs), 4),
            "generated_to_nearest_checkpoint_agreement": round(nearest_agreement(gen_preds, ckpt_preds).mean().item(), 4),
            "checkpoint_to_nearest_other_agreement": round(nearest_agreement(ckpt_preds, ckpt_preds, True).mean().item(), 4),
            "generated_to_nearest_checkpoint_wrong_iou": round(wrong_iou(gen_preds, labels, ckpt_preds).mean().item(), 4),
            "checkpoint_to_nearest_other_wrong_iou": round(wrong_iou(ckpt_preds, labels, ckpt_preds, True).mean().item(), 4),
            "generated_to_nearest_checkpoint_l2": round(nearest_distance(gen_vecs, collected).mean().item(), 4),
            "checkpoint_to_nearest_other_l2": round(nearest_distance(collected, collected, True).mean().item(), 4),
            "noise_to_nearest_checkpoint_l2": round(nearest_distance(noise, collected).mean().item(), 4),
            "distinct_generated": len({tuple(p.tolist()) for p in gen_preds})}


def pdiff_with_and_without_noise(cat: Catalog, **settings) -> dict:
    """p-diff with its noise-augmented autoencoder (defaults) and with the noise off;
    `settings`: other p-diff params for both (e.g. checkpoints=50)."""
    out = {}
    for key, name, params in (("noise_augmented", "pdiff", {}),
                              ("no_noise", "pdiff-clean", {"input_noise": 0.0, "latent_noise": 0.0})):
        out[key] = run_pdiff(cat, name, **settings, **params)
        print(json.dumps({key: out[key]}))
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    idx = range(len(rows))
    w = 0.2
    for k, (key, label, color) in enumerate((("zoo_accuracy", "zoo models trained on the task", "tab:gray"),
                                             ("generated_accuracy", "D2NWG, 0 training steps", "tab:blue"),
                                             ("samples_for_other_task", "samples for another task", "tab:orange"),
                                             ("random_init", "random init", "tab:red"))):
        ax.bar([i + (k - 1.5) * w for i in idx], [r[key] for r in rows], w, label=label, color=color)
    ax.set_xticks(list(idx), [r["task"].split(":")[1] for r in rows], rotation=30, fontsize=7)
    ax.set_xlabel("held-out digits task (classes)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Weights generated for tasks no zoo model was trained on")
    ax.set_ylim(0, 1.3)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.legend(fontsize=7, loc="upper center", ncol=4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
