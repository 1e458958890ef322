"""A layered drawing of a directed acyclic graph (Sugiyama's method), as pure geometry.

Why our own: family trees are drawn without Graphviz installed, and a picture is only
readable when no edge runs through a box it does not connect and no two boxes touch. Every
node is a box of a given size (labels included: a caller that wants a label on an edge
makes it a node on that edge), so both hold by construction:

1. ranks: given by the caller, or the longest path from the roots; edges point down.
2. an edge spanning several ranks is a chain through dummy points, one per rank between,
   each holding its own slot in its row, so it passes beside the boxes, never through one.
3. the order within each row: barycentre sweeps down and up, then swaps of neighbours,
   keeping the order with the fewest crossings.
4. x: each row in turn, the positions nearest to the mean of each node's neighbours that
   keep the row's order and gaps (an isotonic regression, solved exactly by pooling).
5. y: rows stacked with a gap; boxes centred in their row's band; an edge leaves its box's
   bottom, drops to the band's bottom, crosses the gap in a straight line and enters the
   next band's top, so a segment between rows meets no box.

Coordinates: x to the right, y downward (rank 0 on top), in the caller's units (points).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import networkx as nx

Key = Hashable
Point = tuple[float, float]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box by its centre and size."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w / 2

    @property
    def top(self) -> float:
        return self.y - self.h / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h / 2

    def overlaps(self, other: "Box") -> bool:
        """True when the two boxes share interior (touching edges do not count)."""
        return (self.left < other.right and other.left < self.right
                and self.top < other.bottom and other.top < self.bottom)


@dataclass(frozen=True)
class Route:
    """Where one edge is drawn: a polyline from its source's bottom to its target's top."""

    source: Key
    target: Key
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Layout:
    """Boxes by node, one route per edge (in the order the edges were given), the rank of
    every node, the extent of the drawing (margins included) and the crossings left."""

    boxes: dict[Key, Box]
    routes: list[Route]
    ranks: dict[Key, int]
    width: float
    height: float
    crossings: int


@dataclass(frozen=True)
class _Dummy:
    """The point where edge number `edge` crosses rank `rank`."""

    edge: int
    rank: int


def longest_path_ranks(nodes: Sequence[Key], edges: Sequence[tuple[Key, Key]]) -> dict[Key, int]:
    """Rank of each node: the number of edges on the longest path from a root to it."""
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    ranks: dict[Key, int] = {}
    for n in nx.topological_sort(g):
        ranks[n] = max((ranks[p] + 1 for p in g.predecessors(n)), default=0)
    return ranks


def layered_layout(sizes: Mapping[Key, tuple[float, float]], edges: Sequence[tuple[Key, Key]],
                   ranks: Mapping[Key, int] | None = None, *, node_gap: float = 12.0,
                   rank_gap: float = 22.0, margin: float = 8.0, dummy_width: float = 6.0,
                   sweeps: int = 12) -> Layout:
    """Place the nodes (`sizes`: width and height of each) and route the `edges` (parent,
    child). `ranks`, when given, must put every child below its parent; nodes not named in
    it, and all nodes when it is None, get their longest-path rank."""
    nodes = list(sizes)
    known = set(nodes)
    for u, v in edges:
        if u not in known or v not in known:
            raise ValueError(f"edge {u!r} -> {v!r} names a node without a size")
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(g):
        raise ValueError("the graph has a cycle: it cannot be drawn in layers")
    rank = dict(longest_path_ranks(nodes, edges))
    if ranks is not None:
        rank.update({n: r for n, r in ranks.items() if n in known})
        for u, v in edges:
            if rank[v] <= rank[u]:
                raise ValueError(f"edge {u!r} -> {v!r} does not point down (ranks {rank[u]} -> {rank[v]})")
    low = min(rank.values(), default=0)
    rank = {n: r - low for n, r in rank.items()}

    # 2. chains: every edge as consecutive-rank links, through dummies
    chains: list[list[Key]] = []
    width = {n: float(sizes[n][0]) for n in nodes}
    height = {n: float(sizes[n][1]) for n in nodes}
    all_rank: dict[Key, int] = dict(rank)
    for i, (u, v) in enumerate(edges):
        chain = [u]
        for r in range(rank[u] + 1, rank[v]):
            d = _Dummy(i, r)
            chain.append(d)
            all_rank[d], width[d], height[d] = r, dummy_width, 0.0
        chain.append(v)
        chains.append(chain)
    up: dict[Key, list[Key]] = {n: [] for n in all_rank}
    down: dict[Key, list[Key]] = {n: [] for n in all_rank}
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            down[a].append(b)
            up[b].append(a)
    n_ranks = max(all_rank.values(), default=-1) + 1
    rows: list[list[Key]] = [[] for _ in range(n_ranks)]
    for n in all_rank:  # nodes in the caller's order, then dummies in edge order
        rows[all_rank[n]].append(n)

    # 3. order within rows
    rows = _order_rows(rows, up, down, sweeps)
    crossings = _total_crossings(rows, down)

    # 4. x positions
    xs = _x_positions(rows, up, down, width, node_gap)
    # 5. y positions
    band_top, band_h, y = [], [], margin
    for row in rows:
        h = max((height[n] for n in row), default=0.0)
        band_top.append(y)
        band_h.append(h)
        y += h + rank_gap
    total_h = (y - rank_gap if rows else y) + margin
    left = min((xs[n] - width[n] / 2 for n in xs), default=0.0)
    right = max((xs[n] + width[n] / 2 for n in xs), default=0.0)
    shift = margin - left
    boxes = {n: Box(xs[n] + shift, band_top[rank[n]] + band_h[rank[n]] / 2, width[n], height[n]) for n in nodes}
    dummy_x = {n: xs[n] + shift for n in xs if isinstance(n, _Dummy)}

    routes = _routes(chains, boxes, dummy_x, all_rank, band_top, band_h)
    return Layout(boxes, routes, rank, right - left + 2 * margin, total_h, crossings)


# ----- 3. crossing reduction -----------------------------------------------------------------

def _order_rows(rows: list[list[Key]], up: dict, down: dict, sweeps: int) -> list[list[Key]]:
    """Barycentre sweeps, alternately down (by the upper neighbours) and up (by the lower),
    then adjacent swaps; the order with the fewest crossings seen is kept."""
    best = [list(r) for r in rows]
    best_c = _total_crossings(best, down)
    cur = [list(r) for r in rows]
    for sweep in range(sweeps):
        if best_c == 0:
            break
        downward = sweep % 2 == 0
        order = range(1, len(cur)) if downward else range(len(cur) - 2, -1, -1)
        for r in order:
            ref = cur[r - 1] if downward else cur[r + 1]
            nbrs = up if downward else down
            pos = {n: i for i, n in enumerate(ref)}
            here = {n: i for i, n in enumerate(cur[r])}

            def bary(n: Key) -> tuple[float, int]:
                ps = [pos[m] for m in nbrs[n] if m in pos]
                return (sum(ps) / len(ps) if ps else float(here[n]), here[n])

            cur[r] = sorted(cur[r], key=bary)
        _transpose(cur, up, down)
        c = _total_crossings(cur, down)
        if c < best_c:
            best, best_c = [list(r) for r in cur], c
    return best


def _transpose(rows: list[list[Key]], up: dict, down: dict, rounds: int = 4) -> None:
    """Swap neighbours in a row while that lowers the crossings with the rows above and below."""
    for _ in range(rounds):
        improved = False
        for r, row in enumerate(rows):
            above = {n: i for i, n in enumerate(rows[r - 1])} if r > 0 else {}
            below = {n: i for i, n in enumerate(rows[r + 1])} if r + 1 < len(rows) else {}
            for i in range(len(row) - 1):
                a, b = row[i], row[i + 1]
                keep = _pair_crossings(a, b, up, above) + _pair_crossings(a, b, down, below)
                swap = _pair_crossings(b, a, up, above) + _pair_crossings(b, a, down, below)
                if swap < keep:
                    row[i], row[i + 1] = b, a
                    improved = True
        if not improved:
            return


def _pair_crossings(a: Key, b: Key, nbrs: dict, pos: dict) -> int:
    """Crossings between the edges of `a` and of `b` (a left of b) to one neighbouring row."""
    pa = [pos[m] for m in nbrs[a] if m in pos]
    pb = [pos[m] for m in nbrs[b] if m in pos]
    return sum(1 for i in pa for j in pb if j < i)


def _total_crossings(rows: list[list[Key]], down: dict) -> int:
    """Edge crossings between every pair of consecutive rows (inversions, by a Fenwick tree)."""
    total = 0
    for r in range(len(rows) - 1):
        top = {n: i for i, n in enumerate(rows[r])}
        bottom = {n: i for i, n in enumerate(rows[r + 1])}
        pairs = sorted((top[a], bottom[b]) for a in rows[r] for b in down[a] if b in bottom)
        size = len(rows[r + 1])
        tree = [0] * (size + 1)
        seen = 0
        for _, j in pairs:  # count earlier pairs whose lower end lies right of j
            i, not_right = j + 1, 0
            while i > 0:
                not_right += tree[i]
                i -= i & -i
            total += seen - not_right
            i = j + 1
            while i <= size:
                tree[i] += 1
                i += i & -i
            seen += 1
    return total


# ----- 4. x positions ------------------------------------------------------------------------

def _x_positions(rows: list[list[Key]], up: dict, down: dict, width: dict, gap: float,
                 rounds: int = 8) -> dict[Key, float]:
    """Positions that keep every row's order and gaps, each node pulled towards the mean x of
    its neighbours; links between dummies pull harder, so long edges run straight."""
    xs: dict[Key, float] = {}
    for row in rows:  # packed from 0
        x = 0.0
        for i, n in enumerate(row):
            if i:
                x += _sep(row[i - 1], n, width, gap)
            xs[n] = x

    def settle(row: list[Key], nbr_sets: list[dict]) -> None:
        targets, weights = [], []
        for n in row:
            total, wsum = 0.0, 0.0
            for nbrs in nbr_sets:
                for m in nbrs[n]:
                    w = 8.0 if isinstance(n, _Dummy) and isinstance(m, _Dummy) else 1.0
                    total += w * xs[m]
                    wsum += w
            targets.append(total / wsum if wsum else xs[n])
            weights.append(wsum if wsum else 0.05)
        seps = [_sep(a, b, width, gap) for a, b in zip(row, row[1:])]
        for n, x in zip(row, _fit_ordered(targets, weights, seps)):
            xs[n] = x

    for _ in range(rounds):
        for row in rows[1:]:
            settle(row, [up])
        for row in reversed(rows[:-1]):
            settle(row, [down])
    for row in rows:
        settle(row, [up, down])
    _straighten(rows, xs, width, gap)
    return xs


def _straighten(rows: list[list[Key]], xs: dict[Key, float], width: dict, gap: float) -> None:
    """Give the dummies of each long edge one common x where every row has room for it, so
    the edge runs as one vertical line instead of a staircase."""
    slot = {n: (r, i) for r, row in enumerate(rows) for i, n in enumerate(row)}
    chains: dict[int, list[_Dummy]] = {}
    for n in slot:
        if isinstance(n, _Dummy):
            chains.setdefault(n.edge, []).append(n)

    def fits(d: _Dummy, x: float) -> bool:
        r, i = slot[d]
        row = rows[r]
        return ((i == 0 or xs[row[i - 1]] + _sep(row[i - 1], d, width, gap) <= x + 1e-9)
                and (i == len(row) - 1 or x + _sep(d, row[i + 1], width, gap) <= xs[row[i + 1]] + 1e-9))

    for dummies in chains.values():
        here = sorted(xs[d] for d in dummies)
        for x in [here[len(here) // 2]] + here:
            if all(fits(d, x) for d in dummies):
                for d in dummies:
                    xs[d] = x
                break


def _sep(a: Key, b: Key, width: dict, gap: float) -> float:
    """Least distance between the centres of row neighbours a and b."""
    g = gap / 2 if isinstance(a, _Dummy) or isinstance(b, _Dummy) else gap
    return (width[a] + width[b]) / 2 + g


def _fit_ordered(targets: list[float], weights: list[float], seps: list[float]) -> list[float]:
    """The x minimising sum w_i (x_i - t_i)^2 with x_{i+1} - x_i >= seps_i: with
    y_i = x_i - (seps_0 + ... + seps_{i-1}) it is an isotonic regression of the shifted
    targets, solved exactly by pooling adjacent violators."""
    offsets = [0.0]
    for s in seps:
        offsets.append(offsets[-1] + s)
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for t, w, o in zip(targets, weights, offsets):
        blocks.append([t - o, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    ys = [m for m, _, c in blocks for _ in range(c)]
    return [y + o for y, o in zip(ys, offsets)]


# ----- 5. routes ----------------------------------------------------------------------------

def _routes(chains: list[list[Key]], boxes: dict[Key, Box], dummy_x: dict, all_rank: dict,
            band_top: list[float], band_h: list[float]) -> list[Route]:
    """Each edge's polyline. Where several edges meet a box they arrive (or leave) at ports
    spread over its width, ordered by where they come from, so they neither overlap nor cross
    at the box."""
    def x_of(n: Key) -> float:
        return boxes[n].x if n in boxes else dummy_x[n]

    out_port: dict[int, float] = {}
    in_port: dict[int, float] = {}
    leaving: dict[Key, list[int]] = {}
    arriving: dict[Key, list[int]] = {}
    for i, c in enumerate(chains):
        leaving.setdefault(c[0], []).append(i)
        arriving.setdefault(c[-1], []).append(i)
    for n, box in boxes.items():
        out_ids = sorted(leaving.get(n, []), key=lambda i: (x_of(chains[i][1]), i))
        in_ids = sorted(arriving.get(n, []), key=lambda i: (x_of(chains[i][-2]), i))
        for ports, edge_ids in ((out_port, out_ids), (in_port, in_ids)):
            k = len(edge_ids)
            for j, i in enumerate(edge_ids):
                ports[i] = box.x + box.w * 0.7 * ((j + 0.5) / k - 0.5)

    routes = []
    for i, chain in enumerate(chains):
        u, v = chain[0], chain[-1]
        ru, rv = all_rank[u], all_rank[v]
        pts: list[Point] = [(out_port[i], boxes[u].bottom), (out_port[i], band_top[ru] + band_h[ru])]
        for d in chain[1:-1]:
            r = all_rank[d]
            pts += [(dummy_x[d], band_top[r]), (dummy_x[d], band_top[r] + band_h[r])]
        pts += [(in_port[i], band_top[rv]), (in_port[i], boxes[v].top)]
        clean = [pts[0]]
        for p in pts[1:]:  # drop stubs of no length (a box as tall as its band)
            if abs(p[0] - clean[-1][0]) > 1e-6 or abs(p[1] - clean[-1][1]) > 1e-6:
                clean.append(p)
        routes.append(Route(u, v, tuple(clean)))
    return routes
