"""The studio's plots: axes that count things tick at whole numbers, a long title never pushes the plot out of its
panel, and the monitoring panel's volume plot shows the newest records when none came in the last hour. No
workspace needed: the monitoring panel is given the data its load() would return."""

from __future__ import annotations

import time

import pytest
from PySide6.QtWidgets import QWidget


def _ticks(plot) -> list[float]:  # noqa: ANN001
    axis = plot.getAxis("bottom")
    lo, hi = plot.getViewBox().viewRange()[0]
    return [v for _, values in axis.tickValues(lo, hi, axis.width() or 400) for v in values]


def test_counting_axes_tick_at_whole_numbers(qtbot):
    from studio.widgets.common import plot_widget

    counted = plot_widget("Learning curves", "val_accuracy", "epoch", whole_x=True)
    plain = plot_widget("Histogram", "items", "words")
    for w in (counted, plain):
        qtbot.addWidget(w)
        w.resize(500, 300)
        w.show()
        w.plot([1, 2], [0.5, 0.7])
        w.setXRange(1, 2, padding=0)
    qtbot.waitUntil(lambda: counted.isVisible() and plain.isVisible())
    assert _ticks(counted) and all(float(v).is_integer() for v in _ticks(counted)), _ticks(counted)
    assert {1.0, 2.0} <= set(_ticks(counted))
    assert any(not float(v).is_integer() for v in _ticks(plain))  # an axis of values keeps its 1.2, 1.4, ...
    counted.setXRange(0, 40, padding=0)
    assert _ticks(counted) and all(float(v).is_integer() for v in _ticks(counted))


def test_a_long_title_does_not_push_the_plot_out_of_a_narrow_panel(qtbot):
    from PySide6.QtWidgets import QHBoxLayout

    from studio.widgets.common import plot_widget

    host = QWidget()
    row = QHBoxLayout(host)
    plot = plot_widget("A title far longer than the room a narrow panel gives it, " * 3, "records", "minutes")
    row.addWidget(plot)
    qtbot.addWidget(host)
    host.resize(360, 260)
    host.show()
    qtbot.waitUntil(lambda: plot.isVisible())
    qtbot.wait(50)
    item = plot.getPlotItem()
    # the plot (axes and data area) fits in the widget, so its right end is on screen
    assert item.geometry().width() <= plot.width() + 1, (item.geometry().width(), plot.width())
    assert "far longer" in item.titleLabel.toolTip()  # the whole title is still there to read


def _monitoring_panel(qtbot, tmp_path):  # noqa: ANN001, ANN202
    from studio.panels.base import StudioContext
    from studio.panels.monitoring.panel import MonitoringPanel

    p = MonitoringPanel(StudioContext(tmp_path, None, None))
    qtbot.addWidget(p)
    p.resize(900, 700)
    p.show()
    return p


