#!/usr/bin/env python
"""Scale-out figures on a GPU machine: merges and LEMON expansions with `--device cuda`
against the CPU, the merge math against the GPU's memory bandwidth, and training-based
operators (SN-Net stitching, p-diff generator training) under accelerate on the GPU
against the same run on the CPU.

    python benchmarks/gpu_scaleout.py [--out bench-out/gpu] [--config tinyllama] [--steps 300]

1. Streaming (end to end): TinyLlama-1.1B-shaped bf16 checkpoints (base + 2 fine-tunes,
   built by merge_bench.build_inputs, page cache warm). TIES and task arithmetic, and a
   LEMON expansion to 2560 hidden / 28 layers, each timed as the operator's run (read,
   math, write) on `cpu` and on `cuda`. Bytes moved = inputs read + output written.
2. Merge math on resident GPU tensors (a 5632x2048 float32 tensor per model): effective
   bandwidth = (3 tensors read + 1 written) / time, against a device-to-device copy
   measured in the same run and the H100's 3.35 TB/s nominal HBM3 bandwidth; the host to
   device copy (pageable) is measured as the bound of the streaming path.
3. Training under accelerate: `stitch.snnet` over two random ViT anchors on digits and
   `generate.pdiff.train` on a ViT, run in a subprocess with CUDA_VISIBLE_DEVICES unset
   (GPU) and empty (CPU); the operators' own `train_seconds` are compared.

Results are printed and written to OUT/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
HBM_NOMINAL = {"H100": 3.35e12, "H200": 4.8e12}
EXPAND_TARGETS = {"tinyllama": {"hidden_size": 2560, "num_heads": 40, "intermediate_size": 7040, "num_layers": 28},
                  "small": {"hidden_size": 768, "num_heads": 12, "intermediate_size": 2112, "num_layers": 6}}


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def streaming(out: Path, config: str) -> dict:
    import merge_bench

    import merging
    from zoo import Catalog, Parent
    from zoo.runner import run_operator

    inputs = merge_bench.build_inputs(out / "inputs", config)
    paths = inputs["paths"]
    for p in paths.values():  # warm the page cache for every run alike
        for f in Path(p).iterdir():
            f.read_bytes()
    cat = Catalog(out / "bench.db", store=out / "store")
    rows = {}
    for method, params in (("ties", {"density": 0.5}), ("task_arithmetic", {"lambda": 1.0})):
        for device in ("cpu", "cuda"):
            t0 = time.perf_counter()
            ck = merging.merge(method, base=paths["base"], models=[paths["ft1"], paths["ft2"]], weights=[0.5, 0.5],
                               catalog=cat, out=f"{method}-{device}", reuse=False, device=device, **params)
            seconds = cat.producing_run(ck.entry).seconds
            moved = inputs["bytes"] + ck.entry.bytes
            rows[f"merge.{method}/{device}"] = {"seconds": seconds, "wall": time.perf_counter() - t0,
                                                "bytes_moved": moved, "GB_per_s": moved / seconds / 1e9}
            cat.remove(ck.entry)
    base = cat.add(paths["base"], name="tinyllama").entry
    target = EXPAND_TARGETS[config]
    for device in ("cpu", "cuda"):
        r = run_operator(cat, "expand.lemon", [Parent(base.id, "source")], target, f"grown-{device}", reuse=False,
                         options={"device": device})
        moved = base.bytes + r.entry.bytes
        rows[f"expand.lemon/{device}"] = {"seconds": r.seconds, "bytes_moved": moved, "GB_per_s": moved / r.seconds / 1e9}
        cat.remove(r.entry)
    for key in ("merge.ties", "merge.task_arithmetic", "expand.lemon"):
        rows[f"{key}/speedup"] = rows[f"{key}/cpu"]["seconds"] / rows[f"{key}/cuda"]["seconds"]
    rows["params_per_input"] = inputs["params"]
    return rows


def merge_math() -> dict:
    from merging.apply import apply

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    shape = (5632, 2048)
    base = torch.randn(shape, device=dev, generator=g) * 0.02
    models = [base + torch.randn(shape, device=dev, generator=g) * 0.002 for _ in range(2)]
    nbytes = base.numel() * 4
    big = torch.empty(256 * 1024 * 1024, device=dev)
    d2d = timed(lambda: big.clone(), 5)
    host = torch.empty(256 * 1024 * 1024)
    h2d = timed(lambda: host.to(dev), 3)
    rows = {"d2d_copy_TB_per_s": 2 * big.numel() * 4 / d2d / 1e12, "h2d_pageable_GB_per_s": host.numel() * 4 / h2d / 1e9}
    name = torch.cuda.get_device_name()
    nominal = next((v for k, v in HBM_NOMINAL.items() if k in name), None)
    for method, params in (("task_arithmetic", {"lambda": 1.0}), ("ties", {"density": 0.5})):
        def run():
            apply(method, base, models, weight=[0.5, 0.5], **params)

        run()
        s = timed(run, 5)
        bw = 4 * nbytes / s
        rows[method] = {"seconds": s, "effective_TB_per_s": bw / 1e12, "of_d2d_copy": bw / 1e12 / rows["d2d_copy_TB_per_s"],
                        "of_nominal_hbm": bw / nominal if nominal else None}
        cpu_args = (base.cpu(), [m.cpu() for m in models])
        c = timed(lambda: apply(method, cpu_args[0], cpu_args[1], weight=[0.5, 0.5], **params), 2)
        rows[method].update(cpu_seconds=c, speedup=c / s)
    rows["device"] = name
    return rows


def training_run(steps: int) -> dict:
    """One process's training figures (the device is whatever accelerate picks)."""
    from zoo import Catalog, Parent
    from zoo.families import PRESETS
    from zoo.runner import run_operator

    work = Path(tempfile.mkdtemp())
    cat = Catalog(work / "c.db", store=work / "store")

    def init(preset: str) -> int:
        cfg = dict(PRESETS[preset])
        fam = cfg.pop("family")
        return run_operator(cat, "init.random", [], {"family": fam, "config": cfg}, preset).entry.id

    small, large = init("vit-s"), init("vit-b")
    snnet = run_operator(cat, "stitch.snnet", [Parent(small, "anchor"), Parent(large, "anchor")],
                         {"task": "digits", "steps": steps}, "net").entry
    pdiff = run_operator(cat, "generate.pdiff.train", [Parent(large, "base")],
                         {"task": "digits", "checkpoints": 40, "vae_steps": steps, "diffusion_steps": steps}, "gen").entry
    return {"device": "cuda" if torch.cuda.is_available() else "cpu", "steps": steps,
            "stitch.snnet": snnet.metrics["train_seconds"], "generate.pdiff.train": pdiff.metrics["train_seconds"],
            "snnet_test_accuracy": snnet.metrics.get("digits/accuracy")}


