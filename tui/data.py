"""Everything the TUI shows, read through the catalog's read model (`zoo.catalog.views`,
shared with the `zoo` CLI) and every change written through the core API.

Widgets never query the catalog: screens ask a `ZooData` for plain rows and dicts and hand
them to widgets. Listing rows come from `views.ls` (plain SQL on a SQLite catalog);
filtering and sorting run in memory on those rows, so a keystroke costs a few milliseconds
even with 10,000 models. This module adds only the TUI's display forms.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog import views
from zoo.catalog.views import Lineage
from zoo.console import human_bytes, human_count

if TYPE_CHECKING:
    from zoo.catalog import Catalog
    from zoo.checkpoint import Checkpoint

PAGE = 100  # catalog rows put in the table at a time; more are appended as the cursor or scroll nears the end

# (key, header) of the catalog table, in order
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "name"), ("version", "ver"), ("family", "family"), ("params", "params"), ("dtype", "dtype"),
    ("size", "size"), ("tags", "tags"), ("metric", "key metric"), ("location", "location"),
)
SORT_KEYS = tuple(k for k, _ in COLUMNS)
_METRIC_PREFERENCE = ("acc", "accuracy", "eval_acc", "f1", "eval_loss", "loss")


# ----- display helpers (pure) ------------------------------------------------------------

def fmt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def key_metric(metrics: dict | None) -> tuple[str, Any] | None:
    """The one metric shown in the table: an accuracy-like one if present, else the first."""
    if not metrics:
        return None
    for want in _METRIC_PREFERENCE:
        for k, v in metrics.items():
            if k == want or k.rsplit("/", 1)[-1] == want:
                return k, v
    k = next(iter(metrics))
    return k, metrics[k]


def shorten_path(path: str | None, store: Path | None = None) -> str:
    """A location as shown: store paths as `store:NAME/vN`, home as `~`, else unchanged."""
    if not path:
        return "-"
    if path.startswith("hub:") or "://" in path:
        return path
    p = Path(path)
    if store is not None:
        try:
            return "store:" + p.relative_to(store).as_posix()
        except ValueError:
            pass
    home = os.path.expanduser("~")
    if home not in ("", "/") and path.startswith(home + os.sep):
        return "~" + path[len(home):]
    return path


def clip_left(text: str, width: int) -> str:
    """Keep the end of a long string (the informative part of a path)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ----- catalog rows ----------------------------------------------------------------------

@dataclass(slots=True)
class ModelRow:
    """One catalog entry as listed (the `zoo ls --json` item) plus what filtering needs."""

    id: int
    ref: str
    name: str
    version: int
    family: str | None
    params: int
    dtype: str | None
    bytes: int
    location: str | None
    tags: list[str]
    metrics: dict
    created: str | None
    hay: str = ""  # lower-case name, family and tags, for filtering
    _cells: tuple[str, ...] | None = None

    @classmethod
    def from_ls(cls, r: dict) -> ModelRow:
        row = cls(r["id"], r["ref"], r["name"], r["version"], r["family"], r["params"] or 0, r["dtype"],
                  r["bytes"] or 0, r["location"], list(r["tags"]), r["metrics"] or {}, r["created"])
        row.hay = "\x00".join([row.name, row.family or "", *row.tags]).lower()
        return row

    def cells(self, store: Path | None = None) -> tuple[str, ...]:
        """The table cells, in COLUMNS order (formatted once, when first shown)."""
        if self._cells is None:
            km = key_metric(self.metrics)
            self._cells = (
                self.name, str(self.version), self.family or "-", human_count(self.params), self.dtype or "-",
                human_bytes(self.bytes), clip(",".join(self.tags), 24) or "-",
                clip(f"{km[0].rsplit('/', 1)[-1]}={fmt_value(km[1])}", 18) if km else "-",
                clip_left(shorten_path(self.location, store), 36),
            )
        return self._cells


def _sort_key(key: str) -> Callable[[ModelRow], Any]:
    if key == "name":
        return lambda r: (r.name.lower(), r.version)
    if key == "version":
        return lambda r: (r.version, r.name.lower())
    if key == "family":
        return lambda r: ((r.family or "").lower(), r.name.lower(), r.version)
    if key == "params":
        return lambda r: (r.params, r.name.lower(), r.version)
    if key == "dtype":
        return lambda r: (r.dtype or "", r.name.lower(), r.version)
    if key == "size":
        return lambda r: (r.bytes, r.name.lower(), r.version)
    if key == "tags":
        return lambda r: (",".join(r.tags), r.name.lower(), r.version)
    if key == "metric":
        return lambda r: (_numeric_metric(r) or 0.0, r.name.lower(), r.version)
    if key == "location":
        return lambda r: (r.location or "", r.name.lower(), r.version)
    raise ValueError(f"unknown sort column {key!r} (one of {', '.join(SORT_KEYS)})")