def _data(times: list[float]) -> dict:
    minutes = sorted({t // 60 * 60 for t in times})
    return {"devices": ["edge-1"], "chosen": "edge-1", "checks": [], "proposals": [],
            "volume": {"edge-1": [(m, sum(1 for t in times if t // 60 * 60 == m)) for m in minutes]}}


def _bars(p) -> list[float]:  # noqa: ANN001
    import pyqtgraph as pg

    xs = []
    for it in p.volume.getPlotItem().items:
        if isinstance(it, pg.BarGraphItem):
            xs.extend(float(x) for x in it.opts["x"])
    return xs


def test_monitoring_volume_shows_the_newest_hour_when_nothing_came_in_the_last(qtbot, tmp_path):
    p = _monitoring_panel(qtbot, tmp_path)
    now = time.time()
    p.show_data(_data([now - 120, now - 60, now - 30]))
    assert p.volume.getAxis("bottom").labelText == "minutes from now (the last hour)"
    assert _bars(p) and all(-60 <= x <= 1 for x in _bars(p))
    old = now - 3 * 3600
    p.show_data(_data([old - 600, old - 60, old]))
    label = p.volume.getAxis("bottom").labelText
    assert "no records since" in label, label
    assert time.strftime("%H:%M", time.localtime(old // 60 * 60 + 60)) in label
    xs = _bars(p)
    assert len(xs) == 3 and all(-60 <= x <= 1 for x in xs), xs  # within the range the plot shows
    lo, hi = p.volume.getViewBox().viewRange()[0]
    assert lo <= min(xs) and max(xs) <= hi


def test_monitoring_says_no_verdict_when_the_last_check_had_too_few_records(qtbot, tmp_path):
    p = _monitoring_panel(qtbot, tmp_path)
    now = time.time()
    d = _data([now - 60])
    check = {"time": now, "device": "edge-1", "model": "m", "version": "1", "window": {"n": 3}, "drifted": False,
             "tests": []}
    p.show_data({**d, "checks": [check]})
    assert "No verdict on edge-1 (3 records)" in p.status_label.text()
    assert "No drift" not in p.status_label.text()
    assert p.alerts.item(0, 4).text() == "no verdict"
    tested = {**check, "window": {"n": 500}, "tests": [{"name": "confidence", "statistic": 0.1, "p_value": 0.5,
                                                        "threshold": 0.05, "drifted": False}]}
    p.show_data({**d, "checks": [check, tested]})
    assert p.status_label.text() == "No drift at the last checks."


def test_monitoring_says_what_came_of_a_drift_and_leaves_removed_devices_out(qtbot, tmp_path):
    """"Drift on cam1: press Retrain…" stood there after cam1 was removed, and after the proposal made from that very
    check had been labeled, its model approved and deployed."""
    p = _monitoring_panel(qtbot, tmp_path)
    now = time.time()
    drift = {"time": now, "device": "edge-1", "model": "m", "version": "1", "bundle_id": "b1",
             "window": {"n": 200, "to": now - 5}, "drifted": True,
             "tests": [{"name": "confidence", "statistic": 0.5, "p_value": 1e-9, "threshold": 0.05, "drifted": True}]}
    d = {**_data([now - 60]), "checks": [drift], "enrolled": ["edge-1"]}
    p.show_data(d)
    assert "edge-1: press Retrain…" in p.status_label.text() and p.retrain.isEnabled()
    # no drift and no proposal open: Retrain… is off, and says why (it ran deploy.maintain, which did nothing)
    p.show_data({**d, "checks": [{**drift, "drifted": False, "tests": [{**drift["tests"][0], "drifted": False}]}]})
    assert p.status_label.text() == "No drift at the last checks." and not p.retrain.isEnabled()
    assert p.retrain.toolTip().endswith("(no drift at the last checks, and no proposal open: nothing to retrain on)")
    done = {"id": "p1", "device": "edge-1", "model": "m", "version": "1", "bundle_id": "b1", "status": "done",
            "window": {"n": 200, "to": now - 5}, "note": "m:2 approved and deployed", "samples": 30, "unlabeled": 0}
    p.show_data({**d, "proposals": [done]})
    assert p.status_label.text() == ("Drift on edge-1 at its last check, with m:1: proposal p1 came of it, done: m:2 "
                                     "approved and deployed; Collect and check now checks what it serves now."), \
        p.status_label.text()
    # a proposal from an earlier drift is not this one's
    p.show_data({**d, "proposals": [{**done, "window": {"n": 200, "to": now - 900}}]})
    assert "edge-1: press Retrain…" in p.status_label.text()
    # the device removed since: no "press Retrain…" for it
    p.show_data({**d, "proposals": [], "enrolled": []})
    assert not p.retrain.isEnabled()
    assert p.status_label.text() == ("edge-1 drifted at its last check but is no longer enrolled: Collect and check now "
                                     "checks the devices enrolled now (the Monitor node stays red until then)."), \
        p.status_label.text()


def test_times_are_shown_in_the_users_time_zone(monkeypatch):
    from datetime import datetime

    from studio.widgets.common import local_time

    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")  # Zurich's rules, without needing tzdata
    time.tzset()
    try:
        assert local_time("2026-11-27T12:00:00") == "2026-11-27 13:00:00"  # the registry's naive times are UTC
        assert local_time("2026-11-27T12:00:00.250000+00:00", seconds=False) == "2026-11-27 13:00"
        assert local_time(datetime(2026, 7, 1, 12, 0)) == "2026-07-01 14:00:00"  # summer time
        assert local_time(0.0) == "1970-01-01 01:00:00"  # Unix times (scoring records, drift checks)
        assert local_time(None) == "" and local_time("") == ""
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_class_balance_legend_does_not_cover_the_bars(qtbot, tmp_path):
    """Ten balanced classes (Fashion-MNIST: 6000 train, 1000 test each): every bar reaches near the top, and the
    legend, in the top left, hid the first class's bars and they its names. It now takes one line in headroom
    left above the tallest bar, on an opaque box."""
    import pyqtgraph as pg

    from studio.panels.base import StudioContext
    from studio.panels.data.panel import DataPanel

    p = DataPanel(StudioContext(tmp_path, None, None))
    qtbot.addWidget(p)
    p.resize(700, 600)
    p.show()
    p.tabs.setCurrentIndex(2)
    classes = [f"class {k}" for k in range(10)]
    p._analysis({"versions": [{"split_classes": {"test": dict.fromkeys(classes, 1000),
                                                 "train": dict.fromkeys(classes, 6000)}}],
                 "hist": None, "samples": []})
    qtbot.waitUntil(lambda: p.balance_plot.isVisible())
    qtbot.wait(100)
    item = p.balance_plot.getPlotItem()
    legend = item.legend
    assert legend is not None and legend.columnCount == 2  # test and train side by side
    box = legend.mapRectToScene(legend.boundingRect())
    vb = item.getViewBox()
    bars = [it for it in item.items if isinstance(it, pg.BarGraphItem)]
    assert len(bars) == 2
    for bar in bars:
        for x, h in zip(bar.opts["x"], bar.opts["height"], strict=True):
            w = bar.opts["width"]
            top_left = vb.mapViewToScene(pg.QtCore.QPointF(x - w / 2, h))
            bottom_right = vb.mapViewToScene(pg.QtCore.QPointF(x + w / 2, 0))
            rect = pg.QtCore.QRectF(top_left, bottom_right).normalized()
            assert not rect.intersects(box), (x, h, rect, box)
    assert legend.zValue() > max(b.zValue() for b in bars)


def test_parameter_importance_says_why_it_is_empty(qtbot, tmp_path):
    """With fewer than three scored trials (a cancelled study, a small one) the importance plot was blank axes."""
    import pyqtgraph as pg

    from studio.panels.base import StudioContext
    from studio.panels.tuning.panel import TuningPanel

    p = TuningPanel(StudioContext(tmp_path, None, None))
    qtbot.addWidget(p)
    p.resize(1000, 700)
    p.show()
    p._ensure_plots()
    imp = p.plots["importance"]

    def notes() -> list[str]:
        return [it.textItem.toPlainText() for it in imp.getPlotItem().items if isinstance(it, pg.TextItem)]

    trial = {"value": 0.91, "state": "failed", "params": {"lr": 0.001, "hidden": 79}}
    p.trial_rows = [trial, {**trial, "state": "complete"}]
    p._draw_importance()
    assert notes() == ["needs 3 finished trials; this study has 1"]
    p.trial_rows = [{"value": 0.8 + k / 100, "state": "complete", "params": {"lr": k / 1000, "hidden": 80 - k}}
                    for k in range(4)]
    p._draw_importance()
    assert notes() == []
    assert any(isinstance(it, pg.BarGraphItem) for it in imp.getPlotItem().items)
    qtbot.wait(50)
    lo, hi = imp.getViewBox().viewRange()[0]
    assert lo <= 0 and hi >= 1.2, (lo, hi)  # both parameters' bars in view, not the note's 0..1


def test_drift_scores_put_every_test_on_one_scale_where_above_1_is_drift():
    from studio.panels.monitoring.panel import SCORE_FLOOR, drift_score

    def p_test(p: float) -> dict:
        return {"name": "confidence", "statistic": 0.5, "threshold": 0.025, "p_value": p}

    assert abs(drift_score(p_test(0.025)) - 1.0) < 1e-9  # at the threshold: 1
    assert drift_score(p_test(0.5)) < 1 < drift_score(p_test(0.01))
    strong, stronger = drift_score(p_test(4.7e-105)), drift_score(p_test(4.4e-130))
    assert 50 < strong < stronger < 100  # strong drift stays on the chart, and two strengths stay apart
    assert drift_score(p_test(0.0)) > stronger  # an underflowed p-value is the strongest, not an error
    assert drift_score(p_test(1.0)) == SCORE_FLOOR  # no evidence at all: the floor of the log axis
    psi = {"name": "psi:x", "statistic": 6.4, "threshold": 0.2, "p_value": None}
    assert abs(drift_score(psi) - 32.0) < 1e-9
    assert drift_score({**psi, "statistic": 0.0}) == SCORE_FLOOR


def test_drifted_tests_do_not_hide_behind_each_other(qtbot, tmp_path):
    """Four drifted tests of different strength: four different curves on the log axis, all inside the view."""
    import math

    import pyqtgraph as pg

    p = _monitoring_panel(qtbot, tmp_path)
    now = time.time()
    tests = [{"name": "predicted_class", "statistic": 514.4, "threshold": 0.025, "p_value": 4.7e-105, "drifted": True},
             {"name": "confidence", "statistic": 0.59, "threshold": 0.025, "p_value": 4.4e-130, "drifted": True},
             {"name": "psi:mean_intensity", "statistic": 6.44, "threshold": 0.2, "p_value": None, "drifted": True},
             {"name": "psi:intensity_histogram", "statistic": 2.40, "threshold": 0.2, "p_value": None, "drifted": True},
             {"name": "psi:std_intensity", "statistic": 0.0025, "threshold": 0.2, "p_value": None, "drifted": False}]
    checks = [{"time": now - 60 * (3 - i), "device": "edge-1", "model": "m", "version": "1", "window": {"n": 500},
               "drifted": True, "tests": tests} for i in range(3)]
    p.show_data({**_data([now - 60]), "checks": checks})
    curves = [it for it in p.tests_plot.getPlotItem().items if isinstance(it, pg.PlotDataItem)]
    last = {c.name(): float(c.yData[-1]) for c in curves}
    drifted = [last[t["name"]] for t in tests if t["drifted"]]
    assert len(set(drifted)) == 4 and min(drifted) > 1, last
    assert last["psi:std_intensity"] < 1
    qtbot.wait(100)  # the view ranges itself when it paints
    lo, hi = p.tests_plot.getViewBox().viewRange()[1]  # log10 coordinates on a log axis
    assert lo <= math.log10(min(last.values())) and math.log10(max(last.values())) <= hi
    line = next(it for it in p.tests_plot.getPlotItem().items if isinstance(it, pg.InfiniteLine))
    assert line.value() == 0.0  # the threshold, 1, at log10(1)



def _tuning_data(n: int) -> dict:
    states = ["complete", "pruned", "failed", "complete"]
    trials = [{"id": k, "number": k, "state": states[k % 4], "value": 0.8 + k / 100, "epochs": 3, "worker": "w",
               "retry_of": None, "params": {"lr": k / 1000},
               "metrics": [{"epoch": e, "val_accuracy": 0.7 + k / 100 + e / 50} for e in range(1, 4)]}
              for k in range(n)]
    return {"experiments": [(1, "tune-1 (tune, torch, bbc-net, done)")], "chosen": 1, "trials": trials}


def test_selected_trials_stand_out_in_the_learning_curves(qtbot, tmp_path):
    """Twelve learning curves in twelve colours with nothing saying which trial each is: selecting trials in the
    table now draws their curves bold and the others faint, and each trial number has its curve's colour."""
    from studio.panels.base import StudioContext
    from studio.panels.tuning.panel import TuningPanel

    p = TuningPanel(StudioContext(tmp_path, None, None))
    qtbot.addWidget(p)
    p.resize(1000, 800)
    p.show()
    p.show_data(_tuning_data(12))
    qtbot.waitUntil(lambda: len(p.curve_items) == 12 and p.trials.rowCount() == 12, timeout=5000)

    def alpha_width(num: int) -> tuple[int, float]:
        pen = p.curve_items[num].opts["pen"]
        return pen.color().alpha(), pen.widthF()

    assert {alpha_width(k) for k in range(12)} == {(255, 1.5)}  # nothing selected: all alike
    assert p.trials.item(5, 0).foreground().color().name() == p.curve_items[5].opts["pen"].color().name()
    p.trials.selectRow(5)
    assert alpha_width(5) == (255, 3.0) and p.curve_items[5].zValue() > p.curve_items[4].zValue()
    assert all(alpha_width(k)[0] < 100 for k in range(12) if k != 5)
    p._fill_table()  # a live refill keeps the selection
    assert p._selected_trials() == {5}
    p.trials.clearSelection()
    assert {alpha_width(k) for k in range(12)} == {(255, 1.5)}


def test_the_optimization_history_names_its_colours_and_keeps_points_clear_of_the_legend(qtbot, tmp_path):
    import pyqtgraph as pg

    from studio.panels.base import StudioContext
    from studio.panels.tuning.panel import TuningPanel

    p = TuningPanel(StudioContext(tmp_path, None, None))
    qtbot.addWidget(p)
    p.show()
    p.show_data(_tuning_data(4))
    qtbot.waitUntil(lambda: len(p.curve_items) == 4, timeout=5000)
    h = p.plots["history"].getPlotItem()
    assert [label.text for _, label in h.legend.items] == ["complete", "pruned", "failed"]
    scatter = [it for it in h.items if isinstance(it, pg.ScatterPlotItem)]
    top = max(float(y) for it in scatter for y in it.data["y"])
    lo, hi = p.plots["history"].getViewBox().viewRange()[1]
    assert hi > top + 0.3 * (top - 0.8)  # a band above the highest point, where the legend sits


@pytest.mark.parametrize("size", [(1100, 720), (1000, 800), (900, 560)])
def test_no_point_of_the_optimization_history_is_under_its_legend(qtbot, tmp_path, size):
    """In the studio's window (the panel about 1100 by 720 pixels) the legend covered the best trial's point: the
    band kept for it was a share of the height (a quarter), and the legend is some 45 pixels tall whatever the
    plot's height. Checked in pixels: no point's disc meets the legend's box; the best of a maximized metric is at
    the top, where the legend is, in every study."""
    import pyqtgraph as pg

    from studio.panels.base import StudioContext
    from studio.panels.tuning.panel import TuningPanel

    p = TuningPanel(StudioContext(tmp_path, None, None))
    qtbot.addWidget(p)
    p.resize(*size)
    p.show()
    data = _tuning_data(8)
    for t, v in zip(data["trials"], [0.758, 0.482, 0.78, 0.64, 0.638, 0.80, 0.65, 0.58], strict=True):
        t["value"], t["state"] = v, "complete" if v >= 0.75 else "pruned"
    p.show_data(data)
    qtbot.waitUntil(lambda: len(p.curve_items) == 8, timeout=5000)
    qtbot.wait(50)
    item = p.plots["history"].getPlotItem()
    box = item.legend.mapRectToScene(item.legend.boundingRect())
    vb = item.getViewBox()
    points = [(float(x), float(y)) for it in item.items if isinstance(it, pg.ScatterPlotItem)
              for x, y in zip(it.data["x"], it.data["y"], strict=True)]
    assert len(points) == 8
    for x, y in points:
        c = vb.mapViewToScene(pg.QtCore.QPointF(x, y))
        disc = pg.QtCore.QRectF(c.x() - 5, c.y() - 5, 10, 10)
        assert not disc.intersects(box), (x, y, disc, box, vb.sceneBoundingRect())


def test_empty_monitoring_plots_say_why(qtbot, tmp_path):
    """Before any record or verdict, the volume and drift plots were blank axes (the drift plot's log axis with odd
    ticks): each now says why it is empty, and plots as before once there is something."""
    import pyqtgraph as pg

    p = _monitoring_panel(qtbot, tmp_path)

    def notes(plot) -> list[str]:  # noqa: ANN001
        return [it.textItem.toPlainText() for it in plot.getPlotItem().items if isinstance(it, pg.TextItem)]

    p.show_data({"devices": [], "chosen": None, "checks": [], "proposals": [], "volume": {}})
    assert notes(p.volume) == ["no devices enrolled"] and notes(p.tests_plot) == ["no devices enrolled"]
    p.show_data({**_data([]), "volume": {"edge-1": []}})
    assert notes(p.volume) == ["no scoring records collected yet"]
    assert notes(p.tests_plot) == ["no check on edge-1 yet"]
    now = time.time()
    few = {"time": now, "device": "edge-1", "model": "m", "version": "1", "window": {"n": 3}, "drifted": False,
           "tests": []}
    p.show_data({**_data([now - 60]), "checks": [few]})
    assert notes(p.volume) == [] and _bars(p)
    assert notes(p.tests_plot)[0].startswith("no scores on edge-1 yet: its checks had too few")
    tested = {**few, "window": {"n": 500}, "tests": [{"name": "confidence", "statistic": 0.1, "p_value": 0.5,
                                                      "threshold": 0.05, "drifted": False}]}
    p.show_data({**_data([now - 60]), "checks": [few, tested, tested, tested]})
    assert notes(p.tests_plot) == []
    curves = [it for it in p.tests_plot.getPlotItem().items if isinstance(it, pg.PlotDataItem)]
    assert len(curves) == 1
    qtbot.wait(50)
    lo, hi = p.tests_plot.getViewBox().viewRange()[0]
    assert lo <= 1 and hi >= 3, (lo, hi)  # the x range follows the three checks again, not the note's 0..1


def test_each_drift_test_after_the_first_check_is_a_point_in_its_own_colour(qtbot, tmp_path):
    """After the first check each test is one point, with no line to colour: the points were all pyqtgraph's
    default grey-blue, and which test was which could not be told from the legend."""
    import pyqtgraph as pg

    from studio.widgets.common import PALETTE

    p = _monitoring_panel(qtbot, tmp_path)
    now = time.time()
    tests = [{"name": n, "statistic": s, "p_value": pv, "threshold": th, "drifted": s > th}
             for n, s, pv, th in (("predicted_class", 860.0, 1e-179, 0.025), ("confidence", 0.07, 0.043, 0.025),
                                  ("psi:mean_intensity", 1.05, None, 0.2))]
    check = {"time": now, "device": "edge-1", "model": "m", "version": "1", "window": {"n": 500}, "drifted": True,
             "tests": tests}
    p.show_data({**_data([now - 60]), "checks": [check]})
    curves = [it for it in p.tests_plot.getPlotItem().items if isinstance(it, pg.PlotDataItem)]
    brushes = [pg.mkBrush(c.opts["symbolBrush"]).color().name() for c in curves]
    assert brushes == [pg.mkColor(c).name() for c in PALETTE[:3]], brushes


def test_monitoring_lists_an_enrolled_device_before_its_first_records(qtbot, tmp_path):
    """The device list came from the scoring table alone: a device enrolled and serving, before its first records
    were collected, read "no devices enrolled" on both plots, and the Device list was empty."""
    import pyqtgraph as pg

    from runtime.api import init_workspace
    from runtime.devices import enroll
    from studio.panels.base import StudioContext
    from studio.panels.monitoring.panel import MonitoringPanel

    ws = init_workspace(tmp_path / "ws", "text-classification")
    p = MonitoringPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    p.resize(900, 700)
    p.show()

    def notes(plot) -> list[str]:  # noqa: ANN001
        return [it.textItem.toPlainText() for it in plot.getPlotItem().items if isinstance(it, pg.TextItem)]

    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.refresh()
    assert p.device.count() == 0
    assert notes(p.volume) == ["no devices enrolled"]
    assert p.status_label.text().startswith("No devices enrolled: enroll one")
    enroll(ws, "pi1", "127.0.0.1:50911", tmp_path / "pi1")
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p.refresh()
    assert [p.device.itemText(i) for i in range(p.device.count())] == ["pi1"]
    assert notes(p.volume) == ["no scoring records collected yet"]
    assert notes(p.tests_plot) == ["no check on pi1 yet"]
    assert p.status_label.text() == "No scoring data yet: send requests to pi1, then press Collect and check now."


def test_a_trial_another_process_runs_shows_its_best_so_far_and_empty_plots_say_why(qtbot, tmp_path):
    """Tuning run outside the studio (`cdl run`, a tuning worker): a running trial's val_accuracy read blank until
    it ended, its curve already drawn, and the optimization history and parallel coordinates were blank axes
    beside the importance plot's "needs 3 finished trials"."""
    import pyqtgraph as pg

    from runtime.api import init_workspace
    from studio.panels.base import StudioContext
    from studio.panels.tuning.panel import TuningPanel

    ws = init_workspace(tmp_path / "ws", "text-classification")
    exp = ws.store.create_experiment(kind="tune", step="model.tune", job=None, dataset_version="v1", transform="t",
                                     framework="torch", template="bbc-net", git_commit=None, git_dirty=False)
    trial = ws.store.create_trial(exp.id, 0, {"lr": 0.001, "hidden": 64}, worker="vm:1")
    p = TuningPanel(StudioContext(ws.root, ws, None))
    qtbot.addWidget(p)
    p.resize(1000, 800)
    p.show()

    def notes(name: str) -> list[str]:
        return [it.textItem.toPlainText() for it in p.plots[name].getPlotItem().items if isinstance(it, pg.TextItem)]

    def load() -> None:
        before = getattr(p, "_draw_gen", 0)
        with qtbot.waitSignal(p.sig_loaded, timeout=30000):
            p.refresh()
        # the plots are drawn one per turn of the event loop: wait for this load's last (a fixed 50 ms wait lost
        # the race on a loaded machine, the parallel plot still saying the load before's note)
        qtbot.waitUntil(lambda: p.trials.rowCount() == 1 and getattr(p, "_draw_gen", 0) > before
                        and getattr(p, "_drawn_gen", None) == p._draw_gen, timeout=10000)

    load()
    assert p.trials.item(0, 2).text() == ""
    for name in ("history", "curves", "parallel"):
        assert notes(name) == ["no epoch finished yet (trial 0 running)"], (name, notes(name))
    ws.store.log_metrics(trial.id, 1, {"val_accuracy": 0.9, "train_accuracy": 0.8})
    ws.store.log_metrics(trial.id, 2, {"val_accuracy": 0.88, "train_accuracy": 0.85})
    load()
    assert p.trials.item(0, 1).text() == "running" and p.trials.item(0, 2).text() == "0.9"  # its best so far
    assert notes("history") == [] and notes("curves") == []
    scatter = [it for it in p.plots["history"].getPlotItem().items if isinstance(it, pg.ScatterPlotItem)]
    assert [float(y) for it in scatter for y in it.data["y"]] == [0.9]
    lo, hi = p.plots["curves"].getViewBox().viewRange()[1]
    assert lo <= 0.8 and hi >= 0.9 and hi < 5, (lo, hi)  # ranged on the curves again, not the note's 0..1
    assert notes("parallel")[0].startswith("one trial with a score")


def test_parameter_importance_gives_a_parameter_no_trial_changed_no_share():
    """Ranks told equal values apart by the trials' order: batch_size 32 in every trial got a fifth of the
    importance in a three-trial study, and a categorical parameter's share was made up by the order."""
    from studio.panels.tuning.panel import importances

    def trials(rows: list[tuple[float, dict]]) -> list[dict]:
        return [{"number": k, "state": "complete", "value": v, "params": p} for k, (v, p) in enumerate(rows)]

    share = importances(trials([(0.903, {"lr": 0.0007, "batch_size": 32}), (0.884, {"lr": 0.0003, "batch_size": 32}),
                                (0.885, {"lr": 0.002, "batch_size": 32})]))
    assert share["batch_size"] == 0.0 and share["lr"] == 1.0, share
    # ties: a parameter that splits the trials as their scores do is all of it, whatever their order in the list
    rows = [(0.70, {"batch_size": 128, "lr": 0.001}), (0.90, {"batch_size": 32, "lr": 0.001}),
            (0.71, {"batch_size": 128, "lr": 0.001}), (0.91, {"batch_size": 32, "lr": 0.001})]
    assert importances(trials(rows)) == {"batch_size": 1.0, "lr": 0.0}
    assert importances(trials(rows[::-1])) == {"batch_size": 1.0, "lr": 0.0}


def test_the_class_balance_follows_the_models_class_order(qtbot, tmp_path):
    """Fashion-MNIST's classes were drawn alphabetically, Ankle boot first, where the labeling keys, `data diff` and
    the model's output have T-shirt/top first; and test before train."""
    from runtime.steps.sources import CLASS_NAME_PRESETS
    from studio.panels.base import StudioContext
    from studio.panels.data.panel import DataPanel

    p = DataPanel(StudioContext(tmp_path, None, None))
    qtbot.addWidget(p)
    p.show()
    p.tabs.setCurrentIndex(2)
    fm = CLASS_NAME_PRESETS["fashion-mnist"]
    p._analysis({"versions": [{"split_classes": {"test": dict.fromkeys(fm, 1000), "train": dict.fromkeys(fm, 6000)}}],
                 "hist": None, "samples": [], "order": fm})
    ticks = [t.strip() for _, t in p.balance_plot.getAxis("bottom")._tickLevels[0]]
    assert ticks == [c[:14] for c in fm], ticks
    assert [label.text for _, label in p.balance_plot.getPlotItem().legend.items] == ["train", "test"]
    # the checked-out version's counts, not the newest one's, after `cdl data checkout v1`
    p._analysis({"versions": [{"id": "v1", "checked_out": True, "split_classes": {"train": {"Bag": 5}}},
                              {"id": "v2", "checked_out": False, "split_classes": {"train": {"Bag": 5, "Coat": 3}}}],
                 "hist": None, "samples": [], "order": fm})
    assert [t.strip() for _, t in p.balance_plot.getAxis("bottom")._tickLevels[0]] == ["Bag"]


def _tuning_panel(qtbot, tmp_path, width: int, height: int):  # noqa: ANN001, ANN202
    """A tuning dashboard of width x height showing a study of twelve trials, its parallel coordinates drawn."""
    from studio.panels.base import StudioContext
    from studio.panels.tuning.panel import TuningPanel

    p = TuningPanel(StudioContext(tmp_path, None, None))
    qtbot.addWidget(p)
    p.resize(width, height)
    p.show()
    p.show_data(_tuning_data(12))
    parallel = lambda: p.plots.get("parallel")  # noqa: E731
    qtbot.waitUntil(lambda: parallel() is not None and "&#9632;" in parallel().getPlotItem().titleLabel.text,
                    timeout=5000)
    return p


def test_the_tuning_plots_stand_two_to_a_row_in_a_laptops_panel(qtbot, tmp_path):
    """The parallel coordinates' title with its colour key in one line asked 400 pixels: at 1366 x 768 (a panel 840
    wide) the four plots stood one under another and the panel scrolled 600 pixels. The key has a line of its own."""
    p = _tuning_panel(qtbot, tmp_path, 840, 600)
    qtbot.wait(50)
    assert p.grid.columns == 2, (p.grid.width(), p.grid.column_width())
    for plot in p.plots.values():
        if plot.isVisible():
            title = plot.getPlotItem().titleLabel
            assert title.item.boundingRect().width() <= plot.width(), (title.text, plot.width())


def test_a_hidden_cell_of_a_grid_takes_neither_a_place_nor_a_columns_width(qtbot):
    """The tuning dashboard hides the tuning plots while it shows a training experiment: the hidden plots' titles still
    set the columns' width (two plots that fitted side by side stood one under another), and a hidden cell between
    two kept its place (a hole in the grid)."""
    from PySide6.QtCore import QSize
    from PySide6.QtWidgets import QLabel, QVBoxLayout

    from studio.widgets.flow import ReflowGrid

    class Cell(QLabel):
        def __init__(self, text: str, width: int):
            super().__init__(text)
            self.asks = width

        def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
            return QSize(self.asks, 40)

    host = QWidget()
    qtbot.addWidget(host)
    grid = ReflowGrid(2)
    QVBoxLayout(host).addWidget(grid)
    a, wide, c = Cell("a", 100), Cell("wide", 500), Cell("c", 100)
    for w in (a, wide, c):
        grid.add(w)
    wide.hide()
    host.resize(320, 200)
    host.show()
    qtbot.waitUntil(lambda: grid.columns == 2 and c.geometry().top() == a.geometry().top() and c.x() > a.x(),
                    timeout=3000)
    wide.show()  # shown again: it needs a column of its own, and the cells stand one under another, in order
    qtbot.waitUntil(lambda: grid.columns == 1 and a.y() < wide.y() < c.y(), timeout=3000)
    wide.hide()
    qtbot.waitUntil(lambda: grid.columns == 2 and c.geometry().top() == a.geometry().top(), timeout=3000)


def test_the_parallel_coordinates_values_stay_inside_their_plot(qtbot, tmp_path):
    """Each axis' lowest and highest value tried, written under 0 and over 1: a fixed tenth of the range above and
    below left them cut in half under the title in a plot 130 pixels tall (1366 x 768). The room is in pixels."""
    from pyqtgraph import TextItem

    p = _tuning_panel(qtbot, tmp_path, 840, 560)
    for height in (560, 900):
        p.resize(840, height)
        qtbot.wait(100)
        box = p.plots["parallel"].getViewBox()
        inside = box.sceneBoundingRect()
        labels = [i for i in box.addedItems if isinstance(i, TextItem)]
        assert len(labels) == 2 * len(p.parallel_axes) > 0
        for label in labels:
            rect = label.sceneBoundingRect()
            assert inside.top() - 1 <= rect.top() and rect.bottom() <= inside.bottom() + 1, (
                height, box.height(), label.toPlainText(), rect, inside)
