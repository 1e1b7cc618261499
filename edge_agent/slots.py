"""Bundles on the device and which one is active, switched atomically.

    DATA/bundles/<bundle sha256>/     verified, extracted bundles (written via a .partial folder and a rename)
    DATA/incoming/<upload>.part       an upload in progress (resumable), with <upload>.json
    DATA/active.json                  {"current": id, "previous": id}: replaced with one rename

A push that is interrupted (the agent killed at any moment) leaves the previous model active: a bundle becomes
active only after its signature and every hash are verified, its files are on disk, and its model loaded.

The folder does not grow without end: after an activation or a push, bundles beyond agent.json's `keep_bundles`
(the newest first; never the active or the previous one) are deleted, and an upload nobody resumed for
`UPLOAD_TTL_S` is deleted when the agent starts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_agent.proto.bundle import BundleError, extract_verified

UPLOAD_TTL_S = 7 * 86400  # an upload left this long is abandoned


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Slots:
    def __init__(self, data_dir: Path, trusted_keys: list[str], clean: bool = True, make_dirs: bool = True):
        """make_dirs False: a reader (`cdl-edge status`) that must not create bundles/ and incoming/, which run as
        root before the agent's first start would leave them root's, where the agent could not store a push."""
        self.root = Path(data_dir)
        self.bundles = self.root / "bundles"
        self.incoming = self.root / "incoming"
        self.active_file = self.root / "active.json"
        self.trusted = [k.encode() for k in trusted_keys]
        if not make_dirs:
            return
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)
        if clean:
            for partial in self.bundles.glob("*.partial"):  # a killed extraction
                shutil.rmtree(partial, ignore_errors=True)
            for tmp in self.root.glob("active.json.*.tmp"):
                tmp.unlink(missing_ok=True)
            cutoff = time.time() - UPLOAD_TTL_S
            for f in [*self.incoming.glob("*.part"), *self.incoming.glob("*.json")]:
                try:
                    if f.stat().st_mtime < cutoff:
                        f.unlink()
                except FileNotFoundError:
                    pass

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Between processes (several workers share the folder): one changes active.json or extracts at a time."""
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- state --------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """{"current", "previous"}; "damaged": why active.json could not be read, where it could not."""
        if not self.active_file.exists():
            return {"current": None, "previous": None}
        try:
            doc = json.loads(self.active_file.read_text())
            if not isinstance(doc, dict):
                raise ValueError(f"expected an object, got {type(doc).__name__}")
            return doc
        except (ValueError, OSError) as exc:
            return {"current": None, "previous": None, "damaged": str(exc)}

    def manifest(self, bundle_id: str) -> dict[str, Any]:
        return json.loads((self.bundles / bundle_id / "manifest.json").read_text())

    def stored(self) -> list[dict[str, Any]]:
        out = []
        if not self.bundles.is_dir():  # a folder enrolled, its agent never started
            return out
        for d in sorted(self.bundles.iterdir()):
            if d.is_dir() and not d.name.endswith(".partial") and (d / "manifest.json").exists():
                m = self.manifest(d.name)
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                out.append({"bundle_id": d.name, "name": m["name"], "version": m["version"], "variant": m["variant"],
                            "received": d.stat().st_mtime, "size": size})
        return out

    def path(self, bundle_id: str) -> Path:
        d = self.bundles / bundle_id
        if not (d / "manifest.json").exists():
            raise BundleError(f"bundle {bundle_id[:12]} is not stored on this device")
        return d

    # -- uploads ------------------------------------------------------------------------------------------

    def upload_paths(self, upload_id: str) -> tuple[Path, Path]:
        if not upload_id or "/" in upload_id or upload_id.startswith(".") or len(upload_id) > 128:
            raise BundleError(f"bad upload id {upload_id!r}")
        return self.incoming / f"{upload_id}.part", self.incoming / f"{upload_id}.json"

    def upload_offset(self, upload_id: str) -> int:
        part, _ = self.upload_paths(upload_id)
        return part.stat().st_size if part.exists() else 0

    def store_upload(self, upload_id: str, sha256: str) -> str:
        """Verify a complete upload and store it as a bundle; returns the bundle id (its sha256)."""
        import hashlib

        part, meta = self.upload_paths(upload_id)
        data = part.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if sha256 and digest != sha256:
            part.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            raise BundleError(f"the upload's sha256 is {digest[:16]}..., the client announced {sha256[:16]}... "
                              "(truncated or corrupted in transit)")
        self.store_bytes(data)
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        return digest

    def store_bytes(self, data: bytes) -> str:
        """Verify a whole bundle (signature, every member's hash and path) and store it: its id (its sha256). A
        push's upload and `cdl-edge install`'s file both come here; a bundle already stored is not extracted again."""
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        dest = self.bundles / digest
        with self.locked():
            if not (dest / "manifest.json").exists():
                extract_verified(data, self.trusted, dest)
                _fsync_dir(self.bundles)
        return digest

    def space_for(self, total_size: int, have: int, min_free: int) -> str | None:
        """Why an upload of `total_size` bytes (`have` of them here already) does not fit, or None. It needs its
        remaining bytes twice (the upload, then the verified bundle's files) and leaves `min_free` bytes free."""
        free = shutil.disk_usage(self.root).free
        need = 2 * max(0, total_size - have)
        if free - need >= min_free:
            return None
        return (f"not enough disk space on the device: {_mb(free)} free in {self.root}; this bundle needs "
                f"{_mb(need)} while it is received and verified, and {_mb(min_free)} must stay free for the scoring "
                "journal (agent.json min_free_bytes)")

    def prune(self, keep: int, protect: tuple[str, ...] = ()) -> list[str]:
        """Delete stored bundles beyond the newest `keep`, never the active or previous one nor `protect`;
        returns the ids deleted."""
        with self.locked():
            st = self.state()
            kept = {b for b in (st.get("current"), st.get("previous"), *protect) if b}
            others = sorted((m for m in self.stored() if m["bundle_id"] not in kept),
                            key=lambda m: m["received"], reverse=True)
            gone = [m["bundle_id"] for m in others[max(0, keep - len(kept)):]]
            for bid in gone:
                # renamed first, so a half-deleted bundle never looks stored; the next start sweeps leftovers
                trash = self.bundles / f"{bid}.deleting.partial"
                os.replace(self.bundles / bid, trash)
                shutil.rmtree(trash, ignore_errors=True)
            if gone:
                _fsync_dir(self.bundles)
            return gone

    # -- activation ---------------------------------------------------------------------------------------

    def activate(self, bundle_id: str) -> dict[str, Any]:
        self.path(bundle_id)
        with self.locked():
            st = self.state()
            if st.get("current") == bundle_id:
                return st
            new = {"current": bundle_id, "previous": st.get("current"), "time": time.time()}
            atomic_json(self.active_file, new)
            return new

    def rollback(self, expect_previous: str | None = None) -> dict[str, Any]:
        """Make the previous bundle current. expect_previous: the bundle the caller loaded for it; if another
        worker switched models in between, nothing changes and BundleError says so."""
        with self.locked():
            st = self.state()
            prev = st.get("previous")
            if not prev:
                raise BundleError("nothing to roll back to: no previous model on this device")
            if expect_previous is not None and prev != expect_previous:
                raise BundleError("the active model changed while rolling back; nothing was changed, try again")
            self.path(prev)
            new = {"current": prev, "previous": st.get("current"), "time": time.time()}
            atomic_json(self.active_file, new)
            return new


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
