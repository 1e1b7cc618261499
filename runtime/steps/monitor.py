"""Monitoring and maintenance (the end of thesis Figure 4.4, left unbuilt there): drift checks on the scoring
data devices send back, and the retrain proposal that loops back to labeling."""

from __future__ import annotations

from typing import Any

from runtime.domain.errors import StepFailed
from runtime.domain.steps import ParamSpec, Port, Role, StepSpec, StepStatus
from runtime.steps.base import Step, StepContext, StepResult, hash_text


class MonitorStep(Step):
    spec = StepSpec(
        id="deploy.monitor",
        title="Monitor",
        pipeline="deploy",
        role=Role.DEVOPS_ENGINEER,
        inputs=(Port("deployments", "deployments"),),
        outputs=(Port("checks", "drift_checks"),),
        params=(
            ParamSpec("collect", "bool", True, "pull new scoring records from every device first"),
            ParamSpec("window_by", "str", "count", "the window: the last N records (count) or seconds (time)",
                      choices=("count", "time")),
            ParamSpec("window", "float", 500, "records (count) or seconds (time)", minimum=1),
            ParamSpec("alpha", "float", 0.05, "significance of the chi-squared and KS tests", minimum=0.0,
                      maximum=1.0),
            ParamSpec("bonferroni", "bool", True, "divide alpha by the number of p-value tests"),
            ParamSpec("psi_threshold", "float", 0.2, "a PSI above this is drift", minimum=0.0),
            ParamSpec("min_records", "int", 50, "fewer records than this: no verdict", minimum=1),
        ),
        description="Drift checks over a window of scoring data against the deployed bundle's reference: "
        "predicted classes (chi-squared), confidence (KS), PSI per input feature. Drift turns this node red.",
    )

    def needs(self, params: dict[str, Any], config: Any) -> set[str]:
        return set()

    reads = "time"
    reads_changed = "a check is redone after a minute: scoring data may have come since it ran"

    def fingerprint(self, ctx: StepContext) -> str:
        import time

        return str(int(time.time() // 60))  # scoring data keeps coming: a check is stale after a minute

    def run(self, ctx: StepContext) -> StepResult:
        from runtime import monitor
        from runtime.devices import collect, scoring_store

        p = ctx.params
        if p["collect"] and ctx.store.devices():
            ctx.progress(0.1, "collecting scoring data")
            collected = collect(ctx.workspace, log=ctx.log)
        else:
            collected = {}
        ctx.progress(0.5, "checking")
        results = monitor.checks(ctx.workspace, by=p["window_by"], size=p["window"], alpha=p["alpha"],
                                 bonferroni=p["bonferroni"], psi_threshold=p["psi_threshold"],
                                 min_records=p["min_records"])
        store = scoring_store(ctx.workspace)
        for c in results:
            c["window_size"] = p["window"]
            new = store.add_check(c)
            bad = [t["name"] for t in c["tests"] if t["drifted"]]
            unknown = monitor.unknown_line(c)
            # a check without a verdict says its count once ("0 records, 0 record(s) in the window; …")
            ctx.log(f"{c['device']} {c['model']}:{c['version']}: "
                    + (f"no verdict: {c['note']}" if c.get("note") else
                       f"{c['window']['n']} records, {'DRIFT in ' + ', '.join(bad) if bad else 'no drift'}")
                    + (f"; {unknown}" if unknown else "")
                    + ("" if new else " (nothing new since the last check: its time is updated, no copy recorded)"))
        drifted = [c for c in results if c["drifted"]]
        summary = {"checks": results, "collected": collected, "drifted": len(drifted)}
        msg = "; ".join([monitor.verdict(results)[1], *(f"{c['device']}: {monitor.unknown_line(c)}" for c in results
                                                          if monitor.unknown_line(c))])
        if not results and not ctx.store.devices():  # "no scoring data yet", as if some would come
            msg = NO_DEVICES
        return StepResult(summary=summary, output_fp=hash_text([(c["device"], c["bundle_id"], c["drifted"],
                                                                 c["window"]) for c in results]),
                          message=msg, status=StepStatus.DRIFTED if drifted else StepStatus.DONE)


NO_DEVICES = ("no devices enrolled, so no scoring data to check: enroll one (`cdl devices enroll NAME --address "
              "HOST:PORT`) and deploy a model to it")


class MaintainStep(Step):
    spec = StepSpec(
        id="deploy.maintain",
        title="Maintain",
        pipeline="deploy",
        role=Role.DATA_SCIENTIST,
        inputs=(Port("checks", "drift_checks"),),
        outputs=(Port("proposal", "retrain_proposal"),),
        params=(
            ParamSpec("max_samples", "int", 100, "samples a proposal puts into the labeling queue", minimum=1),
        ),
        description="After drift, a retrain proposal: the scoring samples to label, lowest confidence first, "
        "with their raw inputs, in the labeling queue; the loop goes back to labeling and retraining.",
    )

    def run(self, ctx: StepContext) -> StepResult:
        from runtime import proposals

        run = ctx.store.last_step_runs().get("deploy.monitor")
        if run is None or run.status not in ("done", "drifted"):
            raise StepFailed(ctx.step, "deploy.monitor has not run yet")
        made, unproposed = [], []
        for c in run.summary.get("checks", []):
            if not c["drifted"]:
                continue
            existing = [p for p in proposals.proposals(ctx.workspace)
                        if p["bundle_id"] == c["bundle_id"] and p["device"] == c["device"] and p["status"] == "open"]
            if existing:
                ctx.log(f"{c['device']}: proposal {existing[0]['id']} is still open ({existing[0]['unlabeled']} to label)")
                made.append(existing[0])
                continue
            try:
                p = proposals.create(ctx.workspace, c, ctx.params["max_samples"])
            except proposals.NothingToPropose as e:
                ctx.log(str(e))
                unproposed.append({"device": c["device"], "bundle_id": c["bundle_id"], "reason": str(e),
                                   "labeled": e.labeled, "labeled_in": e.labeled_in["id"] if e.labeled_in else None})
                continue
            few = proposals.few_kept_line(ctx.workspace, p, ctx.params["max_samples"])
            ctx.log(f"{c['device']}: proposal {p['id']}: {p['samples']} sample(s) to label "
                    f"(`cdl labels next --filter proposal:{p['id']}`)" + (f"; {few}" if few else ""))
            made.append(p)
        msg = (f"{len(made)} retrain proposal(s): {', '.join(p['id'] + ' (' + str(p['unlabeled']) + ' to label)' for p in made)}"
               if made else f"drift on {', '.join(u['device'] for u in unproposed)}, but nothing new to label"
               if unproposed else "no drift: nothing to propose")
        return StepResult(summary={"proposals": made, "unproposed": unproposed},
                          output_fp=hash_text([[p["id"] for p in made], unproposed]), message=msg)


STEPS = [MonitorStep, MaintainStep]
