"""The flowchart scene: draws the model, keeps a dict from node id to item, and turns gestures into signals.
It never changes the model itself: moves go through the FlowDocument (undoable)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QGraphicsScene, QGraphicsSceneContextMenuEvent, QGraphicsSceneMouseEvent, QMenu

from studio.canvas.document import FlowDocument
from studio.canvas.items import EdgeItem, NodeItem
from studio.canvas.model import COLUMN

HEADERS = {"data": "Data pipeline", "model": "Model pipeline", "deploy": "Deployment pipeline"}


class FlowScene(QGraphicsScene):
    sig_node_selected = Signal(str)
    sig_run_step = Signal(str)
    sig_run_until = Signal(str)
    sig_cancel = Signal()

    def __init__(self, document: FlowDocument):
        super().__init__()
        self.document = document
        self.model = document.model
        self.node_items: dict[str, NodeItem] = {}
        self.edge_items: list[EdgeItem] = []
        self._press: dict[str, tuple[float, float]] = {}
        self.setBackgroundBrush(QColor("#f8fafc"))
        self.model.subscribe(self._on_model_event)
        self.selectionChanged.connect(self._on_selection)
        self.rebuild()

    # -- drawing ------------------------------------------------------------------------------------------

    def rebuild(self) -> None:
        self.clear()
        self.node_items.clear()
        self.edge_items.clear()
        f = QFont()
        f.setPointSize(11)
        f.setBold(True)
        for pipe, col in COLUMN.items():
            if any(n.pipeline == pipe for n in self.model.nodes.values()):
                t = self.addText(HEADERS[pipe], f)
                t.setDefaultTextColor(QColor("#334155"))
                t.setPos(col * 240.0, -40)
        for node in self.model.nodes.values():
            item = NodeItem(node)
            self.addItem(item)
            self.node_items[node.id] = item
        for e in self.model.edges:
            self._add_edge_item(e)

    def _add_edge_item(self, e: Any) -> None:
        s, t = self.node_items.get(e.source), self.node_items.get(e.target)
        if s is None or t is None:
            return
        item = EdgeItem(s, t, e.loop)
        self.addItem(item)
        self.edge_items.append(item)

    def _on_model_event(self, event: str, payload: Any) -> None:
        if event == "reset":
            self.rebuild()
        elif event == "node-changed" and payload in self.node_items:
            self.node_items[payload].sync()
        elif event == "node-moved" and payload in self.node_items:
            n = self.model.nodes[payload]
            item = self.node_items[payload]
            if (item.pos().x(), item.pos().y()) != (n.x, n.y):
                item.setPos(n.x, n.y)
            self._refresh_edges(payload)
        elif event == "edge-added":
            self._add_edge_item(payload)
        elif event == "edge-removed":
            for item in list(self.edge_items):
                if item.source.node.id == payload.source and item.target.node.id == payload.target:
                    self.removeItem(item)
                    self.edge_items.remove(item)

    def _refresh_edges(self, node: str) -> None:
        for e in self.edge_items:
            if e.source.node.id == node or e.target.node.id == node:
                e.refresh()

    def node_moved_live(self, item: NodeItem) -> None:
        self._refresh_edges(item.node.id)

    # -- gestures -----------------------------------------------------------------------------------------

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        super().mousePressEvent(event)
        self._press = {k: (i.pos().x(), i.pos().y()) for k, i in self.node_items.items() if i.isSelected()}

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        for k, old in self._press.items():
            item = self.node_items[k]
            new = (item.pos().x(), item.pos().y())
            if new != old:
                n = self.model.nodes[k]
                n.x, n.y = old  # let the command do the move, so that undo works
                self.document.move_node(k, *new)
        self._press = {}

    def _on_selection(self) -> None:
        items = [i for i in self.selectedItems() if isinstance(i, NodeItem)]
        if len(items) == 1:
            self.sig_node_selected.emit(items[0].node.id)

    def contextMenuEvent(self, event: QGraphicsSceneContextMenuEvent) -> None:  # noqa: N802
        item = self.itemAt(event.scenePos(), self.views()[0].transform()) if self.views() else None
        while item is not None and not isinstance(item, NodeItem):
            item = item.parentItem()
        if item is None:
            return
        node = item.node.id
        menu = QMenu()
        menu.addAction(f"Run {node}", lambda: self.sig_run_step.emit(node))
        menu.addAction(f"Run up to {node}", lambda: self.sig_run_until.emit(node))
        menu.addSeparator()
        menu.addAction("Cancel the running job", self.sig_cancel.emit)
        menu.exec(event.screenPos())

    def select(self, node: str) -> None:
        self.clearSelection()
        if node in self.node_items:
            self.node_items[node].setSelected(True)

    def center_of(self, node: str) -> QPointF:
        return self.node_items[node].sceneBoundingRect().center()
