"""The model pipeline end to end on small real subsets, and the headless CI mode."""

from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from runtime.jobs import Runner
from runtime.registry import history_json, lineage, models_json, review
from tests.conftest import make_fashion_subset


def cdl(ws, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), *args], capture_output=True,
                          text=True, check=check)


def test_ci_mode_end_to_end_on_bbc(small_bbc, tmp_path):
    ws = small_bbc
    junit = tmp_path / "report.xml"
    proc = cdl(ws, "run", "--until", "model.evaluate", "--json", "--junit", str(junit))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    steps = {s["id"]: s for s in doc["steps"]}
    assert list(steps)[-6:] == ["data.label", "model.preprocess", "model.tune", "model.train", "model.register",
                                "model.evaluate"]
    assert all(s["status"] in ("done", "skipped") for s in doc["steps"])
    assert all("duration" in s for s in doc["steps"])
    ev = steps["model.evaluate"]
    assert ev["metrics"]["test_accuracy"] > 0.7 and "macro_f1" in ev["metrics"]
    assert steps["model.tune"]["summary"]["trials"] == 3
    cases = ET.parse(junit).getroot().findall("testcase")
    assert [c.get("name") for c in cases] == [s["id"] for s in doc["steps"]]
    assert not any(c.find("failure") is not None for c in cases)

    # the registry: a model version with lineage back to its dataset version
    models = json.loads(cdl(ws, "models", "list", "--json", check=True).stdout)["models"]
    assert len(models) == 1
    m = models[0]
    assert set(m) >= {"name", "version", "aliases", "dataset_version", "metrics", "params", "git_commit"}
    assert m["aliases"] == ["challenger"] and m["dataset_version"] == "v1"
    assert set(m["metrics"]) >= {"test_accuracy", "macro_f1", "val_accuracy"}
    lin = lineage(ws.store, f"{m['name']}:{m['version']}")
    v1 = ws.store.version("v1")
    assert lin["dataset_version"] == {"id": "v1", "dvc_hash": v1.dvc_hash, "git_commit": v1.git_commit,
                                      "items": v1.items}
    assert lin["code"]["git_commit"] == ws.git.head()
    # `cdl models lineage` in lines, and its JSON with --json (which it refused, as the only `models` listing)
    assert json.loads(cdl(ws, "models", "lineage", "ws:1", "--json", check=True).stdout) == json.loads(json.dumps(lin))
    text = cdl(ws, "models", "lineage", "ws:1", check=True).stdout.splitlines()
    tune_name = ws.store.experiment(lin["tune_experiment"]).name
    assert text[0] == "ws:1" and text[1] == f"  dataset version  v1 ({v1.items} items, DVC {v1.dvc_hash[:12]}, git " \
        f"{v1.git_commit[:10]})", text
    assert f"  tuned by         {tune_name} (#{lin['tune_experiment']})" in text, text
    assert any(t.startswith("  parameters       lr ") for t in text), text
    # the trial is its number in the experiment, which `experiments show --trial` takes (it gave the row id, 4 here,
    # which that refused: "train-1 has no trial 4 (its trials: 0 to 0)")
    exp_name = lin["experiment"]["name"]
    assert lin["trial"] == 0 and lin["trial_id"] != 0 and m["trial"] == 0, (lin, m)
    assert f"  experiment       {exp_name} (#{lin['experiment']['id']}, train), trial 0" in text, text
    cdl(ws, "experiments", "show", exp_name, "--trial", str(lin["trial"]), check=True)
    mv = ws.store.resolve_model(f"{m['name']}:1")
    assert mv.evaluation["confusion_matrix"] and len(mv.evaluation["per_class"]) == 5
    assert ws.artifacts.exists(mv.artifacts["checkpoint"])
    assert mv.params["lr"] == pytest.approx(steps["model.tune"]["summary"]["best_params"]["lr"])

    # the study is readable by optuna.load_study from the registry database
    import optuna

    study_name = steps["model.tune"]["summary"]["study"]
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{ws.root / '.cdl' / 'registry.db'}")
    assert len(study.trials) == 3
    assert study.best_params == steps["model.tune"]["summary"]["best_params"]
    exp = ws.store.experiment(steps["model.tune"]["summary"]["experiment_id"])
    trials = ws.store.trials(exp.id)
    assert len(trials) == 3 and all(ws.store.metrics(t.id) for t in trials)

    # review: awaiting, then approve -> champion, and the history says so
    r = cdl(ws, "run", "model.review")
    assert r.returncode == 1 and f"⏸ model.review: {m['name']}:1 awaits review (test_accuracy 0." in r.stderr, r.stderr
    assert "; no champion yet): `cdl models review" in r.stderr, r.stderr
    # waiting for a person, not failed (the flowchart showed it red, and the steps after it "model.review failed")
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["model.review"].status == "waiting" and "awaits review" in states["model.review"].reason
    assert states["deploy.export"].reason == "upstream model.review waits for a person", states["deploy.export"]
    runs = json.loads(cdl(ws, "runs", "model.review", "--json", check=True).stdout)["runs"]
    assert runs[0]["status"] == "waiting" and "awaits review" in runs[0]["error"], runs[0]
    # and so in --json and JUnit, which said "failed" ("not run: an earlier step failed" for the steps after it)
    # --save with a run that stops at the review keeps the values: it said "the run did not succeed (failed)", and
    # after the approval the next run ran again with cdl.yaml's (tuned and trained another model than the one approved)
    was = ws.config().params("model.evaluate")["threshold"]
    r = cdl(ws, "run", "--until", "deploy.export", "--json", "--junit", str(ws.root / "report.xml"),
            "--set", "model.evaluate.threshold=0.25", "--save")
    assert r.returncode == 1  # CI fails on it, as on a failure
    assert (f"saved in cdl.yaml: model.evaluate.threshold {was} → 0.25 (the run waits at model.review; the next "
            "`cdl run` goes on with them)") in r.stderr, r.stderr[-2000:]  # uncommitted: so was the fixture's cdl.yaml
    assert ws.config().params("model.evaluate")["threshold"] == 0.25
    assert {s.id: s.status for s in Runner(ws).statuses()}["model.evaluate"] == "done"
    doc = json.loads(r.stdout)
    assert doc["status"] == "waiting" and [(s["id"], s["status"]) for s in doc["steps"][-2:]] == [
        ("model.review", "waiting"), ("deploy.export", "not-run")], doc
    junit = (ws.root / "report.xml").read_text()
    assert f'message="waiting: {m["name"]}:1 awaits review' in junit and 'message="not run: model.review waits for a person"' \
        in junit, junit
    assert cdl(ws, "run", "model.review").returncode == 1  # still no review
    runs = json.loads(cdl(ws, "runs", "model.review", "--json", check=True).stdout)["runs"]
    assert runs[0]["changed"] == "again after a run that waited for a person (same parameters)", runs[0]
    r = cdl(ws, "models", "review", f"{m['name']}:1", "--approve", "--comment", "looks good", "--reviewer", "vera",
            check=True)
    assert "champion" in r.stdout
    assert Runner(ws).run(steps=["model.review"]).ok
    hist = json.loads(cdl(ws, "models", "history", m["name"], "--json", check=True).stdout)
    assert [(a["alias"], a["version"]) for a in hist["aliases"]] == [("challenger", 1), ("champion", 1)]
    assert hist["aliases"][0]["until"] is not None and hist["aliases"][1]["until"] is None
    assert hist["reviews"] == [{"version": 1, "reviewer": "vera", "decision": "approved", "comment": "looks good",
                                "automatic": False, "created": hist["reviews"][0]["created"]}]


