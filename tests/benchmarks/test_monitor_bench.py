"""Monitoring benchmarks: scoring ingestion, a drift check over a million rows, false alarms on
in-distribution windows, and the records needed to detect each shift."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from runtime import monitor
from runtime.ml import reference as refstats
from runtime.scoring import ScoringStore


def _rows(n: int, start: int = 1, rng=np.random.default_rng(0)):  # noqa: B008
    terms = ["market", "share", "year", "govern", "game", "film", "use", "compani", "peopl", "new"]
    conf = rng.beta(8, 1, n)
    length = rng.normal(220, 80, n)
    for i in range(n):
        yield {"device": "bench", "seq": start + i, "time": 1.8e9 + i, "bundle_id": "b1", "model": "m", "version": "1",
               "variant": "fp32", "label": "tech", "confidence": float(conf[i]), "probabilities": "[0.1, 0.9]",
               "latency_ms": 0.4,
               "input_summary": json.dumps({"length": float(length[i]), "oov_rate": 0.05,
                                            "terms": terms[: 1 + i % 5]}), "raw_input": None, "raw_kind": "text"}


def test_scoring_ingestion_rate(tmp_path, record):
    store = ScoringStore(tmp_path / "s.duckdb")
    rows = list(_rows(200_000))
    t0 = time.perf_counter()
    for i in range(0, len(rows), 50_000):
        store.insert(rows[i : i + 50_000])
    dt = time.perf_counter() - t0
    rate = len(rows) / dt
    assert store.count() == 200_000
    record("monitor.ingestion", rows=len(rows), rows_per_s=round(rate), target=50_000)
    assert rate >= 50_000


def test_drift_check_over_a_million_rows(tmp_path, record):
    store = ScoringStore(tmp_path / "s.duckdb")
    classes = ["business", "entertainment", "politics", "sport", "tech"]
    with store.connect() as con:
        con.execute("""
            INSERT INTO scoring (device, seq, time, bundle_id, model, version, variant, label, confidence,
                                 probabilities, latency_ms, input_summary, raw_input, raw_kind, length, oov_rate, terms)
            SELECT 'bench', i, 1.8e9 + i, 'b1', 'm', '1', 'fp32',
                   ['business', 'entertainment', 'politics', 'sport', 'tech'][1 + (i % 5)],
                   0.5 + random() / 2, '[]', 0.4, '{}', NULL, 'text', 100 + random() * 300, random() / 10,
                   ['market', 'year', 'game'][1:1 + (i % 3)]
            FROM range(1, 1000001) t(i)""")
    rng = np.random.default_rng(1)
    n = 500
    summaries = {"length": rng.uniform(100, 400, n).astype(np.float32), "oov_rate": rng.uniform(0, 0.1, n).astype(np.float32),
                 "terms": rng.random((n, 3)) < 0.5}
    probs = rng.dirichlet(np.ones(5), n)
    ref = refstats.build("text", classes, summaries, np.arange(n), probs, ["market", "year", "game"])
    manifest = {"name": "m", "version": "1", "variant": "fp32", "classes": classes, "reference": ref}
    with store.connect() as con:
        monitor.check(con, "bench", "b1", manifest, size=1000)  # warm-up
        t0 = time.perf_counter()
        res = monitor.check(con, "bench", "b1", manifest, size=1_000_000)
        dt = time.perf_counter() - t0
    assert res["window"]["n"] == 1_000_000 and len(res["tests"]) == 5
    record("monitor.check_1m_rows", rows=1_000_000, seconds=round(dt, 3), target_s=1.0)
    assert dt <= 1.0


# -- false alarms and detection on real models through a real agent ---------------------------------------------


def _windows(ws, device: str, bundle: str, seqs: list[int], size: int, count: int, seed: int) -> list[bool]:
    from runtime.devices import scoring_store

    manifest = monitor.bundle_manifest(ws, bundle)
    rng = np.random.default_rng(seed)
    out = []
    with scoring_store(ws).connect() as con:
        for _ in range(count):
            pick = sorted(rng.choice(seqs, size=size, replace=False).tolist())
            con.execute(f"CREATE OR REPLACE TEMP TABLE picked AS SELECT * FROM scoring WHERE device = '{device}' "
                        f"AND seq IN ({', '.join(map(str, pick))})")
            out.append(monitor.check(_Picked(con), device, bundle, manifest, size=size, min_records=10)["drifted"])
    return out


class _Picked:
    def __init__(self, con):  # noqa: ANN001
        self.con = con

    def execute(self, sql: str, params=None):  # noqa: ANN001, ANN201
        if sql.startswith("CREATE OR REPLACE TEMP TABLE w AS"):
            return self.con.execute("CREATE OR REPLACE TEMP TABLE w AS SELECT * FROM picked")
        return self.con.execute(sql, params or [])


def test_false_alarms_and_detection_text(bbc_packaged, agent_factory, record):
    from runtime.devices import collect, deploy
    from runtime.ml.reference import reference_half
    from tests.integration.test_monitoring import held_out_texts, other_domain_texts, records_to_detect, send

    ws = bbc_packaged
    agent = agent_factory(ws, raw_below=0.0)
    bundle = deploy(ws, "ws:1", "fp32", "dev1")["bundle_id"]
    texts = held_out_texts(ws)
    _, holdout = reference_half(len(texts), 42)  # the half of the test split the reference did not use
    texts = [texts[i] for i in holdout]
    send(agent, ws, texts)
    collect(ws)
    seqs = list(range(1, len(texts) + 1))
    alarms = _windows(ws, "dev1", bundle, seqs, 100, 60, seed=3)
    rate = sum(alarms) / len(alarms)
    send(agent, ws, other_domain_texts(300))
    collect(ws)
    needed = records_to_detect(ws, "dev1", bundle, len(texts))
    record("monitor.text", in_distribution_windows=len(alarms), window=100, false_alarm_rate=round(rate, 3),
           target_false_alarm=0.05, records_to_detect_other_domain=needed)
    assert rate <= 0.05


@pytest.mark.parametrize("shift", ["inverted", "noisy"])
def test_false_alarms_and_detection_images(tmp_path, agent_factory, record, shift):
    import tritonclient.grpc as tc

    from runtime.api import add_source
    from runtime.devices import collect, deploy
    from runtime.jobs import Runner
    from runtime.registry import review
    from runtime.workspace import Workspace
    from tests.conftest import FASHION, need
    from tests.integration.conftest import fast
    from tests.integration.test_monitoring import records_to_detect

    ws = Workspace.init(tmp_path / "fm", "image-classification")
    add_source(ws, need(FASHION), {"class_names": "fashion-mnist"})
    cfg = ws.config()
    fast(cfg, epochs=3)
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok
    review(ws.store, "fm:1", True, "bench", "bench")
    assert Runner(ws).run(until="deploy.package").ok
    agent = agent_factory(ws, raw_below=0.0)
    bundle = deploy(ws, "fm:1", "fp32", "dev1")["bundle_id"]
    from runtime.ml.reference import reference_half

    view = ws.dataset()
    rows = [r for r in view.rows if r.split == "test"]
    _, holdout = reference_half(len(rows), 42)  # the half of the test split the reference did not use
    test = view.images([rows[i] for i in holdout[:3000]])
    client = tc.InferenceServerClient(agent.address, ssl=True, root_certificates=str(ws.root / ".cdl/pki/ca.crt"))

    def push(images: np.ndarray) -> None:
        for i in range(0, len(images), 100):
            b = np.ascontiguousarray(images[i : i + 100][..., None])
            inp = tc.InferInput("image", list(b.shape), "UINT8")
            inp.set_data_from_numpy(b)
            client.infer("fm", [inp])

    push(test)
    collect(ws)
    alarms = _windows(ws, "dev1", bundle, list(range(1, len(test) + 1)), 200, 60, seed=5)
    rate = sum(alarms) / len(alarms)
    rng = np.random.default_rng(0)
    shifted = 255 - test[:300] if shift == "inverted" else np.clip(
        test[:300].astype(np.int16) + rng.normal(0, 60, test[:300].shape), 0, 255).astype(np.uint8)
    push(shifted)
    collect(ws)
    needed = records_to_detect(ws, "dev1", bundle, len(test))
    client.close()
    record(f"monitor.images_{shift}", in_distribution_windows=len(alarms), window=200,
           false_alarm_rate=round(rate, 3), target_false_alarm=0.05, records_to_detect=needed)
    assert rate <= 0.05
    ws.close()
