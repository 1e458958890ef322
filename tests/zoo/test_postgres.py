"""The team catalog on PostgreSQL: a real server (Debian's postgresql, started here on
127.0.0.1) runs the catalog operations and concurrent writers from several processes.
Skipped where PostgreSQL or psycopg is not installed."""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("psycopg")
INITDB = shutil.which("initdb")
pytestmark = pytest.mark.skipif(INITDB is None, reason="PostgreSQL (initdb/pg_ctl) is not installed")


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_url():
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="zoo-pg-"))  # under /tmp: the postgres user must reach it
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run(_as_postgres([INITDB, "-D", str(data), "-A", "trust", "-U", "postgres"]), check=True,
                   capture_output=True)
    subprocess.run(_as_postgres(["pg_ctl", "-D", str(data), "-o", f"-p {port} -h 127.0.0.1 -k {root}",
                                 "-l", str(root / "log"), "-w", "start"]), check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE zoo")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/zoo"
    finally:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_catalog_operations_on_postgres(pg_url, tmp_path, llama_dir):
    from tests.helpers.models import perturbed_copy
    from zoo import Catalog, Parent
    from zoo.training import new_model

    cat = Catalog(pg_url, store=tmp_path / "store")
    base = cat.add(llama_dir, name="pg-base", tags=["base"]).entry
    ft = cat.add(perturbed_copy(llama_dir, tmp_path / "ft"), name="pg-ft", parents=[Parent(base.ref, "base")]).entry
    again = cat.add(llama_dir, name="pg-base")
    assert not again.created and again.entry.id == base.id
    cat.tag(ft.ref, ["prod"])
    cat.set_metrics(ft.ref, {"acc": 0.5})
    assert [e.id for e in cat.ancestors(ft.ref)] == [base.id]
    assert [e.id for e in cat.descendants(base.ref)] == [ft.id]
    assert {r["name"] for r in cat.ls(tag="prod")} == {"pg-ft"}
    shown = cat.show(ft.ref)
    assert shown["metrics"] == {"acc": 0.5} and shown["parents"][0]["role"] == "base"
    made = new_model(cat, "vit-ti", "pg-vit").entry  # an operator run, recorded in one transaction
    assert cat.show(made.ref)["run"]["operator"] == "init.random"
    assert all(v.ok for v in cat.verify(ft.ref))


def test_the_read_model_runs_its_sql_on_postgres(pg_url, tmp_path):
    """`zoo ls` pages, `zoo show` and `zoo lineage` read any database with the reader's plain
    SQL through SQLAlchemy: the same answers as the ORM (and networkx for the DOT text)."""
    import json

    from tests.helpers.catalogs import lineage_zoo
    from tests.zoo.test_fast_reads import networkx_dot, orm_lineage
    from zoo.catalog import views
    from zoo.lineage_dot import lineage_dot

    cat = lineage_zoo(tmp_path, pg_url)
    for ref in ("base", "ft-a", "soup@1", "soup", "soup-child", "lonely"):
        info = views.show(pg_url, ref)
        assert {k: v for k, v in info.items() if k not in ("widths", "config_summary")} == cat.show(ref)
        fast, orm = views.lineage(pg_url, ref), orm_lineage(cat, ref)
        assert (fast.focus, list(fast.nodes.items()), fast.edges) == (orm.focus, list(orm.nodes.items()), orm.edges)
        assert lineage_dot(fast) == networkx_dot(orm)
    everything = cat.ls()
    assert views.ls(pg_url, limit=2, offset=1) == everything[1:3] and views.ls(pg_url, offset=3) == everything[3:]
    assert json.loads(views.ls_json(pg_url, tag="a", limit=1)) == [r for r in everything if "a" in r["tags"]][:1]


@pytest.mark.slow
def test_concurrent_writers_from_several_processes(pg_url, tmp_path, llama_dir):
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.helpers.models import perturbed_copy
        from zoo import Catalog
        worker = int(sys.argv[1])
        cat = Catalog({pg_url!r}, store={str(tmp_path / 'store')!r})
        for i in range(4):
            path = perturbed_copy(Path({str(llama_dir)!r}), Path({str(tmp_path)!r}) / f"w{{worker}}-{{i}}", delta=0.5 + 0.01 * (worker * 10 + i))
            assert cat.add(path, name="shared").created
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    from zoo import Catalog

    rows = [r for r in Catalog(pg_url).ls() if r["name"] == "shared"]
    assert sorted(r["version"] for r in rows) == list(range(1, 17))  # 16 writers' versions, none lost or doubled
