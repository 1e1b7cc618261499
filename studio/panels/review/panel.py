"""Review: a candidate against the champion (metrics, confusion matrices, per-class report); approve or
reject with a comment; the history of aliases and reviews."""

from __future__ import annotations

import getpass
from typing import Any

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidgetItem,
    QWidget,
)

from studio.panels.base import Panel
from studio.widgets.common import PageTabs, Table, confirm, local_time


def per_class_rows(ev: dict[str, Any], champion: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """class, test items, precision, recall, f1, the champion's precision and recall. A class with no test item
    has no recall or F1, and a precision only where the model predicted it: all three read 0, as if the model
    failed on a class the test split did not have."""
    def scores(e: dict[str, Any] | None, c: str) -> tuple[Any, Any, Any]:
        d = (e or {}).get("per_class", {}).get(c)
        if d is None:
            return None, None, None
        classes, cm = e.get("classes") or [], e.get("confusion_matrix") or []
        predicted = sum(row[classes.index(c)] for row in cm) if c in classes and cm else 1
        if d.get("support", 1):
            return d["precision"], d["recall"], d["f1"]
        return (d["precision"] if predicted else None), None, None

    rows = []
    for c, d in ev.get("per_class", {}).items():
        p, r, f = scores(ev, c)
        cp, cr, _ = scores(champion, c)
        rows.append((c, d.get("support"), p, r, f, cp, cr))
    return rows


def _confusion(table: Table, ev: dict[str, Any] | None) -> None:
    if not ev or not ev.get("confusion_matrix"):
        table.setRowCount(0)
        return
    classes = ev["classes"]
    cm = ev["confusion_matrix"]
    table.setSortingEnabled(False)
    table.setColumnCount(len(classes))
    table.setRowCount(len(classes))
    # many classes, or long names (Fashion-MNIST's ten: "T-shirt/top", "Ankle boot"): the columns are numbered as
    # the rows are, each name in its column's tooltip; the ten named columns overflowed half the panel, behind a
    # scroll bar that also hid the last row
    numbered = len(classes) > 6 or any(len(c) > 10 for c in classes)
    table.setHorizontalHeaderLabels([str(k + 1) if numbered else c for k, c in enumerate(classes)])
    table.setVerticalHeaderLabels([(f"{k + 1} " if numbered else "") + c[:14] for k, c in enumerate(classes)])
    for k, c in enumerate(classes):
        table.horizontalHeaderItem(k).setToolTip(c)
    table.verticalHeader().setVisible(True)
    table.verticalHeader().setDefaultSectionSize(ROW_H)  # the height below counts on it
    table.horizontalHeader().setStretchLastSection(False)  # the last class's column as wide as the others
    peak = max(1, max(max(r) for r in cm))
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            item = QTableWidgetItem(str(v))
            shade = int(255 - 180 * v / peak)
            item.setBackground(QColor(shade, shade, 255) if i == j else QColor(255, shade, shade) if v else QColor("white"))
            table.setItem(i, j, item)
    table.resizeColumnsToContents()
    # the whole matrix in view up to ten classes (a 5-class one needed scrolling to see its last row)
    table.setMinimumHeight(table.horizontalHeader().sizeHint().height() + min(len(classes), 10) * ROW_H
                           + 2 * table.frameWidth() + 2)


ROW_H = 22  # compact rows: the review shows four tables at once


def _whole_width(table: Table) -> int:
    """The width a matrix needs to show every column: its row header, columns and frame."""
    return (table.verticalHeader().sizeHint().width() + sum(table.columnWidth(c) for c in range(table.columnCount()))
            + 2 * table.frameWidth() + 2)


class _Matrices(QWidget):
    """The candidate's and the champion's confusion matrices side by side where both fit whole, else one above the
    other: at 1024 pixels Fashion-MNIST's ten classes showed four of the candidate's columns and eight of the
    champion's, each behind a sideways scroll bar."""

    def __init__(self, label_a: QLabel, table_a: Table, label_b: QLabel, table_b: Table):
        super().__init__()
        self.parts = (label_a, table_a, label_b, table_b)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(4, 4, 4, 4)
        self.side_by_side: bool | None = None
        self.arrange()

    def arrange(self, refilled: bool = False) -> None:
        """Side by side or stacked, for the width there is now: after a resize, and (`refilled`) after the matrices
        were filled, their widths changed."""
        label_a, table_a, label_b, table_b = self.parts
        need = _whole_width(table_a) + (_whole_width(table_b) if table_b.isVisibleTo(self) else 0)
        side = not table_b.isVisibleTo(self) or self.width() >= need + self.grid.horizontalSpacing() + 8
        if side == self.side_by_side and not refilled:
            return
        self.side_by_side = side
        for w in self.parts:
            self.grid.removeWidget(w)
        spots = ((0, 0), (1, 0), (0, 1), (1, 1)) if side else ((0, 0), (1, 0), (2, 0), (3, 0))
        for w, (r, c) in zip(self.parts, spots, strict=True):
            self.grid.addWidget(w, r, c)
        for c in (0, 1):  # halves of one width (the longer label took more of it)
            self.grid.setColumnStretch(c, 1 if side else int(c == 0))
        self.updateGeometry()

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt's name
        super().resizeEvent(event)
        self.arrange()


class ReviewPanel(Panel):
    panel_id = "review"
    title = "Review"
    steps = ("model.evaluate", "model.review")

    def build(self) -> None:
        row = QHBoxLayout()
        row.addWidget(QLabel("Candidate"))
        self.candidate = QComboBox()
        self.candidate.setMinimumWidth(180)
        self.candidate.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)  # "news:3  (not reviewed …)"
        self.candidate.activated.connect(lambda _: self.refresh())
        row.addWidget(self.candidate)
        self.versus = QLabel()
        self.versus.setWordWrap(True)
        row.addWidget(self.versus, 1)
        self.try_btn = QPushButton("Try…")
        self.try_btn.setToolTip("type a text (or pick an image) and see what the candidate and the champion predict, "
                                "from their checkpoints")
        self.try_btn.setEnabled(False)
        self.try_btn.clicked.connect(self._try)
        row.addWidget(self.try_btn)
        self.try_refs: list[str] = []
        self.try_dialog = None
        w = QWidget()
        w.setLayout(row)
        self.add(w)
        self.data_note = QLabel("")  # what changed in the data between the champion's version and the candidate's
        self.data_note.setWordWrap(True)
        self.data_note.setStyleSheet("color: #4b5563")
        self.add(self.data_note)
        grid = QGridLayout()
        self.metrics = Table(["metric", "candidate", "champion", "change"])
        grid.addWidget(self.metrics, 0, 0)
        self.cm_candidate_label = QLabel(CM_CANDIDATE)
        self.cm_candidate_label.setWordWrap(True)  # "…; no champion to compare with" in one line was 613 pixels
        self.cm_champion_label = QLabel("Champion's confusion matrix")
        self.cm_champion_label.setWordWrap(True)
        self.cm_candidate = Table([])
        self.cm_champion = Table([])
        mw = self.matrices = _Matrices(self.cm_candidate_label, self.cm_candidate, self.cm_champion_label,
                                       self.cm_champion)
        self.per_class = Table(["class", "test items", "precision", "recall", "f1", "champion precision",
                                "champion recall"])
        # the matrices and the per-class figures each in a tab of their own, whole: one above the other, the
        # per-class table showed two and a half of Fashion-MNIST's ten classes at 920 pixels
        self.details = PageTabs()  # as tall as the tab shown needs (the matrices had 60 blank pixels below them)
        self.details.addTab(mw, "Confusion matrices")
        self.details.addTab(self.per_class, "Per class: precision, recall, f1")
        grid.addWidget(self.details, 1, 0)
        for t in (self.metrics, self.cm_candidate, self.cm_champion, self.per_class):
            t.verticalHeader().setDefaultSectionSize(ROW_H)
        grid.setRowStretch(1, 1)
        gw = QWidget()
        gw.setLayout(grid)
        self.add(gw, 1)
        act = QHBoxLayout()
        self.reviewer = QLineEdit(getpass.getuser() or "")
        self.reviewer.setPlaceholderText("reviewer")
        self.reviewer.setMaximumWidth(140)
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment (why)")
        self.approve_btn = QPushButton("Approve → champion")
        self.reject_btn = QPushButton("Reject")
        # a disabled button greyed (their colours hid it: Approve looked pressable with the champion chosen)
        off = " QPushButton:disabled { background: #d1d5db; color: #6b7280; }"
        self.approve_btn.setStyleSheet("QPushButton { background: #16a34a; color: white; padding: 4px 10px; }" + off)
        self.reject_btn.setStyleSheet("QPushButton { background: #dc2626; color: white; padding: 4px 10px; }" + off)
        self.approve_btn.clicked.connect(lambda: self._review(True))
        self.reject_btn.clicked.connect(lambda: self._review(False))
        for x in (self.reviewer, self.comment, self.approve_btn, self.reject_btn):
            act.addWidget(x)
        aw = QWidget()
        aw.setLayout(act)
        self.add(aw)
        self.history = Table(["when", "event", "version", "by", "comment"])
        self.history.setMaximumHeight(150)
        # the newest events in view once the layout has given the table its height (scrolling at fill time used the
        # old height and left the newest row half hidden in the window)
        bar = self.history.verticalScrollBar()
        bar.rangeChanged.connect(lambda _lo, hi: bar.setValue(hi))
        self.history.verticalHeader().setDefaultSectionSize(ROW_H)
        self.add(self.history)

    def load(self) -> dict[str, Any]:
        from runtime.registry import history_json, models_json, review_text

        store = self.ctx.workspace.store
        versions = store.model_versions()
        if not versions:
            return {"versions": []}
        chosen = self.candidate.currentData()
        refs = [v.ref for v in versions]
        # each version with its aliases and where its review stands, as `cdl models list` says them: one passed
        # over by a newer version before anybody reviewed it reads so, not as one more waiting its turn
        labels = [f"{m['name']}:{m['version']}  ({', '.join([*m['aliases'], review_text(m['review'], m['passed_over_by'], m['gate_failed'])])})"
                  for m in models_json(store)["models"]]
        if chosen not in refs:
            challenger = [v for v in versions if "challenger" in v.aliases]
            chosen = (challenger[-1] if challenger else versions[-1]).ref
        cand = store.resolve_model(chosen)
        try:
            champ = store.model_version(cand.name, "champion")
        except Exception:  # noqa: BLE001 - no champion yet
            champ = None
        return {"versions": refs, "labels": labels, "candidate": cand, "champion": champ, "history": history_json(store, cand.name),
                "data_change": _data_change(self.ctx.workspace, champ, cand)}

    def show_data(self, d: dict[str, Any]) -> None:
        from runtime.registry import failed_gate

        self.candidate.blockSignals(True)
        self.candidate.clear()
        for ref, label in zip(d["versions"], d.get("labels") or d["versions"], strict=True):
            self.candidate.addItem(label, ref)
        self.candidate.blockSignals(False)
        if not d["versions"]:
            self.say("No model to review yet: run the model pipeline up to model.evaluate.")
            return
        cand, champ = d["candidate"], d["champion"]
        self.candidate.setCurrentIndex(self.candidate.findData(cand.ref))
        self.data_note.setText(d.get("data_change") or "")
        self.data_note.setVisible(bool(d.get("data_change")))
        self.try_refs = [cand.ref] + ([champ.ref] if champ is not None and champ.ref != cand.ref else [])
        self.try_btn.setEnabled(True)
        # the champion approved again would only be one more review (Reject still demotes it)
        is_champion = champ is not None and champ.ref == cand.ref
        self.approve_btn.setEnabled(not is_champion)
        self.approve_btn.setToolTip(f"{cand.ref} is the champion already" if is_champion else
                                    "approve this version: it becomes the champion")
        if is_champion:  # nothing to compare with: the champion columns stay empty
            self.versus.setText("is the champion: choose another version to compare it with")
            champ = None
        else:
            self.versus.setText(versus_text(cand, champ) if champ else "no champion yet: approving makes "
                                "this version the first")
        here = champion_here(cand, champ)  # the champion measured on the candidate's test split, if it was
        self.cm_champion_label.setText((f"Champion's confusion matrix ({champ.ref}"
                                        + (", on this test split)" if here else ")")) if champ else
                                       "Champion's confusion matrix: none to compare with")
        # no champion: the candidate's matrix alone, saying so (an empty grid half the panel wide said nothing more)
        self.cm_champion.setVisible(champ is not None)
        self.cm_champion_label.setVisible(champ is not None)
        self.cm_candidate_label.setText(CM_CANDIDATE + ("" if champ else "; it is the champion" if is_champion
                                                        else "; no champion to compare with"))
        reviewed = [r for r in d["history"]["reviews"] if r["version"] == cand.version]
        if not cand.evaluation:
            self.say(f"{cand.ref} has no test evaluation yet: run model.evaluate first.", "warning")
        elif reviewed:
            r = reviewed[-1]
            self.say(f"{cand.ref} was {r['decision']} by {r['reviewer']}{' (automatic)' if r['automatic'] else ''}: "
                     f"{r['comment']}{_demotion(cand, d['champion'], d['history'], r)}",
                     "ok" if r["decision"] == "approved" else "warning")
        elif (failed := failed_gate(cand)) is not None:  # it said "awaits review" of one model.review never asks about
            self.say(f"{cand.ref} failed model.evaluate's gate ({failed}): model.review does not ask about it; Approve "
                     "asks whether to override the gate", "warning")
        else:
            gate = cand.evaluation.get("gate", {})
            self.say(f"{cand.ref} awaits review; gate {gate.get('metric')} {gate.get('value', 0):.4f} passed "
                     f"(threshold {gate.get('threshold')})", "info")
        rows, colors = [], {}
        for i, m in enumerate(("test_accuracy", "macro_f1", "val_accuracy")):
            a = cand.metrics.get(m)
            b = ((here if here and m != "val_accuracy" else champ.metrics).get(m)  # validation: its own split
                 if champ else None)
            change = (a - b) if a is not None and b is not None else None
            rows.append((m, a, b, change))
            if change:
                colors[(i, 3)] = "#15803d" if change > 0 else "#b91c1c"
        self.metrics.fill(rows, colors)
        m = self.metrics  # three rows: shown whole, never behind a scroll bar
        m.setFixedHeight(m.horizontalHeader().height() + sum(m.rowHeight(i) for i in range(m.rowCount()))
                         + 2 * m.frameWidth() + 2)
        _confusion(self.cm_candidate, cand.evaluation)
        versus = (here or champ.evaluation) if champ else None
        _confusion(self.cm_champion, versus)
        self.matrices.arrange(refilled=True)
        self.per_class.fill(per_class_rows(cand.evaluation, versus))
        # "became champion | 2 | | approved by ana": it read "champion from | 2 | approved by ana", the reason under "by"
        events = [(a["since"], f"became {a['alias']}", a["version"], "", a["reason"]) for a in d["history"]["aliases"]]
        events += [(r["created"], r["decision"] + (" (automatic)" if r["automatic"] else ""), r["version"],
                    r["reviewer"], r["comment"]) for r in d["history"]["reviews"]]
        events.sort(key=lambda e: e[0])
        self.history.fill([(local_time(e[0]), *e[1:]) for e in events])
        # as tall as its rows (two at least, six at most): a fixed 150 pixels kept one row's room empty while the
        # per-class table above showed two and a half of Fashion-MNIST's ten classes
        h = self.history
        h.setMaximumHeight(h.horizontalHeader().height() + ROW_H * min(6, max(2, len(events))) + 2 * h.frameWidth() + 2)
        h.scrollToBottom()  # the newest events in view, oldest first above them (the oldest showed, the rest hidden)

    def _try(self) -> None:
        from studio.widgets.try_dialog import TryDialog

        if not self.try_refs:
            return
        kind = "text" if self.ctx.workspace.config().task == "text" else "image"
        self.try_dialog = TryDialog(self.ctx.workspace, self.try_refs, kind, self, via="checkpoint")
        self.try_dialog.show()

    def _review(self, approve: bool) -> None:
        from runtime.registry import review_and_say

        ref = self.candidate.currentData()
        if not ref:
            return
        if not self.reviewer.text().strip():
            self.say("say who you are (reviewer) first", "warning")
            return
        override = False
        if approve:  # a version that failed the gate became the champion at a click, without a word
            from runtime.registry import failed_gate

            failed = failed_gate(self.ctx.workspace.store.resolve_model(ref))
            if failed is not None:
                if not confirm(
                        self, "Approve a version that failed the gate",
                        f"{ref} failed model.evaluate's gate ({failed}). Approve it all the same? It becomes the "
                        "champion, and its review says the gate was overridden."):
                    return
                override = True
        self.work(review_and_say, self.ctx.workspace.store, ref, approve, self.comment.text(),
                  self.reviewer.text().strip(), override,
                  done=lambda line: (self.comment.clear(), self.sig_message.emit(line)))


