"""`cdl runtime serve`: the runtime process, on loopback TCP or an owner-only unix socket.

make_server() returns (server, bound address); the port of `127.0.0.1:0` is the one the OS picked. The first
line on stdout is `listening on ADDRESS`, which the studio reads when it starts the process.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

from runtime.domain.errors import CdlError
from runtime.jobs.manager import JobManager
from runtime.proto import runtime_pb2_grpc as pb_grpc
from runtime.server.servicer import RuntimeServicer
from runtime.workspace.workspace import Workspace

LOOPBACK_NAMES = ("localhost",)


def check_listen(listen: str) -> str:
    """Only a unix socket or a loopback address: the runtime has no authentication of its own."""
    if listen.startswith("unix:"):
        path = listen[len("unix:"):]
        if not path:
            raise CdlError("--listen unix:PATH needs a path")
        return listen
    from edge_agent.proto.address import split_address

    try:
        host, _ = split_address(listen, "127.0.0.1:0, or unix:PATH")
    except ValueError as exc:
        raise CdlError(f"--listen {listen!r}: {exc}") from None
    h = host.strip("[]")
    if h not in LOOPBACK_NAMES:
        try:
            ok = ipaddress.ip_address(h).is_loopback
        except ValueError:
            ok = False
        if not ok:
            raise CdlError(f"--listen {listen!r}: the runtime only listens on loopback (127.0.0.1, ::1) or a "
                           "unix socket; use an SSH tunnel to reach it from elsewhere")
    return listen


def make_server(workspace: Workspace, listen: str = "127.0.0.1:0") -> tuple[grpc.Server, str, JobManager]:
    listen = check_listen(listen)
    manager = JobManager(workspace)
    # without SO_REUSEPORT (gRPC's default), so that a second runtime on a port one already serves fails to bind
    # instead of sharing the connections with the first
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="cdl-grpc"),
                         options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_RuntimeServiceServicer_to_server(RuntimeServicer(manager), server)
    if listen.startswith("unix:"):
        path = Path(listen[len("unix:"):]).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if _answers(path):
                manager.shutdown()
                raise CdlError(f"cannot listen on unix:{path}: a runtime is serving on it (the studio's, or another "
                               "`cdl runtime serve`); give another path")
            path.unlink()  # left by a runtime that died
        old = os.umask(0o177)  # the socket is created owner-only
        try:
            server.add_insecure_port(f"unix:{path}")
            server.start()
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        address = f"unix:{path}"
    else:
        try:
            port = server.add_insecure_port(listen)
        except RuntimeError:  # gRPC's "Failed to bind", a traceback for the user
            port = 0
        if port == 0:
            manager.shutdown()
            raise CdlError(f"cannot listen on {listen}: the port is in use (another runtime, or another program: "
                           f"`ss -ltnp 'sport = :{listen.rpartition(':')[2]}'` names it)")
        server.start()
        host = listen.rpartition(":")[0]
        address = f"{host}:{port}"
    return server, address, manager


def _answers(path: Path) -> bool:
    """Whether a process listens on the unix socket (a stale file from a runtime that died refuses)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def serve(workspace: Workspace, listen: str, parent_pid: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT, or, with `parent_pid`, until that process (the studio that started this
    runtime) has exited, however it exited: a runtime left behind by a crashed studio would run jobs nobody
    watches, beside the runtime the next studio starts."""
    server, address, manager = make_server(workspace, listen)
    print(f"listening on {address}", flush=True)
    done = threading.Event()

    def stop(*_: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if parent_pid:
        threading.Thread(target=_stop_when_gone, args=(parent_pid, done), name="cdl-parent-watch",
                         daemon=True).start()
    done.wait()
    _say("stopping: cancelling running jobs")
    manager.shutdown()
    server.stop(grace=2).wait()


def _stop_when_gone(pid: int, done: threading.Event, every: float = 0.5) -> None:
    from runtime.domain.processes import pid_alive

    while not done.wait(every):
        if os.getppid() != pid and not pid_alive(pid):
            done.set()
            _say(f"the process that started this runtime ({pid}) has exited")


def _say(message: str) -> None:
    """A line on stderr, which may be a pipe whose reader (the studio) is gone: stopping goes on regardless."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
