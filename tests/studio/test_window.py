"""The whole window, a few times only: import BBC data from the GUI, run the data pipeline through the runtime,
label from the GUI; the screenshot command; the studio's process stays free of the engines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from PySide6.QtCore import Qt

from tests.conftest import make_bbc_subset, reap, wait_gone


def test_import_run_and_label_from_the_window(qtbot, tmp_path):
    from runtime.api import init_workspace
    from studio.app.window import MainWindow

    ws = init_workspace(tmp_path / "ws", "text-classification")
    src = make_bbc_subset(tmp_path / "news.zip", per_class=6)
    w = MainWindow(ws.root)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=60000):
        pass
    assert {n.status for n in w.document.model.nodes.values()} == {"never-run"}
    # Run all before there is any data: nothing runs, and the data panel is where to go (it turned Collect red with
    # "no sources configured: add one with `cdl data import SOURCE`")
    from PySide6.QtGui import QAction

    w.select_step("model.train")
    next(a for a in w.findChildren(QAction) if a.text() == "Run all").trigger()
    assert w.refused_box.text() == "This workspace has no data yet." and "Import it; then Run all" in \
        w.refused_box.informativeText()
    w.refused_box.close()
    assert w.runtime.current_job is None and w.header.step == "data.import"
    assert w.document.model.nodes["data.import"].status == "never-run"
    # import from the data panel
    data = w.panels["data"]
    assert w.panel_stack.currentWidget() is data
    data.path_edit.setText(str(src))
    data.import_btn.click()
    qtbot.waitUntil(lambda: "imported news.zip" in data.status_label.text(), timeout=60000)
    qtbot.waitUntil(lambda: w.document.model.nodes["data.import"].status == "done", timeout=30000)
    # the import's events went to the window as a run's do: it sat at "never run" with the job bar idle, then said
    # "data.import done (run outside the studio)"
    assert re.fullmatch(r"data.import done: \d+ items from 1 source\(s\)", w.job_bar.label.text()), w.job_bar.label.text()
    assert "▶ data.import" in w.job_bar.log.toPlainText() and not data.in_progress and not w.job_bar.cancel.isEnabled()
    w._refresh_status()
    qtbot.wait(1500)
    assert "outside" not in w.job_bar.label.text(), w.job_bar.label.text()
    # run the data pipeline up to data.label through the runtime, from the step header
    w.scene.select("data.label")
    w.select_step("data.label")
    with qtbot.waitSignal(w.runtime.sig_job_finished, timeout=120000) as finished:
        w.header.until_btn.click()
    assert finished.args[1] == "done"
    qtbot.waitUntil(lambda: w.document.model.nodes["data.label"].status == "done", timeout=30000)
    assert "✓ data.version" in w.job_bar.log.toPlainText()
    # label three items from the keyboard
    lab = w.panels["labeling"]
    assert w.panel_stack.currentWidget() is lab
    lab.filter.setCurrentText("all")
    qtbot.waitUntil(lambda: lab.current is not None and lab.loaded, timeout=30000)
    labeled = []
    for key in (Qt.Key.Key_2, Qt.Key.Key_3, Qt.Key.Key_1):
        item = lab.current
        labeled.append(item.item_id)
        with qtbot.waitSignal(lab.sig_loaded, timeout=20000):
            qtbot.keyClick(lab, key)
        qtbot.waitUntil(lambda: lab.current is not None and lab.current.item_id != labeled[-1], timeout=20000)
    manual = [r for r in ws.store.labels() if r.source == "manual"]
    assert [r.item_id for r in manual] == labeled
    assert [r.label for r in manual] == ["entertainment", "politics", "business"]
    # the new labels make ingest stale: they belong to the next version
    w._refresh_status()
    qtbot.waitUntil(lambda: w.document.model.nodes["data.ingest"].status == "stale", timeout=30000)
    # a parameter changed from the step header's Parameters dialog: saved to cdl.yaml, the step turns stale
    # and says which value changed
    from studio.widgets.params_dialog import ParamsDialog

    w.scene.select("data.split")
    w.select_step("data.split")
    w.header.params_btn.click()
    dlg = w.findChild(ParamsDialog)
    assert dlg is not None and dlg.isVisible() and dlg.editors["test_fraction"].text() == "0.2"
    dlg.editors["test_fraction"].setText("0.3")
    dlg.accept()
    assert ws.config().params("data.split")["test_fraction"] == 0.3
    assert "test_fraction 0.2 → 0.3" in w.statusBar().currentMessage()
    qtbot.waitUntil(lambda: w.document.model.nodes["data.split"].status == "stale", timeout=30000)
    assert "test_fraction 0.2 → 0.3" in w.document.model.nodes["data.split"].reason
    # its run history: the run the header started, with what it said
    from studio.widgets.runs_dialog import RunsDialog

    w.header.runs_btn.click()
    qtbot.waitUntil(lambda: w.findChild(RunsDialog) is not None, timeout=30000)
    runs = w.findChild(RunsDialog)
    assert runs.table.rowCount() == 1 and runs.table.item(0, 2).text() == "done"
    assert "train" in runs.table.item(0, 4).text() and "first run" in runs.table.item(0, 5).text()
    # that run's parameters back into cdl.yaml, as re-running a past run in an experiment tracker
    assert not runs.use_btn.isEnabled()
    runs.table.selectRow(0)
    assert runs.use_btn.isEnabled()
    runs.use_btn.click()
    assert ws.config().params("data.split")["test_fraction"] == 0.2
    assert "test_fraction 0.3 → 0.2" in runs.message.text()
    runs.reject()
    qtbot.waitUntil(lambda: w.document.model.nodes["data.split"].status == "done", timeout=30000)
    # the toolbar's Doctor: `cdl doctor` in a process of its own, its findings worst first
    from studio.widgets.doctor_dialog import DoctorDialog

    w.doctor_action.trigger()
    qtbot.waitUntil(lambda: w.findChild(DoctorDialog) is not None, timeout=120000)
    doc = w.findChild(DoctorDialog)
    cells = [(doc.table.item(r, 0).text(), doc.table.item(r, 2).text()) for r in range(doc.table.rowCount())]
    assert cells[0][0] in ("warn", "fail") and any("no DVC remote" in f for _, f in cells), cells
    # the toolbar's Back up… (the doctor warned of a workspace never backed up, and the studio could not make one):
    # with no DVC remote it asks whether the data goes in too
    from PySide6.QtWidgets import QMessageBox

    asked: list[str] = []
    original = QMessageBox.question
    QMessageBox.question = lambda parent, title, text, *_: asked.append(text) or QMessageBox.StandardButton.Yes
    try:
        w.back_up(str(tmp_path / "ws-backup"))
    finally:
        QMessageBox.question = original
    assert len(asked) == 1 and asked[0].startswith("The data of v1 is on no DVC remote. Put the data into the "
                                                   "archive too (larger)?"), asked
    qtbot.waitUntil(lambda: getattr(w, "backup_box", None) is not None, timeout=120000)
    said = w.backup_box.text()
    assert said.startswith(f"Wrote {tmp_path / 'ws-backup.tar.gz'}: ") and "with the data" in said, said
    import tarfile

    with tarfile.open(tmp_path / "ws-backup.tar.gz") as tar:
        names = tar.getnames()
    assert ".cdl/registry.db" in names and any(n.startswith(".dvc/cache/") for n in names)
    assert ws.store.get_state("last_backup")["with_data"] is True
    w.backup_box.close()
    # a run the runtime refuses before anything runs (a search space name training lacks, written by hand) is said
    # in a box, where it was a status-bar line for 15 s while the flowchart did not move
    cfg = ws.config()
    cfg.steps["model.tune"]["search_space"]["dropuot"] = {"type": "float", "low": 0.0, "high": 0.5}
    cfg.save()
    runs = len(ws.store.step_runs("data.ingest"))
    w.runtime.submit(None, "model.tune")
    qtbot.waitUntil(lambda: getattr(w, "refused_box", None) is not None and w.refused_box.isVisible(), timeout=60000)
    assert "model.tune.search_space.dropuot: training takes no such parameter (did you mean 'dropout'?)" in \
        w.refused_box.text(), w.refused_box.text()
    assert w.refused_box.windowTitle() == "The run did not start" and not w.refused_box.text().startswith("the ")
    assert len(ws.store.step_runs("data.ingest")) == runs
    w.refused_box.close()
    w.close()
    # the start page's Restore a backup…: a damaged archive restores nothing and says why; a good one is unpacked
    # into a new folder and opened
    start = MainWindow(None)
    qtbot.addWidget(start)
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes((tmp_path / "ws-backup.tar.gz").read_bytes()[:5000])
    start.start_page.restore(str(bad), str(tmp_path / "nothing"))
    qtbot.waitUntil(lambda: "cannot be read" in start.start_page.message.text(), timeout=60000)
    assert not (tmp_path / "nothing").exists()
    with qtbot.waitSignal(start.sig_workspace_loaded, timeout=120000):
        start.start_page.restore(str(tmp_path / "ws-backup.tar.gz"), str(tmp_path / "restored"))
    assert start.ctx.root == (tmp_path / "restored").resolve()
    assert [v.id for v in start.ctx.workspace.store.versions()] == [v.id for v in ws.store.versions()]
    assert getattr(start, "restore_box", None) is None  # the data came with it: nothing more to do
    start.close()
    from runtime.backup import backup

    def restored(archive: str, dest: str) -> str:
        """What the Restored box says after the start page restores `archive` into `dest`."""
        w = MainWindow(None)
        qtbot.addWidget(w)
        with qtbot.waitSignal(w.sig_workspace_loaded, timeout=120000):
            w.start_page.restore(str(tmp_path / archive), str(tmp_path / dest))
        said = w.restore_box.text()
        w.restore_box.close()
        w.close()
        return said

    backup(ws, tmp_path / "no-data.tar.gz")
    said = restored("no-data.tar.gz", "restored-2")
    # no remote: it said to pull "from a DVC remote (the workspace had none)"
    assert "the archive holds no data and the workspace had no DVC remote" in said, said
    assert "cdl data pull" not in said and "Pull every version" not in said, said
    assert "right-click data.version in the flowchart and choose Run up to data.version" in said, said
    from runtime.datasets import remote_add

    remote_add(ws, "store", str(tmp_path / "store"))
    backup(ws, tmp_path / "with-remote.tar.gz")
    said = restored("with-remote.tar.gz", "restored-3")
    assert "`cdl data pull` fetches every dataset version from the DVC remote store" in said, said
    assert "the Dataset versions panel's Pull every version, then Check out the selected" in said, said


def test_screenshot_command(tmp_path, packaged):
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "studio", str(packaged.root), "--screenshot",
                           str(out), "--panel", "compression"], capture_output=True, text=True, timeout=180,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Error calling Python override" not in proc.stderr, proc.stderr[-2000:]  # a paint() that raised
    from PySide6.QtGui import QImage

    img = QImage(str(out))
    assert img.width() >= 1000 and img.height() >= 600


def test_a_screenshot_without_a_panel_waits_for_the_panel_shown(qtbot, packaged, monkeypatch):
    """`cdl studio WS --screenshot F` (no --panel) grabbed the data panel before its sources were listed: an empty
    table in a workspace that had imported 70000 items (here the panel's load is made as slow as that)."""
    import time

    from studio.app.window import MainWindow
    from studio.panels.data.panel import DataPanel
    from studio.screenshots import grab_when_loaded

    slow = DataPanel.load
    monkeypatch.setattr(DataPanel, "load", lambda self: (time.sleep(2), slow(self))[1])

    w = MainWindow(packaged.root)
    qtbot.addWidget(w)
    w.show()
    seen = {}

    def done(code: int) -> None:
        data = w.panels["data"]
        seen.update(code=code, current=w.panel_stack.currentWidget() is data, loaded=data.loaded,
                    rows=data.sources.rowCount())

    grab_when_loaded(w, packaged.root.parent / "shot.png", None, done)
    qtbot.waitUntil(lambda: "code" in seen, timeout=120000)
    assert seen == {"code": 0, "current": True, "loaded": True, "rows": 1}, seen


def test_new_window_opens_a_start_page_beside_the_workspace(qtbot, packaged, tmp_path, monkeypatch):
    """One window held one workspace and nothing in it led back to the start page: switching meant quitting. The
    toolbar's New window starts a second studio on its start page; here it is started for real, with --screenshot."""
    from studio.app.window import MainWindow

    w = MainWindow(packaged.root)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=60000):
        pass
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: started.append(argv))
    w.new_window_action.trigger()
    assert started == [[sys.executable, "-m", "studio.app.main"]], started
    monkeypatch.undo()
    out = tmp_path / "second.png"
    proc = w.new_window(["--screenshot", str(out)])
    assert proc.wait(timeout=120) == 0
    assert out.exists() and w.ctx is not None  # this window still holds its workspace
    # the start page's screenshot exits 0 (it said 1, "not loaded"); a workspace that cannot be opened exits 1
    bad = subprocess.run([sys.executable, "-m", "studio.app.main", str(tmp_path / "nowhere"), "--screenshot",
                          str(tmp_path / "bad.png")], capture_output=True, timeout=120)
    assert bad.returncode == 1 and (tmp_path / "bad.png").exists()


