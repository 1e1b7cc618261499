"""`cdl backup` / `cdl restore`: a workspace survives the loss of its disk. The archive holds the registry,
artifacts, scoring data, git history and keys; the data comes back from the DVC remote; a damaged archive
restores nothing."""

from __future__ import annotations

import fcntl
import io
import json
import subprocess
import sys
import tarfile

import pytest

from runtime.backup import backup, restore
from runtime.datasets import checkout, pull, push, remote_add
from runtime.domain.errors import CdlError
from runtime.jobs import Runner
from runtime.workspace import Workspace


def _git_head(root) -> str:  # noqa: ANN001
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def test_backup_and_restore_a_workspace_then_its_data_from_the_dvc_remote(small_bbc, tmp_path):
    ws = small_bbc
    assert Runner(ws).run(until="model.evaluate", overrides={"model.tune": {"n_trials": 1}}).ok
    from runtime.steps.data import file_hashes

    assert file_hashes(ws).exists()  # data.import's cache of its sources' hashes: a cache, not backed up
    from runtime.devices import scoring_store

    scoring_store(ws)  # the scoring database exists (empty)
    remote_add(ws, "backup", str(tmp_path / "remote"))
    mv = ws.store.model_version("ws", 1)
    rows = len(ws.dataset().rows)

    from runtime.doctor import diagnose

    (warned,) = [c for c in diagnose(ws)["checks"] if c["area"] == "backup"]
    assert warned["status"] == "warn" and "never backed up" in warned["detail"]
    # before `cdl data push`, the data is neither in the archive nor on the remote: said (the CLI said that the
    # remote kept every dataset version)
    early = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "backup",
                            str(tmp_path / "early.tar.gz")], capture_output=True, text=True)
    assert early.returncode == 0, early.stderr
    assert f"note: v1 is not on the DVC remote 'backup' ({tmp_path / 'remote'}), so its data is neither in this " \
           "archive nor on the remote: `cdl data push` first, or back up --with-data" in early.stdout, early.stdout
    assert "the DVC remote holds every dataset version" not in early.stdout
    push(ws)
    out = backup(ws, tmp_path / "ws.tar.gz")
    assert out["notes"] == [] and out["data_not_kept"] == [] and out["files"] > 10 and out["registry"] == "sqlite"
    (done,) = [c for c in diagnose(ws)["checks"] if c["area"] == "backup"]
    assert done["status"] == "ok" and "(today) to " in done["detail"] and "ws.tar.gz" in done["detail"]
    from datetime import UTC, datetime, timedelta

    kept = ws.store.get_state("last_backup")  # ten days on: a warning, in days (it said "10 day(s) ago")
    ws.store.set_state("last_backup", {**kept, "time": (datetime.now(UTC) - timedelta(days=10)).isoformat()})
    (old,) = [c for c in diagnose(ws)["checks"] if c["area"] == "backup"]
    assert old["status"] == "warn" and "(10 days ago) to " in old["detail"], old
    ws.store.set_state("last_backup", {**kept, "time": (datetime.now(UTC) - timedelta(days=1)).isoformat()})
    (old,) = [c for c in diagnose(ws)["checks"] if c["area"] == "backup"]
    assert old["status"] == "ok" and "(yesterday) to " in old["detail"], old
    ws.store.set_state("last_backup", kept)
    with tarfile.open(out["archive"]) as tar:
        names = set(tar.getnames())
    assert ".cdl/registry.db" in names and ".cdl/scoring.duckdb" in names and "cdl.yaml" in names
    assert f".cdl/artifacts/{mv.artifacts['checkpoint'][:2]}/{mv.artifacts['checkpoint']}" in names
    assert not any(n.startswith((".dvc/cache/", "data/dataset/", ".cdl/artifacts/transforms/")) for n in names)
    assert not any(n.startswith(".cdl/file-hashes.db") for n in names)

    # the disk is gone: restore elsewhere
    dest = tmp_path / "restored"
    got = restore(out["archive"], dest)
    assert got["model_versions"] == 1 and got["dataset_versions"] == 1
    assert "cdl data pull" in got["next"] and "backup" in got["next"] and "checkout v1" in got["next"]
    r = Workspace(dest)
    try:
        # the archive it was restored from is its last backup (the doctor said "never backed up")
        (restored,) = [c for c in diagnose(r)["checks"] if c["area"] == "backup"]
        assert restored["status"] == "ok" and restored["detail"].endswith(
            f"to {out['archive']} (this workspace was restored from it)"), restored
        back = r.store.model_version("ws", 1)
        assert back.artifacts == mv.artifacts and back.metrics == mv.metrics and back.aliases == mv.aliases
        assert r.artifacts.exists(mv.artifacts["checkpoint"])
        assert (dest / "cdl.yaml").read_text() == (ws.root / "cdl.yaml").read_text()
        assert _git_head(dest) == _git_head(ws.root)
        assert not (dest / "data" / "dataset").exists()
        data = [c for c in diagnose(r)["checks"] if c["area"] == "data" and c["status"] == "fail"]
        assert any(c["hint"] == "`cdl data pull` fetches them from the DVC remote" for c in data), data
        assert any(c["hint"] == "`cdl data checkout v1` (after `cdl data pull` if the cache lacks it)" for c in data)
        # the data from the DVC remote, then the model pipeline goes on (its cached tensors are fitted again)
        pull(r)
        assert checkout(r, "v1")["items"] == rows
        res = Runner(r).run(steps=["model.evaluate"])
        assert res.ok, res.steps[0].error
        assert r.store.model_version("ws", 1).metrics["test_accuracy"] == mv.metrics["test_accuracy"]
    finally:
        r.close()


