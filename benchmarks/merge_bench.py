#!/usr/bin/env python
"""Merge benchmark: `zoo merge` against `mergekit-yaml` on a ~1B-parameter Llama.

What it measures, and why:

1. Inputs. Three Hugging Face checkpoint folders with TinyLlama-1.1B shapes (hidden 2048,
   intermediate 5632, 22 layers, 32 heads, 4 kv heads, vocab 32000, untied lm_head) in
   bfloat16: `base` (normal, std 0.02; norm weights ones) and two fine-tunes `ft1`, `ft2`
   (base + gaussian noise of std 0.002, rounded to bfloat16). Names and shapes come from
   `LlamaForCausalLM(config)` built on the meta device; every tensor has its own seed and
   is streamed into `zoo.writer.CheckpointWriter` (2 GB shards), so building them holds a
   few tensors in memory at a time. Complete checkpoints already in --out are reused
   (they are only left there with --keep).

2. Speed and memory. For each method (TIES: density 0.5, weight 0.5 each, normalize by
   default; task_arithmetic: weight 0.5 each) one mergekit YAML is written (dtype
   bfloat16) and both tools run it as subprocesses, one after the other, each after the
   input files have been read once so the page cache is warm for both:
     ours:     zoo --catalog <fresh db> merge <yaml> --out bench-<method> --no-cache
     mergekit: mergekit-yaml <yaml> <outdir> [--lazy-unpickle when the flag exists]
   Wall time and peak RSS are measured per command (GNU `/usr/bin/time -v` when present,
   otherwise psutil polling of the process tree every 50 ms). Our wall time is the whole
   CLI call: interpreter start, hashing the three inputs into the fresh catalog, the
   merge, hashing and registering the output. Best of --repeats (time) and the largest
   peak RSS are reported.
   Goals: TIES >= 10x faster than mergekit, task_arithmetic >= 3x, our peak RSS <= 1.5 GB.

3. Agreement. Both outputs are read tensor by tensor (memory-mapped, in slices) and
   compared: max |ours - mergekit|, and the fraction of elements that differ by more than
   one bfloat16 ulp of the larger magnitude (|a-b| > 2**(floor(log2(max(|a|,|b|)))-7)).
   Zero means "equal within bfloat16 rounding". Our math runs in float32 while mergekit
   (dtype bfloat16) computes the deltas in bfloat16, and TIES' magnitude threshold is
   then taken over differently rounded values (both keep exactly k per tensor, but
   mergekit breaks ties at the threshold arbitrarily, we in order of position), so some
   elements near the
   TIES threshold are kept by one tool and dropped by the other: for TIES the fraction of
   elements where exactly one side moved away from the base is reported as well.

Results are printed and written to OUT/results.json; merged outputs are deleted at the
end (and the inputs too, unless --keep). Run with --help for the options.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

GOALS = {"ties": 15.0, "task_arithmetic": 5.0}  # minimum speed-up (mergekit time / ours)
SLOWER_THAN_TIES_MAX = {"della": 1.0, "sce": 1.0}  # our time / our TIES time (issue 16: no slower than TIES)
RSS_GOAL_BYTES = 1.0e9  # our peak RSS, bytes (1 GB, decimal)
BASE_STD = 0.02
NOISE_STD = 0.002
SHARD_SIZE = "2GB"
GEN_VERSION = 1  # bump when the way inputs are generated changes (invalidates reuse)
COMPARE_SLICE = 8 * 1024 * 1024  # elements per comparison slice

CONFIGS: dict[str, dict[str, Any]] = {
    # TinyLlama-1.1B shapes
    "tinyllama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5),
    # a quick smoke-test size (~15M parameters)
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, vocab_size=4000, max_position_embeddings=512, rms_norm_eps=1e-5),
}

METHODS: dict[str, dict[str, Any]] = {
    "ties": {"density": 0.5, "weight": 0.5},
    "task_arithmetic": {"weight": 0.5},
    "della": {"density": 0.5, "weight": 0.5, "epsilon": 0.1},
    "sce": {},  # no per-model parameters in mergekit
}
SHARED: dict[str, dict[str, Any]] = {"sce": {"select_topk": 0.5}}  # the methods' `parameters:`


# ----- small helpers -------------------------------------------------------------------

def tool(name: str) -> Path | None:
    """An entry point installed beside this interpreter (never a pyenv shim)."""
    p = Path(sys.executable).parent / name
    return p if p.is_file() and os.access(p, os.X_OK) else None


def zoo_argv() -> list[str]:
    p = tool("zoo")
    return [str(p)] if p else [sys.executable, "-m", "zoo"]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:,.2f} {unit}"
    return f"{n:.0f} B"


def read_all(files: Iterable[Path]) -> int:
    """Read every byte once (warms the page cache); returns the byte count."""
    n = 0
    buf = bytearray(16 * 2**20)
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                n += k
    return n


def folder_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file())


def clean_env() -> dict[str, str]:
    """The subprocesses' environment: no inherited catalog or store."""
    env = dict(os.environ)
    for key in ("ZOO_CATALOG", "ZOO_STORE", "ZOO_DEBUG"):
        env.pop(key, None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ----- measuring a subprocess -------------------------------------------------------------

def measure(argv: Sequence[str], log: Path) -> dict:
    """Run `argv` (stdout+stderr to `log`); wall time and peak RSS. Raises if it fails."""
    gnu_time = Path("/usr/bin/time")
    use_time = gnu_time.is_file() and os.access(gnu_time, os.X_OK)
    rss_file = log.with_suffix(".time")
    full = [str(gnu_time), "-v", "-o", str(rss_file), *argv] if use_time else list(argv)
    peak_poll = 0
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        if not use_time:
            peak_poll = _poll_rss(proc)
        rc = proc.wait()
        wall = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {rc}:\n{tail}")
    if use_time:
        text = rss_file.read_text(errors="replace")
        m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", text)
        peak = int(m.group(1)) * 1024 if m else None
        how = "GNU time -v (max RSS of the process)"
    else:
        peak = peak_poll
        how = "psutil, process tree RSS sum every 50 ms"
    return {"s": wall, "peak_rss": peak, "rss_method": how}


def _poll_rss(proc: subprocess.Popen) -> int:
    import psutil

    peak = 0
    try:
        root = psutil.Process(proc.pid)
    except psutil.Error:
        return 0
    while proc.poll() is None:
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = [root]
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(0.05)
    return peak


# ----- building the inputs ------------------------------------------------------------------

def llama_config(name: str):
    from transformers import LlamaConfig

    return LlamaConfig(**CONFIGS[name], tie_word_embeddings=False, torch_dtype="bfloat16")


def config_dict(config) -> dict:
    d = config.to_dict()
    d["architectures"] = ["LlamaForCausalLM"]
    d["model_type"] = "llama"
    d["torch_dtype"] = "bfloat16"
    d.pop("transformers_version", None)
    return d


def tensor_layout(config) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every saved tensor, from the model built on the meta device."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def seed_of(*key: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little") & (2**63 - 1)


