"""Scoring data in DuckDB (`.cdl/scoring.duckdb`): one row per prediction made on a device, keyed by
(device, seq). The collector inserts with that key, so a batch delivered twice is stored once; it asks each
device for records after the highest sequence number already committed here, so a killed collector loses
nothing either. A device's records are numbered by its journal; a journal that replaced a lost one starts
again at 1, and its records are stored above the old ones (`journals`, `journal_position`). Connections are short-lived: DuckDB lets one process open the file at a time, so a process that
finds it held (the studio's monitoring panel reading while a job collects) waits for it, as SQLite's busy
timeout does, up to `busy_timeout` seconds, and then says which file is busy."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtime.domain.errors import CdlError

SCHEMA = """
CREATE TABLE IF NOT EXISTS scoring (
    device VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    time DOUBLE NOT NULL,
    bundle_id VARCHAR, model VARCHAR, version VARCHAR, variant VARCHAR,
    label VARCHAR, confidence DOUBLE, probabilities VARCHAR, latency_ms DOUBLE,
    input_summary VARCHAR, raw_input BLOB, raw_kind VARCHAR,
    -- the input summary's fields, typed, so drift checks over millions of rows stay fast
    length DOUBLE, oov_rate DOUBLE, terms VARCHAR[],
    mean_intensity DOUBLE, std_intensity DOUBLE, intensity_hist DOUBLE[],
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS journals (
    -- each scoring journal a device has had: its records are stored at seq + seq_offset, so a journal that
    -- starts again at 1 (a lost or replaced file) is filed after the one before it
    device VARCHAR NOT NULL, journal_id VARCHAR NOT NULL, seq_offset BIGINT NOT NULL, first_seen DOUBLE,
    PRIMARY KEY (device, journal_id)
);
CREATE TABLE IF NOT EXISTS drift_checks (
    id BIGINT, time DOUBLE, device VARCHAR, model VARCHAR, version VARCHAR, bundle_id VARCHAR,
    window_from DOUBLE, window_to DOUBLE, n BIGINT, drifted BOOLEAN, tests VARCHAR
);
-- a text model's check: how many texts of its window had no word the model knows (a file made before has none)
ALTER TABLE drift_checks ADD COLUMN IF NOT EXISTS no_known_word BIGINT;
"""
COLUMNS = ("device", "seq", "time", "bundle_id", "model", "version", "variant", "label", "confidence",
           "probabilities", "latency_ms", "input_summary", "raw_input", "raw_kind",
           "length", "oov_rate", "terms", "mean_intensity", "std_intensity", "intensity_hist")


class ScoringStore:
    busy_timeout = 60.0  # seconds to wait for another process's connection to the file to close

    def __init__(self, path: Path, create: bool = True):
        self.path = Path(path)
        if not create:  # an existing file, taken as it is (cdl backup copies it)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute(SCHEMA)

    @contextmanager
    def connect(self, read_only: bool = False):  # noqa: ANN201
        import duckdb

        deadline = time.monotonic() + self.busy_timeout
        pause = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.IOException as exc:
                if "not a valid duckdb database" in str(exc).lower():  # DuckDB's words, and no way out
                    raise CdlError(f"{self.path}: not a DuckDB database (damaged?): move it aside; `cdl devices "
                                   "collect` makes a new one from the records the devices still hold (those they "
                                   "pruned after collecting them are only in the moved file)") from None
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise CdlError(f"the scoring database {self.path} stayed busy for {self.busy_timeout:g} s: "
                                   f"another process holds it ({str(exc).split(': ', 1)[-1].split('. See')[0]})"
                                   ) from None
                time.sleep(pause)
                pause = min(0.25, pause * 2)
        try:
            yield con
        finally:
            con.close()

    def insert(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert rows in one transaction, column-wise (the batch is handed to DuckDB as arrays, not row by row);
        rows already stored (same device and seq) are ignored."""
        import numpy as np

        rows = list(rows)
        if not rows:
            return 0
        n = len(rows)

        def obj(values: Iterable[Any]) -> np.ndarray:
            arr = np.empty(n, dtype=object)
            arr[:] = list(values)
            return arr

        cols: dict[str, Any] = {
            "device": obj(r["device"] for r in rows),
            "seq": np.fromiter((r["seq"] for r in rows), dtype=np.int64, count=n),
            "time": np.fromiter((r["time"] for r in rows), dtype=np.float64, count=n),
            "bundle_id": obj(r.get("bundle_id") for r in rows),
            "model": obj(r.get("model") for r in rows),
            "version": obj(r.get("version") for r in rows),
            "variant": obj(r.get("variant") for r in rows),
            "label": obj(r.get("label") for r in rows),
            "confidence": np.fromiter((r.get("confidence") or 0.0 for r in rows), dtype=np.float64, count=n),
            "probabilities": obj(_text(r.get("probabilities")) for r in rows),
            "latency_ms": np.fromiter((r.get("latency_ms") or 0.0 for r in rows), dtype=np.float64, count=n),
            "input_summary": obj(_text(r.get("input_summary")) or "{}" for r in rows),
            "raw_input": obj(r.get("raw_input") or None for r in rows),
            "raw_kind": obj(r.get("raw_kind") for r in rows),
        }
        # the summary's fields are parsed by DuckDB (in C++), not row by row in Python
        fields = {"length": ("length", "DOUBLE"), "oov_rate": ("oov_rate", "DOUBLE"), "terms": ("terms", "VARCHAR[]"),
                  "mean_intensity": ("mean", "DOUBLE"), "std_intensity": ("std", "DOUBLE"),
                  "intensity_hist": ("hist", "DOUBLE[]")}
        select = []
        for c in COLUMNS:
            if c in fields:
                key, typ = fields[c]
                select.append(f"TRY_CAST(json_extract(input_summary, '$.{key}') AS {typ})")
            elif c == "raw_input":
                select.append("CAST(raw_input AS BLOB)")
            else:
                select.append(c)
        with self.connect() as con:
            before = con.execute("SELECT COUNT(*) FROM scoring").fetchall()[0][0]
            con.register("incoming", cols)
            con.execute("BEGIN TRANSACTION")
            con.execute(f"INSERT OR IGNORE INTO scoring ({', '.join(COLUMNS)}) SELECT {', '.join(select)} FROM incoming")
            con.execute("COMMIT")
            con.unregister("incoming")
            after = con.execute("SELECT COUNT(*) FROM scoring").fetchall()[0][0]
        return int(after - before)

    def last_seq(self, device: str) -> int:
        with self.connect() as con:
            row = con.execute("SELECT MAX(seq) FROM scoring WHERE device = ?", [device]).fetchall()[0]
        return int(row[0] or 0)

    def journal_position(self, device: str, journal_id: str, device_last_seq: int) -> dict[str, Any]:
        """Where collecting from the device's journal `journal_id` resumes: {"offset": what its sequence numbers
        are stored at above, "from_seq": the last of its own numbers stored here, "new": first seen now}.

        The first journal seen for a device is stored as it is (offset 0), as is one that scoring data collected
        before journals had ids came from (it has at least as many records as are stored). A journal seen later
        is filed after every record stored for the device. An agent too old to name its journal ("") is read as
        the device's records always were."""
        with self.connect() as con:
            stored = int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM scoring WHERE device = ?",
                                     [device]).fetchall()[0][0])
            if not journal_id:
                return {"offset": 0, "from_seq": stored, "new": False}
            known = dict(con.execute("SELECT journal_id, seq_offset FROM journals WHERE device = ?", [device]).fetchall())
            new = journal_id not in known
            if new:
                offset = 0 if not known and (stored == 0 or device_last_seq >= stored) else stored
                con.execute("INSERT INTO journals VALUES (?, ?, ?, ?)", [device, journal_id, offset, time.time()])
                known[journal_id] = offset
            offset = known[journal_id]
            above = [o for o in known.values() if o > offset]  # the next journal's records start above this
            upper = min(above) if above else None
            row = con.execute("SELECT MAX(seq) FROM scoring WHERE device = ? AND seq > ? AND seq <= ?",
                              [device, offset, upper if upper is not None else 2**62]).fetchall()[0][0]
        return {"offset": offset, "from_seq": int(row) - offset if row is not None else 0, "new": new}

    def count(self, device: str | None = None) -> int:
        with self.connect() as con:
            if device:
                return int(con.execute("SELECT COUNT(*) FROM scoring WHERE device = ?", [device]).fetchall()[0][0])
            return int(con.execute("SELECT COUNT(*) FROM scoring").fetchall()[0][0])

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.connect() as con:
            return con.execute(sql, params or []).fetchall()

    def add_check(self, check: dict[str, Any]) -> bool:
        """Record a check; False where the device's newest check is this one again (the same bundle, window and
        results: nothing came in since), whose time then becomes this check's. Every `cdl loop`, cron'd `cdl
        monitor` or minute's rerun of deploy.monitor on a quiet device added the same check again, so that the
        panel's history and its drift plot filled with copies."""
        w = check["window"]
        with self.connect() as con:
            last = con.execute("SELECT id, bundle_id, window_from, window_to, n, drifted, tests, no_known_word "
                               "FROM drift_checks WHERE device = ? ORDER BY id DESC LIMIT 1",
                               [check["device"]]).fetchall()
            if last and list(last[0][1:]) == [check.get("bundle_id"), w["from"], w["to"], w["n"], check["drifted"],
                                              json.dumps(check["tests"]), check.get("no_known_word")]:
                con.execute("UPDATE drift_checks SET time = ? WHERE id = ?", [check["time"], last[0][0]])
                return False
            n = con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM drift_checks").fetchall()[0][0]
            con.execute("INSERT INTO drift_checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [n, check["time"], check["device"], check["model"], check["version"], check.get("bundle_id"),
                         w["from"], w["to"], w["n"], check["drifted"], json.dumps(check["tests"]),
                         check.get("no_known_word")])
            return True

    def checks(self, device: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        sql = ("SELECT id, time, device, model, version, bundle_id, window_from, window_to, n, drifted, tests, "
               "no_known_word FROM drift_checks")
        params: list[Any] = []
        if device:
            sql += " WHERE device = ?"
            params.append(device)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        out = []
        for r in self.query(sql, params):
            out.append({"id": r[0], "time": r[1], "device": r[2], "model": r[3], "version": r[4], "bundle_id": r[5],
                        "window": {"from": r[6], "to": r[7], "n": r[8]}, "drifted": r[9], "tests": json.loads(r[10]),
                        **({"no_known_word": r[11]} if r[11] is not None else {})})
        return out[::-1]


def _text(v: Any) -> Any:
    if isinstance(v, dict | list):
        return json.dumps(v)
    return v


