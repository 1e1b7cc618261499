"""`cdl serve NAME:VERSION[:VARIANT]`: a model served on this machine over the Open Inference Protocol, as
`mlflow models serve` does, to try it with tritonclient before it goes to a device.

It is the edge agent itself (`cdl-edge serve` in a process of its own), in a temporary folder with a throwaway
certificate from the workspace CA and a throwaway token, and the variant's signed bundle pushed and activated
through the agent's control service: what answers is exactly what a device would answer. Nothing is recorded in
the registry (no device, no deployment), and the folder, with the scoring journal of the requests it served, is
deleted when it stops (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime.domain.entities import Device
from runtime.domain.errors import CdlError
from runtime.workspace.workspace import Workspace


def serve_model(ws: Workspace, ref: str, variant: str = "fp32", listen: str = "127.0.0.1:8001", workers: int = 1,
                log: Callable[[str], None] = print, stop: threading.Event | None = None) -> dict[str, Any]:
    """Serve until `stop` is set (or SIGINT/SIGTERM when it is None); returns what was served."""
    from edge_agent.proto.address import split_address
    from edge_agent.proto.agent_json import DEFAULTS
    from runtime.bundles import bundle_path
    from runtime.devices import DeviceClient
    from runtime.keys import signing_key
    from runtime.pki import device_certificate
    from runtime.workspace.config import atomic_write_bytes

    try:
        host, _port = split_address(listen, "127.0.0.1:8001")
    except ValueError as exc:
        raise CdlError(f"--listen {listen!r}: {exc}") from None
    mv = ws.store.resolve_model(ref)
    bundle = bundle_path(ws, mv.ref, variant)  # a variant that was not built says so here, before anything starts
    folder = Path(tempfile.mkdtemp(prefix="cdl-serve-"))
    proc: subprocess.Popen | None = None
    try:
        hosts = [host.strip("[]")] if host not in ("0.0.0.0", "[::]", "::") else [socket.gethostname()]
        key_pem, cert_pem, fingerprint = device_certificate(ws.root, "cdl-serve", hosts, days=90)
        (folder / "tls").mkdir()
        atomic_write_bytes(folder / "tls" / "server.key", key_pem, private=True)
        atomic_write_bytes(folder / "tls" / "server.crt", cert_pem)
        token = secrets.token_urlsafe(32)
        _, pub = signing_key(ws.root)
        agent = {"device": "cdl-serve", "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                 "trusted_keys": [pub.decode()], "tls": {"cert": "tls/server.crt", "key": "tls/server.key"},
                 **DEFAULTS, "workers": workers}
        atomic_write_bytes(folder / "agent.json", json.dumps(agent).encode())
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(folder),
                                 "--listen", listen], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)  # the terminal's Ctrl-C is ours to handle: we stop it
        line = proc.stdout.readline()
        if "listening on" not in line:
            proc.wait(30)
            raise CdlError(f"the agent did not start on {listen} (exit status {proc.returncode}); its log is above")
        address = line.split("listening on ")[1].split()[0]
        device = Device(name="cdl-serve", address=address, token=token, cert_fingerprint=fingerprint,
                        enroll_dir=str(folder), created=datetime.now(UTC), last_seen=None, last_health={})
        with DeviceClient(ws, device) as client:
            pushed = client.push(bundle, activate=True)
        ca = ws.root / ".cdl" / "pki" / "ca.crt"
        served = {"model": mv.name, "version": str(mv.version), "variant": variant, "address": address,
                  "bundle_id": pushed["bundle_id"], "ca": str(ca), "pid": proc.pid}
        log(f"serving {mv.ref}:{variant} at {address} (Open Inference Protocol over TLS; model name {mv.name!r}); "
            "Ctrl-C stops it")
        log(f"  a client trusts {ca}: tritonclient.grpc.InferenceServerClient({address!r}, ssl=True, "
            f"root_certificates={str(ca)!r})")
        _wait(proc, stop)
        return served
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


def _wait(proc: subprocess.Popen, stop: threading.Event | None) -> None:
    """Until the agent exits, `stop` is set, or (without `stop`) SIGINT/SIGTERM arrives."""
    if stop is None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        if proc.poll() is not None:
            raise CdlError(f"the agent stopped (exit status {proc.returncode}); its log is above")
