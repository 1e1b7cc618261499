"""Try models before they go to a device: each is served on this machine by `cdl serve` (the edge agent, in a
process of its own), and what is typed (or the image picked) goes to all of them over the Open Inference
Protocol, their answers side by side. Closing the dialog stops the servers (and they delete their folders)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QProcess, Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.services.cli import cdl_json
from studio.services.tasks import run_task
from studio.widgets.common import Table, fit_to_screen

PREVIEW = 96  # pixels of the picked image's preview


def predict_from_checkpoints(root: Path, refs: list[str], inputs: list[Any], kind: str) -> dict[str, list[dict]]:
    """`cdl models predict REFS` in a process of its own (the studio's must not load the engines)."""
    args = [a for x in inputs for a in (("--text", str(x)) if kind == "text" else ("--file", str(x)))]
    return cdl_json(root, "models", "predict", *refs, *args)["predictions"]


class TryDialog(QDialog):
    """refs: NAME:VERSION:VARIANT of each model to serve (one or two: a candidate beside the champion); with
    via="checkpoint", NAME:VERSION of registered versions, which predict from their checkpoints (`cdl models
    predict`): a candidate in review has no exported variant yet."""

    def __init__(self, workspace, refs: list[str], kind: str = "text", parent: QWidget | None = None,  # noqa: ANN001
                 via: str = "serve"):
        super().__init__(parent)
        self.workspace, self.refs, self.kind, self.via = workspace, list(refs), kind, via
        self.addresses: dict[str, str] = {}
        self.procs: dict[str, QProcess] = {}
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.image: Path | None = None
        self.setWindowTitle("Try " + " and ".join(refs))
        lay = QVBoxLayout(self)
        self.status = QLabel("starting " + ", ".join(refs) + " on this machine…")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        row = QHBoxLayout()
        if kind == "text":
            self.input = QPlainTextEdit()
            self.input.setPlaceholderText("Type or paste a text, then Predict")
            self.input.setFixedHeight(110)
            row.addWidget(self.input, 1)
        else:
            self.input = QLabel("no image chosen")
            pick = QPushButton("Choose an image…")
            pick.clicked.connect(self._pick)
            # the picked image itself, as the labeling panel shows one (only its path was shown)
            self.preview = QLabel()
            self.preview.setFixedSize(PREVIEW, PREVIEW)
            self.preview.setStyleSheet("QLabel { background: #111827; }")
            self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
            row.addWidget(pick)
            row.addWidget(self.preview)
            row.addWidget(self.input, 1)
        self.predict_btn = QPushButton("Predict")
        self.predict_btn.setEnabled(False)
        self.predict_btn.clicked.connect(self.predict)
        row.addWidget(self.predict_btn)
        w = QWidget()
        w.setLayout(row)
        lay.addWidget(w)
        self.table = Table(["model", "label", "confidence", "probabilities"])
        lay.addWidget(self.table, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.finished.connect(self.stop)
        fit_to_screen(self, 860, 420)
        self._about = ""
        if via == "checkpoint":
            self._about = (", ".join(refs) + ": each predicts from its checkpoint with its own preprocessing "
                           "(`cdl models predict`), before it is exported or served")
            self.status.setText(self._about)
            self.predict_btn.setEnabled(True)
            return
        for ref in self.refs:
            self._start(ref)

    def _start(self, ref: str) -> None:
        p = QProcess(self)
        p.setProgram(sys.executable)
        p.setArguments(["-m", "runtime.cli", "-w", str(self.workspace.root), "serve", ref, "--listen",
                        "127.0.0.1:0", "--parent-pid", str(os.getpid())])  # it stops if the studio dies
        def read() -> None:
            with contextlib.suppress(RuntimeError):  # the dialog may be gone (closed, or its test failed)
                self._read(ref, p)

        def ended(code: int, _status: object) -> None:
            with contextlib.suppress(RuntimeError):
                self._ended(ref, p, code)

        p.readyReadStandardOutput.connect(read)
        p.finished.connect(ended)
        self.procs[ref] = p
        p.start()

    def _read(self, ref: str, p: QProcess) -> None:
        text = bytes(p.readAllStandardOutput()).decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("serving ") and " at " in line:
                self.addresses[ref] = line.split(" at ")[1].split()[0]
        if len(self.addresses) == len(self.refs):
            self._about = ("serving " + "; ".join(f"{r} at {self.addresses[r]}" for r in self.refs)
                           + " (the edge agent over the Open Inference Protocol, as a device answers)")
            self.status.setText(self._about)
            self.predict_btn.setEnabled(True)

    def _ended(self, ref: str, p: QProcess, code: int) -> None:
        if self.isVisible() and ref not in self.addresses:
            err = bytes(p.readAllStandardError()).decode(errors="replace").strip().splitlines()
            self.status.setText(f"{ref} could not be served: {err[-1] if err else f'exit status {code}'}")

    def _pick(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "An image", str(Path.home()), "Images (*.png *.jpg *.jpeg *.bmp)")
        if path:
            self.image = Path(path)
            self.input.setText(path)
            pix = QPixmap(path)
            if pix.isNull():  # not an image Qt reads: the model may still (Pillow), and says so if not
                self.preview.setText("?")
            else:
                # small images (Fashion-MNIST's 28 pixels) scaled up without smoothing, so their pixels show
                smooth = max(pix.width(), pix.height()) > PREVIEW
                self.preview.setPixmap(pix.scaled(PREVIEW, PREVIEW, Qt.AspectRatioMode.KeepAspectRatio,
                                                  Qt.TransformationMode.SmoothTransformation if smooth
                                                  else Qt.TransformationMode.FastTransformation))

    def inputs(self) -> list[Any]:
        if self.kind == "text":
            text = self.input.toPlainText().strip()
            return [text] if text else []
        return [self.image] if self.image else []

    def predict(self) -> None:
        from runtime.serve import predict

        items = self.inputs()
        if not items:
            self.status.setText("type a text first" if self.kind == "text" else "choose an image first")
            return
        self.results = {}
        if self.via == "checkpoint":
            self.predict_btn.setEnabled(False)
            # a few seconds (a process loads the framework; a preprocessing `cdl gc` removed is fitted again), which
            # passed without a word
            self.status.setStyleSheet("")
            self.status.setText(f"predicting with {', '.join(self.refs)} from their checkpoints…")
            run_task(predict_from_checkpoints, self.workspace.root, self.refs, items, self.kind, on_done=self._show,
                     on_error=self._failed)
            return

        def ask() -> dict[str, list[dict[str, Any]]]:
            from runtime.ml.predict import known_words

            out = {}
            for ref, address in self.addresses.items():
                out[ref] = predict(self.workspace, address, ref.split(":")[0], items)
                if self.kind == "text":  # the agent's reply has no word count: the version's preprocessing has
                    version = ref.rsplit(":", 1)[0]  # NAME:VERSION:VARIANT
                    for p, k in zip(out[ref], known_words(self.workspace, version, items) or [], strict=False):
                        p["known_words"] = k
            return out

        self.predict_btn.setEnabled(False)
        run_task(ask, on_done=self._show, on_error=self._failed)

    def _failed(self, message: str) -> None:
        self.predict_btn.setEnabled(True)
        self.status.setText(message)

    def _show(self, results: dict[str, list[dict[str, Any]]]) -> None:
        self.results = results
        self.predict_btn.setEnabled(True)
        rows = []
        for ref in [r for r in self.refs if r in results]:  # in the order asked for, as the servers came up in any
            p = results[ref][0]
            top = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[:3]
            rows.append((ref, p["label"], round(p["confidence"], 4), ", ".join(f"{c} {v:.3f}" for c, v in top)))
        self.table.fill(rows)
        self.table.resizeColumnsToContents()
        unknown = [ref for ref in self.refs if ref in results and results[ref][0].get("known_words") == 0]
        if unknown:  # "zzz qqq" got business 0.83 like an article, and nothing said it was a guess
            self.status.setText(f"{', '.join(unknown)}: no word of this text is in the model's vocabulary, so its "
                                "answer is its guess for an empty text")
            self.status.setStyleSheet("color: #b36b00")
        else:
            self.status.setText(self._about)
            self.status.setStyleSheet("")

    def stop(self, *_: Any) -> None:
        for p in self.procs.values():
            if p.state() != QProcess.ProcessState.NotRunning:
                p.terminate()  # SIGTERM: cdl serve stops its agent and deletes the folder
                if not p.waitForFinished(15000):
                    p.kill()
                    p.waitForFinished(5000)
