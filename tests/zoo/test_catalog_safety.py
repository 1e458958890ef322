"""The catalog touches only what is its own, the digest recorded is the digest of the bytes
read, and nothing half-done survives: other programs' databases refused byte-identical,
empty / damaged / future catalogs, read-only commands that create nothing, files changed
between `zoo add` and an operator, store leftovers reported and collected, a full disk."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import Catalog
from zoo.errors import CatalogError, ZooError

from tests.helpers.models import perturbed_copy

@pytest.fixture
def run(run, capsys):
    """The `zoo` command, with what fixtures printed while building models (progress bars) dropped."""
    def _run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        return run(*args)

    return _run


READ_ONLY = (["ls"], ["ls", "--json"], ["show", "m"], ["verify"], ["runs"], ["lineage", "m"], ["tensors", "m"],
             ["diff", "m", "n"], ["gc", "--dry-run"])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], err
    return lines[0]


def _other_program_db(path: Path, table: str = "models") -> Path:
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, title TEXT, price REAL)")
    con.execute(f"INSERT INTO {table} (title, price) VALUES ('a book', 9.5)")
    con.commit()
    con.close()
    return path


def _tables(path: Path) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    finally:
        con.close()


@pytest.mark.parametrize("table", ["models", "invoices"])
def test_another_programs_database_is_refused_and_left_byte_identical(run, tmp_path, llama_dir, table, monkeypatch):
    db = _other_program_db(tmp_path / "shop.db", table)
    before = _sha(db)
    monkeypatch.setenv("ZOO_CATALOG", str(db))
    for args in [*READ_ONLY, ["init"], ["add", str(llama_dir)], ["tag", "m", "x"]]:
        code, _, err = run(*args)
        line = _one_error_line(err)
        assert code != 0 and "not a weightzoo catalog" in line and str(db) in line, (args, err)
    assert _sha(db) == before  # not one byte changed: no tables added, journal mode untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("shop.db")) == ["shop.db"]  # no -wal/-shm
    assert _tables(db) == [table]
    with pytest.raises(CatalogError, match="not a weightzoo catalog"):
        Catalog(db)


def test_the_fast_ls_path_refuses_without_sqlalchemy(tmp_path):
    """`zoo ls` reads SQLite with the standard library; it refuses a foreign file the same way."""
    db = _other_program_db(tmp_path / "shop.db")
    code = ("import sys\nfrom zoo.cli import main\nrc = main(['--catalog', %r, 'ls', '--json'])\n"
            "print(rc, 'sqlalchemy' in sys.modules)" % str(db))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["1", "False"] and "not a weightzoo catalog" in done.stderr


def test_empty_file_is_refused_except_by_init_which_says_so(run, tmp_path):
    db = tmp_path / "empty.db"
    db.touch()
    for args in (["ls", "--json"], ["show", "m"], ["verify"]):
        code, _, err = run("--catalog", str(db), *args)
        assert code != 0 and "empty database" in _one_error_line(err) and "zoo init" in err
    assert db.stat().st_size == 0
    code, out, _ = run("--catalog", str(db), "init")
    assert code == 0 and f"made the empty database {db} a weightzoo catalog" in out
    assert run("--catalog", str(db), "ls", "--json")[1].strip() == "[]"
    code, out, _ = run("--catalog", str(db), "init")  # a catalog now: nothing to say about emptiness
    assert code == 0 and "made the empty" not in out and "catalog ready" in out


def test_read_only_commands_on_a_missing_catalog_create_nothing(run, tmp_path, monkeypatch):
    folder = tmp_path / "fresh"
    folder.mkdir()
    db, store = folder / "catalog.db", folder / "zoo-store"
    monkeypatch.setenv("ZOO_STORE", str(store))
    assert run("--catalog", str(db), "ls", "--json")[1].strip() == "[]"
    assert "no models" in run("--catalog", str(db), "ls")[1]
    assert run("--catalog", str(db), "runs", "--json")[1].strip() == "[]"
    for args in (["show", "m"], ["verify"], ["lineage", "m"], ["gc"]):
        code, _, err = run("--catalog", str(db), *args)
        assert code != 0 and f"no catalog at {db}" in _one_error_line(err)
    assert list(folder.iterdir()) == []  # no catalog file, no store


def test_tensors_of_a_path_work_without_a_catalog(run, tmp_path, llama_dir):
    db = tmp_path / "none.db"
    code, out, _ = run("--catalog", str(db), "tensors", str(llama_dir), "--json")
    assert code == 0 and json.loads(out) and not db.exists()


def test_damaged_catalog_init_and_verify_say_so(run, tmp_path, llama_dir):
    db = tmp_path / "c.db"
    cat = Catalog(db, store=tmp_path / "store")
    cat.add(llama_dir)
    con = sqlite3.connect(db)
    con.executemany("INSERT INTO model_tags (model_id, tag) VALUES (1, ?)", [(f"tag-{i:04d}-" + "x" * 60,) for i in range(300)])
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    cat.engine.dispose()
    pages = db.stat().st_size // 4096
    assert pages > 6
    with open(db, "r+b") as f:  # zero three pages past the schema page
        f.seek(4096 * (pages - 4))
        f.write(b"\0" * 4096 * 3)
    code, out, err = run("--catalog", str(db), "init")
    assert code != 0 and "is damaged" in _one_error_line(err) and "ready" not in out
    code, out, err = run("--catalog", str(db), "verify")
    assert code == 1 and "is damaged" in out


def test_future_schema_version_is_refused(run, tmp_path):
    db = tmp_path / "c.db"
    Catalog(db).engine.dispose()
    con = sqlite3.connect(db)
    con.execute("UPDATE zoo_meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    before = _sha(db)
    for args in (["ls", "--json"], ["init"], ["verify"]):
        code, _, err = run("--catalog", str(db), *args)
        assert code != 0 and "schema version 99" in _one_error_line(err) and "upgrade weightzoo" in err
    assert _sha(db) == before


def test_catalog_of_the_release_without_marker_is_upgraded(tmp_path, llama_dir):
    """A catalog of an earlier release: the zoo's tables, schema 2 columns, no marker table."""
    db = tmp_path / "old.db"
    cat = Catalog(db, store=tmp_path / "store")
    e = cat.add(llama_dir).entry
    cat.engine.dispose()
    con = sqlite3.connect(db)
    con.execute("DROP TABLE zoo_meta")
    con.execute("ALTER TABLE model_files DROP COLUMN mtime_ns")
    con.commit()
    con.close()
    cat = Catalog(db, store=tmp_path / "store")
    assert cat.get(e.ref).digest == e.digest
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM zoo_meta WHERE key='schema_version'").fetchone() == ("3",)
    assert "mtime_ns" in [r[1] for r in con.execute("PRAGMA table_info(model_files)")]
    con.close()
    cat.check_unchanged(e.ref)  # no mtime recorded yet: re-hashed once, the same bytes, accepted


