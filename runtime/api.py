"""The small public surface the studio and the CLI use. Everything else in `runtime` is implementation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.domain.errors import DataImportError
from runtime.domain.events import Event
from runtime.jobs import EventBus, JobResult, Runner, StepState
from runtime.workspace.workspace import TEMPLATES, Workspace


def init_workspace(path: Path, template: str, name: str | None = None) -> Workspace:
    return Workspace.init(path, template, name)


def open_workspace(path: Path) -> Workspace:
    return Workspace(path)


def step_states(ws: Workspace) -> list[StepState]:
    return Runner(ws).statuses()


def pipeline_graph(ws: Workspace) -> dict[str, Any]:
    """The flowchart's source: steps in order (with title, pipeline, owning role, typed ports, description),
    edges and feedback loops, from cdl.yaml and the step registry."""
    from runtime.steps import get_step

    cfg = ws.config()
    steps = []
    for sid in cfg.order():
        spec = get_step(sid).spec
        steps.append({"id": sid, "title": spec.title, "pipeline": spec.pipeline, "role": spec.role.value,
                      "inputs": [(p.name, p.type) for p in spec.inputs], "outputs": [(p.name, p.type) for p in spec.outputs],
                      "description": spec.description, "params": cfg.params(sid)})
    return {"name": cfg.name, "task": cfg.task, "steps": steps, "edges": list(cfg.edges), "loops": list(cfg.loops)}


def add_source(ws: Workspace, source: Path, options: dict[str, Any] | None = None,
               subscriber: Callable[[Event], None] | None = None) -> JobResult:
    """Add a source to cdl.yaml and run data.import. cdl.yaml is saved only if the import succeeded, so a
    bad source leaves neither items nor configuration behind."""
    from runtime.steps.data import normalize_source
    from runtime.steps.sources import detect_kind

    source = Path(source).expanduser()
    abs_path = source if source.is_absolute() else Path.cwd() / source
    if not abs_path.exists():
        raise DataImportError(f"{source}: does not exist")
    detect_kind(abs_path) if not (options or {}).get("kind") else None
    try:
        rel = abs_path.resolve().relative_to(ws.root)
        path_str = str(rel)
    except ValueError:
        path_str = str(abs_path.resolve())
    entry = normalize_source({"path": path_str, **(options or {})}, "source")
    cfg = ws.config()
    sources = list(cfg.params("data.import")["sources"])
    sources = [s for s in sources if (s if isinstance(s, str) else s.get("path")) != path_str]
    sources.append(entry if len(entry) > 1 else path_str)
    cfg.set_param("data.import", "sources", sources)
    bus = EventBus()
    if subscriber:
        bus.subscribe(subscriber)
    result = Runner(ws, bus).run(steps=["data.import"], config=cfg)
    if result.ok:
        cfg.save(ws.root / "cdl.yaml")
        ws.git.commit(f"data: add source {path_str}", "cdl.yaml")
    else:
        err = result.steps[-1].error if result.steps else "import failed"
        raise DataImportError(err or "import failed")
    return result


__all__ = ["TEMPLATES", "EventBus", "JobResult", "Runner", "StepState", "Workspace", "add_source",
           "init_workspace", "open_workspace", "pipeline_graph", "step_states"]
