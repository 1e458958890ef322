#!/usr/bin/env python
"""Catalog benchmark: how fast `zoo add` hashes, and how fast a big catalog answers.

What it measures, and why:

1. `zoo add` throughput against `sha256sum`. Adding a checkpoint is dominated by hashing
   its files, so the honest yardstick is the system's own `sha256sum` on the very same
   files. A ~1 GiB Hub-style sharded safetensors checkpoint (64 MiB float32/bf16 tensors,
   400 MB shards, an index and a config.json) is written with `zoo.writer.save_tensors`,
   read once so that the page cache is warm for everyone (neither side is disk-bound), then
   timed: `sha256sum <all files>`, the CLI `zoo --catalog <fresh db> add <path>`, and the
   in-process `zoo.Catalog(<fresh db>).add(path)`. Each is the best of 3 wall times.
   Goal: zoo add throughput >= 0.8 x sha256sum.

2. The commands that only read, end to end (a process each, stdout to /dev/null), each
   beside its floor in the same loop: the same work done by `python -c` with nothing but
   sqlite3 (same database, same query shape, same bytes out). A catalog of N (default
   100,000) models is populated in bulk with SQLAlchemy core inserts into the catalog's own
   tables (never 100k `Catalog.add` calls): every model has 1-2 files and some tags, every
   model i > 0 has parent (i-1)//2 (a binary tree), and the last 1,000 models form one long
   chain hanging off the deepest tree node, so that the chain's tail has 1,016 ancestors.
   A second catalog of 200 models, laid out the same way, is the small one. Median of
   --repeats runs (after a warm-up) each:
     - `zoo --catalog DB ls --json` (goal <= 0.3 s);
     - `zoo --catalog DB lineage TAIL --format dot` (goal <= 0.4 s);
     - `zoo --catalog SMALL show REF`, a model with a parent, a child and a run (goal <= 0.4 s),
       and `--json`;
     - `python -c "import zoo.cli"` beside `python -c pass`; the `sqlite3` CLI reading the
       same listings (the C floor);
     - in process: `views.ls_json`, `views.ls`, a page of `views.ls`, `views.lineage`,
       `views.show`.

Timed processes cache their bytecode (PYTHONDONTWRITEBYTECODE unset), as installed code has.
Results are printed and written to OUT/results.json. Run with --help for the options.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

ADD_RATIO_GOAL = 0.8  # zoo add throughput / sha256sum throughput
LS_GOAL_S = 0.3  # zoo ls --json on 100,000 models, end to end
LINEAGE_GOAL_S = 0.4  # zoo lineage --format dot over a 1,016-deep chain of those, end to end
SHOW_GOAL_S = 0.4  # zoo show on a small catalog, end to end
TENSOR_BYTES = 64 * 2**20
SHARD_SIZE = "400MB"
BATCH = 10_000
CHAIN = 1_000
FAMILIES = ("llama", "mistral", "gpt2", "vit", "bert")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "gpt2": "GPT2LMHeadModel",
                 "vit": "ViTForImageClassification", "bert": "BertModel"}


# ----- timing helpers ------------------------------------------------------------------

def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """The best wall time of `repeats` calls of `fn`, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_quiet(argv: Sequence[str]) -> None:
    """Run a command with stdout to /dev/null; raise with its stderr if it fails."""
    proc = subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")


def run_capture(argv: Sequence[str]) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def zoo_argv() -> list[str]:
    """The installed `zoo` entry point of this interpreter (no shell shims in between)."""
    script = Path(sys.executable).parent / "zoo"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "zoo"]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def remove_db(db: Path) -> None:
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        p.unlink(missing_ok=True)


# ----- part 1: zoo add versus sha256sum ------------------------------------------------

