#!/usr/bin/env python
"""TUI benchmark: mount time of the main screen and cost of one filter keystroke on a
catalog of N models (default 10,000, built like benchmarks/catalog_bench.py), against the
same on a 6-model catalog (Textual's own fixed costs)."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


async def measure(db: Path, query: str, size=(160, 48)) -> dict:
    from zoo import Catalog
    from tui.app import ZooApp

    t0 = time.perf_counter()
    app = ZooApp(Catalog(db))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        mount = time.perf_counter() - t0
        main = app.main
        first = dict(main.timings)
        await pilot.press("slash")
        keys = []
        for ch in query:
            t = time.perf_counter()
            await pilot.press(ch)
            await pilot.pause()
            wall = time.perf_counter() - t
            keys.append({"key": ch, "pilot_s": wall, "matches": len(main.matches), **main.timings,
                         "handler_s": sum(main.timings.values())})
        return {"models": len(main.data.rows), "mount_s": mount, "first_query": first, "keys": keys}


def summary(r: dict) -> dict:
    ks = r["keys"]
    return {"models": r["models"], "mount_s": round(r["mount_s"], 3),
            "key_handler_median_ms": round(1000 * statistics.median(k["handler_s"] for k in ks), 1),
            "key_handler_max_ms": round(1000 * max(k["handler_s"] for k in ks), 1),
            "key_filter_median_ms": round(1000 * statistics.median(k["filter_s"] for k in ks), 2),
            "key_pilot_median_ms": round(1000 * statistics.median(k["pilot_s"] for k in ks), 1),
            "key_pilot_max_ms": round(1000 * max(k["pilot_s"] for k in ks), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/tui-bench"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import catalog_bench as cb

    big = args.out / f"catalog-{args.n}.db"
    if not big.exists():
        cb.populate(big, cb.Layout(args.n, min(100, args.n - 1)))
    small = args.out / "catalog-6.db"
    if not small.exists():
        cb.populate(small, cb.Layout(6, 1))
    results = {}
    for label, db in (("small", small), ("big", big)):
        runs = [asyncio.run(measure(db, "llama-ft-00012")) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["mount_s"])
        results[label] = {"best_mount": summary(best), "runs": [summary(r) for r in runs], "keys": best["keys"]}
        print(label, json.dumps(results[label]["runs"], indent=1))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
