"""Beyond one machine (issue 7): tuning throughput with 1 and 2 workers on one study, and registry writes per
second under 4 concurrent writer processes on SQLite and PostgreSQL.

This machine has 2 cores: each tuning worker is given one (OMP_NUM_THREADS=1), as if each were its own
machine, and the single worker runs the same way; the ratio is printed as measured.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from runtime.jobs import Runner
from runtime.store import Store
from tests.conftest import BBC_ZIP, need

TUNE = ["model.tune.n_trials=12", "model.tune.max_epochs=3", "model.tune.pruner=none",
        "model.tune.sampler=random"]


@pytest.fixture(scope="module")
def bbc(tmp_path_factory):
    from runtime.api import add_source
    from runtime.workspace import Workspace

    need(BBC_ZIP)
    ws = Workspace.init(tmp_path_factory.mktemp("bbc-scale") / "ws", "text-classification")
    add_source(ws, BBC_ZIP)
    assert Runner(ws).run(until="model.preprocess").ok
    yield ws
    ws.close()


def _tune(ws, workers: int) -> float:  # noqa: ANN001
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = str(ws.root)
    extra = [subprocess.Popen([sys.executable, "-m", "runtime.cli", "tune", "worker", "--workspace", root,
                               "--wait", "300", "--json"], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(workers - 1)]
    step = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", root, "run", "model.tune", "--force",
                           "--json", *sum((["--set", s] for s in TUNE), [])], env=env, capture_output=True,
                          text=True, timeout=3600)
    for p in extra:
        p.wait(timeout=600)
    assert step.returncode == 0, step.stderr[-2000:]
    summary = next(s for s in json.loads(step.stdout)["steps"] if s["id"] == "model.tune")["summary"]
    assert len(summary["workers"]) == workers, summary
    trials = ws.store.trials(summary["experiment_id"])
    span = (max(t.finished for t in trials) - min(t.started for t in trials)).total_seconds()
    return len(trials) / span * 60.0


def test_tuning_throughput_one_and_two_workers(bbc, record):
    one = _tune(bbc, 1)
    two = _tune(bbc, 2)
    record("scale.tuning_workers", trials_per_minute_1=round(one, 2), trials_per_minute_2=round(two, 2),
           ratio=round(two / one, 3), cores=os.cpu_count(), threads_per_worker=1)


def _writer(args) -> tuple[int, float, float]:  # noqa: ANN001
    url, schema, n, per, start_at = args
    s = Store(url, schema=schema)
    exp = s.create_experiment(kind="tune", step="model.tune", job=None, dataset_version="v1", transform="t",
                              framework="torch", template="mlp", git_commit=None, git_dirty=False)
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.time()
    writes = 0
    for i in range(per):
        tr = s.create_trial(exp.id, n * 100000 + i, {"lr": 0.1})
        s.log_metrics(tr.id, 1, {"val_accuracy": 0.5, "val_loss": 1.0})
        s.finish_trial(tr.id, "complete", 0.5, 1)
        writes += 3
    t1 = time.time()
    s.close()
    return writes, t0, t1


def _writes_per_second(url: str, schema: str | None, per: int = 300) -> float:
    Store(url, schema=schema).close()
    start_at = time.time() + 3.0
    with mp.get_context("spawn").Pool(4) as pool:
        res = pool.map(_writer, [(url, schema, n, per, start_at) for n in range(4)])
    total = sum(r[0] for r in res)
    span = max(r[2] for r in res) - min(r[1] for r in res)
    return total / span


def test_registry_writes_per_second_with_4_writers(tmp_path, record, request):
    sqlite = _writes_per_second(f"sqlite:///{tmp_path / 'registry.db'}", None)
    figures = {"sqlite_writes_per_s": round(sqlite, 1), "writers": 4}
    if os.environ.get("CDL_TEST_POSTGRES_URL"):
        url, schema = request.getfixturevalue("pg_schema")
        pg = _writes_per_second(url, schema)
        figures.update(postgresql_writes_per_s=round(pg, 1), ratio_pg_to_sqlite=round(pg / sqlite, 3))
    else:
        figures["postgresql"] = "not measured: no CDL_TEST_POSTGRES_URL"
    record("scale.registry_writes", **figures)
