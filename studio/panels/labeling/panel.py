"""Labeling: one item at a time, text or image; keys pick a class (1-9, 0, then letters, as Label Studio's
hotkeys go; each button shows its key), S skips, U (or Ctrl+Z) undoes; filters for unlabeled items, conflicts and
a retrain proposal's queue; Label Studio import and export."""

from __future__ import annotations

import getpass
import html
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from studio.panels.base import Panel
from studio.panels.data.panel import _image_pixmap
from studio.services.tasks import run_task
from studio.widgets.flow import ReflowGrid, flow_row

# a class's key, by its place: Label Studio's hotkey order without S and U, which skip and undo here
CLASS_KEYS = "1234567890qwetadfgzxcvbyiophjklnm"
BUTTONS_PER_ROW = 10


class LabelingPanel(Panel):
    panel_id = "labeling"
    title = "Labeling"
    steps = ("data.label", "deploy.maintain")

    def build(self) -> None:
        self._note = ""  # the note the last load showed (cleared by the next load without one)
        show = QWidget()  # each label beside its box where the row wraps
        top = QHBoxLayout(show)
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(QLabel("Show"))
        self.filter = QComboBox()
        self.filter.addItems(["unlabeled", "conflicts", "all", "labeled"])
        # as wide as its longest entry: "proposal:p1", added later, showed as "proposal:p"
        self.filter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.filter.currentTextChanged.connect(lambda _: self.refresh())
        top.addWidget(self.filter)
        self.order = QComboBox()
        self.order.addItem("in order", "queue")
        self.order.addItem("least sure first", "uncertain")
        self.order.setToolTip("least confident first: the items Suggest's model was least sure of come first "
                              "(active learning: each label teaches the next model the most)")
        self.order.currentIndexChanged.connect(lambda _: self.refresh())
        top.addWidget(self.order)
        top.addWidget(QLabel("Labeler"))
        # the name a labeler typed stays for the next session (it went back to the login name at every start, and
        # labels made before anyone noticed counted as another labeler's)
        settings = QSettings("CDL", "Studio")
        self.labeler = QLineEdit(str(settings.value("labeler", "") or "") or getpass.getuser() or "labeler")
        self.labeler.setToolTip("your name on every label and skip you make (kept for the next session)")
        self.labeler.editingFinished.connect(self._keep_labeler)
        self.labeler.setMaximumWidth(140)
        top.addWidget(self.labeler)
        top.addStretch(1)
        self.agreement_btn = QPushButton("Agreement…")
        self.agreement_btn.setToolTip("who labeled what, and how often labelers (people and imported sources) agree "
                                      "on the items they both labeled (`cdl labels agreement`)")
        self.agreement_btn.clicked.connect(self._agreement)
        self.suggest_btn = QPushButton("Suggest")
        self.suggest_btn.setToolTip("the champion's guess for every item still to decide, shown beside the item; "
                                    "Enter takes it (`cdl labels suggest`); suggestions are not labels")
        self.suggest_btn.clicked.connect(self.suggest)
        imp = QPushButton("Import Label Studio…")
        exp = QPushButton("Export Label Studio…")
        imp.clicked.connect(self._import_ls)
        exp.clicked.connect(self._export_ls)
        # wrapped onto a second line where the panel is narrow (the row made the window 861 pixels wide at the
        # least); the choices and the buttons each a line of their own then (the buttons beside them stood one
        # under another, four lines high, at 1024)
        self.add(flow_row(show, flow_row(self.suggest_btn, self.agreement_btn, imp, exp)))
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m labeled")
        self.add(self.progress)
        self.meta = QLabel()
        self.meta.setWordWrap(True)
        self.add(self.meta)
        self.text = QTextBrowser()
        self.text.setMinimumHeight(200)
        self.add(self.text, 1)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumHeight(220)
        self.image.setStyleSheet("QLabel { background: #111827; border-radius: 6px; }")
        self.add(self.image, 1)
        self.image.hide()
        # rows of BUTTONS_PER_ROW (ten classes or more stay legible), fewer where the panel is narrower than that
        # (ten to a row made it 892 pixels wide at least: wider than the room beside the flowchart at 1024)
        self.buttons_box = ReflowGrid(BUTTONS_PER_ROW)
        self.add(self.buttons_box)
        actions = QHBoxLayout()
        self.skip_btn = QPushButton("Skip (S)")
        self.undo_btn = QPushButton("Undo (U)")
        self.skip_btn.clicked.connect(self.skip)
        self.undo_btn.clicked.connect(self.undo)
        # a folder of photos imported unlabeled has no class yet: there was no button to name the first
        self.new_class_btn = QPushButton("New class…")
        self.new_class_btn.setToolTip("label the item shown with a class no item has yet (`cdl labels set ITEM "
                                      "LABEL --new-class`)")
        self.new_class_btn.clicked.connect(lambda: self.new_class())
        actions.addWidget(self.skip_btn)
        actions.addWidget(self.undo_btn)
        actions.addWidget(self.new_class_btn)
        actions.addStretch(1)
        aw = QWidget()
        aw.setLayout(actions)
        self.add(aw)
        self.classes: list[str] = []
        self.current = None
        self.suggestion: dict[str, Any] | None = None
        self._class_buttons: list[QPushButton] = []
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - class keys label, S skips, U undoes
        key = event.key()
        plain = event.modifiers() in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.KeypadModifier)
        if plain and event.text() and event.text().lower() in CLASS_KEYS[:len(self.classes)]:
            self.choose(CLASS_KEYS.index(event.text().lower()))
        elif key == Qt.Key.Key_S and not event.modifiers():
            self.skip()
        elif (key == Qt.Key.Key_U and not event.modifiers()) or event.matches(QKeySequence.StandardKey.Undo):
            self.undo()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and plain:
            self.accept_suggestion()
        else:
            super().keyPressEvent(event)

    def set_filter(self, value: str) -> None:
        if self.filter.findText(value) < 0:
            self.filter.addItem(value)
        self.filter.setCurrentText(value)

    def _keep_labeler(self) -> None:
        settings = QSettings("CDL", "Studio")
        name = self.labeler.text().strip()
        if name:
            settings.setValue("labeler", name)
            return
        # an emptied field labeled as "labeler", a name nobody has, in the agreement table: the name comes back
        self.labeler.setText(str(settings.value("labeler", "") or "") or getpass.getuser() or "")
        self.say(f"Every label carries its labeler's name: still labeling as {self.labeler.text()!r}"
                 if self.labeler.text().strip() else "Type your name in the Labeler field: every label carries it",
                 "warning")

    def _queue(self):  # noqa: ANN202
        from runtime.labeling import LabelQueue

        return LabelQueue(self.ctx.workspace, self.labeler.text().strip())  # a blank name is refused by name

    def load(self) -> dict[str, Any]:
        from runtime.proposals import proposals

        ws = self.ctx.workspace
        if not ws.has_dataset() and not ws.store.item_count():  # imported items can be labeled before data.ingest
            return {"empty": True, "proposals": [p["id"] for p in proposals(ws)]}
        from runtime.labeling import suggestions

        q = self._queue()
        flt = self.filter.currentText()
        order, note = self.order.currentData() or "queue", ""
        if order == "uncertain" and not suggestions(ws):
            order, note = "queue", "No suggestions to order by yet: press Suggest (the items are in listed order)."
        item = q.next(flt, order)
        content = q.content(item.uid) if item else None
        props = proposals(ws)
        pp = next((p for p in props if f"proposal:{p['id']}" == flt), None)
        return {"empty": False, "proposal_progress": pp, "item": item, "content": content, "classes": q.classes(),
                "fixed_classes": bool((ws.config().labeling or {}).get("classes")),
                "progress": q.progress(), "quarantined": q.quarantined_count(), "suggestion": q.suggestion(item.item_id) if item else None,
                "proposals": [p["id"] for p in props], "filter": flt, "note": note,
                "elsewhere": 0 if item else len(q.store.leased_by_others(q.labeler)),
                "undoable": (lambda r: q.action_text(r) if r is not None else None)(q.store.last_manual(q.labeler)),
                "open_proposals": [p["id"] for p in props if p["status"] == "open" and p["unlabeled"]]}

    def show_data(self, d: dict[str, Any]) -> None:
        for p in d["proposals"]:
            if self.filter.findText(f"proposal:{p}") < 0:
                self.filter.addItem(f"proposal:{p}")
        if d["empty"]:
            self.say("Nothing to label yet: import data in the Data panel (a folder of files to label, a CSV, a "
                     "Label Studio export).", "info")
            return
        # the load's own note, or none: the message of the action that caused this load (an import's counts,
        # "nothing to undo") stays; every load cleared it as soon as it was said
        note = d.get("note", "")
        if note:
            self.say(note, "warning")
        elif self._note and self.status_label.text() == self._note:
            self.say("")
        self._note = note
        if d["classes"] != self.classes:
            self.classes = d["classes"]
            self.buttons_box.clear()
            self._class_buttons = []
            for i, c in enumerate(self.classes):
                b = QPushButton(f"{CLASS_KEYS[i].upper()}  {c}" if i < len(CLASS_KEYS) else c)
                b.setToolTip(f"{c} (key {CLASS_KEYS[i].upper()})" if i < len(CLASS_KEYS) else c)
                b.clicked.connect(lambda _=False, i=i: self.choose(i))
                self.buttons_box.add(b)
                self._class_buttons.append(b)
        # off, where it was always on and answered "nothing to undo"; its tooltip names what it undoes
        undoable = d.get("undoable")
        self.undo_btn.setEnabled(undoable is not None)
        self.undo_btn.setToolTip(f"undo {undoable}" if undoable else f"{self.labeler.text().strip() or 'you'}: "
                                 "nothing to undo (a label or a skip of yours)")
        p = d["progress"]
        pp = d.get("proposal_progress")
        if pp:
            self.progress.setFormat(f"proposal {pp['id']}: %v of %m samples labeled")
            self.progress.setMaximum(max(1, pp["samples"]))
            self.progress.setValue(pp["labeled"])
        else:
            # the items data.validate quarantined are not in %m: said, where "50 of 50" beside 51 imported was not
            quarantined = d.get("quarantined", 0)
            self.progress.setFormat("%v of %m labeled" + (f" ({quarantined} quarantined, left out: Data ▸ Validation)"
                                                          if quarantined else ""))
            self.progress.setMaximum(max(1, p["total"]))
            self.progress.setValue(p["labeled"])
        self.current = d["item"]
        self.suggestion = None
        self._fixed_classes = d.get("fixed_classes", False)
        if self.current is None:
            hint = ""
            if d["open_proposals"] and not d["filter"].startswith("proposal:"):
                hint = (f" A retrain proposal waits: choose 'proposal:{d['open_proposals'][0]}' under Show to label "
                        "its samples.")
            if p["conflicts"] and d["filter"] in ("unlabeled", "labeled"):  # they are not in this queue
                hint += " Choose 'conflicts' under Show to decide the items whose labels disagree."
            if d["filter"] in ("unlabeled", "conflicts") and p["labeled"] and not hint:
                # all done: where to go from here (the panel ended at a blank "nothing left")
                hint = " Choose 'labeled' under Show to look over the labels given, or import more data in the Data panel."
            open_ = f" {d['elsewhere']} open with other labelers." if d.get("elsewhere") else ""
            pp = d.get("proposal_progress")
            if pp is not None:  # what comes next for the proposal shown (as `cdl labels next --filter` says)
                from runtime.proposals import LABELED_NEXT

                hint += (f" Proposal {pp['id']} is {pp['status']}." if pp["status"] != "open" else
                         f" Proposal {pp['id']}'s {pp['samples']} sample(s) are labeled: {LABELED_NEXT}.")
            self.meta.setText("")
            # the item's place says so (an empty panel kept its layout, instead of spreading its buttons out)
            self.image.hide()
            self.text.show()
            self.text.setHtml("<div style='color:#4b5563; font-size:13pt; text-align:center'><br><br>"
                              f"Nothing left to label under '{html.escape(d['filter'])}'.<br><br>"
                              f"{p['unlabeled']} unlabeled, {p['conflicts']} conflicts in all."
                              f"{html.escape(open_)}{html.escape(hint)}</div>")
            self._enable(False)
            return
        self._enable(True)
        item = self.current
        extra = f" — conflicting labels: {', '.join(item.candidates)}" if item.conflict else ""
        label = f"current label: {item.label}" if item.label else "unlabeled"
        self.suggestion = d.get("suggestion")
        sug = self.suggestion
        if sug and sug["label"] in self.classes:
            extra += (f" — suggested by {html.escape(sug['model'])}: <b>{html.escape(sug['label'])}</b> "
                      f"({sug['confidence']:.2f}), Enter takes it")
        if not self.classes:
            extra += " — no classes yet: <b>New class…</b> names the first"
        # the item's uid, as `cdl labels next` names it and `cdl labels set` takes it (the panel showed its source,
        # "b.csv#row3", which `labels set` did not know; and unescaped, so a name with "<" or "&" broke the line)
        self.meta.setText(f"<b>{html.escape(item.uid)}</b> ({html.escape(label)}, split {item.split or '-'}){extra}")
        self.meta.setToolTip(f"source: {item.source}\nitem id: {item.item_id}")
        content = d["content"]
        if isinstance(content, str):
            self.image.hide()
            self.text.show()
            self.text.setPlainText(content)
        else:
            self.text.hide()
            self.image.show()
            self.image.setPixmap(_image_pixmap(np.asarray(content), 240))

    def _enable(self, on: bool) -> None:
        """The class buttons and Skip work on the item shown: with none shown they are off."""
        for b in self._class_buttons:
            b.setEnabled(on)
        self.skip_btn.setEnabled(on)
        fixed = getattr(self, "_fixed_classes", False)
        self.new_class_btn.setEnabled(on and not fixed)
        self.new_class_btn.setToolTip("cdl.yaml's labeling.classes fixes the classes: a new one goes there"
                                      if fixed else "label the item shown with a class no item has yet (`cdl labels "
                                      "set ITEM LABEL --new-class`)")

    # -- actions ------------------------------------------------------------------------------------------

    def choose(self, index: int) -> None:
        if self.current is None or index >= len(self.classes):
            return
        item, label = self.current, self.classes[index]
        self.current = None
        run_task(self._queue().set_label, item.uid, label, on_done=lambda _: self.refresh(),
                 on_error=lambda m: self.say(m, "error"))

    def new_class(self, name: str | None = None) -> None:
        """Label the item shown with a class no item has yet (name, or asked for)."""
        if self.current is None:
            return
        if name is None:
            name, ok = QInputDialog.getText(self, "New class", "A class for this item (every item can take it "
                                            "from then on):")
            if not ok:
                return
        name = name.strip()
        if not name:
            return
        if name in self.classes:
            self.choose(self.classes.index(name))
            return
        from runtime.datasets import label_key

        same = [c for c in self.classes if label_key(c) == label_key(name)]
        if same:  # "Sport" beside "sport" would split one class in two
            self.say(f"{name!r} is the class {same[0]!r} spelt another way: its button labels with it", "warning")
            return
        item = self.current
        self.current = None
        run_task(self._queue().set_label, item.uid, name, on_done=lambda _: self.refresh(),
                 on_error=lambda m: self.say(m, "error"))

    def accept_suggestion(self) -> None:
        """Enter: the model's suggestion is the label (as a class key would set it)."""
        sug = self.suggestion
        if self.current is None or not sug or sug["label"] not in self.classes:
            return
        self.choose(self.classes.index(sug["label"]))

    def suggest(self) -> None:
        """The champion's guesses for every item still to decide: `cdl labels suggest` in a process of its own
        (it loads the model's framework, which the studio's process must not)."""
        from studio.services.cli import cdl_json

        self.work(partial(cdl_json, timeout=3600), self.ctx.workspace.root, "labels", "suggest",
                  message="the champion is suggesting labels…",
                  done=lambda d: self.say(f"{d['model']} suggested labels for {d['items']} item(s); Enter takes "
                                          "the one shown", "ok"))

    def skip(self) -> None:
        if self.current is None:
            return
        item = self.current
        self.current = None
        run_task(self._queue().skip, item.uid, on_done=lambda _: self.refresh(), on_error=lambda m: self.say(m, "error"))

    def undo(self) -> None:
        q = self._queue()

        def undo() -> str:  # what it undid and what the item has now, as `cdl labels undo` says (it said nothing)
            rec = q.undo()
            return q.undone_text(rec) if rec is not None else ""

        self.undo_btn.setEnabled(False)  # one press, one undo: the reload says whether there is another
        run_task(undo, on_done=lambda t: (self.refresh(), self.say(t or "nothing to undo", "ok" if t else "info")),
                 on_error=lambda m: (self.refresh(), self.say(m, "error")))

    def _agreement(self) -> None:
        from runtime.labeling import agreement, workspace_relabel

        ws = self.ctx.workspace
        self.work(lambda: agreement(ws.store, workspace_relabel(ws)), done=self._show_agreement)

    def _show_agreement(self, doc: dict[str, Any]) -> None:
        self.agreement_dialog = AgreementDialog(doc, self)
        self.agreement_dialog.open()

    def _import_ls(self) -> None:
        from runtime.labeling import import_label_config

        path, _ = QFileDialog.getOpenFileName(self, "Label Studio export, or a project's labeling config",
                                              str(Path.home()), "Label Studio (*.json *.xml);;Export (*.json);;"
                                              "Labeling config (*.xml)")
        if path and path.lower().endswith(".xml"):
            # a project's Labeling Interface: its choices become the class keys, in its order (ten New class… did)
            self.work(import_label_config, self.ctx.workspace, Path(path),
                      done=lambda r: self.say(f"{Path(path).name}: {len(r['classes'])} classes, now this "
                                              f"workspace's (cdl.yaml's labeling.classes): {', '.join(r['classes'])}",
                                              "ok"))
            return
        if path:
            self._import_export(Path(path), skip_unmatched=False)

    def _import_export(self, path: Path, skip_unmatched: bool) -> None:
        from runtime.labeling import UNMATCHED_HINT, import_label_studio

        # how far it is (an export of 70 000 images reads for seconds, and the panel said nothing until it ended),
        # and closing the window names it
        key = object()
        self.in_progress[key] = f"importing labels from {path.name}"
        self.say(f"importing labels from {path.name}…", "info")

        def progress(done: int, total: int) -> None:
            self.sig_progress.emit(f"importing labels from {path.name}: {done} of {total} task(s)…")

        def done(r: dict[str, Any]) -> None:
            self.in_progress.pop(key, None)
            self.say(f"{r['labels']} label(s) from {r['tasks']} task(s); {r['conflicts']} conflict(s)"
                     + (f"; {r['already_here']} already here (the same labeler's same label)" if r["already_here"]
                        else "")
                     + (f"; {r['unmatched']} task(s) matched no item and were left out" if r.get("unmatched") else ""),
                     "ok")
            self.refresh()

        def failed(msg: str) -> None:
            self.in_progress.pop(key, None)
            if not msg.endswith(UNMATCHED_HINT) or skip_unmatched:
                self.say(msg, "error")
                return
            # the CLI's way round it, --skip-unmatched, was named in a panel that had none
            what = msg.removesuffix(UNMATCHED_HINT)
            ask = QMessageBox.question(self, "Tasks that match no item", f"{what}\n\nImport the labels of the "
                                       "tasks that do match, and leave these out?")
            if ask == QMessageBox.StandardButton.Yes:
                self._import_export(path, skip_unmatched=True)
            else:
                self.say(what, "error")

        run_task(import_label_studio, self.ctx.workspace, path, skip_unmatched, None, progress, on_done=done,
                 on_error=failed)

    def _export_ls(self) -> None:
        from runtime.labeling import export_label_studio

        # shown a retrain proposal, the export holds its samples left to label, not the whole dataset
        flt = self.filter.currentText()
        flt = flt if flt.startswith("proposal:") else None
        name = f"{flt.replace(':', '-')}.json" if flt else "labels.json"
        path, _ = QFileDialog.getSaveFileName(self, "Export for Label Studio" + (f" ({flt})" if flt else ""),
                                              str(Path.home() / name), "JSON (*.json)")
        if path:
            # beside it, the labeling config a Label Studio project needs to import it (labels.label_config.xml)
            config = Path(path).with_suffix(".label_config.xml")
            # how far it is: Fashion-MNIST's 70 000 images take seconds, and the panel said nothing until it ended
            def progress(done: int, total: int) -> None:
                self.sig_progress.emit(f"exporting for Label Studio: {done} of {total} item(s)…")

            self.work(export_label_studio, self.ctx.workspace, Path(path), True, config, flt, progress,
                      message="exporting for Label Studio…",
                      done=lambda r: self.say(f"wrote {r['tasks']} task(s){' of ' + flt if flt else ''} to {path}, and "
                                              f"the Label Studio project's labeling config ({len(r['classes'])} "
                                              f"classes) to {config.name} beside it (Settings > Labeling Interface > "
                                              "Code)", "ok"))