def build_checkpoint(path: Path, gib: float) -> None:
    """A sharded safetensors checkpoint of about `gib` GiB: 64 MiB tensors, alternately
    float32 and bfloat16, in 400 MB shards with an index and a config.json."""
    import torch

    from zoo.writer import save_tensors

    total = int(gib * 2**30)
    count = max(1, round(total / TENSOR_BYTES))
    per_tensor = max(4096, total // count)
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(count):
        dtype = torch.float32 if i % 2 == 0 else torch.bfloat16
        cols = 1024
        rows = max(1, per_tensor // (cols * (4 if dtype == torch.float32 else 2)))
        tensors[f"model.layers.{i}.mlp.weight"] = torch.randn(rows, cols, generator=gen, dtype=dtype)
    save_tensors(path, tensors, max_shard_size=SHARD_SIZE, overwrite=True,
                 config={"model_type": "llama", "architectures": ["LlamaForCausalLM"]})


def checkpoint_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file())


def read_all(files: Iterable[Path]) -> int:
    """Read every byte once (to warm the page cache); returns the byte count."""
    n = 0
    buf = bytearray(8 * 2**20)
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                n += k
    return n


def bench_add(out: Path, gib: float, repeats: int, keep: bool) -> dict:
    import zoo

    ckpt = out / "checkpoint"
    print(f"building a {gib:g} GiB checkpoint in {ckpt} ...", flush=True)
    t0 = time.perf_counter()
    build_checkpoint(ckpt, gib)
    build_s = time.perf_counter() - t0
    files = checkpoint_files(ckpt)
    nbytes = sum(p.stat().st_size for p in files)
    print(f"  {len(files)} files, {nbytes / 1e6:,.0f} MB, written in {build_s:.1f} s")

    read_all(files)  # warm the page cache for everyone
    warm_read_s = best_of(lambda: read_all(files), 1)

    sha_s = best_of(lambda: run_quiet(["sha256sum", *map(str, files)]), repeats)
    # For context only (no goal): coreutils sha256sum may not use the CPU's SHA extensions,
    # while OpenSSL (which Python's hashlib uses) does.
    openssl_s = (best_of(lambda: run_quiet(["openssl", "dgst", "-sha256", *map(str, files)]), repeats)
                 if shutil.which("openssl") else None)

    dbs = out / "add-dbs"
    dbs.mkdir(exist_ok=True)
    counter = iter(range(10**6))

    def cli_add() -> None:
        db = dbs / f"cli-{next(counter)}.db"
        remove_db(db)
        run_quiet([*zoo_argv(), "--catalog", str(db), "add", str(ckpt)])

    def api_add() -> None:
        db = dbs / f"api-{next(counter)}.db"
        remove_db(db)
        result = zoo.Catalog(db).add(ckpt)
        assert result.created and result.entry.bytes == nbytes, result

    cli_s = best_of(cli_add, repeats)
    api_s = best_of(api_add, repeats)
    shutil.rmtree(dbs, ignore_errors=True)
    if not keep:
        shutil.rmtree(ckpt, ignore_errors=True)

    mb = nbytes / 1e6
    sha_rate, cli_rate, api_rate = mb / sha_s, mb / cli_s, mb / api_s
    return {
        "checkpoint": {"files": len(files), "bytes": nbytes, "build_s": build_s, "kept": keep, "path": str(ckpt)},
        "page_cache": {"warmed": True, "warm_read_s": warm_read_s, "warm_read_mb_s": mb / warm_read_s},
        "sha256sum": {"s": sha_s, "mb_s": sha_rate},
        "openssl_dgst_sha256": {"s": openssl_s, "mb_s": mb / openssl_s} if openssl_s else None,
        "zoo_add_cli": {"s": cli_s, "mb_s": cli_rate, "ratio": cli_rate / sha_rate,
                        "command": " ".join([*zoo_argv(), "--catalog", "<fresh db>", "add", str(ckpt)])},
        "catalog_add_api": {"s": api_s, "mb_s": api_rate, "ratio": api_rate / sha_rate},
        "goal": {"ratio": ADD_RATIO_GOAL, "cli": verdict(cli_rate / sha_rate >= ADD_RATIO_GOAL),
                 "api": verdict(api_rate / sha_rate >= ADD_RATIO_GOAL)},
    }


def print_add(r: dict, repeats: int) -> None:
    print(f"\n== zoo add vs sha256sum ({r['checkpoint']['files']} files, {r['checkpoint']['bytes'] / 1e6:,.0f} MB; "
          f"best of {repeats}; page cache warm for both: files read once first, "
          f"re-read at {r['page_cache']['warm_read_mb_s']:,.0f} MB/s, so neither side is disk-bound)")
    print(f"  sha256sum <all files>            {r['sha256sum']['s']:7.3f} s  {r['sha256sum']['mb_s']:8,.0f} MB/s")
    if r.get("openssl_dgst_sha256"):
        row = r["openssl_dgst_sha256"]
        print(f"  openssl dgst -sha256 (context)   {row['s']:7.3f} s  {row['mb_s']:8,.0f} MB/s  "
              f"(x{row['mb_s'] / r['sha256sum']['mb_s']:.1f} sha256sum; no goal)")
    for key, label in (("zoo_add_cli", "zoo add (CLI, subprocess)"), ("catalog_add_api", "Catalog.add (in process)")):
        row = r[key]
        goal = r["goal"]["cli" if key == "zoo_add_cli" else "api"]
        print(f"  {label:32s} {row['s']:7.3f} s  {row['mb_s']:8,.0f} MB/s  ratio {row['ratio']:.2f}  "
              f"[goal >= {ADD_RATIO_GOAL}: {goal}]")


# ----- part 2: a catalog of N models ---------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Model k (0-based; database id k+1): a binary tree over the first n - chain models,
    then a chain of `chain` models hanging off the last (deepest) tree model."""

    n: int
    chain: int

    @property
    def tree(self) -> int:
        return self.n - self.chain

    def parent(self, k: int) -> int | None:
        if k == 0:
            return None
        return (k - 1) // 2 if k < self.tree else k - 1

    def ancestors(self, k: int) -> int:
        count = 0
        while (k := self.parent(k)) is not None:
            count += 1
        return count

    @property
    def tail(self) -> int:
        return self.n - 1


def model_name(k: int) -> tuple[str, int]:
    family = FAMILIES[k % len(FAMILIES)]
    return f"{family}-ft-{k // 4:06d}", k % 4 + 1


def chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def model_rows(layout: Layout) -> Iterator[dict]:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for k in range(layout.n):
        name, version = model_name(k)
        family = FAMILIES[k % len(FAMILIES)]
        params = 1_000_000 * (1 + k % 7000)
        yield {
            "id": k + 1, "name": name, "version": version, "family": family,
            "architecture": ARCHITECTURES[family], "num_params": params,
            "dtype": "bfloat16" if k % 3 else "float32", "bytes": params * 2,
            "location": f"/models/{name}/v{version}", "path": f"/models/{name}/v{version}", "owned": False,
            "digest": hashlib.sha256(f"model {k}".encode()).hexdigest(),
            "config": {"model_type": family, "architectures": [ARCHITECTURES[family]], "hidden_size": 4096,
                       "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000},
            "metrics": {"acc": round((k % 1000) / 1000, 3), "loss": 1.5} if k % 3 == 0 else None,
            "card": None, "created_at": base + timedelta(seconds=30 * k),
        }


def file_rows(layout: Layout) -> Iterator[dict]:
    for k in range(layout.n):
        yield {"model_id": k + 1, "path": "model.safetensors", "size": 2_000_000 * (1 + k % 7000),
               "sha256": hashlib.sha256(f"weights {k}".encode()).hexdigest()}
        if k % 2 == 0:
            yield {"model_id": k + 1, "path": "config.json", "size": 700,
                   "sha256": hashlib.sha256(f"config {k}".encode()).hexdigest()}


def tag_rows(layout: Layout) -> Iterator[dict]:
    for k in range(layout.n):
        yield {"model_id": k + 1, "tag": FAMILIES[k % len(FAMILIES)]}
        if k % 10 == 0:
            yield {"model_id": k + 1, "tag": "eval-done"}
        if k % 97 == 0:
            yield {"model_id": k + 1, "tag": "prod"}


def has_run(layout: Layout, k: int) -> bool:
    """Every 5th tree model and every chain model was made by a recorded run."""
    return k > 0 and (k % 5 == 0 or k >= layout.tree)


def run_rows(layout: Layout) -> Iterator[dict]:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for k in range(1, layout.n):
        if has_run(layout, k):
            p = layout.parent(k)
            yield {"id": k + 1, "operator": "finetune", "operator_version": "1", "params": {"lr": 1e-5, "steps": 1000},
                   "inputs": [{"id": p + 1, "ref": "%s@%d" % model_name(p), "digest": "", "role": "base"}],
                   "outputs": [{"id": k + 1, "ref": "%s@%d" % model_name(k), "digest": ""}],
                   "cache_key": hashlib.sha256(f"run {k}".encode()).hexdigest(), "status": "ok",
                   "started_at": base + timedelta(seconds=30 * k), "seconds": 60.0, "timings": None}


def edge_rows(layout: Layout) -> Iterator[dict]:
    for k in range(1, layout.n):
        yield {"parent_id": layout.parent(k) + 1, "child_id": k + 1, "role": "base", "weight": None,
               "run_id": k + 1 if has_run(layout, k) else None}


def populate(db: Path, layout: Layout) -> dict:
    """Create the catalog with zoo (schema), then bulk-insert every table in batches."""
    from sqlalchemy import insert

    import zoo
    from zoo.catalog.tables import LineageEdge, ModelEntry, ModelFile, ModelTag, Run

    remove_db(db)
    t0 = time.perf_counter()
    cat = zoo.Catalog(db)
    counts = {}
    with cat.engine.begin() as conn:
        for table, rows in ((ModelEntry, model_rows(layout)), (ModelFile, file_rows(layout)),
                            (ModelTag, tag_rows(layout)), (Run, run_rows(layout)), (LineageEdge, edge_rows(layout))):
            stmt = insert(table.__table__)
            counts[table.__tablename__] = 0
            for batch in chunks(rows, BATCH):
                conn.execute(stmt, batch)
                counts[table.__tablename__] += len(batch)
    cat.refresh_listings()  # bulk rows bypass the catalog; give them their stored listings
    cat.engine.dispose()
    with sqlite3.connect(db) as con:  # fold the WAL back into the file: a settled catalog
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"rows": counts, "populate_s": time.perf_counter() - t0, "db_bytes": db.stat().st_size}


def median_of(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """The median wall time of `repeats` calls of `fn` (after one untimed warm-up), and all
    of them, in seconds: on a shared machine the median says more than the best."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


# What `zoo` does, done with nothing but the interpreter and sqlite3: the floor each read
# command stands on (same database, same query shape, same bytes out; no zoo import).
FLOOR_LS = """
import sqlite3, sys
con = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
con.execute('PRAGMA mmap_size = 2147418112')
rows = con.execute('SELECT CAST(listing AS BLOB) FROM models ORDER BY name, version').fetchall()
sys.stdout.buffer.write(b'[' + b','.join([r for (r,) in rows]) + b']\\n')
"""
FLOOR_LINEAGE = """
import sqlite3, sys
con = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
name, version = sys.argv[2].rsplit('@', 1)
(focus,) = con.execute('SELECT id FROM models WHERE name = ? AND version = ?', (name, int(version))).fetchone()
sql = ('WITH RECURSIVE up(id) AS (SELECT parent_id FROM lineage WHERE child_id = :f UNION '
       'SELECT l.parent_id FROM lineage l JOIN up ON l.child_id = up.id), '
       'm(id) AS (SELECT :f UNION SELECT id FROM up) '
       'SELECT e.parent_id, e.child_id, e.role, p.name, p.version FROM lineage e JOIN models p ON p.id = e.parent_id '
       'WHERE e.child_id IN (SELECT id FROM m) AND e.parent_id IN (SELECT id FROM m) ORDER BY e.id')
lines = ['digraph lineage {']
for p, c, role, pname, pversion in con.execute(sql, {'f': focus}):
    lines.append(f'  m{p} [label="{pname}@{pversion}"];')
    lines.append(f'  m{p} -> m{c} [label="{role}"];')
sys.stdout.write('\\n'.join(lines) + '\\n}\\n')
"""
FLOOR_SHOW = """
import json, sqlite3, sys
con = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
con.row_factory = sqlite3.Row
name, version = sys.argv[2].rsplit('@', 1)
row = dict(con.execute('SELECT * FROM models WHERE name = ? AND version = ?', (name, int(version))).fetchone())
row['files'] = [dict(r) for r in con.execute('SELECT path, size, sha256 FROM model_files WHERE model_id = ?', (row['id'],))]
print(json.dumps(row, indent=1, default=str))
"""


def _cli_row(label: str, argv: list[str], floor: list[str] | None, floor_label: str | None, goal: float | None,
             repeats: int) -> dict:
    """One timed row: the zoo command (stdout to /dev/null) and, in the same run, its floor."""
    zoo_s, zoo_all = median_of(lambda: run_quiet(argv), repeats)
    row = {"label": label, "command": " ".join(argv) + " > /dev/null", "s": zoo_s, "runs_s": zoo_all, "goal_s": goal,
           "verdict": verdict(zoo_s <= goal) if goal else None}
    if floor is not None:
        floor_s, floor_all = median_of(lambda: run_quiet(floor), repeats)
        row.update(floor_label=floor_label, floor_s=floor_s, floor_runs_s=floor_all)
    return row


def bench_catalog(out: Path, n: int, repeats: int) -> dict:
    """The read commands on a big catalog (ls, lineage) and a small one (show), each beside
    its floor; plus the interpreter and `import zoo.cli` alone."""
    from zoo.catalog import views

    layout = Layout(n, min(CHAIN, n - 1))
    db = out / f"catalog-{n}.db"
    print(f"\npopulating {db} with {n:,} models ...", flush=True)
    pop = populate(db, layout)
    print(f"  {pop['populate_s']:.1f} s, {pop['db_bytes'] / 1e6:.0f} MB: "
          + ", ".join(f"{t} {c:,}" for t, c in pop["rows"].items()))
    small = Layout(200, 50)
    small_db = out / "catalog-small.db"
    populate(small_db, small)

    zoo_cmd, py = zoo_argv(), sys.executable
    ls_argv = [*zoo_cmd, "--catalog", str(db), "ls", "--json"]
    listed = json.loads(run_capture(ls_argv))  # check the answers once, untimed
    assert len(listed) == n, f"zoo ls --json returned {len(listed)} rows, expected {n}"
    assert run_capture([py, "-c", FLOOR_LS, str(db)]).encode() == run_capture(ls_argv).encode()
    tail_ref = "%s@%d" % model_name(layout.tail)
    expected = layout.ancestors(layout.tail)
    dot_argv = [*zoo_cmd, "--catalog", str(db), "lineage", tail_ref, "--format", "dot"]
    dot = run_capture(dot_argv)
    nodes = sum(1 for line in dot.splitlines() if line.lstrip().startswith("m") and "[label=" in line
                and "->" not in line)
    assert nodes == expected + 1, f"lineage dot has {nodes} nodes, expected {expected + 1}"
    shown_k = small.tree + small.chain // 2  # in the small catalog's chain: a parent, a child and a run
    show_ref = "%s@%d" % model_name(shown_k)
    show_argv = [*zoo_cmd, "--catalog", str(small_db), "show", show_ref]
    shown = json.loads(run_capture([*show_argv, "--json"]))
    assert shown["parents"] and shown["children"] and shown["run"], shown

    sqlite_cli = shutil.which("sqlite3")
    rows = [
        _cli_row(f"zoo ls --json ({n:,} models)", ls_argv, [py, "-c", FLOOR_LS, str(db)],
                 "python + sqlite3, same query and bytes", LS_GOAL_S, repeats),
        _cli_row(f"zoo lineage --format dot ({expected:,} ancestors)", dot_argv,
                 [py, "-c", FLOOR_LINEAGE, str(db), tail_ref], "python + sqlite3, one recursive query",
                 LINEAGE_GOAL_S, repeats),
        _cli_row(f"zoo show ({small.n}-model catalog)", show_argv, [py, "-c", FLOOR_SHOW, str(small_db), show_ref],
                 "python + sqlite3 + json, the row and its files", SHOW_GOAL_S, repeats),
        _cli_row(f"zoo show --json ({small.n}-model catalog)", [*show_argv, "--json"], None, None, None, repeats),
        _cli_row("python -c 'import zoo.cli' (start-up)", [py, "-c", "import zoo.cli"], [py, "-c", "pass"],
                 "python -c pass", None, repeats),
    ]
    if sqlite_cli:
        sql = "SELECT listing FROM models ORDER BY name, version"
        rows.append(_cli_row(f"sqlite3 CLI reading the listings ({n:,})", [sqlite_cli, "-readonly", str(db), sql],
                             None, None, None, repeats))
    in_process = {
        "views.ls_json": median_of(lambda: views.ls_json(db), repeats)[0],
        "views.ls (rows as dicts)": median_of(lambda: views.ls(db), repeats)[0],
        "views.lineage (deep chain)": median_of(lambda: views.lineage(db, tail_ref), repeats)[0],
        "views.show": median_of(lambda: views.show(small_db, show_ref), repeats)[0],
        f"views.ls page (--limit 100 --offset {n // 2})": median_of(lambda: views.ls(db, limit=100, offset=n // 2),
                                                                 repeats)[0],
    }
    return {"db": str(db), "small_db": str(small_db), "entries": n, "chain": layout.chain, "ancestors": expected,
            "tail_ref": tail_ref, "show_ref": show_ref, **pop, "rows": rows, "in_process_s": in_process}


def print_catalog(r: dict, repeats: int) -> None:
    print(f"\n== reads: catalog of {r['entries']:,} models ({r['db_bytes'] / 1e6:.0f} MB sqlite), median of "
          f"{repeats} runs each, page cache warm; each floor runs in the same loop")
    print(f"  {'command':52s} {'zoo':>8s} {'floor':>8s}  {'goal':>9s}  floor is")
    for row in r["rows"]:
        floor = f"{row['floor_s']:7.3f}s" if "floor_s" in row else f"{'-':>8s}"
        goal = f"<= {row['goal_s']:.1f} s {row['verdict']}" if row["goal_s"] else ""
        print(f"  {row['label']:52s} {row['s']:7.3f}s {floor}  {goal:15s}  {row.get('floor_label') or ''}")
    print("  in process (warm):  " + ", ".join(f"{k} {v:.3f} s" for k, v in r["in_process_s"].items()))


# ----- entry point ---------------------------------------------------------------------

def environment() -> dict:
    import sqlalchemy

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version, "sqlalchemy": sqlalchemy.__version__, "zoo": " ".join(zoo_argv()),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def bytecode_as_installed() -> None:
    """Let the timed processes cache bytecode (`__pycache__`, as any installed package has):
    with PYTHONDONTWRITEBYTECODE set (some sandboxes set it), every `zoo` run would compile
    each of its modules again (about 40 ms here)."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        print("PYTHONDONTWRITEBYTECODE unset for the timed processes (bytecode cached as when installed)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Measures zoo add vs sha256sum, and zoo ls / lineage on a big catalog.")
    p.add_argument("--out", type=Path, default=Path("bench-out/catalog"), help="output folder [./bench-out/catalog]")
    p.add_argument("--gb", type=float, default=1.0, help="checkpoint size in GiB, in 64 MiB tensors [1.0]")
    p.add_argument("--entries", type=int, default=100_000, help="models in the big catalog [100000]")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement: the best counts for zoo add, the median for reads [3]")
    p.add_argument("--skip-add", action="store_true", help="skip the zoo add vs sha256sum part")
    p.add_argument("--skip-catalog", action="store_true", help="skip the big-catalog part")
    p.add_argument("--keep", action="store_true", help="keep the checkpoint under OUT/checkpoint")
    args = p.parse_args(argv)
    if args.entries < 2:
        p.error("--entries must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    bytecode_as_installed()
    results: dict = {"environment": environment(), "argv": sys.argv, "repeats": args.repeats}
    print(f"weightzoo catalog benchmark: {results['environment']['cpus']} CPUs, {results['environment']['cpu']}, "
          f"python {results['environment']['python']}, sqlite {results['environment']['sqlite']}")
    if not args.skip_add:
        results["add"] = bench_add(out, args.gb, args.repeats, args.keep)
    if not args.skip_catalog:
        results["catalog"] = bench_catalog(out, args.entries, args.repeats)
    if "add" in results:
        print_add(results["add"], args.repeats)
    if "catalog" in results:
        print_catalog(results["catalog"], args.repeats)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