def test_second_model_takes_the_champion_alias_over(small_bbc):
    ws = small_bbc
    assert Runner(ws).run(until="model.evaluate", overrides={"model.tune": {"n_trials": 1}}).ok
    review(ws.store, "ws:1", True, "first", "vera")
    assert Runner(ws).run(steps=["model.train"], overrides={"model.train": {"seed": 7, "use_tuned": False}}).ok
    assert Runner(ws).run(steps=["model.register"]).ok
    assert Runner(ws).run(steps=["model.evaluate"]).ok
    review(ws.store, "ws:2", True, "better", "vera")
    hist = history_json(ws.store, "ws")
    champs = [(a["version"], a["until"] is None) for a in hist["aliases"] if a["alias"] == "champion"]
    assert champs == [(1, False), (2, True)]
    aliases = {m["version"]: m["aliases"] for m in models_json(ws.store)["models"]}
    assert aliases == {1: [], 2: ["champion"]}


def test_an_automatic_review_leaves_model_review_up_to_date(small_bbc):
    """model.review's fingerprint is the candidate's reviews, and an automatic review (auto_approve_if_better, CI's
    way) adds one while the step runs: right after the run `cdl status` said "stale (the candidate's reviews changed
    since it ran)", and the next run reviewed again. Its fingerprint is taken again when it finishes."""
    ws = small_bbc
    cfg = ws.config()
    cfg.steps["model.tune"]["n_trials"] = 1
    cfg.set_param("model.review", "auto_approve_if_better", True)
    cfg.save()
    assert Runner(ws).run(until="model.review").ok
    assert [r.decision for r in ws.store.reviews("ws", 1)] == ["approved"]
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["model.review"].status == "done", (states["model.review"].status, states["model.review"].reason)
    again = Runner(ws).run(until="model.review")
    assert again.ok and {o.step: o.status for o in again.steps}["model.review"] == "skipped", again.steps[-1]
    assert len(ws.store.reviews("ws", 1)) == 1
    # a person's review afterwards is still a change it sees
    review(ws.store, "ws:1", False, "on second thought", "vera")
    assert {s.id: s for s in Runner(ws).statuses()}["model.review"].status == "stale"


