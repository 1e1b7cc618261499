"""A row of buttons that wraps onto a second line where the window is narrow (Qt's flow layout example), so that the
studio fits a laptop's screen: rows of five to seven buttons made the window at least 1552 pixels wide."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLayout, QLayoutItem, QSizePolicy, QWidget


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
