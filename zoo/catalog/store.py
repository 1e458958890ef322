"""What lies in the store that the catalog does not account for.

Orphans are version folders (`NAME/vN`, the layout `Catalog` writes) that no entry points
at: a process killed between moving its output into place and committing the catalog
transaction leaves one. Temporaries (`zoo.temporaries`) whose owner is gone are leftovers
of killed writers. `zoo verify` reports both; `zoo gc` removes both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..temporaries import remove, stale_temporaries

_VERSION = re.compile(r"v\d+")


@dataclass
class StoreReport:
    orphans: list[Path] = field(default_factory=list)
    temporaries: list[Path] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.orphans and not self.temporaries

    def lines(self) -> list[str]:
        return ([f"orphan {p} (no catalog entry points at it; `zoo gc` removes it)" for p in self.orphans]
                + [f"stale temporary {p} (left by a process that is gone; `zoo gc` removes it)"
                   for p in self.temporaries])


def _has_file(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))


def orphans(store: Path, referenced: Iterable[str | Path]) -> list[Path]:
    """Version folders under `store` that hold files and that no referenced path is in."""
    store = store.absolute()
    used = {Path(p).absolute() for p in referenced}
    above = {a for p in used for a in p.parents if a.is_relative_to(store)}
    found: list[Path] = []
    stack = [store] if store.is_dir() else []
    while stack:
        d = stack.pop()
        for child in sorted(d.iterdir()):
            if child.name.startswith(".") or child.is_symlink() or not child.is_dir() or child in used:
                continue
            if child in above or not _VERSION.fullmatch(child.name):
                stack.append(child)  # a name folder (names may contain '/'), or one holding an entry
            elif _has_file(child):
                found.append(child)
    return sorted(found)


def report(store: Path, referenced: Iterable[str | Path]) -> StoreReport:
    if not store.is_dir():
        return StoreReport()
    return StoreReport(orphans(store, referenced), stale_temporaries(store))


def clear(store: Path, found: StoreReport) -> list[Path]:
    """Remove what `report` found, then the name folders it left empty; what was removed."""
    gone = []
    for p in [*found.orphans, *found.temporaries]:
        remove(p)
        gone.append(p)
    for p in found.orphans:
        parent = p.parent
        while parent != store and parent.is_relative_to(store):
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent
    return gone