def test_recent_workspaces_say_what_they_are_and_open_from_the_keyboard(qtbot, packaged):
    """The recent list showed bare paths and opened on a double-click only."""
    from studio.app.start_page import StartPage, remember

    remember(packaged.root)
    page = StartPage()
    qtbot.addWidget(page)
    page.show()
    item = page.recent.item(0)
    name = __import__("yaml").safe_load((packaged.root / "cdl.yaml").read_text())["name"]
    assert item.text() == f"{name} · text-classification · {packaged.root}", item.text()
    assert not page.open_recent_btn.isEnabled()
    page.recent.setCurrentRow(0)
    assert page.open_recent_btn.isEnabled()
    with qtbot.waitSignal(page.sig_open, timeout=2000) as opened:
        page.open_recent_btn.click()
    assert opened.args == [str(packaged.root)]
    page.recent.setFocus()
    with qtbot.waitSignal(page.sig_open, timeout=2000) as opened:
        qtbot.keyClick(page.recent, Qt.Key.Key_Return)
    assert opened.args == [str(packaged.root)]


def test_the_start_page_fits_a_1024_pixel_screen(qtbot, tmp_path, monkeypatch):
    """Two lines of text that did not wrap made the start page, and so the window, at least 1026 pixels wide: two
    more than a 1024 x 768 screen. They wrap."""
    from studio.app.start_page import StartPage

    monkeypatch.setenv("HOME", str(tmp_path))
    page = StartPage()
    qtbot.addWidget(page)
    assert page.minimumSizeHint().width() <= 800, page.minimumSizeHint()


