"""`cdl doctor`: each finding says what is wrong and what to do; a failure exits 1."""

from __future__ import annotations

import json
import subprocess
import sys

from runtime.doctor import diagnose


def _find(doc: dict, area: str, status: str) -> list[dict]:
    return [c for c in doc["checks"] if c["area"] == area and c["status"] == status]


def test_doctor_finds_missing_data_expiring_certificates_and_dirty_code(small_bbc, tmp_path):
    from runtime.devices import enroll

    ws = small_bbc
    doc = diagnose(ws)
    assert "cdl.yaml" in _find(doc, "git", "warn")[0]["detail"]  # the fixture edited cdl.yaml: commit it
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qam", "settings"],
                   cwd=ws.root, check=True)
    doc = diagnose(ws)
    assert not doc["failed"], doc
    assert _find(doc, "data", "warn")[0]["hint"].startswith("`cdl data remote add")  # no remote yet
    assert _find(doc, "git", "ok") and _find(doc, "disk", "ok")
    engines = " ".join(c["detail"] for c in _find(doc, "engines", "ok"))
    assert "torch " in engines and "onnxruntime runs on: CPUExecutionProvider" in engines
    assert "TensorRT unavailable" in engines or "TensorRT available" in engines
    # a device whose certificate has expired, one whose certificate expires soon
    enroll(ws, "old", "127.0.0.1:8001", tmp_path / "old", cert_days=-1)
    enroll(ws, "soon", "127.0.0.1:8002", tmp_path / "soon", cert_days=10)
    # code changed and not committed; a file of the checked-out version gone from DVC's cache
    (ws.root / "src" / "model.py").write_text("# a change\n")
    v = ws.store.version(ws.current_version())
    victim = next(iter(ws.dvc.listing(v.dvc_hash).values()))
    ws.dvc.cache_file(victim).unlink()
    doc = diagnose(ws)
    assert doc["failed"]
    (expired,) = _find(doc, "devices", "fail")
    assert "old: its TLS certificate expired" in expired["detail"] and "--replace" in expired["hint"]
    assert any("soon: its TLS certificate expires" in c["detail"] for c in _find(doc, "devices", "warn"))
    (data,) = _find(doc, "data", "fail")
    # no DVC remote: what lays the version out again from the registry, not `cdl data pull` (nowhere to pull from)
    assert f"{v.id} (1)" in data["detail"] and "`cdl run --until data.version`" in data["hint"], data
    assert "cdl data pull" not in data["hint"]
    assert "src/model.py" in _find(doc, "git", "warn")[0]["detail"]
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "doctor"], capture_output=True,
                         text=True)
    assert out.returncode == 1 and "✗ data" in out.stdout and "→ no DVC remote has them: `cdl run --until data.version`" in out.stdout
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "doctor", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and json.loads(out.stdout)["failed"] is True


