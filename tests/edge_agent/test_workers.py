"""Several agent processes on one port, and dynamic batching: real agents on 127.0.0.1, real models, real journals."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import struct
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from runtime.devices import DeviceClient, collect, deploy, rollback
from tests.conftest import oip_text_request, restart


def _texts(ws, n: int) -> list[str]:
    from runtime.workspace.dataset import decode_text

    view = ws.dataset()
    rows = [r for r in view.rows if r.split == "test"][:n]
    return [decode_text(view.read_bytes(r))[0] for r in rows]


def _children(pid: int) -> set[int]:
    """Live child processes of pid (any of its threads may have started them)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(p) for p in (task / "children").read_text().split()}
        except (FileNotFoundError, ProcessLookupError):
            continue
    return {p for p in out if _alive(p)}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait(cond, timeout: float = 20.0) -> bool:  # noqa: ANN001
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _infer_on_connections(agent, ws, texts: list[str], connections: int, rounds: int) -> list[tuple[str, float]]:
    """Each connection (its own TCP connection: the kernel gives each to one worker) sends `rounds` requests of
    one text; returns (label, confidence) of every reply."""
    from tritonclient.grpc import service_pb2_grpc

    ca = (ws.root / ".cdl" / "pki" / "ca.crt").read_bytes()

    async def one(k: int, stub) -> list[tuple[str, float]]:  # noqa: ANN001
        out = []
        for i in range(rounds):
            r = await stub.ModelInfer(oip_text_request(texts[(k + i) % len(texts)]), timeout=30)
            labels = dict(zip([o.name for o in r.outputs], r.raw_output_contents, strict=True))
            out.append((labels["label"][4:].decode(), struct.unpack("<f", labels["confidence"])[0]))
        return out

    async def main() -> list[tuple[str, float]]:
        chans = [grpc.aio.secure_channel(agent.address, grpc.ssl_channel_credentials(ca),
                                         options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(connections)]
        try:
            res = await asyncio.gather(*(one(k, service_pb2_grpc.GRPCInferenceServiceStub(c))
                                         for k, c in enumerate(chans)))
        finally:
            for c in chans:
                await c.close()
        return [x for r in res for x in r]

    return asyncio.run(main())


def _uptimes(agent, ws, connections: int) -> list[float]:
    """Health's uptime over `connections` connections (so both workers answer some)."""
    from edge_agent.proto import edge_pb2 as epb
    from edge_agent.proto import edge_pb2_grpc as epb_grpc

    ca = (ws.root / ".cdl" / "pki" / "ca.crt").read_bytes()
    token = ws.store.device("dev1").token

    async def main() -> list[float]:
        chans = [grpc.aio.secure_channel(agent.address, grpc.ssl_channel_credentials(ca),
                                         options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(connections)]
        try:
            res = await asyncio.gather(*(epb_grpc.EdgeControlStub(c).Health(
                epb.HealthRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=30) for c in chans))
        finally:
            for c in chans:
                await c.close()
        return [r.uptime_s for r in res]

    return asyncio.run(main())


def _journal_bundles_after(data_dir: Path, seq: int) -> set[str]:
    con = sqlite3.connect(data_dir / "journal.db")
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT bundle_id FROM scoring WHERE seq > ?", (seq,))}
    finally:
        con.close()


def _last_seq(data_dir: Path) -> int:
    con = sqlite3.connect(data_dir / "journal.db")
    try:
        row = con.execute("SELECT MAX(seq) FROM scoring").fetchone()
        return row[0] or 0
    finally:
        con.close()


def test_two_workers_share_the_port_the_model_and_the_journal(packaged, agent_factory):
    from edge_agent.workers import Counters

    ws = packaged
    agent = agent_factory(ws, workers=2, raw_below=0.0)
    up_by = time.time()  # the agent was up by then
    workers = _children(agent.proc.pid)
    assert len(workers) == 1, "worker 0 starts one more worker"
    first = deploy(ws, "ws:1", "fp32", "dev1")
    texts = _texts(ws, 16)
    replies = _infer_on_connections(agent, ws, texts, connections=12, rounds=6)
    assert len(replies) == 72
    # both processes answered: each has its own slot in the shared counters, and Health sums them
    counters = Counters(agent.data_dir, 2, 0, create=False)
    per_worker = [counters.slot(i)[0] for i in range(2)]
    counters.close()
    assert all(n > 0 for n in per_worker), per_worker
    with DeviceClient(ws, "dev1") as c:
        h = c.health()
    assert h["requests"] == 72 and h["errors"] == 0 and h["workers"] == 2
    assert 0 < h["batches"] <= 72 and h["items_per_batch"] == round(72 / h["batches"], 2)
    import subprocess
    import sys

    status = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "status", "dev1"],
                            capture_output=True, text=True, check=True).stdout
    assert "72 requests" in status and "2 workers" in status and "items a batch" in status
    # where a request's time went, summed over both workers (each batch's time once for each of its requests)
    ms = h["request_ms"]
    assert list(ms) == ["queue", "preprocessing", "onnxruntime", "journal"] and all(v >= 0 for v in ms.values())
    assert ms["preprocessing"] > 0 and ms["onnxruntime"] > 0, ms
    assert "; a request: queue " in status and f"preprocessing {ms['preprocessing']:g} ms" in status, status
    assert h["journal"]["records"] == 72 and h["journal"]["last_seq"] == 72
    # an activation through one worker: every request after it, on every connection, runs the new model
    before = _last_seq(agent.data_dir)
    second = deploy(ws, "ws:1", "dynamic_int8", "dev1")
    _infer_on_connections(agent, ws, texts, connections=12, rounds=3)
    assert _journal_bundles_after(agent.data_dir, before) == {second["bundle_id"]}
    before = _last_seq(agent.data_dir)
    assert rollback(ws, "dev1")["bundle_id"] == first["bundle_id"]
    _infer_on_connections(agent, ws, texts, connections=12, rounds=3)
    assert _journal_bundles_after(agent.data_dir, before) == {first["bundle_id"]}
    # one journal for both: sequence numbers 1..N, each once, and the collector gets them all
    collect(ws)
    from runtime.devices import scoring_store

    seqs = [r[0] for r in scoring_store(ws).query("SELECT seq FROM scoring WHERE device = 'dev1' ORDER BY seq")]
    assert seqs == list(range(1, 72 + 36 + 36 + 1))
    # a worker that dies is started again, and the agent goes on serving
    (w1,) = workers
    os.kill(w1, signal.SIGKILL)
    assert _wait(lambda: len(_children(agent.proc.pid) - {w1}) == 1), "the dead worker was not started again"
    counters = Counters(agent.data_dir, 2, 0, create=False)
    served = counters.slot(1)[0]
    sent = 0

    def restarted_worker_serves() -> bool:  # once it has loaded the model, the kernel gives it connections
        nonlocal sent
        sent += len(_infer_on_connections(agent, ws, texts, connections=8, rounds=2))
        return counters.slot(1)[0] > served

    assert _wait(restarted_worker_serves, 60), "the restarted worker never answered"
    counters.close()
    with DeviceClient(ws, "dev1") as c:  # the new worker went on from its slot's count
        assert c.health()["requests"] == 72 + 36 + 36 + sent
    # uptime is the agent's (worker 0's), not the answering worker's: the restarted one reports it too
    at_least = time.time() - up_by
    uptimes = _uptimes(agent, ws, connections=12)
    assert min(uptimes) >= at_least, (at_least, uptimes)
    # worker 0 SIGKILLed: the others die with it (nothing keeps serving the port), and a restart works
    workers = _children(agent.proc.pid)
    agent.kill()
    assert _wait(lambda: not any(_alive(p) for p in workers), 10), "a worker outlived worker 0"
    restart(ws, agent)
    assert len(_infer_on_connections(agent, ws, texts, connections=4, rounds=2)) == 8
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["bundle_id"] == first["bundle_id"]