def test_create_offers_a_free_folder_and_names_the_workspace_in_the_way(qtbot, tmp_path, monkeypatch):
    """The Create form offered ~/cdl-project again after it had become a workspace, and Create then failed."""
    from runtime.api import init_workspace
    from studio.app.start_page import StartPage

    monkeypatch.setenv("HOME", str(tmp_path))
    init_workspace(tmp_path / "cdl-project", "text-classification")
    page = StartPage()
    qtbot.addWidget(page)
    assert page.folder.text() == str(tmp_path / "cdl-project-2")
    page.folder.setText(str(tmp_path / "cdl-project"))
    page.create_btn.click()
    said = page.message.text()
    assert f"{tmp_path / 'cdl-project'} is a CDL workspace already" in said, said
    assert str(tmp_path / "cdl-project-2") in said and page.create_btn.isEnabled()


def test_closing_the_window_during_a_run_asks_first(qtbot, packaged, monkeypatch):
    """Closing the window cancelled the run of its runtime without a word (an hour of tuning, gone). It asks, No
    keeping the window and the run; Yes cancels the run and closes. With nothing running it closes at once."""
    from studio.app import window as window_mod
    from studio.app.window import MainWindow

    w = MainWindow(packaged.root)
    w.ASK_BEFORE_QUIT = True
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=60000):
        pass
    asked: list[str] = []
    monkeypatch.setattr(window_mod, "confirm", lambda parent, title, text: asked.append(text) or False)
    assert w.quit_question() is None
    # a panel's action under way (a push, a canary's watch) is named too, and only while it lasts
    import threading

    release = threading.Event()
    devices = w.panels["devices"]
    devices.work(release.wait, 30, message="pushing ws:1 to pi1…")
    assert w.quit_question() == ("Still under way, and interrupted by quitting: Devices and deployments: pushing ws:1 "
                                 "to pi1…\n\nQuit anyway?")
    release.set()
    qtbot.waitUntil(lambda: not devices.in_progress, timeout=10000)
    assert w.quit_question() is None
    w.runtime.current_job = "j-7"  # a run submitted, before its first event marks a node running
    assert w.quit_question().startswith("Job j-7 is running in this studio's runtime. Quitting cancels it")
    w.runtime.current_job = None
    w.scene.select("model.train")
    w.select_step("model.train")
    w.runtime.submit(["model.train"], None, True, {"model.train": {"epochs": 400, "refit": False}})
    qtbot.waitUntil(lambda: w.document.model.nodes["model.train"].status == "running", timeout=60000)
    # the step's header follows the run (its badge said "done" or "stale" beside a node at 40 %), and says how far
    qtbot.waitUntil(lambda: "running: epoch " in w.header.detail.text(), timeout=60000)
    assert w.header.badge.text().strip().startswith("running "), w.header.badge.text()
    assert not w.close() and w.isVisible() and asked
    assert asked[0].startswith("model.train is running in this studio's runtime. Quitting cancels it"), asked
    assert w.runtime.current_job and w.runtime.proc.poll() is None  # the run goes on
    monkeypatch.setattr(window_mod, "confirm", lambda parent, title, text: True)
    proc = w.runtime.proc
    assert w.close() and not w.isVisible()
    assert proc.wait(timeout=30) is not None
    # as the question said: cancelled (it was recorded "failed: the worker process exited with code -15")
    from runtime.domain.steps import run_ending
    from runtime.workspace import Workspace

    run = Workspace(packaged.root).store.step_runs("model.train", limit=1)[0]
    assert run_ending(run.status, run.error, run.summary) == "cancelled", (run.status, run.error)


_PROBE = """
import importlib.abc, json, os, sys, threading
os.environ["QT_QPA_PLATFORM"] = "offscreen"
off_thread = []

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph") and \\
                threading.current_thread() is not threading.main_thread():
            off_thread.append((name, threading.current_thread().name))
        return None

sys.meta_path.insert(0, Watch())
from PySide6.QtWidgets import QApplication
from PySide6.QtCore import QTimer
from studio.app.window import MainWindow
app = QApplication([])
w = MainWindow(sys.argv[1])
w.show()
for pid in ("review", "tuning", "compression", "models", "monitoring", "data", "versions", "labeling", "devices"):
    w.show_panel(pid)
def done():
    engines = sorted(m for m in ("torch", "tensorflow", "onnxruntime", "optuna", "tf_keras", "dvc") if m in sys.modules)
    print(json.dumps({"engines": engines, "off_thread": off_thread, "pyqtgraph": "pyqtgraph" in sys.modules}))
    w.close(); app.quit()
w.sig_workspace_loaded.connect(lambda: QTimer.singleShot(3000, done))
QTimer.singleShot(60000, done)
app.exec()
"""


