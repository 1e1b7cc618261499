"""The flowchart's model (Qt-free) and its controller's undo stack."""

from __future__ import annotations

import pytest
import yaml

from runtime.workspace.workspace import template_text
from studio.canvas.model import ConnectionError_, FlowModel


def _model() -> FlowModel:
    from runtime.steps import get_step

    doc = yaml.safe_load(template_text("text-classification"))
    steps = []
    for sid in doc["steps"]:
        spec = get_step(sid).spec
        steps.append({"id": sid, "title": spec.title, "pipeline": spec.pipeline, "role": spec.role.value,
                      "inputs": [(p.name, p.type) for p in spec.inputs], "outputs": [(p.name, p.type) for p in spec.outputs]})
    return FlowModel.from_pipeline(steps, [tuple(e) for e in doc["edges"]], [tuple(e) for e in doc["loops"]])


def test_built_from_the_template_with_three_pipelines_and_a_loop():
    m = _model()
    assert {n.pipeline for n in m.nodes.values()} == {"data", "model", "deploy"}
    assert m.nodes["data.label"].role == "labeler" and m.nodes["model.review"].role == "validator"
    assert any(e.loop and e.source == "deploy.maintain" and e.target == "data.label" for e in m.edges)
    assert m.upstream("model.train") == ["model.preprocess", "model.tune"]
    assert "data.import" in m.ancestors("deploy.push")
    # columns by pipeline, rows in order
    assert m.nodes["data.import"].x < m.nodes["model.tune"].x < m.nodes["deploy.export"].x
    assert m.nodes["data.import"].y < m.nodes["data.split"].y


def test_typed_ports_and_cycles_are_checked_in_the_model():
    m = _model()
    ok, why = m.can_connect("data.import", "model.train")
    assert not ok and "items" in why
    ok, why = m.can_connect("deploy.push", "data.import")
    assert not ok
    ok, why = m.can_connect("model.evaluate", "model.preprocess")
    assert not ok
    with pytest.raises(ConnectionError_):
        m.add_edge("data.import", "model.train")


def test_status_changes_notify_listeners():
    m = _model()
    seen = []
    m.subscribe(lambda ev, payload: seen.append((ev, payload)))
    m.set_progress("model.train", 0.5, "epoch 3")
    m.set_status("model.train", "done")
    m.set_status("model.train", "done")  # no change, no event
    assert seen == [("node-changed", "model.train"), ("node-changed", "model.train")]
    assert m.nodes["model.train"].progress is None


def test_moves_are_undoable(qapp, tmp_path):
    from studio.canvas.document import FlowDocument

    m = _model()
    doc = FlowDocument(m, tmp_path / "layout.json")
    x0, y0 = m.nodes["data.split"].x, m.nodes["data.split"].y
    doc.move_node("data.split", 500, 600)
    doc.move_node("data.split", 510, 610)  # merged into one undo step
    assert (m.nodes["data.split"].x, m.nodes["data.split"].y) == (510, 610)
    doc.undo_stack.undo()
    assert (m.nodes["data.split"].x, m.nodes["data.split"].y) == (x0, y0)
    doc.undo_stack.redo()
    assert m.nodes["data.split"].x == 510
    doc.save_layout()
    m2 = _model()
    FlowDocument(m2, tmp_path / "layout.json")
    assert (m2.nodes["data.split"].x, m2.nodes["data.split"].y) == (510, 610)
    # a layout file of another shape (edited, or from another version) gives the default layout, not a crash
    for other in ("[1, 2]", '{"data.split": 5}', '{"data.split": ["a", "b"]}', "{"):
        (tmp_path / "layout.json").write_text(other)
        m3 = _model()
        FlowDocument(m3, tmp_path / "layout.json")
        assert (m3.nodes["data.split"].x, m3.nodes["data.split"].y) == (x0, y0), other


def test_scene_draws_every_node_and_selection_signals(qtbot, qapp):
    from studio.canvas.document import FlowDocument
    from studio.canvas.scene import FlowScene
    from studio.canvas.view import FlowView

    m = _model()
    scene = FlowScene(FlowDocument(m))
    view = FlowView(scene)
    qtbot.addWidget(view)
    assert set(scene.node_items) == set(m.nodes)
    assert len(scene.edge_items) == len(m.edges)
    with qtbot.waitSignal(scene.sig_node_selected) as blocker:
        scene.select("model.tune")
    assert blocker.args == ["model.tune"]
    m.set_status("deploy.monitor", "drifted", "drift in psi:oov_rate")
    assert "drifted" in scene.node_items["deploy.monitor"].toolTip()
    before = view.zoom_level()
    view.zoom(1.5)
    assert view.zoom_level() == pytest.approx(before * 1.5)
    view.fit()


def test_every_card_line_fits_its_card(qapp):
    """"deploy.compress · software engineer" ran past the card's edge and was cut mid-word: a line wider than the
    card ends with an ellipsis now (the tooltip keeps the whole text)."""
    from PySide6.QtGui import QFont, QFontMetricsF

    from studio.canvas.items import W, subtitle

    m = _model()
    f = QFont()
    f.setPointSizeF(7.5)
    fm = QFontMetricsF(f)
    cut = []
    for node in m.nodes.values():
        line = subtitle(node, f)
        assert fm.horizontalAdvance(line) <= W - 20, line
        full = f"{node.id}  ·  {node.role}"
        if line != full:
            assert line.endswith("…") and full.startswith(line[:-1].rstrip()), line
            cut.append(node.id)
    assert "deploy.compress" in cut  # the long one, which ran past the edge before
    assert "data.import" not in cut
