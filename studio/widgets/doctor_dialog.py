"""`cdl doctor`'s findings in a dialog. The doctor runs in a process of its own (`cdl doctor --json`): it asks
onnxruntime what really runs, which the studio's process must not load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from studio.services.cli import cdl_json
from studio.widgets.common import Table, WrappedColumnsDialog, fit_to_screen

COLORS = {"ok": "#15803d", "warn": "#b45309", "fail": "#b91c1c"}


def run_doctor(root: Path) -> dict[str, Any]:
    return cdl_json(root, "doctor", timeout=300, ok=(0, 1))  # exit 1: a check failed, and it says which


class DoctorDialog(WrappedColumnsDialog):
    def __init__(self, doc: dict[str, Any], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Doctor")
        lay = QVBoxLayout(self)
        checks = doc["checks"]
        n_fail = sum(c["status"] == "fail" for c in checks)
        n_warn = sum(c["status"] == "warn" for c in checks)
        self.summary = QLabel(f"{doc['workspace']}: " + (f"{n_fail} failure(s), " if n_fail else "")
                              + (f"{n_warn} warning(s)" if n_warn else "no warning")
                              + " — each with what to do (`cdl doctor` says the same)")
        self.summary.setWordWrap(True)
        self.table = Table(["", "area", "finding", "what to do"])
        order = {"fail": 0, "warn": 1, "ok": 2}
        rows = sorted(checks, key=lambda c: order[c["status"]])
        self.table.fill([(c["status"], c["area"], c["detail"], c["hint"] if c["status"] != "ok" else "")
                         for c in rows], {(i, 0): COLORS[c["status"]] for i, c in enumerate(rows)})
        self.table.setWordWrap(True)
        self.table.resizeColumnsToContents()
        self.table.setColumnWidth(2, 440)
        self.table.setColumnWidth(3, 400)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        fit_to_screen(self, 1000, 460)

    def fit_columns(self) -> None:
        """The finding and what to do share the room the table has, 11 to 10, wrapped (at 440 and 400 pixels they
        went past a dialog narrower than 1000, behind a scroll bar); then the rows' heights."""
        room = self.table.viewport().width() - self.table.columnWidth(0) - self.table.columnWidth(1)
        if room > 0:
            self.table.setColumnWidth(2, max(160, room * 11 // 21))
            self.table.setColumnWidth(3, max(160, room - self.table.columnWidth(2)))
        self.table.resizeRowsToContents()
