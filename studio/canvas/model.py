"""The flowchart's model: nodes, typed ports, edges and feedback loops, free of Qt.

It is built from the workspace's pipeline (cdl.yaml through runtime's public API) and kept up to date from the
runtime's status and event stream. Views subscribe to it through plain callbacks; edits go through
`FlowDocument` (studio/canvas/document.py) as undoable commands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PIPELINES = ("data", "model", "deploy")
COLUMN = {"data": 0, "model": 1, "deploy": 2}
STATUSES = ("never-run", "running", "done", "failed", "cancelled", "waiting", "stale", "drifted")


@dataclass
class Node:
    id: str
    title: str
    pipeline: str
    role: str
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    status: str = "never-run"
    reason: str = ""
    progress: float | None = None
    message: str = ""
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    loop: bool = False  # a feedback loop (drawn, never a dependency)


class ConnectionError_(ValueError):
    """Two ports cannot be connected."""


class FlowModel:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        self._listeners: list[Callable[[str, Any], None]] = []

    # -- observation --------------------------------------------------------------------------------------

    def subscribe(self, fn: Callable[[str, Any], None]) -> None:
        """fn(event, payload): event is 'reset', 'node-changed' (node id), 'node-moved' (node id),
        'edge-added' (edge), 'edge-removed' (edge)."""
        self._listeners.append(fn)

    def _notify(self, event: str, payload: Any = None) -> None:
        for fn in list(self._listeners):
            fn(event, payload)

    # -- building -----------------------------------------------------------------------------------------

    @classmethod
    def from_pipeline(cls, steps: list[dict[str, Any]], edges: list[tuple[str, str]],
                      loops: list[tuple[str, str]]) -> FlowModel:
        """steps: [{id, title, pipeline, role, inputs: [(name, type)], outputs: [...]}] in topological order."""
        m = cls()
        rows: dict[str, int] = {p: 0 for p in PIPELINES}
        for s in steps:
            pipe = s["pipeline"] if s["pipeline"] in COLUMN else "data"
            n = Node(s["id"], s["title"], pipe, s["role"], list(s.get("inputs", [])), list(s.get("outputs", [])))
            n.x = COLUMN[pipe] * 240.0
            n.y = rows[pipe] * 96.0
            rows[pipe] += 1
            m.nodes[n.id] = n
        m.edges = [Edge(a, b) for a, b in edges] + [Edge(a, b, loop=True) for a, b in loops]
        return m

    def reset(self, other: FlowModel) -> None:
        positions = {k: (n.x, n.y) for k, n in self.nodes.items()}
        self.nodes = other.nodes
        self.edges = other.edges
        for k, (x, y) in positions.items():
            if k in self.nodes:
                self.nodes[k].x, self.nodes[k].y = x, y
        self._notify("reset")

    # -- queries ------------------------------------------------------------------------------------------

    def upstream(self, node: str) -> list[str]:
        return [e.source for e in self.edges if e.target == node and not e.loop]

    def ancestors(self, node: str) -> set[str]:
        seen: set[str] = set()
        todo = [node]
        while todo:
            for u in self.upstream(todo.pop()):
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
        return seen

    def can_connect(self, source: str, target: str) -> tuple[bool, str]:
        """Typed ports: some output type of source must equal an input type of target, and no cycle."""
        if source not in self.nodes or target not in self.nodes:
            return False, "unknown step"
        if source == target:
            return False, "a step cannot feed itself"
        outs = {t for _, t in self.nodes[source].outputs}
        ins = {t for _, t in self.nodes[target].inputs}
        if not outs & ins:
            return False, (f"{source} gives {', '.join(sorted(outs)) or 'nothing'}; {target} takes "
                           f"{', '.join(sorted(ins)) or 'nothing'}")
        if target in self.ancestors(source):  # source already depends on target
            return False, "that would make a cycle"
        if any(e.source == source and e.target == target for e in self.edges):
            return False, "already connected"
        return True, ""

    # -- changes (through FlowDocument commands, or from the runtime) -------------------------------------

    def move(self, node: str, x: float, y: float) -> None:
        n = self.nodes[node]
        n.x, n.y = x, y
        self._notify("node-moved", node)

    def add_edge(self, source: str, target: str) -> Edge:
        ok, why = self.can_connect(source, target)
        if not ok:
            raise ConnectionError_(why)
        e = Edge(source, target)
        self.edges.append(e)
        self._notify("edge-added", e)
        return e

    def remove_edge(self, edge: Edge) -> None:
        self.edges.remove(edge)
        self._notify("edge-removed", edge)

    def set_status(self, node: str, status: str, reason: str = "") -> None:
        n = self.nodes.get(node)
        if n is None:
            return
        if status != "running":
            n.progress = None
        if (n.status, n.reason) != (status, reason):
            n.status, n.reason = status, reason
            self._notify("node-changed", node)

    def set_progress(self, node: str, fraction: float | None, message: str = "") -> None:
        n = self.nodes.get(node)
        if n is None:
            return
        n.status = "running"
        n.reason = ""  # a stale step's reason ("model.preprocess's output changed") is no longer so once it runs
        n.progress = fraction
        n.message = message
        self._notify("node-changed", node)