def test_damaged_marker_table_is_foreign(tmp_path):
    db = tmp_path / "x.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE zoo_meta (a TEXT)")
    con.commit()
    con.close()
    with pytest.raises(CatalogError, match="not a weightzoo catalog"):
        Catalog(db)


def test_own_tables_named_in_the_guard_exist_in_the_schema():
    from zoo.catalog.guard import MARKER_TABLE, OWN_TABLES
    from zoo.catalog.tables import SQLModel

    tables = SQLModel.metadata.tables
    assert set(OWN_TABLES) | {MARKER_TABLE} <= set(tables)
    for name, columns in OWN_TABLES.items():
        assert columns <= {c.name for c in tables[name].columns}


# ----- the digest recorded is the digest of the bytes read ------------------------------------

def _merge(run, *models: str, out: str = "merged"):
    args = ["merge", "--method", "linear"]
    for m in models:
        args += ["--model", m]
    return run(*args, "--out", out)


def test_a_file_changed_after_add_is_refused_before_a_merge(run, tmp_path, llama_dir):
    ft = perturbed_copy(llama_dir, tmp_path / "ft")
    assert run("add", str(llama_dir), "--name", "a")[0] == 0
    assert run("add", str(ft), "--name", "b")[0] == 0
    weights = ft / "model.safetensors"
    with open(weights, "r+b") as f:  # same size, other bytes
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    code, _, err = _merge(run, "a", "b")
    line = _one_error_line(err)
    assert code != 0 and str(weights) in line and "changed since it was catalogued" in line
    assert f"zoo add {ft} --name b" in line
    assert [r["name"] for r in json.loads(run("ls", "--json")[1])] == ["a", "b"]  # no row
    assert not (tmp_path / "store").exists() or list((tmp_path / "store").iterdir()) == []  # no folder


