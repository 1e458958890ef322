#!/usr/bin/env python
"""Hashing benchmark: `zoo add` of a ~1 GB checkpoint against `openssl dgst -sha256`.

Adding a checkpoint in place is hashing its files, so the yardstick is OpenSSL's own sha256
on the very same files (the library Python's hashlib uses; on CPUs with SHA extensions it
is what `sha256sum` should be). The checkpoint is the catalog benchmark's (64 MiB tensors,
float32 and bfloat16, 400 MB shards, an index and a config.json), written under --out
(default: a folder in /tmp) and read once so the page cache is warm for both sides. Then,
--repeats times, interleaved, each right beside the other:

    openssl dgst -sha256 <every file>          (one process, files one after another)
    zoo --catalog <fresh db> add <checkpoint>   (the installed entry point, a new process)

and `Catalog(<fresh db>).add(path)` in this process. Reported: the medians, and the ratio of
throughputs zoo add / openssl (goal >= 0.9). The digests zoo recorded are checked against
openssl's. The checkpoint is deleted afterwards unless --keep.

    python benchmarks/hash_bench.py [--gib 1] [--repeats 5] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog_bench import build_checkpoint, checkpoint_files, read_all, remove_db, zoo_argv  # noqa: E402

RATIO_GOAL = 0.9  # zoo add throughput / openssl dgst throughput


def timed(argv: list[str]) -> tuple[float, str]:
    """Wall seconds of a command, and its stdout; raises with its stderr if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return seconds, proc.stdout


def openssl_digests(stdout: str) -> dict[str, str]:
    """`SHA2-256(path)= hex` lines -> {file name: hex}."""
    out = {}
    for line in stdout.splitlines():
        head, _, digest = line.rpartition("= ")
        out[Path(head[head.index("(") + 1: head.rindex(")")]).name] = digest.strip()
    return out


def recorded_digests(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT path, sha256 FROM model_files").fetchall())


def bench(out: Path, gib: float, repeats: int) -> dict:
    import zoo

    ckpt = out / "checkpoint"
    if not (ckpt / "config.json").exists():
        print(f"building a {gib:g} GiB checkpoint in {ckpt} ...", flush=True)
        build_checkpoint(ckpt, gib)
    files = checkpoint_files(ckpt)
    nbytes = sum(p.stat().st_size for p in files)
    read_all(files)  # the page cache is warm for both sides
    dbs = out / "dbs"
    dbs.mkdir(exist_ok=True)
    runs = []
    expected = None
    for i in range(repeats):
        load = os.getloadavg()[0]
        openssl_s, stdout = timed(["openssl", "dgst", "-sha256", *map(str, files)])
        expected = openssl_digests(stdout)
        db = dbs / f"cli-{i}.db"
        remove_db(db)
        cli_s, _ = timed([*zoo_argv(), "--catalog", str(db), "add", str(ckpt)])
        recorded = recorded_digests(db)
        if recorded != expected:
            raise RuntimeError(f"zoo add recorded other digests than openssl's: {recorded} != {expected}")
        api_db = dbs / f"api-{i}.db"
        remove_db(api_db)
        t0 = time.perf_counter()
        zoo.Catalog(api_db).add(ckpt)
        api_s = time.perf_counter() - t0
        runs.append({"openssl_s": openssl_s, "zoo_add_s": cli_s, "catalog_add_s": api_s,
                     "ratio": openssl_s / cli_s, "ratio_in_process": openssl_s / api_s,
                     "load_before": load, "load_after": os.getloadavg()[0]})
        print(f"  run {i + 1}: openssl {openssl_s:.3f} s, zoo add {cli_s:.3f} s, Catalog.add {api_s:.3f} s -> "
              f"{openssl_s / cli_s:.2f} / {openssl_s / api_s:.2f}  (load {load:.1f})", flush=True)
    shutil.rmtree(dbs, ignore_errors=True)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"files": len(files), "bytes": nbytes, "cpus": os.cpu_count(), "repeats": repeats, "runs": runs,
            "median": median, "command": " ".join([*zoo_argv(), "--catalog", "<fresh db>", "add", str(ckpt)]),
            "digests_match_openssl": True}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "weightzoo-bench" / "hash")
    ap.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint for the next run")
    args = ap.parse_args(argv)
    if not shutil.which("openssl"):
        print("openssl is not installed: nothing to compare with", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        r = bench(args.out, args.gib, args.repeats)
    finally:
        if not args.keep:
            shutil.rmtree(args.out / "checkpoint", ignore_errors=True)
    m = r["median"]
    mb = r["bytes"] / 1e6
    print(f"== zoo add vs openssl dgst -sha256: {r['files']} files, {mb:,.0f} MB, page cache warm, {r['cpus']} CPUs; "
          f"medians of {r['repeats']} interleaved runs")
    print(f"  openssl dgst -sha256            {m['openssl_s']:7.3f} s  {mb / m['openssl_s']:7,.0f} MB/s")
    print(f"  zoo add (CLI, new process)      {m['zoo_add_s']:7.3f} s  {mb / m['zoo_add_s']:7,.0f} MB/s  ratio "
          f"{m['ratio']:.2f}  [goal >= {RATIO_GOAL}: {'PASS' if m['ratio'] >= RATIO_GOAL else 'MISS'}]")
    print(f"  Catalog.add (in process)        {m['catalog_add_s']:7.3f} s  {mb / m['catalog_add_s']:7,.0f} MB/s  ratio "
          f"{m['ratio_in_process']:.2f}")
    print("  digests recorded = openssl's: yes")
    (args.out / "results.json").write_text(json.dumps(r, indent=2))
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