def test_a_rejected_candidate_leaves_the_champion_to_the_deployment_pipeline(small_bbc):
    """The validator rejects the new version: model.review goes on with the champion there is, so that
    `cdl run --until deploy.package` builds (or keeps) the champion's bundle. It used to fail, and the champion
    could then only be exported step by step. With no champion at all, model.review still fails."""
    ws = small_bbc
    cfg = ws.config()
    cfg.steps["model.tune"]["n_trials"] = 1
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok
    review(ws.store, "ws:1", False, "not yet", "vera")
    r = cdl(ws, "run", "model.review")
    assert r.returncode == 1 and "ws:1 was rejected by vera: not yet; ws has no champion to go on with" in r.stderr
    review(ws.store, "ws:1", True, "first", "vera")
    cfg = ws.config()
    cfg.steps["model.train"].update({"seed": 7, "use_tuned": False})
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok
    review(ws.store, "ws:2", False, "no better than ws:1", "vera")
    r = cdl(ws, "run", "--until", "deploy.export", "--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    steps = {s["id"]: s for s in json.loads(r.stdout)["steps"]}
    assert steps["model.review"]["status"] == "done"
    assert steps["model.review"]["message"] == ("ws:2 was rejected by vera: no better than ws:1; ws:1 stays the "
                                                "champion"), steps["model.review"]
    assert steps["deploy.export"]["status"] == "done"
    assert ws.store.model_version("ws", "champion").version == 1
    assert [v.variant for v in ws.store.variants("ws", 1)] == ["fp32"] and not ws.store.variants("ws", 2)
    # approving it later makes it the champion, and the deployment pipeline is stale for it
    review(ws.store, "ws:2", True, "on second thought", "vera")
    st = {s["id"]: s for s in json.loads(cdl(ws, "status", "--json").stdout)["steps"]}
    assert st["model.review"]["status"] == "stale" and st["deploy.export"]["status"] == "stale", st
    assert st["model.review"]["reason"] == "the candidate's reviews changed since it ran", st["model.review"]
    assert st["deploy.export"]["reason"] == "the model to export changed since it ran", st["deploy.export"]


def test_failed_gate_fails_the_run(small_bbc, tmp_path):
    proc = cdl(small_bbc, "run", "--until", "model.evaluate", "--set", "model.evaluate.threshold=0.9999",
               "--set", "model.tune.n_trials=1", "--json", "--junit", str(tmp_path / "j.xml"))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    ev = [s for s in doc["steps"] if s["id"] == "model.evaluate"][0]
    assert ev["status"] == "failed" and ev["gate_failed"] is True
    assert "gate failed" in ev["error"] and "0.9999" in ev["error"]
    failure = [c for c in ET.parse(tmp_path / "j.xml").getroot() if c.get("name") == "model.evaluate"][0]
    assert failure.find("failure") is not None
    # the metrics are still stored on the model version
    assert small_bbc.store.model_version("ws", 1).metrics["test_accuracy"] < 0.9999


def test_preprocess_cache_hit(small_bbc):
    ws = small_bbc
    first = Runner(ws).run(steps=["model.preprocess"])
    assert first.ok
    second = Runner(ws).run(steps=["model.preprocess"])
    s1, s2 = first.steps[0].summary, second.steps[0].summary
    assert s2["cached"] is True and s2["key"] == s1["key"]
    assert "loaded from cache" in second.steps[0].message
    # another spec is another key
    third = Runner(ws).run(steps=["model.preprocess"], overrides={"model.preprocess": {"tfidf": True}})
    assert third.steps[0].summary["key"] != s1["key"] and third.steps[0].summary["cached"] is False


def test_vocabulary_is_fitted_on_the_training_split_only(small_bbc):
    from runtime.ml.preprocess import load_transform, training_rows
    from runtime.workspace.dataset import decode_text

    ws = small_bbc
    assert Runner(ws).run(steps=["model.preprocess"]).ok
    prep = load_transform(ws, ws.store.last_step_run("model.preprocess").summary["key"])
    view, rows, _ = training_rows(ws, ws.current_version())
    from edge_agent.proto.preprocessing import TextPipeline

    tp = TextPipeline({**prep.spec, "vocabulary": {}})
    train_terms = set()
    for r in rows["train"]:
        train_terms.update(tp.tokens(decode_text(view.read_bytes(r))[0]))
    assert set(prep.spec["vocabulary"]) <= train_terms
    test_only = set()
    for r in rows["test"]:
        test_only.update(tp.tokens(decode_text(view.read_bytes(r))[0]))
    test_only -= train_terms
    assert test_only and not (test_only & set(prep.spec["vocabulary"]))


def test_user_module_from_src(small_bbc):
    ws = small_bbc
    (ws.root / "src" / "tiny.py").write_text(
        "import torch\n\n"
        "def build_model(input_shape, num_classes, params):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], num_classes))\n"
    )
    res = Runner(ws).run(until="model.evaluate", overrides={
        "model.train": {"template": "src:tiny.py", "use_tuned": False, "epochs": 3},
        "model.tune": {"n_trials": 1}, "model.evaluate": {"threshold": 0.3}})
    assert res.ok, [o.error for o in res.steps]
    mv = ws.store.model_version("ws", 1)
    assert mv.template == "src:tiny.py"


def _tiny_module(hidden: int) -> str:
    return ("import torch\n\n"
            "def build_model(input_shape, num_classes, params):\n"
            f"    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], {hidden}),\n"
            f"                               torch.nn.ReLU(), torch.nn.Linear({hidden}, num_classes))\n")


def test_editing_the_model_code_makes_training_stale_and_versions_keep_theirs(small_bbc):
    """A src: template is code the steps train: editing it makes model.tune and model.train stale (as a DVC stage
    whose code dependency changed; they stayed done), and a registered version still loads with the code it was
    trained with (it was rebuilt from the file as it is now: a size mismatch, or silently another model)."""
    import torch

    from runtime.jobs.runner import StepStatus
    from runtime.ml import torch_backend
    from runtime.ml.preprocess import load_transform

    ws = small_bbc
    (ws.root / "src" / "tiny.py").write_text(_tiny_module(16))
    cfg = ws.config()
    cfg.steps["model.train"].update({"template": "src:tiny.py", "use_tuned": False, "epochs": 2})
    cfg.steps["model.tune"].update({"n_trials": 1, "max_epochs": 1})
    cfg.save()
    assert Runner(ws).run(until="model.register").ok
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["model.tune"].status == StepStatus.DONE and states["model.train"].status == StepStatus.DONE
    v1 = ws.store.model_version("ws", 1)
    assert v1.extra["arch"]["source"]["file"] == "tiny.py"
    prep = load_transform(ws, v1.transform)
    ckpt = ws.artifacts.get(v1.artifacts["checkpoint"])
    before = torch_backend.predict_proba(ckpt, prep.X_test[:8], ws.root)

    (ws.root / "src" / "tiny.py").write_text(_tiny_module(24))
    states = {s.id: s for s in Runner(ws).statuses()}
    for step in ("model.tune", "model.train"):
        assert states[step].status == StepStatus.STALE, (step, states[step])
        assert "the model code (model.train's src: template) changed since it ran" in states[step].reason
    np.testing.assert_array_equal(torch_backend.predict_proba(ckpt, prep.X_test[:8], ws.root), before)

    assert Runner(ws).run(until="model.register").ok
    v2 = ws.store.model_version("ws", 2)
    model, _ = torch_backend.load(ws.artifacts.get(v2.artifacts["checkpoint"]), ws.root)
    assert [m.out_features for m in model if isinstance(m, torch.nn.Linear)][0] == 24
    assert v2.extra["arch"]["source"]["sha256"] != v1.extra["arch"]["source"]["sha256"]
    import hashlib

    code = lineage(ws.store, "ws:2")["code"]  # which code it was trained with, beside the git commit
    assert code["template"] == "src:tiny.py"
    assert code["model_sha256"] == hashlib.sha256((ws.root / "src" / "tiny.py").read_bytes()).hexdigest()
    from runtime.ml.versus import compare

    rows = {r["field"]: r for r in compare(ws, "ws:1", "ws:2")["lineage"]}  # one template name, two models
    assert rows["template"]["differs"] is False and rows["model code"]["differs"] is True
    assert rows["model code"]["b"] == f"sha256 {code['model_sha256'][:12]}"
    # each trial by its number in its experiment, as `experiments show --trial` takes it (it gave the row ids)
    assert (rows["trial"]["a"], rows["trial"]["b"], rows["trial"]["differs"]) == (0, 0, False), rows["trial"]
    # a distilled student is built from the kept code too; one that ignores params["hidden"] is no smaller, and says so
    res = Runner(ws).run(steps=["deploy.export", "deploy.compress"], overrides={
        "deploy.export": {"model": "ws:2"}, "deploy.compress": {"methods": ["distill"]}})
    assert res.ok, [o.error for o in res.steps]
    notes = [v.message for v in ws.store.variants("ws", 2) if v.variant == "distill"]
    assert notes and "no smaller: src:tiny.py's build_model does not size the model by params['hidden']" in notes[0], notes


@pytest.mark.tensorflow
def test_keras_on_bbc(small_bbc):
    res = Runner(small_bbc).run(until="model.evaluate", overrides={
        "model.train": {"framework": "keras", "use_tuned": False, "epochs": 8, "patience": 0},
        "model.tune": {"n_trials": 1, "max_epochs": 1}, "model.evaluate": {"threshold": 0.5}})
    assert res.ok, [o.error for o in res.steps]
    mv = small_bbc.store.model_version("ws", 1)
    assert mv.framework == "keras" and mv.metrics["test_accuracy"] > 0.7
    # the device named as the torch trainer names it (its line said "CPU" where torch's said "cpu")
    train = next(o for o in res.steps if o.step == "model.train")
    assert train.message.endswith("keras, 8 epochs, cpu)"), train.message


@pytest.mark.parametrize("framework", ["torch", pytest.param("keras", marks=pytest.mark.tensorflow)])
def test_fashion_mnist_cnn_subset(tmp_path, framework):
    from runtime.api import add_source
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "fm", "image-classification")
    add_source(ws, make_fashion_subset(tmp_path / "fm-src", 1200, 300), {"class_names": "fashion-mnist"})
    res = Runner(ws).run(until="model.evaluate", overrides={
        "model.tune": {"n_trials": 2, "max_epochs": 1},
        "model.train": {"framework": framework, "epochs": 3, "use_tuned": False},
        "model.evaluate": {"threshold": 0.5}})
    assert res.ok, [o.error for o in res.steps]
    mv = ws.store.model_version("fm", 1)
    assert mv.extra["arch"]["input_shape"] == [28, 28, 1] and len(mv.classes) == 10
    # the output's order is the dataset's own (0 is "T-shirt/top"), as a client reading probabilities by
    # Fashion-MNIST's class numbers expects; it was alphabetical ("Ankle boot" first)
    from runtime.steps.sources import CLASS_NAME_PRESETS

    assert mv.classes == CLASS_NAME_PRESETS["fashion-mnist"]
    from runtime.labeling import LabelQueue

    assert LabelQueue(ws, "ana").classes() == mv.classes  # the labeling panel's keys 1-0 in the same order
    assert mv.metrics["test_accuracy"] > 0.6
    assert mv.dataset_version == "v1"
    history = ws.store.metrics(mv.trial_id)
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(history[0])
    if framework == "torch":  # a warm start of the CNN: convolutions, batch norm and the head carried over
        import torch

        res = Runner(ws).run(steps=["model.train", "model.register"], overrides={
            "model.train": {"framework": "torch", "epochs": 1, "use_tuned": False, "init_from": "fm:1", "lr": 0.0,
                            "refit": False}})
        assert res.ok, [o.error for o in res.steps]
        assert res.steps[0].summary["init_from"]["classes"]["new"] == [] and "terms" not in res.steps[0].summary[
            "init_from"]
        a, b = (torch.load(ws.artifacts.get(ws.store.model_version("fm", v).artifacts["checkpoint"]),
                           weights_only=True)["state_dict"] for v in (1, 2))
        weights = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert any(k.startswith("features.0") for k in weights) and len(weights) == len(a) - 6
        for k in weights:  # lr 0: every learned tensor is the one it started from (batch-norm statistics move)
            assert torch.equal(a[k], b[k]), k
    ws.close()


