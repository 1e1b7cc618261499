"""The data pipeline on the real BBC archive, with real DVC and a real SQLite registry."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from runtime.api import add_source
from runtime.datasets import checkout, diff_json, report_json, versions_json
from runtime.domain.errors import CdlError, WorkspaceError
from runtime.domain.steps import StepStatus
from runtime.jobs import Runner
from runtime.steps.data import assign_splits
from tests.conftest import make_bbc_subset


def _status(ws) -> dict[str, str]:
    """Statuses of the data pipeline's steps."""
    return {s.id: s.status.value for s in Runner(ws).statuses() if s.id.startswith("data.")}


def test_bbc_full_import(bbc_ws):
    ws = bbc_ws
    rows = ws.dataset().rows
    assert len(rows) == 2225
    classes = {r.label for r in rows}
    assert classes == {"business", "entertainment", "politics", "sport", "tech"}
    counts = versions_json(ws)["versions"][-1]["classes"]
    assert counts == {"business": 510, "entertainment": 386, "politics": 417, "sport": 511, "tech": 401}
    assert len({r.id for r in rows}) == 2127  # 98 exact duplicates share a content id


def test_bbc_invalid_utf8_is_cleaned_and_recorded(bbc_ws):
    report = report_json(bbc_ws)
    cleaned = [c for c in report["cleaned"] if c["source"].endswith("sport/199.txt")]
    assert len(cleaned) == 1
    assert "replace" in cleaned[0]["action"] and "0xa3" in cleaned[0]["action"]
    # the item is kept (cleaned, not quarantined) and its text has the replacement character
    assert not any(q["source"].endswith("sport/199.txt") for q in report["quarantined"])
    from runtime.labeling import LabelQueue

    row = next(r for r in bbc_ws.dataset().rows if r.source.endswith("sport/199.txt"))
    assert "\ufffd" in LabelQueue(bbc_ws).content(row.uid)


def test_bbc_split_has_no_duplicate_across_sides(bbc_ws):
    sides = defaultdict(set)
    for r in bbc_ws.dataset().rows:
        sides[r.id].add(r.split)
    assert all(len(s) == 1 for s in sides.values())
    v = versions_json(bbc_ws)["versions"][-1]
    assert v["splits"]["test"] == pytest.approx(2225 * 0.2, abs=10)
    # stratified: every class is about 20 % test
    for cls, n in v["split_classes"]["test"].items():
        assert n == pytest.approx(v["classes"][cls] * 0.2, abs=4), cls


def test_same_seed_same_split_other_seed_other_split(bbc_ws):
    items = bbc_ws.store.items()
    a, _ = assign_splits(items, 0.2, 42)
    b, _ = assign_splits(list(reversed(items)), 0.2, 42)
    c, _ = assign_splits(items, 0.2, 7)
    assert a == b
    assert a != c
    stored = {i.uid: i.split for i in items}
    assert stored == a


def test_split_stable_when_data_grows(bbc_ws):
    items = bbc_ws.store.items()
    a, _ = assign_splits(items[:1500], 0.2, 42)
    b, _ = assign_splits(items, 0.2, 42)
    moved_to_train = [u for u in a if a[u] == "test" and b[u] == "train"]
    assert len(moved_to_train) <= 5


def test_items_added_later_never_move_old_items_between_train_and_test(small_bbc, tmp_path):
    """Five more real articles a class, imported after the first split: every old item keeps its side, the new
    ones fill each class's test share. They took test places in the seeded order and pushed old test items into
    train (`cdl data diff v1 v2` counted 2 of 2225 moved for 3 articles added), or, where the share grew, old train
    items into test, on which the champion, trained on them, was then compared with its challenger."""
    from tests.conftest import BBC_ZIP

    ws = small_bbc
    before = {i.uid: i.split for i in ws.store.items()}
    taken: dict[str, int] = defaultdict(int)
    with zipfile.ZipFile(BBC_ZIP) as src, zipfile.ZipFile(tmp_path / "more.zip", "w") as out:
        for info in src.infolist():
            cls = info.filename.split("/")[-2]
            if info.is_dir() or not info.filename.endswith(".txt") or int(Path(info.filename).stem) < 200:
                continue
            if taken[cls] < 5:
                taken[cls] += 1
                out.writestr(f"more/{cls}/{Path(info.filename).name}", src.read(info))
    assert add_source(ws, tmp_path / "more.zip").ok
    result = Runner(ws).run(until="data.version")
    assert result.ok, result.steps
    split = next(o for o in result.steps if o.step == "data.split")
    assert f"; 25 new item(s) placed, the other {len(before)} kept their side" in split.message, split.message
    after = {i.uid: i for i in ws.store.items()}
    moved = [u for u, side in before.items() if after[u].split != side]
    assert moved == []
    for cls in taken:  # each class still holds about its share of test items
        mine = [i for i in after.values() if i.source_label == cls]
        assert abs(sum(i.split == "test" for i in mine) - round(len(mine) * 0.2)) <= 1, cls
    assert diff_json(ws, "v1", "v2")["split_changes"] == 0
    # another seed is another split, and says so
    again = Runner(ws).run(steps=["data.split"], overrides={"data.split": {"seed": 7}})
    assert again.ok and "split afresh: seed 42 → 7" in again.steps[0].message, again.steps[0].message
    assert any(i.split != after[i.uid].split for i in ws.store.items())


def test_rerun_unchanged_makes_no_new_version_and_skips(bbc_ws):
    before = len(versions_json(bbc_ws)["versions"])
    result = Runner(bbc_ws).run(until="data.label")
    assert result.ok
    assert all(o.status == "skipped" for o in result.steps)
    forced = Runner(bbc_ws).run(steps=["data.version"])
    assert forced.ok and forced.steps[0].summary["new"] is False
    assert len(versions_json(bbc_ws)["versions"]) == before


def test_status_and_stale_detection(tmp_path, text_ws):
    ws = text_ws
    src = make_bbc_subset(tmp_path / "bbc.zip", per_class=10)
    assert set(_status(ws).values()) == {"never-run"}
    add_source(ws, src)
    assert _status(ws)["data.import"] == "done"
    assert Runner(ws).run(until="data.label").ok
    assert set(_status(ws).values()) == {"done"}
    # a parameter change makes that step and everything after it stale
    cfg = ws.config()
    cfg.set_param("data.validate", "min_length", 50000)
    cfg.save()
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["data.validate"].status == StepStatus.STALE
    # it names the parameter, what the run used and what cdl.yaml says now (it used to say only "parameters")
    was = ws.store.last_step_run("data.validate").params["min_length"]
    assert states["data.validate"].reason == f"parameters changed since it ran: min_length {was} → 50000"
    assert states["data.label"].status == StepStatus.STALE
    assert states["data.version"].status == StepStatus.DONE
    # data.validate run alone: the step after it names whose output changed (it said "upstream outputs changed")
    assert Runner(ws).run(steps=["data.validate"]).ok
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["data.label"].reason == "data.validate's output changed since it ran", states["data.label"].reason
    # re-running brings them back, and the new rule quarantines every article
    assert Runner(ws).run(until="data.label").ok
    assert set(_status(ws).values()) == {"done"}
    assert {q["rule"] for q in report_json(ws)["quarantined"]} == {"min_length"}
    # a new label makes ingest (and what follows) stale: it belongs in the next version
    from runtime.labeling import LabelQueue

    q = LabelQueue(ws, "ann")
    item = ws.dataset().rows[0]
    q.set_label(item.uid, "tech")
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["data.ingest"].status == StepStatus.STALE
    assert states["data.label"].status == StepStatus.STALE
    # each reason names what changed (it said "inputs changed since it ran" for all of these)
    assert states["data.ingest"].reason == "labels changed since it ran"
    # a changed source file makes the import stale
    src.write_bytes(make_bbc_subset(tmp_path / "bbc2.zip", per_class=11).read_bytes())
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["data.import"].status == StepStatus.STALE
    assert states["data.import"].reason == "source files changed since it ran"


def test_a_parameter_added_by_an_upgrade_reruns_nothing_until_it_is_set(tmp_path, text_ws, monkeypatch):
    """A release that adds a parameter to a step (deploy.push gained five) made every workspace's step stale at
    once, "parameters changed since it ran: canary unset → 0; ...", and the next `cdl run` ran it again (pushing
    to devices). A parameter the run did not record, held at its default, is no change; set to anything else,
    it is."""
    import dataclasses

    from runtime.domain.steps import ParamSpec
    from runtime.steps import get_step

    ws = text_ws
    add_source(ws, make_bbc_subset(tmp_path / "bbc.zip", per_class=6))
    assert Runner(ws).run(until="data.label").ok
    impl = get_step("data.validate")
    added = ParamSpec("max_ratio_upper", "float", 0.5, "a parameter from a later release")
    monkeypatch.setattr(type(impl), "spec", dataclasses.replace(impl.spec, params=(*impl.spec.params, added)))
    assert "max_ratio_upper" in ws.config().params("data.validate")
    assert set(_status(ws).values()) == {"done"}
    result = Runner(ws).run(until="data.label")
    assert result.ok and {o.status for o in result.steps} == {"skipped"}
    from runtime.jobs.runner import step_history

    # set to its default in cdl.yaml, it is still no change; set to another value, it is
    cfg = ws.config()
    cfg.set_param("data.validate", "max_ratio_upper", 0.5)
    cfg.save()
    assert set(_status(ws).values()) == {"done"}
    cfg.set_param("data.validate", "max_ratio_upper", 0.25)
    cfg.save()
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["data.validate"].status == StepStatus.STALE
    assert states["data.validate"].reason == "parameters changed since it ran: max_ratio_upper unset → 0.25"
    result = Runner(ws).run(until="data.label")
    assert [o.step for o in result.steps if o.status == "done"] == ["data.validate", "data.label"]
    history = step_history(ws, "data.validate")["runs"]
    assert history[0]["changed"] == "max_ratio_upper unset → 0.25"
    # the older run's parameters used again (the runs dialog's "Use its parameters"): it ran as the default does
    from runtime.params import use_run_params

    assert "max_ratio_upper" not in history[1]["params"]
    assert use_run_params(ws, "data.validate", history[1]["params"])["changed"] == {"max_ratio_upper": [0.25, 0.5]}
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["data.validate"].reason == "parameters changed since it ran: max_ratio_upper 0.25 → 0.5"


