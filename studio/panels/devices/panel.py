"""Devices and deployments: enroll, health, push a model version, roll back; the deployment history."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from runtime.domain.errors import CdlError
from studio.panels.base import Panel
from studio.widgets.common import Table, confirm, local_time
from studio.widgets.flow import FlowLayout


class EnrollDialog(QDialog):
    """known: the enrolled devices, {name: (address, agent.json's settings or {})}: typing one's name fills in its
    address and settings and ticks 'Enroll again', so renewing a device's credentials keeps what it had."""

    def __init__(self, parent: QWidget | None = None, known: dict[str, tuple[str, dict[str, Any]]] | None = None):
        super().__init__(parent)
        self.known = known or {}
        self.setWindowTitle("Enroll a device")
        form = QFormLayout(self)
        self.name = QLineEdit()
        self.address = QLineEdit("127.0.0.1:8001")
        self.auth = QComboBox()
        self.auth.addItems(["open", "token"])
        self.workers = QSpinBox()
        self.workers.setRange(1, 64)
        self.workers.setToolTip("agent processes sharing the port, one core each (agent.json `workers`)")
        self.metrics = QLineEdit()
        self.metrics.setPlaceholderText("off")
        self.metrics.setToolTip("HOST:PORT where the agent serves Prometheus metrics, GET /metrics (plain HTTP: "
                                "127.0.0.1 or a management network); empty: off")
        self.metrics_token = QCheckBox("a scrape must send the device token")
        self.metrics_token.setToolTip("agent.json `metrics_auth: token`: GET /metrics wants Authorization: Bearer "
                                      "TOKEN (Prometheus' `authorization` scrape setting), else 401")
        self.http = QLineEdit()
        self.http.setPlaceholderText("off")
        self.http.setToolTip("HOST:PORT where the agent also serves the Open Inference Protocol's REST binding, "
                             "https://HOST:PORT/v2 (as Triton's :8000), beside gRPC; empty: off")
        self.replace = QCheckBox("Enroll again if this name is taken")
        self.replace.setToolTip("a new token and certificate, written into the device's folder (bundles and the "
                                "journal stay); the agent running from a copy of the old folder stops accepting "
                                "this workspace until it gets the new one")
        form.addRow("Name", self.name)
        form.addRow("Address (HOST:PORT)", self.address)
        form.addRow("Inference", self.auth)
        form.addRow("Workers", self.workers)
        form.addRow("Metrics (HOST:PORT)", self.metrics)
        form.addRow("", self.metrics_token)
        form.addRow("REST (HOST:PORT)", self.http)
        form.addRow("", self.replace)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        form.addRow("", self.note)
        self.name.textChanged.connect(self._known_name)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _known_name(self, text: str) -> None:
        if text.strip() not in self.known:
            self.note.setText("")
            return
        address, settings = self.known[text.strip()]
        self.address.setText(address)
        self.auth.setCurrentText(settings.get("inference_auth", "open"))
        self.workers.setValue(int(settings.get("workers", 1)))
        self.metrics.setText(settings.get("metrics_listen") or "")
        self.metrics_token.setChecked(settings.get("metrics_auth") == "token")
        self.http.setText(settings.get("http_listen") or "")
        self.replace.setChecked(True)
        self.note.setText(f"{text.strip()} is enrolled: its address and settings are filled in; enrolling it again "
                          "gives it a new token and certificate and keeps its other settings")


class DevicesPanel(Panel):
    panel_id = "devices"
    title = "Devices and deployments"
    steps = ("deploy.package", "deploy.push")

    def build(self) -> None:
        row = FlowLayout()
        enroll = QPushButton("Enroll…")
        health = QPushButton("Health")
        rollback = QPushButton("Roll back")
        remove = QPushButton("Remove…")
        remove.setToolTip("unenroll a device that is gone: nothing is pushed to, collected from or checked for it any "
                          "more; its history and scoring data stay")
        enroll.clicked.connect(self._enroll)
        health.clicked.connect(self._health)
        rollback.clicked.connect(self._rollback)
        remove.clicked.connect(self._remove)
        self.model = QComboBox()
        self.model.setMinimumWidth(220)
        self._chosen: str | None = None  # what the user picked stays picked; else the champion is preselected
        self.model.activated.connect(lambda _i: setattr(self, "_chosen", self.model.currentText()))
        push = QPushButton("Push to selected")
        push.setToolTip("push the model to every selected device (Ctrl+click for several)")
        push.clicked.connect(self._push)
        self.canary = QCheckBox("canary first, watched")
        self.canary.setToolTip("a staged rollout (`cdl deploy --canary 1`): the first selected device gets the model "
                               "and is watched; the others only if at most 5 % of its requests failed, else it rolls "
                               "back")
        self.watch = QSpinBox()
        self.watch.setRange(1, 3600)
        self.watch.setValue(60)
        self.watch.setSuffix(" s")
        self.drift = QCheckBox("drift too")
        self.drift.setToolTip("also test the canary's predictions while watched for drift (`cdl deploy --check-drift`, "
                              "deploy.monitor's tests and settings): drift rolls it back")
        self.drift.setEnabled(False)
        self.canary.toggled.connect(self.drift.setEnabled)
        for w in (enroll, health, rollback, remove):
            row.addWidget(w)
        w = QWidget()
        w.setLayout(row)
        self.add(w)
        row2 = FlowLayout()  # pushing on a line of its own, wrapped where the panel is narrow (a laptop's screen)
        for w in (QLabel("model:variant"), self.model, push, self.canary, self.watch, self.drift):
            row2.addWidget(w)
        w = QWidget()
        w.setLayout(row2)
        self.add(w)
        # every column in view beside the flowchart (the certificate and last seen were off to the right); the
        # name, the state and the address whole (at 1024 x 768 the state read "unre…")
        self.devices = Table(["device", "state", "address", "active model", "requests", "errors", "journal",
                              "free\ndisk", "certificate", "last seen"], fit=True, whole=(0, 1, 2))
        self.add(self.devices, 2)
        # what acts on the selected devices is off until one is selected (each said "select a device first" when
        # pressed, beside an empty table too)
        self._needs_device = {health: "ask the selected device how it is", rollback: "switch the selected device back "
                              "to its previous model", remove: remove.toolTip(), push: push.toolTip()}
        self.health_btn, self.rollback_btn, self.remove_btn, self.push_btn = health, rollback, remove, push
        self.devices.itemSelectionChanged.connect(self._selection_changed)
        self.model.currentTextChanged.connect(lambda _t: self._selection_changed())
        self._selection_changed()
        self.add(QLabel("Deployment history"))
        self.history = Table(["when", "device", "action", "model", "status", "message"], fit=True)
        self.add(self.history, 1)

    def load(self) -> dict[str, Any]:
        from runtime.devices import devices_json, history_json, probe_devices

        ws = self.ctx.workspace
        probes = probe_devices(ws)  # live figures, not those of the last Health press (2 s at most)
        choices, default = [], None
        # newest first, and the champion in deploy.push's variant chosen: the oldest version was chosen, so that a
        # push with the panel as it opened put back the first model ever trained
        for m in reversed(ws.store.model_versions()):
            for v in ws.store.variants(m.name, m.version):
                if v.status == "ok":
                    choices.append(f"{m.ref}:{v.variant}")
        champions = [m for m in ws.store.model_versions() if "champion" in m.aliases]
        if champions:
            cfg = ws.config()
            wanted = cfg.params("deploy.push").get("variant") if "deploy.push" in cfg.steps else None
            for variant in (wanted, "fp32"):
                if f"{champions[-1].ref}:{variant}" in choices:
                    default = f"{champions[-1].ref}:{variant}"
                    break
        return {"devices": devices_json(ws)["devices"], "details": {d.name: d.last_health for d in ws.store.devices()},
                "history": history_json(ws)["deployments"], "choices": choices, "default": default, "probes": probes}

    def show_data(self, d: dict[str, Any]) -> None:
        self.model.clear()
        self.model.addItems(d["choices"])
        if self._chosen in d["choices"]:
            self.model.setCurrentText(self._chosen)
        elif d.get("default"):
            self.model.setCurrentText(d["default"])
        rows, colors = [], {}
        for i, dev in enumerate(d["devices"]):
            h = d["details"].get(dev["name"]) or {}
            a = h.get("active") or dev.get("active")
            j = h.get("journal") or {}
            probe = d.get("probes", {}).get(dev["name"]) or {}
            # what it answered now; a device that did not answer shows its last known figures, and why
            state = "online" if probe.get("health") else "unreachable" if probe.get("error") else ""
            colors[(i, 1)] = "#15803d" if probe.get("health") else "#b91c1c"
            warnings = h.get("warnings") or []
            if warnings and probe.get("health"):
                state, colors[(i, 1)] = f"online, {len(warnings)} warning{'s' if len(warnings) > 1 else ''}", "#b45309"
            cert, cert_text = dev.get("cert"), "unknown"
            if cert and cert["expired"]:
                cert_text, colors[(i, 8)] = f"EXPIRED {cert['expires'][:10]}", "#b91c1c"
            elif cert and cert["warn"]:
                cert_text, colors[(i, 8)] = f"expires in {cert['days_left']:.0f} d", "#b45309"
            elif cert:
                cert_text = f"until {cert['expires'][:10]}"
            if probe.get("error"):  # its last known figures, greyed: they read as current beside "unreachable"
                for c in range(3, 8):
                    colors[(i, c)] = "#9ca3af"
            rows.append((dev["name"], state, dev["address"], f"{a['name']}:{a['version']}:{a['variant']}" if a else "-",
                         h.get("requests"), h.get("errors"),
                         f"seq {j.get('last_seq')} (acked {j.get('acked_seq')})" if j else "",
                         f"{h['free_disk_bytes'] / 2**30:.1f} GiB" if h.get("free_disk_bytes") else "", cert_text,
                         local_time(dev["last_seen"]) or "never"))
        self.devices.fill(rows, colors, data=[dev["name"] for dev in d["devices"]])
        for i, dev in enumerate(d["devices"]):
            error = (d.get("probes", {}).get(dev["name"]) or {}).get("error")
            warnings = (d["details"].get(dev["name"]) or {}).get("warnings") or []
            if error:
                self.devices.item(i, 1).setToolTip(error)  # why it did not answer
                seen = local_time(dev["last_seen"]) or "never"
                for c in range(3, 8):
                    self.devices.item(i, c).setToolTip(f"last known, when it last answered ({seen})")
            elif warnings:
                self.devices.item(i, 1).setToolTip("\n".join(warnings))
            cert = dev.get("cert")
            if cert is None:
                self.devices.item(i, 8).setToolTip("the folder it was enrolled into no longer holds its certificate")
            elif cert["warn"]:
                self.devices.item(i, 8).setToolTip("clients refuse a device whose certificate has expired: Enroll… it "
                                                   "again ('Enroll again if this name is taken') and copy the new "
                                                   "folder to the device")
        self.history.fill([(local_time(h["time"]), h["device"], h["action"], h["ref"], h["status"], h["message"])
                           for h in reversed(d["history"])])
        if not d["devices"]:
            self.say("No device enrolled: press Enroll…, copy the folder it makes to the device and start "
                     "`cdl-edge serve --data-dir DIR` there (it listens on the enrolled port).")

    def _selection_changed(self) -> None:
        chosen = bool(self.devices.selected_data())
        for button, what in self._needs_device.items():
            ok = chosen and (button is not self.push_btn or bool(self.model.currentText()))
            button.setEnabled(ok)
            why = ("" if ok else " (select a device in the table first)" if not chosen
                   else " (no model variant to push: run deploy.export first)")
            button.setToolTip(what + why)

    def _selected(self) -> str | None:
        sel = self.devices.selected_data()
        if not sel:
            self.say("select a device first", "warning")
            return None
        return sel[0]

    def _enroll(self) -> None:
        from runtime.devices import client_hint, device_folder, enroll

        known = {}
        for dev in self.ctx.workspace.store.devices():
            try:
                settings = json.loads((device_folder(self.ctx.workspace, dev) / "agent.json").read_text())
            except (OSError, ValueError):
                settings = {}
            known[dev.name] = (dev.address, settings)
        dlg = EnrollDialog(self, known)
        if dlg.exec() != QDialog.DialogCode.Accepted or not dlg.name.text().strip():
            return

        def done(r: dict[str, Any]) -> None:
            said = (f"Enrolled {r['device']}. Copy {r['enroll_dir']} to the device and run:\n{r['start']}\n"
                    f"(it listens on {r['listen']}, agent.json's listen)\nC{client_hint(r)[1:]}")
            if r.get("warning"):  # the workspace's key or CA was made anew: the other devices must be enrolled again
                self.say(f"{said}\nWarning: {r['warning']}", "warning")
            else:
                self.say(said, "ok")

        name = dlg.name.text().strip()
        taken = [d for d in self.ctx.workspace.store.devices() if d.name == name]
        if taken and not dlg.replace.isChecked():
            self.say(f"{name} is already enrolled (at {taken[0].address}, folder "
                     f"{device_folder(self.ctx.workspace, taken[0])}): tick "
                     "'Enroll again if this name is taken' to give it a new token and certificate", "warning")
            return
        self.work(partial(enroll, workers=dlg.workers.value(), replace=dlg.replace.isChecked(),
                          metrics_listen=dlg.metrics.text().strip(),
                          metrics_auth="token" if dlg.metrics_token.isChecked() else "open",
                          http_listen=dlg.http.text().strip()), self.ctx.workspace,
                  name, dlg.address.text().strip(), None, dlg.auth.currentText(), done=done)

    def _health(self) -> None:
        from runtime.devices import DeviceClient

        name = self._selected()
        if name is None:
            return

        def health() -> dict[str, Any]:
            with DeviceClient(self.ctx.workspace, name, timeout=10) as c:
                return c.health()

        from runtime.devices import status_line

        self.work(health, message=f"asking {name}…", done=lambda h: self.say(status_line(h), "ok"))

    def _push(self) -> None:
        from runtime.devices import deploy_each

        names = [x for x in self.devices.selected_data() if x]
        choice = self.model.currentText()
        if not names:
            self.say("select a device first", "warning")
            return
        if not choice:
            return
        ref, variant = choice.rsplit(":", 1)
        ws = self.ctx.workspace
        from runtime.registry import deploy_refused

        why = deploy_refused(ws.store, ws.store.resolve_model(ref))
        if why is not None:  # a rejected version went out at a click, as `cdl deploy` sent it without a word
            if not confirm(self, "Push a version its review did not pass",
                           f"{why}. Push it to {', '.join(names)} all the same?"):
                return
        if self.canary.isChecked():
            from runtime.devices import drift_settings, staged_deploy

            if len(names) < 2:
                self.say("a canary rollout needs two devices or more: select the canary first, then the others "
                         "(Ctrl+click)", "warning")
                return
            watch = self.watch.value()
            drift = drift_settings(ws) if self.drift.isChecked() else None
            self.work(partial(staged_deploy, drift=drift), ws, ref, variant, names, 1, float(watch),
                      message=f"pushing {choice} to {names[0]} first and watching it for {watch} s, then to "
                      f"{', '.join(names[1:])}…",
                      done=lambda r: self.say(_canary_said(names[0], r["canary"][names[0]])
                                              + f": {choice} active on {', '.join(names)}",
                                              "ok" if r["canary"][names[0]]["requests"] else "warning"))
            return

        def push_all() -> list[str]:
            errors = deploy_each(ws, ref, variant, names)
            if errors:
                raise CdlError("; ".join(errors))
            return names

        self.work(push_all, message=f"pushing {choice} to {', '.join(names)}…",
                  done=lambda done: self.say(f"{', '.join(done)}: {choice} active", "ok"))

    def _remove(self) -> None:
        from runtime.devices import remove

        name = self._selected()
        if name is None:
            return
        if not confirm(
                self, "Remove a device",
                f"Remove {name} from this workspace?\n\nNothing is pushed to, collected from or checked for it any "
                "more, and its token and certificate are forgotten (enroll it again to bring it back). Its deployment "
                "history and scoring data stay. The agent on the device is not told: stop it there."):
            return
        self.work(remove, self.ctx.workspace, name, message=f"removing {name}…",
                  done=lambda r: self.say(f"{name}: {r['message']}", "ok"))

    def _rollback(self) -> None:
        from runtime.devices import rollback

        name = self._selected()
        if name is None:
            return
        from runtime.registry import rolled_back_note

        def done(r: dict[str, Any]) -> None:
            note = rolled_back_note(self.ctx.workspace.store, r["name"], r["version"], name)
            self.say(f"{name}: back to {r['name']}:{r['version']}:{r['variant']}" + (f"; {note}" if note else ""),
                     "warning" if note else "ok")

        self.work(rollback, self.ctx.workspace, name, message=f"rolling {name} back…", done=done)


def _canary_said(name: str, v: dict) -> str:
    """How the canary did; one that answered no request judged nothing, which "did well" hid."""
    if not v["requests"]:
        return (f"canary {name} answered no request while watched, so nothing was judged there (send it traffic "
                "while it is watched, or use a longer watch)")
    return f"canary {name} did well ({_canary_text(v)})"


def _canary_text(v: dict) -> str:
    """'12 requests, 0 errors, no drift' for a canary's verdict (drift: None where too few predictions to test)."""
    text = f"{v['requests']} requests, {v['errors']} errors"
    if "drift" in v:
        text += ", no drift" if v["drift"] is False else ", too few predictions to test for drift"
    return text
