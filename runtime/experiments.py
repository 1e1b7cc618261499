"""The experiment registry as a headless user reads it (`cdl experiments list|show`), as MLflow lists an
experiment's runs and `optuna trials` a study's trials: the tuning and training experiments, each one's trials with
state, value, epochs and parameters, the best trial, and the model versions that came from it.

The studio showed all of this (the tuning dashboard, the models panel's experiments table), but a CI job that ran
model.tune had its one line in `cdl runs model.tune` ("best val_accuracy 0.9795 after 12 trials"), and nothing
said which trial that was, with what parameters, or what the other eleven did."""

from __future__ import annotations

from collections import Counter
from typing import Any

from runtime.domain.entities import Experiment, Trial
from runtime.domain.errors import NotFoundError, did_you_mean
from runtime.domain.text import changes_text
from runtime.store import Store

METRIC = "val_accuracy"  # what a trial's value is: model.tune maximises it, model.train reports its best epoch's
STATES = ("complete", "pruned", "failed", "cancelled", "running")


def resolve(store: Store, ref: str) -> Experiment:
    """An experiment by name ("tune-2"), id ("6" or "#6"), or "latest" (the newest; "latest-tune", "latest-train":
    the newest of that kind)."""
    exps = store.experiments()
    if not exps:
        raise NotFoundError("no experiments yet: model.tune and model.train make them (`cdl run --until model.train`)")
    ref = ref.strip()
    if ref in ("latest", "latest-tune", "latest-train"):
        kind = ref.partition("-")[2]
        of_kind = [e for e in exps if not kind or e.kind == kind]
        if not of_kind:
            raise NotFoundError(f"no {kind} experiment yet (experiments: {_names(exps)})")
        return of_kind[-1]
    by_name = {e.name: e for e in exps}
    if ref in by_name:
        return by_name[ref]
    num = ref.removeprefix("#")
    if num.isdigit():
        for e in exps:
            if e.id == int(num):
                return e
    raise NotFoundError(f"no experiment {ref!r}{did_you_mean(ref, list(by_name))} (experiments: {_names(exps)}; "
                        "or its id, or latest)")


def _names(exps: list[Experiment]) -> str:
    names = [e.name for e in exps]
    return ", ".join(names) if len(names) <= 8 else ", ".join(names[:3]) + ", …, " + ", ".join(names[-4:])


def _seconds(e: Experiment | Trial) -> float | None:
    start = e.created if isinstance(e, Experiment) else e.started
    return None if e.finished is None else round((e.finished - start).total_seconds(), 2)


def _best(trials: list[Trial]) -> Trial | None:
    done = [t for t in trials if t.state == "complete" and t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def _models(store: Store) -> dict[int, dict[str, list[str]]]:
    """experiment id -> {"trained": refs trained in it, "tuned": refs trained with its best parameters}."""
    out: dict[int, dict[str, list[str]]] = {}
    for mv in store.model_versions():
        if mv.experiment_id is not None:
            out.setdefault(mv.experiment_id, {"trained": [], "tuned": []})["trained"].append(mv.ref)
        if mv.tune_experiment_id is not None:
            out.setdefault(mv.tune_experiment_id, {"trained": [], "tuned": []})["tuned"].append(mv.ref)
    return out


def _summary(e: Experiment, trials: list[Trial], models: dict[str, list[str]] | None) -> dict[str, Any]:
    chosen = e.summary.get("best_trial")  # the trial model.tune took (ties go to the first, as Optuna's do)
    best = next((t for t in trials if t.number == chosen and t.value is not None), None) or _best(trials)
    counts = Counter(t.state for t in trials)
    return {
        "id": e.id, "name": e.name, "kind": e.kind, "step": e.step, "status": e.status,
        "dataset_version": e.dataset_version, "transform": e.transform, "framework": e.framework,
        "template": e.template, "study": e.study, "git_commit": e.git_commit, "git_dirty": e.git_dirty,
        "created": e.created.isoformat(), "finished": e.finished.isoformat() if e.finished else None,
        "seconds": _seconds(e), "metric": METRIC,
        "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params,
                                           "epochs": best.epochs},
        "trials": len(trials), "states": {s: counts[s] for s in STATES if counts[s]},
        "epochs": sum(t.epochs for t in trials),
        "models": (models or {}).get("trained", []), "tuned_models": (models or {}).get("tuned", []),
    }