def test_run_set_says_it_is_for_this_run_only_and_save_keeps_it(tmp_path, text_ws):
    """`cdl run --set` ran once with the value and said nothing; the next plain run silently ran the step again
    with cdl.yaml's (and model.train would register another model). Now it says so, and `--save` keeps the
    values in cdl.yaml when the run succeeds, so that nothing is stale afterwards."""
    ws = text_ws
    add_source(ws, make_bbc_subset(tmp_path / "bbc.zip", per_class=6))
    assert Runner(ws).run(until="data.label").ok
    was = ws.config().params("data.validate")["min_length"]

    def cdl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), *args], capture_output=True,
                              text=True)

    once = cdl("run", "--until", "data.label", "--set", f"data.validate.min_length={was + 1}")
    assert once.returncode == 0, once.stderr[-2000:]
    assert (f"--set was for this run only: cdl.yaml still says data.validate.min_length {was} (this run {was + 1}), "
            "so the next `cdl run` runs again what ran with them (data.validate); --save keeps them in cdl.yaml"
            ) in once.stderr, once.stderr[-2000:]
    assert ws.config().params("data.validate")["min_length"] == was
    assert _status(ws)["data.validate"] == "stale"
    kept = cdl("run", "--until", "data.label", "--set", f"data.validate.min_length={was + 2}", "--save")
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert re.search(rf"saved in cdl.yaml and committed \([0-9a-f]{{10}}\): data.validate.min_length {was} → {was + 2}",
                     kept.stderr), kept.stderr[-2000:]
    assert ws.config().params("data.validate")["min_length"] == was + 2
    assert set(_status(ws).values()) == {"done"}
    # a run that fails saves nothing; --save alone is an input error
    failed = cdl("run", "data.import", "--set", 'data.import.sources=["gone.zip"]', "--save")
    assert failed.returncode == 1 and "not saved in cdl.yaml: the run did not succeed (data.import failed)" in failed.stderr, \
        failed.stderr[-2000:]
    assert ws.config().params("data.import")["sources"] != ["gone.zip"]
    # a run that fails after the steps with the values succeeded keeps theirs (data.validate's hint, `--set
    # data.import.relabel=… --save`, was lost to model.evaluate's gate), not those of the step that failed
    later = cdl("run", "--until", "model.preprocess", "--set", f"data.validate.min_length={was + 3}",
                "--set", "model.preprocess.min_df=100000", "--save")
    assert later.returncode == 1, later.stderr[-2000:]
    assert re.search(rf"saved in cdl.yaml and committed \([0-9a-f]{{10}}\): data.validate.min_length {was + 2} → "
                     rf"{was + 3}, for data.validate, which ran with them and succeeded \(model.preprocess failed "
                     r"after\); not saved: cdl.yaml still says model.preprocess.min_df 2 \(this run 100000\)",
                     later.stderr), later.stderr[-2000:]
    assert ws.config().params("data.validate")["min_length"] == was + 3
    assert ws.config().params("model.preprocess")["min_df"] == 2
    assert _status(ws)["data.validate"] == "done"
    alone = cdl("run", "data.validate", "--save")
    assert alone.returncode == 2 and "--save keeps the --set values in cdl.yaml" in alone.stderr
    # a value for a step the run does not run did nothing, without a word: refused before anything runs
    runs = len(ws.store.step_runs("data.validate"))
    idle = cdl("run", "--until", "data.validate", "--set", "model.train.lr=0.1")
    assert idle.returncode == 2, idle.stderr
    assert "--set model.train.lr: model.train is not in this run (it runs data.import to data.validate, 6 steps): " \
        "run --until model.train, or drop the value" in idle.stderr, idle.stderr
    one = cdl("run", "data.validate", "--set", "model.train.lr=0.1")
    assert one.returncode == 2 and "model.train is not in this run (it runs data.validate)" in one.stderr
    assert len(ws.store.step_runs("data.validate")) == runs


def test_a_refused_import_or_a_failed_one_off_run_leaves_the_step_done(tmp_path, text_ws):
    """`cdl data import` of a bad file is refused and leaves nothing behind, but its failed run was the step's last:
    data.import showed "failed" for good (its error naming a file cdl.yaml does not have), every later step
    "upstream data.import is failed", while `cdl run` said data.import was up to date. A failed run with inputs
    cdl.yaml does not give (the refused source, a `--set` run) leaves the step's done run standing, and says
    so; a failure with cdl.yaml's own inputs is still the step's state."""
    from runtime.domain.errors import DataImportError

    ws = text_ws
    src = make_bbc_subset(tmp_path / "bbc.zip", per_class=6)
    add_source(ws, src)
    assert Runner(ws).run(until="data.label").ok
    bad = tmp_path / "bad.csv"
    bad.write_text('text,label\nhello world, this is fine,a\n"unterminated,b\n')
    with pytest.raises(DataImportError, match="bad.csv: line"):
        add_source(ws, bad)
    assert ws.store.last_step_run("data.import").status == "failed"
    states = {s.id: s for s in Runner(ws).statuses() if s.id.startswith("data.")}
    assert {s.status.value for s in states.values()} == {"done"}, {k: (s.status, s.reason) for k, s in states.items()}
    assert states["data.import"].reason.startswith("a later run with other inputs than cdl.yaml gives failed: ")
    assert "bad.csv: line 2: 3 fields, the header has 2" in states["data.import"].reason
    result = Runner(ws).run(until="data.label")
    assert result.ok and {o.status for o in result.steps} == {"skipped"}
    # a failed one-off run (other parameters) too
    res = Runner(ws).run(steps=["data.import"], overrides={"data.import": {"sources": ["gone.zip"]}})
    assert not res.ok, res
    assert {s.status.value for s in Runner(ws).statuses() if s.id.startswith("data.")} == {"done"}
    # a long error (an Excel CSV's encoding advice) was cut at 200 characters mid-word, without a mark: the studio's
    # header read "…it reads as cp1252 (Windows, Western European: what" and stopped
    excel = tmp_path / "excel.csv"
    excel.write_bytes("text;label\nLe café coûte 3 € à Zürich;business\n".encode("cp1252"))
    with pytest.raises(DataImportError, match="cp1252"):
        add_source(ws, excel)
    reason = next(s for s in Runner(ws).statuses() if s.id == "data.import").reason
    error = ws.store.last_step_run("data.import").error.split("\n", 1)[0]
    assert len(error) > 240 and reason.endswith("…") and len(reason) < 320, reason
    shown = reason.removeprefix("a later run with other inputs than cdl.yaml gives failed: ")[:-1]
    assert error.startswith(shown) and error[len(shown)] in " ,;:(", (shown, error)  # cut between words
    # with cdl.yaml's own inputs, a failure is the step's state: the source file overwritten with what is no zip
    src.write_bytes(b"not a zip archive")
    assert not Runner(ws).run(steps=["data.import"]).ok
    state = next(s for s in Runner(ws).statuses() if s.id == "data.import")
    assert state.status == StepStatus.FAILED and "bbc.zip" in state.reason, state.reason
    split = next(s for s in Runner(ws).statuses() if s.id == "data.split")
    assert split.reason == "upstream data.import failed", split.reason  # it said "is failed"


def test_a_step_that_never_ran_because_an_upstream_one_failed_says_which(tmp_path, text_ws):
    """A first `cdl run` that failed at data.import left every later step "never run" with no reason, as if it
    only waited for a first run. Each now names the failed step it waits on (cdl status, the flowchart)."""
    ws = text_ws
    src = tmp_path / "news.zip"
    src.write_bytes(b"not a zip archive")
    cfg = ws.config()
    cfg.set_param("data.import", "sources", [str(src)])
    cfg.save()
    assert not Runner(ws).run(until="data.label").ok
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["data.import"].status == StepStatus.FAILED
    for step in ("data.split", "data.label", "model.train"):
        assert states[step].status == StepStatus.NEVER_RUN
        assert states[step].reason == "upstream data.import failed", (step, states[step].reason)
    shown = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "status"], capture_output=True,
                           text=True)
    line = next(x for x in shown.stdout.splitlines() if x.startswith("data.split"))
    assert "never-run" in line and "(upstream data.import failed)" in line, shown.stdout


def test_upstream_reasons_give_each_step_its_own_status():
    """model.train's upstream model.preprocess stale and model.tune failed read "model.preprocess, model.tune is
    stale": the first one's status stood for all."""
    from runtime.jobs.runner import _upstream_reason

    assert _upstream_reason([("model.preprocess", StepStatus.STALE), ("model.tune", StepStatus.FAILED)]) == \
        "upstream model.preprocess is stale; model.tune failed"
    assert _upstream_reason([("a.b", StepStatus.STALE), ("c.d", StepStatus.STALE)]) == "upstream a.b, c.d are stale"
    assert _upstream_reason([("a.b", StepStatus.NEVER_RUN)]) == "upstream a.b has never run"


