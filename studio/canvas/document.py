"""The flowchart's controller: every edit passes through it as a QUndoCommand (undo/redo), and it saves node
positions for the next session (`.cdl/studio-layout.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtGui import QUndoCommand, QUndoStack

from studio.canvas.model import Edge, FlowModel


class MoveNodeCommand(QUndoCommand):
    def __init__(self, model: FlowModel, node: str, old: tuple[float, float], new: tuple[float, float]):
        super().__init__(f"move {node}")
        self.model, self.node, self.old, self.new = model, node, old, new

    def redo(self) -> None:
        self.model.move(self.node, *self.new)

    def undo(self) -> None:
        self.model.move(self.node, *self.old)

    def id(self) -> int:
        return 1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt's name
        if isinstance(other, MoveNodeCommand) and other.node == self.node:
            self.new = other.new
            return True
        return False


class AddEdgeCommand(QUndoCommand):
    def __init__(self, model: FlowModel, source: str, target: str):
        super().__init__(f"connect {source} to {target}")
        self.model, self.source, self.target = model, source, target
        self.edge: Edge | None = None

    def redo(self) -> None:
        self.edge = self.model.add_edge(self.source, self.target)

    def undo(self) -> None:
        if self.edge is not None:
            self.model.remove_edge(self.edge)


class FlowDocument:
    def __init__(self, model: FlowModel, layout_file: Path | None = None):
        self.model = model
        self.undo_stack = QUndoStack()
        self.layout_file = layout_file
        self.load_layout()

    def move_node(self, node: str, x: float, y: float, merge: bool = True) -> None:
        n = self.model.nodes[node]
        if (n.x, n.y) == (x, y):
            return
        cmd = MoveNodeCommand(self.model, node, (n.x, n.y), (x, y))
        if not merge:
            cmd.setObsolete(False)
        self.undo_stack.push(cmd)

    def connect(self, source: str, target: str) -> tuple[bool, str]:
        ok, why = self.model.can_connect(source, target)
        if ok:
            self.undo_stack.push(AddEdgeCommand(self.model, source, target))
        return ok, why

    def save_layout(self) -> None:
        if self.layout_file is None:
            return
        self.layout_file.parent.mkdir(parents=True, exist_ok=True)
        self.layout_file.write_text(json.dumps({k: [n.x, n.y] for k, n in self.model.nodes.items()}))

    def load_layout(self) -> None:
        if self.layout_file is None or not self.layout_file.exists():
            return
        try:
            pos = json.loads(self.layout_file.read_text())
            moved = {k: (float(x), float(y)) for k, (x, y) in pos.items() if k in self.model.nodes}
        except (OSError, ValueError, TypeError, AttributeError):  # a layout of another shape: the default one
            return
        for k, (x, y) in moved.items():
            self.model.nodes[k].x, self.model.nodes[k].y = x, y
