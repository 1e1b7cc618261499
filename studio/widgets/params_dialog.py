"""A step's parameters, edited in a form built from its schema, and saved to cdl.yaml (runtime.params)."""

from __future__ import annotations

from typing import Any

import yaml
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from studio.widgets.common import fit_to_screen


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=None, sort_keys=False, width=80).strip()
    return str(value)


class ParamsDialog(QDialog):
    """One row per parameter: a checkbox, a list of choices, a line, or YAML for lists and mappings; its help
    under it. OK checks every value and writes them all or none; an error keeps the dialog open and names
    the field."""

    def __init__(self, workspace, step: str, parent: QWidget | None = None):  # noqa: ANN001
        from runtime.params import step_params

        super().__init__(parent)
        self.workspace, self.step = workspace, step
        self.result_data: dict[str, Any] | None = None
        self.setWindowTitle(f"Parameters of {step}")
        self.rows = step_params(workspace, step)
        self.editors: dict[str, QWidget] = {}
        form_host = QWidget()
        form = QFormLayout(form_host)
        for p in self.rows:
            editor = self._editor(p)
            self.editors[p["name"]] = editor
            cell = QWidget()
            lay = QVBoxLayout(cell)
            lay.setContentsMargins(0, 0, 0, 4)
            lay.setSpacing(1)
            lay.addWidget(editor)
            bits = [p["help"]] if p["help"] else []
            lo, hi = p["minimum"], p["maximum"]
            if lo is not None and hi is not None:
                bits.append(f"{lo:g} to {hi:g}")
            elif lo is not None:
                bits.append(f"at least {lo:g}")
            elif hi is not None:
                bits.append(f"at most {hi:g}")
            if not p["set"]:
                bits.append("default")
            if p.get("tuned"):
                bits.append("<b>model.tune's best trial gives this value while use_tuned is on</b>")
            if bits:
                hint = QLabel(" · ".join(bits))
                hint.setWordWrap(True)
                hint.setStyleSheet("QLabel { color: #6b7280; font-size: 11px; }")
                lay.addWidget(hint)
            label = QLabel(p["name"])
            label.setToolTip(p["help"])
            form.addRow(label, cell)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(form_host)
        self.scroll = scroll
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("QLabel { color: #b91c1c; }")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        outer = QVBoxLayout(self)
        note = QLabel(f"Saved to cdl.yaml; {step} turns stale until it runs with them.")
        note.setStyleSheet("QLabel { color: #4b5563; }")
        outer.addWidget(note)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.error)
        outer.addWidget(buttons)
        # no taller than the screen leaves room for (760 pixels put Save below a 768-pixel laptop's taskbar)
        fit_to_screen(self, 640, max(240, min(760, form_host.sizeHint().height() + 120)))

    def _editor(self, p: dict[str, Any]) -> QWidget:
        value = p["value"]
        if p["type"] == "bool":
            w = QCheckBox()
            w.setChecked(bool(value))
            return w
        if p["choices"]:
            w = QComboBox()
            for c in p["choices"]:
                w.addItem(str(c), c)
            if p["nullable"]:
                w.insertItem(0, "(none)", None)
            idx = w.findData(value)
            w.setCurrentIndex(max(0, idx))
            return w
        if p.get("suggestions"):  # offered values, and any other typed (model.train's template: src/'s modules)
            w = QComboBox()
            w.setEditable(True)
            w.addItems([str(v) for v in p["suggestions"]])
            w.setCurrentText(_show(value))
            return w
        if p["type"] in ("list", "dict", "any"):
            w = QPlainTextEdit(_show(value))
            w.setTabChangesFocus(True)
            lines = max(2, min(8, _show(value).count("\n") + 2))
            w.setFixedHeight(18 * lines + 10)
            return w
        w = QLineEdit(_show(value))
        if p["nullable"]:
            w.setPlaceholderText("(none)")
        return w

    def values(self) -> dict[str, Any]:
        """Every editor's value, typed; ValueError names the field that is not one."""
        out: dict[str, Any] = {}
        for p in self.rows:
            name, w = p["name"], self.editors[p["name"]]
            if isinstance(w, QCheckBox):
                out[name] = w.isChecked()
            elif isinstance(w, QComboBox):
                out[name] = w.currentText().strip() if w.isEditable() else w.currentData()
            elif isinstance(w, QPlainTextEdit):
                text = w.toPlainText().strip()
                if not text:
                    out[name] = None
                    continue
                try:
                    out[name] = yaml.safe_load(text)
                except yaml.YAMLError as exc:
                    from runtime.workspace.config import yaml_problem

                    raise ValueError(f"{name}: not valid YAML at {yaml_problem(exc)}") from None
            else:
                text = w.text().strip()
                if not text and (p["nullable"] or p["type"] in ("int", "float")):
                    out[name] = None
                elif p["type"] == "int":
                    try:
                        out[name] = int(text)
                    except ValueError:
                        raise ValueError(f"{name}: expected a whole number, got {text!r}") from None
                elif p["type"] == "float":
                    try:
                        out[name] = float(text)
                    except ValueError:
                        raise ValueError(f"{name}: expected a number, got {text!r}") from None
                else:
                    out[name] = w.text()
        return out

    def accept(self) -> None:
        from runtime.domain.errors import CdlError
        from runtime.params import set_step_params

        try:
            self.result_data = set_step_params(self.workspace, self.step, self.values())
        except (ValueError, CdlError) as exc:
            self.error.setText(str(exc))
            self._focus(str(exc))
            return
        super().accept()

    def _focus(self, message: str) -> None:
        """Put the cursor in the field the error names ("epochs: ..." or "model.train.epochs: ...")."""
        import re

        name = next((t for t in re.findall(r"[A-Za-z_]+", message[:160]) if t in self.editors), None)
        w = self.editors.get(name) if name else None
        if w is not None:
            self.scroll.ensureWidgetVisible(w)
            w.setFocus()
