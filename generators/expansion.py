"""Width and depth expansion of a transformer, driven by the family's tensor roles.

Every resized axis gets an index map (which source unit each new position copies) and a
rule for each side of it: axes that *produce* a quantity gather (copy) along the map,
axes that *consume* it split the original fan-in over the copies so the sum is unchanged.
A `Recipe` says how: LEMON (average/zero-expanded residual stream, asymmetric random
splits, rescaled norms, new layers whose paired units cancel), bert2BERT's FPI/AKI (random
copies, equal splits, AKI's added units from the next layer; depth by stacking) or Net2Net
(random copies, equal splits).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from zoo.errors import ZooError
from zoo.families import Axis, Family, TensorRole, Widths

A = Axis
FILL = -1  # index-map entry for positions that copy no single source unit (LEMON's r entries)


@dataclass
class Maps:
    """Index maps for the resized axes (new position -> source unit, FILL for none)."""

    stream: torch.Tensor
    heads: torch.Tensor
    kv_heads: torch.Tensor
    units: torch.Tensor
    head_dim: int
    stream_scale: float = 1.0  # s = k*D_S/D_T: LayerNorm variance ratio under LEMON's expansion


@dataclass
class Recipe:
    name: str
    fill: str  # value of FILL entries on the produce side: "mean", "zero" (LEMON), or "none"
    split: str  # "random" (asymmetric, LEMON) or "equal" (FPI / Net2Net)
    rescale_norms: bool  # LEMON: gamma * sqrt(s), eps * s
    depth: str  # "zero_output" (new blocks are exact identities) or "stack" (copies)
    unit_map: str = "circular"  # "circular" or "random" for heads/units beyond the originals
    generator: torch.Generator = field(default_factory=torch.Generator)
    # new layers' output projections: "cancel" (units paired inside the layer, fan-outs [A, -A])
    # or "zero" (the reference's rule: duplicated units cancel, a unit with one copy gets 0)
    depth_init: str = "cancel"
    aki: bool = False  # bert2BERT AKI: units/heads added by width growth copy the next layer's


def circular(n_old: int, n_new: int) -> torch.Tensor:
    return torch.arange(n_new) % n_old


def random_map(n_old: int, n_new: int, g: torch.Generator) -> torch.Tensor:
    extra = torch.randint(0, n_old, (n_new - n_old,), generator=g)
    return torch.cat([torch.arange(n_old), extra])


def paired(index: torch.Tensor, period: int | None = None) -> torch.Tensor:
    """Position j takes the unit of position j mod `period` (default half the length), so
    every unit kept has at least two copies: pairs, and one triple when the length is odd.
    A length of 1 cannot be paired."""
    period = period or max(1, len(index) // 2)
    return index[torch.arange(len(index)) % period]


def lemon_stream_map(d_old: int, d_new: int) -> torch.Tensor:
    """k copies of every feature, then r = d_new - k*d_old FILL entries."""
    k = d_new // d_old
    return torch.cat([torch.arange(d_old).repeat(k), torch.full((d_new - k * d_old,), FILL)])


def _elements(index: torch.Tensor, group: int) -> torch.Tensor:
    """Unit map -> element map along an axis of `group` elements per unit (FILL stays FILL)."""
    if group == 1:
        return index
    elem = index[:, None] * group + torch.arange(group)
    elem[index == FILL] = FILL
    return elem.flatten()


def _take(t: torch.Tensor, axis: int, elem: torch.Tensor) -> torch.Tensor:
    """t's slices along `axis` at positions `elem` (FILL -> zeros). Maps made of a few
    contiguous runs (LEMON's and circular maps are) are copied run by run, which is much
    faster than an element gather along an inner axis."""
    breaks = (torch.diff(elem) != 1).nonzero().flatten() + 1
    bounds = [0, *breaks.tolist(), len(elem)]
    if len(bounds) > 66:
        out = torch.index_select(t, axis, elem.clamp(min=0).to(t.device))
        holes = (elem == FILL).nonzero().flatten()
        return out.index_fill_(axis, holes.to(t.device), 0) if len(holes) else out
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        start = int(elem[a])
        if start == FILL:
            shape = list(t.shape)
            shape[axis] = b - a
            parts.append(torch.zeros(shape, dtype=t.dtype, device=t.device))
        else:
            parts.append(t.narrow(axis, start, b - a))
    return torch.cat(parts, dim=axis) if len(parts) > 1 else parts[0].clone()


def _runs(elem: torch.Tensor) -> list[tuple[int, int]]:
    """(position, length) of the runs of consecutive positions in a sorted index vector."""
    if len(elem) == 0:
        return []
    breaks = (torch.diff(elem) != 1).nonzero().flatten() + 1
    bounds = [0, *breaks.tolist(), len(elem)]
    return [(int(elem[a]), b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _put(out: torch.Tensor, axis: int, positions: torch.Tensor, values: torch.Tensor) -> None:
    """out[..., positions, ...] = values along `axis`, run by run when positions are few runs."""
    runs = _runs(positions)
    if len(runs) > 64:
        out.index_copy_(axis, positions.to(out.device), values)
        return
    done = 0
    for start, length in runs:
        out.narrow(axis, start, length).copy_(values.narrow(axis, done, length))
        done += length


def _scale(t: torch.Tensor) -> float:
    """Spread of a tensor's values (from a strided sample), for the random draws."""
    sample = t.reshape(-1)[:: max(1, t.numel() // 65536)].float()
    s = sample.std().item() if sample.numel() > 1 else 1.0
    return s if s > 0 else 1.0


def gather(t: torch.Tensor, axis: int, index: torch.Tensor, group: int, fill: str) -> torch.Tensor:
    """Produce side: position j copies unit index[j] (groups of `group` elements, e.g. a
    head's head_dim rows); FILL positions get the mean over units, or zeros."""
    elem = _elements(index, group)
    out = _take(t, axis, elem)
    holes = (elem == FILL).nonzero().flatten()
    if len(holes):
        if fill == "mean":
            mean = t.mean(dim=axis, keepdim=True)
            out.index_copy_(axis, holes.to(t.device), mean.expand(*[len(holes) if d == axis else n for d, n in enumerate(out.shape)]))
    return out


def split(t: torch.Tensor, axis: int, index: torch.Tensor, group: int, mode: str, g: torch.Generator,
          zero_sum: bool = False) -> torch.Tensor:
    """Consume side: the copies of each source unit share its fan-in so they sum to the
    original (or to zero, for LEMON's new identity blocks). mode 'equal' divides evenly;
    'random' draws all but the last copy at random and gives the last the remainder. FILL
    positions read zeros, so they get random (LEMON) or zero (others) weights.

    One gather does the bulk; only the few positions that are drawn are touched again."""
    n_old = t.shape[axis] // group
    real = index >= 0
    counts = torch.bincount(index[real], minlength=n_old)
    if (counts == 0).any() and not zero_sum:  # (a cancelling layer may leave source units out)
        raise ZooError("expansion dropped a source unit (target narrower than source?)")
    elem = _elements(index, group)
    if mode == "equal":
        per_elem = counts.repeat_interleave(group).to(t.dtype)
        if zero_sum:
            shape = list(t.shape)
            shape[axis] = len(elem)
            return torch.zeros(shape, dtype=t.dtype, device=t.device)
        div = per_elem[elem.clamp(min=0)].to(t.device)
        shape = [1] * t.dim()
        shape[axis] = -1
        return _take(t, axis, elem).div_(div.view(shape))  # FILL positions stay 0
    # the last copy of each unit takes the remainder; every other position is drawn
    positions = torch.arange(len(index))
    last = torch.full((n_old,), -1, dtype=torch.long).scatter_reduce_(0, index[real], positions[real], reduce="amax")
    present = (last >= 0).nonzero().flatten()  # source units with at least one copy
    last = last[present]
    drawn_units = torch.ones(len(index), dtype=torch.bool)
    drawn_units[last] = False
    drawn = _elements(positions[drawn_units], group) if group > 1 else positions[drawn_units]
    base = torch.zeros_like(t) if zero_sum else t
    out = _take(base, axis, elem)
    if len(drawn):
        shape = list(out.shape)
        shape[axis] = len(drawn)
        # drawn on the CPU generator wherever the tensor is: the same model on every device
        noise = torch.randn(shape, generator=g, dtype=t.dtype).mul_(_scale(t)).to(t.device)
        _put(out, axis, drawn, noise)
        copied = drawn_units & real  # drawn copies of real units: their sum comes off the last copy
        if copied.any():
            src_pos = positions[copied]
            src_elem = _elements(src_pos, group) if group > 1 else src_pos
            noise_of = torch.index_select(out, axis, src_elem.to(out.device))
            owners = _elements(index[copied], group) if group > 1 else index[copied]
            owed = torch.zeros_like(base).index_add_(axis, owners.to(out.device), noise_of)
            if len(present) < n_old:
                owed = torch.index_select(owed, axis, _elements(present, group).to(out.device))
            last_elem = _elements(last, group) if group > 1 else last
            out.index_add_(axis, last_elem.to(out.device), owed.neg_())
    return out


def expand_norm(t: torch.Tensor, is_bias: bool, maps: Maps, recipe: Recipe) -> torch.Tensor:
    """Norm parameters over the hidden axis. LEMON: gamma* = sqrt(s)[gamma x k, free],
    beta* = [beta x k, 0], so the normalised stream comes out zero-expanded."""
    safe = maps.stream.clamp(min=0).to(t.device)
    out = t[safe].clone()
    holes = (maps.stream == FILL).to(t.device)
    if is_bias:
        out[holes] = 0
        return out
    if recipe.rescale_norms:
        out = out * maps.stream_scale ** 0.5
        out[holes] = t.mean() * maps.stream_scale ** 0.5  # free: multiplies a zero
    return out


def expand_tensor(t: torch.Tensor, role: TensorRole, name: str, maps: Maps, recipe: Recipe,
                  zero_output: bool = False) -> torch.Tensor:
    """One tensor, every resized axis in turn (produce sides first, then consume sides)."""
    hd = maps.head_dim
    g = recipe.generator
    if role.axes == (A.NORM,):
        return expand_norm(t, name.endswith("bias"), maps, recipe)
    out = t
    for axis, kind in enumerate(role.axes):
        if kind == A.RES_OUT:
            out = gather(out, axis, maps.stream, 1, recipe.fill)
        elif kind == A.Q_HEADS:
            out = gather(out, axis, maps.heads, hd, "zero")
        elif kind == A.KV_HEADS:
            out = gather(out, axis, maps.kv_heads, hd, "zero")
        elif kind == A.QKV:
            parts = out.chunk(3, dim=axis)
            out = torch.cat([gather(p, axis, maps.heads, hd, "zero") for p in parts], dim=axis)
        elif kind == A.UNITS:
            out = gather(out, axis, maps.units, 1, "zero")
    for axis, kind in enumerate(role.axes):
        if kind == A.RES_IN:
            out = split(out, axis, maps.stream, 1, recipe.split, g)
        elif kind == A.HEADS_IN:
            out = split(out, axis, maps.heads, hd, recipe.split, g, zero_sum=zero_output)
        elif kind == A.UNITS_IN:
            out = split(out, axis, maps.units, 1, recipe.split, g, zero_sum=zero_output)
    if zero_output and role.block_output and len(role.axes) == 1:
        out = torch.zeros_like(out)  # the output projection's bias
    return out


def identity_norm(shape: tuple[int, ...], is_bias: bool, dtype: torch.dtype) -> torch.Tensor:
    """gamma = 1, beta = 0: a LayerNorm that is the identity on already-normalised input
    (post-LN depth growth moves a layer's output affine into the new layer after it)."""
    return torch.zeros(shape, dtype=dtype) if is_bias else torch.ones(shape, dtype=dtype)


_PRODUCERS = {A.UNITS: "units", A.Q_HEADS: "heads", A.KV_HEADS: "kv_heads", A.QKV: "heads"}


def aki_merge(own: torch.Tensor, nxt: torch.Tensor, role: TensorRole, maps: Maps) -> torch.Tensor:
    """bert2BERT's AKI: along a producer axis (MLP units, heads), the positions added by width
    growth take the next layer's (already expanded) weights; the source's own units keep
    theirs. Unit maps keep the first n_old positions as the identity, so the added ones are
    the positions from n_old on."""
    out = own.clone()
    for axis, kind in enumerate(role.axes):
        if kind not in _PRODUCERS:
            continue
        index = getattr(maps, _PRODUCERS[kind])
        group = 1 if kind == A.UNITS else maps.head_dim
        added = _elements(torch.arange(int(index.max()) + 1, len(index)), group)
        if kind == A.QKV:  # the same heads in each of the fused q, k and v blocks
            added = torch.cat([added + part * len(index) * group for part in range(3)])
        added = added.to(out.device)
        out.index_copy_(axis, added, nxt.index_select(axis, added))
    return out


def new_shape(shape: tuple[int, ...], role: TensorRole, src: Widths, dst: Widths) -> tuple[int, ...]:
    size = {A.RES_OUT: dst.hidden, A.RES_IN: dst.hidden, A.NORM: dst.hidden,
            A.Q_HEADS: dst.heads * dst.head_dim, A.KV_HEADS: dst.kv_heads * dst.head_dim,
            A.HEADS_IN: dst.heads * dst.head_dim, A.QKV: 3 * dst.heads * dst.head_dim,
            A.UNITS: dst.intermediate, A.UNITS_IN: dst.intermediate}
    return tuple(size.get(kind, d) for d, kind in zip(shape, role.axes))


def depth_plan(layers_old: int, layers_new: int) -> list[tuple[int, bool]]:
    """[(source layer, is_new)] in output order, LEMON's interpolation as its reference code
    places it: the first 2*L_old - L_new layers as they are, then each of the last
    L_new - L_old source layers followed by a new layer built from it."""
    chosen = set(range(2 * layers_old - layers_new, layers_old))
    plan = []
    for layer in range(layers_old):
        plan.append((layer, False))
        if layer in chosen:
            plan.append((layer, True))
    return plan


def stack_plan(layers_old: int, layers_new: int) -> list[tuple[int, bool]]:
    """bert2BERT's depth growth (Algorithm 1, StackBERT-style): the widened model stacked
    floor(L_new / L_old) times, then its top L_new mod L_old layers (4 -> 6: 0 1 2 3 2 3)."""
    times, rest = divmod(layers_new, layers_old)
    order = list(range(layers_old)) * times + list(range(layers_old - rest, layers_old))
    return [(layer, False) for layer in order]


def _heads_of(kv_heads: torch.Tensor, group: int) -> torch.Tensor:
    """Query-head map from the key/value-head map: query head j of group k copies query
    head j mod group of the source group kv_heads[k], so each query keeps its key/value."""
    return (kv_heads[:, None] * group + torch.arange(group)).flatten()


def build_maps(src: Widths, dst: Widths, recipe: Recipe) -> Maps:
    """One map per resized axis, shared by every layer (bert2BERT: one hidden map for the
    whole model). Query heads follow their key/value heads (grouped-query attention)."""
    g = recipe.generator
    unit_map: Callable[[int, int], torch.Tensor] = (
        circular if recipe.unit_map == "circular" else (lambda a, b: random_map(a, b, g)))
    if recipe.fill == "none":
        stream = unit_map(src.hidden, dst.hidden)
        scale = 1.0
    else:
        stream = lemon_stream_map(src.hidden, dst.hidden)
        scale = (dst.hidden // src.hidden) * src.hidden / dst.hidden
    kv_heads = unit_map(src.kv_heads, dst.kv_heads)
    return Maps(stream=stream, heads=_heads_of(kv_heads, src.heads // src.kv_heads), kv_heads=kv_heads,
                units=unit_map(src.intermediate, dst.intermediate), head_dim=src.head_dim, stream_scale=scale)


def new_layer_maps(maps: Maps) -> Maps:
    """The maps of a LEMON new layer under depth_init 'cancel': its MLP units and heads are
    paired inside the layer (identical fan-in), so the zero-sum split of the output
    projection gives non-zero fan-outs [A, -A] (or A, B, -A-B) that cancel for any input.
    Heads pair by key/value head (a query keeps its key/value); with one key/value head
    the query heads of its group pair. One head, or one unit, cannot pair: it stays 0."""
    group = len(maps.heads) // len(maps.kv_heads)
    if len(maps.kv_heads) >= 2:
        kv_heads = paired(maps.kv_heads)
        heads = paired(maps.heads, (len(maps.kv_heads) // 2) * group)
    else:
        kv_heads, heads = maps.kv_heads, paired(maps.heads)
    return replace(maps, heads=heads, kv_heads=kv_heads, units=paired(maps.units))


def check_target(family: Family, src: Widths, dst: Widths, max_depth_ratio: int | None = 2) -> None:
    """Refuse shapes that cannot be reached, naming the rule (`max_depth_ratio` None: any depth)."""
    if dst.head_dim != src.head_dim:
        raise ZooError(f"head_dim stays {src.head_dim} under expansion; choose heads so that heads x head_dim fits")
    for what, a, b in (("hidden size", src.hidden, dst.hidden), ("heads", src.heads, dst.heads),
                       ("intermediate size", src.intermediate, dst.intermediate), ("layers", src.layers, dst.layers)):
        if b < a:
            raise ZooError(f"target {what} {b} is smaller than the source's {a}; expansion only grows models")
    if max_depth_ratio is not None and dst.layers > max_depth_ratio * src.layers:
        raise ZooError(f"depth can at most double ({src.layers} -> {2 * src.layers} layers), asked {dst.layers}")
    group = src.heads // src.kv_heads
    if dst.heads % group or dst.kv_heads * group != dst.heads:
        raise ZooError(f"heads must stay a multiple of the {group} query heads per key/value head")
    if family.free_head_dim and dst.hidden % dst.heads:
        raise ZooError(f"{family.name} needs the hidden size to be a multiple of the heads "
                       f"({dst.hidden} % {dst.heads} != 0)")
    if not family.free_head_dim and dst.heads * dst.head_dim != dst.hidden:
        raise ZooError(f"{family.name} needs hidden size = heads x head_dim ({dst.heads} x {dst.head_dim} != {dst.hidden}); "
                       f"pick a hidden size that is a multiple of {src.head_dim}")