def test_prometheus_metrics_sum_every_worker(packaged, tmp_path):
    """GET /metrics (agent.json's metrics_listen) as Triton serves it: parsed with the Prometheus client's own
    parser; the counters and the latency histogram are the whole agent's, whichever worker answered."""
    import json
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from edge_agent.config import AgentConfig, ConfigError
    from runtime.devices import enroll
    from tests.conftest import AgentProcess

    ws = packaged
    out = tmp_path / "dev"
    enroll(ws, "dev1", "127.0.0.1:0", out)
    doc = json.loads((out / "agent.json").read_text())
    assert doc["metrics_listen"] is None  # off unless asked for
    for bad in ("8002", "localhost", 8002):
        (out / "agent.json").write_text(json.dumps({**doc, "metrics_listen": bad}))
        with pytest.raises(ConfigError, match="metrics_listen"):
            AgentConfig.load(out)
    # a misspelt setting beside (it was ignored without a word): the agent's log names it
    (out / "agent.json").write_text(json.dumps({**doc, "metrics_listen": "127.0.0.1:0", "max_batchsize": 16}))
    agent = AgentProcess(out, workers=2)
    agent.start()
    try:
        ws.store.update_device("dev1", address=agent.address)
        deploy(ws, "ws:1", "fp32", "dev1")
        replies = _infer_on_connections(agent, ws, _texts(ws, 16), connections=12, rounds=6)
        assert len(replies) == 72
        url = agent.metrics_url

        def scrape() -> dict:
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            return {f.name: f for f in text_string_to_metric_families(text)}

        m = scrape()
        assert m["cdl_edge_requests"].samples[0].value == 72  # the parser drops a counter's _total
        assert m["cdl_edge_request_errors"].samples[0].value == 0
        info = m["cdl_edge_model_info"].samples[0].labels
        assert (info["name"], info["version"], info["variant"]) == ("ws", "1", "fp32")
        assert m["cdl_edge_info"].samples[0].labels["workers"] == "2"
        hist = {s.name + s.labels.get("le", ""): s.value for s in m["cdl_edge_request_duration_seconds"].samples}
        buckets = [v for k, v in hist.items() if "_bucket" in k]
        assert buckets == sorted(buckets) and hist["cdl_edge_request_duration_seconds_bucket+Inf"] == 72
        assert hist["cdl_edge_request_duration_seconds_count"] == 72 and hist["cdl_edge_request_duration_seconds_sum"] > 0
        assert m["cdl_edge_batch_items"].samples[0].value == 72
        assert m["cdl_edge_journal_last_seq"].samples[0].value == 72
        assert m["cdl_edge_journal_unacked_records"].samples[0].value == 72
        assert m["cdl_edge_free_disk_bytes"].samples[0].value > 0
        assert m["cdl_edge_certificate_expiry_timestamp_seconds"].samples[0].value > time.time() + 800 * 86400
        collect(ws)
        m = scrape()
        assert m["cdl_edge_journal_acked_seq"].samples[0].value == 72
        assert m["cdl_edge_journal_unacked_records"].samples[0].value == 0
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url.replace("/metrics", "/"), timeout=10)
        assert err.value.code == 404
    finally:
        agent.stop()
    log = agent.log()
    assert log.count("'max_batchsize' is no setting of this agent (did you mean 'max_batch'?); it is ignored") == 1, \
        log[-2000:]
    bad = subprocess.run([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(out), "--listen",
                          "127.0.0.1:0", "--metrics", "nowhere"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--metrics 'nowhere'" in bad.stderr


def test_metrics_can_want_the_device_token(packaged, tmp_path):
    """`cdl devices enroll --metrics-auth token`: a scrape without the device token, or with another, gets 401 and
    a Bearer challenge; with it (Prometheus' `authorization` scrape setting) the page."""
    import json
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from edge_agent.config import AgentConfig, ConfigError
    from tests.conftest import AgentProcess

    ws = packaged
    out = tmp_path / "dev"
    subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "enroll", "dev1", "--address",
                    "127.0.0.1:0", "--out", str(out), "--metrics", "127.0.0.1:0", "--metrics-auth", "token"],
                   check=True, capture_output=True)
    doc = json.loads((out / "agent.json").read_text())
    assert doc["metrics_auth"] == "token"
    (out / "agent.json").write_text(json.dumps({**doc, "metrics_auth": "secret"}))
    with pytest.raises(ConfigError, match="metrics_auth must be 'open' or 'token'"):
        AgentConfig.load(out)
    (out / "agent.json").write_text(json.dumps(doc))
    agent = AgentProcess(out)
    agent.start()
    try:
        url = agent.metrics_url
        token = ws.store.device("dev1").token
        for header in (None, "Bearer wrong", f"Basic {token}"):
            req = urllib.request.Request(url, headers={"Authorization": header} if header else {})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 401 and err.value.headers["WWW-Authenticate"].startswith("Bearer")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        text = urllib.request.urlopen(req, timeout=10).read().decode()
        assert "cdl_edge_requests" in {f.name for f in text_string_to_metric_families(text)}
    finally:
        agent.stop()


