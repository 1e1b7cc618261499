"""The Parameters dialog: a form from the step's schema; Save writes every value or none, and an error names
the field and keeps the dialog open."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDialog, QLineEdit, QPlainTextEdit

from studio.widgets.params_dialog import ParamsDialog


def _yaml(ws) -> str:  # noqa: ANN001
    return (ws.root / "cdl.yaml").read_text()


def test_params_dialog_edits_cdl_yaml_and_refuses_bad_values(text_ws, qtbot):
    ws = text_ws
    d = ParamsDialog(ws, "model.train")
    qtbot.addWidget(d)
    d.show()
    e = d.editors
    assert isinstance(e["refit"], QCheckBox) and isinstance(e["framework"], QComboBox)
    assert isinstance(e["epochs"], QLineEdit) and e["epochs"].text() == "20"
    assert [d.rows[i]["name"] for i in range(3)] == ["framework", "template", "epochs"]
    # use_tuned: the search space's parameters come from model.tune's best trial, and the form says so
    tuned = {r["name"] for r in d.rows if r["tuned"]}
    assert tuned == {"lr", "batch_size", "hidden", "dropout"}, tuned
    hints = [lbl.text() for lbl in d.findChildren(type(d.error)) if "best trial" in lbl.text()]
    assert len(hints) == 4
    before = _yaml(ws)
    # a value that is not a number, and one out of range: nothing is written, the field has the focus
    e["epochs"].setText("twenty")
    d.accept()
    assert d.result() != QDialog.DialogCode.Accepted and "epochs: expected a whole number" in d.error.text()
    assert _yaml(ws) == before
    e["epochs"].setText("0")
    d.accept()
    assert "model.train.epochs: must be >= 1" in d.error.text() and _yaml(ws) == before
    # good values: only what changed is written; the rest of cdl.yaml stays as it was
    e["epochs"].setText("7")
    e["init_from"].setText("champion")
    refit = e["refit"].isChecked()
    e["refit"].setChecked(not refit)
    e["framework"].setCurrentText("keras")
    d.accept()
    assert d.result() == QDialog.DialogCode.Accepted, d.error.text()
    assert d.result_data["changed"] == {"epochs": [20, 7], "init_from": ["", "champion"],
                                       "refit": [refit, not refit], "framework": ["torch", "keras"]}
    p = ws.config().params("model.train")
    assert (p["epochs"], p["init_from"], p["refit"], p["framework"]) == (7, "champion", not refit, "keras")
    assert "seed" not in (ws.config().steps["model.train"] or {})  # a default stays a default


def test_params_dialog_edits_lists_as_yaml(text_ws, qtbot):
    ws = text_ws
    d = ParamsDialog(ws, "deploy.compress")
    qtbot.addWidget(d)
    box = d.editors["methods"]
    assert isinstance(box, QPlainTextEdit) and "static_int8: {calibration_samples: 256}" in box.toPlainText()
    before = _yaml(ws)
    box.setPlainText("- dynamic_int8\n- static_int8: {calibration_samples: 256\n")
    d.accept()
    assert "methods: not valid YAML" in d.error.text() and _yaml(ws) == before
    box.setPlainText("- dynamic_int8\n- int4\n")  # valid YAML, but not a method: the step's own check
    d.accept()
    assert "unknown method 'int4'" in d.error.text() and _yaml(ws) == before
    box.setPlainText("- dynamic_int8\n- prune: {sparsity: 0.7, finetune_epochs: 1}\n")
    d.accept()
    assert d.result() == QDialog.DialogCode.Accepted, d.error.text()
    assert ws.config().params("deploy.compress")["methods"] == ["dynamic_int8",
                                                                {"prune": {"sparsity": 0.7, "finetune_epochs": 1}}]


def test_params_dialog_checks_the_search_space(text_ws, qtbot):
    ws = text_ws
    d = ParamsDialog(ws, "model.tune")
    qtbot.addWidget(d)
    # no taller than the screen leaves room for: 760 pixels put Save below a 768-pixel laptop's taskbar
    from PySide6.QtGui import QGuiApplication

    assert d.height() <= QGuiApplication.primaryScreen().availableGeometry().height() - 60, d.height()
    before = _yaml(ws)
    d.editors["search_space"].setPlainText("lr: {type: float, low: 0.1, high: 0.01}\n")
    d.accept()
    assert "model.tune.search_space.lr: needs low < high" in d.error.text() and _yaml(ws) == before


def test_params_dialog_offers_the_model_templates_and_src_modules(text_ws, qtbot):
    """model.train's template was a bare text field: a user's own module had to be typed as "src:net.py" from
    memory, and a misspelt one was saved, to fail in model.train after model.tune had run."""
    ws = text_ws
    (ws.root / "src" / "net.py").write_text("def build_model(input_shape, num_classes, params):\n    pass\n")
    (ws.root / "src" / "layers.py").write_text("def block(n, k):\n    pass\n")  # a helper net.py may import: no model
    d = ParamsDialog(ws, "model.train")
    qtbot.addWidget(d)
    box = d.editors["template"]
    assert isinstance(box, QComboBox) and box.isEditable() and box.currentText() == "bbc-net"
    assert [box.itemText(i) for i in range(box.count())] == ["bbc-net", "mlp", "src:net.py"]  # no cnn: a text task
    before = _yaml(ws)
    box.setCurrentText("src:nett.py")
    d.accept()
    assert "src/nett.py does not exist (did you mean 'net.py'?)" in d.error.text() and _yaml(ws) == before
    box.setCurrentIndex(2)
    d.accept()
    assert d.result() == QDialog.DialogCode.Accepted, d.error.text()
    assert ws.config().params("model.train")["template"] == "src:net.py"
