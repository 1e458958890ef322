"""The family tree as a picture (PNG): what is drawn, where, and the drawing.

A lineage's edges carry an operator, a run, a role and a weight; written on every edge they
pile up. So each run is drawn once, as a small box of its own right above what it made
("merge.task_arithmetic / run 7"), and each input of the run as a short tag on its edge
right above the run box ("input w=0.5"); an edge recorded without a run gets its tag right
above the child. Models, runs and tags are all boxes of a layered layout
(`zoo.lineage_layout`), so no text overlaps another or a box, and no edge runs through a box
it does not connect.

Graphviz's `dot`, when it is on PATH, draws the same boxes and edges instead (it routes
edges as curves); without it the layout above is drawn with matplotlib.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, Literal

import networkx as nx

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .errors import ZooError
from .lineage_layout import Layout, layered_layout

Key = Hashable
Kind = Literal["model", "run", "tag"]
Measure = Callable[[str, float, bool], tuple[float, float]]  # text, font size, bold -> (w, h)
Engine = Literal["auto", "dot", "builtin"]

FONT_SIZE: dict[str, float] = {"model": 9.0, "run": 8.0, "tag": 7.0}
PADDING: dict[str, float] = {"model": 5.0, "run": 3.5, "tag": 2.0}  # text to box border, points
WRAP: dict[str, int] = {"model": 32, "run": 24, "tag": 30}  # characters per line before wrapping
LINE_SPACING = 1.2
DPI = 150
MAX_PIXELS = 30000  # per side; a larger picture is drawn at a lower resolution


@dataclass(frozen=True)
class Item:
    """One box of the picture: a model, a run, or the tag (role, weight) of a run's input."""

    kind: Kind
    lines: tuple[str, ...]
    focus: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Scene:
    """What is drawn (`items`, and `edges` between them: (from, to, with an arrowhead)) and
    where (`layout`, in points)."""

    items: dict[Key, Item]
    edges: list[tuple[Key, Key, bool]]
    layout: Layout


def wrap(text: str, width: int, breaks: str = "-._/@ ") -> list[str]:
    """`text` in as few lines as hold it in `width` characters each, as even as they can be,
    broken after one of `breaks` (inside a word only when a word alone is longer); nothing
    is left out, so the lines joined give `text` back (less the spaces at the breaks)."""
    words, word = [], ""
    for ch in text:
        word += ch
        if ch in breaks:
            words.append(word)
            word = ""
    if word:
        words.append(word)
    pieces = []  # no piece longer than `width`
    for w in words:
        while len(w.rstrip()) > width:
            pieces.append(w[:width])
            w = w[width:]
        pieces.append(w)
    # fewest lines first, then the shortest longest line: a small dynamic programme
    n = len(pieces)
    best: list[tuple[int, int, int] | None] = [None] * (n + 1)  # (lines, longest, start of last line)
    best[0] = (0, 0, 0)
    for end in range(1, n + 1):
        for start in range(end - 1, -1, -1):
            length = len("".join(pieces[start:end]).rstrip())
            if length > width and end - start > 1:
                break
            prev = best[start]
            if prev is not None:
                cand = (prev[0] + 1, max(prev[1], length), start)
                if best[end] is None or cand[:2] < best[end][:2]:
                    best[end] = cand
    lines, end = [], n
    while end > 0:
        start = best[end][2]
        lines.append("".join(pieces[start:end]).strip())
        end = start
    return lines[::-1] or [""]


def _tag_text(role: str, weight: float | None) -> str:
    return role if weight is None else f"{role} w={weight:g}"


