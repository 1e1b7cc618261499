"""The model pipeline (thesis Figure 4.3): preprocess, tune, train, register, evaluate, review.

Training runs with PyTorch or Keras (`framework` of model.train), on CUDA when present. Heavy imports happen
inside `run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.domain.errors import AwaitingPerson, CdlError, ConfigError, GateFailed, NotFoundError, StepFailed
from runtime.domain.steps import ParamSpec, Port, Role, StepSpec
from runtime.domain.text import changes_text, number, params_line
from runtime.ml.common import FRAMEWORKS, TUNABLE, WarmStartError  # numpy only; the engines load inside run
from runtime.steps.base import Step, StepContext, StepResult, hash_text, misspelt


def train_params(ctx: StepContext) -> dict[str, Any]:
    if "model.train" not in ctx.config.steps:
        raise StepFailed(ctx.step, "the pipeline has no model.train step (it holds framework and template)")
    return ctx.config.params("model.train")


def check_template(config: Any, where: str) -> None:  # noqa: ANN401 - a PipelineConfig
    """The cnn template takes images, and a src: template's file must be in src/: either failed only when the first
    model was built (a tuning study's every trial with it, "no trial completed"), after the steps before had run."""
    if "model.train" not in config.steps:
        return
    template = str(config.params("model.train")["template"])
    if config.task == "text" and template == "cnn":
        raise ConfigError(f"{where}: model.train.template cnn takes images, and this workspace is for text (cdl.yaml: "
                          "task: text): bbc-net or mlp")
    from runtime.ml.common import src_template

    named = src_template(template)
    if named is not None and config.path is not None:
        # a misspelt file failed when the first model was built, after the steps before had run
        src, file = Path(config.path).parent / "src", named[0]
        if not (src / file).is_file():
            import difflib

            have = sorted(p.name for p in src.glob("*.py")) if src.is_dir() else []
            close = difflib.get_close_matches(Path(file).stem, [Path(h).stem for h in have], n=1)  # not by ".py"
            raise ConfigError(f"{where}: model.train.template {template}: src/{file} does not exist"
                              + (f" (did you mean {close[0] + '.py'!r}?)" if close else "")
                              + f"; src/ has {', '.join(have) or 'no .py file'}")


def framework_of(ctx: StepContext) -> str:
    return train_params(ctx)["framework"]


def _last_summary(ctx: StepContext, step: str, key: str | None = None) -> dict[str, Any]:
    run = ctx.store.last_done_runs().get(step)
    if run is None:
        raise StepFailed(ctx.step, f"{step} has not run yet")
    if key is not None and key not in run.summary:
        raise StepFailed(ctx.step, f"{step}'s last run has no {key}")
    return run.summary


def _code_digest(ctx: StepContext) -> str:
    """model.train's template's code, where it is the workspace's own (src:FILE.py): editing the file makes the
    steps that train it stale, as a DVC stage whose code dependency changed ("" for the built-in templates)."""
    from runtime.ml.common import user_code_digest

    if "model.train" not in ctx.config.steps:
        return ""
    return user_code_digest(str(ctx.config.params("model.train")["template"]), ctx.workspace.root)


def _check_searched(ctx: StepContext, tune: dict[str, Any], params: dict[str, Any]) -> None:
    """Say so where model.tune's best parameters come from a study of another model than the one trained now
    (model.train's framework or template changed since model.tune ran): they are used all the same."""
    try:
        exp = ctx.store.experiment(int(tune["experiment_id"]))
    except (KeyError, TypeError, ValueError, NotFoundError):
        return
    if (exp.framework, exp.template) == (params["framework"], params["template"]):
        return
    ctx.log(f"model.tune searched {exp.template} ({exp.framework}), and model.train trains {params['template']} "
            f"({params['framework']}): its best parameters may not suit this model; run model.tune again "
            "(`cdl run model.tune --force`), or set model.train.use_tuned false")


def _prepared(ctx: StepContext):  # noqa: ANN202
    from runtime.ml.preprocess import load_transform

    key = _last_summary(ctx, "model.preprocess", "key")["key"]
    return load_transform(ctx.workspace, key, log=ctx.log)


def _git(ctx: StepContext) -> tuple[str | None, bool]:
    return ctx.workspace.git.head(), ctx.workspace.git.is_dirty()


# -- model.preprocess ---------------------------------------------------------------------------------------


class PreprocessStep(Step):
    spec = StepSpec(
        id="model.preprocess",
        title="Preprocess",
        pipeline="model",
        role=Role.DATA_SCIENTIST,
        inputs=(Port("labels", "labels"),),
        outputs=(Port("tensors", "transformed"),),
        params=(
            ParamSpec("vocab_size", "int", 10000, "text: vocabulary size (most frequent stems)", minimum=10),
            ParamSpec("min_df", "int", 2, "text: a stem must occur in this many training documents", minimum=1),
            ParamSpec("stemmer", "str", "porter", "text: stemmer (porter) or none", choices=("porter", None),
                      nullable=True),
            ParamSpec("stop_words", "bool", True, "text: drop English stop words (scikit-learn's list)"),
            ParamSpec("tfidf", "bool", False, "text: TF-IDF weighting instead of counts"),
            ParamSpec("sublinear_tf", "bool", False, "text: 1 + log(count)"),
            ParamSpec("norm", "str", "l2", "text: row normalisation", choices=("l2", "l1", None), nullable=True),
            ParamSpec("decode_errors", "str", "replace", "text: as in data.clean", choices=("replace", "ignore", "strict")),
            ParamSpec("standardize", "bool", False, "images: subtract the training mean, divide by the std"),
            ParamSpec("image_size", "list", None, "images: [height, width] every image is resized to (empty: the "
                      "size most training images have, else their median, at most 256 a side)", nullable=True),
        ),
        description="Count vectorization with Porter stemming (text) or one size, one colour mode and scaling to "
        "[0, 1] (images), fitted on the training split only; the tensors are cached in the transformation registry.",
    )

    reads = "the checked-out dataset version"

    def check_params(self, params: dict[str, Any]) -> None:
        size = params.get("image_size")
        if size is not None and (not isinstance(size, list) or len(size) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096 for v in size)):
            raise ConfigError(f"model.preprocess.image_size: expected [height, width], two whole numbers from 1 to "
                              f"4096 (empty: chosen from the training images), got {size!r}")

    def fingerprint(self, ctx: StepContext) -> str:
        from runtime.ml.preprocess import FORMAT

        return f"{ctx.workspace.current_version()}:format{FORMAT}"

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.ml.preprocess import prepare

        version = ctx.workspace.current_version()
        if version is None:
            raise StepFailed(ctx.step, "no dataset version: run the data pipeline first")
        ctx.progress(0.05, "loading")
        p = prepare(ctx.workspace, version, ctx.params, log=ctx.log)
        s = p.stats
        if len(p.classes) < 2:  # model.tune failed next with scikit-learn's "the resulting train set will be empty"
            more = f"; {s['unlabeled']} item(s) of {version} are unlabeled" if s.get("unlabeled") else ""
            raise StepFailed(ctx.step, f"{version}'s training split has labeled items of one class "
                             f"({', '.join(p.classes) or 'none'}: {s['train']}): a classifier needs two or more{more}. "
                             "Label items of another class (the labeling panel, `cdl labels next`), then run the data "
                             "pipeline again for a new version")
        msg = ("loaded from cache" if p.cached else "fitted and cached") + \
            f": {s['train']} train, {s['test']} test, {s['features']} features"
        left_out = [f"{s[k]} {k}" for k in ("duplicates", "quarantined", "unlabeled") if s.get(k)]
        if left_out:  # data.split's 1787 train became 1703 here, without a word on where 84 went
            msg += f" (left out: {', '.join(left_out)})"
        return StepResult(
            summary={"key": p.key, "cached": p.cached, "dataset_version": version, "train": s["train"],
                     "test": s["test"], "features": s["features"], "classes": p.classes,
                     "excluded": {k: s[k] for k in ("quarantined", "unlabeled", "duplicates")}},
            output_fp=p.key,
            message=msg,
        )


