"""`cdl backup` and `cdl restore`: the whole workspace in one archive, consistent, and back.

DVC backs up the data (`cdl data push`), but a workspace is more than its data: the registry (dataset versions,
labels, experiments, model versions, reviews, devices, deployments), the artifacts (checkpoints, ONNX variants,
bundles), the scoring data, the git history, cdl.yaml, the signing key and the device CA. A lost disk took all of
those. `cdl backup OUT.tar.gz` writes them into one archive, taken under the workspace's run lock:

- the SQLite registry through SQLite's online backup API (a consistent copy, whatever else reads it), the
  DuckDB scoring file copied while a connection holds it (after a checkpoint), every other file as it is;
- left out: DVC's cache and the checked-out dataset (`data/dataset`), which `cdl data push` keeps on the DVC
  remote (`--with-data` puts them in too), and the cached tensors of `.cdl/artifacts/transforms/` (fitted again
  when needed); lock files and temporary files;
- `cdl-backup.json` at the top lists every member with its sha256.

`cdl restore ARCHIVE DEST` unpacks into a new folder beside DEST, checks every member against that list, opens
the registry (migrating it if the archive is older), and only then renames the folder to DEST: a damaged archive
leaves nothing behind. The archive holds the workspace's private keys (bundle signing, device CA, device
folders): keep it as you keep those. A PostgreSQL registry is not in the archive (back it up with pg_dump); the
manifest says so.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime.domain.errors import CdlError
from runtime.workspace.artifacts import sha256_file
from runtime.workspace.workspace import Workspace

MANIFEST = "cdl-backup.json"
FORMAT = 1
SKIP_NAMES = {"run.lock", "registry.db.migrate.lock", "registry.db-wal", "registry.db-shm", "registry.db",
              "scoring.duckdb", "scoring.duckdb.wal", "file-hashes.db", "file-hashes.db-journal"}


def _skipped(rel: str, with_data: bool) -> bool:
    parts = rel.split("/")
    if parts[0] == ".cdl" and len(parts) == 2 and parts[1] in SKIP_NAMES:
        return True
    if rel.startswith(".cdl/artifacts/transforms/") or rel.startswith(".cdl/tmp/"):
        return True
    if parts[-1].startswith(".tmp-") or parts[-1].endswith(".lock"):
        return True
    if not with_data and (rel.startswith(".dvc/cache/") or rel.startswith("data/dataset/")):
        return True
    return False


def _registry_copy(ws: Workspace, dest: Path) -> None:
    src = sqlite3.connect(str(ws.root / ".cdl" / "registry.db"))
    try:
        out = sqlite3.connect(str(dest))
        with out:
            src.backup(out)
        out.close()
    finally:
        src.close()


def _scoring_copy(ws: Workspace, dest: Path) -> bool:
    path = ws.root / ".cdl" / "scoring.duckdb"
    if not path.exists():
        return False
    from runtime.scoring import ScoringStore

    with ScoringStore(path, create=False).connect() as con:  # while it is open no other process writes the file
        con.execute("CHECKPOINT")
        shutil.copyfile(path, dest)
    return True


def backup(ws: Workspace, out: Path, with_data: bool = False, log=None) -> dict[str, Any]:  # noqa: ANN001
    """Write the workspace into the tar.gz `out` (atomically: a temporary file renamed at the end)."""
    from runtime.jobs.runner import holding_workspace

    out = Path(out).expanduser().resolve()
    if not out.parent.is_dir():
        raise CdlError(f"{out.parent}: no such folder")
    say = log or (lambda _m: None)
    with holding_workspace(ws, "backup", "back it up when it has finished"):
        with tempfile.TemporaryDirectory(prefix=".cdl-backup-", dir=out.parent) as tmp:
            snap = Path(tmp)
            members: dict[str, Path] = {}
            notes: list[str] = []
            if ws.store.is_sqlite:
                _registry_copy(ws, snap / "registry.db")
                members[".cdl/registry.db"] = snap / "registry.db"
                registry = "sqlite"
            else:
                registry = "postgresql (not in this archive: back it up with pg_dump)"
                notes.append("the registry is in PostgreSQL and is not in this archive")
            remotes = {} if with_data else ws.dvc.remotes()
            unkept: list[str] = []  # dataset versions whose data is neither in the archive nor on the remote
            if not with_data and not remotes:
                unkept = [v.id for v in ws.store.versions() if v.dvc_hash]
                notes.append("this workspace has no DVC remote, so its data is neither in this archive nor on a "
                             "remote: add one (`cdl data remote add NAME URL`, then `cdl data push`) or back up "
                             "--with-data")
            elif not with_data:
                from runtime.datasets import not_on_remote

                name, url = next(iter(remotes.items()))
                unkept = not_on_remote(ws, url)
                if unkept:  # the archive leaves the data to the remote, which lacks these: a lost disk loses them
                    notes.append(f"{', '.join(unkept)} {'is' if len(unkept) == 1 else 'are'} not on the DVC remote "
                                 f"{name!r} ({url}), so {'its' if len(unkept) == 1 else 'their'} data is neither in "
                                 "this archive nor on the remote: `cdl data push` first, or back up --with-data")
            if _scoring_copy(ws, snap / "scoring.duckdb"):
                members[".cdl/scoring.duckdb"] = snap / "scoring.duckdb"
            for dirpath, dirnames, filenames in os.walk(ws.root):
                d = Path(dirpath)
                dirnames[:] = sorted(n for n in dirnames if d / n != snap)
                for name in sorted(filenames):
                    p = d / name
                    rel = p.relative_to(ws.root).as_posix()
                    if p == out or p.is_symlink() and not p.exists() or _skipped(rel, with_data):
                        continue
                    if p.is_symlink():  # DVC may link data/dataset to its cache: store the file itself
                        p = p.resolve()
                    members[rel] = p
            say(f"backing up {len(members)} files of {ws.root}")
            listing = {}
            total = 0
            part = snap / "archive.tar.gz"
            with tarfile.open(part, "w:gz", compresslevel=6) as tar:
                for i, (rel, p) in enumerate(sorted(members.items())):
                    listing[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                    total += listing[rel]["bytes"]
                    tar.add(str(p), arcname=rel, recursive=False)
                    if log and i and i % 500 == 0:
                        say(f"  {i}/{len(members)} files")
                manifest = {"format": FORMAT, "workspace": ws.config().name, "created": datetime.now(UTC).isoformat(),
                            "with_data": with_data, "registry": registry, "dataset_version": ws.current_version(),
                            "notes": notes, "remotes": remotes, "files": listing}
                data = json.dumps(manifest, indent=1).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
            os.replace(part, out)
        ws.store.set_state("last_backup", {"time": datetime.now(UTC).isoformat(), "archive": str(out),
                                           "with_data": with_data})
    return {"archive": str(out), "files": len(listing), "bytes": total, "archive_bytes": out.stat().st_size,
            "with_data": with_data, "registry": registry, "notes": notes, "data_not_kept": unkept}


def restore(archive: Path, dest: Path, log=None) -> dict[str, Any]:  # noqa: ANN001
    """Unpack `archive` into the new folder `dest`; every member is checked before `dest` appears."""
    archive, dest = Path(archive).expanduser().resolve(), Path(dest).expanduser().resolve()
    say = log or (lambda _m: None)
    if not archive.is_file():
        raise CdlError(f"{archive}: no such backup")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CdlError(f"{dest}: exists and is not empty; restore into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.restoring-", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                names = tar.getnames()
                if MANIFEST not in names:
                    raise CdlError(f"{archive}: not a cdl backup (no {MANIFEST})")
                manifest = json.loads(tar.extractfile(MANIFEST).read())
                if manifest.get("format") != FORMAT:
                    raise CdlError(f"{archive}: backup format {manifest.get('format')!r}; this cdl reads {FORMAT}")
                listed = set(manifest["files"])
                extra = sorted(set(names) - listed - {MANIFEST})
                if extra:
                    raise CdlError(f"{archive}: {extra[0]} is in the archive but not in its manifest")
                missing = sorted(listed - set(names))
                if missing:
                    raise CdlError(f"{archive}: {missing[0]} is listed in the manifest but missing (a truncated "
                                   "archive?)")
                say(f"restoring {len(listed)} files into {dest}")
                tar.extractall(tmp, filter="data")  # refuses absolute paths, '..', devices and links out
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise CdlError(f"{archive}: cannot be read ({type(exc).__name__}: {exc})") from None
        for rel, meta in manifest["files"].items():
            if sha256_file(tmp / rel) != meta["sha256"]:
                raise CdlError(f"{archive}: {rel} does not match its sha256 in the manifest (the archive is damaged)")
        (tmp / MANIFEST).unlink(missing_ok=True)
        ws = Workspace(tmp)  # opens (and migrates) the registry: a backup that cannot open is not restored
        try:
            versions, models = len(ws.store.versions()), len(ws.store.model_versions())
            newest = ws.store.versions()[-1].id if versions else None
            if ws.store.is_sqlite:  # the archive it came from is a backup of it (the doctor said "never backed up")
                ws.store.set_state("last_backup", {"time": manifest["created"], "archive": str(archive),
                                                   "with_data": manifest["with_data"], "restored_from": True})
        finally:
            ws.close()
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    hint = None
    remote = next(iter((manifest.get("remotes") or {}).items()), None)
    if not manifest["with_data"] and remote:
        hint = (f"the archive holds no data: `cdl data pull` fetches every dataset version from the DVC remote "
                f"{remote[0]} ({remote[1]}), then `cdl data checkout {manifest.get('dataset_version') or 'VERSION'}` "
                "lays out data/dataset")
    elif not manifest["with_data"] and versions:  # it said to pull from "a DVC remote (the workspace had none)"
        from runtime.datasets import REBUILD

        # it said to import the sources again with `cdl run --until data.version`, which found every step up to
        # date and did nothing; the items and labels are in the archive's registry and .cdl/packs
        hint = ("the archive holds no data and the workspace had no DVC remote, so the dataset versions' data is not "
                f"in it: {REBUILD} ({newest} again where nothing changed since it was made); an older version's "
                "data is gone unless the old workspace's .dvc/cache is still there to copy here")
    return {"workspace": str(dest), "files": len(manifest["files"]), "created": manifest["created"],
            "with_data": manifest["with_data"], "dataset_versions": versions, "model_versions": models,
            "registry": manifest["registry"], "next": hint, "remote": remote[0] if remote else None}
