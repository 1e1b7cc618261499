"""Drift checks on scoring data sent through a real device, retrain proposals, and the loop."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime import monitor
from runtime.devices import collect, deploy
from runtime.jobs import Runner
from runtime.labeling import LabelQueue
from runtime.proposals import proposals


def other_domain_texts(n: int = 300) -> list[str]:
    """Text of another domain, available offline everywhere: the documentation of Python's standard library."""
    import pydoc

    mods = ["json", "os", "re", "pathlib", "collections", "itertools", "functools", "subprocess", "asyncio",
            "threading", "socket", "sqlite3", "zipfile", "argparse", "logging", "unittest", "typing", "decimal",
            "datetime", "email", "http.client", "urllib.request", "xml.etree.ElementTree", "csv", "random"]
    paras: list[str] = []
    for m in mods:
        text = pydoc.render_doc(m, renderer=pydoc.plaintext)
        for block in text.split("\n\n"):
            block = " ".join(block.split())
            if len(block) > 300:
                paras.append(block)
    return paras[:n]


def held_out_texts(ws) -> list[str]:
    from runtime.workspace.dataset import decode_text

    view = ws.dataset()
    seen, out = set(), []
    for r in view.rows:
        if r.split == "test" and r.id not in seen:
            seen.add(r.id)
            out.append(decode_text(view.read_bytes(r))[0])
    return out


def send(agent, ws, texts: list[str], batch: int = 10) -> None:
    import tritonclient.grpc as tc

    c = tc.InferenceServerClient(agent.address, ssl=True, root_certificates=str(ws.root / ".cdl" / "pki" / "ca.crt"))
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        inp = tc.InferInput("text", [len(chunk)], "BYTES")
        inp.set_data_from_numpy(np.array([t.encode() for t in chunk], dtype=object))
        c.infer("ws", [inp])
    c.close()


def records_to_detect(ws, device: str, bundle_id: str, start_seq: int,
                      steps=(10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300)) -> int | None:
    """Smallest number of shifted records (all after start_seq) whose window already shows drift."""
    from runtime.devices import scoring_store

    manifest = monitor.bundle_manifest(ws, bundle_id)
    store = scoring_store(ws)
    with store.connect() as con:
        for n in steps:
            con.execute("CREATE OR REPLACE TEMP TABLE shifted AS SELECT * FROM scoring WHERE device = ? AND seq > ? "
                        "ORDER BY seq LIMIT ?", [device, start_seq, n])
            have = con.execute("SELECT COUNT(*) FROM shifted").fetchall()[0][0]
            if have < n:
                return None
            # check the window made only of shifted records
            res = monitor.check(_Redirect(con), device, bundle_id, manifest, by="count", size=n, min_records=10)
            if res["drifted"]:
                return n
    return None


class _Redirect:
    """Runs monitor.check against the temp table `shifted` instead of the whole scoring table."""

    def __init__(self, con):  # noqa: ANN001
        self.con = con

    def execute(self, sql: str, params=None):  # noqa: ANN001, ANN201
        if sql.startswith("CREATE OR REPLACE TEMP TABLE w AS"):
            return self.con.execute("CREATE OR REPLACE TEMP TABLE w AS SELECT * FROM shifted")
        return self.con.execute(sql, params or [])


def test_a_round_of_checks_says_drift_no_drift_or_no_verdict():
    def c(device: str, drifted: bool = False, tested: bool = True, n: int = 500) -> dict:
        note = {} if tested else {"note": f"{n} record(s) in the window; at least 50 are needed for a check"}
        return {"device": device, "drifted": drifted, "tests": [{"name": "confidence"}] if tested else [],
                "window": {"n": n}, **note}

    assert monitor.verdict([]) == ("no-data", "no scoring data yet")
    assert monitor.verdict([c("a"), c("b")]) == ("no-drift", "no drift on 2 device(s)")
    assert monitor.verdict([c("a", tested=False, n=3)]) == (
        "no-verdict", "no verdict on a (3 record(s) in the window; at least 50 are needed for a check)")
    status, line = monitor.verdict([c("a"), c("b", tested=False, n=7)])
    assert status == "no-drift" and line.startswith("no drift on 1 device(s); no verdict on b (7 record(s)")
    status, line = monitor.verdict([c("a", drifted=True), c("b", tested=False)])
    assert status == "drift" and line.startswith("drift on a; no verdict on b")


