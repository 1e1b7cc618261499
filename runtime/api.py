"""The small public surface the studio and the CLI use. Everything else in `runtime` is implementation."""

from __future__ import annotations

import threading
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
               subscriber: Callable[[Event], None] | None = None, cancel: threading.Event | None = None) -> JobResult:
    """Add a source to cdl.yaml and run data.import. cdl.yaml is saved only if the import succeeded, so a
    bad source leaves neither items nor configuration behind; nor does one whose import was cancelled (`cancel`
    set: the studio's Cancel while its files are read)."""
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
    result = Runner(ws, bus, cancel=cancel).run(steps=["data.import"], config=cfg)
    if result.ok:
        cfg.save(ws.root / "cdl.yaml")
        ws.git.commit(f"data: add source {path_str}", "cdl.yaml")
    elif result.status == "cancelled":
        raise DataImportError(f"{source.name}: import cancelled; nothing was imported")
    else:
        err = result.steps[-1].error if result.steps else "import failed"
        raise DataImportError(err or "import failed")
    return result


def remove_source(ws: Workspace, source: str, subscriber: Callable[[Event], None] | None = None) -> dict[str, Any]:
    """Take a source out of cdl.yaml and its items out of the workspace (data.import drops a source that is no
    longer configured), the configuration saved only if that succeeded. SOURCE: the path as cdl.yaml has it, the
    file's path from here, or its file name where one source has it. Labels people gave its items stay, keyed by
    content: they come back with the items if it is imported again. Only hand-editing cdl.yaml (or the Collect
    step's Parameters…) removed a source imported by mistake."""
    from runtime.domain.errors import CdlError, NotFoundError, did_you_mean

    if source.startswith("proposal:"):
        raise CdlError(f"{source} is a retrain proposal's samples, not a configured source: `cdl proposals dismiss "
                       f"{source.split(':', 1)[1]}` ends it")
    cfg = ws.config()
    sources = list(cfg.params("data.import")["sources"])
    paths = [s if isinstance(s, str) else s.get("path") for s in sources]

    def where(p: str) -> Path:
        return (Path(p) if Path(p).is_absolute() else ws.root / p).resolve()

    given = Path(source).expanduser()
    here = (given if given.is_absolute() else Path.cwd() / given).resolve()
    hits = [i for i, p in enumerate(paths) if p == source or where(p) == here]
    if not hits:
        hits = [i for i, p in enumerate(paths) if Path(p).name == source]
    if not hits:
        close = did_you_mean(source, [*paths, *(Path(p).name for p in paths)])
        raise NotFoundError(f"{source!r} is no source of this workspace{close}; its sources: "
                            f"{', '.join(paths) or 'none'}")
    i = hits[0]  # two sources of one file name are refused when imported
    name = paths[i]
    before = {r.name: r.items for r in ws.store.sources()}
    cfg.set_param("data.import", "sources", sources[:i] + sources[i + 1:])
    bus = EventBus()
    if subscriber:
        bus.subscribe(subscriber)
    result = Runner(ws, bus).run(steps=["data.import"], config=cfg)
    if not result.ok:
        raise DataImportError((result.steps[-1].error if result.steps else None) or "data.import failed")
    cfg.save(ws.root / "cdl.yaml")
    ws.git.commit(f"data: remove source {name}", "cdl.yaml")
    return {"source": name, "items_removed": before.get(name, 0), "items": ws.store.item_count()}


__all__ = ["TEMPLATES", "EventBus", "JobResult", "Runner", "StepState", "Workspace", "add_source",
           "init_workspace", "open_workspace", "pipeline_graph", "remove_source", "step_states"]