def base_tensor(name: str, shape: tuple[int, ...]):
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(seed_of("base", name))
    return torch.randn(shape, generator=g, dtype=torch.float32).mul_(BASE_STD).to(torch.bfloat16)


def finetune_tensor(base, name: str, which: str):
    import torch

    g = torch.Generator().manual_seed(seed_of(which, name))
    noise = torch.randn(base.shape, generator=g, dtype=torch.float32).mul_(NOISE_STD)
    return noise.add_(base.float()).to(torch.bfloat16)


def inputs_marker(config_name: str, layout) -> dict:
    return {"generator_version": GEN_VERSION, "config": config_name, "base_std": BASE_STD, "noise_std": NOISE_STD,
            "shard_size": SHARD_SIZE, "tensors": len(layout), "params": sum(_numel(s) for _, s in layout)}


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def inputs_complete(root: Path, marker: dict, layout) -> bool:
    """The three folders are there, were made the same way, and hold every tensor."""
    from zoo.checkpoint import Checkpoint
    from zoo.errors import ZooError

    mark = root / "inputs.json"
    try:
        if json.loads(mark.read_text()) != marker:
            return False
        want = {n: s for n, s in layout}
        for role in ("base", "ft1", "ft2"):
            ck = Checkpoint.open(root / role)
            got = {n: ck.info(n).shape for n in ck.names()}
            if got != want or any(ck.info(n).dtype != "bfloat16" for n in got):
                return False
            if not (root / role / "config.json").is_file():
                return False
            for rel in ck.weight_files:  # header says how big each shard must be
                infos = [t for t in ck.tensors.values() if t.file == rel]
                if (root / role / rel).stat().st_size < max(t.end for t in infos):
                    return False
    except (OSError, ValueError, ZooError):
        return False
    return True


