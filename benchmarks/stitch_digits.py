"""Stitching on digits, end to end: three ViT anchors of increasing width trained with
`zoo train`, stitched with SN-Net (v1 and v2) and briefly trained; a Learngene Pool
distilled from the largest anchor. Reports each network's configurations (FLOPs and
test-accuracy ranges, Pareto front (selected on the validation split), how many lie
within 1 point of the line between neighbouring anchors), stored parameters, and stitched
training throughput against
training the largest anchor alone; draws the Pareto picture.

    python benchmarks/stitch_digits.py            # ~10 minutes on 2 CPU cores
    python benchmarks/stitch_digits.py --quick    # smaller, for a smoke run
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from stitching import frontend
from stitching.measure import near_interpolation
from zoo.catalog import Catalog, Parent
from zoo.families import family_of
from zoo.runner import run_operator
from zoo.tasks import get_task
from zoo.training import TrainParams, new_model, train, train_model

OUT = Path(__file__).resolve().parent.parent / "bench-out" / "stitch"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def summary(name: str, configs, stored: int) -> dict:
    anchors = [(c.stats["flops"], c.stats["test/accuracy"]) for c in configs if c.kind == "anchor"]
    stitched = [(c.id, c.stats["flops"], c.stats["test/accuracy"]) for c in configs if c.kind != "anchor"]
    hits, between = near_interpolation(stitched, anchors, tol=0.01)
    flops = [c.stats["flops"] for c in configs]
    acc = [c.stats["test/accuracy"] for c in configs]
    params = [c.stats["params"] for c in configs]
    return {"network": name, "configs": len(configs), "pareto": sum(bool(c.stats.get("pareto")) for c in configs),
            "mflops": [min(flops) / 1e6, max(flops) / 1e6], "accuracy": [min(acc), max(acc)],
            "params": [min(params), max(params)], "stored_params": stored,
            "within_1pt_of_anchor_line": f"{hits}/{between}"}


def throughput(cat: Catalog, net_ref: str, largest_ref: str, steps: int, batch: int) -> dict:
    """Images/s of stitched training (one sampled config per step) vs the largest anchor alone."""
    from stitching.snnet import SNNetParams, train_network

    task = get_task("digits")

    def images_per_s(ref: str, run) -> float:
        fam, config = family_of(cat.open(ref))
        model = fam.load(cat.open(ref)).float()
        t0 = time.perf_counter()
        run(model, task, config)
        return steps * batch / (time.perf_counter() - t0)

    stitched = images_per_s(net_ref, lambda m, t, c: train_network(
        m, t, c, SNNetParams(task="digits", steps=steps, batch_size=batch)))
    alone = images_per_s(largest_ref, lambda m, t, c: train_model(
        m, t, c, TrainParams(task="digits", steps=steps, batch_size=batch)))
    return {"stitched_images_per_s": round(stitched), "largest_anchor_images_per_s": round(alone),
            "ratio": round(stitched / alone, 2)}


def plot(networks: dict[str, list], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    styles = {"SN-Net v1": ("tab:blue", "o"), "SN-Net v2": ("tab:orange", "x"), "Learngene Pool": ("tab:green", "s")}
    for name, configs in networks.items():
        color, marker = styles[name]
        pts = [(c.stats["flops"] / 1e6, c.stats["test/accuracy"]) for c in configs if c.kind != "anchor"]
        ax.scatter(*zip(*pts), s=16, color=color, marker=marker, alpha=0.65, label=f"{name} ({len(pts)} stitched)")
    anchors = [c for c in networks["SN-Net v1"] if c.kind == "anchor"]
    ax.plot([c.stats["flops"] / 1e6 for c in anchors], [c.stats["test/accuracy"] for c in anchors], "k*--", ms=13,
            lw=0.8, label="anchors (ViT-Ti/S/B shapes)")
    ax.set_xscale("log")
    ax.set_xticks([0.5, 1, 2, 5, 10, 20])
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("MFLOPs per image (log scale)")
    ax.set_ylabel("digits test accuracy")
    ax.set_title("Stitched configurations on digits")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--depth", type=int, default=6)
    args = ap.parse_args()
    steps = 120 if args.quick else 800
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    cat = Catalog(OUT / "catalog.db", store=OUT / "store")
    t_all = time.perf_counter()
    anchors = []
    for preset in ("vit-ti", "vit-s", "vit-b"):
        init = new_model(cat, preset, f"{preset}-init", num_hidden_layers=args.depth).entry.ref
        r = train(cat, init, "digits", preset, steps=steps, lr=2e-3, schedule="cosine", warmup_steps=20)
        print(f"anchor {preset}: accuracy {r.entry.metrics['digits/accuracy']:.3f}, {r.entry.num_params:,} params, "
              f"{r.seconds:.0f} s")
        anchors.append(r.entry.ref)
    results, networks = [], {}
    for version in ("v1", "v2"):
        t0 = time.perf_counter()
        r = frontend.build(cat, anchors, "digits", f"snnet-{version}", version=version, steps=steps, lr=5e-4)
        _, configs = frontend.network(cat, r.entry.ref)
        networks[f"SN-Net {version}"] = configs
        results.append({**summary(f"SN-Net {version}", configs, r.entry.num_params),
                        "seconds": round(time.perf_counter() - t0)})
    t0 = time.perf_counter()
    r = run_operator(cat, "learngene.pool", [Parent(anchors[-1], "teacher")],
                     {"task": "digits", "distill_steps": steps, "steps": steps, "aux_hidden": [24, 48]}, "pool")
    _, configs = frontend.network(cat, "pool")
    networks["Learngene Pool"] = configs
    results.append({**summary("Learngene Pool", configs, r.entry.num_params), "seconds": round(time.perf_counter() - t0)})
    speed = throughput(cat, "snnet-v1", anchors[-1], steps=60 if args.quick else 200, batch=64)
    for row in results:
        print(json.dumps(row))
    print("training throughput (CPU):", json.dumps(speed))
    DOCS.mkdir(exist_ok=True)
    plot(networks, DOCS / "stitch_pareto.png")
    (OUT / "results.json").write_text(json.dumps({"networks": results, "throughput": speed}, indent=2))
    print(f"wrote {DOCS / 'stitch_pareto.png'} and {OUT / 'results.json'} in {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
