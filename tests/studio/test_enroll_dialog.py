"""The devices panel's Enroll dialog against a real workspace (no runtime process needed)."""

from __future__ import annotations


def test_the_enroll_dialog_enrolls_with_workers_and_enrolls_again_only_when_asked(qtbot, text_ws, monkeypatch):
    """The dialog had no way to enroll a taken name again (the error told a studio user to 'pass --replace'), and
    no workers setting."""
    import json

    from PySide6.QtWidgets import QDialog

    from studio.panels.base import StudioContext
    from studio.panels.devices.panel import DevicesPanel, EnrollDialog

    p = DevicesPanel(StudioContext(text_ws.root, text_ws, None))
    qtbot.addWidget(p)
    answers = {"name": "edge1", "workers": 2, "replace": False, "metrics": "127.0.0.1:9100", "token": True,
               "http": "0.0.0.0:8000", "address": "127.0.0.1:8001"}

    def fill(dlg) -> int:  # noqa: ANN001 - what a user types into the dialog, then OK
        dlg.name.setText(answers["name"])
        dlg.address.setText(answers["address"])
        dlg.workers.setValue(answers["workers"])
        dlg.replace.setChecked(answers["replace"])
        dlg.metrics.setText(answers["metrics"])
        dlg.metrics_token.setChecked(answers["token"])
        dlg.http.setText(answers["http"])
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(EnrollDialog, "exec", fill)
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p._enroll()
    first = text_ws.store.device("edge1")
    folder = text_ws.root / ".cdl" / "devices" / "edge1"
    assert first.enroll_dir == ".cdl/devices/edge1" and json.loads((folder / "agent.json").read_text())["workers"] == 2
    assert json.loads((folder / "agent.json").read_text())["metrics_listen"] == "127.0.0.1:9100"
    assert json.loads((folder / "agent.json").read_text())["metrics_auth"] == "token"
    assert json.loads((folder / "agent.json").read_text())["http_listen"] == "0.0.0.0:8000"  # the REST binding
    assert "Enrolled edge1" in p.status_label.text()
    assert "(it listens on 127.0.0.1:8001, agent.json's listen)" in p.status_label.text()
    # how a client calls it: the CA file and the REST URL at the enrolled host (0.0.0.0 is no address to call)
    assert (f"Clients call it over TLS, trusting the workspace CA in {folder / 'tls' / 'ca.crt'}: gRPC at "
            "127.0.0.1:8001, REST at https://127.0.0.1:8000/v2") in p.status_label.text(), p.status_label.text()
    p._enroll()  # the same name, not ticked: refused before anything is written, in the studio's words
    assert "tick 'Enroll again if this name is taken'" in p.status_label.text()
    assert "--replace" not in p.status_label.text()
    assert text_ws.store.device("edge1").token == first.token
    answers.update(replace=True, workers=1, metrics="", token=False, http="")  # an emptied field turns it off
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p._enroll()
    again = text_ws.store.device("edge1")
    assert again.token != first.token and again.enroll_dir == ".cdl/devices/edge1"
    assert json.loads((folder / "agent.json").read_text())["workers"] == 1
    assert json.loads((folder / "agent.json").read_text())["metrics_listen"] is None
    assert json.loads((folder / "agent.json").read_text())["metrics_auth"] == "open"
    assert json.loads((folder / "agent.json").read_text())["http_listen"] is None
    answers.update(metrics="nowhere")
    p._enroll()
    qtbot.waitUntil(lambda: "--metrics 'nowhere'" in p.status_label.text(), timeout=30000)
    # the workspace's CA lost: enrolling another device makes a new one, and the panel says edge1 must follow
    (text_ws.root / ".cdl" / "pki" / "ca.key").unlink()
    answers.update(name="edge2", metrics="", replace=False)
    p._enroll()  # at edge1's address: refused, where edge2's pushes would have reached edge1's agent
    qtbot.waitUntil(lambda: "edge1 is enrolled there, and one agent listens on a port" in p.status_label.text(),
                    timeout=30000)
    answers.update(address="127.0.0.1:8011")
    with qtbot.waitSignal(p.sig_loaded, timeout=30000):
        p._enroll()
    assert "Enrolled edge2" in p.status_label.text()
    assert "Warning: the workspace's CA was gone, and made anew: edge1 trust(s)" in p.status_label.text()


def test_typing_an_enrolled_name_fills_in_its_settings(qtbot):
    """Renewing a device's credentials from the studio started from the dialog's defaults (open, 1 worker), which
    then overwrote the device's agent.json; now its name brings its address and settings, and ticks 'Enroll
    again'."""
    from studio.panels.devices.panel import EnrollDialog

    dlg = EnrollDialog(None, {"edge1": ("10.0.0.7:8001", {"inference_auth": "token", "workers": 3,
                                                        "metrics_listen": "0.0.0.0:9100", "metrics_auth": "token",
                                                        "http_listen": "0.0.0.0:8000"})})
    qtbot.addWidget(dlg)
    dlg.name.setText("edge")
    assert (dlg.address.text(), dlg.replace.isChecked(), dlg.note.text()) == ("127.0.0.1:8001", False, "")
    dlg.name.setText("edge1")
    assert (dlg.address.text(), dlg.auth.currentText(), dlg.workers.value()) == ("10.0.0.7:8001", "token", 3)
    assert dlg.metrics.text() == "0.0.0.0:9100" and dlg.metrics_token.isChecked()
    assert dlg.http.text() == "0.0.0.0:8000"
    assert dlg.replace.isChecked() and "edge1 is enrolled" in dlg.note.text()
    dlg.name.setText("edge2")
    assert dlg.note.text() == ""