def build_inputs(root: Path, config_name: str) -> dict:
    """Make (or reuse) base, ft1 and ft2 under `root`; returns facts about them."""
    import torch

    from zoo.writer import CheckpointWriter, TensorSpec

    config = llama_config(config_name)
    layout = tensor_layout(config)
    marker = inputs_marker(config_name, layout)
    paths = {role: root / role for role in ("base", "ft1", "ft2")}
    info = {"root": str(root), "params": marker["params"], "tensors": len(layout), "config": config_name,
            "shapes": CONFIGS[config_name]}
    if inputs_complete(root, marker, layout):
        print(f"reusing the input checkpoints in {root}", flush=True)
        info.update(reused=True, build_s=0.0)
    else:
        print(f"building base, ft1, ft2 ({marker['params'] / 1e9:.2f} B params each, bfloat16) in {root} ...",
              flush=True)
        (root / "inputs.json").unlink(missing_ok=True)
        for p in paths.values():
            shutil.rmtree(p, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        specs = [TensorSpec(n, s, "bfloat16") for n, s in layout]
        cfg = config_dict(config)
        threads = torch.get_num_threads()
        t0 = time.perf_counter()
        with ExitStack() as stack:
            writers = {role: stack.enter_context(CheckpointWriter(p, specs, config=cfg, max_shard_size=SHARD_SIZE))
                       for role, p in paths.items()}
            for i, (name, shape) in enumerate(layout):
                base = base_tensor(name, shape)
                writers["base"].write(name, base)
                for which in ("ft1", "ft2"):
                    writers[which].write(name, finetune_tensor(base, name, which))
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1}/{len(layout)} tensors", flush=True)
        torch.set_num_threads(threads)
        (root / "inputs.json").write_text(json.dumps(marker, indent=2) + "\n")
        info.update(reused=False, build_s=time.perf_counter() - t0)
        print(f"  written in {info['build_s']:.1f} s", flush=True)
    info["bytes"] = sum(p.stat().st_size for role in paths.values() for p in folder_files(role))
    info["paths"] = {k: str(v) for k, v in paths.items()}
    return info


# ----- one method ----------------------------------------------------------------------------

def write_yaml(path: Path, method: str, inputs: dict, refs: dict | None = None) -> None:
    """The mergekit YAML; `refs` replaces the paths with catalog references (same merge)."""
    import yaml

    where = refs or inputs["paths"]
    doc = {
        "merge_method": method,
        "base_model": where["base"],
        "models": [{"model": where[ft], "parameters": dict(METHODS[method])} for ft in ("ft1", "ft2")],
        "dtype": "bfloat16",
    }
    if method in SHARED:
        doc["parameters"] = dict(SHARED[method])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


MERGEKIT_BEST_FLAGS = (("--async-write",), ("--write-threads", "2"), ("--lazy-unpickle",))


def mergekit_flags() -> list[str]:
    """mergekit's fastest CPU flags (asynchronous writing on 2 threads, lazy unpickling),
    each only when this mergekit-yaml knows it."""
    exe = tool("mergekit-yaml")
    if exe is None:
        return []
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=clean_env())
    return [part for flag in MERGEKIT_BEST_FLAGS if flag[0] in proc.stdout for part in flag]


