"""Two model versions side by side (`cdl models compare A B --json`, in a process of its own: measuring one on the
other's test split runs the model, which the studio's process must not load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QDialogButtonBox, QLabel, QTableWidgetItem, QVBoxLayout, QWidget

from studio.services.cli import cdl_json
from studio.widgets.common import Table, WrappedColumnsDialog, fit_to_screen

DIFFERS = "#b45309"
SECTION = "#e5e7eb"


def run_compare(root: Path, a: str, b: str) -> dict[str, Any]:
    return cdl_json(root, "models", "compare", a, b, timeout=900)


def _fmt(v: Any) -> str:  # noqa: ANN401
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return str(v)


def compare_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(name, A, B, change, kind) per line; kind: "section" (a heading), "differs" or "same"."""
    def r(name: str, a: Any, b: Any, change: str, differs: bool) -> tuple[str, str, str, str, str]:  # noqa: ANN401
        return (name, _fmt(a), _fmt(b), change, "differs" if differs else "same")

    def section(name: str) -> tuple[str, str, str, str, str]:
        return (name, "", "", "", "section")

    rows = [section("made from")]
    rows += [r(x["field"], x["a"], x["b"], "", x["differs"]) for x in doc["lineage"]]
    rows.append(section("parameters"))
    rows += [r(p["name"], p["a"], p["b"], "", p["differs"]) for p in doc["params"]]
    own = "the same test split" if doc["same_test_set"] else "each on its own test split"
    rows.append(section(f"metrics ({own})"))
    rows += [r(m["name"], m["a"], m["b"], "" if m["change"] is None else f"{m['change']:+.4f}",
               m["change"] not in (None, 0)) for m in doc["metrics"]]
    o = doc.get("on_split")
    if o and "error" not in o:
        rows.append(section(f"both on {o['of']}'s test split ({o['dataset_version']})"))
        for name in ("test_accuracy", "macro_f1"):
            x, y = o["a"].get(name), o["b"].get(name)
            rows.append(r(name, x, y, "" if x is None or y is None else f"{y - x:+.4f}", x != y))
    rows.append(section(f"per class F1 ({own})"))
    rows += [r(c["class"], c["a_f1"], c["b_f1"],
               "" if c["a_f1"] is None or c["b_f1"] is None else f"{c['b_f1'] - c['a_f1']:+.4f}",
               c["a_f1"] != c["b_f1"]) for c in doc["per_class"]]
    return rows


def summary_text(doc: dict[str, Any]) -> str:
    o = doc.get("on_split")
    if doc["same_test_set"]:
        return f"{doc['a']} and {doc['b']}: the same data and test split. Rows that differ are in colour."
    if not o:
        return f"{doc['a']} and {doc['b']} were tested on different test splits: their metrics do not compare directly."
    if "error" in o:
        return f"{doc['a']} and {doc['b']} were tested on different test splits; not measured on one: {o['error']}"
    measured = o["a"] if o["of"] == doc["b"] else o["b"]
    text = (f"{doc['a']} and {doc['b']} were tested on different test splits: {measured['ref']} was measured on "
            f"{o['of']}'s as well ({o['dataset_version']}, {measured['n']} items).")
    if measured.get("seen_in_training"):
        from runtime.ml.versus import flattered

        whose = f"{measured['ref']}'s"
        text += f" {flattered(measured['seen_in_training'], 'them', whose)}."
    if measured.get("classes_it_lacks"):
        text += f" Classes {measured['ref']} does not know: {', '.join(measured['classes_it_lacks'])}."
    return text


class CompareDialog(WrappedColumnsDialog):
    def __init__(self, doc: dict[str, Any], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Compare {doc['a']} and {doc['b']}")
        lay = QVBoxLayout(self)
        self.summary = QLabel(summary_text(doc))
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        self.table = Table(["", doc["a"], doc["b"], "change"])
        rows = compare_rows(doc)
        self.table.fill([x[:4] for x in rows], {(i, c): DIFFERS for i, x in enumerate(rows) if x[4] == "differs"
                                                 for c in (0, 1, 2)})
        self.table.setSortingEnabled(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        bold = QFont()
        bold.setBold(True)
        for i, x in enumerate(rows):
            if x[4] != "section":
                continue
            for c in range(4):
                item = self.table.item(i, c)
                if item is None:
                    item = QTableWidgetItem("")
                    self.table.setItem(i, c, item)
                item.setBackground(QColor(SECTION))
                item.setFont(bold)
            self.table.setSpan(i, 0, 1, 4)  # a heading reads across the table
        self.table.resizeColumnsToContents()
        self.table.setColumnWidth(0, min(self.table.columnWidth(0), 220))
        # each version's column as wide as its values (160 to 300), less where the dialog is narrow (fit_columns)
        self._widths = {c: min(max(self.table.columnWidth(c), 160), 300) for c in (1, 2)}
        for c, width in self._widths.items():
            self.table.setColumnWidth(c, width)
        self.table.setWordWrap(True)
        self.table.clearSelection()
        self.table.setCurrentCell(-1, -1)
        lay.addWidget(self.table, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        fit_to_screen(self, 940, 700)

    def fit_columns(self) -> None:
        """The two versions' columns give up room where the dialog is narrow, leaving the change 90 pixels (at 160
        to 300 each they went behind a scroll bar in a dialog 760 wide); their values wrap."""
        room = self.table.viewport().width() - self.table.columnWidth(0) - 90
        for c, width in self._widths.items():
            self.table.setColumnWidth(c, max(100, min(width, room // 2)))
        used = sum(self.table.columnWidth(c) for c in range(3))
        self.table.setColumnWidth(3, max(90, self.table.viewport().width() - used))  # the change: what is left
        self.table.resizeRowsToContents()
