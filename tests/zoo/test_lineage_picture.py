"""The lineage picture (`zoo lineage REF --format png`): the layered layout's geometry (no
box or label over another, no edge through a box it does not connect, edges pointing down),
what the picture says (each run once, each input's role and weight, operator names whole),
the drawn text inside its boxes, and where the command writes the file."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.models import perturbed_copy
from zoo.catalog.views import Edge, Lineage, Node
from zoo.errors import ZooError
from zoo.lineage_layout import Box, layered_layout
from zoo.lineage_picture import draw, scene, wrap, write_png
from zoo.provenance import to_graph

Rect = tuple[float, float, float, float]  # left, top, right, bottom (y down)


def lineage_of(refs: dict[int, str], edges: list[tuple], focus: int) -> Lineage:
    """A Lineage from {id: ref} and (parent, child, role, weight, run, operator) tuples."""
    nodes = {i: Node(i, ref, "vit", 1000) for i, ref in refs.items()}
    return Lineage(focus, nodes, [Edge(p, c, role, w, run, op, None) for p, c, role, w, run, op in edges])


# The example pipeline's lineage (examples/digits_variants.yaml) as `zoo build` records it.
PIPELINE_REFS = {1: "digits-variants-base@1", 2: "digits-variants-pretrained@1", 3: "digits-variants-low@1",
                 4: "digits-variants-high@1", 5: "digits-variants-wider@1", 6: "digits-variants-head-generator@1",
                 7: "digits-variants-merged-0@1", 8: "digits-variants-merged-1@1", 9: "digits-variants-merged-2@1",
                 10: "digits-variants-soup@1", 11: "digits-variants-wider-tuned@1",
                 12: "digits-variants-generated-0@1", 13: "digits-variants-generated-1@1",
                 14: "digits-variants-stitched@1"}
TA, SOUP = "merge.task_arithmetic", "merge.greedy_soup"
PIPELINE_EDGES = [
    (1, 2, "base", None, 2, "train.finetune"), (2, 3, "base", None, 3, "train.finetune"),
    (2, 4, "base", None, 4, "train.finetune"), (2, 5, "source", None, 5, "expand.lemon"),
    (2, 6, "base", None, 6, "generate.pdiff.train"),
    *[(p, m, role, None, m, TA) for m in (7, 8, 9) for p, role in ((2, "base"), (3, "input"), (4, "input"))],
    (2, 10, "input", 1.0, 10, SOUP), (3, 10, "candidate", 0.0, 10, SOUP), (4, 10, "candidate", 0.0, 10, SOUP),
    (5, 11, "base", None, 11, "train.finetune"), (6, 12, "generator", None, 12, "generate.sample"),
    (6, 13, "generator", None, 13, "generate.sample"),
    (2, 14, "anchor", None, 14, "stitch.snnet"), (11, 14, "anchor", None, 14, "stitch.snnet"),
]
# a diamond: two fine-tunes of one model merged, and a child added by hand (no run)
DIAMOND = lineage_of({1: "a@1", 2: "b@1", 3: "c@1", 4: "d@1", 5: "e@1"},
                     [(1, 2, "base", None, 1, "train.finetune"), (1, 3, "base", None, 2, "train.finetune"),
                      (2, 4, "input", 0.5, 3, "merge.linear"), (3, 4, "input", 0.5, 3, "merge.linear"),
                      (1, 5, "base", None, None, None)], focus=1)
PIPELINE = lineage_of(PIPELINE_REFS, PIPELINE_EDGES, focus=2)


# ----- independent geometry ------------------------------------------------------------------

def rect(b: Box) -> Rect:
    return (b.x - b.w / 2, b.y - b.h / 2, b.x + b.w / 2, b.y + b.h / 2)


def overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def enters(p, q, r: Rect, steps: int = 400) -> bool:
    """Whether the segment p-q passes through the inside of r (points sampled along it)."""
    inner = (r[0] + 0.5, r[1] + 0.5, r[2] - 0.5, r[3] - 0.5)
    for k in range(steps + 1):
        x, y = p[0] + (q[0] - p[0]) * k / steps, p[1] + (q[1] - p[1]) * k / steps
        if inner[0] < x < inner[2] and inner[1] < y < inner[3]:
            return True
    return False


def geometry_problems(boxes: dict, segments: list[tuple]) -> list[str]:
    """Boxes (labels included) that overlap, and segments (p, q, ends) through a box they
    do not connect."""
    found = []
    keys = list(boxes)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if overlap(boxes[a], boxes[b]):
                found.append(f"{a} overlaps {b}")
    for p, q, ends in segments:
        for k, r in boxes.items():
            if k not in ends and enters(p, q, r):
                found.append(f"edge {ends} runs through {k}")
    return found


def scene_geometry(sc) -> tuple[dict, list[tuple]]:
    boxes = {k: rect(b) for k, b in sc.layout.boxes.items()}
    segments = [(p, q, (r.source, r.target)) for r in sc.layout.routes for p, q in zip(r.points, r.points[1:])]
    return boxes, segments


def inputs_drawn(sc, model: int) -> set[tuple[int, str]]:
    """(parent model, tag text) of every input the picture shows for `model`, by following
    its edges up: model <- run <- tags <- parents."""
    up = {}
    for u, v, _ in sc.edges:
        up.setdefault(v, []).append(u)
    found = set()
    for run in up[("model", model)]:
        for tag in up[run]:
            (parent,) = up[tag]
            found.add((parent[1], sc.items[tag].text))
    return found


# ----- layout -----------------------------------------------------------------------------

@pytest.mark.parametrize("lin", [DIAMOND, PIPELINE], ids=["diamond", "pipeline"])
def test_no_box_or_label_overlaps_and_no_edge_runs_through_a_box(lin):
    sc = scene(to_graph(lin))
    boxes, segments = scene_geometry(sc)
    assert geometry_problems(boxes, segments) == []
    # every item drawn once, every edge routed once, and the drawing inside its extent
    assert set(sc.layout.boxes) == set(sc.items) and len(sc.layout.routes) == len(sc.edges)
    assert all(0 <= r[0] and r[2] <= sc.layout.width and 0 <= r[1] and r[3] <= sc.layout.height
               for r in boxes.values())
    # edges point down: every route descends from its source's bottom to its target's top
    for route in sc.layout.routes:
        ys = [y for _, y in route.points]
        assert all(b >= a - 1e-9 for a, b in zip(ys, ys[1:]))
        assert ys[0] == pytest.approx(sc.layout.boxes[route.source].y + sc.layout.boxes[route.source].h / 2)
        assert ys[-1] == pytest.approx(sc.layout.boxes[route.target].y - sc.layout.boxes[route.target].h / 2)
    for e in lin.edges:
        assert sc.layout.boxes[("model", e.parent)].y < sc.layout.boxes[("model", e.child)].y


def test_the_picture_says_what_was_recorded():
    sc = scene(to_graph(PIPELINE))
    runs = {k: it.text for k, it in sc.items.items() if it.kind == "run"}
    # each run once, its operator whole (not cut), right above what it made
    assert sorted(runs) == sorted({("run", e.run_id) for e in PIPELINE.edges})
    assert runs[("run", 7)] == "merge.task_arithmetic\nrun 7"
    # the stitched model's anchors are the pretrained model and the tuned wide one; the soup is not
    assert inputs_drawn(sc, 14) == {(2, "anchor"), (11, "anchor")}
    assert inputs_drawn(sc, 10) == {(2, "input w=1"), (3, "candidate w=0"), (4, "candidate w=0")}
    assert inputs_drawn(sc, 7) == {(2, "base"), (3, "input"), (4, "input")}
    boxes = sc.layout.boxes
    for run in (7, 10, 14):
        assert boxes[("run", run)].y < boxes[("model", run)].y
    # a model's text is its ref (wrapped only when long) and its family
    assert [it.text for k, it in sc.items.items() if k == ("model", 2)] == ["digits-variants-pretrained@1\nvit"]
    assert sc.items[("model", 2)].focus


def test_an_edge_without_a_run_gets_its_role_as_a_tag():
    sc = scene(to_graph(DIAMOND))
    tag = ("tag", 1, 5)
    assert sc.items[tag].text == "base" and (("model", 1), tag, False) in sc.edges and (tag, ("model", 5), True) in sc.edges
    assert inputs_drawn(sc, 4) == {(2, "input w=0.5"), (3, "input w=0.5")}


def test_long_edges_pass_beside_the_boxes_between():
    # a -> b -> c -> d and a -> d: drawn naively, a -> d runs straight through b and c
    sizes = {k: (60.0, 20.0) for k in "abcd"}
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]
    lay = layered_layout(sizes, edges)
    assert [lay.ranks[k] for k in "abcd"] == [0, 1, 2, 3]
    boxes = {k: rect(b) for k, b in lay.boxes.items()}
    segments = [(p, q, (r.source, r.target)) for r in lay.routes for p, q in zip(r.points, r.points[1:])]
    assert geometry_problems(boxes, segments) == []
    long = lay.routes[3]
    assert len(long.points) > 2  # it bends around b and c


def test_crossings_are_removed_where_an_order_without_them_exists():
    # two parents each with one child, given crosswise: a better order has no crossing
    sizes = {k: (30.0, 10.0) for k in ["a", "b", "y", "x"]}
    lay = layered_layout(sizes, [("a", "x"), ("b", "y")])
    assert lay.crossings == 0
    assert (lay.boxes["a"].x < lay.boxes["b"].x) == (lay.boxes["x"].x < lay.boxes["y"].x)


def test_layout_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="cycle"):
        layered_layout({"a": (1, 1), "b": (1, 1)}, [("a", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="does not point down"):
        layered_layout({"a": (1, 1), "b": (1, 1)}, [("a", "b")], ranks={"a": 1, "b": 1})


def test_wrap_breaks_long_names_without_cutting_them():
    assert wrap("merge.task_arithmetic", 24) == ["merge.task_arithmetic"]
    assert wrap("digits-variants-generated-0@1", 20) == ["digits-variants-", "generated-0@1"]
    lines = wrap("generate.a_very_long_operator_name.with.parts", 16)
    assert "".join(lines) == "generate.a_very_long_operator_name.with.parts"
    assert all(len(line) <= 16 for line in lines)


# ----- the drawing --------------------------------------------------------------------------

def test_drawn_text_stays_inside_its_box_and_apart():
    fig, sc, texts, patches = draw(to_graph(PIPELINE))
    renderer = fig.canvas.get_renderer()
    text_px = {k: t.get_window_extent(renderer) for k, t in texts.items()}
    box_px = {k: p.get_window_extent(renderer) for k, p in patches.items()}
    flip = fig.bbox.height  # display y grows upward; as (left, top, right, bottom) with y down
    as_rect = {k: (b.x0, flip - b.y1, b.x1, flip - b.y0) for k, b in text_px.items()}
    for k, t in text_px.items():
        b = box_px[k]
        assert b.x0 <= t.x0 and t.x1 <= b.x1 and b.y0 <= t.y0 and t.y1 <= b.y1, k
    assert geometry_problems(as_rect, []) == []
    assert texts[("run", 7)].get_text() == "merge.task_arithmetic\nrun 7"


def test_write_png_is_a_png_written_whole(tmp_path):
    png = write_png(to_graph(DIAMOND), tmp_path / "d.png", engine="builtin")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]


@pytest.mark.parametrize("name, why", [("d.svg", "ending in .png"), ("missing/d.png", "does not exist")])
def test_write_png_refuses_a_bad_target_before_drawing(tmp_path, name, why):
    with pytest.raises(ZooError, match=why):
        write_png(to_graph(DIAMOND), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def _fake_dot(folder: Path, script: str) -> None:
    folder.mkdir()
    dot = folder / "dot"
    dot.write_text("#!/bin/sh\n" + script)
    dot.chmod(dot.stat().st_mode | stat.S_IEXEC)


def test_a_failing_dot_falls_back_to_our_layout(tmp_path, monkeypatch):
    _fake_dot(tmp_path / "bin", "echo 'Error: syntax error in line 3' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    out.mkdir()
    png = write_png(to_graph(DIAMOND), out / "d.png")  # auto: dot is on PATH but fails
    with Image.open(png) as im:
        assert im.format == "PNG"
    with pytest.raises(ZooError, match="Graphviz dot could not draw the lineage: Error: syntax error in line 3"):
        write_png(to_graph(DIAMOND), out / "e.png", engine="dot")
    assert sorted(p.name for p in out.iterdir()) == ["d.png"]  # no temporary left


@pytest.mark.skipif(not __import__("shutil").which("dot"), reason="Graphviz dot is not installed")
def test_graphviz_dot_draws_the_picture(tmp_path):
    png = write_png(to_graph(PIPELINE), tmp_path / "p.png", engine="dot")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300


# ----- the command ----------------------------------------------------------------------------

@pytest.fixture
def two_models(run, llama_dir, tmp_path):
    ft = perturbed_copy(llama_dir, tmp_path / "ft")
    assert run("add", str(llama_dir), "--name", "a")[0] == 0
    assert run("add", str(ft), "--name", "b", "--parent", "a:base")[0] == 0


def test_lineage_png_goes_to_the_temp_folder_not_the_current_one(run, two_models, tmp_path, monkeypatch):
    import tempfile

    temp, cwd = tmp_path / "temp", tmp_path / "cwd"
    temp.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.chdir(cwd)
    code, out, err = run("lineage", "b", "--format", "png")
    expected = temp / "zoo-lineage-b-v1.png"
    assert code == 0 and out.strip() == f"wrote {expected}", err
    with Image.open(expected) as im:
        assert im.format == "PNG"
    assert list(cwd.iterdir()) == []
    code, out, _ = run("lineage", "b", "--format", "png", "-o", "x.png")
    assert code == 0 and out.strip() == "wrote x.png"
    with Image.open(cwd / "x.png") as im:
        assert im.format == "PNG"
    assert sorted(p.name for p in cwd.iterdir()) == ["x.png"]


def test_lineage_png_bad_output_is_one_line_and_writes_nothing(run, two_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run("lineage", "b", "--format", "png", "-o", "tree.svg")
    assert code != 0 and err.count("\n") == 1 and ".png" in err
    code, out, err = run("lineage", "b", "--format", "png", "-o", "nowhere/tree.png")
    assert code != 0 and err.count("\n") == 1 and "nowhere" in err and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
