"""Hyperparameter search with Optuna: TPE (or random) sampling, ASHA or Hyperband pruning fed per epoch.

The study lives in the registry database through Optuna's RDB storage, so `optuna.load_study(study_name=...,
storage=...)` and optuna-dashboard open it, and tuning workers on several machines can share it when the
registry is on PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.domain.errors import ConfigError, NotFoundError, StepFailed, did_you_mean
from runtime.domain.text import params_line
from runtime.store import Store

PLAN_ATTR = "cdl"  # the study's user attribute holding the StudyPlan
# a trial queued again after its worker died (the names Optuna's RetryHeartbeatStaleTrialCallback uses, so
# its retried_trial_number() and retry_history() read ours)
RETRY_OF, RETRY_HISTORY = "failed_trial", "retry_history"

DEFAULT_SPACE: dict[str, Any] = {
    # like the thesis' Determined adaptive.yaml
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128]},
    "hidden": {"type": "int", "low": 64, "high": 512, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


def storage_url(store: Store) -> tuple[str, dict[str, Any]]:
    url = store.url
    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if store.schema:
        kwargs["connect_args"] = {"options": f"-csearch_path={store.schema}"}
    elif url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    return url, kwargs


def storage(store: Store, heartbeat: int | None = None, retries: int = 0):  # noqa: ANN201
    """Optuna's RDB storage on the registry database. With `heartbeat` (seconds), running trials send a
    heartbeat, and a trial whose worker stopped beating for 3 heartbeats is failed (in Optuna and in our trial
    table) by the next worker that looks, which queues it again with the same parameters (`retries` times at
    most, as Optuna's RetryHeartbeatStaleTrialCallback does): a trial lost with its worker does not count
    against the budget."""
    import optuna

    url, kwargs = storage_url(store)
    if not heartbeat:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)

    def stale(study, trial) -> None:  # noqa: ANN001
        tid = trial.user_attrs.get("cdl_trial_id")
        if tid is not None:
            store.finish_trial(int(tid), "failed", None, len(trial.intermediate_values))
        tlog = logging.getLogger("cdl.tune")
        tlog.warning("trial %s failed: its worker %s stopped sending heartbeats", trial.number,
                     trial.user_attrs.get("worker", "?"))
        if trial.user_attrs.get("over_budget"):
            return
        history = [*trial.system_attrs.get(RETRY_HISTORY, []), trial.number]
        if len(history) > retries:
            tlog.warning("trial %s is not run again: it was tried %d time(s) (model.tune.retries: %d)",
                         history[0], len(history), retries)
            return
        # a waiting trial: the next worker to start one takes it (Optuna runs waiting trials first)
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={"retry_of": trial.number},
            system_attrs={RETRY_OF: history[0], RETRY_HISTORY: history}))
        tlog.warning("trial %s queued again with the same parameters (try %d of %d)", history[0],
                     len(history) + 1, retries + 1)

    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=int(heartbeat),
                                      grace_period=int(3 * heartbeat), heartbeat_stale_trial_callback=stale)


def check_space(space: dict[str, Any], where: str) -> None:
    """Each name one that training takes, each range one Optuna can sample. A name training does not take
    (`learning_rate`, a typo) was sampled and then ignored: every trial trained with the same value, and the study
    reported an importance for a parameter that did nothing. Bounds that are not numbers raised a TypeError, and
    a log range from 0 Optuna's ValueError, mid-study."""
    from runtime.ml.common import TUNABLE

    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: expected a mapping of parameter names to ranges, e.g. "
                          "{lr: {type: float, low: 0.0001, high: 0.01, log: true}}")
    for name, d in space.items():
        if name in ("epochs", "patience"):
            raise ConfigError(f"{where}.{name}: not tunable: a trial trains up to max_epochs with no early stopping, "
                              "and ASHA stops the poor ones sooner (model.tune's max_epochs, min_epochs)")
        if name not in TUNABLE:
            raise ConfigError(f"{where}.{name}: training takes no such parameter{did_you_mean(name, TUNABLE)}; "
                              f"tunable: {', '.join(TUNABLE)}")
        if not isinstance(d, dict) or d.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(f"{where}.{name}: expected {{type: float|int|categorical, ...}}")
        if d["type"] == "categorical":
            if not isinstance(d.get("choices"), list) or not d["choices"]:
                raise ConfigError(f"{where}.{name}: categorical needs choices, a list such as [16, 32, 64]")
            continue
        for bound in ("low", "high"):
            v = d.get(bound)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{where}.{name}.{bound}: expected a number, got {v!r}")
            if d["type"] == "int" and v != int(v):
                raise ConfigError(f"{where}.{name}.{bound}: expected a whole number (type int), got {v!r}")
        if d["low"] >= d["high"]:
            raise ConfigError(f"{where}.{name}: needs low < high, got {d['low']} and {d['high']}")
        if d.get("log") and d["low"] <= 0:
            raise ConfigError(f"{where}.{name}: a log range needs low > 0, got {d['low']}")


