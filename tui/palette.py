"""The command palette (ctrl+p) offers every key binding of the screen it was opened on and
of the app, so nothing is reachable by a key alone; the footer shows only a few of them.

Commands are made from the bindings themselves: a new binding is in the palette at once,
under its title here (or its footer description when it has none)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode

# action -> the palette's title for it (searchable words; the key is added to the help line)
TITLES = {
    "focus_filter": "Filter the catalog",
    "tab('details')": "Details pane",
    "tab('tensors')": "Tensors pane",
    "tab('lineage')": "Lineage pane (DAG)",
    "sort_next": "Sort by the next column",
    "sort_reverse": "Reverse the sort order",
    "tag": "Tag model",
    "mark": "Mark model for compare",
    "compare": "Compare with marked",
    "verify": "Verify model",
    "export": "Export model",
    "push": "Push model to the Hub",
    "reload": "Reload catalog",
    "help": "Help: keys and filter syntax",
    "runs": "Runs",
    "close": "Back",
}
# bindings that are not commands: moving between widgets, and what Textual's own palette
# entries already cover ("Quit")
NOT_COMMANDS = frozenset({"leave_filter", "quit", "help_quit"})


def commands_for_bindings(app: App, nodes: Iterable[DOMNode]) -> Iterator[SystemCommand]:
    """One command per action bound on `nodes` (a screen, then the app), first binding wins."""
    seen: set[str] = set()
    for node in nodes:
        for binding in bindings_of(node):
            if binding.action in seen or binding.action in NOT_COMMANDS or binding.system:
                continue
            seen.add(binding.action)
            keys = " / ".join(app.get_key_display(Binding(k, binding.action)) for k in binding.key.split(","))
            about = binding.tooltip or binding.description
            yield SystemCommand(TITLES.get(binding.action, binding.description),
                                f"{about} ({keys})", partial(node.run_action, binding.action))


def bindings_of(node: DOMNode) -> list[Binding]:
    """The bindings a screen or app class declares (Binding objects; tuples are converted)."""
    return [b if isinstance(b, Binding) else Binding(*b) for b in type(node).BINDINGS]
