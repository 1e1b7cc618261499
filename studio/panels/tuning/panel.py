"""The tuning dashboard: trials, optimization history, learning curves, parallel coordinates and parameter
importances; live while a study (or a training run) streams per-epoch metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QItemSelectionModel, QTimer
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from studio.panels.base import Panel
from studio.widgets.common import PALETTE, Table, add_legend, plot_note, plot_widget, room_for_legend
from studio.widgets.flow import PlotGrid

MIN_TRIALS_FOR_IMPORTANCE = 3
STATE_COLORS = {"complete": "#16a34a", "pruned": "#f59e0b", "failed": "#6b7280", "cancelled": "#9ca3af",
                "running": "#1d4ed8"}


def _no_score(trials: list[dict[str, Any]]) -> str:
    """Why a plot of scores is empty: no trial yet, or none has finished an epoch."""
    if not trials:
        return "no trials yet"
    running = [t["number"] for t in trials if t["state"] == "running"]
    if running:
        return f"no epoch finished yet (trial {running[0]} running)"
    return "no trial has a score"


def _scored(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials that reached a value: complete, or pruned by ASHA after some epochs."""
    return [t for t in trials if t["value"] is not None and t["state"] in ("complete", "pruned")]


def _ranks(xs: list[float]) -> np.ndarray:
    """Ranks with ties given their average rank, as Spearman's correlation takes them: argsort's ranks told equal
    values apart by their place in the list, so that a parameter every trial had the same (batch_size 32 in each)
    got a share of the importance, and a categorical one with a few values a share made up by the trials' order."""
    a = np.asarray(xs, dtype=float)
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    _, inverse = np.unique(a, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]