def check_enqueued(sets: list[Any], space: dict[str, Any], n_trials: int, where: str) -> None:
    """Parameter sets to try first (Optuna's enqueue_trial): each a mapping of names from the search space to
    values inside it; no more of them than n_trials."""
    if len(sets) > n_trials:
        raise ConfigError(f"{where}: {len(sets)} parameter sets to try first, but n_trials is {n_trials}")
    for i, values in enumerate(sets):
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{where}[{i}]: expected a mapping of parameters, e.g. {{lr: 0.001, batch_size: 32}}")
        for name, v in values.items():
            d = space.get(name)
            if d is None:
                raise ConfigError(f"{where}[{i}].{name}: not in the search space ({', '.join(space)})")
            if d["type"] == "categorical":
                if v not in d["choices"]:
                    raise ConfigError(f"{where}[{i}].{name}: {v!r} is not one of {d['choices']}")
            elif isinstance(v, bool) or not isinstance(v, int | float) or (d["type"] == "int" and v != int(v)):
                raise ConfigError(f"{where}[{i}].{name}: expected {'a whole number' if d['type'] == 'int' else 'a number'}, "
                                  f"got {v!r}")
            elif not float(d["low"]) <= v <= float(d["high"]):
                raise ConfigError(f"{where}[{i}].{name}: {v} is outside the search space ({d['low']} to {d['high']})")


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    out = {}
    for name, d in space.items():
        if d["type"] == "float":
            out[name] = trial.suggest_float(name, float(d["low"]), float(d["high"]), log=bool(d.get("log")))
        elif d["type"] == "int":
            out[name] = trial.suggest_int(name, int(d["low"]), int(d["high"]), log=bool(d.get("log")))
        else:
            out[name] = trial.suggest_categorical(name, list(d["choices"]))
    return out


def make_sampler(kind: str, seed: int):  # noqa: ANN201
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def make_pruner(kind: str, min_epochs: int, max_epochs: int, reduction_factor: int):  # noqa: ANN201
    import optuna

    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=reduction_factor)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=max_epochs,
                                              reduction_factor=reduction_factor)
    return optuna.pruners.NopPruner()


def quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    trial_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _OurStopsAreNotFailures) for f in trial_log.filters):
        trial_log.addFilter(_OurStopsAreNotFailures())


class _OurStopsAreNotFailures(logging.Filter):
    """Optuna logs a trial ended by an exception as a failure, with the traceback. A cancel (Ctrl-C, the studio's
    Cancel) and a trial refused over budget end trials that way on purpose, and an error in the workspace's own
    model code (UserCodeError) is said by the step, with the user's own traceback: drop Optuna's two warnings for
    those trials (they showed CDL Studio's frames, not the user's line), keep every other failure's."""

    def __init__(self) -> None:
        super().__init__()
        self._dropped: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        from runtime.domain.errors import UserCodeError
        from runtime.ml.common import StopTraining

        msg = record.getMessage()
        m = re.match(r"Trial (\d+) failed with ", msg)
        if m is None:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OverBudget | UserCodeError) or (isinstance(exc, StopTraining) and str(exc) == "cancelled"):
            self._dropped.add(m.group(1))
            return False
        if msg.startswith(f"Trial {m.group(1)} failed with value") and m.group(1) in self._dropped:
            self._dropped.discard(m.group(1))
            return False
        return True