def test_in_distribution_raises_no_alarm_and_another_domain_does(bbc_packaged, agent_factory):
    ws = bbc_packaged
    agent = agent_factory(ws, raw_below=0.9)
    res = deploy(ws, "ws:1", "fp32", "dev1")
    texts = held_out_texts(ws)
    assert len(texts) > 400
    send(agent, ws, texts)
    collect(ws)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "monitor", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    check = doc["checks"][0]
    assert set(check) == {"device", "model", "version", "window", "tests", "drifted", "no_known_word"}
    assert check["no_known_word"] == 0
    assert check["device"] == "dev1" and check["model"] == "ws" and check["version"] == "1"
    assert check["window"]["n"] == len(texts) and check["window"]["from"] <= check["window"]["to"]
    names = [t["name"] for t in check["tests"]]
    assert names == ["predicted_class", "confidence", "psi:length", "psi:oov_rate", "psi:frequent_terms"]
    for t in check["tests"]:
        assert set(t) == {"name", "statistic", "p_value", "threshold", "drifted"}
    assert check["drifted"] is False, check["tests"]
    assert ws.store.last_step_run("deploy.monitor").status == "done"
    last_seq = check["window"]["n"]
    # text of another domain is found, and the monitor node turns drifted
    shifted = other_domain_texts(300)
    send(agent, ws, shifted)
    collect(ws)
    n = records_to_detect(ws, "dev1", res["bundle_id"], last_seq)
    print(f"\nrecords needed to detect another domain (BBC text model): {n}")
    assert n is not None and n <= 100
    r = Runner(ws).run(steps=["deploy.monitor"], overrides={"deploy.monitor": {"window": 300}})
    assert r.steps[0].status == "drifted"
    states = {s.id: s.status.value for s in Runner(ws).statuses()}
    assert states["deploy.monitor"] == "drifted"
    drifted = [t["name"] for t in r.steps[0].summary["checks"][0]["tests"] if t["drifted"]]
    assert "psi:oov_rate" in drifted or "psi:frequent_terms" in drifted
    # the same check again, nothing having come in (a loop, a cron'd `cdl monitor`): its verdict stands, and the
    # history keeps one row with the newer time, where every rerun added a copy
    from runtime.devices import scoring_store
    from runtime.domain.events import EventKind
    from runtime.jobs.bus import EventBus

    before = scoring_store(ws).checks("dev1")
    bus, logs = EventBus(), []
    bus.subscribe(lambda ev: logs.append(ev.message) if ev.kind == EventKind.LOG else None)
    again = Runner(ws, bus=bus).run(steps=["deploy.monitor"], overrides={"deploy.monitor": {"window": 300}})
    assert again.steps[0].status == "drifted"
    after = scoring_store(ws).checks("dev1")
    assert len(after) == len(before) and after[-1]["id"] == before[-1]["id"]
    assert after[-1]["time"] > before[-1]["time"] and after[-1]["tests"] == before[-1]["tests"]
    assert any("(nothing new since the last check: its time is updated, no copy recorded)" in m for m in logs), logs
    # a window with too few records says its count once (it read "0 records, 0 record(s) in the window; …")
    logs.clear()
    time.sleep(1.1)
    Runner(ws, bus=bus).run(steps=["deploy.monitor"], overrides={"deploy.monitor": {"window_by": "time", "window": 1,
                                                                                    "collect": False}})
    assert [m for m in logs if m.startswith("dev1 ")] == [
        "dev1 ws:1: no verdict: 0 record(s) in the window; at least 50 are needed for a check"], logs
    # without --json, `cdl monitor` prints the report: each test's figures (it printed the step's line alone)
    plain = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "monitor", "--window", "300",
                            "--no-collect"], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].startswith("dev1  ws:1:fp32  300 record(s), ") and lines[0].endswith(": DRIFT"), lines
    assert lines[1].split() == ["test", "statistic", "p-value", "threshold", "result"], lines
    tests = after[-1]["tests"]
    assert len(lines) == 2 + len(tests), lines
    for line, t in zip(lines[2:], tests, strict=True):
        cells = line.split()
        assert cells[0] == t["name"] and float(cells[1]) == pytest.approx(t["statistic"], rel=1e-3), (line, t)
        assert cells[2] == ("-" if t["p_value"] is None else f"{t['p_value']:.3g}"), (line, t)
        assert float(cells[3]) == pytest.approx(t["threshold"]) and cells[4] == ("drift" if t["drifted"] else "ok")
    # the proposal: lowest confidence first, raw inputs, in the labeling queue
    m = Runner(ws).run(steps=["deploy.maintain"])
    assert m.ok
    (p,) = proposals(ws)
    assert p["device"] == "dev1" and p["version"] == "1" and p["samples"] > 10 and p["unlabeled"] == p["samples"]
    q = LabelQueue(ws, "lena")
    queue = q.rows(f"proposal:{p['id']}")
    assert len(queue) == p["samples"]
    confs = [float(x.source.split("confidence ")[1].split(",")[0]) for x in queue]
    assert confs == sorted(confs)
    first = q.content(queue[0].uid)
    assert isinstance(first, str) and first in shifted
    # what the device answered is each sample's suggestion, in the panel and `labels next` (it was only in the
    # item's source, a tooltip): the label and confidence of the journal, the model that gave them
    for x in queue[:5]:
        said = x.source.split("predicted ")[1].rstrip(")")
        conf = float(x.source.split("confidence ")[1].split(",")[0])
        sug = q.suggestion(x.item_id)
        assert sug is not None and sug["label"] == said and sug["model"] == "ws:1:fp32 on dev1", sug
        assert round(sug["confidence"], 2) == conf
    shown = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "next", "--filter",
                            f"proposal:{p['id']}"], capture_output=True, text=True)
    assert shown.returncode == 0 and "\nsuggested by ws:1:fp32 on dev1: " in shown.stdout, shown
    # a client sending empty strings, or words the model never saw: each got a class and a confidence like an article,
    # and no drift test says so (an empty text's out-of-vocabulary rate is 0): the check counts them
    send(agent, ws, ["", "zzqx qqxw", "   "] * 10)
    r = Runner(ws).run(steps=["deploy.monitor"], overrides={"deploy.monitor": {"window": 40}})
    assert r.steps[0].summary["checks"][0]["no_known_word"] == 30
    assert r.steps[0].message.endswith("; dev1: 30 of 40 text(s) had no word the model knows (75 %): their answers "
                                       "are its guess for an empty text"), r.steps[0].message


