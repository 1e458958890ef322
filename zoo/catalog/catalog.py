"""The catalog API: add, find, tag, verify, remove models; record runs and lineage.

Every write happens in one transaction: a model row, its files and tags, the run that made
it and its lineage edges land together or not at all, and files copied into the store are
moved into place only inside that transaction (and removed again if it fails).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from ..checkpoint import Checkpoint
from ..errors import NotFoundError, RefusedError, ZooError, did_you_mean
from ..families import catalog_label
from ..hashing import BackgroundHashes, Progress, combined_digest, sha256_file, sha256_files
from ..temporaries import pause_point, remove as remove_temporary, stale_temporaries, temp_name
from ..writer import WrittenCheckpoint, copy_files, save_tensors
from . import store as store_files
from .db import make_engine, open_catalog, resolve_url, sqlite_path
from .guard import quick_check_sqlite
from .location import display_url
from .reader import ls_rows, walk_ids
from .records import edge_row, file_row, model_row, run_row
from .store import StoreReport
from .tables import LineageEdge, ModelEntry, ModelFile, ModelTag, Run

# inserts that lose a version number to a concurrent writer are retried (immediately, five
# times, once lost one of four PostgreSQL writers' inserts in a CI run)
INSERT_ATTEMPTS = 20
_REF = re.compile(r"^(?P<name>.+)@(?P<version>\d+)$")
NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")


@dataclass(frozen=True)
class Parent:
    """A lineage edge to declare when registering: `ref` is any catalog reference."""

    ref: str | int
    role: str = "input"
    weight: float | None = None


@dataclass
class AddResult:
    entry: ModelEntry
    created: bool  # False when identical bytes were already catalogued


@dataclass
class VerifyResult:
    ref: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RunRecord:
    """What an operator did, recorded with the output it registers."""

    operator: str
    operator_version: str = "0"
    params: dict | None = None
    cache_key: str | None = None
    seconds: float | None = None
    timings: dict | None = None


@dataclass
class NewEntry:
    """One model an operator wrote (to `incoming_path()`), to register with the run that made it."""

    written: WrittenCheckpoint
    name: str
    tags: Sequence[str] = ()
    metrics: dict | None = None
    detail: dict | None = None  # what sets it apart from the run's other outputs (kept in the run's outputs)


@dataclass
class _Pending:
    """A model ready to insert: its checkpoint, its hashed files and where they come from."""

    name: str
    ckpt: Checkpoint
    files: list[tuple[str, int, str]]
    digest: str
    location: str | None  # indexed in place here, or
    move_from: Path | None  # moved into the store from here
    tags: Sequence[str] = ()
    metrics: dict | None = None
    source: str | None = None
    detail: dict | None = None


@dataclass
class StagedInput:
    """A checkpoint given by path to an operator: hashed, but not yet in the catalog. The
    operator reads it through `entry` (unsaved: no id, a provisional version);
    `register_many(staged=...)` inserts it in the same transaction as the outputs made from
    it, so a run that fails adds no row at all. `key` is the Parent ref that names it."""

    entry: ModelEntry
    pending: _Pending
    key: str = field(default_factory=lambda: f"staged:{uuid.uuid4().hex}")

    def discard(self) -> None:
        """Remove what staging wrote (a converted legacy checkpoint), if it is still there."""
        if self.pending.move_from is not None:
            shutil.rmtree(self.pending.move_from, ignore_errors=True)


class Catalog:
    """A catalog database plus the store folder where produced checkpoints are written."""

    def __init__(self, target: str | os.PathLike | None = None, store: str | os.PathLike | None = None, *,
                 create: bool = True, adopt_empty: bool = False) -> None:
        """Open the catalog at `target`. It must be a weightzoo catalog (see `guard.py`);
        `create=False` (commands that only read) refuses to make one where there is none,
        `adopt_empty` (`zoo init`) makes an empty database file a catalog."""
        self.url = resolve_url(target)
        self.engine = make_engine(self.url)
        migrated = open_catalog(self.engine, self.url, create=create, adopt_empty=adopt_empty)
        self._write_engine = self.engine.execution_options(zoo_write=True)
        db_file = sqlite_path(self.url)
        default_store = (db_file.parent if db_file else Path.cwd()) / "zoo-store"
        self.store = Path(store or os.environ.get("ZOO_STORE") or default_store).absolute()
        self._swept = False  # stale temporaries removed at this catalog's first write to the store
        if migrated:
            self.refresh_listings()

    @property
    def where(self) -> str:
        """The catalog for messages: a SQLite file's path, else the URL with its password masked."""
        path = sqlite_path(self.url)
        return str(path) if path else display_url(self.url)

    def _read(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _write(self) -> Session:
        return Session(self._write_engine, expire_on_commit=False)

    # ----- references ------------------------------------------------------------------
    def get(self, ref: str | int | ModelEntry) -> ModelEntry:
        """Resolve `name` (latest version), `name@N`, or an integer id."""
        if isinstance(ref, ModelEntry):
            return ref
        with self._read() as s:
            entry = self._resolve(s, ref)
        return entry

    def _resolve(self, s: Session, ref: str | int) -> ModelEntry:
        if isinstance(ref, int):
            entry = s.get(ModelEntry, ref)
        elif not _storable(ref):  # a name or path that is not valid UTF-8 names no entry
            raise NotFoundError(f"no model {ascii(ref)} in catalog {self.where}: the reference is not valid UTF-8")
        else:
            ref = ref.strip()
            m = _REF.match(ref)
            if m:
                entry = s.exec(
                    select(ModelEntry).where(ModelEntry.name == m["name"], ModelEntry.version == int(m["version"]))
                ).first()
            else:
                entry = s.exec(
                    select(ModelEntry).where(ModelEntry.name == ref).order_by(col(ModelEntry.version).desc())
                ).first()
                if entry is None and ref.isdigit():
                    entry = s.get(ModelEntry, int(ref))
        if entry is None:
            name = _REF.match(ref)["name"] if isinstance(ref, str) and _REF.match(ref) else str(ref)
            hint = did_you_mean(name, s.exec(select(ModelEntry.name).distinct()).all())
            raise NotFoundError(f"no model {ref!r} in catalog {self.where}{hint}; see `zoo ls`")
        return entry

    def open(self, ref: str | int | ModelEntry) -> Checkpoint:
        """The checkpoint behind a catalog entry, ready for lazy tensor reads."""
        entry = self.get(ref)
        if not entry.path:
            raise NotFoundError(f"{entry.ref} has no local files ({entry.location}); pull it first")
        if not Path(entry.path).exists():
            raise NotFoundError(f"{entry.ref}: files are gone from {entry.path} (run `zoo verify`)")
        return Checkpoint.open(entry.path)

    # ----- adding ----------------------------------------------------------------------
    def add(
        self,
        path: str | os.PathLike,
        name: str | None = None,
        *,
        copy: bool = False,
        tags: Iterable[str] = (),
        parents: Sequence[Parent] = (),
        metrics: dict | None = None,
        progress: Progress | None = None,
        source: str | None = None,
        hashes: BackgroundHashes | None = None,
    ) -> AddResult:
        """Index a checkpoint in place (or copy it into the store); legacy pickles are
        converted to safetensors in the store. Identical bytes return the existing entry.
        `source` (e.g. `hub:org/name@commit`): `path` is a folder already written in the
        store (`incoming_path()`) that the entry adopts, with `source` as its location.
        `hashes`: the hashing of the checkpoint's files, started earlier by the caller (used
        when it hashes exactly the files indexed in place; the caller cancels it on error)."""
        ckpt = Checkpoint.open(path)
        _check_addable(ckpt, in_place=source is None and not copy and not ckpt.needs_conversion)
        name = _check_name(name or _default_name(ckpt))
        if not parents and ckpt.adapter_config is not None:  # a PEFT adapter: its base, when catalogued
            base = self.adapter_base(ckpt.adapter_config)
            parents = [Parent(base.id, "base")] if base is not None else []
        parent_ids = self._parent_ids(parents)  # fail on a bad parent before any work
        incoming: Path | None = None
        try:
            if source is not None:
                incoming = Path(path)
                paths = [ckpt.root / rel for rel in ckpt.files()]
                files = [(rel, p.stat().st_size, d) for rel, p, d in
                         zip(ckpt.files(), paths, sha256_files(paths, progress))]
            elif ckpt.needs_conversion:
                incoming = self._incoming_path()
                written = _convert_pickled(ckpt, incoming)
                files = [(f.path, f.size, f.sha256) for f in written.files]
            elif copy:
                incoming = self._incoming_path()
                written = copy_files(ckpt.root, ckpt.files(), incoming, progress)
                files = [(f.path, f.size, f.sha256) for f in written.files]
            else:
                files = _hash_in_place(ckpt, progress, hashes)
            digest = combined_digest((rel, sha) for rel, _, sha in files)
            existing = self.find_digest(digest)
            if existing is not None:
                return AddResult(existing, created=False)
            location = None if incoming else str(ckpt.path)
            entry = self._insert([_Pending(name, ckpt, files, digest, location, incoming, tuple(tags), metrics,
                                           source)], parents=parent_ids)[0]
            incoming = None
            return AddResult(entry, created=True)
        finally:
            if incoming is not None:
                shutil.rmtree(incoming, ignore_errors=True)

    def stage(self, path: str | os.PathLike, name: str | None = None,
              progress: Progress | None = None) -> ModelEntry | StagedInput:
        """A checkpoint an operator is given by path: the catalogued entry with the same bytes,
        else a `StagedInput` (hashed, legacy pickles converted into the store) that is inserted
        only with the outputs made from it (`register_many(staged=...)`)."""
        ckpt = Checkpoint.open(path)
        name = _check_name(name or _default_name(ckpt))
        _check_addable(ckpt, in_place=not ckpt.needs_conversion)  # as `add` would
        incoming: Path | None = None
        try:
            if ckpt.needs_conversion:
                incoming = self._incoming_path()
                written = _convert_pickled(ckpt, incoming)
                files = [(f.path, f.size, f.sha256) for f in written.files]
                ckpt = Checkpoint.open(incoming)
            else:
                files = _hash_in_place(ckpt, progress)
            digest = combined_digest((rel, sha) for rel, _, sha in files)
            existing = self.find_digest(digest)
            if existing is not None:
                return existing
            with self._read() as s:
                version = (s.exec(select(func.max(ModelEntry.version)).where(ModelEntry.name == name)).one() or 0) + 1
            config = entry_config(ckpt)
            family, arch = entry_label(ckpt, config)
            where = str(incoming or ckpt.path)
            entry = ModelEntry(name=name, version=version, family=family, architecture=arch,
                               num_params=ckpt.num_params, dtype=ckpt.dtype, bytes=sum(f[1] for f in files),
                               location=where, path=where, owned=incoming is not None, digest=digest,
                               config=config)
            staged = StagedInput(entry, _Pending(name, ckpt, files, digest, None if incoming else str(ckpt.path),
                                                 incoming))
            incoming = None
            return staged
        finally:
            if incoming is not None:
                shutil.rmtree(incoming, ignore_errors=True)

    def register(
        self,
        written: WrittenCheckpoint,
        name: str,
        *,
        run: RunRecord | None = None,
        inputs: Sequence[Parent] = (),
        tags: Iterable[str] = (),
        metrics: dict | None = None,
    ) -> ModelEntry:
        """Register an operator's output (written with `incoming_path()` as its target):
        the model, its files, the run and the lineage edges in one transaction."""
        return self.register_many([NewEntry(written, name, tuple(tags), metrics)], run=run, inputs=inputs)[0]

    def register_many(self, outputs: Sequence[NewEntry], *, run: RunRecord | None = None,
                      inputs: Sequence[Parent] = (), staged: Sequence[StagedInput] = ()) -> list[ModelEntry]:
        """Register the outputs of one run: every model with its files, the one run that made
        them and the lineage edges from each input to each output, in one transaction. All
        land, or none does and their folders are removed. Entries come back in order.
        `staged`: inputs given by path (`stage`), inserted in the same transaction; a Parent
        names one by its `key`."""
        try:
            if not outputs:
                raise ValueError("register_many: no outputs to register")
            parent_ids = self._parent_ids(inputs, staged)
            pending = []
            for o in outputs:
                files = [(f.path, f.size, f.sha256) for f in o.written.files]
                digest = combined_digest((rel, sha) for rel, _, sha in files)
                pending.append(_Pending(_check_name(o.name), Checkpoint.open(o.written.path), files, digest, None,
                                        o.written.path, tuple(o.tags), o.metrics, detail=o.detail))
            return self._insert(pending, parents=parent_ids, run=run, staged=staged)
        except BaseException:
            for o in outputs:
                shutil.rmtree(o.written.path, ignore_errors=True)
            raise
        finally:
            for st in staged:  # inserted (moved into the store), found already catalogued, or failed
                st.discard()

    def adapter_base(self, adapter_config: dict) -> ModelEntry | None:
        """The catalog entry a PEFT adapter's `base_model_name_or_path` names: an entry of that
        name, an entry indexed at that path, or one pulled from that Hub repository (the
        newest); None when none is (the text stays in the adapter's recorded config)."""
        text = adapter_config.get("base_model_name_or_path")
        if not isinstance(text, str) or not text.strip() or not _storable(text):
            return None
        try:
            return self.get(text)
        except NotFoundError:
            pass
        where = Path(text).expanduser()
        with self._read() as s:
            if where.exists():
                found = s.exec(select(ModelEntry).where(ModelEntry.path == str(where.resolve()))
                               .order_by(col(ModelEntry.id).desc())).first()
                if found is not None:
                    return found
            return s.exec(select(ModelEntry).where(col(ModelEntry.location).startswith(f"hub:{text}@", autoescape=True))
                          .order_by(col(ModelEntry.id).desc())).first()

    def incoming_path(self) -> Path:
        """A fresh path in the store for an operator to write its output to."""
        return self._incoming_path()

    def _incoming_path(self) -> Path:
        """A fresh hidden folder in the store, named after its owner process (`zoo.temporaries`).
        The first one a Catalog asks for also removes the leftovers of killed processes."""
        self.store.mkdir(parents=True, exist_ok=True)
        if not self._swept:
            self._swept = True
            for left in stale_temporaries(self.store):
                remove_temporary(left)
        return self.store / temp_name(".incoming-")

    def _parent_ids(self, parents: Sequence[Parent],
                    staged: Sequence[StagedInput] = ()) -> list[tuple[ModelEntry, Parent]]:
        by_key = {st.key: st.entry for st in staged}
        with self._read() as s:
            return [(by_key[p.ref] if p.ref in by_key else self._resolve(s, p.ref), p) for p in parents]

    def _insert(self, pending: list[_Pending], *, parents: Sequence[tuple[ModelEntry, Parent]] = (),
                run: RunRecord | None = None, staged: Sequence[StagedInput] = ()) -> list[ModelEntry]:
        """Insert the models, their run and lineage in one transaction; folders moved into
        the store go back where they were if it fails. `staged` inputs are inserted first
        (or matched to an entry with the same digest) and stand in for their unsaved entries
        among `parents`."""
        configs = [entry_config(p.ckpt) for p in pending]  # read before the folders move into the store
        kinds = [entry_label(p.ckpt, c) for c, p in zip(configs, pending)]
        staged_kinds = [(st.entry.family, st.entry.architecture) for st in staged]
        given = list(parents)
        for attempt in range(INSERT_ATTEMPTS):
            moved: list[tuple[Path, Path]] = []  # (final, moved from)
            try:
                with self._write() as s:
                    real = {id(st.entry): self._insert_staged(s, st, kind, moved) for st, kind in zip(staged, staged_kinds)}
                    parents = [(real.get(id(pe), pe), p) for pe, p in given]
                    entries = [self._insert_model(s, p, kind, config, moved)
                               for p, kind, config in zip(pending, kinds, configs)]
                    run_id = None
                    if run is not None:
                        row = Run(
                            operator=run.operator, operator_version=run.operator_version, params=run.params,
                            inputs=[{"id": pe.id, "ref": pe.ref, "digest": pe.digest, "role": p.role, "weight": p.weight}
                                    for pe, p in parents],
                            outputs=[_output_row(e, p) for e, p in zip(entries, pending)],
                            cache_key=run.cache_key, seconds=run.seconds, timings=run.timings,
                        )
                        s.add(row)
                        s.flush()
                        run_id = row.id
                    for entry, p in zip(entries, pending):
                        for pe, edge in parents:
                            s.add(LineageEdge(parent_id=pe.id, child_id=entry.id, role=edge.role, weight=edge.weight,
                                              run_id=run_id))
                        entry.listing = _listing(entry, list(p.tags))
                        s.add(entry)
                    s.commit()
                    return entries
            except IntegrityError:
                # another writer took a version number (databases without BEGIN IMMEDIATE): try
                # again after a random pause, so that writers that collided do not collide again
                _move_back(moved)
                if attempt == INSERT_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
            except BaseException:
                _move_back(moved)
                raise
        raise AssertionError("unreachable")

    def _insert_staged(self, s: Session, st: StagedInput, kind: tuple[str | None, str | None],
                       moved: list[tuple[Path, Path]]) -> ModelEntry:
        """A staged input's row (the entry with its digest if one appeared meanwhile)."""
        found = s.exec(select(ModelEntry).where(ModelEntry.digest == st.pending.digest).order_by(ModelEntry.id)).first()
        if found is not None:
            return found
        entry = self._insert_model(s, st.pending, kind, st.entry.config, moved)
        entry.listing = _listing(entry, [])
        s.add(entry)
        return entry

    def _insert_model(self, s: Session, p: _Pending, kind: tuple[str | None, str | None], config: dict | None,
                      moved: list[tuple[Path, Path]]) -> ModelEntry:
        """One model row with its files and tags (its folder moved into the store, if owned)."""
        version = (s.exec(select(func.max(ModelEntry.version)).where(ModelEntry.name == p.name)).one() or 0) + 1
        if p.move_from is not None:
            path = self.store / p.name / f"v{version}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():  # left over from a removed entry
                shutil.rmtree(path)
            os.rename(p.move_from, path)
            moved.append((path, p.move_from))
            pause_point("after-rename")
        else:
            path = Path(p.location)
        family, arch = kind
        entry = ModelEntry(
            name=p.name, version=version, family=family, architecture=arch,
            num_params=p.ckpt.num_params, dtype=p.ckpt.dtype, bytes=sum(f[1] for f in p.files),
            location=p.source or str(path), path=str(path), owned=p.move_from is not None, digest=p.digest,
            config=config, metrics=p.metrics or None,
        )
        s.add(entry)
        s.flush()
        root = path.parent if path.is_file() else path
        for f in p.files:
            rel, size, sha = f
            s.add(ModelFile(model_id=entry.id, path=rel, size=size, sha256=sha, mtime_ns=_mtime_of(f, root / rel)))
        for t in sorted(set(p.tags)):
            s.add(ModelTag(model_id=entry.id, tag=t))
        return entry

    def find_digest(self, digest: str) -> ModelEntry | None:
        with self._read() as s:
            return s.exec(select(ModelEntry).where(ModelEntry.digest == digest).order_by(ModelEntry.id)).first()

    def find_run(self, cache_key: str) -> tuple[Run, list[ModelEntry]] | None:
        """The newest successful run with this cache key whose outputs still exist."""
        with self._read() as s:
            runs = s.exec(select(Run).where(Run.cache_key == cache_key, Run.status == "ok").order_by(col(Run.id).desc())).all()
            for r in runs:
                outs = [s.get(ModelEntry, o["id"]) for o in (r.outputs or [])]
                if outs and all(o is not None for o in outs):
                    return r, outs
        return None

    # ----- listing and details --------------------------------------------------------
    def ls(self, family: str | None = None, tag: str | None = None, name: str | None = None) -> list[dict]:
        """All matching models as JSON-ready dicts (the `zoo ls --json` schema)."""
        with self.engine.connect() as conn:
            return ls_rows(_executor(conn), family=family, tag=tag, name=name)

    def refresh_listings(self) -> int:
        """Fill missing `listing` rows (catalogs from before schema 2, bulk imports)."""
        done = 0
        with self._write() as s:
            rows = s.exec(select(ModelEntry).where(col(ModelEntry.listing).is_(None))).all()
            tags: dict[int, list[str]] = {}
            for mid, t in s.exec(select(ModelTag.model_id, ModelTag.tag)).all():
                tags.setdefault(mid, []).append(t)
            for row in rows:
                row.listing = _listing(row, tags.get(row.id, []))
                s.add(row)
                done += 1
            s.commit()
        return done

    def count(self) -> int:
        with self._read() as s:
            return s.exec(select(func.count()).select_from(ModelEntry)).one()

    def tags_of(self, ref: str | int | ModelEntry) -> list[str]:
        entry = self.get(ref)
        with self._read() as s:
            return sorted(s.exec(select(ModelTag.tag).where(ModelTag.model_id == entry.id)).all())

    def files_of(self, ref: str | int | ModelEntry) -> list[ModelFile]:
        entry = self.get(ref)
        with self._read() as s:
            return list(s.exec(select(ModelFile).where(ModelFile.model_id == entry.id).order_by(ModelFile.id)).all())

    def parents(self, ref: str | int | ModelEntry) -> list[tuple[LineageEdge, ModelEntry]]:
        entry = self.get(ref)
        with self._read() as s:
            rows = s.exec(select(LineageEdge, ModelEntry).join(ModelEntry, ModelEntry.id == LineageEdge.parent_id)
                          .where(LineageEdge.child_id == entry.id).order_by(LineageEdge.id)).all()
        return [(e, m) for e, m in rows]

    def children(self, ref: str | int | ModelEntry) -> list[tuple[LineageEdge, ModelEntry]]:
        entry = self.get(ref)
        with self._read() as s:
            rows = s.exec(select(LineageEdge, ModelEntry).join(ModelEntry, ModelEntry.id == LineageEdge.child_id)
                          .where(LineageEdge.parent_id == entry.id).order_by(LineageEdge.id)).all()
        return [(e, m) for e, m in rows]

    def producing_run(self, ref: str | int | ModelEntry) -> Run | None:
        entry = self.get(ref)
        with self._read() as s:
            run = s.exec(select(Run).join(LineageEdge, LineageEdge.run_id == Run.id)
                         .where(LineageEdge.child_id == entry.id)).first()
            if run is None:  # a run with no inputs (e.g. a trained population): found by its output
                from sqlalchemy import String, cast

                run = s.exec(select(Run).where(cast(Run.outputs, String).like(f'%{{"id": {entry.id}, %'))).first()
            return run

    def show(self, ref: str | int | ModelEntry) -> dict:
        """Everything about one model: the `zoo show --json` schema."""
        entry = self.get(ref)
        row = model_row(entry, self.tags_of(entry))
        run = self.producing_run(entry)
        row.update(
            path=entry.path,
            owned=entry.owned,
            digest=entry.digest,
            files=[file_row(f) for f in self.files_of(entry)],
            config=entry.config,
            card=entry.card or {},
            parents=[edge_row(e, m, "parent") for e, m in self.parents(entry)],
            children=[edge_row(e, m, "child") for e, m in self.children(entry)],
            run=run_row(run) if run else None,
        )
        return row

    # ----- provenance queries ----------------------------------------------------------
    def ancestors(self, ref: str | int | ModelEntry) -> list[ModelEntry]:
        return self._walk(self.get(ref).id, up=True)

    def descendants(self, ref: str | int | ModelEntry) -> list[ModelEntry]:
        return self._walk(self.get(ref).id, up=False)

    def _walk(self, start: int, up: bool) -> list[ModelEntry]:
        """Transitive parents (up) or children, by a recursive SQL query (any database)."""
        with self._read() as s:
            ids = walk_ids(_executor(s.connection()), start, up)
            if not ids:
                return []
            return list(s.exec(select(ModelEntry).where(col(ModelEntry.id).in_(ids)).order_by(ModelEntry.id)).all())

    def edges_among(self, ids: Iterable[int]) -> list[tuple[LineageEdge, Run | None]]:
        ids = list(ids)
        with self._read() as s:
            rows = s.exec(
                select(LineageEdge, Run).join(Run, Run.id == LineageEdge.run_id, isouter=True)
                .where(col(LineageEdge.child_id).in_(ids), col(LineageEdge.parent_id).in_(ids))
                .order_by(LineageEdge.id)
            ).all()
        return [(e, r) for e, r in rows]

    def runs(self, limit: int | None = None) -> list[Run]:
        with self._read() as s:
            q = select(Run).order_by(col(Run.id).desc())
            if limit:
                q = q.limit(limit)
            return list(s.exec(q).all())

    # ----- changing entries ------------------------------------------------------------
    def tag(self, ref: str | int | ModelEntry, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        entry = self.get(ref)
        with self._write() as s:
            have = set(s.exec(select(ModelTag.tag).where(ModelTag.model_id == entry.id)).all())
            for t in set(add) - have:
                _check_tag(t)
                s.add(ModelTag(model_id=entry.id, tag=t))
            for t in set(remove) & have:
                s.delete(s.get(ModelTag, (entry.id, t)))
            row = s.get(ModelEntry, entry.id)
            row.listing = _listing(row, list((have | set(add)) - set(remove)))
            s.add(row)
            s.commit()
        return self.tags_of(entry)

    def set_metrics(self, ref: str | int | ModelEntry, metrics: dict, replace: bool = False) -> dict:
        """Merge (or replace) free-form JSON metrics on an entry."""
        entry = self.get(ref)
        with self._write() as s:
            row = s.get(ModelEntry, entry.id)
            row.metrics = dict(metrics) if replace else {**(row.metrics or {}), **metrics}
            row.listing = _listing(row, list(s.exec(select(ModelTag.tag).where(ModelTag.model_id == entry.id)).all()))
            s.add(row)
            s.commit()
            return row.metrics

    def set_card(self, ref: str | int | ModelEntry, card: dict) -> None:
        entry = self.get(ref)
        with self._write() as s:
            row = s.get(ModelEntry, entry.id)
            row.card = {**(row.card or {}), **card}
            s.add(row)
            s.commit()

    def remove(self, ref: str | int | ModelEntry, force: bool = False, keep_files: bool = False) -> ModelEntry:
        """Delete an entry (and its store files). Refuses, unless forced, when other models
        descend from it, since their lineage would lose a parent."""
        entry = self.get(ref)
        kids = self.children(entry)
        if kids and not force:
            names = ", ".join(m.ref for _, m in kids[:3]) + (" ..." if len(kids) > 3 else "")
            raise RefusedError(
                f"{entry.ref} has {len(kids)} child model(s) ({names}); removing it cuts their lineage - use --force to do it anyway"
            )
        with self._write() as s:
            s.delete(s.get(ModelEntry, entry.id))
            s.commit()
        if entry.owned and not keep_files and entry.path:
            target = Path(entry.path)
            target = target.parent if target.is_file() else target
            if target.is_relative_to(self.store):
                shutil.rmtree(target, ignore_errors=True)
        return entry

    def verify(self, ref: str | int | ModelEntry | None = None, progress: Progress | None = None) -> list[VerifyResult]:
        """Re-hash files; report missing, resized or changed ones."""
        entries = [self.get(ref)] if ref is not None else self._all_entries()
        out = []
        for entry in entries:
            res = VerifyResult(entry.ref)
            if not entry.path:
                res.problems.append(f"no local files ({entry.location})")
                out.append(res)
                continue
            root = _files_root(entry)
            for f in self.files_of(entry):
                p = root / f.path
                if not p.is_file():
                    res.problems.append(f"missing {p}")
                elif p.stat().st_size != f.size:
                    res.problems.append(f"changed {p} (size {p.stat().st_size}, catalogued {f.size})")
                elif sha256_file(p, progress) != f.sha256:
                    res.problems.append(f"changed {p} (sha256 differs)")
            out.append(res)
        return out

    def check_unchanged(self, ref: str | int | ModelEntry) -> None:
        """Refuse to let an operator read an entry whose files are not the bytes catalogued.
        Cheap when nothing changed (size and mtime as recorded); on any change the file is
        re-hashed: the same bytes (only touched) are accepted and the new mtime recorded,
        different bytes are refused with one line saying how to register them."""
        entry = ref if isinstance(ref, ModelEntry) else self.get(ref)
        if entry.id is None or not entry.path:
            return  # staged with this run (just hashed), or no local files (open() says so)
        root = _files_root(entry)
        touched: list[tuple[int, int]] = []
        for f in self.files_of(entry):
            p = root / f.path
            try:
                st = p.stat()
            except OSError:
                raise NotFoundError(f"{entry.ref}: {p} is gone since it was catalogued (run `zoo verify`)") from None
            if st.st_size == f.size and st.st_mtime_ns == f.mtime_ns:
                continue
            if st.st_size != f.size:
                why = f"size {st.st_size}, catalogued {f.size}"
            elif sha256_file(p) != f.sha256:
                why = "sha256 differs"
            else:
                touched.append((f.id, st.st_mtime_ns))
                continue
            raise RefusedError(f"{entry.ref}: {p} changed since it was catalogued ({why}); its digest would be "
                               f"recorded for other bytes - register them with `zoo add {entry.path} --name "
                               f"{entry.name}` (a new version) and use that")
        if touched:
            with self._write() as s:
                for file_id, mtime in touched:
                    row = s.get(ModelFile, file_id)
                    row.mtime_ns = mtime
                    s.add(row)
                s.commit()

    # ----- the database and the store ------------------------------------------------------
    def integrity_problems(self) -> list[str]:
        """SQLite's quick integrity check of the catalog file ([] when sound, or not SQLite)."""
        path = sqlite_path(self.url)
        return quick_check_sqlite(path) if path is not None and path.exists() else []

    def store_report(self) -> StoreReport:
        """Store folders no entry points at, and stale temporaries (see `store.py`)."""
        with self._store_lock() as referenced:
            return store_files.report(self.store, referenced)

    def collect_garbage(self, dry_run: bool = False) -> list[Path]:
        """Remove (or with dry_run only list) what `store_report` finds."""
        with self._store_lock() as referenced:
            found = store_files.report(self.store, referenced)
            return [*found.orphans, *found.temporaries] if dry_run else store_files.clear(self.store, found)

    @contextmanager
    def _store_lock(self):
        """The paths entries point at, read holding the write lock (on SQLite): a writer moves
        an output into the store and commits its row under that lock, so a folder between the
        two is never taken for an orphan."""
        with self._write() as s:
            s.connection()  # BEGIN IMMEDIATE
            yield [p for p in s.exec(select(ModelEntry.path)).all() if p]
            s.rollback()

    def _all_entries(self) -> list[ModelEntry]:
        with self._read() as s:
            return list(s.exec(select(ModelEntry).order_by(ModelEntry.name, ModelEntry.version)).all())

    def export(self, ref: str | int | ModelEntry, target: str | os.PathLike, progress: Progress | None = None) -> Path:
        """Copy an entry's files to a new folder, checking each digest while copying."""
        entry = self.get(ref)
        ckpt = self.open(entry)
        catalogued = {f.path: f.sha256 for f in self.files_of(entry)}
        written = copy_files(ckpt.root, list(catalogued), Path(target), progress)
        bad = [f.path for f in written.files if catalogued[f.path] != f.sha256]
        if bad:
            shutil.rmtree(written.path, ignore_errors=True)
            raise ZooError(f"{entry.ref}: {bad[0]} changed since it was catalogued (run `zoo verify`); nothing exported")
        return written.path


def _files_root(entry: ModelEntry) -> Path:
    """The folder an entry's file rows are relative to."""
    root = Path(entry.path)
    return root.parent if root.suffix == ".safetensors" else root


def _output_row(entry: ModelEntry, p: _Pending) -> dict:
    """An item of a run's outputs list."""
    row = {"id": entry.id, "ref": entry.ref, "digest": p.digest}
    return {**row, "detail": p.detail} if p.detail else row


def _move_back(moved: list[tuple[Path, Path]]) -> None:
    """Undo the moves of a failed transaction: each folder back where it was written."""
    for final, origin in reversed(moved):
        if final.exists():
            os.rename(final, origin)
        try:
            final.parent.rmdir()  # the name folder made for it, unless it holds other versions
        except OSError:
            pass


def _listing(entry: ModelEntry, tags: list[str]) -> str:
    import orjson

    return orjson.dumps(model_row(entry, tags)).decode()


class _File(tuple):
    """(file, size, sha256), plus the st_mtime_ns the bytes had when they were hashed."""

    mtime_ns: int | None = None

    def __new__(cls, rel: str, size: int, sha: str, mtime_ns: int | None = None) -> "_File":
        self = super().__new__(cls, (rel, size, sha))
        self.mtime_ns = mtime_ns
        return self


def _mtime_of(f: tuple, path: Path) -> int | None:
    """The mtime to record for a file row: when it was hashed in place, else (a file just
    written into the store) its mtime now."""
    if getattr(f, "mtime_ns", None) is not None:
        return f.mtime_ns
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _hash_in_place(ckpt: Checkpoint, progress: Progress | None = None,
                   hashes: BackgroundHashes | None = None) -> list[tuple[str, int, str]]:
    """(file, size, sha256) of a checkpoint indexed where it is (files hash in parallel
    threads, or already are: `hashes`), with the size and mtime each had before hashing; a
    file that changes while it is hashed is refused (its digest would describe no bytes
    that ever existed as a whole)."""
    paths = [ckpt.root / rel for rel in ckpt.files()]
    if hashes is not None and hashes.paths == paths and hashes.stats is not None:
        before, digests = hashes.stats, hashes.result()
    else:
        before = [p.stat() for p in paths]
        digests = sha256_files(paths, progress)
    for p, st in zip(paths, before):
        now = p.stat()
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise ZooError(f"{p} changed while it was being hashed; run again when nothing is writing to it")
    return [_File(rel, st.st_size, d, st.st_mtime_ns) for rel, st, d in zip(ckpt.files(), before, digests)]


def entry_config(ckpt: Checkpoint) -> dict | None:
    """What an entry records as its config: config.json, or a PEFT adapter's settings."""
    adapter = ckpt.adapter_config
    return ckpt.config if adapter is None else adapter


def entry_label(ckpt: Checkpoint, config: dict | None) -> tuple[str | None, str | None]:
    """(family, architecture) of an entry; a PEFT adapter is family 'lora' (or its peft type)."""
    if ckpt.adapter_config is not None:
        kind = str(config.get("peft_type") or "peft").lower() if config else "peft"
        return kind, f"{kind.upper()} adapter"
    return catalog_label(config, ckpt.names())


def _default_name(ckpt: Checkpoint) -> str:
    stem = ckpt.path.stem if ckpt.single_file else ckpt.root.name
    return re.sub(r"[^A-Za-z0-9._\-]+", "-", stem).strip("-.") or "model"


def _storable(text: str) -> bool:
    """Whether a name or path can go into the database (text that is valid UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_addable(ckpt: Checkpoint, *, in_place: bool) -> None:
    """Refuse, before any hashing or copying, what the catalog cannot record faithfully:
    a file or folder name that is not valid UTF-8 (recorded as text), or a config.json
    that is not a JSON object (recorded as the entry's config)."""
    recorded = [(rel, ckpt.root / rel) for rel in ckpt.files()] + ([(str(ckpt.path), ckpt.path)] if in_place else [])
    for text, path in recorded:
        if not _storable(text):
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            raise ZooError(f"{shown}: the name is not valid UTF-8, so the catalog cannot record it; "
                           "rename it (e.g. with `mv`) and add it again")
    ckpt.config  # noqa: B018 - raises a one-line CorruptCheckpointError for a bad config.json
    ckpt.adapter_config  # noqa: B018 - and for a bad adapter_config.json


def _check_name(name: str) -> str:
    if not NAME_OK.match(name) or "@" in name or ".." in name:
        raise ZooError(f"invalid model name {name!r} (letters, digits, '.', '_', '-', '/'; no '@')")
    return name


check_name = _check_name  # public: the runner and --out refuse a bad name before any work


def _check_tag(tag: str) -> None:
    if not tag or len(tag) > 100 or any(c.isspace() for c in tag):
        raise ZooError(f"invalid tag {tag!r} (non-empty, no spaces)")


def _convert_pickled(ckpt: Checkpoint, target: Path) -> WrittenCheckpoint:
    """Legacy .bin/.pt weights -> a safetensors folder with the same side files."""
    from ..checkpoint import WEIGHT_INDEXES

    tensors = {n: ckpt.get(n) for n in ckpt.names()}
    side = {rel: ckpt.root / rel for rel in ckpt.side_files if rel not in WEIGHT_INDEXES}
    meta = {"converted_from": ckpt.weight_files}
    stem = "adapter_model" if ckpt.adapter_config is not None else "model"  # a PEFT adapter stays one
    return save_tensors(target, tensors, metadata=meta, side_files=side, stem=stem)


def _executor(conn):
    """Run reader SQL (named :params) on a SQLAlchemy connection, returning tuples."""
    return lambda sql, params: [tuple(r) for r in conn.execute(text(sql), params)]
