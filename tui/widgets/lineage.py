"""The lineage pane: a model's family tree as a Textual Tree, grown as it is expanded."""
from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from zoo.catalog.views import Edge, Lineage

from ..data import edge_label

_AUTO_EXPAND_NODES = 60  # small trees open fully; larger ones open two levels


@dataclass
class _Node:
    model_id: int | None  # None: a "made from" / "used by" heading
    up: bool = True  # ancestors branch (parents below children) or descendants
    grown: bool = False


class LineageTree(Tree[_Node]):
    """Root: the model. 'made from' lists its parents (their parents nested under them),
    'used by' its children; every edge shows its role, weight and the run that made it.
    Selecting a model node posts `ModelChosen`."""

    class ModelChosen(Message):
        def __init__(self, model_id: int) -> None:
            self.model_id = model_id
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__("lineage", **kwargs)
        self.auto_expand = False
        self.show_root = True
        self._lineage: Lineage | None = None

    def show(self, lineage: Lineage | None, message: str = "") -> None:
        self._lineage = lineage
        self.clear()
        if lineage is None:
            self.root.set_label(Text(message or "no model selected", style="dim"))
            self.root.data = _Node(None)
            return
        focus = lineage.focus
        node = lineage.nodes[focus]
        label = Text(node.ref, style="bold")
        if node.family:
            label.append(f"  {node.family}", style="dim")
        self.root.set_label(label)
        self.root.data = _Node(focus, grown=True)
        open_all = len(lineage) <= _AUTO_EXPAND_NODES
        if lineage.parents(focus):
            up = self.root.add(Text("made from", style="italic dim"), _Node(None, up=True), expand=True)
            self._grow(up, focus, True, depth=1, open_all=open_all)
        if lineage.children(focus):
            down = self.root.add(Text("used by", style="italic dim"), _Node(None, up=False), expand=True)
            self._grow(down, focus, False, depth=1, open_all=open_all)
        if not lineage.parents(focus) and not lineage.children(focus):
            self.root.add_leaf(Text("no recorded parents or children", style="dim"), _Node(None))
        self.root.expand()
        self.cursor_line = 0

    def _grow(self, branch: TreeNode[_Node], model_id: int, up: bool, depth: int, open_all: bool) -> None:
        lin = self._lineage
        assert lin is not None
        edges = lin.parents(model_id) if up else lin.children(model_id)
        for e in edges:
            other = e.parent if up else e.child
            more = bool(lin.parents(other) if up else lin.children(other))
            node = branch.add(_label(lin, other, e), _Node(other, up), allow_expand=more)
            if more and (open_all or depth < 2):
                node.data.grown = True
                self._grow(node, other, up, depth + 1, open_all)
                node.expand()

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[_Node]) -> None:
        data = event.node.data
        if data is None or data.grown or data.model_id is None or self._lineage is None:
            return
        data.grown = True
        self._grow(event.node, data.model_id, data.up, depth=99, open_all=False)

    def on_tree_node_selected(self, event: Tree.NodeSelected[_Node]) -> None:
        event.stop()
        data = event.node.data
        if data is not None and data.model_id is not None and event.node is not self.root:
            self.post_message(self.ModelChosen(data.model_id))


def _label(lin: Lineage, model_id: int, edge: Edge) -> Text:
    text = Text(lin.nodes[model_id].ref, style="bold")
    text.append(f"  ({edge_label(edge)})", style="dim")
    return text