def test_the_loop_headless(bbc_packaged, agent_factory):
    ws = bbc_packaged
    agent = agent_factory(ws, raw_below=0.9)
    deploy(ws, "ws:1", "fp32", "dev1")
    texts = other_domain_texts(200)
    # a handful of records is too few to test: the loop says it has no verdict (it used to say "no drift")
    send(agent, ws, texts[:5])
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "loop",
                           "--auto-approve-if-better", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["status"] == "no-verdict", doc
    assert "no verdict on dev1" in doc["reason"] and "at least 50 are needed" in doc["reason"], doc["reason"]
    (mon,) = [x for x in doc["steps"] if x["id"] == "deploy.monitor"]
    assert mon["message"].startswith("no verdict on dev1 (5 record(s)"), mon["message"]
    send(agent, ws, texts[5:])
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "loop",
                           "--auto-approve-if-better", "--json"], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["status"] == "waiting" and "to label" in doc["reason"]
    assert doc["reason"].endswith(f"then run `cdl loop` again (a false alarm: `cdl proposals dismiss "
                                  f"{doc['proposal']['id']}`)"), doc["reason"]
    pid = doc["proposal"]["id"]
    # the proposal's samples alone go to Label Studio (the export held the whole dataset, 300 tasks and more)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "export",
                          str(ws.root / "p.json"), "--filter", f"proposal:{pid}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    tasks = json.loads((ws.root / "p.json").read_text())
    assert len(tasks) == doc["proposal"]["samples"] and all(
        t["data"]["cdl_uid"].startswith(f"proposal:{pid}:") for t in tasks), [t["data"]["cdl_uid"] for t in tasks][:5]
    # each with what the device answered, as a Label Studio prediction (a pre-annotation with its score)
    for t in tasks:
        (pred,) = t["predictions"]
        assert pred["model_version"] == "ws:1:fp32 on dev1" and 0 < pred["score"] <= 1, pred
        assert pred["result"][0]["value"]["choices"][0] in {"business", "entertainment", "politics", "sport", "tech"}
    bad = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "export",
                          str(ws.root / "x.json"), "--filter", "proposal:p9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "retrain proposal 'p9' does not exist" in bad.stderr and not (
        ws.root / "x.json").exists(), bad.stderr
    # labelers work through the queue (these documentation texts are about technology)
    q = LabelQueue(ws, "lena")
    while (item := q.next(f"proposal:{pid}")) is not None:
        q.set_label(item.uid, "tech")
    # the queue empty, `labels next` says what comes next for the proposal
    said = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "next", "--filter",
                           f"proposal:{pid}"], capture_output=True, text=True).stdout.strip()
    assert said == (f"nothing left to label: proposal {pid}'s {doc['proposal']['samples']} sample(s) are labeled; "
                    "`cdl loop` trains on them"), said
    # so does an export of them, which wrote an empty file without a word
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "export",
                          str(ws.root / "p2.json"), "--filter", f"proposal:{pid}"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads((ws.root / "p2.json").read_text()) == [], out.stderr
    assert (f"no item is left under --filter proposal:{pid}: proposal {pid}'s {doc['proposal']['samples']} sample(s) "
            "are labeled; `cdl loop` trains on them") in out.stderr, out.stderr
    versions_before = len(ws.store.versions())
    cfg = ws.config()  # retraining continues from the champion's weights (model.train's init_from)
    cfg.steps["model.train"]["init_from"] = "champion"
    cfg.save()
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "loop",
                           "--auto-approve-if-better", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["status"] == "done"
    from runtime.registry import lineage

    start = lineage(ws.store, doc["candidate"])["init_from"]
    assert start["from"] == "ws:1" and start["terms"]["carried"] > 0 and start["classes"]["new"] == [], start
    versions = ws.store.versions()
    assert len(versions) == versions_before + 1
    added = versions[-1].items - versions[-2].items
    assert added == proposals(ws)[0]["samples"]
    cand = ws.store.resolve_model(doc["candidate"])
    assert cand.version == 2 and cand.dataset_version == versions[-1].id
    rv = ws.store.reviews("ws", 2)[-1]
    assert rv.automatic and rv.reviewer == "cdl-auto"
    if rv.decision == "approved":
        from runtime.devices import DeviceClient

        with DeviceClient(ws, "dev1") as c:
            assert c.health()["active"]["version"] == "2"
        assert "champion" in ws.store.model_version("ws", 2).aliases
    else:
        assert "not better" in doc["reason"]
    assert proposals(ws)[0]["status"] in ("done", "rejected")