def test_a_source_that_moved_or_was_replaced_by_one_of_its_name(tmp_path, text_ws):
    """A source file moved (its path changed in cdl.yaml) failed with a raw IntegrityError: its items came back
    with the uids the old source's items still held. Now the old source goes in the same transaction; unchanged
    items keep their split (data.split, seeing the same item set, does not run again), and a moved file of the
    same content makes no new dataset version."""
    import shutil

    from runtime.labeling import LabelQueue

    ws = text_ws
    first = tmp_path / "a" / "news.zip"
    first.parent.mkdir()
    make_bbc_subset(first, per_class=10)
    add_source(ws, first)
    assert Runner(ws).run(until="data.label").ok
    row = ws.dataset().rows[0]
    LabelQueue(ws, "ann").set_label(row.uid, "tech" if row.label != "tech" else "sport")  # a person's label
    assert Runner(ws).run(until="data.label").ok
    versions = [v["id"] for v in versions_json(ws)["versions"]]
    items = {i.uid: (i.id, i.split) for i in ws.store.items()}
    moved = tmp_path / "b" / "news.zip"
    moved.parent.mkdir()
    shutil.move(first, moved)
    cfg = ws.config()
    cfg.set_param("data.import", "sources", [str(moved)])
    cfg.save()
    said: list[str] = []
    from runtime.jobs.bus import EventBus

    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message))
    res = Runner(ws, bus=bus).run(until="data.label")
    assert res.ok, [(o.step, o.error) for o in res.steps if o.error]
    assert f"{first}: moved to {moved} (the same content)" in said
    assert [s.name for s in ws.store.sources()] == [str(moved)]
    assert {i.uid: (i.id, i.split) for i in ws.store.items()} == items
    assert [v["id"] for v in versions_json(ws)["versions"]] == versions  # the same data: no new version
    assert LabelQueue(ws, "ann").rows("all")[0] and ws.dataset().row(row.uid).label != row.label  # the label stays
    # another file of the same name in its place: its items replace the old ones, in one transaction
    other = tmp_path / "c" / "news.zip"
    other.parent.mkdir()
    make_bbc_subset(other, per_class=12)
    cfg = ws.config()
    cfg.set_param("data.import", "sources", [str(other)])
    cfg.save()
    said.clear()
    res = Runner(ws, bus=bus).run(until="data.label")
    assert res.ok, [(o.step, o.error) for o in res.steps if o.error]
    assert f"{moved}: replaced by {other}" in said
    assert [s.name for s in ws.store.sources()] == [str(other)] and len(ws.store.items()) > len(items)
    assert len(versions_json(ws)["versions"]) == len(versions) + 1


def test_changed_input_new_version_diff_and_checkout(tmp_path, text_ws):
    ws = text_ws
    src = tmp_path / "news.zip"
    make_bbc_subset(src, per_class=20)
    add_source(ws, src)
    assert Runner(ws).run(until="data.label").ok
    v1 = versions_json(ws)["versions"][-1]
    # a changed input: 2 articles more per class, one article edited, one relabeled by a labeler
    with zipfile.ZipFile(src) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        first = names[0]
        edited = zf.read(first) + b"\nAn added paragraph.\n"
    make_bbc_subset(src, per_class=22)
    tmp = tmp_path / "edit.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for n in zin.namelist():
            zout.writestr(n, edited if n == first else zin.read(n))
    tmp.replace(src)
    from runtime.labeling import LabelQueue

    relabel = next(r for r in ws.dataset().rows if r.label == "tech" and r.uid.endswith("tech/003.txt"))
    LabelQueue(ws, "ann").set_label(relabel.uid, "business")
    assert Runner(ws).run(until="data.label").ok
    versions = versions_json(ws)["versions"]
    assert len(versions) == 2
    v2 = versions[-1]
    assert v2["items"] == v1["items"] + 10
    assert v2["dvc_hash"] != v1["dvc_hash"] and v2["git_commit"] != v1["git_commit"]
    d = diff_json(ws, "v1", "v2")
    assert d["added"] == 10 and d["removed"] == 0 and d["changed"] == 1 and d["label_changes"] == 1
    assert d["classes_after"]["business"] == d["classes_before"]["business"] + 3
    assert d["classes_after"]["tech"] == d["classes_before"]["tech"] + 1
    assert sum(d["splits_after"]["test"].values()) >= sum(d["splits_before"]["test"].values())
    # check out v1 again: data/dataset has its items, and back to v2
    out = checkout(ws, "v1")
    assert out["items"] == v1["items"] and len(ws.dataset().rows) == v1["items"]
    assert ws.current_version() == "v1"
    # the queue serves v2's added items as imported since; a second queue (the panel makes one per label) does not
    # compare the 70 000 uids again (0.35 s each) while nothing changed
    q = LabelQueue(ws, "ann")
    added = {r.uid for r in q._new_rows()}
    assert len(added) == 10 and not any(ws.dataset().has(u) for u in added), added
    store, calls = ws.store, []
    every = store.item_uids
    store.item_uids = lambda: calls.append(1) or every()
    assert {r.uid for r in LabelQueue(ws, "ann")._new_rows()} == added and not calls
    del store.item_uids
    assert checkout(ws, "v2")["items"] == v2["items"]
    # back at the version data.ingest laid out last: its index is a new file with the bytes ingest wrote (as in a
    # workspace copied or restored), known by their hash: the uids are not compared (0.4-0.5 s at 70 000 items)
    calls.clear()
    store.item_uids = lambda: calls.append(1) or every()
    assert not LabelQueue(ws, "ann")._new_rows() and not calls
    del store.item_uids
    import shutil

    from runtime.api import open_workspace

    shutil.copytree(ws.root, tmp_path / "copy", symlinks=True)  # new inodes; copytree keeps the mtimes
    copy = open_workspace(tmp_path / "copy")
    try:
        every = copy.store.item_uids
        copy.store.item_uids = lambda: calls.append(1) or every()
        index = copy.dataset_dir / "index.jsonl"
        import runtime.labeling as labeling_mod

        hashed, same = [], labeling_mod._same_index
        labeling_mod._same_index = lambda view, sha: hashed.append(1) or same(view, sha)
        try:
            assert not LabelQueue(copy, "ann")._new_rows() and not calls
            assert not LabelQueue(copy, "ann")._new_rows() and hashed == [1]  # the next queue (one per label) too
        finally:
            labeling_mod._same_index = same
        index.write_bytes(index.read_bytes().replace(b'"split":"train"', b'"split":"test"', 1))  # not as ingested
        q = LabelQueue(copy, "ann")
        assert not q._new_rows() and len(calls) == 1  # compared: and the items are those of the index still
    finally:
        copy.close()
    # the git history has one commit per version
    import subprocess

    log = subprocess.run(["git", "log", "--oneline"], cwd=ws.root, capture_output=True, text=True).stdout
    assert log.count("data: version v") == 2


def test_removed_items_show_in_diff(tmp_path, text_ws):
    src = make_bbc_subset(tmp_path / "news.zip", per_class=12)
    add_source(text_ws, src)
    assert Runner(text_ws).run(until="data.version").ok
    make_bbc_subset(src, per_class=10)
    assert Runner(text_ws).run(until="data.version").ok
    d = diff_json(text_ws, "v1", "v2")
    assert d["removed"] == 10 and d["added"] == 0


def test_a_csv_of_headlines_or_titles_and_abstracts_needs_no_column_named(tmp_path):
    """"headline,category" (a news-headline dataset) was refused with "no text column … name it with
    --text-column"; where a longer text is there too (arXiv's title and abstract), that is the one taken."""
    from runtime.steps.sources import read_source

    (tmp_path / "h.csv").write_text("headline,category\nShares fell sharply after profits slumped,business\n")
    (tmp_path / "a.csv").write_text("title,abstract,label\nA short title,A much longer abstract of the paper,cs\n")
    assert read_source(tmp_path / "h.csv").items[0].payload == b"Shares fell sharply after profits slumped"
    assert read_source(tmp_path / "a.csv").items[0].payload == b"A much longer abstract of the paper"


def test_a_readme_beside_the_class_folders_is_no_class(tmp_path, text_ws):
    """The BBC archive as its authors distribute it has bbc/README.TXT beside bbc/business/ and the other class
    folders: it was imported as an item of a sixth class, "bbc", the model trained to predict it. A file beside the
    class folders is in no class: ignored and said, as a file outside any folder is. `models predict --input` on
    the folder reads it unlabeled."""
    from runtime.steps.sources import folder_classes

    src = make_bbc_subset(tmp_path / "news.zip", per_class=4, extra={
        "bbc-fulltext/bbc/README.TXT": b"Consists of 2225 documents from the BBC news website, 2004-2005, in five "
                                       b"topical areas. Class labels: business, entertainment, politics, sport, tech."})
    add_source(text_ws, src)
    res = Runner(text_ws).run(until="data.import")
    notes = res.steps[0].summary["sources"][0]["notes"]
    assert "ignored bbc-fulltext/bbc/README.TXT: not inside a class folder (--unlabeled, the data panel's unlabeled " \
           "box, takes every file, unlabeled)" in notes, notes
    assert {i.source_label for i in text_ws.store.items()} == {"business", "entertainment", "politics", "sport",
                                                                "tech"}
    found, nested, beside = folder_classes(["x/cats/1.jpg", "x/dogs/2.jpg", "x/notes.md"])
    assert beside == ["x/notes.md"] and "x/notes.md" not in found and found["x/cats/1.jpg"] == ("cats", None)


