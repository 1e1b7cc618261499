"""Graphics items of the flowchart: a node (title, owning role, status with progress) and an edge."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsObject,
    QGraphicsPathItem,
    QStyleOptionGraphicsItem,
    QWidget,
)

from studio.canvas.model import Node

W, H = 196.0, 66.0
PIPELINE_COLOR = {"data": QColor("#3b82f6"), "model": QColor("#8b5cf6"), "deploy": QColor("#0d9488")}
STATUS_STYLE = {
    # status: (background of the badge, text, label)
    "never-run": (QColor("#e5e7eb"), QColor("#4b5563"), "never run"),
    "running": (QColor("#dbeafe"), QColor("#1d4ed8"), "running"),
    "done": (QColor("#dcfce7"), QColor("#15803d"), "done"),
    "failed": (QColor("#fee2e2"), QColor("#b91c1c"), "failed"),
    "cancelled": (QColor("#f3f4f6"), QColor("#374151"), "cancelled"),
    "waiting": (QColor("#ede9fe"), QColor("#6d28d9"), "waiting"),
    "stale": (QColor("#fef3c7"), QColor("#b45309"), "stale"),
    "drifted": (QColor("#dc2626"), QColor("#ffffff"), "DRIFTED"),
    "skipped": (QColor("#e5e7eb"), QColor("#4b5563"), "skipped"),
}


def fitted(text: str, font: QFont, width: float) -> str:
    """`text`, cut with an ellipsis where it is wider than `width` in `font` (the whole text is in the tooltip)."""
    return QFontMetricsF(font).elidedText(text, Qt.TextElideMode.ElideRight, width)


def subtitle(n: Node, font: QFont) -> str:
    """A card's second line: the step id and its owning role, cut to the card."""
    return fitted(f"{n.id}  ·  {n.role}", font, W - 20)


class NodeItem(QGraphicsObject):
    def __init__(self, node: Node):
        super().__init__()
        self.node = node
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setPos(node.x, node.y)
        self.setZValue(1)
        self.sync()

    def sync(self) -> None:
        n = self.node
        tip = f"{n.id}\nowner: {n.role}\nstatus: {n.status}"
        if n.reason:
            tip += f"\n{n.reason}"
        if n.message:
            tip += f"\n{n.message}"
        self.setToolTip(tip)
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802
        return QRectF(-2, -2, W + 4, H + 4)

    def paint(self, p: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        n = self.node
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        selected = self.isSelected()
        bg, fg, label = STATUS_STYLE.get(n.status, STATUS_STYLE["never-run"])
        border = QColor("#111827") if selected else (QColor("#dc2626") if n.status in ("failed", "drifted")
                                                      else QColor("#cbd5e1"))
        p.setPen(QPen(border, 2.2 if selected or n.status in ("failed", "drifted") else 1.0))
        p.setBrush(QBrush(QColor("#ffffff")))
        p.drawRoundedRect(QRectF(0, 0, W, H), 8, 8)
        # pipeline stripe
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(PIPELINE_COLOR.get(n.pipeline, QColor("#64748b")))
        path = QPainterPath()
        path.addRoundedRect(QRectF(0, 0, 7, H), 4, 4)
        p.drawPath(path)
        # title and role
        f = QFont()
        f.setPointSizeF(9.5)
        f.setBold(True)
        p.setFont(f)
        p.setPen(QColor("#111827"))
        p.drawText(QRectF(14, 6, W - 20, 18), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   fitted(n.title, f, W - 20))
        f.setBold(False)
        f.setPointSizeF(7.5)
        p.setFont(f)
        p.setPen(QColor("#6b7280"))
        p.drawText(QRectF(14, 24, W - 20, 14), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   subtitle(n, f))
        # status badge
        f.setPointSizeF(7.5)
        f.setBold(True)
        p.setFont(f)
        text = label
        if n.status == "running" and n.progress is not None:
            text = f"running {n.progress:.0%}"
        bw = max(56.0, 7.0 * len(text) + 12)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(bg)
        p.drawRoundedRect(QRectF(14, 42, bw, 16), 8, 8)
        p.setPen(fg)
        p.drawText(QRectF(14, 42, bw, 16), Qt.AlignmentFlag.AlignCenter, text)
        if n.status == "running":
            frac = n.progress if n.progress is not None else 0.0
            x0 = 20 + bw
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor("#e5e7eb"))
            p.drawRoundedRect(QRectF(x0, 47, W - x0 - 10, 6), 3, 3)
            p.setBrush(QColor("#2563eb"))
            p.drawRoundedRect(QRectF(x0, 47, (W - x0 - 10) * frac, 6), 3, 3)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value):  # noqa: ANN001, ANN201, N802
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged and self.scene() is not None:
            self.scene().node_moved_live(self)
        return super().itemChange(change, value)

    def out_point(self) -> QPointF:
        return self.pos() + QPointF(W, H / 2)

    def in_point(self) -> QPointF:
        return self.pos() + QPointF(0, H / 2)

    def top_point(self) -> QPointF:
        return self.pos() + QPointF(W / 2, 0)

    def bottom_point(self) -> QPointF:
        return self.pos() + QPointF(W / 2, H)


class EdgeItem(QGraphicsPathItem):
    def __init__(self, source: NodeItem, target: NodeItem, loop: bool = False):
        super().__init__()
        self.source, self.target, self.loop = source, target, loop
        color = QColor("#f97316") if loop else QColor("#94a3b8")
        pen = QPen(color, 1.6 if loop else 1.4)
        if loop:
            pen.setStyle(Qt.PenStyle.DashLine)
        self.setPen(pen)
        self.setZValue(0)
        if loop:
            self.setToolTip(f"feedback loop: {source.node.id} -> {target.node.id}")
        self.refresh()

    def refresh(self) -> None:
        s, t = self.source, self.target
        path = QPainterPath()
        same_column = abs(s.pos().x() - t.pos().x()) < 10
        if same_column and not self.loop:
            a, b = s.bottom_point(), t.top_point()
            path.moveTo(a)
            path.cubicTo(a + QPointF(0, 14), b - QPointF(0, 14), b)
        else:
            a, b = s.out_point(), t.in_point()
            if self.loop:
                a, b = s.in_point(), t.out_point()
                dx = -90.0
                path.moveTo(a)
                path.cubicTo(a + QPointF(dx, 0), b + QPointF(-dx, 0), b)
            else:
                dx = max(40.0, (b.x() - a.x()) / 2)
                path.moveTo(a)
                path.cubicTo(a + QPointF(dx, 0), b - QPointF(dx, 0), b)
        # arrow head
        end = path.pointAtPercent(1.0)
        before = path.pointAtPercent(0.97)
        d = end - before
        length = max(1e-6, (d.x() ** 2 + d.y() ** 2) ** 0.5)
        ux, uy = d.x() / length, d.y() / length
        left = end - QPointF(ux * 8 - uy * 4, uy * 8 + ux * 4)
        right = end - QPointF(ux * 8 + uy * 4, uy * 8 - ux * 4)
        path.moveTo(left)
        path.lineTo(end)
        path.lineTo(right)
        self.setPath(path)