@pytest.fixture(scope="module")
def studio_probe(packaged_template, tmp_path_factory) -> dict:
    """A fresh studio process that opens a workspace with models and shows its panels: what it loaded, and
    which imports of the Qt bindings or pyqtgraph ran off the GUI thread."""
    import shutil

    root = tmp_path_factory.mktemp("probe") / "ws"
    shutil.copytree(packaged_template, root, symlinks=True)
    out = subprocess.run([sys.executable, "-c", _PROBE, str(root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_studio_process_loads_no_engine(studio_probe):
    """No torch, TensorFlow, onnxruntime, Optuna or DVC in the studio: training, tuning and compression run in
    the runtime process."""
    assert studio_probe["engines"] == []


def test_qt_bindings_load_on_the_gui_thread_only(studio_probe):
    """PySide creates its classes lazily, and not thread-safely: pyqtgraph's import, which creates every
    QtCore/QtGui/QtWidgets class, once ran in a worker thread and, in 5 of 65 starts, left QGradient without
    its Preset enum, so that no flowchart node could paint. Every import of the Qt bindings or of pyqtgraph
    in a studio process must happen on the GUI thread."""
    assert studio_probe["off_thread"] == [] and studio_probe["pyqtgraph"], studio_probe


def test_the_runtime_a_studio_started_stops_when_the_studio_dies(small_bbc):
    """A studio SIGKILLed (crashed) does not leave its `cdl runtime serve` behind, running jobs nobody watches
    beside the runtime the next studio starts."""

    from runtime.domain.processes import pid_alive

    code = """
import sys, time
from PySide6.QtCore import QCoreApplication
from studio.services.runtime import RuntimeConnection
app = QCoreApplication([])
rt = RuntimeConnection(sys.argv[1])
rt.start()
deadline = time.monotonic() + 60
while (rt.proc is None or not rt.ready) and time.monotonic() < deadline:
    time.sleep(0.1)
print(rt.proc.pid if rt.ready else "not ready", flush=True)
time.sleep(600)
"""
    studio = subprocess.Popen([sys.executable, "-c", code, str(small_bbc.root)], stdout=subprocess.PIPE, text=True)
    runtime_pid = None
    try:
        line = studio.stdout.readline().strip()
        assert line.isdigit(), line
        runtime_pid = int(line)
        assert pid_alive(runtime_pid)
        studio.kill()
        studio.wait(10)
        assert wait_gone(runtime_pid), "the runtime outlived the studio that started it"
    finally:
        reap(studio, runtime_pid)


def test_a_runtime_that_cannot_start_says_why(tmp_path, qtbot):
    from studio.services.runtime import RuntimeConnection

    rt = RuntimeConnection(tmp_path)  # no cdl.yaml: not a workspace
    with qtbot.waitSignal(rt.sig_failed, timeout=60000) as failed:
        rt.start()
    assert "the runtime did not start" in failed.args[0] and "not a CDL workspace" in failed.args[0], failed.args[0]
    with qtbot.waitSignal(rt.sig_refused, timeout=5000) as refused:  # a Run now: said as a refused run is
        rt.submit(None, None)
    assert refused.args[0].startswith("the runtime is not connected yet"), refused.args[0]
    rt.stop()


def test_a_runtime_that_dies_is_started_again(small_bbc, qtbot):
    """The studio's runtime killed under it (OOM killer, a crash): the studio says so and starts a new one,
    which answers; a runtime that keeps dying is given up on with a message that says so."""
    import signal as sig

    from studio.services.runtime import RuntimeConnection

    rt = RuntimeConnection(small_bbc.root)
    try:
        with qtbot.waitSignal(rt.sig_ready, timeout=60000):
            rt.start()
        first = rt.proc.pid
        said: list[str] = []
        rt.sig_failed.connect(said.append)
        with qtbot.waitSignals([rt.sig_failed, rt.sig_ready], timeout=60000, order="strict"):
            rt.proc.send_signal(sig.SIGKILL)
        message = said[0]
        assert "stopped unexpectedly (exit status -9); starting it again" in message, message
        assert rt.proc.pid != first and rt.ready
        assert rt.client.get_status()["dataset_version"] == "v1"
        for _ in range(2):  # two more deaths within the minute: given up
            with qtbot.waitSignal(rt.sig_failed, timeout=60000) as failed:
                rt.proc.send_signal(sig.SIGKILL)
            if "not started again" in failed.args[0]:
                break
            qtbot.waitUntil(lambda: rt.ready, timeout=60000)
        assert "stopped three times within a minute, so it is not started again" in failed.args[0], failed.args[0]
        assert not rt.ready
    finally:
        rt.stop()


def test_a_runtime_that_dies_before_it_answers_is_started_again(small_bbc, qtbot, monkeypatch):
    """The runtime killed after it said where it listens but before the studio's first call reached it: that is a
    death like any other (the studio used to report 'cannot start or reach the runtime' after 15 s, with no
    supervisor left to start it again), and `ready` is true only once a runtime answers."""
    import signal as sig

    from runtime.server.client import RuntimeClient
    from studio.services.runtime import RuntimeConnection

    rt = RuntimeConnection(small_bbc.root)
    killed: list[int] = []
    wait_ready = RuntimeClient.wait_ready

    def kill_first_then_wait(client, timeout=10.0):  # noqa: ANN001, ANN202
        if not killed:
            killed.append(rt.proc.pid)
            rt.proc.send_signal(sig.SIGKILL)
            rt.proc.wait()
        assert not rt.ready  # not connected before the runtime answers
        return wait_ready(client, timeout)

    monkeypatch.setattr(RuntimeClient, "wait_ready", kill_first_then_wait)
    said: list[str] = []
    rt.sig_failed.connect(said.append)
    try:
        with qtbot.waitSignal(rt.sig_ready, timeout=60000):
            rt.start()
        assert killed and rt.proc.pid != killed[0]
        assert len(said) == 1 and "stopped unexpectedly (exit status -9); starting it again" in said[0], said
        assert rt.ready and rt.client.get_status()["dataset_version"] == "v1"
    finally:
        rt.stop()


def test_the_tests_keep_the_users_recent_workspaces_alone(tmp_path, qtbot):
    """Opening a workspace remembers it in the studio's settings; the tests' own settings are a folder of their
    own (tests/conftest.py), not the developer's ~/.config, whose recent list filled with pytest folders."""
    import os

    from PySide6.QtCore import QSettings

    from studio.app.start_page import recent, remember

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "cdl.yaml").write_text("cdl: 1\n")
    remember(ws)
    assert recent()[0] == str(ws)
    where = QSettings("CDL", "Studio").fileName()
    assert where.startswith(os.environ["XDG_CONFIG_HOME"]) and "cdl-tests-config-" in where, where
    # the next studio (another process, reading the file) lists it, and adds its own before it: a list of one came
    # back from the file as a string, so the start page's list was empty and each workspace replaced the last
    import subprocess
    import sys

    QSettings("CDL", "Studio").sync()
    other = tmp_path / "other"
    other.mkdir()
    (other / "cdl.yaml").write_text("cdl: 1\n")
    code = ("import sys; from pathlib import Path; from studio.app.start_page import recent, remember; "
            "print(recent()); remember(Path(sys.argv[1])); print(recent())")
    out = subprocess.run([sys.executable, "-c", code, str(other)], capture_output=True, text=True, check=True,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}).stdout.splitlines()
    import ast

    before, after = (ast.literal_eval(line) for line in out)  # other tests' workspaces may follow
    assert before[0] == str(ws) and after[:2] == [str(other), str(ws)], out
    assert after[2:] == [p for p in before if p != str(other)][1:10 - 1], out  # the rest kept, ten in all


def test_the_studio_on_a_folder_that_is_no_workspace_offers_to_create_it_there(tmp_path, qtbot):
    """`cdl studio NEWFOLDER` showed "not a CDL workspace (no cdl.yaml)" with the Create form on ~/cdl-project: the
    folder named on the command line is where Create now makes it, in one click."""
    from studio.app.window import MainWindow

    w = MainWindow(tmp_path / "new-project")
    qtbot.addWidget(w)
    page = w.start_page
    assert page.folder.text() == str((tmp_path / "new-project").resolve())
    assert page.message.text() == (f"{(tmp_path / 'new-project').resolve()} does not exist: Create makes one there "
                                   "(choose its template), or open another folder.")
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=120000):
        page.create_btn.click()
    assert (tmp_path / "new-project" / "cdl.yaml").exists() and w.ctx.root == (tmp_path / "new-project").resolve()
    w.close()
    other = MainWindow(tmp_path)  # a folder that exists, without cdl.yaml
    qtbot.addWidget(other)
    assert other.start_page.message.text().startswith(f"{tmp_path.resolve()}: not a CDL workspace (no cdl.yaml): "
                                                      "Create makes one there")
    other.close()


