"""Streaming, atomic checkpoint writing.

The writer is given the output's tensor layout up front (names, shapes, dtypes: every
operator knows it before computing), so it lays out Hub-style shards and their headers
first and then writes each tensor straight to its final offset as it arrives - in any
order, from any thread - holding one tensor in memory at a time. Everything goes to a
hidden temporary folder beside the target, is fsynced, and is renamed into place only
when complete: an interrupted write leaves nothing that looks like a checkpoint.
"""
from __future__ import annotations

import errno
import glob
import json
import math
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from .errors import MismatchError, ZooError
from .hashing import sha256_file, sha256_files
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


class _Shard:
    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str]):
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
        os.pwrite(self.fd, len(raw).to_bytes(8, "little") + raw, 0)
        try:  # reserve the blocks up front: writing into a sparse file is several times slower
            os.posix_fallocate(self.fd, 0, self.size)
        except (AttributeError, OSError) as e:
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                os.close(self.fd)
                raise
            os.ftruncate(self.fd, self.size)

    def close(self) -> None:
        os.close(self.fd)  # fsynced in _finish, overlapped with hashing


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

    def __enter__(self) -> "CheckpointWriter":
        self._folder_cm = atomic_folder(self.target, self.overwrite)
        self.tmp = self._folder_cm.__enter__()
        try:
            groups = plan_shards(list(self.specs.values()), self.max_shard_bytes)
            self.shard_names = _shard_names(len(groups), self.stem)
            self.shards = [_Shard(self.tmp / n, g, self.file_metadata) for n, g in zip(self.shard_names, groups)]
            for shard in self.shards:
                for name in shard.offsets:
                    self._where[name] = shard
        except BaseException as e:
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
            view = memoryview(t.view(torch.uint8).numpy())
            offset = shard.data_start + shard.offsets[name] + start * itemsize
            while len(view):
                n = os.pwrite(shard.fd, view, offset)
                view, offset = view[n:], offset + n
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
            for shard in self.shards:
                shard.close()
            if exc_type is None:
                self._finish()
        except BaseException as e:
            self._folder_cm.__exit__(type(e), e, e.__traceback__)
            raise
        self._folder_cm.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        tmp = self.tmp
        if len(self.shards) > 1:
            index = {
                "metadata": {"total_size": sum(s.nbytes for s in self.specs.values())},
                "weight_map": {name: shard.path.name for name, shard in self._where.items()},
            }
            (tmp / f"{self.stem}.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        for rel, src in self.side_files.items():
            shutil.copyfile(src, tmp / rel)
        if self.config is not None:
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        for rel, content in self.extra_files.items():
            data = content.encode() if isinstance(content, str) else content
            (tmp / rel).write_bytes(data)
        paths = sorted(tmp.iterdir(), key=lambda p: (not p.name.endswith(".safetensors"), p.name))
        # flush to disk (I/O wait) while the shards hash from the page cache (CPU)
        with ThreadPoolExecutor(max_workers=1) as flusher:
            flushed = flusher.submit(_fsync_files, paths)
            digests = sha256_files(paths)
            flushed.result()
        files = [WrittenFile(p.name, p.stat().st_size, d) for p, d in zip(paths, digests)]
        self.result = WrittenCheckpoint(self.target, files)


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
