"""The model registry as users see it: list, history, review and promotion."""

from __future__ import annotations

from typing import Any

from runtime.domain.entities import ModelVersion, Review
from runtime.domain.errors import CdlError, NotFoundError
from runtime.store import Store


def review(store: Store, ref: str, approve: bool, comment: str, reviewer: str, record: bool = True,
           automatic: bool = False) -> Review | None:
    """Record a review; approving promotes the version to `champion` (the previous champion loses it).
    Rejecting the champion demotes it: the champion before it comes back, if that one is still approved (its
    latest review), or the model has no champion until a version is approved."""
    mv = store.resolve_model(ref)
    if not reviewer.strip():
        raise CdlError("a review needs a reviewer (--reviewer NAME)")
    rv = None
    if record:
        rv = store.add_review(mv.name, mv.version, reviewer, "approved" if approve else "rejected", comment,
                              automatic)
    if approve:
        store.set_alias(mv.name, "champion", mv.version, reason=f"approved by {reviewer}")
        store.remove_alias(mv.name, "challenger", mv.version)
    else:
        store.remove_alias(mv.name, "challenger", mv.version)
        if "champion" in mv.aliases:
            previous = previous_champion(store, mv)
            if previous is None:
                store.remove_alias(mv.name, "champion", mv.version)
            else:
                store.set_alias(mv.name, "champion", previous, reason=restored_reason(mv.ref, reviewer))
    return rv


def restored_reason(rejected_ref: str, reviewer: str) -> str:
    """The alias history's reason when `champion` went back to the version before a rejected champion."""
    return f"champion again: {rejected_ref} was rejected by {reviewer}"


def restored_after(reason: str, rejected_ref: str) -> bool:
    """Whether an alias record's reason says `champion` came back after `rejected_ref` was rejected."""
    return reason.startswith(restored_reason(rejected_ref, ""))


def previous_champion(store: Store, mv: ModelVersion) -> int | None:
    """The newest version other than `mv` that held `champion` and whose latest review still approves it."""
    held = [a for a in store.alias_history(mv.name) if a.alias == "champion" and a.version != mv.version]
    for a in sorted(held, key=lambda a: a.since, reverse=True):
        reviews = store.reviews(mv.name, a.version)
        if reviews and reviews[-1].decision == "approved":
            return a.version
    return None


class GateNotPassed(CdlError):
    """Approving a version whose model.evaluate gate failed, without saying so on purpose."""


def failed_gate(mv: ModelVersion) -> str | None:
    """"test_accuracy 0.6638 < threshold 0.8" where model.evaluate's gate failed for this version, else None."""
    gate = (mv.evaluation or {}).get("gate") or {}
    if not gate or gate.get("passed", True) or gate.get("value") is None:
        return None
    return f"{gate.get('metric')} {gate['value']:.4f} < threshold {gate.get('threshold')}"


def deploy_refused(store: Store, mv: ModelVersion) -> str | None:
    """Why pushing `mv` to a device wants saying so on purpose (`cdl deploy --force`, the devices panel's question):
    its latest review rejected it, or model.evaluate's gate failed and nobody approved it. None otherwise (a
    challenger awaiting review may go to a canary). `cdl deploy bbc:3` of a rejected version went out without a word."""
    reviews = store.reviews(mv.name, mv.version)
    if reviews and reviews[-1].decision == "rejected":
        r = reviews[-1]
        return f"{mv.ref} was rejected by {r.reviewer}" + (f" ({r.comment})" if r.comment else "")
    if not reviews and (failed := failed_gate(mv)) is not None:
        return f"{mv.ref} failed model.evaluate's gate ({failed}) and nobody approved it"
    return None


