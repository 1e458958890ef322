"""Hidden temporary folders carry their owner, so the leftovers of a killed process can be
told from work in progress and removed.

Every temporary the zoo makes (`.incoming-*` in the store, `*.zoo-partial-*` beside a
target, the Hub download cache `.hf-cache-*`) has the owner in its name: a short hash of
the host, the process id and the process start time (`<host>h<pid>p<start>`). A temporary
is stale when its owner is on this host and no longer runs (the pid is gone, a zombie, or
now belongs to a process that started at another time). Temporaries of another host are
never judged (a store on a shared disk); ones from before owners were named count as stale
once untouched for a day.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
from functools import lru_cache
from pathlib import Path

PREFIXES = (".incoming-", ".hf-cache-")
PARTIAL_MARK = ".zoo-partial-"
UNOWNED_STALE_AFTER_S = 24 * 3600
_OWNER = re.compile(r"(?P<host>[0-9a-f]{6})h(?P<pid>\d+)p(?P<start>\d+)")


@lru_cache(maxsize=1)
def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode(errors="replace")).hexdigest()[:6]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process from /proc, or None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def owner_token() -> str:
    """This process as a temporary's owner (computed per call: a forked child is another owner)."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return f"{_host()}h{pid}p{stat[1] if stat else 0}"


def temp_name(prefix: str) -> str:
    """A fresh temporary name: `prefix`, the owner, a random part."""
    return f"{prefix}{owner_token()}-{os.urandom(5).hex()}"


def is_temporary(name: str) -> bool:
    return name.startswith(PREFIXES) or PARTIAL_MARK in name


def _alive(pid: int, start: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the pid's existence is all we know
    state, started = stat
    return state != "Z" and (start == 0 or started == start)


def is_stale(path: Path, now: float | None = None) -> bool:
    """A temporary with no live owner (see the module docstring)."""
    m = _OWNER.search(path.name)
    if m:
        return m["host"] == _host() and not _alive(int(m["pid"]), int(m["start"]))
    try:
        age = (now or time.time()) - path.lstat().st_mtime
    except OSError:
        return False
    return age > UNOWNED_STALE_AFTER_S


def temporaries(folder: Path) -> list[Path]:
    """The temporaries in a store: in its root and in the name folders under it (not inside
    checkpoints: version folders `vN` and the temporaries themselves are not searched)."""
    found: list[Path] = []
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            children = sorted(d.iterdir())
        except OSError:
            continue
        for child in children:
            if is_temporary(child.name):
                found.append(child)
            elif child.is_dir() and not child.is_symlink() and not child.name.startswith(".") \
                    and not re.fullmatch(r"v\d+", child.name):
                stack.append(child)
    return found


def stale_temporaries(folder: Path) -> list[Path]:
    now = time.time()
    return [p for p in temporaries(folder) if is_stale(p, now)]


def remove(path: Path) -> None:
    """Remove a folder or file, whatever it is (a leftover may be either)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def pause_point(point: str) -> None:
    """For tests only: with ZOO_TEST_PAUSE=<point>, print `ZOO_TEST_PAUSED <point>` to stderr
    and sleep, so a test can kill the process at that exact moment (tests/zoo/test_kill.py).
    Points: `writing` (an output fully written, not yet renamed into place), `after-rename`
    (an output moved into the store, the catalog transaction not yet committed)."""
    if os.environ.get("ZOO_TEST_PAUSE") != point:
        return
    import sys

    print(f"ZOO_TEST_PAUSED {point}", file=sys.stderr, flush=True)
    time.sleep(600)
