"""The compression panel's Try it…: the selected variant and FP32 served on this machine by `cdl serve`, the
user's text sent to both over the Open Inference Protocol, their answers side by side."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QDialog


def test_try_a_variant_beside_fp32_from_the_compression_panel(qtbot, packaged):
    from studio.panels.base import StudioContext
    from studio.panels.compression.panel import CompressionPanel
    from studio.widgets.try_dialog import TryDialog

    ws = packaged
    p = CompressionPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.refresh()
    assert not p.try_btn.isEnabled()
    names = [p.table.item(r, 0).text() for r in range(p.table.rowCount())]
    p.table.selectRow(names.index("dynamic_int8"))
    assert p.try_btn.isEnabled()
    before = set(Path(tempfile.gettempdir()).glob("cdl-serve-*"))
    p.try_btn.click()
    dlg = p.findChild(TryDialog)
    assert dlg is not None and dlg.refs == ["ws:1:dynamic_int8", "ws:1:fp32"]
    try:
        _try(qtbot, ws, dlg, before)
    finally:  # its servers stop whatever happened above
        dlg.done(QDialog.DialogCode.Rejected)


def _try(qtbot, ws, dlg, before) -> None:  # noqa: ANN001
    import onnxruntime as ort

    from edge_agent.proto.bundle import read_manifest_unverified
    from edge_agent.proto.preprocessing import TextPipeline
    from runtime.bundles import bundle_path
    from runtime.workspace.dataset import decode_text

    qtbot.waitUntil(lambda: dlg.predict_btn.isEnabled() or "could not" in dlg.status.text(), timeout=120000)
    assert dlg.predict_btn.isEnabled(), dlg.status.text()
    assert dlg.status.text().startswith("serving ws:1:dynamic_int8 at 127.0.0.1:")  # in the order asked for
    assert "; ws:1:fp32 at 127.0.0.1:" in dlg.status.text()
    view = ws.dataset()
    text = next(decode_text(view.read_bytes(r))[0] for r in view.rows if r.split == "test")
    dlg.input.setPlainText(text)
    dlg.predict_btn.click()
    qtbot.waitUntil(lambda: len(dlg.results) == 2, timeout=60000)
    assert dlg.table.rowCount() == 2
    for ref in ("ws:1:dynamic_int8", "ws:1:fp32"):  # each answer is what onnxruntime gives on that bundle
        bundle = bundle_path(ws, "ws:1", ref.split(":")[2])
        with zipfile.ZipFile(bundle) as zf:
            sess = ort.InferenceSession(zf.read("model.onnx"), providers=["CPUExecutionProvider"])
        x, _ = TextPipeline(read_manifest_unverified(bundle)["preprocessing"]).transform([text])
        probs = sess.run(["probabilities"], {"input": x})[0][0]
        got = dlg.results[ref][0]
        assert got["label"] == ws.store.model_version("ws", 1).classes[int(np.argmax(probs))]
        assert abs(got["confidence"] - float(probs.max())) < 1e-5
        assert set(got["probabilities"]) == set(ws.store.model_version("ws", 1).classes)
    # words the model never saw, served by the agent too: the dialog says the answer is a guess for an empty text
    dlg.input.setPlainText("zzqx qqxw")
    dlg.predict_btn.click()
    qtbot.waitUntil(lambda: "no word of this text" in dlg.status.text(), timeout=60000)
    assert dlg.status.text().startswith("ws:1:dynamic_int8, ws:1:fp32: ")
    dlg.input.setPlainText(text)  # a text it knows: the serving line again
    dlg.predict_btn.click()
    qtbot.waitUntil(lambda: dlg.status.text().startswith("serving ws:1:dynamic_int8 at "), timeout=60000)
    dlg.done(QDialog.DialogCode.Rejected)
    assert all(proc.state() == proc.ProcessState.NotRunning for proc in dlg.procs.values())
    qtbot.waitUntil(lambda: set(Path(tempfile.gettempdir()).glob("cdl-serve-*")) <= before, timeout=30000)


def test_try_the_candidate_beside_the_champion_from_the_review_panel(qtbot, packaged):
    """The review panel's Try…: a candidate has no exported variant yet, so both predict from their checkpoints
    (`cdl models predict`), side by side."""
    from runtime.jobs import Runner
    from runtime.ml.predict import predict_items
    from runtime.workspace.dataset import decode_text
    from studio.panels.base import StudioContext
    from studio.panels.review.panel import ReviewPanel
    from studio.widgets.try_dialog import TryDialog

    ws = packaged
    assert Runner(ws).run(steps=["model.train"], overrides={"model.train": {"seed": 3, "use_tuned": False}}).ok
    assert Runner(ws).run(steps=["model.register"]).ok
    p = ReviewPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.refresh()
    assert p.candidate.currentData() == "ws:2" and p.try_btn.isEnabled()
    p.try_btn.click()
    dlg = p.findChild(TryDialog)
    assert dlg is not None and dlg.refs == ["ws:2", "ws:1"] and dlg.predict_btn.isEnabled()
    assert "predicts from its checkpoint" in dlg.status.text()
    view = ws.dataset()
    text = next(decode_text(view.read_bytes(r))[0] for r in view.rows if r.split == "test")
    dlg.input.setPlainText(text)
    dlg.predict_btn.click()  # a few seconds, said (they passed without a word)
    assert dlg.status.text() == "predicting with ws:2, ws:1 from their checkpoints…", dlg.status.text()
    qtbot.waitUntil(lambda: len(dlg.results) == 2, timeout=120000)
    assert [dlg.table.item(r, 0).text() for r in range(2)] == ["ws:2", "ws:1"]
    for r, ref in enumerate(("ws:2", "ws:1")):
        (expected,) = predict_items(ws, ref, [text])
        assert dlg.table.item(r, 1).text() == expected["label"]
    assert "predicts from its checkpoint" in dlg.status.text()
    # words the model never saw got a class and a confidence like an article, and nothing said it was a guess
    dlg.input.setPlainText("zzzqx qqqxw")
    dlg.predict_btn.click()
    qtbot.waitUntil(lambda: "no word of this text" in dlg.status.text(), timeout=120000)
    assert dlg.status.text().startswith("ws:2, ws:1: ")
    dlg.input.setPlainText(text)
    dlg.predict_btn.click()
    qtbot.waitUntil(lambda: "predicts from its checkpoint" in dlg.status.text(), timeout=120000)
    dlg.done(QDialog.DialogCode.Rejected)


def test_the_review_panel_says_what_changed_in_the_data(qtbot, packaged):
    """A candidate trained on another dataset version than the champion's: the review panel says what changed
    between the two (`cdl data diff`), so a reviewer knows why the numbers moved."""
    from runtime.jobs import Runner
    from runtime.labeling import LabelQueue
    from studio.panels.base import StudioContext
    from studio.panels.review.panel import ReviewPanel

    ws = packaged
    row = next(r for r in ws.dataset().rows if r.split == "train")
    LabelQueue(ws, "ann").set_label(row.uid, "tech" if row.label != "tech" else "sport")
    assert Runner(ws).run(until="model.register", overrides={"model.tune": {"n_trials": 1}}).ok
    assert ws.store.resolve_model("ws:2").dataset_version == "v2"
    p = ReviewPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.refresh()
    assert p.candidate.currentData() == "ws:2"
    assert p.data_note.text() == ("Data from the champion's v1 to this version's v2 (`cdl data diff v1 v2`): 0 item(s) "
                                  "added, 0 removed, 0 changed, 1 relabeled, 0 moved between train and test")
    p.candidate.setCurrentIndex(p.candidate.findData("ws:1"))
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.candidate.activated.emit(p.candidate.currentIndex())
    assert p.data_note.text() == "" and p.data_note.isHidden()


def test_the_picked_image_is_shown(qtbot, tmp_path, monkeypatch):
    """Try… for an image model showed only the picked file's path; the image itself is shown now, a 28-pixel one
    scaled up to the preview's size."""
    import numpy as np
    from PIL import Image
    from PySide6.QtWidgets import QFileDialog

    from studio.widgets.try_dialog import PREVIEW, TryDialog

    png = tmp_path / "shoe.png"
    Image.fromarray(np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1))).save(png)
    d = TryDialog(None, ["fm:1", "fm:2"], kind="image", via="checkpoint")
    qtbot.addWidget(d)
    assert d.preview.pixmap().isNull()
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(png), ""))
    d._pick()
    pix = d.preview.pixmap()
    assert not pix.isNull() and (pix.width(), pix.height()) == (PREVIEW, PREVIEW)
    assert d.input.text() == str(png) and d.inputs() == [png]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    d._pick()
    assert d.preview.text() == "?" and d.inputs() == [bad]
