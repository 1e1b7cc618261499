"""Small reusable widgets: tables filled from dicts, a log view, headings, notices, lazy pyqtgraph plots."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QWidget,
)


def local_time(value: Any, seconds: bool = True) -> str:
    """A time as the user reads it, in the machine's time zone. The registry keeps UTC: a datetime (naive ones are
    UTC), an ISO string, or a Unix time. Panels showed the UTC digits as they were, hours off outside UTC."""
    if value is None or value == "":
        return ""
    if isinstance(value, int | float):
        dt = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value)
    else:
        dt = value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def confirm(parent: QWidget | None, title: str, text: str) -> bool:
    """Ask before something that loses data or passes a check by: No is the default button, so Enter or Space on a
    dialog read too quickly keeps things as they are (QMessageBox.question chose Yes, its accepting button)."""
    answer = QMessageBox.question(parent, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def gate_on_selection(table: Table, needs: dict[Any, tuple[int, str, str]]) -> None:
    """Buttons on only while `table` has the rows selected that each needs: {button: (how many, what it does, what
    to select)}; an off button's tooltip says what to select (each said so only when pressed)."""
    def update() -> None:
        n = len([x for x in table.selected_data() if x])
        for button, (wanted, what, hint) in needs.items():
            button.setEnabled(n == wanted)
            button.setToolTip(what if n == wanted else f"{what} ({hint})")

    table.itemSelectionChanged.connect(update)
    update()


def heading(text: str, size: float = 12.0) -> QLabel:
    label = QLabel(text)
    f = QFont()
    f.setPointSizeF(size)
    f.setBold(True)
    label.setFont(f)
    return label


def notice(text: str, kind: str = "info") -> QLabel:
    """A plain message in a coloured box: info, warning or error."""
    colors = {"info": ("#eff6ff", "#1e40af"), "warning": ("#fffbeb", "#92400e"), "error": ("#fef2f2", "#991b1b"),
              "ok": ("#f0fdf4", "#166534")}
    bg, fg = colors.get(kind, colors["info"])
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setStyleSheet(f"QLabel {{ background: {bg}; color: {fg}; border-radius: 6px; padding: 8px; }}")
    return label


def set_notice(label: QLabel, text: str, kind: str = "info") -> None:
    fresh = notice(text, kind)
    label.setText(text)
    label.setStyleSheet(fresh.styleSheet())
    label.setVisible(bool(text))


class Table(QTableWidget):
    """A read-only table filled from rows of values, sortable, with optional per-cell colours."""

    def __init__(self, columns: Sequence[str], parent: QWidget | None = None, fit: bool = False,
                 whole: Sequence[int] = (0,)):
        """fit: the columns share the width the table has (fit_width), where their contents would make it scroll
        sideways; the columns `whole` names (the row's name, a device's address) are not narrowed."""
        super().__init__(0, len(columns), parent)
        self.columns = list(columns)
        self.fit, self.whole = fit, tuple(whole)
        if fit:
            self.setWordWrap(False)  # a text cut short is one line ending in "…", not two lines cut off
        self._natural: list[int] = []  # fit: each column's width for its contents (at most 360), as fill found it
        self.setHorizontalHeaderLabels(self.columns)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def fill(self, rows: Sequence[Sequence[Any]], colors: dict[tuple[int, int], str] | None = None,
             data: Sequence[Any] | None = None) -> None:
        self.setSortingEnabled(False)
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # keep the given order
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                item = QTableWidgetItem()
                if isinstance(value, float):
                    item.setData(Qt.ItemDataRole.DisplayRole, round(value, 4))
                elif isinstance(value, int):
                    item.setData(Qt.ItemDataRole.DisplayRole, value)
                else:
                    text = "" if value is None else str(value)
                    item.setText(text)
                    if len(text) > (12 if self.fit else 40):  # (a fitted column may cut it short)
                        item.setToolTip(text)
                if colors and (r, c) in colors:
                    item.setForeground(QColor(colors[(r, c)]))
                if data is not None and c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, data[r])
                self.setItem(r, c, item)
        self.resizeColumnsToContents()
        for c in range(self.columnCount()):
            if self.columnWidth(c) > 360:
                self.setColumnWidth(c, 360)
        if self.fit:  # (the last column's width is stretched to the table's: its contents' is asked for)
            head = self.horizontalHeader()
            self._natural = [min(360, max(self.sizeHintForColumn(c), head.sectionSizeHint(c)))
                             for c in range(self.columnCount())]
            self.fit_width()
        self.setSortingEnabled(True)

    def fit_width(self) -> None:
        """Where the columns' contents are wider than the table, the widest are narrowed to one common width, none
        below its header's and those `whole` names (the row's name) not at all, so that every column is in view: a
        text cut short ends in "…" and its tooltip holds it whole. The models panel's tables scrolled sideways
        beside the flowchart at 1366 × 768, the test accuracy and everything after it out of view."""
        natural = self._natural
        width = self.viewport().width()
        if not natural or len(natural) != self.columnCount() or width <= 0:
            return
        if sum(natural) <= width:
            widths = natural
        else:
            fm = self.horizontalHeader().fontMetrics()

            def header(c: int) -> int:
                item = self.horizontalHeaderItem(c)
                lines = (item.text() if item is not None else "").splitlines() or [""]
                return max(fm.horizontalAdvance(line) for line in lines) + 16

            floor = [min(w, max(48, header(c))) for c, w in enumerate(natural)]
            for c in self.whole:  # the row's name (a model version's) stays whole
                if c < len(floor):
                    floor[c] = min(natural[c], 220)
            lo, hi = 0, max(natural)  # the widest common width at which every column fits
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if sum(max(f, min(w, mid)) for w, f in zip(natural, floor, strict=True)) <= width:
                    lo = mid
                else:
                    hi = mid - 1
            widths = [max(f, min(w, lo)) for w, f in zip(natural, floor, strict=True)]
        for c, w in enumerate(widths):
            self.setColumnWidth(c, w)

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt's name
        super().resizeEvent(event)
        if self.fit:
            self.fit_width()

    def selected_data(self) -> list[Any]:
        rows = sorted({i.row() for i in self.selectedIndexes()})
        out = []
        for r in rows:
            item = self.item(r, 0)
            if item is not None:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return out


