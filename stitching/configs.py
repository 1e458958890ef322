"""Which stitched configurations a family of anchors offers (SN-Net and SN-Netv2).

A stitch (j, k) from a front anchor to an end anchor runs the front anchor's blocks 0..j,
one stitching layer, then the end anchor's blocks k..L-1 and its head; its stitching layer
is fitted to map the front's output of block j onto the end's input of block k.

- v1 (Pan et al., CVPR 2023): small-to-large only, between neighbouring anchors (sorted by
  size). Equal depths: a window of `kernel` blocks slides with `stride`; every (j, k) in a
  window is a stitch, and the window's stitches share one stitching layer (depth 12,
  kernel 2, stride 1: 34 stitches and 11 layers per pair). Unequal depths: each front
  block j stitches into the end blocks that nearest-neighbour resampling maps onto j.
- v2 (Pan et al., 2023, "Stitched ViTs are Flexible Vision Backbones"): two-way stitching
  per pair: small-to-large (SL), large-to-small (LS), and the round trips LSL and SLS that
  reuse those layers.
"""
from __future__ import annotations

from zoo.errors import ZooError
from .format import Segment, StitchConfig, stitch_key


def nearest_map(front_depth: int, end_depth: int) -> list[int]:
    """For each end block, the front block that nearest-neighbour resampling maps onto it."""
    return [(i * front_depth) // end_depth for i in range(end_depth)]


def window_stitches(depth: int, kernel: int = 2, stride: int = 1) -> list[tuple[tuple[int, int], int]]:
    """Equal depths: ((j, k), layer index) for every stitch, in the order the windows find them."""
    if kernel < 1 or stride < 1:
        raise ZooError("kernel and stride must be at least 1")
    seen: set[tuple[int, int]] = set()
    out, layer = [], -1
    for start in range(0, depth, stride):
        ids = range(start, min(start + kernel, depth))
        new = [(j, k) for j in ids for k in ids if (j, k) not in seen]
        if new:
            layer += 1
            seen.update(new)
            out.extend((jk, layer) for jk in new)
    return out


def resampled_stitches(front_depth: int, end_depth: int) -> list[tuple[tuple[int, int], int]]:
    """Unequal depths: ((j, k), layer j) where end block k maps onto front block j, k > j."""
    mapping = nearest_map(front_depth, end_depth)
    return [((j, k), j) for j in range(front_depth) for k, m in enumerate(mapping) if m == j and k > j]


def _stitch(cid: int, kind: str, anchors: tuple[int, ...], cuts: list[tuple[int, int]], depths: list[int],
            layers: list[int]) -> StitchConfig:
    """A route through `anchors` cut at `cuts` [(j, k), ...] using stitching layers `layers`."""
    route, start = [], 0
    for a, (j, k) in zip(anchors, cuts):
        route.append(Segment(a, start, j + 1))
        start = k
    route.append(Segment(anchors[-1], start, depths[anchors[-1]]))
    keys = tuple(stitch_key(anchors[i], anchors[i + 1], layers[i]) for i in range(len(cuts)))
    return StitchConfig(cid, tuple(route), keys, kind)


def anchor_configs(depths: list[int]) -> list[StitchConfig]:
    return [StitchConfig(i, (Segment(i, 0, d),)) for i, d in enumerate(depths)]


def snnet_v1(depths: list[int], kernel: int = 2, stride: int = 1) -> list[StitchConfig]:
    """Anchors first (ids 0..n-1, as sorted by the caller), then each neighbouring pair's stitches."""
    configs = anchor_configs(depths)
    for front in range(len(depths) - 1):
        end = front + 1
        if depths[front] == depths[end]:
            stitches = window_stitches(depths[front], kernel, stride)
        else:
            stitches = resampled_stitches(depths[front], depths[end])
        for (j, k), layer in stitches:
            configs.append(_stitch(len(configs), "SL", (front, end), [(j, k)], depths, [layer]))
    return configs


def grouped_v1(groups: list[list[int]], kernel: int = 2, stride: int = 1) -> list[StitchConfig]:
    """SN-Net v1 inside each group of anchors, never across groups (Learngene Pool builds
    one pool per auxiliary depth). Anchors are numbered group after group; ids: every
    anchor first, then each group's stitches."""
    depths = [d for g in groups for d in g]
    configs = anchor_configs(depths)
    offset = 0
    for group in groups:
        for c in snnet_v1(group, kernel, stride)[len(group):]:
            route = tuple(Segment(s.anchor + offset, s.start, s.stop) for s in c.route)
            keys = []
            for key in c.stitches:
                front, end, layer = (int(v) for v in key.split("-"))
                keys.append(stitch_key(front + offset, end + offset, layer))
            configs.append(StitchConfig(len(configs), route, tuple(keys), c.kind))
        offset += len(group)
    return configs


def snnet_v2(depths: list[int]) -> list[StitchConfig]:
    """Two-way stitching for each neighbouring pair (small s, large l, depth ratio r):
    SL (j, (j+1)r) with layer j; LS from large block j to small block map(j)+1 (every
    block for equal depths, every other block otherwise) with layer j // r; LSL and SLS
    chain an LS and an SL stitch whose cuts keep the order of blocks. The SL stitch from
    the small model's last block straight into the large head is left out."""
    configs = anchor_configs(depths)
    for s in range(len(depths) - 1):
        l = s + 1  # noqa: E741 - the paper's "large"
        ds, dl = depths[s], depths[l]
        if dl % ds:
            raise ZooError(f"SN-Netv2 needs the larger depth to be a multiple of the smaller ({ds} and {dl})")
        r = dl // ds
        mapping = nearest_map(ds, dl)
        sl = [((j, (j + 1) * r), j) for j in range(ds - 1)]
        ls = [((j, mapping[j] + 1), j // r) for j in range(dl - 1) if r == 1 or j % 2 == 1]

        def add(kind: str, anchors: tuple[int, ...], parts: list[tuple[tuple[int, int], int]]) -> None:
            configs.append(_stitch(len(configs), kind, anchors, [p[0] for p in parts], depths, [p[1] for p in parts]))

        for part in sl:
            add("SL", (s, l), [part])
        for part in ls:
            add("LS", (l, s), [part])
        for a in ls:
            for b in sl:
                if b[0][0] >= a[0][1]:
                    add("LSL", (l, s, l), [a, b])
        for a in sl:
            for b in ls:
                if b[0][0] >= a[0][1]:
                    add("SLS", (s, l, s), [a, b])
    return configs


def stitch_shapes(configs: list[StitchConfig], widths: list[int]) -> dict[str, tuple[int, int]]:
    """Every stitching layer the configurations use: key -> (front width, end width)."""
    shapes = {}
    for c in configs:
        for key in c.stitches:
            front, end, _ = (int(v) for v in key.split("-"))
            shapes[key] = (widths[front], widths[end])
    return shapes


def enumerate_configs(version: str, depths: list[int], kernel: int = 2, stride: int = 1) -> list[StitchConfig]:
    if version == "v1":
        return snnet_v1(depths, kernel, stride)
    if version == "v2":
        return snnet_v2(depths)
    raise ZooError(f"unknown SN-Net version {version!r} (v1 or v2)")
