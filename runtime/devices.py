"""Edge devices from the runtime's side: enrollment (TLS certificates, token, trusted key), the control
client, deploy and rollback with a deployment history, and the scoring collector.

The runtime reaches devices only through the agent's published protocol (edge_agent.proto)."""

from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from edge_agent.proto import edge_pb2 as epb
from edge_agent.proto import edge_pb2_grpc as epb_grpc
from runtime.domain.entities import Device
from runtime.domain.errors import CdlError, NotFoundError
from runtime.workspace.workspace import Workspace

CHUNK = 256 * 1024


class DeviceError(CdlError):
    """A device did not answer, or answered no. code: the gRPC status's name where the device answered one
    ("FAILED_PRECONDITION"), detail: its words."""

    def __init__(self, message: str, code: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.code, self.detail = code, detail


DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def enroll(ws: Workspace, name: str, address: str, out_dir: Path | None = None, inference_auth: str | None = None,
           raw_input_below_confidence: float | None = None, retention_seconds: float | None = None,
           workers: int | None = None, replace: bool = False, cert_days: float | None = None,
           metrics_listen: str | None = None, metrics_auth: str | None = None,
           http_listen: str | None = None) -> dict[str, Any]:
    """Make the device's folder (agent.json, TLS certificate and key, the workspace's public key) and record
    the device. Copy the folder to the device and start `cdl-edge serve --data-dir DIR`: agent.json's `listen` is
    the enrolled port (edge_agent.proto.address.listen_for), where the agent listened on 0.0.0.0:8001 without
    --listen, and the systemd unit always did.
    A name already enrolled is refused unless `replace`: the device would get a new token, and the agent
    running from its old folder would refuse the workspace from then on. cert_days: how long its TLS certificate
    is valid (runtime.pki.DEVICE_CERT_DAYS); enrolling again with `replace` renews it.

    Settings left None take the agent's defaults (edge_agent.config), or, when `replace` rewrites the device's folder, what its agent.json
    says now: renewing the credentials does not undo the settings someone tuned on the device (max_batch,
    journal_sync, keep_bundles, ...), nor drop the other workspaces' keys it trusts."""
    import hashlib

    from edge_agent.proto.address import listen_for, split_address
    from edge_agent.proto.agent_json import CREDENTIALS, DEFAULTS
    from runtime.keys import key_files, signing_key
    from runtime.pki import DEVICE_CERT_DAYS, ca, ca_files, device_certificate
    from runtime.workspace.config import atomic_write_bytes

    if not DEVICE_NAME.fullmatch(name or ""):  # ".." passed the old check and wrote the device folder into .cdl/
        raise CdlError(f"bad device name {name!r}: letters, digits, '.', '_' and '-', starting with a letter or a "
                       "digit, at most 64 (it names the device's folder and appears in commands)")
    if workers is not None and not 1 <= workers <= 64:
        raise CdlError(f"workers: {workers} is not from 1 to 64")
    try:
        host, _ = split_address(address, "10.0.0.7:8001, where the agent will listen")
    except ValueError as exc:
        raise CdlError(f"--address {address!r}: {exc}") from None
    for flag, listen, example in (("--metrics", metrics_listen, "127.0.0.1:8002, where the agent serves /metrics"),
                                  ("--http", http_listen, "0.0.0.0:8000, where the agent serves /v2")):
        if listen:  # "" turns it off (None leaves the setting as it is)
            try:
                split_address(listen, example)
            except ValueError as exc:
                raise CdlError(f"{flag} {listen!r}: {exc}") from None
    from edge_agent.proto.address import clash

    said = clash({"--address": address, "--http": http_listen, "--metrics": metrics_listen})
    if said:
        raise CdlError(said)
    _, port = split_address(address)
    taken = [d.name for d in ws.store.devices() if d.name != name and d.address == address.strip()]
    if taken and port:  # one agent a port: pushes to this one would reach the other's agent, and fail on its token
        raise CdlError(f"--address {address}: {taken[0]} is enrolled there, and one agent listens on a port; give "
                       f"{name} another port, or remove {taken[0]} first (`cdl devices remove {taken[0]}`)")
    try:
        known = ws.store.device(name)
    except NotFoundError:
        known = None
    if known is not None and not replace:
        raise CdlError(f"device {name!r} is already enrolled (at {known.address}, folder {device_folder(ws, known)}); "
                       "pass --replace to enroll it again: it gets a new token and certificate, and the agent "
                       "running from its old folder stops accepting this workspace")
    out = Path(out_dir or (device_folder(ws, known) if known is not None else ws.root / ".cdl" / "devices" / name)
               ).resolve()
    if (out / "agent.json").exists():
        # --replace may rewrite the folder this device was enrolled into (its credentials and agent.json; bundles
        # and the journal stay), never another device's
        if not (known is not None and replace and device_folder(ws, known) == out):
            raise CdlError(f"{out} already holds an enrolled agent; choose another --out")
    settings, trusted = dict(DEFAULTS), []
    if (out / "agent.json").exists():  # --replace into its own folder (checked above)
        try:
            old = json.loads((out / "agent.json").read_text(encoding="utf-8-sig"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CdlError(f"{out / 'agent.json'}: cannot read the settings to keep ({exc}); fix or remove the file "
                           "and enroll again") from None
        settings.update({k: v for k, v in old.items() if k not in CREDENTIALS})
        trusted = [k for k in old.get("trusted_keys", []) if isinstance(k, str)]
    given = {"inference_auth": inference_auth, "raw_input_below_confidence": raw_input_below_confidence,
             "retention_seconds": retention_seconds, "workers": workers, "metrics_listen": metrics_listen,
             "metrics_auth": metrics_auth, "http_listen": http_listen}
    settings.update({k: v for k, v in given.items() if v is not None})
    settings["listen"] = listen_for(address)  # where this workspace will connect, --replace at a new port too
    for key in ("metrics_listen", "http_listen"):
        if given[key] == "":
            settings[key] = None
    out.mkdir(parents=True, exist_ok=True)
    # enrolling is trusting: it makes the CA and the signing key where they are gone, and says so below
    new_key = not key_files(ws.root)[0].exists()
    new_ca = not all(f.exists() for f in ca_files(ws.root))
    key_pem, cert_pem, fingerprint = device_certificate(ws.root, name, [host.strip("[]")],
                                                        DEVICE_CERT_DAYS if cert_days is None else cert_days)
    _, ca_pem = ca(ws.root)
    (out / "tls").mkdir(exist_ok=True)
    # each file whole: an agent that starts while enroll rewrites its folder reads the old file or the new
    atomic_write_bytes(out / "tls" / "server.key", key_pem, private=True)
    atomic_write_bytes(out / "tls" / "server.crt", cert_pem)
    atomic_write_bytes(out / "tls" / "ca.crt", ca_pem)
    token = secrets.token_urlsafe(32)
    _, pub = signing_key(ws.root)
    others = [d.name for d in ws.store.devices() if d.name != name]
    agent = {"device": name, "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
             "trusted_keys": list(dict.fromkeys([pub.decode(), *trusted])),
             "tls": {"cert": "tls/server.crt", "key": "tls/server.key"}, **settings}
    atomic_write_bytes(out / "agent.json", json.dumps(agent, indent=1).encode())
    # a folder inside the workspace is recorded relative to it: the workspace may be moved or copied
    inside = out.is_relative_to(ws.root.resolve())
    ws.store.add_device(name=name, address=address, token=token, cert_fingerprint=fingerprint,
                        enroll_dir=str(out.relative_to(ws.root.resolve())) if inside else str(out))
    http_port = int(settings["http_listen"].rpartition(":")[2]) if settings.get("http_listen") else 0
    # what a client on the device or beside it trusts: the workspace CA (the file is in the folder), and where
    # it calls; the engineer wiring an application to the agent had to find tls/ca.crt by looking
    doc = {"device": name, "address": address, "enroll_dir": str(out), "cert_fingerprint": fingerprint,
           "token": token, "listen": settings["listen"], "ca": str(out / "tls" / "ca.crt"),
           "rest": rest_url(address, http_port), "inference_auth": settings.get("inference_auth", "open"),
           "start": f"cdl-edge serve --data-dir {shlex.quote(str(out))}"}
    made = [what for what, new in (("bundle-signing key", new_key), ("CA", new_ca)) if new]
    if made and others:  # what they trust was gone: this was made for the workspace
        doc["warning"] = (f"the workspace's {' and '.join(made)} {'was' if len(made) == 1 else 'were'} gone, and "
                          f"made anew: {', '.join(others)} trust(s) the old one(s) and will refuse this workspace "
                          "until enrolled again with --replace")
    return doc


def device_folder(ws: Workspace, device: Device) -> Path:
    """The folder a device was enrolled into: recorded relative to the workspace when it is inside it (an
    absolute path, as older workspaces recorded every folder, is taken as it is)."""
    p = Path(device.enroll_dir)
    return (p if p.is_absolute() else ws.root / p).resolve()


class DeviceClient:
    """TLS (the workspace CA) and the device token on every call."""

    def __init__(self, ws: Workspace, device: str | Device, timeout: float = 30.0):
        """device: an enrolled device's name, or a Device record of an agent not enrolled (`cdl serve`'s)."""
        from runtime.pki import ca

        self.ws = ws
        self.device = device if isinstance(device, Device) else ws.store.device(device)
        self.timeout = timeout
        _, ca_pem = ca(ws.root, [d.name for d in ws.store.devices()])
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        self.channel = grpc.secure_channel(self.device.address, creds,
                                           options=[("grpc.max_send_message_length", 64 << 20),
                                                    ("grpc.max_receive_message_length", 64 << 20)])
        self.stub = epb_grpc.EdgeControlStub(self.channel)
        self.metadata = (("authorization", f"Bearer {self.device.token}"),)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable, request: Any, what: str, timeout: float | None = None) -> Any:  # noqa: ANN401
        try:
            return fn(request, metadata=self.metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise _error(self.ws, self.device, what, exc) from None

    def health(self) -> dict[str, Any]:
        r = self._call(self.stub.Health, epb.HealthRequest(), "health")
        a = r.active
        doc = {"device": self.device.name, "address": self.device.address, "agent_version": r.agent_version,
               "active": {"bundle_id": a.bundle_id, "name": a.name, "version": a.version, "variant": a.variant,
                          "previous_bundle_id": a.previous_bundle_id} if a.bundle_id else None,
               "uptime_s": r.uptime_s, "requests": r.requests, "errors": r.errors, "free_disk_bytes": r.free_disk_bytes,
               "workers": r.workers or 1, "batches": r.batches,
               "items_per_batch": round(r.batched_items / r.batches, 2) if r.batches else None,
               "journal": {"id": r.journal_id, "last_seq": r.journal_last_seq, "acked_seq": r.journal_acked_seq,
                           "records": r.journal_records}, "providers": list(r.providers),
               # where an answered request's time went on the device, on average (ms); None before any
               "request_ms": {k: round(getattr(r, f) / r.timed_requests / 1000, 3) for k, f in (
                   ("queue", "queue_us"), ("preprocessing", "input_us"), ("onnxruntime", "infer_us"),
                   ("journal", "output_us"))} if r.timed_requests else None,
               "rest": rest_url(self.device.address, r.rest_port)}
        doc["warnings"] = health_warnings(self.device.name, doc)
        from runtime.store.tables import utcnow

        self.ws.store.update_device(self.device.name, last_seen=utcnow(), last_health=doc)
        _record_unpushed(self.ws, self.device.name, doc["active"])
        return doc

    def list_models(self) -> list[dict[str, Any]]:
        r = self._call(self.stub.ListModels, epb.ListModelsRequest(), "list models")
        return [{"bundle_id": m.bundle_id, "name": m.name, "version": m.version, "variant": m.variant,
                 "active": m.active, "size": m.size} for m in r.models]

    def push(self, bundle: Path, activate: bool, log: Callable[[str], None] = lambda m: None,
             max_chunks: int | None = None, chunk_size: int = CHUNK) -> dict[str, Any]:
        """Push a bundle in chunks, resuming an interrupted upload of the same bundle where it stopped."""
        import hashlib

        data = Path(bundle).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if activate:  # the bundle it serves already (a bundle's id is its sha256): nothing to send or switch
            a = self._call(self.stub.Health, epb.HealthRequest(), "health").active
            if a.bundle_id == sha:
                return {"bundle_id": sha, "name": a.name, "version": a.version, "variant": a.variant,
                        "activated": True, "unchanged": True, "bytes": 0}
        upload_id = sha
        offset = self._call(self.stub.GetUpload, epb.GetUploadRequest(upload_id=upload_id), "upload status").offset
        if offset > len(data):
            offset = 0
        if offset:
            log(f"{self.device.name}: resuming the upload at byte {offset} of {len(data)}")

        def chunks() -> Iterator[epb.BundleChunk]:
            pos, n = offset, 0
            first = True
            while first or pos < len(data):
                piece = data[pos : pos + chunk_size]
                yield epb.BundleChunk(upload_id=upload_id, offset=pos, total_size=len(data), sha256=sha, data=piece,
                                      activate=activate) if first else epb.BundleChunk(data=piece)
                first = False
                pos += len(piece)
                n += 1
                if max_chunks is not None and n >= max_chunks:
                    return

        try:
            r = self.stub.PushBundle(chunks(), metadata=self.metadata, timeout=max(self.timeout, 300))
        except grpc.RpcError as exc:
            raise _error(self.ws, self.device, "push", exc) from None
        return {"bundle_id": r.bundle_id, "name": r.name, "version": r.version, "variant": r.variant,
                "activated": r.activated, "unchanged": False, "bytes": len(data)}

    def activate(self, bundle_id: str) -> dict[str, Any]:
        r = self._call(self.stub.Activate, epb.ActivateRequest(bundle_id=bundle_id), "activate")
        return {"bundle_id": r.bundle_id, "name": r.name, "version": r.version, "variant": r.variant,
                "previous_bundle_id": r.previous_bundle_id}

    def rollback(self) -> dict[str, Any]:
        r = self._call(self.stub.Rollback, epb.RollbackRequest(), "rollback")
        return {"bundle_id": r.bundle_id, "name": r.name, "version": r.version, "variant": r.variant,
                "previous_bundle_id": r.previous_bundle_id}

    def stream_scoring(self, from_seq: int, max_records: int = 0, follow: bool = False,
                       journal_id: str = "") -> Iterator[epb.ScoringRecord]:
        """journal_id: the journal `from_seq` counts in (Health's); the device refuses if it has another now."""
        try:
            yield from self.stub.StreamScoring(epb.StreamScoringRequest(from_seq=from_seq, follow=follow,
                                                                        max_records=max_records, journal_id=journal_id),
                                               metadata=self.metadata, timeout=None if follow else 600)
        except grpc.RpcError as exc:
            raise _error(self.ws, self.device, "scoring stream", exc) from None

    def ack(self, up_to_seq: int, journal_id: str = "") -> dict[str, int]:
        r = self._call(self.stub.AckScoring, epb.AckScoringRequest(up_to_seq=up_to_seq, journal_id=journal_id), "ack")
        return {"acked_seq": r.acked_seq, "pruned": r.pruned}


def _start_hint(device: Device) -> str:
    """How to start the device's agent: on this machine, with the folder enroll made (it said `--data-dir DIR` of a
    device whose folder it knew); elsewhere, with that folder's copy on the device."""
    host = device.address.rsplit(":", 1)[0].strip("[]").lower()
    folder = Path(device.enroll_dir) if device.enroll_dir else None
    if folder is not None and host in ("127.0.0.1", "localhost", "::1") and (folder / "agent.json").exists():
        return f"with `cdl-edge serve --data-dir {folder}`"
    made = f" (the copy of {folder}, the folder enroll made)" if folder is not None else " (the folder enroll made)"
    return f"on the device with `cdl-edge serve --data-dir DIR`{made}"


def _error(ws: Workspace, device: Device, what: str, exc: grpc.RpcError) -> DeviceError:
    code = exc.code()
    detail = exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        low = detail.lower()
        if "connection refused" in low:  # the machine answers, but nothing listens on the port: the agent is down
            detail = (f"nothing listens at {device.address} (connection refused): is its agent running? Start it "
                      f"{_start_hint(device)} or its systemd unit ({detail})")
        elif any(w in low for w in ("dns resolution failed", "errors resolving", "name or service not known",
                                    "domain name not found")):
            detail = f"the name in {device.address} does not resolve ({detail})"
        elif "ssl" in low or "handshake" in low or "certificate" in low:
            detail = f"cannot reach it over TLS ({detail})"
        else:  # a timeout, no route to the host, a firewall that drops
            detail = f"cannot reach it at {device.address} ({detail})"
        cert = cert_status(ws, device)
        if cert and cert["expired"]:
            detail += (f"; its TLS certificate expired on {cert['expires'][:10]}: enroll it again (`cdl devices enroll "
                       f"{device.name} --address {device.address} --replace`) and copy the new folder to the device")
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        detail = f"the device refused the token ({detail})"
    elif "not signed by the enrolled workspace key" in detail:  # the device trusts another key than ours now
        detail += (f": the device trusts the key this workspace had when it was enrolled, and the workspace signs "
                   f"with another now (was .cdl/keys/ replaced or restored from elsewhere?): enroll it again (`cdl "
                   f"devices enroll {device.name} --address {device.address} --replace`) and copy the new folder to "
                   "the device")
    return DeviceError(f"device {device.name}: {what} failed: {code.name}: {detail}", code.name, detail)


LOW_DISK_BYTES = 1 << 30  # below this a device's free disk is a warning
BACKLOG_RECORDS = 100_000  # scoring records on a device not yet collected
ERROR_SHARE = 0.05  # failed requests, over at least 100


def health_warnings(name: str, h: dict[str, Any]) -> list[str]:
    """What in a device's health needs the engineer before it stops the device: low disk (the agent answers
    nothing it cannot journal), scoring records piling up uncollected, failing requests."""
    out = []
    free = h.get("free_disk_bytes")
    if free is not None and free < LOW_DISK_BYTES:
        out.append(f"{free / 2**20:.0f} MiB of disk free: the agent stops answering when its journal cannot be "
                   f"written; collect its scoring data (`cdl devices collect {name}`) so that acknowledged records "
                   "can be pruned, or free space on it")
    j = h.get("journal") or {}
    backlog = (j.get("last_seq") or 0) - (j.get("acked_seq") or 0)
    if backlog >= BACKLOG_RECORDS:
        out.append(f"{backlog} scoring records not collected yet: `cdl devices collect {name}` (they are pruned "
                   "only once collected)")
    req, err = h.get("requests") or 0, h.get("errors") or 0
    if req >= 100 and err > ERROR_SHARE * req:
        out.append(f"{err} of {req} requests failed ({err / req:.0%}) since the agent started: its log says why")
    return out


def cert_status(ws: Workspace, device: Device) -> dict[str, Any] | None:
    """{"expires": ISO time, "days_left", "expired", "warn": in its last CERT_WARN_DAYS or expired} of the device's
    TLS certificate, read from the folder it was enrolled into; None where that folder no longer holds it."""
    import datetime as dt

    from edge_agent.proto.agent_json import CERT_WARN_DAYS
    from runtime.pki import certificate_expiry

    until = certificate_expiry(device_folder(ws, device) / "tls" / "server.crt", device.cert_fingerprint)
    if until is None:
        return None
    left = (until - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    return {"expires": until.isoformat(), "days_left": round(left, 1), "expired": left <= 0,
            "warn": left < CERT_WARN_DAYS}


def deploy(ws: Workspace, ref: str, variant: str, device: str, activate: bool = True,
           log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    from runtime.bundles import bundle_path

    mv = ws.store.resolve_model(ref)
    path = bundle_path(ws, mv.ref, variant)
    try:
        with DeviceClient(ws, device) as client:
            res = client.push(path, activate, log)
            ws.store.add_deployment(device=device, action="deploy", name=mv.name, version=mv.version,
                                    variant=variant, bundle=res["bundle_id"], status="done",
                                    message=ALREADY_ACTIVE if res["unchanged"] else
                                    "activated" if res["activated"] else STORED_ONLY)
            _refresh(client)  # after the history says so: the health check finds what it expects
    except CdlError as exc:
        ws.store.add_deployment(device=device, action="deploy", name=mv.name, version=mv.version, variant=variant,
                                status="failed", message=str(exc))
        raise
    said = "active already: nothing sent" if res["unchanged"] else "active" if res["activated"] else "stored"
    log(f"{device}: {mv.ref}:{variant} {said} (bundle {res['bundle_id'][:12]})")
    return res


def deploy_each(ws: Workspace, ref: str, variant: str | dict[str, str], devices: list[str], activate: bool = True,
                log: Callable[[str], None] = lambda m: None) -> list[str]:
    """Deploy to each device in turn (`variant`: one for all, or one per device); one that fails does not stop the
    others. Returns what failed, one line each (each is in the deployment history too)."""
    errors = []
    for d in devices:
        try:
            deploy(ws, ref, variant[d] if isinstance(variant, dict) else variant, d, activate, log=log)
        except CdlError as exc:
            errors.append(str(exc))
    return errors


SERVED = "served"  # deploy.push's variant: the one each device serves now, where it was built


def served_variant(ws: Workspace, device: str) -> str | None:
    """The variant `device` serves now; what it said last time when it cannot be reached."""
    try:
        with DeviceClient(ws, device, timeout=5.0) as client:
            return (client.health().get("active") or {}).get("variant")
    except CdlError:  # unreachable now, or not enrolled (the push will say which)
        try:
            return ((ws.store.device(device).last_health or {}).get("active") or {}).get("variant")
        except NotFoundError:
            return None


def variant_for(ws: Workspace, device: str, mv: Any, configured: str) -> tuple[str, str]:  # noqa: ANN401
    """The variant of model version `mv` to push to `device`: the one the device serves now, if it was built for
    `mv`, else `configured` (fp32 where that is "served"); and a note when they differ."""
    fallback = "fp32" if configured == SERVED else configured
    serving = served_variant(ws, device)
    if not serving or serving == fallback:
        return fallback, ""
    built = {v.variant for v in ws.store.variants(mv.name, mv.version) if v.status == "ok"}
    if serving in built:
        return serving, ""
    return fallback, (f"{device} served {serving}, which the deployment pipeline did not build for "
                      f"{mv.ref} (built: {', '.join(sorted(built)) or 'none'})")


def check_canary(n_devices: int, canary: int) -> None:
    """A staged rollout needs canaries and devices to follow them."""
    if n_devices < 2:
        raise CdlError("--canary needs two devices or more: the canaries, watched first, and the rest")
    if not 1 <= canary < n_devices:
        raise CdlError(f"--canary {canary}: give a number of devices from 1 to {n_devices - 1} (of the {n_devices} "
                       "named); the rest follow once the canaries did well")


def drift_settings(ws: Workspace) -> dict[str, Any]:
    """deploy.monitor's test settings in cdl.yaml (what a canary's drift check uses)."""
    from runtime.steps import get_step

    cfg = ws.config()
    params = cfg.params("deploy.monitor") if "deploy.monitor" in cfg.steps else \
        {p.name: p.default for p in get_step("deploy.monitor").spec.params}
    return {k: params[k] for k in ("alpha", "bonferroni", "psi_threshold", "min_records")}


def staged_deploy(ws: Workspace, ref: str, variant: str | dict[str, str], devices: list[str], canary: int,
                  watch_s: float,
                  max_error_rate: float = 0.05, min_requests: int = 0, log: Callable[[str], None] = lambda m: None,
                  sleep: Callable[[float], None] = time.sleep, drift: dict[str, Any] | None = None) -> dict[str, Any]:
    """A staged rollout, as fleets roll out firmware: the first `canary` devices get the model, their health is
    watched for `watch_s` seconds, and only if each answered at least `min_requests` requests with at most
    `max_error_rate` of them failing do the other devices get it. Otherwise the canaries roll back to what they
    served, the rest are not touched, and CdlError says why. With `drift` (deploy.monitor's test settings,
    drift_settings), the predictions each canary made while watched are collected and checked against the new
    bundle's reference as deploy.monitor checks them: drift rolls the canaries back too; too few predictions to
    test is said, and is no verdict against it."""
    check_canary(len(devices), canary)
    first, rest = devices[:canary], devices[canary:]
    before = {}
    for d in first:  # a canary that cannot be asked is no canary: nothing is pushed
        with DeviceClient(ws, d) as c:
            before[d] = c.health()
    if drift is not None:  # what was collected before the push is not the canary's: its records come after
        collect(ws, first)
        with scoring_store(ws).connect() as con:
            last_seq = {d: con.execute("SELECT COALESCE(MAX(seq), -1) FROM scoring WHERE device = ?",
                                       [d]).fetchall()[0][0] for d in first}
    bundles = {}
    for d in first:
        bundles[d] = deploy(ws, ref, variant[d] if isinstance(variant, dict) else variant, d, log=log)["bundle_id"]
    log(f"canary {', '.join(first)}: watching for {watch_s:g} s (at most {max_error_rate:.0%} errors"
        + (f", at least {min_requests} requests" if min_requests else "") + ")")
    waited = 0.0
    try:
        while waited < watch_s:
            step = min(10.0, watch_s - waited)
            sleep(step)
            waited += step
            if waited < watch_s:
                log(f"canary: {waited:.0f} of {watch_s:g} s")
    except BaseException:  # Ctrl-C or a cancelled run: a canary nobody watched to the end goes back
        _roll_back(ws, first, log, " (the watch was interrupted)")
        raise
    verdicts, failed = {}, []
    for d in first:
        try:
            with DeviceClient(ws, d) as c:
                h = c.health()
        except CdlError as exc:
            verdicts[d], failed = {"error": str(exc)}, [*failed, f"{d} stopped answering ({exc})"]
            continue
        n = h["requests"] - before[d]["requests"]
        e = h["errors"] - before[d]["errors"]
        if n < 0 or h["uptime_s"] < watch_s:  # the agent restarted: its counters began again
            n, e = h["requests"], h["errors"]
        verdicts[d] = {"requests": n, "errors": e}
        if n < min_requests:
            failed.append(f"{d} answered {n} request(s) in {watch_s:g} s, fewer than {min_requests}: not enough to judge")
        elif n and e / n > max_error_rate:
            failed.append(f"{d}: {e} of {n} requests failed ({e / n:.0%}, more than {max_error_rate:.0%})")
    if drift is not None and not failed:
        failed += _canary_drift(ws, first, bundles, last_seq, drift, verdicts, log)
    if failed:
        _roll_back(ws, first, log)
        raise CdlError(f"canary failed, rolled back; {', '.join(rest)} not touched: " + "; ".join(failed))
    idle = [d for d, v in verdicts.items() if not v["requests"]]
    log("canary: " + "; ".join(f"{d} {v['requests']} requests, {v['errors']} errors" for d, v in verdicts.items())
        + (f"; {', '.join(idle)} answered no request while watched, so nothing was judged there (--min-requests, "
           "deploy.push's min_requests, makes that a failure)" if idle else "")
        + f"; now {', '.join(rest)}")
    errors = deploy_each(ws, ref, variant, rest, log=log)
    if errors:
        raise CdlError("the canary did well, but " + "; ".join(errors))
    return {"canary": verdicts, "deployed": devices}


def _roll_back(ws: Workspace, devices: list[str], log: Callable[[str], None], why: str = "") -> None:
    """Roll each canary back; one that cannot be is said, and the others still are."""
    for d in devices:
        try:
            rollback(ws, d)
            log(f"{d}: rolled back{why}")
        except CdlError as exc:
            log(f"{d}: rollback failed: {exc}")


def _canary_drift(ws: Workspace, first: list[str], bundles: dict[str, str], last_seq: dict[str, int],
                  drift: dict[str, Any], verdicts: dict[str, dict[str, Any]], log: Callable[[str], None]) -> list[str]:
    """The drift check of each canary's predictions since it got the new bundle (its records after `last_seq`);
    what failed, a line each."""
    from runtime.monitor import bundle_manifest, check

    collect(ws, first, log=log)
    failed = []
    with scoring_store(ws).connect() as con:
        for d in first:
            c = check(con, d, bundles[d], bundle_manifest(ws, bundles[d]), by="after", size=last_seq[d], **drift)
            verdicts[d]["drift"] = c["drifted"] if c["tests"] else None
            if c["drifted"]:
                tests = ", ".join(f"{t['name']} {t['statistic']:.3g}" for t in c["tests"] if t["drifted"])
                failed.append(f"{d}: its {c['window']['n']} predictions while watched drifted from the model's "
                              f"reference ({tests})")
            elif not c["tests"]:
                log(f"{d}: no drift verdict: {c['note']}")
            else:
                log(f"{d}: no drift in its {c['window']['n']} predictions while watched")
    return failed


def client_hint(doc: dict[str, Any]) -> str:
    """How a client calls an enrolled device (`enroll`'s result): the CA it trusts, where, and the token where
    inference_auth is "token". An engineer wiring an application to the agent had to find tls/ca.crt by looking,
    and the token was nowhere to be had."""
    ca = shlex.quote(doc["ca"])
    token = doc["inference_auth"] == "token"
    bearer = f'-H "Authorization: Bearer $(cdl devices token {doc["device"]})" ' if token else ""
    return (f"clients call it over TLS, trusting the workspace CA in {ca}: gRPC at {doc['address']}"
            + (f", REST at {doc['rest']} (`curl --cacert {ca} {bearer}{doc['rest']}/health/ready`)"
               if doc["rest"] else "")
            + (f"; every call sends the device token (`cdl devices token {doc['device']}` prints it) as "
               "`authorization: Bearer TOKEN`" if token else ""))


def rest_url(address: str, port: int) -> str | None:
    """The device's REST binding as a client reaches it: the host it is enrolled at, the port its agent reports."""
    if not port:
        return None
    host = address.rpartition(":")[0]
    return f"https://{host}:{port}/v2"


def uptime_text(seconds: float) -> str:
    """"42 s", "47 min", "5 h 12 min", "3 days 4 h": how long an agent has run (it said "up 187342s")."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    days = s // 86400
    return f"{days} day{'s' if days != 1 else ''} {s % 86400 // 3600} h"


def status_line(doc: dict[str, Any]) -> str:
    """One line for a device that answered (its health document): `cdl devices status`, the devices panel's Health."""
    a = doc["active"]
    line = (f"{doc['device']}: {'active ' + a['name'] + ':' + a['version'] + ':' + a['variant'] if a else 'no model'}; "
            f"up {uptime_text(doc['uptime_s'])}, {doc['requests']} requests, {doc['errors']} errors, "
            f"{doc['free_disk_bytes'] / 2**30:.1f} GiB free, journal at seq {doc['journal']['last_seq']} "
            f"(acked {doc['journal']['acked_seq']}), ")
    if doc["providers"]:  # no model loaded: no onnxruntime session, so no providers to name
        line += f"providers {', '.join(doc['providers'])}, "
    line += f"{doc['workers']} worker{'s' if doc['workers'] != 1 else ''}"
    line += f", {doc['items_per_batch']} items a batch" if doc["items_per_batch"] else ""
    if doc.get("rest"):
        line += f"; REST {doc['rest']}"
    if doc.get("request_ms"):  # an older agent sends none
        line += "; a request: " + ", ".join(f"{k} {v:g} ms" for k, v in doc["request_ms"].items())
    return line


def probe_devices(ws: Workspace, timeout: float = 2.0, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Ask every enrolled device (or those named) for its health at once (a thread each, `timeout` seconds at
    most): {name: {"health": the doc or None, "error": why it did not answer or None}}. A device that answers has
    its record (last seen, active model, counters) brought up to date."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> tuple[str, dict[str, Any]]:
        try:
            with DeviceClient(ws, name, timeout=timeout) as client:
                return name, {"health": client.health(), "error": None}
        except CdlError as exc:
            return name, {"health": None, "error": str(exc)}

    names = [ws.store.device(n).name for n in names] if names else [d.name for d in ws.store.devices()]
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names)), thread_name_prefix="probe") as pool:
        return dict(pool.map(one, names))


STORED_ONLY = "stored, not activated"
ALREADY_ACTIVE = "active already: nothing sent, nothing changed"  # pushed again: the history said "activated" again


def _record_unpushed(ws: Workspace, device: str, active: dict[str, Any] | None) -> None:
    """A model active on the device that no push or rollback from here made so (`cdl-edge install` or `cdl-edge
    rollback` on the device, a bundle another workspace pushed) gets a "sideload" entry in the deployment history
    the first time a health check sees it: the history said the device served what was pushed last."""
    if not active or not active.get("bundle_id"):
        return
    expected = None
    for d in reversed(ws.store.deployments(device)):
        if d.status == "done" and d.bundle and not (d.action == "deploy" and d.message == STORED_ONLY):
            expected = d.bundle
            break
    if expected == active["bundle_id"]:
        return
    version = str(active.get("version") or "")
    ws.store.add_deployment(device=device, action="sideload", name=active.get("name") or None,
                            version=int(version) if version.isdigit() else None, variant=active.get("variant") or None,
                            bundle=active["bundle_id"], status="done",
                            message="found active at a health check, not pushed from this workspace (installed on "
                                    "the device with `cdl-edge install`, rolled back there with `cdl-edge "
                                    "rollback`, or pushed by another workspace)")


def _refresh(client: DeviceClient) -> None:
    """After a push or a rollback, the device's record (its active model, when it was last seen) says what it
    serves now; `cdl devices list` read the last health check's, from before the change."""
    try:
        client.health()
    except CdlError:  # the change itself went through; the next health check records it
        pass


def rollback(ws: Workspace, device: str) -> dict[str, Any]:
    ws.store.device(device)  # an unknown name is an input error, not a failed rollback in the device's history
    try:
        with DeviceClient(ws, device) as client:
            res = client.rollback()
            ws.store.add_deployment(device=device, action="rollback", name=res["name"],
                                    version=int(res["version"] or 0) or None, variant=res["variant"],
                                    bundle=res["bundle_id"], status="done",
                                    message=f"back to {res['name']}:{res['version']}:{res['variant']}")
            _refresh(client)
    except DeviceError as exc:
        if exc.code != "FAILED_PRECONDITION":
            ws.store.add_deployment(device=device, action="rollback", status="failed", message=str(exc))
            raise
        # the device said no (nothing to roll back to, a previous model that does not load) and changed nothing:
        # "refused" in the history, where it read "failed" beside rollbacks that broke halfway
        msg = f"device {device} refused the rollback: {exc.detail}; nothing changed there"
        ws.store.add_deployment(device=device, action="rollback", status="refused", message=msg)
        raise DeviceError(msg, exc.code, exc.detail) from None
    except CdlError as exc:
        ws.store.add_deployment(device=device, action="rollback", status="failed", message=str(exc))
        raise
    return res


def scoring_store(ws: Workspace):  # noqa: ANN201
    from runtime.scoring import ScoringStore

    return ScoringStore(ws.root / ".cdl" / "scoring.duckdb")


def collect(ws: Workspace, devices: list[str] | None = None, batch: int = 2000,
            log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Pull scoring records from every device into DuckDB; commit, then acknowledge to the device.

    A device whose journal was replaced (its sequence numbers started again: runtime.scoring.journal_position)
    has the new journal's records filed after the old ones; they used to be skipped until the new sequence
    numbers passed the old."""
    store = scoring_store(ws)
    names = devices or [d.name for d in ws.store.devices()]
    out: dict[str, Any] = {}
    for name in names:
        inserted = 0
        try:
            with DeviceClient(ws, name) as client:
                j = client.health()["journal"]
                pos = store.journal_position(name, j["id"], j["last_seq"])
                offset, last = pos["offset"], pos["from_seq"]
                if pos["new"] and offset:
                    log(f"{name}: its scoring journal is a new one ({j['id'][:12]}: the file was lost or replaced, "
                        f"and its sequence numbers started again); its records are filed after seq {offset}")
                rows: list[dict[str, Any]] = []
                for r in client.stream_scoring(last, journal_id=j["id"]):
                    rows.append({"device": name, "seq": r.seq + offset, "time": r.time, "bundle_id": r.bundle_id,
                                 "model": r.model, "version": r.version, "variant": r.variant, "label": r.label,
                                 "confidence": r.confidence, "probabilities": r.probabilities_json,
                                 "latency_ms": r.latency_ms, "input_summary": r.input_summary_json,
                                 "raw_input": r.raw_input or None, "raw_kind": r.raw_kind})
                    if len(rows) >= batch:
                        inserted += store.insert(rows)
                        client.ack(rows[-1]["seq"] - offset, journal_id=j["id"])
                        rows = []
                if rows:
                    inserted += store.insert(rows)
                    client.ack(rows[-1]["seq"] - offset, journal_id=j["id"])
                if inserted:
                    # the device's record says what is acknowledged now: its health from before the stream said
                    # "seq 300 (acked 0)" in the devices panel after all 300 were collected (and a large batch
                    # read as a backlog "not collected yet")
                    _refresh(client)
        except CdlError as exc:
            out[name] = {"error": str(exc), "inserted": inserted}
            log(f"{name}: {exc}")
            continue
        out[name] = {"inserted": inserted, "last_seq": store.last_seq(name)}
        log(f"{name}: {inserted} new scoring record(s), up to seq {out[name]['last_seq']}")
    return out


def devices_json(ws: Workspace) -> dict[str, Any]:
    return {"devices": [{"name": d.name, "address": d.address, "enroll_dir": str(device_folder(ws, d)),
                         "cert_fingerprint": d.cert_fingerprint, "cert": cert_status(ws, d), "created": d.created.isoformat(),
                         "last_seen": d.last_seen.isoformat() if d.last_seen else None,
                         "active": (d.last_health or {}).get("active")} for d in ws.store.devices()]}


def history_json(ws: Workspace, device: str | None = None) -> dict[str, Any]:
    rows = ws.store.deployments(device)
    if device and not rows:
        ws.store.device(device)  # a name that is neither enrolled nor in the history (a removed device has one)
    return {"deployments": [{"id": d.id, "device": d.device, "action": d.action, "model": d.name,
                             "version": d.version, "variant": d.variant, "ref": _ref(d), "bundle": d.bundle,
                             "status": d.status, "message": d.message, "time": d.time.isoformat()}
                            for d in rows]}


def _ref(d) -> str:  # noqa: ANN001
    """NAME:VERSION:VARIANT of a deployment, or "-" for one that never got as far as a model (a rollback with
    nothing to roll back to)."""
    return f"{d.name}:{d.version}:{d.variant}" if d.name else "-"


def remove(ws: Workspace, name: str) -> dict[str, Any]:
    """Unenroll a device: the workspace forgets its token and certificate, so nothing is pushed to it, collected
    from it or checked for it any more (`deploy.push` to all devices, `cdl devices status` and `deploy.monitor` no
    longer trip over a device that is gone). Its deployment history and its scoring data stay. Its folder goes
    when it is the default one under .cdl/devices (it holds the device's private key); a folder given with --out is
    left where it is. The agent on the device is not told: it serves its model until someone stops it."""
    dev = ws.store.device(name)
    default = (ws.root / ".cdl" / "devices" / name).resolve()
    folder = device_folder(ws, dev)
    removed_folder = folder == default and folder.exists()
    msg = "removed from this workspace" + (f"; its folder {folder} deleted" if removed_folder else
                                           f"; its folder {folder} left in place" if folder.exists() else "")
    ws.store.remove_device(name, message=msg)  # the device and its history's "remove" row, in one transaction
    if removed_folder:
        remove_enrollment_dir(folder)
    try:
        listed = list(ws.config().params("deploy.push").get("devices") or [])
    except CdlError:  # a cdl.yaml that does not load, or a pipeline without deploy.push
        listed = []
    rest = [d for d in listed if d != name]
    if name in listed and rest:
        # `cdl run` refuses a device that is not enrolled: with others named, the list without it is what the user
        # meant (it stayed, and the next run refused to push to any)
        from runtime.params import set_step_params

        try:
            set_step_params(ws, "deploy.push", {"devices": rest})
            msg += f"; taken out of cdl.yaml's deploy.push.devices, which names {', '.join(rest)} now"
        except CdlError as exc:
            msg += f"; cdl.yaml's deploy.push.devices still names it ({exc})"
    elif name in listed:  # its only device: taking it out would leave [], every enrolled device
        msg += ("; cdl.yaml's deploy.push.devices still names it, and `cdl run` refuses to push until it is taken "
                "out there (the Deploy step's Parameters…)")
    return {"device": name, "address": dev.address, "enroll_dir": str(folder), "folder_deleted": removed_folder,
            "message": msg}


def remove_enrollment_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def wait_ready(ws: Workspace, device: str, timeout: float = 30.0) -> dict[str, Any]:
    """Health until the agent answers (for scripts that just started one)."""
    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        try:
            with DeviceClient(ws, device, timeout=5) as c:
                return c.health()
        except CdlError as exc:
            last = exc
            time.sleep(0.2)
    raise DeviceError(f"device {device} did not answer within {timeout:.0f}s: {last}")


__all__ = ["DeviceClient", "DeviceError", "NotFoundError", "collect", "deploy", "devices_json", "enroll",
           "history_json", "rollback", "wait_ready"]