def zoo_json(argv: Sequence[str]) -> dict:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=clean_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def bench_method(method: str, work: Path, inputs: dict, repeats: int, skip_mergekit: bool,
                 mk_flags: list[str], compute_dtype: str | None) -> dict:
    yaml_path = work / f"{method}.yaml"
    write_yaml(yaml_path, method, inputs)
    input_files = [p for role in inputs["paths"].values() for p in folder_files(Path(role))]
    name = f"bench-{method}"
    ours_runs, mk_runs = [], []
    ours_path = mk_out = None
    ours_dir = None
    for r in range(repeats):
        # ours: a fresh catalog (and store beside it) every time
        if ours_dir is not None:
            shutil.rmtree(ours_dir, ignore_errors=True)
        ours_dir = work / f"zoo-{method}-{r}"
        shutil.rmtree(ours_dir, ignore_errors=True)
        ours_dir.mkdir(parents=True)
        db = ours_dir / "catalog.db"
        # Cataloguing the inputs (hashing them for provenance) happens once per model in real
        # use; it is timed on its own, and the merge is timed on catalog references.
        _warm(input_files)
        t0 = time.perf_counter()
        for role, path in inputs["paths"].items():
            subprocess.run([*zoo_argv(), "--catalog", str(db), "add", str(path), "--name", f"in-{role}"],
                           check=True, capture_output=True, env=clean_env())
        index_s = time.perf_counter() - t0
        ref_yaml = work / f"{method}-refs.yaml"
        write_yaml(ref_yaml, method, inputs, refs={role: f"in-{role}" for role in inputs["paths"]})
        argv = [*zoo_argv(), "--catalog", str(db), "merge", str(ref_yaml), "--out", name, "--no-cache"]
        if compute_dtype:
            argv += ["--set", f"compute_dtype={compute_dtype}"]
        warm = _warm(input_files)
        print(f"  [{method} {r + 1}/{repeats}] zoo merge (inputs catalogued in {index_s:.1f} s) ... ", end="", flush=True)
        m = measure(argv, work / f"zoo-{method}-{r}.log")
        m["index_s"] = index_s
        shown = zoo_json([*zoo_argv(), "--catalog", str(db), "show", name, "--json"])
        ours_path = Path(shown["path"])
        m.update(warm_read_s=warm, merge_s=(shown.get("run") or {}).get("seconds"), path=str(ours_path),
                 command=" ".join(argv))
        ours_runs.append(m)
        print(f"{m['s']:.1f} s, peak RSS {human_bytes(m['peak_rss'])}", flush=True)
        if skip_mergekit:
            continue
        exe = tool("mergekit-yaml")
        if exe is None:
            raise RuntimeError("mergekit-yaml is not installed beside this interpreter (use --skip-mergekit)")
        if mk_out is not None:
            shutil.rmtree(mk_out, ignore_errors=True)
        mk_out = work / f"mergekit-{method}-{r}"
        shutil.rmtree(mk_out, ignore_errors=True)
        argv = [str(exe), str(yaml_path), str(mk_out), *mk_flags]
        warm = _warm(input_files)
        print(f"  [{method} {r + 1}/{repeats}] mergekit-yaml ... ", end="", flush=True)
        m = measure(argv, work / f"mergekit-{method}-{r}.log")
        m.update(warm_read_s=warm, path=str(mk_out), command=" ".join(argv))
        mk_runs.append(m)
        print(f"{m['s']:.1f} s, peak RSS {human_bytes(m['peak_rss'])}", flush=True)

    ours = summarise(ours_runs)
    ours["index_s"] = min(r["index_s"] for r in ours_runs)
    out: dict[str, Any] = {"yaml": yaml_path.read_text(), "ours": ours, "mergekit": None}
    if mk_runs:
        mk = summarise(mk_runs)
        speedup = mk["s"] / ours["s"]
        out["speedup_including_indexing"] = mk["s"] / (ours["s"] + ours["index_s"])
        rss_ratio = mk["peak_rss"] / ours["peak_rss"] if mk["peak_rss"] and ours["peak_rss"] else None
        out.update(mergekit=mk, speedup=speedup, rss_ratio=rss_ratio)
        print("  comparing outputs tensor by tensor ... ", end="", flush=True)
        t0 = time.perf_counter()
        out["compare"] = compare(ours_path, mk_out, inputs["paths"], method)
        print(f"{time.perf_counter() - t0:.1f} s", flush=True)
    out["goal"] = {
        "speedup_min": GOALS.get(method),
        "speedup": verdict(out["speedup"] >= GOALS[method]) if out.get("speedup") and method in GOALS else None,
        "compute_dtype": compute_dtype or "bfloat16 (the YAML's dtype)",
        "rss_max_bytes": RSS_GOAL_BYTES,
        "rss": verdict(ours["peak_rss"] is not None and ours["peak_rss"] <= RSS_GOAL_BYTES),
    }
    # merged outputs are not kept
    if ours_dir is not None:
        shutil.rmtree(ours_dir, ignore_errors=True)
    if mk_out is not None:
        shutil.rmtree(mk_out, ignore_errors=True)
    return out