def rolled_back_note(store: Store, name: str, version: int | str, device: str) -> str | None:
    """After a rollback (not refused: it is what one does in a hurry), where the model serving again is one
    `cdl deploy` would refuse: "fm:3 was rejected by me (gate), and serves on cam1 again"."""
    try:
        why = deploy_refused(store, store.model_version(name, int(version)))
    except (NotFoundError, ValueError):  # deleted from the registry since
        return None
    return f"{why}, and serves on {device} again" if why is not None else None


def review_and_say(store: Store, ref: str, approve: bool, comment: str, reviewer: str,
                   override_gate: bool = False) -> str:
    """The review, and the line that says what it did (`cdl models review` and the review panel show it).
    Approving a version that failed model.evaluate's gate is refused (GateNotPassed, saying what it would replace)
    unless override_gate: it became the champion without a word, a 0.66 model over a 0.92 one; overridden, the
    review's comment says so."""
    mv = store.resolve_model(ref)
    if approve and (failed := failed_gate(mv)) is not None:
        if not override_gate:
            try:
                champ = store.model_version(mv.name, "champion")
                over = (f"; approving it makes it the champion over {champ.ref} (test_accuracy "
                        f"{champ.metrics.get('test_accuracy', float('nan')):.4f})" if champ.version != mv.version
                        else "")
            except NotFoundError:
                over = ""
            raise GateNotPassed(f"{mv.ref} failed model.evaluate's gate ({failed}){over}; --override-gate approves "
                                "it all the same, and its review says so")
        comment = f"{comment} [gate overridden: {failed}]".strip()
    was_champion = "champion" in mv.aliases
    review(store, ref, approve, comment, reviewer)
    return review_message(store, ref, approve, reviewer, was_champion)


def review_message(store: Store, ref: str, approve: bool, reviewer: str, was_champion: bool) -> str:
    """What a review did, in a line: the decision, and where `champion` is now when a champion was rejected."""
    mv = store.resolve_model(ref)
    line = f"{mv.ref}: {'approved' if approve else 'rejected'} by {reviewer}"
    if approve or not was_champion:
        return f"{line}; aliases now: {', '.join(mv.aliases) or 'none'}"
    # the devices that run it, if any: it said "Devices keep running fm:3" of a version no device had
    serving = devices_serving(store, mv)
    on = f"{', '.join(serving)} keep{'s' if len(serving) == 1 else ''} running {mv.ref}" if serving else ""
    try:
        champ = store.model_version(mv.name, "champion")
    except NotFoundError:
        return (f"{line}; it was the champion, and {mv.name} has no champion now (no earlier champion is still "
                "approved): approve a version to have one"
                + (f". {on} until you deploy another version or roll back" if on else ""))
    return (f"{line}; it was the champion: {champ.ref} is the champion again"
            + (f". {on} until you deploy {champ.ref} or roll back (`cdl rollback --device D`)" if on else ""))


def champion_score(mv: ModelVersion, champ: ModelVersion, metric: str) -> tuple[float, str]:
    """The champion's `metric` to set beside the candidate's, and where it was measured."""
    versus = (mv.evaluation or {}).get("champion") or {}
    if versus.get("ref") == champ.ref and metric in versus:  # both on the candidate's test split
        return versus[metric], "both on this test split"
    where = ("the same test split" if champ.transform == mv.transform
             else f"the champion's on its own test split, {champ.dataset_version}")
    return champ.metrics.get(metric, 0.0), where


def versus_champion(store: Store, mv: ModelVersion, metric: str = "test_accuracy") -> str:
    """"test_accuracy 0.9746 < champion news:1 0.9815 (both on this test split)", for a reviewer; "" with nothing
    to compare."""
    value = mv.metrics.get(metric)
    try:
        champ = store.model_version(mv.name, "champion")
    except NotFoundError:
        return f"{metric} {value:.4f}; no champion yet" if value is not None else ""
    if value is None or champ.version == mv.version:
        return ""
    other, where = champion_score(mv, champ, metric)
    sign = ">" if value > other else "=" if value == other else "<"
    return f"{metric} {value:.4f} {sign} champion {champ.ref} {other:.4f} ({where})"