# -- model.tune ---------------------------------------------------------------------------------------------


def _study_name(ctx: StepContext, exp: Any) -> str:  # noqa: ANN401
    """"news-tune-2" for the experiment the dashboard lists as tune-2: the study took the experiment's id, which
    training experiments count too, so the log said "study news-tune-3" of the dashboard's tune-2. A name an older
    study holds keeps the id's (a study of that name would be joined, not made)."""
    import optuna

    from runtime.ml.tuning import storage

    taken = set(optuna.get_all_study_names(storage=storage(ctx.store)))
    base = ctx.config.name
    return next(n for n in (f"{base}-{exp.name}", f"{base}-tune-{exp.id}",
                            *(f"{base}-{exp.name}-{k}" for k in range(2, len(taken) + 3))) if n not in taken)


def _run_experiment(ws: Any, run: Any) -> Any:  # noqa: ANN401
    """The experiment the running step run `run` opened (None before it opened one)."""
    mine = [e for e in ws.store.experiments() if e.step == run.step and e.job == run.job
            and e.status == "running" and e.created >= run.started]
    return mine[-1] if mine else None


def _val_accuracy(ws: Any, trial: Any) -> str:  # noqa: ANN401
    last = [m for m in ws.store.metrics(trial.id) if m.get("val_accuracy") is not None]
    return f", val_accuracy {last[-1]['val_accuracy']:.4f}" if last else ""