def test_validation_rules_quarantine_with_reason(tmp_path, text_ws):
    src = make_bbc_subset(tmp_path / "news.zip", per_class=5, extra={
        "bbc/tech/short.txt": b"Too short.",
        "bbc/tech/notes.md": b"A markdown file that is long enough to pass the length rule easily." * 2,
        "bbc/tech/dup-a.txt": b"The same article twice with two different labels, long enough to keep.",
        "bbc/sport/dup-b.txt": b"The same article twice with two different labels, long enough to keep.",
    })
    add_source(text_ws, src)
    assert Runner(text_ws).run(until="data.label").ok
    report = report_json(text_ws)
    rules = {(q["source"].split("/")[-1], q["rule"]) for q in report["quarantined"]}
    assert ("short.txt", "min_length") in rules
    assert report["checked"]["data.validate"]["items"] == len(text_ws.dataset().rows)
    assert ("notes.md", "allowed_extensions") in rules
    assert ("dup-a.txt", "label_conflicts") in rules and ("dup-b.txt", "label_conflicts") in rules
    for q in report["quarantined"]:
        assert q["reason"]
    # nothing silently dropped: every item is either valid or quarantined
    summary = text_ws.store.last_step_run("data.validate").summary
    assert summary["checked"] == len(text_ws.dataset().rows)
    # `labels stats` says how many it leaves out for that ("total 21" beside 25 items imported said nothing)
    from click.testing import CliRunner

    from runtime.cli import cli

    out = CliRunner().invoke(cli, ["-w", str(text_ws.root), "labels", "stats"]).stdout
    # the two in conflict stay in the labeling queue, where data.validate says to resolve them: it left them out,
    # so that `--filter conflicts` found nothing and the conflict could not be resolved
    n = len(report["quarantined"]) - 2
    assert f"; {n} quarantined by data.validate left out (`cdl data report` says why)" in out, out
    doc = json.loads(CliRunner().invoke(cli, ["-w", str(text_ws.root), "labels", "stats", "--json"]).stdout)
    contents = {r.id for r in text_ws.dataset().rows}
    assert doc["quarantined"] == n and doc["total"] == len(contents) - n and doc["conflicts"] == 1, doc
    conflict = next(q for q in report["quarantined"] if q["rule"] == "label_conflicts")
    assert "its labels disagree (sport and tech); resolve the conflict in the labeling queue (`cdl labels next " \
           "--filter conflicts`)" == conflict["reason"], conflict
    label = text_ws.store.last_step_run("data.label")  # both items, where it said "0 conflicts"
    assert label.summary["conflicts"] == 2 and "2 conflicts (`cdl labels next --filter conflicts`" in label.message
    out = CliRunner().invoke(cli, ["-w", str(text_ws.root), "labels", "next"]).stdout
    assert "1 item(s) in conflict wait for a decision: `cdl labels next --filter conflicts`" in out, out
    out = CliRunner().invoke(cli, ["-w", str(text_ws.root), "labels", "next", "--filter", "conflicts"]).stdout
    assert "dup-" in out and "in conflict: the sources label it sport and tech" in out, out
    uid = out.split()[0]
    assert CliRunner().invoke(cli, ["-w", str(text_ws.root), "labels", "set", uid, "tech"]).exit_code == 0
    assert Runner(text_ws).run(until="data.label").ok  # a new version, and the decision holds in it
    rules = {(q["source"].split("/")[-1], q["rule"]) for q in report_json(text_ws)["quarantined"]}
    assert ("dup-a.txt", "label_conflicts") not in rules and ("short.txt", "min_length") in rules
    assert text_ws.store.last_step_run("data.label").summary["conflicts"] == 0
    # a class name that no item has is said (a typo quarantines a whole class without a word otherwise)
    from runtime.jobs.bus import EventBus

    said: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message or ""))
    assert Runner(text_ws, bus=bus).run(steps=["data.validate"],
                                        overrides={"data.validate": {"allowed_labels": ["Sport", "tech"]}}).ok
    assert any(m.startswith("allowed_labels: 'Sport' matches no item's label (labels here: business, entertainment, "
                            "politics, sport, tech): check the spelling") for m in said), said


def test_the_report_says_whether_validation_ran_on_the_version(tmp_path, text_ws):
    """An empty quarantine read the same whether data.validate found nothing or never ran on the version (a run
    stopped at data.version): the report says which."""
    from click.testing import CliRunner

    from runtime.cli import cli

    add_source(text_ws, make_bbc_subset(tmp_path / "news.zip", per_class=3))
    assert Runner(text_ws).run(until="data.version").ok
    assert report_json(text_ws)["checked"] == {"data.clean": None, "data.validate": None}
    out = CliRunner().invoke(cli, ["-w", str(text_ws.root), "data", "report"]).stdout
    assert "data.clean and data.validate have not run on v1: nothing is known to be repaired or quarantined " \
           "(`cdl run --until data.validate`)" in out, out
    assert Runner(text_ws).run(until="data.validate").ok
    checked = report_json(text_ws)["checked"]
    n = len(text_ws.dataset().rows)
    assert checked["data.clean"]["items"] == checked["data.validate"]["items"] == n, checked
    out = CliRunner().invoke(cli, ["-w", str(text_ws.root), "data", "report"]).stdout
    assert f"data.clean checked {n} item(s) (" in out and f"data.validate checked {n} item(s) (" in out, out
    assert "not run" not in out


def test_labels_spelt_two_ways_are_said(tmp_path, text_ws):
    """A CSV whose label column has "Sport" beside "sport" and "sci-fi" beside "Sci Fi" trained a model of two
    classes for each, and nothing said so unless allowed_labels was set."""
    rows = ["text,label"]
    for i, label in enumerate(["sport"] * 6 + ["Sport"] * 2 + ["sci-fi"] * 5 + ["Sci Fi"] + ["tech"] * 6):
        rows.append(f"article number {i} about {label.lower()} with enough words to pass the length rule,{label}")
    (tmp_path / "mixed.csv").write_text("\n".join(rows) + "\n")
    add_source(text_ws, tmp_path / "mixed.csv")
    from runtime.jobs.bus import EventBus

    said: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message or ""))
    assert Runner(text_ws, bus=bus).run(until="data.validate").ok
    run = text_ws.store.last_step_run("data.validate")
    assert run.summary["similar_labels"] == [{"Sci Fi": 1, "sci-fi": 5}, {"Sport": 2, "sport": 6}]
    assert run.summary["quarantined"] == 0  # said, not quarantined: which spelling is right is the user's call
    assert "labels that look alike: 'Sci Fi' and 'sci-fi', 'Sport' and 'sport'" in run.message
    assert any(m.startswith("labels 'Sport' (2 items) and 'sport' (6 items) differ only in case, spaces or "
                            "punctuation") for m in said), said
    # `cdl data report` says it too, and the studio's Validation tab (tests/studio)
    assert report_json(text_ws)["similar_labels"] == run.summary["similar_labels"]
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "data", "report"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "labels that look alike: 'Sport' (2 items) and 'sport' (6 items)" in out.stdout
    # a labeler gave the spelling the panel offered beside the other: relabel holds for that label too
    from runtime.labeling import LabelQueue

    manual = next(r for r in text_ws.dataset().rows if r.label == "tech")
    LabelQueue(text_ws, "lena").set_label(manual.uid, "Sport")
    # data.import's relabel makes them one class: the report says the command, which merges into the most used
    relabel = "{\"Sci Fi\": \"sci-fi\", \"Sport\": \"sport\"}"
    assert f"data.import's relabel makes each one: `cdl run --set 'data.import.relabel={relabel}' --save`" in out.stdout
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "run", "--until",
                          "data.validate", "--set", f"data.import.relabel={relabel}", "--save"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "relabel: 2 label(s) 'Sport' read as 'sport'" in out.stderr and "'Sci Fi' read as 'sci-fi'" in out.stderr
    assert text_ws.store.last_step_run("data.validate").summary["similar_labels"] == []
    assert {r.label for r in text_ws.dataset().rows} == {"sport", "sci-fi", "tech"}
    assert next(r.label for r in text_ws.dataset().rows if r.uid == manual.uid) == "sport"
    assert "Sport" not in LabelQueue(text_ws, "lena").classes()  # a merged spelling is no class to offer labelers
    assert text_ws.config().params("data.import")["relabel"] == {"Sci Fi": "sci-fi", "Sport": "sport"}
    # a source added later is read alone, beside the ones relabeled before: it lacks 'Sport', and that is no typo
    (tmp_path / "more.csv").write_text("text,label\nyet another article with enough words to pass the rule,tech\n")
    cfg = text_ws.config()
    cfg.steps["data.import"]["sources"].append(str(tmp_path / "more.csv"))
    cfg.save()
    said.clear()
    assert Runner(text_ws, bus=bus).run(steps=["data.import"]).ok
    assert any(m == "more.csv: imported 1 text items (csv)" for m in said), said
    assert not any("is no label of the sources" in m for m in said), said
    # a spelling no source has is said; one relabeled as itself, or twice over, is refused before anything runs
    said.clear()
    assert Runner(text_ws, bus=bus).run(steps=["data.import"], overrides={"data.import": {
        "relabel": {"Sport": "sport", "Sprot": "sport"}}}).ok
    assert any(m.startswith("relabel: 'Sprot' is no label of the sources read") for m in said), said
    for bad, says in (({"sport": "sport"}, "'sport' is relabeled as itself"),
                      ({"a": "b", "b": "c"}, "'b' is both a new name ('a' -> 'b') and relabeled ('b' -> 'c')"),
                      ({"a": "b", "b": "a"}, "'a' and 'b' are relabeled as each other"),
                      ({"a": ""}, "'a': '' is no label"), (["a"], "expected dict")):
        with pytest.raises(CdlError, match=re.escape(says)):
            Runner(text_ws).run(steps=["data.import"], overrides={"data.import": {"relabel": bad}})


