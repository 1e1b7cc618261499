"""A step's own rules (a search space, a template, a misspelt model word), checked before a run starts anything."""

from __future__ import annotations

import re

import pytest

from runtime.domain.errors import ConfigError
from runtime.jobs import Runner
from runtime.ml.tuning import DEFAULT_SPACE, check_space


@pytest.mark.parametrize(("space", "said"), [
    # a name training does not take was sampled and then ignored: every trial trained alike
    ({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
     "s.learning_rate: training takes no such parameter; tunable: lr, batch_size, hidden, dropout, weight_decay, "
     "seed, layers"),
    ({"dropuot": {"type": "float", "low": 0.0, "high": 0.5}}, "s.dropuot: training takes no such parameter (did "
     "you mean 'dropout'?)"),
    # the tuner sets these itself: a value sampled for them was overwritten without a word
    ({"epochs": {"type": "int", "low": 2, "high": 10}}, "s.epochs: not tunable: a trial trains up to max_epochs"),
    # a TypeError and Optuna's ValueError, mid-study, before
    ({"lr": {"type": "float", "low": "1e-4", "high": 0.01}}, "s.lr.low: expected a number, got '1e-4'"),
    ({"lr": {"type": "float", "low": 0, "high": 0.01, "log": True}}, "s.lr: a log range needs low > 0, got 0"),
    ({"hidden": {"type": "int", "low": 32.5, "high": 64}}, "s.hidden.low: expected a whole number (type int)"),
    ({"hidden": {"type": "int", "low": 64, "high": 64}}, "s.hidden: needs low < high, got 64 and 64"),
    ({"batch_size": {"type": "categorical", "choices": 32}}, "s.batch_size: categorical needs choices, a list"),
    ({"lr": 0.01}, "s.lr: expected {type: float|int|categorical, ...}"),
])
def test_a_search_space_that_would_tune_nothing_or_fail_mid_study_is_refused(space, said):
    with pytest.raises(ConfigError) as err:
        check_space(space, "s")
    assert said in str(err.value)


def test_the_default_space_and_every_tunable_name_pass():
    check_space(DEFAULT_SPACE, "s")
    check_space({"weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
                 "layers": {"type": "int", "low": 1, "high": 3}, "seed": {"type": "categorical", "choices": [1, 2]}},
                "s")


def test_a_bad_search_space_in_cdl_yaml_stops_the_run_before_anything_runs(text_ws):
    """Written by hand in cdl.yaml, a bad search space was found only when model.tune started, after the data
    and model.preprocess steps had run (minutes, on a large dataset)."""
    cfg = text_ws.config()
    cfg.set_param("model.tune", "search_space", {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}})
    cfg.save()
    with pytest.raises(ConfigError, match="model.tune.search_space.learning_rate: training takes no such parameter"):
        Runner(text_ws).run(until="model.train")
    assert text_ws.store.last_step_runs() == {}
    # a plan without model.tune does not check it
    assert Runner(text_ws).run(until="data.import").steps[0].step == "data.import"


def test_the_cnn_template_in_a_text_workspace_is_refused_before_anything_runs(text_ws):
    """It failed when the first model was built: in model.tune, as every trial ("no trial completed"), after the
    data steps had run. Refused at once, by `cdl run` (from cdl.yaml or --set), the Parameters dialog and the
    doctor."""
    from runtime.doctor import diagnose
    from runtime.params import set_step_params

    said = re.escape("model.train.template cnn takes images, and this workspace is for text (cdl.yaml: task: text)")
    with pytest.raises(ConfigError, match=f"model.tune: {said}"):
        Runner(text_ws).run(until="model.tune", overrides={"model.train": {"template": "cnn"}})
    with pytest.raises(ConfigError, match=said):
        set_step_params(text_ws, "model.train", {"template": "cnn"})
    assert text_ws.config().params("model.train")["template"] == "bbc-net"
    cfg = text_ws.config()
    cfg.steps["model.train"]["template"] = "cnn"
    cfg.save()
    with pytest.raises(ConfigError, match=f"model.train: {said}"):
        Runner(text_ws).run(steps=["model.train"])
    assert text_ws.store.last_step_runs() == {}
    assert any(re.search(said, c["detail"]) for c in diagnose(text_ws)["checks"] if c["status"] == "fail")


@pytest.mark.parametrize(("step", "param", "value", "said"), [
    ("deploy.export", "model", "champoin", "deploy.export.model: 'champoin': did you mean 'champion'?"),
    ("deploy.export", "model", "latets", "deploy.export.model: 'latets': did you mean 'latest'?"),
    ("model.train", "init_from", "chmpion", "model.train.init_from: 'chmpion': did you mean 'champion'?"),
])
def test_a_misspelt_model_word_is_refused_before_anything_runs(text_ws, step, param, value, said):
    """Taken as a model's name, "champoin" failed only when its step ran ("model 'champoin' does not exist"), after
    the steps before it (model.tune for init_from)."""
    with pytest.raises(ConfigError, match=re.escape(said)):
        Runner(text_ws).run(until=step, overrides={step: {param: value}})
    assert text_ws.store.last_step_runs() == {}


def test_a_model_name_or_ref_is_still_taken():
    from runtime.steps import get_step

    for value in ("champion", "challenger", "latest", "bbc", "bbc:3", "bbc@champion"):
        get_step("deploy.export").check_params({"model": value})
    for value in ("", "champion", "bbc:2", "weights/old.pt", "/tmp/model.keras"):
        get_step("model.train").check_params({"init_from": value})