def test_ctrl_c_cancels_a_cli_run_and_still_writes_its_reports(small_bbc, tmp_path):
    """Ctrl-C (SIGINT) or a CI's SIGTERM: the running step stops at its next epoch and is recorded cancelled, the
    JSON and JUnit reports are written, and the exit status is 128 + the signal. (Ctrl-C used to abort mid-step
    with no report, the step left 'running' in the registry.)"""
    import os
    import signal
    import time

    ws = small_bbc
    assert Runner(ws).run(steps=["model.preprocess"]).ok
    for sig in (signal.SIGINT, signal.SIGTERM):
        junit = tmp_path / f"{sig.name}.xml"
        err = tmp_path / f"{sig.name}.err"
        with open(err, "w") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "run", "model.train", "--set",
                 "model.train.use_tuned=false", "--set", "model.train.epochs=100000", "--set", "model.train.patience=0",
                 "--json", "--junit", str(junit)],
                stdout=subprocess.PIPE, stderr=fh, text=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal would start it
            deadline = time.monotonic() + 120
            while "epoch 2 " not in err.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            os.kill(proc.pid, sig)
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{sig.name} did not stop the run: {err.read_text()[-1000:]}")
        assert proc.returncode == 128 + sig, (proc.returncode, err.read_text()[-1000:])
        assert f"{sig.name}: cancelling" in err.read_text()
        doc = json.loads(out)
        assert doc["status"] == "cancelled"
        assert [(s["id"], s["status"]) for s in doc["steps"]] == [("model.train", "cancelled")]
        case = ET.parse(junit).getroot().find("testcase")
        assert case.get("name") == "model.train" and case.find("failure").get("message") == "cancelled"
        run = ws.store.last_step_run("model.train")
        assert run.status == "failed" and run.error == "cancelled"


def test_a_cancelled_loop_stops_and_says_where(small_bbc):
    import threading

    from runtime.loop import run_loop

    cancel = threading.Event()
    cancel.set()  # as `cdl loop`'s Ctrl-C handler does
    res = run_loop(small_bbc, cancel=cancel)
    assert res["status"] == "cancelled" and res.code == 1, res
    assert res["reason"].startswith("cancelled during deploy.monitor"), res["reason"]
    assert [s["status"] for s in res["steps"]] == ["cancelled"]


def test_a_cancelled_tuning_run_prints_no_optuna_traceback(small_bbc, capfd):
    """A cancel ends the running trial through an exception: the step says "cancelled"; Optuna's warning that
    the trial failed, with its traceback, used to follow it on stderr as if the code had crashed."""
    import threading

    from runtime.domain.events import EventKind
    from runtime.jobs import EventBus

    ws = small_bbc
    assert Runner(ws).run(steps=["model.preprocess"]).ok
    cancel = threading.Event()
    bus = EventBus()
    bus.subscribe(lambda e: cancel.set() if e.kind == EventKind.METRIC else None)  # at the first epoch's metrics
    capfd.readouterr()
    res = Runner(ws, bus=bus, cancel=cancel).run(steps=["model.tune"])
    assert res.status == "cancelled", res
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed with" not in err, err
    exp = ws.store.experiments()[-1]
    # the cancelled trial is still recorded, as cancelled (it read "failed", as if its parameters had failed)
    assert [t.state for t in ws.store.trials(exp.id)] == ["cancelled"] and exp.status == "cancelled", exp
    # the step is cancelled, not failed (the flowchart showed it red, "failed", and the steps after it "upstream
    # model.tune failed")
    states = {s.id: s for s in Runner(ws).statuses()}
    assert (states["model.tune"].status, states["model.tune"].reason) == ("cancelled",
                                                                         "cancelled: the next run runs it again")
    assert states["model.evaluate"].reason == "upstream model.tune was cancelled", states["model.evaluate"].reason
    from runtime.jobs.runner import step_history

    assert step_history(ws, "model.tune")["runs"][0]["status"] == "cancelled"  # `cdl runs`, the Runs dialog
    # a finished run, then the step run again and cancelled: the finished run stands, as the next `cdl run` sees it
    # (it skips the step); the status said "cancelled: the next run runs it again", which that run did not do
    assert Runner(ws).run(steps=["model.tune"]).ok
    cancel.clear()
    assert Runner(ws, bus=bus, cancel=cancel).run(steps=["model.tune"]).status == "cancelled"
    states = {s.id: s for s in Runner(ws).statuses()}
    assert (states["model.tune"].status, states["model.tune"].reason) == (
        "done", "a later run was cancelled; this one's result stands"), states["model.tune"]
    assert states["model.tune"].last_run.status == "done"
    assert states["model.evaluate"].reason != "upstream model.tune was cancelled"
    outcomes = {o.step: o.status for o in Runner(ws).run(until="model.tune").steps}
    assert outcomes["model.tune"] == "skipped", outcomes


def test_a_trial_is_never_pruned_after_its_last_epoch(small_bbc):
    """With min_epochs == max_epochs ASHA's only rung is the last epoch: trials below the median there were
    trained in full and then recorded as pruned, their results thrown away."""
    res = Runner(small_bbc).run(until="model.tune", overrides={"model.tune": {
        "n_trials": 5, "min_epochs": 1, "max_epochs": 1, "pruner": "asha"}})
    assert res.ok, [o.error for o in res.steps]
    exp = [e for e in small_bbc.store.experiments() if e.kind == "tune"][-1]
    states = [t.state for t in small_bbc.store.trials(exp.id)]
    assert states == ["complete"] * 5, states


def test_a_pruned_trial_is_said_with_the_value_the_pruner_judged(small_bbc):
    """"trial 11 pruned after 3 epoch(s) at val_accuracy 1.0000" gave the trial's best epoch, where ASHA judged its
    last one (0.9688): it read as a pruner that threw away the best result. The line gives the epoch judged."""
    from runtime.jobs.bus import EventBus

    said: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message or "") if e.step == "model.tune" else None)
    res = Runner(small_bbc, bus=bus).run(until="model.tune", overrides={"model.tune": {
        "n_trials": 8, "min_epochs": 1, "max_epochs": 4, "pruner": "asha"}})
    assert res.ok, [o.error for o in res.steps]
    exp = [e for e in small_bbc.store.experiments() if e.kind == "tune"][-1]
    pruned = [t for t in small_bbc.store.trials(exp.id) if t.state == "pruned"]
    assert pruned, "ASHA pruned no trial of 8: the test needs one"
    for t in pruned:
        ms = small_bbc.store.metrics(t.id)
        line = next(m for m in said if m.startswith(f"trial {t.number} pruned after "))
        assert line.startswith(f"trial {t.number} pruned after {len(ms)} epoch(s): val_accuracy "
                               f"{ms[-1]['val_accuracy']:.4f} at epoch {len(ms)}"), (line, ms)