def auto_review(store: Store, mv: ModelVersion, metric: str = "test_accuracy") -> Review:
    """Approve only when the candidate beats the champion on the test split; the review says it was automatic."""
    value = mv.metrics.get(metric)
    if value is None:
        raise CdlError(f"{mv.ref} has no {metric}: run model.evaluate first")
    try:
        champ = store.model_version(mv.name, "champion")
    except NotFoundError:
        champ = None
    if champ is None:
        approve, why = True, f"no champion yet; {metric} {value:.4f}"
    elif champ.version == mv.version:
        approve, why = True, "already the champion"
    else:
        other, where = champion_score(mv, champ, metric)
        approve = value > other
        why = f"{metric} {value:.4f} {'>' if approve else '<='} champion {champ.ref} {other:.4f} ({where})"
    rv = review(store, mv.ref, approve, why, "cdl-auto", automatic=True)
    assert rv is not None
    return rv


def trial_number(store: Store, mv: ModelVersion) -> int | None:
    """The number of the trial a version was trained in, within its experiment, as `cdl experiments show EXPERIMENT
    --trial N` takes it (lineage gave the trial's row id, "trial 9" for train-1's only trial, 0, which `experiments
    show train-1 --trial 9` refused)."""
    if mv.trial_id is None:
        return None
    try:
        return store.trial(mv.trial_id).number
    except NotFoundError:
        return None


def model_json(mv: ModelVersion, store: Store) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": mv.version,
        "aliases": list(mv.aliases),
        "dataset_version": mv.dataset_version,
        "metrics": mv.metrics,
        "params": mv.params,
        "git_commit": mv.git_commit,
        "git_dirty": mv.git_dirty,
        "framework": mv.framework,
        "template": mv.template,
        "experiment": mv.experiment_id,
        "trial": trial_number(store, mv),
        "trial_id": mv.trial_id,
        "tune_experiment": mv.tune_experiment_id,
        "artifacts": mv.artifacts,
        "created": mv.created.isoformat(),
    }


def _unknown_model(store: Store, name: str) -> None:
    known = sorted({m.name for m in store.model_versions()})
    raise NotFoundError(f"model {name!r} does not exist (models: {', '.join(known) or 'none yet'})")


def models_json(store: Store, name: str | None = None) -> dict[str, Any]:
    """Every version, each with its latest review (None: it awaits one)."""
    versions = store.model_versions(name)
    if name is not None and not versions:
        _unknown_model(store, name)
    latest: dict[tuple[str, int], Review] = {}
    for n in sorted({mv.name for mv in versions}):
        for r in store.reviews(n):  # oldest first: the last one per version stays
            latest[(n, r.version)] = r
    out = []
    for mv in versions:
        r = latest.get((mv.name, mv.version))
        out.append({**model_json(mv, store), "review": None if r is None else {
            "decision": r.decision, "reviewer": r.reviewer, "automatic": r.automatic, "comment": r.comment,
            "created": r.created.isoformat()}, "passed_over_by": passed_over_by(store, mv, r is not None, versions),
            "gate_failed": failed_gate(mv)})
    return {"models": out}


def passed_over_by(store: Store, mv: ModelVersion, reviewed: bool,
                   versions: list[ModelVersion] | None = None) -> str | None:
    """The newest version registered after `mv`, where `mv` was never reviewed and lost `challenger` to it: model.review
    works on the version model.register made last, so nobody is asked about this one any more (it read "awaiting
    review" for good). None otherwise. versions: the registry's, where the caller has them already."""
    if reviewed or mv.aliases:
        return None
    later = [v for v in (versions if versions is not None else store.model_versions(mv.name))
             if v.name == mv.name and v.version > mv.version]
    return later[-1].ref if later else None


