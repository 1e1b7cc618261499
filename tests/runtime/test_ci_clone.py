"""CI on another machine: the workspace's sources are not reachable there. A source that was imported keeps its
items (data.import stays up to date instead of failing), so a workspace restored from `cdl backup` with its data
pulled from the DVC remote runs the model pipeline; a bare git clone, whose registry is empty, says what to do."""

from __future__ import annotations

import subprocess
import sys

from runtime.backup import backup, restore
from runtime.datasets import checkout, pull, push, remote_add
from runtime.jobs import Runner
from runtime.workspace import Workspace
from tests.conftest import small_bbc_workspace


def cdl(root, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(root), *args], capture_output=True,
                          text=True)


def test_an_unreachable_source_keeps_its_items_and_a_restored_workspace_runs_in_ci(tmp_path):
    root = tmp_path / "ws"
    ws = small_bbc_workspace(root, per_class=12, tune_trials=1)
    source = tmp_path / "ws-bbc.zip"
    assert source.exists()
    items = len(ws.store.items())
    remote_add(ws, "store", str(tmp_path / "remote"))
    push(ws)
    out = backup(ws, tmp_path / "ws.tar.gz")

    # the source is gone from this machine (moved, a drive not mounted): data.import is still up to date
    source.rename(tmp_path / "moved.zip")
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["data.import"].status.value == "done", states["data.import"].reason
    res = Runner(ws).run(until="data.version")
    assert res.ok and {o.step: o.status for o in res.steps}["data.import"] == "skipped"
    forced = Runner(ws).run(steps=["data.import"], force=True)
    assert forced.ok, forced.steps[0].error
    (src,) = forced.steps[0].summary["sources"]
    assert src["status"] == "unreachable" and src["items"] == items and len(ws.store.items()) == items
    ws.close()

    # CI: restore the backup on a machine without the source, pull the data, run the model pipeline
    dest = tmp_path / "ci"
    restore(out["archive"], dest)
    r = Workspace(dest)
    try:
        pull(r)
        checkout(r, "v1")
    finally:
        r.close()
    run = cdl(dest, "run", "--until", "model.evaluate", "--json", "--set", "model.tune.n_trials=1")
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"data.import"' in run.stdout and "not reachable here" not in run.stderr  # up to date: not even read

    # a bare git clone has an empty registry: data.import says what to do instead of only "does not exist"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    bare = cdl(clone, "run", "--until", "data.import")
    assert bare.returncode == 1
    assert "does not exist. This looks like a fresh clone of the workspace" in bare.stderr + bare.stdout
    assert "cdl backup" in bare.stderr + bare.stdout
