"""A step's runs, newest first (runtime.jobs.runner.step_history), as an experiment tracker lists them."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from studio.widgets.common import Table, local_time


class RunsDialog(QDialog):
    def __init__(self, doc: dict[str, Any], parent: QWidget | None = None):
        super().__init__(parent)
        step = doc["step"]
        self.setWindowTitle(f"Runs of {step}")
        lay = QVBoxLayout(self)
        self.table = Table(["run", "started", "status", "seconds", "result", "parameters changed"])
        rows, colors = [], {}
        for i, r in enumerate(doc["runs"]):
            said = r["error"] if r["status"] == "failed" else r["message"]
            rows.append((r["id"], local_time(r["started"]), r["status"], r["seconds"], said, r["changed"]))
            if r["status"] == "failed":
                colors[(i, 2)] = "#b91c1c"
        self.table.fill(rows, colors)
        self.table.resizeColumnsToContents()
        n = len(doc["runs"])
        self.summary = QLabel(f"{n} run(s) of {step}, newest first; 'parameters changed' compares each run with the "
                              "one before it" if n else f"{step} has not run yet.")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.resize(900, 420)
