"""The start page: create a workspace from a template, or open a recent or existing one."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.services.tasks import run_task
from studio.widgets.common import heading, notice, set_notice


def recent() -> list[str]:
    return [p for p in (QSettings("CDL", "Studio").value("recent", []) or []) if (Path(p) / "cdl.yaml").exists()]


def remember(path: Path) -> None:
    items = [str(path)] + [p for p in recent() if p != str(path)]
    QSettings("CDL", "Studio").setValue("recent", items[:10])


class StartPage(QWidget):
    sig_open = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(40, 30, 40, 30)
        lay.addWidget(heading("CDL Studio", 20))
        lay.addWidget(QLabel("Continuous deep learning on one workstation: data, model and deployment pipelines, "
                             "edge devices, and the loop back."))
        row = QHBoxLayout()
        create = QGroupBox("Create a workspace")
        form = QFormLayout(create)
        self.folder = QLineEdit(str(Path.home() / "cdl-project"))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        frow = QHBoxLayout()
        frow.addWidget(self.folder)
        frow.addWidget(browse)
        fw = QWidget()
        fw.setLayout(frow)
        self.template = QComboBox()
        self.template.addItems(["text-classification", "image-classification"])
        self.create_btn = QPushButton("Create")
        self.create_btn.clicked.connect(self._create)
        form.addRow("Folder", fw)
        form.addRow("Template", self.template)
        form.addRow(self.create_btn)
        form.addRow(QLabel("Then import data in the Data panel (a zip or folder of class folders, idx files, a CSV, "
                           "a Label Studio export)."))
        row.addWidget(create, 1)
        box = QGroupBox("Open")
        bl = QVBoxLayout(box)
        self.recent = QListWidget()
        self.recent.addItems(recent())
        self.recent.itemDoubleClicked.connect(lambda it: self.sig_open.emit(it.text()))
        open_btn = QPushButton("Open a folder…")
        open_btn.clicked.connect(self._open)
        bl.addWidget(QLabel("Recent workspaces (double-click)"))
        bl.addWidget(self.recent)
        bl.addWidget(open_btn)
        row.addWidget(box, 1)
        lay.addLayout(row)
        self.message = notice("")
        self.message.hide()
        lay.addWidget(self.message)
        lay.addStretch(1)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Workspace folder", str(Path.home()))
        if d:
            self.folder.setText(d)

    def _open(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open a workspace", str(Path.home()))
        if d:
            self.sig_open.emit(d)

    def _create(self) -> None:
        from runtime.api import init_workspace

        path = Path(self.folder.text()).expanduser()
        self.create_btn.setEnabled(False)
        set_notice(self.message, f"creating {path}…")

        def done(ws) -> None:  # noqa: ANN001
            self.create_btn.setEnabled(True)
            self.sig_open.emit(str(ws.root))

        def failed(msg: str) -> None:
            self.create_btn.setEnabled(True)
            set_notice(self.message, msg, "error")

        run_task(init_workspace, path, self.template.currentText(), on_done=done, on_error=failed)
