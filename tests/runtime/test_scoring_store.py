"""The scoring store (.cdl/scoring.duckdb) shared by processes: DuckDB lets one process open the file at a time."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from runtime.domain.errors import CdlError
from runtime.scoring import ScoringStore

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("SELECT COUNT(*) FROM scoring").fetchall()
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _holder(path, seconds: float) -> subprocess.Popen:  # noqa: ANN001
    """Another process (a collector, the studio) with the file open for `seconds`."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


def _rows(device: str, n: int) -> list[dict]:
    return [{"device": device, "seq": i, "time": 1.0 + i, "label": "sport", "confidence": 0.9,
             "input_summary": {"length": 10, "oov_rate": 0.1, "terms": []}} for i in range(1, n + 1)]


def test_a_busy_file_is_waited_for(tmp_path):
    store = ScoringStore(tmp_path / "scoring.duckdb")
    assert store.insert(_rows("d1", 3)) == 3
    holder = _holder(store.path, 1.5)
    try:
        t0 = time.monotonic()
        assert store.insert(_rows("d1", 5)) == 2  # the collector's write waits for the reader to finish
        assert time.monotonic() - t0 > 0.5
        assert store.count("d1") == 5
    finally:
        holder.wait(10)


def test_a_file_busy_for_too_long_is_a_clear_error(tmp_path):
    store = ScoringStore(tmp_path / "scoring.duckdb")
    store.busy_timeout = 0.5
    holder = _holder(store.path, 5)
    try:
        with pytest.raises(CdlError, match=r"scoring database .*scoring\.duckdb stayed busy for 0\.5 s: another "
                                           r"process holds it"):
            store.count()
    finally:
        holder.kill()
        holder.wait(10)
    assert store.count() == 0  # and it works again once the other process is gone


def test_a_damaged_file_is_named_with_what_to_do(tmp_path):
    """DuckDB's "exists, but it is not a valid DuckDB database file" failed deploy.monitor with no way out."""
    path = tmp_path / "scoring.duckdb"
    path.write_bytes(b"not a database" * 500)
    with pytest.raises(CdlError, match=r"scoring.duckdb: not a DuckDB database \(damaged\?\): move it aside; "
                                       r"`cdl devices collect` makes a new one"):
        ScoringStore(path)
