"""The start page: create a workspace from a template, or open a recent or existing one."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.services.tasks import run_task
from studio.widgets.common import heading, notice, set_notice


def recent() -> list[str]:
    value = QSettings("CDL", "Studio").value("recent", []) or []
    # the settings file gives a list of one back as a string, whose characters were taken for paths: the list was
    # empty in every new studio, and each workspace opened replaced the one before it
    items = [value] if isinstance(value, str) else list(value)
    return [p for p in items if (Path(p) / "cdl.yaml").exists()]


def describe(path: str) -> str:
    """A recent workspace as the list shows it: its name and template (from cdl.yaml), then the folder."""
    try:
        import yaml

        # libyaml's parser where PyYAML has it: the pure-Python one took 70-80 ms for each recent workspace, on
        # every start of the studio
        doc = yaml.load((Path(path) / "cdl.yaml").read_text(),  # noqa: S506 - a safe loader
                        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        name, template = doc.get("name") or Path(path).name, doc.get("template") or doc.get("task") or "?"
    except Exception:  # noqa: BLE001 - a cdl.yaml being edited still lists its folder; opening it says what is wrong
        return f"{Path(path).name} · cdl.yaml unreadable · {path}"
    return f"{name} · {template} · {path}"


def free_folder(parent: Path, stem: str = "cdl-project") -> Path:
    """The Create form's folder: ~/cdl-project, or -2, -3… where that one is a workspace already (the form offered
    the first workspace's folder again, and Create said "already a CDL workspace")."""
    n = 1
    while (parent / (stem if n == 1 else f"{stem}-{n}") / "cdl.yaml").exists():
        n += 1
    return parent / (stem if n == 1 else f"{stem}-{n}")


def remember(path: Path) -> None:
    items = [str(path)] + [p for p in recent() if p != str(path)]
    QSettings("CDL", "Studio").setValue("recent", items[:10])


class StartPage(QWidget):
    sig_open = Signal(str)
    sig_restored = Signal(str, str, bool)  # the restored folder, what to do next ("" when nothing), a DVC remote?

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(40, 30, 40, 30)
        lay.addWidget(heading("CDL Studio", 20))
        about = QLabel("Continuous deep learning on one workstation: data, model and deployment pipelines, edge "
                       "devices, and the loop back.")
        about.setWordWrap(True)  # unwrapped, this and the line under Create made the page 1026 pixels wide at least
        lay.addWidget(about)
        row = QHBoxLayout()
        create = QGroupBox("Create a workspace")
        form = QFormLayout(create)
        self.folder = QLineEdit(str(free_folder(Path.home())))
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
        then = QLabel("Then import data in the Data panel (a zip or folder of class folders, idx files, a CSV, a "
                      "Label Studio export).")
        then.setWordWrap(True)
        form.addRow(then)
        row.addWidget(create, 1)
        box = QGroupBox("Open")
        bl = QVBoxLayout(box)
        self.recent = QListWidget()
        for path in recent():
            item = QListWidgetItem(describe(path))
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(path)
            self.recent.addItem(item)
        # double-click or Enter opens (a list that only took a double-click could not be opened from the keyboard)
        self.recent.itemActivated.connect(lambda it: self.sig_open.emit(it.data(Qt.ItemDataRole.UserRole)))
        self.open_recent_btn = QPushButton("Open the selected")
        self.open_recent_btn.setEnabled(False)
        self.open_recent_btn.setToolTip("select a recent workspace first")
        self.recent.itemSelectionChanged.connect(self._recent_selected)
        self.open_recent_btn.clicked.connect(
            lambda: self.recent.currentItem() and self.recent.itemActivated.emit(self.recent.currentItem()))
        open_btn = QPushButton("Open a folder…")
        open_btn.clicked.connect(self._open)
        self.restore_btn = QPushButton("Restore a backup…")
        self.restore_btn.setToolTip("unpack a `cdl backup` archive (the toolbar's Back up…) into a new folder and "
                                    "open it (`cdl restore`)")
        self.restore_btn.clicked.connect(lambda: self.restore())
        bl.addWidget(QLabel("Recent workspaces (double-click or Enter)" if self.recent.count() else
                            "No recent workspaces: create one, or open a folder"))
        bl.addWidget(self.recent)
        bl.addWidget(self.open_recent_btn)
        bl.addWidget(open_btn)
        bl.addWidget(self.restore_btn)
        row.addWidget(box, 1)
        lay.addLayout(row)
        self.message = notice("")
        self.message.hide()
        lay.addWidget(self.message)
        lay.addStretch(1)

    def _recent_selected(self) -> None:
        item = self.recent.currentItem() if self.recent.selectedItems() else None
        self.open_recent_btn.setEnabled(item is not None)
        self.open_recent_btn.setToolTip(f"open {item.data(Qt.ItemDataRole.UserRole)}" if item else
                                        "select a recent workspace first")

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
        if (path / "cdl.yaml").exists():
            set_notice(self.message, f"{path} is a CDL workspace already: Open a folder… opens it; to create "
                                     f"one, choose another folder (such as {free_folder(path.parent, path.name)}).",
                       "warning")
            return
        self.create_btn.setEnabled(False)
        set_notice(self.message, f"creating {path}…")

        def done(ws) -> None:  # noqa: ANN001
            self.create_btn.setEnabled(True)
            self.sig_open.emit(str(ws.root))

        def failed(msg: str) -> None:
            self.create_btn.setEnabled(True)
            set_notice(self.message, msg, "error")

        run_task(init_workspace, path, self.template.currentText(), on_done=done, on_error=failed)

    def restore(self, archive: str | None = None, dest: str | None = None) -> None:
        """`cdl restore ARCHIVE DEST`, then open DEST: every member is checked before DEST appears, and a damaged
        archive restores nothing (the error is shown here)."""
        from runtime.backup import restore

        if archive is None:
            archive, _ = QFileDialog.getOpenFileName(self, "A backup to restore", str(Path.home()),
                                                     "Backups (*.tar.gz *.tgz)")
            if not archive:
                return
        if dest is None:
            stem = Path(archive).name.removesuffix(".tar.gz").removesuffix(".tgz")
            dest, _ = QFileDialog.getSaveFileName(self, "A new folder for the restored workspace",
                                                  str(Path(archive).parent / stem))
            if not dest:
                return
        self.restore_btn.setEnabled(False)
        set_notice(self.message, f"restoring {archive} into {dest}…")
        self.message.show()

        def done(r: dict) -> None:
            self.restore_btn.setEnabled(True)
            self.sig_restored.emit(r["workspace"], r["next"] or "", bool(r["remote"]))

        def failed(msg: str) -> None:
            self.restore_btn.setEnabled(True)
            set_notice(self.message, msg, "error")

        run_task(restore, Path(archive), Path(dest), on_done=done, on_error=failed)
