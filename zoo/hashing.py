"""sha256 of files, streamed in large blocks (the digest the Hub shows for LFS files).

hashlib releases the GIL on large buffers, so several files hash in parallel threads.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

BLOCK = 4 * 1024 * 1024

Progress = Callable[[int], None]  # called with the number of bytes just processed


def sha256_file(path: Path, progress: Progress | None = None, copy_to=None) -> str:
    """Hash one file; optionally write every block to `copy_to` (a binary file) as we go."""
    h = hashlib.sha256()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            chunk = view[:n]
            h.update(chunk)
            if copy_to is not None:
                copy_to.write(chunk)
            if progress is not None:
                progress(n)
    return h.hexdigest()


def sha256_files(paths: Iterable[Path], progress: Progress | None = None, workers: int = 2) -> list[str]:
    """Hash many files, in parallel threads, in the order given."""
    paths = list(paths)
    if len(paths) <= 1 or workers <= 1:
        return [sha256_file(p, progress) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: sha256_file(p, progress), paths))


def combined_digest(files: Iterable[tuple[str, str]]) -> str:
    """One digest for a set of (relative path, sha256) pairs: identical bytes, identical digest."""
    h = hashlib.sha256()
    for rel, digest in sorted(files):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()