def test_relabel_reads_label_studio_annotations_so(tmp_path, ls_dir):
    """An export's annotations are labels too: relabel names them as it names a CSV's label column."""
    import json

    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    add_source(ws, ls_dir / "text_classification_export.json")
    assert Runner(ws).run(steps=["data.import"], overrides={"data.import": {"relabel": {"tech": "technology"}}}).ok
    given = [lab.label for lab in ws.store.labels()]
    tasks = json.loads((ls_dir / "text_classification_export.json").read_text())
    want = [r["value"]["choices"][0] for t in tasks for a in t["annotations"] for r in a["result"]]
    assert sorted(given) == sorted("technology" if w == "tech" else w for w in want) and "tech" not in given
    # `labels stats` counts a label given in the old spelling under the merged one
    from runtime.labeling import LabelQueue

    cfg = ws.config()
    cfg.steps["data.import"]["relabel"] = {"tech": "technology"}
    cfg.save()
    q = LabelQueue(ws, "ana")
    before = q.class_counts()
    item = next(r for r in q.rows("all") if r.label != "technology")
    q.set_label(item.uid, "tech")
    after = q.class_counts()
    assert "tech" not in after and after["technology"] == before["technology"] + 1
    assert sum(after.values()) == sum(before.values())
    ws.close()


@pytest.mark.parametrize(("rule", "said"), [
    ({"image_shape": [28]}, "data.validate.image_shape: expected [height, width], two whole numbers"),
    ({"image_shape": [28, "28"]}, "data.validate.image_shape: expected [height, width]"),
    ({"image_mode": "rgb"}, "data.validate.image_mode: 'rgb' is not an image mode (did you mean 'RGB'?)"),
    ({"min_length": 50, "max_length": 20}, "data.validate.max_length: 20 is below min_length 50: every text would"),
    ({"allowed_labels": ["sport", 3]}, "data.validate.allowed_labels[1]: expected a class name, got 3"),
])
def test_a_validation_rule_that_would_quarantine_everything_or_fail_is_refused(text_ws, rule, said):
    """image_shape [28] raised an IndexError on the first image that was not 28 wide; image_mode "rgb" and a
    max_length below min_length quarantined every item. Each is refused before the run starts anything."""
    from runtime.domain.errors import ConfigError

    cfg = text_ws.config()
    cfg.steps["data.validate"].update(rule)
    cfg.save()
    with pytest.raises(ConfigError, match=re.escape(said)):
        Runner(text_ws).run(until="data.label")
    assert text_ws.store.last_step_runs() == {}


def test_cli_json_outputs(tmp_path, bbc_ws):
    import subprocess
    import sys

    def cdl(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(bbc_ws.root), *args],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    status = cdl("status", "--json")
    assert [s["id"] for s in status["steps"]][:3] == ["data.import", "data.split", "data.ingest"]
    assert {s["status"] for s in status["steps"] if s["pipeline"] == "data"} == {"done"}
    assert {s["status"] for s in status["steps"] if s["pipeline"] != "data"} == {"never-run"}
    versions = cdl("data", "versions", "--json")["versions"]
    assert set(versions[0]) >= {"id", "items", "classes", "splits", "dvc_hash", "git_commit", "created"}
    report = cdl("data", "report", "--json")
    assert set(report) >= {"quarantined", "cleaned"}
    assert set(report["cleaned"][0]) == {"item", "source", "action"}
    diff = cdl("data", "diff", "v1", "v1", "--json")
    assert diff["added"] == diff["removed"] == diff["changed"] == diff["label_changes"] == 0
    assert set(diff) >= {"classes_before", "classes_after"}


def test_run_single_step_needs_upstream(text_ws):
    result = Runner(text_ws).run(steps=["data.version"])
    assert not result.ok
    assert "data.ingest" in result.steps[0].error and "--until" in result.steps[0].error
    assert result.steps[0].error.endswith("use `cdl run --until data.version` (the studio: Run up to here)")


def test_a_dataset_too_small_for_a_test_share_per_class_still_gets_a_test_split(tmp_path):
    """7 items of 4 classes: 0.2 of each class rounded to none, the test split was empty, and model.evaluate
    failed after training with "the test split is empty"."""
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    rows = ["text,label", "apple banana cherry fruit,a", "banana fruit sweet apple,a", "engine wheel road car,b",
            "car drive engine road,b", "goal match team score,c", "team play score match goal,c",
            "something odd entirely,d"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    add_source(ws, tmp_path / "t.csv")
    from runtime.jobs.bus import EventBus

    said: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message) if e.step == "model.evaluate" else None)
    res = Runner(ws, bus=bus).run(until="model.evaluate")
    assert res.ok, [(o.step, o.error) for o in res.steps]
    # each class the test split lacks says so (its precision and recall read 0.000, as if the model failed on it)
    assert any(m.startswith("d ") and "no test item of this class (predicted " in m for m in said), said
    split = next(o for o in res.steps if o.step == "data.split")
    assert split.message.startswith("train 6, test 1; every class is too small"), split.message  # no "0 duplicates"
    assert "so 1 item(s) were held out across classes" in split.message
    test = [r for r in ws.dataset().rows if r.split == "test"]
    assert len(test) == 1 and test[0].label in {"a", "b", "c"}  # never d's only item
    # the classes the test split lacks have no F1 to compare (they read 0, as if the model failed on them)
    from runtime.ml.versus import compare

    f1 = {r["class"]: r["a_f1"] for r in compare(ws, "ws:1", "ws:1", on="own")["per_class"]}
    assert f1["d"] is None and f1[test[0].label] is not None
    # a test_fraction of 0 is the user's word: no test split, and model.evaluate says what to change
    res = Runner(ws).run(until="model.evaluate", overrides={"data.split": {"test_fraction": 0.0}})
    failed = next(o for o in res.steps if o.status == "failed")
    assert failed.step == "model.evaluate"
    assert "the test split has no labeled item" in failed.error and "test_fraction" in failed.error
    items = ws.store.items()
    assert "test" not in assign_splits(items, 0.0, 42)[0].values()
    ws.close()


def test_parquet_files_as_hugging_face_publishes_datasets(tmp_path):
    """A Hugging Face dataset's Parquet shards (data/train-*.parquet, data/test-*.parquet; class numbers for labels;
    images as the Image feature's {bytes, path}): refused as "unsupported source", so that a user converted them to
    JSON Lines first."""
    import duckdb
    from PIL import Image

    from runtime.domain.errors import DataImportError
    from runtime.workspace import Workspace

    (tmp_path / "hf" / "data").mkdir(parents=True)
    con = duckdb.connect()
    con.execute("CREATE TABLE t (text VARCHAR, label BIGINT)")
    for split, n in (("train", 12), ("test", 6)):
        con.execute("DELETE FROM t")
        con.executemany("INSERT INTO t VALUES (?, ?)", [(f"{split} article {i} about the match and the markets "
                                                        f"number {i}", i % 2) for i in range(n)])
        con.execute(f"COPY t TO '{tmp_path}/hf/data/{split}-00000-of-00001.parquet' (FORMAT parquet)")
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    add_source(ws, tmp_path / "hf", {"class_names": ["Sports", "Business"]})
    assert Runner(ws).run(until="data.label").ok
    rows = ws.dataset().rows
    assert len(rows) == 18 and {r.label for r in rows} == {"Sports", "Business"}
    assert sum(r.split == "test" for r in rows) == 6  # each shard keeps its split
    test = next(r for r in rows if r.split == "test")
    assert ws.dataset().read_bytes(test).decode().startswith("test article ")
    # refused, each naming the file, row or column, and nothing imported
    con.execute("COPY (SELECT 'x' AS words, 1.5::DOUBLE AS label) TO '" + str(tmp_path / "odd.parquet") + "' (FORMAT parquet)")
    con.execute("COPY (SELECT 'a text long enough' AS text, 7 AS label) TO '" + str(tmp_path / "seven.parquet")
                + "' (FORMAT parquet)")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    for path, opts, says in (("odd.parquet", {}, "odd.parquet: no text column (looked for text, content"),
                             ("odd.parquet", {"text_column": "words"}, "odd.parquet: row 1: 'label' must be a string or "
                                                                        "a whole number, got 1.5"),
                             ("odd.parquet", {"text_column": "txt"}, "odd.parquet: no column 'txt' (columns: words, "
                                                                      "label)"),
                             ("seven.parquet", {"class_names": ["Sports", "Business"]}, "seven.parquet: row 1: label '7' is "
                                                                                  "no class number 0-1"),
                             ("broken.parquet", {}, "broken.parquet: not a Parquet file DuckDB can read")):
        with pytest.raises(DataImportError, match=re.escape(says)):
            add_source(ws, tmp_path / path, opts)
    assert len(ws.store.items()) == 18
    # pandas writes class numbers with one missing as floats, NaN the missing: whole ones are class numbers
    con.execute("COPY (SELECT * FROM (VALUES ('one text about the sport', 0.0::DOUBLE), ('another about the money', "
                "1.0::DOUBLE), ('a third nobody labeled yet', 'NaN'::DOUBLE)) v(text, label)) TO '"
                + str(tmp_path / "floats.parquet") + "' (FORMAT parquet)")
    add_source(ws, tmp_path / "floats.parquet", {"class_names": ["Sports", "Business"]})
    got = {i.uid.rsplit(":", 1)[1]: i.source_label for i in ws.store.items() if "floats" in i.uid}
    assert got == {"row1": "Sports", "row2": "Business", "row3": None}, got
    ws.close()
    # images: the Image feature's {bytes, path} struct, in an image workspace
    con.execute("CREATE TABLE i (image STRUCT(bytes BLOB, path VARCHAR), label VARCHAR)")
    pngs = []
    for k in range(6):
        buf = io.BytesIO()
        Image.new("L", (8, 8), 40 * k).save(buf, format="PNG")
        pngs.append(buf.getvalue())
        con.execute("INSERT INTO i VALUES ({'bytes': ?, 'path': ?}, ?)", [pngs[-1], f"{k}.png", ["dark", "light"][k % 2]])
    con.execute(f"COPY i TO '{tmp_path}/img.parquet' (FORMAT parquet)")
    iws = Workspace.init(tmp_path / "iws", "image-classification")
    add_source(iws, tmp_path / "img.parquet")
    assert Runner(iws).run(until="data.label").ok
    rows = sorted(iws.dataset().rows, key=lambda r: int(r.uid.rsplit("row", 1)[1]))
    assert [r.label for r in rows] == ["dark", "light"] * 3
    assert iws.dataset().read_image(rows[3]).tolist() == [[120] * 8] * 8
    iws.close()