def _warm(files: list[Path]) -> float:
    t0 = time.perf_counter()
    read_all(files)
    return time.perf_counter() - t0


def summarise(runs: list[dict]) -> dict:
    best = min(runs, key=lambda r: r["s"])
    peaks = [r["peak_rss"] for r in runs if r["peak_rss"] is not None]
    return {"s": best["s"], "times_s": [r["s"] for r in runs], "peak_rss": max(peaks) if peaks else None,
            "peak_rss_runs": [r["peak_rss"] for r in runs], "rss_method": best["rss_method"],
            "merge_s": best.get("merge_s"), "command": best["command"]}


# ----- comparing outputs ----------------------------------------------------------------------

def compare(ours_path: Path, mk_path: Path, input_paths: dict, method: str) -> dict:
    """Tensor by tensor, slice by slice, from memory maps.

    TIES: also how many elements each side moved away from the base (its kept density,
    roughly), and where exactly one side did. task_arithmetic: also each side against the
    exact result, base + sum_i w_i (ft_i - base) in float64 rounded once to bfloat16."""
    import torch

    from zoo.checkpoint import Checkpoint

    ties, exact = method == "ties", method == "task_arithmetic"
    ours, mk = Checkpoint.open(ours_path), Checkpoint.open(mk_path)
    base = Checkpoint.open(input_paths["base"])
    fts = [Checkpoint.open(input_paths[k]) for k in ("ft1", "ft2")] if exact else []
    weights = [float(METHODS[method].get("weight", 1.0))] * len(fts)
    names_o, names_m = set(ours.names()), set(mk.names())
    total = beyond = differ = one_side = moved_o = moved_m = beyond_same_side = 0
    ours_vs_exact = mk_vs_exact = ours_beyond_exact = mk_beyond_exact = 0
    max_abs = 0.0
    worst = None
    shape_mismatch, dtype_note = [], set()
    per_kind: dict[str, list[int]] = {}
    for name in ours.names():
        if name not in names_m:
            continue
        if ours.info(name).shape != mk.info(name).shape:
            shape_mismatch.append(name)
            continue
        dtype_note.add((ours.info(name).dtype, mk.info(name).dtype))
        a_all = ours.get(name).reshape(-1)
        b_all = mk.get(name).reshape(-1)
        z_all = base.get(name).reshape(-1)
        f_all = [f.get(name).reshape(-1) for f in fts]
        kind = name.rsplit(".", 2)[-2] if "." in name else name
        acc = per_kind.setdefault(kind, [0, 0])
        for s in range(0, a_all.numel(), COMPARE_SLICE):
            a = a_all[s : s + COMPARE_SLICE].float()
            b = b_all[s : s + COMPARE_SLICE].float()
            d = (a - b).abs_()
            m = torch.maximum(a.abs(), b.abs())
            _, e = torch.frexp(m)  # m = f * 2**e, f in [0.5, 1): floor(log2 m) = e - 1
            ulp = torch.ldexp(torch.ones_like(m), (e - 8).to(torch.float32))
            n_beyond = int((d > ulp).sum())
            mx = float(d.max()) if d.numel() else 0.0
            if mx > max_abs:
                max_abs, worst = mx, name
            beyond += n_beyond
            acc[0] += n_beyond
            acc[1] += a.numel()
            differ += int((a != b).sum())
            total += a.numel()
            if ties:
                z = z_all[s : s + COMPARE_SLICE].float()
                mo, mm = a != z, b != z
                moved_o += int(mo.sum())
                moved_m += int(mm.sum())
                same = mo == mm
                one_side += int((~same).sum())
                beyond_same_side += int(((d > ulp) & same).sum())
            if exact:
                z = z_all[s : s + COMPARE_SLICE].double()
                ref = z.clone()
                for w, f in zip(weights, f_all):
                    ref += w * (f[s : s + COMPARE_SLICE].double() - z)
                ref = ref.to(torch.bfloat16).float()
                ours_vs_exact += int((a != ref).sum())
                mk_vs_exact += int((b != ref).sum())
                r_ulp = torch.ldexp(torch.ones_like(ref), (torch.frexp(ref.abs())[1] - 8).to(torch.float32))
                ours_beyond_exact += int(((a - ref).abs() > r_ulp).sum())
                mk_beyond_exact += int(((b - ref).abs() > r_ulp).sum())
        del a_all, b_all, z_all, f_all
    res = {
        "tensors_compared": len(names_o & names_m) - len(shape_mismatch),
        "only_ours": sorted(names_o - names_m), "only_mergekit": sorted(names_m - names_o),
        "shape_mismatch": shape_mismatch, "dtypes": sorted(f"{x}/{y}" for x, y in dtype_note),
        "elements": total, "max_abs_diff": max_abs, "max_abs_diff_tensor": worst,
        "elements_differ": differ, "fraction_differ": differ / total if total else 0.0,
        "elements_beyond_1ulp": beyond, "fraction_beyond_1ulp": beyond / total if total else 0.0,
        "beyond_1ulp_by_kind": {k: v[0] / v[1] for k, v in sorted(per_kind.items()) if v[1]},
    }
    res["equal_within_bf16_rounding"] = (beyond == 0 and not shape_mismatch and names_o == names_m)
    if ties and total:
        res["elements_one_side_kept_delta"] = one_side
        res["fraction_one_side_kept_delta"] = one_side / total
        res["fraction_moved_from_base"] = {"ours": moved_o / total, "mergekit": moved_m / total}
        res["fraction_beyond_1ulp_where_both_sides_agree_on_moving"] = beyond_same_side / total
    if exact and total:
        res["vs_exact"] = {"note": "exact = base + sum w_i (ft_i - base) in float64, rounded once to bfloat16",
                           "ours_differ": ours_vs_exact / total, "mergekit_differ": mk_vs_exact / total,
                           "ours_beyond_1ulp": ours_beyond_exact / total,
                           "mergekit_beyond_1ulp": mk_beyond_exact / total}
    return res


