"""The header over the panels: the selected step, its owner, status and reason, and what can be done with it."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from studio.canvas.items import STATUS_STYLE
from studio.widgets.flow import flow_row


class StepHeader(QWidget):
    sig_run_step = Signal(str)
    sig_run_until = Signal(str)
    sig_cancel = Signal()
    sig_params = Signal(str)
    sig_runs = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.step: str | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 8, 12, 4)
        top = QHBoxLayout()
        self.title = QLabel("Select a step in the flowchart")
        self.title.setStyleSheet("QLabel { font-size: 15px; font-weight: bold; }")
        self.badge = QLabel()
        top.addWidget(self.title, 0, Qt.AlignmentFlag.AlignTop)
        top.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignTop)
        self.params_btn = QPushButton("Parameters…")
        self.params_btn.setToolTip("edit this step's parameters in cdl.yaml")
        self.params_btn.clicked.connect(lambda: self.step and self.sig_params.emit(self.step))
        self.runs_btn = QPushButton("Runs…")
        self.runs_btn.setToolTip("this step's runs, newest first: when, how long, what each said, which parameters "
                                 "changed")
        self.runs_btn.clicked.connect(lambda: self.step and self.sig_runs.emit(self.step))
        self.run_btn = QPushButton("Run this step")
        self.until_btn = QPushButton("Run up to here")
        self.cancel_btn = QPushButton("Cancel")
        self.run_btn.clicked.connect(lambda: self.step and self.sig_run_step.emit(self.step))
        self.until_btn.clicked.connect(lambda: self.step and self.sig_run_until.emit(self.step))
        self.cancel_btn.clicked.connect(self.sig_cancel.emit)
        # on a second line where the window is narrow (a laptop's 1366 pixels): in one row they made the window wider
        top.addWidget(flow_row(self.params_btn, self.runs_btn, self.run_btn, self.until_btn, self.cancel_btn,
                               right=True), 1)
        lay.addLayout(top)
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setStyleSheet("QLabel { color: #4b5563; }")
        lay.addWidget(self.detail)
        self.set_running(False)
        self.show_step(None)

    def show_step(self, node, description: str = "") -> None:  # noqa: ANN001
        if node is None:
            self.step = None
            self.params_btn.setEnabled(False)
            self.runs_btn.setEnabled(False)
            self.run_btn.setEnabled(False)
            self.until_btn.setEnabled(False)
            self.badge.clear()
            self.detail.setText("")
            return
        self.step = node.id
        self.title.setText(f"{node.title}  ·  {node.id}")
        bg, fg, label = STATUS_STYLE.get(node.status, STATUS_STYLE["never-run"])
        text = label if node.progress is None else f"{label} {node.progress:.0%}"
        self.badge.setText(f" {text} ")
        self.badge.setStyleSheet(f"QLabel {{ background: {bg.name()}; color: {fg.name()}; border-radius: 8px; "
                                 "padding: 2px 6px; font-weight: bold; }")
        # escaped, and rich text whatever the first line holds (Qt guessed plain text for a reason without a tag,
        # and showed "<br>" as it is)
        message = getattr(node, "message", "") if node.status == "running" else ""
        reason = (f" — {html.escape(node.reason)}" if node.reason else
                  f" — running: {html.escape(message)}" if message and message != "started" else "")
        self.detail.setTextFormat(Qt.TextFormat.RichText)
        self.detail.setText(f"Owner: {html.escape(node.role)}{reason}<br>{html.escape(description)}")
        self.params_btn.setEnabled(True)
        self.runs_btn.setEnabled(True)
        self.run_btn.setEnabled(True)
        self.until_btn.setEnabled(True)

    def set_running(self, running: bool) -> None:
        self.cancel_btn.setEnabled(running)
