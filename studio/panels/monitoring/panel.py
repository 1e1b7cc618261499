"""Monitoring: scoring volume, drift tests over time, alerts, and "retrain", which opens the proposal."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from studio.panels.base import Panel
from studio.widgets.common import (
    PALETTE,
    Table,
    add_legend,
    local_time,
    plot_note,
    plot_widget,
    room_for_legend,
)
from studio.widgets.flow import PlotGrid, flow_row


class MonitoringPanel(Panel):
    panel_id = "monitoring"
    title = "Monitoring"
    steps = ("deploy.monitor",)
    sig_open_proposal = Signal(str)

    def build(self) -> None:
        pick = QWidget()  # the label stays beside its box where the row wraps
        row = QHBoxLayout(pick)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Device"))
        self.device = QComboBox()
        self.device.setMinimumWidth(140)
        self.device.activated.connect(lambda _: self.refresh())
        row.addWidget(self.device)
        check = QPushButton("Collect and check now")
        check.clicked.connect(lambda: self.sig_run.emit(["deploy.monitor"], None, None))
        self.retrain = QPushButton("Retrain…")
        self.retrain.setToolTip("make a retrain proposal from the drifted window and open it in the labeling queue")
        self.retrain.clicked.connect(self._retrain)
        self._retrain_tip = self.retrain.toolTip()
        # a false alarm: without it an open proposal held `cdl loop` until every sample was labeled
        self.dismiss_btn = QPushButton("Dismiss proposal…")
        self.dismiss_btn.setToolTip("end the selected open proposal (else the newest): its unlabeled samples leave "
                                    "the labeling queue and are not proposed again; those labeled stay")
        self.dismiss_btn.clicked.connect(lambda: self._dismiss())  # not clicked(checked) as the note
        # wrapping onto a second line where the panel is narrow (one line was 604 pixels: wider than the panel
        # beside the flowchart at 1024)
        self.add(flow_row(pick, check, self.retrain, self.dismiss_btn))
        self.grid = PlotGrid(min_column_width=400)  # the drift tests' legend: two columns of names
        self.add(self.grid, 2)
        self.volume = None
        self.tests_plot = None
        self.add(QLabel("Checks (newest first); drifted tests in red"))
        self.alerts = Table(["when", "device", "model", "records", "verdict", "drifted tests"])
        self.add(self.alerts, 1)
        self.proposals = Table(["proposal", "status", "device", "model", "to label", "samples"])
        self.proposals.setMaximumHeight(110)
        self.add(self.proposals)

    def load(self) -> dict[str, Any]:
        from runtime.devices import scoring_store
        from runtime.proposals import proposals

        ws = self.ctx.workspace
        # the enrolled devices, and those a removed device left scoring data of: only the latter were listed, so
        # that a device enrolled and serving, before its first records were collected, read "no devices enrolled"
        enrolled = [dev.name for dev in ws.store.devices()]
        path = ws.root / ".cdl" / "scoring.duckdb"
        if not path.exists():
            return {"devices": enrolled, "checks": [], "volume": {dev: [] for dev in enrolled}, "proposals": proposals(ws)}
        store = scoring_store(ws)
        scored = [r[0] for r in store.query("SELECT DISTINCT device FROM scoring ORDER BY device")]
        devices = sorted(set(enrolled) | set(scored))
        volume = {}
        for dev in devices:
            rows = store.query("SELECT CAST(floor(time / 60) * 60 AS DOUBLE) AS t, COUNT(*) FROM scoring WHERE device = ? "
                               "GROUP BY t ORDER BY t", [dev]) if dev in scored else []
            volume[dev] = rows
        checks = store.checks()
        return {"devices": devices, "checks": checks, "volume": volume, "enrolled": enrolled,
                "proposals": proposals(ws), "unproposed": _unproposed(ws), "unknown": _unknown(checks)}

    def show_data(self, d: dict[str, Any]) -> None:
        import pyqtgraph as pg

        self.device.blockSignals(True)
        current = self.device.currentText()
        self.device.clear()
        self.device.addItems(d["devices"])
        if current in d["devices"]:
            self.device.setCurrentText(current)
        self.device.blockSignals(False)
        if self.volume is None:
            self.volume = plot_widget("Scoring volume (records per minute)", "records", "minutes from now")
            self.tests_plot = plot_widget("Drift tests (score; above 1 is drift)", "drift score (log scale)", "check",
                                          whole_x=True)
            self.tests_plot.setLogMode(y=True)
            self.tests_plot.setToolTip("PSI tests: PSI / threshold. Tests with a p-value: log(p) / log(threshold), "
                                       "so a p-value at the threshold scores 1 and one a million times smaller "
                                       "scores far above it, not off the chart.")
            self.grid.add(self.volume)
            self.grid.add(self.tests_plot)
        self.volume.clear()
        now = time.time()
        newest = max((r[0] for rows in d["volume"].values() for r in rows), default=None)
        if newest is None or newest >= now - 3600:
            end = now
            self.volume.setLabel("bottom", "minutes from now (the last hour)")
        else:  # nothing in the last hour: show the last hour that had records, and say so
            end = newest + 60
            fmt = "%H:%M" if time.localtime(end)[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M"
            self.volume.setLabel("bottom", f"minutes before {time.strftime(fmt, time.localtime(end))} (no records since)")
        for k, (dev, rows) in enumerate(d["volume"].items()):
            if rows:
                xs = [(r[0] - end) / 60 for r in rows]
                self.volume.addItem(pg.BarGraphItem(x=xs, height=[r[1] for r in rows], width=0.8,
                                                    brush=PALETTE[k % len(PALETTE)], name=dev))
        if any(d["volume"].values()):
            self.volume.setXRange(-60, 1)
            self.volume.enableAutoRange(axis="y")  # a note before set it
        else:  # empty axes said nothing
            plot_note(self.volume, "no scoring records collected yet" if d["devices"] else "no devices enrolled")
        self.tests_plot.clear()
        device = self.device.currentText()
        checks = [c for c in d["checks"] if c["device"] == device and c["tests"]]
        if not checks:  # empty log axes said nothing: why there is no score to plot
            if not device:
                why = "no devices enrolled"
            elif any(c["device"] == device for c in d["checks"]):
                why = f"no scores on {device} yet: its checks had too few\nrecords for a verdict (deploy.monitor's min_records)"
            else:
                why = f"no check on {device} yet"
            plot_note(self.tests_plot, why)
        else:
            self.tests_plot.enableAutoRange(axis="x")
            names = [t["name"] for t in checks[-1]["tests"]]
            add_legend(self.tests_plot, columns=2 if len(names) > 2 else 1)
            decades = [0.0]  # log10 of every score, and of the threshold (1)
            for k, name in enumerate(names):
                ys = []
                for c in checks:
                    t = next((t for t in c["tests"] if t["name"] == name), None)
                    ys.append(np.nan if t is None else drift_score(t))
                decades += [float(np.log10(y)) for y in ys if np.isfinite(y)]
                # markers in the test's colour: after the first check each test is one point, no line, and the
                # points were all pyqtgraph's grey-blue, so which was which could not be told
                color = PALETTE[k % len(PALETTE)]
                self.tests_plot.plot(list(range(1, len(ys) + 1)), ys, pen=pg.mkPen(color, width=2),
                                     symbol="o", symbolSize=7, symbolBrush=color, symbolPen=color, name=name)
            self.tests_plot.addLine(y=0.0, pen=pg.mkPen("#dc2626", style=pg.QtCore.Qt.PenStyle.DashLine))
            # room above the curves for the legend (two names a row), so that it covers none of them
            room_for_legend(self.tests_plot, min(decades) - 0.2, max(decades) + 0.2,
                            (len(names) + 1) // 2 if len(names) > 2 else len(names))
        rows, colors = [], {}
        for i, c in enumerate(reversed(d["checks"][-200:])):
            bad = [t["name"] for t in c["tests"] if t["drifted"]]
            verdict = "DRIFT" if c["drifted"] else ("no verdict" if not c["tests"] else "ok")
            rows.append((local_time(c["time"]), c["device"],
                         f"{c['model']}:{c['version']}", c["window"]["n"], verdict, ", ".join(bad)))
            if c["drifted"]:
                colors[(i, 4)] = "#dc2626"
                colors[(i, 5)] = "#dc2626"
        self.alerts.fill(rows, colors)
        self.proposals.fill([(p["id"], p["status"], p["device"], f"{p['model']}:{p['version']}", p["unlabeled"],
                              p["samples"]) for p in d["proposals"]], data=[p["id"] for p in d["proposals"]])
        self._open_ids = [p["id"] for p in d["proposals"] if p["status"] == "open"]
        self.dismiss_btn.setEnabled(bool(self._open_ids))
        latest = {}
        for c in d["checks"]:
            latest[c["device"]] = c
        drifted = [dev for dev, c in latest.items() if c["drifted"]]
        # a device removed since its last check drifted: said as such, not "press Retrain…" for a device that is gone
        enrolled = d.get("enrolled", d["devices"])
        removed = [dev for dev in drifted if dev not in enrolled]
        drifted = [dev for dev in drifted if dev in enrolled]
        gone = (f" {', '.join(removed)} drifted at {'its' if len(removed) == 1 else 'their'} last check but "
                f"{'is' if len(removed) == 1 else 'are'} no longer enrolled: Collect and check now checks the "
                "devices enrolled now (the Monitor node stays red until then).") if removed else ""
        # a check with too few records has no tests: that is no verdict, not a clean bill of health
        waiting = [f"{dev} ({c['window']['n']} records)" for dev, c in latest.items() if not c["tests"]]
        no_verdict = (f" No verdict on {', '.join(waiting)}: too few records in the window (deploy.monitor's "
                      "min_records).") if waiting else ""
        unknown = "".join(f" {line}" for line in d.get("unknown", {}).values())
        why_not = [d.get("unproposed", {}).get(dev) for dev in drifted]
        # Retrain… on only where it has something to do: a drifted device's window, or an open proposal to label
        # (it ran deploy.maintain after "No drift at the last checks.", which proposed nothing without a word)
        can = bool(drifted or self._open_ids)
        self.retrain.setEnabled(can)
        self.retrain.setToolTip(self._retrain_tip + ("" if can else " (no drift at the last checks, and no proposal "
                                                     "open: nothing to retrain on)"))
        said = self.__dict__.pop("_done_note", None)
        if said:  # what an action (Dismiss proposal…) did, once, over the reload after it
            self.say(said, "ok")
        elif drifted and all(why_not):  # Retrain… found nothing to propose: saying "press Retrain…" again sent people round
            self.say(" ".join(f"{w}." for w in why_not) + no_verdict + unknown + gone, "error")
        elif drifted:
            self.say(f"Drift on {self._next_for(drifted, d['proposals'], latest)}.{no_verdict}{unknown}{gone}",
                     "error")
        elif removed:
            self.say(gone.strip() + no_verdict + unknown, "warning")
        elif not d["devices"]:
            self.say("No devices enrolled: enroll one and push a model to it in the devices panel, then send it "
                     "requests.")
        elif not any(d["volume"].values()) and not d["checks"]:
            names = ", ".join(d["devices"])
            self.say(f"No scoring data yet: send requests to {names}, then press Collect and check now.")
        elif waiting and len(waiting) == len(latest):
            self.say(no_verdict.strip() + unknown, "warning" if unknown else "info")
        elif latest:
            self.say(f"No drift at the last checks.{no_verdict}{unknown}", "warning" if unknown else "ok")
        else:
            self.say("No checks yet: press Collect and check now.")

    @staticmethod
    def _next_for(drifted: list[str], props: list[dict[str, Any]], latest: dict[str, dict[str, Any]] | None = None
                  ) -> str:
        """What comes next for the drifted devices: their open proposal's labeling, or its training, or Retrain…
        ("press Retrain…" stood there while the proposal's samples waited labeled, or unlabeled, in the table);
        where a proposal made from that very check has ended, what came of it (it said "press Retrain…" after the
        proposal's model was approved and deployed)."""
        from runtime.proposals import LABELED_NEXT

        mine = {p["device"]: p for p in props if p["status"] == "open"}
        ended = {}
        for dev in drifted:
            c = (latest or {}).get(dev) or {}
            made = [p for p in props if p["device"] == dev and p["status"] != "open" and p.get("bundle_id")
                    == c.get("bundle_id") and (p.get("window") or {}).get("to") == (c.get("window") or {}).get("to")]
            if made and dev not in mine:
                ended[dev] = made[-1]
        fresh = [dev for dev in drifted if dev not in mine and dev not in ended]
        parts = [f"{', '.join(fresh)}: press Retrain… to put the least confident samples into the labeling queue"] \
            if fresh else []
        for dev in drifted:
            p = mine.get(dev)
            if p is not None and p["unlabeled"]:
                parts.append(f"{dev}: proposal {p['id']} has {p['unlabeled']} of {p['samples']} sample(s) to label "
                             "(Retrain… opens them in the labeling panel)")
            elif p is not None:
                parts.append(f"{dev}: proposal {p['id']}'s {p['samples']} sample(s) are labeled; {LABELED_NEXT}")
            elif (e := ended.get(dev)) is not None:
                how = f"{e['status']}" + (f": {e['note']}" if e.get("note") else "")
                parts.append(f"{dev} at its last check, with {e['model']}:{e['version']}: proposal {e['id']} came of "
                             f"it, {how}; Collect and check now checks what it serves now")
        return "; ".join(parts)

    def _retrain(self) -> None:
        from runtime.proposals import open_proposal

        def after(p: dict[str, Any] | None) -> None:
            if p is None:
                self.sig_run.emit(["deploy.maintain"], None, None)
                self.say("making a retrain proposal (deploy.maintain)…")
            else:
                self.sig_open_proposal.emit(p["id"])

        self.work(open_proposal, self.ctx.workspace, done=after)


    def _dismiss(self, note: str | None = None) -> None:
        from runtime.proposals import dismiss

        chosen = [pid for pid in self.proposals.selected_data() if pid in getattr(self, "_open_ids", [])]
        pid = chosen[0] if chosen else (self._open_ids[-1] if getattr(self, "_open_ids", []) else None)
        if pid is None:
            self.say("No open proposal to dismiss.", "warning")
            return
        if note is None:
            from PySide6.QtWidgets import QInputDialog

            note, ok = QInputDialog.getText(self, f"Dismiss proposal {pid}", f"Why dismiss {pid} (a false alarm, "
                                            "samples not worth labeling)? Its unlabeled samples leave the labeling "
                                            "queue; those labeled stay.")
            if not ok:
                return

        def after(r: dict[str, Any]) -> None:
            self._done_note = (f"{r['id']} dismissed: {r['removed']} unlabeled sample(s) left the labeling queue, "
                               f"{r['kept']} labeled kept; they are not proposed again (new scoring data is).")

        self.work(dismiss, self.ctx.workspace, pid, note.strip(), done=after)


def _unknown(checks: list[dict[str, Any]]) -> dict[str, str]:
    """{device: "12 of 31 text(s) had no word the model knows (39 %): ..."} of each device's last check: an empty
    text is answered with a confidence like any other, and no drift test says so."""
    from runtime.monitor import unknown_line

    latest = {c["device"]: c for c in checks}
    return {dev: f"{dev}: {unknown_line(c)}." for dev, c in latest.items() if unknown_line(c)}


def _unproposed(ws: Any) -> dict[str, str]:  # noqa: ANN401
    """Devices deploy.maintain made no proposal for after the newest drift check, and why (their window's samples
    were labeled for an earlier proposal, or the device kept no raw input)."""
    mt = ws.store.last_step_run("deploy.maintain")
    mon = ws.store.last_step_run("deploy.monitor")
    if mt is None or mt.status != "done" or (mon is not None and mon.started > mt.started):
        return {}
    return {u["device"]: u["reason"] for u in (mt.summary or {}).get("unproposed", [])}


SCORE_FLOOR = 1e-3  # a log axis has no 0: a test with no drift at all sits here


def drift_score(test: dict[str, Any]) -> float:
    """One scale for every drift test, where above 1 is drift: PSI / threshold for PSI tests, and
    log(p) / log(threshold) for tests with a p-value. The p-value ratio stays readable on strong drift: p = 1e-105
    and p = 1e-130 at a threshold of 0.025 score 65 and 81, where threshold / p would be 1e103 and 1e128 and every
    drifted test would sit on the same capped line."""
    if test.get("p_value") is not None:
        p = min(1.0, max(float(test["p_value"]), 1e-300))  # p == 0.0 is an underflow: as small as a float goes
        alpha = float(test["threshold"])
        return max(SCORE_FLOOR, float(np.log(p) / np.log(alpha))) if 0 < alpha < 1 else SCORE_FLOOR
    return max(SCORE_FLOOR, float(test["statistic"]) / float(test["threshold"]))