class TuneStep(Step):
    spec = StepSpec(
        id="model.tune",
        title="Tune",
        pipeline="model",
        role=Role.DATA_SCIENTIST,
        inputs=(Port("tensors", "transformed"),),
        outputs=(Port("best", "hyperparameters"),),
        params=(
            ParamSpec("search_space", "dict", None, "name -> {type: float|int|categorical, low, high, log, choices}; "
                      f"names: {', '.join(TUNABLE)} (empty: lr, batch_size, hidden, dropout)",
                      nullable=True),
            ParamSpec("n_trials", "int", 12, "number of trials", minimum=1),
            ParamSpec("timeout", "float", None, "stop starting trials after this many seconds", nullable=True),
            ParamSpec("sampler", "str", "tpe", "tpe or random", choices=("tpe", "random")),
            ParamSpec("pruner", "str", "asha", "asha (successive halving), hyperband or none",
                      choices=("asha", "hyperband", "none")),
            ParamSpec("max_epochs", "int", 8, "epochs of a trial that is never pruned", minimum=1),
            ParamSpec("min_epochs", "int", 1, "epochs before a trial can be pruned", minimum=1),
            ParamSpec("reduction_factor", "int", 3, "ASHA/Hyperband reduction factor", minimum=2),
            ParamSpec("seed", "int", 42),
            ParamSpec("val_fraction", "float", 0.2, "validation share of the training split", minimum=0.05,
                      maximum=0.5),
            ParamSpec("study", "str", None, "Optuna study name (default: <workspace>-tune-<n>)", nullable=True),
            ParamSpec("heartbeat", "int", 10, "seconds between a running trial's heartbeats; a worker silent "
                      "for three is declared dead and its trial failed", minimum=1),
            ParamSpec("retries", "int", 1, "times a trial whose worker died is queued again with its parameters "
                      "(it then does not count against n_trials; 0: never)", minimum=0),
            ParamSpec("enqueue", "list", [], "parameter sets to try first, as Optuna's enqueue_trial, e.g. "
                      "[{lr: 0.001, batch_size: 32}]: names from the search space (the others are sampled); they "
                      "count against n_trials"),
        ),
        description="Optuna TPE search with ASHA pruning fed per epoch; the study lives in the registry "
        "database, where `cdl tune worker` processes on this or other machines join it; the best parameters go "
        "into model.train.",
    )

    reads = "the model code (model.train's src: template)"

    def fingerprint(self, ctx: StepContext) -> str:
        return _code_digest(ctx)

    def running_note(self, ws: Any, run: Any) -> tuple[str, float | None]:  # noqa: ANN401
        """"3 of 8 trials finished (1 complete, 2 pruned), trial 3 running (2 of 4 epochs)", and 3/8."""
        exp = _run_experiment(ws, run)
        if exp is None:
            return "preparing the study", 0.0
        trials = ws.store.trials(exp.id)
        params = run.params or {}
        ended = [t for t in trials if t.state != "running"]
        counts = ", ".join(f"{sum(t.state == k for t in ended)} {k}" for k in ("complete", "pruned", "failed")
                           if any(t.state == k for t in ended))
        note = f"{len(ended)} of {params.get('n_trials', '?')} trials finished" + (f" ({counts})" if counts else "")
        for t in (t for t in trials if t.state == "running"):
            note += f", trial {t.number} running ({t.epochs} of {params.get('max_epochs', '?')} epochs)"
        n = params.get("n_trials")
        return note, (min(1.0, len(ended) / n) if isinstance(n, int) and n > 0 else None)

    def check_params(self, params: dict[str, Any]) -> None:
        from runtime.ml.tuning import DEFAULT_SPACE, check_enqueued, check_space

        if params.get("search_space"):
            check_space(params["search_space"], "model.tune.search_space")
        if params.get("enqueue"):
            check_enqueued(list(params["enqueue"]), params.get("search_space") or DEFAULT_SPACE,
                           int(params.get("n_trials") or 12), "model.tune.enqueue")

    def check_in(self, params: dict[str, Any], config: Any) -> None:  # noqa: ANN401
        check_template(config, "model.tune")

    def run(self, ctx: StepContext) -> StepResult:
        import optuna

        from runtime.ml.common import user_source
        from runtime.ml.tuning import (
            DEFAULT_SPACE,
            Hooks,
            StudyPlan,
            check_space,
            open_study,
            plan_trials,
            run_study,
        )

        p = ctx.params
        tp = train_params(ctx)
        space = p["search_space"] or DEFAULT_SPACE
        check_space(space, "cdl.yaml: steps.model.tune.params.search_space")
        if p["enqueue"]:
            from runtime.ml.tuning import check_enqueued

            check_enqueued(list(p["enqueue"]), space, p["n_trials"], "cdl.yaml: steps.model.tune.params.enqueue")
        prep = _prepared(ctx)
        commit, dirty = _git(ctx)
        exp = ctx.store.create_experiment(kind="tune", step=ctx.step, job=ctx.job,
                                          dataset_version=ctx.workspace.current_version() or "",
                                          transform=prep.key, framework=tp["framework"], template=tp["template"],
                                          git_commit=commit, git_dirty=dirty)
        study_name = p["study"] or _study_name(ctx, exp)
        plan = StudyPlan(experiment_id=exp.id, space=space, n_trials=p["n_trials"], max_epochs=p["max_epochs"],
                         min_epochs=p["min_epochs"], pruner=p["pruner"], reduction_factor=p["reduction_factor"],
                         sampler=p["sampler"], seed=p["seed"], val_fraction=p["val_fraction"], train=dict(tp),
                         transform=prep.key, heartbeat=p["heartbeat"], timeout=p["timeout"],
                         retries=p["retries"], code=user_source(tp["template"], ctx.workspace.root))
        study, plan = open_study(ctx.store, study_name, plan)
        for values in p["enqueue"] or []:  # tried first, in this order (Optuna hands out waiting trials first)
            study.enqueue_trial(dict(values))
        if p["enqueue"]:
            ctx.log(f"{len(p['enqueue'])} parameter set(s) tried first: "
                    + "; ".join(", ".join(f"{k} {v}" for k, v in e.items()) for e in p["enqueue"]))
        # Workers (`cdl tune worker`) find the study through the running experiment from here on.
        ctx.store.update_experiment_study(exp.id, study_name)
        ctx.log(f"study {study_name}: {plan.n_trials} trials; more machines can join with "
                f"`cdl tune worker --workspace {ctx.workspace.root}`")
        hooks = Hooks(log=ctx.log, metric=ctx.metric, progress=ctx.progress, cancelled=lambda: ctx.cancelled)
        try:
            run_study(ctx.workspace, study, plan, hooks, prep=prep)
            ctx.check_cancelled()  # a cancel mid-trial ended run_trials early
        except BaseException:
            ctx.store.finish_experiment(exp.id, "cancelled" if ctx.cancelled else "failed")
            raise
        trials = [t for t in plan_trials(study, plan, deepcopy=True) if t.state.is_finished()]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            ctx.store.finish_experiment(exp.id, "failed")
            raise StepFailed(ctx.step, "no trial completed (all pruned or failed); widen the search space or "
                             "raise min_epochs")
        best = max(complete, key=lambda t: t.value)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
        failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
        retried = sum(plan.is_retry(t) for t in trials)
        records = ctx.store.trials(exp.id)
        workers = sorted({r.worker for r in records if r.worker})
        summary = {"experiment_id": exp.id, "study": study_name, "best_params": best.params,
                   "best_value": best.value, "best_trial": best.number, "trials": len(trials),
                   "pruned": pruned, "failed": failed, "retried": retried, "workers": workers,
                   "epochs_spent": sum(r.epochs for r in records),
                   "metrics": {"best_val_accuracy": best.value}}
        ctx.store.finish_experiment(exp.id, "done", summary)
        return StepResult(summary=summary, output_fp=hash_text(study_name, best.params),
                          # the experiment named, so that `cdl experiments show` finds the trials behind the line
                          message=f"best val_accuracy {best.value:.4f} (trial {best.number} of {exp.name}) after "
                          f"{len(trials)} trials "
                          f"({pruned} pruned, {failed} failed{f', {retried} run again' if retried else ''}) "
                          f"on {len(workers)} worker(s)")