def test_the_loop_waits_for_a_review_then_deploys_the_version_it_trained(bbc_packaged, agent_factory):
    """`cdl loop` without --auto-approve-if-better stops for a human review; approved, the next `cdl loop` goes
    on with that version. It used to train again (a version 3, waiting for a review of its own), and after a
    review the deployment ran `--until deploy.package`, which went back over the model pipeline and trained once
    more."""
    from runtime.devices import DeviceClient
    from runtime.loop import run_loop
    from runtime.registry import review

    ws = bbc_packaged
    # the device serves an INT8 variant: the loop's new version goes to it as INT8 too (it used to get deploy.push's
    # configured fp32)
    cfg = ws.config()
    cfg.steps["deploy.compress"]["methods"] = ["dynamic_int8"]
    cfg.save()
    assert Runner(ws).run(steps=["deploy.compress", "deploy.revise", "deploy.package"]).ok
    agent = agent_factory(ws, raw_below=0.9)
    deploy(ws, "ws:1", "dynamic_int8", "dev1")
    send(agent, ws, other_domain_texts(200))
    assert run_loop(ws)["status"] == "waiting"  # the proposal's samples to label
    q = LabelQueue(ws, "lena")
    while (item := q.next(f"proposal:{proposals(ws)[0]['id']}")) is not None:
        q.set_label(item.uid, "tech")
    first = run_loop(ws)
    assert first["status"] == "waiting" and first["candidate"] == "ws:2", first
    assert "ws:2 awaits review (test_accuracy 0." in first["reason"], first["reason"]
    assert " champion ws:1 0." in first["reason"], first["reason"]
    review(ws.store, "ws:2", True, "the documentation texts are tech", "vera")
    second = run_loop(ws)
    assert second["status"] == "done", second
    ran = [(x["id"], x["status"]) for x in second["steps"]]
    assert not [s for s, st in ran if s in ("model.tune", "model.train", "model.register") and st == "done"], ran
    assert ("deploy.package", "done") in ran and ("deploy.push", "done") in ran, ran
    assert [m.version for m in ws.store.model_versions("ws")] == [1, 2]
    assert "champion" in ws.store.model_version("ws", 2).aliases
    with DeviceClient(ws, "dev1") as c:
        active = c.health()["active"]
    assert (active["version"], active["variant"]) == ("2", "dynamic_int8"), active
    assert second["variant"] == "dynamic_int8" and "serves on dev1 (dynamic_int8)" in second["reason"], second
    assert ws.store.deployments("dev1")[-1].variant == "dynamic_int8"
    assert proposals(ws)[0]["status"] == "done"


def _drift_label_and_retrain(ws, agent_factory) -> None:  # noqa: ANN001
    """dev1 serves ws:1 and drifts; `cdl loop` proposes, the proposal's samples are labeled, and the next `cdl loop`
    trains ws:2 and waits for its review."""
    from runtime.loop import run_loop

    agent = agent_factory(ws, raw_below=0.9)
    deploy(ws, "ws:1", "fp32", "dev1")
    send(agent, ws, other_domain_texts(200))
    assert run_loop(ws)["status"] == "waiting"
    q = LabelQueue(ws, "lena")
    while (item := q.next(f"proposal:{proposals(ws)[0]['id']}")) is not None:
        q.set_label(item.uid, "tech")
    assert run_loop(ws)["status"] == "waiting"  # for a review of ws:2


def test_the_loop_after_the_drifted_device_was_removed(bbc_packaged, agent_factory):
    """The device that drifted was unenrolled (`cdl devices remove`) before the new version was approved: the
    loop ended in a traceback (NotFoundError) while choosing the variant to push; it now finishes the retraining
    and says that there is nowhere to push."""
    from runtime.devices import remove
    from runtime.loop import run_loop
    from runtime.registry import review

    ws = bbc_packaged
    _drift_label_and_retrain(ws, agent_factory)
    review(ws.store, "ws:2", True, "fine", "vera")
    remove(ws, "dev1")
    res = run_loop(ws)
    assert res["status"] == "done" and res.code == 0, res
    assert "ws:2 is the champion; dev1, where the drift was, is no longer enrolled, so nothing was pushed" in res["reason"]
    assert not [s for s in res["steps"] if s["id"] == "deploy.push"]
    assert proposals(ws)[0]["status"] == "done"