def _data_change(ws: Any, champ: Any, cand: Any) -> str:  # noqa: ANN401
    """What changed in the data from the champion's dataset version to the candidate's (`cdl data diff`), so a
    reviewer knows why the numbers moved; "" when they share one."""
    if champ is None or champ.ref == cand.ref or champ.dataset_version == cand.dataset_version:
        return ""
    from runtime.datasets import diff_json
    from runtime.domain.errors import CdlError

    a, b = champ.dataset_version, cand.dataset_version
    try:
        d = diff_json(ws, a, b)
    except CdlError as exc:
        return f"Data {a} → {b}: not compared ({exc})"
    parts = [f"{d['added']} item(s) added", f"{d['removed']} removed", f"{d['changed']} changed",
             f"{d['label_changes']} relabeled", f"{d['split_changes']} moved between train and test"]
    return f"Data from the champion's {a} to this version's {b} (`cdl data diff {a} {b}`): " + ", ".join(parts)


def champion_here(cand: Any, champ: Any) -> dict[str, Any] | None:
    """The champion's evaluation on the candidate's test split (model.evaluate makes it), or None where it has
    none for this champion: then the champion's numbers are from its own test split."""
    if champ is None or not cand.evaluation:
        return None
    v = cand.evaluation.get("champion") or {}
    return v if v.get("ref") == champ.ref and "test_accuracy" in v else None


