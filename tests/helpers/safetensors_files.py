"""Safetensors files crafted byte by byte, for tests of what the reader accepts and refuses."""
from __future__ import annotations

import json
import struct
from pathlib import Path


def entry(dtype: str, shape: list, offsets: list) -> dict:
    """One tensor's header entry, with whatever (possibly invalid) values a test needs."""
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def write(path: Path, header, data: bytes, *, raw_header: bytes | None = None, length: int | None = None) -> Path:
    """A safetensors file from a header (a JSON-able value, or raw JSON bytes) and its data
    section; `length` overrides the declared header length."""
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body) if length is None else length) + body + data)
    return path


TWO = {"a": entry("F32", [2], [0, 8]), "b": entry("F32", [2], [8, 16])}  # valid, with 16 data bytes
