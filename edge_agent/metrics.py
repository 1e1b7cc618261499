"""Prometheus metrics of the agent, as Triton serves them on :8002: `GET /metrics` on `metrics_listen`
(agent.json) or `cdl-edge serve --metrics HOST:PORT`; off by default.

Plain HTTP, like Triton's: bind it to 127.0.0.1 or a management network; with `metrics_auth: "token"` a scrape
must carry the device token (`Authorization: Bearer TOKEN`, Prometheus' `authorization` scrape setting). Worker 0 serves it and
sums every worker's counters (the memory-mapped file of edge_agent.workers), so one scrape sees the whole agent.
Counters start again from zero when the agent restarts (Prometheus' rate() handles that); the scoring journal's
sequence numbers are durable.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import TYPE_CHECKING

from edge_agent.workers import LATENCY_BUCKETS

if TYPE_CHECKING:
    from edge_agent.server import Agent

log = logging.getLogger("cdl-edge")


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in kv.items()) + "}"


def render(agent: Agent, version: str, cert_expiry: float | None) -> str:
    """The exposition text (format 0.0.4)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for suffix, value in samples:
            v = repr(float(value)) if isinstance(value, float) else str(value)
            out.append(f"{name}{suffix} {v}")

    cfg = agent.config
    n = agent.counters.total()
    metric("cdl_edge_info", "gauge", "The agent: device name, agent version, worker processes.",
           [(_labels(device=cfg.device, version=version, workers=str(agent.workers)), 1)])
    m = agent.model
    metric("cdl_edge_model_info", "gauge", "The active model (absent when none is active).",
           [(_labels(name=m.name, version=m.version, variant=m.variant, bundle=m.bundle_id[:12],
                     providers=",".join(m.providers)), 1)] if m else [])
    metric("cdl_edge_uptime_seconds", "gauge", "Seconds since the agent (worker 0) started.",
           [("", round(time.time() - agent.counters.started, 3))])
    metric("cdl_edge_requests_total", "counter", "ModelInfer requests received.", [("", n["requests"])])
    metric("cdl_edge_request_errors_total", "counter", "ModelInfer requests that failed.", [("", n["errors"])])
    metric("cdl_edge_batches_total", "counter", "Batches run by the dynamic batcher (one onnxruntime call each).",
           [("", n["batches"])])
    metric("cdl_edge_batch_items_total", "counter", "Items in those batches.", [("", n["batched_items"])])
    counts, total_s = agent.counters.latency()
    cumulative, samples = 0, []
    for le, c in zip(LATENCY_BUCKETS, counts, strict=True):
        cumulative += c
        samples.append(("_bucket" + _labels(le="+Inf" if le == float("inf") else repr(le)), cumulative))
    samples += [("_sum", round(total_s, 6)), ("_count", cumulative)]
    metric("cdl_edge_request_duration_seconds", "histogram",
           "ModelInfer time in the agent, from the request to the journaled answer.", samples)
    j = agent.journal
    last, acked = j.last_seq(), j.acked_seq()
    metric("cdl_edge_journal_last_seq", "gauge", "Sequence number of the newest scoring record.", [("", last)])
    metric("cdl_edge_journal_acked_seq", "gauge", "Newest sequence number the workstation acknowledged.",
           [("", acked)])
    metric("cdl_edge_journal_unacked_records", "gauge", "Scoring records not yet collected by the workstation.",
           [("", max(0, last - acked))])
    metric("cdl_edge_free_disk_bytes", "gauge", "Free space where the data folder is.",
           [("", shutil.disk_usage(cfg.data_dir).free)])
    if cert_expiry is not None:
        metric("cdl_edge_certificate_expiry_timestamp_seconds", "gauge",
               "When the agent's TLS certificate expires (Unix time).", [("", int(cert_expiry))])
    return "\n".join(out) + "\n"


def _bearer_ok(head: bytes, token_sha256: str) -> bool:
    import hashlib
    import hmac

    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return hmac.compare_digest(hashlib.sha256(token.strip()).hexdigest(), token_sha256)
    return False


async def serve_metrics(agent: Agent, listen: str, version: str, cert_expiry: float | None,
                        token_sha256: str | None = None) -> tuple[asyncio.Server, int]:
    """An HTTP/1.1 server with one page, /metrics; each connection answers one request and closes.
    token_sha256: the device token's hash, which a request's bearer token must match (None: open)."""
    from edge_agent.proto.address import split_address

    host, port = split_address(listen, "127.0.0.1:8002")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
            elif path.split("?", 1)[0] != "/metrics":
                status, body, ctype = "404 Not Found", b"see /metrics\n", "text/plain"
            elif token_sha256 is not None and not _bearer_ok(head, token_sha256):
                status, body, ctype = "401 Unauthorized", b"send the device token: Authorization: Bearer TOKEN\n", \
                    "text/plain"
            else:
                status = "200 OK"
                body = render(agent, version, cert_expiry).encode()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            challenge = 'WWW-Authenticate: Bearer realm="cdl-edge metrics"\r\n' if status.startswith("401") else ""
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"{challenge}Connection: close\r\n\r\n".encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except Exception:  # noqa: BLE001 - a scrape must never take the agent down
            log.exception("metrics request failed")
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    return server, server.sockets[0].getsockname()[1]
