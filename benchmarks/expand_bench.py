#!/usr/bin/env python
"""LEMON expansion benchmark.

1. Speed: expand a ~1B-parameter Llama (TinyLlama shapes, bfloat16) to a larger width and
   depth with `expand.lemon` (in process, the source catalogued first), and compare with
   copying bytes in the same run, right beside it: `cp -r` + `sync` of the source, and of
   the output itself (as many bytes as the expansion writes). Each of the three is timed
   `--repeats` times, interleaved, and the medians are reported with the ratios. Goal:
   expansion <= 2x the time of copying as many bytes as the output.
2. Training: on `pytext`, train a small GPT-2, expand it 2x in width and depth with LEMON,
   and train on with LEMON's schedule; train the large shape from scratch for the same
   number of steps. Report the steps each needs to reach the scratch model's final
   evaluation loss. Goal: the expanded model needs <= 50% of the scratch model's steps.

The source checkpoint (2.2 GB) is built under --out (default: a folder in /tmp), and every
big file is deleted afterwards unless --keep.

    python benchmarks/expand_bench.py [--skip-speed] [--skip-training] [--steps 800] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo import Catalog, Parent  # noqa: E402
from zoo.families import family_of  # noqa: E402
from zoo.runner import run_operator  # noqa: E402
from zoo.tasks import get_task  # noqa: E402
from zoo.training import TrainParams, new_model, train_model  # noqa: E402

TARGET = {"hidden_size": 2560, "num_heads": 40, "intermediate_size": 7040, "num_layers": 28}
SPEED_GOAL = 2.0  # expansion time / time of copying as many bytes as the output


def llama_source(path: Path) -> Path:
    """The merge benchmark's base checkpoint (TinyLlama shapes, bfloat16), built alone."""
    import merge_bench

    from zoo.writer import CheckpointWriter, TensorSpec

    if (path / "config.json").exists():
        return path
    config = merge_bench.llama_config("tinyllama")
    layout = merge_bench.tensor_layout(config)
    print(f"building the 1.1B source in {path} ...", flush=True)
    with CheckpointWriter(path, [TensorSpec(n, s, "bfloat16") for n, s in layout],
                          config=merge_bench.config_dict(config), max_shard_size=merge_bench.SHARD_SIZE) as w:
        for name, shape in layout:
            w.write(name, merge_bench.base_tensor(name, shape))
    return path


def copy_and_sync(src: Path, dst: Path) -> float:
    """Seconds for `cp -r src dst` and `sync` (dst removed first, outside the timing)."""
    shutil.rmtree(dst, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(dst, ignore_errors=True)
    return seconds


def bench_speed(out: Path, repeats: int, keep: bool) -> dict:
    """A first, untimed expansion warms up the process and leaves an output to copy (read
    once, so that both copies read from the page cache, as the expansion does); then each
    repeat times the three jobs in a rotated order (so that none always runs right after
    another's writes), each after a `sync`."""
    src = llama_source(out / "source")
    size = sum(p.stat().st_size for p in src.iterdir())
    work = Path(tempfile.mkdtemp(dir=out))
    runs: list[dict] = []
    try:
        subprocess.run(["cat", *map(str, src.iterdir())], stdout=subprocess.DEVNULL, check=True)  # warm cache
        cat = Catalog(work / "c.db", store=work / "store")
        entry = cat.add(src, name="tinyllama").entry

        def expand() -> object:
            return run_operator(cat, "expand.lemon", [Parent(entry.id, "source")], TARGET, "tinyllama-grown",
                                reuse=False).entry

        reference = expand()  # untimed: its output is what "copying the output" copies
        out_bytes, out_params = reference.bytes, reference.num_params
        subprocess.run(["cat", *map(str, Path(reference.path).iterdir())], stdout=subprocess.DEVNULL, check=True)
        fam, cfg = family_of(cat.open(reference))
        widths = vars(fam.widths(cfg))

        def timed_expand() -> dict:
            subprocess.run(["sync"], check=True)
            t0, c0 = time.perf_counter(), time.process_time()
            grown = expand()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            cat.remove(grown)
            shutil.rmtree(grown.path, ignore_errors=True)
            return {"expand_s": seconds, "expand_cpu_s": cpu}

        jobs = {"copy_source_s": lambda: {"copy_source_s": copy_and_sync(src, work / "copy")},
                "copy_output_s": lambda: {"copy_output_s": copy_and_sync(Path(reference.path), work / "copy")},
                "expand_s": timed_expand}
        names = list(jobs)
        for i in range(repeats):
            load = os.getloadavg()[0]
            order = names[i % 3:] + names[: i % 3]
            run = {"order": order, "load_before": load}
            for name in order:
                run.update(jobs[name]())
            run["load_after"] = os.getloadavg()[0]
            run["ratio_to_copy_output"] = run["expand_s"] / run["copy_output_s"]
            run["ratio_to_scaled_copy_source"] = run["expand_s"] / (run["copy_source_s"] * out_bytes / size)
            runs.append(run)
            print(f"  run {i + 1} ({', '.join(n.removesuffix('_s') for n in order)}): cp source "
                  f"{run['copy_source_s']:.2f} s, cp output {run['copy_output_s']:.2f} s, expand {run['expand_s']:.2f} s "
                  f"({run['expand_cpu_s']:.1f} CPU-s) -> {run['ratio_to_copy_output']:.2f}x / "
                  f"{run['ratio_to_scaled_copy_source']:.2f}x  (load {load:.1f}-{run['load_after']:.1f})", flush=True)
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "order"}
        return {"source": str(src), "source_bytes": size, "output_bytes": out_bytes,
                "source_params": entry.num_params, "output_params": out_params, "target": TARGET, "widths": widths,
                "repeats": repeats, "runs": runs, "median": median}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            shutil.rmtree(src, ignore_errors=True)


