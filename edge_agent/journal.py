"""The scoring journal: every prediction is written to a local SQLite journal (WAL) with a sequence number
before the reply goes out. Writes from concurrent requests are grouped into one transaction (group commit);
each request waits for the commit that holds its record. Sequence numbers are never reused (AUTOINCREMENT),
so a collector that resumes from the last sequence it committed loses nothing and duplicates nothing.

A journal has an identity (`journal_id`, made with the file): a device whose journal file was lost or replaced
(a wiped disk, a fresh folder) starts again at sequence 1 under a new id, and the collector, seeing the new id,
files its records after the old ones instead of waiting for sequence numbers it already has."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS scoring (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    bundle_id TEXT, model TEXT, version TEXT, variant TEXT,
    input_summary TEXT, label TEXT, confidence REAL, probabilities TEXT, latency_ms REAL,
    raw_input BLOB, raw_kind TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
COLUMNS = ("time", "bundle_id", "model", "version", "variant", "input_summary", "label", "confidence",
           "probabilities", "latency_ms", "raw_input", "raw_kind")


class JournalError(OSError):
    """The journal file cannot be opened (damaged, not a database): the agent cannot answer anything it cannot
    journal, so it stops with this."""


class Journal:
    def __init__(self, path: Path, sync: str = "normal"):
        from concurrent.futures import ThreadPoolExecutor

        self.path = Path(path)
        self.sync = "full" if sync == "full" else "normal"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            self._conn.executescript(SCHEMA)
            # several workers may open a new journal at once: the first id written is the journal's
            self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('journal_id', ?)", (uuid.uuid4().hex,))
            self.journal_id = self._conn.execute("SELECT value FROM meta WHERE key = 'journal_id'").fetchone()[0]
        except sqlite3.DatabaseError as exc:  # a traceback before
            self._conn.close()
            raise JournalError(f"{self.path}: the scoring journal cannot be opened ({exc}): move it aside to start "
                               "a new one (the records in it that were not collected stay in the moved file)") from None
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        self._pending: list[tuple[list[dict[str, Any]], asyncio.Future]] = []
        self._flushing = False
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._sql = f"INSERT INTO scoring ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

    # -- writing ------------------------------------------------------------------------------------------

    def write(self, batches: list[list[dict[str, Any]]]) -> list[list[int]]:
        """Commit the records now, in the calling thread (one transaction); their sequence numbers, per list."""
        out = self._write(batches)
        self._notify()
        return out

    async def append(self, records: list[dict[str, Any]]) -> list[int]:
        """Commit the records; returns their sequence numbers once they are on disk.

        Group commit: requests that arrive while a transaction is being written wait for the next one, which
        takes them all; one thread writes, and each batch wakes the event loop once."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((records, fut))
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await loop.run_in_executor(self._writer, self._write, [r for r, _ in batch])
                except BaseException as exc:  # noqa: BLE001 - every waiting request learns it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), seqs in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(seqs)
                self._notify()
        finally:
            self._flushing = False

    def _write(self, batches: list[list[dict[str, Any]]]) -> list[list[int]]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                out = []
                for records in batches:
                    seqs = []
                    for r in records:
                        cur.execute(self._sql, [_value(r.get(c)) for c in COLUMNS])
                        seqs.append(cur.lastrowid)
                    out.append(seqs)
                cur.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return out

    def _notify(self) -> None:
        for loop, ev in list(self._listeners):
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                self._listeners.remove((loop, ev))

    def listen(self) -> asyncio.Event:
        ev = asyncio.Event()
        self._listeners.append((asyncio.get_running_loop(), ev))
        return ev

    def unlisten(self, ev: asyncio.Event) -> None:
        self._listeners = [(lp, e) for lp, e in self._listeners if e is not ev]

    # -- reading, acknowledging, pruning ------------------------------------------------------------------

    def read(self, from_seq: int, limit: int = 500) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(f"SELECT seq, {', '.join(COLUMNS)} FROM scoring WHERE seq > ? ORDER BY seq LIMIT ?",
                                     (from_seq, limit))
            names = ["seq", *COLUMNS]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def last_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'scoring'").fetchone()
            return int(row[0]) if row else 0

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM scoring").fetchone()[0])

    def acked_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'acked_seq'").fetchone()
            return int(row[0]) if row else 0

    def ack(self, up_to: int, retention_seconds: float) -> tuple[int, int]:
        """(acked seq, records pruned): records up to `up_to` older than the retention are deleted."""
        with self._lock:
            acked = max(self.acked_seq_unlocked(), min(up_to, self._last_unlocked()))
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('acked_seq', ?)", (str(acked),))
            cur = self._conn.execute("DELETE FROM scoring WHERE seq <= ? AND time < ?",
                                     (acked, time.time() - retention_seconds))
            return acked, cur.rowcount

    def acked_seq_unlocked(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'acked_seq'").fetchone()
        return int(row[0]) if row else 0

    def _last_unlocked(self) -> int:
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'scoring'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        with self._lock:
            self._conn.close()


def _value(v: Any) -> Any:
    if isinstance(v, dict | list):
        return json.dumps(v)
    return v