# -- model.train --------------------------------------------------------------------------------------------


class TrainStep(Step):
    spec = StepSpec(
        id="model.train",
        title="Train",
        pipeline="model",
        role=Role.DATA_SCIENTIST,
        inputs=(Port("tensors", "transformed"), Port("best", "hyperparameters")),
        outputs=(Port("checkpoint", "checkpoint"),),
        params=(
            ParamSpec("framework", "str", "torch", "torch or keras", choices=FRAMEWORKS),
            ParamSpec("template", "str", "bbc-net", "bbc-net, mlp, cnn, or src:FILE.py[:FUNCTION] from the "
                      "workspace's src/ folder"),
            ParamSpec("epochs", "int", 20, "maximum epochs", minimum=1),
            ParamSpec("lr", "float", 1e-3, "learning rate", minimum=0.0),
            ParamSpec("batch_size", "int", 32, minimum=1),
            ParamSpec("hidden", "int", 256, "hidden units", minimum=1),
            ParamSpec("layers", "int", 2, "mlp: hidden layers", minimum=1),
            ParamSpec("dropout", "float", 0.3, minimum=0.0, maximum=0.95),
            ParamSpec("weight_decay", "float", 0.0, minimum=0.0),
            ParamSpec("patience", "int", 3, "early stopping: epochs without a better validation loss (0: off)",
                      minimum=0),
            ParamSpec("seed", "int", 42),
            ParamSpec("val_fraction", "float", 0.2, "validation share of the training split", minimum=0.05,
                      maximum=0.5),
            ParamSpec("use_tuned", "bool", True, "take the best parameters of model.tune when it ran"),
            ParamSpec("refit", "bool", False, "after early stopping found the best epoch count, train again "
                      "on the whole training split for that many epochs (more data; costs a second run)"),
            ParamSpec("init_from", "str", "", "start from these weights, not random ones: champion, challenger, "
                      "NAME:VERSION, or a weights file (.pt state_dict, .keras/.h5 model); the input layer follows "
                      "the vocabulary term by term, the output layer the classes by name"),
        ),
        description="Trains the template on the training split (a seeded 80/20 train/validation split of it), "
        "with per-epoch metrics, early stopping and a content-addressed checkpoint; optionally refits on the "
        "whole training split.",
    )

    def running_note(self, ws: Any, run: Any) -> tuple[str, float | None]:  # noqa: ANN401
        """"4 of 12 epochs, val_accuracy 0.9012", and 4/12."""
        exp = _run_experiment(ws, run)
        trials = ws.store.trials(exp.id) if exp is not None else []
        if not trials:
            return "preparing", 0.0
        t = trials[0]
        n = (run.params or {}).get("epochs")
        return (f"{t.epochs} of {n or '?'} epochs{_val_accuracy(ws, t)}",
                min(1.0, t.epochs / n) if isinstance(n, int) and n > 0 else None)

    def check_params(self, params: dict[str, Any]) -> None:
        ref = str(params.get("init_from") or "").strip()
        close = misspelt(ref, ("champion", "challenger")) if ref else None
        if close:  # taken as a model's name, it failed after model.tune had run
            raise ConfigError(f"model.train.init_from: {ref!r}: did you mean {close!r}? (a model of that name: "
                              f"{ref}:VERSION; a weights file: a .pt, .keras or .h5 path)")

    reads = "the model code (model.train's src: template)"

    def fingerprint(self, ctx: StepContext) -> str:
        return _code_digest(ctx)

    def check_in(self, params: dict[str, Any], config: Any) -> None:  # noqa: ANN401
        check_template(config, "model.train")

    def needs(self, params: dict[str, Any], config: Any) -> set[str]:
        tuned = params.get("use_tuned") and "model.tune" in config.steps
        return {"model.preprocess", *(["model.tune"] if tuned else [])}

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.ml import distributed
        from runtime.ml.common import (
            StopTraining,
            TrainConfig,
            training_backend,
            user_source,
            validation_split,
        )

        params = dict(ctx.params)
        tuned: dict[str, Any] = {}
        if params["use_tuned"] and "model.tune" in ctx.config.steps:
            tune = _last_summary(ctx, "model.tune", "best_params")
            best = tune["best_params"]
            _check_searched(ctx, tune, params)
            # a value given for this run (cdl run --set) wins over the tuned one; one from cdl.yaml does not
            kept = {k: (params[k], v) for k, v in best.items() if k in ctx.given and k in params}
            tuned = {k: v for k, v in best.items() if k not in kept}
            replaced = {k: (params[k], v) for k, v in tuned.items() if k in params and params[k] != v}
            params.update(tuned)
            ctx.log("using tuned parameters " + (params_line(tuned) or "(none)"))
            if replaced:  # a value given in cdl.yaml does not count while use_tuned is on: say so
                ctx.log("model.tune's best trial replaces " + changes_text(replaced)
                        + " (use_tuned; set it false to train with the values in cdl.yaml)")
            if kept:
                ctx.log("given for this run, kept over model.tune's best trial: "
                        + "; ".join(f"{k} {a} (tuned {number(b)})" for k, (a, b) in kept.items()))
        prep = _prepared(ctx)
        cfg = TrainConfig.from_params(params["template"], params, ctx.workspace.root)
        # src/ read once: the refit, and the ranks of a distributed run on other machines, train the same code
        cfg.source = user_source(params["template"], ctx.workspace.root)
        init_report = None
        if params.get("init_from"):
            from runtime.ml.common import warm_start_plan

            cfg.init = _init_from(ctx, params, prep)
            init_report = warm_start_plan(cfg.init, prep.classes)
            ctx.log(_init_line(init_report))
        backend = training_backend(params["framework"])
        tr_idx, va_idx = validation_split(prep.y_train, params["val_fraction"], params["seed"])
        commit, dirty = _git(ctx)
        exp = ctx.store.create_experiment(kind="train", step=ctx.step, job=ctx.job,
                                          dataset_version=ctx.workspace.current_version() or "",
                                          transform=prep.key, framework=params["framework"],
                                          template=params["template"], git_commit=commit, git_dirty=dirty)
        trial = ctx.store.create_trial(exp.id, 0, cfg.hyperparameters())

        def on_epoch(epoch: int, m: dict[str, float]) -> None:
            ctx.store.log_metrics(trial.id, epoch, m)
            ctx.metric(epoch=epoch, **{k: round(v, 5) for k, v in m.items()})
            ctx.progress(epoch / cfg.epochs, f"epoch {epoch}/{cfg.epochs} val_accuracy {m['val_accuracy']:.4f}")
            if ctx.cancelled:
                raise StopTraining("cancelled")

        dist = distributed.settings(ctx.config.extra, str(ctx.config.path or "cdl.yaml"))
        if dist.enabled and params["framework"] != "torch":
            raise StepFailed(ctx.step, "training.distributed runs the torch framework only (cdl.yaml sets "
                             f"framework {params['framework']!r})")

        def fit(idx: np.ndarray, config: TrainConfig, callback, how=dist):  # noqa: ANN001, ANN202
            """Train; a failure (or a cancel) marks the trial and the experiment failed (cancelled) before it goes
            on up."""
            try:
                if how.enabled:
                    rec = ctx.store.get_transform(prep.key)
                    return distributed.launch(how, ctx.workspace.root / ".cdl" / "tmp", ctx.workspace.root / rec.path,
                                              prep.key, idx, va_idx, config, callback, lambda: ctx.cancelled, ctx.log)
                return backend.train(prep.X_train, prep.y_train, idx, va_idx, prep.classes, config, callback)
            except BaseException:
                state = "cancelled" if ctx.cancelled else "failed"
                ctx.store.finish_trial(trial.id, state, None, 0)
                ctx.store.finish_experiment(exp.id, state)
                ctx.check_cancelled()
                raise

        try:
            result = fit(tr_idx, cfg, on_epoch)
        except WarmStartError as exc:
            raise StepFailed(ctx.step, f"{exc}{_hyper_hint(cfg.init, cfg)}") from None
        refit_epochs = 0
        if params["refit"] and result.best_epoch > 0:
            import dataclasses

            refit_epochs = result.best_epoch
            # several machines: the refit runs on this one alone (its nproc_per_node processes), so that the other
            # machines' one command is all they run; a second rendezvous waited for a second command on each, which
            # the log printed only once the first run had ended, and the step hung until someone ran it
            how = dataclasses.replace(dist, nnodes=1) if dist.nnodes > 1 else dist
            where = f" on this machine alone ({how.nproc_per_node} process(es))" if dist.nnodes > 1 else ""
            ctx.log(f"refit: training again on all {len(prep.y_train)} training items for {refit_epochs} epoch(s)"
                    f"{where}")

            def on_refit_epoch(epoch: int, m: dict[str, float]) -> None:
                ctx.progress(epoch / refit_epochs, f"refit epoch {epoch}/{refit_epochs}")
                if ctx.cancelled:
                    raise StopTraining("cancelled")

            refit = fit(np.arange(len(prep.y_train)), dataclasses.replace(cfg, epochs=refit_epochs, patience=0),
                        on_refit_epoch, how)
            result.checkpoint.unlink(missing_ok=True)
            result.checkpoint = refit.checkpoint
            result.seconds += refit.seconds
        digest = ctx.workspace.artifacts.put_file(result.checkpoint, move=True)
        best = result.best
        ctx.store.finish_trial(trial.id, "complete", best.get("val_accuracy"), len(result.history))
        summary = {
            "experiment_id": exp.id, "trial_id": trial.id, "checkpoint": digest, "framework": result.framework,
            "template": result.template, "arch": result.arch, "device": result.device,
            "epochs": len(result.history), "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
            "seconds": round(result.seconds, 2), "params": cfg.hyperparameters(), "tuned": tuned,
            "transform": prep.key, "refit_epochs": refit_epochs, "val_fraction": params["val_fraction"],
            "init_from": init_report,
            "metrics": {"val_accuracy": best.get("val_accuracy"), "val_loss": best.get("val_loss"),
                        "train_accuracy": best.get("train_accuracy")},
        }
        ctx.store.finish_experiment(exp.id, "done", summary)
        ctx.log(f"trained on {result.device}: best epoch {result.best_epoch}, val_accuracy "
                f"{best.get('val_accuracy', 0):.4f}; checkpoint {digest[:12]}")
        return StepResult(summary=summary, output_fp=digest,
                          message=f"val_accuracy {best.get('val_accuracy', 0):.4f} ({exp.name}: {result.framework}, "
                          f"{len(result.history)} epoch{'' if len(result.history) == 1 else 's'}, {result.device})")


