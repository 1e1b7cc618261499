"""Screenshots: `cdl studio WS --screenshot FILE [--panel ID]`, and `make screenshots` (every panel of a demo
workspace that has data, models, variants, a device and scoring data, so no panel is empty)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QTimer

REPO = Path(__file__).resolve().parents[1]
PANEL_STEP = {"data": "data.validate", "labeling": "data.label", "versions": "data.version", "tuning": "model.tune",
              "models": "model.register", "review": "model.review", "compression": "deploy.revise",
              "devices": "deploy.push", "monitoring": "deploy.monitor"}


def _after(window, panel: str | None, ready: Callable[[], None], timeout_s: float = 120) -> None:  # noqa: ANN001
    """Call ready() once the workspace, and the panel named (or else the one shown), have loaded."""
    deadline = time.monotonic() + timeout_s

    def poll() -> None:
        if time.monotonic() > deadline:
            ready()
            return
        if not window.loaded:
            if window.ctx is None and window.opening is None:  # the workspace did not open (the start page says why)
                ready()
                return
            QTimer.singleShot(100, poll)
            return
        if panel:
            p = window.panels.get(panel)
            if p is None:
                ready()
                return
            if window.panel_stack.currentWidget() is not p:
                step = PANEL_STEP.get(panel) or next(s for s, q in window.step_panel.items() if q == panel)
                p.loaded = False
                window.scene.select(step)
                window.select_step(step)
            if not p.loaded:
                QTimer.singleShot(100, poll)
                return
        elif not getattr(window.panel_stack.currentWidget(), "loaded", True):
            # the panel the window opens on (the data panel's sources were grabbed before they were listed)
            QTimer.singleShot(100, poll)
            return
        QTimer.singleShot(600, ready)  # let plots and layouts settle

    poll()


def grab(window, path: Path) -> None:  # noqa: ANN001
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(path))


def grab_when_loaded(window, path: Path, panel: str | None, done: Callable[[int], None]) -> None:  # noqa: ANN001
    def ready() -> None:
        grab(window, path)
        done(0 if window.loaded else 1)

    # the start page, and no workspace opening (exit 0: it has nothing to load, and said 1 for not loaded)
    if window.ctx is None and window.opening is None:
        QTimer.singleShot(500, lambda: (grab(window, path), done(0)))
        return
    _after(window, panel, ready)


# -- make screenshots ---------------------------------------------------------------------------------------


def prepare_demo(root: Path) -> None:
    """A workspace with every part filled in: BBC data, a reviewed model, variants, a device with scoring data
    (in-distribution and drifted), a check and a retrain proposal."""
    import numpy as np

    from runtime.api import add_source
    from runtime.devices import collect, enroll
    from runtime.jobs import Runner
    from runtime.registry import review
    from runtime.workspace import Workspace

    bbc = REPO.parent / "shared" / "datasets" / "bbc" / "bbc-fulltext.zip"
    ws = Workspace(root) if (root / "cdl.yaml").exists() else Workspace.init(root, "text-classification", "bbc-news")
    if not ws.config().params("data.import")["sources"]:
        add_source(ws, bbc)
    cfg = ws.config()
    cfg.steps["model.tune"].update({"n_trials": 6, "max_epochs": 4})
    cfg.steps["deploy.compress"]["methods"] = ["dynamic_int8", {"static_int8": {"calibration_samples": 128}},
                                               {"prune": {"sparsity": 0.5, "finetune_epochs": 1}},
                                               {"distill": {"epochs": 3}}, "qat", "tensorrt"]
    cfg.steps["deploy.revise"].update({"runs_b1": 50, "runs_b64": 10})
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok
    mv = ws.store.model_version(cfg.name)
    if not ws.store.reviews(mv.name, mv.version):
        review(ws.store, mv.ref, True, "good on every class", "vera")
    assert Runner(ws).run(until="deploy.package").ok
    # a device with scoring data, in distribution and then of another domain
    if not ws.store.devices():
        enroll(ws, "edge-1", "127.0.0.1:0", root / ".cdl" / "devices" / "edge-1")
    import subprocess

    agent = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir",
                              str(root / ".cdl" / "devices" / "edge-1"), "--listen", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, text=True)
    line = agent.stdout.readline()
    address = "127.0.0.1:" + line.split("listening on ")[1].split()[0].rsplit(":", 1)[1]
    ws.store.update_device("edge-1", address=address)
    try:
        res = Runner(ws).run(steps=["deploy.push"], overrides={"deploy.push": {"variant": "static_int8"}})
        assert res.ok, res.steps[0].error
        import tritonclient.grpc as tc

        from runtime.workspace.dataset import decode_text

        view = ws.dataset()
        texts = [decode_text(view.read_bytes(r))[0] for r in view.rows if r.split == "test"]
        np.random.default_rng(0).shuffle(texts)  # a representative stream, not one class after another
        texts = texts[:300]
        import pydoc

        mods = ("json", "os", "re", "pathlib", "collections", "itertools", "functools", "subprocess", "asyncio",
                "threading", "socket", "sqlite3", "zipfile", "argparse", "logging", "unittest", "typing", "decimal",
                "datetime", "email", "csv", "random")
        other = [" ".join(b.split()) for m in mods
                 for b in pydoc.render_doc(m, renderer=pydoc.plaintext).split("\n\n") if len(b) > 300][:250]
        c = tc.InferenceServerClient(address, ssl=True, root_certificates=str(root / ".cdl" / "pki" / "ca.crt"))
        for batch in (texts, other):
            for i in range(0, len(batch), 10):
                inp = tc.InferInput("text", [len(batch[i : i + 10])], "BYTES")
                inp.set_data_from_numpy(np.array([t.encode() for t in batch[i : i + 10]], dtype=object))
                c.infer(mv.name, [inp])
            collect(ws)
            Runner(ws).run(steps=["deploy.monitor"], overrides={"deploy.monitor": {"window": 200}})
        c.close()
        del c  # its __del__ closes it again: now, not at interpreter exit, where grpc is half torn down and it raises
        Runner(ws).run(steps=["deploy.maintain"])
        # half the proposal labeled, and a new dataset version with those samples: the loop under way
        from runtime.labeling import LabelQueue
        from runtime.proposals import proposals

        q = LabelQueue(ws, "lena")
        pid = proposals(ws)[-1]["id"]
        for _ in range(max(1, proposals(ws)[-1]["samples"] // 2)):
            item = q.next(f"proposal:{pid}")
            if item is None:
                break
            q.set_label(item.uid, "tech")
        Runner(ws).run(until="data.label")
        from runtime.devices import DeviceClient

        with DeviceClient(ws, "edge-1") as dc:
            dc.health()
    finally:
        agent.terminate()
        agent.wait(10)
    ws.close()


def make_all(out: Path, workspace: Path) -> int:
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not (workspace / ".cdl" / "scoring.duckdb").exists():
        print(f"preparing the demo workspace {workspace} (data, model, variants, device, scoring data)…")
        prepare_demo(workspace)
    from PySide6.QtWidgets import QApplication

    from studio.app.window import MainWindow

    app = QApplication.instance() or QApplication([])
    out.mkdir(parents=True, exist_ok=True)
    start = MainWindow(None)
    start.resize(1100, 640)
    start.show()
    QTimer.singleShot(400, lambda: (grab(start, out / "start-page.png"), start.close()))
    window = MainWindow(workspace)
    window.ASK_BEFORE_QUIT = False
    window.resize(1600, 960)
    window.show()
    order = list(PANEL_STEP)

    def shoot(i: int) -> None:
        if i >= len(order):
            window.close()
            app.quit()
            return
        name = order[i]
        if name == "labeling":
            props = [p for p in window.ctx.workspace.store.get_state("proposals", []) or []]
            if props:
                window.panels["labeling"].set_filter(f"proposal:{props[-1]}")
        if name == "data":
            window.panels["data"].tabs.setCurrentIndex(2)  # the analysis

        def save() -> None:
            grab(window, out / f"{name}.png")
            print(f"wrote {out / (name + '.png')}")
            shoot(i + 1)

        def ready() -> None:
            v = window.panels["versions"]
            if name == "versions" and v.table.rowCount() >= 2:
                v.table.selectAll()
                v._diff()
                QTimer.singleShot(3000, save)
            else:
                save()

        _after(window, name, ready)

    QTimer.singleShot(500, lambda: shoot(0))
    app.exec()
    return 0


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots")
    ws = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "demo-workspace"
    sys.exit(make_all(out, ws))