# -- studies shared by workers ------------------------------------------------------------------------------


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class StudyPlan:
    """Everything a worker needs to run trials of a study; kept in the study (user attribute "cdl")."""

    experiment_id: int
    space: dict[str, Any]
    n_trials: int
    max_epochs: int
    min_epochs: int
    pruner: str
    reduction_factor: int
    sampler: str
    seed: int
    val_fraction: float
    train: dict[str, Any]  # model.train's parameters (framework, template, defaults)
    transform: str  # the transformation registry key of the tensors
    heartbeat: int = 10
    timeout: float | None = None
    started: float = field(default_factory=time.time)
    first_trial: int = 0  # trials the study had before this run (a named study can be resumed)
    retries: int = 1  # times a trial lost with its worker is run again
    # model.train's src: code when the study opened (runtime.ml.common.user_source): every trial trains it, on
    # every worker, whatever src/ holds there or later (an edit during a long study mixed two models in it)
    code: dict[str, Any] | None = None

    def is_retry(self, t) -> bool:  # noqa: ANN001
        """A trial queued again after its worker died, for a trial of this run."""
        return t.system_attrs.get(RETRY_OF, -1) >= self.first_trial

    def window(self, trials: list) -> list:
        """The trials of this run, by number: its first n_trials new ones, every retry, and one more new one
        for each retry numbered before it (so trial numbers decide, the same way on every worker, which trial
        two racing workers may start: the other is refused)."""
        out, retries = [], 0
        for t in sorted(trials, key=lambda t: t.number):
            if t.number < self.first_trial:
                continue
            if self.is_retry(t):
                out.append(t)
                retries += 1
            elif t.number < self.first_trial + self.n_trials + retries:
                out.append(t)
        return out

    def admits(self, number: int, trials: list) -> bool:
        return any(t.number == number for t in self.window(trials))

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StudyPlan:
        return cls(**d)


@dataclass
class Hooks:
    log: Callable[[str], None] = lambda _m: None
    metric: Callable[..., None] = lambda **_kw: None
    progress: Callable[[float, str], None] = lambda _f, _m="": None
    cancelled: Callable[[], bool] = lambda: False


class OverBudget(Exception):
    """A trial started after the study's budget was spent (two workers raced for the last trial)."""


def open_study(store: Store, name: str, plan: StudyPlan | None = None, worker_seed: int = 0):  # noqa: ANN201
    """Create (with `plan`) or join (without) a study in the registry database."""
    import optuna

    quiet_optuna()
    if plan is None:
        try:
            existing = optuna.load_study(study_name=name, storage=storage(store))
        except KeyError:
            from runtime.domain.errors import did_you_mean

            names = optuna.get_all_study_names(storage=storage(store))  # oldest first
            newest = ", ".join(names[-5:]) + (f" and {len(names) - 5} older" if len(names) > 5 else "")
            raise ConfigError(f"no Optuna study {name!r} in {store.url}{did_you_mean(name, names)}; its studies: "
                              f"{newest or 'none'}") from None
        raw = existing.user_attrs.get(PLAN_ATTR)
        if raw is None:
            raise ConfigError(f"study {name!r} was not made by cdl model.tune (no plan in its user attributes)")
        plan = StudyPlan.from_json(raw)
        create = False
    else:
        create = True
    study = optuna.create_study(
        study_name=name, storage=storage(store, plan.heartbeat, plan.retries), direction="maximize",
        sampler=make_sampler(plan.sampler, plan.seed + worker_seed),
        pruner=make_pruner(plan.pruner, plan.min_epochs, plan.max_epochs, plan.reduction_factor),
        load_if_exists=True)
    if create:
        plan.first_trial = len(study.get_trials(deepcopy=False))
        study.set_user_attr(PLAN_ATTR, plan.to_json())
    return study, plan


def open_studies(store: Store) -> list[tuple[int, str]]:
    """(experiment id, study name) of tuning experiments still running, newest first."""
    return [(e.id, e.study) for e in reversed(store.experiments())
            if e.kind == "tune" and e.status == "running" and e.study]


def plan_trials(study, plan: StudyPlan, deepcopy: bool = False) -> list:  # noqa: ANN001
    """The trials of this run of the study (not those of an earlier run, not refused ones), retries included."""
    return plan.window(study.get_trials(deepcopy=deepcopy))


def _waiting(trials: list) -> int:
    import optuna

    return sum(t.state == optuna.trial.TrialState.WAITING for t in trials)


