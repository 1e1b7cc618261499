"""`cdl gc`: a workspace that goes around the loop gives back the disk its caches and leftovers hold, and loses
nothing it still needs: a dropped transform is fitted again, to the same tensors, from DVC's cache."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime.domain.errors import CdlError, StepFailed
from runtime.gc import collect, plan
from runtime.jobs import Runner
from runtime.labeling import LabelQueue
from runtime.ml.preprocess import load_transform


def _arrays(p) -> dict:  # noqa: ANN001
    return {"X_train": p.X_train.toarray(), "X_test": p.X_test.toarray(), "y_train": p.y_train, "y_test": p.y_test}


def test_gc_drops_old_caches_and_orphans_and_a_dropped_transform_is_fitted_again(small_bbc):
    ws = small_bbc
    assert Runner(ws).run(until="model.register", overrides={"model.tune": {"n_trials": 1}}).ok
    mv = ws.store.model_version("ws", 1)
    k1 = mv.transform
    before = load_transform(ws, k1)
    checkpoint = mv.artifacts["checkpoint"]
    # a second dataset version: one label changed; model.preprocess fits its own transform
    row = next(r for r in ws.dataset().rows if r.label == "tech")
    LabelQueue(ws, "ann").set_label(row.uid, "business")
    assert Runner(ws).run(until="model.preprocess").ok
    assert ws.current_version() == "v2"
    k2 = ws.store.last_step_run("model.preprocess").summary["key"]
    assert k2 != k1
    # leftovers: an artifact nothing refers to, a killed write, a half-written transform (an hour old), and a
    # write in progress (new: it stays)
    orphan = ws.artifacts.put_bytes(b"a checkpoint replaced before it was registered")
    art = ws.root / ".cdl" / "artifacts"
    killed = art / orphan[:2] / ".tmp-killed"
    killed.write_bytes(b"x" * 100)
    half = art / "transforms" / f"{k1}.tmp-99-1"
    half.mkdir()
    (half / "X_train.npz").write_bytes(b"y" * 50)
    old = time.time() - 7200
    for p in (killed, half):
        os.utime(p, (old, old))
    fresh = art / orphan[:2] / ".tmp-writing"
    fresh.write_bytes(b"z")

    listed = {(it["kind"], it["path"].split("/")[-1]) for it in plan(ws)}
    assert listed == {("transform", k1), ("artifact", orphan), ("temporary", ".tmp-killed"),
                      ("temporary", half.name)}, listed
    dry = collect(ws, dry_run=True)
    assert dry["dry_run"] and dry["bytes"] > 0 and (art / "transforms" / k1).exists() and killed.exists()

    done = collect(ws)
    assert done["bytes"] == dry["bytes"] and len(done["removed"]) == 4
    assert not (art / "transforms" / k1).exists() and not ws.artifacts.exists(orphan)
    assert not killed.exists() and not half.exists() and fresh.exists()
    # kept: the checked-out version's transform, the registered checkpoint
    assert (art / "transforms" / k2 / "meta.json").exists() and ws.artifacts.exists(checkpoint)
    assert plan(ws) == []

    # the old version's transform comes back, fitted from v1 (not checked out) to the same key and tensors
    said = []
    again = load_transform(ws, k1, log=said.append)
    assert any("fitting it again from v1" in m for m in said), said
    assert ws.current_version() == "v2" and again.key == k1 and again.spec == before.spec
    assert again.classes == before.classes and again.reference == before.reference
    for name, a in _arrays(before).items():
        np.testing.assert_array_equal(a, _arrays(again)[name], err_msg=name)
    assert (art / "transforms" / k1 / "meta.json").exists()  # cached again

    # and where v1 can no longer give the same transform, the error says why instead of fitting another one
    collect(ws)
    from runtime.domain.entities import QuarantineEntry

    ws.store.replace_quarantine("v1", [QuarantineEntry("v1", row.uid, row.id, row.source, "manual", "late find")])
    with pytest.raises(StepFailed, match=r"v1's data or quarantine.*changed since it was made"):
        load_transform(ws, k1)


def test_gc_does_not_run_beside_a_pipeline_run_and_the_cli_reports(small_bbc):
    ws = small_bbc
    orphan = ws.artifacts.put_bytes(b"left behind")
    lock = ws.root / ".cdl" / "run.lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.write("pid 4242, cdl run")
        fh.flush()
        with pytest.raises(CdlError, match="pid 4242, cdl run"):
            collect(ws)
        assert ws.artifacts.exists(orphan)
    run = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "gc", "--dry-run"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"would remove .cdl/artifacts/{orphan[:2]}/{orphan}" in run.stdout and ws.artifacts.exists(orphan)
    assert "would remove 1 artifact" in run.stdout
    run = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "gc", "--json"],
                         capture_output=True, text=True)
    doc = json.loads(run.stdout)
    assert doc["dry_run"] is False and [it["kind"] for it in doc["removed"]] == ["artifact"] and doc["bytes"] == 11
    assert not ws.artifacts.exists(orphan)


def test_gc_prunes_the_hashes_of_files_no_source_holds(tmp_path):
    """data.import caches each source file's hash in .cdl/file-hashes.db; a source removed left its files' rows
    there for good (20 000 rows for a folder of photos), and gc did not know the file."""
    import sqlite3

    from runtime.api import add_source, remove_source
    from runtime.gc import summary_line
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    old = time.time() - 60  # files written in the last two seconds are not cached: these are older
    folder = tmp_path / "texts"
    for i in range(30):
        f = folder / ("news" if i % 2 else "sport") / f"{i}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"text number {i}")
        os.utime(f, (old, old))
    keep = tmp_path / "more.csv"
    keep.write_text("text,label\n" + "".join(f"another text {i},news\n" for i in range(5)))
    os.utime(keep, (old, old))
    add_source(ws, folder)
    add_source(ws, keep)
    db = ws.root / ".cdl" / "file-hashes.db"

    def rows() -> set[str]:
        with sqlite3.connect(db) as con:
            return {r[0] for r in con.execute("SELECT path FROM hashes")}

    assert len(rows()) == 31
    assert not [it for it in plan(ws) if it["kind"] == "file hashes"]  # every row is a configured source's
    remove_source(ws, str(folder))
    (item,) = [it for it in plan(ws) if it["kind"] == "file hashes"]
    assert item["rows"] == 30 and item["path"] == ".cdl/file-hashes.db" and item["bytes"] > 0
    assert "30 cached hash(es) of files no configured source holds" in item["reason"]
    assert len(rows()) == 31  # a plan changes nothing
    said: list[str] = []
    result = collect(ws, log=said.append)
    assert rows() == {str(keep.absolute())}
    assert summary_line(result).startswith("removed 30 cached file hashes")
    assert any(line.startswith("pruned .cdl/file-hashes.db") for line in said), said
    assert not [it for it in plan(ws) if it["kind"] == "file hashes"]
    # the cache still serves the source left: its import is unchanged
    add_source(ws, keep)
    assert rows() == {str(keep.absolute())}
    ws.close()
