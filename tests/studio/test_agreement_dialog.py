"""The labeling panel's Agreement… dialog, on a real workspace (no runtime process needed)."""

from __future__ import annotations


def test_agreement_dialog_shows_labelers_and_pairs(qtbot, small_bbc, tmp_path):
    from runtime.labeling import LabelQueue
    from studio.panels.base import StudioContext
    from studio.panels.labeling.panel import AgreementDialog, LabelingPanel

    ws = small_bbc
    rows = list({r.id: r for r in ws.dataset().rows if r.label}.values())[:4]
    for who, wrong in (("anna", 0), ("ben", 1)):
        q = LabelQueue(ws, who)
        for i, r in enumerate(rows):
            q.set_label(r.uid, "politics" if i == wrong and r.label != "politics" else
                        ("tech" if i == wrong else r.label))
    p = LabelingPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):  # the agreement, then the panel's refresh after it
        p.agreement_btn.click()
    dlg = p.findChild(AgreementDialog)
    cells = [[dlg.labelers.item(r, c).text() for c in range(6)] for r in range(dlg.labelers.rowCount())]
    assert [c[0] for c in cells[:2]] == ["anna", "ben"] and cells[0][2] == "4" and cells[0][1] == "manual"
    pairs = {(dlg.pairs.item(r, 0).text(), dlg.pairs.item(r, 1).text()): dlg.pairs.item(r, 3).text()
             for r in range(dlg.pairs.rowCount())}
    assert pairs[("anna", "ben")] == "50.0%"  # items 0 and 1: each is wrong on one of them
    assert "4 item(s) labeled by several labelers" in dlg.summary.text()
    dlg.grab().save(str(tmp_path / "agreement.png"))