def _budget_spent(study, plan: StudyPlan) -> bool:  # noqa: ANN001
    """n_trials new trials started, and no retry waits."""
    trials = plan_trials(study, plan)
    return sum(not plan.is_retry(t) for t in trials) >= plan.n_trials and not _waiting(trials)


def retries_waiting(study, plan: StudyPlan) -> int:  # noqa: ANN001
    return _waiting(plan_trials(study, plan))


def run_trials(ws, study, plan: StudyPlan, hooks: Hooks, prep=None) -> dict[str, int]:  # noqa: ANN001
    """Pull trials of `study` until its budget (n_trials, or its timeout) is spent or `hooks.cancelled()`.

    Every trial is recorded twice: in Optuna (its pruner reads every worker's intermediate values, so pruning
    works across workers) and in our trial table under the study's experiment, with this worker's id.
    Returns {"trials": run here, "epochs": epochs trained here, "closed": 1 if it stopped because the
    model.tune run that opened the study ended (killed, failed) before the budget was spent}.
    """
    import optuna

    from runtime.ml.common import StopTraining, TrainConfig, training_backend, validation_split
    from runtime.ml.preprocess import load_transform

    store, workspace_root = ws.store, ws.root
    if prep is None:
        try:
            prep = load_transform(ws, plan.transform)
        except Exception as exc:  # noqa: BLE001
            raise StepFailed("model.tune", f"the tensors {plan.transform[:12]} of this study are not in the "
                             f"workspace {workspace_root} ({exc}): run `cdl run --until model.preprocess` "
                             "there on the same dataset version") from exc
    backend = training_backend(plan.train["framework"])
    tr_idx, va_idx = validation_split(prep.y_train, plan.val_fraction, plan.seed)
    me = worker_id()
    ran = {"trials": 0, "epochs": 0, "closed": 0}
    # trials finished and the budget, as the progress says them: after each trial, and within one after each epoch
    # (a study sat at 0 % through its whole first trial, a minute or more on Fashion-MNIST)
    trials0 = plan_trials(study, plan)
    tally = {"done": sum(1 for t in trials0 if t.state.is_finished()),
             "total": plan.n_trials + sum(1 for t in trials0 if plan.is_retry(t))}
    if plan.code:
        from runtime.ml.common import user_source

        here = user_source(plan.train["template"], workspace_root)
        if here is None or here["sha256"] != plan.code["sha256"]:
            hooks.log(f"{plan.train['template']}: src/ here {'lacks the file' if here is None else 'differs'} from "
                      f"the code the study opened with (sha256 {plan.code['sha256'][:12]}): its trials train that code")

    def objective(trial: optuna.Trial) -> float:
        if not plan.admits(trial.number, study.get_trials(deepcopy=False)):
            trial.set_user_attr("over_budget", True)
            raise OverBudget()
        hp = suggest(trial, plan.space)
        params = {**plan.train, **hp, "epochs": plan.max_epochs, "patience": 0}
        cfg = TrainConfig.from_params(plan.train["template"], params, workspace_root)
        cfg.source = plan.code
        retry_of = trial.user_attrs.get("retry_of")
        rec = store.create_trial(plan.experiment_id, trial.number, hp, worker=me, retry_of=retry_of)
        trial.set_user_attr("cdl_trial_id", rec.id)
        trial.set_user_attr("worker", me)
        if retry_of is not None:
            hooks.log(f"trial {trial.number}: trial {retry_of} again (its worker died), "
                      f"with {params_line(hp)}")
        best = {"v": 0.0, "epochs": 0, "last": 0.0}

        def on_epoch(epoch: int, m: dict[str, float]) -> None:
            ran["epochs"] += 1
            best["v"] = max(best["v"], m["val_accuracy"])
            best["epochs"] = epoch
            best["last"] = m["val_accuracy"]
            store.log_metrics(rec.id, epoch, m)
            hooks.metric(trial=trial.number, epoch=epoch, **{k: round(v, 5) for k, v in m.items()})
            trial.report(m["val_accuracy"], epoch)
            if hooks.cancelled():
                raise StopTraining("cancelled")
            total = max(tally["total"], 1)
            try:
                hooks.progress(min(0.99, (tally["done"] + epoch / plan.max_epochs) / total),
                               f"trial {trial.number}: epoch {epoch}/{plan.max_epochs} val_accuracy "
                               f"{m['val_accuracy']:.4f} ({tally['done']}/{total} trials finished)")
            except Exception:  # a step's progress raises once it is cancelled: a cancel, not a failed trial
                if hooks.cancelled():
                    raise StopTraining("cancelled") from None
                raise
            # the last epoch is never pruned: its training is done, and pruning it would only throw the result
            # away (with min_epochs == max_epochs ASHA's only rung is the last epoch, and it pruned every trial
            # below the median after training it in full)
            if epoch < plan.max_epochs and trial.should_prune():
                raise StopTraining("pruned")

        try:
            result = backend.train(prep.X_train, prep.y_train, tr_idx, va_idx, prep.classes, cfg, on_epoch)
            result.checkpoint.unlink(missing_ok=True)
        except StopTraining as exc:
            if str(exc) == "cancelled":  # a person stopped it: no failure of the trial's parameters
                store.finish_trial(rec.id, "cancelled", best["v"], best["epochs"])
                raise
            store.finish_trial(rec.id, "pruned", best["v"], best["epochs"])
            # the epoch the pruner judged, not the trial's best: "pruned … at val_accuracy 1.0000" read as a pruner
            # that threw away the best result, where that epoch's 0.9688 was what fell short
            hooks.log(f"trial {trial.number} pruned after {best['epochs']} epoch(s): val_accuracy {best['last']:.4f} at "
                      f"epoch {best['epochs']}" + (f" (its best {best['v']:.4f})" if best["v"] > best["last"] else ""))
            raise optuna.TrialPruned() from None
        except BaseException:
            store.finish_trial(rec.id, "failed", None, best["epochs"])
            raise
        value = max(h["val_accuracy"] for h in result.history)
        store.finish_trial(rec.id, "complete", value, len(result.history))
        hooks.log(f"trial {trial.number}: val_accuracy {value:.4f} with {params_line(hp)}")
        return value

    deadline = plan.started + plan.timeout if plan.timeout else None
    while not hooks.cancelled():
        if not study_open(store, plan):
            hooks.log(f"the model.tune run that opened this study ended "
                      f"({store.experiment(plan.experiment_id).status}): no more trials")
            ran["closed"] = 1
            break
        # checked right before the trial starts: the longer the gap, the likelier two workers race for the last
        # trial (the one that loses it is refused)
        if _budget_spent(study, plan) or (deadline is not None and time.time() >= deadline):
            break
        try:
            study.optimize(objective, n_trials=1, catch=(OverBudget,))
        except StopTraining:  # cancelled mid-trial: the trial is failed, the loop ends
            ran["trials"] += 1
            break
        ran["trials"] += 1
        trials = plan_trials(study, plan)
        done = sum(1 for t in trials if t.state.is_finished())
        total = plan.n_trials + sum(1 for t in trials if plan.is_retry(t))
        tally.update(done=done, total=total)
        hooks.progress(min(1.0, done / total), f"{done}/{total} trials finished")
    return ran