def review_text(review: dict[str, Any] | None, passed_over: str | None = None, gate_failed: str | None = None) -> str:
    """'approved by vera', 'rejected by cdl-auto (automatic)', 'awaiting review', 'not reviewed (news:4 came
    after)', or 'gate failed (test_accuracy 0.6638 < threshold 0.8)' (model.review never asks about such a version:
    it read "awaiting review")."""
    if review is None:
        if gate_failed:
            return f"gate failed ({gate_failed})"
        return f"not reviewed ({passed_over} came after)" if passed_over else "awaiting review"
    return f"{review['decision']} by {review['reviewer']}{' (automatic)' if review['automatic'] else ''}"


def history_json(store: Store, name: str) -> dict[str, Any]:
    versions = store.model_versions(name)
    if not versions:
        _unknown_model(store, name)
    return {
        "name": name,
        "aliases": [{"alias": a.alias, "version": a.version, "since": a.since.isoformat(),
                     "until": a.until.isoformat() if a.until else None, "reason": a.reason}
                    for a in store.alias_history(name)],
        "reviews": [{"version": r.version, "reviewer": r.reviewer, "decision": r.decision, "comment": r.comment,
                     "automatic": r.automatic, "created": r.created.isoformat()} for r in store.reviews(name)],
        "versions": [{"version": v.version, "created": v.created.isoformat(), "metrics": v.metrics,
                      "aliases": list(v.aliases)} for v in versions],
    }


def lineage(store: Store, ref: str) -> dict[str, Any]:
    """From a model version back to its data: dataset version (DVC hash, git commit), experiment, trial."""
    mv = store.resolve_model(ref)
    dv = store.version(mv.dataset_version)
    exp = store.experiment(mv.experiment_id) if mv.experiment_id else None
    return {
        "model": mv.ref,
        "dataset_version": {"id": dv.id, "dvc_hash": dv.dvc_hash, "git_commit": dv.git_commit, "items": dv.items},
        "transform": mv.transform,
        "experiment": {"id": exp.id, "name": exp.name, "kind": exp.kind} if exp else None,
        "trial": trial_number(store, mv),  # its number in the experiment: `experiments show E --trial N`
        "trial_id": mv.trial_id,
        "tune_experiment": mv.tune_experiment_id,
        "params": mv.params,
        # a src: template's code as the checkpoint keeps it (its sha256): the tree may have been dirty, or edited since
        "code": {"git_commit": mv.git_commit, "dirty": mv.git_dirty, "template": mv.template,
                 "model_sha256": ((mv.extra.get("arch") or {}).get("source") or {}).get("sha256")},
        "artifacts": mv.artifacts,
        "init_from": mv.extra.get("init_from"),  # the version (or file) its training started from, if any
    }


def tuned_by(store: Store, lin: dict[str, Any]) -> str | None:
    """"tune-1 (#1)": the tuning experiment whose best parameters a version trained with (its id alone was shown)."""
    exp_id = lin.get("tune_experiment")
    if exp_id is None:
        return None
    try:
        return f"{store.experiment(exp_id).name} (#{exp_id})"
    except CdlError:
        return f"experiment #{exp_id}"


def started_from(lin: dict[str, Any]) -> str | None:
    """The version (or file) a warm start began from: lineage keeps the whole plan, {"from": ..., "terms": ...}."""
    start = lin.get("init_from")
    if not start:
        return None
    return str(start.get("from", start)) if isinstance(start, dict) else str(start)


