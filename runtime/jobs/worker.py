"""The worker process: runs one job's steps with the same Runner as `cdl run`, sending events home.

A fresh interpreter (`python -m runtime.jobs.worker`), so it shares nothing with the server: a PyTorch job and
a TensorFlow job never share a process. The job's spec arrives on stdin as JSON; events go out as JSON lines on
the file descriptor named by CDL_EVENT_FD; stdout and stderr are the job's log file (`.cdl/jobs/<job>.log`), so
even a native crash leaves a trace. It dies with the runtime process (SIGTERM, however the runtime died): a job
that nobody can watch or cancel any more, and that the next runtime marks failed, must not go on.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def run_job(root: str, job_id: str, spec: dict[str, Any], send) -> None:  # noqa: ANN001
    try:
        import faulthandler

        faulthandler.enable()
        from runtime.jobs.runner import Runner
        from runtime.workspace import Workspace

        ws = Workspace(Path(root))
        runner = Runner(ws, job=job_id)
        runner.bus.subscribe(lambda ev: send(ev.to_dict()))
        result = runner.run(steps=spec.get("steps") or None, until=spec.get("until") or None,
                            force=bool(spec.get("force")), overrides=spec.get("overrides") or {})
        send({"kind": "__result__", "job": job_id, "status": result.status,
              "steps": [o.to_dict() for o in result.steps]})
    except BaseException as exc:  # noqa: BLE001 - report anything, then die
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        send({"kind": "__result__", "job": job_id, "status": "failed",
              "error": f"{type(exc).__name__}: {exc}", "traceback": tb})


def main() -> int:
    from runtime.domain.processes import die_with_parent

    # a job whose runtime died can tell no one of its progress, and the next runtime marks it failed: it stops
    die_with_parent(int(os.environ.get("CDL_RUNTIME_PID") or 0) or None)
    root, job_id = sys.argv[1], sys.argv[2]
    spec = json.loads(sys.stdin.read())
    out = os.fdopen(int(os.environ["CDL_EVENT_FD"]), "w", buffering=1)

    def send(ev: dict[str, Any]) -> None:
        out.write(json.dumps(ev, default=str) + "\n")
        out.flush()

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    run_job(root, job_id, spec, send)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
