"""The structure docs/ARCHITECTURE.md promises, checked: no import cycles among the project's
modules, light start-up for commands that only read, and the merge-method index in step with
the method modules. (The layer contracts themselves are `lint-imports`, run by CI.)"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

PACKAGES = ("zoo", "merging", "stitching", "generators", "tui")


def test_no_import_cycles_among_project_modules():
    grimp = pytest.importorskip("grimp")
    import networkx as nx

    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    g = nx.DiGraph((m, i) for m in graph.modules for i in graph.find_modules_directly_imported_by(m))
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert cycles == [], f"modules importing each other (lazy imports count): {cycles}"


def _imported_after(code: str) -> dict:
    probe = (f"import sys\n{code}\nimport json\n"
             "print(json.dumps({m: m in sys.modules for m in ('torch', 'sqlalchemy', 'networkx', 'transformers')}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cli_and_its_plugins_start_without_torch(tmp_path):
    """Building the whole `zoo` command (every plugin's commands included) and listing an
    SQLite catalog must not pay for torch, SQLAlchemy or networkx."""
    from zoo import Catalog

    db = tmp_path / "c.db"
    Catalog(db, store=tmp_path / "store")
    loaded = _imported_after(f"from zoo.cli import main\nmain(['--catalog', {str(db)!r}, 'ls', '--json'])")
    assert loaded == {"torch": False, "sqlalchemy": False, "networkx": False, "transformers": False}


def test_every_indexed_merge_method_is_its_module_and_nothing_else():
    from merging.methods import all_methods
    from merging.methods.names import INDEX

    assert [m.name for m in all_methods()] == list(INDEX)
    assert all(m.kind == INDEX[m.name][0] for m in all_methods())
    assert _imported_after("from merging.methods.names import method_names\nmethod_names()")["torch"] is False
