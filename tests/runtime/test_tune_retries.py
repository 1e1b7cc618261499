"""A trial lost with its worker is queued again: Optuna's RDB storage (heartbeats) on a real SQLite registry."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from runtime.ml.tuning import RETRY_HISTORY, RETRY_OF, StudyPlan, _budget_spent, open_study, plan_trials
from runtime.store import Store


def _plan(**kw) -> StudyPlan:
    base = dict(experiment_id=1, space={"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
                n_trials=3, max_epochs=2, min_epochs=1, pruner="none", reduction_factor=2, sampler="random",
                seed=1, val_fraction=0.2, train={}, transform="t", heartbeat=1)
    return StudyPlan(**{**base, **kw})


def _t(number: int, retry_of: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(number=number, system_attrs={} if retry_of is None else {RETRY_OF: retry_of})


def test_the_window_orders_racing_trials_by_number():
    plan = _plan()
    # trial 1's worker died; its retry got number 3: the run is 0, 1, 2 and the retry, nothing more
    trials = [_t(0), _t(1), _t(2), _t(3, retry_of=1)]
    assert [t.number for t in plan.window(trials)] == [0, 1, 2, 3]
    assert not plan.admits(4, [*trials, _t(4)])
    # a worker started trial 3 before the death was seen (refused then: over budget), so the retry is 4
    trials = [_t(0), _t(1), _t(2), _t(3), _t(4, retry_of=1)]
    assert [t.number for t in plan.window(trials)] == [0, 1, 2, 4]
    # a retry numbered before the last new trial makes room for one more new one
    trials = [_t(0), _t(1), _t(2, retry_of=0), _t(3)]
    assert [t.number for t in plan.window(trials)] == [0, 1, 2, 3]
    assert not plan.admits(4, [*trials, _t(4)])
    # a resumed study: trials of the earlier run are not this run's, and neither are retries of them
    resumed = _plan(first_trial=5)
    assert [t.number for t in resumed.window([_t(3), _t(4), _t(5), _t(6, retry_of=5), _t(7, retry_of=4)])] == [5, 6, 7]
    assert not resumed.is_retry(_t(7, retry_of=4))


def _lose(study, storage) -> int:  # noqa: ANN001
    """Start a trial (a waiting one first, as optimize does), beat once, and let its worker 'die'."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    storage.record_heartbeat(trial._trial_id)
    return trial.number


# the tests start trials with study.ask() and beat once by hand, as optimize's heartbeat thread would
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")


def test_a_trial_whose_worker_died_runs_again_with_its_parameters(tmp_path):
    import optuna
    from optuna.storages import fail_stale_trials

    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        study, plan = open_study(store, "s", _plan(n_trials=2, retries=1))
        storage = study._storage
        lost = _lose(study, storage)
        time.sleep(3 * plan.heartbeat + 1.5)  # past the grace period of three heartbeats
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        assert trials[lost].state == optuna.trial.TrialState.FAIL
        (again,) = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
        assert again.params == trials[lost].params
        assert again.system_attrs[RETRY_OF] == lost and again.system_attrs[RETRY_HISTORY] == [lost]
        assert again.user_attrs == {"retry_of": lost}
        assert plan.is_retry(again) and again in plan_trials(study, plan)
        assert not _budget_spent(study, plan)  # one new trial of two started, and the retry waits
        # the retry is what the next trial takes; if its worker dies too, it is not queued a third time
        assert _lose(study, storage) == again.number
        time.sleep(3 * plan.heartbeat + 1.5)
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        assert not [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
        assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
        study.ask()  # the second new trial
        assert _budget_spent(study, plan)
    finally:
        store.close()


def test_retries_0_lets_a_lost_trial_count_against_the_budget(tmp_path):
    import optuna
    from optuna.storages import fail_stale_trials

    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        study, plan = open_study(store, "s", _plan(n_trials=1, retries=0))
        _lose(study, study._storage)
        time.sleep(3 * plan.heartbeat + 1.5)
        fail_stale_trials(study)
        assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL]
        assert _budget_spent(study, plan)
    finally:
        store.close()
