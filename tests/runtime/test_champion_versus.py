"""model.evaluate measures the champion on the candidate's own test split, so that a review (and CI's automatic
review) compares two models on the same items: a champion trained on another dataset version was evaluated on
another test split, and its own number said little about the candidate's data."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from runtime.jobs import Runner
from runtime.jobs.bus import EventBus
from runtime.registry import auto_review, review


def cdl(ws, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), *args], capture_output=True,
                          text=True)


def test_the_champion_is_measured_on_the_candidates_test_split(small_bbc):
    from edge_agent.proto.preprocessing import TextPipeline
    from runtime.ml import torch_backend
    from runtime.ml.preprocess import load_transform
    from runtime.workspace.dataset import decode_text

    ws = small_bbc
    fast = {"model.tune": {"n_trials": 1}}
    assert Runner(ws).run(until="model.evaluate", overrides=fast).ok
    one = ws.store.resolve_model("ws:1")
    assert "champion" not in one.evaluation  # no champion to compare with yet
    review(ws.store, "ws:1", True, "first", "vera")

    # the same data, another seed: the same test split, so the champion's numbers are its own evaluation's
    train = {**fast, "model.train": {"seed": 7, "use_tuned": False}}
    assert Runner(ws).run(until="model.evaluate", overrides=train, force=False).ok
    two = ws.store.resolve_model("ws:2")
    assert two.transform == one.transform
    v = two.evaluation["champion"]
    assert v["ref"] == "ws:1" and v["same_test_set"] and v["seen_in_training"] == 0
    assert v["test_accuracy"] == pytest.approx(one.metrics["test_accuracy"])
    assert v["confusion_matrix"] == one.evaluation["confusion_matrix"]

    # a new split (another seed): dataset v2, another test split
    cfg = ws.config()
    cfg.steps["data.split"]["seed"] = 7
    cfg.save()
    said: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message) if e.step == "model.evaluate" else None)
    assert Runner(ws, bus=bus).run(until="model.evaluate", overrides=fast).ok
    assert ws.current_version() == "v2"
    three = ws.store.resolve_model("ws:3")
    v = three.evaluation["champion"]
    assert v["ref"] == "ws:1" and not v["same_test_set"] and v["dataset_version"] == "v1"
    assert v["n"] == three.evaluation["n"] and v["classes"] == three.evaluation["classes"]
    assert sum(c["support"] for c in v["per_class"].values()) == v["n"]
    # worked out here another way: the champion's vocabulary on the texts of ws:3's test items, dense
    mine, theirs = load_transform(ws, three.transform), load_transform(ws, one.transform)
    rows = {r.uid: r for r in ws.dataset().rows}
    texts = [decode_text(ws.dataset().read_bytes(rows[u]))[0] for u in mine.uids_test]
    X, _ = TextPipeline(theirs.spec).transform(texts)
    probs = torch_backend.predict_proba(ws.artifacts.get(one.artifacts["checkpoint"]), X, ws.root)
    names = [one.classes[i] for i in probs.argmax(axis=1)]
    truth = [mine.classes[i] for i in mine.y_test]
    assert v["test_accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(names, truth, strict=True)]))
    # a test split drawn anew holds items the champion trained on: counted, and the log says it flatters it
    seen = len(set(mine.uids_test) & set(theirs.uids_train))
    assert v["seen_in_training"] == seen > 0
    assert any(f"{seen} of these {v['n']} test items {'was' if seen == 1 else 'were'} in its training data" in m
               for m in said), said

    # `cdl models compare`: any two versions side by side; where their test splits differ, both on B's
    doc = json.loads(cdl(ws, "models", "compare", "ws:1", "ws:3", "--json").stdout)
    assert doc["a"] == "ws:1" and doc["b"] == "ws:3" and not doc["same_test_set"]
    assert {r["field"]: r["differs"] for r in doc["lineage"]}["dataset version"] is True
    # the experiments by name, as the experiments list gives them (it said their ids alone), and times as the CLI
    # gives them
    rows = {r["field"]: r for r in doc["lineage"]}
    for ref, side in (("ws:1", "a"), ("ws:3", "b")):
        mv = ws.store.resolve_model(ref)
        assert rows["experiment"][side] == f"{ws.store.experiment(mv.experiment_id).name} (#{mv.experiment_id})"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows["created"]["a"]), rows["created"]
    o = doc["on_split"]
    assert o["of"] == "ws:3" and o["a"]["test_accuracy"] == pytest.approx(v["test_accuracy"])
    assert o["a"]["seen_in_training"] == seen and o["b"]["test_accuracy"] == three.metrics["test_accuracy"]
    assert json.loads(cdl(ws, "models", "compare", "ws:1", "ws:3", "--on", "own", "--json").stdout)["on_split"] is None
    back = json.loads(cdl(ws, "models", "compare", "ws:1", "ws:3", "--on", "a", "--json").stdout)["on_split"]
    assert back["of"] == "ws:1" and back["a"]["test_accuracy"] == one.metrics["test_accuracy"]
    assert back["b"]["n"] == one.evaluation["n"]
    same = json.loads(cdl(ws, "models", "compare", "ws:1", "ws:2", "--json").stdout)
    assert same["same_test_set"] and same["on_split"] is None
    assert {"name": "seed", "a": 42, "b": 7, "differs": True} in same["params"]
    text = cdl(ws, "models", "compare", "ws:1", "ws:3").stdout
    assert "both on ws:3's test split (v2" in text and f"{seen} of these test items {'was' if seen == 1 else 'were'} in ws:1's training" in text
    # a value longer than its column (the classes) once, not running into the next column
    classes = ", ".join(one.classes)
    assert f"  classes          both: {classes}" in text.splitlines(), text
    bad = cdl(ws, "models", "compare", "ws:1", "ws:9")
    assert bad.returncode == 2 and "model ws has no version 9" in bad.stderr

    # CI's automatic review compares the two numbers on this split, and says so
    rv = auto_review(ws.store, three)
    assert f"champion ws:1 {v['test_accuracy']:.4f} (both on this test split)" in rv.comment
    assert rv.decision == ("approved" if three.metrics["test_accuracy"] > v["test_accuracy"] else "rejected")



def test_an_image_champion_is_measured_on_the_candidates_test_split(tmp_path):
    from edge_agent.proto.preprocessing import ImagePipeline
    from runtime.ml import torch_backend
    from runtime.ml.preprocess import load_transform
    from tests.conftest import tiny_fashion_workspace

    ws = tiny_fashion_workspace(tmp_path / "fm")
    assert Runner(ws).run(until="model.evaluate").ok
    review(ws.store, "fm:1", True, "ok", "tester")
    cfg = ws.config()
    cfg.steps["data.split"].update({"use_source_split": False, "seed": 7})  # a new split: dataset v2
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok
    one, two = ws.store.resolve_model("fm:1"), ws.store.resolve_model("fm:2")
    assert two.dataset_version == "v2" and one.dataset_version == "v1"
    v = two.evaluation["champion"]
    assert v["ref"] == "fm:1" and not v["same_test_set"] and v["n"] == two.evaluation["n"]
    mine, theirs = load_transform(ws, two.transform), load_transform(ws, one.transform)
    rows = {r.uid: r for r in ws.dataset().rows}
    raw = ws.dataset().images([rows[u] for u in mine.uids_test])
    X, _ = ImagePipeline(theirs.spec).transform(raw)
    probs = torch_backend.predict_proba(ws.artifacts.get(one.artifacts["checkpoint"]), X, ws.root)
    right = [one.classes[p] == mine.classes[t] for p, t in zip(probs.argmax(axis=1), mine.y_test, strict=True)]
    assert v["test_accuracy"] == pytest.approx(float(np.mean(right)))
    assert v["seen_in_training"] == len(set(mine.uids_test) & set(theirs.uids_train))


def test_a_champion_that_cannot_run_does_not_fail_the_candidates_evaluation(small_bbc):
    ws = small_bbc
    fast = {"model.tune": {"n_trials": 1}}
    assert Runner(ws).run(until="model.evaluate", overrides=fast).ok
    review(ws.store, "ws:1", True, "first", "vera")
    one = ws.store.resolve_model("ws:1")
    ws.artifacts.get(one.artifacts["checkpoint"]).unlink()  # its checkpoint is gone
    res = Runner(ws).run(until="model.evaluate", overrides={**fast, "model.train": {"seed": 7, "use_tuned": False}})
    assert res.ok, [o.error for o in res.steps if o.error]
    v = ws.store.resolve_model("ws:2").evaluation["champion"]
    assert v["ref"] == "ws:1" and "error" in v and "test_accuracy" not in v
    rv = auto_review(ws.store, ws.store.resolve_model("ws:2"))  # falls back to the champion's own number, and says so
    assert "(the same test split)" in rv.comment
