"""Each panel against a real small workspace and a real runtime process."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialog

from runtime.domain.errors import CdlError
from tests.studio.conftest import load


def test_data_panel(studio_ctx, qtbot):
    from studio.panels.data.panel import DataPanel

    p = DataPanel(studio_ctx)
    qtbot.addWidget(p)
    load(qtbot, p)
    assert p.sources.rowCount() == 1 and "ws-bbc.zip" in p.sources.item(0, 0).text()
    assert "items imported" in p.summary.text()
    assert p.cleaned.rowCount() == 1 and "sport/199.txt" in p.cleaned.item(0, 0).text()
    assert p.balance_plot is not None and p.samples_layout.count() == 12
    ticks = p.balance_plot.getAxis("bottom")._tickLevels[0]  # five classes: names on two staggered rows
    assert [t for _, t in ticks] == ["business", "\nentertainment", "politics", "\nsport", "tech"]
    assert p.sources.item(0, 4).text() == "yes"  # reachable here
    assert "look alike" not in p.val_summary.text()
    # that the quarantine is empty because data.validate found nothing, not because it never ran on this version
    assert re.search(r"data\.clean checked \d+ item\(s\) \(.+\); data\.validate checked \d+ item", p.val_summary.text()), \
        p.val_summary.text()


def test_an_empty_data_panel_points_at_the_source_row(qtbot, tmp_path):
    """It said "choose a source above" over a source row that is below the notice."""
    from runtime.workspace import Workspace
    from studio.panels.base import StudioContext
    from studio.panels.data.panel import DataPanel

    ws = Workspace.init(tmp_path / "ws", "image-classification")
    p = DataPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    p.show()
    load(qtbot, p)
    assert p.status_label.text() == "No data yet: choose a source below (File…, Folder…, or type its path) and Import it."
    note, row = p.status_label.mapTo(p, p.status_label.rect().topLeft()), p.path_edit.mapTo(p, p.path_edit.rect().topLeft())
    assert row.y() > note.y(), (note, row)


def test_data_panel_says_labels_that_look_alike(qtbot, tmp_path, monkeypatch):
    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.workspace import Workspace
    from studio.panels.base import StudioContext
    from studio.panels.data.panel import DataPanel

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    rows = ["text,label"] + [f"article {i} with enough words in it to pass the length rule,{label}"
                             for i, label in enumerate(["sport"] * 5 + ["Sport"] * 2 + ["tech"] * 5)]
    (tmp_path / "mixed.csv").write_text("\n".join(rows) + "\n")
    add_source(ws, tmp_path / "mixed.csv")
    assert Runner(ws).run(until="data.validate").ok
    p = DataPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    load(qtbot, p)
    assert "Labels that look alike (one class spelt two ways?): 'Sport' (2) and 'sport' (5)" in p.val_summary.text()
    # the index is read once for the report and the samples both (it was read twice, 0.65 s each at 70 000 rows),
    # and a refresh with the same index reads it no more
    import runtime.workspace.dataset as dataset_mod

    reads, real = [], dataset_mod.read_index
    monkeypatch.setattr(dataset_mod, "read_index", lambda path: reads.append(path) or real(path))
    load(qtbot, p)
    assert reads == [] and "'Sport' (2) and 'sport' (5)" in p.val_summary.text(), reads
    # Merge spellings…: the dialog keeps the most used spelling; the choice goes into data.import's relabel and the
    # data pipeline runs again (only editing the source made them one class)
    from studio.panels.data.panel import MergeDialog

    assert not p.merge_btn.isHidden()
    dlg = MergeDialog(p.similar, p)
    assert dlg.combos[0].currentText() == "sport" and dlg.relabel() == {"Sport": "sport"}
    runs: list[tuple] = []
    p.sig_run.connect(lambda *a: runs.append(a))
    p._merge(lambda groups: {"sport": "Sport"})  # the user's call: the capitalised one
    assert runs == [(None, "data.validate", None)]
    assert ws.config().params("data.import")["relabel"] == {"sport": "Sport"}
    p._merge(lambda groups: {"Sport": "sport"})  # and back: the entry before goes, where it was refused as a loop
    assert ws.config().params("data.import")["relabel"] == {"Sport": "sport"}
    p._merge(lambda groups: {"sport": "Sport"})
    assert ws.config().params("data.import")["relabel"] == {"sport": "Sport"}
    runs.clear()
    assert "'sport' as 'Sport'" in p.status_label.text()
    assert Runner(ws).run(until="data.validate").ok
    reads.clear()
    load(qtbot, p)
    assert "look alike" not in p.val_summary.text() and p.merge_btn.isHidden()
    assert len(reads) == 1, reads  # the new index, once
    monkeypatch.undo()
    assert {r.label for r in ws.dataset().rows} == {"Sport", "tech"}
    ws.close()


def test_data_panel_marks_a_source_that_is_not_reachable(studio_ctx, qtbot, tmp_path, monkeypatch):
    import shutil

    from runtime.api import add_source
    from studio.panels.data.panel import DataPanel

    ws = studio_ctx.workspace
    (first,) = ws.store.sources()
    copy = tmp_path / "more-bbc.zip"
    shutil.copy(first.name, copy)
    assert add_source(ws, copy).ok
    copy.unlink()  # imported, then gone from this machine: its items stay
    p = DataPanel(studio_ctx)
    qtbot.addWidget(p)
    load(qtbot, p)
    cells = {p.sources.item(i, 0).text(): p.sources.item(i, 4).text() for i in range(p.sources.rowCount())}
    assert cells == {first.name: "yes", str(copy): "no (its items stay)"}, cells  # it was blank where reachable
    # gone for good: Remove source… takes it out (only hand-editing cdl.yaml did), after a question
    from PySide6.QtWidgets import QMessageBox

    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *_: asked.append(text) or
                        QMessageBox.StandardButton.Yes)
    # off until a source is selected (it said "select a source in the table first" when pressed)
    assert not p.remove_btn.isEnabled() and p.remove_btn.toolTip().endswith("(select a source in the table first)")
    p.sources.selectRow([p.sources.item(i, 0).text() for i in range(p.sources.rowCount())].index(str(copy)))
    assert p.remove_btn.isEnabled()
    n = p.sources.item(p.sources.currentRow(), 2).text()
    with qtbot.waitSignal(p.sig_loaded, timeout=60000):
        p.remove_btn.click()
    assert asked == [f"Take {copy} out of the pipeline? Its {n} item(s) leave the workspace; labels people gave them "
                     "stay, and come back if it is imported again."], asked
    qtbot.waitUntil(lambda: p.sources.rowCount() == 1, timeout=30000)
    assert p.status_label.text().startswith(f"removed {copy}: {n} item(s) left the workspace"), p.status_label.text()
    assert [x.name for x in ws.store.sources()] == [first.name]


def test_data_panel_import_errors_are_shown(studio_ctx, qtbot, tmp_path, monkeypatch):
    from studio.panels.data.panel import ColumnsDialog, DataPanel

    p = DataPanel(studio_ctx)
    qtbot.addWidget(p)
    bad = tmp_path / "broken.csv"
    bad.write_text("text,author\nan article with no label yet and long enough,me\n")
    asked: list[tuple[str, str]] = []
    answer: list = [None]  # the columns dialog cancelled: the error stays
    monkeypatch.setattr(ColumnsDialog, "ask", lambda d: asked.append((d.text.currentText(), d.label.currentText()))
                        or answer[0])
    p.path_edit.setText(str(bad))
    p.import_btn.click()
    qtbot.waitUntil(lambda: "no label column" in p.status_label.text(), timeout=20000)
    qtbot.waitUntil(lambda: p.import_btn.isEnabled(), timeout=20000)
    assert asked == [("text", "author")]  # the panel asked which columns they are
    # imported unlabeled, with the box the Sources tab lacked (`--unlabeled` was the CLI's alone)
    p.unlabeled.setChecked(True)
    p.import_btn.click()
    qtbot.waitUntil(lambda: "imported broken.csv" in p.status_label.text(), timeout=20000)
    items = [i for i in studio_ctx.workspace.store.items() if i.source.startswith("broken.csv")]
    assert len(items) == 1 and items[0].source_label is None
    # columns named otherwise ("body", "topic"): only the CLI's --text-column and --label-column could name them
    p.unlabeled.setChecked(False)
    named = tmp_path / "named.csv"
    named.write_text("id,body,topic\n1,an article about markets and shares and long enough,business\n")
    answer[0] = {"text_column": "body", "label_column": "topic"}
    asked.clear()
    p.path_edit.setText(str(named))
    p.import_btn.click()
    qtbot.waitUntil(lambda: "imported named.csv" in p.status_label.text(), timeout=20000)
    assert asked == [("body", ColumnsDialog.NONE)]  # three columns: the label is the user's pick
    items = [i for i in studio_ctx.workspace.store.items() if i.source.startswith("named.csv")]
    assert [i.source_label for i in items] == ["business"]
    (src,) = [e for e in studio_ctx.workspace.config().params("data.import")["sources"]
              if isinstance(e, dict) and e["path"].endswith("named.csv")]
    assert src["text_column"] == "body" and src["label_column"] == "topic"


def test_data_panel_offers_to_read_a_windows_csv_as_cp1252(studio_ctx, qtbot, tmp_path, monkeypatch):
    """A CSV that Excel saved on Windows (cp1252) was refused with "save it as UTF-8", and only the CLI could name
    its encoding; the panel asks, showing a line of it read so, and imports it as cp1252."""
    from PySide6.QtWidgets import QMessageBox

    from studio.panels.data.panel import DataPanel

    p = DataPanel(studio_ctx)
    qtbot.addWidget(p)
    win = tmp_path / "win.csv"
    win.write_bytes("text;label\r\nUn caf\u00e9 \u00e0 Z\u00fcrich, long enough to pass;business\r\n".encode("cp1252"))
    asked: list[str] = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *_: asked.append(text) or answer[0])
    p.path_edit.setText(str(win))
    p.import_btn.click()
    qtbot.waitUntil(lambda: bool(asked), timeout=20000)
    assert "win.csv is not UTF-8 text" in asked[0] and "Un caf\u00e9 \u00e0 Z\u00fcrich" in asked[0], asked[0]
    assert "not UTF-8" in p.status_label.text() and p.import_btn.isEnabled()  # answered No: nothing imported
    answer[0] = QMessageBox.StandardButton.Yes
    p.import_btn.click()
    qtbot.waitUntil(lambda: "imported win.csv" in p.status_label.text(), timeout=20000)
    ws = studio_ctx.workspace
    assert [s.get("encoding") for s in ws.config().params("data.import")["sources"]
            if isinstance(s, dict) and s["path"] == str(win)] == ["cp1252"]
    from runtime.labeling import LabelQueue

    (item,) = [i for i in ws.store.items() if i.source.startswith("win.csv")]
    assert LabelQueue(ws, "ana").content(item.uid).startswith("Un caf\u00e9 \u00e0 Z\u00fcrich")


def _labeling_panel_showing_all(ctx, qtbot):  # noqa: ANN001, ANN202
    """A labeling panel, shown, its filter on 'all' (set before the first load), loaded."""
    from studio.panels.labeling.panel import LabelingPanel

    p = LabelingPanel(ctx)
    qtbot.addWidget(p)
    p.show()
    p.filter.blockSignals(True)
    p.filter.setCurrentText("all")
    p.filter.blockSignals(False)
    load(qtbot, p)
    return p


def test_labeling_panel_keeps_what_an_import_said(studio_ctx, qtbot, tmp_path, monkeypatch):
    """The reload after an action cleared the panel's message at once: an import's counts (and "nothing to undo")
    were never seen."""
    from PySide6.QtWidgets import QFileDialog

    from runtime.labeling import export_label_studio

    p = _labeling_panel_showing_all(studio_ctx, qtbot)
    export_label_studio(studio_ctx.workspace, tmp_path / "ls.json")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(tmp_path / "ls.json"), ""))
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p._import_ls()
    qtbot.wait(100)
    assert p.status_label.isVisible() and "already here (the same labeler's same label)" in p.status_label.text()
    # the export writes, beside it, the labeling config a Label Studio project needs to take it
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "out.json"), ""))
    said: list[str] = []
    say = p.say
    monkeypatch.setattr(p, "say", lambda text, kind="info": (said.append(text), say(text, kind)))
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p._export_ls()
    qtbot.wait(100)
    assert "labeling config (5 classes) to out.label_config.xml beside it" in p.status_label.text()
    # it says that it works, and how far, from its worker thread (it said nothing until it ended: 14 s for 70 000
    # images)
    import json
    import re

    tasks_written = len(json.loads((tmp_path / "out.json").read_text()))  # duplicates are one task
    assert said[0] == "exporting for Label Studio…", said
    m = re.fullmatch(r"exporting for Label Studio: (\d+) of (\d+) item\(s\)…", said[1])
    assert m and m[1] == m[2] and int(m[1]) >= tasks_written, said
    assert '<Choice value="tech"/>' in (tmp_path / "out.label_config.xml").read_text()
    # an export with a task that matches no item here: the panel asks whether to import the others (it said "pass
    # --skip-unmatched", an option the panel has not)
    import json

    from PySide6.QtWidgets import QMessageBox

    tasks = json.loads((tmp_path / "ls.json").read_text())
    tasks.append({"id": 999, "data": {"text": "an article nobody imported"}, "annotations": []})
    (tmp_path / "more.json").write_text(json.dumps(tasks))
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(tmp_path / "more.json"), ""))
    monkeypatch.setattr(QMessageBox, "question",
                        lambda parent, title, text, *a: asked.append(text) or QMessageBox.StandardButton.Yes)
    p._import_ls()
    qtbot.waitUntil(lambda: "matched no item and were left out" in p.status_label.text(), timeout=30000)
    assert len(asked) == 1 and "1 task(s) match no item" in asked[0] and "--skip-unmatched" not in asked[0]
    assert p.status_label.text().endswith("; 1 task(s) matched no item and were left out")
    # the import said that it works, and how far, each time (it said nothing until it ended: 10 s for an export of
    # 70 000 images), and closing the window no longer names it
    imports = [s for s in said if s.startswith("importing labels from more.json")]
    assert imports.count("importing labels from more.json…") == 2, imports
    counts = [re.fullmatch(r"importing labels from more.json: (\d+) of (\d+) task\(s\)…", s) for s in imports]
    assert {(m[1], m[2]) for m in counts if m} >= {("0", str(len(tasks))), (str(len(tasks)), str(len(tasks)))}, imports
    assert not p.in_progress
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.No)
    p._import_ls()
    qtbot.waitUntil(lambda: "match no item of the checked-out dataset" in p.status_label.text(), timeout=30000)
    assert "--skip-unmatched" not in p.status_label.text()


def test_labeling_panel_keys_skip_undo(studio_ctx, qtbot, tmp_path):
    p = _labeling_panel_showing_all(studio_ctx, qtbot)
    assert p.classes == ["business", "entertainment", "politics", "sport", "tech"]
    assert len(p._class_buttons) == 5 and p._class_buttons[0].text().startswith("1")
    first = p.current
    assert first is not None and p.text.toPlainText()
    # named by its uid, as `cdl labels next` names it and `cdl labels set` takes it; the source in the tooltip
    assert p.meta.text().startswith(f"<b>{first.uid}</b>") and first.source in p.meta.toolTip()
    # Undo is off while there is nothing of the labeler's to undo (it was on, and answered "nothing to undo")
    me = p.labeler.text().strip()
    assert not p.undo_btn.isEnabled() and "nothing to undo" in p.undo_btn.toolTip()
    # a click beside the widgets focuses the panel, whose keys label (not the scroll area it is laid out in)
    p.show()
    p.labeler.setFocus()
    qtbot.mouseClick(p.heading, Qt.MouseButton.LeftButton)
    assert p.hasFocus(), QApplication.focusWidget()
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        qtbot.keyClick(p, Qt.Key.Key_5)  # tech
    recs = [r for r in studio_ctx.workspace.store.labels() if r.source == "manual"]
    assert [(r.item_id, r.label) for r in recs] == [(first.item_id, "tech")]
    assert p.undo_btn.isEnabled() and p.undo_btn.toolTip() == (
        f"undo {me}'s label tech of {first.uid} ({first.item_id[:12]})"), p.undo_btn.toolTip()
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        qtbot.keyClick(p, Qt.Key.Key_U)
    assert [r for r in studio_ctx.workspace.store.labels() if r.source == "manual"] == []
    # what it undid and what the item has now, as `cdl labels undo` says (it said nothing)
    qtbot.waitUntil(lambda: p.status_label.text().startswith(f"undid {me}'s label tech of {first.uid} ("),
                    timeout=20000)
    now = f"labeled {first.label}" if first.label else "unlabeled"
    assert p.status_label.text().endswith(f"; it is {now} now"), p.status_label.text()
    assert not p.undo_btn.isEnabled()
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        qtbot.keyClick(p, Qt.Key.Key_S)
    assert p.current is not None and p.current.uid != first.uid
    # every item is labeled: 'unlabeled' is empty, and the panel says so where the item would be
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        p.filter.setCurrentText("unlabeled")
    assert p.current is None
    assert p.text.isVisible() and "Nothing left to label under 'unlabeled'" in p.text.toPlainText()
    assert "0 unlabeled" in p.text.toPlainText()
    # and where to go from here (it ended there)
    assert "Choose 'labeled' under Show to look over the labels given, or import more data in the Data panel." \
        in p.text.toPlainText(), p.text.toPlainText()
    assert not any(b.isEnabled() for b in p._class_buttons) and not p.skip_btn.isEnabled()
    p.grab().save(str(tmp_path / "labeling-empty.png"))
    # a second source labels an item otherwise: a conflict, not in 'unlabeled', which says where to find it
    row = studio_ctx.workspace.dataset().rows[-1]  # (the first was skipped above)
    other = next(c for c in p.classes if c != row.label)
    studio_ctx.workspace.store.add_label(row.id, other, "ls:9", "import")
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        p.filter.setCurrentText("labeled")
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        p.filter.setCurrentText("unlabeled")
    assert "1 conflicts in all. Choose 'conflicts' under Show to decide" in p.text.toPlainText(), p.text.toPlainText()
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        p.filter.setCurrentText("conflicts")
    assert p.current is not None and p.current.item_id == row.id and "conflicting labels" in p.meta.text()
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        p.filter.setCurrentText("all")
    assert p.current is not None and all(b.isEnabled() for b in p._class_buttons) and p.skip_btn.isEnabled()


def test_the_labelers_name_stays_for_the_next_session(studio_ctx, qtbot):
    """The Labeler field went back to the login name at every start: a labeler who typed their name once labeled
    as someone else the next day."""
    from PySide6.QtCore import QSettings

    from studio.panels.labeling.panel import LabelingPanel

    QSettings("CDL", "Studio").remove("labeler")
    p = _labeling_panel_showing_all(studio_ctx, qtbot)
    p.labeler.setText("  ana ")
    p.labeler.editingFinished.emit()
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        qtbot.keyClick(p, Qt.Key.Key_1)
    assert [r.labeler for r in studio_ctx.workspace.store.labels() if r.source == "manual"] == ["ana"]
    again = LabelingPanel(studio_ctx)  # the next session's panel
    qtbot.addWidget(again)
    assert again.labeler.text() == "ana"
    again.labeler.setText("")  # an empty field is not kept: the name comes back, and labels carry it
    again.labeler.editingFinished.emit()
    assert QSettings("CDL", "Studio").value("labeler") == "ana"
    assert again.labeler.text() == "ana" and "still labeling as 'ana'" in again.status_label.text()
    again.labeler.setText(" ")  # and a blank name reaching the queue is refused, where it labeled as "labeler"
    with pytest.raises(CdlError, match="labeler's name"):
        again._queue().set_label(studio_ctx.workspace.store.items()[0].id, "sport")
    QSettings("CDL", "Studio").remove("labeler")


def test_versions_panel_diff_and_checkout(studio_ctx, qtbot, monkeypatch):
    from runtime.jobs import Runner
    from runtime.labeling import LabelQueue
    from studio.panels.versions.panel import VersionsPanel

    ws = studio_ctx.workspace
    row = ws.dataset().rows[0]
    LabelQueue(ws, "x").set_label(row.uid, "politics" if row.label != "politics" else "tech")
    assert Runner(ws).run(until="data.version").ok
    p = VersionsPanel(studio_ctx)
    qtbot.addWidget(p)
    load(qtbot, p)
    assert p.table.rowCount() == 2
    # how many are unlabeled, beside the counts (a version made by labeling alone read as the one before it)
    header = [p.table.horizontalHeaderItem(c).text() for c in range(p.table.columnCount())]
    unlabeled = {v.id: (v.classes or {}).get("(unlabeled)", 0) for v in ws.store.versions()}
    assert {p.table.item(r, 0).text(): p.table.item(r, header.index("unlabeled")).text() for r in range(2)} == {
        k: str(n) for k, n in unlabeled.items()}
    # Diff, Check out and Export are off until the selection fits them (each said so only when pressed)
    assert not any(b.isEnabled() for b in (p.diff_btn, p.checkout_btn, p.export_btn))
    assert p.diff_btn.toolTip().endswith("(select two versions (Ctrl+click))"), p.diff_btn.toolTip()
    p.table.selectRow(0)
    assert not p.diff_btn.isEnabled() and p.checkout_btn.isEnabled() and p.export_btn.isEnabled()
    p.table.selectAll()
    assert p.diff_btn.isEnabled() and not p.checkout_btn.isEnabled() and not p.export_btn.isEnabled()
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        p.diff_btn.click()
    assert "1 label changes" in p.diff_label.text()
    assert p.diff_table.rowCount() > 0
    p.table.clearSelection()
    p.table.selectRow([p.table.item(r, 0).text() for r in range(2)].index("v1"))
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.checkout_btn.click()
    assert ws.current_version() == "v1"
    # the column that says so is named (its header was blank)
    here = {p.table.item(r, 0).text(): p.table.item(r, header.index("in data/dataset")).text() for r in range(2)}
    assert here == {"v1": "checked out", "v2": ""}, here
    # Export the selected…: v2, not checked out, read from DVC's cache, to a JSON Lines file
    p.table.clearSelection()
    p.table.selectRow([p.table.item(r, 0).text() for r in range(2)].index("v2"))
    out = ws.root.parent / "v2.jsonl"
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p._export(str(out))
    assert p.status_label.text().startswith(f"wrote {len(ws.dataset().rows)} item(s) of v2 (test "), \
        p.status_label.text()
    import json as _json

    lines = [_json.loads(x) for x in out.read_text().splitlines()]
    assert {x["label"] for x in lines if x["id"] == row.id} == {"politics" if row.label != "politics" else "tech"}
    p.table.clearSelection()
    p.table.selectRow([p.table.item(r, 0).text() for r in range(2)].index("v1"))
    # no remote: the buttons wait for one, and the panel says how to add it
    assert not p.push_btn.isEnabled() and "Add remote… (`cdl data remote add NAME URL`)" in p.remote_label.text()
    # the message must not widen the panel (it sat in the button row, and the flowchart lost 70 px beside it)
    assert p.minimumSizeHint().width() <= 940, p.minimumSizeHint().width()
    import shutil

    # Add remote… (the panel had none: a studio user needed the CLI for it); the dialog checks what it is given
    from studio.panels.versions.panel import RemoteDialog

    dlg = RemoteDialog(None, {})
    qtbot.addWidget(dlg)
    assert dlg.name.text() == "backup" and not dlg.default.isEnabled()  # the first remote is the default
    dlg.accept()
    assert dlg.result() != QDialog.DialogCode.Accepted and "where: a folder or a URL" in dlg.error.text()
    taken = RemoteDialog(None, {"backup": "/x"})
    qtbot.addWidget(taken)
    assert taken.name.text() == "backup2"
    taken.name.setText("backup")
    taken.url.setText("/y")
    taken.accept()
    assert "backup is a remote already (/x)" in taken.error.text()

    def fill(dlg) -> QDialog.DialogCode:  # noqa: ANN001
        dlg.url.setText(str(ws.root.parent / "backup"))
        dlg.accept()
        return dlg.result()

    monkeypatch.setattr(RemoteDialog, "exec", fill)
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.remote_btn.click()
    assert f"DVC remote backup: {ws.root.parent / 'backup'}, the default." in p.status_label.text(), \
        p.status_label.text()
    assert ws.dvc.remotes() == {"backup": str(ws.root.parent / "backup")}
    assert p.push_btn.isEnabled() and "DVC remote: backup" in p.remote_label.text()
    # which versions the remote lacks: the column, and the line under the buttons
    remote_col = [p.table.horizontalHeaderItem(c).text() for c in range(p.table.columnCount())].index("on the remote")
    assert {p.table.item(r, remote_col).text() for r in range(2)} == {"not pushed"}
    assert "Not on it: v1, v2, whose data has no copy outside this folder" in p.remote_label.text()
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.push_btn.click()
    assert "2 version(s) on backup" in p.status_label.text()
    assert {p.table.item(r, remote_col).text() for r in range(2)} == {"yes"}
    assert p.remote_label.text().endswith("every version on it"), p.remote_label.text()
    shutil.rmtree(ws.root / ".dvc" / "cache")
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.pull_btn.click()
    assert "every version is in the cache" in p.status_label.text()
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.checkout_btn.click()
    assert ws.current_version() == "v1"
    # Free disk: says what would go and asks; No keeps it, Yes removes it (`cdl gc`)
    from PySide6.QtWidgets import QMessageBox

    orphan = ws.artifacts.put_bytes(b"x" * 3000)
    asked, answer = [], [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *_: asked.append(text) or answer[0])
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.gc_btn.click()
    assert len(asked) == 1 and "1 × files no model version" in asked[0] and "2.9 KiB" in asked[0], asked
    assert ws.artifacts.exists(orphan)
    answer[0] = QMessageBox.StandardButton.Yes
    p.gc_btn.click()
    qtbot.waitUntil(lambda: "removed 1 artifact" in p.status_label.text(), timeout=30000)
    assert not ws.artifacts.exists(orphan)
    p.gc_btn.click()  # (the reload after the removal may still be under way: wait for what this one says)
    qtbot.waitUntil(lambda: "nothing to remove" in p.status_label.text(), timeout=30000)
    assert len(asked) == 2
    assert p.minimumSizeHint().width() <= 940, p.minimumSizeHint().width()
    # Remove remote… forgets one (the studio had no way to; the CLI needed `dvc remote remove` too)
    from PySide6.QtWidgets import QInputDialog

    offered: list[list[str]] = []
    monkeypatch.setattr(QInputDialog, "getItem",
                        lambda parent, title, label, items, *a: offered.append(items) or (items[0], True))
    assert p.unremote_btn.isEnabled()
    p.unremote_btn.click()
    # (a reload started before may end first: wait for what the removal says, not for the next load)
    said = (f"removed remote backup ({ws.root.parent / 'backup'}); the data on it stays there; no remote is left")
    qtbot.waitUntil(lambda: p.status_label.text() == said, timeout=30000)
    assert offered == [[f"backup: {ws.root.parent / 'backup'} (default)"]], offered
    qtbot.waitUntil(lambda: not p.unremote_btn.isEnabled(), timeout=30000)  # the reload after it
    assert ws.dvc.remotes() == {} and not p.unremote_btn.isEnabled() and not p.push_btn.isEnabled()


def test_versions_panel_says_when_a_remote_needs_a_dvc_plugin(studio_ctx, qtbot, monkeypatch):
    """An s3:// remote without dvc-s3: Add remote… says so at once (DVC refused it only at the first push)."""
    from studio.panels.versions.panel import RemoteDialog, VersionsPanel

    p = VersionsPanel(studio_ctx)
    qtbot.addWidget(p)
    load(qtbot, p)

    def fill(dlg) -> QDialog.DialogCode:  # noqa: ANN001
        dlg.url.setText("s3://bucket/cdl")
        dlg.accept()
        return dlg.result()

    monkeypatch.setattr(RemoteDialog, "exec", fill)
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.remote_btn.click()
    assert "s3://bucket/cdl, the default; it needs the dvc-s3 package, which is not installed: `pip install dvc-s3`" \
        in p.status_label.text(), p.status_label.text()
    # and the remote's own line says so, where it said "Push every version backs them up"
    assert p.remote_label.text() == ("DVC remote: backup (s3://bucket/cdl) needs the dvc-s3 package, which is not "
                                     "installed: nothing can be pushed to it until `pip install dvc-s3`"), \
        p.remote_label.text()