def test_photos_of_many_sizes_and_modes_train_and_predict(tmp_path):
    """A folder of JPEGs and PNGs of any size, some grayscale, some with transparency, one a palette PNG: what a
    user's photos are. model.preprocess failed on it with NumPy's "all input arrays must have the same shape";
    they are now resized to one size (the median, or model.preprocess.image_size) and converted to RGB, and the
    model's test images and `cdl models predict` files get the same."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from runtime.api import add_source
    from runtime.domain.errors import ConfigError
    from runtime.workspace import Workspace

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for cls, rgb in colours.items():
        (root / cls).mkdir(parents=True)
        for i in range(12):
            h, w = (int(v) for v in rng.integers(12, 40, 2))
            arr = np.clip(np.array(rgb)[None, None] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            im = Image.fromarray(arr)
            if i == 1:
                im = im.convert("RGBA")
            elif i == 2:
                im = im.convert("P")  # a palette PNG: its array was the palette indices
            elif i == 3:
                im = im.convert("L")
            im.save(root / cls / (f"{i}.jpg" if i > 3 and i % 2 else f"{i}.png"))
    ws = Workspace.init(tmp_path / "ws", "image-classification")
    add_source(ws, root)
    from runtime.jobs.bus import EventBus

    said: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message or ""))
    res = Runner(ws, bus=bus).run(until="model.evaluate", overrides={
        "model.tune": {"n_trials": 1, "max_epochs": 1},
        "model.train": {"framework": "torch", "epochs": 4, "use_tuned": False},
        "model.evaluate": {"threshold": 0.0}})
    assert res.ok, [o.error for o in res.steps]
    assert any("training image(s) resized to" in m and "(the median size;" in m for m in said), said
    assert any("training image(s) converted to RGB" in m for m in said), said
    view = ws.dataset()
    red = view.read_image(next(r for r in view.rows if r.source.endswith("red/2.png")))
    assert red.ndim == 3 and red.shape[2] == 3 and red[..., 0].mean() > 150  # colours, not palette indices
    mv = ws.store.model_version("ws", 1)
    h, w, c = mv.extra["arch"]["input_shape"]
    assert c == 3 and 12 <= h < 40 and 12 <= w < 40
    # a file of yet another size and mode, predicted through the CLI
    Image.fromarray(np.full((90, 60, 3), colours["red"], np.uint8)).convert("P").save(tmp_path / "big-red.png")
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "models", "predict", "ws:1",
                          "--file", str(tmp_path / "big-red.png"), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (pred,) = json.loads(out.stdout)["predictions"]["ws:1"]
    assert pred["label"] == "red", pred  # plain colours: a model of 4 epochs tells them apart
    # image_size sets the size; a size that is no [height, width] is refused before anything runs
    res = Runner(ws).run(steps=["model.preprocess"], overrides={"model.preprocess": {"image_size": [16, 20]}})
    assert res.ok and res.steps[0].summary["features"] == 16 * 20 * 3
    with pytest.raises(ConfigError, match=r"model.preprocess.image_size: expected \[height, width\]"):
        Runner(ws).run(steps=["model.preprocess"], overrides={"model.preprocess": {"image_size": [16]}})
    ws.close()


def test_a_dataset_of_one_class_says_what_training_needs(tmp_path):
    """Labeling had begun with one class: model.tune then failed with scikit-learn's "With n_samples=1,
    test_size=0.2 ... the resulting train set will be empty"."""
    import numpy as np

    from runtime.api import add_source
    from runtime.domain.errors import CdlError
    from runtime.ml.common import validation_split
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    rows = ["text,label"] + [f"article {i} about the cup final and the striker who scored,sport" for i in range(6)]
    rows += [f"article {i} nobody has labeled yet but long enough to keep," for i in range(3)]
    (tmp_path / "one.csv").write_text("\n".join(rows) + "\n")
    add_source(ws, tmp_path / "one.csv")
    res = Runner(ws).run(until="model.train")
    assert not res.ok
    failed = next(o for o in res.steps if o.status == "failed")
    assert failed.step == "model.preprocess", [(o.step, o.status, o.error) for o in res.steps]
    assert "training split has labeled items of one class (sport: " in failed.error
    assert "a classifier needs two or more; 3 item(s) of v1 are unlabeled" in failed.error
    with pytest.raises(CdlError, match="a classifier needs items of two classes or more"):
        validation_split(np.zeros(5, np.int64), 0.2, 0)
    ws.close()


def test_a_small_training_split_still_has_a_validation_item_of_every_class():
    """12 rows of 3 classes (9 for training): model.tune failed with scikit-learn's "The test_size = 2 should be
    greater or equal to the number of classes = 3"."""
    import numpy as np

    from runtime.ml.common import validation_split

    y = np.array([0, 1, 2] * 3)
    tr, va = validation_split(y, 0.2, 42)
    assert sorted(y[va].tolist()) == [0, 1, 2] and sorted(y[tr].tolist()) == [0, 0, 1, 1, 2, 2]
    y = np.array([0, 0, 1, 1, 2, 2])  # one of each class either side leaves none over: still one of each
    tr, va = validation_split(y, 0.2, 0)
    assert sorted(y[va].tolist()) == [0, 1, 2] and sorted(y[tr].tolist()) == [0, 1, 2]
    y = np.array([0] * 40 + [1] * 40 + [2] * 20)  # enough items: the fraction, stratified, as before
    tr, va = validation_split(y, 0.2, 0)
    assert len(va) == 20 and np.bincount(y[va]).tolist() == [8, 8, 4]


def test_texts_with_no_word_to_count_say_what_a_word_is(tmp_path):
    """Codes such as "w123 x9" (no run of two letters): model.preprocess failed with scikit-learn's "empty
    vocabulary; perhaps the documents only contain stop words"; every word in one text only, with its "After
    pruning, no terms remain"."""
    from runtime.api import add_source
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    rows = ["text,label"] + [f"w{i} {i * 7} x{i} code 42-{i} a1 b2 c3 d4 e5,{'ab'[i % 2]}" for i in range(20)]
    (tmp_path / "codes.csv").write_text("\n".join(rows).replace(" code ", " ") + "\n")
    add_source(ws, tmp_path / "codes.csv")
    res = Runner(ws).run(until="model.preprocess")
    failed = next(o for o in res.steps if o.status == "failed")
    assert failed.step == "model.preprocess"
    assert failed.error.startswith("none of the 16 training texts has a word to count: a word is a run of two or "
                                   "more letters"), failed.error
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
             "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]
    rows = ["text,label"] + [f"{w}{w} {w}ish {w}ly {w}ness {w}dom {w}hood,{'ab'[i % 2]}" for i, w in enumerate(words)]
    (tmp_path / "codes.csv").write_text("\n".join(rows) + "\n")
    res = Runner(ws).run(until="model.preprocess")
    failed = next(o for o in res.steps if o.status == "failed")
    assert "no word occurs in 2 or more of the 16 training texts (model.preprocess.min_df: 2); lower min_df" in \
        failed.error, failed.error
    ws.close()


def test_the_class_order_is_the_one_the_workspace_names(text_ws):
    """labeling.classes, then the sources' class_names, in their order; other classes after them, alphabetically."""
    from runtime.datasets import class_order, named_order

    cfg = text_ws.config()
    cfg.labeling["classes"] = ["tech", "sport"]
    cfg.set_param("data.import", "sources", [{"path": "a.csv", "class_names": ["World", "Sports", "tech"]},
                                             {"path": "b.zip"}, {"path": "fm", "class_names": "mnist"}])
    cfg.save()
    named = named_order(text_ws)
    assert named[:4] == ["tech", "sport", "World", "Sports"] and named[4:] == [str(i) for i in range(10)]
    assert class_order(named, {"World", "politics", "sport", "tech", "business"}) == [
        "tech", "sport", "World", "business", "politics"]
    assert class_order([], {"b", "a"}) == ["a", "b"]


def test_training_says_when_the_tuned_parameters_come_from_another_model(small_bbc):
    """model.train takes model.tune's best parameters (use_tuned); a study of bbc-net gave them to an mlp without a
    word after model.train.template changed."""
    from runtime.domain.events import EventKind
    from runtime.jobs import EventBus

    ws = small_bbc
    assert Runner(ws).run(until="model.tune", overrides={"model.tune": {"n_trials": 1, "max_epochs": 1}}).ok
    logs: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: logs.append(e.message) if e.kind == EventKind.LOG else None)
    for template, warned in (("bbc-net", False), ("mlp", True)):
        logs.clear()
        res = Runner(ws, bus=bus).run(steps=["model.train"], overrides={"model.train": {
            "template": template, "epochs": 1}})
        assert res.ok, [o.error for o in res.steps]
        said = [m for m in logs if "model.tune searched" in m]
        assert bool(said) == warned, logs
    assert said[0].startswith("model.tune searched bbc-net (torch), and model.train trains mlp (torch)"), said