def lineage_items(g: nx.DiGraph) -> tuple[dict[Key, Item], list[tuple[Key, Key, bool]], dict[Key, int]]:
    """The boxes, edges and ranks of a lineage graph (`zoo.provenance.to_graph`). A model's
    rank is three times its generation; a run sits one rank above what it made, and the tags
    of its inputs one above the run."""
    depth: dict[int, int] = {}
    for n in nx.topological_sort(g):
        depth[n] = max((depth[p] + 1 for p in g.predecessors(n)), default=0)
    items: dict[Key, Item] = {}
    ranks: dict[Key, int] = {}
    for n in sorted(g.nodes, key=lambda n: (depth[n], n)):
        d = g.nodes[n]
        lines = wrap(str(d["ref"]), WRAP["model"]) + ([str(d["family"])] if d.get("family") else [])
        items[("model", n)] = Item("model", tuple(lines), bool(d.get("focus")))
        ranks[("model", n)] = 3 * depth[n]

    runs: dict[int, dict] = {}  # run id -> operator, inputs {(parent, role, weight)}, outputs
    edges: list[tuple[Key, Key, bool]] = []
    for u, v, d in sorted(g.edges(data=True), key=lambda e: (e[2].get("run_id") is None, e[2].get("run_id") or 0, e[1], e[0])):
        if d.get("run_id") is None:
            tag = ("tag", u, v)
            items[tag] = Item("tag", tuple(wrap(_tag_text(d["role"], d.get("weight")), WRAP["tag"])))
            ranks[tag] = ranks[("model", v)] - 2
            edges += [(("model", u), tag, False), (tag, ("model", v), True)]
            continue
        run = runs.setdefault(d["run_id"], {"operator": d.get("operator"), "inputs": {}, "outputs": []})
        run["inputs"].setdefault((u, d["role"], d.get("weight")), None)
        if v not in run["outputs"]:
            run["outputs"].append(v)
    for run_id, run in runs.items():
        key = ("run", run_id)
        op = run["operator"] or "(operator not recorded)"
        items[key] = Item("run", tuple(wrap(op, WRAP["run"]) + [f"run {run_id}"]))
        ranks[key] = min(ranks[("model", v)] for v in run["outputs"]) - 1
        for j, (u, role, weight) in enumerate(run["inputs"]):
            tag = ("tag", run_id, j)
            items[tag] = Item("tag", tuple(wrap(_tag_text(role, weight), WRAP["tag"])))
            ranks[tag] = ranks[key] - 1
            edges += [(("model", u), tag, False), (tag, key, True)]
        edges += [(key, ("model", v), True) for v in run["outputs"]]
    return items, edges, ranks


def estimate_text(text: str, size: float, bold: bool) -> tuple[float, float]:
    """A generous guess of the extent of `text` in points (DejaVu Sans, matplotlib's default),
    for laying out without a font renderer."""
    lines = text.split("\n")
    per_char = (0.68 if bold else 0.62) * size
    return max(len(line) for line in lines) * per_char, (len(lines) * LINE_SPACING) * size


def scene(g: nx.DiGraph, measure: Measure = estimate_text) -> Scene:
    """Lay out the lineage graph `g`: every box sized to its text as `measure` gives it."""
    items, edges, ranks = lineage_items(g)
    sizes = {}
    for key, it in items.items():
        w, h = measure(it.text, FONT_SIZE[it.kind], it.focus)
        pad = PADDING[it.kind]
        sizes[key] = (w + 2 * pad, h + 2 * pad)
    layout = layered_layout(sizes, [(u, v) for u, v, _ in edges], ranks)
    return Scene(items, edges, layout)


# ----- drawing with matplotlib ------------------------------------------------------------------

_STYLE = {  # face colour, edge colour, text colour
    "model": ("#f2f2f2", "#333366", "#111111"),
    "focus": ("#dbe9f6", "#333366", "#111111"),
    "run": ("#fff4cc", "#b8860b", "#5a4300"),
    "tag": ("#ffffff", "#aaaaaa", "#333333"),
}