def test_fashion_mnist_import(tmp_path, fashion_dir):
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "fm", "image-classification")
    add_source(ws, fashion_dir, {"class_names": "fashion-mnist"})
    cfg = ws.config()
    cfg.set_param("data.validate", "image_shape", [28, 28])
    cfg.set_param("data.validate", "image_mode", "L")
    cfg.save()
    assert Runner(ws).run(until="data.label").ok
    rows = ws.dataset().rows
    assert len(rows) == 70000
    assert len({r.label for r in rows}) == 10
    v = versions_json(ws)["versions"][-1]
    assert v["splits"] == {"test": 10000, "train": 60000}
    assert v["classes"]["Trouser"] == 7000
    img = ws.dataset().read_image(rows[123])
    assert img.shape == (28, 28) and img.dtype.name == "uint8"
    batch = ws.dataset().images(rows[:500])
    assert batch.shape == (500, 28, 28)
    assert report_json(ws)["quarantined"] == []
    # the published pixel mean of the training set
    train = [r for r in rows if r.split == "train"][:5000]
    assert ws.dataset().images(train).mean() / 255 == pytest.approx(0.2860, abs=0.01)
    ws.close()


def test_image_folder_with_a_broken_image(tmp_path, image_ws):
    import numpy as np
    from PIL import Image

    root = tmp_path / "imgs"
    for cls in ("dark", "light"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            value = 30 if cls == "dark" else 220
            Image.fromarray(np.full((8, 8), value + i, np.uint8)).save(root / cls / f"{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "dark" / "rgb.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(root / "light" / "tall.png")
    (root / "light" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    # what else lives in a user's folders: imported as images, each was quarantined as undecodable (and the same
    # Thumbs.db in two class folders as a label conflict besides)
    for cls in ("dark", "light"):
        (root / cls / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 cache")
        (root / cls / "notes.txt").write_text("taken on the 3rd")
    (root / "light" / "scan.pdf").write_bytes(b"%PDF-1.4")
    # a folder inside a class folder is part of that class, as Keras reads it: it was a class of its own, named
    # after the inner folder, holding files of both classes
    for cls, value in (("dark", 36), ("light", 226)):
        (root / cls / "2024").mkdir()
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(root / cls / "2024" / "later.png")
    add_source(image_ws, root)
    cfg = image_ws.config()
    cfg.set_param("data.validate", "image_shape", [8, 8])
    cfg.set_param("data.validate", "image_mode", "L")
    cfg.save()
    res = Runner(image_ws).run(until="data.label")
    assert res.ok
    notes = res.steps[0].summary["sources"][0]["notes"]
    assert "ignored 2 hidden or system file(s): dark/Thumbs.db, light/Thumbs.db" in notes, notes
    assert "ignored 2 file(s) that are no image (.txt): dark/notes.txt, light/notes.txt; image files are .bmp, " \
        ".gif, .jpeg, .jpg, .png, .tif, .tiff, .webp" in notes, notes
    assert any(n.startswith("ignored 1 file(s) that are no image (.pdf): light/scan.pdf") for n in notes), notes
    assert res.steps[0].summary["items"] == 17  # 12 images, rgb.png, tall.png, broken.png and two in 2024/
    assert "2 file(s) in folders below their class folder take its class: dark/2024/later.png, " \
        "light/2024/later.png" in notes, notes
    assert {r.source.split("imgs/")[1]: r.label for r in image_ws.dataset().rows if "2024" in r.source} == {
        "dark/2024/later.png": "dark", "light/2024/later.png": "light"}
    quarantined = report_json(image_ws)["quarantined"]
    q = {Path(x["source"]).name: x["rule"] for x in quarantined}
    assert q == {"broken.png": "decodable", "tall.png": "image_shape", "rgb.png": "image_mode"}
    # in words, not Pillow's "cannot identify image file <_io.BytesIO object at 0x7f…>"
    assert [x["reason"] for x in quarantined if x["rule"] == "decodable"] == [
        "cannot be decoded as an image: no image format Pillow reads"], quarantined


def test_every_dataset_version_is_pushed_to_a_dvc_remote_and_pulled_back(tmp_path, text_ws):
    """`dvc push --all-commits` in a workspace pushed only the checked-out version: a lost cache took the older
    versions with it. `cdl data push` pushes what the registry knows, every version; `cdl data pull` brings them
    back, and checkout and training data work again."""
    import shutil

    from runtime.datasets import not_on_remote, pull, push, remote_add, remote_remove, version_rows
    from runtime.doctor import diagnose

    ws = text_ws
    src = make_bbc_subset(tmp_path / "news.zip", per_class=10)
    add_source(ws, src)
    assert Runner(ws).run(until="data.version").ok
    assert versions_json(ws)["versions"][0]["on_remote"] is None  # no remote: nothing to say
    make_bbc_subset(src, per_class=12)
    assert Runner(ws).run(until="data.version").ok
    assert [v.id for v in ws.store.versions()] == ["v1", "v2"]
    with pytest.raises(WorkspaceError, match=r"no DVC remote to push to: add one with `cdl data remote add NAME URL`"):
        push(ws)
    remote = tmp_path / "backup"
    added = remote_add(ws, "backup", str(remote))
    assert added["default"] and added["replaced_default"] is None
    assert ws.dvc.remotes() == {"backup": str(remote)}
    # `cdl doctor` said "✓ DVC remote backup" before anything was pushed to it
    (finding,) = [c for c in diagnose(ws)["checks"] if "DVC remote" in c["detail"]]
    assert finding["status"] == "warn" and "lacks dataset version(s) v1, v2" in finding["detail"], finding
    assert finding["hint"] == "`cdl data push`"
    assert [v["on_remote"] for v in versions_json(ws)["versions"]] == [False, False]
    first = push(ws)
    assert [v["on_remote"] for v in versions_json(ws)["versions"]] == [True, True]
    (finding,) = [c for c in diagnose(ws)["checks"] if "DVC remote" in c["detail"]]
    assert finding["status"] == "ok" and "every dataset version on it" in finding["detail"], finding
    assert not_on_remote(ws, str(remote)) == [] and not_on_remote(ws, "s3://elsewhere/data") == ["v1", "v2"]
    assert set(first["pushed"]) == {"v1", "v2"} and all(n > 0 for n in first["pushed"].values()), first
    assert push(ws)["pushed"] == {"v1": 0, "v2": 0}  # already there
    assert not (ws.root / "data" / ".cdl-transfer").exists()
    shutil.rmtree(ws.root / ".dvc" / "cache")  # the cache is lost
    with pytest.raises(WorkspaceError, match=r"v1's data is not in the DVC cache here: `cdl data pull`"):
        checkout(ws, "v1")
    back = pull(ws)
    assert back["incomplete"] == [] and sum(back["fetched"].values()) == sum(first["pushed"].values())
    items = {v.id: v.items for v in ws.store.versions()}
    assert checkout(ws, "v1")["items"] == items["v1"] and len(version_rows(ws, "v2")) == items["v2"] > items["v1"]
    said = json.loads(subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "checkout",
                                      "v2", "--json"], capture_output=True, text=True, check=True).stdout)
    assert (said["version"], said["items"]) == ("v2", items["v2"]) and said["dvc_hash"]
    # the CLI says the same, and pull exits 1 when the remote lacks a version's data
    shutil.rmtree(ws.root / ".dvc" / "cache")
    shutil.rmtree(remote)
    remote.mkdir()
    assert not_on_remote(ws, str(remote)) == ["v1", "v2"]  # a folder remote is looked at, not taken on record
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "pull"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "v1: INCOMPLETE" in out.stdout, out.stdout + out.stderr
    log = subprocess.run(["git", "log", "--oneline"], cwd=ws.root, capture_output=True, text=True).stdout
    assert "data: DVC remote backup" in log
    # a second remote made the default in place of the first said nothing: pushes went elsewhere from then on
    other = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "remote", "add", "second",
                            str(tmp_path / "second")], capture_output=True, text=True)
    assert other.returncode == 0 and "it is the default in place of backup: `cdl data push` sends the dataset " \
        "versions to it from now on" in other.stderr, other.stderr
    said = json.loads(subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "remote",
                                      "list", "--json"], capture_output=True, text=True, check=True).stdout)
    assert said == {"remotes": [{"name": "second", "url": str(tmp_path / "second"), "default": True},
                                {"name": "backup", "url": str(remote), "default": False}]}
    said = json.loads(subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "remote",
                                      "add", "backup", str(remote), "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    assert said == {"remote": "backup", "url": str(remote), "default": True, "replaced_default": "second",
                    "missing_plugin": None}
    assert remote_add(ws, "third", str(tmp_path / "third"), default=False)["replaced_default"] is None
    # a folder inside the workspace (a relative path typed there) was taken: lost with the workspace, in every
    # backup, and in git's way
    for inside in (ws.root / "remote", ws.root):
        with pytest.raises(WorkspaceError, match=re.escape(f"{inside} is inside the workspace: a DVC remote there is "
                                                           "lost with it, so it backs nothing up")):
            remote_add(ws, "inside", str(inside))
    assert "inside" not in ws.dvc.remotes()
    # a folder this machine cannot make, or a file, was taken, and every `cdl data push` failed after it with
    # DVC's "No such file or directory"; a folder not there yet is made, as `dvc push` makes it
    (tmp_path / "a-file").write_text("x")
    for url, says in (("/proc/nope/store", "cannot make the remote's folder: /proc/nope: no such file or directory"),
                      (str(tmp_path / "a-file"), f"{tmp_path / 'a-file'} is a file: a DVC remote given as a path is "
                                                 "a folder")):
        with pytest.raises(WorkspaceError, match=re.escape(says)):
            remote_add(ws, "nowhere", url)
    assert "nowhere" not in ws.dvc.remotes()
    remote_add(ws, "fresh", str(tmp_path / "not" / "yet"), default=False)
    assert (tmp_path / "not" / "yet").is_dir()
    remote_remove(ws, "fresh")
    # a --remote that is not one: named with the remotes there are (DVC's config file error came after "dvc fetch
    # of v1 failed")
    for verb in ("push", "pull"):
        out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", verb, "--remote",
                              "thrid"], capture_output=True, text=True)
        assert out.returncode == 2 and "no DVC remote 'thrid' (did you mean 'third'?) (remotes: backup, second, " \
            "third)" in out.stderr, out.stderr
    # `cdl data remote remove` (there was none: a wrong remote took `dvc remote remove` and a commit by hand)
    def cdl_remote(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "remote", *args],
                              capture_output=True, text=True)

    # an s3:// remote without dvc-s3 installed: said when it is added and by the doctor (DVC refused it only at the
    # first push, after the doctor had said to push)
    out = cdl_remote("add", "cloud", "s3://bucket/cdl", "--no-default")
    assert out.returncode == 0 and "s3:// remotes need the dvc-s3 package, which this Python lacks" in out.stderr
    from runtime.datasets import remote_plugin_missing
    from runtime.doctor import diagnose

    assert remote_plugin_missing("s3://b/x") == "dvc-s3" and remote_plugin_missing(str(tmp_path)) is None
    remote_add(ws, "cloud", "s3://bucket/cdl")  # the default: the doctor checks it
    (bad,) = [c for c in diagnose(ws)["checks"] if c["area"] == "data" and "cloud" in c["detail"]]
    assert bad["status"] == "fail" and "needs the dvc-s3 package" in bad["detail"] and "pip install dvc-s3" in \
        bad["hint"], bad
    assert cdl_remote("remove", "cloud").returncode == 0
    out = cdl_remote("remove", "second")
    assert out.returncode == 0 and f"removed remote second ({tmp_path / 'second'}); the data on it stays there" in \
        out.stdout, out.stdout + out.stderr
    remote_add(ws, "fourth", str(tmp_path / "fourth"))  # the default, then removed: the next one by name is
    said = json.loads(cdl_remote("remove", "fourth", "--json").stdout)
    assert said == {"remote": "fourth", "url": str(tmp_path / "fourth"), "was_default": True, "default": "backup"}
    assert list(ws.dvc.remotes()) == ["backup", "third"]
    out = cdl_remote("remove", "thrid")
    assert out.returncode == 2 and "no DVC remote 'thrid' (did you mean 'third'?)" in out.stderr, out.stderr
    assert cdl_remote("remove", "third").returncode == 0 and list(ws.dvc.remotes()) == ["backup"]
    log = subprocess.run(["git", "log", "--oneline"], cwd=ws.root, capture_output=True, text=True).stdout
    assert "data: DVC remote third removed" in log and not subprocess.run(
        ["git", "status", "--porcelain", ".dvc/config"], cwd=ws.root, capture_output=True, text=True).stdout
    # the remotes are read from .dvc/config without DVC (the studio lists them): as DVC reads them, local ones too
    for args in (["remote", "add", "--local", "mine", "s3://bucket/my path"], ["remote", "add", "-d", "--local",
                                                                               "zeta", str(tmp_path / "z")],
                 ["remote", "add", "rel", "../../elsewhere"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws.root, check=True, capture_output=True)
    from dvc.repo import Repo

    with Repo(str(ws.root)) as repo:
        conf = repo.config
        default = conf["core"].get("remote")
        theirs = {n: conf["remote"][n]["url"] for n in sorted(conf["remote"], key=lambda n: (n != default, n))}
    assert ws.dvc.remotes() == theirs, (ws.dvc.remotes(), theirs)
    assert theirs == {"zeta": str(tmp_path / "z"), "backup": str(remote), "mine": "s3://bucket/my path",
                      "rel": str((ws.root / "../../elsewhere").resolve())}


def test_a_monitor_check_goes_stale_after_a_minute_and_says_so(text_ws, monkeypatch):
    """deploy.monitor's inputs are the scoring data that keeps coming: its check is redone after a minute, and
    its stale reason says that (it said "inputs changed since it ran")."""
    import time

    ws = text_ws
    Runner(ws).run(steps=["deploy.monitor"])
    assert ws.store.last_step_run("deploy.monitor") is not None
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    state = {s.id: s for s in Runner(ws).statuses()}["deploy.monitor"]
    assert state.reason == "a check is redone after a minute: scoring data may have come since it ran", state


def test_run_set_reaches_one_key_inside_a_mapping_parameter(text_ws):
    """`--set model.tune.search_space.lr.high=0.01` was taken for a step named "model.tune.search_space.lr" ("not
    a step of this pipeline"): a search space could be changed for a run only by writing it out whole. One key
    inside a mapping parameter is set now, the rest as cdl.yaml says, and the run's note names that key."""
    from runtime.cli import _differences, _parse_sets

    cfg = text_ws.config()
    space = cfg.params("model.tune")["search_space"]
    got = _parse_sets(("model.tune.search_space.lr.high=0.05", "model.tune.search_space.lr.log=false",
                       "model.tune.n_trials=2"), cfg)
    assert got["model.tune"]["n_trials"] == 2
    assert got["model.tune"]["search_space"] == {**space, "lr": {**space["lr"], "high": 0.05, "log": False}}
    assert cfg.params("model.tune")["search_space"] == space  # cdl.yaml's own is untouched
    assert _differences("model.tune.search_space", space, got["model.tune"]["search_space"]) == [
        ("model.tune.search_space.lr.high", space["lr"]["high"], 0.05),
        ("model.tune.search_space.lr.log", True, False)]

    def cdl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), *args],
                              capture_output=True, text=True)

    # refused before anything runs: a key inside a value that is no mapping; a search space name training lacks
    out = cdl("run", "model.tune", "--set", "model.tune.n_trials.x=1")
    assert out.returncode == 2 and "--set model.tune.n_trials.x: model.tune.n_trials is int " in out.stderr and \
        "not a mapping with keys; set it whole: --set model.tune.n_trials=VALUE" in out.stderr, out.stderr
    out = cdl("run", "model.tune", "--set", "model.tune.search_space.dropuot.low=0.1")
    assert out.returncode == 2 and "model.tune.search_space.dropuot: training takes no such parameter (did you " \
        "mean 'dropout'?)" in out.stderr, out.stderr
    assert text_ws.store.step_runs("model.tune") == []


