"""The job bar at the bottom of the window: what runs, how far it is, a cancel button, and the log."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from studio.widgets.common import LogView


class JobBar(QWidget):
    sig_cancel = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 2, 8, 2)
        self.label = QLabel("idle")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setMaximumWidth(280)
        self.bar.setTextVisible(False)
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.cancel.clicked.connect(self.sig_cancel.emit)
        self.log_btn = QPushButton("Log")
        self.log_btn.setCheckable(True)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.bar)
        lay.addWidget(self.cancel)
        lay.addWidget(self.log_btn)
        self.log = LogView()
        self.log.setMaximumHeight(160)
        self.log.hide()
        self.log_btn.toggled.connect(self.log.setVisible)

    def running(self, text: str, fraction: float | None) -> None:
        self.label.setText(text)
        self.cancel.setEnabled(True)
        if fraction is None:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(fraction * 1000))

    def idle(self, text: str = "idle") -> None:
        self.label.setText(text)
        self.cancel.setEnabled(False)
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