def draw(g: nx.DiGraph) -> tuple["Figure", Scene, dict, dict]:
    """The picture as a matplotlib Figure (not shown, not saved) with, for checking, the text
    and box of every item: (figure, scene, {key: Text}, {key: patch})."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = Figure(dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    texts = {}

    def measure(text: str, size: float, bold: bool) -> tuple[float, float]:
        t = ax.text(0, 0, text, fontsize=size, fontweight="bold" if bold else "normal",
                    linespacing=LINE_SPACING, ha="center", va="center", multialignment="center")
        box = t.get_window_extent(renderer)
        t.remove()
        return box.width * 72 / fig.dpi, box.height * 72 / fig.dpi

    sc = scene(g, measure)
    lay = sc.layout
    fig.set_size_inches(lay.width / 72, lay.height / 72)
    fig.set_dpi(min(DPI, MAX_PIXELS * 72 / max(lay.width, lay.height, 1)))
    ax.set_xlim(0, lay.width)
    ax.set_ylim(lay.height, 0)  # y grows downward, as in the layout; one unit is one point

    for (_, _, arrow), route in zip(sc.edges, lay.routes):
        xs, ys = zip(*route.points)
        ax.plot(xs, ys, color="#777777", lw=0.8, solid_capstyle="butt", zorder=1)
        if arrow:
            ax.add_patch(FancyArrowPatch(route.points[-2], route.points[-1], arrowstyle="-|>", mutation_scale=7,
                                         shrinkA=0, shrinkB=0, color="#777777", lw=0.8, zorder=1))
    patches = {}
    for key, it in sc.items.items():
        box = lay.boxes[key]
        face, edge, ink = _STYLE["focus" if it.focus else it.kind]
        r = 3.0 if it.kind == "model" else 1.5
        patch = FancyBboxPatch((box.left + r, box.top + r), box.w - 2 * r, box.h - 2 * r,
                               boxstyle=f"round,pad={r}", fc=face, ec=edge,
                               lw=1.4 if it.focus else 0.8, zorder=2)
        patches[key] = ax.add_patch(patch)
        texts[key] = ax.text(box.x, box.y, it.text, fontsize=FONT_SIZE[it.kind], color=ink,
                             fontweight="bold" if it.focus else "normal", linespacing=LINE_SPACING,
                             ha="center", va="center", multialignment="center", zorder=3)
    return fig, sc, texts, patches


# ----- drawing with Graphviz --------------------------------------------------------------------

def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def picture_dot(g: nx.DiGraph) -> str:
    """The picture's boxes and edges as DOT for Graphviz, ranks as in our layout."""
    items, edges, ranks = lineage_items(g)
    name = {key: f"n{i}" for i, key in enumerate(items)}
    out = ["digraph lineage {", "  rankdir=TB; nodesep=0.18; ranksep=0.22;",
           '  node [shape=box, style="rounded,filled", fontname="DejaVu Sans"];',
           '  edge [color="#777777", arrowsize=0.5, penwidth=0.8];']
    for key, it in items.items():
        face, edge, ink = _STYLE["focus" if it.focus else it.kind]
        style = '"rounded,filled,bold"' if it.focus else '"rounded,filled"'
        out.append(f"  {name[key]} [label={_q(it.text)}, style={style}, fillcolor={_q(face)}, color={_q(edge)}, "
                   f"fontcolor={_q(ink)}, fontsize={FONT_SIZE[it.kind]:g}, margin=\"{PADDING[it.kind] / 72:.3f},{PADDING[it.kind] / 144:.3f}\", width=0, height=0];")
    for u, v, arrow in edges:
        out.append(f"  {name[u]} -> {name[v]}" + ("" if arrow else " [arrowhead=none]") + ";")
    by_rank: dict[int, list[str]] = {}
    for key, r in ranks.items():
        by_rank.setdefault(r, []).append(name[key])
    for r in sorted(by_rank):
        out.append("  { rank=same; " + " ".join(by_rank[r]) + "; }")
    out.append("}")
    return "\n".join(out) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def _dot_png(g: nx.DiGraph, path: Path) -> None:
    """Render with Graphviz's `dot` into `path`; a ZooError (one line) if it fails."""
    try:
        done = subprocess.run(["dot", "-Tpng", f"-Gdpi={DPI}", "-o", str(path)], input=picture_dot(g),
                              capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ZooError(f"Graphviz dot could not draw the lineage: {e}") from None
    if done.returncode != 0 or not path.exists():
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ZooError(f"Graphviz dot could not draw the lineage: {why}")


# ----- writing ---------------------------------------------------------------------------------

def default_png_path(name: str, version: int) -> Path:
    """Where `zoo lineage --format png` writes without `-o`: a file named after the model in
    the system's temporary folder, never the current folder (a repository would gain an
    untracked file)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return Path(tempfile.gettempdir()) / f"zoo-lineage-{safe}-v{version}.png"


def write_png(g: nx.DiGraph, path: str | Path, engine: Engine = "auto") -> Path:
    """Draw the lineage graph `g` into the PNG file `path`, whole or not at all (a temporary
    beside it, renamed into place). `engine`: "dot" (Graphviz), "builtin" (our layout and
    matplotlib) or "auto" (dot when it is on PATH and works, else builtin)."""
    from .temporaries import PARTIAL_MARK, temp_name
    from .writer import disk_full

    if engine not in ("auto", "dot", "builtin"):
        raise ValueError(f"unknown engine {engine!r}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ZooError(f"{path}: the picture is a PNG; give a file name ending in .png")
    if path.is_dir():
        raise ZooError(f"{path} is a folder: give a file name for the picture, e.g. {path / 'lineage.png'}")
    if not path.parent.is_dir():
        raise ZooError(f"cannot write {path}: folder {path.parent} does not exist (create it or choose another)")
    tmp = path.parent / temp_name(f".{path.name}{PARTIAL_MARK}")
    try:
        drawn = False
        if engine == "dot" or (engine == "auto" and dot_available()):
            try:
                _dot_png(g, tmp)
                drawn = True
            except ZooError:
                if engine == "dot":
                    raise
        if not drawn:
            fig = draw(g)[0]
            fig.savefig(tmp, format="png", dpi=fig.dpi, facecolor="white")
        os.replace(tmp, path)
    except OSError as e:
        raise disk_full(e, path) or ZooError(f"cannot write {path}: {e.strerror or e} "
                                             "(choose a place you can write to)") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
