"""The Runs dialog: a failed run's traceback, which the table cuts to its first line, shows under it when the run
is selected (it was kept in the registry and shown nowhere)."""

from __future__ import annotations

from studio.widgets.runs_dialog import RunsDialog


def _doc() -> dict:
    base = {"started": "2026-12-05T14:27:51+00:00", "finished": None, "seconds": 2.1, "job": "j", "message": "",
            "changed": "", "params": {}, "output": ""}
    return {"step": "model.train", "runs": [
        {**base, "id": 2, "status": "failed", "error": "KeyError: 'hiden' (src/tiny.py, line 4, in build_model)",
         "traceback": 'Traceback (most recent call last):\n  File "src/tiny.py", line 4, in build_model\n'
                      "KeyError: 'hiden'"},
        {**base, "id": 1, "status": "failed", "error": "model.train: no dataset version", "traceback": None},
    ]}


def test_a_failed_runs_traceback_shows_when_it_is_selected(qtbot):
    d = RunsDialog(_doc())
    qtbot.addWidget(d)
    d.show()
    assert d.traceback.isHidden()
    d.table.selectRow(0)
    assert d.traceback.isVisible()
    text = d.traceback.toPlainText()
    assert text.startswith("run 2: KeyError: 'hiden' (src/tiny.py, line 4, in build_model)")
    assert 'File "src/tiny.py", line 4, in build_model' in text
    d.table.selectRow(1)  # one that failed on purpose has no traceback: nothing to show
    assert d.traceback.isHidden() and d.traceback.toPlainText() == ""


def test_the_step_header_shows_a_reason_as_text(qtbot):
    """A failed step's reason with a traceback (or any reason without a tag on its first line) made Qt take the
    header for plain text: it showed "<br>" literally; and a reason holding "<" was read as markup."""
    from types import SimpleNamespace

    from PySide6.QtCore import Qt

    from studio.widgets.step_header import StepHeader

    h = StepHeader()
    qtbot.addWidget(h)
    node = SimpleNamespace(id="model.train", title="Train", status="failed", progress=None, role="data scientist",
                           reason="ValueError: x < 0 (src/net.py, line 4, in forward)")
    h.show_step(node, "Trains the template")
    assert h.detail.textFormat() == Qt.TextFormat.RichText
    assert "x &lt; 0" in h.detail.text() and "<br>Trains the template" in h.detail.text()


def test_a_long_reason_wraps_in_view(qtbot):
    """A long reason a run ran ("model.tune ran again since, with another output (same parameters)") widened its
    column past the dialog, behind a horizontal scroll bar: it wraps in the room the dialog has."""
    doc = _doc()
    doc["runs"] = [{**r, "status": "done", "error": "", "traceback": None,
                    "message": "val_accuracy 0.9824 (train-2: torch, 12 epochs, cpu) and a good deal more text here",
                    "changed": "model.tune and model.preprocess ran again since, with another output (same parameters)"}
                   for r in doc["runs"]]
    d = RunsDialog(doc)
    qtbot.addWidget(d)
    d.show()
    qtbot.wait(50)
    t = d.table
    assert t.horizontalHeader().length() <= t.viewport().width() + 1, (t.horizontalHeader().length(),
                                                                       t.viewport().width())
    assert t.rowHeight(0) > t.verticalHeader().defaultSectionSize()  # wrapped onto more lines, all shown


def test_dialogs_fit_the_screens_room(qtbot):
    """The compare dialog opened 940 x 700, the doctor's 1000 wide, the runs dialog 900: on a small screen their
    buttons were under the taskbar or past the edge. Each is no bigger than its screen's room (offscreen: 800 x 800)."""
    from PySide6.QtWidgets import QWidget

    from studio.widgets.common import fit_to_screen

    d = RunsDialog(_doc())
    qtbot.addWidget(d)
    room = d.screen().availableGeometry()
    assert d.width() <= room.width() - 40 and d.height() <= room.height() - 60, (d.size(), room)
    assert d.width() > 600  # as wide as it can be, not shrunk to nothing
    w = QWidget()
    qtbot.addWidget(w)
    fit_to_screen(w, 940, 700)
    assert (w.width(), w.height()) == (min(940, room.width() - 40), min(700, room.height() - 60))


def test_the_doctor_dialogs_columns_fit_a_narrow_dialog(qtbot):
    """The doctor's finding and advice columns were 440 and 400 pixels whatever the dialog's width: on a screen
    narrower than 1000 pixels they went behind a horizontal scroll bar. They share the room, wrapped."""
    from studio.widgets.doctor_dialog import DoctorDialog

    long = "a finding long enough to wrap onto a second line in a column of a few hundred pixels, and then some"
    doc = {"workspace": "/tmp/ws", "checks": [{"status": "warn", "area": "onnxruntime", "detail": long,
                                               "hint": long}, {"status": "ok", "area": "dvc", "detail": "3.67.1",
                                                               "hint": ""}]}
    d = DoctorDialog(doc)
    qtbot.addWidget(d)
    d.show()
    qtbot.wait(50)
    t = d.table
    assert d.width() <= d.screen().availableGeometry().width() - 40
    assert t.horizontalHeader().length() <= t.viewport().width() + 1, (t.horizontalHeader().length(),
                                                                       t.viewport().width())
    assert t.rowHeight(0) > t.verticalHeader().defaultSectionSize()  # wrapped, all of it shown