def test_a_flat_folder_of_files_imports_unlabeled_for_the_labelers(tmp_path, image_ws):
    """A folder of photos to be labeled (no class folders) was refused: "no class folders with files found";
    `--unlabeled` takes a class-folder source's files unlabeled too, as it does a CSV's rows."""
    import numpy as np
    from PIL import Image

    from runtime.labeling import LabelQueue

    flat = tmp_path / "to-label"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8 + i, 8, 3), 40 * i, np.uint8)).save(flat / f"{i}.png")
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(image_ws.root), "data", "import", str(flat)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "no class folders: 4 file(s) imported unlabeled, for the labeling queue" in out.stderr
    # labeled at once, before any data.ingest (`cdl labels next` said "no dataset here yet (run data.ingest)")
    q = LabelQueue(image_ws, "ana")
    assert q.progress()["unlabeled"] == 4 and q.classes() == []
    first = q.next("unlabeled")
    assert q.content(first.uid).shape[:2] == (8 + int(first.uid[-5]), 8)
    q.set_label(first.uid, "cat")
    assert q.classes() == ["cat"]
    assert Runner(image_ws).run(until="data.label").ok
    assert image_ws.store.last_step_run("data.label").summary["classes"] == {"cat": 1}
    # a class-folder zip, --unlabeled: its folders are no classes
    zipped = tmp_path / "more.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for cls in ("a", "b"):
            buf = io.BytesIO()
            Image.fromarray(np.full((8, 8), 90 if cls == "a" else 180, np.uint8)).save(buf, "PNG")
            zf.writestr(f"more/{cls}/1.png", buf.getvalue())
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(image_ws.root), "data", "import",
                          str(zipped), "--unlabeled"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert {s.name: s.items for s in image_ws.store.sources()}[str(zipped)] == 2
    more = [i for i in image_ws.store.items() if i.source.startswith("more.zip")]
    assert len(more) == 2 and all(i.source_label is None for i in more), more