def test_the_loop_after_the_retrained_version_was_rejected(bbc_packaged, agent_factory):
    """A validator rejects the version the loop trained: the next `cdl loop` closes the proposal as rejected and
    leaves the device on the champion, without training again."""
    from runtime.devices import DeviceClient
    from runtime.loop import run_loop
    from runtime.registry import review

    ws = bbc_packaged
    _drift_label_and_retrain(ws, agent_factory)
    review(ws.store, "ws:2", False, "worse on sport", "vera")
    res = run_loop(ws)
    assert res["status"] == "done" and res.code == 0 and res["review"] == "rejected", res
    assert res["reason"] == "ws:2 was rejected by vera: worse on sport; the devices keep their model", res
    ran = [(s["id"], s["status"]) for s in res["steps"]]
    assert ("model.review", "done") in ran and not [x for x, st in ran if x.startswith(("model.t", "deploy.p"))
                                                    and st == "done"], ran
    assert proposals(ws)[0]["status"] == "rejected"
    assert [m.version for m in ws.store.model_versions("ws")] == [1, 2]
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["version"] == "1"
    # the drift is still there and its window's samples are labeled: the next loop says so and is no failure (it
    # said "failed: drift, but no samples with raw inputs to label", and deploy.maintain "no drift: nothing to
    # propose" after telling the user to raise raw_input_below_confidence)
    again = run_loop(ws)
    assert again["status"] == "nothing-to-label" and again.code == 0, again
    assert "dev1: drift, but the" in again["reason"] and "labeled already (proposal p1, rejected: ws:2 was rejected " \
        "by vera: worse on sport)" in again["reason"] and "`cdl loop --retune`" in again["reason"], again["reason"]
    (mt,) = [s for s in again["steps"] if s["id"] == "deploy.maintain"]
    assert mt["message"] == "drift on dev1, but nothing new to label", mt
    assert len(proposals(ws)) == 1 and [m.version for m in ws.store.model_versions("ws")] == [1, 2]
    # --retune goes around on that data with a new search (the loop stopped there before), and the loop after it
    # goes on with the version it trained once that is reviewed (it does not search again)
    retuned = run_loop(ws, retune=True)
    assert retuned["status"] == "waiting" and retuned["candidate"] == "ws:3", retuned
    assert ("model.tune", "done") in [(s["id"], s["status"]) for s in retuned["steps"]], retuned["steps"]
    assert len(proposals(ws)) == 1 and proposals(ws)[0]["status"] == "open"
    review(ws.store, "ws:3", True, "the new search did it", "vera")
    after = run_loop(ws)
    assert after["status"] == "done" and after["candidate"] == "ws:3", after
    assert not [s for s in after["steps"] if s["id"] in ("model.tune", "model.train") and s["status"] == "done"]
    assert [m.version for m in ws.store.model_versions("ws")] == [1, 2, 3] and proposals(ws)[0]["status"] == "done"
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["version"] == "3"


def test_a_forced_loop_without_drift_retrains_and_deploys_to_the_configured_devices(bbc_packaged, agent_factory):
    """`cdl loop --force` (go around even without drift) failed whenever no proposal was open, as "drift, but no
    samples with raw inputs to label". Now it retrains on the current data, and deploys an approved version to
    deploy.push's devices; with nothing new, it says so."""
    from runtime.devices import DeviceClient
    from runtime.loop import run_loop
    from runtime.registry import review

    ws = bbc_packaged
    agent_factory(ws)
    deploy(ws, "ws:1", "fp32", "dev1")
    res = run_loop(ws, force=True)
    assert res["status"] == "done" and res.code == 0, res
    assert res["reason"].startswith("nothing new: ws:1 is the champion and was trained on the current data"), res
    # new labeled data: the forced loop trains ws:2 on it and waits for its review
    extra = ws.root / "extra.csv"
    with extra.open("w", newline="") as f:
        import csv

        csv.writer(f).writerows([("text", "label"), *((t, "tech") for t in other_domain_texts(30))])
    from runtime.api import add_source

    add_source(ws, extra)
    res = run_loop(ws, force=True)
    assert res["status"] == "waiting" and res["candidate"] == "ws:2", res
    review(ws.store, "ws:2", True, "more data", "vera")
    res = run_loop(ws, force=True)
    assert res["status"] == "done" and res["reason"] == "ws:2 is the champion and serves on dev1", res
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["version"] == "2"
    assert [m.version for m in ws.store.model_versions("ws")] == [1, 2] and proposals(ws) == []


def test_a_forced_loop_with_no_device_enrolled_waits_for_one(bbc_packaged):
    """The approved version had nowhere to go: the loop ended "failed" (exit 1), where deploy.push waits for a
    first device; now the loop waits too (exit 3), and says for what."""
    import csv

    from runtime.api import add_source
    from runtime.loop import run_loop
    from runtime.registry import review

    ws = bbc_packaged
    extra = ws.root / "extra.csv"
    with extra.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *((t, "tech") for t in other_domain_texts(30))])
    add_source(ws, extra)
    assert run_loop(ws, force=True)["status"] == "waiting"  # ws:2's review
    review(ws.store, "ws:2", True, "more data", "vera")
    res = run_loop(ws, force=True)
    assert res["status"] == "waiting" and res.code == 3, res
    assert res["reason"].startswith("deploy.push: ws:2 waits for a device: none is enrolled yet"), res