def test_files_edited_outside_the_studio_refresh_the_statuses(qtbot, tmp_path):
    """cdl.yaml and src/ changed in an editor: the flowchart kept its statuses (model.train done after its model
    file changed) until Refresh was clicked. The window watches them, and follows an editor's save-by-rename."""
    import os

    from runtime.api import init_workspace
    from studio.app.window import MainWindow

    ws = init_workspace(tmp_path / "ws", "text-classification")
    (ws.root / "src" / "net.py").write_text("# v1\n")
    w = MainWindow(ws.root)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=60000):
        pass
    calls: list[int] = []
    w._refresh_status = lambda: calls.append(1)
    assert str(ws.root / "src" / "net.py") in w._watcher.files()
    cfg = ws.root / "cdl.yaml"
    cfg.write_text(cfg.read_text() + "# edited\n")
    qtbot.waitUntil(lambda: len(calls) >= 1, timeout=5000)
    qtbot.wait(600)
    n = len(calls)
    tmp = ws.root / "src" / "net.py.new"  # as editors save: a new file renamed over the old one
    tmp.write_text("# v2\n")
    os.replace(tmp, ws.root / "src" / "net.py")
    qtbot.waitUntil(lambda: len(calls) > n, timeout=5000)
    assert str(ws.root / "src" / "net.py") in w._watcher.files()  # still watched after the rename
    qtbot.wait(600)
    n = len(calls)
    (ws.root / "src" / "net.py").write_text("# v3\n")
    qtbot.waitUntil(lambda: len(calls) > n, timeout=5000)
    (ws.root / "src" / "layers.py").write_text("# new\n")  # a new module: watched from now on
    qtbot.waitUntil(lambda: str(ws.root / "src" / "layers.py") in w._watcher.files(), timeout=5000)
    # a step that fails with a traceback (its own code's) shows it in the job log, under the step's line
    from runtime.domain.events import Event, EventKind

    w._on_event(Event(EventKind.FAILED, step="model.train", message="KeyError: 'hiden' (src/net.py, line 4, in "
                      "build_model)", data={"traceback": 'Traceback (most recent call last):\n  File "src/net.py", '
                                                         "line 4, in build_model\nKeyError: 'hiden'"}))
    assert "✗ model.train: KeyError: 'hiden' (src/net.py, line 4, in build_model)\n    Traceback (most recent call " \
        'last):\n      File "src/net.py", line 4, in build_model' in w.job_bar.log.toPlainText()
    assert w.document.model.nodes["model.train"].status == "failed"
    # a step a person cancelled is "cancelled", not a red "failed"
    w._on_event(Event(EventKind.FAILED, step="model.tune", message="cancelled"))
    assert w.document.model.nodes["model.tune"].status == "cancelled"
    assert w.statusBar().currentMessage() == "model.tune cancelled"
    # a step that waits for a person (a review) is "waiting", not a red "failed"
    w._on_event(Event(EventKind.FAILED, step="model.review", message="ws:1 awaits review: `cdl models review ...`",
                      data={"waiting": True}))
    assert w.document.model.nodes["model.review"].status == "waiting"
    assert "⏸ model.review: ws:1 awaits review" in w.job_bar.log.toPlainText()
    w._on_job_finished("j1", "failed")  # the run it ended waits: it said "job j1 failed"
    # it says what for (the review's line sets the candidate beside the champion), where it said "model.review
    # waits for a person"
    assert w.job_bar.label.text() == "job j1 waits: ws:1 awaits review: `cdl models review ...`"
    w._on_job_submitted("j2", ["model.train"])
    w._on_event(Event(EventKind.FAILED, step="model.train", message="KeyError: 'hiden'"))
    w._on_job_finished("j2", "failed")
    assert w.job_bar.label.text() == "job j2 failed"


