"""The `zoo` console script. A light module (no typer, rich, pydantic or SQLAlchemy), so
that what a command can do without them starts before their imports, and a process that
ends without the interpreter's teardown.

- `zoo add PATH` (in place): the checkpoint's files start hashing here, ~0.3 s before the
  CLI's imports are done; the command takes that hashing over (`zoo.hashing.take_early`).
  The GIL's switch interval is shortened meanwhile, so the hashing threads get it back
  after each block instead of waiting behind the imports.
- Python's cyclic GC runs full collections again and again while torch and the rest
  import, and at exit the interpreter frees every object and module one by one: together
  ~1 s of a 5 s merge, measured. A command creates few cycles, so collections are made
  rarer (not off); at the end the exit handlers run (temporary files, ...), the output is
  flushed, and the process ends without the teardown.
"""
from __future__ import annotations

import atexit
import gc
import os
import sys
from typing import NoReturn

from .argv_scan import add_path

EARLY_SWITCH_INTERVAL = 1e-4  # seconds (Python's default: 5e-3); measured best of 5e-3, 5e-4, 1e-4, 3e-5


def hash_early(argv: list[str]) -> None:
    """Start hashing the files of `zoo add PATH` (best effort: any problem is the CLI's to say)."""
    path = add_path(argv)
    if path is None:
        return
    from .checkpoint import Checkpoint
    from .hashing import start_early

    try:
        ckpt = Checkpoint.open(path)
        if not ckpt.needs_conversion:
            start_early([ckpt.root / f for f in ckpt.files()])
            # the hashing threads need the GIL for a moment after every block; at the default
            # 5 ms switch interval they wait behind the imports most of the time
            sys.setswitchinterval(EARLY_SWITCH_INTERVAL)
    except Exception:  # noqa: BLE001 - the command reads the path again and reports what is wrong
        return


def run() -> NoReturn:
    gc.set_threshold(50_000, 20, 10)  # default (700, 10, 10): a full collection every ~10M allocations, not ~70k
    argv = sys.argv[1:]
    hash_early(argv)
    from .cli import main
    from .hashing import cancel_early

    rc = main(argv)
    cancel_early()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`zoo ls | head`) or a closed stream: nothing to add
            pass
    os._exit(rc)
