"""Experiments and the model registry, with lineage: from a model version back to its data, code and trial, and
the training run's curves (as MLflow shows a run's metric charts)."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QWidget,
)

from studio.panels.base import Panel
from studio.widgets.common import (
    PALETTE,
    Table,
    add_legend,
    confirm,
    gate_on_selection,
    local_time,
    plot_widget,
)
from studio.widgets.flow import PlotGrid, flow_row


class ModelsPanel(Panel):
    panel_id = "models"
    title = "Experiments and models"
    steps = ("model.preprocess", "model.register")
    sig_open_experiment = Signal(int, str)  # an experiment's id and kind, double-clicked: the window opens it

    def build(self) -> None:
        split = _Split(Qt.Orientation.Vertical)
        self.split = split
        self._split_moved = False  # once someone drags a handle, the sizes are theirs
        split.splitterMoved.connect(lambda *_: setattr(self, "_split_moved", True))
        # headers in two lines where that lets the columns be narrower, as the compression panel's
        self.models = Table(["model", "aliases", "review", "dataset", "framework", "template", "test\naccuracy",
                             "macro\nF1", "val\naccuracy", "git\ncommit", "created"], fit=True)
        self.models.itemSelectionChanged.connect(self._lineage)
        self.experiments = Table(["id", "experiment", "kind", "dataset", "framework", "template", "status",
                                  "best", "trials", "models", "created"], fit=True)
        self.experiments.setToolTip("double-click an experiment to open it in the tuning dashboard: its trials, "
                                    "learning curves and parameters")
        self.experiments.itemDoubleClicked.connect(self._open_experiment)
        self.lineage = QPlainTextEdit()
        self.lineage.setReadOnly(True)
        from PySide6.QtGui import QFontDatabase

        self.lineage.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))  # its columns line up
        self.lineage.setPlaceholderText("select a model version to see where it came from")
        self.bottom = QSplitter(Qt.Orientation.Horizontal)
        self.bottom.addWidget(self.lineage)
        # the two curves side by side where there is room, one under the other where their titles would be cut
        self.curves = PlotGrid(min_column_width=200)
        self.bottom.addWidget(self.curves)
        self.curve_plots: dict[str, Any] = {}  # made on first use: pyqtgraph is not needed to show the window
        self.curve_data: dict[str, dict[str, list[tuple[int, float]]]] = {}
        split.addWidget(self.models)
        split.addWidget(self.experiments)
        split.addWidget(self.bottom)
        for i, stretch in enumerate((2, 1, 3)):  # the lineage and curves get the most room
            split.setStretchFactor(i, stretch)
        row = QHBoxLayout()
        about = QLabel("Model versions (the selected one's lineage and training curves are at the bottom), then "
                       "experiments")
        about.setWordWrap(True)  # one line of 605 pixels, with the buttons, made the window 1552 pixels wide
        row.addWidget(about, 1)
        self.compare_btn = QPushButton("Compare the two selected…")
        self.compare_btn.setToolTip("data, code, parameters and metrics side by side (Ctrl+click two versions); "
                                    "where their test splits differ, both measured on the newer one's")
        self.compare_btn.clicked.connect(self._compare)
        self.report_btn = QPushButton("Report…")
        self.report_btn.setToolTip("one HTML page on the selected version, as a model card (`cdl models report`)")
        self.report_btn.clicked.connect(self._report)
        self.predict_btn = QPushButton("Predict a file…")
        self.predict_btn.setToolTip("the selected version's predictions for every item of a file or folder (a CSV "
                                    "or JSON Lines file of texts, a folder or zip of files, ...), written to a CSV, "
                                    "with how many agree with the labels it gives (`cdl models predict --input`)")
        menu = QMenu(self.predict_btn)
        menu.addAction("A file (CSV, JSON Lines, zip, Label Studio export)…", lambda: self._predict_file(folder=False))
        menu.addAction("A folder of files…", lambda: self._predict_file(folder=True))
        self.predict_btn.setMenu(menu)
        self.delete_btn = QPushButton("Delete…")
        self.delete_btn.setToolTip("delete the selected version and its variants (`cdl models delete`; `cdl gc` then "
                                   "frees its files): not the champion, the version registered last, or one a "
                                   "device serves")
        self.delete_btn.clicked.connect(self._delete)
        row.addWidget(flow_row(self.compare_btn, self.report_btn, self.predict_btn, self.delete_btn, right=True), 2)
        # off until the selection fits them, the tooltip saying what they need (each said so only when pressed)
        gate_on_selection(self.models, {self.compare_btn: (2, self.compare_btn.toolTip(),
                                                           "select two versions (Ctrl+click)"),
                                        **{b: (1, b.toolTip(), "select one version")
                                           for b in (self.report_btn, self.predict_btn, self.delete_btn)}})
        bar = QWidget()
        bar.setLayout(row)
        self.add(bar)
        self.add(split, 1)
        self.compare_dialog = None

    def load(self) -> dict[str, Any]:
        from runtime.experiments import experiments_json
        from runtime.registry import models_json

        store = self.ctx.workspace.store
        return {"models": models_json(store)["models"], "experiments": experiments_json(store)["experiments"]}

    def show_data(self, d: dict[str, Any]) -> None:
        from runtime.registry import review_text

        rows, colors = [], {}
        for i, m in enumerate(d["models"]):
            mt = m["metrics"]
            rows.append((f"{m['name']}:{m['version']}", ", ".join(m["aliases"]), review_text(m["review"], m["passed_over_by"], m["gate_failed"]),
                         m["dataset_version"], m["framework"], m["template"], mt.get("test_accuracy"),
                         mt.get("macro_f1"), mt.get("val_accuracy"),
                         f"{(m['git_commit'] or '')[:10]}{' (dirty)' if m['git_dirty'] else ''}", local_time(m["created"])))
            if m["review"] is not None:
                colors[(i, 2)] = "#15803d" if m["review"]["decision"] == "approved" else "#b91c1c"
            elif m["gate_failed"]:  # red, as a rejection: "gate failed (…)" was the grey of "awaits review"
                colors[(i, 2)] = "#b91c1c"
        self.models.fill(rows, colors, data=[f"{m['name']}:{m['version']}" for m in d["models"]])
        if rows and not self.models.selectedIndexes():
            self.models.selectRow(len(rows) - 1)  # the newest version's lineage, without a click
        from runtime.experiments import best_text, counts_text

        exps = []
        for e in d["experiments"]:  # as `cdl experiments list` says them
            models = e["models"] or [f"{r} (its best)" for r in e["tuned_models"]]
            exps.append((e["id"], e["name"], e["kind"], e["dataset_version"], e["framework"], e["template"],
                         e["status"], best_text(e), counts_text(e), ", ".join(models),
                         local_time(e["created"], seconds=False)))
        self.experiments.fill(exps, data=[(e["id"], e["kind"]) for e in d["experiments"]])
        self._share_height()
        self.experiments.scrollToBottom()  # the newest experiment in view (oldest first, as the models above)
        self.say_empty(None if d["models"] else "No model registered yet: run the model pipeline up to model.register.")

    def _open_experiment(self, item) -> None:  # noqa: ANN001 - the double-clicked cell
        data = self.experiments.item(item.row(), 0).data(Qt.ItemDataRole.UserRole)
        if data:
            self.sig_open_experiment.emit(int(data[0]), str(data[1]))

    def _compare(self) -> None:
        from studio.widgets.compare_dialog import CompareDialog, run_compare

        sel = [x for x in self.models.selected_data() if x]
        if len(sel) != 2:
            self.say("select exactly two model versions (Ctrl+click)", "warning")
            return
        a, b = sorted(sel, key=lambda r: (r.rsplit(":", 1)[0], int(r.rsplit(":", 1)[1])))  # older first

        def shown(doc: dict[str, Any]) -> None:
            self.say("")
            self.compare_dialog = CompareDialog(doc, self)
            self.compare_dialog.show()

        self.work(run_compare, self.ctx.workspace.root, a, b, done=shown,
                  message=f"comparing {a} and {b} (measuring one on the other's test split where they differ)…")

    def _one_selected(self, what: str) -> str | None:
        """The one selected version's ref; None, having said so, where none or several are selected."""
        sel = [x for x in self.models.selected_data() if x]
        if len(sel) != 1:
            self.say(f"select one model version to {what}", "warning")
            return None
        return sel[0]

    def _report(self, path: str | None = None) -> None:
        """path: where to write (a test gives it; a person picks it in a file dialog)."""
        from pathlib import Path

        from PySide6.QtWidgets import QFileDialog

        from runtime.report import write_report

        ref = self._one_selected("report on")
        if ref is None:
            return
        if path is None:
            default = str(Path.home() / f"{ref.replace(':', '-v')}-report.html")
            path, _ = QFileDialog.getSaveFileName(self, f"Report on {ref}", default, "HTML (*.html)")
            if not path:
                return
        self.work(write_report, self.ctx.workspace, ref, Path(path),
                  done=lambda d: self.say(f"wrote {d['path']} on {d['model']}: open it in a browser", "ok"))

    def _predict_file(self, folder: bool = False, source: str | None = None, output: str | None = None) -> None:
        """source, output: what to read and where to write (a test gives them; a person picks them)."""
        from pathlib import Path

        from PySide6.QtWidgets import QFileDialog

        from studio.services.cli import cdl_json

        ref = self._one_selected("predict with")
        if ref is None:
            return
        if source is None:
            source = (QFileDialog.getExistingDirectory(self, f"A folder for {ref} to predict", str(Path.home()))
                      if folder else QFileDialog.getOpenFileName(
                          self, f"A file for {ref} to predict", str(Path.home()),
                          "Data (*.csv *.tsv *.jsonl *.ndjson *.gz *.zip *.json);;All files (*)")[0])
            if not source:
                return
        if output is None:
            default = str(Path(source).with_name(f"{Path(source).stem}-{ref.replace(':', '-v')}-predictions.csv"))
            output, _ = QFileDialog.getSaveFileName(self, f"Where {ref}'s predictions go", default,
                                                    "CSV (*.csv);;JSON Lines (*.jsonl)")
            if not output:
                return

        def done(doc: dict[str, Any]) -> None:
            a = doc["models"][ref]
            agree = (f"; {a['agree']} of {a['labeled']} agree with the labels it gives (accuracy "
                     f"{a['accuracy']:.4f})" if a["labeled"] else "; it gives no labels of the model's classes")
            unknown = (f"; {a['no_known_word']} text(s) have no word the model knows (known_words 0: its guess for "
                       "an empty text)" if a.get("no_known_word") else "")
            self.say(f"wrote {a['items']} prediction(s) of {ref} for {Path(source).name} to {output}{agree}{unknown}",
                     "warning" if unknown else "ok")

        self.work(lambda: cdl_json(self.ctx.workspace.root, "models", "predict", ref, "--input", source, "-o", output,
                                   timeout=3600),
                  done=done, message=f"{ref} is predicting every item of {Path(source).name}…")

    def _delete(self) -> None:
        from runtime.registry import delete_version, deletion_refused

        ref = self._one_selected("delete")
        if ref is None:
            return
        refused = deletion_refused(self.ctx.workspace, ref)
        if refused:  # said at once: it asked "Delete …?" and then refused the answer
            self.say(f"cannot delete: {refused}", "warning")
            return
        if not confirm(self, "Delete a model version",
                       f"Delete {ref} and its variants? Its reviews and alias history stay; `cdl gc` "
                       "(the versions panel's Free disk…) then frees its checkpoint and bundles."):
            return
        self.work(delete_version, self.ctx.workspace, ref,
                  done=lambda d: self.say(f"deleted {d['deleted']}; {d['next']}", "ok"))

    def _lineage(self) -> None:
        sel = self.models.selected_data()
        if sel:
            self.work(_lineage_and_curves, self.ctx.workspace.store, sel[0], done=self._show_lineage)

    def _show_lineage(self, d: dict[str, Any]) -> None:
        # read as `cdl models lineage` prints it, the full record after it (the raw JSON was all it showed)
        said = "\n".join(f"{k:<16} {v}" for k, v in d["rows"])
        self.lineage.setPlainText(f"{d['lineage']['model']}\n{said}\n\nthe full record (`cdl models lineage "
                                  f"{d['lineage']['model']} --json`):\n{json.dumps(d['lineage'], indent=2)}")
        self.show_curves(d["lineage"]["model"], d["epochs"])

    def show_curves(self, ref: str, epochs: list[dict[str, Any]]) -> None:
        """The training run's accuracy and loss per epoch (training and validation)."""
        if not self.curve_plots:
            for kind in ("accuracy", "loss"):
                w = plot_widget(f"{kind} per epoch", kind, "epoch", whole_x=True)
                add_legend(w.getPlotItem(), offset=(-10, 10) if kind == "loss" else (-10, -10))
                self.curve_plots[kind] = w
                self.curves.add(w)
            self.bottom.setSizes([400, 600])
        self.curve_data = {}
        for kind, w in self.curve_plots.items():
            w.clear()
            w.setTitle(f"{ref}: {kind} per epoch" if epochs else f"{ref}: no per-epoch metrics")
            for i, split in enumerate(("train", "val")):
                pts = [(m["epoch"], m[f"{split}_{kind}"]) for m in epochs if m.get(f"{split}_{kind}") is not None]
                self.curve_data.setdefault(kind, {})[split] = pts
                if pts:
                    w.plot([p[0] for p in pts], [p[1] for p in pts], pen={"color": PALETTE[i], "width": 2},
                           symbol="o", symbolSize=5, symbolBrush=PALETTE[i], name=split)

    def _share_height(self) -> None:
        """The two tables as tall as their rows (two to six shown), the lineage and curves the rest: with one model
        version the table took 270 pixels at 1366 x 768, and the curves were below the fold. Where that leaves the
        curves less than 240 pixels, the tables give up rows, down to two each (six experiments made the panel
        scroll at 1366 x 768, the curves' axes cut)."""
        if self._split_moved:
            return

        def fitted(t: Table, most: int = 6) -> int:
            rows = max(2, min(t.rowCount(), most))
            # the rows as tall as they are (a wrapped cell makes one taller than the default)
            heights = [t.rowHeight(r) for r in range(min(rows, t.rowCount()))]
            heights += [t.verticalHeader().defaultSectionSize()] * (rows - len(heights))
            return (t.horizontalHeader().height() + sum(heights) + t.horizontalScrollBar().sizeHint().height()
                    + 2 * t.frameWidth() + 4)

        tables = (self.models, self.experiments)
        top = [fitted(t) for t in tables]
        least = [fitted(t, 2) for t in tables]
        bottom = self.bottom.minimumSizeHint().height()
        # where the curves stand one under the other (a narrow panel, which scrolls), the tables keep two rows each
        self.split.setMinimumHeight(sum(least) + bottom + 2 * self.split.handleWidth())
        total = sum(self.split.sizes())
        if total <= 0:
            return
        room = total - max(bottom, 240)
        if sum(top) > room:  # each table its two rows, and what is left shared as each wants more
            spare = max(0, room - sum(least))
            more = [t - least_ for t, least_ in zip(top, least, strict=True)]
            top = [least_ + spare * m // max(1, sum(more)) for least_, m in zip(least, more, strict=True)]
        self.split.setSizes([*top, total - sum(top)])


def _lineage_and_curves(store, ref: str) -> dict[str, Any]:  # noqa: ANN001
    from runtime.registry import lineage, lineage_rows

    mv = store.resolve_model(ref)
    doc = lineage(store, ref)
    return {"lineage": doc, "rows": lineage_rows(store, doc), "epochs": store.metrics(mv.trial_id) if mv.trial_id else []}


class _Split(QSplitter):
    """The tables and curves: no taller than a laptop's panel asks (it asked the sum of its parts, 634 pixels, so
    that the panel scrolled at 1366 x 768); the split shares whatever height it gets."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = super().sizeHint()
        return QSize(hint.width(), min(hint.height(), 460))