def test_tuning_panel_live(studio_ctx, qtbot):
    from studio.panels.tuning.panel import TuningPanel

    p = TuningPanel(studio_ctx)
    qtbot.addWidget(p)
    p.show()
    load(qtbot, p)
    qtbot.waitUntil(lambda: p.trials.rowCount() == 1)  # the fixture's single trial (drawn on the next turn)
    assert p.parallel_axes == []  # one trial: nothing to compare, and the plot says so (nine axes ran together)
    studio_ctx.runtime.sig_event.connect(p.on_event)
    before = p.experiment.currentData()
    # while it runs: the run's own experiment and each trial's parameters, read as a trial begins (the table had a
    # running trial with no parameters beside the last experiment's name and plots until the run ended); and the
    # step's progress moves within a trial, epoch by epoch (0 % through the whole first trial)
    seen, progress = [], []
    p.sig_loaded.connect(lambda: p.live_label.text() and seen.append(
        (p.experiment.currentData(), p.experiment.currentText(), [t["params"] for t in p.trial_rows])))
    studio_ctx.runtime.sig_event.connect(
        lambda ev: progress.append((ev.fraction, ev.message)) if ev.kind.value == "progress" else None)
    with qtbot.waitSignal(studio_ctx.runtime.sig_job_finished, timeout=120000):
        studio_ctx.runtime.submit(["model.tune"], None, False, {"model.tune": {"n_trials": 3, "max_epochs": 2}})
        qtbot.waitUntil(lambda: len(p.curves) >= 1, timeout=60000)
    assert any(eid not in (None, before) and text.startswith("tune-") and rows and all(rows)
               for eid, text, rows in seen), seen
    assert (pytest.approx(0.5 / 3, abs=1e-3), "trial 0: epoch 1/2") in \
        [(f, m.split(" val_accuracy")[0]) for f, m in progress], progress
    assert any(m.startswith("trial 0: epoch 1/2 val_accuracy 0.") and m.endswith("(0/3 trials finished)")
               for _f, m in progress), progress
    load(qtbot, p)
    qtbot.waitUntil(lambda: p.trials.rowCount() == 3 and len(p.curve_items) == 3)
    assert set(p.plots) == {"history", "curves", "parallel", "importance", "loss"}
    assert set(p.parallel_axes) <= {"lr", "batch_size", "hidden", "dropout"} and len(p.parallel_axes) >= 2, \
        p.parallel_axes  # the parameters the trials differ in, not the fixed ones
    # each experiment in the list with its best value, as a leaderboard
    assert p.experiment.currentText().startswith("tune-") and ", done, best 0." in p.experiment.currentText(), \
        p.experiment.currentText()
    # "Train with this trial": one trial picked by hand goes into model.train's parameters (use_tuned off)
    assert not p.use_btn.isEnabled()
    p.trials.selectRow(2)
    assert p.use_btn.isEnabled()
    picked = next(t for t in studio_ctx.workspace.store.trials(p.experiment.currentData()) if t.number == 2)
    with qtbot.waitSignal(p.sig_message, timeout=5000):
        p.use_btn.click()
    params = studio_ctx.workspace.config().params("model.train")
    assert {k: params[k] for k in picked.params} == picked.params and params["use_tuned"] is False
    assert p.status_label.text().startswith("model.train now trains with tune-"), p.status_label.text()
    load(qtbot, p)  # what it said stays through the reload
    assert p.status_label.text().startswith("model.train now trains with tune-"), p.status_label.text()
    # a retry (what a tuning worker records when it runs again a dead worker's trial) says which trial it repeats
    store = studio_ctx.workspace.store
    lost = store.trials(p.experiment.currentData())[1]
    store.create_trial(lost.experiment_id, 3, lost.params, worker="host:1", retry_of=lost.number)
    load(qtbot, p)
    qtbot.waitUntil(lambda: p.trials.rowCount() == 4)
    col = p.trials.columns.index("retry of")
    cells = {p.trials.item(r, 0).text(): p.trials.item(r, col).text() for r in range(4)}
    assert cells == {"0": "", "1": "", "2": "", "3": str(lost.number)}, cells


