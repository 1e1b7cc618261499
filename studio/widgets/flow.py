"""A row of buttons that wraps onto a second line where the window is narrow (Qt's flow layout example), so that the
studio fits a laptop's screen: rows of five to seven buttons made the window at least 1552 pixels wide. And grids
that put fewer cells to a row where the room runs out: the labeling panel's class keys (ten to a row), and plots,
one under another where two side by side would cut their titles and legends."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QGridLayout, QLayout, QLayoutItem, QSizePolicy, QWidget


class FlowLayout(QLayout):
    """Items left to right (or packed to the right with `right=True`), each line as full as it fits."""

    def __init__(self, parent: QWidget | None = None, right: bool = False, spacing: int = 6):
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._right = right
        self.setSpacing(spacing)
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 - Qt's name
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802 - everything on one line
        shown = self._shown()
        m = self.contentsMargins()
        width = sum(i.sizeHint().width() for i in shown) + self.spacing() * max(0, len(shown) - 1)
        height = max((i.sizeHint().height() for i in shown), default=0)
        return QSize(width + m.left() + m.right(), height + m.top() + m.bottom())

    def minimumSize(self) -> QSize:  # noqa: N802 - the widest item alone on its line
        size = QSize()
        for item in self._shown():
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _shown(self) -> list[QLayoutItem]:
        return [i for i in self._items if not (i.widget() is not None and i.widget().isHidden())]

    def _arrange(self, rect: QRect, move: bool) -> int:
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        lines: list[list[QLayoutItem]] = [[]]
        used = 0
        for item in self._shown():
            w = item.sizeHint().width()
            if lines[-1] and used + self.spacing() + w > area.width():
                lines.append([])
                used = 0
            used += (self.spacing() if lines[-1] else 0) + w
            lines[-1].append(item)
        y = area.y()
        for line in lines:
            if not line:
                continue
            height = max(i.sizeHint().height() for i in line)
            width = sum(i.sizeHint().width() for i in line) + self.spacing() * (len(line) - 1)
            x = area.x() + (max(0, area.width() - width) if self._right else 0)
            for item in line:
                hint = item.sizeHint()
                if move:
                    item.setGeometry(QRect(QPoint(x, y + (height - hint.height()) // 2),
                                           QSize(min(hint.width(), area.width()), hint.height())))
                x += hint.width() + self.spacing()
            y += height + self.spacing()
        return y - self.spacing() - area.y() + m.top() + m.bottom() if any(lines) else m.top() + m.bottom()


def flow_row(*widgets: QWidget, right: bool = False) -> QWidget:
    """A widget holding `widgets` in a FlowLayout: one line where there is room, more where there is not."""
    box = QWidget()
    lay = FlowLayout(box, right=right)
    for w in widgets:
        lay.addWidget(w)
    policy = box.sizePolicy()
    policy.setHeightForWidth(True)
    policy.setHorizontalPolicy(QSizePolicy.Policy.Preferred)
    box.setSizePolicy(policy)
    return box


class ReflowGrid(QWidget):
    """Cells in a grid, up to `columns` to a row where each gets the width its widest widget asks (at least
    `min_column_width`), fewer where not, down to one under another. A cell may hold several widgets, of which one is
    shown at a time (they share the place); a cell whose widgets are all hidden takes no room."""

    def __init__(self, columns: int, min_column_width: int = 0):
        super().__init__()
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._max = columns
        self._min_width = min_column_width
        self._cells: list[tuple[QWidget, ...]] = []
        self.columns = columns

    def add(self, *widgets: QWidget) -> None:
        self._cells.append(widgets)
        for w in widgets:
            w.installEventFilter(self)  # shown or hidden: the columns and places are looked at again
        self.reflow(force=True)

    def clear(self) -> None:
        """Take every cell out (their widgets are deleted)."""
        for cell in self._cells:
            for w in cell:
                w.removeEventFilter(self)
                self._grid.removeWidget(w)
                w.deleteLater()
        self._cells = []

    @staticmethod
    def _shown(cell: tuple[QWidget, ...]) -> bool:
        return any(not w.isHidden() for w in cell)

    def shown_cells(self) -> int:
        return sum(1 for cell in self._cells if self._shown(cell))

    def _place_all(self) -> None:
        """Each cell at its place among the cells shown: a hidden cell's widgets share the next one's place, where
        they take no room (a hidden plot between two left a hole in the grid)."""
        for cell in self._cells:
            for w in cell:
                self._grid.removeWidget(w)
        for col in range(self._max):
            self._grid.setColumnStretch(col, 1 if col < self.columns else 0)
        index = 0
        for cell in self._cells:
            row, col = divmod(index, self.columns)
            for w in cell:
                self._grid.addWidget(w, row, col)
            index += self._shown(cell)

    def need(self, w: QWidget) -> int:
        """The width a widget asks for its column."""
        return w.sizeHint().width()

    def column_width(self) -> int:
        """The narrowest a column may be: `min_column_width`, or what its widest widget shown asks (a hidden plot's
        title kept the tuning dashboard's training plots one under another)."""
        return max([self._min_width] + [self.need(w) for cell in self._cells for w in cell if not w.isHidden()])

    def columns_for(self, width: int) -> int:
        spacing = self._grid.horizontalSpacing()
        return max(1, min(self._max, (width + spacing) // (self.column_width() + spacing)))

    def reflow(self, force: bool = False) -> None:
        """Lay the cells out again for the present width and widgets (`force`: place them again even where the
        number of columns stays)."""
        columns = self.columns_for(self.width())
        if columns != self.columns or force:
            self.columns = columns
            self._place_all()
            self.reflowed()
            self.updateGeometry()

    def eventFilter(self, watched, event) -> bool:  # noqa: ANN001, N802 - Qt's name
        if event.type() in (QEvent.Type.ShowToParent, QEvent.Type.HideToParent):
            self.reflow(force=True)
        return False

    def reflowed(self) -> None:
        """Called after the cells moved."""

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt's name
        super().resizeEvent(event)
        self.reflow()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - one column's width: the grid of many would never narrow
        hint = super().minimumSizeHint()
        single = max((w.minimumSizeHint().width() for cell in self._cells for w in cell if not w.isHidden()),
                     default=0)
        return QSize(min(hint.width(), max(single, 1)), hint.height())


class PlotGrid(ReflowGrid):
    """Plots two to a row where each gets the width its title needs, one under another where not: two plots side
    by side in a panel 640 pixels wide cut their titles mid-word ("Scoring volume (records per minute") and their
    legends."""

    ROW_HEIGHT = 250

    def __init__(self, columns: int = 2, min_column_width: int = 360):
        super().__init__(columns, min_column_width)
        self._min_heights: dict[QWidget, int] = {}

    def add(self, *widgets: QWidget) -> None:
        for w in widgets:
            self._min_heights[w] = w.minimumHeight()
        super().add(*widgets)
        for w in widgets:
            self._fit_height(w)
        for w in widgets:  # a longer title may need a column of its own: look again when one is set
            title = w.getPlotItem().titleLabel if hasattr(w, "getPlotItem") else None
            if title is not None:
                set_text = title.setText

                def retitled(*args, _set=set_text, **kwargs) -> None:  # noqa: ANN002, ANN003
                    _set(*args, **kwargs)
                    self.reflow()

                title.setText = retitled

    def need(self, w: QWidget) -> int:
        """A plot's title's width and a margin (pyqtgraph cuts a title wider than its plot)."""
        title = w.getPlotItem().titleLabel if hasattr(w, "getPlotItem") else None
        if title is not None and title.text:
            return int(title.item.boundingRect().width()) + 24
        return 0

    def reflowed(self) -> None:
        for w in self._min_heights:
            self._fit_height(w)

    def _fit_height(self, w: QWidget) -> None:
        """One under another, the panel scrolls and each plot is at its minimum height: a taller one there (the drift
        tests' three lines of legend left the lines a band 60 pixels high in a plot of 180)."""
        stacked = self.columns == 1 and self.shown_cells() > 1
        w.setMinimumHeight(max(self._min_heights[w], self.ROW_HEIGHT - 10) if stacked else self._min_heights[w])

    def sizeHint(self) -> QSize:  # noqa: N802 - a plot asks 480 pixels: four stacked made a panel 2000 tall
        rows = -(-self.shown_cells() // self.columns)
        hint = super().sizeHint()
        return QSize(hint.width(), max(self.minimumSizeHint().height(), rows * self.ROW_HEIGHT))
