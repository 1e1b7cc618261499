"""`cdl loop`: one pass around the continuous loop, headless.

scoring data -> drift check -> retrain proposal -> (labels) -> new dataset version -> retrain (same parameters,
or retune) -> evaluate -> review (automatic when the candidate beats the champion, with
--auto-approve-if-better) -> package -> deploy to the devices.

Stops, and says why, where a person is needed: samples still to label, or a review to make.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.domain.errors import CdlError
from runtime.domain.steps import StepStatus, run_ending
from runtime.jobs import EventBus, Runner
from runtime.steps import get_step
from runtime.workspace.workspace import Workspace

WAITING = 3  # exit code: the loop waits for people (labels, a review)


class LoopResult(dict):
    @property
    def code(self) -> int:
        return {"done": 0, "no-drift": 0, "no-verdict": 0, "no-data": 0, "nothing-to-label": 0,
                "waiting": WAITING}.get(self["status"], 1)


class _Cancelled(Exception):
    pass


def run_loop(ws: Workspace, auto_approve_if_better: bool = False, retune: bool = False, labels: Path | None = None,
             deploy: bool = True, force: bool = False, subscriber: Callable | None = None,
             cancel: threading.Event | None = None) -> LoopResult:
    """cancel: set it (Ctrl-C, SIGTERM) and the running step stops at its next checkpoint, and the loop with it."""
    steps: list[dict[str, Any]] = []
    try:
        return _run_loop(ws, auto_approve_if_better, retune, labels, deploy, force, subscriber, cancel, steps)
    except _Cancelled:
        where = next((s["id"] for s in reversed(steps) if s["status"] == "cancelled"), "a step")
        return LoopResult(status="cancelled", reason=f"cancelled during {where}; run `cdl loop` again to go on "
                          "from there", steps=steps)


def _run_loop(ws: Workspace, auto_approve_if_better: bool, retune: bool, labels: Path | None, deploy: bool,
              force: bool, subscriber: Callable | None, cancel: threading.Event | None,
              steps: list[dict[str, Any]]) -> LoopResult:
    from runtime import proposals
    from runtime.labeling import import_label_studio
    from runtime.monitor import verdict
    from runtime.registry import auto_review, versus_champion

    bus = EventBus()
    if subscriber:
        bus.subscribe(subscriber)

    def run(**kw: Any) -> bool:
        res = Runner(ws, bus, cancel=cancel).run(**kw)
        steps.extend(o.to_dict() for o in res.steps)
        if res.status == "cancelled":
            raise _Cancelled
        return res.ok

    cfg = ws.config()
    if not run(steps=["deploy.monitor"]) and not steps[-1]["status"] == "drifted":
        return LoopResult(status="failed", reason=steps[-1]["error"], steps=steps)
    mon = ws.store.last_step_run("deploy.monitor")
    pending = proposals.open_proposal(ws)
    if mon.status != "drifted" and pending is None and not force:
        checks = mon.summary.get("checks", [])
        status, line = verdict(checks)
        if status == "no-data" and not ws.store.devices():  # no data will come: said so, with what to do
            from runtime.steps.monitor import NO_DEVICES

            return LoopResult(status=status, reason=NO_DEVICES, steps=steps, checks=checks)
        if status in ("no-verdict", "no-data"):  # too little scoring data to test is not a clean bill of health
            return LoopResult(status=status, reason=f"{line}: nothing to do until more scoring data comes",
                              steps=steps, checks=checks)
        # a device whose window is too small is named; otherwise every device was tested and none drifted
        reason = line if any(not c["tests"] for c in checks) else "no drift: the deployed model is fine"
        return LoopResult(status="no-drift", reason=reason, steps=steps, checks=checks)
    if not run(steps=["deploy.maintain"]):
        return LoopResult(status="failed", reason=steps[-1]["error"], steps=steps)
    p = proposals.open_proposal(ws)
    if p is None:
        maintained = ws.store.last_step_run("deploy.maintain")
        unproposed = (maintained.summary or {}).get("unproposed", []) if maintained else []
        labeled = [u for u in unproposed if u.get("labeled", u.get("labeled_in"))]
        again = [u for u in labeled if u.get("labeled_in")]
        if again and retune:  # the drifted window's samples were labeled for an earlier proposal: search again,
            # with that proposal open again, so that a loop that then waits for a review goes on from there
            proposals.close(ws, again[0]["labeled_in"], "open", "searched again (`cdl loop --retune`)")
            p = proposals.proposal(ws, again[0]["labeled_in"])
        elif not force and not (retune and labeled):  # --retune on labeled data goes around as --force does
            if unproposed and len(labeled) == len(unproposed):
                return LoopResult(status="nothing-to-label", steps=steps, reason="; ".join(u["reason"] for u in labeled)
                                  + "; `cdl loop --retune` searches the model again on the data there is")
            return LoopResult(status="failed", steps=steps, reason="; ".join(
                u["reason"] for u in unproposed if u not in labeled) or "drift, but no retrain proposal was made")
    if labels is not None and p is not None:
        import_label_studio(ws, labels, skip_unmatched=True)
        p = proposals.proposal(ws, p["id"])
    if p is not None and p["unlabeled"] > 0:
        return LoopResult(status="waiting", proposal=p, steps=steps,
                          reason=f"proposal {p['id']}: {p['unlabeled']} of {p['samples']} sample(s) to label "
                          f"(`cdl labels next --filter proposal:{p['id']}`, or --labels FILE); then run `cdl loop` again "
                          f"(a false alarm: `cdl proposals dismiss {p['id']}`)")
    # the labeled samples join a new dataset version
    if not run(until="data.label"):
        return LoopResult(status="failed", reason=_last_error(steps), steps=steps)
    # retrain: the champion's parameters, or a new search
    name = (cfg.params("model.register")["name"] if "model.register" in cfg.steps else None) or cfg.name
    try:
        champion = ws.store.model_version(name, "champion")
    except CdlError:
        champion = None
    try:
        latest = ws.store.model_version(name)
    except CdlError:
        latest = None
    # a loop that stopped for a review, or during the deployment, goes on with the version it trained on this
    # data: training again gave a newer version, which waited for a review of its own
    trained = latest is not None and latest.dataset_version == ws.current_version() and not retune
    if not trained:
        if retune or champion is None:
            ok = run(until="model.evaluate")
        else:
            hp = {k: champion.params[k] for k in ("lr", "batch_size", "hidden", "dropout", "weight_decay",
                                                   "layers") if k in champion.params}
            ok = run(steps=["model.preprocess", "model.train", "model.register", "model.evaluate"],
                     overrides={"model.train": {**hp, "use_tuned": False}})
        if not ok:
            return LoopResult(status="failed", reason=_last_error(steps), steps=steps)
    candidate = ws.store.model_version(name)

    def close(status: str, note: str) -> None:
        if p is not None:
            proposals.close(ws, p["id"], status, note)

    if p is None and trained and champion is not None and candidate.version == champion.version \
            and (not deploy or (ws.store.devices() and not _not_serving(ws, cfg, candidate))):  # none: it waits
        # --force with nothing new: the champion was trained on this data already, and the devices serve it
        return LoopResult(status="done", steps=steps, candidate=candidate.ref, reason=f"nothing new: {candidate.ref} "
                          f"is the champion and was trained on the current data ({candidate.dataset_version}); "
                          "`cdl loop --force --retune` searches the model again")
    metric = cfg.params("model.review")["metric"] if "model.review" in cfg.steps else "test_accuracy"
    if auto_approve_if_better and not ws.store.reviews(candidate.name, candidate.version):
        rv = auto_review(ws.store, candidate, metric)
        if rv.decision != "approved":
            close("rejected", rv.comment)
            return LoopResult(status="done", reason=f"{candidate.ref} not better than the champion: {rv.comment}; "
                              "the devices keep their model", steps=steps, candidate=candidate.ref, review=rv.decision)
    elif not ws.store.reviews(candidate.name, candidate.version):
        versus = versus_champion(ws.store, candidate, metric)
        return LoopResult(status="waiting", steps=steps, candidate=candidate.ref,
                          reason=f"{candidate.ref} awaits review{f' ({versus})' if versus else ''}: "
                          f"`cdl models review {candidate.ref} --approve|--reject` (or --auto-approve-if-better)")
    if not run(steps=["model.review"]):
        close("rejected", _last_error(steps))
        return LoopResult(status="done", reason=_last_error(steps), steps=steps, candidate=candidate.ref)
    last = ws.store.reviews(candidate.name, candidate.version)[-1]
    if last.decision != "approved":  # model.review went on with the champion there was: nothing new to deploy
        why = f"{candidate.ref} was rejected by {last.reviewer}: {last.comment}"
        close("rejected", why)
        return LoopResult(status="done", reason=f"{why}; the devices keep their model", steps=steps,
                          candidate=candidate.ref, review=last.decision)
    proposal = (lambda: proposals.proposal(ws, p["id"])) if p is not None else (lambda: None)
    enrolled = p is None or p["device"] in {d.name for d in ws.store.devices()}
    if deploy and not enrolled:  # removed since it drifted (`cdl devices remove`): the new champion waits
        close("done", f"{candidate.ref} approved; {p['device']} is no longer enrolled")
        return LoopResult(status="done", steps=steps, candidate=candidate.ref, review="approved",
                          proposal=proposal(),
                          reason=f"{candidate.ref} is the champion; {p['device']}, where the drift was, is no longer "
                          f"enrolled, so nothing was pushed (`cdl deploy {candidate.ref} --device D`)")
    where = ""
    extra: dict[str, Any] = {}
    if deploy:
        # the deployment pipeline alone, on the new champion: `--until deploy.package` also went back over the
        # model pipeline, where model.train (run with the champion's parameters above, not cdl.yaml's) was stale,
        # and trained and registered yet another version after the review
        wanted = cfg.ancestors("deploy.package") | {"deploy.package"}
        deploy_steps = [s for s in cfg.order() if s in wanted and get_step(s).spec.pipeline == "deploy"]
        if not run(steps=deploy_steps):
            return LoopResult(status="failed", reason=_last_error(steps), steps=steps, candidate=candidate.ref)
        if p is None:  # --force without a proposal: deploy.push as cdl.yaml configures it (its devices, its variant)
            if not run(steps=["deploy.push"]):
                # no device enrolled yet: the champion waits for one, as the pipeline's deploy.push does
                last = steps[-1]
                waits = run_ending(last["status"], last.get("error"), last.get("summary")) == StepStatus.WAITING.value
                return LoopResult(status="waiting" if waits else "failed", reason=_last_error(steps), steps=steps,
                                  candidate=candidate.ref)
            pushed = (ws.store.last_step_run("deploy.push").summary or {}).get("deployed", [])
            names = sorted({d["device"] for d in pushed if isinstance(d, dict) and d.get("device")})
            where = f" and serves on {', '.join(names)}" if names else " (deploy.push pushed it nowhere)"
        else:
            # the device gets the new version in the variant it serves now (an int8 device stays int8), where the
            # deployment pipeline built that variant; otherwise deploy.push's configured one, and the reason says so
            from runtime.devices import variant_for

            variant, note = variant_for(ws, p["device"], candidate, cfg.params("deploy.push")["variant"])
            if not run(steps=["deploy.push"], overrides={"deploy.push": {"devices": [p["device"]], "variant": variant}}):
                return LoopResult(status="failed", reason=_last_error(steps), steps=steps, candidate=candidate.ref)
            where = f" and serves on {p['device']} ({variant}{'; ' + note if note else ''})"
            extra = {"variant": variant}
    close("done", f"{candidate.ref} approved{' and deployed' if deploy else ''}")
    return LoopResult(status="done", reason=f"{candidate.ref} is the champion{where}", steps=steps,
                      candidate=candidate.ref, review="approved", proposal=proposal(), **extra)


def _not_serving(ws: Workspace, cfg: Any, mv: Any) -> list[str]:  # noqa: ANN401
    """deploy.push's devices that served another model at their last health check (deploy.monitor's collection
    asks every device for it)."""
    names = cfg.params("deploy.push")["devices"] or [d.name for d in ws.store.devices()]
    out = []
    for d in ws.store.devices():
        active = (d.last_health or {}).get("active") or {}
        if d.name in names and (active.get("name"), str(active.get("version"))) != (mv.name, str(mv.version)):
            out.append(d.name)
    return out


def _last_error(steps: list[dict[str, Any]]) -> str:
    for s in reversed(steps):
        if s.get("error"):
            return f"{s['id']}: {s['error']}"
    return "failed"