class AgreementDialog(QDialog):
    """`cdl labels agreement` as two tables: the labelers, then every pair that labeled the same items."""

    def __init__(self, doc: dict[str, Any], parent: QWidget | None = None):
        from studio.widgets.common import Table, fit_to_screen

        super().__init__(parent)
        self.setWindowTitle("Agreement between labelers")
        lay = QVBoxLayout(self)
        self.labelers = Table(["labeler", "source", "labeled", "skipped", "shared", "agreement"])
        self.labelers.fill([(r["labeler"], r["source"], r["labeled"], r["skipped"], r["shared"],
                             "-" if r["agreement"] is None else f"{r['agreement']:.1%}") for r in doc["labelers"]])
        self.pairs = Table(["labeler", "labeler", "shared items", "agreement", "Cohen's kappa"])
        self.pairs.fill([(p["a"], p["b"], p["items"], f"{p['agreement']:.1%}",
                          "undefined" if p["kappa"] is None else f"{p['kappa']:.3f}") for p in doc["pairs"]])
        several = doc["items_with_several"]
        self.summary = QLabel(f"{several} item(s) labeled by several labelers, {doc['unanimous']:.1%} of them "
                              "unanimously" if several else "No item has labels from two labelers yet.")
        self.summary.setWordWrap(True)
        note = QLabel("A labeler is a person or an imported source (folder names, Label Studio annotators); each "
                      "one's latest label of an item counts, a skip is none. Kappa corrects the agreement for "
                      "what the labelers' label frequencies would give by chance.")
        note.setWordWrap(True)
        note.setStyleSheet("QLabel { color: #4b5563; }")
        lay.addWidget(QLabel("<b>Labelers</b>"))
        lay.addWidget(self.labelers, 1)
        lay.addWidget(QLabel("<b>Pairs</b> (items both labeled)"))
        lay.addWidget(self.pairs, 1)
        lay.addWidget(self.summary)
        lay.addWidget(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        for t in (self.labelers, self.pairs):
            t.resizeColumnsToContents()
        fit_to_screen(self, 760, 520)
