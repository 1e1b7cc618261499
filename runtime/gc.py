"""`cdl gc`: give back the disk that a workspace's caches and leftovers hold, and nothing that is still needed.

A workspace that goes around the loop for months keeps, in `.cdl/artifacts/`, the tensors of every dataset
version it ever preprocessed (217 MB each for Fashion-MNIST), and the files of steps that ran again (a
checkpoint a re-run of model.train replaced before it was registered, the ONNX file of a variant compressed
again). What gc removes:

- cached tensors of transforms of dataset versions other than the checked-out one. They are a cache: the
  registry keeps each transform's dataset version and parameters, and `load_transform` fits a dropped one again,
  to the same key and tensors, when an older model version is exported or packaged (from DVC's cache, without a
  checkout). Transform folders the registry does not know, and half-written ones, go too;
- artifacts nothing refers to: no model version, variant, bundle, deployment, or the latest run of a step;
- temporary files of writes that a killed process left, once they are an hour old;
- cached hashes (`.cdl/file-hashes.db`) of files that no configured source holds any more (a source removed, a
  file deleted from a source folder between two imports), the database then compacted.

What it keeps: every registered model version's checkpoint, every variant's ONNX file and bundle, every bundle
ever pushed to a device, and what the latest run of each step produced. It takes the workspace's run lock, so
it never runs beside a pipeline run (it stops with an error that names the run). `--dry-run` lists the same
and removes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from runtime.workspace.workspace import Workspace

DIGEST = re.compile(r"\b[0-9a-f]{64}\b")
TEMP_AGE_S = 3600.0  # a temporary file this old is a leftover, not a write in progress


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except OSError:
        return 0


def referenced(ws: Workspace) -> set[str]:
    """Every artifact digest the registry refers to."""
    store = ws.store
    refs: set[str] = set()
    for mv in store.model_versions():
        refs.update(DIGEST.findall(json.dumps(mv.artifacts)))
        for v in store.variants(mv.name, mv.version):
            refs.update(d for d in (v.artifact, v.bundle) if d)
    refs.update(d.bundle for d in store.deployments() if d.bundle)
    for runs in (store.last_step_runs(), store.last_done_runs()):
        for run in runs.values():
            refs.update(DIGEST.findall(json.dumps(run.summary, default=str)))
    return refs


def plan(ws: Workspace, now: float | None = None) -> list[dict[str, Any]]:
    """What gc would remove: [{"kind", "path" (relative to the workspace), "bytes", "reason"}]."""
    now = time.time() if now is None else now
    root = ws.root / ".cdl" / "artifacts"
    out: list[dict[str, Any]] = []

    def add(kind: str, path: Path, reason: str) -> None:
        out.append({"kind": kind, "path": str(path.relative_to(ws.root)), "bytes": _size(path), "reason": reason})

    stale = _stale_hashes(ws)
    if stale:
        rows, total, db = stale
        out.append({"kind": "file hashes", "path": str(db.relative_to(ws.root)), "rows": rows,
                    "bytes": int(_size(db) * rows / max(total, 1)),
                    "reason": f"{rows} cached hash(es) of files no configured source holds"})
    if not root.exists():
        return out
    current = ws.current_version()
    transforms = {t.key: t for t in ws.store.transforms()}
    tdir = root / "transforms"
    if tdir.exists():
        for d in sorted(tdir.iterdir()):
            rec = transforms.get(d.name)
            if ".tmp" in d.name:
                if now - d.stat().st_mtime > TEMP_AGE_S:
                    add("temporary", d, "a transform a killed process left half-written")
            elif rec is None:
                add("transform", d, "no transform in the registry has this key")
            elif rec.dataset_version != current:
                add("transform", d, f"cached tensors of dataset version {rec.dataset_version} (checked out: "
                                    f"{current or 'none'}); fitted again when needed")
    refs = referenced(ws)
    for sub in sorted(root.iterdir()):
        if sub.name == "transforms" or not sub.is_dir():
            continue
        for f in sorted(sub.iterdir()):
            if f.name.startswith(".tmp-"):
                if now - f.stat().st_mtime > TEMP_AGE_S:
                    add("temporary", f, "a write a killed process left")
            elif f.name not in refs:
                add("artifact", f, "no model version, variant, deployment or latest step run refers to it")
    return out


def _source_roots(ws: Workspace) -> list[str]:
    """The absolute paths of the configured sources, as data.import hashes them."""
    from runtime.steps.data import normalize_source

    roots = []
    for i, entry in enumerate(ws.config().steps.get("data.import", {}).get("sources") or []):
        path = Path(normalize_source(entry, f"cdl.yaml: steps.data.import.params.sources[{i}]")["path"]).expanduser()
        roots.append(str((path if path.is_absolute() else ws.root / path).absolute()))
    return roots


def _held(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _stale_hashes(ws: Workspace) -> tuple[int, int, Path] | None:
    """(rows of files no source holds, rows in all, the database) of the file-hash cache, or None: none, no cache,
    or one that cannot be read (it is only a cache)."""
    import sqlite3

    from runtime.steps.data import file_hashes

    db = file_hashes(ws)
    if not db.exists():
        return None
    roots = _source_roots(ws)
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            paths = [r[0] for r in con.execute("SELECT path FROM hashes")]
        finally:
            con.close()
    except sqlite3.Error:
        return None
    stale = sum(1 for p in paths if not _held(p, roots))
    return (stale, len(paths), db) if stale else None


def _drop_stale_hashes(ws: Workspace) -> None:
    import sqlite3

    from runtime.steps.data import file_hashes

    roots = _source_roots(ws)
    try:
        con = sqlite3.connect(str(file_hashes(ws)), timeout=5)
        try:
            with con:
                gone = [(p,) for (p,) in con.execute("SELECT path FROM hashes") if not _held(p, roots)]
                con.executemany("DELETE FROM hashes WHERE path = ?", gone)
            con.execute("VACUUM")
        finally:
            con.close()
    except sqlite3.Error:  # only a cache: the next import reads the files
        pass


def collect(ws: Workspace, dry_run: bool = False, log=None) -> dict[str, Any]:  # noqa: ANN001
    """Remove what `plan` lists (or only list it), under the workspace's run lock."""
    from runtime.jobs.runner import holding_workspace

    with holding_workspace(ws, "gc", "run gc when it has finished"):
        items = plan(ws)
        freed = 0
        for it in items:
            if not dry_run:
                path = ws.root / it["path"]
                if it["kind"] == "file hashes":
                    _drop_stale_hashes(ws)
                elif path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                if log:
                    verb = "pruned" if it["kind"] == "file hashes" else "removed"  # the cache stays, smaller
                    log(f"{verb} {it['path']} ({human(it['bytes'])}): {it['reason']}")
            freed += it["bytes"]
    return {"dry_run": dry_run, "removed": items, "bytes": freed}


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def summary_line(result: dict[str, Any]) -> str:
    kinds: dict[str, int] = {}
    for it in result["removed"]:
        kind = "cached file hash" if it["kind"] == "file hashes" else it["kind"]  # counted by its rows
        kinds[kind] = kinds.get(kind, 0) + it.get("rows", 1)
    what = ", ".join(f"{n} {k}{('es' if k.endswith('h') else 's') if n != 1 else ''}"
                     for k, n in sorted(kinds.items())) or "nothing"
    verb = "would remove" if result["dry_run"] else "removed"
    return f"{verb} {what}: {human(result['bytes'])}"