def versus_text(cand: Any, champ: Any) -> str:
    here = champion_here(cand, champ)
    if here is None:
        if champ.transform == cand.transform:
            return f"against champion {champ.ref} (the same test split)"
        failed = (cand.evaluation or {}).get("champion") or {}
        if failed.get("ref") == champ.ref and failed.get("error"):
            return (f"against champion {champ.ref}: its numbers are from its own test split ({champ.dataset_version}); "
                    f"it could not be measured on this one: {failed['error']}")
        return (f"against champion {champ.ref}: its numbers are from its own test split ({champ.dataset_version}); "
                f"run model.evaluate again to measure it on this one")
    if here["same_test_set"]:
        return f"against champion {champ.ref} (the same test split)"
    text = (f"against champion {champ.ref} (trained on {here['dataset_version']}), both on this version's test split "
            f"({cand.dataset_version}, {here['n']} items)")
    if here.get("seen_in_training"):
        from runtime.ml.versus import flattered

        text += "; " + flattered(here["seen_in_training"], "them", "the champion's")
    if here.get("classes_it_lacks"):
        text += "; classes the champion does not know: " + ", ".join(here["classes_it_lacks"])
    return text


CM_CANDIDATE = "Candidate's confusion matrix (rows: true, columns: predicted)"


def _demotion(cand: Any, champ: Any, history: dict[str, Any], last_review: dict[str, Any]) -> str:
    """After a rejected candidate: where `champion` is (registry.review moved it when the candidate held it)."""
    from runtime.registry import restored_after

    if last_review["decision"] != "rejected":
        return ""
    held = [a for a in history["aliases"] if a["alias"] == "champion"]
    if not held:
        return ""
    last = held[-1]
    if champ is not None and restored_after(last["reason"], cand.ref):
        return f". It was the champion: {champ.ref} is the champion again"
    if champ is None and last["version"] == cand.version and last["until"]:
        return ". It was the champion: there is no champion now"
    if champ is not None and champ.ref != cand.ref:  # model.review goes on with it: deploy.* builds for it
        return f"; {champ.ref} stays the champion"
    return ""