def test_a_training_run_shows_its_losses_not_a_study(studio_ctx, qtbot):
    """model.train's experiment in the tuning dashboard: one trial, so its optimization history was a dot, the
    parallel coordinates and importances said "needs 3 finished trials; this study has 0", and its losses were
    nowhere. It shows as a training run: loss and accuracy per epoch, training and validation."""
    import pyqtgraph as pg

    from studio.panels.tuning.panel import TuningPanel

    p = TuningPanel(studio_ctx)
    qtbot.addWidget(p)
    p.show()
    p.set_step("model.train")
    load(qtbot, p)
    qtbot.waitUntil(lambda: p.trials.rowCount() == 1 and p.plots and not p.plots["loss"].isHidden(), timeout=10000)
    assert p.experiment.currentText().startswith("train-") and p.heading.text() == "Training run"
    assert [p.plots[n].isHidden() for n in ("history", "parallel", "importance")] == [True, True, True]
    # no tuning worker, no retried trial: those two columns are hidden (they stood blank beside its one row)
    assert [p.trials.isColumnHidden(c) for c in range(7)] == [False] * 4 + [True, True, False]
    epochs = len(studio_ctx.workspace.store.metrics(studio_ctx.workspace.store.trials(p.experiment.currentData())[0].id))
    qtbot.waitUntil(lambda: len([i for i in p.plots["loss"].getPlotItem().items if isinstance(i, pg.PlotDataItem)])
                    == 2, timeout=5000)
    lines = {i.name(): list(i.getData()[0]) for i in p.plots["loss"].getPlotItem().items
             if isinstance(i, pg.PlotDataItem)}
    assert lines == {"train_loss": list(range(1, epochs + 1)), "val_loss": list(range(1, epochs + 1))}, lines
    p.set_step("model.tune")
    load(qtbot, p)
    qtbot.waitUntil(lambda: not p.plots["history"].isHidden(), timeout=10000)
    assert p.heading.text() == "Tuning dashboard" and p.plots["loss"].isHidden()
    assert p.experiment.currentText().startswith("tune-")
    qtbot.waitUntil(lambda: not any(p.trials.isColumnHidden(c) for c in range(7)), timeout=10000)
    # a training run starting switches at once (it said "Tuning dashboard" over the study's plots until its first
    # epoch was read)
    from runtime.domain.events import Event, EventKind

    p.on_event(Event(EventKind.STARTED, "model.train"))
    qtbot.waitUntil(lambda: not p.plots["loss"].isHidden(), timeout=5000)
    assert p.heading.text() == "Training run" and p.plots["history"].isHidden()