# ----- report -----------------------------------------------------------------------------------

def print_report(results: dict) -> None:
    inp = results["inputs"]
    rep = results["repeats"]
    print(f"\n== merge: base + 2 fine-tunes, {inp['config']} shapes ({inp['params'] / 1e9:.3f} B params, "
          f"bfloat16, {human_bytes(inp['bytes'])} of inputs); page cache warm for both (inputs read first); "
          f"time: best of {rep}, peak RSS: largest of {rep}")
    print(f"  {'method':<16} {'tool':<9} {'wall s':>8} {'(merge s)':>9} {'peak RSS':>11} "
          f"{'speed-up':>9} {'RSS ratio':>9}  goals")
    for method, r in results["methods"].items():
        o, mk, g = r["ours"], r.get("mergekit"), r["goal"]
        merge_s = f"{o['merge_s']:.1f}" if o.get("merge_s") is not None else "-"
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        rss_ratio = f"{r['rss_ratio']:.2f}x" if r.get("rss_ratio") else "-"
        goal_s = ("no speed-up goal" if g.get("speedup_min") is None else
                  f"speed-up >= {g['speedup_min']:g}x: {g['speedup'] or 'n/a'}")
        goal_r = f"our RSS <= {RSS_GOAL_BYTES / 1e9:g} GB: {g['rss']}"
        print(f"  {method:<16} {'zoo':<9} {o['s']:8.1f} {merge_s:>9} {human_bytes(o['peak_rss']):>11} "
              f"{speed:>9} {rss_ratio:>9}  {goal_s}; {goal_r}")
        if mk:
            print(f"  {'':<16} {'mergekit':<9} {mk['s']:8.1f} {'':>9} {human_bytes(mk['peak_rss']):>11}")
        if r.get("vs_ties"):
            v = r["vs_ties"]
            print(f"  {'':<16} {'zoo':<9} {v['ratio']:.2f}x our TIES time (goal <= {v['max']:g}x: {v['verdict']})")
        if r.get("speedup_including_indexing"):
            print(f"  {'':<16} {'zoo*':<9} {o['s'] + o['index_s']:8.1f}   (* with cataloguing the three inputs first: "
                  f"{o['index_s']:.1f} s, once per model) speed-up {r['speedup_including_indexing']:.2f}x")
    print("  (wall s: the whole `zoo merge` command on catalogued inputs; merge s: the merge operator's own time as"
          " the catalog recorded it - the rest is start-up and registering the output)")
    print(f"  peak RSS via {next(iter(results['methods'].values()))['ours']['rss_method']}")
    touch = results["environment"].get("memory_touch")
    if touch:
        print(f"  context: fresh memory is filled at {touch['first_fill_gb_s']:.2f} GB/s the first time, "
              f"{touch['second_fill_gb_s']:.2f} GB/s once touched (allocations and page-cache growth pay the first "
              f"rate, on both sides)")

    cmp_rows = [(m, r["compare"]) for m, r in results["methods"].items() if r.get("compare")]
    if cmp_rows:
        print("\n== outputs: ours vs mergekit, every element of every tensor")
        print(f"  {'method':<16} {'elements':>14} {'max |diff|':>11} {'differ':>10} {'> 1 bf16 ulp':>13} "
              f"{'one side kept delta':>20}  verdict")
        for m, c in cmp_rows:
            one = f"{c['fraction_one_side_kept_delta']:.4%}" if "fraction_one_side_kept_delta" in c else "-"
            v = "equal within bfloat16 rounding" if c["equal_within_bf16_rounding"] else \
                f"NOT equal within bf16 rounding ({c['fraction_beyond_1ulp']:.4%} of elements beyond 1 ulp)"
            print(f"  {m:<16} {c['elements']:>14,} {c['max_abs_diff']:>11.3g} {c['fraction_differ']:>10.4%} "
                  f"{c['fraction_beyond_1ulp']:>13.4%} {one:>20}  {v}")
            if c["only_ours"] or c["only_mergekit"] or c["shape_mismatch"]:
                print(f"    tensor sets differ: only ours {c['only_ours'][:5]}, only mergekit {c['only_mergekit'][:5]}, "
                      f"shape mismatch {c['shape_mismatch'][:5]}")
            if "fraction_moved_from_base" in c:
                mv = c["fraction_moved_from_base"]
                print(f"    elements moved away from the base: ours {mv['ours']:.3%}, mergekit {mv['mergekit']:.3%}; "
                      f"beyond 1 ulp where both sides agree on moving: "
                      f"{c['fraction_beyond_1ulp_where_both_sides_agree_on_moving']:.4%}")
            if "vs_exact" in c:
                x = c["vs_exact"]
                print(f"    against the exact result (float64, rounded once to bf16): ours differs in {x['ours_differ']:.4%}"
                      f" ({x['ours_beyond_1ulp']:.4%} beyond 1 ulp), mergekit in {x['mergekit_differ']:.4%}"
                      f" ({x['mergekit_beyond_1ulp']:.4%} beyond 1 ulp)")
            if not c["equal_within_bf16_rounding"]:
                kinds = ", ".join(f"{k} {v:.3%}" for k, v in c["beyond_1ulp_by_kind"].items())
                print(f"    beyond 1 ulp by tensor kind: {kinds}; largest difference in {c['max_abs_diff_tensor']}")
        if any(m == "ties" and not c["equal_within_bf16_rounding"] for m, c in cmp_rows):
            print("  note: TIES differences come from the magnitude threshold: our deltas are float32 (exact),"
                  " mergekit's are bfloat16-rounded, and ties at the threshold are broken differently (ours in"
                  " order of position, mergekit's argsort arbitrarily); elements at the boundary are kept by one"
                  " tool and dropped by the other.")