def importances(trials: list[dict[str, Any]]) -> dict[str, float]:
    """|Spearman rank correlation| of each numeric parameter with the best val_accuracy each trial reached
    (pruned trials included: ASHA prunes most of them), normalised to sum 1; a cheap stand-in for fANOVA that
    needs nothing beyond numpy."""
    done = _scored(trials)
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    out = {}
    rv = _ranks([t["value"] for t in done])
    for name in sorted({k for t in done for k in t["params"]}):
        xs = [t["params"].get(name) for t in done]
        if not all(isinstance(x, int | float) for x in xs):
            continue
        rx = _ranks(xs)
        if np.std(rx) == 0 or np.std(rv) == 0:
            out[name] = 0.0
            continue
        out[name] = abs(float(np.corrcoef(rx, rv)[0, 1]))
    total = sum(out.values()) or 1.0
    return {k: v / total for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


class TuningPanel(Panel):
    panel_id = "tuning"
    title = "Tuning dashboard"
    steps = ("model.tune", "model.train")
    follows_outside_runs = True  # reloaded every few seconds while its step runs in another process

    def build(self) -> None:
        row = QHBoxLayout()
        row.addWidget(QLabel("Experiment"))
        self.experiment = QComboBox()
        self.experiment.setMinimumWidth(260)
        self.experiment.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)  # its best value in view
        self.experiment.activated.connect(lambda _: self.refresh())
        row.addWidget(self.experiment)
        self.live_label = QLabel("")
        row.addWidget(self.live_label)
        row.addStretch(1)
        self.use_btn = QPushButton("Train with this trial")
        self.use_btn.setToolTip("write the selected trial's parameters into model.train's in cdl.yaml, use_tuned off "
                                "(`cdl experiments use EXPERIMENT --trial N`): a trial picked by hand, a smaller model "
                                "close to the best, say, where use_tuned takes the best")
        self.use_btn.setEnabled(False)
        self.use_btn.clicked.connect(self.use_selected)
        row.addWidget(self.use_btn)
        w = QWidget()
        w.setLayout(row)
        self.add(w)
        self.trials = Table(["trial", "state", "val_accuracy", "epochs", "worker", "retry of", "params"])
        self.trials.setMaximumHeight(170)
        self.trials.setMinimumHeight(120)  # three trials where the panel scrolls (its content at its minimum): it was one
        self.trials.setToolTip("select trials to pick out their learning curves (each trial's number has its "
                               "curve's colour)")
        self.trials.itemSelectionChanged.connect(self._highlight)
        self.trials.itemSelectionChanged.connect(
            lambda: self.use_btn.setEnabled(self._kind == "tune" and len(self._selected_trials()) == 1))
        self.add(self.trials)
        self.grid = PlotGrid()
        self.add(self.grid, 1)
        self.plots: dict[str, Any] = {}
        self.curves: dict[int, list[tuple[int, float]]] = {}  # trial -> [(epoch, val_accuracy)]
        self.parallel_axes: list[str] = []  # the parameters the parallel coordinates plot has an axis for
        self._parallel_drawn = False  # its lines and value labels drawn (not a note): its y range is kept by pixels
        self._parallel_resizes = False  # its view box's resizes followed
        self.curve_items: dict[int, Any] = {}
        self.trial_rows: list[dict[str, Any]] = []
        self._dirty = False
        self._said: tuple[str, str] = ("", "info")
        self._want: int | None = None  # an experiment asked for by show_experiment, for the next load
        self._follow_latest = False
        self._kind = "tune"
        self.timer = QTimer(self)
        self.timer.setInterval(250)  # redraw at most four times a second while metrics stream in
        self.timer.timeout.connect(self._redraw_live)
        self.timer.start()

    def show_experiment(self, exp_id: int) -> None:
        """Show this experiment (the models panel's double-click), not the newest."""
        self._want = exp_id
        self._follow_latest = False
        self.refresh()

    def set_step(self, step: str) -> None:
        kind = "train" if step == "model.train" else "tune"
        if kind != self._kind:
            self._kind = kind
            self.experiment.setCurrentIndex(-1)  # pick the newest experiment of this kind on the next load

    def _ensure_plots(self) -> None:
        if self.plots:
            return
        self.plots["history"] = plot_widget("Optimization history", "val_accuracy", "trial", whole_x=True)
        self.plots["curves"] = plot_widget("Learning curves", "val_accuracy", "epoch", whole_x=True)
        self.plots["parallel"] = plot_widget("Parallel coordinates (colour: val_accuracy)", "scaled value")
        self.plots["importance"] = plot_widget("Parameter importance (rank correlation)", "share")
        # a training run's losses, in the optimization history's place (a training experiment has one trial: its
        # history was a dot, and the parallel coordinates and importances had nothing to compare)
        self.plots["loss"] = plot_widget("Loss", "loss", "epoch", whole_x=True)
        self.plots["loss"].hide()
        self.grid.add(self.plots["history"], self.plots["loss"])
        self.grid.add(self.plots["curves"])
        self.grid.add(self.plots["parallel"])
        self.grid.add(self.plots["importance"])

    # -- data ---------------------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        store = self.ctx.workspace.store
        exps = store.experiments()
        chosen = self.experiment.currentData()
        want = self._want  # cleared once shown: a load in flight when it was asked for is thrown away
        if want in {e.id for e in exps}:
            chosen = want
        elif self._follow_latest or chosen is None or chosen not in {e.id for e in exps}:
            of_kind = [e for e in exps if e.kind == self._kind]
            chosen = (of_kind or exps)[-1].id if exps else None  # the newest (a run started since: show it)
        trials = []
        if chosen is not None:
            for t in store.trials(chosen):
                metrics = store.metrics(t.id)
                value = t.value
                if value is None and t.state == "running":
                    # its best so far, as a run in the studio shows it from the live events: one another process
                    # runs (`cdl run`, a tuning worker) read blank until it ended, its curve already drawn
                    seen = [m["val_accuracy"] for m in metrics if isinstance(m.get("val_accuracy"), int | float)]
                    value = max(seen) if seen else None
                trials.append({"id": t.id, "number": t.number, "state": t.state, "value": value, "epochs": t.epochs,
                               "worker": t.worker or "", "retry_of": t.retry_of, "params": t.params,
                               "metrics": metrics})
        def label(e) -> str:  # noqa: ANN001 - an Experiment; its best value, so that the list reads as a leaderboard
            best = e.summary.get("best_value", (e.summary.get("metrics") or {}).get("val_accuracy"))
            return (f"{e.name} ({e.kind}, {e.framework}, {e.template}, {e.status}"
                    f"{f', best {best:.4f}' if isinstance(best, int | float) else ''})")

        kind = next((e.kind for e in exps if e.id == chosen), self._kind)
        return {"experiments": [(e.id, label(e)) for e in exps],
                "chosen": chosen, "kind": kind, "trials": trials}

    def show_data(self, d: dict[str, Any]) -> None:
        if d["chosen"] == self._want or d["chosen"] is None:
            self._want = None
        self.experiment.blockSignals(True)
        self.experiment.clear()
        for eid, label in d["experiments"]:
            self.experiment.addItem(label, eid)
        if d["chosen"] is not None:
            self.experiment.setCurrentIndex(self.experiment.findData(d["chosen"]))
        self.experiment.blockSignals(False)
        if d["chosen"] is not None and d["chosen"] == (d["experiments"][-1][0] if d["experiments"] else None):
            self._follow_latest = False
        if not d["experiments"]:
            self.say("No experiments yet: run model.tune or model.train (right-click a node, or the buttons above).")
            return
        self.say(*self._said)  # what "Train with this trial" said stays through the reloads after it
        self._shown_kind = d.get("kind", "tune")
        self.heading.setText("Training run" if self._shown_kind == "train" else self.title)
        self.trial_rows = d["trials"]
        self.curves = {t["number"]: [(m["epoch"], m.get("val_accuracy", float("nan"))) for m in t["metrics"]]
                       for t in d["trials"]}
        # the table and each plot in their own turn of the event loop: the window stays responsive
        QTimer.singleShot(0, self._fill_table)
        QTimer.singleShot(0, self._draw_all)

    def _fill_table(self) -> None:
        rows, colors = [], {}
        for i, t in enumerate(self.trial_rows):
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
            rows.append((t["number"], t["state"], t["value"], t["epochs"], t.get("worker", ""), t.get("retry_of"),
                         params))
            colors[(i, 1)] = {"complete": "#15803d", "pruned": "#b45309", "failed": "#b91c1c",
                               "cancelled": "#4b5563"}.get(t["state"], "#1d4ed8")
            if self.curves.get(t["number"]):
                colors[(i, 0)] = self._curve_color(t["number"])
        selected = self._selected_trials()
        self.trials.blockSignals(True)
        self.trials.fill(rows, colors)
        for col in (4, 5):  # a training run has no tuning worker and retries no trial: two blank columns
            self.trials.setColumnHidden(col, self._shown_kind == "train")
        model, sel = self.trials.model(), self.trials.selectionModel()
        for i, t in enumerate(self.trial_rows):  # a live refill keeps the user's selection
            if t["number"] in selected:
                sel.select(model.index(i, 0), QItemSelectionModel.SelectionFlag.Select
                           | QItemSelectionModel.SelectionFlag.Rows)
        self.trials.blockSignals(False)

    def use_selected(self) -> None:
        """The selected trial's parameters into model.train's (runtime.experiments.use_trial)."""
        from runtime.domain.errors import CdlError
        from runtime.experiments import changed_text, use_trial

        selected = self._selected_trials()
        exp = self.experiment.currentData()
        if len(selected) != 1 or exp is None:
            return
        (number,) = selected
        try:
            doc = use_trial(self.ctx.workspace, str(exp), number)
        except CdlError as exc:
            self._said = (f"trial {number}'s parameters cannot be used: {exc}", "warning")
            self.say(*self._said)
            return
        changed = changed_text(doc["changed"])
        text = (f"model.train now trains with {doc['experiment']}'s trial {number}: {changed}; Run up to here on "
                "Train (or Run all) to train it" if changed else
                f"model.train has {doc['experiment']}'s trial {number}'s parameters already")
        if doc["note"]:
            text += f" (note: {doc['note']})"
        self._said = (text, "warning" if doc["note"] else "info")
        self.say(*self._said)
        self.sig_message.emit(text)  # the flowchart shows model.train stale

    def _curve_color(self, trial: int) -> str:
        """A trial's colour in the learning curves (and on its number in the table)."""
        order = sorted(self.curves)
        return PALETTE[order.index(trial) % len(PALETTE)] if trial in order else PALETTE[0]

    def _selected_trials(self) -> set[int]:
        rows = {ix.row() for ix in self.trials.selectedIndexes()}
        out = set()
        for r in rows:
            item = self.trials.item(r, 0)
            if item is not None and item.text().strip().isdigit():
                out.add(int(item.text()))
        return out

    def _highlight(self) -> None:
        """Selected trials' learning curves bold and in front, the others faint; no selection: all alike."""
        import pyqtgraph as pg
        from PySide6.QtGui import QColor

        chosen = self._selected_trials() & set(self.curve_items)
        for num, item in self.curve_items.items():
            color = QColor(self._curve_color(num))
            if chosen and num not in chosen:
                color.setAlpha(45)
            width = 3.0 if num in chosen else 1.5
            item.setPen(pg.mkPen(color, width=width))
            item.setSymbolBrush(pg.mkBrush(color))
            item.setZValue(10 if num in chosen else 0)

    def _draw_all(self) -> None:
        """Draw the four plots one per turn of the event loop, so that no single turn blocks the window long."""
        self._ensure_plots()
        self._draw_gen = getattr(self, "_draw_gen", 0) + 1
        gen = self._draw_gen
        training = getattr(self, "_shown_kind", "tune") == "train"
        for name in ("history", "parallel", "importance"):
            self.plots[name].setVisible(not training)
        self.plots["loss"].setVisible(training)
        parts = ([self._draw_loss, self._draw_curves] if training else
                 [self._draw_history, self._draw_curves, self._draw_parallel, self._draw_importance])

        def step(i: int) -> None:
            if gen != self._draw_gen:
                return  # a newer draw started
            if i >= len(parts):
                self._drawn_gen = gen  # every plot of this draw is drawn
                return
            parts[i]()
            QTimer.singleShot(0, lambda: step(i + 1))

        step(0)

    def _draw_loss(self) -> None:
        """A training run's train_loss and val_loss per epoch (its one trial's metrics)."""
        import pyqtgraph as pg

        lp = self.plots["loss"]
        lp.clear()
        ms = [m for t in self.trial_rows[:1] for m in t["metrics"]]
        if not ms:
            plot_note(lp, _no_score(self.trial_rows))
            return
        lp.enableAutoRange()
        add_legend(lp, offset=(-10, 5))
        for k, key in enumerate(("train_loss", "val_loss")):
            lp.plot([m["epoch"] for m in ms], [m.get(key, np.nan) for m in ms], name=key,
                    pen=pg.mkPen(PALETTE[k], width=2), symbol="o", symbolSize=4, symbolBrush=PALETTE[k])

    def _draw_history(self) -> None:
        import pyqtgraph as pg

        trials = self.trial_rows
        done = [t for t in trials if t["value"] is not None]
        # optimization history
        h = self.plots["history"]
        h.clear()
        if done:
            h.enableAutoRange(axis="x")  # a note before (no score yet) fixed the view to 0..1
            xs = [t["number"] for t in done]
            add_legend(h, offset=(-10, 5), columns=len(STATE_COLORS))
            room_for_legend(h, min(t["value"] for t in done), max(t["value"] for t in done), 1)
            for state, color in STATE_COLORS.items():  # one item a state, so that the legend names the colours
                pts = [t for t in done if (t["state"] if t["state"] in STATE_COLORS else "running") == state]
                if pts:
                    h.addItem(pg.ScatterPlotItem([t["number"] for t in pts], [t["value"] for t in pts],
                                                 brush=pg.mkBrush(color), size=9, pen=None, name=state))
            best = np.maximum.accumulate([t["value"] if t["state"] == "complete" else -np.inf for t in done])
            h.plot(xs, np.where(np.isfinite(best), best, np.nan), pen=pg.mkPen("#dc2626", width=2), connect="finite")
        else:  # blank axes said nothing, beside the importance plot's "needs 3 finished trials"
            plot_note(h, _no_score(trials))

    def _draw_curves(self) -> None:
        import pyqtgraph as pg

        trials = self.trial_rows
        # learning curves
        c = self.plots["curves"]
        c.clear()
        self.curve_items = {}
        if any(self.curves.values()):
            c.enableAutoRange()  # a note before (no epoch finished yet) fixed the view to 0..1
        one = len(trials) == 1 and trials[0]["metrics"]
        c.setLabel("left", "accuracy" if one else "val_accuracy")  # one run's curves: training and validation
        if one:
            ms = trials[0]["metrics"]
            add_legend(c, offset=(-10, -10))
            for k, key in enumerate(("train_accuracy", "val_accuracy")):
                c.plot([m["epoch"] for m in ms], [m.get(key, np.nan) for m in ms], name=key,
                       pen=pg.mkPen(PALETTE[k], width=2), symbol="o", symbolSize=4, symbolBrush=PALETTE[k])
        for num, pts in sorted(self.curves.items()) if len(trials) != 1 else []:
            if pts:
                color = self._curve_color(num)
                item = c.plot([p[0] for p in pts], [p[1] for p in pts], pen=pg.mkPen(color, width=1.5),
                              symbol="o", symbolSize=4, symbolBrush=color)
                self.curve_items[num] = item
        if not any(self.curves.values()) and not (len(trials) == 1 and trials[0]["metrics"]):
            plot_note(c, _no_score(trials))
        self._highlight()

    def _draw_parallel(self) -> None:
        import pyqtgraph as pg

        done = [t for t in self.trial_rows if t["value"] is not None]
        # parallel coordinates
        p = self.plots["parallel"]
        p.clear()
        numeric = sorted({k for t in done for k, v in t["params"].items() if isinstance(v, int | float)})
        # the parameters that differ between trials: a training run's one trial has nine fixed ones (epochs, seed,
        # patience...), whose axes crowded the plot until their names ran together and said nothing
        numeric = [k for k in numeric if len({t["params"].get(k) for t in done}) > 1]
        self.parallel_axes = numeric
        self._parallel_drawn = False  # a note (too few trials) keeps its own view
        p.setTitle("Parallel coordinates")
        if len(done) < 2:
            plot_note(p, "one trial with a score: this compares two or more (its parameters are in the table)"
                      if done else _no_score(self.trial_rows))
            return
        if not numeric:
            plot_note(p, "every trial with a score has the same parameters")
            return
        if done and numeric:
            vals = np.array([[float(t["params"].get(k, np.nan)) for k in numeric] for t in done])
            lo, hi = np.nanmin(vals, axis=0), np.nanmax(vals, axis=0)
            scaled = (vals - lo) / np.where(hi > lo, hi - lo, 1)
            scores = np.array([t["value"] for t in done])
            smin, smax = scores.min(), scores.max()
            cmap = pg.colormap.get("viridis")
            for row, s in zip(scaled, scores, strict=True):
                col = cmap.map((s - smin) / (smax - smin) if smax > smin else 1.0, mode="qcolor")
                # markers too: with one parameter a line has no length, and a point shows where each trial sits
                p.plot(list(range(len(numeric))), row, pen=pg.mkPen(col, width=1.5), symbol="o", symbolSize=5,
                       symbolBrush=col.name(), symbolPen=col.name())
            for i in range(len(numeric)):  # each axis' real range: 0 and 1 are its lowest and highest value tried
                for y, v, anchor in ((0.0, lo[i], (0.5, -0.1)), (1.0, hi[i], (0.5, 1.1))):
                    label = pg.TextItem(f"{v:.3g}", color="#6b7280", anchor=anchor)
                    label.setPos(i, y)
                    p.addItem(label)
            p.getAxis("bottom").setTicks([[(i, n) for i, n in enumerate(numeric)]])
            p.setXRange(-0.3, len(numeric) - 0.7)
            self._parallel_drawn = True
            self._parallel_headroom()
            if not self._parallel_resizes:  # the room is in pixels: looked at again on each resize
                p.getViewBox().sigResized.connect(self._parallel_headroom)
                self._parallel_resizes = True
            low, high = cmap.map(0.0, mode="qcolor").name(), cmap.map(1.0, mode="qcolor").name()
            # the colour key on a line of its own: in one line the title asked 400 pixels, and the plots stood one
            # under another in a panel 840 wide
            p.setTitle(f"Parallel coordinates<br><span style='font-size:9pt'>val_accuracy <span style='color:{low}'>"
                       f"&#9632; {smin:.3g}</span> to <span style='color:{high}'>&#9632; {smax:.3g}</span></span>")

    def _parallel_headroom(self, *_: Any) -> None:  # noqa: ANN401 - the view box, from its signal
        """Room above 1 and below 0 for the axes' highest and lowest values, a line of text each: a fixed tenth of the
        range cut them in half under the title where the plot was 130 pixels tall."""
        if not self._parallel_drawn:
            return
        import pyqtgraph as pg

        p = self.plots["parallel"]
        # pixels: the labels' height, and the tenth of it that their anchors set them off 0 and 1 by
        text = max((i.boundingRect().height() * 1.1 for i in p.getViewBox().addedItems if isinstance(i, pg.TextItem)),
                   default=24.0) + 1
        pad = min(0.6, text / max(40.0, p.getViewBox().height() - 2 * text))
        p.setYRange(-pad, 1 + pad, padding=0)

    def _draw_importance(self) -> None:
        import pyqtgraph as pg

        # importances
        imp = self.plots["importance"]
        imp.clear()
        share = importances(self.trial_rows)
        if share:
            names = list(share)
            imp.enableAutoRange()  # a note before (too few trials, early in a live study) fixed the view to 0..1
            imp.addItem(pg.BarGraphItem(x=list(range(len(names))), height=list(share.values()), width=0.6,
                                        brush="#6366f1"))
            imp.getAxis("bottom").setTicks([[(i, n) for i, n in enumerate(names)]])
        elif self.trial_rows:
            plot_note(imp, f"needs {MIN_TRIALS_FOR_IMPORTANCE} finished trials; this study has "
                           f"{len(_scored(self.trial_rows))}")

    # -- live ---------------------------------------------------------------------------------------------

    def on_event(self, ev: Any) -> None:
        kind = ev.kind.value
        if ev.step not in ("model.tune", "model.train"):
            return
        if kind == "started":
            self.curves = {}
            self.trial_rows = []
            self.curve_items = {}
            if self.plots:
                self.plots["curves"].clear()
            self._follow_latest = True
            self.live_label.setText(f"live: {ev.step} running")
            self._shown_kind = "train" if ev.step == "model.train" else "tune"  # the heading and plots it will need
            self.heading.setText("Training run" if self._shown_kind == "train" else self.title)
            # the last experiment's name and plots stood beside the new run's trials until it ended: both go, and
            # the new experiment comes with its first trial
            self.experiment.setCurrentIndex(-1)
            if self.plots:
                self._draw_all()
            self._dirty = True
        elif kind == "metric":
            trial = int(ev.data.get("trial", 0))
            self.curves.setdefault(trial, []).append((int(ev.data.get("epoch", 0)), float(ev.data.get("val_accuracy", 0))))
            if not any(t["number"] == trial for t in self.trial_rows):
                self.trial_rows.append({"id": None, "number": trial, "state": "running", "value": None, "epochs": 0,
                                        "params": {}, "metrics": []})
                # a trial just began: read the run's experiment (the list, the trial's parameters, how the one before
                # ended) where the table showed it with no parameters and the plots showed the last experiment's
                self.refresh()
            for t in self.trial_rows:
                if t["number"] == trial:
                    if not any(m.get("epoch") == ev.data.get("epoch") for m in t["metrics"]):
                        t["metrics"].append(dict(ev.data))  # a training run's loss and accuracy curves, live
                    t["epochs"] = int(ev.data.get("epoch", 0))
                    t["value"] = max(t["value"] or 0.0, float(ev.data.get("val_accuracy", 0)))
            self._dirty = True
        elif kind in ("finished", "failed"):
            self.live_label.setText("")
            self.refresh()

    def _redraw_live(self) -> None:
        if not self._dirty or not self.isVisible():
            return
        self._dirty = False
        import pyqtgraph as pg

        self._ensure_plots()
        if getattr(self, "_shown_kind", "tune") == "train" and len(self.trial_rows) == 1:
            self._draw_loss()  # one run: its curves drawn whole from its metrics, each epoch
            self._draw_curves()
            self._fill_table()
            return
        c = self.plots["curves"]
        notes = [it for it in c.getPlotItem().items if isinstance(it, pg.TextItem)]
        if notes and any(self.curves.values()):  # "no epoch finished yet" until the first one's point came
            for it in notes:
                c.removeItem(it)
            c.enableAutoRange()
        for num, pts in sorted(self.curves.items()):
            item = self.curve_items.get(num)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            if item is None:
                color = self._curve_color(num)
                self.curve_items[num] = c.plot(xs, ys, pen=pg.mkPen(color, width=1.5), symbol="o", symbolSize=4,
                                               symbolBrush=color)
            else:
                item.setData(xs, ys)
        self._fill_table()
        self._highlight()