def test_models_and_review_panels(studio_ctx, qtbot, monkeypatch):
    from runtime.jobs import Runner
    from studio.panels.models.panel import ModelsPanel
    from studio.panels.review.panel import ReviewPanel

    ws = studio_ctx.workspace
    assert Runner(ws).run(steps=["model.train"], overrides={"model.train": {"seed": 3, "use_tuned": False}}).ok
    assert Runner(ws).run(steps=["model.register"]).ok
    assert Runner(ws).run(steps=["model.evaluate"]).ok
    m = ModelsPanel(studio_ctx)
    qtbot.addWidget(m)
    load(qtbot, m)
    assert m.models.rowCount() == 2 and m.experiments.rowCount() >= 2
    # each experiment's trials and the versions from it, as `cdl experiments list` says them
    last = m.experiments.rowCount() - 1
    cells = {c: m.experiments.item(last, m.experiments.columns.index(c)).text() for c in ("trials", "models", "best")}
    assert cells["models"] == "ws:2" and cells["trials"].endswith(" epochs"), cells
    assert cells["best"].startswith("val_accuracy 0."), cells
    # the selected (newest) version's training run, per epoch, as MLflow charts a run's metrics
    newest = ws.store.resolve_model("ws:2")
    epochs = ws.store.metrics(newest.trial_id)
    qtbot.waitUntil(lambda: bool(m.curve_data.get("accuracy", {}).get("val")), timeout=20000)
    assert m.curve_data["accuracy"]["val"] == [(e["epoch"], e["val_accuracy"]) for e in epochs]
    assert len(m.curve_data["loss"]["train"]) == len(epochs) >= 1
    assert m.curve_plots["loss"].getPlotItem().titleLabel.text == "ws:2: loss per epoch"
    # its lineage as `cdl models lineage` prints it, then the full record (the raw JSON was all it showed)
    text = m.lineage.toPlainText()
    assert text.startswith("ws:2\ndataset version  v1 (") and "\nexperiment       train-" in text, text[:400]
    assert "\n\nthe full record (`cdl models lineage ws:2 --json`):\n{" in text, text[:1200]
    # Compare the two selected: a dialog side by side, from `cdl models compare` in a process of its own
    from studio.widgets.compare_dialog import summary_text

    m.models.selectAll()
    m.compare_btn.click()
    qtbot.waitUntil(lambda: m.compare_dialog is not None and m.compare_dialog.isVisible(), timeout=60000)
    dlg = m.compare_dialog
    assert dlg.windowTitle() == "Compare ws:1 and ws:2" and "the same data and test split" in dlg.summary.text()
    # its columns share the width the dialog has (760 on the offscreen screen), wrapped: none behind a scroll bar
    qtbot.wait(50)
    assert dlg.width() <= dlg.screen().availableGeometry().width() - 40
    assert dlg.table.horizontalHeader().length() <= dlg.table.viewport().width() + 1, (
        dlg.table.horizontalHeader().length(), dlg.table.viewport().width())
    cells = {dlg.table.item(i, 0).text(): (dlg.table.item(i, 1).text(), dlg.table.item(i, 2).text())
             for i in range(dlg.table.rowCount())}
    assert cells["seed"][1] == "3" and cells["dataset version"] == ("v1", "v1")
    seed_row = next(i for i in range(dlg.table.rowCount()) if dlg.table.item(i, 0).text() == "seed")
    assert dlg.table.item(seed_row, 0).foreground().color().name() == "#b45309"  # it differs: in colour
    one = ws.store.resolve_model("ws:1")
    assert float(cells["test_accuracy"][0]) == pytest.approx(one.metrics["test_accuracy"], abs=1e-4)
    dlg.close()
    m.models.clearSelection()
    m.models.selectRow(0)  # one selected: Compare is off and says what it needs (it said so only when pressed)
    assert not m.compare_btn.isEnabled() and m.compare_btn.toolTip().endswith("(select two versions (Ctrl+click))")
    assert m.report_btn.isEnabled() and m.predict_btn.isEnabled() and m.delete_btn.isEnabled()
    m.models.clearSelection()
    assert not any(b.isEnabled() for b in (m.compare_btn, m.report_btn, m.predict_btn, m.delete_btn))
    assert m.delete_btn.toolTip().endswith("(select one version)")
    # Report…: the selected version's page
    m.models.clearSelection()
    m.models.selectRow(0)
    page = studio_ctx.workspace.root.parent / "ws-1.html"
    m._report(str(page))
    qtbot.waitUntil(lambda: "wrote" in m.status_label.text(), timeout=20000)
    assert page.exists() and "<h1>ws:1</h1>" in page.read_text()
    # Predict a file…: every row of a CSV through the selected version, written to a CSV, agreement said
    classes = ws.store.resolve_model("ws:1").classes
    src = studio_ctx.workspace.root.parent / "batch.csv"
    src.write_text("text,label\n" + "".join(f"a short article about {c} and more {c} news,{c}\n" for c in classes))
    out = studio_ctx.workspace.root.parent / "batch-predictions.csv"
    m._predict_file(source=str(src), output=str(out))
    qtbot.waitUntil(lambda: "is predicting" not in m.status_label.text(), timeout=60000)
    said = m.status_label.text()
    assert said.startswith(f"wrote {len(classes)} prediction(s) of ws:1 for batch.csv to {out}; ") and \
        f"of {len(classes)} agree with the labels it gives (accuracy" in said, said
    assert out.read_text().splitlines()[0] == "model,input,given,label,confidence," + ",".join(classes) + \
        ",known_words"
    assert "no word the model knows" not in said
    src.write_text(src.read_text() + "zzzqx qqqxw,\n")  # words the model never saw: its guess for an empty text
    m._predict_file(source=str(src), output=str(out))
    qtbot.waitUntil(lambda: "is predicting" not in m.status_label.text(), timeout=60000)
    assert m.status_label.text().endswith("; 1 text(s) have no word the model knows (known_words 0: its guess for "
                                          "an empty text)"), m.status_label.text()
    # Delete… refuses the champion, and the version model.register made last, at once, saying what to do first (it
    # asked "Delete ws:1?" and then refused the answer yes); the runtime test asks about and deletes one
    from PySide6.QtWidgets import QMessageBox

    asked: list[str] = []
    original = QMessageBox.question
    QMessageBox.question = lambda parent, title, text, *_: asked.append(text) or QMessageBox.StandardButton.Yes
    try:
        for row, says in ((0, "cannot delete: ws:1 is the champion: approve another version"),
                          (1, "cannot delete: ws:2 is the version model.register made last")):
            m.models.clearSelection()
            m.models.selectRow(row)
            assert m.models.selected_data() == [f"ws:{row + 1}"]
            m.delete_btn.click()
            assert says in m.status_label.text(), m.status_label.text()
    finally:
        QMessageBox.question = original
    assert asked == []
    ws.store.resolve_model("ws:1")
    ws.store.resolve_model("ws:2")
    doc = {"a": "ws:1", "b": "ws:2", "same_test_set": False,
           "on_split": {"of": "ws:2", "dataset_version": "v2", "b": {"ref": "ws:2", "n": 30},
                        "a": {"ref": "ws:1", "n": 30, "seen_in_training": 21, "classes_it_lacks": {"tech": 4}}}}
    assert summary_text(doc) == ("ws:1 and ws:2 were tested on different test splits: ws:1 was measured on ws:2's "
                                 "as well (v2, 30 items). 21 of them were in ws:1's training data, which flatters "
                                 "it. Classes ws:1 does not know: tech.")
    r = ReviewPanel(studio_ctx)
    qtbot.addWidget(r)
    load(qtbot, r)
    assert r.candidate.currentData() == "ws:2"
    # each version says its aliases and where its review stands, as `cdl models list` does
    texts = [r.candidate.itemText(i) for i in range(r.candidate.count())]
    assert texts[0].startswith("ws:1  (champion, approved by ") and texts[1] == "ws:2  (challenger, awaiting review)", \
        texts
    assert r.versus.text() == "against champion ws:1 (the same test split)"
    assert r.metrics.rowCount() == 3 and r.cm_candidate.rowCount() == 5 and r.cm_champion.rowCount() == 5
    assert r.cm_champion.isVisibleTo(r) and r.cm_candidate_label.text().endswith("(rows: true, columns: predicted)")
    # the whole matrix in view, in the room the panel has beside the flowchart (the last class needed scrolling)
    r.resize(1000, 740)
    r.show()
    qtbot.wait(50)
    for cm in (r.cm_candidate, r.cm_champion):
        last = cm.visualItemRect(cm.item(4, 4))
        assert last.bottom() <= cm.viewport().height(), (last, cm.viewport().height())
    # the review history as tall as its rows: a fixed 150 pixels kept empty rows' room, where the per-class table
    # above showed two and a half of ten classes
    events = r.history.rowCount()
    rows = [[r.history.item(i, c).text() for c in range(1, 5)] for i in range(events)]
    assert ["became challenger", "2", "", "registered"] in rows, rows  # the reason under "by" read as a person
    assert 2 <= events <= 6 and r.history.maximumHeight() < r.history.horizontalHeader().height() + 23 * (events + 1)
    last = r.history.visualItemRect(r.history.item(events - 1, 0))
    assert last.bottom() <= r.history.viewport().height(), (last, r.history.viewport().height())
    # the per-class figures whole in their own tab (below the matrices they showed two and a half of ten classes)
    r.details.setCurrentWidget(r.per_class)
    qtbot.wait(50)
    assert r.details.tabText(1) == "Per class: precision, recall, f1" and r.per_class.rowCount() == 5
    last = r.per_class.visualItemRect(r.per_class.item(4, 0))
    assert last.bottom() <= r.per_class.viewport().height(), (last, r.per_class.viewport().height())
    r.details.setCurrentIndex(0)
    two = ws.store.resolve_model("ws:2")
    shown = r.metrics.item(0, 2).data(Qt.ItemDataRole.DisplayRole)
    assert shown == pytest.approx(two.evaluation["champion"]["test_accuracy"], abs=1e-4)
    # a champion trained on another dataset version: its column shows it on this version's test split (what
    # model.evaluate measured), and the line above says so, with the items it trained on
    other = {**two.evaluation["champion"], "same_test_set": False, "dataset_version": "v0", "seen_in_training": 3,
             "test_accuracy": 0.5, "classes_it_lacks": {"tech": 4}}
    ws.store.update_model("ws", 2, evaluation={**two.evaluation, "champion": other})
    load(qtbot, r)
    assert r.versus.text() == ("against champion ws:1 (trained on v0), both on this version's test split "
                               f"(v1, {other['n']} items); 3 of them were in the champion's training data, which "
                               "flatters it; classes the champion does not know: tech")
    ws.store.update_model("ws", 2, evaluation={**two.evaluation, "champion": {**other, "seen_in_training": 1}})
    load(qtbot, r)
    assert "; 1 of them was in the champion's training data" in r.versus.text()  # it read "1 of them were"
    ws.store.update_model("ws", 2, evaluation={**two.evaluation, "champion": other})
    load(qtbot, r)
    assert r.metrics.item(0, 2).data(Qt.ItemDataRole.DisplayRole) == 0.5
    assert "on this test split" in r.cm_champion_label.text()
    failed = {"ref": "ws:1", "dataset_version": "v0", "same_test_set": False, "error": "its checkpoint is gone"}
    ws.store.update_model("ws", 2, evaluation={**two.evaluation, "champion": failed}, transform="other")
    load(qtbot, r)
    assert r.versus.text() == ("against champion ws:1: its numbers are from its own test split (v1); it could not "
                               "be measured on this one: its checkpoint is gone")
    assert "on this test split" not in r.cm_champion_label.text()
    ws.store.update_model("ws", 2, transform=two.transform)
    ws.store.update_model("ws", 2, evaluation={**two.evaluation, "gate": {**two.evaluation["gate"], "value": 0.5,
                                                                          "passed": False}})
    load(qtbot, r)  # it said "ws:2 awaits review; gate … FAILED" of a version model.review never asks about
    assert r.status_label.text().startswith("ws:2 failed model.evaluate's gate (test_accuracy 0.5000 < threshold"), \
        r.status_label.text()
    assert "gate failed (test_accuracy 0.5000" in r.candidate.currentText(), r.candidate.currentText()
    load(qtbot, m)  # the models table says it in red, as a rejection (it was the grey of "awaits review")
    assert m.models.item(1, 2).text().startswith("gate failed (test_accuracy 0.5000"), m.models.item(1, 2).text()
    assert m.models.item(1, 2).foreground().color().name() == "#b91c1c"
    ws.store.update_model("ws", 2, evaluation=two.evaluation)
    r.comment.setText("better on politics")
    r.reviewer.setText("vera")
    with qtbot.waitSignal(r.sig_loaded, timeout=20000):
        r.reject_btn.click()
    assert ws.store.reviews("ws", 2)[-1].decision == "rejected"
    assert r.status_label.text().endswith("rejected by vera: better on politics; ws:1 stays the champion")
    # the champion chosen as the candidate: nothing to compare it with, and the panel says so (it showed its
    # metrics twice, with no change, beside an empty matrix)
    r.candidate.setCurrentIndex(r.candidate.findData("ws:1"))
    with qtbot.waitSignal(r.sig_loaded, timeout=20000):
        r.candidate.activated.emit(r.candidate.currentIndex())
    assert r.candidate.currentData() == "ws:1"
    assert r.versus.text().startswith("is the champion")
    # approving the champion again is only one more review: the button is off, and says why; Reject still works
    assert not r.approve_btn.isEnabled() and r.approve_btn.toolTip() == "ws:1 is the champion already"
    assert r.reject_btn.isEnabled()
    assert r.cm_candidate.rowCount() == 5 and r.cm_champion.rowCount() == 0
    assert not r.cm_champion.isVisibleTo(r) and r.cm_candidate_label.text().endswith("; it is the champion")
    # the longer caption wraps: in one line it made the panel wider than the room beside the flowchart at 1024
    assert r.cm_candidate_label.minimumSizeHint().width() < r.cm_candidate_label.fontMetrics().horizontalAdvance(
        r.cm_candidate_label.text())
    assert all(r.metrics.item(i, 2).text() == "" for i in range(r.metrics.rowCount()))
    # rejecting the champion demotes it: the champion before it comes back, and the panel says so (it stayed
    # champion, rejected, and deploy.export went on exporting it)
    r.candidate.setCurrentIndex(r.candidate.findData("ws:2"))
    with qtbot.waitSignal(r.sig_loaded, timeout=20000):
        r.candidate.activated.emit(r.candidate.currentIndex())
    assert r.approve_btn.isEnabled()
    r.reviewer.setText("vera")
    # a version that failed the gate: Approve asks first (it became the champion at a click); No changes nothing
    from PySide6.QtWidgets import QMessageBox

    good = ws.store.resolve_model("ws:2").evaluation
    ws.store.update_model("ws", 2, evaluation={**good, "gate": {**good["gate"], "value": 0.5, "passed": False}})
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *_: asked.append(text) or
                        QMessageBox.StandardButton.No)
    before = len(ws.store.reviews("ws", 2))
    r.approve_btn.click()
    assert asked and asked[0].startswith("ws:2 failed model.evaluate's gate (test_accuracy 0.5000 < threshold"), asked
    assert len(ws.store.reviews("ws", 2)) == before and ws.store.model_version("ws", "champion").version == 1
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *_: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(r.sig_loaded, timeout=20000):
        r.approve_btn.click()
    assert ws.store.model_version("ws", "champion").version == 2
    assert "[gate overridden: test_accuracy 0.5000 < threshold" in ws.store.reviews("ws", 2)[-1].comment
    ws.store.update_model("ws", 2, evaluation=good)
    r.comment.setText("the test split leaked into training")
    with qtbot.waitSignal(r.sig_loaded, timeout=20000):
        r.reject_btn.click()
    assert ws.store.model_version("ws", "champion").version == 1
    assert "It was the champion: ws:1 is the champion again" in r.status_label.text()
    assert "against champion ws:1" in r.versus.text()
    # more events than the history shows rows: the newest in view (the oldest were, the newest needed scrolling)
    qtbot.wait(50)
    events = r.history.rowCount()
    newest = r.history.visualItemRect(r.history.item(events - 1, 0))
    assert events > 6 and 0 <= newest.top() and newest.bottom() <= r.history.viewport().height(), (
        events, newest, r.history.viewport().height())
    # loaded before it is shown, as the window opens it: the newest row whole once the layout sets the table's height
    # (it scrolled at fill time, for the old height, and left the newest row half hidden)
    r2 = ReviewPanel(studio_ctx)
    qtbot.addWidget(r2)
    load(qtbot, r2)
    r2.resize(1000, 740)
    r2.show()
    qtbot.wait(100)
    newest = r2.history.visualItemRect(r2.history.item(r2.history.rowCount() - 1, 0))
    assert 0 <= newest.top() and newest.bottom() <= r2.history.viewport().height(), (
        newest, r2.history.viewport().height())
    # the two confusion matrices side by side where both fit whole, one above the other where they do not (at 1024
    # pixels each showed part of its columns behind a sideways scroll bar)
    assert r2.cm_champion.isVisible() and r2.cm_champion.columnCount() == r2.cm_candidate.columnCount() == 5
    for width, side in ((1700, True), (440, False), (1700, True)):
        r2.resize(width, 740)
        qtbot.wait(50)
        a, b = r2.cm_candidate, r2.cm_champion
        assert r2.matrices.side_by_side is side and (a.y() == b.y()) is side and (b.x() == a.x()) is not side, width
        assert a.horizontalScrollBar().maximum() == 0 and b.horizontalScrollBar().maximum() == 0, width
    load(qtbot, m)  # the models panel shows each version's latest review
    col = m.models.columns.index("review")
    assert [m.models.item(i, col).text() for i in range(2)] == ["approved by tester",
                                                                  "rejected by vera"]
    # beside the flowchart at 1366 x 768 (a panel 854 wide), and narrower, every column of both tables is in view:
    # they scrolled sideways, the test accuracy and everything after it out of view
    m.show()
    for width in (854, 760):
        m.resize(width, 700)
        qtbot.wait(50)
        for t in (m.models, m.experiments):
            last = t.columnCount() - 1
            assert t.columnViewportPosition(last) + t.columnWidth(last) <= t.viewport().width(), (width, t.columns)
        assert m.models.fontMetrics().horizontalAdvance(m.models.item(0, 0).text()) < m.models.columnWidth(0)