def _numeric_metric(r: ModelRow) -> float | None:
    km = key_metric(r.metrics)
    v = km[1] if km else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def parse_query(text: str) -> list[tuple[str, str]]:
    """'llama tag:prod family:vit' -> [('any', 'llama'), ('tag', 'prod'), ('family', 'vit')]."""
    terms = []
    for word in text.lower().split():
        field_, sep, value = word.partition(":")
        if sep and field_ in ("tag", "t", "family", "f", "name", "n") and value:
            terms.append(({"t": "tag", "f": "family", "n": "name"}.get(field_, field_), value))
        else:
            terms.append(("any", word))
    return terms


def _matches(row: ModelRow, terms: list[tuple[str, str]]) -> bool:
    for kind, value in terms:
        if kind == "any":
            if value not in row.hay:
                return False
        elif kind == "name":
            if value not in row.name.lower():
                return False
        elif kind == "family":
            if value not in (row.family or "").lower():
                return False
        elif not any(value in t.lower() for t in row.tags):
            return False
    return True


# ----- details, tensors, lineage, runs ---------------------------------------------------

@dataclass(slots=True)
class TensorRow:
    name: str
    shape: tuple[int, ...]
    dtype: str
    params: int
    file: str
    norm: float | None = None  # filled in by `tensor_norms`, in a worker


@dataclass(frozen=True)
class TaskResult:
    ok: bool
    message: str