def _init_from(ctx: StepContext, params: dict[str, Any], prep) -> dict[str, Any]:  # noqa: ANN001
    """init_from resolved: the weights file, and the classes and vocabulary they were trained on (where known)."""
    from runtime.ml.preprocess import load_transform

    ref = str(params["init_from"]).strip()
    ws = ctx.workspace
    framework = params["framework"]
    text = prep.stats.get("kind") == "text"
    target_vocab = prep.spec.get("vocabulary") if text else None
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else ws.root / path
    if path.suffix in (".pt", ".pth", ".keras", ".h5"):
        if not path.is_file():
            raise StepFailed(ctx.step, f"init_from {ref}: {path} does not exist")
        kind = "torch" if path.suffix in (".pt", ".pth") else "keras"
        if kind != framework:
            raise StepFailed(ctx.step, f"init_from {ref}: a {kind} weights file, and model.train.framework is "
                             f"{framework}")
        classes = None
        if kind == "torch":
            import torch

            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                classes = ((blob.get("arch") or {}).get("classes")) if isinstance(blob, dict) else None
            except Exception:  # noqa: BLE001 - the backend says what is wrong with the file
                pass
        if text:
            ctx.log(f"init_from {ref}: a weights file carries no vocabulary, so its input layer is taken column "
                    "for column; a registered version (NAME:VERSION) carries the terms over by name")
        return {"ref": ref, "checkpoint": str(path), "classes": classes, "vocabulary": None,
                "target_vocabulary": None}
    if ref in ("champion", "challenger"):
        name = (ctx.config.steps.get("model.register") or {}).get("name") or ctx.config.name
        ref = f"{name}@{ref}"
    try:
        mv = ctx.store.resolve_model(ref)
    except CdlError as exc:
        raise StepFailed(ctx.step, f"init_from {params['init_from']}: {exc} (expected champion, challenger, "
                         "NAME:VERSION or a .pt/.keras/.h5 file)") from None
    if mv.framework != framework:
        raise StepFailed(ctx.step, f"init_from {mv.ref}: a {mv.framework} model, and model.train.framework is "
                         f"{framework}")
    if mv.template != params["template"]:
        raise StepFailed(ctx.step, f"init_from {mv.ref}: template {mv.template}, and model.train.template is "
                         f"{params['template']}")
    vocab = None
    if text and target_vocab is not None:
        vocab = load_transform(ws, mv.transform, log=ctx.log).spec.get("vocabulary")
    return {"ref": mv.ref, "checkpoint": str(ws.artifacts.get(mv.artifacts["checkpoint"])),
            "classes": list(mv.classes), "vocabulary": vocab, "target_vocabulary": target_vocab,
            "hyperparameters": mv.params}