class LogView(QPlainTextEdit):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        f = QFont("monospace")
        f.setStyleHint(QFont.StyleHint.Monospace)
        f.setPointSizeF(8.5)
        self.setFont(f)

    def add(self, line: str) -> None:
        self.appendPlainText(line)


def plot_widget(title: str = "", left: str = "", bottom: str = "", whole_x: bool = False):  # noqa: ANN201
    """A pyqtgraph PlotWidget (pyqtgraph loads on first use: it is not needed to show the window). whole_x: the
    x axis counts things (trials, epochs, checks), so its ticks fall on whole numbers only."""
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True, background="w", foreground="#374151")
    axes = {"bottom": _whole_number_axis(pg)("bottom")} if whole_x else None
    w = pg.PlotWidget(axisItems=axes)
    _let_title_shrink(w.getPlotItem().titleLabel)
    w.setTitle(title)
    w.showGrid(x=True, y=True, alpha=0.25)
    if left:
        w.setLabel("left", left)
    if bottom:
        w.setLabel("bottom", bottom)
    for axis in ("left", "bottom"):
        w.getAxis(axis).enableAutoSIPrefix(False)  # accuracies read 0.98, not 980 (x0.001)
    w.setMinimumHeight(180)
    return w


def add_legend(plot, offset: tuple[int, int] = (10, 10), columns: int = 1):  # noqa: ANN001, ANN201
    """The plot's legend on an opaque white box, drawn over the data: pyqtgraph's bare legend let bars and lines
    show through its names. offset: pixels from the corner it names (negative x: from the right, negative y: from
    the bottom); columns: entries side by side, for a legend that should take one line."""
    legend = plot.addLegend(offset=offset, brush=(255, 255, 255, 230), pen="#d1d5db", labelTextColor="#111827")
    legend.setColumnCount(columns)
    legend.setZValue(1000)
    return legend


def room_for_legend(plot, lo: float, hi: float, rows: int) -> None:  # noqa: ANN001
    """Set the y range so that the data (lo to hi, in the view's coordinates: log10 on a log axis) fill the lower
    part and a band on top holds a legend of `rows` lines placed at the top, covering none of the data. The band
    is the legend's height in pixels over the plot's (it was a fixed share, a quarter for one line, which the
    legend's 45 or so pixels outgrew in a plot 200 pixels high: it covered the best trial's point), and is set
    again when the plot is resized, unless someone has zoomed or panned it since."""
    plot._legend_room = (lo, hi, rows)
    _apply_room(plot)
    vb = plot.getViewBox()
    if not getattr(plot, "_legend_room_hooked", False):
        plot._legend_room_hooked = True
        vb.sigResized.connect(lambda *_: _apply_room(plot, only_if_ours=True))


def _apply_room(plot, only_if_ours: bool = False) -> None:  # noqa: ANN001
    lo, hi, rows = plot._legend_room
    vb = plot.getViewBox()
    if only_if_ours and tuple(vb.viewRange()[1]) != getattr(plot, "_legend_range", None):
        return  # zoomed or panned since, or another draw set its own range
    span = (hi - lo) or max(abs(hi) * 0.02, 0.01)
    height = vb.sceneBoundingRect().height()
    legend = plot.getPlotItem().legend
    if height >= 80:  # laid out: the legend's own height (or a line's 20 pixels a row), its offset and a margin
        drawn = legend.boundingRect().height() if legend is not None and legend.items else 0.0
        offset = abs(legend.opts["offset"][1]) if legend is not None and legend.opts.get("offset") else 10
        band = min(0.7, (max(drawn, 14 + 20 * rows) + offset + 8) / height)
    else:  # not shown yet: a share, set again in pixels when it is
        band = min(0.6, 0.1 + 0.16 * rows)
    below = 0.05
    total = span / (1 - band - below)
    plot.setYRange(lo - below * total, lo - below * total + total, padding=0)
    plot._legend_range = tuple(vb.viewRange()[1])


