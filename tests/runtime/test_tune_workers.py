"""Tuning workers: `cdl tune worker` processes join the study that model.tune runs, through the registry DB.

Real processes (the step runs in `cdl run`, each worker in `cdl tune worker`), real Optuna RDB storage on the
workspace's SQLite registry (and on PostgreSQL in test_tuning_on_postgresql).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.jobs import Runner


def _cdl(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            cwd=kw.pop("cwd", None), **kw)


def _study(ws, name: str):
    import optuna

    from runtime.ml.tuning import storage

    return optuna.load_study(study_name=name, storage=storage(ws.store))


def _tune_with_a_worker(ws, sets: list[str], env: dict[str, str] | None = None):
    root = str(ws.root)
    worker = _cdl("tune", "worker", "--workspace", root, "--wait", "120", "--json", env=env)
    step = _cdl("-w", root, "run", "model.tune", "--json", *sum((["--set", s] for s in sets), []), env=env)
    out, err = step.communicate(timeout=600)
    wout, werr = worker.communicate(timeout=120)
    assert step.returncode == 0, err[-3000:]
    assert worker.returncode == 0, werr[-3000:]
    return json.loads(out), json.loads(wout)


def _summary(job: dict) -> dict:
    return next(s for s in job["steps"] if s["id"] == "model.tune")["summary"]


def test_two_workers_share_one_study_and_its_budget(small_bbc):
    ws = small_bbc
    assert Runner(ws).run(until="model.preprocess").ok
    job, worker = _tune_with_a_worker(ws, ["model.tune.n_trials=8", "model.tune.max_epochs=12",
                                           "model.tune.reduction_factor=2"])
    s = _summary(job)
    assert s["trials"] == 8, s  # the budget is the study's, not each worker's
    assert len(s["workers"]) == 2 and worker["worker"] in s["workers"]
    assert worker["trials"] >= 1
    records = ws.store.trials(s["experiment_id"])
    assert sorted(r.number for r in records) == list(range(8))
    assert all(r.state in ("complete", "pruned") for r in records)
    study = _study(ws, s["study"])
    # two workers may race for the last trial: the one that loses is refused (marked over_budget, failed at once)
    refused = [t for t in study.trials if t.user_attrs.get("over_budget")]
    assert all(t.state.name == "FAIL" and t.number >= 8 for t in refused)
    assert len(study.trials) - len(refused) == 8 and all(t.state.is_finished() for t in study.trials)
    # pruning across workers: ASHA compares each trial's epochs with every worker's reports
    assert s["pruned"] >= 1, s
    by_worker = {w: [r for r in records if r.worker == w] for w in s["workers"]}
    assert all(by_worker.values())
    # both workers' first-rung results sit in the one study that ASHA reads for every pruning decision
    rung = {t.user_attrs["worker"] for t in study.trials if "completed_rung_0" in t.system_attrs}
    assert rung == set(s["workers"]), rung
    assert s["best_value"] == max(r.value for r in records if r.state == "complete")


def test_a_killed_workers_trial_is_failed_and_run_again(small_bbc):
    ws = small_bbc
    assert Runner(ws).run(until="model.preprocess").ok
    root = str(ws.root)
    sets = ["model.tune.n_trials=3", "model.tune.max_epochs=400", "model.tune.pruner=none",
            "model.tune.heartbeat=1"]
    worker = _cdl("tune", "worker", "--workspace", root, "--wait", "120")
    step = _cdl("-w", root, "run", "model.tune", "--json", *sum((["--set", s] for s in sets), []))
    try:
        victim = None
        deadline = time.time() + 120
        while victim is None and time.time() < deadline:
            for e in ws.store.experiments():
                for r in ws.store.trials(e.id):
                    if r.worker and r.worker.endswith(f":{worker.pid}") and r.state == "running":
                        victim = r
            time.sleep(0.2)
        assert victim is not None, "the worker never started a trial"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        out, err = step.communicate(timeout=900)
    finally:
        for p in (worker, step):
            if p.poll() is None:
                p.kill()
    assert step.returncode == 0, err[-3000:]
    s = _summary(json.loads(out))
    # the lost trial is failed, and run again with its parameters: it does not count against the budget
    assert s["failed"] == 1 and s["retried"] == 1 and s["trials"] == 4, s
    assert ws.store.trial(victim.id).state == "failed"
    study = _study(ws, s["study"])
    dead = next(t for t in study.trials if t.number == victim.number)
    assert dead.state.name == "FAIL"
    (again,) = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert again.state.name == "COMPLETE" and again.params == dead.params
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3
    rec = next(r for r in ws.store.trials(s["experiment_id"]) if r.number == again.number)
    assert rec.state == "complete" and rec.params == victim.params and rec.retry_of == victim.number
    assert ws.store.trial(victim.id).retry_of is None
    assert f"trial {victim.number} again (its worker died)" in err
    message = next(st for st in json.loads(out)["steps"] if st["id"] == "model.tune")["message"]
    assert "(0 pruned, 1 failed, 1 run again)" in message, message


def test_a_killed_tune_step_closes_its_study_to_workers(small_bbc):
    """`cdl run` SIGKILLed in model.tune: its experiment and running trial are failed when the next cdl
    process on this host looks; a worker in the study stops after its trial, and a new one does not join."""
    ws = small_bbc
    assert Runner(ws).run(until="model.preprocess").ok
    worker = _cdl("tune", "worker", "--workspace", str(ws.root), "--wait", "120", "--json")
    step = _cdl("-w", str(ws.root), "run", "model.tune", "--set", "model.tune.max_epochs=300",
                "--set", "model.tune.pruner=none", "--set", "model.tune.n_trials=50")
    try:
        deadline = time.time() + 120
        exp = None
        while time.time() < deadline:
            exps = [e for e in ws.store.experiments() if e.kind == "tune" and e.study]
            states = {(r.worker or "").rsplit(":", 1)[-1]: r.state for r in ws.store.trials(exps[-1].id)} if exps else {}
            if states.get(str(step.pid)) == "running" and states.get(str(worker.pid)) == "running":
                exp = exps[-1]
                break
            time.sleep(0.2)
        assert exp is not None, "model.tune and the worker never both ran a trial"
        step.kill()
        step.wait(timeout=10)
        out, err = worker.communicate(timeout=300)  # it finishes the trial it has, then starts no other
    finally:
        for p in (worker, step):
            if p.poll() is None:
                p.kill()
    assert worker.returncode == 0, err[-2000:]
    res = json.loads(out)
    assert res["study_closed"] is True and res["trials"] < 50, res
    assert ws.store.experiment(exp.id).status == "failed"
    trials = ws.store.trials(exp.id)
    assert {r.state for r in trials if r.worker.endswith(f":{step.pid}")} == {"failed"}  # the step's own
    assert {r.state for r in trials if r.worker.endswith(f":{worker.pid}")} == {"complete"}  # never failed under it
    assert ws.store.last_step_run("model.tune").status == "failed"
    late = _cdl("tune", "worker", "--workspace", str(ws.root))
    _, err = late.communicate(timeout=60)
    assert late.returncode == 2 and "no model.tune study is running" in err, err[-2000:]


def test_a_worker_without_a_study_says_so(small_bbc):
    p = _cdl("tune", "worker", "--workspace", str(small_bbc.root))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert "no model.tune study is running" in err
    # a study named wrong: the close one, and the studies there are (it named none)
    p = _cdl("tune", "worker", "--workspace", str(small_bbc.root), "--study", "ws-tuen-1")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "no Optuna study 'ws-tuen-1' in sqlite:///" in err and "its studies: none" in err
    import optuna

    from runtime.ml.tuning import storage

    for n in range(1, 8):
        optuna.create_study(study_name=f"ws-tune-{n}", storage=storage(small_bbc.store))
    p = _cdl("tune", "worker", "--workspace", str(small_bbc.root), "--study", "ws-tuen-7")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2, err
    assert "(did you mean 'ws-tune-7'?); its studies: ws-tune-3, ws-tune-4, ws-tune-5, ws-tune-6, ws-tune-7 and 2 " \
        "older" in err, err


@pytest.mark.postgres
def test_tuning_on_postgresql_end_to_end(tmp_path: Path, pg_schema):
    """The registry, the labels and the Optuna study on PostgreSQL; the step and a worker share the study."""
    from tests.conftest import small_bbc_workspace

    url, schema = pg_schema
    env = {"CDL_DATABASE_URL": url, "CDL_DATABASE_SCHEMA": schema}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ws = small_bbc_workspace(tmp_path / "ws", per_class=20)
        assert ws.store.engine.dialect.name == "postgresql"
        assert Runner(ws).run(until="model.preprocess").ok
        assert len(ws.store.labels()) > 0
        job, worker = _tune_with_a_worker(ws, ["model.tune.n_trials=4", "model.tune.max_epochs=40",
                                                    "model.tune.pruner=none"], env=env)
        s = _summary(job)
        assert s["trials"] == 4 and len(s["workers"]) == 2
        study = _study(ws, s["study"])
        assert study._storage._backend.engine.dialect.name == "postgresql"
        assert len([t for t in study.trials if not t.user_attrs.get("over_budget")]) == 4  # (a lost race is refused)
        res = Runner(ws).run(steps=["model.train", "model.register"])
        assert res.ok, [o.error for o in res.steps]
        mv = ws.store.model_versions()[0]
        assert mv.params["lr"] == pytest.approx(s["best_params"]["lr"])
        ws.close()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_named_study_resumed_runs_its_budget_again(small_bbc):
    ws = small_bbc
    sets = {"model.tune": {"n_trials": 2, "max_epochs": 1, "study": "shared-study"}}
    first = Runner(ws).run(steps=["model.preprocess", "model.tune"], overrides=sets)
    second = Runner(ws).run(steps=["model.tune"], overrides=sets, force=True)
    assert first.ok and second.ok, [o.error for o in second.steps]
    s1, s2 = first.steps[-1].summary, second.steps[-1].summary
    assert s1["trials"] == 2 and s2["trials"] == 2
    assert len(_study(ws, "shared-study").trials) == 4
    assert sorted(r.number for r in ws.store.trials(s2["experiment_id"])) == [2, 3]


def test_a_study_is_named_as_the_dashboard_names_its_experiment(small_bbc):
    """The study took the experiment's id, which training experiments count too: the log said "study ws-tune-3" of
    the experiment the tuning dashboard lists as tune-2. A name another study holds is left to it."""
    import optuna

    from runtime.jobs import Runner
    from runtime.ml.tuning import storage

    ws = small_bbc
    over = {"model.tune": {"n_trials": 1, "max_epochs": 1}, "model.train": {"epochs": 1}}
    names = []
    for seed in (1, 2, 3):
        if seed == 3:
            optuna.create_study(study_name="ws-tune-3", storage=storage(ws.store))  # someone's own study
        over["model.tune"]["seed"] = seed
        res = Runner(ws).run(steps=["model.preprocess", "model.tune", "model.train"], overrides=over)
        assert res.ok, [o.error for o in res.steps]
        s = res.steps[1].summary
        names.append((s["experiment_id"], ws.store.experiment(s["experiment_id"]).name, s["study"]))
    # ids 1, 3, 5: a training experiment between each
    assert names == [(1, "tune-1", "ws-tune-1"), (3, "tune-2", "ws-tune-2"), (5, "tune-3", "ws-tune-5")], names
