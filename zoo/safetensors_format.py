"""The safetensors container format: header parsing with validation, and dtype tables.

We parse headers ourselves (8-byte little-endian length, then JSON) so that a corrupt or
truncated file gets a precise one-line error before any tensor is touched, and so that
names, shapes and dtypes are known without reading tensor data.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptCheckpointError

# safetensors dtype tag -> (torch dtype name, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "U16": ("uint16", 2),
    "U32": ("uint32", 4),
    "U64": ("uint64", 8),
    "BOOL": ("bool", 1),
}
TORCH_TO_TAG = {torch_name: tag for tag, (torch_name, _) in DTYPES.items()}
FLOAT_TAGS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's own limit


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, known from the header alone."""

    name: str
    dtype: str  # torch dtype name, e.g. "bfloat16"
    shape: tuple[int, ...]
    file: str  # file name relative to the checkpoint root
    start: int  # absolute byte offset in `file`
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def is_float(self) -> bool:
        return TORCH_TO_TAG[self.dtype] in FLOAT_TAGS


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def parse_header(path: Path, rel_name: str | None = None) -> Header:
    """Read and validate a safetensors header; raise CorruptCheckpointError on any defect."""
    name = rel_name or path.name
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptCheckpointError(
                f"{path}: not a safetensors file (only {size} bytes, no header length)"
            )
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise CorruptCheckpointError(
                f"{path}: corrupt safetensors header (declared header length {n} bytes is implausible)"
            )
        if 8 + n > size:
            raise CorruptCheckpointError(
                f"{path}: truncated safetensors file (header length {n} runs past the end of the {size}-byte file)"
            )
        raw = f.read(n)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"{path}: corrupt safetensors header (not valid JSON: {e})") from None
    if not isinstance(doc, dict):
        raise CorruptCheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = doc.pop("__metadata__", None) or {}
    data_start = 8 + n
    data_len = size - data_start
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for tname, entry in doc.items():
        try:
            tag = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
            torch_dtype, itemsize = DTYPES[tag]
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpointError(
                f"{path}: corrupt safetensors header (bad entry for tensor {tname!r})"
            ) from None
        if end - begin != math.prod(shape) * itemsize or begin < 0:
            raise CorruptCheckpointError(
                f"{path}: corrupt safetensors header (tensor {tname!r} offsets do not match shape {list(shape)} {tag})"
            )
        if end > data_len:
            raise CorruptCheckpointError(
                f"{path}: truncated safetensors file (tensor {tname!r} ends at byte {data_start + end}, file has {size})"
            )
        spans.append((begin, end, tname))
        tensors[tname] = TensorInfo(tname, torch_dtype, shape, name, data_start + begin, data_start + end)
    return Header(tensors=tensors, metadata={str(k): str(v) for k, v in metadata.items()}, data_start=data_start)
