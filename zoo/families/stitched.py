"""Stitched networks: blocks of several models of one family run as one chain, joined by
linear stitching layers (SN-Net and its descendants). This module is the model
definition only - what a stitched checkpoint is and how it runs - so that the catalog,
`zoo eval` and exported stitches work without the `stitching` operator package.

A stitched checkpoint holds the anchors' tensors as `anchors.{i}.{name}`, the stitching
layers as `stitches.{key}.weight|bias`, and its `config.json` carries the first anchor's
fields (image size, labels, vocabulary: what tasks read) plus a `stitched` section:
the family, each anchor's config, the stitching layers' shapes and the configurations
(routes) with whatever was measured about them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ZooError
from .base import Axis, Family, TensorRole

if TYPE_CHECKING:
    from torch import nn

    from ..checkpoint import Checkpoint

MODEL_TYPE = "stitched"


@dataclass(frozen=True)
class Segment:
    """Blocks [start, stop) of one anchor."""

    anchor: int
    start: int
    stop: int


@dataclass
class StitchConfig:
    """One way through the network: segments of anchors joined by stitching layers
    (`stitches[i]` joins `route[i]` to `route[i + 1]`). `stats` holds what was measured
    (params, flops, metrics)."""

    id: int
    route: tuple[Segment, ...]
    stitches: tuple[str, ...] = ()
    kind: str = "anchor"  # anchor, SL (small to large), LS, LSL, SLS
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "route": [[s.anchor, s.start, s.stop] for s in self.route],
                "stitches": list(self.stitches), **self.stats}

    @classmethod
    def from_json(cls, d: dict) -> "StitchConfig":
        stats = {k: v for k, v in d.items() if k not in ("id", "kind", "route", "stitches")}
        return cls(d["id"], tuple(Segment(*s) for s in d["route"]), tuple(d["stitches"]), d["kind"], stats)

    def describe(self) -> str:
        return " -> ".join(f"{s.anchor}[{s.start}:{s.stop}]" for s in self.route)


def stitch_key(front: int, end: int, index: int) -> str:
    return f"{front}-{end}-{index}"


def network_config(family: Family, anchor_configs: list[dict], stitch_shapes: dict[str, tuple[int, int]],
                   configs: list[StitchConfig], selected: int | None = None) -> dict:
    """The config.json of a stitched checkpoint (see the module docstring)."""
    first = {k: v for k, v in anchor_configs[0].items() if k not in ("architectures", "model_type", "auto_map")}
    return {**first, "model_type": MODEL_TYPE, "architectures": ["StitchedNetwork"],
            "stitched": {"family": family.name, "anchors": anchor_configs,
                         "stitches": {k: list(v) for k, v in stitch_shapes.items()},
                         "configs": [c.to_json() for c in configs],
                         "selected": selected if selected is not None else max(c.id for c in configs)}}


def parse_configs(config: dict) -> list[StitchConfig]:
    return [StitchConfig.from_json(c) for c in config["stitched"]["configs"]]


class StitchedFamily(Family):
    name = MODEL_TYPE
    architectures = ("StitchedNetwork",)

    def _inner(self, config: dict) -> Family:
        from . import get_family

        return get_family(config["stitched"]["family"])

    def modality_for(self, config: dict) -> str:
        return self._inner(config).modality

    def widths(self, config: dict):
        raise KeyError("stitched networks have one width per anchor")

    def role(self, name: str, config: dict) -> TensorRole | None:
        if name.startswith("stitches."):
            return TensorRole((Axis.KEEP,) * (2 if name.endswith("weight") else 1), kind="stitch")
        if name.startswith("anchors."):
            _, i, rest = name.split(".", 2)
            return self._inner(config).role(rest, config["stitched"]["anchors"][int(i)])
        return None

    def build(self, config: dict) -> "nn.Module":
        st = config["stitched"]
        inner = self._inner(config)
        anchors = [inner.build(c) for c in st["anchors"]]
        from .stitched_net import StitchedNetwork

        net = StitchedNetwork(inner, anchors, {k: tuple(v) for k, v in st["stitches"].items()}, parse_configs(config))
        return net.select(st["selected"]).eval()

    def load(self, ckpt: "Checkpoint") -> "nn.Module":
        net = self.build(ckpt.config)
        state = {n: ckpt.get(n) for n in ckpt.names()}
        missing, unexpected = net.load_state_dict(state, strict=False)
        tied = {n for n in missing if n.endswith("lm_head.weight")}  # tied to embeddings, not stored
        if set(missing) - tied or unexpected:
            bad = sorted(set(missing) - tied) or sorted(unexpected)
            raise ZooError(f"{ckpt.path}: stitched checkpoint does not match its config ({bad[0]!r}, "
                           f"{len(bad)} tensor(s) {'missing' if set(missing) - tied else 'unexpected'})")
        return net.eval()

    def example_inputs(self, config: dict, batch: int, generator):
        return self._inner(config).example_inputs(config, batch, generator)

    def outputs(self, model, inputs):
        return model(**inputs).logits
