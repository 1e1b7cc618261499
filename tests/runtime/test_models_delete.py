"""`cdl models delete` (and the models panel's Delete…): a model version and its variants go, as MLflow deletes
one; `cdl gc` then frees its checkpoint. The champion, the version model.register made last and a version a
device serves are refused, each saying what to do first."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runtime.devices import deploy, remove
from runtime.domain.errors import NotFoundError
from runtime.jobs import Runner
from runtime.registry import history_json, review


def cdl(ws, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), *args], capture_output=True,
                          text=True, input=stdin)


def test_delete_a_model_version_and_what_is_refused(packaged, agent_factory):
    from runtime.gc import collect, referenced

    ws = packaged
    agent_factory(ws)
    deploy(ws, "ws:1", "fp32", "dev1")
    for seed in (3, 4):
        assert Runner(ws).run(steps=["model.train"], overrides={"model.train": {"seed": seed, "use_tuned": False}}).ok
        assert Runner(ws).run(steps=["model.register"]).ok
    review(ws.store, "ws:2", True, "better", "vera")  # ws:2 is the champion now; ws:3 was registered last
    one = ws.store.resolve_model("ws:1")
    assert ws.store.variants("ws", 1) and sorted((ws.root / ".cdl" / "bundles").glob("ws-v1-*.cdlb"))
    for ref, says in (("ws:2", "ws:2 is the champion: approve another version, or reject it"),
                      ("ws:3", "ws:3 is the version model.register made last"),
                      ("ws:1", "ws:1 is on device dev1: deploy another version there")):
        r = cdl(ws, "models", "delete", ref, "--yes")
        assert r.returncode == 2 and says in r.stderr, r.stderr
        # refused before the question (it asked "Delete …?", and then refused the answer yes)
        r = cdl(ws, "models", "delete", ref, stdin="y\n")
        assert r.returncode == 2 and says in r.stderr and "Delete" not in r.stdout, (r.stdout, r.stderr)
        ws.store.resolve_model(ref)  # still there
    remove(ws, "dev1")
    r = cdl(ws, "models", "delete", "ws:1", stdin="n\n")  # asked, and answered no
    acc = ws.store.resolve_model("ws:1").metrics["test_accuracy"]
    assert r.returncode == 1 and f"Delete ws:1 (no alias, test_accuracy {acc:.4f}) and its variants?" in r.stdout, \
        r.stdout
    ws.store.resolve_model("ws:1")
    r = cdl(ws, "models", "delete", "ws:1", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["deleted"] == "ws:1" and doc["variants"] >= 1 and doc["bundle_copies_removed"]
    with pytest.raises(NotFoundError):
        ws.store.resolve_model("ws:1")
    assert ws.store.variants("ws", 1) == [] and not list((ws.root / ".cdl" / "bundles").glob("ws-v1-*.cdlb"))
    hist = history_json(ws.store, "ws")
    assert any(rv["version"] == 1 for rv in hist["reviews"])  # its reviews stay
    held = [a for a in hist["aliases"] if a["version"] == 1]
    assert held and all(a["until"] is not None for a in held)  # the aliases it held ended
    assert [m.version for m in ws.store.model_versions("ws")] == [2, 3]
    # nothing refers to its checkpoint now: gc frees it (ws:2 and ws:3 have their own)
    ckpt = one.artifacts["checkpoint"]
    assert ckpt not in referenced(ws)
    freed = collect(ws)
    assert any(ckpt in it["path"] for it in freed["removed"]) and not ws.artifacts.exists(ckpt)
    # the next registration gets a new number, not the deleted one's
    assert Runner(ws).run(steps=["model.train"], overrides={"model.train": {"seed": 5, "use_tuned": False}}).ok
    assert Runner(ws).run(steps=["model.register"]).ok
    assert [m.version for m in ws.store.model_versions("ws")] == [2, 3, 4]