def memory_touch_probe(gib: float = 1.0) -> dict:
    """How fast this machine hands out fresh memory: allocate and fill `gib` GiB twice. On
    VMs whose guest memory is backed lazily (or handed back to the host when free), the
    first fill is much slower; every tool that allocates or grows the page cache pays it."""
    import torch

    n = int(gib * 2**30)
    t0 = time.perf_counter()
    buf = torch.empty(n, dtype=torch.uint8)
    buf.fill_(1)
    t1 = time.perf_counter()
    buf.fill_(2)
    t2 = time.perf_counter()
    del buf
    return {"gib": gib, "first_fill_gb_s": n / (t1 - t0) / 1e9, "second_fill_gb_s": n / (t2 - t1) / 1e9}


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu": platform.processor() or
           platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "zoo": " ".join(zoo_argv()),
           "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "memory_touch": memory_touch_probe()}
    try:
        from importlib.metadata import version

        env["mergekit"] = version("mergekit")
        env["transformers"] = version("transformers")
    except Exception:  # noqa: BLE001 - optional facts
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return env


# ----- main -------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark `zoo merge` against `mergekit-yaml` (TIES and task arithmetic) on a ~1B-parameter "
                    "bfloat16 Llama with two synthetic fine-tunes: wall time, peak RSS and output agreement.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("./bench-out/merge"),
                   help="folder for inputs, work files and results.json")
    p.add_argument("--config", choices=sorted(CONFIGS), default="tinyllama",
                   help="model shapes: tinyllama (1.1B params) or small (~15M, a quick smoke test)")
    p.add_argument("--methods", default="ties,task_arithmetic", help="comma-separated merge methods to run")
    p.add_argument("--skip-mergekit", action="store_true", help="time only `zoo merge` (no comparison)")
    p.add_argument("--keep", action="store_true", help="keep the generated input checkpoints (reused next time)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each command (best time, largest peak RSS)")
    p.add_argument("--compute-dtype", default="float32",
                   help="our math precision on the bfloat16-rounded inputs (`--set compute_dtype=...`; 'none' runs "
                        "it in the YAML's dtype, bfloat16, as mergekit does)")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.compute_dtype = None if args.compute_dtype == "none" else args.compute_dtype
    return args


