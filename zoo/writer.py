"""Streaming, atomic checkpoint writing.

The writer is given the output's tensor layout up front (names, shapes, dtypes: every
operator knows it before computing), so it lays out Hub-style shards and their headers
first and then writes each tensor straight to its final offset as it arrives - in any
order, from any thread - holding one tensor in memory at a time. Each shard is hashed
while it is written (`zoo.hashing.WriteHasher`: from the writer's memory, or from a copy
of a tensor written ahead of the hash), so it is not read again. Large shards go to disk
around the page cache, written by a background thread while the rest is computed
(`zoo.direct_io`; elsewhere through the page cache, its writeback started as it fills).
Everything goes to a hidden temporary folder beside the target, is fsynced, and is
renamed into place only when complete: an interrupted write leaves nothing that looks
like a checkpoint.
"""
from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import math
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from .direct_io import ALIGN, DiskQueue, open_direct, probe
from .errors import MismatchError, ZooError
from .hashing import BLOCK, WriteHasher, sha256_file
from .safetensors_format import DTYPES, TORCH_TO_TAG
from .temporaries import PARTIAL_MARK, is_stale, pause_point, remove, temp_name

if TYPE_CHECKING:
    import torch

DEFAULT_SHARD_BYTES = 5 * 1024**3  # the Hub's customary 5 GB shards


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name

    @property
    def nbytes(self) -> int:
        return DTYPES[TORCH_TO_TAG[self.dtype]][1] * math.prod(self.shape)


@dataclass
class WrittenFile:
    path: str  # relative to the checkpoint root
    size: int
    sha256: str


@dataclass
class WrittenCheckpoint:
    path: Path
    files: list[WrittenFile] = field(default_factory=list)