def lineage_rows(store: Store, doc: dict[str, Any]) -> list[tuple[str, str]]:
    """A lineage record as people read it, one (what, where from) a line: `cdl models lineage` and the models
    panel (which showed the raw JSON)."""
    from runtime.domain.text import params_line

    dv, exp, code = doc["dataset_version"], doc["experiment"], doc["code"]
    rows = [("dataset version", f"{dv['id']} ({dv['items']} items, DVC {dv['dvc_hash'][:12]}, git "
                                f"{(dv['git_commit'] or '-')[:10]})"),
            ("experiment", f"{exp['name']} (#{exp['id']}, {exp['kind']}), trial {doc['trial']}" if exp else "-")]
    if (tuned := tuned_by(store, doc)) is not None:
        rows.append(("tuned by", tuned))
    rows += [("parameters", params_line(doc["params"] or {}) or "-"),
             ("code", f"git {(code['git_commit'] or '-')[:10]}{' (dirty)' if code['dirty'] else ''}, template "
                      f"{code['template']}" + (f", model code sha256 {code['model_sha256'][:12]}"
                                               if code["model_sha256"] else "")),
             ("checkpoint", (doc["artifacts"].get("checkpoint") or "-")[:12]),
             ("transform", (doc["transform"] or "-")[:12])]
    if (start := started_from(doc)) is not None:  # warm start: the version (or file) its training started from
        rows.append(("started from", start))
    return rows


def devices_serving(store: Store, mv: ModelVersion) -> list[str]:
    """The enrolled devices that serve `mv`, as their last health check or their last deployment says."""
    out = []
    for d in store.devices():
        active = (d.last_health or {}).get("active") or {}
        latest = next((r for r in reversed(store.deployments(d.name)) if r.status == "done" and r.name), None)
        if (active.get("name"), str(active.get("version"))) == (mv.name, str(mv.version)) or (
                latest is not None and (latest.name, str(latest.version)) == (mv.name, str(mv.version))):
            out.append(d.name)
    return out


def deletion_refused(ws: Any, ref: str) -> str | None:  # noqa: ANN401 - a Workspace
    """Why `delete_version` would refuse `ref`, or None: asked before the question "Delete …?" (the CLI and the
    studio asked first, and then refused the answer yes)."""
    store = ws.store
    mv = store.resolve_model(ref)
    if "champion" in mv.aliases:
        return f"{mv.ref} is the champion: approve another version, or reject it, before deleting it"
    last = store.last_done_runs().get("model.register")
    if last is not None and (last.summary.get("name"), last.summary.get("version")) == (mv.name, mv.version):
        return (f"{mv.ref} is the version model.register made last (model.evaluate and model.review work on it): "
                "register another before deleting it")
    bundles = {v.bundle for v in store.variants(mv.name, mv.version) if v.bundle}
    serving = devices_serving(store, mv)
    if serving:
        return f"{mv.ref} is on device {serving[0]}: deploy another version there (or remove the device) before deleting it"
    for d in store.devices():
        active = (d.last_health or {}).get("active") or {}
        if active.get("previous_bundle_id") in bundles:
            return f"device {d.name} would roll back to {mv.ref}: deploy another version there first"
    return None


def delete_version(ws: Any, ref: str) -> dict[str, Any]:  # noqa: ANN401 - a Workspace
    """Delete a model version, as MLflow deletes one: its row and its variants go, the aliases it held end (their
    history and its reviews stay), its named bundle copies under .cdl/bundles go, and `cdl gc` then frees its
    checkpoint and bundles. Refused for the champion, for the version the pipeline registered last (model.evaluate
    and model.review work on it, and its number would be given again), and for a version a device serves or would
    roll back to."""
    store = ws.store
    mv = store.resolve_model(ref)
    refused = deletion_refused(ws, mv.ref)
    if refused:
        raise CdlError(refused)
    bundles = {v.bundle for v in store.variants(mv.name, mv.version) if v.bundle}
    named = sorted((ws.root / ".cdl" / "bundles").glob(f"{mv.name}-v{mv.version}-*.cdlb"))
    store.delete_model_version(mv.name, mv.version)
    for f in named:
        f.unlink(missing_ok=True)
    return {"deleted": mv.ref, "variants": len(bundles), "bundle_copies_removed": [str(f) for f in named],
            "next": "`cdl gc` frees its checkpoint and bundles"}
