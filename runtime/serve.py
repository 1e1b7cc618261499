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
import math
import os
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
from runtime.domain.processes import stop_child
from runtime.workspace.workspace import Workspace


def sweep_stale(root: Path | None = None) -> list[Path]:
    """Folders of `cdl serve` agents that died without tidying up (a SIGKILL): removed when a new one starts."""
    from runtime.domain.processes import pid_alive

    gone = []
    for d in Path(root or tempfile.gettempdir()).glob("cdl-serve-*"):
        try:
            holder = (d / "run" / "agent.lock").read_text().split()
            pid = int(holder[1].rstrip(",")) if len(holder) > 1 and holder[0] == "pid" else None
        except (OSError, ValueError):
            pid = None
        age = datetime.now().timestamp() - d.stat().st_mtime
        if (pid is not None and not pid_alive(pid)) or (pid is None and age > 3600):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


def _example_body(bundle: Path) -> str:
    """A request the served model takes, for the curl line: one text, or for an image model the shape of one
    image's pixels to fill in. It was `{"inputs": [...]}` for both, which the agent refused."""
    from edge_agent.proto.bundle import read_manifest_unverified

    raw = read_manifest_unverified(bundle)["raw_input"]
    if raw["kind"] == "text":
        return json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                       "data": ["a text to classify"]}]})
    shape = [1, *raw["shape"][1:]]  # an image's pixels: too many to print, so the shape to fill
    return json.dumps({"inputs": [{"name": "image", "shape": shape, "datatype": "UINT8", "data": []}]}).replace(
        "[]", f"[...{math.prod(shape)} pixel values 0-255...]")