def training(steps: int) -> dict:
    rows = {}
    for label, env in (("cuda", {}), ("cpu", {"CUDA_VISIBLE_DEVICES": ""})):
        proc = subprocess.run([sys.executable, __file__, "--train-only", "--steps", str(steps)], capture_output=True,
                              text=True, env={**os.environ, **env}, check=True)
        rows[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    for op in ("stitch.snnet", "generate.pdiff.train"):
        rows[f"{op}/speedup"] = rows["cpu"][op] / rows["cuda"][op]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out/gpu"))
    ap.add_argument("--config", default="tinyllama", help="merge_bench input shapes: tinyllama or small")
    ap.add_argument("--steps", type=int, default=300, help="training steps per operator")
    ap.add_argument("--only", choices=["streaming", "math", "training"], action="append")
    ap.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.train_only:
        print(json.dumps(training_run(a.steps)))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA GPU: these figures need one", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    parts = a.only or ["math", "streaming", "training"]
    results = {"gpu": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "cpu_threads": torch.get_num_threads(),
               "torch": torch.__version__}
    for part in parts:
        t0 = time.perf_counter()
        results[part] = {"math": merge_math, "streaming": lambda: streaming(a.out, a.config),
                         "training": lambda: training(a.steps)}[part]()
        print(f"--- {part} ({time.perf_counter() - t0:.0f} s)\n{json.dumps(results[part], indent=1)}", flush=True)
    (a.out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
