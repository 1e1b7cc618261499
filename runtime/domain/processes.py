"""Processes of this host: whether one still runs (for runs and run folders that a killed process left behind),
a child that dies with its parent, and a child stopped politely first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGTERM) -> None:
    """Linux: this process gets `sig` when its parent dies, however that dies (a killed runtime takes its job
    workers with it, a killed step takes torchrun and its ranks, instead of leaving them running as orphans
    whose work nobody hears of). Call it first thing in the child (not as a preexec_fn, which would fork a
    parent that runs gRPC's threads). With `parent_pid`, a child whose parent died before the call exits."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def stop_child(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM, so that it ends as it should (an agent closes its journal, `cdl serve` deletes its folder), then
    SIGKILL if it has not ended within `grace` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