def test_a_canary_whose_predictions_drift_rolls_back(bbc_packaged, agent_factory):
    """`cdl deploy --canary 1 --check-drift`: besides errors and traffic, the predictions the canary made while
    watched are checked against the new bundle's reference with deploy.monitor's tests. Another domain's texts
    roll it back and leave the rest alone; the test split's texts let the rollout go on."""
    from runtime.devices import DeviceClient, drift_settings, staged_deploy
    from runtime.domain.errors import CdlError

    ws = bbc_packaged
    cfg = ws.config()
    cfg.steps["deploy.compress"]["methods"] = ["dynamic_int8"]
    cfg.save()
    assert Runner(ws).run(steps=["deploy.compress", "deploy.revise", "deploy.package"]).ok
    canary, other = agent_factory(ws, "dev1"), agent_factory(ws, "dev2")
    for d in ("dev1", "dev2"):
        deploy(ws, "ws:1", "fp32", d)

    def active(d: str) -> str:
        with DeviceClient(ws, d) as c:
            return c.health()["active"]["variant"]

    def traffic(texts: list[str]):  # noqa: ANN202 - the canary's users, while it is watched
        return lambda _seconds: send(canary, ws, texts)

    said: list[str] = []
    foreign = other_domain_texts(120)
    with pytest.raises(CdlError, match=rf"canary failed, rolled back; dev2 not touched: dev1: its {len(foreign)} "
                                       r"predictions while watched drifted from the model's reference \(.*psi:"):
        staged_deploy(ws, "ws:1", "dynamic_int8", ["dev1", "dev2"], canary=1, watch_s=1, log=said.append,
                      sleep=traffic(foreign), drift=drift_settings(ws))
    assert active("dev1") == active("dev2") == "fp32"
    # deploy.monitor then checks the bundle dev1 serves, not the rolled-back one whose records are the newest (it
    # found drift there, in a model no longer serving, and proposed to retrain)
    collect(ws, ["dev1"])
    (c,) = monitor.checks(ws, devices=["dev1"], **drift_settings(ws))
    assert c["variant"] == "fp32" and c["window"]["n"] == 0 and not c["drifted"], c
    import random

    mixed = random.Random(0).sample(held_out_texts(ws), 120)  # the test split is in class order: all classes
    done = staged_deploy(ws, "ws:1", "dynamic_int8", ["dev1", "dev2"], canary=1, watch_s=1, log=said.append,
                         sleep=traffic(mixed), drift=drift_settings(ws))
    assert done["canary"]["dev1"] == {"requests": 12, "errors": 0, "drift": False}, done
    assert "dev1: no drift in its 120 predictions while watched" in said, said
    assert active("dev1") == active("dev2") == "dynamic_int8"
    # too few predictions to test: said, and no verdict against the canary
    said.clear()
    staged_deploy(ws, "ws:1", "fp32", ["dev1", "dev2"], canary=1, watch_s=1, log=said.append,
                  sleep=traffic(mixed[:10]), drift=drift_settings(ws))
    assert "dev1: no drift verdict: 10 record(s) in the window; at least 50 are needed for a check" in said, said
    assert active("dev1") == active("dev2") == "fp32"
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1", "--all",
                          "--check-drift"], capture_output=True, text=True)
    assert out.returncode == 2 and "--check-drift checks the canaries: give --canary N" in out.stderr
    del other


@pytest.mark.parametrize("shift", ["inverted", "noisy"])
def test_image_shifts_are_found(tmp_path, agent_factory, shift):
    import tritonclient.grpc as tc

    from runtime.api import add_source
    from runtime.registry import review
    from runtime.workspace import Workspace
    from tests.conftest import make_fashion_subset
    from tests.integration.conftest import fast

    ws = Workspace.init(tmp_path / "fm", "image-classification")
    add_source(ws, make_fashion_subset(tmp_path / "src", 3000, 600), {"class_names": "fashion-mnist"})
    cfg = ws.config()
    fast(cfg, epochs=3)
    cfg.steps["model.evaluate"]["threshold"] = 0.5
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok
    review(ws.store, "fm:1", True, "ok", "tester")
    assert Runner(ws).run(until="deploy.package").ok
    agent = agent_factory(ws)
    res = deploy(ws, "fm:1", "fp32", "dev1")
    view = ws.dataset()
    test = view.images([r for r in view.rows if r.split == "test"])
    client = tc.InferenceServerClient(agent.address, ssl=True, root_certificates=str(ws.root / ".cdl/pki/ca.crt"))

    def push(images: np.ndarray) -> None:
        for i in range(0, len(images), 25):
            b = images[i : i + 25][..., None]
            inp = tc.InferInput("image", list(b.shape), "UINT8")
            inp.set_data_from_numpy(np.ascontiguousarray(b))
            client.infer("fm", [inp])

    push(test)
    collect(ws)
    (check,) = monitor.checks(ws, size=len(test))
    assert not check["drifted"], check["tests"]
    rng = np.random.default_rng(0)
    if shift == "inverted":
        shifted = 255 - test
    else:
        shifted = np.clip(test.astype(np.int16) + rng.normal(0, 60, test.shape), 0, 255).astype(np.uint8)
    push(shifted[:300])
    collect(ws)
    n = records_to_detect(ws, "dev1", res["bundle_id"], len(test))
    print(f"\nrecords needed to detect {shift} images (Fashion-MNIST CNN): {n}")
    assert n is not None and n <= 50
    client.close()
    ws.close()