def test_a_zip_of_one_folder_says_it_is_one_class(tmp_path):
    """photos.zip holding photos/*.png (what zipping a folder makes) became one class "photos" without a word:
    the import says so, and how to import the files to be labeled instead."""
    from runtime.steps.sources import read_source

    zipped = tmp_path / "photos.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for i in range(3):
            zf.writestr(f"photos/{i}.txt", f"an article number {i} of the folder")
    batch = read_source(zipped)
    assert {i.label for i in batch.items} == {"photos"}
    assert "all 3 file(s) are in folders named 'photos': imported as that one class (`--unlabeled`, the data " \
           "panel's unlabeled box, imports them to be labeled)" in batch.notes  # the panel shows the notes too
    assert not any("one class" in n for n in read_source(zipped, options={"unlabeled": True}).notes)


def test_data_diff_lists_the_classes_in_the_models_order(tmp_path):
    """`cdl data diff` listed Fashion-MNIST's classes alphabetically (Ankle boot first), where the labeling keys,
    the review's tables and the model's output put T-shirt/top first."""
    import subprocess
    import sys

    from runtime.labeling import LabelQueue
    from tests.conftest import tiny_fashion_workspace

    ws = tiny_fashion_workspace(tmp_path / "ws", n_train=60, n_test=20)
    assert Runner(ws).run(until="data.version").ok
    q = LabelQueue(ws, "ana")
    q.set_label(q.rows("all")[0].uid, "Bag")
    assert Runner(ws).run(until="data.version").ok
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "diff", "v1", "v2"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = [line.split("  ")[1].strip() for line in out.stdout.splitlines()[1:]]
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert listed == [c for c in fashion if c in listed] and listed[0] == "T-shirt/top", out.stdout
    assert out.stdout.splitlines()[0].endswith("1 label changes, 0 moved between train and test"), out.stdout
    ws.close()


def test_a_source_imported_by_mistake_is_removed(text_ws, tmp_path):
    """Only hand-editing cdl.yaml took a source out. `cdl data remove SOURCE` (the data panel's Remove source…)
    takes it out of cdl.yaml and its items out of the workspace; labels people gave them stay, and come back with
    them if it is imported again."""
    import subprocess
    import sys

    from runtime.api import add_source, remove_source
    from runtime.domain.errors import CdlError
    from runtime.labeling import LabelQueue

    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sport.csv").write_text("text,label\n" + "".join(f"{w} football match,y\n" for w in words))
    (tmp_path / "a" / "news.csv").write_text("text,label\n" + "".join(f"{w} markets shares,x\n" for w in words))
    (tmp_path / "wrong.csv").write_text("text\n" + "".join(f"{w} a text imported by mistake\n" for w in words))
    for f in (tmp_path / "a" / "news.csv", tmp_path / "b" / "sport.csv", tmp_path / "wrong.csv"):
        add_source(text_ws, f, {"unlabeled": True} if f.name == "wrong.csv" else None)
    uid = next(i.uid for i in text_ws.store.items() if i.uid.startswith("wrong.csv:"))
    LabelQueue(text_ws, "lena").set_label(uid, "x")
    assert len(text_ws.store.items()) == 18
    assert Runner(text_ws).run(until="data.version").ok  # its items are in the checked-out version too
    assert LabelQueue(text_ws, "lena").progress()["unlabeled"] == 5
    with pytest.raises(CdlError, match=re.escape("'wrong.cs' is no source of this workspace (did you mean "
                                                 "'wrong.csv'?); its sources: ")):
        remove_source(text_ws, "wrong.cs")
    with pytest.raises(CdlError, match=re.escape("proposal:p1 is a retrain proposal's samples, not a configured "
                                                 "source: `cdl proposals dismiss p1` ends it")):
        remove_source(text_ws, "proposal:p1")
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "data", "remove", "wrong.csv"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wrong = str((tmp_path / "wrong.csv").resolve())
    assert r.stdout.startswith(f"removed {wrong}: 6 item(s) left the workspace (12 remain); labels people gave them "
                               "stay"), r.stdout
    paths = [s if isinstance(s, str) else s["path"] for s in text_ws.config().params("data.import")["sources"]]
    assert wrong not in paths and len(paths) == 2
    assert len(text_ws.store.items()) == 12 and not any(i.uid.startswith("wrong.csv:") for i in text_ws.store.items())
    # the queue hands them out no more, though the checked-out version keeps them until the next data.ingest
    q = LabelQueue(text_ws, "lena")
    assert q.next() is None and q.progress()["unlabeled"] == 0 and q.progress()["total"] == 12, q.progress()
    log = subprocess.run(["git", "-C", str(text_ws.root), "log", "-1", "--format=%s"], capture_output=True, text=True)
    assert log.stdout.strip() == f"data: remove source {wrong}", log
    # imported again, its items come back with the label lena gave
    add_source(text_ws, tmp_path / "wrong.csv", {"unlabeled": True})
    item = next(i for i in text_ws.store.items() if i.uid == uid)
    from runtime.labeling import current_states

    assert current_states(text_ws.store)[item.id].label == "x"
    # the same items as data.split last saw, so the same fingerprint, but without a split: data.split stayed up
    # to date and data.ingest failed with "some items have no split: run data.split first" on every run
    split = next(s for s in Runner(text_ws).statuses() if s.id == "data.split")
    assert (split.status.value, split.reason) == ("stale", "6 item(s) have no split (imported again since it ran)")
    res = Runner(text_ws).run(until="data.version")
    assert res.ok, [(o.step, o.error) for o in res.steps]
    assert next(o for o in res.steps if o.step == "data.split").status == "done"
    assert next(s for s in Runner(text_ws).statuses() if s.id == "data.split").status.value == "done"
    # by its path, as cdl.yaml has it
    remove_source(text_ws, str(tmp_path / "b" / "sport.csv"))
    assert len(text_ws.store.items()) == 12
    # down to the last source, then that one too: it failed with "no sources configured", so that a workspace's
    # only source, imported by mistake, could not be removed
    remove_source(text_ws, "wrong.csv")
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "data", "remove", "news.csv"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "(0 remain)" in r.stdout and r.stdout.rstrip().endswith("no source is left: `cdl data import SOURCE` adds "
                                                                   "one"), r.stdout
    assert text_ws.store.item_count() == 0 and text_ws.config().params("data.import")["sources"] == []
    res = Runner(text_ws).run(until="data.split")  # says what to do, where "run data.import first" went round
    assert not res.ok and res.steps[-1].error.startswith("no items: the workspace has no source; `cdl data import")


def test_a_source_swapped_for_another_of_as_many_items_is_seen_by_the_labeling_queue(text_ws, tmp_path):
    """The queue found items imported or removed since data.ingest by a count: a source removed and another of as
    many items imported kept handing out the removed one's items, and never the new ones, until the next ingest."""
    from runtime.api import add_source, remove_source
    from runtime.labeling import LabelQueue

    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    (tmp_path / "keep.csv").write_text("text,label\n" + "".join(f"{w} markets shares,x\n" for w in words)
                                       + "".join(f"{w} football match,y\n" for w in words))
    (tmp_path / "old.csv").write_text("text\n" + "".join(f"{w} the old unlabeled texts\n" for w in words))
    (tmp_path / "new.csv").write_text("text\n" + "".join(f"{w} the new unlabeled texts\n" for w in words))
    add_source(text_ws, tmp_path / "keep.csv")
    add_source(text_ws, tmp_path / "old.csv", {"unlabeled": True})
    assert Runner(text_ws).run(until="data.version").ok
    q = LabelQueue(text_ws, "lena")
    assert q.next().uid.startswith("old.csv:") and q.progress()["unlabeled"] == 6
    remove_source(text_ws, "old.csv")
    add_source(text_ws, tmp_path / "new.csv", {"unlabeled": True})
    assert text_ws.store.item_count() == 18  # as many as the checked-out version holds
    q = LabelQueue(text_ws, "lena")
    handed = q.next()
    assert handed is not None and handed.uid.startswith("new.csv:"), handed
    assert q.progress() == {"total": 18, "labeled": 12, "conflicts": 0, "unlabeled": 6}, q.progress()
    # after the next ingest the recorded state says nothing changed, and the queue is the same
    assert Runner(text_ws).run(until="data.version").ok
    q = LabelQueue(text_ws, "lena")
    assert q.next().uid.startswith("new.csv:") and q.progress()["unlabeled"] == 6


def test_a_test_set_alone_is_refused_by_the_split_with_what_to_do(tmp_path):
    """A source that puts every item in the test split (an export of the test split imported again, idx t10k
    files alone): data.split said "train 0, test 12" with a tick, and model.preprocess failed later with "v1 has no
    labeled training items"."""
    from runtime.jobs import Runner
    from runtime.workspace import Workspace

    src = tmp_path / "exported"
    for c in ("sport", "tech"):
        (src / "test" / c).mkdir(parents=True)
        for k in range(6):
            (src / "test" / c / f"{k}.txt").write_text(f"{c} article number {k}: " + f"{c} words " * 10)
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    assert add_source(ws, src).ok
    res = Runner(ws).run(until="data.split")
    split = next(o for o in res.steps if o.step == "data.split")
    assert split.status == "failed" and split.error.startswith(
        "every item is in the test split, as its source says (exported: a test/ folder"), split.error
    assert "`cdl run --set data.split.use_source_split=false --save`" in split.error
    assert {i.split for i in ws.store.items()} == {None}  # nothing assigned
    res = Runner(ws).run(until="data.split", overrides={"data.split": {"use_source_split": False}})
    assert res.ok and res.steps[-1].message.startswith("train 10, test 2"), res.steps[-1].message
