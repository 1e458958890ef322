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

from .gathered import FILL, Alloc, Gathered, elements, fresh, math_dtype, put, take, zero_at

A = Axis


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


def gather(t: torch.Tensor, axis: int, index: torch.Tensor, group: int, fill: str) -> torch.Tensor:
    """Produce side: position j copies unit index[j] (groups of `group` elements, e.g. a
    head's head_dim rows); FILL positions get the mean over units, or zeros."""
    return Gathered(t, axis, elements(index, group), fill).stored()


def split(t: torch.Tensor, axis: int, index: torch.Tensor, group: int, mode: str, g: torch.Generator,
          zero_sum: bool = False) -> torch.Tensor:
    """`split_gathered` of a tensor as it is (nothing gathered)."""
    return split_gathered(Gathered(t), axis, index, group, mode, g, zero_sum)


def split_gathered(src: Gathered, axis: int, index: torch.Tensor, group: int, mode: str, g: torch.Generator,
                   zero_sum: bool = False, alloc: Alloc = fresh) -> torch.Tensor:
    """Consume side: the copies of each source unit share its fan-in so they sum to the
    original (or to zero, for LEMON's new identity blocks). mode 'equal' divides evenly;
    'random' draws all but the last copy at random and gives the last the remainder. FILL
    positions read zeros, so they get random (LEMON) or zero (others) weights.

    The result is in the source's dtype, and each position is written once: copies as
    block copies of the source, computed positions (drawn, divided, remainders) in the
    math dtype, rounded once - the same values as computing the whole in the math dtype."""
    n_old = src.shape[axis] // group
    real = index >= 0
    counts = torch.bincount(index[real], minlength=n_old)
    if (counts == 0).any() and not zero_sum:  # (a cancelling layer may leave source units out)
        raise ZooError("expansion dropped a source unit (target narrower than source?)")
    shape = list(src.shape)
    shape[axis] = len(index) * group
    out = alloc(tuple(shape), src.src.dtype, src.src.device)
    positions = torch.arange(len(index))

    def copy(units: torch.Tensor) -> None:  # positions (unit level) that copy their source unit
        if len(units):
            if zero_sum:
                zero_at(out, axis, elements(units, group))
            else:
                src.store_into(out, axis, elements(units, group), elements(index[units], group))

    if mode == "equal":  # FILL positions 0, units with one copy copied, shared units value / count
        if zero_sum:
            out.zero_()
            return out
        shared = real & (counts[index.clamp(min=0)] > 1)
        copy(positions[real & ~shared])
        zero_at(out, axis, elements(positions[~real], group))
        if shared.any():
            at = elements(positions[shared], group)
            per = counts[index[shared]].repeat_interleave(group).to(src.math)
            view = [1] * len(shape)
            view[axis] = -1
            values = src.select(axis, elements(index[shared], group), src.math)
            put(out, axis, at, values.div_(per.to(values.device).view(view)))
        return out
    # the last copy of each unit takes the remainder; every other position is drawn
    last = torch.full((n_old,), -1, dtype=torch.long).scatter_reduce_(0, index[real], positions[real], reduce="amax")
    drawn_units = torch.ones(len(index), dtype=torch.bool)
    drawn_units[last[last >= 0]] = False
    copied = drawn_units & real  # drawn copies of real units: their sum comes off the last copy
    owed_units = torch.unique(index[copied])  # sorted
    kept = torch.ones(n_old, dtype=torch.bool)
    kept[owed_units] = False
    copy(torch.sort(last[kept & (last >= 0)]).values)  # last copies that owe nothing keep their value
    drawn = elements(positions[drawn_units], group)
    if not len(drawn):
        return out
    noise_shape = list(shape)
    noise_shape[axis] = len(drawn)
    # drawn on the CPU generator wherever the tensor is: the same model on every device
    noise = torch.randn(noise_shape, generator=g, dtype=src.math).mul_(src.scale()).to(out.device)
    put(out, axis, drawn, noise)
    if len(owed_units):
        put(out, axis, elements(last[owed_units], group),
             _remainders(src, axis, index, group, copied, drawn_units, owed_units, noise, zero_sum))
    return out


