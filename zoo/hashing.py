"""sha256 of files, streamed in large blocks (the digest the Hub shows for LFS files).

hashlib is OpenSSL's sha256 (SHA extensions where the CPU has them) and releases the GIL on
large buffers, so several files hash at once in threads, one file per thread, and hashing
can start early and run while the caller does other work (`BackgroundHashes`). A file
being written is hashed as its bytes are written (`WriteHasher`), not read again after.
"""
from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

BLOCK = 1024 * 1024  # fits the cache: reading a block and hashing it touch memory once
MAX_THREADS = 8

Progress = Callable[[int], None]  # called with the number of bytes just processed


class HashingStopped(Exception):
    """A hash was stopped before the end of its file (`BackgroundHashes.cancel`)."""


def sha256_file(path: Path, progress: Progress | None = None, copy_to=None,
                stop: threading.Event | None = None) -> str:
    """Hash one file; optionally write every block to `copy_to` (a binary file) as we go.
    `stop`, once set, ends the hash at the next block (HashingStopped)."""
    h = hashlib.sha256()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            if stop is not None and stop.is_set():
                raise HashingStopped(str(path))
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


def hash_threads(count: int, workers: int | None = None) -> int:
    """Threads for hashing `count` files: one per file, up to `workers` (default twice the
    CPUs, at most MAX_THREADS). A file's digest is sequential, so one thread per file lets
    the scheduler share the CPUs until the last file is done, where a thread per CPU taking
    whole files in turn leaves a CPU idle while the other finishes a large last file."""
    cap = workers if workers is not None else min(MAX_THREADS, 2 * (os.cpu_count() or 1))
    return max(1, min(cap, count))


