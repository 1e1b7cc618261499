"""`cdl experiments list|show`: the experiment registry read headless, as MLflow lists runs and `optuna trials` a
study's trials. A CI job that ran model.tune had one line ("best val_accuracy 0.98 after 3 trials") and no way to
see which trial that was, with what parameters, what the others did, or a training run's epochs."""

from __future__ import annotations

import json

import optuna
from click.testing import CliRunner

from runtime.cli import cli
from runtime.jobs import Runner


def _cdl(ws, *args: str):  # noqa: ANN001, ANN202
    return CliRunner().invoke(cli, ["-w", str(ws.root), *args])


def _rows(out: str) -> list[dict]:
    """The trial table of `cdl experiments show`: number, best mark, state, value."""
    rows = []
    for ln in out.splitlines():
        tok = ln.split()
        if tok and tok[0].isdigit():
            best = tok[1] == "*"
            state, value = tok[1 + best], tok[2 + best]
            rows.append({"number": int(tok[0]), "best": best, "state": state,
                         "value": None if value == "-" else float(value), "line": ln})
    return rows


def test_experiments_list_and_show_a_real_tune_and_train(small_bbc):
    ws = small_bbc
    r = _cdl(ws, "experiments", "list")
    assert r.exit_code == 0 and r.stdout == "" and "no experiments yet" in r.stderr, r.output
    result = Runner(ws).run(until="model.register")
    assert result.ok
    store = ws.store
    tune, train = store.experiments()
    # the steps' lines name the experiment, so that `cdl runs model.tune` leads here
    said = {o.step: o.message for o in result.steps}
    assert f"of {tune.name}) after" in said["model.tune"] and f"({train.name}: " in said["model.train"], said
    trials = store.trials(tune.id)
    mv = store.model_versions()[-1]

    r = _cdl(ws, "experiments", "list")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    best = max((t for t in trials if t.state == "complete"), key=lambda t: (t.value, -t.number))
    assert lines[0].startswith(f"#{tune.id}") and tune.name in lines[0]
    assert f"best val_accuracy {best.value:.4f} (trial {best.number})" in lines[0]
    assert f"{len(trials)} trials" in lines[0] and f"→ {mv.ref} trained with its best" in lines[0]
    assert train.name in lines[1] and lines[1].endswith(f"→ {mv.ref}")
    r = _cdl(ws, "experiments", "list", "--kind", "train", "--json")
    doc = json.loads(r.stdout)
    assert [e["name"] for e in doc["experiments"]] == [train.name]
    assert doc["experiments"][0]["models"] == [mv.ref]

    # show: the tuning experiment's trials, the parameters they differ in, the best one marked
    r = _cdl(ws, "experiments", "show", tune.name)
    assert r.exit_code == 0, r.output
    out = r.stdout
    url = f"sqlite:///{ws.root / '.cdl' / 'registry.db'}"
    assert f"Optuna study {tune.study}, storage " in out
    # the storage it names opens the study, with the trials shown
    study = optuna.load_study(study_name=tune.study, storage=out.split("storage ", 1)[1].split()[0])
    assert len(study.trials) == len(trials)
    assert url in out
    rows = _rows(out)
    assert [r["number"] for r in rows] == [t.number for t in trials]
    for t, row in zip(trials, rows, strict=True):
        assert row["state"] == t.state and f"lr={t.params['lr']:.4g}" in row["line"], row
        assert row["best"] == (t.number == best.number) and row["value"] == round(t.value, 4)
    assert f"trained with its best parameters: {mv.ref}" in out
    said_best = out.split("best parameters: ", 1)[1].splitlines()[0]
    assert all(f"{k}=" in said_best for k in best.params), said_best  # all of them, alike in every trial or not

    # by id, best first
    r = _cdl(ws, "experiments", "show", f"#{tune.id}", "--sort", "value")
    values = [row["value"] for row in _rows(r.stdout) if row["value"] is not None]
    assert len(values) == len(trials) and values == sorted(values, reverse=True), r.stdout

    # one trial: its parameters and its epochs, as the dashboard's learning curve
    other = next(t for t in trials if t.number != best.number)
    r = _cdl(ws, "experiments", "show", tune.name, "--trial", str(other.number))
    assert r.exit_code == 0 and r.stdout.startswith(f"{tune.name} trial {other.number}: {other.state}, "), r.output
    epochs = [ln for ln in r.stdout.splitlines() if ln[:1].isdigit()]
    assert len(epochs) == other.epochs == len(store.metrics(other.id)) and f"lr={other.params['lr']:.4g}" in r.stdout
    assert _cdl(ws, "experiments", "show", tune.name, "--trial", str(best.number)).stdout.startswith(
        f"{tune.name} trial {best.number} (the best): complete")
    r = _cdl(ws, "experiments", "show", tune.name, "--trial", "99")
    assert r.exit_code == 2 and f"{tune.name} has no trial 99" in r.stderr, r.output

    # a training run: its parameters, where the tuned ones came from, and its epochs
    r = _cdl(ws, "experiments", "show")  # latest
    out = r.stdout
    assert out.startswith(f"{train.name} (#{train.id}): train (model.train)"), out
    assert f"from {tune.name}'s best trial (use_tuned)" in out and f"registered from it: {mv.ref}" in out
    epochs = [ln for ln in out.splitlines() if ln[:1].isdigit()]
    metrics = store.metrics(store.trials(train.id)[0].id)
    assert len(epochs) == len(metrics) and "val_accuracy" in out
    assert f"{metrics[-1]['val_accuracy']:.4f}" in epochs[-1]
    doc = json.loads(_cdl(ws, "experiments", "show", "latest-tune", "--json").stdout)
    assert doc["name"] == tune.name and len(doc["trial_list"]) == len(trials)
    assert all(len(t["metrics"]) == t["epochs"] for t in doc["trial_list"])

    # use: a trial picked by hand (not the best) goes into model.train's parameters, and is what it trains with
    other = next(t for t in trials if t.number != best.number)
    r = _cdl(ws, "experiments", "use", tune.name, "--trial", str(other.number))
    assert r.exit_code == 0 and r.stdout.startswith(f"model.train now trains with {tune.name}'s trial "
                                                    f"{other.number} ({other.state}"), r.output
    assert "use_tuned true → false" in r.stdout, r.stdout
    params = ws.config().params("model.train")
    assert {k: params[k] for k in other.params} == other.params and params["use_tuned"] is False
    assert Runner(ws).run(steps=["model.train"]).ok
    trained = store.trials(store.experiments()[-1].id)[0].params
    assert {k: trained[k] for k in other.params} == other.params
    r = _cdl(ws, "experiments", "use", tune.name, "--trial", "99")
    assert r.exit_code == 2 and f"{tune.name} has no trial 99 (its trials: 0 to {len(trials) - 1})" in r.stderr
    doc = json.loads(_cdl(ws, "experiments", "use", tune.name, "--json").stdout)  # default: the best
    assert doc["trial"] == best.number and ws.config().params("model.train")["lr"] == best.params["lr"]
    assert doc["note"] is None
    # a trial of another model than the one model.train trains is said to be so, as use_tuned says it
    from runtime.params import set_step_params

    set_step_params(ws, "model.train", {"template": "mlp"})
    r = _cdl(ws, "experiments", "use", tune.name)
    assert r.exit_code == 0 and (f"note: {tune.name} ran bbc-net (torch), and model.train trains mlp (torch): its "
                                 "parameters may not suit this model") in r.stderr, r.output

    # an experiment that is not there names the close one
    r = _cdl(ws, "experiments", "show", tune.name.replace("-", "_"))
    assert r.exit_code == 2 and f"did you mean {tune.name!r}?" in r.stderr, r.output


def test_a_killed_runs_experiment_reads_failed_not_running(small_bbc):
    """`cdl run model.tune` killed (SIGKILL, a CI runner gone): its experiment read "running" in `cdl experiments`
    until `cdl status` happened to look; the listing looks itself now, as status does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    ws = small_bbc
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "run", "--until", "model.tune", "--set",
                             "model.tune.n_trials=500"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            exps = ws.store.experiments()
            if exps and len(ws.store.trials(exps[-1].id)) >= 2:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("model.tune made no trial in 120 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    doc = json.loads(_cdl(ws, "experiments", "list", "--json").stdout)
    (exp,) = doc["experiments"]
    assert exp["status"] == "failed" and "running" not in exp["states"], exp
    line = _cdl(ws, "experiments", "list").stdout
    assert " failed " in line and "running" not in line, line


def test_one_epoch_is_said_in_the_singular():
    from runtime.experiments import counts_text

    assert counts_text({"kind": "train", "epochs": 1, "states": {}}) == "1 epoch"  # it said "1 epochs"
    assert counts_text({"kind": "train", "epochs": 9, "states": {}}) == "9 epochs"