def test_a_fitted_table_keeps_every_column_in_view(qtbot):
    """Table(fit=True): the widest columns narrowed to one width (none below its header's, the first whole), a cut
    text whole in its tooltip; contents that fit keep their widths; a resize fits them again."""
    from studio.widgets.common import Table

    t = Table(["name", "note", "score", "comment"], fit=True)
    qtbot.addWidget(t)
    t.resize(800, 300)
    t.show()
    long_note = "a note long enough to need a column of its own width " * 2
    t.fill([("resnet-fashion:12", long_note, 0.91, "short"), ("b", "x", 0.5, "also a long comment " * 4)])
    natural = list(t._natural)
    qtbot.wait(20)

    def right() -> int:
        return t.columnViewportPosition(3) + t.columnWidth(3)

    assert sum(natural) > 800 and right() <= t.viewport().width()
    assert t.columnWidth(0) == natural[0] and t.columnWidth(2) == natural[2]  # the name whole, the narrow as it was
    assert t.columnWidth(1) < natural[1] and t.item(0, 1).toolTip() == long_note
    t.resize(420, 300)
    qtbot.wait(20)
    assert right() <= t.viewport().width() and t.columnWidth(0) == natural[0]
    t.resize(3000, 300)
    qtbot.wait(20)
    assert [t.columnWidth(c) for c in range(3)] == natural[:3]  # room enough: as their contents want
    # another column named whole (a device's address) is not narrowed either
    w = Table(["name", "address", "note"], fit=True, whole=(0, 1))
    qtbot.addWidget(w)
    w.resize(500, 200)
    w.show()
    w.fill([("edge-1", "192.168.100.200:50051", long_note)])
    qtbot.wait(20)
    assert w.columnWidth(1) == w._natural[1] and w.columnWidth(2) < w._natural[2]
    assert w.columnViewportPosition(2) + w.columnWidth(2) <= w.viewport().width()


def test_compression_panel(studio_ctx, qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from edge_agent.proto.bundle import verify_bytes
    from runtime.keys import signing_key
    from studio.panels.compression.panel import CompressionPanel

    p = CompressionPanel(studio_ctx)
    qtbot.addWidget(p)
    load(qtbot, p)
    names = [p.table.item(r, 0).text() for r in range(p.table.rowCount())]
    assert names == ["fp32", "dynamic_int8", "static_int8"]
    assert p.table.item(0, 11).text() == "CPU"
    # Save bundle… writes the selected variant's signed bundle to a file, as `cdl package` does (only the CLI did)
    assert not p.save_btn.isEnabled()
    p.table.selectRow(1)
    assert p.save_btn.isEnabled()
    asked = []
    out = tmp_path / "b.cdlb"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (asked.append(a[2]), (str(out), ""))[1])
    with qtbot.waitSignal(p.sig_loaded, timeout=60000):
        p.save_btn.click()
    assert asked[0].endswith("-v1-dynamic_int8.cdlb")
    _, pub = signing_key(studio_ctx.workspace.root)
    assert verify_bytes(out.read_bytes(), [pub])["variant"] == "dynamic_int8"
    assert p.status_label.text().startswith(f"wrote {out} (") and "signed with the workspace's key" in \
        p.status_label.text()
    # the notes column in the room the panel has beside the flowchart, wrapped: it ran past the panel's edge
    p.resize(1000, 700)
    p.show()
    qtbot.wait(50)
    t = p.table
    right = t.columnViewportPosition(12) + t.columnWidth(12)
    assert right <= t.viewport().width(), (right, t.viewport().width())
    long = max(range(t.rowCount()), key=lambda r: len(t.item(r, 12).text()))
    # wrapped where it is wider than its column
    assert t.rowHeight(long) > t.rowHeight(0) or \
        t.fontMetrics().horizontalAdvance(t.item(long, 12).text()) < t.columnWidth(12)
    # beside the flowchart at 1366 x 768 (a panel 854 wide): every column in view and the notes at least 200 wide;
    # the headers in one line left the notes 120 pixels, the table scrolling sideways, each row four lines tall
    p.resize(854, 600)
    qtbot.wait(50)
    right = t.columnViewportPosition(12) + t.columnWidth(12)
    assert right <= t.viewport().width() and t.columnWidth(12) >= 200, (right, t.viewport().width(),
                                                                        t.columnWidth(12))
    # at 1024 x 768 (a panel 590 wide) the other columns alone scroll sideways: the notes stay on one line, out to
    # the right, where in 120 pixels they made each row five lines tall
    p.resize(590, 600)
    qtbot.wait(50)
    line = t.fontMetrics().height()
    assert t.columnViewportPosition(12) > t.viewport().width() - 120 and not t.wordWrap()
    assert all(t.rowHeight(r) < 2 * line for r in range(t.rowCount())), [t.rowHeight(r) for r in range(t.rowCount())]
    assert t.columnWidth(12) >= min(t.fontMetrics().horizontalAdvance(t.item(long, 12).text()), 900)
    p.resize(854, 600)  # and wrapped again where there is room
    qtbot.wait(50)
    assert t.wordWrap() and t.columnViewportPosition(12) + t.columnWidth(12) <= t.viewport().width()
    # a slower variant says at which batch size and by how much ("slower" alone, beside a faster batch-1 median,
    # looked a wrong mark)
    store = studio_ctx.workspace.store
    kept = store.variant("ws", 1, "static_int8").metrics
    base = store.variant("ws", 1, "fp32").metrics["latency_ms"]
    lat = {**base, "b1_p50": base["b1_p50"] * 0.9, "b64_p50": base["b64_p50"] * 1.5}
    try:
        store.put_variant("ws", 1, "static_int8", metrics={"latency_ms": lat, "slower_than_fp32": True,
                                                           "slower_at": ["b64"], "vs_fp32": {"b1": 0.9, "b64": 1.5}})
        load(qtbot, p)
        assert p.table.item(2, 10).text() == "slower\nat b64"
        assert p.table.item(2, 10).toolTip() == "SLOWER than fp32 at batch 64 (1.50× its median), timed in turns with FP32"
        store.put_variant("ws", 1, "static_int8", metrics={"slower_at": None})  # a revision from before: the mark
        load(qtbot, p)
        assert p.table.item(2, 10).text() == "slower"
    finally:
        store.put_variant("ws", 1, "static_int8", metrics=kept)
    # a variant compressed but never measured: its blank columns are explained (nothing said why they were blank)
    kept = store.variant("ws", 1, "dynamic_int8").metrics
    cfg = studio_ctx.workspace.config()
    try:
        store.put_variant("ws", 1, "dynamic_int8", metrics={"latency_ms": None})
        load(qtbot, p)
        assert p.status_label.text() == ("ws:1: dynamic_int8 not measured yet: run deploy.revise (the Revise step) for "
                                         "latency and test accuracy."), p.status_label.text()
        cfg.set_param("deploy.export", "model", "ws:7")  # another version is what deploy.revise measures
        cfg.save()
        load(qtbot, p)
        assert p.status_label.text() == ("ws:1: dynamic_int8 not measured: deploy.revise measures the variants of the "
                                         "version deploy.export exports, its model parameter, ws:7."), \
            p.status_label.text()
    finally:
        store.put_variant("ws", 1, "dynamic_int8", metrics=kept)
        cfg.set_param("deploy.export", "model", "champion")
        cfg.save()
    load(qtbot, p)
    assert not p.status_label.isVisible() or "not measured" not in p.status_label.text()