def _init_line(report: dict[str, Any]) -> str:
    parts = []
    if "terms" in report:
        t = report["terms"]
        parts.append(f"{t['carried']} of {t['total']} vocabulary terms carried over"
                     + (f" ({t['new']} new, starting at zero)" if t["new"] else ""))
    if "classes" in report:
        c = report["classes"]
        said = f"{len(c['carried'])} of {len(c['carried']) + len(c['new'])} classes carried over"
        if c["new"]:
            said += f" (new: {', '.join(c['new'])})"
        if c["dropped"]:
            said += f" (no longer present: {', '.join(c['dropped'])})"
        parts.append(said)
    return f"starting from the weights of {report['from']}" + (": " + "; ".join(parts) if parts else "")


def _hyper_hint(init: dict[str, Any] | None, cfg) -> str:  # noqa: ANN001
    """Which hyperparameters that shape the model differ from the version the weights come from."""
    theirs = (init or {}).get("hyperparameters") or {}
    ours = cfg.hyperparameters()
    diff = [f"{k} {theirs[k]} there, {ours[k]} here" for k in ("hidden", "layers") if k in theirs and k in ours
            and theirs[k] != ours[k]]
    if not diff:
        return ""
    return (f" ({'; '.join(diff)}: train with the same, e.g. model.train.use_tuned false and "
            f"{', '.join(f'{k} {theirs[k]}' for k in ('hidden', 'layers') if k in theirs and theirs[k] != ours.get(k))})")


# -- model.register -----------------------------------------------------------------------------------------


