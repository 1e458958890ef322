"""The details pane: metadata, config summary, metrics, lineage neighbours, files."""
from __future__ import annotations

import json

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from zoo.console import human_bytes, human_count

from ..data import fmt_value


class DetailsView(VerticalScroll):
    """Shows the dict `ZooData.details` returns (or a message)."""

    info: dict | None = None

    def compose(self):
        yield Static(id="details-body")

    def show(self, info: dict | None, message: str = "") -> None:
        self.info = info
        body = self.query_one("#details-body", Static)
        if info is None:
            body.update(Text(message or "no model selected", style="dim"))
            return
        body.update(Group(_summary(info), Text(""), _files(info)))
        self.scroll_home(animate=False)


def _summary(info: dict) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()

    def row(key: str, value) -> None:
        t.add_row(key, value if isinstance(value, Text) else Text(str(value)))

    row("ref", Text(info["ref"], style="bold"))
    row("id", info["id"])
    row("family", f"{info['family'] or '-'}  ({info['architecture'] or '?'})")
    row("params", f"{info['params']:,} ({human_count(info['params'])})")
    row("dtype", info["dtype"] or "-")
    row("size", human_bytes(info["bytes"]))
    row("location", info["location_shown"])
    row("digest", info["digest"])
    row("tags", ", ".join(info["tags"]) or "-")
    metrics = info["metrics"] or {}
    row("metrics", ", ".join(f"{k}={fmt_value(v)}" for k, v in metrics.items()) or "-")
    row("created", info["created"] or "-")
    if info["config_summary"]:
        row("config", ", ".join(f"{k}={v}" for k, v in info["config_summary"].items()))
    w = info.get("widths")
    if w:
        row("shape", f"{w['layers']} layers, hidden {w['hidden']}, {w['heads']} heads ({w['kv_heads']} kv) "
                     f"x {w['head_dim']}, mlp {w['intermediate']}, norm {w['norm']}")
    for p in info["parents"]:
        weight = "" if p["weight"] is None else f", w={p['weight']:g}"
        row("parent", f"{p['parent']} ({p['role']}{weight})")
    for c in info["children"]:
        row("child", f"{c['child']} ({c['role']})")
    run = info.get("run")
    if run:
        row("made by", f"run {run['id']}: {run['operator']} {json.dumps(run['params'])}")
    return t


def _files(info: dict) -> Table:
    files = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    # on a narrow screen the digest is cut, not the names and sizes
    longest = max((len(f["path"]) for f in info["files"]), default=4)
    files.add_column("file", no_wrap=True, min_width=min(longest, 40))
    files.add_column("size", justify="right", no_wrap=True, min_width=9)
    files.add_column("sha256", no_wrap=True, overflow="ellipsis")
    for f in info["files"]:
        files.add_row(f["path"], human_bytes(f["size"]), f["sha256"])
    return files