def test_the_loop_pushes_the_configured_variant_when_the_served_one_was_not_built(bbc_packaged, tmp_path):
    """The variant a device served is kept only where the new version has it; else deploy.push's, with a note.
    An unreachable device is judged by what it said last."""
    from runtime.devices import enroll
    from runtime.devices import variant_for as _variant_for

    ws = bbc_packaged
    enroll(ws, "gone", "127.0.0.1:1", tmp_path / "gone")
    mv = ws.store.model_version("ws", 1)
    assert _variant_for(ws, "gone", mv, "fp32") == ("fp32", "")  # never seen: the configured variant
    ws.store.update_device("gone", last_health={"active": {"name": "ws", "version": "1", "variant": "static_int8"}})
    variant, note = _variant_for(ws, "gone", mv, "fp32")
    assert variant == "fp32"
    assert note == "gone served static_int8, which the deployment pipeline did not build for ws:1 (built: fp32)"
    ws.store.update_device("gone", last_health={"active": {"name": "ws", "version": "1", "variant": "fp32"}})
    assert _variant_for(ws, "gone", mv, "dynamic_int8") == ("fp32", "")


def test_a_check_without_a_verdict_says_so_in_the_step_state(text_ws, monkeypatch):
    """deploy.monitor after a check with too few records read 'done' with nothing more, in `cdl status` and the
    node's header, as if the device had been found free of drift. Only the monitoring panel said 'no verdict'."""
    from runtime.jobs.runner import _undecided

    undecided = {"device": "dev1", "drifted": False, "tests": [], "window": {"n": 5},
                 "note": "5 record(s) in the window; at least 50 are needed for a check"}
    tested = {"device": "dev2", "drifted": False, "tests": [{"name": "confidence", "drifted": False}],
              "window": {"n": 500}}
    assert _undecided({"checks": [undecided]}) == ("no verdict on dev1 (5 record(s) in the window; at least 50 are "
                                                   "needed for a check)")
    assert _undecided({"checks": [tested, undecided]}).startswith("no drift on 1 device(s); no verdict on dev1")
    assert _undecided({"checks": [tested]}) == "" and _undecided({}) == "" and _undecided(None) == ""
    # through the runner: every step done on unchanged inputs, the last check without a verdict
    monkeypatch.setattr(Runner, "input_fp", lambda self, cfg, step, params, done: "same")
    from runtime.steps import get_step

    for step in text_ws.config().order():  # nor does anything they made need them again (this workspace has no data)
        monkeypatch.setattr(type(get_step(step)), "unmet", lambda self, ws: "")
    store = text_ws.store
    for step in text_ws.config().order():
        run = store.start_step_run(step, None, "same")
        store.finish_step_run(run, "done", output_fp=step,
                              summary={"checks": [undecided]} if step == "deploy.monitor" else {})
    states = {s.id: s for s in Runner(text_ws).statuses()}
    assert states["deploy.monitor"].status.value == "done"
    assert states["deploy.monitor"].reason.startswith("no verdict on dev1 (5 record(s)"), states["deploy.monitor"]
    assert states["deploy.maintain"].reason == ""


def test_drift_on_a_device_that_keeps_no_raw_inputs_says_what_to_change(bbc_packaged, agent_factory):
    """A device that kept no raw input (raw_input_below_confidence 0): the loop fails naming the setting and the
    command that changes it, and deploy.maintain does not say "no drift"."""
    from runtime.loop import run_loop

    ws = bbc_packaged
    agent = agent_factory(ws, raw_below=0.0)
    deploy(ws, "ws:1", "fp32", "dev1")
    send(agent, ws, other_domain_texts(200))
    res = run_loop(ws)
    assert res["status"] == "failed" and res.code == 1, res
    assert res["reason"].startswith("dev1: drift, but the device kept no raw input in this window"), res["reason"]
    # the device's own address, so that the command runs as printed (it said HOST:PORT, to be looked up)
    assert f"`cdl devices enroll dev1 --address {agent.address} --replace --raw-below 0.9`" in res["reason"], \
        res["reason"]
    (mt,) = [s for s in res["steps"] if s["id"] == "deploy.maintain"]
    assert mt["message"] == "drift on dev1, but nothing new to label" and proposals(ws) == [], mt


def test_drift_on_texts_the_dataset_holds_already_is_nothing_to_label(bbc_packaged, agent_factory):
    """A device that scores the dataset's own texts, of one class only (the predicted classes drift): every raw
    input it kept is labeled already, in the dataset, so nothing is proposed and the loop says so; it failed as
    "drift, but no samples with raw inputs to label"."""
    from runtime.loop import run_loop
    from runtime.workspace.dataset import decode_text

    ws = bbc_packaged
    agent = agent_factory(ws, raw_below=1.01)  # every raw input kept
    deploy(ws, "ws:1", "fp32", "dev1")
    view = ws.dataset()
    sport = list(dict.fromkeys(decode_text(view.read_bytes(r))[0] for r in view.rows if r.label == "sport"))
    send(agent, ws, sport[:80])
    res = run_loop(ws)
    assert res["status"] == "nothing-to-label" and res.code == 0, res
    assert "dev1: drift, but the " in res["reason"] and "labeled already: nothing new to label" in res["reason"]
    assert "(proposal" not in res["reason"] and proposals(ws) == [], res["reason"]