def test_a_step_run_outside_the_studio_is_followed_until_it_ends(qtbot, tmp_path):
    """A step another process runs (`cdl run` in a terminal) went unseen until Refresh, then showed "running" in the
    flowchart until the next Refresh, long after it ended, and the job bar said "idle": the window notices a run
    started, reads the statuses again every few seconds while one runs, says in the job bar what runs and how far,
    and refreshes the open panel when it ends (the tuning dashboard as it goes)."""
    from runtime.api import init_workspace
    from studio.app.window import MainWindow

    ws = init_workspace(tmp_path / "ws", "text-classification")
    w = MainWindow(ws.root)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=60000):
        pass
    node = w.document.model.nodes["data.import"]
    assert node.status == "never-run" and w.job_bar.label.text() == "idle"
    # what `cdl run` in another process writes when it starts a step (its pid is alive: this one's)
    run = ws.store.start_step_run("data.import", None, "fp", {"sources": []})
    # seen without a Refresh: the window asks every few seconds whether a step runs
    qtbot.waitUntil(lambda: node.status == "running", timeout=w.LOOK_MS + 20000)
    assert "data.import runs outside the studio (for " in w.job_bar.label.text()
    assert w._outside_timer.isActive()
    panel = w.panel_stack.currentWidget()
    refreshed: list[int] = []
    panel.refresh = lambda: refreshed.append(1)
    qtbot.wait(2 * w.OUTSIDE_POLL_MS)  # the data panel loads again when the run ends, not at every poll
    assert refreshed == [] and node.status == "running"
    ws.store.finish_step_run(run, "done", output_fp="x", summary={}, message="0 items")
    qtbot.waitUntil(lambda: node.status != "running", timeout=w.OUTSIDE_POLL_MS + 20000)
    assert w.job_bar.label.text() == f"data.import {node.status} (run outside the studio)"
    assert refreshed and not w._outside_timer.isActive()
    # the tuning dashboard follows a tuning run as it goes
    w.scene.select("model.tune")
    w.select_step("model.tune")
    tuning = w.panel_stack.currentWidget()
    assert tuning is w.panels["tuning"]
    loads: list[int] = []
    tuning.refresh = lambda: loads.append(1)
    run = ws.store.start_step_run("model.tune", None, "fp", {"n_trials": 8, "max_epochs": 4})
    # two of its eight trials ended, as a tuning run records them: the node's bar says a quarter
    exp = ws.store.create_experiment(kind="tune", step="model.tune", job=None, dataset_version="v1", transform="t",
                                     framework="torch", template="mlp")
    for k in range(3):
        trial = ws.store.create_trial(exp.id, k, {"lr": 0.001})
        if k < 2:
            ws.store.finish_trial(trial.id, "pruned", 0.5, 1)
    qtbot.waitUntil(lambda: len(loads) >= 2, timeout=4 * w.OUTSIDE_POLL_MS + 20000)
    assert "model.tune runs outside the studio (for " in w.job_bar.label.text()
    assert "2 of 8 trials finished (2 pruned), trial 2 running (0 of 4 epochs)" in w.job_bar.label.text()
    tune = w.document.model.nodes["model.tune"]
    qtbot.waitUntil(lambda: tune.progress == 0.25, timeout=2 * w.OUTSIDE_POLL_MS + 20000)
    assert tune.status == "running"
    ws.store.finish_step_run(run, "failed", error="stopped")


def test_an_experiment_double_clicked_in_the_models_panel_opens_in_the_tuning_dashboard(qtbot, tmp_path):
    """The models panel listed experiments, and the tuning dashboard showed the newest of a kind: an older one was
    found by its combobox. A double-click on it now selects its step and shows it there."""
    from runtime.api import init_workspace
    from studio.app.window import MainWindow

    ws = init_workspace(tmp_path / "ws", "text-classification")
    store = ws.store
    made = {}
    for kind, step in (("tune", "model.tune"), ("tune", "model.tune"), ("train", "model.train")):
        e = store.create_experiment(kind=kind, step=step, dataset_version="v1", transform="t", framework="torch",
                                    template="bbc-net", status="done")
        for n in range(2 if kind == "tune" else 1):
            t = store.create_trial(e.id, n, {"lr": 0.001 * (n + 1)})
            store.finish_trial(t.id, "complete", 0.5 + n / 10, 1)
        made.setdefault(kind, []).append(e)
    w = MainWindow(ws.root)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=60000):
        pass
    w.scene.select("model.register")
    w.select_step("model.register")
    models = w.panels["models"]
    qtbot.waitUntil(lambda: models.experiments.rowCount() == 3, timeout=20000)
    older = made["tune"][0]  # not the newest tune experiment, which the dashboard shows by itself
    row = next(r for r in range(3) if models.experiments.item(r, 1).text() == older.name)
    models.experiments.itemDoubleClicked.emit(models.experiments.item(row, 3))
    tuning = w.panels["tuning"]
    assert w.panel_stack.currentWidget() is tuning
    assert w.header.step == "model.tune"
    qtbot.waitUntil(lambda: tuning.experiment.currentData() == older.id and tuning.trials.rowCount() == 2,
                    timeout=20000)
    qtbot.wait(300)  # a later reload keeps it (it would go back to the newest)
    tuning.refresh()
    qtbot.wait(300)
    assert tuning.experiment.currentData() == older.id


def _loaded_window(qtbot, root, width: int, height: int):  # noqa: ANN001, ANN202
    """The studio's window on a workspace, at width x height, shown and loaded."""
    from studio.app.window import MainWindow

    w = MainWindow(root)
    qtbot.addWidget(w)
    w.resize(width, height)
    w.show()
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=60000):
        pass
    return w


def test_the_window_fits_a_laptop_screen(qtbot, packaged):
    """Rows of five to seven buttons made the window at least 1552 pixels wide, and the review panel's matrices 813
    pixels tall: more than a 1366 x 768 laptop shows, so that its right edge and bottom were off the screen. The rows
    wrap onto a second line where the room runs out, and a panel taller than the window scrolls."""
    w = _loaded_window(qtbot, packaged.root, 1366, 768)
    for size in ((1366, 768), (1024, 768)):  # a laptop's, and an old screen's (the monitoring row was 604 wide)
        w.resize(*size)
        for pid, panel in w.panels.items():
            w.show_panel(pid)
            qtbot.waitUntil(lambda p=panel: p.loaded and not getattr(p, "_loading", False), timeout=30000)
            qtbot.wait(50)
            hint = w.minimumSizeHint()
            assert hint.width() <= 1024 and hint.height() <= 700, (pid, hint)
            # no sideways scrolling at this size: each panel's content fits the room beside the flowchart
            content = panel.scroll.widget().minimumSizeHint().width()
            assert content <= panel.scroll.viewport().width(), (size, pid, content, panel.scroll.viewport().width())
    # the header's buttons wrap too, where the header is narrow, and it grows to show them
    assert w.header.layout().totalHeightForWidth(420) > w.header.layout().totalHeightForWidth(1000)