class RegisterStep(Step):
    spec = StepSpec(
        id="model.register",
        title="Register",
        pipeline="model",
        role=Role.DATA_SCIENTIST,
        inputs=(Port("checkpoint", "checkpoint"),),
        outputs=(Port("model", "model_version"),),
        params=(
            ParamSpec("name", "str", None, "model name (default: the workspace's name)", nullable=True),
            ParamSpec("alias", "str", "challenger", "alias for the new version"),
        ),
        description="A model version with lineage: dataset version, experiment, trial, parameters, git commit "
        "and dirtiness, framework, artifact hashes.",
    )

    def check_params(self, params: dict[str, Any]) -> None:
        if params.get("name") is not None:
            from runtime.workspace.config import check_model_name

            check_model_name(params["name"], "model.register.name")

    def run(self, ctx: StepContext) -> StepResult:
        train = _last_summary(ctx, "model.train", "checkpoint")
        name = ctx.params["name"] or ctx.config.name
        tune_exp = None
        if "model.tune" in ctx.config.steps and train.get("tuned"):
            tune_exp = _last_summary(ctx, "model.tune").get("experiment_id")
        exp = ctx.store.experiment(train["experiment_id"])
        mv = ctx.store.register_model(
            name,
            framework=train["framework"],
            template=train["template"],
            dataset_version=exp.dataset_version,
            transform=train["transform"],
            experiment_id=train["experiment_id"],
            trial_id=train["trial_id"],
            tune_experiment_id=tune_exp,
            params=train["params"],
            metrics={k: v for k, v in train["metrics"].items() if v is not None},
            artifacts={"checkpoint": train["checkpoint"], "transform": train["transform"]},
            git_commit=exp.git_commit,
            git_dirty=exp.git_dirty,
            classes=train["arch"]["classes"],
            extra={"arch": train["arch"], "device": train["device"],
                   **({"init_from": train["init_from"]} if train.get("init_from") else {})},
        )
        ctx.store.set_alias(name, ctx.params["alias"], mv.version, reason="registered")
        return StepResult(summary={"name": name, "version": mv.version, "ref": mv.ref,
                                   "dataset_version": mv.dataset_version, "git_commit": mv.git_commit,
                                   "git_dirty": mv.git_dirty},
                          output_fp=f"{mv.ref}:{train['checkpoint']}",
                          message=f"registered {mv.ref} ({ctx.params['alias']})")


def registered(ctx: StepContext):  # noqa: ANN201
    s = _last_summary(ctx, "model.register", "ref")
    return ctx.store.model_version(s["name"], s["version"])


# -- model.evaluate -----------------------------------------------------------------------------------------


def predict(ctx: StepContext, mv, X) -> np.ndarray:  # noqa: ANN001
    from runtime.ml.versus import predict_proba

    return predict_proba(ctx.workspace, mv, X)


class EvaluateStep(Step):
    spec = StepSpec(
        id="model.evaluate",
        title="Evaluate",
        pipeline="model",
        role=Role.DATA_SCIENTIST,
        inputs=(Port("model", "model_version"),),
        outputs=(Port("evaluation", "evaluation"),),
        params=(
            ParamSpec("metric", "str", "test_accuracy", "the gate's metric", choices=("test_accuracy", "macro_f1")),
            ParamSpec("threshold", "float", 0.8, "the gate: the metric must reach this (the thesis used 0.7 "
                      "and 0.8)", minimum=0.0, maximum=1.0),
        ),
        description="The test split, never seen before this step: accuracy, macro-F1, per-class precision and "
        "recall, the confusion matrix; a failed gate fails the step.",
    )

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.ml.common import evaluate_predictions
        from runtime.ml.preprocess import load_transform

        mv = registered(ctx)
        prep = load_transform(ctx.workspace, mv.transform, log=ctx.log)
        if len(prep.y_test) == 0:
            raise StepFailed(ctx.step, "the test split has no labeled item, so there is nothing to evaluate on: "
                             "data.split's test_fraction (cdl.yaml) above 0, more items, or labels for the "
                             "test items (`cdl labels next`)")
        ctx.progress(0.2, f"predicting {len(prep.y_test)} test items")
        probs = predict(ctx, mv, prep.X_test)
        ev = evaluate_predictions(prep.y_test, probs, prep.classes)
        versus = _champion_on_this_test(ctx, mv, prep)
        if versus is not None:
            ev["champion"] = versus
        value = ev[ctx.params["metric"]]
        passed = value >= ctx.params["threshold"]
        gate = {"metric": ctx.params["metric"], "threshold": ctx.params["threshold"], "value": value,
                "passed": passed}
        metrics = {"test_accuracy": ev["test_accuracy"], "macro_f1": ev["macro_f1"]}
        ctx.store.update_model(mv.name, mv.version, metrics=metrics, evaluation={**ev, "gate": gate})
        summary = {"ref": mv.ref, "metrics": metrics, "gate": gate,
                   "per_class": {c: {k: round(v, 4) for k, v in d.items() if k != "support"}
                                 for c, d in ev["per_class"].items()}}
        predicted = np.asarray(ev["confusion_matrix"]).sum(axis=0)
        for i, (c, d) in enumerate(ev["per_class"].items()):
            ctx.log(f"{c:<16} precision {d['precision']:.3f} recall {d['recall']:.3f}" if d["support"] else
                    f"{c:<16} no test item of this class (predicted {int(predicted[i])} time(s))")
        if not passed:
            err = GateFailed(ctx.step, f"gate failed: {ctx.params['metric']} {value:.4f} < threshold "
                             f"{ctx.params['threshold']}")
            err.summary = summary
            raise err
        return StepResult(summary=summary, output_fp=hash_text(mv.ref, metrics),
                          message=f"{mv.ref}: test_accuracy {ev['test_accuracy']:.4f}, macro-F1 "
                          f"{ev['macro_f1']:.4f} (gate {ctx.params['threshold']} passed)")


