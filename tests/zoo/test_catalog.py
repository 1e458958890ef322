"""Catalog: versions, references, duplicates, tags/metrics, removal, verify, export,
concurrency, and refusing a file that is not a database."""
from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3

import pytest
import torch

from zoo import Catalog, Checkpoint, Parent
from zoo.errors import CatalogError, NotFoundError, RefusedError, ZooError

from tests.helpers.models import perturbed_copy


def test_add_records_facts(catalog, llama_dir):
    res = catalog.add(llama_dir, tags=["base"])
    e = res.entry
    assert res.created and e.ref == "llama-tiny@1"
    assert (e.family, e.architecture, e.dtype) == ("llama", "LlamaForCausalLM", "float32")
    assert e.num_params == Checkpoint.open(llama_dir).num_params
    assert e.path == str(llama_dir) and not e.owned  # indexed in place
    assert catalog.tags_of(e) == ["base"]
    files = {f.path for f in catalog.files_of(e)}
    assert {"model.safetensors", "config.json"} <= files


def test_versions_and_references(catalog, llama_dir, tmp_path):
    ft = perturbed_copy(llama_dir, tmp_path / "ft")
    v1 = catalog.add(llama_dir, name="m").entry
    v2 = catalog.add(ft, name="m").entry
    assert (v1.version, v2.version) == (1, 2)
    assert catalog.get("m").id == v2.id  # latest
    assert catalog.get("m@1").id == v1.id
    assert catalog.get(v1.id).id == v1.id and catalog.get(str(v1.id)).id == v1.id
    with pytest.raises(NotFoundError, match="no model 'm@3'"):
        catalog.get("m@3")


def test_duplicate_bytes_return_existing(catalog, llama_dir):
    first = catalog.add(llama_dir).entry
    again = catalog.add(llama_dir, name="other")
    assert not again.created and again.entry.id == first.id
    assert catalog.count() == 1


def test_copy_into_store_and_remove_deletes_store_files(catalog, llama_dir):
    e = catalog.add(llama_dir, copy=True).entry
    assert e.owned and e.path.startswith(str(catalog.store))
    assert torch.equal(catalog.open(e).get("model.norm.weight"), Checkpoint.open(llama_dir).get("model.norm.weight"))
    catalog.remove(e)
    assert not (catalog.store / "llama-tiny" / "v1").exists()
    assert llama_dir.exists()  # the original is never touched


def test_pickle_import_converts_to_safetensors(catalog, tmp_path, llama_dir):
    ckpt = Checkpoint.open(llama_dir)
    state = {n: ckpt.get(n).clone() for n in ckpt.names()}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(state, legacy / "pytorch_model.bin")
    (legacy / "config.json").write_text((llama_dir / "config.json").read_text())
    e = catalog.add(legacy).entry
    conv = catalog.open(e)
    assert conv.weight_files == ["model.safetensors"] and "config.json" in conv.side_files
    assert all(torch.equal(conv.get(n), state[n]) for n in state)
    assert e.family == "llama"


def test_tags_and_metrics(catalog, llama_dir):
    e = catalog.add(llama_dir).entry
    assert catalog.tag(e, add=["a", "b"]) == ["a", "b"]
    assert catalog.tag(e, remove=["a"]) == ["b"]
    catalog.set_metrics(e, {"acc": 0.5})
    assert catalog.set_metrics(e, {"loss": 1.25}) == {"acc": 0.5, "loss": 1.25}
    assert [r["ref"] for r in catalog.ls(tag="b")] == [e.ref]
    assert catalog.ls(tag="a") == []
    with pytest.raises(ZooError, match="invalid tag"):
        catalog.tag(e, add=["has space"])


def test_ls_filters(catalog, llama_dir, vit_dir):
    catalog.add(llama_dir)
    catalog.add(vit_dir)
    assert [r["family"] for r in catalog.ls(family="vit")] == ["vit"]
    assert [r["name"] for r in catalog.ls(name="llama*")] == ["llama-tiny"]


def test_rm_refuses_to_orphan_descendants(catalog, llama_dir, tmp_path):
    base = catalog.add(llama_dir).entry
    child = catalog.add(perturbed_copy(llama_dir, tmp_path / "ft"), parents=[Parent(base.ref, "base")]).entry
    with pytest.raises(RefusedError, match="1 child"):
        catalog.remove(base)
    assert catalog.count() == 2
    catalog.remove(base, force=True)
    assert catalog.parents(child) == [] and catalog.count() == 1


def test_unknown_parent_fails_before_anything_is_written(catalog, llama_dir):
    with pytest.raises(NotFoundError):
        catalog.add(llama_dir, copy=True, parents=[Parent("ghost")])
    assert catalog.count() == 0
    assert not catalog.store.exists() or not any(catalog.store.iterdir())


def test_verify_detects_changed_and_missing(catalog, llama_dir):
    e = catalog.add(llama_dir).entry
    assert catalog.verify(e)[0].ok
    cfg = llama_dir / "config.json"
    cfg.write_text(cfg.read_text().replace("llama", "llamb"))
    assert "sha256 differs" in catalog.verify(e)[0].problems[0] or "size" in catalog.verify(e)[0].problems[0]
    cfg.unlink()
    assert "missing" in catalog.verify(e)[0].problems[0]