def test_devices_and_monitoring_panels(studio_ctx, qtbot, agent_factory, tmp_path, monkeypatch):
    import numpy as np
    import tritonclient.grpc as tc

    from studio.panels.devices.panel import DevicesPanel
    from studio.panels.monitoring.panel import MonitoringPanel

    ws = studio_ctx.workspace
    agent = agent_factory(ws, raw_below=1.01)
    cfg = ws.config()
    before = cfg.steps["deploy.push"].get("variant")
    cfg.steps["deploy.push"]["variant"] = "dynamic_int8"
    cfg.save()
    d = DevicesPanel(studio_ctx)
    qtbot.addWidget(d)
    load(qtbot, d)
    assert d.devices.rowCount() == 1 and d.model.count() == 3
    # the champion in deploy.push's variant is chosen (the first version's first variant was)
    assert d.model.currentText() == "ws:1:dynamic_int8", [d.model.itemText(i) for i in range(d.model.count())]
    cfg = ws.config()
    cfg.steps["deploy.push"].pop("variant") if before is None else cfg.steps["deploy.push"].update(variant=before)
    cfg.save()
    d.devices.selectRow(0)
    d.model.setCurrentText("ws:1:static_int8")
    with qtbot.waitSignal(d.sig_loaded, timeout=60000):
        d._push()
    assert "active" in d.status_label.text()
    assert d.history.rowCount() == 1
    c = tc.InferenceServerClient(agent.address, ssl=True, root_certificates=str(ws.root / ".cdl/pki/ca.crt"))
    for i in range(6):
        inp = tc.InferInput("text", [10], "BYTES")
        inp.set_data_from_numpy(np.array([f"completely unrelated words number {i} {j} zebra quantum".encode()
                                          for j in range(10)], dtype=object))
        c.infer("ws", [inp])
    c.close()
    # the table asks every device when it loads: live figures without a press of Health, and a device that does
    # not answer says so (it used to show the figures of the last Health press as if current)
    from runtime.devices import enroll

    enroll(ws, "gone", "127.0.0.1:9", tmp_path / "gone", cert_days=-1)  # and its certificate has expired
    import runtime.devices

    monkeypatch.setattr(runtime.devices, "BACKLOG_RECORDS", 50)  # the 60 records not collected yet: a warning
    load(qtbot, d)
    rows = {d.devices.item(r, 0).text(): [d.devices.item(r, c).text() for c in range(d.devices.columnCount())]
            for r in range(d.devices.rowCount())}
    assert rows["dev1"][1] == "online, 1 warning" and rows["dev1"][3] == "ws:1:static_int8", rows
    assert rows["dev1"][4] == "6", rows
    dev1 = [r for r in range(d.devices.rowCount()) if d.devices.item(r, 0).text() == "dev1"][0]
    assert d.devices.item(dev1, 1).toolTip().startswith("60 scoring records not collected yet: `cdl devices collect")
    assert d.devices.item(dev1, 1).foreground().color().name() == "#b45309"
    monkeypatch.undo()
    gone = [r for r in range(d.devices.rowCount()) if d.devices.item(r, 0).text() == "gone"][0]
    assert rows["gone"][1] == "unreachable", rows["gone"]
    # its figures are the last it gave: greyed, and their tooltip says so (they read as current)
    assert d.devices.item(gone, 3).foreground().color().name() == "#9ca3af"
    assert d.devices.item(gone, 3).toolTip().startswith("last known, when it last answered (")
    assert d.devices.item(dev1, 3).foreground().color().name() != "#9ca3af"
    assert d.devices.item(gone, 1).toolTip().startswith("device gone: health failed: UNAVAILABLE")
    assert d.devices.item(gone, 1).toolTip().endswith("--replace`) and copy the new folder to the device")
    assert rows["gone"][8].startswith("EXPIRED ") and "Enroll… it again" in d.devices.item(gone, 8).toolTip()
    assert rows["dev1"][8].startswith("until ") and d.devices.item(gone, 8).foreground().color().name() == "#b91c1c"
    # beside the flowchart at 1024 x 768 (a panel 590 wide) the columns are narrowed, but not the state: it read
    # "unre…" there
    d.resize(590, 600)
    d.show()
    qtbot.wait(50)
    fm = d.devices.fontMetrics()
    assert d.devices.columnWidth(1) >= max(fm.horizontalAdvance(t) for t in ("online, 1 warning", "unreachable"))
    assert d.devices.columnWidth(3) < d.devices._natural[3]  # (another column was narrowed: the table is fitted)
    d.devices.selectRow([r for r in range(d.devices.rowCount()) if d.devices.item(r, 0).text() == "dev1"][0])
    d._health()
    qtbot.waitUntil(lambda: " 6 requests" in d.status_label.text(), timeout=30000)
    # the line `cdl devices status` prints, with where a request's time went on the device
    assert ", 1 worker, " in d.status_label.text() and "items a batch" in d.status_label.text()
    assert "; a request: queue " in d.status_label.text() and " ms, onnxruntime " in d.status_label.text()
    # a device that is gone for good is removed, after a question that says what stays
    from PySide6.QtWidgets import QMessageBox

    asked: list[str] = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *_: asked.append(text) or answer[0])
    d.devices.selectRow(gone)
    d._remove()
    assert "Remove gone from this workspace?" in asked[0] and "history and scoring data stay" in asked[0]
    assert d.devices.rowCount() == 2  # answered No
    answer[0] = QMessageBox.StandardButton.Yes
    d._remove()  # the reload after it (another, from Health, may still be on its way: wait for the result itself)
    qtbot.waitUntil(lambda: [d.devices.item(r, 0).text() for r in range(d.devices.rowCount())] == ["dev1"],
                    timeout=30000)
    qtbot.waitUntil(lambda: "gone: removed from this workspace" in d.status_label.text(), timeout=30000)
    qtbot.waitUntil(lambda: d.history.item(0, 2).text() == "remove", timeout=30000)  # the reload after it
    m = MonitoringPanel(studio_ctx)
    qtbot.addWidget(m)
    m.sig_run.connect(lambda steps, until, over: studio_ctx.runtime.submit(steps, until, False, over))  # as the window
    with qtbot.waitSignal(studio_ctx.runtime.sig_job_finished, timeout=60000):
        studio_ctx.runtime.submit(["deploy.monitor"], None, False, {"deploy.monitor": {"min_records": 20}})
    load(qtbot, m)
    assert m.device.currentText() == "dev1"
    assert m.alerts.rowCount() == 1 and m.alerts.item(0, 4).text() == "DRIFT"
    assert "Drift on dev1" in m.status_label.text()
    with qtbot.waitSignal(studio_ctx.runtime.sig_job_finished, timeout=60000):
        m.retrain.click()
    load(qtbot, m)
    assert m.proposals.rowCount() == 1
    # the message says what comes next for this proposal, where it said "press Retrain…" again
    from runtime.proposals import close, proposals

    first = proposals(ws)[0]
    assert m.status_label.text().startswith(
        f"Drift on dev1: proposal {first['id']} has {first['samples']} of {first['samples']} sample(s) to label "
        "(Retrain… opens them in the labeling panel)."), m.status_label.text()
    with qtbot.waitSignal(m.sig_open_proposal, timeout=20000):
        m.retrain.click()
    # the proposal's samples labeled, and the version trained on them not better: Retrain… finds nothing new to
    # propose, and the panel says why (it said "press Retrain…" again, and again)
    from runtime.labeling import LabelQueue

    pid = proposals(ws)[0]["id"]
    # the labeling panel shown the proposal exports its samples alone for Label Studio (it wrote every item)
    from PySide6.QtWidgets import QFileDialog

    from studio.panels.labeling.panel import LabelingPanel

    lab = LabelingPanel(studio_ctx)
    qtbot.addWidget(lab)
    lab.set_filter(f"proposal:{pid}")  # as the monitoring panel's Retrain… opens it
    load(qtbot, lab)
    names: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda parent, title, start, *a: names.append(start) or (str(tmp_path / "p.json"), ""))
    with qtbot.waitSignal(lab.sig_loaded, timeout=30000):
        lab._export_ls()
    assert names[0].endswith(f"proposal-{pid}.json"), names
    import json

    tasks = json.loads((tmp_path / "p.json").read_text())
    assert len(tasks) == proposals(ws)[0]["samples"] and all(t["data"]["cdl_uid"].startswith(f"proposal:{pid}:")
                                                            for t in tasks), len(tasks)
    assert f"task(s) of proposal:{pid} to" in lab.status_label.text(), lab.status_label.text()
    q = LabelQueue(ws, lab.labeler.text())  # the panel holds the lease of the item it shows: its labeler goes on
    while (item := q.next(f"proposal:{pid}")) is not None:
        q.set_label(item.uid, "tech")
    load(qtbot, lab)  # the labeling panel, its queue empty, says what comes next for the proposal
    assert (f"Nothing left to label under 'proposal:{pid}'." in lab.text.toPlainText() and f"Proposal {pid}'s "
            f"{first['samples']} sample(s) are labeled: a model trained on them goes to review"
            in lab.text.toPlainText()), lab.text.toPlainText()
    load(qtbot, m)
    assert f"Drift on dev1: proposal {pid}'s {first['samples']} sample(s) are labeled; a model trained on them goes " \
        "to review" in m.status_label.text(), m.status_label.text()
    close(ws, pid, "rejected", "ws:2 was not better")
    load(qtbot, m)  # what came of the proposal made from this check (it said "press Retrain…" once it ended)
    assert m.status_label.text().startswith(
        f"Drift on dev1 at its last check, with ws:1: proposal {pid} came of it, rejected: ws:2 was not better; "
        "Collect and check now checks what it serves now"), m.status_label.text()
    with qtbot.waitSignal(studio_ctx.runtime.sig_job_finished, timeout=60000):
        m.retrain.click()
    load(qtbot, m)  # the window reloads every panel after a job
    assert m.status_label.text().startswith("dev1: drift, but the "), m.status_label.text()
    assert f"(proposal {pid}, rejected: ws:2 was not better)" in m.status_label.text(), m.status_label.text()
    assert "press Retrain" not in m.status_label.text()
    # empty texts and words the model never saw: answered with a confidence like any other, and no drift test says
    # so (an empty text's out-of-vocabulary rate is 0); the panel does, over the last check's window
    assert "no word the model knows" not in m.status_label.text()
    c = tc.InferenceServerClient(agent.address, ssl=True, root_certificates=str(ws.root / ".cdl/pki/ca.crt"))
    inp = tc.InferInput("text", [10], "BYTES")
    inp.set_data_from_numpy(np.array([b"", b"zzqx qqxw"] * 5, dtype=object))
    c.infer("ws", [inp])
    c.close()
    with qtbot.waitSignal(studio_ctx.runtime.sig_job_finished, timeout=60000):
        studio_ctx.runtime.submit(["deploy.monitor"], None, False, {"deploy.monitor": {"min_records": 20}})
    load(qtbot, m)
    assert m.status_label.text().endswith(" dev1: 10 of 70 text(s) had no word the model knows (14 %): their "
                                          "answers are its guess for an empty text."), m.status_label.text()
    # a false alarm (a test client's empty texts): Dismiss proposal… ends the open proposal, where `cdl loop` waited
    # for every sample to be labeled; its samples leave the labeling queue
    assert not m.dismiss_btn.isEnabled()  # nothing open
    with qtbot.waitSignal(studio_ctx.runtime.sig_job_finished, timeout=60000):
        m.retrain.click()
    load(qtbot, m)
    open_ = [p for p in proposals(ws) if p["status"] == "open"]
    assert len(open_) == 1 and m.dismiss_btn.isEnabled(), proposals(ws)
    from PySide6.QtWidgets import QInputDialog

    asked: list[str] = []
    monkeypatch.setattr(QInputDialog, "getText", lambda parent, title, text, *_: asked.append(title) or (
        "empty texts from a test client", True))
    with qtbot.waitSignal(m.sig_loaded, timeout=30000):
        m.dismiss_btn.click()
    assert asked == [f"Dismiss proposal {open_[0]['id']}"], asked
    assert m.status_label.text() == (f"{open_[0]['id']} dismissed: {open_[0]['samples']} unlabeled sample(s) left "
                                     "the labeling queue, 0 labeled kept; they are not proposed again (new scoring "
                                     "data is)."), m.status_label.text()
    assert proposals(ws)[-1]["status"] == "dismissed" and proposals(ws)[-1]["note"] == "empty texts from a test client"
    assert not m.dismiss_btn.isEnabled() and LabelQueue(ws, "x").next(f"proposal:{open_[0]['id']}") is None