class ZooData:
    """The catalog as the TUI sees it: listed rows (filtered and sorted in memory) and the
    details, tensors, lineage and runs of one model, all through `zoo.catalog.Catalog`."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.rows: list[ModelRow] = []
        self.by_id: dict[int, ModelRow] = {}
        self._sorted: dict[tuple[str, bool], list[ModelRow]] = {}

    # ----- where --------------------------------------------------------------------------
    @property
    def where(self) -> str:
        """The catalog for a title: a SQLite file's name, else the URL with its password masked."""
        from zoo.catalog.location import display_url, sqlite_path

        path = sqlite_path(self.catalog.url)
        return path.name if path is not None else display_url(self.catalog.url)

    @property
    def store(self) -> Path:
        return self.catalog.store

    def short(self, path: str | None) -> str:
        return shorten_path(path, self.catalog.store)

    # ----- listing ------------------------------------------------------------------------
    def load(self) -> int:
        """(Re)read every model's listing; returns the count."""
        self.rows = [ModelRow.from_ls(r) for r in views.ls(self.catalog)]
        self.by_id = {r.id: r for r in self.rows}
        self._sorted = {("name", False): self.rows}  # ls order is name, version
        return len(self.rows)

    def refresh_row(self, model_id: int) -> ModelRow | None:
        """Re-read one model's listing after a change (tags, metrics)."""
        old = self.by_id.get(model_id)
        entry = self.catalog.get(model_id)
        fresh = next((r for r in views.ls(self.catalog, name=entry.name) if r["id"] == model_id), None)
        if fresh is None:
            return None
        row = ModelRow.from_ls(fresh)
        if old is not None:
            self.rows[self.rows.index(old)] = row
        else:
            self.rows.append(row)
        self.by_id[model_id] = row
        self._sorted = {}
        return row

    def sorted_rows(self, key: str = "name", reverse: bool = False) -> list[ModelRow]:
        cached = self._sorted.get((key, reverse))
        if cached is None:
            if key == "metric":  # models without a numeric metric stay last either way
                has = [r for r in self.rows if _numeric_metric(r) is not None]
                rest = sorted((r for r in self.rows if _numeric_metric(r) is None), key=_sort_key("name"))
                cached = sorted(has, key=_sort_key(key), reverse=reverse) + rest
            else:
                cached = sorted(self.rows, key=_sort_key(key), reverse=reverse)
            self._sorted[(key, reverse)] = cached
        return cached

    def query(self, text: str = "", key: str = "name", reverse: bool = False) -> list[ModelRow]:
        """Rows matching the filter text (all terms must match name, family or a tag;
        `tag:`, `family:`, `name:` narrow a term to one field), sorted."""
        rows = self.sorted_rows(key, reverse)
        terms = parse_query(text)
        if not terms:
            return rows
        return [r for r in rows if _matches(r, terms)]

    # ----- one model ----------------------------------------------------------------------
    def details(self, model_id: int) -> dict:
        """`views.show` (what `zoo show --json` prints) plus display forms of paths."""
        info = views.show(self.catalog, model_id, detailed=True)
        info["location_shown"] = self.short(info.get("location"))
        info["path_shown"] = self.short(info.get("path"))
        return info

    def tensors(self, model_id: int) -> tuple[list[TensorRow], Checkpoint | None, str | None]:
        """Tensor rows from the headers (no weights read), the open checkpoint for norms,
        or an error line when the files are not here."""
        from zoo.errors import ZooError

        try:
            ckpt = self.catalog.open(model_id)
        except ZooError as e:
            return [], None, str(e)
        rows = [TensorRow(t.name, tuple(t.shape), t.dtype, t.numel, t.file) for t in ckpt.tensors.values()]
        return rows, ckpt, None

    @staticmethod
    def filter_tensors(rows: list[TensorRow], text: str) -> list[TensorRow]:
        words = text.lower().split()
        if not words:
            return rows
        return [r for r in rows if all(w in r.name.lower() for w in words)]

    @staticmethod
    def tensor_norms(ckpt: Checkpoint, rows: Iterable[TensorRow]) -> Iterator[TensorRow]:
        """Compute each tensor's L2 norm (float32 math), one tensor in memory at a time."""
        import torch

        for r in rows:
            t = ckpt.get(r.name)
            if t.is_floating_point() or t.is_complex():
                r.norm = float(torch.linalg.vector_norm(t.float()))
            else:
                r.norm = float(torch.linalg.vector_norm(t.to(torch.float64)))
            yield r

    def lineage(self, model_id: int) -> Lineage:
        """Ancestors and descendants with the edges among them and their runs."""
        return views.lineage(self.catalog, model_id)

    def runs(self, limit: int | None = 500) -> list[dict]:
        from zoo.catalog.records import run_row

        return [run_row(r) for r in self.catalog.runs(limit)]

    def model_id(self, ref: str | int) -> int:
        return self.catalog.get(ref).id

    # ----- actions (run by the app, long ones in workers) ---------------------------------
    def tag(self, model_id: int, text: str) -> list[str]:
        """'a b -c' adds a and b and removes c; returns the model's tags after."""
        words = text.replace(",", " ").split()
        add = [w for w in words if not w.startswith("-")]
        remove = [w[1:] for w in words if w.startswith("-") and len(w) > 1]
        tags = self.catalog.tag(model_id, add=add, remove=remove)
        self.refresh_row(model_id)
        return tags

    def verify(self, model_id: int, progress: Callable[[int], None] | None = None) -> TaskResult:
        (res,) = self.catalog.verify(model_id, progress=progress)
        return TaskResult(res.ok, f"ok {res.ref}" if res.ok else f"FAILED {res.ref}: " + "; ".join(res.problems))

    def export(self, model_id: int, target: str, progress: Callable[[int], None] | None = None) -> TaskResult:
        entry = self.catalog.get(model_id)
        path = self.catalog.export(entry, Path(target).expanduser(), progress=progress)
        return TaskResult(True, f"exported {entry.ref} to {path}")

    @staticmethod
    def hub_push() -> tuple[Callable | None, str]:
        """(`zoo.hub.push`, "") imported only now, or (None, why it is not available)."""
        try:
            hub = importlib.import_module("zoo.hub")
        except ImportError as e:
            if isinstance(e, ModuleNotFoundError) and e.name == "zoo.hub":
                return None, "pushing to the Hub is not available yet: this version has no zoo.hub"
            return None, f"pushing to the Hub is not available: importing zoo.hub failed ({e})"
        push = getattr(hub, "push", None)
        if not callable(push):
            return None, "pushing to the Hub is not available yet: zoo.hub has no push()"
        return push, ""

    def push(self, model_id: int, repo_id: str) -> TaskResult:
        push, why = self.hub_push()
        if push is None:
            return TaskResult(False, why)
        ref = self.catalog.get(model_id).ref
        result = push(self.catalog, ref, repo_id)
        extra = f": {result}" if isinstance(result, str) and result else ""
        return TaskResult(True, f"pushed {ref} to {repo_id}{extra}")

    def compare(self, a: int, b: int, progress: Callable[[int], None] | None = None) -> list[dict]:
        """`zoo diff A B` as table cells {name, rel_change, max_abs, note}: most changed
        first, then tensors only in one model or with different shapes."""
        rows = views.diff(self.catalog.open(a), self.catalog.open(b), progress=progress,
                          labels=(self.catalog.get(a).ref, self.catalog.get(b).ref))
        return [dict(zip(("name", "rel_change", "max_abs", "note"), views.diff_cells(r))) for r in rows]

    def tensor_count(self, model_id: int) -> int:
        return len(self.catalog.open(model_id).names())