def serve_model(ws: Workspace, ref: str, variant: str = "fp32", listen: str = "127.0.0.1:8001", workers: int = 1,
                log: Callable[[str], None] = print, stop: threading.Event | None = None,
                parent_pid: int | None = None, http: str | None = None) -> dict[str, Any]:
    """Serve until `stop` is set (or SIGINT/SIGTERM when it is None), or until `parent_pid` (the studio that
    asked) has gone; returns what was served. The agent dies with this process, however it dies. http: HOST:PORT
    of the protocol's REST binding besides gRPC (edge_agent.rest), as `mlflow models serve` answers REST."""
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
    if http:
        try:
            split_address(http, "127.0.0.1:8000")
        except ValueError as exc:
            raise CdlError(f"--http {http!r}: {exc}") from None
    sweep_stale()
    mv = ws.store.resolve_model(ref)
    bundle = bundle_path(ws, mv.ref, variant)  # a variant that was not built says so here, before anything starts
    folder = Path(tempfile.mkdtemp(prefix="cdl-serve-"))
    proc: subprocess.Popen | None = None
    try:
        hosts = [host.strip("[]")] if host not in ("0.0.0.0", "[::]", "::") else [socket.gethostname()]
        key_pem, cert_pem, fingerprint = device_certificate(ws.root, "cdl-serve", hosts, days=90,
                                                            trusted_by=[d.name for d in ws.store.devices()])
        (folder / "tls").mkdir()
        atomic_write_bytes(folder / "tls" / "server.key", key_pem, private=True)
        atomic_write_bytes(folder / "tls" / "server.crt", cert_pem)
        token = secrets.token_urlsafe(32)
        _, pub = signing_key(ws.root, [d.name for d in ws.store.devices()])
        agent = {"device": "cdl-serve", "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                 "trusted_keys": [pub.decode()], "tls": {"cert": "tls/server.crt", "key": "tls/server.key"},
                 **DEFAULTS, "workers": workers, "http_listen": http or None}
        atomic_write_bytes(folder / "agent.json", json.dumps(agent).encode())
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(folder),
                                 "--listen", listen, "--parent-pid", str(os.getpid())], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)  # the terminal's Ctrl-C is ours to handle: we stop it
        line = proc.stdout.readline()
        if "listening on" not in line:
            proc.wait(30)
            raise CdlError(f"the agent did not start on {listen} (exit status {proc.returncode}); its log is above")
        address = line.split("listening on ")[1].split()[0]
        rest = line.split("REST on ")[1].split()[0] if "REST on " in line else None
        device = Device(name="cdl-serve", address=address, token=token, cert_fingerprint=fingerprint,
                        enroll_dir=str(folder), created=datetime.now(UTC), last_seen=None, last_health={})
        with DeviceClient(ws, device) as client:
            pushed = client.push(bundle, activate=True)
        ca = ws.root / ".cdl" / "pki" / "ca.crt"
        served = {"model": mv.name, "version": str(mv.version), "variant": variant, "address": address,
                  "bundle_id": pushed["bundle_id"], "ca": str(ca), "pid": proc.pid, "rest": rest}
        log(f"serving {mv.ref}:{variant} at {address} (Open Inference Protocol over TLS; model name {mv.name!r}); "
            "Ctrl-C stops it")
        log(f"  a client trusts {ca}: tritonclient.grpc.InferenceServerClient({address!r}, ssl=True, "
            f"root_certificates={str(ca)!r})")
        if rest:
            log(f"  REST: curl --cacert {ca} {rest}/models/{mv.name}/infer -d '{_example_body(bundle)}'")
        _wait(proc, stop, parent_pid)
        return served
    finally:
        if proc is not None:
            stop_child(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _wait(proc: subprocess.Popen, stop: threading.Event | None, parent_pid: int | None = None) -> None:
    """Until the agent exits, `stop` is set, (without `stop`) SIGINT/SIGTERM arrives, or `parent_pid` is gone."""
    from runtime.domain.processes import pid_alive

    if stop is None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        if parent_pid and not pid_alive(parent_pid):
            return
        if proc.poll() is not None:
            raise CdlError(f"the agent stopped (exit status {proc.returncode}); its log is above")


def read_images(paths: list[Path] | list[str], h: int, w: int, c: int):  # noqa: ANN201
    """Image files as a (N, h, w, c) uint8 batch: decoded, converted to the model's channels and resized to its
    input exactly as model.preprocess did its training images (decode_image, fit_image)."""
    import numpy as np

    return np.stack([image_input(Path(p).read_bytes(), (h, w, c), str(p)) for p in paths])


def image_input(payload: bytes | Any, size: tuple[int, int, int], where: str):  # noqa: ANN201, ANN401
    """One image (its file's bytes, or an array already decoded) fitted to a model's (h, w, c); a file that is no
    image is named by `where` with what is wrong, never Pillow's "cannot identify image file <_io.BytesIO object at
    0x7f…>" (what `models predict --input FOLDER` said)."""
    from edge_agent.proto.images import decode_image, fit_image, unreadable_why

    try:
        return fit_image(decode_image(payload) if isinstance(payload, bytes | bytearray) else payload, size)
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise CdlError(f"{where}: not an image this model can take ({unreadable_why(exc)})") from None


def predict(ws: Workspace, address: str, model: str, inputs: list[str] | list[Path]) -> list[dict[str, Any]]:
    """Ask an agent (`cdl serve`'s, or a device that takes inference without a token) for predictions over the
    Open Inference Protocol, as any client would: texts, or image files (read, converted to the channels and
    resized to the size the model's metadata gives). [{"label", "confidence", "probabilities": {class: p}}]."""
    import grpc
    import numpy as np

    from edge_agent.proto import open_inference_pb2 as ipb
    from edge_agent.proto.tensors import deserialize_bytes, serialize_bytes
    from runtime.pki import ca

    _, ca_pem = ca(ws.root)
    channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca_pem))

    def method(name: str, req, resp):  # noqa: ANN001, ANN202 - the protocol's service name, not our proto package's
        return channel.unary_unary(f"/inference.GRPCInferenceService/{name}",
                                   request_serializer=req.SerializeToString, response_deserializer=resp.FromString)

    try:
        metadata = method("ModelMetadata", ipb.ModelMetadataRequest, ipb.ModelMetadataResponse)
        infer = method("ModelInfer", ipb.ModelInferRequest, ipb.ModelInferResponse)
        try:
            meta = metadata(ipb.ModelMetadataRequest(name=model), timeout=30)
            t = meta.inputs[0]
            req = ipb.ModelInferRequest(model_name=model)
            if t.datatype == "BYTES":
                data = [str(x).encode() for x in inputs]
                req.inputs.add(name=t.name, datatype="BYTES", shape=[len(data)])
                req.raw_input_contents.append(serialize_bytes(data))
            else:
                batch = read_images(inputs, int(t.shape[-3]), int(t.shape[-2]), int(t.shape[-1]))
                req.inputs.add(name=t.name, datatype="UINT8", shape=list(batch.shape))
                req.raw_input_contents.append(batch.tobytes())
            r = infer(req, timeout=60)
        except grpc.RpcError as exc:
            raise CdlError(f"{address}: {exc.code().name}: {exc.details()}") from None
        outs = dict(zip([o.name for o in r.outputs], r.raw_output_contents, strict=True))
        shapes = {o.name: list(o.shape) for o in r.outputs}
        n, k = shapes["probabilities"]
        probs = np.frombuffer(outs["probabilities"], "<f4").reshape(n, k)
        labels = [b.decode() for b in deserialize_bytes(outs["label"])]
        try:
            classes = ws.store.resolve_model(f"{model}:{meta.versions[0]}").classes if meta.versions else []
        except CdlError:  # another workspace's model: the classes by number
            classes = []
        names = classes if len(classes) == k else [str(j) for j in range(k)]
        return [{"label": labels[j], "confidence": float(probs[j].max()),
                 "probabilities": {names[c]: float(probs[j, c]) for c in range(k)}} for j in range(n)]
    finally:
        channel.close()
