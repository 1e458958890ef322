"""Which pane has the keyboard, shown without relying on colour: the pane holding focus gets
a heavy border (the others a rounded one, set in zoo.tcss with `.ring:focus-within`) and a
`▶` before its border title, which this module keeps up to date."""
from __future__ import annotations

from textual.widget import Widget

MARK = "▶"
CLASS = "ring"


class FocusRing:
    """The panes of one screen that show focus, and each one's title (without the mark)."""

    def __init__(self) -> None:
        self._titles: dict[Widget, str] = {}

    def add(self, pane: Widget, title: str) -> None:
        pane.add_class(CLASS)
        self._titles[pane] = title
        self._paint(pane)

    def set_title(self, pane: Widget, title: str) -> None:
        self._titles[pane] = title
        self._paint(pane)

    def refresh(self) -> None:
        """Call when focus moves (the screen's DescendantFocus / DescendantBlur)."""
        for pane in self._titles:
            self._paint(pane)

    def _paint(self, pane: Widget) -> None:
        mark = f"{MARK} " if pane.has_focus_within else ""
        pane.border_title = f"{mark}{self._titles[pane]}"
