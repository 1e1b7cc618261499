"""Data: sources and import, the validation report with the quarantine, and the thesis' data analysis
(class balance per split, text length or image intensity histograms, a grid of sample items)."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.panels.base import Panel
from studio.widgets.common import (
    PALETTE,
    PageTabs,
    Table,
    add_legend,
    confirm,
    local_time,
    plot_widget,
    room_for_legend,
)
from studio.widgets.flow import PlotGrid, flow_row


def _image_pixmap(arr: np.ndarray, size: int = 84) -> QPixmap:
    from runtime.workspace.dataset import to_uint8

    a = np.ascontiguousarray(to_uint8(np.asarray(arr)))
    if a.ndim == 3 and a.shape[2] <= 2:  # grayscale, and grayscale with alpha
        a = np.ascontiguousarray(a[..., 0])
    if a.ndim == 2:
        img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_Grayscale8).copy()
    elif a.shape[2] == 4:  # RGBA (a PNG with transparency) was read as RGB: a skewed, striped picture
        img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_RGBA8888).copy()
    else:
        img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(img).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                         Qt.TransformationMode.FastTransformation)


class DataPanel(Panel):
    panel_id = "data"
    title = "Data"
    steps = ("data.import", "data.split", "data.ingest", "data.clean", "data.validate")

    def build(self) -> None:
        self._import_cancel: threading.Event | None = None  # the import under way's cancel
        self.tabs = PageTabs()  # as tall as the tab shown asks (the Analysis tab made Sources scroll)
        self.add(self.tabs, 1)
        # sources
        src = QWidget()
        lay = QVBoxLayout(src)
        row = QHBoxLayout()
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("a zip or folder (of class folders, or of files to label), idx files, a "
                                          "CSV, a Label Studio export")
        browse_file = QPushButton("File…")
        browse_dir = QPushButton("Folder…")
        browse_file.clicked.connect(self._browse_file)
        browse_dir.clicked.connect(self._browse_dir)
        self.kind = QComboBox()
        self.kind.addItems(["detect", "text-folder", "image-folder", "idx", "csv", "jsonl", "parquet", "label-studio"])
        self.class_names = QLineEdit()
        self.class_names.setPlaceholderText("class names for idx or class numbers (a,b,c), or a preset (fashion-mnist)")
        self.unlabeled = QCheckBox("unlabeled")
        self.unlabeled.setToolTip("import the items without labels, for the labeling queue: a CSV or JSON Lines file "
                                  "without a label column, or a folder's or zip's files whatever folder they are in "
                                  "(`cdl data import --unlabeled`); a folder of files with no class folder is taken "
                                  "so anyway")
        self.import_btn = QPushButton("Import")
        self.import_btn.clicked.connect(self._import)
        # the path on a line of its own: one line of seven widgets left it 40 pixels ("a zi…") beside the flowchart
        # in a 1024-pixel window
        for w in (self.path_edit, browse_file, browse_dir):
            row.addWidget(w)
        row.setStretch(0, 1)
        lay.addLayout(row)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("Kind"))
        for w in (self.kind, self.class_names, self.unlabeled, self.import_btn):
            row2.addWidget(w)
        row2.setStretch(2, 1)
        lay.addLayout(row2)
        self.sources = Table(["source", "kind", "items", "imported", "reachable here"])
        lay.addWidget(self.sources)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        below = QHBoxLayout()
        below.addWidget(self.summary, 1)
        # a source imported by mistake: only hand-editing cdl.yaml (the Parameters… YAML) took it out
        self.remove_btn = QPushButton("Remove source…")
        self.remove_btn.setToolTip("take the selected source out of the pipeline (`cdl data remove SOURCE`): out of "
                                   "cdl.yaml, its items out of the workspace; labels people gave them stay")
        self.remove_btn.clicked.connect(lambda: self._remove())
        below.addWidget(self.remove_btn, 0, Qt.AlignmentFlag.AlignTop)
        self._remove_tip = self.remove_btn.toolTip()
        self._removing = False
        self.sources.itemSelectionChanged.connect(self._remove_state)  # off until a source is selected
        self._remove_state()
        lay.addLayout(below)
        self.tabs.addTab(src, "Sources")
        # validation
        val = QWidget()
        lay = QVBoxLayout(val)
        self.val_summary = QLabel()
        self.val_summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.val_summary, 1)
        self.merge_btn = QPushButton("Merge spellings…")
        self.merge_btn.setToolTip("one class spelt two ways ('Sport' and 'sport'): choose the spelling each group "
                                  "keeps; data.import's relabel reads the others so, and the data pipeline runs "
                                  "again (`cdl run --set 'data.import.relabel={Sport: sport}' --save`)")
        self.merge_btn.clicked.connect(self._merge)
        self.merge_btn.setVisible(False)
        self.similar: list[dict[str, int]] = []
        top.addWidget(self.merge_btn, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(top)
        lay.addWidget(QLabel("Quarantine: items that failed a rule"))
        self.quarantine = Table(["source", "rule", "reason"])
        lay.addWidget(self.quarantine, 2)
        lay.addWidget(QLabel("Cleaned: repairs made and recorded"))
        self.cleaned = Table(["source", "action"])
        lay.addWidget(self.cleaned, 1)
        self.tabs.addTab(val, "Validation")
        # analysis
        ana = QWidget()
        ana_layout = QVBoxLayout(ana)
        # side by side where there is room, one under the other where the histogram's title would be cut
        self.ana_plots = PlotGrid(min_column_width=320)
        ana_layout.addWidget(self.ana_plots, 1)
        self.balance_plot = None
        self.hist_plot = None
        self.samples = QWidget()  # texts three to a row; images as many to a row as fit (eight overflowed 1100 px)
        samples_layout = QVBoxLayout(self.samples)
        samples_layout.setContentsMargins(0, 0, 0, 0)
        texts = QWidget()
        self.samples_layout = QGridLayout(texts)
        self.image_samples = flow_row()
        samples_layout.addWidget(texts)
        samples_layout.addWidget(self.image_samples)
        ana_layout.addWidget(self.samples)
        self.tabs.addTab(ana, "Analysis")

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Data source", str(Path.home()),
                                              "Data (*.zip *.csv *.tsv *.json *.jsonl *.ndjson *.gz *.parquet);;All files (*)")
        if path:
            self.path_edit.setText(path)

    def _browse_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Data folder", str(Path.home()))
        if path:
            self.path_edit.setText(path)

    def _import(self, encoding: str | None = None, columns: dict[str, Any] | None = None,
                media_root: str | None = None) -> None:
        from runtime.api import add_source

        path = self.path_edit.text().strip()
        if not path:
            self.say("choose a source first", "warning")
            return
        options: dict[str, Any] = {}
        if self.kind.currentText() != "detect":
            options["kind"] = self.kind.currentText()
        names = self.class_names.text().strip()
        if names:
            options["class_names"] = names if "," not in names else [c.strip() for c in names.split(",")]
        if self.unlabeled.isChecked():
            options["unlabeled"] = True
        if encoding:
            options["encoding"] = encoding
        if columns:  # named in the columns dialog after the import found none by name
            options.update(columns)
        if media_root:  # a Label Studio image export's files, chosen after the import found none beside it
            options["media_root"] = media_root
        self.import_btn.setEnabled(False)
        key = object()
        self.in_progress[key] = f"importing {Path(path).name}…"
        # the job bar's Cancel stops it while its files are read, nothing imported (it could not be stopped: a
        # folder of 100 000 photos chosen by mistake ran to its end)
        cancel = self._import_cancel = threading.Event()

        def ended() -> None:
            self.in_progress.pop(key, None)
            self.import_btn.setEnabled(True)
            if self._import_cancel is cancel:
                self._import_cancel = None

        def done(result: Any) -> None:  # noqa: ANN401 - a JobResult
            ended()
            self.say(*imported_text(result, Path(path)))
            self.sig_message.emit("imported")

        def failed(msg: str) -> None:
            ended()
            if cancel.is_set():
                self.say(msg, "warning")
                return
            self.say(msg, "error")
            from runtime.steps.sources import NO_MEDIA_HINT, READS_AS_CP1252

            if READS_AS_CP1252 in msg and not encoding and self._ask_cp1252(Path(path)):
                self._import("cp1252")  # a CSV that Excel saved on Windows: only the CLI could name its encoding
            elif msg.endswith(NO_MEDIA_HINT) and not media_root:
                # a Label Studio image export whose files are elsewhere: the error named --media-root, which only
                # the CLI had
                self.say(msg.removesuffix(NO_MEDIA_HINT) + ": choose the folder of the project's images", "warning")
                folder = self._ask_media_root(Path(path))
                if folder:
                    self._import(encoding, columns, folder)
            elif not columns and re.search(r"no (text|label) (column|field)", msg):
                # a CSV whose columns are "body" and "topic": only the CLI's --text-column and --label-column
                # could name them, and the panel said "name it with --label-column"
                chosen = self._ask_columns(Path(path), {k: v for k, v in options.items() if k in ("kind", "encoding")})
                if chosen:
                    self._import(encoding, chosen)

        from studio.services.tasks import run_task

        self.say(f"importing {Path(path).name}…")
        # its events go to the window as a run's do: the node runs with its progress, the job bar and log follow
        # (it sat at "never run" with the job bar idle, then "data.import done (run outside the studio)")
        run_task(add_source, self.ctx.workspace, Path(path), options, self.sig_event.emit, cancel,
                 on_done=lambda r: (done(r), self.refresh()), on_error=failed)

    def can_cancel_own(self) -> bool:
        return self._import_cancel is not None and not self._import_cancel.is_set()

    def cancel_own(self) -> None:
        if self._import_cancel is not None:
            self._import_cancel.set()
            self.say("cancelling the import: it stops at its next file", "warning")

    def _remove_state(self) -> None:
        """Remove source… on only with a source selected, and none being removed; its tooltip says which it lacks
        (it was on beside no selection, and said "select a source in the table first" when pressed)."""
        chosen = bool(self.sources.selected_data())
        self.remove_btn.setEnabled(chosen and not self._removing)
        self.remove_btn.setToolTip(self._remove_tip + ("" if chosen else " (select a source in the table first)"))

    def _remove(self, ask: bool = True) -> None:
        from runtime.api import remove_source
        from studio.services.tasks import run_task

        chosen = self.sources.selected_data()
        if not chosen:
            self.say("select a source in the table first", "warning")
            return
        name = chosen[0]
        if ask:
            row = next(r for r in range(self.sources.rowCount()) if self.sources.item(r, 0).text() == name)
            n = self.sources.item(row, 2).text()
            if not confirm(self, "Remove a source", f"Take {name} out of the pipeline? Its {n} item(s) leave the "
                           "workspace; labels people gave them stay, and come back if it is imported again."):
                return
        self._removing = True
        self._remove_state()

        def done(r: dict[str, Any]) -> None:
            self._removing = False
            self._remove_state()
            # the last source removed: the refresh below says "No data yet: choose a source below … and Import it"
            self.say(f"removed {r['source']}: {r['items_removed']} item(s) left the workspace ({r['items']} remain); "
                     "the next run makes a dataset version without them", "ok")
            self.sig_message.emit("imported")
            self.refresh()

        def failed(msg: str) -> None:
            self._removing = False
            self._remove_state()
            self.say(msg, "error")

        self.say(f"removing {name}…")
        key = object()
        self.in_progress[key] = f"removing {name}…"
        run_task(remove_source, self.ctx.workspace, name, self.sig_event.emit,
                 on_done=lambda r: (self.in_progress.pop(key, None), done(r)),
                 on_error=lambda m: (self.in_progress.pop(key, None), failed(m)))

    def _ask_media_root(self, path: Path) -> str | None:
        """The folder of a Label Studio export's images (its files, or Label Studio's media folder)."""
        from PySide6.QtWidgets import QFileDialog

        return QFileDialog.getExistingDirectory(self, f"Folder of the images {path.name} refers to",
                                                str(path.parent)) or None

    def _ask_columns(self, path: Path, options: dict[str, Any]) -> dict[str, Any] | None:
        """The text and label columns of a file whose columns the import found none of by name."""
        from runtime.domain.errors import CdlError
        from runtime.steps.sources import source_columns

        try:
            cols = source_columns(path, options)
        except (CdlError, OSError, ValueError):
            return None
        if not cols:
            return None
        return ColumnsDialog(path.name, cols, self).ask()

    def _ask_cp1252(self, path: Path) -> bool:
        """Offer to read a CSV that is not UTF-8 as cp1252, with a line that shows its accents so read."""
        from PySide6.QtWidgets import QMessageBox

        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        sample = next((line for line in head.splitlines() if any(b > 127 for b in line)), b"")
        shown = sample.decode("cp1252", "replace").strip()
        shown = shown if len(shown) <= 160 else shown[:157] + "…"
        answer = QMessageBox.question(
            self, "Not UTF-8 text",
            f"{path.name} is not UTF-8 text. It reads as cp1252 (Windows, Western European: what Excel saves as "
            f"\"CSV\"), which makes this line of it:\n\n{shown}\n\nImport it as cp1252? (cdl.yaml keeps the "
            "encoding with the source.)")
        return answer == QMessageBox.StandardButton.Yes

    # -- data ---------------------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        from runtime.datasets import named_order, report_json, versions_json
        from runtime.labeling import checked_out_view
        from runtime.workspace.dataset import decode_text

        ws = self.ctx.workspace
        # read once for the report and the samples, and again only when data/dataset's index changed
        view = checked_out_view(ws) if ws.has_dataset() else None
        out: dict[str, Any] = {"sources": ws.store.sources(), "items": ws.store.item_count(),
                               "report": report_json(ws, checked_out=view), "versions": versions_json(ws)["versions"],
                               "task": ws.config().task, "samples": [], "hist": None, "order": named_order(ws)}
        # whether each source file is reachable on this machine (its items stay either way)
        out["reachable"] = {s.name: s.kind == "proposal" or (Path(s.name).expanduser() if Path(s.name).expanduser()
                                                              .is_absolute() else ws.root / s.name).exists()
                            for s in out["sources"]}
        if view is not None:
            # quarantined items left out: an image data.validate found undecodable failed the whole panel
            # ("UnidentifiedImageError: cannot identify image file"), its sources table empty
            version = ws.current_version()
            held = {q.item for q in ws.store.quarantine(version)} if version else set()
            rows = [r for r in view.rows if r.uid not in held]
            rng = np.random.default_rng(0)
            pick = rng.choice(len(rows), size=min(400, len(rows)), replace=False) if rows else []
            sample_rows = [rows[i] for i in pick]
            if out["task"] == "text":
                lengths = [len(decode_text(view.read_bytes(r))[0].split()) for r in sample_rows]
                out["hist"] = ("words per text", lengths)
                out["samples"] = [(r.label, decode_text(view.read_bytes(r))[0][:160]) for r in sample_rows[:12]]
            else:
                if all(r.encoding == "npy" for r in sample_rows):  # idx rows: read in bulk, nothing to decode
                    imgs, shown = list(view.raw_images(sample_rows)) if sample_rows else [], sample_rows
                else:  # files: photos differ in size and mode, and one may not decode
                    imgs, shown = [], []
                    for r in sample_rows:
                        try:
                            imgs.append(view.read_image(r))
                            shown.append(r)
                        except Exception:  # noqa: BLE001 - one file that does not decode is no reason to show nothing
                            continue
                out["hist"] = ("mean intensity", [float(np.asarray(a, np.float64).mean()) / 255 for a in imgs])
                out["samples"] = [(r.label, imgs[i]) for i, r in enumerate(shown[:24])]
        return out

    def show_data(self, d: dict[str, Any]) -> None:
        here = d.get("reachable", {})
        self.sources.fill([(s.name, s.kind, s.items, local_time(s.imported_at, seconds=False),
                            "yes" if here.get(s.name, True) else "no (its items stay)") for s in d["sources"]],
                          {(i, 4): "#b45309" for i, s in enumerate(d["sources"]) if not here.get(s.name, True)},
                          data=[s.name for s in d["sources"]])
        v = _checked_out(d["versions"])
        if v:
            self.summary.setText(f"{d['items']} items imported; checked-out dataset {d['report']['version']}: "
                                 f"{v['items']} items, {', '.join(f'{k} {n}' for k, n in v['splits'].items())}")
        else:
            self.summary.setText(f"{d['items']} items imported; no dataset version yet (run the data pipeline)")
        from runtime.datasets import checked_text

        rep = d["report"]
        alike = "; ".join(" and ".join(f"'{k}' ({n})" for k, n in g.items()) for g in rep["similar_labels"])
        unchecked = bool(rep["version"]) and not all((rep.get("checked") or {}).values())
        self.val_summary.setText(f"version {rep['version'] or '-'}: {len(rep['quarantined'])} quarantined, "
                                 f"{len(rep['cleaned'])} cleaned" + (f". {checked_text(rep)}" if rep["version"] else "")
                                 + (f". Labels that look alike (one class spelt two ways?): {alike}" if alike else ""))
        self.val_summary.setStyleSheet("QLabel { color: #92400e; }" if alike or unchecked else "")
        self.similar = rep["similar_labels"]
        self.merge_btn.setVisible(bool(alike))
        self.quarantine.fill([(q["source"], q["rule"], q["reason"]) for q in rep["quarantined"]])
        self.cleaned.fill([(c["source"], c["action"]) for c in rep["cleaned"]])
        if not d["sources"]:
            self.say("No data yet: choose a source below (File…, Folder…, or type its path) and Import it.", "info")
        self._analysis(d)

    def _merge(self, choose: Any = None) -> None:  # noqa: ANN401 - choose(groups) -> relabel, or None: a test's answer
        """Labels that look alike became one class only by editing the source (a zip's folder names, an export
        the user cannot change): the spelling each group keeps goes into data.import's relabel, and the data
        pipeline runs again up to data.validate."""
        from runtime.domain.errors import ConfigError
        from runtime.steps.data import check_relabel

        relabel = (choose or (lambda groups: MergeDialog(groups, self).ask()))(self.similar)
        if not relabel:
            return
        cfg = self.ctx.workspace.config()
        before = dict(cfg.steps["data.import"].get("relabel") or {})
        merged = {**{k: relabel.get(v, v) for k, v in before.items()}, **relabel}  # an old target renamed too
        merged = {k: v for k, v in merged.items() if k != v}  # a spelling merged before, kept now: read as itself
        try:
            check_relabel(merged)
        except ConfigError as exc:
            self.say(str(exc), "error")
            return
        cfg.steps["data.import"]["relabel"] = merged
        self.ctx.workspace.save_config(cfg, "data.import: relabel " + ", ".join(f"{k} as {v}"
                                                                                 for k, v in relabel.items()))
        self.say("data.import.relabel: " + ", ".join(f"{k!r} as {v!r}" for k, v in relabel.items())
                 + "; the data pipeline runs again up to data.validate", "info")
        self.sig_run.emit(None, "data.validate", None)

    def _analysis(self, d: dict[str, Any]) -> None:
        import pyqtgraph as pg

        if self.balance_plot is None:
            self.balance_plot = plot_widget("Class balance per split", "items")
            self.hist_plot = plot_widget("", "items")
            self.ana_plots.add(self.balance_plot)
            self.ana_plots.add(self.hist_plot)
        self.balance_plot.clear()
        v = _checked_out(d["versions"])
        if v and v.get("split_classes"):
            from runtime.datasets import class_order

            # the model's order, Fashion-MNIST's T-shirt/top first, as the labeling keys and `data diff` have it (it
            # was alphabetical, Ankle boot first); train before test
            classes = class_order(d.get("order") or [], {c for per in v["split_classes"].values() for c in per})
            splits = sorted(v["split_classes"], key=lambda s: (s != "train", s))
            width = 0.8 / max(1, len(splits))
            # one line in the top right corner, over headroom left above the tallest bar
            add_legend(self.balance_plot, offset=(-10, 6), columns=len(splits))
            tallest = max((n for per in v["split_classes"].values() for n in per.values()), default=1)
            for k, split in enumerate(splits):
                ys = [v["split_classes"][split].get(c, 0) for c in classes]
                xs = [i + k * width - 0.4 + width / 2 for i in range(len(classes))]
                self.balance_plot.addItem(pg.BarGraphItem(x=xs, height=ys, width=width * 0.95,
                                                          brush=PALETTE[k % len(PALETTE)], name=split))
            # a band above the tallest bar as tall as the legend (a third more headroom was not, in a plot 200
            # pixels high: the legend covered the tallest bars' tops)
            room_for_legend(self.balance_plot, 0, tallest, rows=1)
            ax = self.balance_plot.getAxis("bottom")
            # names on two staggered rows once there are more than a few, so that neighbours do not overlap
            stagger = len(classes) > 4
            ax.setTicks([[(i, ("\n" if stagger and i % 2 else "") + c[:14]) for i, c in enumerate(classes)]])
            ax.setHeight(48 if stagger else None)  # room for the second row
        self.hist_plot.clear()
        if d["hist"]:
            name, values = d["hist"]
            self.hist_plot.setTitle(f"Histogram: {name} (sample of {len(values)})")
            y, x = np.histogram(np.asarray(values, dtype=float), bins=30)
            self.hist_plot.plot(x, y, stepMode="center", fillLevel=0, brush=(37, 99, 235, 120), pen="#1d4ed8")
        for layout in (self.samples_layout, self.image_samples.layout()):
            while layout.count():
                w = layout.takeAt(0).widget()
                if w is not None:
                    w.deleteLater()
        for i, (label, content) in enumerate(d["samples"]):
            if isinstance(content, str):
                lab = QLabel(f"<b>{label or '(unlabeled)'}</b><br>{content}…")
                lab.setWordWrap(True)
                lab.setStyleSheet("QLabel { background: white; border: 1px solid #e5e7eb; border-radius: 4px; padding: 4px; }")
                lab.setMinimumWidth(160)  # three to a row: 220 made the panel scroll sideways at 1100 pixels
                self.samples_layout.addWidget(lab, i // 3, i % 3)
            else:
                cell = QWidget()
                cl = QVBoxLayout(cell)
                cl.setContentsMargins(2, 2, 2, 2)
                img = QLabel()
                img.setPixmap(_image_pixmap(content))
                img.setAlignment(Qt.AlignmentFlag.AlignCenter)
                cap = QLabel(label or "(unlabeled)")
                cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
                cl.addWidget(img)
                cl.addWidget(cap)
                self.image_samples.layout().addWidget(cell)


def _checked_out(versions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The checked-out version's row (the newest where none is): the summary named the checked-out version beside
    the newest one's counts, and the class balance drew the newest, after `cdl data checkout v1`."""
    return next((v for v in versions if v.get("checked_out")), versions[-1] if versions else None)