def test_the_src_readme_example_builds_a_model():
    """`cdl init` writes src/README.md with the build_model interface and an example: the example must work."""
    import textwrap

    import torch

    from runtime.workspace.workspace import SRC_README

    example = textwrap.dedent(SRC_README.split("For example (PyTorch, text):\n", 1)[1].split("\nIt may import", 1)[0])
    ns: dict = {}
    exec(compile(example, "src/README.md", "exec"), ns)  # noqa: S102
    model = ns["build_model"]((100,), 3, {"hidden": 8, "dropout": 0.1, "lr": 0.001, "batch_size": 4})
    assert model(torch.zeros(2, 100)).shape == (2, 3)


def test_errors_in_the_model_code_say_what_and_where(small_bbc):
    """A src: model that does not fit the data failed deep inside training ("IndexError: Target 4 is out of bounds",
    "mat1 and mat2 shapes cannot be multiplied (32x2142 and 2143x5)"), and an error in build_model gave no line of
    the user's file: each now says what is wrong and where, and the run keeps the traceback."""
    from runtime.jobs.runner import step_history

    ws = small_bbc
    assert Runner(ws).run(steps=["model.preprocess"]).ok
    cases = [  # the model code, what the step says, what the run's traceback holds (None: no exception was raised)
        ("return torch.nn.Linear(input_shape[0], 3)",
         "src:tiny.py: its model gives outputs of shape (2, 3) for a batch of shape (2, 2142); it must give one "
         "logit per class: (2, 5)", None),
        ("return torch.nn.Linear(input_shape[0] + 1, num_classes)",
         "src:tiny.py: its model fails on a batch of shape (2, 2142): RuntimeError: mat1 and mat2 shapes cannot be "
         "multiplied (2x2142 and 2143x5)", "RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
        ("width = params['hiden']\n    return torch.nn.Linear(input_shape[0], width)",
         "src:tiny.py: build_model(input_shape=(2142,), num_classes=5, params) failed: KeyError: 'hiden' "
         "(src/tiny.py, line 4, in build_model)", 'File "src/tiny.py", line 4, in build_model'),
    ]
    for body, said, traced in cases:
        (ws.root / "src" / "tiny.py").write_text(f"import torch\n\ndef build_model(input_shape, num_classes, params):\n"
                                                 f"    {body}\n")
        res = Runner(ws).run(steps=["model.train"], overrides={"model.train": {
            "template": "src:tiny.py", "use_tuned": False, "epochs": 1}})
        assert not res.ok
        assert res.steps[0].error == said, res.steps[0].error
        assert (res.steps[0].traceback is None) == (traced is None)  # CI's JUnit report carries it
        run = step_history(ws, "model.train", limit=1)["runs"][0]
        assert run["error"] == said, run
        # the step's status (the flowchart, `cdl status`) gives the error's line, not its traceback too
        assert {s.id: s for s in Runner(ws).statuses()}["model.train"].reason == said
        if traced is None:
            assert run["traceback"] is None, run
        else:
            assert run["traceback"].startswith("Traceback (most recent call last)") and traced in run["traceback"], run


def test_an_error_in_the_model_code_during_training_names_its_line(small_bbc):
    from runtime.jobs.runner import step_history

    ws = small_bbc
    assert Runner(ws).run(steps=["model.preprocess"]).ok
    (ws.root / "src" / "tiny.py").write_text(
        "import torch\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, n, k):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(n, k)\n\n"
        "    def forward(self, x):\n"
        "        if self.training:\n"
        "            raise ValueError('only while training')\n"
        "        return self.fc(x)\n\n"
        "def build_model(input_shape, num_classes, params):\n"
        "    return Net(input_shape[0], num_classes)\n")
    res = Runner(ws).run(steps=["model.train"], overrides={"model.train": {
        "template": "src:tiny.py", "use_tuned": False, "epochs": 1}})
    assert res.steps[0].error == "ValueError: only while training (src/tiny.py, line 10, in forward)", res.steps[0]
    # `cdl run --json --junit` (CI): the step's traceback, which names the user's line, is in both
    from runtime.reporting import job_json, write_junit

    assert 'File "src/tiny.py", line 10, in forward' in job_json(res)["steps"][0]["traceback"]
    write_junit(res, ws.root / "report.xml")
    assert 'File "src/tiny.py", line 10, in forward' in (ws.root / "report.xml").read_text()
    assert 'File "src/tiny.py", line 10, in forward' in step_history(ws, "model.train", limit=1)["runs"][0]["traceback"]
    from click.testing import CliRunner

    from runtime.cli import cli

    r = CliRunner().invoke(cli, ["-w", str(ws.root), "run", "model.train", "--set", "model.train.template=src:tiny.py",
                                 "--set", "model.train.use_tuned=false", "--set", "model.train.epochs=1"])
    assert r.exit_code == 1 and "✗ model.train: ValueError: only while training (src/tiny.py, line 10, in forward)\n" \
        "    Traceback (most recent call last):" in r.stderr and '      File "src/tiny.py", line 10, in forward' \
        in r.stderr, r.stderr  # `cdl run` prints where, under the step's line
    out = CliRunner().invoke(cli, ["-w", str(ws.root), "runs", "model.train"]).output  # the newest run's traceback
    newest, older = out.split("\n#", 1)  # the traceback under the newest run only, before the run before it
    assert '       File "src/tiny.py", line 10, in forward' in newest and newest.rstrip().endswith(
        "ValueError: only while training") and "Traceback" not in older, out


def test_a_runs_overrides_reach_the_steps_that_read_them(small_bbc):
    """model.tune searches model.train's template: under `cdl run --set model.train.template=mlp` it searched
    cdl.yaml's bbc-net (a step saw only its own overrides), and model.train then took a bbc-net study's parameters."""
    ws = small_bbc
    res = Runner(ws).run(until="model.tune", overrides={"model.train": {"template": "mlp"},
                                                        "model.tune": {"n_trials": 1, "max_epochs": 1}})
    assert res.ok, [o.error for o in res.steps]
    exp = [e for e in ws.store.experiments() if e.kind == "tune"][-1]
    assert (exp.framework, exp.template) == ("torch", "mlp")
    assert ws.config().params("model.train")["template"] == "bbc-net"  # for this run only


def test_a_misspelt_model_file_is_refused_before_anything_runs(small_bbc):
    """It failed in model.train with "ValueError: template 'src:tny.py': /.../src/tny.py does not exist", after the
    steps before it (a whole tuning study with cdl.yaml's template among them) had run."""
    from runtime.domain.errors import ConfigError

    ws = small_bbc
    (ws.root / "src" / "tiny.py").write_text(_tiny_module(8))
    before = len(ws.store.last_step_runs())
    with pytest.raises(ConfigError, match=r"model.train.template src:tny.py: src/tny.py does not exist \(did you mean "
                                          r"'tiny.py'\?\); src/ has tiny.py"):
        Runner(ws).run(until="model.train", overrides={"model.train": {"template": "src:tny.py"}})
    assert len(ws.store.last_step_runs()) == before  # nothing ran


@pytest.mark.tensorflow
def test_a_keras_src_model_builds_from_the_code_kept_with_it(tmp_path):
    """deploy.compress's distill builds a student from the version's arch, without a workspace: for a Keras src:
    model it failed with "template 'src:kn.py' needs a workspace" (PyTorch's kept its code already)."""
    from runtime.ml import keras_backend as kb
    from runtime.ml.common import user_source

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "kn.py").write_text(
        "import tf_keras as keras\n\n"
        "def build_model(input_shape, num_classes, params):\n"
        "    inp = keras.Input(shape=input_shape)\n"
        "    h = keras.layers.Dense(params['hidden'], activation='relu')(inp)\n"
        "    return keras.Model(inp, keras.layers.Dense(num_classes)(h))\n")
    arch = {"framework": "keras", "template": "src:kn.py", "input_shape": [10], "classes": ["a", "b", "c"],
            "hyperparameters": {"hidden": 4}, "layout": "flat", "source": user_source("src:kn.py", tmp_path)}
    (tmp_path / "src" / "kn.py").unlink()
    student = kb.build({**arch, "hyperparameters": {"hidden": 2}})
    assert student.output_shape == (None, 3) and student.layers[1].units == 2


