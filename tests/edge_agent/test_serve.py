"""`cdl serve`: a model version served on this machine by the edge agent over the Open Inference Protocol, for a
stock tritonclient; nothing recorded in the registry, and nothing left behind when it stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np


def test_cdl_serve_answers_tritonclient_like_onnxruntime_and_leaves_nothing(packaged):
    import onnxruntime as ort
    import tritonclient.grpc as tc

    from edge_agent.proto.bundle import read_manifest_unverified
    from edge_agent.proto.preprocessing import TextPipeline
    from runtime.bundles import bundle_path
    from runtime.workspace.dataset import decode_text

    ws = packaged
    before = ([d.name for d in ws.store.devices()], len(ws.store.deployments()))
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "serve", "ws:1:dynamic_int8",
                             "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving ws:1:dynamic_int8 at 127.0.0.1:"), line + proc.stderr.read()[-2000:]
        address = line.split(" at ")[1].split()[0]
        view = ws.dataset()
        texts = [decode_text(view.read_bytes(r))[0] for r in view.rows if r.split == "test"][:8]
        client = tc.InferenceServerClient(address, ssl=True, root_certificates=str(ws.root / ".cdl/pki/ca.crt"))
        assert client.is_model_ready("ws")
        inp = tc.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
        got = client.infer("ws", [inp]).as_numpy("probabilities")
        client.close()
        bundle = bundle_path(ws, "ws:1", "dynamic_int8")
        manifest = read_manifest_unverified(bundle)
        with zipfile.ZipFile(bundle) as zf:
            sess = ort.InferenceSession(zf.read("model.onnx"), providers=["CPUExecutionProvider"])
        x, _ = TextPipeline(manifest["preprocessing"]).transform(texts)
        np.testing.assert_allclose(got, sess.run(["probabilities"], {"input": x})[0], atol=1e-5)
        # and over the REST binding (--http), as `mlflow models serve` answers: the same probabilities
        import json
        import ssl
        import urllib.request

        proc.stdout.readline()  # the tritonclient line
        rest_line = proc.stdout.readline()
        assert rest_line.startswith("  REST: curl --cacert "), rest_line
        url = rest_line.split()[4]
        assert url.startswith("https://127.0.0.1:") and url.endswith("/v2/models/ws/infer"), rest_line
        # the printed request works as it is: one text (it was `{"inputs": [...]}`, which the agent refused)
        import shlex

        printed = shlex.split(rest_line)[shlex.split(rest_line).index("-d") + 1]
        with urllib.request.urlopen(urllib.request.Request(url, printed.encode()), timeout=60,
                                    context=ssl.create_default_context(cafile=str(ws.root / ".cdl/pki/ca.crt"))) as r:
            assert [o["shape"] for o in json.loads(r.read())["outputs"]] == [[1, 5], [1], [1]]
        body = json.dumps({"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]})
        ctx = ssl.create_default_context(cafile=str(ws.root / ".cdl/pki/ca.crt"))
        with urllib.request.urlopen(urllib.request.Request(url, body.encode()), context=ctx, timeout=60) as r:
            doc = json.loads(r.read())
        probs = next(o for o in doc["outputs"] if o["name"] == "probabilities")
        np.testing.assert_allclose(np.array(probs["data"]).reshape(probs["shape"]), got, atol=1e-6)
        folders_during = set(Path(tempfile.gettempdir()).glob("cdl-serve-*"))
        assert folders_during
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0, proc.stderr.read()[-2000:]
    deadline = time.time() + 10
    while time.time() < deadline and any(p.exists() for p in folders_during):
        time.sleep(0.1)
    assert not any(p.exists() for p in folders_during)  # the agent's folder and its journal are gone
    assert ([d.name for d in ws.store.devices()], len(ws.store.deployments())) == before  # nothing recorded
    bad = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "serve", "ws:1:qat"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "ws:1 has no variant 'qat'" in bad.stderr


def _serve(ws, *extra: str) -> tuple[subprocess.Popen, str]:  # noqa: ANN001
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "serve", "ws:1",
                             "--listen", "127.0.0.1:0", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving ws:1:fp32 at "), line + proc.stderr.read()[-2000:]
    return proc, line


def _agents(folder: Path) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(folder) in (d / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def test_cdl_serve_never_leaves_an_agent_running(packaged):
    """Killed outright (SIGKILL), `cdl serve` takes its agent with it, and the next one sweeps the folder left;
    started by a studio (--parent-pid), it stops when that process is gone."""
    ws = packaged
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("cdl-serve-*"))
    proc, _ = _serve(ws)
    (folder,) = set(tmp.glob("cdl-serve-*")) - before
    assert _agents(folder)
    proc.kill()
    proc.wait(10)
    deadline = time.time() + 10
    while time.time() < deadline and _agents(folder):
        time.sleep(0.1)
    assert not _agents(folder) and folder.exists()  # the agent died with it; the folder was left behind
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    proc, _ = _serve(ws, "--parent-pid", str(parent.pid))
    assert not folder.exists()  # swept by the next `cdl serve`
    (second,) = set(tmp.glob("cdl-serve-*")) - before
    parent.kill()
    parent.wait(10)
    assert proc.wait(30) == 0
    assert not second.exists() and not _agents(second)