def study_open(store: Store, plan: StudyPlan) -> bool:
    """Whether the model.tune run that opened the study still runs (a killed one on this host is closed here)."""
    store.mark_interrupted_runs("the process running this step ended before it finished")
    try:
        return store.experiment(plan.experiment_id).status == "running"
    except NotFoundError:  # a study whose experiment row is not in this registry: keep going
        return True


def run_study(ws, study, plan: StudyPlan, hooks: Hooks, prep=None) -> None:  # noqa: ANN001
    """model.tune's share of the study: run trials until the budget is spent, wait for the other workers, and
    run any trial queued again meanwhile because its worker died."""
    while True:
        run_trials(ws, study, plan, hooks, prep=prep)
        wait_for_others(study, plan, hooks)
        late = plan.timeout is not None and time.time() >= plan.started + plan.timeout
        if hooks.cancelled() or late or not retries_waiting(study, plan):
            return


def wait_for_others(study, plan: StudyPlan, hooks: Hooks, poll: float = 1.0) -> None:  # noqa: ANN001
    """Wait until no trial of the study is running on another worker; a worker that died is found by its
    missing heartbeat and its trial failed."""
    import optuna
    from optuna.storages import fail_stale_trials

    while True:
        fail_stale_trials(study)
        running = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
        if not running or hooks.cancelled():
            return
        hooks.progress(0.99, f"waiting for {len(running)} trial(s) on other workers")
        time.sleep(poll)