def test_a_model_in_several_src_files_is_kept_whole(small_bbc):
    """`from layers import block` in src/net.py failed ("No module named 'layers'"): src/ was not importable. The
    files a model imports from src/ are kept with it now, are part of what makes training stale, and a version
    loads with its own copies after they change."""
    from runtime.jobs.runner import StepStatus
    from runtime.ml import torch_backend
    from runtime.ml.preprocess import load_transform

    ws = small_bbc
    src = ws.root / "src"
    (src / "layers.py").write_text("import torch\n\nWIDTH = 12\n\ndef block(n, k):\n"
                                   "    return torch.nn.Sequential(torch.nn.Linear(n, k), torch.nn.ReLU())\n")
    (src / "net.py").write_text("import torch\nfrom layers import WIDTH, block\n\n"
                                "def build_model(input_shape, num_classes, params):\n"
                                "    return torch.nn.Sequential(block(input_shape[0], WIDTH), torch.nn.Linear(WIDTH, num_classes))\n")
    cfg = ws.config()
    cfg.steps["model.train"].update({"template": "src:net.py", "use_tuned": False, "epochs": 1})
    cfg.steps["model.tune"].update({"n_trials": 1, "max_epochs": 1})
    cfg.save()
    res = Runner(ws).run(until="model.register")
    assert res.ok, [o.error for o in res.steps]
    v1 = ws.store.model_version("ws", 1)
    assert set(v1.extra["arch"]["source"]["modules"]) == {"layers"}
    ckpt = ws.artifacts.get(v1.artifacts["checkpoint"])
    X = load_transform(ws, v1.transform).X_test[:4]
    before = torch_backend.predict_proba(ckpt, X, ws.root)
    (src / "layers.py").write_text((src / "layers.py").read_text().replace("WIDTH = 12", "WIDTH = 20"))
    states = {s.id: s for s in Runner(ws).statuses()}
    assert states["model.train"].status == StepStatus.STALE, states["model.train"]
    np.testing.assert_array_equal(torch_backend.predict_proba(ckpt, X, ws.root), before)  # its own layers.py
    import sys

    assert "layers" not in sys.modules  # nothing of it stays behind for another version to pick up
    assert Runner(ws).run(until="model.register").ok
    v2 = ws.store.model_version("ws", 2)
    model, _ = torch_backend.load(ws.artifacts.get(v2.artifacts["checkpoint"]), ws.root)
    assert model[0][0].out_features == 20


def test_a_package_in_src_is_kept_with_the_model(small_bbc):
    """`from blocks import head` with src/blocks/__init__.py (and a relative import inside it): the package's
    modules are kept with the model as the single files are, and a version loads with its own copies."""
    from runtime.ml import torch_backend
    from runtime.ml.preprocess import load_transform

    ws = small_bbc
    pkg = ws.root / "src" / "blocks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .heads import head\n")
    (pkg / "heads.py").write_text("import torch\n\nWIDTH = 6\n\ndef head(n, k):\n"
                                  "    return torch.nn.Sequential(torch.nn.Linear(n, WIDTH), torch.nn.ReLU(), "
                                  "torch.nn.Linear(WIDTH, k))\n")
    (ws.root / "src" / "net.py").write_text("from blocks import head\n\n"
                                            "def build_model(input_shape, num_classes, params):\n"
                                            "    return head(input_shape[0], num_classes)\n")
    res = Runner(ws).run(until="model.register", overrides={
        "model.train": {"template": "src:net.py", "use_tuned": False, "epochs": 1},
        "model.tune": {"n_trials": 1, "max_epochs": 1}})
    assert res.ok, [o.error for o in res.steps]
    v1 = ws.store.model_version("ws", 1)
    source = v1.extra["arch"]["source"]
    assert set(source["modules"]) == {"blocks", "blocks.heads"} and source["packages"] == ["blocks"]
    ckpt = ws.artifacts.get(v1.artifacts["checkpoint"])
    X = load_transform(ws, v1.transform).X_test[:4]
    before = torch_backend.predict_proba(ckpt, X, ws.root)
    (pkg / "heads.py").write_text((pkg / "heads.py").read_text().replace("WIDTH = 6", "WIDTH = 9"))
    np.testing.assert_array_equal(torch_backend.predict_proba(ckpt, X, ws.root), before)
    import sys

    assert not {"blocks", "blocks.heads"} & set(sys.modules)


def test_a_study_trains_the_code_it_opened_with(small_bbc):
    """Every trial read src/ when its model was built: a model file edited during a long study (or a tuning worker
    whose checkout differs) mixed two models in one study without a word. The study keeps the code it opened with;
    a worker whose src/ differs trains that code and says so."""
    import dataclasses

    import optuna

    from runtime.ml.common import user_source
    from runtime.ml.tuning import PLAN_ATTR, Hooks, StudyPlan, open_study, run_study, storage

    ws = small_bbc
    (ws.root / "src" / "tiny.py").write_text(_tiny_module(8))
    res = Runner(ws).run(until="model.tune", overrides={"model.train": {"template": "src:tiny.py"},
                                                        "model.tune": {"n_trials": 1, "max_epochs": 1}})
    assert res.ok, [o.error for o in res.steps]
    name = ws.store.last_step_run("model.tune").summary["study"]
    plan = StudyPlan.from_json(optuna.load_study(study_name=name, storage=storage(ws.store)).user_attrs[PLAN_ATTR])
    assert plan.code["sha256"] == user_source("src:tiny.py", ws.root)["sha256"]
    (ws.root / "src" / "tiny.py").write_text("def build_model(input_shape, num_classes, params):\n"
                                             "    raise RuntimeError('edited since')\n")
    exp = ws.store.create_experiment(kind="tune", step="model.tune", job=None, dataset_version=ws.current_version(),
                                     transform=plan.transform, framework="torch", template="src:tiny.py",
                                     git_commit=None, git_dirty=False)  # a study still open, as a worker finds it
    study, plan = open_study(ws.store, "later", dataclasses.replace(plan, experiment_id=exp.id, n_trials=1,
                                                                    first_trial=0))
    logs: list[str] = []
    run_study(ws, study, plan, Hooks(log=logs.append))
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE], logs
    assert any("src:tiny.py: src/ here differs from the code the study opened with" in m for m in logs), logs