def test_plots_stack_where_side_by_side_would_cut_their_titles(qtbot, packaged):
    """At 1100 pixels the tuning, monitoring, models and data panels' plots stood two to a row, 190 to 320 pixels
    each: their titles were cut mid-word ("Scoring volume (records per minute") and the drift tests' legend at its
    edge. They stand one under another where a column would be narrower than a title needs, and two to a row where
    there is room. The data panel's text samples, three of at least 220 pixels, made it scroll sideways."""
    from studio.widgets.flow import PlotGrid

    w = _loaded_window(qtbot, packaged.root, 1100, 720)
    panels = ("tuning", "monitoring", "models", "data")
    for pid in panels:
        panel = w.panels[pid]
        w.show_panel(pid)
        qtbot.waitUntil(lambda p=panel: p.loaded and not getattr(p, "_loading", False), timeout=30000)
        if pid == "data":
            panel.tabs.setCurrentIndex(panel.tabs.indexOf(panel.ana_plots.parentWidget()))
            qtbot.waitUntil(lambda p=panel: p.samples_layout.count() > 0, timeout=10000)
        grid = panel.findChild(PlotGrid)
        qtbot.waitUntil(lambda g=grid: len(g._cells) >= 2, timeout=10000)
        qtbot.wait(50)
        plots = [p for cell in grid._cells for p in cell if p.isVisible()]
        assert len(plots) >= 2 and grid.columns == 1, (pid, grid.width(), grid.columns)
        for plot in plots:
            title = plot.getPlotItem().titleLabel
            assert title.item.boundingRect().width() <= plot.width(), (pid, title.text, plot.width())
        content = panel.scroll.widget().minimumSizeHint().width()
        assert content <= panel.scroll.viewport().width(), (pid, content, panel.scroll.viewport().width())
    w.resize(1700, 920)
    for pid in panels:
        w.show_panel(pid)
        grid = w.panels[pid].findChild(PlotGrid)
        qtbot.waitUntil(lambda g=grid: g.columns == 2, timeout=5000)
        qtbot.wait(50)
        first, second = ([p for p in cell if p.isVisible()][0] for cell in grid._cells[:2])
        assert first.y() == second.y() and second.x() >= first.x() + first.width(), (pid, first.geometry(),
                                                                                    second.geometry())


def test_panels_do_not_scroll_on_a_laptop_where_their_parts_can_shrink(qtbot, packaged):
    """At 1366 x 768 the models panel scrolled: its table of one or two versions took 270 pixels and the training
    curves were below the fold. The tables are as tall as their rows, and the curves in view. The data and monitoring
    panels scrolled too, though their tables could shrink."""
    w = _loaded_window(qtbot, packaged.root, 1366, 768)
    panel = w.panels["models"]
    w.show_panel("models")
    qtbot.waitUntil(lambda: panel.loaded and bool(panel.curve_plots), timeout=30000)
    qtbot.wait(100)
    assert panel.scroll.widget().height() <= panel.scroll.viewport().height(), (panel.scroll.widget().height(),
                                                                               panel.scroll.viewport().height())
    assert panel.models.height() < 160 and panel.models.rowCount() <= 2, panel.models.height()
    for plot in panel.curve_plots.values():
        bottom = plot.mapTo(panel.scroll.viewport(), plot.rect().bottomLeft()).y()
        assert plot.height() >= 200 and bottom <= panel.scroll.viewport().height(), (plot.height(), bottom)
    # six experiments and more (a study tuned again, runs cancelled): the tables give up rows, down to two each, and
    # the panel still does not scroll (it did, by 15 pixels, the curves' axes cut)
    d = panel.load()
    d["experiments"] = (d["experiments"] * 8)[:8]
    panel.show_data(d)
    qtbot.waitUntil(lambda: panel.experiments.rowCount() == 8, timeout=5000)
    qtbot.wait(100)
    assert panel.scroll.widget().height() <= panel.scroll.viewport().height(), (panel.scroll.widget().height(),
                                                                               panel.scroll.viewport().height())
    for plot in panel.curve_plots.values():
        bottom = plot.mapTo(panel.scroll.viewport(), plot.rect().bottomLeft()).y()
        assert plot.height() >= 200 and bottom <= panel.scroll.viewport().height(), (plot.height(), bottom)
    assert panel.experiments.height() >= 2 * panel.experiments.verticalHeader().defaultSectionSize() + 30
    # the data panel's Sources tab asked the Analysis tab's height (1014 pixels) and scrolled, its summary under the
    # fold; and a panel whose buttons wrap asked the sum of its parts' preferred heights (monitoring: 704); the review
    # panel's tabs asked the height their confusion matrix prefers, 60 pixels blank under a matrix of five classes,
    # and the panel scrolled with its history cut
    for pid in ("data", "monitoring", "review"):
        panel = w.panels[pid]
        w.show_panel(pid)
        qtbot.waitUntil(lambda p=panel: p.loaded and not getattr(p, "_loading", False), timeout=30000)
        qtbot.wait(100)
        assert panel.scroll.widget().height() <= panel.scroll.viewport().height(), (
            pid, panel.scroll.widget().height(), panel.scroll.viewport().height())
        if pid == "data":
            assert panel.tabs.currentIndex() == 0 and panel.summary.isVisible()
            assert panel.summary.mapTo(panel.scroll.viewport(), panel.summary.rect().bottomLeft()).y() <= \
                panel.scroll.viewport().height()
        if pid == "review":
            matrix = panel.cm_candidate
            assert matrix.rowCount() == 5 and matrix.height() <= matrix.minimumHeight() + 40, (
                matrix.height(), matrix.minimumHeight())
            assert panel.history.height() >= panel.history.maximumHeight() - 2, (panel.history.height(),
                                                                                 panel.history.maximumHeight())


def test_the_first_window_size_fits_the_screen():
    """On a 1366 x 768 laptop the studio opened at 1500 x 920, its right edge and job bar off the screen: where the
    default does not fit the screen's room (less its title bar), the window opens maximized."""
    from studio.app.main import initial_size, parse

    assert initial_size(1500, 920, 1920, 1040) == (1500, 920, False)
    assert initial_size(1500, 920, 1366, 728) == (1366, 688, True)
    assert initial_size(1500, 920, 1500, 950) == (1500, 910, True)  # as wide, not as tall with its title bar
    assert parse([]).size is None and parse(["--size", "800x600"]).size == "800x600"


