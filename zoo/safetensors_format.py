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
from typing import Callable

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
    """Read and validate a safetensors header as strictly as the format itself; raise
    CorruptCheckpointError, one line naming the file and the defect, on anything else.

    The format (https://github.com/huggingface/safetensors): 8-byte little-endian header
    length, a JSON object mapping each tensor name to {dtype, shape, data_offsets: [begin,
    end]} (integers relative to the data section), plus an optional flat string-to-string
    `__metadata__`. Sorted by offset, the tensors must tile the data section exactly: no
    overlap (two tensors sharing bytes), no gap, nothing past the end, nothing left over."""
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

    def bad(problem: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{path}: corrupt safetensors header ({problem})")

    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as e:
        raise bad(f"key {_show(e.args[0])} appears twice") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"{path}: corrupt safetensors header (not valid JSON: {e})") from None
    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    metadata = _metadata(doc.pop("__metadata__", None), bad)
    data_start = 8 + n
    data_len = size - data_start
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for tname, entry in doc.items():
        if not _is_text(tname):
            raise bad(f"tensor name {_show(tname)} is not valid UTF-8")
        begin, end, tag, shape = _entry(tname, entry, bad)
        if end > data_len:
            raise CorruptCheckpointError(
                f"{path}: truncated safetensors file (tensor {_show(tname)} ends at byte {data_start + end}, "
                f"file has {size})"
            )
        spans.append((begin, end, tname))
        tensors[tname] = TensorInfo(tname, DTYPES[tag][0], shape, name, data_start + begin, data_start + end)
    _check_tiling(spans, data_len, bad)
    return Header(tensors=tensors, metadata=metadata, data_start=data_start)


Refusal = Callable[[str], CorruptCheckpointError]  # builds the one-line error naming the file


class _DuplicateKey(ValueError):
    """A JSON object with the same key twice (json.loads would keep the last silently)."""


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json object hook: a repeated key would silently hide a tensor or a metadata value."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _is_text(value: object) -> bool:
    """A str that encodes as UTF-8 (JSON's \\ud800-style escapes can smuggle in lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(value: object) -> str:
    """repr() for messages, safe to print whatever the value holds."""
    return ascii(value) if isinstance(value, str) and not _is_text(value) else repr(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _metadata(raw: object, bad: Refusal) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad(f"__metadata__ must be a map of strings to strings, not a JSON {json_kind(raw)}")
    for key, value in raw.items():
        if not _is_text(key):
            raise bad(f"__metadata__ key {_show(key)} is not valid UTF-8")
        if not _is_text(value):
            raise bad(f"__metadata__ must be a flat map of strings to strings; {key!r} holds a JSON {json_kind(value)}")
    return dict(raw)


def json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words (for messages)."""
    if isinstance(value, str):
        return "string" if _is_text(value) else "string that is not valid UTF-8"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "list"}.get(type(value), "null")


def _entry(tname: str, entry: object, bad: Refusal) -> tuple[int, int, str, tuple[int, ...]]:
    """(begin, end, dtype tag, shape) of one tensor entry, every field checked."""
    where = f"tensor {_show(tname)}"
    if not isinstance(entry, dict):
        raise bad(f"{where}: expected an object with dtype, shape and data_offsets, not a JSON {json_kind(entry)}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
    if missing:
        raise bad(f"{where}: missing {', '.join(missing)}")
    tag, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(tag, str) or tag not in DTYPES:
        raise bad(f"{where}: unknown dtype {_show(tag)} (known: {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise bad(f"{where}: shape must be a list of non-negative integers, not {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) and x >= 0 for x in offsets)):
        raise bad(f"{where}: data_offsets must be two non-negative integers [begin, end], not {offsets!r}")
    begin, end = offsets
    if end < begin:
        raise bad(f"{where}: data_offsets [{begin}, {end}] end before they begin")
    if end - begin != math.prod(shape) * DTYPES[tag][1]:
        raise bad(f"{where}: offsets do not match shape {shape} {tag} "
                  f"({end - begin} bytes for {math.prod(shape) * DTYPES[tag][1]})")
    return begin, end, tag, tuple(shape)


def _check_tiling(spans: list[tuple[int, int, str]], data_len: int, bad: Refusal) -> None:
    """Sorted by offset, the tensors must cover the data section exactly once."""
    at, prev = 0, None
    for begin, end, tname in sorted(spans):
        if begin < at:
            raise bad(f"tensors {_show(prev)} and {_show(tname)} overlap (bytes {begin}-{at} of the data)")
        if begin > at:
            after = f"after tensor {_show(prev)}" if prev is not None else "before the first tensor"
            raise bad(f"gap of {begin - at} unused bytes {after} (data bytes {at}-{begin})")
        at, prev = end, tname
    if at != data_len:
        raise bad(f"{data_len - at} bytes after the last tensor belong to no tensor "
                  f"(tensors end at data byte {at}, the data section has {data_len})")