def experiments_json(store: Store, kind: str | None = None) -> dict[str, Any]:
    """Every experiment (oldest first), each with its trial counts, best trial and models."""
    store.mark_interrupted_runs()  # a killed `cdl run`'s experiment read "running" until `cdl status` looked
    models = _models(store)
    return {"experiments": [_summary(e, store.trials(e.id), models.get(e.id)) for e in store.experiments()
                            if kind is None or e.kind == kind]}


def experiment_json(store: Store, ref: str, curves: bool = True) -> dict[str, Any]:
    """One experiment and its trials: parameters, state, value, epochs, worker, and (curves) the metrics of each
    epoch, as the tuning dashboard draws them."""
    store.mark_interrupted_runs()
    e = resolve(store, ref)
    trials = store.trials(e.id)
    doc = _summary(e, trials, _models(store).get(e.id))
    doc["summary"] = e.summary
    doc["storage"] = _storage(store) if e.study else None
    doc["tuned"] = _tuned_by(store, e)
    doc["trial_list"] = [{
        "number": t.number, "state": t.state, "value": t.value, "epochs": t.epochs, "params": t.params,
        "worker": t.worker, "retry_of": t.retry_of, "started": t.started.isoformat(),
        "finished": t.finished.isoformat() if t.finished else None, "seconds": _seconds(t),
        **({"metrics": store.metrics(t.id)} if curves else {})} for t in trials]
    return doc


def _tuned_by(store: Store, e: Experiment) -> dict[str, Any]:
    """A training run with use_tuned on: which parameters model.tune's best trial gave it, and which tuning
    experiment that was (the one its model version names; unregistered, the newest before it whose best parameters
    are those)."""
    tuned = e.summary.get("tuned") or {}
    ids = {mv.tune_experiment_id for mv in store.model_versions() if mv.experiment_id == e.id} - {None}
    exps = store.experiments()
    by = next((x for x in exps if x.id in ids), None) if len(ids) == 1 else None
    if by is None and tuned:
        by = next((x for x in reversed(exps) if x.kind == "tune" and x.id < e.id
                   and (x.summary.get("best_params") or {}).items() >= tuned.items()), None)
    return {"params": list(tuned), "by": by.name if by else None}


def _storage(store: Store) -> str:
    """The study's Optuna storage URL, as `optuna trials --storage` takes it (a password left out)."""
    from sqlalchemy.engine import make_url

    from runtime.ml.tuning import storage_url

    url = make_url(storage_url(store)[0]).render_as_string(hide_password=True)
    # a workspace in a PostgreSQL schema of its own: the study is found only with its search_path
    return url + (f" (schema {store.schema}: engine_kwargs connect_args options -csearch_path={store.schema})"
                  if store.schema else "")


def _value(v: Any) -> str:  # noqa: ANN401 - a parameter's value
    return f"{v:.4g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


def changed_text(changed: dict[str, list[Any]]) -> str:
    """"lr 0.001 → 0.0003182; use_tuned true → false": what `use_trial` changed, for the CLI and the dashboard."""
    return changes_text(changed)


def _params(params: dict[str, Any], keys: list[str]) -> str:
    return " ".join(f"{k}={_value(params[k])}" for k in keys if k in params)


def counts_text(d: dict[str, Any]) -> str:
    states = d["states"]
    if d["kind"] == "train":
        return f"{d['epochs']} epoch{'' if d['epochs'] == 1 else 's'}"
    parts = [f"{n} {s}" for s, n in states.items() if s != "complete"]
    return f"{d['trials']} trials" + (f" ({', '.join(parts)})" if parts else "")


def _local(iso: str, seconds: bool = True) -> str:
    from runtime.domain.text import local_time

    return local_time(iso, seconds)


