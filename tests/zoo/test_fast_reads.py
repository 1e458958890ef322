"""The read path of `zoo ls`, `zoo show` and `zoo lineage --format dot`: plain SQL, nothing
heavy imported, pages, and the same answers as the ORM and networkx code it replaced (kept
below as the references)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.catalogs import chain_catalog, lineage_zoo
from tests.helpers.one_line import one_line_error
from zoo.catalog import reader, views
from zoo.catalog.views import Edge, Lineage, Node
from zoo.errors import NotFoundError
from zoo.lineage_dot import lineage_dot

HEAVY = ("sqlalchemy", "sqlmodel", "torch", "networkx", "pydantic")


# ----- the references: the code the read path replaced ------------------------------------

def orm_lineage(catalog, ref, up: bool = True, down: bool = True) -> Lineage:
    """`views.lineage` before: the ORM walks (`Catalog.ancestors`, `descendants`, `edges_among`)."""
    entry = catalog.get(ref)
    members = {entry.id: entry}
    if up:
        members.update({m.id: m for m in catalog.ancestors(entry)})
    if down:
        members.update({m.id: m for m in catalog.descendants(entry)})
    nodes = {i: Node(i, m.ref, m.family, m.num_params) for i, m in members.items()}
    edges = [Edge(e.parent_id, e.child_id, e.role, e.weight, e.run_id, run.operator if run else None,
                  (run.params or None) if run else None)
             for e, run in catalog.edges_among(members)]
    return Lineage(entry.id, nodes, edges)


def networkx_dot(lin: Lineage) -> str:
    """`zoo lineage --format dot` before: the lineage as a networkx graph, written node by
    node and edge by edge in the graph's own order."""
    import networkx as nx

    g = nx.DiGraph()
    for n in lin.nodes.values():
        g.add_node(n.id, ref=n.ref, family=n.family, params=n.params, focus=n.id == lin.focus)
    for e in lin.edges:
        g.add_edge(e.parent, e.child, role=e.role, weight=e.weight, run_id=e.run_id, operator=e.operator)

    def q(s: str) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def label(d: dict) -> str:
        parts = [d["role"]] + ([f"w={d['weight']:g}"] if d.get("weight") is not None else [])
        return " ".join(parts + ([d["operator"]] if d.get("operator") else []))

    lines = ["digraph lineage {", "  rankdir=TB;", "  node [shape=box, style=rounded];"]
    for n, d in g.nodes(data=True):
        extra = ", style=\"rounded,bold\"" if d.get("focus") else ""
        fam = f"\\n{d['family']}" if d.get("family") else ""
        lines.append(f"  m{n} [label={q(d['ref'])[:-1]}{fam}\"{extra}];")
    for u, v, d in g.edges(data=True):
        lines.append(f"  m{u} -> m{v} [label={q(label(d))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def through_sqlalchemy(monkeypatch) -> None:
    """Make the read model take its path for databases other than SQLite files: the same
    SQL through SQLAlchemy (as on PostgreSQL)."""
    monkeypatch.setattr(reader, "open_sqlite_readonly", lambda target: None)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return lineage_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return chain_catalog(tmp_path_factory.mktemp("chain") / "chain.db", depth=1000, below=19)


def _refs(cat) -> list[str]:
    return [r["ref"] for r in cat.ls()]


# ----- nothing heavy on the way ------------------------------------------------------------

@pytest.mark.parametrize("args", [["ls", "--json"], ["ls", "--limit", "2"], ["show", "soup"], ["show", "soup", "--json"],
                                  ["lineage", "ft-a", "--format", "dot"]])
def test_reading_commands_import_no_orm_torch_networkx_or_pydantic(zoo, args):
    probe = (f"import sys\nfrom zoo.cli import main\nrc = main(['--catalog', {zoo.where!r}, *{args!r}])\n"
             f"print('\\nLOADED', rc, [m for m in {HEAVY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED 0 []", done.stdout[-500:]


# ----- zoo ls: pages -----------------------------------------------------------------------

def test_ls_pages_are_slices_of_the_whole_listing(chain, monkeypatch):
    cat, _ = chain
    everything = cat.ls()
    assert len(everything) == 1020
    for limit, offset in ((3, 0), (3, 2), (10, 1015), (0, 5), (None, 1017), (1020, 0), (5, 2000)):
        want = everything[offset:][:limit] if limit is not None else everything[offset:]
        assert views.ls(cat.where, limit=limit, offset=offset) == want
        assert json.loads(views.ls_json(cat.where, limit=limit, offset=offset)) == want
    llama = [r for r in everything if r["family"] == "llama"]
    assert views.ls(cat.where, family="llama", limit=4, offset=3) == llama[3:7]
    through_sqlalchemy(monkeypatch)  # the same SQL on any database
    assert views.ls(cat.where, limit=3, offset=2) == everything[2:5]
    assert views.ls(cat.where, offset=1018) == everything[1018:]


def test_zoo_ls_limit_offset_on_the_command_line(zoo, run):
    everything = _refs(zoo)
    code, out, err = run("--catalog", zoo.where, "ls", "--json", "--limit", "2", "--offset", "1")
    assert code == 0, err
    assert [r["ref"] for r in json.loads(out)] == everything[1:3]
    code, out, err = run("--catalog", zoo.where, "ls", "--limit", "02")  # a table: just those rows
    assert code == 0, err
    shown = [ref for ref in everything if ref in out]
    assert shown == everything[:2]
    code, out, _ = run("--catalog", zoo.where, "ls", "--json", "--offset", "5")
    assert [r["ref"] for r in json.loads(out)] == everything[5:]
    code, out, err = run("--catalog", zoo.where, "ls", "--json", "--limit", "-1")
    one_line_error(code, err, "--limit -1", "0 or more")
    assert out == ""
    code, out, err = run("--catalog", zoo.where, "ls", "--offset", "-3")
    one_line_error(code, err, "--offset -3", "0 or more")
    code, _, err = run("--catalog", zoo.where, "ls", "--limit", "two")  # not a number: Typer's own message
    one_line_error(code, err, "--limit", "valid integer")


# ----- zoo show ----------------------------------------------------------------------------

@pytest.mark.parametrize("sqlalchemy_path", [False, True])
def test_show_is_what_the_orm_catalog_shows(zoo, monkeypatch, sqlalchemy_path):
    if sqlalchemy_path:
        through_sqlalchemy(monkeypatch)
    for ref in ("base", "ft-a", "ft-b", "lonely", "soup@1", "soup", "soup-child", 1, "3"):
        info = views.show(zoo.where, ref)
        plain = zoo.show(ref)
        assert {k: v for k, v in info.items() if k not in ("widths", "config_summary")} == plain
        assert list(info)[:len(plain)] == list(plain)  # --json keeps its key order
    soup = views.show(zoo.where, "soup@1")
    assert [(p["parent"], p["role"], p["weight"]) for p in soup["parents"]] == [("ft-a@1", "input", 0.25),
                                                                               ("ft-b@1", "input", 0.75)]
    assert soup["run"]["operator"] == "merge.linear" and soup["run"]["params"] == {"weights": [0.25, 0.75]}
    assert [c["child"] for c in soup["children"]] == ["soup-child@1"] and soup["tags"] == ["made"]
    assert views.show(zoo.where, "soup")["ref"] == "soup@2"  # a bare name is its latest version
    assert views.show(zoo.where, "ft-a")["metrics"] == {"acc": 0.5, "loss": 1.25}


def test_show_names_a_missing_model_as_the_catalog_does(zoo):
    for ref in ("soop", "soup@9", "999", "no such thing", "caf\udce9"):
        with pytest.raises(NotFoundError) as fast:
            views.show(zoo.where, ref)
        with pytest.raises(NotFoundError) as orm:
            zoo.get(ref)
        assert str(fast.value) == str(orm.value)
    with pytest.raises(NotFoundError, match="did you mean soup"):
        views.show(zoo.where, "soop")


# ----- zoo lineage -------------------------------------------------------------------------

@pytest.mark.parametrize("sqlalchemy_path", [False, True])
def test_lineage_is_what_the_orm_walks_found(zoo, chain, monkeypatch, sqlalchemy_path):
    if sqlalchemy_path:
        through_sqlalchemy(monkeypatch)
    cases = [(zoo, ref) for ref in ("base", "ft-a", "soup@1", "soup", "soup-child", "lonely")] + [(chain[0], chain[1])]
    for cat, ref in cases:
        for up, down in ((True, True), (True, False), (False, True), (False, False)):
            fast, orm = views.lineage(cat.where, ref, up=up, down=down), orm_lineage(cat, ref, up=up, down=down)
            assert (fast.focus, list(fast.nodes.items()), fast.edges) == (orm.focus, list(orm.nodes.items()), orm.edges)


def test_dot_of_a_1000_deep_chain_is_what_networkx_wrote(chain, run):
    cat, ref = chain
    lin = views.lineage(cat.where, ref)
    assert len(lin.nodes) == 1020 and sum(i < lin.focus for i in lin.nodes) == 1000  # 1,000 ancestors
    reference = networkx_dot(orm_lineage(cat, ref))
    assert lineage_dot(lin) == reference
    code, out, err = run("--catalog", cat.where, "lineage", ref, "--format", "dot")
    assert code == 0 and err == "" and out == reference
    assert out.count("  m7 -> m8 ") == 1  # a pair recorded twice: one arrow, with its last edge's label
    assert '  m7 -> m8 [label="extra w=2 train.finetune"];' in out


def test_dot_of_a_diamond_with_runs_is_what_networkx_wrote(zoo):
    for ref in ("base", "ft-b", "soup@1", "soup-child"):
        assert lineage_dot(views.lineage(zoo.where, ref)) == networkx_dot(orm_lineage(zoo, ref))
    dot = lineage_dot(views.lineage(zoo.where, "soup@1"))
    assert '[label="input w=0.25 merge.linear"]' in dot and 'style="rounded,bold"' in dot


# ----- start-up: only the group a core command needs ---------------------------------------

def test_the_core_group_table_matches_the_command_modules():
    import typer.main

    from zoo.cli import CORE_GROUPS, app_for

    for group, names in CORE_GROUPS.items():
        assert sorted(typer.main.get_command(app_for(group)).commands) == sorted(names), group
    everything = typer.main.get_command(app_for(None)).commands
    assert {n for names in CORE_GROUPS.values() for n in names} <= set(everything)
    assert {"merge", "tui", "stitch"} <= set(everything)  # plugins' commands come with the whole tree


def test_a_core_command_loads_its_group_alone(zoo):
    probe = (f"import sys\nfrom zoo.cli import main\nmain(['--catalog', {zoo.where!r}, 'ls', '--json'])\n"
             "print('\\nLOADED', sorted(m for m in sys.modules if m.startswith(('zoo.cli.', 'merging', 'stitching', "
             "'generators', 'tui'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    loaded = done.stdout.strip().splitlines()[-1]
    assert "'zoo.cli.catalog'" in loaded and "zoo.cli.models" not in loaded and "merging" not in loaded, loaded


def test_values_converted_without_pydantic_are_what_typer_converts_them_to():
    """Every parameter of the whole `zoo` tree: where `plain_values` answers without
    pydantic, Typer's own conversion (pydantic) gives the same value."""
    from typer._coercion import build_runtime_param

    from zoo.cli import command
    from zoo.cli.help import commands
    from zoo.cli.plain_values import _UNSET, _plain

    answered = paths = 0
    for _, cmd in commands(command()):
        for param in cmd.params:
            if not hasattr(param, "type_descriptor") or param.multiple or param.nargs == -1:
                continue
            for value in ("007", "12", "x y", "", "-3", "1_000", 5, "/", "./no/such/file", "-", "~/x"):
                plain = _plain(value, param.type_descriptor)
                if plain is _UNSET:
                    continue
                assert build_runtime_param(param.type_descriptor).coerce(value, param=param, ctx=None) == plain
                answered += 1
                paths += isinstance(plain, Path)
    assert answered > 100
    assert paths > 10