def test_a_runtime_error_reaches_the_user_as_its_message(studio_ctx, qtbot):
    from studio.services.tasks import run_task

    errors: list[str] = []
    run_task(studio_ctx.runtime.client.cancel_job, "nosuchjob", on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=20000)
    assert errors[0].startswith("the runtime says: ") and "nosuchjob" in errors[0], errors
    assert "_InactiveRpcError" not in errors[0]



def test_a_call_queued_after_the_runtime_connection_closed_prints_no_traceback(qtbot, capfd):
    """Closing the studio closes its runtime connection; a status poll queued before printed "ValueError: Cannot
    invoke RPC on closed channel!" with a traceback on the terminal."""
    from runtime.server.client import RuntimeClient
    from studio.services.tasks import run_task

    client = RuntimeClient("127.0.0.1:9")
    client.close()
    errors: list[str] = []
    run_task(client.get_status, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=20000)
    assert errors == ["the connection to the runtime was closed"]
    assert "Traceback" not in capfd.readouterr().err


def test_a_result_that_comes_back_after_the_window_closed_prints_no_traceback(qtbot, capfd):
    """A status read still running when the studio quits finds its signals deleted: it printed "RuntimeError:
    Signal source has been deleted" with a traceback on the terminal, at every screenshot."""
    import threading

    import shiboken6

    from studio.services.tasks import run_task, wait_all

    go, ran = threading.Event(), threading.Event()

    def slow() -> int:
        go.wait(10)
        ran.set()
        return 1

    task = run_task(slow, on_done=lambda _r: None)
    shiboken6.delete(task.signals)  # what closing the window does to a task's receiver
    go.set()
    assert wait_all(10000)
    assert ran.is_set()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Signal source has been deleted" not in err, err


def test_a_ten_class_confusion_matrix_is_whole_in_half_the_review_panel(qtbot):
    """Fashion-MNIST's ten classes, named "T-shirt/top" … "Ankle boot": the named columns overflowed half the review
    panel, behind a scroll bar that also hid the last row. The columns are numbered as the rows are, each column's
    name in its tooltip; five short names keep their columns' names."""
    from studio.panels.review.panel import _confusion
    from studio.widgets.common import Table

    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    cm = [[1000 if i == j else (i * 7 + j) % 90 for j in range(10)] for i in range(10)]
    t = Table([])
    qtbot.addWidget(t)
    _confusion(t, {"classes": classes, "confusion_matrix": cm})
    t.resize(500, t.minimumHeight())  # half of the room beside the flowchart
    t.show()
    qtbot.wait(50)
    last = t.visualItemRect(t.item(9, 9))
    assert last.right() <= t.viewport().width() and last.bottom() <= t.viewport().height(), \
        (last, t.viewport().size())
    assert [t.horizontalHeaderItem(k).text() for k in (0, 9)] == ["1", "10"]
    assert t.horizontalHeaderItem(9).toolTip() == "Ankle boot"
    assert [t.verticalHeaderItem(k).text() for k in (0, 9)] == ["1 T-shirt/top", "10 Ankle boot"]
    _confusion(t, {"classes": ["business", "sport", "tech"], "confusion_matrix": [[5, 0, 0], [0, 5, 0], [0, 0, 5]]})
    assert t.horizontalHeaderItem(1).text() == "sport" and t.verticalHeaderItem(1).text() == "sport"


def test_labeling_keys_reach_past_nine_classes(qtbot, tmp_path):
    """Ten classes or more (Fashion-MNIST has ten): 0 picks the tenth and letters the ones after, as Label
    Studio's hotkeys go; the buttons wrap into rows. The tenth class used to have no key at all."""
    import csv

    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.workspace import Workspace
    from studio.panels.base import StudioContext

    classes = [f"c{k:02d}" for k in range(12)]
    src = tmp_path / "twelve.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for k, c in enumerate(classes):
            for j in range(3):
                w.writerow([f"item {j} of class {k}: " + "word " * (20 + j), c])
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    assert add_source(ws, src).ok
    assert Runner(ws).run(until="data.label").ok
    p = _labeling_panel_showing_all(StudioContext(ws.root, ws, None), qtbot)
    assert p.classes == classes
    assert [b.text().split()[0] for b in p._class_buttons] == [*"123456789", "0", "Q", "W"]
    p.resize(1400, 700)
    rows = lambda: len({b.y() for b in p._class_buttons})  # noqa: E731
    qtbot.waitUntil(lambda: p.buttons_box.columns == 10 and rows() == 2, timeout=5000)  # ten to a row, with room
    p.resize(560, 700)  # fewer where not, each button whole (ten to a row made the panel 892 pixels wide)
    qtbot.waitUntil(lambda: p.buttons_box.columns < 10 and rows() == -(-12 // p.buttons_box.columns), timeout=5000)
    assert p.minimumSizeHint().width() <= 560
    # the buttons above take a line of their own, not a column beside the choices (four lines high at 1024)
    assert p.suggest_btn.mapTo(p, p.suggest_btn.rect().topLeft()).y() == p.agreement_btn.mapTo(
        p, p.agreement_btn.rect().topLeft()).y()
    qtbot.waitUntil(lambda: all(b.width() >= b.sizeHint().width() for b in p._class_buttons), timeout=5000)
    for key, want in ((Qt.Key.Key_0, "c09"), (Qt.Key.Key_Q, "c10")):
        item = p.current
        with qtbot.waitSignal(p.sig_loaded, timeout=20000):
            qtbot.keyClick(p, key)
        manual = {r.item_id: r.label for r in ws.store.labels() if r.source == "manual"}
        assert manual[item.item_id] == want
    before = len([r for r in ws.store.labels() if r.source == "manual"])
    qtbot.keyClick(p, Qt.Key.Key_E)  # no thirteenth class: E does nothing
    qtbot.wait(200)
    assert len([r for r in ws.store.labels() if r.source == "manual"]) == before
    p.grab().save(str(tmp_path / "labeling-twelve.png"))
    ws.close()


def test_labeling_panel_takes_a_label_studio_labeling_config(qtbot, tmp_path, monkeypatch, ls_dir):
    """Photos to label and a Label Studio project's labeling config: Import Label Studio… takes the .xml (it offered
    JSON only), and the class keys are its choices, in its order, where New class… had to name each of ten."""
    import numpy as np
    from PIL import Image
    from PySide6.QtWidgets import QFileDialog

    from runtime.api import add_source
    from runtime.workspace import Workspace
    from studio.panels.base import StudioContext

    (tmp_path / "photos").mkdir()
    for i in range(4):
        Image.fromarray(np.full((20, 20), 40 * i, dtype=np.uint8)).save(tmp_path / "photos" / f"p{i}.png")
    ws = Workspace.init(tmp_path / "ws", "image-classification")
    assert add_source(ws, tmp_path / "photos").ok
    p = _labeling_panel_showing_all(StudioContext(ws.root, ws, None), qtbot)
    assert p.classes == [] and p._class_buttons == []
    config = ls_dir / "image_classification_label_config.xml"
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(config), ""))
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p._import_ls()
    qtbot.wait(100)
    assert p.classes[:3] == ["T-shirt/top", "Trouser", "Pullover"] and len(p._class_buttons) == 10
    assert p._class_buttons[9].text().split()[0] == "0" and "Ankle boot" in p._class_buttons[9].text()
    assert "image_classification_label_config.xml: 10 classes, now this workspace's" in p.status_label.text()
    item = p.current
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        qtbot.keyClick(p, Qt.Key.Key_2)
    assert {r.item_id: r.label for r in ws.store.labels() if r.source == "manual"} == {item.item_id: "Trouser"}
    p.grab().save(str(tmp_path / "labeling-config.png"))
    ws.close()