def best_text(d: dict[str, Any]) -> str:
    """'best val_accuracy 0.9795 (trial 0)', 'val_accuracy 0.9825', or what it has instead."""
    b = d["best"]
    if b is None:
        return "no trial completed" if d["status"] != "running" else "running"
    if d["kind"] == "train":
        return f"{d['metric']} {b['value']:.4f}"
    return f"best {d['metric']} {b['value']:.4f} (trial {b['trial']})"


def list_lines(doc: dict[str, Any]) -> list[str]:
    """One line an experiment: `cdl experiments list`."""
    out = []
    width = max((len(d["name"]) for d in doc["experiments"]), default=0)
    for d in doc["experiments"]:
        took = "" if d["seconds"] is None else f"{d['seconds']:.1f}s"
        models = d["models"] or d["tuned_models"]
        arrow = (f"  → {', '.join(models)}" if d["models"] else
                 f"  → {', '.join(models)} trained with its best" if models else "")
        out.append(f"#{d['id']:<4} {d['name']:<{width}}  {d['status']:<9} data {d['dataset_version']:<5} "
                   f"{d['framework']:<6} {_local(d['created'], seconds=False)} {took:>7}  {best_text(d)}, "
                   f"{counts_text(d)}{arrow}")
    return out


def show_lines(doc: dict[str, Any], sort: str = "number") -> list[str]:
    """An experiment's header and a table of its trials: `cdl experiments show`. The parameters every trial had
    alike are said once; the table shows those the trials differ in (the search space's)."""
    trials = doc["trial_list"]
    took = "" if doc["seconds"] is None else f", {doc['seconds']:.1f} s"
    git = f"git {str(doc['git_commit'])[:10]}{' (dirty)' if doc['git_dirty'] else ''}" if doc["git_commit"] else "no git"
    out = [f"{doc['name']} (#{doc['id']}): {doc['kind']} ({doc['step']}), {doc['status']}, "
           f"{_local(doc['created'])}{took}",
           f"  data {doc['dataset_version']} (transform {doc['transform'][:12]}), {doc['framework']} "
           f"{doc['template']}, {git}"]
    if doc["study"]:
        out.append(f"  Optuna study {doc['study']}, storage {doc['storage']}")
    keys = list(dict.fromkeys(k for t in trials for k in t["params"]))
    varying = [k for k in keys if len({repr(t["params"].get(k)) for t in trials}) > 1]
    fixed = [k for k in keys if k not in varying]
    if fixed:
        out.append(f"  {'every trial' if len(trials) > 1 else 'parameters'}: {_params(trials[0]['params'], fixed)}")
    if doc["tuned"]["params"]:
        out.append(f"  {', '.join(doc['tuned']['params'])} from {doc['tuned']['by'] or 'model.tune'}'s best trial "
                   "(use_tuned)")
    out.append(f"  {best_text(doc)}, {counts_text(doc)}"
               + (f"; best parameters: {_params(doc['best']['params'], keys)}" if doc["best"] and varying else ""))
    if doc["models"]:
        out.append(f"  registered from it: {', '.join(doc['models'])}")
    if doc["tuned_models"]:
        out.append(f"  trained with its best parameters: {', '.join(doc['tuned_models'])}")
    if not trials:
        out.append("  no trials yet")
        return out
    if len(trials) == 1 and trials[0].get("metrics"):
        return out + ["", *_epoch_lines(trials[0]["metrics"])]
    if sort == "value":
        trials = sorted(trials, key=lambda t: (t["value"] is None, -(t["value"] or 0.0), t["number"]))
    best = doc["best"]["trial"] if doc["best"] else None
    rows = [("trial", "state", doc["metric"], "epochs", "seconds", "parameters" if varying else "")]
    for t in trials:
        state = t["state"] + (f" (retry of {t['retry_of']})" if t["retry_of"] is not None else "")
        rows.append((f"{t['number']}{' *' if t['number'] == best else ''}", state,
                     "-" if t["value"] is None else f"{t['value']:.4f}", str(t["epochs"]),
                     "-" if t["seconds"] is None else f"{t['seconds']:.1f}", _params(t["params"], varying)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out.append("")
    out += [("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]).rstrip() for r in rows]
    if best is not None and len(trials) > 1:
        out.append(f"(* the best trial; `cdl experiments use {doc['name']} --trial N` trains with another)"
                   if doc["kind"] == "tune" else "(* the best trial)")
    return out


def trial_lines(doc: dict[str, Any], number: int) -> list[str]:
    """One trial of an experiment (`cdl experiments show EXP --trial N`): its state, value, parameters and its
    metrics per epoch, the learning curve the dashboard draws."""
    t = next((t for t in doc["trial_list"] if t["number"] == number), None)
    if t is None:
        nums = [x["number"] for x in doc["trial_list"]]
        raise NotFoundError(f"{doc['name']} has no trial {number} (its trials: "
                            f"{f'{nums[0]} to {nums[-1]}' if nums else 'none'})")
    value = "-" if t["value"] is None else f"{t['value']:.4f}"
    best = " (the best)" if doc["best"] and doc["best"]["trial"] == number else ""
    retry = f", a retry of trial {t['retry_of']}" if t["retry_of"] is not None else ""
    out = [f"{doc['name']} trial {number}{best}: {t['state']}{retry}, {doc['metric']} {value}, {t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}"
           + (f", {t['seconds']:.1f} s" if t["seconds"] is not None else "") + (f", on {t['worker']}" if t["worker"]
                                                                                 else ""),
           f"  parameters: {_params(t['params'], list(t['params']))}"]
    metrics = t.get("metrics") or []
    return out + (["", *_epoch_lines(metrics)] if metrics else ["  no epoch finished"])


def _epoch_lines(metrics: list[dict[str, Any]]) -> list[str]:
    """A one-trial experiment (a training run): its metrics per epoch, as MLflow charts a run's."""
    keys = [k for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds")
            if any(m.get(k) is not None for m in metrics)]
    keys += sorted({k for m in metrics for k in m} - {"epoch", *keys})
    rows = [("epoch", *keys)]
    for m in metrics:
        rows.append((str(m["epoch"]), *("-" if m.get(k) is None else
                                         f"{m[k]:.2f}" if k.endswith("seconds") else f"{m[k]:.4f}" for k in keys)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def use_trial(ws: Any, ref: str, number: int | None = None) -> dict[str, Any]:  # noqa: ANN401 - a Workspace
    """A trial's parameters into model.train's (cdl.yaml), use_tuned off so that they are what it trains with: a
    trial picked by hand, as the best one is by use_tuned (a smaller model close to the best, say). number: the
    trial (default: the experiment's best). Returns set_step_params' {"step", "changed"} with "experiment",
    "trial" and "left_out" (parameters model.train does not take)."""
    from runtime.params import set_step_params
    from runtime.steps import get_step

    store = ws.store
    e = resolve(store, ref)
    trials = store.trials(e.id)
    if number is None:
        best = _summary(e, trials, None)["best"]
        if best is None:
            raise NotFoundError(f"{e.name} has no completed trial to take parameters from; name one with --trial")
        number = best["trial"]
    trial = next((t for t in trials if t.number == number), None)
    if trial is None:
        nums = sorted(t.number for t in trials)
        have = ("none" if not nums else f"{nums[0]} to {nums[-1]}" if nums == list(range(nums[0], nums[-1] + 1))
                else ", ".join(map(str, nums)))
        raise NotFoundError(f"{e.name} has no trial {number} (its trials: {have})")
    if trial.state == "running":
        raise NotFoundError(f"{e.name}'s trial {number} is still running")
    known = {p.name for p in get_step("model.train").spec.params}
    values = {k: v for k, v in trial.params.items() if k in known}
    out = set_step_params(ws, "model.train", {**values, "use_tuned": False})
    train = ws.config().params("model.train")
    other = (e.framework, e.template) != (train["framework"], train["template"])
    note = (f"{e.name} ran {e.template} ({e.framework}), and model.train trains {train['template']} "
            f"({train['framework']}): its parameters may not suit this model" if other else None)
    return {**out, "experiment": e.name, "trial": number, "state": trial.state, "value": trial.value,
            "left_out": sorted(set(trial.params) - known), "note": note}
