"""Text that ships with Python itself: the standard library's own sources, as bytes.

Byte-level language-model data that needs no download and is the same on every machine
with the same Python version.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def python_source_bytes(packages: list[str], max_bytes: int = 2_000_000) -> bytes:
    """Concatenated sources of stdlib packages/modules (sorted file order), capped."""
    root = stdlib_root()
    chunks: list[bytes] = []
    size = 0
    for pkg in packages:
        base = root / pkg
        files = sorted(base.rglob("*.py")) if base.is_dir() else [root / f"{pkg}.py"]
        for f in files:
            if "test" in f.parts or not f.is_file():
                continue
            data = f.read_bytes()
            chunks.append(data)
            size += len(data)
            if size >= max_bytes:
                return b"".join(chunks)[:max_bytes]
    if not chunks:
        raise FileNotFoundError(f"no Python sources found for {packages} under {root}")
    return b"".join(chunks)
