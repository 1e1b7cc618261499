"""A step's runs, newest first (runtime.jobs.runner.step_history), as an experiment tracker lists them."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDialogButtonBox, QLabel, QPushButton, QVBoxLayout, QWidget

from runtime.domain.text import changes_text
from studio.widgets.common import LogView, Table, WrappedColumnsDialog, fit_to_screen, local_time


class RunsDialog(WrappedColumnsDialog):
    """workspace: where "Use its parameters" writes the selected run's parameters back into cdl.yaml (None: the
    button is not offered)."""

    def __init__(self, doc: dict[str, Any], parent: QWidget | None = None, workspace=None):  # noqa: ANN001
        super().__init__(parent)
        self.doc, self.workspace = doc, workspace
        self.restored: dict[str, Any] | None = None
        step = doc["step"]
        self.setWindowTitle(f"Runs of {step}")
        lay = QVBoxLayout(self)
        self.table = Table(["run", "started", "status", "seconds", "result", "changed since the run before"])
        rows, colors = [], {}
        for i, r in enumerate(doc["runs"]):
            said = r["error"] if r["status"] in ("failed", "cancelled", "waiting") else r["message"]
            rows.append((r["id"], local_time(r["started"]), r["status"], r["seconds"], said, r["changed"]))
            if r["status"] == "failed":
                colors[(i, 2)] = "#b91c1c"
        self.table.fill(rows, colors, data=[r["id"] for r in doc["runs"]])
        self.table.resizeColumnsToContents()
        # the result at most a third of the dialog, the reason a run ran in the rest, wrapped: a long one ("model.tune
        # ran again since, with another output (same parameters)") pushed its column out of view, behind a scroll bar
        self._result_width = min(self.table.columnWidth(4), 300)  # narrower where the dialog is (_fit_columns)
        self.table.setColumnWidth(4, self._result_width)
        self.table.setColumnWidth(5, 120)  # the last column stretches over what is left
        self.table.setWordWrap(True)
        n = len(doc["runs"])
        self.summary = QLabel(f"{n} run(s) of {step}, newest first; 'changed since the run before' names the "
                              "parameters that differ from the run before it, or why it ran with the same ones"
                              if n else f"{step} has not run yet.")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        lay.addWidget(self.message)
        # a failed run's traceback (a bug, or the workspace's own model code): the table shows its first line only
        self.traceback = LogView()
        self.traceback.setVisible(False)
        self.traceback.setMinimumHeight(140)
        lay.addWidget(self.traceback, 1)
        self.table.itemSelectionChanged.connect(self._show_traceback)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.use_btn = QPushButton("Use its parameters")
        self.use_btn.setToolTip("write the selected run's parameters into cdl.yaml (the step turns stale until it "
                                "runs with them), as re-running a past run in an experiment tracker")
        self.use_btn.clicked.connect(self.use_selected)
        self.use_btn.setEnabled(False)
        if workspace is not None:
            buttons.addButton(self.use_btn, QDialogButtonBox.ButtonRole.ActionRole)
            self.table.itemSelectionChanged.connect(
                lambda: self.use_btn.setEnabled(bool(self.table.selected_data())))
        lay.addWidget(buttons)
        fit_to_screen(self, 900, 420)

    def fit_columns(self) -> None:
        """The result column gives up room where the dialog is narrow (on a 1024-pixel screen the columns were 12
        pixels wider than the table, behind a scroll bar), leaving the reason 200 (its heading); then the wrapped rows' heights."""
        fixed = sum(self.table.columnWidth(c) for c in range(4))
        room = self.table.viewport().width() - fixed - 200
        self.table.setColumnWidth(4, max(100, min(self._result_width, room)))
        self.table.resizeRowsToContents()  # the wrapped reasons, at the widths the dialog has once shown

    def _show_traceback(self) -> None:
        sel = self.table.selected_data()
        run = next((r for r in self.doc["runs"] if sel and r["id"] == sel[0]), None)
        tb = (run or {}).get("traceback")
        self.traceback.setPlainText(f"run {run['id']}: {run['error']}\n\n{tb}" if tb else "")
        self.traceback.setVisible(bool(tb))

    def use_selected(self) -> None:
        from runtime.domain.errors import CdlError
        from runtime.params import use_run_params

        sel = self.table.selected_data()
        run = next((r for r in self.doc["runs"] if sel and r["id"] == sel[0]), None)
        if run is None:
            return
        if run["params"] is None:
            self.message.setText(f"run {run['id']} did not record its parameters (it is older than schema 0007)")
            return
        try:
            self.restored = use_run_params(self.workspace, self.doc["step"], run["params"])
        except CdlError as exc:  # a parameter the step no longer has, or a value its rules now refuse
            self.message.setText(f"run {run['id']}'s parameters cannot be used now: {exc}")
            return
        changed = self.restored["changed"]
        self.message.setText(f"cdl.yaml now has run {run['id']}'s parameters" + (
            ": " + changes_text(changed) if changed else
            " (they were the same)"))
