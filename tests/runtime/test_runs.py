"""A step's run history (`cdl runs STEP`, the step header's Runs…): newest first, with what each run said and
which parameters changed from the run before it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from runtime.domain.errors import CdlError
from runtime.jobs import Runner
from runtime.jobs.runner import step_history


def test_step_history_lists_runs_with_their_messages_and_parameter_changes(small_bbc):
    ws = small_bbc
    assert Runner(ws).run(steps=["data.validate"], overrides={"data.validate": {"min_length": 30}}).ok
    assert Runner(ws).run(steps=["data.validate"]).ok
    runs = step_history(ws, "data.validate")["runs"]
    assert len(runs) == 3 and [r["status"] for r in runs] == ["done"] * 3  # the fixture's run, then these two
    newest, middle, first = runs
    assert newest["id"] > middle["id"] > first["id"]
    assert middle["changed"] == "min_length 20 → 30" and newest["changed"] == "min_length 30 → 20"
    assert first["changed"] == "first run"
    assert "quarantined" in newest["message"] and newest["seconds"] is not None
    # a run that failed says why
    res = Runner(ws).run(steps=["data.import"], overrides={"data.import": {"sources": ["gone.zip"]}})
    assert not res.ok
    failed = step_history(ws, "data.import")["runs"][0]
    assert failed["status"] == "failed" and "gone.zip" in failed["error"] and failed["message"] == ""
    assert step_history(ws, "model.train")["runs"] == []
    with pytest.raises(CdlError, match="step 'model.trian' does not exist"):
        step_history(ws, "model.trian")
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "runs", "data.validate",
                          "--limit", "2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"#{newest['id']}") and "changed: min_length 30 → 20" in lines[1]
    assert "changed: min_length 20 → 30" in out.stdout and f"#{first['id']}" not in out.stdout
    # a run with the parameters of the one before says why it ran (it said nothing)
    assert Runner(ws).run(steps=["data.validate"]).ok  # forced, nothing changed
    assert step_history(ws, "data.validate")["runs"][0]["changed"] == \
        "nothing (forced)"
    ws.store.finish_step_run(ws.store.start_step_run("data.validate", None, "fp", newest["params"]), "failed",
                             error="cancelled")
    assert Runner(ws).run(steps=["data.validate"]).ok
    assert step_history(ws, "data.validate")["runs"][0]["changed"] == \
        "again after a cancelled run (same parameters)"
    from runtime.labeling import LabelQueue

    row = ws.dataset().rows[0]
    LabelQueue(ws, "x").set_label(row.uid, "politics" if row.label != "politics" else "tech")
    assert Runner(ws).run(until="data.validate").ok  # the labels changed: data.ingest onwards run again
    # which input: the upstream step whose output it read changed (it said "its inputs changed" whatever it was)
    assert step_history(ws, "data.validate")["runs"][0]["changed"] == \
        "data.clean ran again since, with another output (same parameters)"
    assert step_history(ws, "data.ingest")["runs"][0]["changed"] == "labels changed (same parameters)"


def test_a_value_given_with_set_wins_over_the_tuned_one_and_cdl_yaml_values_are_named(small_bbc):
    """With use_tuned on, `--set model.train.lr=0.5` trained with the tuned lr and said nothing: a value given for
    the run now wins (and the log says so), while one written in cdl.yaml is replaced by the tuned value, by name."""
    from runtime.params import set_step_params

    ws = small_bbc
    assert Runner(ws).run(until="model.tune", overrides={"model.tune": {"n_trials": 1, "max_epochs": 1}}).ok
    best = ws.store.last_done_runs()["model.tune"].summary["best_params"]
    assert "lr" in best and best["lr"] != 0.5
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "run", "model.train", "--set",
                          "model.train.lr=0.5", "--set", "model.train.epochs=1", "--set", "model.train.refit=false"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    said = out.stdout + out.stderr
    assert "given for this run, kept over model.tune's best trial: lr 0.5 (tuned " in said
    assert "replaces lr" not in said
    trained = ws.store.last_done_runs()["model.train"].summary
    assert trained["params"]["lr"] == 0.5 and "lr" not in trained["tuned"]
    assert {k: trained["params"][k] for k in trained["tuned"]} == trained["tuned"]  # the rest still tuned
    # the same value written in cdl.yaml: use_tuned replaces it, and says so
    set_step_params(ws, "model.train", {"lr": 0.5, "epochs": 1, "refit": False})
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "run", "model.train"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    said = out.stdout + out.stderr
    assert "model.tune's best trial replaces lr 0.5 → " in said and "to train with the values in cdl.yaml" in said
    # the tuned values as a person reads them, not a Python dict of 16-digit floats
    used = next(line for line in said.splitlines() if "using tuned parameters " in line)
    assert "{" not in used and f"lr {best['lr']:.4g}" in used, used
    trained = ws.store.last_done_runs()["model.train"].summary
    assert trained["params"]["lr"] == best["lr"] and trained["tuned"]["lr"] == best["lr"]


def test_tuning_tries_given_parameter_sets_first(small_bbc):
    """model.tune.enqueue (Optuna's enqueue_trial): known-good parameters are tried first, the rest sampled; a set
    outside the search space is refused before anything runs, naming it."""
    from runtime.params import set_step_params

    ws = small_bbc
    first = {"lr": 0.00123, "batch_size": 32}
    res = Runner(ws).run(until="model.tune", overrides={"model.tune": {"n_trials": 2, "max_epochs": 1,
                                                                       "enqueue": [first]}})
    assert res.ok, [(o.step, o.error) for o in res.steps if o.error]
    exp = ws.store.experiment(ws.store.last_done_runs()["model.tune"].summary["experiment_id"])
    trials = ws.store.trials(exp.id)
    assert len(trials) == 2 and {k: trials[0].params[k] for k in first} == first
    assert trials[1].params["lr"] != 0.00123 and set(trials[0].params) == set(trials[1].params)
    for bad, says in (([{"lr": 0.5}], "model.tune.enqueue[0].lr: 0.5 is outside the search space"),
                      ([{"depth": 3}], "model.tune.enqueue[0].depth: not in the search space"),
                      ([{"batch_size": 48}], "model.tune.enqueue[0].batch_size: 48 is not one of [16, 32, 64, 128]"),
                      ([first] * 4, "4 parameter sets to try first, but n_trials is 3")):
        with pytest.raises(CdlError, match=re.escape(says)):
            set_step_params(ws, "model.tune", {"enqueue": bad})
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "run", "model.tune", "--set",
                          'model.tune.enqueue=[{"lr": 5}]'], capture_output=True, text=True)
    assert out.returncode != 0 and "enqueue[0].lr: 5 is outside the search space" in out.stdout + out.stderr


def test_a_running_step_says_how_long_where_and_how_far(small_bbc):
    """`cdl status` (and the studio, for a step another process runs) said "running" and nothing more: model.tune
    now says how long it has run, in which process, and how many trials finished; model.train its epoch. Read
    while the steps run, from the records a real run writes."""
    import os

    from runtime.domain.events import EventKind
    from runtime.jobs.bus import EventBus

    ws = small_bbc
    seen: dict[str, list[str]] = {"model.tune": [], "model.train": []}
    shares: dict[str, list[float | None]] = {"model.tune": [], "model.train": []}
    bus = EventBus()

    def on_event(ev) -> None:  # noqa: ANN001 - in the runner's thread, between two epochs
        if ev.kind == EventKind.METRIC and ev.step in seen:
            state = {s.id: s for s in Runner(ws).statuses()}[ev.step]
            assert state.status.value == "running"
            seen[ev.step].append(state.reason)
            shares[ev.step].append(state.summary.get("progress"))  # for the flowchart's bar

    bus.subscribe(on_event)
    assert Runner(ws, bus=bus).run(until="model.train").ok
    tune, train = seen["model.tune"], seen["model.train"]
    assert tune and train
    assert all(r.startswith("for ") and f"process {os.getpid()}" in r for r in tune + train), tune + train
    assert re.search(r"0 of 3 trials finished, trial 0 running \(1 of 3 epochs\)", tune[0]), tune[0]
    assert re.search(r"[12] of 3 trials finished \(\d complete", tune[-1]), tune[-1]
    assert re.search(r"1 of 4 epochs, val_accuracy 0\.\d{4}$", train[0]), train[0]
    assert re.search(r"\d of 4 epochs", train[-1])
    assert shares["model.tune"][0] == 0.0 and shares["model.tune"][-1] in (round(1 / 3, 4), round(2 / 3, 4))
    assert shares["model.train"][0] == 0.25 and all(0 < x <= 1 for x in shares["model.train"])
    # a finished step says nothing of the kind
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["model.tune"].status.value == "done" and "trials finished" not in states["model.tune"].reason


def test_a_running_compression_says_which_variants_are_done(packaged):
    """deploy.compress runs for minutes (distillation, fine-tuning): `cdl status` said only "running"."""
    from runtime.domain.events import EventKind
    from runtime.jobs.bus import EventBus

    ws = packaged
    seen: list[str] = []
    shares: list[float | None] = []
    bus = EventBus()

    def on_event(ev) -> None:  # noqa: ANN001 - in the runner's thread, after each variant is recorded
        if ev.kind == EventKind.LOG and ev.step == "deploy.compress":
            state = {s.id: s for s in Runner(ws).statuses()}["deploy.compress"]
            seen.append(state.reason)
            shares.append(state.summary.get("progress"))

    bus.subscribe(on_event)
    assert Runner(ws, bus=bus).run(steps=["deploy.compress"], force=True).ok
    ref = ws.store.last_done_runs()["deploy.export"].summary
    name = f"{ref['name']}:{ref['version']}"
    assert len(seen) == 2, seen
    assert seen[0].endswith(f"{name}: 1 of 2 variants done (dynamic_int8); now static_int8"), seen
    assert shares == [0.5, 1.0]  # the flowchart's bar
    assert seen[1].endswith(f"{name}: 2 of 2 variants done (dynamic_int8, static_int8)"), seen


def test_model_train_after_a_loop_says_why_it_is_stale(small_bbc):
    """`cdl loop` retrains with the champion's parameters and use_tuned off, for that run only: model.train then
    showed stale with "batch_size 32 → 64; dropout 0.16 → 0.3; …", cdl.yaml's values, which a run with use_tuned on
    does not train with, and which read like somebody's edit. It says what happened and what the next run does."""
    from runtime.jobs.runner import _LOOP_TRAINED

    ws = small_bbc
    assert Runner(ws).run(until="model.tune").ok
    loop = {"lr": 0.0021, "batch_size": 16, "hidden": 64, "dropout": 0.2, "use_tuned": False}  # as runtime/loop.py
    assert Runner(ws).run(steps=["model.train"], overrides={"model.train": loop}).ok
    train = {s.id: s for s in Runner(ws).statuses()}["model.train"]
    assert train.status.value == "stale" and train.reason == "parameters changed since it ran" + _LOOP_TRAINED
    # another difference (epochs) is listed as before
    assert Runner(ws).run(steps=["model.train"], overrides={"model.train": {**loop, "epochs": 2}}).ok
    train = {s.id: s for s in Runner(ws).statuses()}["model.train"]
    assert "epochs 2 → 4" in train.reason and "cdl loop" not in train.reason


def test_model_train_history_compares_what_each_run_trained_with(small_bbc):
    """With use_tuned on, model.train trains with model.tune's best values, not cdl.yaml's, and its history compared
    the configured ones: a loop's run (the champion's values, use_tuned off) read "batch_size 64 → 32; dropout 0.3 →
    0.3099025726528951; hidden 128 → 97; and 2 more", both runs having trained with the same values. Floats show
    four digits, and new data beside new parameters is said too."""
    ws = small_bbc
    cheap = {"epochs": 1, "refit": False}
    assert Runner(ws).run(until="model.train", overrides={"model.tune": {"n_trials": 1, "max_epochs": 1},
                                                          "model.train": cheap}).ok
    trained = ws.store.last_done_runs()["model.train"].summary
    assert trained["tuned"]
    loop = {**cheap, **{k: trained["params"][k] for k in trained["tuned"]}, "use_tuned": False}  # as cdl loop
    assert Runner(ws).run(steps=["model.train"], overrides={"model.train": loop}).ok
    assert step_history(ws, "model.train")["runs"][0]["changed"] == "use_tuned true → false"
    assert Runner(ws).run(steps=["model.train"], overrides={"model.train": {**loop, "dropout": 0.123456789}}).ok
    assert step_history(ws, "model.train")["runs"][0]["changed"] == \
        f"dropout {trained['params']['dropout']:.4g} → 0.1235"
    from runtime.labeling import LabelQueue

    row = ws.dataset().rows[0]
    LabelQueue(ws, "x").set_label(row.uid, "politics" if row.label != "politics" else "tech")
    assert Runner(ws).run(until="model.train", overrides={"model.train": loop}).ok
    assert step_history(ws, "model.train")["runs"][0]["changed"] == \
        f"dropout 0.1235 → {trained['params']['dropout']:.4g}; and model.preprocess and model.tune ran again since, " \
        "with another output"

def test_a_trials_values_are_logged_as_a_person_reads_them():
    from runtime.domain.text import params_line

    assert params_line({"lr": 0.0007106591851092234, "batch_size": 32, "hidden": 79, "dropout": 0.16239780813448107}) \
        == "lr 0.0007107, batch_size 32, hidden 79, dropout 0.1624"


def test_a_compression_that_trains_is_cancelled_at_its_next_epoch(packaged):
    """Ctrl-C stops a run at the step's next checkpoint: deploy.compress had one between methods only, so a
    distillation (minutes on Fashion-MNIST) ran to its end; and a cancel inside a method would have been recorded
    as that method failing."""
    import threading

    from runtime.domain.events import EventKind
    from runtime.jobs.bus import EventBus

    ws = packaged
    cancel = threading.Event()
    bus = EventBus()
    bus.subscribe(lambda ev: cancel.set() if ev.kind == EventKind.LOG and ev.message.startswith("distill: epoch 1 of 3")
                  else None)
    res = Runner(ws, bus=bus, cancel=cancel).run(steps=["deploy.compress"], force=True, overrides={
        "deploy.compress": {"methods": ["dynamic_int8", {"distill": {"epochs": 3}}, "static_int8"]}})
    (out,) = res.steps
    assert out.status == "cancelled", (out.status, out.error)
    ref = ws.store.last_done_runs()["deploy.export"].summary
    variants = {v.variant: v.status for v in ws.store.variants(ref["name"], ref["version"])}
    assert variants.get("distill") != "failed", variants