def plot_note(plot, text: str):  # noqa: ANN001, ANN201
    """Grey words in the middle of an empty plot, saying why it is empty (blank axes said nothing)."""
    import pyqtgraph as pg

    note = pg.TextItem(text, color="#6b7280", anchor=(0.5, 0.5))
    plot.addItem(note)
    note.setPos(0.5, 0.5)
    plot.getAxis("bottom").setTicks(None)
    plot.setXRange(0, 1)
    plot.setYRange(0, 1)
    return note


def _let_title_shrink(label) -> None:  # noqa: ANN001
    """pyqtgraph makes a plot at least as wide as its title: in a narrow panel a long title pushed the right part
    of the plot out of sight. The title may now be cut at the plot's edges instead, and its tooltip is whole."""
    fit = label.updateMin

    def update_min() -> None:
        fit()
        height = label._sizeHint[Qt.SizeHint.MinimumSize][1]
        label.setMinimumWidth(0)
        label._sizeHint[Qt.SizeHint.MinimumSize] = (0, height)
        label._sizeHint[Qt.SizeHint.PreferredSize] = (0, height)
        label.setToolTip(label.text)
        label.updateGeometry()

    label.updateMin = update_min


@functools.cache
def _whole_number_axis(pg):  # noqa: ANN001, ANN202
    """The class, made once (pyqtgraph is imported on first use, so it cannot be defined at module level)."""

    class WholeNumberAxis(pg.AxisItem):
        """Ticks at whole numbers only: an axis of epochs reads 1, 2, 3, never 1.5."""

        def tickValues(self, minVal, maxVal, size):  # noqa: ANN001, ANN201, N802, N803
            out = []
            for spacing, values in super().tickValues(minVal, maxVal, size):
                whole = [v for v in values if float(v).is_integer()]
                if whole:
                    out.append((max(float(spacing), 1.0), whole))
            return out

    return WholeNumberAxis


PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777", "#65a30d", "#7c3aed",
           "#ca8a04"]


def fit_to_screen(window: QWidget, width: int, height: int) -> None:
    """Resize a dialog to width x height, or to the room its screen leaves where that is less (a 940 x 700
    dialog put its buttons under the taskbar of a 1366 x 768 laptop, whose room is 728 high less a title bar)."""
    parent = window.parentWidget()
    screen = (parent.screen() if parent is not None else None) or window.screen() or QGuiApplication.primaryScreen()
    if screen is not None:
        room = screen.availableGeometry()
        width, height = min(width, room.width() - 40), min(height, room.height() - 60)
    window.resize(max(width, 200), max(height, 160))


class PageTabs(QTabWidget):
    """Tabs as tall as the page shown asks, not the tallest page: the data panel's Analysis tab (plots and a dozen
    samples) made its Sources tab ask 1014 pixels, and the panel scrolled at 1366 x 768, the summary under the fold."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.currentChanged.connect(lambda _: self.updateGeometry())

    def _around(self, size: QSize) -> QSize:
        bar = self.tabBar().sizeHint()
        return QSize(max(size.width(), bar.width()) + 4, size.height() + bar.height() + 4)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        page = self.currentWidget()
        return self._around(page.sizeHint()) if page is not None else super().sizeHint()

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        page = self.currentWidget()
        if page is None:
            return super().minimumSizeHint()
        widest = max((self.widget(i).minimumSizeHint().width() for i in range(self.count())), default=0)
        return self._around(QSize(widest, page.minimumSizeHint().height()))  # as wide as the widest: no jumps

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        page = self.currentWidget()
        if page is None:
            return super().heightForWidth(width)
        bar = self.tabBar().sizeHint().height() + 4
        lay = page.layout()
        if lay is not None and lay.hasHeightForWidth():
            return lay.totalMinimumHeightForWidth(width - 4) + bar
        return page.minimumSizeHint().height() + bar


class WrappedColumnsDialog(QDialog):
    """A dialog whose table's wrapped columns share the width it has: `fit_columns` runs when it is shown and each
    time it is resized."""

    def fit_columns(self) -> None:
        """Set the table's column widths for its present width, then its rows' heights."""

    def showEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt's name
        super().showEvent(event)
        self.fit_columns()

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802
        super().resizeEvent(event)
        if self.isVisible():
            self.fit_columns()
