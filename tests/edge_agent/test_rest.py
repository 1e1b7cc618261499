"""The Open Inference Protocol's REST binding (edge_agent.rest) on a real agent over HTTPS on 127.0.0.1: the same
answers as the gRPC port, journaled and counted as ModelInfer is, refusals with the protocol's {"error"} body."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import ssl
import subprocess
import sys
import zlib

import numpy as np
import pytest

from runtime.devices import collect, deploy, enroll
from tests.conftest import AgentProcess


def _texts(ws, n: int) -> list[str]:
    from runtime.workspace.dataset import decode_text

    view = ws.dataset()
    return [decode_text(view.read_bytes(r))[0] for r in [r for r in view.rows if r.split == "test"][:n]]


class _Rest:
    """One kept-alive HTTPS connection that trusts the workspace's CA, as a client of the device would."""

    def __init__(self, url: str, ca: str):
        host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
        self.conn = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=ca),
                                                timeout=60)

    def call(self, method: str, path: str, doc=None, headers=None, raw: bytes | None = None):  # noqa: ANN001
        body = raw if raw is not None else (json.dumps(doc).encode() if doc is not None else None)
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        r = self.conn.getresponse()
        return r.status, json.loads(r.read() or b"null")


def _grpc_answer(agent: AgentProcess, ca: str, texts: list[str]):  # noqa: ANN202
    """What the agent's gRPC port answers for `texts`, through the stock tritonclient.grpc client."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(agent.address, ssl=True, root_certificates=ca)
    inp = tc.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    try:
        return client.infer("ws", [inp])
    finally:
        client.close()


def _agent(ws, tmp_path, workers: int = 1) -> AgentProcess:
    out = tmp_path / "dev"
    enroll(ws, "dev1", "127.0.0.1:0", out)
    doc = json.loads((out / "agent.json").read_text())
    assert doc["http_listen"] is None  # off unless asked for
    (out / "agent.json").write_text(json.dumps({**doc, "http_listen": "127.0.0.1:0", "workers": workers}))
    agent = AgentProcess(out, workers=workers)
    agent.start()
    ws.store.update_device("dev1", address=agent.address)
    return agent


def test_rest_infer_gives_what_the_grpc_port_gives(packaged, tmp_path):

    ws = packaged
    agent = _agent(ws, tmp_path, workers=2)
    ca = str(ws.root / ".cdl" / "pki" / "ca.crt")
    try:
        assert agent.rest_url and agent.rest_url.startswith("https://127.0.0.1:") and agent.rest_url.endswith("/v2")
        rest = _Rest(agent.rest_url, ca)
        assert rest.call("GET", "/v2/health/live") == (200, {"live": True})
        assert rest.call("GET", "/v2/health/ready") == (400, {"ready": False})  # no model yet: the protocol's false
        status, doc = rest.call("GET", "/v2/models/ws")
        assert status == 404 and doc["error"] == "model ws is not loaded (active: none)"
        deploy(ws, "ws:1", "fp32", "dev1")
        assert rest.call("GET", "/v2/health/ready") == (200, {"ready": True})
        assert rest.call("GET", "/v2/models/ws/ready") == (200, {"name": "ws", "ready": True})
        assert rest.call("GET", "/v2/models/ws/versions/2/ready") == (400, {"name": "ws", "ready": False})
        status, server = rest.call("GET", "/v2")
        assert status == 200 and server["name"] == "cdl-edge" and "model_configuration" in server["extensions"]
        status, meta = rest.call("GET", "/v2/models/ws/versions/1")
        assert status == 200 and meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label", "confidence"]
        status, config = rest.call("GET", "/v2/models/ws/config")
        assert status == 200 and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 0
        # every field, zeros too, as Triton writes a configuration
        assert config["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1], "format": "FORMAT_NONE"}]
        assert config["parameters"]["variant"] == {"string_value": "fp32"}
        # the same texts through both ports: the same labels and probabilities
        texts = _texts(ws, 12)
        expected = _grpc_answer(agent, ca, texts)
        status, doc = rest.call("POST", "/v2/models/ws/infer", {
            "id": "r1", "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]})
        assert status == 200, doc
        assert (doc["model_name"], doc["model_version"], doc["id"]) == ("ws", "1", "r1")
        out = {o["name"]: o for o in doc["outputs"]}
        assert out["label"]["data"] == [b.decode() for b in expected.as_numpy("label")]
        assert out["probabilities"]["shape"] == [12, 5]
        np.testing.assert_allclose(np.array(out["probabilities"]["data"]).reshape(12, 5),
                                   expected.as_numpy("probabilities"), atol=1e-6)
        # nested data of shape [N, 1], asking for one output, on the same kept-alive connection
        status, doc = rest.call("POST", "/v2/models/ws/versions/1/infer", {
            "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [[texts[0]], [texts[1]]]}],
            "outputs": [{"name": "label"}]})
        assert status == 200 and [o["name"] for o in doc["outputs"]] == ["label"] and "id" not in doc
        assert doc["outputs"][0]["data"] == out["label"]["data"][:2]
        # Triton's classification extension, asked for in JSON
        status, doc = rest.call("POST", "/v2/models/ws/infer", {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[0]]}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]})
        assert status == 200 and doc["outputs"][0]["shape"] == [1, 2] and doc["outputs"][0]["datatype"] == "BYTES"
        assert doc["outputs"][0]["data"][0].endswith(":" + out["label"]["data"][0])
        # each refused naming what is wrong, the gRPC port's message where it has one
        for body, code, says in (
                (b"{not json", 400, "the body is not JSON"),
                ({"inputs": []}, 400, '"inputs" must be a list of tensors'),
                ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["one"]}]}, 400,
                 "inputs[0] (text): 1 values for shape [2]"),
                ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [0.5]}]}, 400,
                 "this model takes text as BYTES, got FP32"),
                ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}]}, 400,
                 "inputs[0] (text): its data are not all BYTES values"),
                ({"inputs": [{"name": "text", "datatype": "BYTES", "data": ["x"]}]}, 400,
                 "inputs[0].shape is missing or not a list"),
                ({"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}, 400,
                 "unknown input 'txt': ws takes one input, text")):
            raw = body if isinstance(body, bytes) else None
            status, doc = rest.call("POST", "/v2/models/ws/infer", None if raw else body, raw=raw)
            assert (status, says in doc.get("error", "")) == (code, True), (body, status, doc)
        status, doc = rest.call("POST", "/v2/models/other/infer", {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]})
        assert status == 404 and "model other is not loaded (active: ws:1)" in doc["error"]
        # a model that is not here is said first, whatever else the request got wrong (it named the empty inputs)
        status, doc = rest.call("POST", "/v2/models/other/infer", {"inputs": []})
        assert (status, doc["error"]) == (404, "model other is not loaded (active: ws:1)")
        assert rest.call("GET", "/v2/models/ws/infer")[0] == 405
        assert rest.call("GET", "/v2/nothing")[0] == 404
        # a body sent after "Expect: 100-continue" (curl asks so for a body over 1 KiB, then waits a second for the
        # go-ahead): the go-ahead comes at once, then the answer
        import socket

        host, port = agent.rest_url.split("//")[1].split("/")[0].rsplit(":", 1)
        body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[0]]}]})
        with socket.create_connection((host, int(port)), timeout=30) as raw_sock, \
                ssl.create_default_context(cafile=ca).wrap_socket(raw_sock, server_hostname=host) as tls:
            tls.sendall(f"POST /v2/models/ws/infer HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
                        "Expect: 100-continue\r\n\r\n".encode())
            assert tls.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            tls.sendall(body.encode())
            got = b""
            while b'"outputs"' not in got or not got.rstrip().endswith(b"}"):
                got += tls.recv(65536)
            assert got.startswith(b"HTTP/1.1 200 OK") and out["label"]["data"][0].encode() in got
        # journaled and counted as ModelInfer: the 28 predictions (12 by gRPC, 16 by REST) collected; the requests
        # that reached the agent's inference counted as gRPC's are: one by gRPC, four answered by REST, four refused
        # there (the FP32 text and the input of another name, errors; the other model twice, not found, which
        # ModelInfer does not count an error)
        assert collect(ws)["dev1"] == {"inserted": 28, "last_seq": 28}
        from runtime.devices import DeviceClient

        with DeviceClient(ws, "dev1") as c:
            h = c.health()
        assert (h["requests"], h["errors"]) == (9, 2), h
        # Health says where the REST binding is (worker 0 serves it; the other worker answered half these calls)
        from runtime.devices import status_line

        assert h["rest"] == agent.rest_url
        assert f"; REST {agent.rest_url}" in status_line(h)
        with DeviceClient(ws, "dev1") as c:
            assert {c.health()["rest"] for _ in range(6)} == {agent.rest_url}
    finally:
        agent.stop()
    bad = subprocess.run([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(tmp_path / "dev"),
                          "--listen", "127.0.0.1:0", "--http", "nowhere"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--http 'nowhere'" in bad.stderr


def test_a_stock_tritonclient_http_client_with_binary_data(packaged, tmp_path):
    """tritonclient.http sends inputs, and asks for outputs, in Triton's binary data extension unless told
    otherwise (a JSON header, its length in Inference-Header-Content-Length, the tensors' bytes after it); the agent
    took only JSON tensors, so a stock client failed against it. Now it answers as Triton does, binary or JSON per
    output as asked."""
    import tritonclient.http as th

    ws = packaged
    agent = _agent(ws, tmp_path)
    ca = str(ws.root / ".cdl" / "pki" / "ca.crt")
    try:
        deploy(ws, "ws:1", "fp32", "dev1")
        texts = _texts(ws, 6)
        expected = _grpc_answer(agent, ca, texts)
        url = agent.rest_url.split("//")[1].removesuffix("/v2")
        client = th.InferenceServerClient(url, ssl=True, ssl_options={"ca_certs": ca})  # the workspace's CA
        assert client.is_server_live() and client.is_model_ready("ws")
        assert client.get_model_metadata("ws")["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        inp = th.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))  # binary: the default
        # no outputs named: every output comes back as binary data
        got = client.infer("ws", [inp], request_id="b1")
        assert got.get_response()["id"] == "b1"
        assert all("binary_data_size" in o["parameters"] for o in got.get_response()["outputs"])
        assert list(got.as_numpy("label")) == list(expected.as_numpy("label"))
        np.testing.assert_allclose(got.as_numpy("probabilities"), expected.as_numpy("probabilities"), atol=1e-6)
        np.testing.assert_allclose(got.as_numpy("confidence"), expected.as_numpy("confidence"), atol=1e-6)
        # outputs asked for: one as JSON, one binary, and Triton's classification extension in binary
        got = client.infer("ws", [inp], outputs=[th.InferRequestedOutput("probabilities", binary_data=False),
                                                 th.InferRequestedOutput("label")])
        outs = {o["name"]: o for o in got.get_response()["outputs"]}
        assert "data" in outs["probabilities"] and "binary_data_size" in outs["label"]["parameters"]
        np.testing.assert_allclose(got.as_numpy("probabilities").reshape(6, 5), expected.as_numpy("probabilities"),
                                   atol=1e-6)
        assert list(got.as_numpy("label")) == list(expected.as_numpy("label"))
        top = client.infer("ws", [inp], outputs=[th.InferRequestedOutput("probabilities", class_count=2)])
        first = top.as_numpy("probabilities")
        assert first.shape == (6, 2) and first[0, 0].decode().endswith(":" + expected.as_numpy("label")[0].decode())
        # Triton's statistics and repository index over REST too (the server metadata names the extension; these
        # paths were 404): four requests of six texts so far, one over gRPC; counts are JSON numbers, as Triton's
        assert "statistics" in client.get_server_metadata()["extensions"]
        for stats in (client.get_inference_statistics("ws"), client.get_inference_statistics(),
                      client.get_inference_statistics("ws", model_version="1")):
            (st,) = stats["model_stats"]
            assert (st["name"], st["version"], st["inference_count"]) == ("ws", "1", 24), st
            assert st["inference_stats"]["success"]["count"] == 4 and st["inference_stats"]["fail"]["count"] == 0
            assert st["inference_stats"]["compute_infer"]["ns"] > 0
        with pytest.raises(Exception, match="version 9 is not loaded"):
            client.get_inference_statistics("ws", model_version="9")
        assert client.get_model_repository_index() == [{"name": "ws", "version": "1", "state": "READY", "reason": ""}]
        # compressed requests and answers, as tritonclient.http sends and asks for them (a gzipped body failed as
        # "the body is not JSON")
        for req_c, resp_c in (("gzip", "gzip"), ("deflate", "deflate"), ("gzip", None), (None, "gzip")):
            got = client.infer("ws", [inp], request_compression_algorithm=req_c, response_compression_algorithm=resp_c)
            assert list(got.as_numpy("label")) == list(expected.as_numpy("label")), (req_c, resp_c)
            np.testing.assert_allclose(got.as_numpy("probabilities"), expected.as_numpy("probabilities"), atol=1e-6)
        client.close()
        # the answer is compressed only when asked (the stock client decompresses only what says it is)
        doc = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[0]]}]}
        raw = _Rest(agent.rest_url, ca)
        for accept, enc, unpack in (("gzip, deflate", "gzip", gzip.decompress), ("deflate;q=1, gzip;q=0", "deflate",
                                                                                   zlib.decompress), ("br", None, bytes)):
            raw.conn.request("POST", "/v2/models/ws/infer", body=json.dumps(doc).encode(),
                             headers={"Accept-Encoding": accept})
            r = raw.conn.getresponse()
            assert (r.status, r.getheader("Content-Encoding")) == (200, enc), accept
            assert json.loads(unpack(r.read()))["outputs"][1]["data"] == [expected.as_numpy("label")[0].decode()]
        # a body sent chunked (requests with a generator, curl -H "Transfer-Encoding: chunked"): it was refused
        body = json.dumps(doc).encode()
        raw.conn.request("POST", "/v2/models/ws/infer", body=iter([body[:10], body[10:]]),
                         headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
        r = raw.conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["outputs"][1]["data"] == [expected.as_numpy("label")[0].decode()]
        for headers, status, says in (({"Content-Encoding": "gzip"}, 400, "the body is not gzip data, as its "
                                       "Content-Encoding says"),
                                      ({"Content-Encoding": "br"}, 415, "Content-Encoding 'br': gzip, deflate or none")):
            assert _Rest(agent.rest_url, ca).call("POST", "/v2/models/ws/infer", doc, headers=headers)[0] == status
            got = _Rest(agent.rest_url, ca).call("POST", "/v2/models/ws/infer", doc, headers=headers)[1]
            assert says in got["error"], got
        # a binary_data_size the body does not hold, or bytes left over, refused by name
        rest = _Rest(agent.rest_url, ca)
        item = len(texts[0].encode()).to_bytes(4, "little") + texts[0].encode()

        def header(size: int) -> bytes:
            return json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                           "parameters": {"binary_data_size": size}}]}).encode()

        for size, tail, says in ((len(item), item[:20], f"binary_data_size {len(item)}, but only 20 bytes of binary "
                                  "data follow the JSON header"),
                                 (len(item), item + b"xx", "2 bytes of binary data after the inputs' binary_data_size")):
            status, said = rest.call("POST", "/v2/models/ws/infer", raw=header(size) + tail,
                                     headers={"Inference-Header-Content-Length": str(len(header(size)))})
            assert status == 400 and says in said["error"], (status, said)
        status, said = rest.call("POST", "/v2/models/ws/infer", raw=header(len(item)) + item,
                                 headers={"Inference-Header-Content-Length": str(len(header(len(item))))})
        # binary in, JSON out (no output asked for as binary): a raw HTTP client's mix
        assert status == 200 and said["outputs"][1]["data"] == [expected.as_numpy("label")[0].decode()], said
        status, said = rest.call("POST", "/v2/models/ws/infer", raw=header(len(item)) + item,
                                 headers={"Inference-Header-Content-Length": "99999"})
        assert status == 400 and "Inference-Header-Content-Length 99999 is not a length within" in said["error"]
        status, said = rest.call("POST", "/v2/models/ws/infer", {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"],
                        "parameters": {"shared_memory_region": "r"}}]})
        assert status == 400 and "the agent has no shared memory" in said["error"]
    finally:
        agent.stop()


def test_rest_wants_the_token_and_tls(packaged, tmp_path):
    ws = packaged
    out = tmp_path / "dev"
    enrolled = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "enroll", "dev1",
                               "--address", "127.0.0.1:0", "--out", str(out), "--inference-auth", "token", "--http",
                               "127.0.0.1:0"], capture_output=True, text=True)
    assert enrolled.returncode == 0, enrolled.stderr
    # what a client trusts and sends, said (tls/ca.crt had to be found by looking, the token was nowhere)
    assert f"clients call it over TLS, trusting the workspace CA in {out / 'tls' / 'ca.crt'}: gRPC at 127.0.0.1:0" \
        in enrolled.stdout and "(`cdl devices token dev1` prints it)" in enrolled.stdout, enrolled.stdout
    assert json.loads((out / "agent.json").read_text())["http_listen"] == "127.0.0.1:0"
    bad = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "enroll", "dev2",
                          "--address", "127.0.0.1:0", "--out", str(tmp_path / "dev2"), "--http", "8000"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "--http '8000'" in bad.stderr and not (tmp_path / "dev2").exists()
    agent = AgentProcess(out)
    agent.start()
    ws.store.update_device("dev1", address=agent.address)
    ca = str(ws.root / ".cdl" / "pki" / "ca.crt")
    try:
        deploy(ws, "ws:1", "fp32", "dev1")
        rest = _Rest(agent.rest_url, ca)
        req = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["shares fell on the market"]}]}
        status, doc = rest.call("POST", "/v2/models/ws/infer", req)
        assert status == 401 and "missing or wrong device token" in doc["error"]
        # the token before anything else: which models the device has is not said to a caller without it
        status, doc = rest.call("POST", "/v2/models/other/infer", {"inputs": []})
        assert status == 401 and "missing or wrong device token" in doc["error"]
        assert rest.call("GET", "/v2/models/ws", headers={"Authorization": "Bearer wrong"})[0] == 401
        # health answers a probe that has no token, as Triton's does (it was 401)
        assert rest.call("GET", "/v2/health/live") == (200, {"live": True})
        assert rest.call("GET", "/v2/health/ready") == (200, {"ready": True})
        cli = [sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "token"]
        token = subprocess.run([*cli, "dev1"], capture_output=True, text=True, check=True).stdout.strip()
        assert token == ws.store.device("dev1").token
        gone = subprocess.run([*cli, "dev9"], capture_output=True, text=True)
        assert gone.returncode == 2 and "device 'dev9' is not enrolled (devices: dev1)" in gone.stderr, gone.stderr
        status, doc = rest.call("POST", "/v2/models/ws/infer", req, headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and doc["outputs"][1]["name"] == "label"
        # plain HTTP (Triton's REST port is plain, so its users type http:// first) is refused with a 400 that
        # says to use https:// (it got no answer at all: "Empty reply from server"), and serves nothing
        host, port = agent.rest_url.split("//")[1].split("/")[0].rsplit(":", 1)
        plain = http.client.HTTPConnection(host, int(port), timeout=10)
        plain.request("POST", "/v2/models/ws/infer", json.dumps(req), headers={"Authorization": f"Bearer {token}"})
        answer = plain.getresponse()
        assert answer.status == 400 and "HTTPS only" in json.loads(answer.read())["error"]
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        plain_client = httpclient.InferenceServerClient(f"{host}:{port}")
        assert not plain_client.is_server_live()
        with pytest.raises(InferenceServerException, match="HTTPS only"):
            plain_client.get_server_metadata()
        with socket.create_connection((host, int(port)), timeout=10) as s:  # a connection that says nothing
            pass
        with socket.create_connection((host, int(port)), timeout=10) as s:  # a TLS record that is no handshake
            s.sendall(b"\x16\x03\x01\x00\x05hello")
            while s.recv(100):  # at most a TLS alert, then the agent closes it (a hang times out the test)
                pass
        status, doc = rest.call("POST", "/v2/models/ws/infer", req, headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and doc["outputs"][1]["name"] == "label"  # and TLS clients are served as before
    finally:
        agent.stop()


def test_rest_clients_at_once_are_batched_and_each_gets_its_own_answer(packaged, tmp_path):
    """16 clients, each on its own kept-alive connection, sending at once: every answer is the one for its own
    text (the dynamic batcher mixes them in one onnxruntime call), and the agent ran fewer batches than requests.
    Both workers answer them (worker 0 served REST alone, one core for every REST client)."""
    from concurrent.futures import ThreadPoolExecutor

    from edge_agent.workers import Counters
    from runtime.devices import DeviceClient

    ws = packaged
    agent = _agent(ws, tmp_path, workers=2)
    ca = str(ws.root / ".cdl" / "pki" / "ca.crt")
    try:
        deploy(ws, "ws:1", "fp32", "dev1")
        texts = _texts(ws, 32)
        expected = _Rest(agent.rest_url, ca).call("POST", "/v2/models/ws/infer", {
            "inputs": [{"name": "text", "shape": [32], "datatype": "BYTES", "data": texts}],
            "outputs": [{"name": "label"}]})[1]["outputs"][0]["data"]

        def client(k: int) -> list[tuple[int, str]]:
            rest = _Rest(agent.rest_url, ca)
            got = []
            for i in range(k, k + 32 * 4, 16):
                status, doc = rest.call("POST", "/v2/models/ws/infer", {
                    "id": str(i), "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                              "data": [texts[i % 32]]}], "outputs": [{"name": "label"}]})
                assert status == 200 and doc["id"] == str(i), doc
                got.append((i, doc["outputs"][0]["data"][0]))
            return got

        with ThreadPoolExecutor(16) as pool:
            answers = [a for got in pool.map(client, range(16)) for a in got]
        assert len(answers) == 128 and all(label == expected[i % 32] for i, label in answers)
        with DeviceClient(ws, "dev1") as c:
            h = c.health()
        assert h["requests"] == 129 and h["errors"] == 0
        assert h["batches"] < 129 and h["items_per_batch"] > 160 / 129, h  # some requests shared a batch
        counters = Counters(agent.data_dir, 2, 0, create=False)
        per_worker = [counters.slot(i)[0] for i in range(2)]
        counters.close()
        assert sum(per_worker) == 129 and min(per_worker) > 0, per_worker
    finally:
        agent.stop()


def test_image_tensors_in_json_become_the_grpc_request():
    """Images as the protocol's JSON: nested lists of pixels, UINT8 or FP32, into the request the gRPC port takes
    (the image model's path through an agent is tested over gRPC, which the REST binding hands the request to)."""
    from edge_agent.rest import _HttpError, request_from_json

    img = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    req, _ = request_from_json({"inputs": [{"name": "image", "shape": [2, 28, 28], "datatype": "UINT8",
                                            "data": img.tolist()}]}, "fm", "")
    (t,) = req.inputs
    assert (req.model_name, t.datatype, list(t.shape)) == ("fm", "UINT8", [2, 28, 28])
    assert list(t.contents.uint_contents) == img.ravel().tolist()
    req, _ = request_from_json({"inputs": [{"name": "image", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1]}]},
                               "fm", "3")
    assert list(req.inputs[0].contents.fp32_contents) == [0.5, 1.0] and req.model_version == "3"
    for bad, says in (([[300, 0]], "UINT8 values must be whole numbers from 0 to 255"),
                      ([["a", 0]], "UINT8 values must be whole numbers from 0 to 255")):
        with pytest.raises(_HttpError, match=says):
            request_from_json({"inputs": [{"name": "image", "shape": [1, 2], "datatype": "UINT8", "data": bad}]},
                              "fm", "")
    with pytest.raises(_HttpError, match=r"inputs\[0\] \(image\): its data are not all FP32 values"):
        request_from_json({"inputs": [{"name": "image", "shape": [1, 1], "datatype": "FP32", "data": ["x"]}]}, "fm", "")
    with pytest.raises(_HttpError, match=r"inputs\[0\].shape must be whole numbers"):
        request_from_json({"inputs": [{"name": "image", "shape": [-1], "datatype": "FP32", "data": [1]}]}, "fm", "")


def test_a_stopped_agent_answers_the_rest_request_it_is_working_on(packaged, tmp_path):
    """SIGTERM (systemd's stop) while a big REST request was being predicted dropped it: the connection closed
    without an answer, though gRPC's port lets calls in flight finish. Now both ports finish what they are
    answering (up to 2 s) before the journal closes, and the agent exits 0."""
    import signal
    import time

    ws = packaged
    agent = _agent(ws, tmp_path)
    try:
        deploy(ws, "ws:1", "fp32", "dev1")
        texts = (_texts(ws, 40) * 50)[:2000]  # 2000 texts: a few hundred ms of preprocessing, in the agent's thread pool
        rest = _Rest(agent.rest_url, str(ws.root / ".cdl" / "pki" / "ca.crt"))
        rest.conn.request("POST", "/v2/models/ws/infer", body=json.dumps({
            "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
            "outputs": [{"name": "label"}]}))
        time.sleep(0.15)
        agent.proc.send_signal(signal.SIGTERM)
        r = rest.conn.getresponse()
        doc = json.loads(r.read())
        assert r.status == 200 and len(doc["outputs"][0]["data"]) == 2000
        assert r.getheader("Connection") == "close"  # a stopping agent takes no further request on it
        assert agent.proc.wait(30) == 0
    finally:
        agent.stop()
