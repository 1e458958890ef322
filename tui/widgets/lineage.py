"""The lineage pane: a model's ancestors and descendants as a DAG, one row per model.

Rows run by generation (`tui.dag.layers`); each shows the model, `←` its parents with the
role and weight of each edge and the run that made it (wrapped, never cut), and `→` its
children. A shared ancestor is one row with several `→` edges. Enter on a row posts
`ModelChosen`: the screen selects that model and the view re-roots on it.
"""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from zoo.catalog.views import Lineage
from zoo.console import human_count

from ..dag import DagRow, edge_role, layers, runs_of

FOCUS_MARK, OTHER_MARK = "●", "○"
MAX_ROWS = 2000  # models drawn at most (those nearest the focus by generation); the rest are counted
MAX_EDGES = 12  # refs listed per `←` / `→` line before "… and N more"


class LineageView(OptionList):
    """The DAG of one model's lineage. `show(lineage)` draws it; the highlighted row starts
    on the model itself (marked ● and bold, the others ○)."""

    class ModelChosen(Message):
        def __init__(self, model_id: int) -> None:
            self.model_id = model_id
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lineage: Lineage | None = None
        self.rows: list[DagRow] = []

    def show(self, lineage: Lineage | None, message: str = "") -> None:
        self.lineage = lineage
        self.clear_options()
        if lineage is None:
            self.rows = []
            self.add_option(Option(Text(message or "no model selected", style="dim"), disabled=True))
            return
        rows = layers(lineage)
        hidden = 0
        if len(rows) > MAX_ROWS:
            focus_gen = next(r.generation for r in rows if r.is_focus)
            keep = sorted(rows, key=lambda r: (abs(r.generation - focus_gen), r.node.id))[:MAX_ROWS]
            kept = {r.node.id for r in keep}
            hidden = len(rows) - MAX_ROWS
            rows = [r for r in rows if r.node.id in kept]
        self.rows = rows
        options = [Option(_row(lineage, r), id=str(r.node.id)) for r in rows]
        if len(rows) == 1:
            options.append(Option(Text("no recorded parents or children", style="dim"), disabled=True))
        if hidden:
            options.append(Option(Text(f"… {hidden:,} more models, further from this one, not drawn",
                                       style="dim"), disabled=True))
        self.add_options(options)
        self.highlighted = next(i for i, r in enumerate(rows) if r.is_focus)

    @property
    def highlighted_model_id(self) -> int | None:
        option = self.highlighted_option
        return None if option is None or option.id is None else int(option.id)

    def ref_of(self, model_id: int) -> str:
        return self.lineage.nodes[model_id].ref if self.lineage else str(model_id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.ModelChosen(int(event.option.id)))


def _row(lineage: Lineage, row: DagRow) -> Table:
    """`g2 ● model`, then `←` its parents (and the runs that made it) and `→` its children,
    each wrapped under its arrow."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=3, no_wrap=True, style="dim")
    grid.add_column(width=1, no_wrap=True)
    grid.add_column(ratio=1, overflow="fold")
    node = row.node
    title = Text(node.ref, style="bold" if row.is_focus else "")
    details = " · ".join(x for x in (node.family, human_count(node.params) if node.params else None) if x)
    if details:
        title.append(f"  {details}", style="dim")
    if row.is_focus:
        title.append("  (this model)", style="italic")
    grid.add_row(f"g{row.generation}", FOCUS_MARK if row.is_focus else OTHER_MARK, title)
    if row.parents:
        grid.add_row("", "←", _refs(lineage, [(e.parent, edge_role(e)) for e in row.parents]))
        for run in runs_of(row.parents):
            grid.add_row("", "", Text(run, style="dim"))
    if row.children:
        grid.add_row("", "→", _refs(lineage, [(e.child, None) for e in row.children]))
    return grid


def _refs(lineage: Lineage, items: list[tuple[int, str | None]]) -> Text:
    """'ft-a@1 (input w=0.5), ft-b@1 (input w=0.5)', at most MAX_EDGES then '… and N more'."""
    text = Text()
    for i, (model_id, role) in enumerate(items[:MAX_EDGES]):
        if i:
            text.append(", ")
        text.append(lineage.nodes[model_id].ref)
        if role:
            text.append(f" ({role})", style="dim")
    if len(items) > MAX_EDGES:
        text.append(f", … and {len(items) - MAX_EDGES} more", style="dim")
    return text
