"""Machine-readable job results: JSON for scripts and a JUnit XML file for CI (one test case per step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from runtime.domain.steps import StepStatus, run_ending
from runtime.jobs.runner import JobResult

KEY_METRICS = ("test_accuracy", "macro_f1", "val_accuracy", "val_loss", "best_value", "items", "quarantined",
               "version", "labeled", "train", "test")


def _metrics(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k in KEY_METRICS:
        if k in summary and isinstance(summary[k], int | float | str):
            out[k] = summary[k]
    for k, v in (summary.get("metrics") or {}).items():
        if isinstance(v, int | float):
            out[k] = v
    return out


def _waiting(o: Any) -> bool:  # noqa: ANN401
    """A step that stopped to wait for a person (a review, a device to enroll), not one that failed."""
    return run_ending(o.status, o.error, o.summary) == StepStatus.WAITING.value


def job_json(result: JobResult) -> dict[str, Any]:
    """The run for scripts. A step that waits for a person (model.review's review, deploy.push's first device) is
    "waiting", and so is the run it ended, as `cdl status` and `cdl runs` say: both read "failed" here."""
    return {
        "job": result.job,
        "status": "waiting" if result.waiting_at else result.status,
        "steps": [{**o.to_dict(), **({"status": "waiting"} if _waiting(o) else {}), "metrics": _metrics(o.summary),
                   "gate_failed": o.gate} for o in result.steps],
    }


def write_junit(result: JobResult, path: Path) -> None:
    suite = ET.Element("testsuite", name="cdl", tests=str(len(result.steps)))
    failures = skipped = 0
    total = 0.0
    stopped = next((o for o in result.steps if o.status in ("failed", "cancelled")), None)
    why = (f"not run: {stopped.step} waits for a person" if stopped is not None and _waiting(stopped)
           else "not run: an earlier step failed")
    for o in result.steps:
        case = ET.SubElement(suite, "testcase", classname=f"cdl.{o.step.split('.')[0]}", name=o.step,
                             time=f"{o.duration:.3f}")
        total += o.duration
        if o.status in ("failed", "cancelled"):
            failures += 1
            # waiting fails CI as `cdl run` does (exit 1), and says it waits
            f = ET.SubElement(case, "failure", message=(("waiting: " if _waiting(o) else "") + (o.error or o.status))[:500])
            f.text = o.traceback or o.error or ""
        elif o.status == "not-run":
            skipped += 1
            ET.SubElement(case, "skipped", message=why)
        elif o.status == "skipped":
            out = ET.SubElement(case, "system-out")
            out.text = "up to date"
        else:
            out = ET.SubElement(case, "system-out")
            out.text = o.message
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    suite.set("errors", "0")
    suite.set("time", f"{total:.3f}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