def _remainders(src: Gathered, axis: int, index: torch.Tensor, group: int, copied: torch.Tensor,
                drawn_units: torch.Tensor, owed_units: torch.Tensor, noise: torch.Tensor,
                zero_sum: bool) -> torch.Tensor:
    """What the last copy of each owed unit keeps: its value (0 for a cancelling layer) minus
    the draws given to its other copies, summed from +0 in position order. Along the split
    axis, one slice per owed unit (sorted), in the math dtype."""
    owners = index[copied]
    rank = (torch.cumsum(drawn_units.long(), 0) - 1)[copied]  # each drawn copy's place among the drawn
    if len(owners) == len(owed_units):  # one draw per owed unit (pairs): owed = +0 + draw
        by_unit = rank[torch.argsort(owners)]
        owed = take(noise, axis, elements(by_unit, group)).add_(0.0)  # (+0 + x is x, but -0 becomes +0)
    else:
        slot = torch.full((int(owed_units.max()) + 1,), -1, dtype=torch.long)
        slot[owed_units] = torch.arange(len(owed_units))
        shape = list(noise.shape)
        shape[axis] = len(owed_units) * group
        owed = torch.zeros(shape, dtype=noise.dtype, device=noise.device).index_add_(
            axis, elements(slot[owners], group).to(noise.device), take(noise, axis, elements(rank, group)))
    if zero_sum:
        return torch.rsub(owed, 0.0)  # 0 - owed, as 0 + (-owed)
    return src.select(axis, elements(owed_units, group), src.math).sub_(owed)  # x - y is x + (-y)


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


_CONSUMERS = (A.RES_IN, A.HEADS_IN, A.UNITS_IN)


def _gathered(t: torch.Tensor, role: TensorRole, maps: Maps, recipe: Recipe) -> Gathered:
    """`t` seen through the gather of its produce axis (every role has at most one)."""
    hd = maps.head_dim
    found = [(axis, kind) for axis, kind in enumerate(role.axes)
             if kind in (A.RES_OUT, A.Q_HEADS, A.KV_HEADS, A.QKV, A.UNITS)]
    if not found:
        return Gathered(t)
    if len(found) > 1:
        raise ValueError(f"a tensor role with two resized output axes is not supported: {role.axes}")
    axis, kind = found[0]
    if kind == A.RES_OUT:
        return Gathered(t, axis, maps.stream, recipe.fill)
    if kind == A.UNITS:
        return Gathered(t, axis, maps.units, "zero")
    part = elements(maps.kv_heads if kind == A.KV_HEADS else maps.heads, hd)
    if kind == A.QKV:  # the same heads in each of the fused q, k and v blocks
        n = t.shape[axis] // 3
        part = torch.cat([torch.where(part >= 0, part + i * n, part) for i in range(3)])
    return Gathered(t, axis, part, "zero")


def expand_tensor(t: torch.Tensor, role: TensorRole, name: str, maps: Maps, recipe: Recipe,
                  zero_output: bool = False, alloc: Alloc = fresh) -> torch.Tensor:
    """One tensor, in its own dtype (arithmetic in `math_dtype`, rounded once): the produce
    side gathered, then the consume side split, straight into one output from `alloc`.
    Norms come back in the math dtype; a tensor with no resized axis comes back as it is."""
    g = recipe.generator
    if role.axes == (A.NORM,):
        return expand_norm(t.to(math_dtype(t.dtype)), name.endswith("bias"), maps, recipe)
    src = _gathered(t, role, maps, recipe)
    consumed = [(axis, kind) for axis, kind in enumerate(role.axes) if kind in _CONSUMERS]
    if len(consumed) > 1:
        raise ValueError(f"a tensor role with two resized input axes is not supported: {role.axes}")
    if zero_output and role.block_output and len(role.axes) == 1:
        return torch.zeros(src.shape, dtype=t.dtype, device=t.device)  # the output projection's bias
    if not consumed:
        return t if src.axis is None else src.stored(alloc)
    axis, kind = consumed[0]
    if kind == A.RES_IN:
        return split_gathered(src, axis, maps.stream, 1, recipe.split, g, alloc=alloc)
    index, group = (maps.heads, maps.head_dim) if kind == A.HEADS_IN else (maps.units, 1)
    return split_gathered(src, axis, index, group, recipe.split, g, zero_sum=zero_output, alloc=alloc)


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
        added = elements(torch.arange(int(index.max()) + 1, len(index)), group)
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
