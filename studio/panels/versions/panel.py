"""Dataset versions: the list, a content diff between two, and checkout of any of them (real DVC)."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from studio.panels.base import Panel
from studio.widgets.common import Table, local_time


class VersionsPanel(Panel):
    panel_id = "versions"
    title = "Dataset versions"
    steps = ("data.version",)

    def build(self) -> None:
        self.table = Table(["version", "items", "train", "test", "classes", "DVC hash", "git commit", "created", ""])
        self.add(self.table, 2)
        row = QHBoxLayout()
        self.diff_btn = QPushButton("Diff the two selected")
        self.checkout_btn = QPushButton("Check out the selected")
        self.diff_btn.clicked.connect(self._diff)
        self.checkout_btn.clicked.connect(self._checkout)
        row.addWidget(self.diff_btn)
        row.addWidget(self.checkout_btn)
        row.addStretch(1)
        w = QWidget()
        w.setLayout(row)
        self.add(w)
        self.diff_label = QLabel("Select two versions and press Diff.")
        self.diff_label.setWordWrap(True)
        self.add(self.diff_label)
        self.diff_table = Table(["class", "split", "before", "after", "change"])
        self.add(self.diff_table, 2)

    def load(self) -> Any:
        from runtime.datasets import versions_json

        return versions_json(self.ctx.workspace)["versions"]

    def show_data(self, versions: list[dict[str, Any]]) -> None:
        rows = []
        for v in versions:
            rows.append((v["id"], v["items"], v["splits"].get("train", 0), v["splits"].get("test", 0),
                         len([c for c in v["classes"] if not c.startswith("(")]), v["dvc_hash"][:12],
                         (v["git_commit"] or "")[:10], local_time(v["created"]),
                         "checked out" if v["checked_out"] else ""))
        self.table.fill(rows, data=[v["id"] for v in versions])
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