def _champion_on_this_test(ctx: StepContext, mv, prep) -> dict[str, Any] | None:  # noqa: ANN001
    """The champion's metrics on the candidate's test split (runtime.ml.versus), so that a review compares like
    with like after the data changed. None: no champion, or it is `mv`."""
    from runtime.ml.versus import flattered, measure_on

    try:
        champ = ctx.store.model_version(mv.name, "champion")
    except NotFoundError:
        return None
    if champ.version == mv.version:
        return None
    try:
        out = measure_on(ctx.workspace, champ, mv, prep, log=ctx.log)
    except Exception as exc:  # noqa: BLE001 - the comparison is extra: the candidate's evaluation stands without it
        reason = str(exc) if isinstance(exc, CdlError) else f"{type(exc).__name__}: {exc}"
        ctx.log(f"champion {champ.ref} not evaluated on this test split: {reason}")
        return {"ref": champ.ref, "dataset_version": champ.dataset_version,
                "same_test_set": champ.transform == mv.transform, "error": reason}
    where = "the same test split" if out["same_test_set"] else f"{mv.ref}'s test split ({mv.dataset_version}; it " \
        f"was trained on {champ.dataset_version})"
    items = f"these {out['n']} test items"
    ctx.log(f"champion {champ.ref} on {where}: test_accuracy {out['test_accuracy']:.4f}, macro-F1 "
            f"{out['macro_f1']:.4f}" + (f"; classes it does not know: {out['classes_it_lacks']}"
                                        if out["classes_it_lacks"] else "")
            + (f"; {flattered(out['seen_in_training'], items, 'its')}" if out["seen_in_training"] else ""))
    return out


# -- model.review -------------------------------------------------------------------------------------------


class ReviewStep(Step):
    spec = StepSpec(
        id="model.review",
        title="Review",
        pipeline="model",
        role=Role.VALIDATOR,
        inputs=(Port("evaluation", "evaluation"),),
        outputs=(Port("champion", "model_version"),),
        params=(
            ParamSpec("auto_approve_if_better", "bool", False, "CI: approve automatically when the candidate "
                      "beats the champion on the test split (recorded as automatic), reject otherwise"),
            ParamSpec("metric", "str", "test_accuracy", choices=("test_accuracy", "macro_f1")),
        ),
        description="A validator approves (the version becomes champion) or rejects the candidate, with a "
        "comment: `cdl models review NAME:VERSION --approve --comment ...`.",
    )

    reads = "the candidate's reviews"
    changes_own_reads = True  # an automatic review (auto_approve_if_better) is one more review of the candidate

    def fingerprint(self, ctx: StepContext) -> str:
        try:
            mv = registered(ctx)
        except StepFailed:
            return ""
        return hash_text([(r.decision, r.created.isoformat()) for r in ctx.store.reviews(mv.name, mv.version)])

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.registry import auto_review, review, versus_champion

        mv = registered(ctx)
        reviews = ctx.store.reviews(mv.name, mv.version)
        if not reviews and ctx.params["auto_approve_if_better"]:
            rv = auto_review(ctx.store, mv, ctx.params["metric"])
            reviews = [rv]
            ctx.log(f"automatic review: {rv.decision}: {rv.comment}")
        if not reviews:
            versus = versus_champion(ctx.store, mv, ctx.params["metric"])
            waits = AwaitingPerson(ctx.step, f"{mv.ref} awaits review{f' ({versus})' if versus else ''}: "
                                   f"`cdl models review {mv.ref} --approve|--reject --comment TEXT --reviewer NAME`")
            waits.summary = {**AwaitingPerson.summary, "candidate": mv.ref}  # what it waits on, for other hints
            raise waits
        last = reviews[-1]
        if last.decision == "rejected":
            # a rejected candidate leaves the champion in place: the deployment pipeline goes on with it (its
            # output, the champion, is unchanged, so what was built for it stays up to date); with no champion
            # to go on with, nothing downstream may run
            why = (f"{mv.ref} was rejected by {last.reviewer}{' (automatic)' if last.automatic else ''}: "
                   f"{last.comment}")
            try:
                champ = ctx.store.model_version(mv.name, "champion")
            except NotFoundError:
                raise StepFailed(ctx.step, f"{why}; {mv.name} has no champion to go on with") from None
            return StepResult(summary={"ref": mv.ref, "decision": last.decision, "reviewer": last.reviewer,
                                       "automatic": last.automatic, "comment": last.comment,
                                       "champion": champ.ref},
                              output_fp=hash_text(champ.ref, "champion"),
                              message=f"{why}; {champ.ref} stays the champion")
        review(ctx.store, mv.ref, True, last.comment, last.reviewer, record=False)
        return StepResult(summary={"ref": mv.ref, "decision": last.decision, "reviewer": last.reviewer,
                                   "automatic": last.automatic, "comment": last.comment, "champion": mv.ref},
                          output_fp=hash_text(mv.ref, "champion"),
                          message=f"{mv.ref} approved by {last.reviewer}: champion")


STEPS = [PreprocessStep, TuneStep, TrainStep, RegisterStep, EvaluateStep, ReviewStep]