@pytest.mark.parametrize(("push", "package", "said"), [
    ("dynamic_int9", None, "deploy.push.variant: 'dynamic_int9' is no variant deploy.compress makes (did you mean "
     "'dynamic_int8'?); it makes fp32, dynamic_int8, static_int8, prune, distill, lowrank, qat, tensorrt (or served: "
     "what each device serves now)"),
    ("static_int8", ["fp32", "dynamic_int8"], "deploy.push.variant: 'static_int8' is not among "
     "deploy.package.variants (fp32, dynamic_int8), so it has no bundle to push"),
])
def test_a_variant_the_pipeline_does_not_make_is_refused_before_anything_runs(text_ws, push, package, said):
    """It failed on every device when deploy.push ran, after export, compression, revision and packaging."""
    overrides = {"deploy.push": {"variant": push}, **({"deploy.package": {"variants": package}} if package else {})}
    with pytest.raises(ConfigError, match=re.escape(said)):
        Runner(text_ws).run(until="deploy.push", overrides=overrides)
    assert text_ws.store.last_step_runs() == {}
    Runner(text_ws).plan(text_ws.config(), until="deploy.push")  # fp32 and served are always taken
    from runtime.jobs.runner import check_plan

    for ok in ("fp32", "served", "dynamic_int8"):
        check_plan(text_ws.config(), ["deploy.push"], {"deploy.push": {"variant": ok}})


def test_a_device_that_is_not_enrolled_is_refused_before_anything_runs(text_ws, tmp_path):
    """deploy.push failed on a device name that is not enrolled only when the run got there, after export,
    compression, revision and packaging; `cdl doctor` says so too."""
    from runtime.devices import enroll
    from runtime.doctor import diagnose
    from runtime.jobs.runner import check_plan

    with pytest.raises(ConfigError, match=re.escape(
            "deploy.push.devices: 'pi9' is not enrolled; enrolled: none (`cdl devices enroll pi9 --address "
            "HOST:PORT`, or the devices panel's Enroll…)")):
        Runner(text_ws).run(until="deploy.push", overrides={"deploy.push": {"devices": ["pi9"]}})
    assert text_ws.store.last_step_runs() == {}
    enroll(text_ws, "cam1", "127.0.0.1:50999", tmp_path / "cam1")
    with pytest.raises(ConfigError, match=re.escape("deploy.push.devices: 'cam2' is not enrolled (did you mean "
                                                    "'cam1'?); enrolled: cam1")):
        check_plan(text_ws.config(), ["deploy.push"], {"deploy.push": {"devices": ["cam1", "cam2"]}}, text_ws)
    check_plan(text_ws.config(), ["deploy.push"], {"deploy.push": {"devices": ["cam1"]}}, text_ws)
    # the Parameters dialog (runtime.params) refuses to save it, as `cdl run` refuses to run it
    from runtime.params import set_step_params

    with pytest.raises(ConfigError, match=re.escape("deploy.push.devices: 'cam2' is not enrolled (did you mean")):
        set_step_params(text_ws, "deploy.push", {"devices": ["cam2"]})
    assert text_ws.config().steps["deploy.push"].get("devices") in (None, [])
    assert set_step_params(text_ws, "deploy.push", {"devices": ["cam1"]})["changed"] == {"devices": [[], ["cam1"]]}
    cfg = text_ws.config()
    cfg.steps["deploy.push"]["devices"] = ["cam2"]
    cfg.save()
    said = [c["detail"] for c in diagnose(text_ws)["checks"] if c["status"] == "fail"]
    assert any("deploy.push.devices: 'cam2' is not enrolled" in m for m in said), said


def test_a_parameter_change_is_committed_alone_and_a_hand_edit_is_left_as_it_was(text_ws):
    """Every parameter the studio's Parameters dialog, `--save` or `experiments use` changed left cdl.yaml
    uncommitted: the next runs recorded the code as dirty in the registry, and the doctor warned, to a user who never
    touched git. A change on a committed cdl.yaml is committed by itself (real git); a cdl.yaml edited by hand and
    not committed is written and left uncommitted, as the hand edit was (nothing of it goes into a commit that says
    something else)."""
    import subprocess

    from runtime.params import set_step_params

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=text_ws.root, capture_output=True, text=True, check=True).stdout

    out = set_step_params(text_ws, "model.train", {"epochs": 3, "lr": 0.002})
    assert out["commit"] and out["commit"] == git("rev-parse", "HEAD").strip()
    assert git("log", "-1", "--format=%s") == "model.train: epochs 20 → 3, lr 0.001 → 0.002\n"
    assert git("show", "--name-only", "--format=", "HEAD").split() == ["cdl.yaml"]
    assert not git("status", "--porcelain", "--", "cdl.yaml") and not text_ws.git.is_dirty()
    # something else staged stays staged, out of the commit
    (text_ws.root / "src" / "notes.txt").write_text("mine")
    git("add", "src/notes.txt")
    out = set_step_params(text_ws, "model.train", {"epochs": 4})
    assert git("show", "--name-only", "--format=", "HEAD").split() == ["cdl.yaml"]
    assert git("diff", "--cached", "--name-only").split() == ["src/notes.txt"]
    # a hand edit not committed: written, not committed
    head = git("rev-parse", "HEAD")
    cfg = text_ws.config()
    cfg.set_param("model.train", "batch_size", 16)  # as an editor saves it
    cfg.save()
    out = set_step_params(text_ws, "model.train", {"epochs": 5})
    assert out["commit"] is None and git("rev-parse", "HEAD") == head
    assert "batch_size: 16" not in git("show", "HEAD:cdl.yaml") and "epochs: 4" in git("show", "HEAD:cdl.yaml")
    assert {k: v for k, v in text_ws.config().params("model.train").items() if k in ("epochs", "batch_size")} == \
        {"epochs": 5, "batch_size": 16}
