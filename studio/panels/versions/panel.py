"""Dataset versions: the list, a content diff between two, checkout of any of them, and their backup on a DVC
remote (real DVC)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from studio.panels.base import Panel
from studio.widgets.common import Table, confirm, gate_on_selection, local_time
from studio.widgets.flow import FlowLayout


class RemoteDialog(QDialog):
    """`cdl data remote add NAME URL`: a name, where (a folder, such as a mounted backup disk, or a URL DVC knows:
    s3://, ssh://, gs://, ...), and whether it becomes the default (the one Push every version sends to)."""

    def __init__(self, parent: QWidget | None = None, remotes: dict[str, str] | None = None):
        super().__init__(parent)
        self.remotes = remotes or {}
        self.setWindowTitle("Add a DVC remote")
        self.setMinimumWidth(560)
        form = QFormLayout(self)
        taken = set(self.remotes)
        self.name = QLineEdit(next(n for n in ("backup", *(f"backup{i}" for i in range(2, 100))) if n not in taken))
        self.url = QLineEdit()
        self.url.setPlaceholderText("a folder (a mounted backup disk) or s3://bucket/path, ssh://host/path, ...")
        browse = QPushButton("Folder…")
        browse.clicked.connect(self._browse)
        where = QHBoxLayout()
        where.addWidget(self.url, 1)
        where.addWidget(browse)
        self.default = QCheckBox("make it the default: Push every version sends to it")
        self.default.setChecked(True)
        if not self.remotes:
            self.default.setEnabled(False)  # the first one is the default
        form.addRow("Name", self.name)
        form.addRow("Where", where)
        form.addRow("", self.default)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("QLabel { color: #b91c1c; }")
        form.addRow("", self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A folder for the DVC remote")
        if path:
            self.url.setText(path)

    def accept(self) -> None:
        name, url = self.name.text().strip(), self.url.text().strip()
        from runtime.datasets import remote_name_ok

        if not remote_name_ok(name):
            self.error.setText("the name: letters, digits, - and _")
            return
        if name in self.remotes:
            self.error.setText(f"{name} is a remote already ({self.remotes[name]}): choose another name")
            return
        if not url:
            self.error.setText("where: a folder or a URL")
            return
        super().accept()


class VersionsPanel(Panel):
    panel_id = "versions"
    title = "Dataset versions"
    steps = ("data.version",)

    def build(self) -> None:
        # unlabeled: a version made by labeling alone read the same as the one before it
        self.table = Table(["version", "items", "train", "test", "unlabeled", "classes", "DVC hash", "git commit",
                            "created", "on the remote", "in data/dataset"])
        self.add(self.table, 2)
        row = FlowLayout()  # seven buttons: on two lines where the panel is narrow (they made it 940 pixels wide)
        self.diff_btn = QPushButton("Diff the two selected")
        self.checkout_btn = QPushButton("Check out the selected")
        self.diff_btn.clicked.connect(self._diff)
        self.checkout_btn.clicked.connect(self._checkout)
        row.addWidget(self.diff_btn)
        row.addWidget(self.checkout_btn)
        self.export_btn = QPushButton("Export the selected…")
        self.export_btn.setToolTip("its items and labels to a CSV, JSON Lines or Parquet file, or a folder of "
                                   "SPLIT/CLASS/FILE, which `cdl data import` reads back (`cdl data export`)")
        self.export_btn.clicked.connect(lambda: self._export())
        row.addWidget(self.export_btn)
        # off until the selection fits them, their tooltips saying what they need (each said so only when pressed)
        gate_on_selection(self.table, {
            self.diff_btn: (2, "what changed between two versions, per class and split (`cdl data diff`)",
                            "select two versions (Ctrl+click)"),
            self.checkout_btn: (1, "put the selected version's files into data/dataset (`cdl data checkout`)",
                                "select one version"),
            self.export_btn: (1, self.export_btn.toolTip(), "select one version")})
        self.push_btn = QPushButton("Push every version")
        self.pull_btn = QPushButton("Pull every version")
        self.push_btn.setToolTip("back up every version's data on the DVC remote (`cdl data push`)")
        self.pull_btn.setToolTip("fetch every version's data from the DVC remote into the cache (`cdl data pull`)")
        self.push_btn.clicked.connect(self._push)
        self.pull_btn.clicked.connect(self._pull)
        self.remote_btn = QPushButton("Add remote…")
        self.remote_btn.setToolTip("a DVC remote that keeps every version's data: a folder (a mounted backup disk), "
                                   "s3://, ssh://, ... (`cdl data remote add`)")
        self.remote_btn.clicked.connect(self._add_remote)
        row.addWidget(self.remote_btn)
        self.unremote_btn = QPushButton("Remove remote…")
        self.unremote_btn.setToolTip("forget a DVC remote, a wrong URL or a disk that is gone; what it holds stays "
                                     "there (`cdl data remote remove`)")
        self.unremote_btn.clicked.connect(self._remove_remote)
        row.addWidget(self.push_btn)
        row.addWidget(self.pull_btn)
        self.gc_btn = QPushButton("Free disk…")
        self.gc_btn.setToolTip("remove cached tensors of the other versions (fitted again when needed) and files "
                               "nothing refers to (`cdl gc`); asks first")
        self.gc_btn.clicked.connect(self._gc)
        row.addWidget(self.gc_btn)
        w = QWidget()
        w.setLayout(row)
        self.add(w)
        self.remote_label = QLabel("")  # its own line, wrapped: a long URL must not widen the panel
        self.remote_label.setWordWrap(True)
        line = QHBoxLayout()  # the remote, and beside what it says, the button that forgets it (the button row is full)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(self.remote_label, 1)
        line.addWidget(self.unremote_btn, 0, Qt.AlignmentFlag.AlignTop)
        w = QWidget()
        w.setLayout(line)
        self.add(w)
        self.diff_label = QLabel("Select two versions and press Diff.")
        self.diff_label.setWordWrap(True)
        self.add(self.diff_label)
        self.diff_table = Table(["class", "split", "before", "after", "change"])
        self.add(self.diff_table, 2)

    def load(self) -> Any:
        from runtime.datasets import remote_plugin_missing, versions_json

        ws = self.ctx.workspace
        remotes = ws.dvc.remotes()
        default = next(iter(remotes.values()), None)
        return {"versions": versions_json(ws)["versions"], "remotes": remotes,
                "missing_plugin": remote_plugin_missing(default) if default else None}

    def show_data(self, d: dict[str, Any]) -> None:
        versions = d["versions"]
        remote = next(iter(d["remotes"].items()), None)
        self.push_btn.setEnabled(remote is not None)
        self.pull_btn.setEnabled(remote is not None)
        self.unremote_btn.setEnabled(remote is not None)
        lacking = [v["id"] for v in versions if v["on_remote"] is False]
        if not remote:
            text = "No DVC remote: Add remote… (`cdl data remote add NAME URL`) to back up every version"
        elif d.get("missing_plugin"):  # "Push every version backs them up" was not so
            text = (f"DVC remote: {remote[0]} ({remote[1]}) needs the {d['missing_plugin']} package, which is not "
                    f"installed: nothing can be pushed to it until `pip install {d['missing_plugin']}`")
        elif lacking:
            text = (f"DVC remote: {remote[0]} ({remote[1]}). Not on it: {', '.join(lacking)}, whose data has no copy "
                    "outside this folder; Push every version backs them up")
        else:
            text = f"DVC remote: {remote[0]} ({remote[1]}), every version on it"
        self.remote_label.setText(text)
        rows, colors = [], {}
        for i, v in enumerate(versions):
            on = {None: "", True: "yes", False: "not pushed"}[v["on_remote"]]
            rows.append((v["id"], v["items"], v["splits"].get("train", 0), v["splits"].get("test", 0),
                         v["classes"].get("(unlabeled)", 0),
                         len([c for c in v["classes"] if not c.startswith("(")]), v["dvc_hash"][:12],
                         (v["git_commit"] or "")[:10], local_time(v["created"]), on,
                         "checked out" if v["checked_out"] else ""))
            if v["on_remote"] is False:
                colors[(i, 9)] = "#b45309"
        self.table.fill(rows, colors, data=[v["id"] for v in versions])
        if not versions:
            self.say("No dataset version yet: run the data pipeline up to data.version.", "info")

    def _selected(self) -> list[str]:
        return [x for x in self.table.selected_data() if x]

    def _diff(self) -> None:
        from runtime.datasets import diff_json

        sel = self._selected()
        if len(sel) != 2:
            self.say("select exactly two versions (Ctrl+click)", "warning")
            return
        a, b = sorted(sel, key=lambda v: int(v[1:]))
        self.work(diff_json, self.ctx.workspace, a, b, done=self._show_diff)

    def _show_diff(self, d: dict[str, Any]) -> None:
        self.diff_label.setText(f"<b>{d['from']} → {d['to']}</b>: {d['added']} added, {d['removed']} removed, "
                                f"{d['changed']} changed, {d['label_changes']} label changes, {d['split_changes']} "
                                "moved between splits")
        rows = []
        splits = sorted(set(d["splits_before"]) | set(d["splits_after"]))
        for split in splits:
            before, after = d["splits_before"].get(split, {}), d["splits_after"].get(split, {})
            for c in sorted(set(before) | set(after)):
                rows.append((c, split, before.get(c, 0), after.get(c, 0), after.get(c, 0) - before.get(c, 0)))
        colors = {(i, 4): ("#15803d" if r[4] > 0 else "#b91c1c") for i, r in enumerate(rows) if r[4]}
        self.diff_table.fill(rows, colors)

    def _checkout(self) -> None:
        from runtime.datasets import checkout

        sel = self._selected()
        if len(sel) != 1:
            self.say("select one version to check out", "warning")
            return
        self.work(checkout, self.ctx.workspace, sel[0], message=f"checking out {sel[0]}…",
                  done=lambda r: self.say(f"data/dataset is now {r['version']} ({r['items']} items)", "ok"))

    def _export(self, dest: str | None = None) -> None:
        """dest: where to write (a test gives it; a person picks a file, or a new folder by a name without one of
        the file types)."""
        from pathlib import Path

        from PySide6.QtWidgets import QFileDialog

        from runtime.export import export_version

        sel = self._selected()
        if len(sel) != 1:
            self.say("select one version to export", "warning")
            return
        if dest is None:
            default = str(Path.home() / f"{self.ctx.workspace.root.name}-{sel[0]}.csv")
            dest, _ = QFileDialog.getSaveFileName(
                self, f"Export {sel[0]}", default, "CSV (*.csv);;JSON Lines (*.jsonl);;Parquet (*.parquet);;"
                "A new folder of SPLIT/CLASS/FILE (no file type) (*)")
            if not dest:
                return

        def done(d: dict[str, Any]) -> None:
            splits = ", ".join(f"{k} {n}" for k, n in d["splits"].items())
            notes = ([f"left out {d['left_out_quarantined']} quarantined"] if d["left_out_quarantined"] else []) + [
                f"class {k!r} is the folder {v!r}" for k, v in d["renamed_classes"].items()]
            self.say(f"wrote {d['items']} item(s) of {d['version']} ({splits}) to {d['path']} ({d['format']})"
                     + (f"; {'; '.join(notes)}" if notes else ""), "ok")

        self.work(export_version, self.ctx.workspace, Path(dest), sel[0], done=done,
                  message=f"exporting {sel[0]} to {dest}…")

    def _add_remote(self) -> None:
        from runtime.datasets import remote_add

        dlg = RemoteDialog(self, self.ctx.workspace.dvc.remotes())
        if dlg.exec() != QDialog.DialogCode.Accepted:
            return

        def done(r: dict[str, Any]) -> None:
            instead = f", the default in place of {r['replaced_default']}" if r["replaced_default"] else \
                (", the default" if r["default"] else "")
            if r.get("missing_plugin"):  # DVC would refuse it only at the first push
                self.say(f"DVC remote {r['remote']}: {r['url']}{instead}; it needs the {r['missing_plugin']} package, "
                         f"which is not installed: `pip install {r['missing_plugin']}`, then Push every version",
                         "warning")
                return
            self.say(f"DVC remote {r['remote']}: {r['url']}{instead}. Push every version backs the versions up on "
                     "it", "ok")

        self.work(remote_add, self.ctx.workspace, dlg.name.text().strip(), dlg.url.text().strip(),
                  dlg.default.isChecked(), message="adding the remote…", done=done)

    def _remove_remote(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        from runtime.datasets import remote_remove

        remotes = self.ctx.workspace.dvc.remotes()
        if not remotes:
            return
        labels = [f"{n}: {u}" + (" (default)" if i == 0 else "") for i, (n, u) in enumerate(remotes.items())]
        chosen, ok = QInputDialog.getItem(self, "Remove a DVC remote", "Forget this remote (the data on it stays "
                                          "there):", labels, 0, False)
        if not ok:
            return
        name = list(remotes)[labels.index(chosen)]

        def done(r: dict[str, Any]) -> None:
            after = (f"; the default is now {r['default']}" if r["default"] else "; no remote is left") \
                if r["was_default"] else ""
            self.say(f"removed remote {r['remote']} ({r['url']}); the data on it stays there{after}", "ok")

        self.work(remote_remove, self.ctx.workspace, name, message="removing the remote…", done=done)

    def _push(self) -> None:
        from runtime.datasets import push

        def done(r: dict[str, Any]) -> None:
            sent = sum(r["pushed"].values())
            gone = f"; not in the cache here: {', '.join(r['not_in_cache'])}" if r["not_in_cache"] else ""
            self.say(f"{len(r['pushed'])} version(s) on {r['remote']}, {sent} object(s) pushed{gone}",
                     "warning" if gone else "ok")

        self.work(push, self.ctx.workspace, message="pushing every version…", done=done)

    def _pull(self) -> None:
        from runtime.datasets import pull

        def done(r: dict[str, Any]) -> None:
            if r["incomplete"]:
                self.say(f"{r['remote']} lacks data of {', '.join(r['incomplete'])}", "warning")
            else:
                self.say(f"every version is in the cache ({sum(r['fetched'].values())} object(s) fetched from "
                         f"{r['remote']})", "ok")

        self.work(pull, self.ctx.workspace, message="pulling every version…", done=done)

    def _gc(self) -> None:
        from runtime.gc import plan

        self.work(plan, self.ctx.workspace, message="looking for what can go…", done=self._confirm_gc)

    def _confirm_gc(self, items: list[dict[str, Any]]) -> None:
        from runtime.gc import collect, human, summary_line

        if not items:
            self.say("nothing to remove: every cached file belongs to the checked-out version or is referred to",
                     "ok")
            return
        by_kind: dict[str, list[int]] = {}
        for it in items:
            by_kind.setdefault(it["kind"], []).extend([it["bytes"]] + [0] * (it.get("rows", 1) - 1))
        names = {"transform": "cached tensors of other dataset versions (fitted again when an older model needs "
                              "them)",
                 "artifact": "files no model version, variant, deployment or latest step run refers to",
                 "temporary": "writes a killed process left",
                 "file hashes": "cached hashes of files no source holds (.cdl/file-hashes.db)"}
        lines = "\n".join(f"• {len(b)} × {names.get(k, k)}: {human(sum(b))}" for k, b in sorted(by_kind.items()))
        if not confirm(
                self, "Free disk",
                f"Remove {human(sum(it['bytes'] for it in items))} from .cdl?\n\n{lines}\n\nRegistered "
                "models, their variants and bundles, and every bundle pushed to a device stay."):
            return
        self.work(collect, self.ctx.workspace, message="removing…",
                  done=lambda r: self.say(summary_line(r), "ok"))
