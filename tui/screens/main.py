"""The catalog browser: filter, sortable table, and the selected model's details, tensors
and lineage; the actions (tag, mark/compare, verify, export, push) start here.

Layout (fits 80x24): the filter, the table (as tall as its rows, at most about half the
screen) and one pane below it (details, tensors or lineage, switched with d / w / l) that
takes the rest. Tab goes filter -> table -> the pane shown; the pane holding focus has a
heavy border and a ▶ in its title (`tui.widgets.focus_ring`)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import ContentSwitcher, DataTable, Footer, Header, Input
from textual.worker import get_current_worker

from zoo.catalog.views import Lineage
from zoo.errors import ZooError

from ..data import PAGE, SORT_KEYS, TaskResult, TensorRow, ZooData
from ..widgets.catalog_table import CatalogTable
from ..widgets.details import DetailsView
from ..widgets.focus_ring import FocusRing
from ..widgets.lineage import LineageView
from ..widgets.taskbar import TaskBar
from ..widgets.tensors import TensorsView
from .compare import CompareScreen
from .prompt import PromptScreen


# (pane id, its name in the pane's title, its key); the order of the title
PANES = (("details", "Details", "d"), ("tensors", "Tensors", "w"), ("lineage", "Lineage", "l"))
_PANES_GROUP = Binding.Group("panes")  # the footer shows "d w l panes"
_PANE_HINTS = {"details": "", "tensors": "the box above the table searches names",
               "lineage": "↑↓ move · enter: re-root on that model"}
# what takes the keyboard when the pane it was in is switched away
_PANE_FOCUS = {"details": "#details", "tensors": "#tensor-table", "lineage": "#lineage"}


class MainScreen(Screen):
    # The footer shows only what fits 80 columns (filter, panes, sort); the rest is in the
    # help screen (?) and the command palette (ctrl+p), which list every binding.
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", tooltip="type to filter by name, tag or family"),
        Binding("d", "tab('details')", "Details", tooltip="details pane: metadata, files, config",
                group=_PANES_GROUP),
        Binding("w", "tab('tensors')", "Tensors", tooltip="tensors pane: names, shapes, norms",
                group=_PANES_GROUP),
        Binding("l", "tab('lineage')", "Lineage", tooltip="lineage pane: ancestors and descendants as a DAG",
                group=_PANES_GROUP),
        Binding("s", "sort_next", "Sort", tooltip="sort by the next column (or click a column header)"),
        Binding("S", "sort_reverse", "Reverse sort", show=False, tooltip="reverse the sort order"),
        Binding("t", "tag", "Tag", show=False, tooltip="add tags, or remove them with -TAG"),
        Binding("m", "mark", "Mark", show=False, tooltip="mark the selected model as A for compare"),
        Binding("c", "compare", "Compare", show=False,
                tooltip="compare the marked model A with the selected B (like zoo diff)"),
        Binding("v", "verify", "Verify", show=False, tooltip="re-hash the selected model's files"),
        Binding("e", "export", "Export", show=False, tooltip="copy the selected model's files to a new folder"),
        Binding("p", "push", "Push", show=False, tooltip="push the selected model to the Hub"),
        Binding("ctrl+r", "reload", "Reload", show=False, tooltip="read the catalog again"),
        Binding("escape", "leave_filter", "Back to table", show=False),
        Binding("down", "leave_filter", "Back to table", show=False),
    ]

    def __init__(self, data: ZooData) -> None:
        super().__init__()
        self.data = data
        self.query_text = ""
        self.sort_key = "name"
        self.sort_reverse = False
        self.matches: list = []
        self.selected_id: int | None = None
        self.marked_id: int | None = None
        self._stale = {"tensors": True, "lineage": True}
        self._tensor_rows: list[TensorRow] = []
        self._busy: str | None = None
        self._busy_done = 0
        self._busy_lock = threading.Lock()
        self._busy_timer: Timer | None = None
        self.timings: dict[str, float] = {}  # last filter / render costs (seconds), for benchmarks
        self.ring = FocusRing()

    # ----- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Input(placeholder="words, tag:prod, family:llama", id="filter")
        yield CatalogTable(id="catalog")
        with Vertical(id="panes"):
            with ContentSwitcher(initial="details", id="pane-switcher"):
                yield DetailsView(id="details")
                yield TensorsView(id="tensors")
                yield LineageView(id="lineage")
        yield TaskBar(id="taskbar")
        yield Footer()

    @property
    def table(self) -> CatalogTable:
        return self.query_one("#catalog", CatalogTable)

    @property
    def active_pane(self) -> str:
        return self.query_one("#pane-switcher", ContentSwitcher).current or "details"

    def on_mount(self) -> None:
        self.ring.add(self.query_one("#filter"), "filter (/)")
        self.ring.add(self.table, "catalog")
        self.ring.add(self.query_one("#panes"), self._panes_title())
        if not self.data.rows:
            self.data.load()
        self.apply_query()
        self.table.focus()

    def on_descendant_focus(self) -> None:
        self.ring.refresh()

    def on_descendant_blur(self) -> None:
        self.ring.refresh()

    def _panes_title(self) -> str:
        """'■ Details d  □ Tensors w  □ Lineage l': the shown pane filled, every key given."""
        active = self.active_pane
        return "  ".join(f"{'■' if pane == active else '□'} {name} {key}" for pane, name, key in PANES)

    # ----- listing ------------------------------------------------------------------------
    def apply_query(self, keep: int | None = None) -> None:
        """Filter and sort in memory, then show the first page (or up to the kept model)."""
        t0 = time.perf_counter()
        keep = self.selected_id if keep is None else keep
        self.matches = self.data.query(self.query_text, self.sort_key, self.sort_reverse)
        t1 = time.perf_counter()
        index = self._index_in_matches(keep) if keep is not None else None
        limit = max(PAGE, (index or 0) + 1)
        table = self.table
        table.set_sort(self.sort_key, self.sort_reverse)
        table.show(self.matches[:limit], self.data.store)
        self._update_count()
        t2 = time.perf_counter()
        if self.matches:
            index = index or 0
            table.move_cursor(row=index, animate=False)
            self._select(self.matches[index].id)
        else:
            self._select(None)
        self.timings = {"filter_s": t1 - t0, "table_s": t2 - t1, "select_s": time.perf_counter() - t2}

    def _index_in_matches(self, model_id: int) -> int | None:
        for i, r in enumerate(self.matches):
            if r.id == model_id:
                return i
        return None

    def _update_count(self) -> None:
        total, matched, shown = len(self.data.rows), len(self.matches), self.table.row_count
        text = f"showing {shown:,} of {matched:,}"
        text += f" matching · {total:,} models" if self.query_text.strip() else " models"
        if self.marked_id is not None and self.marked_id in self.data.by_id:
            text += f" · marked {self.data.by_id[self.marked_id].ref}"
        self.table.border_subtitle = text

    def _more(self) -> None:
        """Append the next page of matches to the table."""
        shown = self.table.row_count
        if shown < len(self.matches):
            self.table.append(self.matches[shown:shown + PAGE], self.data.store)
            self._update_count()

    @on(CatalogTable.NearEnd)
    def _near_end(self) -> None:
        self._more()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if event.value != self.query_text:
            self.query_text = event.value
            self.apply_query()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.table.focus()

    @on(DataTable.HeaderSelected, "#catalog")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        self.sort_by(key, not self.sort_reverse if key == self.sort_key else False)

    def sort_by(self, key: str, reverse: bool = False) -> None:
        self.sort_key, self.sort_reverse = key, reverse
        self.apply_query()

    @on(DataTable.RowHighlighted, "#catalog")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        if self.table.selected_model_id != int(event.row_key.value):
            return  # a stale event from before the table was refilled
        if event.cursor_row >= self.table.row_count - 1:
            self._more()
        self._select(int(event.row_key.value))

    def select_model(self, model_id: int) -> None:
        """Select a model by id (from the lineage or runs view): clears the filter if it
        hides the model, loads rows up to it, and moves the cursor there."""
        if model_id not in self.data.by_id:
            self.data.load()
        if self._index_in_matches(model_id) is None:
            self.query_text = ""
            self.query_one("#filter", Input).value = ""
        self.apply_query(keep=model_id)

    # ----- the selected model -------------------------------------------------------------
    def _select(self, model_id: int | None, force: bool = False) -> None:
        if model_id == self.selected_id and not force:
            return
        self.selected_id = model_id
        self._stale = {"tensors": True, "lineage": True}
        self._show_details()
        self._refresh_active()

    def _show_details(self) -> None:
        view = self.query_one("#details", DetailsView)
        if self.selected_id is None:
            view.show(None, "no model matches the filter" if self.query_text.strip() else "the catalog is empty")
            return
        try:
            view.show(self.data.details(self.selected_id))
        except ZooError as e:
            view.show(None, str(e))

    def _refresh_active(self) -> None:
        active = self.active_pane
        if self._stale.get(active):
            self._stale[active] = False
            (self._load_tensors if active == "tensors" else self._load_lineage_start)()

    def action_tab(self, pane: str) -> None:
        """Show a pane below the table. Focus stays where it was; if it was in the pane
        that goes away, it moves into the new one."""
        panes = self.query_one("#panes")
        was_inside = panes.has_focus_within
        self.query_one("#pane-switcher", ContentSwitcher).current = pane
        self.ring.set_title(panes, self._panes_title())
        panes.border_subtitle = _PANE_HINTS[pane]
        self._refresh_active()
        if was_inside:
            self.query_one(_PANE_FOCUS[pane]).focus()

    # tensors: names, shapes and dtypes from headers at once; norms in a worker
    def _load_tensors(self) -> None:
        view = self.query_one("#tensors", TensorsView)
        self._tensor_rows = []
        if self.selected_id is None:
            view.show([], message="no model selected")
            return
        rows, ckpt, error = self.data.tensors(self.selected_id)
        if error:
            view.show([], message=error)
            return
        self._tensor_rows = rows
        self._show_tensors()
        self._compute_norms(self.selected_id, ckpt, rows)

    def _show_tensors(self) -> None:
        text = self.query_one("#tensor-search", Input).value
        rows = self.data.filter_tensors(self._tensor_rows, text)
        self.query_one("#tensors", TensorsView).show(rows, total=len(self._tensor_rows))

    @on(Input.Changed, "#tensor-search")
    def _tensor_search(self) -> None:
        if self._tensor_rows:
            self._show_tensors()

    @work(thread=True, exclusive=True, group="norms", exit_on_error=False)
    def _compute_norms(self, model_id: int, ckpt, rows: list[TensorRow]) -> None:
        worker = get_current_worker()
        batch: list[TensorRow] = []
        last = time.monotonic()
        for r in self.data.tensor_norms(ckpt, rows):
            if worker.is_cancelled or self.selected_id != model_id:
                return
            batch.append(r)
            if time.monotonic() - last > 0.2:
                self._post_norms(model_id, batch)
                batch, last = [], time.monotonic()
        self._post_norms(model_id, batch)

    def _post_norms(self, model_id: int, batch: list[TensorRow]) -> None:
        def apply() -> None:
            if self.selected_id == model_id:
                self.query_one("#tensors", TensorsView).update_norms(batch)

        if batch:
            self.app.call_from_thread(apply)

    # lineage: ancestors + descendants can be thousands of models, so it loads in a worker
    def _load_lineage_start(self) -> None:
        view = self.query_one("#lineage", LineageView)
        if self.selected_id is None:
            view.show(None, "no model selected")
            return
        view.show(None, f"loading the lineage of {self.data.by_id[self.selected_id].ref} …"
                  if self.selected_id in self.data.by_id else "loading …")
        self._load_lineage(self.selected_id)

    @work(thread=True, exclusive=True, group="lineage", exit_on_error=False)
    def _load_lineage(self, model_id: int) -> None:
        try:
            lineage: Lineage | None = self.data.lineage(model_id)
            message = ""
        except ZooError as e:
            lineage, message = None, str(e)

        def apply() -> None:
            if self.selected_id == model_id:
                self.query_one("#lineage", LineageView).show(lineage, message)

        self.app.call_from_thread(apply)

    @on(LineageView.ModelChosen)
    def _lineage_chosen(self, event: LineageView.ModelChosen) -> None:
        self.select_model(event.model_id)

    def action_lineage_reroot(self) -> None:
        """Select the model highlighted in the lineage pane (what enter does there)."""
        model_id = self.query_one("#lineage", LineageView).highlighted_model_id
        if model_id is None:
            self.notify("open the lineage pane (l) and highlight a model first", severity="warning")
            return
        self.select_model(model_id)

    # ----- key actions --------------------------------------------------------------------
    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if self.focused is box:
            self.table.focus()
        elif self.focused is self.query_one("#tensor-search", Input):
            self.query_one("#tensor-table").focus()

    def action_sort_next(self) -> None:
        i = SORT_KEYS.index(self.sort_key)
        self.sort_by(SORT_KEYS[(i + 1) % len(SORT_KEYS)])

    def action_sort_reverse(self) -> None:
        self.sort_by(self.sort_key, not self.sort_reverse)

    def action_reload(self) -> None:
        self.data.load()
        self.apply_query()
        self._select(self.selected_id, force=True)
        self.notify(f"reloaded: {len(self.data.rows):,} models")

    def _selected_ref(self) -> str | None:
        if self.selected_id is None:
            self.notify("no model selected", severity="warning")
            return None
        return self.data.by_id[self.selected_id].ref

    def action_tag(self) -> None:
        ref = self._selected_ref()
        if ref is None:
            return
        model_id = self.selected_id
        current = " ".join(self.data.by_id[model_id].tags)

        def done(text: str | None) -> None:
            if not text or not text.strip():
                return
            try:
                tags = self.data.tag(model_id, text)
            except ZooError as e:
                self.notify(str(e), title="tag", severity="error")
                return
            self.apply_query(keep=model_id)
            self._select(model_id, force=True)
            self.notify(f"{ref}: tags = {', '.join(tags) or '-'}", title="tag")

        self.app.push_screen(PromptScreen(f"Tags for {ref}", "space-separated; -TAG removes a tag"
                                          + (f"; now: {current}" if current else ""), id="tag-prompt"), done)

    def action_mark(self) -> None:
        ref = self._selected_ref()
        if ref is None:
            return
        if self.marked_id == self.selected_id:
            self.marked_id = None
            self.notify(f"unmarked {ref}")
        else:
            self.marked_id = self.selected_id
            self.notify(f"marked {ref}: select another model and press c to compare", title="compare")
        self._update_count()

    def action_compare(self) -> None:
        ref = self._selected_ref()
        if ref is None:
            return
        if self.marked_id is None or self.marked_id not in self.data.by_id:
            self.notify("mark a model first (m), then select another and press c", severity="warning")
            return
        if self.marked_id == self.selected_id:
            self.notify("select a different model than the marked one to compare", severity="warning")
            return
        self.app.push_screen(CompareScreen(self.data, self.marked_id, self.selected_id))

    def action_verify(self) -> None:
        ref = self._selected_ref()
        if ref is None:
            return
        model_id = self.selected_id
        self._run_task(f"verifying {ref}", self.data.by_id[model_id].bytes,
                       lambda progress: self.data.verify(model_id, progress))

    def action_export(self) -> None:
        ref = self._selected_ref()
        if ref is None:
            return
        model_id, row = self.selected_id, self.data.by_id[self.selected_id]

        def done(target: str | None) -> None:
            if target and target.strip():
                self._run_task(f"exporting {ref}", row.bytes,
                               lambda progress: self.data.export(model_id, target.strip(), progress))

        self.app.push_screen(PromptScreen(f"Export {ref} to a new folder", "the folder must not exist yet",
                                          value=f"./{row.name.replace('/', '_')}-v{row.version}",
                                          id="export-prompt"), done)

    def action_push(self) -> None:
        ref = self._selected_ref()
        if ref is None:
            return
        push, why = self.data.hub_push()
        if push is None:
            self.notify(why, title="push", severity="warning", timeout=8)
            return
        model_id = self.selected_id

        def done(repo_id: str | None) -> None:
            if repo_id and repo_id.strip():
                self._run_task(f"pushing {ref} to {repo_id.strip()}", None,
                               lambda progress: self.data.push(model_id, repo_id.strip()))

        self.app.push_screen(PromptScreen(f"Push {ref} to the Hub", "repository id: OWNER/NAME",
                                          id="push-prompt"), done)

    # ----- long actions in a worker, with a progress bar ----------------------------------
    def _run_task(self, label: str, total: int | None, fn: Callable[[Callable[[int], None]], TaskResult]) -> None:
        if self._busy is not None:
            self.notify(f"busy: {self._busy}; try again when it is done", severity="warning")
            return
        self._busy, self._busy_done = label, 0
        self.query_one("#taskbar", TaskBar).start(label, total)
        self._busy_timer = self.set_interval(0.1, self._busy_tick)
        self._busy_worker(fn)

    def _busy_advance(self, n: int = 1) -> None:
        with self._busy_lock:
            self._busy_done += n

    def _busy_tick(self) -> None:
        self.query_one("#taskbar", TaskBar).set_progress(self._busy_done)

    @work(thread=True, group="task", exit_on_error=False)
    def _busy_worker(self, fn: Callable[[Callable[[int], None]], TaskResult]) -> None:
        try:
            result = fn(self._busy_advance)
        except ZooError as e:
            result = TaskResult(False, str(e))
        except Exception as e:  # noqa: BLE001 - shown to the user, the UI goes on
            result = TaskResult(False, f"{type(e).__name__}: {e}")
        self.app.call_from_thread(self._busy_finished, result)

    def _busy_finished(self, result: TaskResult) -> None:
        label, self._busy = self._busy, None
        if self._busy_timer is not None:
            self._busy_timer.stop()
            self._busy_timer = None
        self.query_one("#taskbar", TaskBar).stop()
        title = (label or "task").split(" ", 1)[0]
        self.notify(result.message, title=title, severity="information" if result.ok else "error",
                    timeout=6 if result.ok else 12)