def test_devices_panel_pushes_to_several_and_canary_first(studio_ctx, qtbot, agent_factory, monkeypatch):
    from runtime.devices import DeviceClient
    from studio.panels.devices.panel import DevicesPanel

    ws = studio_ctx.workspace
    agent_factory(ws, "dev1")
    agent_factory(ws, "dev2")
    d = DevicesPanel(studio_ctx)
    qtbot.addWidget(d)
    load(qtbot, d)

    def active(name: str) -> str:
        with DeviceClient(ws, name) as c:
            return c.health()["active"]["variant"]

    d.devices.selectAll()
    d.model.setCurrentText("ws:1:fp32")
    with qtbot.waitSignal(d.sig_loaded, timeout=60000):
        d._push()
    assert "dev1, dev2: ws:1:fp32 active" in d.status_label.text()
    assert active("dev1") == active("dev2") == "fp32"
    d.devices.selectAll()  # in table order: dev1 is the canary
    d.model.setCurrentText("ws:1:static_int8")
    d.canary.setChecked(True)
    d.watch.setValue(1)
    with qtbot.waitSignal(d.sig_loaded, timeout=60000):
        d._push()
    # nobody called the canary while it was watched: nothing was judged, and the panel says so (it said "did well")
    assert ("canary dev1 answered no request while watched, so nothing was judged there (send it traffic while it "
            "is watched, or use a longer watch): ws:1:static_int8 active on dev1, dev2") in d.status_label.text(), \
        d.status_label.text()
    from studio.panels.devices.panel import _canary_said

    assert _canary_said("dev1", {"requests": 12, "errors": 0, "drift": False}) == \
        "canary dev1 did well (12 requests, 0 errors, no drift)"
    assert active("dev1") == active("dev2") == "static_int8"
    # and its predictions tested for drift (`cdl deploy --check-drift`): none while watched, said so
    assert d.drift.isEnabled()
    d.drift.setChecked(True)
    d.devices.selectAll()
    d.model.setCurrentText("ws:1:fp32")
    with qtbot.waitSignal(d.sig_loaded, timeout=60000):
        d._push()
    assert ("canary dev1 answered no request while watched, so nothing was judged there (send it traffic while it "
            "is watched, or use a longer watch): ws:1:fp32 active on dev1, dev2") in d.status_label.text(), \
        d.status_label.text()
    d.canary.setChecked(False)
    assert not d.drift.isEnabled()
    d.canary.setChecked(True)
    d.devices.clearSelection()
    d.devices.selectRow(0)
    d._push()
    assert "needs two devices or more" in d.status_label.text()
    assert d.minimumSizeHint().width() <= 940  # the push controls on a line of their own: a laptop's width
    # a version its reviewer rejected: Push asks first (it went out at a click); No sends nothing
    from PySide6.QtWidgets import QMessageBox

    ws.store.add_review("ws", 1, "vera", "rejected", "leaks", False)
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *_: asked.append(text) or
                        QMessageBox.StandardButton.No)
    d.canary.setChecked(False)
    d.model.setCurrentText("ws:1:static_int8")
    n = len(ws.store.deployments())
    d._push()
    assert asked == ["ws:1 was rejected by vera (leaks). Push it to dev1 all the same?"], asked
    assert len(ws.store.deployments()) == n and active("dev1") == "fp32"
    # a rollback is not asked about (one does it in a hurry), but a rejected version serving again is said
    with qtbot.waitSignal(d.sig_loaded, timeout=60000):
        d._rollback()
    assert "ws:1 was rejected by vera (leaks), and serves on dev1 again" in d.status_label.text(), \
        d.status_label.text()


def test_data_panel_shows_photos_of_many_sizes_and_modes(qtbot, tmp_path):
    """The Analysis tab stacked its sample images into one array: photos of two sizes failed the whole load
    ("all input arrays must have the same shape"), and an RGBA PNG was drawn as RGB, skewed and striped."""
    import numpy as np
    from PIL import Image

    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.workspace import Workspace
    from studio.panels.base import StudioContext
    from studio.panels.data.panel import DataPanel, _image_pixmap

    root = tmp_path / "photos"
    for cls, rgb in (("red", (220, 20, 20)), ("green", (20, 220, 20))):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            im = Image.fromarray(np.full((10 + 5 * i, 30 - 4 * i, 3), rgb, np.uint8))
            (im.convert("RGBA") if i == 0 else im.convert("L") if i == 1 else im).save(root / cls / f"{i}.png")
    # and a file that does not decode, which data.validate quarantines: the panel failed to load at all
    # ("UnidentifiedImageError: cannot identify image file <_io.BytesIO …>"), its sources table empty
    (root / "red" / "broken.png").write_bytes(b"not an image")
    ws = Workspace.init(tmp_path / "ws", "image-classification")
    add_source(ws, root)
    assert Runner(ws).run(until="data.validate").ok
    p = DataPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    load(qtbot, p)
    assert not p.status_label.isVisible() or "shape" not in p.status_label.text(), p.status_label.text()
    assert "Error" not in p.status_label.text(), p.status_label.text()
    assert p.sources.rowCount() == 1 and p.quarantine.rowCount() == 1
    assert p.image_samples.layout().count() == 8 and p.samples_layout.count() == 0  # images flow, as many to a row as fit
    # the labeling panel's progress says the quarantined item is left out ("8 of 8 labeled" beside 9 imported)
    from studio.panels.labeling.panel import LabelingPanel

    lab = LabelingPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(lab)
    load(qtbot, lab)
    assert lab.progress.text() == "8 of 8 labeled (1 quarantined, left out: Data ▸ Validation)", lab.progress.text()
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    img = _image_pixmap(rgba, 5).toImage()
    assert {img.pixelColor(x, y).getRgb()[:3] for x in range(img.width()) for y in range(img.height())} == {(200, 0, 0)}
    ws.close()


def test_new_class_names_the_first_class_of_an_unlabeled_folder(qtbot, tmp_path):
    """Photos imported unlabeled have no class yet, and the labeling panel had no button to name one: only
    `cdl labels set ITEM LABEL --new-class`."""
    import numpy as np
    from PIL import Image

    from runtime.api import add_source
    from runtime.workspace import Workspace
    from studio.panels.base import StudioContext
    from studio.panels.labeling.panel import LabelingPanel

    flat = tmp_path / "to-label"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8 + i), 60 * i, np.uint8)).save(flat / f"{i}.png")
    ws = Workspace.init(tmp_path / "ws", "image-classification")
    add_source(ws, flat)  # and nothing else: imported items are labeled before any data.ingest
    p = LabelingPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    p.labeler.setText("ana")
    load(qtbot, p)
    assert p.current is not None and not p.image.pixmap().isNull()
    assert p.classes == [] and "no classes yet: <b>New class…</b> names the first" in p.meta.text()
    assert p.new_class_btn.isEnabled()
    with qtbot.waitSignal(p.sig_loaded, timeout=20000):
        p.new_class(" cat ")
    assert p.classes == ["cat"] and len(p._class_buttons) == 1
    assert [(r.label, r.labeler) for r in ws.store.labels()] == [("cat", "ana")]
    p.new_class("Cat")  # one class spelt two ways: refused, nothing labeled
    assert "'Cat' is the class 'cat' spelt another way" in p.status_label.text()
    assert len(ws.store.labels()) == 1
    cfg = ws.config()  # classes fixed in cdl.yaml: a new one goes there
    cfg.labeling["classes"] = ["cat", "dog"]
    cfg.save()
    load(qtbot, p)
    assert not p.new_class_btn.isEnabled() and "labeling.classes" in p.new_class_btn.toolTip()
    ws.close()



def test_a_class_with_no_test_item_has_no_scores_and_no_share_of_macro_f1():
    """7 items of 4 classes, one held out: the review panel showed precision, recall and F1 0 for the three classes
    the test split did not have, as if the model failed on them, and macro-F1 read 0.25 for a model right on its
    one test item."""
    import numpy as np

    from runtime.ml.common import evaluate_labels
    from studio.panels.review.panel import per_class_rows

    ev = evaluate_labels(np.array([0]), np.array([0]), ["a", "b", "c", "d"])
    assert ev["macro_f1"] == 1.0 and ev["test_accuracy"] == 1.0
    rows = per_class_rows(ev, None)
    assert rows[0] == ("a", 1, 1.0, 1.0, 1.0, None, None)
    assert rows[1] == ("b", 0, None, None, None, None, None)
    # a class predicted but absent from the test split keeps its precision (0: every such prediction is wrong)
    # and its place in macro-F1, as scikit-learn's default counts it
    ev = evaluate_labels(np.array([0, 1]), np.array([0, 2]), ["a", "b", "c", "d"])
    assert ev["macro_f1"] == pytest.approx(1 / 3)
    rows = {r[0]: r for r in per_class_rows(ev, ev)}
    assert rows["c"] == ("c", 0, 0.0, None, None, 0.0, None) and rows["d"][2:] == (None,) * 5
    assert rows["b"] == ("b", 1, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_the_data_panel_says_what_an_import_left_out(qtbot, image_ws, tmp_path):
    """The panel said "imported photos" alone: a studio user never learnt that Thumbs.db and notes.txt were left
    out, or how many items came in. It now gives the count and the importer's notes, as `cdl data import` does."""
    import numpy as np
    from PIL import Image

    from studio.panels.base import StudioContext
    from studio.panels.data.panel import DataPanel

    root = tmp_path / "photos"
    for cls in ("cats", "dogs"):
        (root / cls / "2024").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i + (0 if cls == "cats" else 9), np.uint8)).save(root / cls / f"{i}.png")
        Image.fromarray(np.full((8, 8), 200 if cls == "cats" else 210, np.uint8)).save(root / cls / "2024" / "x.png")
        (root / cls / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (root / cls / "notes.txt").write_text("taken in May")
    p = DataPanel(StudioContext(image_ws.root, image_ws, None))
    qtbot.addWidget(p)
    p.path_edit.setText(str(root))
    p.import_btn.click()
    qtbot.waitUntil(lambda: "imported photos" in p.status_label.text(), timeout=30000)
    text = p.status_label.text()
    assert text.startswith("imported photos: 8 item(s) (image-folder)"), text
    for said in ("ignored 2 hidden or system file(s): cats/Thumbs.db, dogs/Thumbs.db", "ignored 2 file(s) that are no image (.txt): cats/notes.txt, "
                 "dogs/notes.txt", "2 file(s) in folders below their class folder take its class: cats/2024/x.png, "
                 "dogs/2024/x.png"):
        assert said in text, text


def test_the_data_panel_asks_for_the_folder_of_a_label_studio_exports_images(qtbot, image_ws, ls_dir, tmp_path,
                                                                           monkeypatch):
    """A Label Studio image export whose files are not beside it failed with "pass --media-root with the folder of
    the images", an option the panel did not have: it now asks for the folder and imports with it."""
    import json

    import numpy as np
    from PIL import Image

    from studio.panels.base import StudioContext
    from studio.panels.data.panel import DataPanel

    export = tmp_path / "exports" / "project-2.json"
    export.parent.mkdir()
    export.write_bytes((ls_dir / "image_classification_export.json").read_bytes())
    media = tmp_path / "media"
    for k, t in enumerate(json.loads(export.read_text())):
        f = media / t["data"]["image"].removeprefix("/data/")  # Label Studio's media folder: upload/2/x.png
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((28, 28), 40 * k, np.uint8)).save(f)
    asked: list = []
    monkeypatch.setattr(DataPanel, "_ask_media_root", lambda self, p: asked.append(p) or str(media))
    p = DataPanel(StudioContext(image_ws.root, image_ws, None))
    qtbot.addWidget(p)
    p.path_edit.setText(str(export))
    p.import_btn.click()
    qtbot.waitUntil(lambda: "imported project-2.json" in p.status_label.text(), timeout=30000)
    assert asked == [export]
    assert p.status_label.text().startswith("imported project-2.json: 4 item(s) (label-studio)")
    (entry,) = image_ws.config().params("data.import")["sources"]
    assert entry["media_root"] == str(media)


def test_the_show_list_widens_for_a_proposal_added_later(studio_ctx, qtbot):
    """A proposal made while the labeling panel was open was listed as "proposal:p" (seen in a screenshot): the
    list kept the width of its first entries. Offscreen, the width the layout gives it cannot be measured
    reliably, so this checks the policy that makes it follow its entries."""
    from PySide6.QtWidgets import QComboBox

    from studio.panels.labeling.panel import LabelingPanel

    p = LabelingPanel(studio_ctx)
    qtbot.addWidget(p)
    assert p.filter.sizeAdjustPolicy() == QComboBox.SizeAdjustPolicy.AdjustToContents
