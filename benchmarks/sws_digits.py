"""SWS learngenes on digits: the figures of the README's SWS section, from one run.

A `vit-s` teacher (4 layers) is trained with `zoo train`; a learngene (3 stages x 2 shared
layers) is distilled from it with `learngene.sws`; the gene is expanded to several depths
with `learngene.expand` and every expansion is evaluated on the test split with no further
training, next to the same architecture at random initialisation (baseline). Then the
9-layer expansion and a randomly initialised 9-layer ViT get the same few fine-tuning steps.
Prints one table (markdown) and writes bench-out/sws/results.json.

    python benchmarks/sws_digits.py            # about 1-2 minutes on 2 CPU cores, one thread
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

import stitching.sws  # noqa: F401  (registers learngene.sws and learngene.expand)
from stitching.sws import expand_learngene, sws
from zoo.catalog import Catalog
from zoo.training import evaluate, new_model, train

OUT = Path(__file__).resolve().parent.parent / "bench-out" / "sws"
DEPTHS = ([1, 1, 1], [2, 2, 2], [3, 3, 3], [1, 2, 3], [3, 1, 2])


def accuracy(cat: Catalog, ref) -> float:
    return evaluate(cat, ref, "digits")["digits/accuracy"]


def random_vit(cat: Catalog, layers: int, name: str) -> str:
    """The baseline: `vit-s` widths at `layers` layers, randomly initialised (seed 0)."""
    return new_model(cat, "vit-s", name, num_hidden_layers=layers).entry.ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-steps", type=int, default=200)
    ap.add_argument("--gene-steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-3, help="learngene learning rate (the command's default)")
    ap.add_argument("--finetune-steps", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic and comparable across machines
    torch.manual_seed(0)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    cat = Catalog(OUT / "catalog.db", store=OUT / "store")
    t_all = time.perf_counter()

    raw = new_model(cat, "vit-s", "vit-s").entry
    teacher = train(cat, raw.id, "digits", "teacher", steps=args.teacher_steps, lr=3e-3, batch_size=64).entry
    t0 = time.perf_counter()
    gene = sws(cat, teacher.id, "digits", "gene", stages=3, stage_length=2, steps=args.gene_steps, lr=args.lr,
               batch_size=64).entry
    gene_seconds = time.perf_counter() - t0
    print(f"teacher vit-s ({teacher.config['num_hidden_layers']} layers, {teacher.num_params:,} params, "
          f"{args.teacher_steps} steps): test accuracy {teacher.metrics['digits/accuracy']:.3f}")
    print(f"learngene: {gene.num_params:,} params, {args.gene_steps} steps at lr {args.lr:g} in {gene_seconds:.1f} s; "
          f"auxiliary model (3 stages x 2 shared layers): test accuracy {gene.metrics['digits/accuracy']:.3f}")

    rows = []
    for depths in DEPTHS:
        layers = sum(depths)
        grown = expand_learngene(cat, gene.id, depths, f"gene-{''.join(map(str, depths))}").entry
        base = random_vit(cat, layers, f"random-{layers}")
        rows.append({"depths": depths, "layers": layers, "params": grown.num_params,
                     "accuracy": accuracy(cat, grown.id), "random_init_accuracy": accuracy(cat, base)})

    ft = {}
    for name, ref in (("gene 3,3,3", "gene-333"), ("random init 9 layers", "random-9")):
        tuned = train(cat, ref, "digits", f"{ref}-ft", steps=args.finetune_steps, lr=1e-3, batch_size=64).entry
        ft[name] = tuned.metrics["digits/accuracy"]

    print()
    print("| depths | layers | params | accuracy (no training) | same architecture, random init |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {','.join(map(str, r['depths']))} | {r['layers']} | {r['params'] / 1e3:.1f}k | {r['accuracy']:.3f} "
              f"| {r['random_init_accuracy']:.3f} |")
    print()
    print(f"after {args.finetune_steps} fine-tuning steps (lr 1e-3): " +
          ", ".join(f"{k} {v:.3f}" for k, v in ft.items()))
    results = {"args": vars(args), "teacher_accuracy": teacher.metrics["digits/accuracy"],
               "teacher_params": teacher.num_params, "gene_params": gene.num_params,
               "gene_seconds": round(gene_seconds, 2), "auxiliary_accuracy": gene.metrics["digits/accuracy"],
               "expanded": rows, "finetuned": ft, "seconds": round(time.perf_counter() - t_all, 1)}
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {OUT / 'results.json'} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