def test_a_touched_file_with_the_same_bytes_is_accepted(run, tmp_path, llama_dir):
    ft = perturbed_copy(llama_dir, tmp_path / "ft")
    run("add", str(llama_dir), "--name", "a")
    run("add", str(ft), "--name", "b")
    weights = ft / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    code, _, err = _merge(run, "a", "b")
    assert code == 0, err
    con = sqlite3.connect(tmp_path / "cli.db")
    recorded = con.execute("SELECT f.mtime_ns FROM model_files f JOIN models m ON m.id = f.model_id "
                           "WHERE m.name = 'b' AND f.path = 'model.safetensors'").fetchone()[0]
    con.close()
    assert recorded == weights.stat().st_mtime_ns  # the new mtime recorded: the next check is cheap again


def test_add_records_size_and_mtime(catalog, llama_dir):
    e = catalog.add(llama_dir).entry
    for f in catalog.files_of(e):
        st = (llama_dir / f.path).stat()
        assert (f.size, f.mtime_ns) == (st.st_size, st.st_mtime_ns)


# ----- store hygiene --------------------------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _leftover(store: Path, name: str) -> Path:
    path = store / name
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x" * 100)
    return path


def test_stale_temporaries_go_at_the_next_write_live_ones_stay(catalog, llama_dir):
    from zoo.temporaries import _host, owner_token

    dead = _dead_pid()
    stale = [_leftover(catalog.store, f".incoming-{_host()}h{dead}p0-abc"),
             _leftover(catalog.store, f"..incoming-x.zoo-partial-{_host()}h{dead}p0-def")]
    live = _leftover(catalog.store, f".incoming-{owner_token()}-0123")
    elsewhere = _leftover(catalog.store, f".incoming-ffffffh{dead}p0-9")  # another host: not judged
    assert [p.name for p in catalog.store_report().temporaries] == sorted(p.name for p in stale)
    catalog.add(llama_dir, copy=True)  # a write to the store
    assert not any(p.exists() for p in stale) and live.exists() and elsewhere.exists()


def test_verify_reports_orphans_and_gc_removes_them(run, tmp_path, llama_dir):
    from zoo.temporaries import _host

    assert run("add", str(llama_dir), "--name", "m", "--copy")[0] == 0
    store = tmp_path / "store"
    orphan = _leftover(store, "ghost/v1")
    nested = _leftover(store, "org/model/v3")
    stale = _leftover(store, f".incoming-{_host()}h{_dead_pid()}p0-1")
    code, out, _ = run("verify")
    assert code == 1 and f"orphan {orphan}" in out and f"orphan {nested}" in out and f"stale temporary {stale}" in out
    code, out, _ = run("gc", "--dry-run", "--json")
    assert code == 0 and sorted(json.loads(out)) == sorted(map(str, [orphan, nested, stale])) and orphan.exists()
    code, out, _ = run("gc")
    assert code == 0 and f"removed {orphan}" in out
    assert not orphan.exists() and not stale.exists() and not (store / "org").exists() and not (store / "ghost").exists()
    assert (store / "m" / "v1" / "model.safetensors").exists()  # the catalogued model stays
    assert run("verify")[0] == 0
    assert "nothing to remove" in run("gc")[1]


# ----- a full disk ----------------------------------------------------------------------------

def _no_space(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_writing_tensors_names_the_path(monkeypatch, tmp_path):
    import torch

    import zoo.writer as writer

    monkeypatch.setattr(writer.os, "pwrite", _no_space)
    target = tmp_path / "out"
    with pytest.raises(ZooError, match="no space left on the disk while writing") as info:
        writer.save_tensors(target, {"w": torch.ones(4)})
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone


class _FullFile:
    def __init__(self, path, mode="r", *a, **k):
        self._f = open(path, mode, *a, **k)

    def write(self, _data):
        _no_space()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_disk_full_on_add_copy_and_export_is_one_line(run, monkeypatch, tmp_path, llama_dir):
    import zoo.writer as writer

    assert run("add", str(llama_dir), "--name", "m")[0] == 0
    monkeypatch.setattr(writer, "open", _FullFile, raising=False)
    code, _, err = run("add", str(llama_dir), "--name", "c", "--copy")
    line = _one_error_line(err)
    assert code != 0 and "no space left" in line and str(tmp_path / "store") in line
    code, _, err = run("export", "m", str(tmp_path / "exported"))
    line = _one_error_line(err)
    assert code != 0 and "no space left" in line and str(tmp_path / "exported") in line
    assert not (tmp_path / "exported").exists() and [r["name"] for r in json.loads(run("ls", "--json")[1])] == ["m"]
    assert [p for p in tmp_path.iterdir() if ".zoo-partial-" in p.name] == []