def test_a_proposal_smaller_than_its_window_says_why(bbc_packaged, agent_factory):
    """302 drifted records made a proposal of 3 samples, with no word on why: the device keeps the raw input of its
    less confident predictions only. deploy.maintain's line now says how many it kept, under which setting."""
    from runtime.domain.events import EventKind
    from runtime.jobs import EventBus

    ws = bbc_packaged
    agent = agent_factory(ws, raw_below=0.9)
    deploy(ws, "ws:1", "fp32", "dev1")
    texts = held_out_texts(ws)[:100] + other_domain_texts(200)  # the BBC's own: confident, not kept
    send(agent, ws, texts)
    bus = EventBus()
    logs: list[str] = []
    bus.subscribe(lambda e: logs.append(e.message) if e.kind == EventKind.LOG and e.step == "deploy.maintain" else None)
    res = Runner(ws, bus=bus).run(steps=["deploy.monitor", "deploy.maintain"])
    assert res.steps[0].summary["drifted"] == 1, res.steps[0].message
    (p,) = proposals(ws)
    n = p["window"]["n"]
    assert n == len(texts) and 0 < p["samples"] <= p["raw_kept"] < n, (n, len(texts), p)
    (line,) = [m for m in logs if m.startswith("dev1: proposal p1:")]
    assert line.endswith(f"sample(s) to label (`cdl labels next --filter proposal:p1`); the device kept the raw input "
                         f"of {p['raw_kept']} of the window's {n} records, those of predictions less confident than "
                         "raw_input_below_confidence in its agent.json (0.9); `cdl devices enroll dev1 --address "
                         f"{ws.store.device('dev1').address} --replace --raw-below 0.9` keeps more"), line


def test_a_dismissed_proposal_leaves_the_queue_and_the_loop_goes_on(bbc_packaged, agent_factory):
    """An open proposal held `cdl loop` at "waiting" until every sample was labeled: a false alarm had no way out.
    `cdl proposals dismiss` ends it; its unlabeled samples leave the labeling queue (those labeled stay), the same
    window proposes them no more, and new scoring data is proposed as before."""
    from runtime.loop import run_loop

    ws = bbc_packaged
    agent = agent_factory(ws, raw_below=0.9)
    deploy(ws, "ws:1", "fp32", "dev1")
    texts = other_domain_texts(300)  # 91 paragraphs
    send(agent, ws, texts[:60])
    assert run_loop(ws)["status"] == "waiting"
    (p,) = proposals(ws)
    q = LabelQueue(ws, "lena")
    first = q.next(f"proposal:{p['id']}")
    q.set_label(first.uid, "tech")  # one labeled before the dismissal: kept
    items_before = len(ws.store.items())

    def cdl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), *args], capture_output=True,
                              text=True)

    r = cdl("proposals", "dismiss", p["id"], "--note", "documentation pages, not news")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (f"{p['id']} dismissed: {p['samples'] - 1} unlabeled sample(s) left the labeling queue, "
                                "1 labeled kept; they are not proposed again (new scoring data is)"), r.stdout
    (d,) = proposals(ws)
    assert d["status"] == "dismissed" and d["note"] == "documentation pages, not news" and d["samples"] == 1, d
    assert len(ws.store.items()) == items_before - (p["samples"] - 1)
    assert LabelQueue(ws, "lena").next(f"proposal:{p['id']}") is None
    assert [i.uid for i in ws.store.items() if i.uid.startswith(f"proposal:{p['id']}:")] == [first.uid]
    assert cdl("labels", "next", "--filter", f"proposal:{p['id']}").stdout.strip() == \
        f"nothing left to label: proposal {p['id']} is dismissed"
    listed = cdl("proposals", "list").stdout
    assert f"{p['id']}    dismissed " in listed and listed.rstrip().endswith("(documentation pages, not news)"), listed
    again = cdl("proposals", "dismiss", p["id"])
    assert again.returncode == 2 and f"proposal {p['id']} is dismissed already" in again.stderr, again.stderr
    # the loop no longer waits for them, and the same window proposes nothing
    res = run_loop(ws)
    assert res["status"] == "nothing-to-label", res
    assert f"were dismissed with proposal {p['id']}: documentation pages, not news" in res["reason"], res["reason"]
    assert len(proposals(ws)) == 1
    # new scoring data is proposed as before
    send(agent, ws, texts[60:])
    res = run_loop(ws)
    assert res["status"] == "waiting" and len(proposals(ws)) == 2, res
    dismissed = set(ws.store.get_state(f"proposal:{p['id']}:dismissed"))
    new = proposals(ws)[1]
    new_ids = {i.id for i in ws.store.items_by_uid(ws.store.get_state(f"proposal:{new['id']}:items"))}
    assert new_ids and not new_ids & dismissed, new