def curve(model, task, config, params: TrainParams, every: int) -> list[tuple[int, float]]:
    """Train and evaluate every `every` steps; [(steps done, eval loss)], starting at 0."""
    points = [(0, task.evaluate(model.eval(), config)["loss"])]

    def log(step: int, _loss: float, m) -> None:
        if (step + 1) % every == 0:
            points.append((step + 1, task.evaluate(m.eval(), config)["loss"]))
            m.train()

    train_model(model, task, config, params, log=log)
    return points


def steps_to_reach(points: list[tuple[int, float]], target: float) -> int | None:
    return next((s for s, loss in points if loss <= target), None)


def bench_training(out: Path, steps: int, small_steps: int, every: int) -> dict:
    work = Path(tempfile.mkdtemp(dir=out))
    try:
        cat = Catalog(work / "c.db")
        task = get_task("pytext")
        small = new_model(cat, "gpt2-tiny", "small", seed=0, n_embd=64, n_layer=2, n_head=4).entry
        fam, cfg = family_of(cat.open(small))
        model = fam.load(cat.open(small)).float()
        lr = 3e-3
        t0 = time.perf_counter()
        small_curve = curve(model, task, cfg, TrainParams(task="pytext", steps=small_steps, lr=lr, batch_size=32,
                                                          schedule="cosine", seed=1), every)
        small_s = time.perf_counter() - t0
        from zoo.writer import save_tensors

        path = work / "small-trained"
        save_tensors(path, {k: v.detach().clone() for k, v in model.state_dict().items()
                            if k != "lm_head.weight"}, config={**model.config.to_dict(), "architectures": ["GPT2LMHeadModel"]})
        trained = cat.add(path, name="small-trained").entry
        big = run_operator(cat, "expand.lemon", [Parent(trained.id, "source")],
                           {"hidden_size": 128, "num_layers": 4}, "lemon-128x4").entry
        bfam, bcfg = family_of(cat.open(big))
        expanded = bfam.load(cat.open(big)).float()
        p = TrainParams(task="pytext", steps=steps, lr=lr, batch_size=32, schedule="lemon", seed=2)
        t0 = time.perf_counter()
        lemon_curve = curve(expanded, task, bcfg, p, every)
        lemon_s = time.perf_counter() - t0
        scratch_entry = new_model(cat, "gpt2-tiny", "scratch", seed=0, n_embd=128, n_layer=4, n_head=8).entry
        scratch = bfam.load(cat.open(scratch_entry)).float()
        t0 = time.perf_counter()
        scratch_curve = curve(scratch, task, bcfg, TrainParams(task="pytext", steps=steps, lr=lr, batch_size=32,
                                                               schedule="cosine", seed=2), every)
        scratch_s = time.perf_counter() - t0
        target = scratch_curve[-1][1]
        need_lemon, need_scratch = steps_to_reach(lemon_curve, target), steps_to_reach(scratch_curve, target)
        return {"small": "gpt2 64x2", "large": "gpt2 128x4", "small_steps": small_steps, "steps": steps,
                "small_final_loss": small_curve[-1][1], "expanded_start_loss": lemon_curve[0][1],
                "scratch_final_loss": target, "lemon_final_loss": lemon_curve[-1][1],
                "steps_to_target": {"lemon": need_lemon, "scratch": need_scratch},
                "ratio": (need_lemon / need_scratch) if need_lemon is not None and need_scratch else None,
                "seconds": {"small": small_s, "lemon": lemon_s, "scratch": scratch_s},
                "curves": {"small": small_curve, "lemon": lemon_curve, "scratch": scratch_curve}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("scratch", "-"), ("lemon", "-")):
        xs, ys = zip(*result["curves"][name])
        ax.plot(xs, ys, style, label=f"{name} ({result['large']})")
    ax.axhline(result["scratch_final_loss"], color="grey", lw=0.8, ls="--", label="scratch final loss")
    ax.set_xlabel("training steps of the large shape")
    ax.set_ylabel("pytext eval loss (nats/byte)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "weightzoo-bench" / "expand")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--steps", type=int, default=800, help="training steps of the large shape (both runs)")
    ap.add_argument("--small-steps", type=int, default=800, help="pretraining steps of the small model")
    ap.add_argument("--every", type=int, default=25, help="evaluate every N steps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the 2.2 GB source checkpoint for the next run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    results: dict = {}
    if not args.skip_speed:
        s = results["speed"] = bench_speed(args.out, args.repeats, args.keep)
        m = s["median"]
        print(f"== expansion speed: {s['source_params'] / 1e9:.2f}B -> {s['output_params'] / 1e9:.2f}B params "
              f"(bfloat16), medians of {args.repeats} interleaved runs")
        print(f"  cp -r source ({s['source_bytes'] / 1e9:.2f} GB) + sync   {m['copy_source_s']:7.2f} s")
        print(f"  cp -r output ({s['output_bytes'] / 1e9:.2f} GB) + sync   {m['copy_output_s']:7.2f} s")
        print(f"  zoo expand.lemon (writes {s['output_bytes'] / 1e9:.2f} GB)  {m['expand_s']:7.2f} s "
              f"({m['expand_cpu_s']:.1f} CPU-s)")
        worst = max(m["ratio_to_copy_output"], m["ratio_to_scaled_copy_source"])
        print(f"  ratio to copying as many bytes as the output: {m['ratio_to_copy_output']:.2f}x (cp of the output), "
              f"{m['ratio_to_scaled_copy_source']:.2f}x (cp of the source, scaled by bytes)  [goal <= {SPEED_GOAL:g}x: "
              f"{'PASS' if worst <= SPEED_GOAL else 'MISS'}]")
    if not args.skip_training:
        t = results["training"] = bench_training(args.out, args.steps, args.small_steps, args.every)
        print(f"== pytext: {t['small']} trained {t['small_steps']} steps (loss {t['small_final_loss']:.3f}), "
              f"LEMON-expanded to {t['large']} (start loss {t['expanded_start_loss']:.3f}) vs {t['large']} from scratch")
        st = t["steps_to_target"]
        print(f"  scratch final loss after {t['steps']} steps: {t['scratch_final_loss']:.3f}; LEMON final: "
              f"{t['lemon_final_loss']:.3f}")
        ratio = f"{t['ratio']:.0%}" if t["ratio"] is not None else "n/a"
        print(f"  steps to reach it: LEMON {st['lemon']}, scratch {st['scratch']} -> {ratio} "
              f"[goal <= 50%: {'PASS' if t['ratio'] is not None and t['ratio'] <= 0.5 else 'MISS'}]")
        plot(t, args.out / "lemon_vs_scratch.png")
        print(f"  plot: {args.out / 'lemon_vs_scratch.png'}")
    path = args.out / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **results}, indent=2))  # a partial run keeps the other part
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
