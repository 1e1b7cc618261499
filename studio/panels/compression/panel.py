"""Compression: every variant of a model version against the FP32 original (deploy.revise's table)."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from studio.panels.base import Panel
from studio.widgets.common import Table


class CompressionPanel(Panel):
    panel_id = "compression"
    title = "Compression"
    steps = ("deploy.export", "deploy.compress", "deploy.revise")

    def build(self) -> None:
        row = QHBoxLayout()
        row.addWidget(QLabel("Model version"))
        self.model = QComboBox()
        self.model.setMinimumWidth(160)
        self.model.activated.connect(lambda _: self.refresh())
        row.addWidget(self.model)
        row.addStretch(1)
        self.try_btn = QPushButton("Try it…")
        self.try_btn.setToolTip("serve the selected variant (and FP32 beside it) on this machine with the edge agent, "
                                "and send it your own text or image (`cdl serve`)")
        self.try_btn.setEnabled(False)
        self.try_btn.clicked.connect(self._try)
        row.addWidget(self.try_btn)
        self.save_btn = QPushButton("Save bundle…")
        self.save_btn.setToolTip("write the selected variant's signed bundle to a file (`cdl package`): manifest, "
                                 "model.onnx, hashes and the workspace's signature, to keep or to hand on")
        self.save_btn.setEnabled(False)
        self.save_btn.clicked.connect(self._save_bundle)
        row.addWidget(self.save_btn)
        w = QWidget()
        w.setLayout(row)
        self.add(w)
        # headers on two lines: the figures are narrower than their names, and in one line the columns left the
        # notes 120 pixels at 1366 x 768, the table scrolling sideways and each row four lines tall
        self.table = Table(["variant", "status", "size\nKiB", "×\nsmaller", "test\nacc", "change\n(pts)",
                            "b1 p50\nms", "b1 p95\nms", "b64 p50\nms", "b64 p95\nms", "vs\nFP32", "ran on", "notes"])
        self.table.itemSelectionChanged.connect(self._selection)
        self.table.viewport().installEventFilter(self)  # _fit_notes on each resize of the table
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setStretchLastSection(False)
        self.add(self.table, 1)
        note = QLabel("Latency is measured in onnxruntime on this machine; 'ran on' lists the providers onnxruntime "
                      "really used. A variant slower than FP32 is marked, with the batch size (b1, b64) and its median "
                      "latency against FP32's.")
        note.setWordWrap(True)  # in the panel's width beside the flowchart (one line set the panel's least width)
        self.add(note)

    def load(self) -> dict[str, Any]:
        from runtime.steps.deploy import variants_json

        store = self.ctx.workspace.store
        refs = [m.ref for m in store.model_versions() if store.variants(m.name, m.version)]
        chosen = self.model.currentData()
        if chosen not in refs:
            chosen = refs[-1] if refs else None
        # the version deploy.revise measures: deploy.export's model, as cdl.yaml names it now
        cfg = self.ctx.workspace.config()
        wanted = (cfg.params("deploy.export").get("model") if "deploy.export" in cfg.steps else None) or "champion"
        from runtime.steps.deploy import resolve_in

        try:
            measured_by_revise = resolve_in(store, cfg, str(wanted)).ref
        except Exception:  # noqa: BLE001 - no champion yet, or a name that no longer resolves: none is
            measured_by_revise = None
        return {"refs": refs, "chosen": chosen, "doc": variants_json(store, chosen) if chosen else None,
                "export_model": str(wanted), "revised_ref": measured_by_revise}

    def show_data(self, d: dict[str, Any]) -> None:
        self.model.blockSignals(True)
        self.model.clear()
        for r in d["refs"]:
            self.model.addItem(r, r)
        if d["chosen"]:
            self.model.setCurrentIndex(self.model.findData(d["chosen"]))
        self.model.blockSignals(False)
        if not d["doc"]:
            self.say_empty("No variants yet: run deploy.export and deploy.compress on an approved model.")
            self.table.fill([])
            return
        # variants compressed but never timed or tested: their columns were blank, and nothing said why
        unmeasured = [v["name"] for v in d["doc"]["variants"] if v["status"] == "ok" and not v["latency_ms"]]
        chosen = d["chosen"]
        if not unmeasured:
            self.say_empty(None)
        elif d.get("revised_ref") == chosen:
            self.say_empty(f"{chosen}: {', '.join(unmeasured)} not measured yet: run deploy.revise (the Revise step) "
                           "for latency and test accuracy.")
        else:
            now = f" ({d['revised_ref']} now)" if d.get("revised_ref") else ""
            self.say_empty(f"{chosen}: {', '.join(unmeasured)} not measured: deploy.revise measures the variants of "
                           f"the version deploy.export exports, its model parameter, {d.get('export_model')}{now}.")
        rows, colors = [], {}
        base = next((v for v in d["doc"]["variants"] if v["name"] == "fp32"), None)

        def versus(v: dict[str, Any]) -> str:
            if v["name"] == "fp32" or v["slower_than_fp32"] is None or not base or not base["latency_ms"]:
                return ""
            if v["slower_than_fp32"]:  # at which batch size, "slower at b64" (by how much: its tooltip): "slower"
                # alone, beside a faster batch-1 median, looked a wrong mark
                where = v["details"].get("slower_at")
                return f"slower\nat {', '.join(where)}" if where else "slower"  # two lines: the column stays narrow
            paired = v["details"].get("vs_fp32")  # timed in turns with FP32; a revision from before: the figures
            if paired:
                faster = all(paired[b] < 1 / 1.05 for b in ("b1", "b64"))
            else:
                a, b = v["latency_ms"], base["latency_ms"]
                faster = a["b1_p50"] < b["b1_p50"] / 1.05 and a["b64_p50"] < b["b64_p50"] / 1.05
            return "faster" if faster else "same"

        for i, v in enumerate(d["doc"]["variants"]):
            lat = v["latency_ms"] or {}
            ratio = v["details"].get("size_ratio")
            delta = v["accuracy_delta"]
            slower = v["slower_than_fp32"]
            rows.append((v["name"], v["status"], round(v["size_bytes"] / 1024) if v["size_bytes"] else None,
                         round(ratio, 2) if ratio else None, v["test_accuracy"],
                         round(100 * delta, 2) if delta is not None else None, lat.get("b1_p50"), lat.get("b1_p95"),
                         lat.get("b64_p50"), lat.get("b64_p95"),
                         versus(v),
                         ", ".join(p.replace("ExecutionProvider", "") for p in (v["providers"] or [])), v["message"]))
            if v["status"] == "skipped":
                for c in range(len(rows[-1])):
                    colors[(i, c)] = "#6b7280"
            elif v["status"] == "failed":
                colors[(i, 1)] = "#b91c1c"
            if slower:
                colors[(i, 10)] = "#c2410c"
            if delta is not None and delta < -0.005:
                colors[(i, 5)] = "#b91c1c"
        self.table.fill(rows, colors, data=[v["name"] if v["status"] == "ok" else None for v in d["doc"]["variants"]])
        from runtime.steps.deploy import slower_words

        for i, v in enumerate(d["doc"]["variants"]):
            if v["slower_than_fp32"] and v["details"].get("slower_at"):
                self.table.item(i, 10).setToolTip(slower_words(v["details"]["slower_at"], v["details"].get("vs_fp32"))
                                                  + ", timed in turns with FP32")
        self._fit_notes()
        self._selection()

    NOTES_MIN = 120  # px: below this the notes column keeps its width and the table scrolls

    def _fit_notes(self) -> None:
        """The notes column (what a method did, why a variant was skipped) in the width the panel has, wrapped:
        it ran past the panel's edge, readable only by scrolling or in a tooltip."""
        t = self.table
        last = t.columnCount() - 1
        if t.rowCount() == 0:
            return
        used = sum(t.columnWidth(c) for c in range(last))
        room = t.viewport().width() - used
        if room < self.NOTES_MIN:
            # the other columns alone scroll sideways (a 1024 x 768 screen): the notes in one line, out to the
            # right, and whole in their tooltips; wrapped in 120 pixels they made each row five lines tall, and
            # three variants filled the table
            t.setColumnWidth(last, max(self.NOTES_MIN, min(t.sizeHintForColumn(last), 900)))
            t.setWordWrap(False)
        else:
            t.setColumnWidth(last, room)
            t.setWordWrap(True)
        t.resizeRowsToContents()

    def eventFilter(self, obj, event) -> bool:  # noqa: ANN001, N802 - Qt's name
        from PySide6.QtCore import QEvent

        if obj is self.table.viewport() and event.type() == QEvent.Type.Resize:
            self._fit_notes()  # the table's own width, once the layout has set it (a scroll bar may take some)
        return super().eventFilter(obj, event)

    def _selection(self) -> None:
        ok = bool([x for x in self.table.selected_data() if x]) and bool(self.model.currentData())
        self.try_btn.setEnabled(ok)
        self.save_btn.setEnabled(ok)

    def _save_bundle(self) -> None:
        from pathlib import Path

        from PySide6.QtWidgets import QFileDialog

        from runtime.bundles import package

        variant = next((x for x in self.table.selected_data() if x), None)
        ref = self.model.currentData()
        if not variant or not ref:
            return
        name, version = ref.split(":")
        default = str(Path.home() / f"{name}-v{version}-{variant}.cdlb")
        path, _ = QFileDialog.getSaveFileName(self, f"Save the bundle of {ref}:{variant}", default,
                                              "CDL bundles (*.cdlb)")
        if path:
            self.work(package, self.ctx.workspace, ref, variant, Path(path),
                      done=lambda r: self.say(f"wrote {r['path']} ({r['size_bytes'] / 1024:.0f} KiB, sha256 "
                                              f"{r['sha256'][:16]}…), signed with the workspace's key", "ok"))

    def _try(self) -> None:
        from studio.widgets.try_dialog import TryDialog

        variant = next((x for x in self.table.selected_data() if x), None)
        ref = self.model.currentData()
        if not variant or not ref:
            return
        refs = [f"{ref}:{variant}"] + ([f"{ref}:fp32"] if variant != "fp32" else [])
        kind = "text" if self.ctx.workspace.config().task == "text" else "image"
        self.try_dialog = TryDialog(self.ctx.workspace, refs, kind, self)
        self.try_dialog.open()