def parse_size(text: str | int) -> int:
    """'5GB', '500MB', '2GiB' or a byte count -> bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().replace(" ", "")
    units = {"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4,
             "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "B": 1}
    for unit, factor in units.items():
        if s.endswith(unit):
            try:
                return int(float(s[: -len(unit)]) * factor)
            except ValueError:
                break
    try:
        return int(s)
    except ValueError:
        raise ZooError(f"cannot read size {text!r} (use e.g. 500MB, 5GB, 2GiB)") from None


DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def disk_full(e: BaseException, path: Path | str) -> ZooError | None:
    """A full disk or quota while writing `path` as one line naming it (None: another error)."""
    if not isinstance(e, OSError) or e.errno not in DISK_FULL:
        return None
    what = "disk quota exceeded" if e.errno != errno.ENOSPC else "no space left on the disk"
    return ZooError(f"{what} while writing {path}: free some space (or write elsewhere; ZOO_STORE moves the "
                    "store) and run again; nothing was kept")


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success fsync it and rename it into place.
    The temporary's name carries its owner (`zoo.temporaries`): leftovers of killed writers
    to the same target are removed here."""
    target = Path(target).absolute()
    if target.exists() and not overwrite:
        raise ZooError(f"{target} already exists (choose another output or remove it)")
    tmp = target.parent / temp_name(f".{target.name}{PARTIAL_MARK}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:  # a read-only place, a file where a folder belongs, a missing device
        raise ZooError(f"cannot write {target}: {e.strerror or e} (choose a folder you can write to)") from None
    for left in target.parent.glob(f".{glob.escape(target.name)}{PARTIAL_MARK}*"):
        if left != tmp and is_stale(left):
            remove(left)
    try:
        yield tmp
        pause_point("writing")
        _fsync_tree(tmp)
        if target.exists():
            old = target.parent / temp_name(f".{target.name}{PARTIAL_MARK}old-")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full(e, target)
        if full is not None:
            raise full from None
        raise


def _fsync_files(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    _fsync_files(p for p in root.rglob("*") if p.is_file())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _shard_names(n: int, stem: str = "model") -> list[str]:
    if n == 1:
        return [f"{stem}.safetensors"]
    return [f"{stem}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Greedy, order-preserving split into shards of at most `max_shard_bytes` (a bigger
    single tensor gets a shard of its own)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for s in specs:
        if shards[-1] and size + s.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += s.nbytes
    return shards


FLUSH_STEP = 64 * 1024 * 1024


def _sync_file_range():
    """libc's sync_file_range (Linux), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk, without waiting (Linux; elsewhere,
    and on any error, nothing: the fsync before the rename is what makes the write durable)."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)


DIRECT_MIN = 256 * 1024  # aligned middles smaller than this go through the page cache (a 1 MiB chunk at an
# unaligned offset has a middle just under 1 MiB: it must still go direct)


class _Shard:
    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str], disk: DiskQueue | None):
        header: dict = {"__metadata__": metadata}
        offsets: dict[str, int] = {}
        pos = 0
        for s in specs:
            header[s.name] = {"dtype": TORCH_TO_TAG[s.dtype], "shape": list(s.shape), "data_offsets": [pos, pos + s.nbytes]}
            offsets[s.name] = pos
            pos += s.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-(8 + len(raw)) % 8)  # align the data section to 8 bytes
        self.path = path
        self.data_start = 8 + len(raw)
        self.offsets = offsets
        self.size = self.data_start + pos
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        head = len(raw).to_bytes(8, "little") + raw
        os.pwrite(self.fd, head, 0)
        self.hasher = WriteHasher(self.fd, head, self.size, before_read=disk.drain if disk else None)
        self._lock = threading.Lock()
        self._flushed = 0  # bytes whose writeback has been started
        try:  # reserve the blocks up front: writing into a sparse file is several times slower
            os.posix_fallocate(self.fd, 0, self.size)
        except (AttributeError, OSError) as e:
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                os.close(self.fd)
                raise
            os.ftruncate(self.fd, self.size)
        self.disk = disk
        self.direct = self._open_direct() if disk is not None else None

    def _open_direct(self) -> int | None:
        """A descriptor writing around the page cache, if the filesystem has working direct
        I/O (probed on the last whole block of data, which a tensor overwrites later)."""
        last = self.size // ALIGN * ALIGN - ALIGN
        if last - self.data_start < DIRECT_MIN:
            return None
        fd = open_direct(self.path)
        if fd is not None and not probe(fd, last):
            os.close(fd)
            fd = None
        return fd

    def put(self, offset: int, data: memoryview) -> None:
        """Write bytes at `offset`, hashing them as written when they are next in the file.
        With direct I/O, the disk thread writes everything (`zoo.direct_io`): the aligned
        middle of a large range around the page cache, the rest through it; without, this
        thread writes through the page cache in blocks (several times faster than one
        huge write)."""
        claimed = self.hasher.claim(offset)  # (a failed write leaves it claimed: no digest, none needed)
        if self.direct is None:
            self._buffered(offset, data, claimed)
        else:
            lo, hi = -(-offset // ALIGN) * ALIGN, (offset + len(data)) // ALIGN * ALIGN
            if hi - lo < DIRECT_MIN:
                lo = hi = offset + len(data)
            self._cached(offset, data[: lo - offset], claimed)
            self.disk.write(self.direct, lo, data[lo - offset: hi - offset], self.hasher.update if claimed else None)
            self._cached(hi, data[hi - offset:], claimed)
        if claimed:
            self.hasher.release()
        else:
            self.hasher.wrote(offset, data)
        if self.direct is None:
            self._flush_behind()

    def _cached(self, offset: int, data: memoryview, claimed: bool) -> None:
        self.disk.write_cached(self.fd, offset, data)
        if claimed and len(data):
            self.hasher.update(data)

    def _buffered(self, offset: int, data: memoryview, claimed: bool) -> None:
        for at in range(0, len(data), BLOCK):
            block = data[at: at + BLOCK]
            while len(block):
                n = os.pwrite(self.fd, block, offset)
                if claimed:
                    self.hasher.update(block[:n])
                block, offset = block[n:], offset + n

    def _flush_behind(self) -> None:
        """Start writing the hashed prefix (all written) to disk every FLUSH_STEP bytes, so
        that the disk works while the rest is computed and the final fsync has little left."""
        done = self.hasher.hashed
        with self._lock:
            if done - self._flushed < FLUSH_STEP:
                return
            start, self._flushed = self._flushed, done
        start_writeback(self.fd, start, done - start)

    def close(self) -> None:
        if self.direct is not None:
            os.close(self.direct)
        os.close(self.fd)  # fsynced in _finish


class CheckpointWriter:
    """Write a checkpoint whose tensor layout is known in advance.

    with CheckpointWriter(out, specs, config=cfg) as w:
        for name in names: w.write(name, tensor)
    w.result -> WrittenCheckpoint (files with sizes and sha256)
    """

    def __init__(
        self,
        target: str | Path,
        specs: Iterable[TensorSpec],
        *,
        max_shard_size: int | str = DEFAULT_SHARD_BYTES,
        metadata: Mapping[str, object] | None = None,
        config: Mapping | None = None,
        side_files: Mapping[str, Path] | None = None,
        extra_files: Mapping[str, str | bytes] | None = None,
        overwrite: bool = False,
        stem: str = "model",
    ) -> None:
        self.target = Path(target).absolute()
        self.stem = stem  # weights file name: STEM.safetensors (a PEFT adapter's is adapter_model)
        self.specs = {s.name: s for s in specs}
        if not self.specs:
            raise ZooError(f"{self.target}: nothing to write (no tensors)")
        self.max_shard_bytes = parse_size(max_shard_size)
        file_meta = {"format": "pt"}
        if metadata:
            file_meta["weightzoo"] = json.dumps(metadata, sort_keys=True, default=str)
        self.file_metadata = file_meta
        self.config = dict(config) if config is not None else None
        self.side_files = dict(side_files or {})
        self.extra_files = dict(extra_files or {})
        self.overwrite = overwrite
        self.result: WrittenCheckpoint | None = None
        self._lock = threading.Lock()
        self._written: set[str] = set()
        self._bytes: dict[str, int] = {}
        self._where: dict[str, _Shard] = {}
        self._disk: DiskQueue | None = None

    def __enter__(self) -> "CheckpointWriter":
        self._folder_cm = atomic_folder(self.target, self.overwrite)
        self.tmp = self._folder_cm.__enter__()
        try:
            groups = plan_shards(list(self.specs.values()), self.max_shard_bytes)
            self.shard_names = _shard_names(len(groups), self.stem)
            large = any(sum(s.nbytes for s in g) >= DIRECT_MIN for g in groups)
            self._disk = DiskQueue() if large else None
            self.shards = [_Shard(self.tmp / n, g, self.file_metadata, self._disk)
                           for n, g in zip(self.shard_names, groups)]
            if all(shard.direct is None for shard in self.shards):
                self._stop_disk(wait=False)  # (no direct I/O here after all)
            for shard in self.shards:
                for name in shard.offsets:
                    self._where[name] = shard
        except BaseException as e:
            self._stop_disk(wait=False)
            self._folder_cm.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def write(self, name: str, tensor: "torch.Tensor") -> None:
        """Write one whole tensor to its place (cast to the planned dtype). Thread-safe."""
        spec = self._spec(name)
        if tuple(tensor.shape) != spec.shape:
            raise MismatchError(
                f"{self.target}: tensor {name!r} has shape {list(tensor.shape)}, planned {list(spec.shape)}"
            )
        self.write_slice(name, 0, tensor.reshape(-1))

    def write_slice(self, name: str, start: int, flat: "torch.Tensor") -> None:
        """Write elements [start, start+len) of a tensor's flattened data, so producers can
        stream a large tensor in chunks. The tensor counts as written once every element is."""
        import torch

        spec = self._spec(name)
        # cast where the tensor is (a GPU casts fast, and a narrower dtype crosses the bus faster)
        t = flat.detach().reshape(-1).to(dtype=getattr(torch, spec.dtype)).to(device="cpu").contiguous()
        itemsize = t.element_size()
        end = (start + t.numel()) * itemsize
        if start < 0 or end > spec.nbytes:
            raise MismatchError(f"{self.target}: slice [{start}, {start + t.numel()}) is outside tensor {name!r}")
        shard = self._where[name]
        if t.numel():
            shard.put(shard.data_start + shard.offsets[name] + start * itemsize,
                      memoryview(t.view(torch.uint8).numpy()))
        with self._lock:
            done = self._bytes.get(name, 0) + t.numel() * itemsize
            if name in self._written or done > spec.nbytes:
                raise MismatchError(f"{self.target}: tensor {name!r} written twice")
            self._bytes[name] = done
            if done == spec.nbytes:
                self._written.add(name)

    def _spec(self, name: str) -> TensorSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise MismatchError(f"{self.target}: tensor {name!r} is not in the planned layout")
        return spec

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                missing = [n for n in self.specs if n not in self._written]
                if missing:
                    raise ZooError(f"{self.target}: {len(missing)} planned tensors never written (first: {missing[0]!r})")
            self._stop_disk(wait=exc_type is None)
            for shard in self.shards:
                shard.close()
            if exc_type is None:
                self._finish()
        except BaseException as e:
            self._folder_cm.__exit__(type(e), e, e.__traceback__)
            raise
        self._folder_cm.__exit__(exc_type, exc, tb)

    def _stop_disk(self, wait: bool) -> None:
        """Finish the direct writes (raising their error when `wait`) and stop their thread."""
        disk, self._disk = self._disk, None
        if disk is not None:
            try:
                if wait:
                    disk.drain()
            finally:
                disk.close()

    def _finish(self) -> None:
        """Write the small files, each hashed from the bytes written; fsync everything."""
        tmp = self.tmp
        # shards: hashed as written (one whose ranges did not tile it exactly is read)
        digests = {s.path.name: s.hasher.hexdigest() or sha256_file(s.path) for s in self.shards}

        def put(rel: str, data: bytes) -> None:
            (tmp / rel).write_bytes(data)
            digests[rel] = hashlib.sha256(data).hexdigest()

        if len(self.shards) > 1:
            index = {
                "metadata": {"total_size": sum(s.nbytes for s in self.specs.values())},
                "weight_map": {name: shard.path.name for name, shard in self._where.items()},
            }
            put(f"{self.stem}.safetensors.index.json", (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
        for rel, src in self.side_files.items():
            with open(tmp / rel, "wb") as dst:
                digests[rel] = sha256_file(src, copy_to=dst)  # copied and hashed in one read
        if self.config is not None:
            put("config.json", (json.dumps(self.config, indent=2, sort_keys=True) + "\n").encode())
        for rel, content in self.extra_files.items():
            put(rel, content.encode() if isinstance(content, str) else content)
        paths = sorted(tmp.iterdir(), key=lambda p: (not p.name.endswith(".safetensors"), p.name))
        _fsync_files(paths)
        files = [WrittenFile(p.name, p.stat().st_size, digests.get(p.name) or sha256_file(p)) for p in paths]
        self.result = WrittenCheckpoint(self.target, files)


def all_finite(t: "torch.Tensor") -> bool:
    """No inf or NaN in `t`. min and max carry a NaN and show an inf, and one reading pass
    for both is several times faster than building isfinite's mask of the whole tensor."""
    import torch

    if not t.is_floating_point() or t.numel() == 0:
        return True
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return bool(torch.isfinite(t).all())  # (float8: no min/max kernels)
    lo, hi = torch.aminmax(t.reshape(-1))
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def specs_from_tensors(tensors: Mapping[str, "torch.Tensor"]) -> list[TensorSpec]:
    return [TensorSpec(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()]


def save_tensors(target: str | Path, tensors: Mapping[str, "torch.Tensor"], **kwargs) -> WrittenCheckpoint:
    """Write an in-memory state dict as a checkpoint folder (shared storage is fine)."""
    with CheckpointWriter(target, specs_from_tensors(tensors), **kwargs) as w:
        for k, v in tensors.items():
            w.write(k, v)
    assert w.result is not None
    return w.result


def copy_files(src_root: Path, files: list[str], target: Path, progress=None, overwrite: bool = False) -> WrittenCheckpoint:
    """Copy checkpoint files atomically, hashing each block as it is copied (one read)."""
    out = WrittenCheckpoint(Path(target).absolute())
    with atomic_folder(target, overwrite) as tmp:
        for rel in files:
            with open(tmp / rel, "wb") as dst:
                digest = sha256_file(src_root / rel, progress, copy_to=dst)
            out.files.append(WrittenFile(rel, (tmp / rel).stat().st_size, digest))
    return out
