"""`zoo tui`: browse the catalog in the terminal (Textual).

    from zoo import Catalog
    from tui.app import ZooApp
    ZooApp(Catalog("catalog.db")).run()
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from .data import COLUMNS, ZooData
from .palette import commands_for_bindings
from .screens.help import HelpScreen
from .screens.main import MainScreen
from .screens.runs import RunsScreen

if TYPE_CHECKING:
    from zoo.catalog import Catalog

_MORE_KEYS = [
    ("enter / ↓", "in the filter: back to the table"),
    ("escape", "leave the filter or tensor search; close a dialog or view"),
    ("click header", "sort by that column (again: reverse)"),
    ("enter", "lineage: re-root on that model · runs: select the model the run made"),
    ("tab", "filter → table → the pane shown below (▶ and a heavy border mark where you are)"),
    ("ctrl+p", "command palette: every action, searchable"),
]
_FILTER_SYNTAX = [
    ("llama ft", "every word must match the name, family or a tag"),
    ("tag:prod", "only models with a tag containing 'prod' (t: for short)"),
    ("family:vit", "only that family (f: for short); name:… matches names only"),
]


class ZooApp(App[None], inherit_bindings=False):
    """The catalog browser. Data comes from `tui.data.ZooData` over a `zoo.catalog.Catalog`."""

    CSS_PATH = "zoo.tcss"
    TITLE = "weightzoo"
    # Not inherited (inherit_bindings=False), so that the footer lists Help before Quit and
    # shows `q Quit`, or `^q Quit` while a text box takes the q (Textual's ctrl+q and ctrl+c
    # are repeated here).
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help", tooltip="this list of keys"),
        Binding("r", "runs", "Runs", tooltip="recent operator runs (enter selects the model a run made)"),
        Binding("q", "quit", "Quit", tooltip="quit (ctrl+q too, also while typing)"),
        Binding("ctrl+q", "quit", "Quit", priority=True, tooltip="quit"),
        Binding("ctrl+c", "help_quit", show=False, system=True),
    ]

    def __init__(self, catalog: Catalog, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = ZooData(catalog)
        self.sub_title = self.data.where

    def get_default_screen(self) -> Screen:
        return MainScreen(self.data)

    @property
    def main(self) -> MainScreen:
        return next(s for s in self.screen_stack if isinstance(s, MainScreen))

    # ----- actions ------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_help()))

    def action_runs(self) -> None:
        if isinstance(self.screen, RunsScreen):
            return

        def chosen(model_id: int | None) -> None:
            if model_id is not None:
                self.main.select_model(model_id)

        self.push_screen(RunsScreen(self.data), chosen)

    def key_help(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The help screen's sections, from the bindings themselves."""
        def rows(bindings) -> list[tuple[str, str]]:
            out, seen = [], set()
            for b in bindings:
                if b.action in seen or b.system:
                    continue  # one line per action (q and ctrl+q)
                seen.add(b.action)
                keys = " / ".join(self.get_key_display(Binding(k, b.action)) for k in b.key.split(","))
                out.append((keys, b.tooltip or b.description))
            return out

        main = [b for b in MainScreen.BINDINGS if b.key not in ("escape", "down")]
        return [("catalog", rows(main)), ("anywhere", rows(self.BINDINGS) + _MORE_KEYS), ("filter", _FILTER_SYNTAX)]

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own commands, every binding of this screen and the app (`tui.palette`),
        and those without a key: sort by a given column, re-root the lineage."""
        yield from super().get_system_commands(screen)
        yield from commands_for_bindings(self, (screen, self))
        if isinstance(screen, MainScreen):
            yield SystemCommand("Lineage: re-root on the highlighted model",
                                "Select the model highlighted in the lineage pane (enter there)",
                                screen.action_lineage_reroot)
            for key, header in COLUMNS:
                yield SystemCommand(f"Sort by {header}", f"Sort the catalog by {header}",
                                    lambda key=key: screen.sort_by(key), discover=False)