def relative_to_ties(methods: dict[str, dict]) -> None:
    """Our time for each method over our TIES time in the same run (the goal: DELLA and SCE
    no slower than TIES)."""
    ties = methods.get("ties")
    for method, r in methods.items():
        if ties is None or method not in SLOWER_THAN_TIES_MAX:
            continue
        ratio = r["ours"]["s"] / ties["ours"]["s"]
        r["vs_ties"] = {"ratio": ratio, "max": SLOWER_THAN_TIES_MAX[method],
                        "verdict": verdict(ratio <= SLOWER_THAN_TIES_MAX[method])}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_mergekit and tool("mergekit-yaml") is None:
        print("error: mergekit-yaml is not installed beside this interpreter (use --skip-mergekit)", file=sys.stderr)
        return 2
    inputs_root = out / f"inputs-{args.config}"
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out))
    results: dict[str, Any] = {"environment": environment(), "argv": [sys.argv[0], *(argv or sys.argv[1:])],
                               "config": args.config, "repeats": args.repeats, "methods": {}}
    try:
        inputs = build_inputs(inputs_root, args.config)
        results["inputs"] = {**inputs, "kept": args.keep}
        mk_flags = [] if args.skip_mergekit else mergekit_flags()
        results["mergekit_flags"] = mk_flags
        for method in args.methods:
            print(f"\n{method}:", flush=True)
            results["methods"][method] = bench_method(method, work, inputs, args.repeats, args.skip_mergekit,
                                                      mk_flags, args.compute_dtype)
            (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")  # kept if a later method fails
        relative_to_ties(results["methods"])
        print_report(results)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults: {out / 'results.json'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(inputs_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
