"""Open a checkpoint (HF folder, sharded or not, single safetensors file, or a legacy
torch pickle) and read its tensors lazily, one at a time, from memory maps.

Names, shapes, dtypes and parameter counts come from headers alone; tensor data is only
touched by `get`. torch is imported on first use so catalog-only commands stay fast.
"""
from __future__ import annotations

import json
import mmap
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import CorruptCheckpointError, NotFoundError, ZooError
from .safetensors_format import TensorInfo, json_kind, parse_header

if TYPE_CHECKING:
    import torch

SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
# Files that describe weights rather than accompany them; never copied as side files.
WEIGHT_INDEXES = {SAFETENSORS_INDEX, PICKLE_INDEX}
# A PEFT adapter folder: these settings beside adapter_model.safetensors (or .bin)
ADAPTER_CONFIG = "adapter_config.json"


class Checkpoint:
    """A set of weights plus its Hugging Face side files (config, tokenizer, card)."""

    def __init__(
        self,
        root: Path,
        weight_files: list[str],
        tensors: dict[str, TensorInfo],
        side_files: list[str],
        metadata: dict[str, str],
        *,
        single_file: bool = False,
        pickled: dict[str, "torch.Tensor"] | None = None,
    ) -> None:
        self.root = root
        self.weight_files = weight_files
        self.tensors = tensors
        self.side_files = side_files
        self.metadata = metadata
        self.single_file = single_file
        self._pickled = pickled  # tensors loaded from a legacy .bin/.pt, to be converted
        self._maps: dict[str, mmap.mmap] = {}
        self._fds: dict[str, int] = {}

    # ----- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "Checkpoint":
        """Open `path`; raise a one-line ZooError when it is missing, empty or corrupt."""
        path = Path(path).expanduser()
        if not path.exists():
            raise NotFoundError(f"no such file or folder: {path}")
        path = path.resolve()
        if path.is_file():
            if path.suffix == ".safetensors":
                header = parse_header(path)
                return cls(path.parent, [path.name], header.tensors, [], header.metadata, single_file=True)
            if path.suffix in PICKLE_SUFFIXES:
                return cls._open_pickled(path.parent, [path.name], [], single_file=True)
            raise CorruptCheckpointError(
                f"{path}: unsupported weights file (expected .safetensors, or .bin/.pt/.pth to convert)"
            )
        return cls._open_folder(path)

    @classmethod
    def _open_folder(cls, root: Path) -> "Checkpoint":
        top = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
        if SAFETENSORS_INDEX in top:
            weight_files = _shards_from_index(root / SAFETENSORS_INDEX)
        else:
            weight_files = [n for n in top if n.endswith(".safetensors")]
        if weight_files:
            tensors: dict[str, TensorInfo] = {}
            metadata: dict[str, str] = {}
            for rel in weight_files:
                header = parse_header(root / rel, rel)
                _merge_tensors(tensors, header.tensors, root / rel)
                metadata = metadata or header.metadata
            side = [n for n in top if n not in weight_files]
            return cls(root, weight_files, tensors, side, metadata)
        if PICKLE_INDEX in top:
            pickles = _shards_from_index(root / PICKLE_INDEX)
        else:
            pickles = [n for n in top if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
            side = [n for n in top if n not in pickles and n not in WEIGHT_INDEXES]
            return cls._open_pickled(root, pickles, side)
        raise NotFoundError(
            f"{root}: no weights found (looked for *.safetensors, {SAFETENSORS_INDEX}, *.bin, *.pt, *.pth)"
        )

    @classmethod
    def _open_pickled(cls, root: Path, files: list[str], side: list[str], single_file: bool = False) -> "Checkpoint":
        import torch

        from .safetensors_format import TORCH_TO_TAG

        loaded: dict[str, torch.Tensor] = {}
        for rel in files:
            try:
                obj = torch.load(root / rel, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - torch raises many types; the message says why
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise CorruptCheckpointError(
                    f"{root / rel}: cannot load safely with weights_only=True ({first})"
                ) from None
            state = _unwrap_state_dict(obj, root / rel)
            for k, v in state.items():
                if k in loaded:
                    raise CorruptCheckpointError(f"{root / rel}: tensor {k!r} appears in two files")
                loaded[k] = v
        tensors = {}
        for k, v in loaded.items():
            if str(v.dtype).removeprefix("torch.") not in TORCH_TO_TAG:
                raise CorruptCheckpointError(f"{root}: tensor {k!r} has unsupported dtype {v.dtype}")
            nbytes = v.numel() * v.element_size()
            tensors[k] = TensorInfo(k, str(v.dtype).removeprefix("torch."), tuple(v.shape), "", 0, nbytes)
        return cls(root, list(files), tensors, side, {}, single_file=single_file, pickled=loaded)

    # ----- facts from headers ----------------------------------------------------------
    @property
    def needs_conversion(self) -> bool:
        """True for legacy pickles, which are imported as safetensors."""
        return self._pickled is not None

    @property
    def path(self) -> Path:
        return self.root / self.weight_files[0] if self.single_file else self.root

    def names(self) -> list[str]:
        return list(self.tensors)

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise NotFoundError(f"{self.path}: no tensor named {name!r}") from None

    @property
    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def dtype(self) -> str | None:
        """The dtype holding most of the parameters (floats preferred)."""
        counts: Counter[str] = Counter()
        for t in self.tensors.values():
            counts[t.dtype] += t.numel * (2 if t.is_float else 1)
        return counts.most_common(1)[0][0] if counts else None

    @property
    def config(self) -> dict | None:
        cfg = self.root / "config.json"
        if self.single_file or not cfg.is_file():
            return None
        try:
            doc = json.loads(cfg.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorruptCheckpointError(f"{cfg}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise CorruptCheckpointError(
                f"{cfg}: expected a JSON object of model settings, not a JSON {json_kind(doc)}"
            )
        return doc

    @property
    def adapter_config(self) -> dict | None:
        """The settings of a PEFT adapter (adapter_config.json beside adapter_model weights and
        no full model weights), None for any other checkpoint."""
        if self.single_file or ADAPTER_CONFIG not in self.side_files or \
                not all(Path(f).name.startswith("adapter_model") for f in self.weight_files):
            return None
        path = self.root / ADAPTER_CONFIG
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorruptCheckpointError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise CorruptCheckpointError(f"{path}: expected a JSON object of adapter settings, not a JSON "
                                         f"{json_kind(doc)}")
        return doc

    def config_problem(self) -> str | None:
        """Why config.json cannot be read, or None: for commands that work without it and
        should still say that it is broken."""
        try:
            self.config
        except CorruptCheckpointError as e:
            return str(e)
        return None

    def files(self) -> list[str]:
        """Every file that makes up the checkpoint, relative to `root` (weights first)."""
        return [*self.weight_files, *self.side_files]

    # ----- tensor data -----------------------------------------------------------------
    def get(self, name: str) -> "torch.Tensor":
        """One tensor, zero-copy from the memory map (copy-on-write, so safe to modify)."""
        import torch

        info = self.info(name)
        if self._pickled is not None:
            return self._pickled[name]
        dtype = getattr(torch, info.dtype)
        if info.numel == 0:
            return torch.empty(info.shape, dtype=dtype)
        buf = self._map(info.file)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if info.start % itemsize:
            flat = torch.frombuffer(bytearray(buf[info.start : info.end]), dtype=dtype)
        else:
            flat = torch.frombuffer(buf, dtype=dtype, count=info.numel, offset=info.start)
        return flat.view(info.shape)

    def read(self, name: str, start: int = 0, count: int | None = None) -> "torch.Tensor":
        """Elements [start, start+count) of a tensor's flattened data, read with pread into a
        fresh buffer: unlike `get`, nothing stays mapped, so streaming a model over many
        tensors keeps resident memory at the size of the buffers in use."""
        import torch

        info = self.info(name)
        count = info.numel - start if count is None else count
        if self._pickled is not None:
            return self._pickled[name].reshape(-1)[start : start + count].clone()
        dtype = getattr(torch, info.dtype)
        out = torch.empty(count, dtype=dtype)
        if count == 0:
            return out
        raw = out.view(torch.uint8).numpy()
        itemsize = out.element_size()
        fd = self._fd(info.file)
        offset, view = info.start + start * itemsize, memoryview(raw)
        while len(view):
            n = os.preadv(fd, [view], offset)
            if n <= 0:
                raise CorruptCheckpointError(f"{self.root / info.file}: unexpected end of file reading {name!r}")
            view, offset = view[n:], offset + n
        return out

    def _fd(self, rel: str) -> int:
        fd = self._fds.get(rel)
        if fd is None:
            fd = os.open(self.root / rel, os.O_RDONLY)
            self._fds[rel] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def iter_tensors(self) -> Iterator[tuple[str, "torch.Tensor"]]:
        for name in self.tensors:
            yield name, self.get(name)

    def _map(self, rel: str) -> mmap.mmap:
        m = self._maps.get(rel)
        if m is None:
            with open(self.root / rel, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[rel] = m
        return m

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, tensors={len(self.tensors)}, params={self.num_params})"


def _shards_from_index(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        weight_map = None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
        raise CorruptCheckpointError(
            f"{index}: not a valid index file (needs a 'weight_map' object of tensor name -> shard file name)"
        )
    shards = sorted(set(weight_map.values()))
    for rel in shards:
        if "/" in rel or "\\" in rel or rel.startswith("."):
            raise CorruptCheckpointError(f"{index}: shard name {rel!r} points outside the folder")
        if not (index.parent / rel).is_file():
            raise NotFoundError(f"{index}: shard {rel} is missing")
    return shards


def _merge_tensors(into: dict[str, TensorInfo], new: dict[str, TensorInfo], path: Path) -> None:
    for k, v in new.items():
        if k in into:
            raise CorruptCheckpointError(f"{path}: tensor {k!r} also appears in {into[k].file}")
        into[k] = v


def _unwrap_state_dict(obj, path: Path) -> dict:
    """Accept a plain state dict or the common wrappers ({'state_dict': ...}, {'model': ...})."""
    import torch

    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise CorruptCheckpointError(f"{path}: no state dict of tensors inside")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CorruptCheckpointError(f"{path}: no tensors inside")
    return {k: v.contiguous() for k, v in state.items()}


def adapter_summary(config: dict | None) -> dict | None:
    """What a PEFT adapter's settings say (kind, base, rank, alpha, targets, rsLoRA), None
    when `config` is not an adapter's (no peft_type)."""
    if not isinstance(config, dict) or "peft_type" not in config:
        return None
    targets = config.get("target_modules")
    targets = sorted(targets) if isinstance(targets, list) else targets
    return {"kind": str(config.get("peft_type")), "base": config.get("base_model_name_or_path"),
            "rank": config.get("r"), "alpha": config.get("lora_alpha"), "targets": targets,
            "rslora": bool(config.get("use_rslora")), "modules_to_save": config.get("modules_to_save") or [],
            "rank_pattern": bool(config.get("rank_pattern")), "alpha_pattern": bool(config.get("alpha_pattern"))}


def open_checkpoint(path: str | Path) -> Checkpoint:
    return Checkpoint.open(path)


__all__ = ["Checkpoint", "open_checkpoint", "ZooError"]