class MergeDialog(QDialog):
    """One row a group of look-alike labels: the spelling it keeps (the most used one first)."""

    def __init__(self, groups: list[dict[str, int]], parent: QWidget | None = None):
        from runtime.datasets import relabel_for

        super().__init__(parent)
        self.setWindowTitle("Merge spellings of one class")
        lay = QVBoxLayout(self)
        intro = QLabel("Each group is one class spelt several ways. The spelling chosen stays; the sources' other "
                       "spellings are read as it (data.import's relabel), and the data pipeline runs again.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        grid = QGridLayout()
        self.groups = groups
        self.combos: list[QComboBox] = []
        for i, g in enumerate(groups):
            grid.addWidget(QLabel(" and ".join(f"'{k}' ({n} item{'' if n == 1 else 's'})" for k, n in g.items())), i, 0)
            grid.addWidget(QLabel("keep"), i, 1)
            combo = QComboBox()
            combo.addItems(list(g))
            keep = next(iter(relabel_for(g).values()))
            combo.setCurrentText(keep)
            self.combos.append(combo)
            grid.addWidget(combo, i, 2)
        grid.setColumnStretch(3, 1)
        lay.addLayout(grid)
        self.resize(640, self.sizeHint().height())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Merge and run")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def relabel(self) -> dict[str, str]:
        return {k: c.currentText() for g, c in zip(self.groups, self.combos, strict=True) for k in g
                if k != c.currentText()}

    def ask(self) -> dict[str, str] | None:
        return self.relabel() if self.exec() == QDialog.DialogCode.Accepted else None


def imported_text(result: Any, path: Path) -> tuple[str, str]:  # noqa: ANN401
    """What an import says in the panel: how many items, and the importer's notes (files left out, a folder's one
    class, files imported unlabeled), as `cdl data import` prints them; the panel said "imported photos" alone, and
    a user never learnt that Thumbs.db and notes.txt were left out, or that every photo went into one class."""
    sources = (result.steps[-1].summary.get("sources") or []) if getattr(result, "steps", None) else []
    mine = next((s for s in sources if Path(str(s.get("source", ""))).name == path.name), None)
    if mine is None:
        return f"imported {path.name}", "ok"
    notes = list(mine.get("notes") or [])
    head = f"imported {path.name}: {mine.get('items', 0)} item(s) ({mine.get('kind')})"
    if not notes:
        return head, "ok"
    shown = notes[:6] + ([f"… and {len(notes) - 6} more"] if len(notes) > 6 else [])
    return head + "\n" + "\n".join(shown), "warning" if any(n.startswith("ignored") for n in notes) else "ok"


class ColumnsDialog(QDialog):
    """Which column holds the text, and which the label (or none: the items are imported unlabeled)."""

    NONE = "(none: import the items unlabeled, for the labeling queue)"

    def __init__(self, name: str, columns: list[str], parent: QWidget | None = None):
        from runtime.steps.sources import LABEL_COLUMNS, TEXT_COLUMNS

        super().__init__(parent)
        self.setWindowTitle(f"Columns of {name}")
        lay = QVBoxLayout(self)
        intro = QLabel(f"Which column of {name} holds the text, and which the label? The import looks for columns "
                       f"named {', '.join(TEXT_COLUMNS[:3])}… and {', '.join(LABEL_COLUMNS[:3])}…, and did not find "
                       "both. cdl.yaml keeps the choice with the source.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        grid = QGridLayout()
        self.text = QComboBox()
        self.text.addItems(columns)
        self.label = QComboBox()
        self.label.addItems([*columns, self.NONE])
        lower = [c.lower() for c in columns]
        text = next((lower.index(c) for c in TEXT_COLUMNS if c in lower), 0)
        self.text.setCurrentIndex(text)
        label = next((lower.index(c) for c in LABEL_COLUMNS if c in lower), None)
        if label is None:  # of two columns, the other one; else the user's pick
            label = 1 - text if len(columns) == 2 else len(columns)
        self.label.setCurrentIndex(label)
        grid.addWidget(QLabel("Text"), 0, 0)
        grid.addWidget(self.text, 0, 1)
        grid.addWidget(QLabel("Label"), 1, 0)
        grid.addWidget(self.label, 1, 1)
        grid.setColumnStretch(1, 1)
        lay.addLayout(grid)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.resize(520, self.sizeHint().height())

    def choice(self) -> dict[str, Any]:
        if self.label.currentText() == self.NONE:
            return {"text_column": self.text.currentText(), "unlabeled": True}
        return {"text_column": self.text.currentText(), "label_column": self.label.currentText()}

    def ask(self) -> dict[str, Any] | None:
        return self.choice() if self.exec() == QDialog.DialogCode.Accepted else None
