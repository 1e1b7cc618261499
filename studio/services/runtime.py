"""The studio's link to the runtime process (`cdl runtime serve`): started on loopback, or an existing one.

Calls go through the runtime's gRPC client off the GUI thread; each watched job's event stream is read in its
own thread and reaches widgets as queued signals."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from studio.services.tasks import run_task


class RuntimeConnection(QObject):
    sig_ready = Signal(str)  # the address
    sig_failed = Signal(str)
    sig_event = Signal(object)  # runtime.domain.events.Event
    sig_status = Signal(object)  # GetStatus as a dict
    sig_job_submitted = Signal(str, object)  # job id, plan
    sig_job_finished = Signal(str, str)  # job id, final status
    sig_error = Signal(str)
    sig_refused = Signal(str)  # a run the runtime would not start (a parameter its checks refuse), and why

    def __init__(self, workspace: Path, address: str | None = None):
        super().__init__()
        self.workspace = Path(workspace)
        self.address = address or os.environ.get("CDL_RUNTIME_ADDRESS")
        self.client = None
        self.proc: subprocess.Popen | None = None
        self.current_job: str | None = None
        self._watching: set[str] = set()
        self._stderr_tail: deque[str] = deque(maxlen=50)
        self._own = self.address is None  # this studio starts the runtime (and starts it again if it dies)
        self._stopping = False
        self._deaths: list[float] = []
        self._launched: tuple[subprocess.Popen, threading.Thread] | None = None  # by launch(), not yet waited on

    # -- lifecycle ----------------------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the runtime's process now and leave it starting: it loads the engine (1.5-2 s) while the window
        builds its panels, and start() then waits for it to listen. The studio started it only once the window
        was built, and the two starts took their time one after the other. Nothing where this studio connects to
        a runtime at an address given."""
        if self._own and self._launched is None and self.proc is None:
            self._launched = self._popen()

    def start(self) -> None:
        threading.Thread(target=self._start, name="runtime-start", daemon=True).start()

    def _popen(self) -> tuple[subprocess.Popen, threading.Thread]:
        self._stderr_tail.clear()
        proc = self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "-w", str(self.workspace), "runtime", "serve", "--listen",
             "127.0.0.1:0", "--parent-pid", str(os.getpid())],  # it stops if this studio dies
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # its stderr is read for as long as it runs (a pipe nobody reads blocks the writer once full)
        drain = threading.Thread(target=self._drain, args=(proc.stderr,), name="runtime-stderr", daemon=True)
        drain.start()
        return proc, drain

    def _start(self) -> None:
        proc, supervised = None, False
        try:
            if self._own:
                launched, self._launched = self._launched, None  # the one launch() started, or a new one
                proc, drain = launched or self._popen()
                line = proc.stdout.readline().strip()
                if not line.startswith("listening on "):
                    if proc.poll() is not None:
                        drain.join(2)
                    err = "".join(self._stderr_tail)
                    raise RuntimeError(f"the runtime did not start: {line or err[-500:]}")
                self.address = line.split()[-1]
                # from here on a death is the supervisor's to handle, even one before the runtime answers
                threading.Thread(target=self._supervise, args=(proc,), name="runtime-supervise",
                                 daemon=True).start()
                supervised = True
            import grpc

            from runtime.server.client import RuntimeClient

            client = RuntimeClient(self.address)
            try:
                client.wait_ready(15)
            except grpc.FutureTimeoutError:
                client.close()
                raise RuntimeError(f"the runtime at {self.address} did not answer within 15 s") from None
        except Exception as exc:  # noqa: BLE001
            if supervised and (proc is not self.proc or proc.poll() is not None):
                return  # it died after it started listening: the supervisor says so and starts it again
            self.sig_failed.emit(f"cannot start or reach the runtime: {exc}")
            return
        if proc is not None and proc is not self.proc:  # a newer runtime replaced this one meanwhile
            client.close()
            return
        self.client = client  # only now is the studio connected (`ready`): calls made before would fail
        self.sig_ready.emit(self.address)
        self._resume_running_jobs()

    def _supervise(self, proc: subprocess.Popen) -> None:
        """A runtime this studio started that dies (killed, crashed) is started again, as a service manager
        would: its jobs died with it and are marked failed by the new one. Three deaths within a minute: the
        studio stops trying and says so."""
        code = proc.wait()
        if self._stopping or proc is not self.proc:
            return
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
        time.sleep(0.2)  # the last lines of its stderr
        tail = " ".join(line.strip() for line in list(self._stderr_tail)[-3:])
        said = f"the runtime stopped unexpectedly (exit status {code})" + (f": {tail[-300:]}" if tail else "")
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < 60] + [now]
        if len(self._deaths) >= 3:
            self.sig_failed.emit(f"{said}; it stopped three times within a minute, so it is not started again "
                                 "(reopen the workspace to try again)")
            return
        self.sig_failed.emit(f"{said}; starting it again")
        time.sleep(1.0)
        if not self._stopping:
            self._start()

    def _drain(self, stream) -> None:  # noqa: ANN001
        """The runtime's stderr: echoed to the studio's, its last lines kept for an error message."""
        for line in stream:
            self._stderr_tail.append(line)
            try:
                sys.stderr.write(f"[runtime] {line}")
            except (OSError, ValueError):
                pass

    def _resume_running_jobs(self) -> None:
        try:
            for job in self.client.list_jobs(10):
                if job["status"] in ("queued", "running"):
                    self.current_job = job["job_id"]
                    self.watch(job["job_id"])
        except Exception as exc:  # noqa: BLE001
            self.sig_error.emit(str(exc))

    def stop(self) -> None:
        self._stopping = True
        if self.client is not None:
            self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)  # it cancels its running job and records it so (up to 5 s for a worker to stop)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @property
    def ready(self) -> bool:
        return self.client is not None

    # -- calls --------------------------------------------------------------------------------------------

    def refresh_status(self) -> None:
        if self.client is None:
            return
        run_task(self.client.get_status, on_done=self.sig_status.emit, on_error=self.sig_error.emit)

    def submit(self, steps: list[str] | None = None, until: str | None = None, force: bool = False,
               overrides: dict[str, Any] | None = None) -> None:
        if self.client is None:  # a Run that does nothing is said as a refused one is (it was a status-bar line)
            self.sig_refused.emit("the runtime is not connected yet (it is starting, or did not start: the status "
                                  "bar says which)")
            return

        def done(result: tuple[str, list[str]]) -> None:
            job, plan = result
            self.current_job = job
            self.sig_job_submitted.emit(job, plan)
            self.watch(job)

        run_task(self.client.submit_job, steps, until, force, overrides, on_done=done, on_error=self.sig_refused.emit)

    def cancel(self, job: str | None = None) -> None:
        job = job or self.current_job
        if self.client is None or job is None:
            return
        run_task(self.client.cancel_job, job, on_error=self.sig_error.emit)

    def watch(self, job: str) -> None:
        if job in self._watching:
            return
        self._watching.add(job)
        threading.Thread(target=self._watch, args=(job,), name=f"watch-{job}", daemon=True).start()

    def _watch(self, job: str) -> None:
        status = "failed"
        try:
            for ev in self.client.watch_job(job):
                self.sig_event.emit(ev)
                if ev.kind.value == "job-finished":
                    status = ev.data.get("status", "failed")
        except Exception as exc:  # noqa: BLE001
            self.sig_error.emit(f"lost the job's event stream: {exc}")
        finally:
            self._watching.discard(job)
            if self.current_job == job:
                self.current_job = None
            self.sig_job_finished.emit(job, status)