def test_export_copies_and_checks(catalog, llama_dir, tmp_path):
    e = catalog.add(llama_dir).entry
    out = catalog.export(e, tmp_path / "exported")
    assert (out / "model.safetensors").read_bytes() == (llama_dir / "model.safetensors").read_bytes()
    with open(llama_dir / "model.safetensors", "r+b") as f:  # corrupt a byte in the data section
        f.seek(-3, 2)
        f.write(b"\x01\x02\x03")
    with pytest.raises(ZooError, match="changed since"):
        catalog.export(e, tmp_path / "exported2")
    assert not (tmp_path / "exported2").exists()


def test_not_a_database(tmp_path):
    bad = tmp_path / "catalog.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="not a catalog database"):
        Catalog(bad)
    assert bad.read_bytes() == b"this is not sqlite" * 100  # left untouched


def test_catalog_from_env_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "env.db"))
    assert Catalog().where == str(tmp_path / "env.db")
    assert Catalog(f"sqlite:///{tmp_path / 'url.db'}").where == str(tmp_path / "url.db")


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://user:s3cret@db.example/zoo", "postgresql://user:p%40ss@host:5432/zoo?sslmode=require",
    "mysql+pymysql://u:s3cret@[::1]:3306/zoo", "postgresql://:s3cret@host/zoo", "postgresql://user@host/zoo",
    "postgresql://host/zoo",
])
def test_where_never_shows_a_password(url):
    """`Catalog.where` (printed by `zoo init`, in messages and the TUI title) masks the
    password exactly as SQLAlchemy does, without importing it."""
    from types import SimpleNamespace

    from sqlalchemy.engine import make_url

    where = Catalog.where.fget(SimpleNamespace(url=url))
    assert where == make_url(url).render_as_string(hide_password=True)
    assert "s3cret" not in where and "p%40ss" not in where


def test_unreachable_server_error_hides_the_password():
    pytest.importorskip("psycopg")
    with pytest.raises(CatalogError) as info:
        Catalog("postgresql+psycopg://user:s3cret@127.0.0.1:1/zoo?connect_timeout=2")
    assert "s3cret" not in str(info.value) and "user:***@127.0.0.1:1/zoo" in str(info.value)


def test_sqlite_is_wal_with_foreign_keys(catalog):
    con = sqlite3.connect(catalog.where)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    with catalog.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def _writer(args):
    db, store, folder, n = args
    from zoo import Catalog as C

    cat = C(db, store=store)
    for i in range(n):
        cat.add(folder, name="shared-name", tags=[f"t{i}"]) if i == 0 else cat.tag("shared-name", add=[f"t{i}"])
        cat.set_metrics("shared-name@1", {f"m{folder[-1]}{i}": i})
    return True


@pytest.mark.slow
def test_concurrent_writers_do_not_fail(tmp_path, llama_dir):
    folders = []
    for k in range(4):
        folders.append(str(perturbed_copy(llama_dir, tmp_path / f"ft{k}", delta=0.01 * (k + 1))))
    db = str(tmp_path / "c.db")
    Catalog(db)
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        assert all(pool.map(_writer, [(db, str(tmp_path / "store"), f, 15) for f in folders]))
    cat = Catalog(db)
    assert sorted(r["version"] for r in cat.ls()) == [1, 2, 3, 4]  # versions never collide


def test_readonly_sqlite_reader_matches_catalog(catalog, llama_dir, vit_dir):
    """`zoo ls` reads an existing SQLite catalog without the ORM; it must agree exactly."""
    from zoo.catalog.reader import ls_json, ls_rows, open_sqlite_readonly

    a = catalog.add(llama_dir, tags=["x", "base"]).entry
    catalog.add(vit_dir)
    catalog.set_metrics(a, {"acc": 0.5})
    fast = open_sqlite_readonly(catalog.where)
    for filters in ({}, {"tag": "x"}, {"family": "vit"}, {"name": "llama*"}):
        assert ls_rows(fast, **filters) == catalog.ls(**filters)
        # the stored per-row listings (kept current on add, tag and metrics) agree too
        assert json.loads(ls_json(fast, **filters)) == catalog.ls(**filters)
    catalog.tag(a, remove=["x"])
    assert json.loads(ls_json(fast)) == catalog.ls()
    assert open_sqlite_readonly(str(catalog.where) + ".missing") is None


def test_version_1_catalog_is_migrated(tmp_path, llama_dir):
    """A catalog from before the stored listings gains the column and fills it."""
    from zoo.catalog.reader import ls_json, open_sqlite_readonly

    cat = Catalog(tmp_path / "old.db")
    cat.add(llama_dir, tags=["t"])
    con = sqlite3.connect(tmp_path / "old.db")
    con.execute("ALTER TABLE models DROP COLUMN listing")
    con.execute("UPDATE zoo_meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    assert open_sqlite_readonly(str(tmp_path / "old.db")) is None  # the fast path declines: Catalog upgrades it
    cat = Catalog(tmp_path / "old.db")  # opening migrates and fills them
    assert json.loads(ls_json(open_sqlite_readonly(cat.where))) == cat.ls()
    assert cat.refresh_listings() == 0
