"""The agent's configuration: `agent.json` in its data folder, written by `cdl devices enroll`.

    {"device": "dev1",
     "token_sha256": "...",                 the device token's hash (the token itself stays with the runtime)
     "trusted_keys": ["-----BEGIN PUBLIC KEY-----..."],   workspace keys bundles must be signed with
     "tls": {"cert": "tls/server.crt", "key": "tls/server.key"},
     "inference_auth": "open" | "token",
     "raw_input_below_confidence": 0.6,     keep the raw input of predictions less confident than this
     "retention_seconds": 86400,            acknowledged scoring records are pruned after this
     "journal_sync": "normal" | "full",     SQLite synchronous mode (normal survives a killed agent)
     "max_batch": 64,                       dynamic batching: requests that arrive together run as one batch
                                            of up to this many items (1: every request runs alone)
     "max_queue_delay_ms": 2.0,             how long a batch may wait to fill up to the last batch's size
     "workers": 1,                          agent processes sharing the port (one core each; edge_agent.workers)
     "keep_bundles": 3,                     bundles kept on the device, the active and the previous one included:
                                            older ones are deleted after an activation or a push
     "min_free_bytes": 67108864,            disk space a push must leave free (the journal needs room): a push
                                            that would not is refused before any byte is written
     "metrics_listen": null,                HOST:PORT of Prometheus metrics (GET /metrics, plain HTTP; off when
                                            null; edge_agent.metrics)
     "metrics_auth": "open" | "token",      token: /metrics wants the device token (Authorization: Bearer)
     "http_listen": null,                   HOST:PORT of the Open Inference Protocol's REST binding (HTTPS with
                                            the agent's certificate; off when null; edge_agent.rest)
     "listen": "0.0.0.0:8001"}              HOST:PORT of the gRPC services, where `cdl-edge serve` has no
                                            --listen: enroll writes the enrolled port (on every interface, or on
                                            the loopback where enrolled there); null: 0.0.0.0:8001
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.proto.agent_json import CREDENTIALS, DEFAULTS


class ConfigError(Exception):
    pass


def check_listen(listen: str) -> tuple[str, int]:
    """--listen, checked before anything starts (edge_agent.proto.address says why)."""
    from edge_agent.proto.address import split_address

    try:
        return split_address(listen, "0.0.0.0:8001 or [::]:8001")
    except ValueError as exc:
        raise ConfigError(f"--listen {listen!r}: {exc}") from None


@dataclass
class AgentConfig:
    data_dir: Path
    device: str
    token_sha256: str
    trusted_keys: list[str]
    tls_cert: Path
    tls_key: Path
    inference_auth: str = DEFAULTS["inference_auth"]
    raw_input_below_confidence: float = DEFAULTS["raw_input_below_confidence"]
    retention_seconds: float = DEFAULTS["retention_seconds"]
    journal_sync: str = DEFAULTS["journal_sync"]
    max_batch: int = DEFAULTS["max_batch"]
    max_queue_delay_ms: float = DEFAULTS["max_queue_delay_ms"]
    workers: int = DEFAULTS["workers"]
    keep_bundles: int = DEFAULTS["keep_bundles"]
    min_free_bytes: int = DEFAULTS["min_free_bytes"]
    metrics_listen: str | None = DEFAULTS["metrics_listen"]
    metrics_auth: str = DEFAULTS["metrics_auth"]
    http_listen: str | None = DEFAULTS["http_listen"]
    listen: str | None = DEFAULTS["listen"]
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> AgentConfig:
        data_dir = Path(data_dir).resolve()
        path = data_dir / "agent.json"
        if not path.exists():
            raise ConfigError(f"{path} not found: enroll the device first (`cdl devices enroll NAME --address "
                              "HOST:PORT --out DIR` on the workstation) and start the agent with --data-dir DIR")
        try:
            doc = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        for key in CREDENTIALS:
            if key not in doc:
                raise ConfigError(f"{path}: missing {key!r}")
        tls = doc["tls"]
        settings = {k: doc.get(k, v) for k, v in DEFAULTS.items()}
        unknown = {k: doc[k] for k in doc if k not in DEFAULTS and k not in CREDENTIALS}
        for k in ("raw_input_below_confidence", "retention_seconds"):
            settings[k] = float(settings[k])
        cfg = cls(
            data_dir=data_dir,
            device=doc["device"],
            token_sha256=doc["token_sha256"],
            trusted_keys=list(doc["trusted_keys"]),
            tls_cert=data_dir / tls["cert"],
            tls_key=data_dir / tls["key"],
            extra=unknown,
            **settings,
        )
        if cfg.inference_auth not in ("open", "token"):
            raise ConfigError(f"{path}: inference_auth must be 'open' or 'token'")
        if cfg.journal_sync not in ("normal", "full"):
            raise ConfigError(f"{path}: journal_sync must be 'normal' or 'full'")
        if not isinstance(cfg.max_batch, int) or isinstance(cfg.max_batch, bool) or cfg.max_batch < 1:
            raise ConfigError(f"{path}: max_batch must be a whole number of at least 1, got {cfg.max_batch!r}")
        if isinstance(cfg.max_queue_delay_ms, bool) or not isinstance(cfg.max_queue_delay_ms, int | float) \
                or not 0 <= cfg.max_queue_delay_ms <= 1000:
            raise ConfigError(f"{path}: max_queue_delay_ms must be a number from 0 to 1000, "
                              f"got {cfg.max_queue_delay_ms!r}")
        if not isinstance(cfg.workers, int) or isinstance(cfg.workers, bool) or not 1 <= cfg.workers <= 64:
            raise ConfigError(f"{path}: workers must be a whole number from 1 to 64, got {cfg.workers!r}")
        if not isinstance(cfg.keep_bundles, int) or isinstance(cfg.keep_bundles, bool) or cfg.keep_bundles < 2:
            raise ConfigError(f"{path}: keep_bundles must be a whole number of at least 2 (the active model and the "
                              f"previous one, for a rollback), got {cfg.keep_bundles!r}")
        if not isinstance(cfg.min_free_bytes, int) or isinstance(cfg.min_free_bytes, bool) or cfg.min_free_bytes < 0:
            raise ConfigError(f"{path}: min_free_bytes must be a whole number of bytes, got {cfg.min_free_bytes!r}")
        if cfg.metrics_auth not in ("open", "token"):
            raise ConfigError(f"{path}: metrics_auth must be 'open' or 'token', got {cfg.metrics_auth!r}")
        for key in ("metrics_listen", "http_listen", "listen"):
            value = getattr(cfg, key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ConfigError(f"{path}: {key} must be HOST:PORT or null, got {value!r}")
            try:
                check_listen(value)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {key}: {str(exc).split(': ', 1)[-1]}") from None
        for f in (cfg.tls_cert, cfg.tls_key):
            if not f.exists():
                raise ConfigError(f"{f} is missing: the agent only serves over TLS")
        import ssl

        try:  # gRPC only says it could not bind, with C++ log lines about a "handshaker factory"
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cfg.tls_cert, cfg.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{cfg.tls_cert} and {cfg.tls_key} are not a certificate and its key ({exc}): enroll "
                              f"the device again (`cdl devices enroll {cfg.device} --address HOST:PORT --replace`) "
                              "and copy the new folder here") from None
        return cfg

    def unknown_settings(self) -> list[str]:
        """What the agent's log says of each key of agent.json that is no setting (a typo, `max_batchsize`, was
        ignored without a word and the default used). Not an error: a newer workstation may write settings this
        agent does not know."""
        import difflib

        out = []
        for key in sorted(self.extra):
            close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
            out.append(f"{self.data_dir / 'agent.json'}: {key!r} is no setting of this agent"
                       + (f" (did you mean {close[0]!r}?)" if close else "") + "; it is ignored")
        return out