def test_workers_with_no_model_load_onnxruntime_at_start(packaged, agent_factory):
    """A worker that follows another's activation loads the model on a request: onnxruntime and the stemmer
    must be imported already (about a second), or that request, and every other on the worker, waits."""
    agent = agent_factory(packaged, workers=2)
    pids = [agent.proc.pid, *_children(agent.proc.pid)]
    assert len(pids) == 2
    for pid in pids:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "onnxruntime_pybind11_state" in maps, f"worker {pid} has not loaded onnxruntime"


def test_workers_setting_is_checked(tmp_path, packaged):
    import json
    import subprocess
    import sys

    from edge_agent.config import AgentConfig, ConfigError

    out = tmp_path / "dev"
    cdl = [sys.executable, "-m", "runtime.cli", "-w", str(packaged.root), "devices", "enroll", "devw",
           "--address", "127.0.0.1:0", "--out", str(out), "--json"]
    bad = subprocess.run([*cdl, "--workers", "0"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--workers" in bad.stderr and not out.exists()
    bad = subprocess.run([*cdl, "--metrics", "9100"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--metrics '9100'" in bad.stderr and not out.exists()
    subprocess.run([*cdl, "--workers", "2", "--metrics", "127.0.0.1:9100"], check=True, capture_output=True)
    cfg = AgentConfig.load(out)
    assert (cfg.workers, cfg.max_batch, cfg.max_queue_delay_ms) == (2, 64, 2.0)
    assert cfg.metrics_listen == "127.0.0.1:9100"
    assert (cfg.keep_bundles, cfg.min_free_bytes) == (3, 64 << 20)
    doc = (out / "agent.json").read_text()
    # saved again by an editor that writes a byte order mark (Notepad's "UTF-8 with BOM"): "not valid JSON"
    (out / "agent.json").write_bytes(b"\xef\xbb\xbf" + doc.encode())
    assert AgentConfig.load(out).workers == 2
    again = subprocess.run([*cdl, "--replace", "--workers", "3"], capture_output=True, text=True)  # keeps settings
    assert again.returncode == 0 and AgentConfig.load(out).metrics_listen == "127.0.0.1:9100", again.stderr
    (out / "agent.json").write_text(doc)

    for key, bad in (("workers", 0), ("workers", "2"), ("max_batch", 0), ("max_queue_delay_ms", -1),
                     ("keep_bundles", 1), ("keep_bundles", 2.5), ("min_free_bytes", -1), ("min_free_bytes", "1G")):
        (out / "agent.json").write_text(json.dumps({**json.loads(doc), key: bad}))
        with pytest.raises(ConfigError, match=key):
            AgentConfig.load(out)


# -- the dynamic batcher, on a real model from a real bundle and a real journal -----------------------------


@pytest.fixture
def loaded(packaged, tmp_path):
    from edge_agent.inference.model import LoadedModel
    from edge_agent.proto.bundle import extract_verified

    ws = packaged
    bundle = ws.root / ".cdl" / "bundles" / "ws-v1-fp32.cdlb"
    pub = (ws.root / ".cdl" / "keys" / "bundle-signing.pub.pem").read_bytes()
    dest = tmp_path / "bundle"
    extract_verified(bundle.read_bytes(), [pub], dest)
    import json

    return LoadedModel("b1", dest, json.loads((dest / "manifest.json").read_text())), _texts(ws, 24)


def _batcher(tmp_path, sync: str = "normal", max_batch: int = 64):
    from concurrent.futures import ThreadPoolExecutor

    from edge_agent.inference.batching import Batcher
    from edge_agent.journal import Journal

    journal = Journal(tmp_path / f"journal-{sync}.db", sync)
    return Batcher(journal, ThreadPoolExecutor(2), max_batch, keep_raw_below=0.0, max_delay_ms=50.0), journal


@pytest.mark.parametrize("sync", ["normal", "full"])
def test_batched_predictions_equal_single_ones_and_are_journaled(loaded, tmp_path, sync):
    model, texts = loaded
    batcher, journal = _batcher(tmp_path, sync)

    async def main():  # noqa: ANN202
        first = await batcher.predict(model, texts[:1], [texts[0].encode()])  # a lone request: a batch of one
        together = await asyncio.gather(*(batcher.predict(model, [t], [t.encode()]) for t in texts))
        return first, together

    first, together = asyncio.run(main())
    assert batcher.batches < 1 + len(texts), "concurrent requests were not batched"
    assert batcher.batched_items == 1 + len(texts)
    alone = [model.predict_texts([t]) for t in texts]
    for got, want in zip(together, alone, strict=True):
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-6)
        assert got.labels == want.labels and got.summaries == want.summaries
    np.testing.assert_allclose(first.probabilities, alone[0].probabilities, atol=1e-6)
    rows = journal.read(0, 100)
    assert [r["seq"] for r in rows] == list(range(1, len(texts) + 2))
    assert [r["label"] for r in rows[1:]] == [p.labels[0] for p in together]
    journal.close()


def test_a_request_that_breaks_a_batch_fails_alone(loaded, tmp_path):
    model, texts = loaded
    batcher, journal = _batcher(tmp_path)

    class Breaks:  # the real model, except that one input makes it raise
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(model, name)

        def predict_texts(self, items: list[str]):  # noqa: ANN202
            if "BOOM" in items:
                raise ValueError("this input breaks the model")
            return model.predict_texts(items)

    broken = Breaks()

    async def main():  # noqa: ANN202
        await batcher.predict(broken, texts[:1], [b""])
        batcher._last = 8  # the next batch waits for 8 items
        items = [*texts[:4], "BOOM", *texts[4:7]]
        return await asyncio.gather(*(batcher.predict(broken, [t], [b""]) for t in items), return_exceptions=True)

    res = asyncio.run(main())
    assert isinstance(res[4], ValueError) and "breaks the model" in str(res[4])
    assert all(not isinstance(r, BaseException) for i, r in enumerate(res) if i != 4)
    assert journal.count() == 1 + 7  # the failed request has no record; the others have theirs
    journal.close()


def test_a_journal_that_cannot_be_written_fails_the_requests(loaded, tmp_path):
    from edge_agent.inference.batching import JournalError

    model, texts = loaded
    batcher, journal = _batcher(tmp_path)
    journal._conn.execute("PRAGMA query_only = ON")  # every write now fails, as on a read-only or full disk

    async def main():  # noqa: ANN202
        return await asyncio.gather(*(batcher.predict(model, [t], [b""]) for t in texts[:4]), return_exceptions=True)

    res = asyncio.run(main())
    assert all(isinstance(r, JournalError) for r in res), res
    journal._conn.execute("PRAGMA query_only = OFF")
    assert journal.count() == 0
    journal.close()


def test_a_batch_summarises_each_text_as_summarize_does(loaded):
    model, texts = loaded
    tp = model.pipeline
    terms = model.tracked_terms or ["said", "year", "game"]
    x, summaries = tp.process([*texts, "", "zzzz qqqq"], terms)
    assert summaries == [tp.summarize(t, terms) for t in [*texts, "", "zzzz qqqq"]]
    np.testing.assert_array_equal(x, tp.transform([*texts, "", "zzzz qqqq"])[0])
    assert any(s["terms"] for s in summaries) and summaries[-1]["oov_rate"] == 1.0