class BackgroundHashes:
    """The sha256 of some files, hashed in threads from the moment this is made (largest
    files first), so that hashing overlaps what the caller does meanwhile - `zoo add` opens
    the catalog, whose imports are most of its start-up. `stats` are the files' os.stat
    from just before (None if one could not be read), to tell a file that changed while
    it was hashed. `result()` waits for the digests, in the order given; `cancel()` stops
    every thread at its next block."""

    def __init__(self, paths: Iterable[Path], progress: Progress | None = None, workers: int | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        try:
            self.stats: list[os.stat_result] | None = [os.stat(p) for p in self.paths]
        except OSError:
            self.stats = None
        self._stop = threading.Event()
        self._progress, self._done, self._lock = progress, 0, threading.Lock()
        sizes = [s.st_size for s in self.stats] if self.stats else [0] * len(self.paths)
        order = sorted(range(len(self.paths)), key=lambda i: -sizes[i])
        pool = ThreadPoolExecutor(max_workers=hash_threads(len(self.paths), workers), thread_name_prefix="sha256")
        self._futures = {i: pool.submit(sha256_file, self.paths[i], self._advance, None, self._stop) for i in order}
        pool.shutdown(wait=False)  # its threads end with their last file

    def _advance(self, n: int) -> None:
        with self._lock:
            self._done += n
            progress = self._progress
        if progress is not None:
            progress(n)

    def report_to(self, progress: Progress) -> None:
        """Send progress from now on to `progress`, starting with the bytes already hashed
        (hashing that began before the progress bar existed)."""
        with self._lock:
            self._progress, done = progress, self._done
        if done:
            progress(done)

    def result(self) -> list[str]:
        try:
            return [self._futures[i].result() for i in range(len(self.paths))]
        except BaseException:
            self.cancel()  # (a file failed, or the caller was interrupted: the others stop too)
            raise

    def cancel(self) -> None:
        self._stop.set()


_early: BackgroundHashes | None = None


def start_early(paths: Iterable[Path]) -> None:
    """Begin hashing files that a command about to start will want (`zoo add`, before its
    imports): `take_early` hands the hashing over."""
    global _early
    cancel_early()
    _early = BackgroundHashes(paths)


def take_early(paths: Iterable[Path]) -> BackgroundHashes | None:
    """The hashing `start_early` began, if it is of exactly these files (else it is stopped)."""
    global _early
    early, _early = _early, None
    if early is not None and early.paths != [Path(p) for p in paths]:
        early.cancel()
        return None
    return early


def cancel_early() -> None:
    """Stop hashing that was started early and never taken."""
    global _early
    if _early is not None:
        _early.cancel()
        _early = None


def sha256_files(paths: Iterable[Path], progress: Progress | None = None, workers: int | None = None) -> list[str]:
    """Hash many files in parallel threads (largest first); digests in the order given."""
    paths = list(paths)
    if hash_threads(len(paths), workers) <= 1:
        return [sha256_file(p, progress) for p in paths]
    return BackgroundHashes(paths, progress, workers).result()


class WriteHasher:
    """sha256 of a file of known size that is written in byte ranges, in any order and from
    any thread, computed while it is written so that the file is not read again after.

    The writer of the range at the hash position claims it (`claim`) and hashes each block
    right after writing it, while it is in the CPU cache (`update`, then `release`). A
    range written ahead of the hash position is noted (`wrote`) with a copy of its bytes
    (up to `keep` bytes held at a time; beyond, it is read back from the file) and hashed
    when the hash reaches it. One thread hashes at a time; the others go on as soon as
    their range is noted. `hexdigest()` is None unless every byte was hashed once, in
    order (then the caller hashes the file instead)."""

    def __init__(self, fd: int, head: bytes, size: int, keep: int = 512 * 1024 * 1024,
                 before_read: Callable[[], None] | None = None) -> None:
        self._fd = fd
        self._before_read = before_read  # makes sure what was written is in the file (queued writes)
        self._size = size
        self._keep = keep
        self._h = hashlib.sha256(head)
        self._pos = len(head)
        self._ahead: dict[int, int | bytes] = {}  # offset -> bytes (or length) written past the hash
        self._kept = 0
        self._lock = threading.Lock()
        self._busy = False
        self._buf: bytearray | None = None
        self.read_back = 0  # bytes read back from the file (written ahead of the hash, not kept)

    def claim(self, offset: int) -> bool:
        """True when the bytes from `offset` are the next to hash and nobody is hashing: the
        caller then hashes what it writes there (`update`) and ends with `release`."""
        with self._lock:
            if self._busy or offset != self._pos:
                return False
            self._busy = True
            return True

    def update(self, data: memoryview) -> None:
        """The claimant's next bytes, just written."""
        self._h.update(data)  # (an error leaves the hash busy for good: no digest, the file is read)
        with self._lock:
            self._pos += len(data)

    def release(self) -> None:
        """End a claim: hash the ranges written ahead that now continue the hashed prefix."""
        while True:
            with self._lock:
                ahead = self._ahead.pop(self._pos, None)
                if ahead is None:
                    self._busy = False
                    return
            if isinstance(ahead, bytes):
                self._h.update(ahead)
                length = len(ahead)
            else:
                self._hash_from_file(self._pos, ahead)
                length = ahead
            with self._lock:
                self._pos += length
                if isinstance(ahead, bytes):
                    self._kept -= length

    def wrote(self, offset: int, data: memoryview) -> None:
        """Bytes [offset, offset + len(data)) are in the file (`data` holds them, until this
        returns), unclaimed: hashed now if they are the next to hash, else noted for later."""
        if not len(data):
            return
        with self._lock:
            mine = not self._busy and offset == self._pos
            if mine:
                self._busy = True
            else:
                keep = self._kept + len(data) <= self._keep
                self._kept += len(data) if keep else 0
        if not mine:
            entry: int | bytes = bytes(data) if keep else len(data)  # (copied outside the lock)
            with self._lock:
                if self._busy or offset != self._pos:
                    self._ahead[offset] = entry
                    return
                self._busy = True  # it became the next to hash while copied, and nobody hashes
                self._kept -= len(data) if keep else 0
        self.update(data)
        self.release()

    def _hash_from_file(self, offset: int, length: int) -> None:
        if self._before_read is not None:
            self._before_read()
        if self._buf is None:
            self._buf = bytearray(BLOCK)
        view = memoryview(self._buf)
        end = offset + length
        while offset < end:
            n = os.preadv(self._fd, [view[: min(BLOCK, end - offset)]], offset)
            if n <= 0:
                raise OSError(f"short read at byte {offset} of a file being hashed")
            self._h.update(view[:n])
            offset += n
            self.read_back += n

    @property
    def hashed(self) -> int:
        """Bytes hashed so far: the file's first bytes, all written."""
        with self._lock:
            return self._pos

    def hexdigest(self) -> str | None:
        with self._lock:
            done = not self._busy and not self._ahead and self._pos == self._size
        return self._h.hexdigest() if done else None


def combined_digest(files: Iterable[tuple[str, str]]) -> str:
    """One digest for a set of (relative path, sha256) pairs: identical bytes, identical digest."""
    h = hashlib.sha256()
    for rel, digest in sorted(files):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()
