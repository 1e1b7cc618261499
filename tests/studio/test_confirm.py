"""The questions asked before something that loses data or passes a check by default to No: Enter on a dialog read
too quickly keeps things as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")


def _press_enter_on_the_dialog(qtbot, seen: list[str]) -> None:
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    def press() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, press)
            return
        default = box.defaultButton()
        seen.append(default.text().replace("&", "") if default is not None else "no default button")
        qtbot.keyClick(box, Qt.Key.Key_Return)
        # Enter did nothing (no default button): close it, so that a failing test fails instead of hanging
        def close_if_open() -> None:
            try:
                if box.isVisible():
                    box.button(QMessageBox.StandardButton.No).click()
            except RuntimeError:  # answered and deleted
                pass

        QTimer.singleShot(200, close_if_open)

    QTimer.singleShot(20, press)


def test_enter_on_a_confirm_question_answers_no(qtbot):
    from studio.widgets.common import confirm

    seen: list[str] = []
    _press_enter_on_the_dialog(qtbot, seen)
    assert confirm(None, "Delete a model version", "Delete news:1 and its variants?") is False
    assert seen == ["No"]


RISKY = {  # every question before a deletion, or before passing a review or gate by, goes through confirm
    "studio/panels/models/panel.py": ["Delete a model version"],
    "studio/panels/data/panel.py": ["Remove a source"],
    "studio/panels/devices/panel.py": ["Push a version its review did not pass", "Remove a device"],
    "studio/panels/review/panel.py": ["Approve a version that failed the gate"],
    "studio/panels/versions/panel.py": ["Free disk"],
}


@pytest.mark.parametrize("path", sorted(RISKY))
def test_risky_questions_ask_with_no_as_default(path):
    import ast

    root = Path(__file__).resolve().parents[2]
    tree = ast.parse((root / path).read_text())
    asked = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            asked[node.args[1].value] = name
    for title in RISKY[path]:
        assert asked.get(title) == "confirm", f"{path}: {title!r} is asked with {asked.get(title)!r}, not confirm()"


def test_removing_a_device_at_enter_keeps_it(studio_ctx, qtbot):
    """The devices panel's Remove, answered with Enter: the device stays enrolled."""
    from runtime.devices import enroll
    from studio.panels.devices.panel import DevicesPanel

    ws = studio_ctx.workspace
    enroll(ws, "pi9", "127.0.0.1:1")
    p = DevicesPanel(studio_ctx)
    qtbot.addWidget(p)
    p.refresh()
    qtbot.waitUntil(lambda: p.loaded, timeout=30000)
    # what acts on a selected device is off until one is selected, and says so (each said it when pressed)
    buttons = (p.health_btn, p.rollback_btn, p.remove_btn, p.push_btn)
    assert not any(b.isEnabled() for b in buttons)
    assert all(b.toolTip().endswith("(select a device in the table first)") for b in buttons)
    row = next(r for r in range(p.devices.rowCount()) if p.devices.item(r, 0).text() == "pi9")
    p.devices.selectRow(row)
    assert all(b.isEnabled() for b in buttons) and not p.remove_btn.toolTip().endswith("first)")
    seen: list[str] = []
    _press_enter_on_the_dialog(qtbot, seen)
    p._remove()
    qtbot.wait(300)
    assert seen == ["No"]
    from runtime.devices import devices_json

    assert "pi9" in {d["name"] for d in devices_json(ws)["devices"]}
