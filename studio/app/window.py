"""The main window: the flowchart on the left, the selected step's panel on the right, the job bar below.

The window never waits: the runtime's calls and streams, files, databases and devices are all reached off the
GUI thread (studio.services). Panels do not know each other; this window wires them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from runtime.domain.text import changes_text
from studio.app.start_page import StartPage, remember
from studio.canvas.document import FlowDocument
from studio.canvas.model import FlowModel
from studio.canvas.scene import FlowScene
from studio.canvas.view import FlowView
from studio.panels.base import StudioContext
from studio.panels.compression.panel import CompressionPanel
from studio.panels.data.panel import DataPanel
from studio.panels.devices.panel import DevicesPanel
from studio.panels.labeling.panel import LabelingPanel
from studio.panels.models.panel import ModelsPanel
from studio.panels.monitoring.panel import MonitoringPanel
from studio.panels.review.panel import ReviewPanel
from studio.panels.tuning.panel import TuningPanel
from studio.panels.versions.panel import VersionsPanel
from studio.services.runtime import RuntimeConnection
from studio.services.tasks import run_task
from studio.widgets.common import confirm
from studio.widgets.job_bar import JobBar
from studio.widgets.step_header import StepHeader

PANELS = [DataPanel, LabelingPanel, VersionsPanel, TuningPanel, ModelsPanel, ReviewPanel, CompressionPanel,
          DevicesPanel, MonitoringPanel]


class MainWindow(QMainWindow):
    sig_workspace_loaded = Signal()

    OUTSIDE_POLL_MS = 3000  # how often the statuses are read while a step runs in another process
    LOOK_MS = 5000  # how often the window asks, idle, whether another process has started a step

    def __init__(self, workspace: Path | None = None, runtime_address: str | None = None):
        super().__init__()
        self.setWindowTitle("CDL Studio")
        self.resize(1500, 920)
        self.runtime_address = runtime_address
        self.runtime: RuntimeConnection | None = None
        self.ctx: StudioContext | None = None
        self.panels: dict[str, Any] = {}
        self.step_panel: dict[str, str] = {}
        self.descriptions: dict[str, str] = {}
        self.loaded = False
        self._outside: dict[str, str] = {}  # steps another process runs -> their reason
        self._own_running: set[str] = set()  # steps a panel runs in this process (data.import from the data panel)
        self._own_plan: list[str] = []  # the steps of the job a panel runs here (named if it is cancelled early)
        self._outside_timer = QTimer(self)
        self._outside_timer.setSingleShot(True)
        self._outside_timer.setInterval(self.OUTSIDE_POLL_MS)
        self._outside_timer.timeout.connect(self._refresh_status)
        self._look_timer = QTimer(self)  # idle: has another process started a step? (one cheap query)
        self._look_timer.setInterval(self.LOOK_MS)
        self._look_timer.timeout.connect(self._look_for_outside_runs)
        self.stack = QStackedWidget()
        self.setCentralWidget(self.stack)
        self.start_page = StartPage()
        self.start_page.sig_open.connect(lambda p: self.open_workspace(Path(p)))
        self.start_page.sig_restored.connect(self._restored)
        self.stack.addWidget(self.start_page)
        self.statusBar().showMessage("ready")
        self.opening: Path | None = None  # a workspace open_later() opens on the event loop's next turn
        if workspace is not None:
            self.open_workspace(Path(workspace))

    def open_later(self, root: Path, then: Callable[[], None] | None = None) -> None:
        """`cdl studio WS`: the window shows at once, saying which workspace it opens, and opens it on the event
        loop's next turn (then `then()`, where it opened). Building the window for a workspace (the engine's
        registry code, the panels) takes 1.5-2 s, in which no window was on the screen at all."""
        root = Path(root)
        self.opening = root
        page = QLabel(f"Opening {root.resolve()}…")
        page.setAlignment(Qt.AlignmentFlag.AlignCenter)
        page.setStyleSheet("font-size: 16px; color: #374151;")
        self.stack.addWidget(page)
        self.stack.setCurrentWidget(page)
        self.statusBar().showMessage("opening the workspace…")

        def open_now() -> None:
            try:
                self.open_workspace(root)
            finally:
                self.opening = None
                self.stack.removeWidget(page)
                page.deleteLater()
                if self.ctx is None:  # it did not open: the start page, which says why
                    self.stack.setCurrentWidget(self.start_page)
                    self.statusBar().showMessage("ready")
            if self.ctx is not None and then is not None:
                then()

        QTimer.singleShot(50, open_now)  # (a turn or two of the loop first: the window is drawn before it waits)

    # -- building -----------------------------------------------------------------------------------------

    def open_workspace(self, root: Path) -> None:
        root = Path(root).resolve()
        runtime = RuntimeConnection(root, self.runtime_address)
        if (root / "cdl.yaml").is_file():
            runtime.launch()  # it loads the engine while this window does the same and builds the panels
        from runtime.api import open_workspace, pipeline_graph

        try:
            ws = open_workspace(root)
            graph = pipeline_graph(ws)
        except Exception as exc:  # noqa: BLE001 - a bad cdl.yaml is shown, not thrown
            runtime.stop()
            self.start_page.message.show()
            from studio.widgets.common import set_notice

            message = str(exc)
            if not (root / "cdl.yaml").exists():  # `cdl studio NEWFOLDER`: Create is one click away, in that folder
                self.start_page.folder.setText(str(root))
                message = (f"{root} does not exist" if not root.exists() else
                           f"{root}: not a CDL workspace (no cdl.yaml)") + \
                    ": Create makes one there (choose its template), or open another folder."
            set_notice(self.start_page.message, message, "warning" if message != str(exc) else "error")
            return
        remember(root)
        self.setWindowTitle(f"CDL Studio — {graph['name']} ({root})")
        self.runtime = runtime
        self.ctx = StudioContext(root, ws, self.runtime)
        self.descriptions = {s["id"]: s["description"] for s in graph["steps"]}
        model = FlowModel.from_pipeline(graph["steps"], graph["edges"], graph["loops"])
        self.document = FlowDocument(model, root / ".cdl" / "studio-layout.json")
        self.scene = FlowScene(self.document)
        self.view = FlowView(self.scene)
        self.header = StepHeader()
        self.panel_stack = QStackedWidget()
        for cls in PANELS:
            panel = cls(self.ctx)
            self.panels[panel.panel_id] = panel
            self.panel_stack.addWidget(panel)
            for s in panel.steps:
                self.step_panel[s] = panel.panel_id
            panel.sig_run.connect(lambda steps, until, over: self.run(steps, until, over))
            panel.sig_message.connect(lambda _m: self._refresh_status())
            panel.sig_event.connect(self._on_own_event)
        self.panels["monitoring"].sig_open_proposal.connect(self._open_proposal)
        self.panels["models"].sig_open_experiment.connect(self._open_experiment)
        self.job_bar = JobBar()
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.header)
        rl.addWidget(self.panel_stack, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.view)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([560, 940])
        body = QWidget()
        bl = QVBoxLayout(body)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(split, 1)
        bl.addWidget(self.job_bar)
        bl.addWidget(self.job_bar.log)
        self.stack.addWidget(body)
        self.stack.setCurrentWidget(body)
        self._toolbar()
        # wiring
        self.scene.sig_node_selected.connect(self.select_step)
        self.scene.sig_run_step.connect(lambda s: self.run([s]))
        self.scene.sig_run_until.connect(lambda s: self.run(None, s))
        self.scene.sig_cancel.connect(self.cancel)
        self.header.sig_run_step.connect(lambda s: self.run([s]))
        self.header.sig_run_until.connect(lambda s: self.run(None, s))
        self.header.sig_cancel.connect(self.cancel)
        self.header.sig_params.connect(self.edit_params)
        self.header.sig_runs.connect(self.show_runs)
        self.job_bar.sig_cancel.connect(self.cancel)
        self.runtime.sig_ready.connect(self._on_runtime_ready)
        self.runtime.sig_failed.connect(self._on_runtime_failed)
        self.runtime.sig_status.connect(self._on_status)
        self.runtime.sig_event.connect(self._on_event)
        self.runtime.sig_job_submitted.connect(self._on_job_submitted)
        self.runtime.sig_job_finished.connect(self._on_job_finished)
        self.runtime.sig_error.connect(lambda m: self.statusBar().showMessage(m, 15000))
        self.runtime.sig_refused.connect(self._run_refused)
        self.statusBar().showMessage("starting the runtime…")
        self.runtime.start()
        # The plotting library (0.5 s to import, 1-1.7 s while the runtime starts beside it) loads on the GUI
        # thread, never off it: its import creates every QtCore/QtGui/QtWidgets class, and PySide creates its
        # classes lazily and not thread-safely. Imported in a worker thread while the flowchart painted, it left
        # QGradient without its Preset enum in about one start in twenty, and then every node failed to paint
        # (tests/studio/test_window.py::test_qt_bindings_load_on_the_gui_thread_only). It loads once the
        # runtime has answered and the statuses are asked for (_runtime_settled), not on the first turn of the
        # event loop: there it held the runtime's "ready" back, and so the statuses and every panel, by as long.
        # A panel that plots before then imports it itself, on the GUI thread too.
        QTimer.singleShot(0, self.view.fit)
        self._watch_files(root)
        self._look_timer.start()
        first = graph["steps"][0]["id"] if graph["steps"] else None
        if first:
            self.scene.select(first)
            self.select_step(first)

    def _watch_files(self, root: Path) -> None:
        """cdl.yaml and src/ edited outside the studio (an editor, `git pull`) refresh the statuses: the flowchart
        kept showing model.train done after src/net.py changed, until Refresh."""
        from PySide6.QtCore import QFileSystemWatcher

        self._watcher = QFileSystemWatcher(self)
        self._watch_root = root
        self._watch_timer = QTimer(self)
        self._watch_timer.setSingleShot(True)
        self._watch_timer.setInterval(400)  # an editor's save is several events: one refresh
        self._watch_timer.timeout.connect(self._files_changed)
        self._watcher.fileChanged.connect(lambda _p: self._watch_timer.start())
        self._watcher.directoryChanged.connect(lambda _p: self._watch_timer.start())
        self._rewatch()

    def _rewatch(self) -> None:
        """Watch cdl.yaml, src/ and its files again: an editor that saves by writing a new file and renaming it
        over the old one ends the watch on the old one."""
        root = self._watch_root
        want = [root / "cdl.yaml", root / "src", *sorted((root / "src").glob("*.py"))]
        have = set(self._watcher.files()) | set(self._watcher.directories())
        new = [str(p) for p in want if p.exists() and str(p) not in have]
        if new:
            self._watcher.addPaths(new)

    def _files_changed(self) -> None:
        self._rewatch()
        if self.runtime is not None and self.runtime.current_job:
            return  # the job's events refresh the statuses when it ends
        self._refresh_status()

    def _toolbar(self) -> None:
        tb = QToolBar("Flowchart")
        tb.setIconSize(QSize(16, 16))
        self.addToolBar(tb)
        run_all = QAction("Run all", self)
        run_all.triggered.connect(lambda: self.run(None))
        fit = QAction("Fit", self)
        fit.triggered.connect(self.view.fit)
        zin = QAction("Zoom in", self)
        zin.setShortcut(QKeySequence.StandardKey.ZoomIn)
        zin.triggered.connect(lambda: self.view.zoom(1.2))
        zout = QAction("Zoom out", self)
        zout.setShortcut(QKeySequence.StandardKey.ZoomOut)
        zout.triggered.connect(lambda: self.view.zoom(1 / 1.2))
        undo = self.document.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence("Ctrl+Shift+Z"))
        redo = self.document.undo_stack.createRedoAction(self, "Redo")
        refresh = QAction("Refresh", self)
        refresh.setShortcut(QKeySequence.StandardKey.Refresh)
        refresh.triggered.connect(self._refresh_all)
        doctor = QAction("Doctor", self)
        doctor.setToolTip("what is wrong with this workspace and machine, and what to do (`cdl doctor`)")
        doctor.triggered.connect(self.show_doctor)
        self.doctor_action = doctor
        backup = QAction("Back up…", self)
        backup.setToolTip("the whole workspace in one archive: registry, models, scoring data, git, cdl.yaml, keys "
                          "(`cdl backup`); `cdl restore` brings it back")
        backup.triggered.connect(self.back_up)
        self.backup_action = backup
        new_window = QAction("New window", self)
        new_window.setShortcut(QKeySequence("Ctrl+Shift+N"))
        new_window.setToolTip("another studio window, on its start page: open, create or restore another "
                              "workspace while this one stays open")
        new_window.triggered.connect(lambda: self.new_window())
        self.new_window_action = new_window
        for a in (run_all, fit, zin, zout, undo, redo, refresh, doctor, backup, new_window):
            tb.addAction(a)
        self.runtime_label = QLabel("  runtime: starting…")
        tb.addWidget(self.runtime_label)

    # -- selection ----------------------------------------------------------------------------------------

    def select_step(self, step: str) -> None:
        node = self.document.model.nodes.get(step)
        self.header.show_step(node, self.descriptions.get(step, ""))
        pid = self.step_panel.get(step)
        if pid:
            self.panels[pid].set_step(step)
            self.show_panel(pid)

    def edit_params(self, step: str) -> None:
        """The step's Parameters dialog (non-modal: the flowchart stays live); saving refreshes the statuses."""
        from studio.widgets.params_dialog import ParamsDialog

        try:
            dlg = ParamsDialog(self.ctx.workspace, step, self)
        except Exception as exc:  # noqa: BLE001 - a cdl.yaml edited into a bad state is shown, not thrown
            self.statusBar().showMessage(f"{step}: {exc}")
            return
        self.params_dialog = dlg

        def done(code: int) -> None:
            changed = (dlg.result_data or {}).get("changed") or {}
            if code == QDialog.DialogCode.Accepted and changed:
                said = changes_text(changed)
                commit = dlg.result_data.get("commit")
                self.statusBar().showMessage(f"{step}: {said}" + (f" (cdl.yaml committed, {commit[:10]})"
                                                                  if commit else ""), 15000)
                self._refresh_all()

        dlg.finished.connect(done)
        dlg.open()

    def show_runs(self, step: str) -> None:
        """The step's run history, read off the GUI thread, in a non-modal dialog."""
        from runtime.jobs.runner import step_history
        from studio.widgets.runs_dialog import RunsDialog

        def shown(doc: dict[str, Any]) -> None:
            self.runs_dialog = RunsDialog(doc, self, self.ctx.workspace)
            self.runs_dialog.finished.connect(
                lambda _c: self._refresh_all() if (self.runs_dialog.restored or {}).get("changed") else None)
            self.runs_dialog.open()

        run_task(step_history, self.ctx.workspace, step, 100, on_done=shown,
                 on_error=lambda m: self.statusBar().showMessage(f"{step}: {m}"))

    def new_window(self, extra: list[str] | None = None) -> subprocess.Popen:
        """A second studio process on the start page (one window holds one workspace and its runtime: switching
        meant quitting). It outlives this window."""
        argv = [sys.executable, "-m", "studio.app.main", *(extra or [])]
        proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)
        self.statusBar().showMessage("opening a new window…", 5000)
        return proc

    def show_doctor(self) -> None:
        from studio.widgets.doctor_dialog import DoctorDialog, run_doctor

        def shown(doc: dict[str, Any]) -> None:
            self.doctor_dialog = DoctorDialog(doc, self)
            self.doctor_dialog.open()

        self.statusBar().showMessage("asking the doctor…", 5000)
        run_task(run_doctor, self.ctx.workspace.root, on_done=shown,
                 on_error=lambda m: self.statusBar().showMessage(m))

    def _restored(self, root: str, next_: str, remote: bool) -> None:
        self.open_workspace(Path(root))
        if next_:  # the archive holds no data: where it comes from (the versions panel pulls and checks out)
            text = f"Restored {root}.\n\nNext: {next_}."
            if remote:
                text += " In the studio: the Dataset versions panel's Pull every version, then Check out the selected."
            elif "cdl run --until data.version" in next_:  # data.ingest and data.version are stale: say how here
                text += " In the studio: right-click data.version in the flowchart and choose Run up to data.version."
            self.restore_box = QMessageBox(QMessageBox.Icon.Information, "Restored", text,
                                           QMessageBox.StandardButton.Ok, self)
            self.restore_box.open()
        self.statusBar().showMessage(f"restored {root}", 15000)

    def back_up(self, path: str | None = None) -> None:
        """`cdl backup` in a process of its own (the doctor warns of a workspace never backed up, and a studio user
        had no way to make one). Where dataset versions would be on no DVC remote, it asks whether the data goes
        into the archive too."""
        import datetime as dt

        from runtime.datasets import not_on_remote

        ws = self.ctx.workspace
        if path is None:
            default = Path.home() / f"{ws.config().name}-{dt.date.today():%Y-%m-%d}.tar.gz"
            path, _ = QFileDialog.getSaveFileName(self, "Back up the workspace", str(default), "Backups (*.tar.gz)")
            if not path:
                return
        if not path.endswith((".tar.gz", ".tgz")):
            path += ".tar.gz"
        remotes = ws.dvc.remotes()
        lacking = not_on_remote(ws, next(iter(remotes.values()))) if remotes else [
            v.id for v in ws.store.versions() if v.dvc_hash]
        args = ["backup", path]
        if lacking:
            where = "on no DVC remote" if not remotes else f"not on the DVC remote {next(iter(remotes))}"
            answer = QMessageBox.question(
                self, "Back up the workspace",
                f"The data of {', '.join(lacking)} is {where}. Put the data into the archive too (larger)?\n\n"
                "No: the archive holds the registry, models, scoring data, git history and keys, and the data only "
                "where a DVC remote keeps it.")
            if answer == QMessageBox.StandardButton.Yes:
                args.append("--with-data")
        from studio.services.cli import cdl_json

        self.statusBar().showMessage(f"backing up into {path}…")
        run_task(cdl_json, ws.root, *args, on_done=self._backed_up,
                 on_error=lambda m: self._backed_up({"error": m}))

    def _backed_up(self, r: dict[str, Any]) -> None:
        from runtime.gc import human

        if "error" in r:
            text, icon = f"The backup failed: {r['error']}", QMessageBox.Icon.Critical
        else:
            text = (f"Wrote {r['archive']}: {r['files']} files, {human(r['bytes'])} ({human(r['archive_bytes'])} "
                    f"compressed){', with the data' if r['with_data'] else ''}.")
            text += "".join(f"\n\nNote: {n}" for n in r["notes"])
            icon = QMessageBox.Icon.Warning if r["notes"] else QMessageBox.Icon.Information
        self.statusBar().showMessage(text.split("\n")[0], 15000)
        self.backup_box = QMessageBox(icon, "Back up the workspace", text, QMessageBox.StandardButton.Ok, self)
        self.backup_box.open()

    def show_panel(self, pid: str) -> None:
        panel = self.panels[pid]
        self.panel_stack.setCurrentWidget(panel)
        panel.refresh()

    def _open_proposal(self, pid: str) -> None:
        self.scene.select("data.label")
        self.select_step("data.label")
        self.panels["labeling"].set_filter(f"proposal:{pid}")

    def _open_experiment(self, exp_id: int, kind: str) -> None:
        """An experiment double-clicked in the models panel, in the tuning dashboard (its step selected)."""
        step = "model.train" if kind == "train" else "model.tune"
        self.scene.select(step)
        self.select_step(step)
        self.panels["tuning"].show_experiment(exp_id)

    # -- runtime ------------------------------------------------------------------------------------------

    def _on_runtime_ready(self, address: str) -> None:
        self.runtime_label.setText(f"  runtime: {address}")
        self.statusBar().showMessage(f"runtime on {address}", 5000)
        self._refresh_status()
        self._runtime_settled()

    def _runtime_settled(self) -> None:
        """The runtime answered (or will not): the plotting library loads on the next turn of the event loop."""
        if "pyqtgraph" not in sys.modules:
            QTimer.singleShot(0, _import_pyqtgraph)

    def run(self, steps: list[str] | None, until: str | None = None, over: dict[str, Any] | None = None) -> None:
        """Run steps (None: the pipeline, up to `until`) in the runtime. With no data yet, a run that starts at
        data.import does not start: the data panel is shown, where a source is imported (Run all on a new workspace
        turned Collect red with "no sources configured: add one with `cdl data import SOURCE`", a command line)."""
        if (steps is None or "data.import" in steps) and self._no_data_yet():
            self.scene.select("data.import")
            self.select_step("data.import")
            self._run_refused("This workspace has no data yet.",
                              "Nothing ran. Choose a source in the data panel (File…, Folder…, or type its path) and "
                              "Import it; then Run all.")
            return
        self.runtime.submit(steps, until, False, over)

    def cancel(self) -> None:
        """Cancel (the job bar's, the header's, the flowchart's): the runtime's job, or else what a panel runs in
        the studio's own process (the data panel's import)."""
        if self.runtime is not None and self.runtime.current_job:
            self.runtime.cancel()
            return
        for panel in self.panels.values():
            if panel.can_cancel_own():
                panel.cancel_own()
        self.job_bar.cancel.setEnabled(False)

    def _no_data_yet(self) -> bool:
        if self.ctx is None:
            return False
        ws = self.ctx.workspace
        try:
            return not ws.config().params("data.import")["sources"] and ws.store.item_count() == 0
        except Exception:  # noqa: BLE001 - a cdl.yaml in a bad state: the runtime's own checks say what is wrong
            return False

    def _run_refused(self, message: str, info: str | None = None) -> None:
        """A run the runtime did not start (its checks refused a parameter before anything ran): said in a box, where
        it was a status-bar line for 15 s that a user who clicked Run could miss, the flowchart not moving."""
        from PySide6.QtWidgets import QMessageBox

        message = message.removeprefix("the runtime says: ")
        self.statusBar().showMessage(f"the run did not start: {message}", 15000)
        self.refused_box = QMessageBox(QMessageBox.Icon.Warning, "The run did not start", message,
                                       QMessageBox.StandardButton.Ok, self)
        if info is None:
            info = ("Nothing ran. Run again once the status bar says the runtime is up." if "not connected" in message
                    else "Nothing ran. A step's Parameters… (right-click it in the flowchart) or cdl.yaml holds the "
                    "value named above; the doctor lists every such finding.")
        self.refused_box.setInformativeText(info)
        self.refused_box.open()

    def _on_runtime_failed(self, message: str) -> None:
        self.runtime_label.setText("  runtime: not running")
        self.statusBar().showMessage(message)
        self._status_in_process()
        self._runtime_settled()

    def _status_in_process(self) -> None:
        """Without a runtime, statuses still show (read from the registry)."""
        from runtime.api import step_states

        def states() -> dict[str, Any]:
            return {"steps": [{"id": s.id, "status": s.status.value, "reason": s.reason, "summary": s.summary}
                              for s in step_states(self.ctx.workspace)]}

        run_task(states, on_done=self._on_status, on_error=lambda m: self.statusBar().showMessage(m))

    def _refresh_status(self) -> None:
        if self.runtime is not None and self.runtime.ready:
            self.runtime.refresh_status()
        else:
            self._status_in_process()

    def _refresh_all(self) -> None:
        self._refresh_status()
        current = self.panel_stack.currentWidget()
        if current is not None:
            current.refresh()

    def _on_status(self, status: dict[str, Any]) -> None:
        model = self.document.model
        for s in status["steps"]:
            node = model.nodes.get(s["id"])
            if node is not None and node.status == "running" and self.runtime and self.runtime.current_job:
                continue  # the event stream owns running nodes
            model.set_status(s["id"], s["status"], s.get("reason", ""))
        self._watch_outside(status)
        if self.header.step:
            self.header.show_step(model.nodes.get(self.header.step), self.descriptions.get(self.header.step, ""))
        if not self.loaded:
            self.loaded = True
            import gc

            gc.collect()
            gc.freeze()  # what the window keeps is old: later collections need not walk it (shorter GC pauses)
            self.sig_workspace_loaded.emit()

    def _look_for_outside_runs(self) -> None:
        """A `cdl run` started in a terminal after the window opened went unseen until a Refresh: while nothing
        runs, the window asks the registry every few seconds whether a step runs, and reads the statuses if so."""
        if self.ctx is None or not self.loaded or self._outside or (self.runtime is not None
                                                                    and self.runtime.current_job):
            return
        run_task(self.ctx.workspace.store.running_step_runs,
                 on_done=lambda runs: self._refresh_status() if runs else None)

    def _watch_outside(self, status: dict[str, Any]) -> None:
        """A step another process runs (`cdl run` in a terminal, CI on a shared registry) showed "running" until
        Refresh, long after it ended, with "idle" in the job bar and the tuning dashboard as it was when opened:
        while one runs, the statuses are read again every few seconds, the job bar says what runs and how far
        (the status's reason), and the open panel follows it, and follows again when it ends."""
        own = bool(self.runtime is not None and self.runtime.current_job)
        states = {s["id"]: s["status"] for s in status["steps"]}
        outside = {} if own else {s["id"]: s.get("reason", "") for s in status["steps"]
                                  if s["status"] == "running" and s["id"] not in self._own_running}
        ended = [k for k in self._outside if k not in outside]
        self._outside = outside
        if outside:
            self.job_bar.idle("; ".join(f"{k} runs outside the studio" + (f" ({why})" if why else "")
                                        for k, why in outside.items()))
            for s in status["steps"]:  # the node's bar, where the step's records say how far it is
                fraction = (s.get("summary") or {}).get("progress") if s["id"] in outside else None
                if fraction is not None:
                    self.document.model.set_progress(s["id"], float(fraction), s.get("reason", ""))
            self._outside_timer.start()
        elif ended and not own:
            self.job_bar.idle(", ".join(f"{k} {states.get(k, 'ended')}" for k in ended) + " (run outside the studio)")
        current = self.panel_stack.currentWidget()
        # the tuning dashboard follows the trials as they come; other panels (a data panel on 70 000 items) load
        # once more when the run ends, not every few seconds
        live = self.header.step in outside and getattr(current, "follows_outside_runs", False)
        if current is not None and (ended or live):
            current.refresh()

    def _on_job_submitted(self, job: str, plan: list[str]) -> None:
        self._job_waits = None
        self.header.set_running(True)
        self.job_bar.running(f"job {job}: {len(plan)} step(s) queued", None)
        self.job_bar.log.add(f"job {job}: {', '.join(plan)}")

    def _on_own_event(self, ev: Any) -> None:
        """An event of a step a panel runs in this process (the data panel's import or removal of a source): shown
        as a run's are, and the step is not taken for one run outside the studio."""
        kind = ev.kind.value
        if kind == "started" and ev.step:
            self._own_running.add(ev.step)
        if kind == "job-started":
            self._own_plan = list(ev.data.get("steps") or [])
        elif kind == "job-finished" and ev.data.get("status") == "cancelled" and not (
                self.runtime and self.runtime.current_job):
            # cancelled before its step started (while a new folder's files were hashed): no step event said so
            self.job_bar.idle(f"{', '.join(self._own_plan or ['the import'])} cancelled")
        self._on_event(ev)
        if not (self.runtime and self.runtime.current_job):
            # Cancel stops what a panel runs here where it can (an import, while its files are read)
            ending = kind in ("finished", "failed", "skipped", "job-finished")
            self.job_bar.cancel.setEnabled(not ending and any(p.can_cancel_own() for p in self.panels.values()))
        if kind in ("finished", "failed", "skipped") and ev.step:
            self._own_running.discard(ev.step)
            if not (self.runtime and self.runtime.current_job):
                said = "cancelled" if kind == "failed" and ev.message == "cancelled" else \
                    "failed" if kind == "failed" else "done"
                self.job_bar.idle(f"{ev.step} {said}" + (f": {ev.message}" if ev.message and said != "cancelled"
                                                          else ""))

    def _on_event(self, ev: Any) -> None:
        model = self.document.model
        kind = ev.kind.value
        if kind == "started":
            model.set_progress(ev.step, 0.0, "started")
            self.job_bar.running(f"{ev.step}: started", 0.0)
            self.job_bar.log.add(f"▶ {ev.step}")
        elif kind == "progress":
            model.set_progress(ev.step, ev.fraction, ev.message)
            self.job_bar.running(f"{ev.step}: {ev.message}", ev.fraction)
        elif kind == "log":
            self.job_bar.log.add(f"  {ev.step}: {ev.message}")
        elif kind == "metric":
            vals = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in ev.data.items()
                            if k in ("trial", "epoch", "val_accuracy", "val_loss"))
            self.job_bar.log.add(f"  {ev.step}: {vals}")
        elif kind == "finished":
            model.set_status(ev.step, ev.data.get("status", "done"))
            self.job_bar.log.add(f"✓ {ev.step}: {ev.message}")
        elif kind == "skipped":
            model.set_status(ev.step, "done")
            self.job_bar.log.add(f"= {ev.step}: up to date")
        elif kind == "failed":
            from runtime.domain.steps import run_ending

            # a step a person cancelled, or one waiting for a review, fails its run but is no failure
            ending = run_ending("failed", ev.message, ev.data)
            waiting = ending == "waiting"
            if ev.step:
                model.set_status(ev.step, ending, ev.message)
            self._job_waits = ev.message if waiting else None  # what it waits for, versus the champion
            self.job_bar.log.add(f"{'⏸' if waiting else '✗'} {ev.step}: {ev.message}")
            tb = (ev.data or {}).get("traceback")
            if tb:  # where it failed (the Runs dialog keeps it too)
                self.job_bar.log.add("\n".join(f"    {line}" for line in str(tb).rstrip().splitlines()))
            self.statusBar().showMessage(f"{ev.step} cancelled" if ending == "cancelled" else ev.message if waiting
                                         else f"{ev.step} failed: {ev.message}", 20000)
        if ev.step and ev.step == self.header.step:  # its badge said "stale" while the node ran at 40 %
            self.header.show_step(model.nodes.get(ev.step), self.descriptions.get(ev.step, ""))
        for panel in self.panels.values():
            panel.on_event(ev)

    def _on_job_finished(self, job: str, status: str) -> None:
        self.header.set_running(False)
        from runtime.domain.errors import first_line

        waits = getattr(self, "_job_waits", None)
        # a run that stopped at a review, or for a first device, did not fail: "job … failed" said it had; it says
        # what it waits for ("ws:2 awaits review (test_accuracy 0.97 < champion ws:1 0.98 …)"), whole in the tooltip
        self.job_bar.idle(f"job {job} waits: {first_line(waits, 160)}" if status == "failed" and waits
                          else f"job {job} {status}")
        self.job_bar.label.setToolTip(waits if status == "failed" and waits else "")
        self._refresh_all()

    # -- closing ------------------------------------------------------------------------------------------

    ASK_BEFORE_QUIT = True  # off for --screenshot runs (and the tests, but the one that asks)

    def quit_question(self) -> str | None:
        """What closing would cancel, as the question says it, or None where nothing would be: a run in this
        window's own runtime (one reached with --runtime goes on without the window), and the panels' actions under
        way (Panel.in_progress)."""
        said = []
        rt = self.runtime
        if rt is not None and rt.proc is not None and rt.proc.poll() is None and rt.current_job:
            running = [n.id for n in self.document.model.nodes.values() if n.status == "running"]
            what = " and ".join(running) if running else f"Job {rt.current_job}"  # before its first event
            said.append(f"{what} is running in this studio's runtime. Quitting cancels it: the step ends as "
                        "cancelled and runs again from its start next time (what the steps before it made is kept).")
        busy = [f"{p.title}: {m}" for p in self.panels.values() for m in p.in_progress.values()]
        if busy:  # a push, a canary's watch (whose verdict would never come), an export, a pull
            said.append("Still under way, and interrupted by quitting: " + "; ".join(busy))
        return "\n\n".join(said) + "\n\nQuit anyway?" if said else None

    def closeEvent(self, event) -> None:  # noqa: ANN001, N802
        question = self.quit_question() if self.ASK_BEFORE_QUIT else None
        if question and not confirm(self, "Quit CDL Studio", question):
            event.ignore()  # closing the window cancelled an hour of tuning without a word
            return
        self._look_timer.stop()
        self._outside_timer.stop()
        if self.ctx is not None:
            self.document.save_layout()
        if self.runtime is not None:
            self.runtime.stop()
        super().closeEvent(event)


def _import_pyqtgraph() -> None:
    import pyqtgraph  # noqa: F401

