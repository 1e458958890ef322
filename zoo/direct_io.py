"""Writing large files around the page cache (Linux O_DIRECT), in the background.

Filling the page cache costs CPU - on some machines (VMs that hand freed memory back to
their host) more than the copy itself - and the data is written to disk later anyway. A
direct write goes from memory to the device, but holds its thread until the device is
done. So a `DiskQueue` copies each block into one of a ring of page-aligned buffers and
one background thread writes them in order, while the caller goes on computing; the
caller sees each block as it is queued (to hash it while it is in the CPU cache). Direct
writes need offsets and lengths that are multiples of ALIGN; the unaligned edges (and
small writes) go to the same thread, through the page cache: on Linux a write to a file
waits while a direct write to it is under way, so only that thread writes the file.
"""
from __future__ import annotations

import errno
import mmap
import os
import queue
import threading
from pathlib import Path
from typing import Callable

ALIGN = 4096  # offsets, lengths and memory aligned to the device's blocks (4 KiB covers all)
BUFFER = 4 * 1024 * 1024
RING = 16  # buffers in flight: 64 MiB


def open_direct(path: Path) -> int | None:
    """A write descriptor on `path` that bypasses the page cache, or None where the platform
    or filesystem has no direct I/O (some accept the flag and refuse the writes: `probe`)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return None


def probe(fd: int, offset: int) -> bool:
    """Whether direct writes work on `fd`: writes one aligned block of zeros at `offset` (a
    block the caller overwrites later)."""
    block = mmap.mmap(-1, ALIGN)
    try:
        return os.pwrite(fd, block, offset) == ALIGN
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        block.close()


class DiskQueue:
    """One background thread writing queued aligned blocks in order; errors come back to
    the next caller of `write` or `drain`."""

    def __init__(self, ring: int = RING, size: int = BUFFER) -> None:
        self.size = size
        self._maps = [mmap.mmap(-1, size) for _ in range(ring)]
        self._views = [memoryview(m) for m in self._maps]
        self._free: queue.Queue[memoryview] = queue.Queue()
        for view in self._views:
            self._free.put(view)
        self._jobs: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._queued = 0
        self._written = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="zoo-disk", daemon=True)
        self._thread.start()

    def write(self, fd: int, offset: int, data: memoryview, each: Callable[[memoryview], None] | None = None) -> None:
        """Queue `data` for writing at `offset` (both aligned); `each(block)` is called on
        every block, in order, before it is queued."""
        for at in range(0, len(data), self.size):
            self._raise()
            buf = self._free.get()
            n = min(self.size, len(data) - at)
            buf[:n] = data[at: at + n]
            if each is not None:
                each(buf[:n])
            with self._cond:
                self._queued += 1
            self._jobs.put((fd, buf, n, offset + at))

    def write_cached(self, fd: int, offset: int, data: memoryview) -> None:
        """Queue a (small) write through the page cache; `data` is copied."""
        if len(data):
            self._raise()
            with self._cond:
                self._queued += 1
            self._jobs.put((fd, bytes(data), len(data), offset))

    def drain(self) -> None:
        """Wait until everything queued so far is written; raise the first error."""
        with self._cond:
            target = self._queued
            self._cond.wait_for(lambda: self._written >= target)
        self._raise()

    def close(self) -> None:
        """Finish the queued writes and stop the thread (errors are left to `drain`)."""
        self._jobs.put(None)
        self._thread.join()
        self._free = queue.Queue()
        self._views, self._maps = [], []  # (the buffers go with their last view)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fd, buf, n, offset = job
            try:
                if self._error is None:
                    written = os.pwrite(fd, buf[:n], offset)
                    if written != n:  # (cached writes are small; direct ones all or nothing)
                        raise OSError(errno.EIO, f"short write ({written} of {n} bytes)")
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._error = e
            finally:
                if isinstance(buf, memoryview):
                    self._free.put(buf)
                with self._cond:
                    self._written += 1
                    self._cond.notify_all()
