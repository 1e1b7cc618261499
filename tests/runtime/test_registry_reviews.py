"""Reviews and the champion alias on a real registry database: rejecting the champion demotes it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from runtime.domain.errors import NotFoundError
from runtime.registry import history_json, review, review_message
from runtime.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    yield s
    s.close()


def _champion(store: Store, name: str = "m") -> int | None:
    try:
        return store.model_version(name, "champion").version
    except NotFoundError:
        return None


def _versions(store: Store, n: int) -> None:
    for _ in range(n):
        store.register_model("m", framework="torch", template="text-classification", dataset_version="v1", transform="t",
                             metrics={"test_accuracy": 0.9})


def test_rejecting_the_champion_brings_back_the_one_before(store):
    _versions(store, 3)
    review(store, "m:1", True, "fine", "ann")
    review(store, "m:2", True, "better", "ann")
    assert _champion(store) == 2
    review(store, "m:3", False, "worse", "bob")  # not the champion: nothing moves
    assert _champion(store) == 2
    review(store, "m:2", False, "found a leak", "vera")
    assert _champion(store) == 1
    last = [a for a in store.alias_history("m") if a.alias == "champion"][-1]
    assert last.version == 1 and last.reason == "champion again: m:2 was rejected by vera"
    line = review_message(store, "m:2", False, "vera", was_champion=True)
    assert "m:2: rejected by vera" in line and "m:1 is the champion again" in line
    # devices only where a device runs it: it said "Devices keep running m:2" of a version no device had
    assert line.endswith("m:1 is the champion again"), line
    store.add_device(name="pi1", address="127.0.0.1:1", token="t", cert_fingerprint="f", enroll_dir="d",
                     last_health={"active": {"name": "m", "version": 2}})
    line = review_message(store, "m:2", False, "vera", was_champion=True)
    assert line.endswith("m:1 is the champion again. pi1 keeps running m:2 until you deploy m:1 or roll back "
                         "(`cdl rollback --device D`)"), line


def test_a_rejected_earlier_champion_does_not_come_back(store):
    _versions(store, 2)
    review(store, "m:1", True, "fine", "ann")
    review(store, "m:2", True, "better", "ann")
    review(store, "m:1", False, "it was wrong all along", "vera")  # no longer approved
    review(store, "m:2", False, "so is this one", "vera")
    assert _champion(store) is None
    assert "has no champion now" in review_message(store, "m:2", False, "vera", was_champion=True)
    review(store, "m:1", True, "fixed the labels", "vera")  # approved again: champion again
    assert _champion(store) == 1


def test_cli_review_says_where_the_champion_went(tmp_path, monkeypatch):
    from runtime.cli import cli
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    for _ in range(2):
        ws.store.register_model(ws.config().name, framework="torch", template="text-classification", dataset_version="v1", transform="t",
                             metrics={"test_accuracy": 0.9})
    name = ws.config().name
    runner = CliRunner()
    for ref in (f"{name}:1", f"{name}:2"):
        res = runner.invoke(cli, ["-w", str(ws.root), "models", "review", ref, "--approve", "--reviewer", "ann"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["-w", str(ws.root), "models", "review", f"{name}:2", "--reject", "--reviewer", "vera",
                              "--comment", "leak"])
    assert res.exit_code == 0, res.output
    assert f"{name}:2: rejected by vera; it was the champion: {name}:1 is the champion again" in res.output
    assert "rejectd" not in res.output
    # both flags: the last one won without a word (a rejection nobody meant, or an approval); refused now
    before = len(history_json(ws.store, name)["reviews"])
    res = runner.invoke(cli, ["-w", str(ws.root), "models", "review", f"{name}:1", "--reject", "--approve",
                              "--reviewer", "ann"])
    assert res.exit_code == 2 and "--approve and --reject both given: say one" in res.output, res.output
    assert len(history_json(ws.store, name)["reviews"]) == before
    res = runner.invoke(cli, ["-w", str(ws.root), "models", "list"])
    lines = res.output.splitlines()
    assert lines[0].startswith(f"{name}:1") and lines[0].endswith("approved by ann"), res.output
    assert lines[1].startswith(f"{name}:2") and lines[1].endswith("rejected by vera"), res.output
    # --json, for a CI job that records its approval gate: the decision and where the champion is now
    res = runner.invoke(cli, ["-w", str(ws.root), "models", "review", f"{name}:1", "--reject", "--reviewer", "ci",
                              "--comment", "drift", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {k: doc[k] for k in ("ref", "decision", "reviewer", "comment", "aliases", "champion")} == {
        "ref": f"{name}:1", "decision": "rejected", "reviewer": "ci", "comment": "drift", "aliases": [],
        "champion": None}
    assert "has no champion now" in doc["message"]
    ws.close()


def test_a_missing_model_or_version_is_named_plainly(store):
    _versions(store, 2)
    with pytest.raises(NotFoundError, match=r"^model m has no version 7 \(versions 1 to 2\)$"):
        store.resolve_model("m:7")
    with pytest.raises(NotFoundError, match=r"^model 'nope' does not exist \(models: m\)$"):
        store.resolve_model("nope")  # not "nope:?"
    with pytest.raises(NotFoundError, match="has no version with alias 'staging'"):
        store.resolve_model("m@staging")


def test_every_version_lists_its_latest_review(store):
    from runtime.registry import models_json, review_text

    _versions(store, 3)
    review(store, "m:1", True, "fine", "ann")
    review(store, "m:2", True, "better", "ann")
    review(store, "m:2", False, "found a leak", "vera")
    got = {m["version"]: m["review"] for m in models_json(store)["models"]}
    assert got[1]["decision"] == "approved" and got[2]["decision"] == "rejected" and got[3] is None
    assert got[2]["reviewer"] == "vera" and got[2]["comment"] == "found a leak"
    assert [review_text(got[v]) for v in (1, 2, 3)] == ["approved by ann", "rejected by vera", "awaiting review"]


def test_a_challenger_nobody_reviewed_before_the_next_one_is_not_awaiting_review(store, tmp_path):
    """model.review works on the version model.register made last: one that lost `challenger` to a newer version
    unreviewed is asked about no more. It read "awaiting review" for good; it reads "not reviewed (m:3 came after)"
    in `cdl models list`, the models panel (same function) and the model report."""
    from runtime.registry import models_json, review_text

    for _ in range(3):
        mv = store.register_model("m", framework="torch", template="text-classification", dataset_version="v1",
                                  transform="t", metrics={"test_accuracy": 0.9})
        store.set_alias("m", "challenger", mv.version, reason="registered")  # as model.register does
    review(store, "m:1", False, "worse", "ann")
    got = {m["version"]: review_text(m["review"], m["passed_over_by"]) for m in models_json(store)["models"]}
    assert got == {1: "rejected by ann", 2: "not reviewed (m:3 came after)", 3: "awaiting review"}, got
    review(store, "m:3", True, "good", "ann")  # the newest approved: m:2 is still one nobody reviewed
    got = {m["version"]: review_text(m["review"], m["passed_over_by"]) for m in models_json(store)["models"]}
    assert got[2] == "not reviewed (m:3 came after)" and got[3] == "approved by ann", got
    review(store, "m:2", True, "better after all", "vera")  # reviewed late: it says so, as any other
    got = {m["version"]: review_text(m["review"], m["passed_over_by"]) for m in models_json(store)["models"]}
    assert got[2] == "approved by vera", got


def test_approving_a_version_that_failed_the_gate_needs_override_gate(tmp_path):
    """fm:3 failed model.evaluate's gate (0.6638 < 0.8) and `models review --approve` made it the champion over a
    0.9178 one without a word; now refused, naming the gate and the champion, unless --override-gate."""
    from runtime.cli import cli
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    name = ws.config().name
    for acc in (0.92, 0.66):
        ws.store.register_model(name, framework="torch", template="t", dataset_version="v1", transform="t",
                                metrics={"test_accuracy": acc})
    ws.store.update_model(name, 2, evaluation={"gate": {"metric": "test_accuracy", "threshold": 0.8, "value": 0.66,
                                                        "passed": False}})
    runner = CliRunner()
    w = ["-w", str(ws.root), "models", "review"]
    assert runner.invoke(cli, [*w, f"{name}:1", "--approve", "--reviewer", "ann"]).exit_code == 0
    res = runner.invoke(cli, [*w, f"{name}:2", "--approve", "--reviewer", "ann", "--comment", "looks fine"])
    assert res.exit_code == 2, res.output
    assert (f"{name}:2 failed model.evaluate's gate (test_accuracy 0.6600 < threshold 0.8); approving it makes it the "
            f"champion over {name}:1 (test_accuracy 0.9200); --override-gate approves it all the same") in res.output
    assert _champion(ws.store, name) == 1 and len(history_json(ws.store, name)["reviews"]) == 1
    # model.review never asks about it: the listing says why, where it read "awaiting review"
    listed = runner.invoke(cli, ["-w", str(ws.root), "models", "list"]).output.splitlines()
    assert listed[1].endswith("gate failed (test_accuracy 0.6600 < threshold 0.8)"), listed
    # rejecting it needs nothing more
    assert runner.invoke(cli, [*w, f"{name}:2", "--reject", "--reviewer", "ann"]).exit_code == 0
    res = runner.invoke(cli, [*w, f"{name}:2", "--approve", "--reviewer", "ann", "--comment", "threshold too high",
                              "--override-gate", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["champion"] == f"{name}:2"
    assert doc["comment"] == "threshold too high [gate overridden: test_accuracy 0.6600 < threshold 0.8]", doc
    ws.close()
