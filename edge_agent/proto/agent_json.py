"""agent.json's settings and their defaults: the agent reads them (edge_agent.config), and `cdl devices enroll`
writes them (runtime.devices), so both sides take them from here."""

from __future__ import annotations

from typing import Any

CREDENTIALS = ("device", "token_sha256", "trusted_keys", "tls")  # the keys of agent.json that are not settings
DEFAULTS: dict[str, Any] = {
    "inference_auth": "open",
    "raw_input_below_confidence": 0.6,
    "retention_seconds": 86400.0,
    "journal_sync": "normal",
    "max_batch": 64,
    "max_queue_delay_ms": 2.0,
    "workers": 1,
    "keep_bundles": 3,
    "min_free_bytes": 64 << 20,
    "metrics_listen": None,
    "metrics_auth": "open",
    "http_listen": None,
    "listen": None,  # None: edge_agent.proto.address.DEFAULT_LISTEN; enroll writes listen_for(--address)
}
CERT_WARN_DAYS = 30  # the agent's log and `cdl devices list` warn this long before the TLS certificate expires
