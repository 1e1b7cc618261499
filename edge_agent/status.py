"""`cdl-edge status --data-dir DIR [--json]`: what the agent folder holds, read on the device itself.

An engineer logged in on a device had only the workstation's view (`cdl devices status`, which needs the device to
answer over the network): whether an agent serves the folder, which model is active and which one a rollback would
go back to, the bundles stored, the journal's records not collected yet, free disk and the certificate's expiry.
This reads the folder and changes nothing: no lock is taken that a starting agent could trip over (the agent's
lock is only tested where the process that last held it is alive), and the journal is opened read-only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.slots import Slots


def agent_running(data_dir: Path) -> tuple[bool, str]:
    """(whether an agent serves the folder, what its lock file says: "pid 2081, listening on 127.0.0.1:8001")."""
    lock = Path(data_dir) / "run" / "agent.lock"
    try:
        said = lock.read_text().strip()
    except OSError:
        return False, ""
    pid = said.split(",")[0].removeprefix("pid ").strip()
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False, said  # its process is gone: no need to touch the lock
    except PermissionError:
        pass  # alive, another user's (the agent's service user)
    try:
        with open(lock) as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True, said
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return True, said  # cannot open it to test: the live pid is the best word there is
    return False, said


def _journal(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    try:
        last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'scoring'").fetchone()
        acked = conn.execute("SELECT value FROM meta WHERE key = 'acked_seq'").fetchone()
        jid = conn.execute("SELECT value FROM meta WHERE key = 'journal_id'").fetchone()
        kept = conn.execute("SELECT COUNT(*) FROM scoring").fetchone()[0]
    except sqlite3.Error as exc:
        return {"error": f"{path}: {exc}"}
    finally:
        conn.close()
    last_seq, acked_seq = int(last[0]) if last else 0, int(acked[0]) if acked else 0
    return {"last_seq": last_seq, "acked_seq": acked_seq, "waiting": max(0, last_seq - acked_seq),
            "records_kept": int(kept), "journal_id": jid[0] if jid else None}


def local_status(data_dir: Path) -> dict[str, Any]:
    """The folder's state as a document (`cdl-edge status --json`). ConfigError where it is no agent's folder."""
    cfg = AgentConfig.load(data_dir)
    running, holder = agent_running(cfg.data_dir)
    # nothing tidied (a running agent's worker 0 does that) and no folder made (run as root before the agent's
    # first start, bundles/ would be root's and the agent could not store a push)
    slots = Slots(cfg.data_dir, cfg.trusted_keys, clean=False, make_dirs=False)
    state = slots.state()
    stored = slots.stored()
    by_id = {b["bundle_id"]: b for b in stored}

    def model(bundle_id: str | None) -> dict[str, Any] | None:
        if not bundle_id:
            return None
        b = by_id.get(bundle_id)
        if b is None:
            return {"bundle_id": bundle_id, "missing": True}
        return {"bundle_id": bundle_id, "name": b["name"], "version": str(b["version"]), "variant": b["variant"]}

    expires = None
    with contextlib.suppress(Exception):  # cryptography reads it; a damaged file is said as unknown
        from cryptography import x509

        expires = x509.load_pem_x509_certificate(cfg.tls_cert.read_bytes()).not_valid_after_utc.timestamp()
    return {
        "device": cfg.device, "data_dir": str(cfg.data_dir), "running": running, "holder": holder,
        "listen": cfg.listen, "http_listen": cfg.http_listen, "metrics_listen": cfg.metrics_listen,
        "workers": cfg.workers, "active": model(state.get("current")), "previous": model(state.get("previous")),
        "activated": state.get("time"), "damaged": state.get("damaged"),
        "stored": [{**b, "version": str(b["version"])} for b in stored],
        "journal": _journal(cfg.data_dir / "journal.db"), "free_bytes": shutil.disk_usage(cfg.data_dir).free,
        "certificate_expires": expires,
    }


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "?"


def _ref(m: dict[str, Any]) -> str:
    if m.get("missing"):
        return f"bundle {m['bundle_id'][:12]} (its files are gone from bundles/)"
    return f"{m['name']}:{m['version']}:{m['variant']} (bundle {m['bundle_id'][:12]})"


def status_lines(doc: dict[str, Any]) -> list[str]:
    """The text `cdl-edge status` prints: a line a subject."""
    if doc["running"]:
        agent = f"agent running ({doc['holder']})"
    else:
        where = doc["listen"] or "0.0.0.0:8001"
        agent = f"no agent serves this folder (`cdl-edge serve --data-dir {doc['data_dir']}` listens on {where})"
    out = [f"{doc['device']}: {agent}"]
    if doc.get("damaged"):
        out.append(f"active       active.json cannot be read ({doc['damaged']}): nothing is served until a push "
                   "or `cdl-edge install` writes it again")
    elif doc["active"]:
        out.append(f"active       {_ref(doc['active'])}, since {_when(doc['activated'])}")
    else:
        out.append("active       none: push a model from the workstation (`cdl deploy NAME:VERSION --device "
                   f"{doc['device']}`) or install a bundle file (`cdl-edge install FILE --data-dir {doc['data_dir']}`)")
    if doc["previous"]:
        out.append(f"previous     {_ref(doc['previous'])}: a rollback goes back to it")
    elif doc["active"]:
        out.append("previous     none: nothing to roll back to")
    size = sum(b["size"] for b in doc["stored"])
    out.append(f"stored       {len(doc['stored'])} bundle(s), {size / 1024:.0f} KiB"
               + "".join(f"\n             {b['name']}:{b['version']}:{b['variant']}  {b['bundle_id'][:12]}  "
                         f"received {_when(b['received'])}" for b in doc["stored"]))
    j = doc["journal"]
    if j is None:
        out.append("journal      none yet (the agent starts one when it first serves)")
    elif "error" in j:
        out.append(f"journal      cannot be read: {j['error']}")
    else:
        out.append(f"journal      seq {j['last_seq']}, collected up to {j['acked_seq']}"
                   + (f": {j['waiting']} record(s) wait for the workstation (`cdl devices collect`)" if j["waiting"]
                      else ": nothing waits for the workstation")
                   + f"; {j['records_kept']} kept on this device")
    out.append(f"disk         {doc['free_bytes'] / 2**30:.1f} GiB free")
    exp = doc["certificate_expires"]
    if exp is None:
        out.append("certificate  cannot be read")
    else:
        left = (exp - time.time()) / 86400
        day = dt.datetime.fromtimestamp(exp, dt.UTC).date()
        out.append(f"certificate  EXPIRED on {day}: every client refuses this agent; enroll the device again on the "
                   f"workstation (`cdl devices enroll {doc['device']} --address HOST:PORT --replace`) and copy the "
                   "new folder here" if left <= 0 else f"certificate  until {day}"
                   + (f" ({left:.0f} day(s) left)" if left < 30 else ""))
    return out


def readiness(doc: dict[str, Any], timeout: float = 5.0) -> tuple[bool, str]:
    """`cdl-edge status --check`, a container's HEALTHCHECK: (ready, why). Ready where an agent holds the folder
    and answers ServerReady (open under inference_auth token, as Triton's health is) with a model loaded, over TLS
    on the port it listens on, checked against the folder's CA and certificate; a held lock alone would pass an
    agent that hangs."""
    if not doc["running"]:
        return False, f"no agent serves {doc['data_dir']}"
    where = doc["holder"].split("listening on ", 1)[-1].strip() if "listening on " in doc["holder"] else doc["listen"]
    host, _, port = (where or "").rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        return False, f"cannot tell the agent's port from its lock ({doc['holder']!r})"
    import grpc
    from cryptography import x509

    from edge_agent.proto import open_inference_pb2 as ipb

    tls = Path(doc["data_dir"]) / "tls"
    cert = x509.load_pem_x509_certificate((tls / "server.crt").read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        names = []
    options = [("grpc.ssl_target_name_override", names[0])] if names else []
    dial = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # every interface: this machine's own
    creds = grpc.ssl_channel_credentials(root_certificates=(tls / "ca.crt").read_bytes())
    with grpc.secure_channel(f"{dial}:{port}", creds, options=options) as channel:
        try:
            call = channel.unary_unary("/inference.GRPCInferenceService/ServerReady",  # the name stock clients use
                                       request_serializer=ipb.ServerReadyRequest.SerializeToString,
                                       response_deserializer=ipb.ServerReadyResponse.FromString)
            ready = call(ipb.ServerReadyRequest(), timeout=timeout).ready
        except grpc.RpcError as exc:
            return False, f"the agent at {dial}:{port} did not answer: {exc.code().name}: {exc.details()}"
    if not ready:
        return False, f"the agent at {dial}:{port} answers, with no model active"
    active = _ref(doc["active"]) if doc.get("active") else "a model"
    return True, f"the agent at {dial}:{port} serves {active}"
