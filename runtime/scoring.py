"""Scoring data in DuckDB (`.cdl/scoring.duckdb`): one row per prediction made on a device, keyed by
(device, seq). The collector inserts with that key, so a batch delivered twice is stored once; it asks each
device for records after the highest sequence number already committed here, so a killed collector loses
nothing either. Connections are short-lived: DuckDB lets one process write at a time."""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS scoring (
    device VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    time DOUBLE NOT NULL,
    bundle_id VARCHAR, model VARCHAR, version VARCHAR, variant VARCHAR,
    label VARCHAR, confidence DOUBLE, probabilities VARCHAR, latency_ms DOUBLE,
    input_summary VARCHAR, raw_input BLOB, raw_kind VARCHAR,
    PRIMARY KEY (device, seq)
);
"""
COLUMNS = ("device", "seq", "time", "bundle_id", "model", "version", "variant", "label", "confidence",
           "probabilities", "latency_ms", "input_summary", "raw_input", "raw_kind")


class ScoringStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute(SCHEMA)

    @contextmanager
    def connect(self, read_only: bool = False):  # noqa: ANN201
        import duckdb

        con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
        try:
            yield con
        finally:
            con.close()

    def insert(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert rows in one transaction; rows already stored (same device and seq) are ignored."""
        batch = [tuple(_value(r.get(c)) for c in COLUMNS) for r in rows]
        if not batch:
            return 0
        with self.connect() as con:
            before = con.execute("SELECT COUNT(*) FROM scoring").fetchone()[0]
            con.execute("BEGIN TRANSACTION")
            con.executemany(f"INSERT OR IGNORE INTO scoring ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            batch)
            con.execute("COMMIT")
            after = con.execute("SELECT COUNT(*) FROM scoring").fetchone()[0]
        return int(after - before)

    def insert_arrow(self, table) -> int:  # noqa: ANN001
        """Bulk insert of a pyarrow/pandas-like relation with the same columns (benchmarks, imports)."""
        with self.connect() as con:
            before = con.execute("SELECT COUNT(*) FROM scoring").fetchone()[0]
            con.register("incoming", table)
            con.execute(f"INSERT OR IGNORE INTO scoring SELECT {', '.join(COLUMNS)} FROM incoming")
            after = con.execute("SELECT COUNT(*) FROM scoring").fetchone()[0]
        return int(after - before)

    def last_seq(self, device: str) -> int:
        with self.connect() as con:
            row = con.execute("SELECT MAX(seq) FROM scoring WHERE device = ?", [device]).fetchone()
        return int(row[0] or 0)

    def count(self, device: str | None = None) -> int:
        with self.connect() as con:
            if device:
                return int(con.execute("SELECT COUNT(*) FROM scoring WHERE device = ?", [device]).fetchone()[0])
            return int(con.execute("SELECT COUNT(*) FROM scoring").fetchone()[0])

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.connect() as con:
            return con.execute(sql, params or []).fetchall()


def _value(v: Any) -> Any:
    if isinstance(v, dict | list):
        return json.dumps(v)
    return v