def test_the_job_bars_cancel_stops_an_import_from_the_data_panel(qtbot, tmp_path, monkeypatch):
    """An import runs in the studio's own process, where the runtime's Cancel cannot reach: the job bar's Cancel
    was off all through it (a folder of 100 000 photos chosen by mistake ran to its end). It is on while the files
    are read, and stops the import there, nothing imported."""
    from runtime.api import init_workspace
    from runtime.steps import sources

    ws = init_workspace(tmp_path / "ws", "text-classification")
    folder = tmp_path / "texts"
    for i in range(300):
        (folder / ("news" if i % 2 else "sport")).mkdir(parents=True, exist_ok=True)
        (folder / ("news" if i % 2 else "sport") / f"{i}.txt").write_text(f"item {i}")
    monkeypatch.setattr(sources, "PROGRESS_FILES", 10)
    monkeypatch.setattr(sources, "PROGRESS_SECONDS", 0.0)
    tick = sources._FilesRead.tick
    monkeypatch.setattr(sources._FilesRead, "tick", lambda self: (time.sleep(0.01), tick(self)))  # a slow disk
    w = _loaded_window(qtbot, ws.root, 1366, 768)
    data = w.panels["data"]
    w.select_step("data.import")
    data.path_edit.setText(str(folder))
    assert not w.job_bar.cancel.isEnabled()
    data.import_btn.click()
    qtbot.waitUntil(lambda: w.job_bar.cancel.isEnabled(), timeout=30000)  # on from the start (its files hashed)
    # the files being read, and the job bar saying how far
    qtbot.waitUntil(lambda: "reading texts: " in w.job_bar.label.text(), timeout=60000)
    assert re.fullmatch(r"data.import: reading texts: \d+ of 300 files", w.job_bar.label.text())
    assert w.job_bar.cancel.isEnabled()
    w.job_bar.cancel.click()
    qtbot.waitUntil(lambda: "import cancelled; nothing was imported" in data.status_label.text(), timeout=30000)
    assert data.import_btn.isEnabled() and not data.in_progress and not w.job_bar.cancel.isEnabled()
    assert w.job_bar.label.text() == "data.import cancelled", (w.job_bar.label.text(), w.job_bar.log.toPlainText())
    qtbot.waitUntil(lambda: w.document.model.nodes["data.import"].status == "cancelled", timeout=30000)
    assert ws.store.item_count() == 0 and "texts" not in (ws.root / "cdl.yaml").read_text()


def test_the_runtime_starts_while_the_window_builds_and_stops_where_the_workspace_does_not_open(tmp_path, qtbot,
                                                                                                  monkeypatch):
    """The window started `cdl runtime serve` only once it had built its panels, and the runtime then loaded the
    engine for 1.5-2 s while the window waited: its process now starts first and loads alongside. A folder without
    cdl.yaml starts none; a cdl.yaml that does not parse stops the one it started (no runtime left behind)."""
    import runtime.api
    from runtime.api import init_workspace
    from studio.app.window import MainWindow
    from studio.services.runtime import RuntimeConnection

    order: list[str] = []
    procs: list[subprocess.Popen] = []
    popen = RuntimeConnection._popen

    def recorded(self):  # noqa: ANN001, ANN202
        order.append("runtime process")
        out = popen(self)
        procs.append(out[0])
        return out

    graph = runtime.api.pipeline_graph
    monkeypatch.setattr(RuntimeConnection, "_popen", recorded)
    monkeypatch.setattr(runtime.api, "pipeline_graph", lambda ws: (order.append("window builds"), graph(ws))[1])
    ws = init_workspace(tmp_path / "ws", "text-classification")
    w = MainWindow(ws.root)
    qtbot.addWidget(w)
    assert order == ["runtime process", "window builds"], order
    with qtbot.waitSignal(w.runtime.sig_ready, timeout=60000):
        pass
    assert w.runtime.proc is procs[0] and len(procs) == 1  # the launched one is the one connected to, no second
    w.close()
    assert procs[0].poll() is not None
    order.clear()
    bare = MainWindow(tmp_path)  # no cdl.yaml: no runtime
    qtbot.addWidget(bare)
    assert order == [] and bare.runtime is None
    bare.close()
    (ws.root / "cdl.yaml").write_text((ws.root / "cdl.yaml").read_text() + "steps: [unclosed\n")
    broken = MainWindow(ws.root)
    qtbot.addWidget(broken)
    assert order[:1] == ["runtime process"] and len(procs) == 2 and broken.runtime is None and broken.ctx is None
    assert "not valid YAML" in broken.start_page.message.text(), broken.start_page.message.text()
    assert procs[1].poll() is not None  # stopped, not left running beside the start page
    broken.close()


def test_cdl_studio_shows_its_window_before_the_workspace_opens(tmp_path, qtbot):
    """`cdl studio WS` built the whole window for the workspace (the engine's registry code, the panels: 1.5-2 s)
    before showing anything. The window shows at once, saying which workspace it opens, and opens it on the event
    loop's next turn; a folder that is no workspace ends on the start page, saying why, as before."""
    from PySide6.QtWidgets import QLabel

    from runtime.api import init_workspace
    from studio.app.window import MainWindow

    ws = init_workspace(tmp_path / "ws", "text-classification")
    w = MainWindow(None)
    qtbot.addWidget(w)
    opened: list[str] = []
    w.open_later(ws.root, then=lambda: opened.append(w.header.step))
    w.show()
    page = w.stack.currentWidget()
    assert w.opening == ws.root and w.ctx is None and isinstance(page, QLabel), page
    assert page.text() == f"Opening {ws.root.resolve()}…"
    with qtbot.waitSignal(w.sig_workspace_loaded, timeout=60000):
        pass
    assert w.ctx is not None and w.opening is None and opened == ["data.import"]
    assert not any(isinstance(w.stack.widget(i), QLabel) for i in range(w.stack.count()))  # the page is gone
    w.close()
    other = MainWindow(None)
    qtbot.addWidget(other)
    called: list[int] = []
    other.open_later(tmp_path / "nowhere", then=lambda: called.append(1))
    qtbot.waitUntil(lambda: other.opening is None, timeout=30000)
    assert other.ctx is None and not called and other.stack.currentWidget() is other.start_page
    assert other.start_page.message.text().endswith("does not exist: Create makes one there (choose its template), "
                                                    "or open another folder.")
    other.close()