def test_a_damaged_or_tampered_archive_restores_nothing(small_bbc, tmp_path):
    ws = small_bbc
    out = backup(ws, tmp_path / "ws.tar.gz")
    assert any("no DVC remote" in n for n in out["notes"])  # its data is nowhere else: it says so
    data = (tmp_path / "ws.tar.gz").read_bytes()
    # a truncated download
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CdlError, match="cannot be read"):
        restore(tmp_path / "cut.tar.gz", tmp_path / "a")
    # a member changed after the backup (the manifest still has its old sha256)
    with tarfile.open(tmp_path / "ws.tar.gz") as src, tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as dst:
        for m in src.getmembers():
            f = src.extractfile(m) if m.isfile() else None
            if m.name == "cdl.yaml":
                body = f.read() + b"\n# edited\n"
                m.size = len(body)
                dst.addfile(m, io.BytesIO(body))
            else:
                dst.addfile(m, f)
    with pytest.raises(CdlError, match="cdl.yaml does not match its sha256"):
        restore(tmp_path / "bad.tar.gz", tmp_path / "b")
    # a member that escapes the folder
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as dst:
        manifest = json.dumps({"format": 1, "files": {"../escaped": {"sha256": "0" * 64, "bytes": 1}}}).encode()
        for name, body in (("cdl-backup.json", manifest), ("../escaped", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            dst.addfile(info, io.BytesIO(body))
    with pytest.raises(CdlError, match="cannot be read"):
        restore(tmp_path / "evil.tar.gz", tmp_path / "c")
    assert not (tmp_path / "escaped").exists()
    for name in ("a", "b", "c"):
        assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if "restoring" in p.name]  # no half-restored folder left
    # into a folder that has files: refused
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(CdlError, match="exists and is not empty"):
        restore(tmp_path / "ws.tar.gz", tmp_path / "full")
    # beside a running pipeline: refused, naming it
    with open(ws.root / ".cdl" / "run.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.write("pid 4242, cdl run")
        fh.flush()
        with pytest.raises(CdlError, match="pid 4242"):
            backup(ws, tmp_path / "again.tar.gz")
    assert not (tmp_path / "again.tar.gz").exists()


def test_backup_with_data_restores_a_workspace_that_runs_at_once(small_bbc, tmp_path):
    ws = small_bbc
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "backup",
                           str(tmp_path / "all.tar.gz"), "--with-data"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "no DVC remote" not in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "restore", str(tmp_path / "all.tar.gz"),
                           str(tmp_path / "r"), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["next"] is None
    r = Workspace(tmp_path / "r")
    try:
        assert len(r.dataset().rows) == len(ws.dataset().rows)
        assert Runner(r).run(steps=["model.preprocess"]).ok
    finally:
        r.close()


def test_a_backup_without_data_or_remote_comes_back_by_the_commands_it_names(small_bbc, tmp_path):
    """A workspace with no DVC remote backed up without its data: data.ingest and data.version are stale, and the
    command the restore and the doctor name brings the dataset version back from the registry's items and labels.
    Every step stayed up to date with nothing in data/, so the restore's `cdl run --until data.version` did
    nothing, and the doctor said to `cdl data pull` from a remote the workspace did not have."""
    import re

    from runtime.doctor import diagnose

    ws = small_bbc
    made = ws.store.versions()[-1]
    backup(ws, tmp_path / "no-data.tar.gz")
    cli = [sys.executable, "-m", "runtime.cli"]
    proc = subprocess.run([*cli, "restore", str(tmp_path / "no-data.tar.gz"), str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"backed up \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)", proc.stdout), proc.stdout  # local, as listings
    hint = next(ln for ln in proc.stdout.splitlines() if ln.startswith("next: "))
    r = Workspace(tmp_path / "r")
    try:
        checks = [c for c in diagnose(r)["checks"] if c["area"] == "data" and c["status"] == "fail"]
        assert any("files missing from DVC's cache" in c["detail"] for c in checks), checks
        assert not any("cdl data pull" in c["hint"] for c in checks), checks  # there is no remote to pull from
        doctor = next(c["hint"] for c in checks if "missing" in c["detail"])
        states = {s.id: s for s in Runner(r).statuses()}  # stale, each saying why
        assert states["data.ingest"].reason == "data/dataset is missing: it is laid out again from the registry's items"
        assert states["data.version"].reason == f"DVC's cache lacks {made.id}'s files: data/dataset goes into it again"
    finally:
        r.close()
    commands = re.findall(r"`cdl (run [^`]+)`", hint)
    assert commands and commands == re.findall(r"`cdl (run [^`]+)`", doctor), (hint, doctor)
    for command in commands:  # as the user would type them, in the restored folder
        proc = subprocess.run([*cli, "-w", str(tmp_path / "r"), *command.split()], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    r = Workspace(tmp_path / "r")
    try:
        data = [c for c in diagnose(r)["checks"] if c["area"] == "data"]
        assert not [c for c in data if c["status"] == "fail"], data
        assert [v.id for v in r.store.versions()] == [made.id]  # the same version back, no new one
        assert r.store.versions()[-1].dvc_hash == made.dvc_hash
        assert len(r.dataset().rows) == len(ws.dataset().rows)
        result = Runner(r).run(until="data.label")
        assert result.ok and all(o.status == "skipped" for o in result.steps), result.steps
    finally:
        r.close()