def test_training_reads_the_model_code_once(small_bbc):
    """model.train read src/ each time it built the model: a file saved during training gave the refit (and the ranks
    of a distributed run) another model than the one trained first. It reads src/ once, at the start."""
    import torch

    from runtime.domain.events import EventKind
    from runtime.jobs import EventBus
    from runtime.ml import torch_backend

    ws = small_bbc
    net = ws.root / "src" / "tiny.py"
    net.write_text(_tiny_module(8))
    bus = EventBus()
    logs: list[str] = []
    bus.subscribe(lambda e: logs.append(e.message) if e.kind == EventKind.LOG else None)
    bus.subscribe(lambda e: net.write_text(_tiny_module(30))  # saved in an editor while model.train's first fit runs
                  if e.kind == EventKind.METRIC and e.step == "model.train" else None)
    res = Runner(ws, bus=bus).run(until="model.register", overrides={
        "model.train": {"template": "src:tiny.py", "use_tuned": False, "epochs": 2, "patience": 1, "refit": True},
        "model.tune": {"n_trials": 1, "max_epochs": 1}})
    assert res.ok, [o.error for o in res.steps]
    mv = ws.store.model_version("ws", 1)
    assert any(m.startswith("refit: training again") for m in logs), logs
    model, _ = torch_backend.load(ws.artifacts.get(mv.artifacts["checkpoint"]), ws.root)
    assert [m.out_features for m in model if isinstance(m, torch.nn.Linear)][0] == 8


@pytest.mark.tensorflow
def test_a_keras_model_with_a_layer_of_its_own_loads(small_bbc):
    """A Keras src: model with a custom layer trained and registered, then failed in model.evaluate (and in every
    load: predict, export) with "TypeError: 'str' object is not callable": Keras cannot rebuild a layer class from
    the file alone. The layers the kept code defines are given to it."""
    ws = small_bbc
    (ws.root / "src" / "kcustom.py").write_text(
        "import tf_keras as keras\n\n\n"
        "class Scale(keras.layers.Layer):\n"
        "    def __init__(self, factor=2.0, **kw):\n"
        "        super().__init__(**kw)\n"
        "        self.factor = factor\n\n"
        "    def call(self, x):\n"
        "        return x * self.factor\n\n"
        "    def get_config(self):\n"
        "        return {**super().get_config(), 'factor': self.factor}\n\n\n"
        "def build_model(input_shape, num_classes, params):\n"
        "    inp = keras.Input(shape=input_shape)\n"
        "    h = Scale(0.5)(keras.layers.Dense(16, activation='relu')(inp))\n"
        "    return keras.Model(inp, keras.layers.Dense(num_classes)(h))\n")
    res = Runner(ws).run(until="deploy.export", overrides={
        "model.train": {"framework": "keras", "template": "src:kcustom.py", "use_tuned": False, "epochs": 3},
        "model.tune": {"n_trials": 1, "max_epochs": 1}, "model.evaluate": {"threshold": 0.0},
        "model.review": {"auto_approve_if_better": True}, "deploy.export": {"model": "ws:1"}})
    outcomes = {o.step: (o.status, o.error) for o in res.steps}
    assert outcomes["model.evaluate"][0] == "done", outcomes
    assert outcomes["deploy.export"][0] == "done", outcomes


def test_a_tuning_trial_failing_in_the_model_code_says_it_once(small_bbc, capfd):
    """Optuna's "Trial 0 failed with ..." warning came first, with a traceback through CDL Studio's own frames, then
    the step's line said the same: the step's line (with the user's traceback) is said alone."""
    ws = small_bbc
    (ws.root / "src" / "tiny.py").write_text("import torch\n\ndef build_model(input_shape, num_classes, params):\n"
                                             "    return torch.nn.Linear(input_shape[0], 3)\n")
    assert Runner(ws).run(steps=["model.preprocess"]).ok
    capfd.readouterr()
    res = Runner(ws).run(until="model.tune", overrides={"model.train": {"template": "src:tiny.py"},
                                                        "model.tune": {"n_trials": 2, "max_epochs": 1}})
    tune = next(o for o in res.steps if o.step == "model.tune")
    assert tune.status == "failed" and tune.error.startswith("src:tiny.py: its model gives outputs of shape (2, 3)")
    err = capfd.readouterr().err
    assert "failed with" not in err and "Traceback" not in err, err


def test_cdl_loop_help_names_every_ending_and_its_exit_code():
    """A cron job or CI step that runs `cdl loop` reads its exit code: the help names each ending with it."""
    from click.testing import CliRunner

    from runtime.cli import cli
    from runtime.loop import LoopResult

    text = " ".join(CliRunner().invoke(cli, ["loop", "--help"]).output.split())
    for status in ("done", "no-drift", "no-verdict", "no-data", "nothing-to-label"):
        assert LoopResult(status=status).code == 0 and status in text, status
    assert LoopResult(status="waiting").code == 3 and "(exit 3)" in text
    assert LoopResult(status="failed").code == 1 and "failed (exit 1)" in text


def test_grey_pictures_saved_as_rgb_stay_grey(tmp_path):
    """A folder of grey product photos, a few saved as RGB JPEGs (their three channels equal): model.preprocess made
    every image RGB ("127 of 151 training image(s) converted to RGB"), three times the features for the same
    pictures. Colour is what decides: these train as grayscale, and a colour picture would still make RGB."""
    import numpy as np
    from PIL import Image

    from runtime.api import add_source
    from runtime.jobs.bus import EventBus
    from runtime.ml.preprocess import has_colour
    from runtime.workspace import Workspace

    rng = np.random.default_rng(1)
    root = tmp_path / "grey"
    for cls, level in (("dark", 40), ("light", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            im = Image.fromarray(np.clip(level + rng.normal(0, 15, (20, 20)), 0, 255).astype(np.uint8))
            if i % 4 == 0:
                im.convert("RGB").save(root / cls / f"{i}.jpg", quality=90)
            else:
                im.save(root / cls / f"{i}.png")
    ws = Workspace.init(tmp_path / "ws", "image-classification")
    add_source(ws, root)
    said: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message or ""))
    res = Runner(ws, bus=bus).run(until="model.preprocess")
    assert res.ok, [o.error for o in res.steps]
    assert res.steps[-1].summary["features"] == 20 * 20, res.steps[-1].summary
    assert any("converted to grayscale (their colour channels are equal" in m for m in said), said
    ws.close()
    # what counts as colour
    grey = np.repeat(rng.integers(0, 255, (8, 8, 1), dtype=np.uint8), 3, axis=2)
    assert not has_colour(grey) and not has_colour(grey[..., 0]) and not has_colour(np.dstack([grey, grey[..., :1]]))
    tinted = grey.copy()
    tinted[0, 0, 2] = (int(tinted[0, 0, 2]) + 40) % 256
    assert has_colour(tinted)


def test_preprocess_says_what_it_left_out_of_the_split(tmp_path):
    """data.split said "train 1787" and model.preprocess "1703 train" on the BBC articles, with no word on the 84
    duplicates it had left out."""
    from runtime.api import add_source
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    rows = ["text,label"] + [f"{w} market shares fell {w} again today,{'ab'[i % 2]}" for i, w in enumerate(words)]
    rows += [rows[1], rows[2], "a text nobody labeled yet about markets,"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    add_source(ws, tmp_path / "t.csv")
    res = Runner(ws).run(until="model.preprocess")
    pre = next(o for o in res.steps if o.step == "model.preprocess")
    assert pre.status == "done", pre.error
    assert pre.summary["excluded"] == {"quarantined": 0, "unlabeled": 1, "duplicates": 2}, pre.summary
    assert pre.message.endswith("(left out: 2 duplicates, 1 unlabeled)"), pre.message
    ws.close()
