"""What a stitched checkpoint is, as data (no torch): its configurations (routes through
the anchors' blocks) and its config.json.

A stitched checkpoint holds the anchors' tensors as `anchors.{i}.{name}`, the stitching
layers as `stitches.{key}.weight|bias`, and its `config.json` carries the first anchor's
fields (image size, labels, vocabulary: what tasks read) plus a `stitched` section:
the family, each anchor's config, the stitching layers' shapes and the configurations
(routes) with whatever was measured about them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.families import Family

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
