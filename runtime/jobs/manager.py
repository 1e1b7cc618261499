"""Jobs of the runtime process: a FIFO queue, one spawned worker process per job, events fanned out.

- submit() records the job and queues it; jobs of one workspace run one at a time (they share its data).
- Events from the worker are numbered, persisted (so WatchJob can replay a job from its start after a
  reconnect) and handed to live watchers.
- cancel() terminates the worker (SIGTERM, then SIGKILL); a worker that dies without reporting is a failed
  job whose error carries its exit code and the end of its log; the server keeps serving either way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.domain.errors import CdlError, did_you_mean
from runtime.domain.events import EventKind
from runtime.domain.processes import pid_alive
from runtime.domain.steps import CANCELLED_BY_USER
from runtime.jobs.runner import Runner, check_plan
from runtime.store.tables import utcnow
from runtime.workspace.workspace import Workspace

FINISHED = ("done", "failed", "cancelled")


@dataclass
class _Live:
    events: list[dict[str, Any]] = field(default_factory=list)
    status: str = "queued"
    proc: Any = None
    result: dict[str, Any] | None = None
    cancel_requested: bool = False


class JobManager:
    def __init__(self, workspace: Workspace):
        self.ws = workspace
        self.store = workspace.store
        self._pending: deque[str] = deque()
        self._live: dict[str, _Live] = {}
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._recover()
        self._threads = [threading.Thread(target=self._schedule, name="cdl-job-scheduler", daemon=True)]
        for t in self._threads:
            t.start()

    def _recover(self) -> None:
        """Jobs a runtime process that has stopped left queued or running cannot go on: mark them failed. The
        jobs of another runtime that still runs (a second studio on this workspace; another machine sharing
        the registry) are its own."""
        for job in self.store.jobs(limit=1000):
            if job.status in ("queued", "running") and not _owned_elsewhere(job):
                self.store.update_job(job.id, status="failed", finished=utcnow(),
                                      error="the runtime process stopped before this job finished")
                self.store.fail_job_runs(job.id, "the runtime process stopped before this step finished")
        self.store.mark_interrupted_runs("the process running this step ended before it finished")

    # -- api ----------------------------------------------------------------------------------------------

    def submit(self, steps: list[str] | None = None, until: str | None = None, force: bool = False,
               overrides: dict[str, dict[str, Any]] | None = None) -> tuple[str, list[str]]:
        cfg = self.ws.config()
        for sid in overrides or {}:
            if sid not in cfg.steps:
                raise CdlError(f"override for {sid!r}: not a step of this pipeline"
                               f"{did_you_mean(sid, list(cfg.steps))}")
            cfg.params(sid, (overrides or {})[sid])  # type-check now, not in the worker
        plan = Runner(self.ws).plan(cfg, steps, until)
        check_plan(cfg, plan, overrides, self.ws)  # at once, not as a job that fails in its worker process
        job_id = uuid.uuid4().hex[:12]
        spec = {"steps": steps or [], "until": until or "", "force": force, "overrides": overrides or {},
                "plan": plan}
        self.store.create_job(job_id, spec)
        with self._cv:
            self._live[job_id] = _Live()
            self._pending.append(job_id)
            self._cv.notify_all()
        return job_id, plan

    def cancel(self, job_id: str) -> str:
        with self._cv:
            live = self._live.get(job_id)
            if live is None:
                job = self.store.job(job_id)  # raises NotFoundError if unknown
                if job.status not in FINISHED and _owned_elsewhere(job):
                    raise CdlError(f"job {job_id} runs in another runtime (pid {job.runtime_pid} on {job.host}): "
                                   "cancel it there")
                return job.status
            if live.status in FINISHED:
                return live.status
            live.cancel_requested = True
            if live.status == "queued":
                self._pending.remove(job_id)
                self._finish(job_id, "cancelled", "cancelled before it started")
                return "cancelled"
            proc = live.proc
        if proc is not None:
            _stop_process(proc)
        with self._cv:
            while live.status not in FINISHED:
                self._cv.wait(0.2)
        return live.status

    def watch(self, job_id: str, from_seq: int = 0, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Events with seq > from_seq, live until the job finishes (or `timeout` seconds pass)."""
        with self._cv:
            live = self._live.get(job_id)
        if live is None:
            yield from self._watch_stored(job_id, from_seq, timeout)
            return
        sent = from_seq
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cv:
                new = [e for e in live.events if e["seq"] > sent]
                if not new:
                    if live.status in FINISHED:
                        return
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    self._cv.wait(0.5 if remaining is None else min(0.5, remaining))
                    continue
            for e in new:
                sent = e["seq"]
                yield e

    def _watch_stored(self, job_id: str, from_seq: int, timeout: float | None,
                      every: float = 0.3) -> Iterator[dict[str, Any]]:
        """A job this manager does not run: its events from the registry; while another live runtime runs it
        (a second studio's), new ones as that runtime stores them, until it finishes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = from_seq
        while True:
            job = self.store.job(job_id)  # raises NotFoundError if unknown
            for e in self.store.job_events(job_id, sent):
                sent = e["seq"]
                yield e
                if e["kind"] == EventKind.JOB_FINISHED.value:
                    return
            if job.status in FINISHED or not _owned_elsewhere(job):
                return  # finished (its last events were just read) or left behind by a runtime that stopped
            if deadline is not None and time.monotonic() >= deadline or self._stop.is_set():
                return
            time.sleep(every)

    def jobs(self, limit: int = 50):  # noqa: ANN201
        return self.store.jobs(limit)

    def running(self) -> int:
        with self._cv:
            return sum(1 for j in self._live.values() if j.status == "running")

    def status_of(self, job_id: str) -> str:
        with self._cv:
            if job_id in self._live:
                return self._live[job_id].status
        return self.store.job(job_id).status

    def shutdown(self, wait: float = 15.0) -> None:
        """Stop: running jobs are cancelled, as a person's Cancel does, and recorded so before this returns (the
        studio closed was recorded as "failed: the worker process exited with code -15", a red node for a run the
        person chose to stop); queued ones end cancelled before they started."""
        self._stop.set()
        with self._cv:
            running = [j for j in self._live.values() if j.proc is not None and j.status == "running"]
            for j in running:
                j.cancel_requested = True
            while self._pending:
                self._finish(self._pending.popleft(), "cancelled", "cancelled before it started: the runtime stopped")
            self._cv.notify_all()
        for j in running:
            _stop_process(j.proc)
        deadline = time.monotonic() + wait
        with self._cv:  # the scheduler thread reaps each worker and records its job
            while any(j.status not in FINISHED for j in running) and time.monotonic() < deadline:
                self._cv.wait(0.2)

    # -- internals ----------------------------------------------------------------------------------------

    def _add_event(self, job_id: str, ev: dict[str, Any]) -> dict[str, Any] | None:
        live = self._live[job_id]
        if live.status in FINISHED:
            return None  # stragglers after the final event are dropped: watchers have left
        ev = dict(ev)
        ev["job"] = job_id
        ev["seq"] = len(live.events) + 1
        live.events.append(ev)
        self.store.add_job_events([ev])
        self._cv.notify_all()
        return ev

    def _finish(self, job_id: str, status: str, error: str | None = None) -> None:
        """Call with the lock held."""
        live = self._live[job_id]
        if live.status in FINISHED:
            return
        if status != "done":
            self.store.fail_job_runs(job_id, error or status)
        self.store.update_job(job_id, status=status, finished=utcnow(), error=error)
        self._add_event(job_id, {"kind": EventKind.JOB_FINISHED.value, "step": None, "fraction": None,
                                 "message": error or status, "data": {"status": status}, "time": time.time()})
        live.status = status
        self._cv.notify_all()

    def _schedule(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._pending and not self._stop.is_set():
                    self._cv.wait(0.5)
                if self._stop.is_set():
                    return
                job_id = self._pending.popleft()
                live = self._live[job_id]
            try:
                proc, reader = self._start(job_id)
            except OSError as exc:
                with self._cv:
                    self._finish(job_id, "failed", f"cannot start the worker process: {exc}")
                continue
            with self._cv:
                live.proc, live.status = proc, "running"
                self.store.update_job(job_id, status="running", started=utcnow(), pid=proc.pid)
                self._cv.notify_all()
            self._read(job_id, reader)  # until the worker closes its end (exit, crash or kill)
            proc.wait()
            self._reap(job_id, proc)

    def _start(self, job_id: str) -> tuple[subprocess.Popen, Any]:
        """Called on the scheduler thread, which lives as long as the manager: the worker's death signal
        (PR_SET_PDEATHSIG) follows the thread that started it."""
        spec = self.store.job(job_id).spec
        log = Path(self.ws.root) / ".cdl" / "jobs" / f"{job_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        r, w = os.pipe()
        env = dict(os.environ, CDL_EVENT_FD=str(w), PYTHONUNBUFFERED="1", CDL_RUNTIME_PID=str(os.getpid()))
        with open(log, "ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "runtime.jobs.worker", str(self.ws.root), job_id],
                                    stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                    pass_fds=(w,), cwd=self.ws.root, start_new_session=True)
        os.close(w)
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
        return proc, os.fdopen(r, "r", encoding="utf-8")

    def _read(self, job_id: str, reader: Any) -> None:
        with reader:
            for line in reader:
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue
                with self._cv:
                    live = self._live[job_id]
                    if ev.get("kind") == "__result__":
                        live.result = ev
                    elif ev.get("kind") != EventKind.JOB_FINISHED.value:
                        self._add_event(job_id, ev)  # the manager writes the job's final event itself

    def _reap(self, job_id: str, proc: subprocess.Popen) -> None:
        with self._cv:
            live = self._live[job_id]
            if live.cancel_requested:
                self._finish(job_id, "cancelled", CANCELLED_BY_USER)
            elif live.result is not None:
                r = live.result
                status = r.get("status", "failed")
                error = r.get("error")
                if status != "done" and not error:
                    failed = [s for s in r.get("steps", []) if s["status"] in ("failed", "cancelled")]
                    error = f"{failed[0]['id']}: {failed[0]['error']}" if failed else status
                self._finish(job_id, status if status in FINISHED else "failed", error)
            else:
                self._finish(job_id, "failed", f"the worker process exited with code {proc.returncode} without "
                             f"finishing{self._log_tail(job_id)}")

    def _log_tail(self, job_id: str, n: int = 1500) -> str:
        log = Path(self.ws.root) / ".cdl" / "jobs" / f"{job_id}.log"
        try:
            lines = log.read_text(errors="replace")[-20000:].splitlines()
        except OSError:
            return ""
        # faulthandler's list of loaded extension modules says nothing about the crash
        lines = [ln for ln in lines if not ln.startswith("Extension modules:")]
        start = max((i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")), default=None)
        text = "\n".join(lines[start:] if start is not None else lines).strip()[-n:]
        return f"; its log ends:\n{text}" if text else ""


def _owned_elsewhere(job) -> bool:  # noqa: ANN001
    """Whether a live runtime other than this one owns the job: one of another host (its runtime there judges
    it), or one of this host whose process runs, and, for a running job, whose worker runs too. Jobs from
    before schema 0005 record no runtime: they are failed, as they were before."""
    if job.host is not None and job.host != socket.gethostname():
        return True
    if job.runtime_pid is None or job.runtime_pid == os.getpid() or not pid_alive(job.runtime_pid):
        return False
    return job.status == "queued" or pid_alive(job.pid)


def _stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the worker's process group (it may have started helpers), SIGKILL after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(grace)


def job_dict(job) -> dict[str, Any]:  # noqa: ANN001
    return {"job_id": job.id, "status": job.status, "plan": job.spec.get("plan", []),
            "created": job.created.timestamp(), "started": job.started.timestamp() if job.started else 0.0,
            "finished": job.finished.timestamp() if job.finished else 0.0, "error": job.error or "",
            "pid": job.pid or 0}


__all__ = ["JobManager", "job_dict"]
