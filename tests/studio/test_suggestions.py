"""Pre-annotations: the champion guesses the label of every item still to decide (`cdl labels suggest`); the
annotation panel shows the guess and Enter takes it; a guess is not a label."""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile

from PySide6.QtCore import Qt

from tests.conftest import make_bbc_subset

GIBBERISH = "zzqx qqxw blorp vrrnk ptoo qqzzx wwqx blorpt zzkq xxqv"  # long enough for data.validate's min_length
LATE = "The striker scored twice as the club won the cup final in extra time on Saturday afternoon"


def test_suggestions_from_the_champion_in_the_annotation_panel(small_bbc, tmp_path, qtbot):
    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.labeling import LabelQueue
    from runtime.registry import review
    from studio.panels.base import StudioContext
    from studio.panels.labeling.panel import LabelingPanel

    ws = small_bbc
    assert Runner(ws).run(until="model.evaluate", overrides={"model.tune": {"n_trials": 1}}).ok
    review(ws.store, "ws:1", True, "fine", "vera")
    # new articles without labels (the next 6 of each class), whose true class the test knows
    src = make_bbc_subset(tmp_path / "more.zip", per_class=36)
    truth: dict[str, str] = {}
    with zipfile.ZipFile(src) as zf, open(tmp_path / "new.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        seen: dict[str, int] = {}
        for n in zf.namelist():
            cls = n.split("/")[-2]
            seen[cls] = seen.get(cls, 0) + 1
            if seen[cls] > 30 and n.endswith(".txt") and not n.endswith("sport/199.txt"):
                text = zf.read(n).decode("utf-8", "replace")
                w.writerow([text])
                truth[text.strip()] = cls
        w.writerow([GIBBERISH])  # no word the model knows: its guess for an empty text is no suggestion
    assert add_source(ws, tmp_path / "new.csv", {"unlabeled": True}).ok
    assert Runner(ws).run(until="data.label").ok
    labels_before = len(ws.store.labels())
    stale_before = {s.id: s.status.value for s in Runner(ws).statuses()}
    todo = len(LabelQueue(ws).rows("unlabeled")) - 1  # 30 new articles, less any that duplicates another
    assert 25 <= todo <= 30
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "suggest"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"ws:1 suggested labels for {todo} item(s): " in out.stdout, out.stdout
    assert "1 item(s) have no word ws:1 knows: no suggestion for them" in out.stdout, out.stdout
    # guesses are not labels: no label row, nothing turns stale
    assert len(ws.store.labels()) == labels_before
    assert {s.id: s.status.value for s in Runner(ws).statuses()} == stale_before
    q = LabelQueue(ws, "lena")
    right = 0
    for item in q.rows("unlabeled"):
        sug = q.suggestion(item.item_id)
        if q.content(item.uid).strip() == GIBBERISH:
            assert sug is None  # it was "business 0.83", which a labeler takes for a judgement
            continue
        assert sug is not None and sug["model"] == "ws:1" and 0 < sug["confidence"] <= 1
        right += sug["label"] == truth[q.content(item.uid).strip()]
    assert right >= 0.8 * todo, (right, todo)  # the champion is right on most of the new articles
    # a Label Studio export carries them as predictions with their score (pre-annotations there too)
    from runtime.labeling import export_label_studio

    export_label_studio(ws, tmp_path / "ls.json")
    import json

    tasks = json.loads((tmp_path / "ls.json").read_text())
    predicted = [t for t in tasks if t["predictions"]]
    assert len(predicted) == todo and all(t["total_annotations"] == 0 for t in predicted)
    pred = predicted[0]["predictions"][0]
    assert pred["model_version"] == "ws:1" and 0 < pred["score"] <= 1
    assert pred["result"][0]["value"]["choices"][0] == q.suggestion(predicted[0]["data"]["cdl_item"])["label"]
    # the panel shows the guess; Enter takes it
    p = LabelingPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    p.labeler.setText("lena")
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.refresh()
    shown = p.current
    sug = q.suggestion(shown.item_id)
    assert f"suggested by ws:1: <b>{sug['label']}</b>" in p.meta.text()
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        qtbot.keyClick(p, Qt.Key.Key_Return)
    (mine,) = [r for r in ws.store.labels() if r.labeler == "lena"]
    assert (mine.item_id, mine.label, mine.source) == (shown.item_id, sug["label"], "manual")
    # the panel's Suggest runs `cdl labels suggest` in a process of its own, and says what it did
    p.suggest_btn.click()
    qtbot.waitUntil(lambda: "ws:1 suggested labels for" in p.status_label.text(), timeout=120000)
    assert f"for {todo - 1} item(s)" in p.status_label.text()  # one fewer to decide now
    # active learning: the items the model is least sure of first, in the queue, the CLI and the panel
    from runtime.domain.errors import CdlError

    q2 = LabelQueue(ws, "otto")
    ordered = q2.rows("unlabeled", "uncertain")
    assert q2.suggestion(ordered[-1].item_id) is None  # the item with no guess comes after the others
    confidence = [q2.suggestion(r.item_id)["confidence"] for r in ordered[:-1]]
    assert confidence == sorted(confidence) and len(ordered) == todo and confidence[0] < confidence[-1]
    assert {r.item_id for r in ordered} == {r.item_id for r in q2.rows("unlabeled")}
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "next", "--order",
                          "uncertain", "--labeler", "otto", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["item"] == ordered[0].item_id  # and otto holds it now
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.order.setCurrentIndex(p.order.findData("uncertain"))
    assert p.current.item_id == ordered[1].item_id  # the least sure one otto does not hold
    (ws.root / ".cdl" / "label-suggestions.json").unlink()
    try:
        q2.rows("unlabeled", "uncertain")
        raise AssertionError("ordered without suggestions")
    except CdlError as exc:
        assert "`cdl labels suggest` first" in str(exc)
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.refresh()
    assert "No suggestions to order by yet: press Suggest" in p.status_label.text() and p.current is not None
    # articles imported after the dataset was made (no data.ingest since) get suggestions too: they are in the
    # queue at once, and their text is read from the import (it failed on a pack missing from data/dataset)
    with open(tmp_path / "later.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerow([LATE])
    assert add_source(ws, tmp_path / "later.csv", {"unlabeled": True}).ok
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "suggest"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"ws:1 suggested labels for {todo} item(s): " in out.stdout, out.stdout  # one labeled, one new
    (late,) = [r for r in LabelQueue(ws).rows("unlabeled") if LabelQueue(ws).content(r.uid).strip() == LATE]
    assert LabelQueue(ws).suggestion(late.item_id)["label"] == "sport"