def test_both_commands_say_their_version():
    from runtime import __version__

    for cmd, name in ((["-m", "runtime.cli"], "cdl"), (["-m", "edge_agent.cli"], "cdl-edge")):
        out = subprocess.run([sys.executable, *cmd, "--version"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == f"{name} {__version__}", out


def test_doctor_names_a_step_rule_that_stops_every_run(text_ws):
    """A bad search space or compression option written into cdl.yaml by hand stops `cdl run` before it starts;
    the doctor says so too, naming the field (it said ✓ for the workspace)."""
    from runtime.doctor import diagnose

    cfg = text_ws.config()
    cfg.steps["model.tune"]["search_space"] = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}
    cfg.steps["deploy.compress"]["methods"] = [{"prune": {"sparsty": 0.8}}]
    cfg.save()
    failed = [c["detail"] for c in diagnose(text_ws)["checks"] if c["area"] == "workspace" and c["status"] == "fail"]
    assert failed == [
        "cdl.yaml: model.tune.search_space.learning_rate: training takes no such parameter; tunable: lr, batch_size, "
        "hidden, dropout, weight_decay, seed, layers",
        "cdl.yaml: steps.deploy.compress.params.methods[0].prune: prune has no option 'sparsty' (did you mean "
        "'sparsity'?); its options: sparsity, finetune_epochs, lr, name"], failed


def test_doctor_names_devices_enrolled_at_one_address(text_ws, tmp_path):
    """Enroll refuses a second device at another's address now; a workspace that enrolled two so before has
    calls meant for one reaching the other's agent. The doctor names them."""
    from runtime.devices import enroll

    enroll(text_ws, "a", "127.0.0.1:47031", tmp_path / "a")
    enroll(text_ws, "b", "127.0.0.1:47032", tmp_path / "b")
    for n in ("c", "d"):
        enroll(text_ws, n, "127.0.0.1:0", tmp_path / n)  # any free port: no one's
    assert not [c for c in _find(diagnose(text_ws), "devices", "fail") if "one address" in c["detail"]]
    text_ws.store.update_device("b", address="127.0.0.1:47031")  # as an older enroll let it be
    (found,) = [c for c in _find(diagnose(text_ws), "devices", "fail") if "one address" in c["detail"]]
    assert found["detail"].startswith("a, b are enrolled at one address, 127.0.0.1:47031: one agent listens there")
    assert "`cdl devices remove`" in found["hint"]
    # a folder enrolled before agent.json said where to listen: its agent listened on 8001 unless told otherwise
    assert not [c for c in _find(diagnose(text_ws), "devices", "warn") if "where to listen" in c["detail"]]
    doc = json.loads((tmp_path / "a" / "agent.json").read_text())
    del doc["listen"]
    (tmp_path / "a" / "agent.json").write_text(json.dumps(doc))
    (found,) = [c for c in _find(diagnose(text_ws), "devices", "warn") if "where to listen" in c["detail"]]
    assert found["detail"] == ("a: its folder's agent.json does not say where to listen, so an agent started "
                               "without --listen listens on port 8001, and the workspace connects to 127.0.0.1:47031")
    assert found["hint"].startswith("`cdl devices enroll a --address 127.0.0.1:47031 --replace`")


def test_doctor_says_when_the_test_split_is_too_small_to_judge_by(tmp_path):
    """12 rows of 3 classes held out 3 test items, one a class: model.evaluate's gate passed on them and nothing
    said how little that meant."""
    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    rows = ["text,label"] + [f"an article number {i} about the topic {'abc'[i % 3]} in some detail,{'abc'[i % 3]}"
                             for i in range(12)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    add_source(ws, tmp_path / "t.csv")
    assert Runner(ws).run(until="data.version").ok
    (warn,) = [c for c in _find(diagnose(ws), "data", "warn") if "test split" in c["detail"]]
    assert warn["detail"] == ("v1's test split holds 3 labeled item(s) of 3 classes: model.evaluate's gate and the "
                              "review's per-class scores rest on that")
    assert "test_fraction" in warn["hint"]
    ws.close()


def test_doctor_reads_the_model_code(text_ws):
    """model.train's own code (src:FILE.py) is read, not run: a syntax error, a missing build function or the wrong
    number of arguments failed only when the first model was built, after the data pipeline and preprocessing."""
    cfg = text_ws.config()
    cfg.steps["model.train"]["template"] = "src:net.py"
    cfg.save()
    net = text_ws.root / "src" / "net.py"
    cases = [
        ("def build_model(input_shape, num_classes, params)\n    pass\n",
         "fail", "src/net.py, line 1: SyntaxError: expected ':'"),
        ("def build(input_shape, num_classes, params):\n    pass\n",
         "fail", "src/net.py defines no function build_model(input_shape, num_classes, params) (it defines build)"),
        ("def build_model(input_shape, num_classes):\n    pass\n",
         "fail", "src/net.py, line 1: build_model takes 2 positional argument(s); it is called with three: "
                 "(input_shape, num_classes, params)"),
        ("def build_model(input_shape, num_classes, params, extra=None):\n    pass\n",
         "ok", "model.train.template src:net.py: src/net.py defines build_model"),
    ]
    for code, status, said in cases:
        net.write_text(code)
        found = [(c["status"], c["detail"]) for c in diagnose(text_ws)["checks"] if c["area"] == "model"]
        assert found == [(status, said)], found
    net.unlink()  # a missing file: the step rule names it (once, under workspace), the model check says nothing more
    checks = diagnose(text_ws)["checks"]
    assert not [c for c in checks if c["area"] == "model"]
    said = [c["detail"] for c in checks if c["area"] == "workspace" and "src/net.py does not exist" in c["detail"]]
    assert said == ["cdl.yaml: model.tune, model.train: model.train.template src:net.py: src/net.py does not exist; "
                    "src/ has no .py file"], said  # both steps check it: said once, naming both
